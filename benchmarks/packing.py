"""Packing: 4 one-CPU trials at max concurrency 2 against max concurrency 1, on 2 cores.

A sweep of 4 trials (synthetic-waterbirds, toy-resnet-xs, 4 seeds; ``resources.cpu = 1``, so each trial's
torch uses one thread) runs through ``run_sweep`` in one local Ray session of ``--cores`` CPUs, alternately
with ``max_concurrent`` 1 and 2 (``--repeats`` pairs, fresh results folders; each side first in every other
pair, all after an untimed warm-up sweep, so that neither side pays the process's first-sweep costs). It
prints each wall time and the ratio (concurrency 2 / concurrency 1). Target: <= 0.6 (0.5 is perfect packing on
2 free cores; the rest is start-up, per-epoch reports and memory bandwidth shared by the two trials). Other
processes on the machine take cores from the concurrent runs first, so the load average is printed before and
after.

It also prints the steady-state packing: the mean time of epochs after each trial's first, concurrent
over twice the sequential one, which leaves out what every sweep pays once per trial actor.

Usage from the repository root: ``python benchmarks/packing.py [--repeats 2] [--epochs 3] [--size 2000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _common import machine, start_local_ray, warm_up_sweep


def packing_spec(epochs: int, size: int, trials: int):
    """The 4-trial, one-CPU sweep spec."""
    from sweeps.spec import build_spec

    return build_spec({
        "name": "packing",
        "datasets": {"synthetic-waterbirds": {"options": {"size": size, "val_size": size // 4,
                                                          "test_size": size // 4}}},
        "models": ["toy-resnet-xs"],
        "methods": ["none"],
        "seeds": list(range(trials)),
        "hparams": {"pretrained": False, "lr": 1.0e-2, "batch_size": 64, "epochs": epochs},
        "resources": {"cpu": 1, "gpu": 0},
    })


def later_epoch_seconds(exp_dir: Path) -> list[float]:
    """``time_this_iter_s`` of every epoch after the first of each trial of a finished sweep (the first
    epoch also holds the trial's set-up and, on a fresh actor, its imports)."""
    seconds = []
    for path in exp_dir.glob("*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        seconds += [row["time_this_iter_s"] for row in rows if row.get("epoch", 1) > 1]
    return seconds


def main(argv: list[str] | None = None) -> None:
    """Run the sweep at concurrency 1 and 2, interleaved, and print the wall-time ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--size", type=int, default=2000, help="training examples per trial")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved (concurrency 1, 2) pairs")
    args = parser.parse_args(argv)

    from sweeps.launcher import run_sweep

    spec = packing_spec(args.epochs, args.size, args.trials)
    print(f"machine: {machine()}")
    print(f"sweep: {len(spec.trials)} one-CPU trials, toy-resnet-xs, {args.size} examples, {args.epochs} epochs; "
          f"Ray with {args.cores} CPUs (start-up {start_local_ray(args.cores):.1f} s, excluded)")
    times, epochs = {1: [], 2: []}, {1: [], 2: []}
    with tempfile.TemporaryDirectory() as storage:
        warm_up_sweep(storage)
        for repeat in range(args.repeats):
            for concurrency in ((1, 2) if repeat % 2 == 0 else (2, 1)):  # each side first in every other pair
                started = time.perf_counter()
                results = run_sweep(spec, name=f"packing-c{concurrency}-{repeat}", storage=storage,
                                    max_concurrent=concurrency)
                times[concurrency].append(time.perf_counter() - started)
                epochs[concurrency] += later_epoch_seconds(Path(storage) / f"packing-c{concurrency}-{repeat}")
                errors = sum(result.error is not None for result in results)
                print(f"  pair {repeat + 1}: max concurrency {concurrency}: {times[concurrency][-1]:.1f} s"
                      + (f" ({errors} errored)" if errors else ""), flush=True)
    ratio = sum(times[2]) / sum(times[1])
    print(f"machine after: {machine()}")
    print(f"packing: concurrency 2 / concurrency 1 = {sum(times[2]):.1f} s / {sum(times[1]):.1f} s = {ratio:.3f} "
          f"(target <= 0.6: {'met' if ratio <= 0.6 else 'MISSED'}; os.cpu_count() = {os.cpu_count()})")
    if epochs[1] and epochs[2]:
        one, two = (sum(values) / len(values) for values in (epochs[1], epochs[2]))
        print(f"steady state: an epoch after the first takes {one:.2f} s alone and {two:.2f} s beside another trial: "
              f"packing {two / (2 * one):.3f} of the sequential time; the rest of the wall-time ratio is fixed per "
              f"sweep and per trial actor (Ray actor start, importing torch and timm, Tune set-up)")


if __name__ == "__main__":
    main()
