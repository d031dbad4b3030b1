"""Engine overhead: a reduced demo grid through ``groupsweep run`` against the same trial configs
run back-to-back by calling ``finetune`` in this one plain Python process.

Both sides run one trial at a time (the sweep with ``--max-concurrent 1``, whatever the machine's cores) with
the same torch threads (``resources.cpu`` = ``num_threads`` = ``--cpus``; the plain loop uses ``--cpus``
threads). The plain side is
what a researcher's script costs: a fresh Python process (this script with ``--plain``) that imports
the training stack, loads each distinct dataset once, passes it to ``finetune`` for every trial in turn,
and writes no files and no checkpoints; its wall time is taken from outside, start to exit, and its
import time is printed too. The sweep side is ``sweeps.cli.main(["run", "demo", ...])`` in this process
(which has imported groupsweep), with the Ray start-up (one local Ray session for the whole script)
timed separately; its trials run in a fresh Ray actor, which imports the training stack the same way.
Runs are interleaved plain, sweep, plain, sweep, ... (``--repeats`` pairs) and the ratio is total sweep
time over total plain time. Target: <= 1.10.

Usage from the repository root: ``python benchmarks/engine_overhead.py [--repeats 2] [--set KEY=VALUE]``
(default reduction of the 20-trial, 6-epoch demo: ``seeds=[1]`` and ``epochs=2``, 10 trials).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

from _common import machine, start_local_ray

DEFAULT_SETS = ["seeds=[1]", "epochs=2"]


def plain_loop(preset: str, sets: list[str], cpus: int) -> dict:
    """The plain process's work: import, then run every trial of the grid by calling ``finetune`` back to
    back (datasets loaded once); returns its import and loop seconds."""
    started = time.perf_counter()
    import torch

    from sweeps.overrides import parse_overrides
    from sweeps.spec import load_spec
    from trainables.config import TrainConfig
    from trainables.config_data import load_config_dataset
    from trainables.finetune import finetune

    torch.set_num_threads(cpus)
    imported = time.perf_counter()
    spec = load_spec(preset, parse_overrides(sets))
    datasets = {}
    for trial in spec.trials:
        config = TrainConfig.from_dict(trial.config)
        key = repr((config.dataset, sorted(config.dataset_options.items()), config.data_root))
        if key not in datasets:
            datasets[key] = load_config_dataset(config)
        finetune(config, cpu=True, dataset=datasets[key])
    return {"imports_s": imported - started, "loop_s": time.perf_counter() - imported}


def plain_run(preset: str, sets: list[str], cpus: int) -> tuple[float, dict]:
    """Wall seconds of one fresh plain process (start to exit) and what it measured inside."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, __file__, "--plain", "--preset", preset, "--cpus", str(cpus),
                             *[item for value in sets for item in ("--set", value)]],
                            capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"the plain loop failed:\n{result.stderr[-3000:]}")
    return wall, json.loads(result.stdout.strip().splitlines()[-1])


def sweep_run(argv: list[str]) -> float:
    """Seconds of one ``groupsweep run`` (Ray already started)."""
    from sweeps.cli import main

    started = time.perf_counter()
    status = main(argv)
    if status != 0:
        raise SystemExit(f"groupsweep run exited with {status}")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    """Time both sides interleaved and print the per-run times and the wall ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--set", dest="sets", action="append", default=None, metavar="KEY=VALUE",
                        help=f"reduce the grid (default: {' '.join(DEFAULT_SETS)})")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs (threads) of each trial, one trial at a time")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved (plain, sweep) pairs")
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)  # the plain process itself
    args = parser.parse_args(argv)
    grid_sets = args.sets or DEFAULT_SETS  # what the plain process is given again (it adds the CPU settings)
    sets = grid_sets + [f"resources.cpu={args.cpus}", f"num_threads={args.cpus}"]
    if args.plain:
        print(json.dumps(plain_loop(args.preset, sets, args.cpus)))
        return

    from sweeps.overrides import parse_overrides
    from sweeps.spec import load_spec

    spec = load_spec(args.preset, parse_overrides(sets))
    print(f"machine: {machine()}")
    print(f"grid: {args.preset} with {' '.join(sets)}: {len(spec.trials)} trials, one at a time")
    ray_start = start_local_ray()
    print(f"Ray start-up (once per session, excluded from the ratio): {ray_start:.1f} s")
    plain_times, sweep_times = [], []
    with tempfile.TemporaryDirectory() as storage:
        for repeat in range(args.repeats):
            wall, inside = plain_run(args.preset, grid_sets, args.cpus)
            plain_times.append(wall)
            print(f"  pair {repeat + 1}: plain finetune process {wall:.1f} s (imports {inside['imports_s']:.1f} s, "
                  f"loop {inside['loop_s']:.1f} s)", flush=True)
            run_args = ["run", args.preset, "--storage", storage, "--name", f"overhead{repeat}",
                        "--max-concurrent", "1"]
            for item in sets:
                run_args += ["--set", item]
            sweep_times.append(sweep_run(run_args))
            print(f"  pair {repeat + 1}: groupsweep run     {sweep_times[-1]:.1f} s", flush=True)
    ratio = sum(sweep_times) / sum(plain_times)
    print(f"machine after: {machine()}")
    print(f"engine overhead: groupsweep run / plain loop = {sum(sweep_times):.1f} s / {sum(plain_times):.1f} s "
          f"= {ratio:.3f} (target <= 1.10: {'met' if ratio <= 1.10 else 'MISSED'})")


if __name__ == "__main__":
    main()
