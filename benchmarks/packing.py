"""Packing: 4 one-CPU trials at max concurrency 2 against max concurrency 1, on 2 cores.

A sweep of 4 trials (synthetic-waterbirds, toy-resnet-xs, 4 seeds; ``resources.cpu = 1``, so each
trial's torch uses one thread) runs through ``run_sweep`` in one local Ray session of ``--cores``
CPUs, alternately with ``max_concurrent`` 1 and 2 (``--repeats`` pairs, fresh results folders). It
prints each wall time and the ratio (concurrency 2 / concurrency 1). Target: <= 0.6 (0.5 is perfect
packing on 2 free cores; the rest is start-up, per-epoch reports and memory bandwidth shared by the
two trials). Other processes on the machine take cores from the concurrent runs first, so the load
average is printed before and after.

Usage from the repository root: ``python benchmarks/packing.py [--repeats 2] [--epochs 3] [--size 2000]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from _common import machine, start_local_ray


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
    times = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as storage:
        for repeat in range(args.repeats):
            for concurrency in (1, 2):
                started = time.perf_counter()
                results = run_sweep(spec, name=f"packing-c{concurrency}-{repeat}", storage=storage,
                                    max_concurrent=concurrency)
                times[concurrency].append(time.perf_counter() - started)
                errors = sum(result.error is not None for result in results)
                print(f"  pair {repeat + 1}: max concurrency {concurrency}: {times[concurrency][-1]:.1f} s"
                      + (f" ({errors} errored)" if errors else ""), flush=True)
    ratio = sum(times[2]) / sum(times[1])
    print(f"machine after: {machine()}")
    print(f"packing: concurrency 2 / concurrency 1 = {sum(times[2]):.1f} s / {sum(times[1]):.1f} s = {ratio:.3f} "
          f"(target <= 0.6: {'met' if ratio <= 0.6 else 'MISSED'}; os.cpu_count() = {os.cpu_count()})")


if __name__ == "__main__":
    main()
