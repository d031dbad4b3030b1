"""Scale benchmark of the analysis: load and select on 1,000 trials x 100 epochs.

Builds (once, reused on later runs) a results directory in Ray Tune's real on-disk layout with the
one writer of ``tests/results_fixtures.py``: 4 datasets x 5 models x 10 balancing methods (none,
subsetting, upsampling, upweighting, mixture 2/3/4:1, mixture-nosubset 2/3/4:1) x 5 seeds, 100
epochs each, every contract metric key, labels (1,200 validation examples) and the final epoch's
predictions (what final-epoch bias-unsupervised selection reads). Then times ``load_results`` and
``select`` with every criterion at the final epoch, and the metric criteria at the best epoch.

Run from the repository root: ``.venv/bin/python benchmarks/analysis_scale.py [--dir DIR] [--rebuild]``.
The target is load + final-epoch selection of all criteria under 10 s.
"""

from __future__ import annotations

import argparse
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
from tests.results_fixtures import epoch_metrics, make_labels, trial_config, write_trial  # noqa: E402

DATASETS = ("waterbirds", "celeba", "civilcomments", "multinli")
MODELS = {"atto": 3_400_000, "femto": 4_800_000, "pico": 8_600_000, "nano": 15_000_000, "tiny": 28_000_000}
METHODS = [("none", None), ("subsetting", None), ("upsampling", None), ("upweighting", None),
           ("mixture", 2.0), ("mixture", 3.0), ("mixture", 4.0),
           ("mixture-nosubset", 2.0), ("mixture-nosubset", 3.0), ("mixture-nosubset", 4.0)]
SEEDS = range(5)
EPOCHS = 100
N_VAL = 1200
TARGET_S = 10.0


def build(run_dir: Path) -> int:
    """Write the 1,000-trial sweep into ``run_dir``; return the number of trials."""
    rng = np.random.default_rng(0)
    val_y = rng.integers(0, 2, N_VAL)
    labels = make_labels(val_y, rng.integers(0, 2, N_VAL), val_y[:600], rng.integers(0, 2, 600))
    index = 0
    for dataset in DATASETS:
        for model, size in MODELS.items():
            for method, ratio in METHODS:
                for seed in SEEDS:
                    base = rng.uniform(0.5, 0.8)
                    reports = []
                    for epoch in range(1, EPOCHS + 1):
                        value = base + 0.15 * epoch / EPOCHS
                        reports.append(epoch_metrics(epoch, num_parameters=size, value=value, overrides={
                            "val/wga": value - rng.uniform(0, 0.1), "test/wga": value - rng.uniform(0, 0.1)}))
                    flips = rng.random(N_VAL) < 1 - base
                    write_trial(run_dir, index, trial_config(dataset, model, method, ratio, seed, epochs=EPOCHS),
                                reports, labels=labels,
                                predictions={EPOCHS: {"val": np.where(flips, 1 - val_y, val_y), "test": val_y[:600]}})
                    index += 1
    return index


def main() -> int:
    """Build (if needed) and time loading and selection; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=str(Path(tempfile.gettempdir()) / "groupsweep_analysis_scale"),
                        help="where the benchmark sweep is written (kept for later runs)")
    parser.add_argument("--rebuild", action="store_true", help="write the sweep again")
    args = parser.parse_args()
    run_dir = Path(args.dir)
    expected = len(DATASETS) * len(MODELS) * len(METHODS) * len(SEEDS)
    if args.rebuild or not run_dir.is_dir() or sum(1 for _ in run_dir.iterdir()) != expected:
        shutil.rmtree(run_dir, ignore_errors=True)
        start = time.perf_counter()
        count = build(run_dir)
        print(f"built {count} trials x {EPOCHS} epochs in {time.perf_counter() - start:.1f} s at {run_dir}")

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean sweep must load without warnings
        results = load_results(run_dir)
    load_s = time.perf_counter() - start
    print(f"load: {load_s:.2f} s  ({len(results.trials)} trials, {len(results.frame)} rows, "
          f"{len(results.metric_keys)} metric keys)")

    start = time.perf_counter()
    selection = select(results, list(CRITERIA), epoch="final", by_model=False)  # the measured figure: models pooled
    select_s = time.perf_counter() - start
    print(f"select, all {len(CRITERIA)} criteria, final epoch, models pooled: {select_s:.2f} s  "
          f"({len(selection.table)} rows)")

    start = time.perf_counter()
    by_model = select(results, list(CRITERIA), epoch="final", by_model=True)
    print(f"select, all criteria, final epoch, by model: {time.perf_counter() - start:.2f} s  "
          f"({len(by_model.table)} rows)")

    start = time.perf_counter()
    best = select(results, [c for c in CRITERIA if c != "bias-unsupervised"], epoch="best", by_model=False)
    print(f"select, metric criteria, best epoch: {time.perf_counter() - start:.2f} s  ({len(best.table)} rows)")

    total = load_s + select_s
    verdict = "within" if total < TARGET_S else "OVER"
    print(f"load + select (all criteria, final): {total:.2f} s, {verdict} the {TARGET_S:.0f} s target")
    return 0 if total < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
