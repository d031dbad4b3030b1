"""Driver scale: what the sweep driver costs per trial as a sweep grows from 100 to 1,000 trials.

Each sweep runs ``N`` trials of a trivially short run (toy ResNet-XS, one epoch of 40 synthetic images, 20
validation and 20 test images; one CPU each) through ``sweeps.launcher.run_sweep`` in one local Ray session,
largest count last, after an untimed warm-up sweep of 2 trials (the first sweep of a process pays one-time
costs that would otherwise all fall on the smallest count). Measured per sweep: wall seconds and the driver's
CPU seconds (this process, all its threads: Tune's controller, its experiment-state snapshots and their copy
into the storage, the trial table, resource look-ups; the trials run in Ray workers), the 1-minute load
average at its end, and how many experiment-state snapshots Tune wrote and the CPU seconds its controller
thread spent writing them (``TuneController.save_to_dir``, timed by wrapping it in this script only). Printed:
per-trial figures at each count and their growth from the smallest count to each larger one, for the driver
CPU in all and for the driver CPU outside the snapshots. Target (issue #19): driver CPU seconds per trial at
1,000 trials within 1.3x of that at 100 (judged when the counts are 100 ... 1000). ``--profile`` prints the
driver's 25 most expensive functions (cumulative) in the largest sweep, to find what grows. Tune paces its
snapshots (``TUNE_GLOBAL_CHECKPOINT_S``, ``auto`` by default) since groupsweep keeps checkpoints itself
(``sweeps.retention``).

Usage from the repository root: ``python benchmarks/driver_scale.py`` (30 and 100 trials, a few
minutes); the issue's measurement: ``python benchmarks/driver_scale.py --counts 100 300 1000`` (about
2 minutes on the 2-core box) [--profile].
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import tempfile
import time

from _common import WARM_UP_TRIALS, machine, start_local_ray, tiny_spec, warm_up_sweep

TARGET = 1.3
TARGET_COUNTS = (100, 1000)  # the target compares these two sweep sizes


def snapshot_meter():
    """Count Tune's experiment-state snapshots and the thread CPU seconds spent writing them, by wrapping
    ``TuneController.save_to_dir`` (Ray's own method, unchanged otherwise); returns ``(stats, undo)``."""
    from ray.tune.execution.tune_controller import TuneController

    original = TuneController.save_to_dir
    stats = {"snapshots": 0, "snapshot_cpu_s": 0.0}

    def timed(self):
        started = time.thread_time()
        try:
            return original(self)
        finally:
            stats["snapshots"] += 1
            stats["snapshot_cpu_s"] += time.thread_time() - started

    TuneController.save_to_dir = timed
    return stats, lambda: setattr(TuneController, "save_to_dir", original)


def run_one(count: int, storage: str, profile: bool) -> dict:
    """Wall and driver CPU seconds of one sweep of ``count`` trials, its snapshots, the load average after
    it (and its profile text when asked)."""
    from sweeps.launcher import run_sweep

    spec = tiny_spec(count, f"scale{count}")
    profiler = cProfile.Profile() if profile else None
    stats, undo = snapshot_meter()
    wall, cpu = time.perf_counter(), time.process_time()
    if profiler is not None:
        profiler.enable()
    try:
        grid = run_sweep(spec, storage=storage)
    finally:
        if profiler is not None:
            profiler.disable()
        undo()
    row = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
           "errors": sum(1 for result in grid if result.error is not None), "load": os.getloadavg()[0], **stats}
    if profiler is not None:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
        row["profile"] = text.getvalue()
    return row


def main(argv: list[str] | None = None) -> int:
    """Run the sweeps in increasing size; print per-trial costs and their growth."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", nargs="+", type=int, default=[30, 100],
                        help="sweep sizes (the issue's measurement: 100 300 1000)")
    parser.add_argument("--cores", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--profile", action="store_true", help="profile the driver in the largest sweep")
    args = parser.parse_args(argv)
    counts = sorted(set(args.counts))  # each size once: a repeated name would resume, not run, its sweep
    print(f"machine: {machine()}")
    print(f"Ray with {args.cores} CPUs (start-up {start_local_ray(args.cores):.1f} s, excluded)", flush=True)
    rows = {}
    with tempfile.TemporaryDirectory() as storage:
        # the first sweep of a process pays one-time costs (imports, Tune's set-up): an untimed one pays them here
        print(f"warm-up sweep of {WARM_UP_TRIALS} trials: driver CPU {warm_up_sweep(storage):.2f} s (excluded)",
              flush=True)
        for count in counts:
            rows[count] = run_one(count, storage, args.profile and count == counts[-1])
            row = rows[count]
            print(f"{count:>6} trials: wall {row['wall_s']:.1f} s ({row['wall_s'] / count:.3f} s/trial), driver CPU "
                  f"{row['cpu_s']:.1f} s ({row['cpu_s'] / count:.4f} s/trial; outside snapshot writing "
                  f"{(row['cpu_s'] - row['snapshot_cpu_s']) / count:.4f}), {row['snapshots']} snapshots "
                  f"({row['snapshot_cpu_s']:.1f} s CPU, {row['snapshot_cpu_s'] / count:.4f} s/trial), "
                  f"{row['errors']} errors, load {row['load']:.1f}", flush=True)
    base = counts[0]

    def per_trial(count: int, key: str, less: str | None = None) -> float:
        return (rows[count][key] - (rows[count][less] if less else 0)) / count

    for count in counts[1:]:
        cpu = per_trial(count, "cpu_s") / per_trial(base, "cpu_s")
        wall = per_trial(count, "wall_s") / per_trial(base, "wall_s")
        rest = per_trial(count, "cpu_s", "snapshot_cpu_s") / per_trial(base, "cpu_s", "snapshot_cpu_s")
        print(f"growth {base} -> {count} trials: driver CPU per trial x{cpu:.2f}, wall per trial x{wall:.2f}, "
              f"driver CPU outside snapshot writing per trial x{rest:.2f}"
              + (f" (target <= {TARGET}: {'met' if cpu <= TARGET else 'MISSED'})" if (base, count) == TARGET_COUNTS
                 else ""))
    if args.profile:
        print(rows[counts[-1]]["profile"])
    print(f"machine after: {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
