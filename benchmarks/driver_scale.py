"""Driver scale: what the sweep driver costs per trial as a sweep grows from 100 to 1,000 trials.

Each sweep runs ``N`` trials of a trivially short run (toy ResNet-XS, one epoch of 40 synthetic images,
20 validation and 20 test images; one CPU each) through ``sweeps.launcher.run_sweep`` in one local Ray
session, largest count last. Measured per sweep: wall seconds and the driver's CPU seconds (this
process: Tune's controller, its experiment-state snapshots, the trial table, resource look-ups; the
trials run in Ray workers). Printed: both per trial at each count, and their growth from the smallest
count to each larger one. Target (issue #19): driver CPU seconds per trial at 1,000 trials within 1.3x of
that at 100. ``--profile`` prints the driver's 25 most expensive functions (cumulative) in the largest
sweep, to find what grows.

Usage from the repository root: ``python benchmarks/driver_scale.py [--counts 100 300 1000] [--profile]``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import tempfile
import time

from _common import machine, start_local_ray

TARGET = 1.3


def tiny_spec(count: int, name: str):
    """A sweep of ``count`` trivially short trials (one seed each)."""
    from sweeps.spec import build_spec

    return build_spec({
        "name": name, "datasets": {"synthetic-waterbirds": {"options": {"size": 40, "val_size": 20, "test_size": 20}}},
        "models": ["toy-resnet-xs"], "methods": ["none"], "seeds": list(range(count)),
        "hparams": {"epochs": 1, "batch_size": 40, "eval_batch_size": 40, "lr": 1e-3}, "resources": {"cpu": 1},
        "max_failures": 0,
    })


def run_one(count: int, storage: str, profile: bool) -> dict:
    """Wall and driver CPU seconds of one sweep of ``count`` trials (and its profile text when asked)."""
    from sweeps.launcher import run_sweep

    spec = tiny_spec(count, f"scale{count}")
    profiler = cProfile.Profile() if profile else None
    wall, cpu = time.perf_counter(), time.process_time()
    if profiler is not None:
        profiler.enable()
    grid = run_sweep(spec, storage=storage)
    if profiler is not None:
        profiler.disable()
    row = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
           "errors": sum(1 for result in grid if result.error is not None)}
    if profiler is not None:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
        row["profile"] = text.getvalue()
    return row


def main(argv: list[str] | None = None) -> int:
    """Run the sweeps in increasing size; print per-trial costs and their growth."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", nargs="+", type=int, default=[100, 300, 1000])
    parser.add_argument("--cores", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--profile", action="store_true", help="profile the driver in the largest sweep")
    args = parser.parse_args(argv)
    counts = sorted(args.counts)
    print(f"machine: {machine()}")
    print(f"Ray with {args.cores} CPUs (start-up {start_local_ray(args.cores):.1f} s, excluded)", flush=True)
    rows = {}
    with tempfile.TemporaryDirectory() as storage:
        for count in counts:
            rows[count] = run_one(count, storage, args.profile and count == counts[-1])
            row = rows[count]
            print(f"{count:>6} trials: wall {row['wall_s']:.1f} s ({row['wall_s'] / count:.3f} s/trial), driver CPU "
                  f"{row['cpu_s']:.1f} s ({row['cpu_s'] / count:.4f} s/trial), {row['errors']} errors", flush=True)
    base = counts[0]
    for count in counts[1:]:
        cpu = (rows[count]["cpu_s"] / count) / (rows[base]["cpu_s"] / base)
        wall = (rows[count]["wall_s"] / count) / (rows[base]["wall_s"] / base)
        print(f"growth {base} -> {count} trials: driver CPU per trial x{cpu:.2f}, wall per trial x{wall:.2f}"
              + (f" (target <= {TARGET}: {'met' if cpu <= TARGET else 'MISSED'})" if count == counts[-1] else ""))
    if args.profile:
        print(rows[counts[-1]]["profile"])
    print(f"machine after: {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
