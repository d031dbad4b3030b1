"""Scale benchmark of the analysis: load and select on 10,000 trials x 100 epochs.

Builds (once, reused on later runs) a results directory in Ray Tune's real on-disk layout with the
one writer of ``tests/results_fixtures.py`` (``params.json``, ``params.pkl``, ``result.json``,
``progress.csv``, groupsweep's labels and predictions): 4 datasets x 5 models x 10 balancing methods
(none, subsetting, upsampling, upweighting, mixture 2/3/4:1, mixture-nosubset 2/3/4:1) = 200 cells,
trial ``i`` in cell ``i % 200`` with seed ``i // 200`` (10,000 trials: 50 seeds per cell), 100 epochs
each, every contract metric key, labels (1,200 validation examples) and the final epoch's predictions
(what final-epoch bias-unsupervised selection reads). The build runs in ``--jobs`` processes; each
trial's random values come from its own generator, so the directory does not depend on them. Then
times ``load_results`` and ``select`` with every criterion at the final epoch, and the metric criteria
at the best epoch (wall and CPU seconds: on a shared machine the CPU seconds are the steadier figure),
and reports this process's peak resident memory (``ru_maxrss``). The process imports what an analysis
imports (no torch): the writer, which imports torch, is imported only by the build, which runs in child
processes (``--jobs 1``: in this one, and then its memory counts too).

Run from the repository root: ``python benchmarks/analysis_scale.py [--trials 10000] [--epochs 100]
[--dir DIR] [--rebuild] [--clean]`` (the 10,000-trial directory takes about 4.5 GB; ``--clean`` deletes
it afterwards). Target (issue #19): load + final-epoch selection of all criteria under 30 s and under
4 GiB peak memory at 10,000 trials x 100 epochs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.results_fixtures

from analysis.results import load_results  # noqa: E402
from analysis.selection import CRITERIA, select  # noqa: E402

DATASETS = ("waterbirds", "celeba", "civilcomments", "multinli")
MODELS = {"atto": 3_400_000, "femto": 4_800_000, "pico": 8_600_000, "nano": 15_000_000, "tiny": 28_000_000}
METHODS = [("none", None), ("subsetting", None), ("upsampling", None), ("upweighting", None),
           ("mixture", 2.0), ("mixture", 3.0), ("mixture", 4.0),
           ("mixture-nosubset", 2.0), ("mixture-nosubset", 3.0), ("mixture-nosubset", 4.0)]
CELLS = [(dataset, model, size, method, ratio) for dataset in DATASETS for model, size in MODELS.items()
         for method, ratio in METHODS]
N_VAL = 1200
TARGET_S = 30.0
TARGET_GIB = 4.0
BUILD_FILE = ".analysis_scale.json"  # beside the sweep directory: what was built there


def shared_labels():
    """``(val_y, labels)``: the validation classes and the labels every trial saves."""
    from tests.results_fixtures import make_labels  # deferred: the writer imports torch, which analysis does not

    rng = np.random.default_rng(0)
    val_y = rng.integers(0, 2, N_VAL)
    return val_y, make_labels(val_y, rng.integers(0, 2, N_VAL), val_y[:600], rng.integers(0, 2, 600))


def build_trials(run_dir: Path, indices: range, epochs: int) -> None:
    """Write the trials ``indices`` of the benchmark sweep into ``run_dir``."""
    from tests.results_fixtures import epoch_metrics, trial_config, write_trial  # deferred: imports torch

    val_y, labels = shared_labels()
    for index in indices:
        dataset, model, size, method, ratio = CELLS[index % len(CELLS)]
        rng = np.random.default_rng([1, index])
        base = rng.uniform(0.5, 0.8)
        reports = []
        for epoch in range(1, epochs + 1):
            value = base + 0.15 * epoch / epochs
            reports.append(epoch_metrics(epoch, num_parameters=size, value=value, overrides={
                "val/wga": value - rng.uniform(0, 0.1), "test/wga": value - rng.uniform(0, 0.1)}))
        flips = rng.random(N_VAL) < 1 - base
        write_trial(run_dir, index, trial_config(dataset, model, method, ratio, index // len(CELLS), epochs=epochs),
                    reports, labels=labels,
                    predictions={epochs: {"val": np.where(flips, 1 - val_y, val_y), "test": val_y[:600]}})


def build(run_dir: Path, trials: int, epochs: int, jobs: int) -> int:
    """Write the ``trials``-trial sweep into ``run_dir`` with ``jobs`` processes; return the number of trials."""
    chunks = [range(start, trials, jobs) for start in range(jobs)]
    if jobs == 1:
        build_trials(run_dir, chunks[0], epochs)
    else:
        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            pool.starmap(build_trials, [(run_dir, chunk, epochs) for chunk in chunks])
    return trials


def peak_rss_gib() -> float:
    """This process's peak resident memory so far, in GiB (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main(argv: list[str] | None = None) -> int:
    """Build (if needed) and time loading and selection; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10_000, help="trials in the sweep (200 cells, seeds added)")
    parser.add_argument("--epochs", type=int, default=100, help="epochs per trial")
    parser.add_argument("--dir", default=str(Path(tempfile.gettempdir()) / "groupsweep_analysis_scale"),
                        help="where the benchmark sweep is written (kept for later runs unless --clean)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes that write the sweep")
    parser.add_argument("--rebuild", action="store_true", help="write the sweep again")
    parser.add_argument("--clean", action="store_true", help="delete the sweep directory at the end")
    args = parser.parse_args(argv)
    run_dir = Path(args.dir)
    built = Path(f"{run_dir}{BUILD_FILE}")
    wanted = {"trials": args.trials, "epochs": args.epochs, "cells": len(CELLS)}
    if args.rebuild or not run_dir.is_dir() or not built.exists() or json.loads(built.read_text()) != wanted:
        shutil.rmtree(run_dir, ignore_errors=True)
        built.unlink(missing_ok=True)
        start = time.perf_counter()
        count = build(run_dir, args.trials, args.epochs, max(1, args.jobs))
        built.write_text(json.dumps(wanted))
        print(f"built {count} trials x {args.epochs} epochs in {time.perf_counter() - start:.1f} s at {run_dir}")
    print(f"machine: {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} (1 min); "
          f"peak memory before loading {peak_rss_gib():.2f} GiB", flush=True)
    try:
        return measure(run_dir)
    finally:
        if args.clean:
            shutil.rmtree(run_dir, ignore_errors=True)
            built.unlink(missing_ok=True)


def measure(run_dir: Path) -> int:
    """Time load and selection on the sweep in ``run_dir``; print the figures; 0 when both targets are met."""
    start, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean sweep must load without warnings
        results = load_results(run_dir)
    load_s = time.perf_counter() - start
    print(f"load: {load_s:.2f} s  ({len(results.trials)} trials, {len(results.frame)} rows, "
          f"{len(results.metric_keys)} metric keys; peak memory {peak_rss_gib():.2f} GiB)", flush=True)

    start = time.perf_counter()
    selection = select(results, list(CRITERIA), epoch="final", by_model=False)  # the measured figure: models pooled
    select_s = time.perf_counter() - start
    cpu_s = time.process_time() - cpu  # CPU seconds of load + select (all threads): less noisy on a shared machine
    print(f"select, all {len(CRITERIA)} criteria, final epoch, models pooled: {select_s:.2f} s  "
          f"({len(selection.table)} rows)", flush=True)
    peak = peak_rss_gib()  # the measured figure: load + final-epoch selection

    start = time.perf_counter()
    by_model = select(results, list(CRITERIA), epoch="final", by_model=True)
    print(f"select, all criteria, final epoch, by model: {time.perf_counter() - start:.2f} s  "
          f"({len(by_model.table)} rows)", flush=True)

    start = time.perf_counter()
    best = select(results, [c for c in CRITERIA if c != "bias-unsupervised"], epoch="best", by_model=False)
    print(f"select, metric criteria, best epoch: {time.perf_counter() - start:.2f} s  ({len(best.table)} rows)")

    total = load_s + select_s
    time_ok, memory_ok = total < TARGET_S, peak < TARGET_GIB
    print(f"load + select (all criteria, final): {total:.2f} s ({cpu_s:.2f} CPU s), {'within' if time_ok else 'OVER'} the "
          f"{TARGET_S:.0f} s target; peak memory {peak:.2f} GiB, {'within' if memory_ok else 'OVER'} the "
          f"{TARGET_GIB:.0f} GiB target; load average {os.getloadavg()[0]:.2f} (1 min)")
    return 0 if time_ok and memory_ok else 1


if __name__ == "__main__":
    sys.exit(main())
