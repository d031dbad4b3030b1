"""Driver start-up: wall time of short ``groupsweep`` commands, this checkout beside another one.

Usage from the repository root::

    git worktree add /tmp/groupsweep-before <commit>           # the code to compare with (optional)
    python benchmarks/driver_start.py --baseline /tmp/groupsweep-before --repeats 6

Each measurement is a fresh ``python -m sweeps.cli ...`` process timed from start to exit, run with the
checkout's own code first on ``PYTHONPATH``: ``plan demo-table1`` (building and checking a spec, no Ray)
and ``run`` of a one-trial, one-epoch sweep (toy-convnextv2-xs on 200 synthetic images, a new local Ray,
one CPU). With ``--baseline`` both checkouts are measured in alternating order (which goes first swaps
every repeat) and the script prints each command's median for both and the ratio this / baseline;
without it, this checkout's medians only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, machine

COMMANDS = ("plan", "run")
SPEC = """name: start
datasets: {synthetic-waterbirds: {options: {size: 200, val_size: 60, test_size: 60}}}
models: [toy-convnextv2-xs]
methods: [none]
seeds: [1]
hparams: {lr: 0.001, batch_size: 64, epochs: 1, eval_batch_size: 128}
resources: {cpu: 1}
"""


def timed(checkout: Path, command: str, workdir: Path) -> float:
    """Seconds one ``groupsweep COMMAND`` takes with ``checkout``'s code, in a fresh process."""
    argv = ["plan", "demo-table1"]
    if command == "run":
        argv = ["run", str(workdir / "spec.yaml"), "--storage", str(workdir / f"results-{time.monotonic_ns()}")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(checkout), os.environ.get("PYTHONPATH", "")]),
               RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled", HF_HUB_OFFLINE="1")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "sweeps.cli", *argv], cwd=workdir, env=env, capture_output=True,
                          text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"groupsweep {' '.join(argv)} with {checkout} failed:\n{done.stderr[-3000:]}")
    return seconds


def main(argv: list[str] | None = None) -> None:
    """Measure and print the medians (and, with a baseline, the ratios)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="another checkout of groupsweep to compare with")
    parser.add_argument("--repeats", type=int, default=3, help="measurements of each command per checkout")
    parser.add_argument("--commands", nargs="+", choices=COMMANDS, default=list(COMMANDS))
    args = parser.parse_args(argv)
    sides = {"this": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    print(f"machine: {machine()}")
    print(f"checkouts: {', '.join(f'{name} {path}' for name, path in sides.items())}; {args.repeats} repeats")
    times = {(name, command): [] for name in sides for command in args.commands}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "spec.yaml").write_text(SPEC)
        for repeat in range(args.repeats):
            order = list(sides) if repeat % 2 == 0 else list(reversed(sides))
            for command in args.commands:
                for name in order:
                    times[name, command].append(timed(sides[name], command, workdir))
    for command in args.commands:
        medians = {name: statistics.median(times[name, command]) for name in sides}
        runs = "; ".join(f"{name}: {', '.join(f'{t:.2f}' for t in times[name, command])}" for name in sides)
        line = f"{command:5} median " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in medians.items())
        if "baseline" in medians:
            line += f"; this / baseline = {medians['this'] / medians['baseline']:.3f}"
        print(f"{line}  ({runs})")
    print(f"machine after: {machine()}")


if __name__ == "__main__":
    main()
