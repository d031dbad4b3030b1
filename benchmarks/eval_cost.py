"""Evaluation cost: the demo grid with ``eval_train: every`` against the default (``final``), side by side.

Both sweeps run the same grid (the ``demo`` preset, 20 trials, by default unreduced) in one local Ray
session, one after the other (``--repeats`` interleaved pairs: every, final, every, final, ...); only
``eval_train`` differs. Printed: the summed trial time (``time/train_s`` + ``time/eval_s`` over every
epoch of every trial) of each side, the evaluation share of it, the reduction of the summed trial time,
and whether the demo's Table 1 (all criteria, final epoch) and its collapse figure (the plotted CSV) are
identical. Evaluation draws no random numbers from the training's streams, so they must be. As the training
is identical on both sides, any difference in ``time/train_s`` is the machine's load; the reduction is
therefore also printed load-normalised, from each side's evaluation-to-training time ratio
(``1 - (1 + eval/train of final) / (1 + eval/train of every)``). Pairs alternate their order (every first,
then final first, ...).

Targets (issue #19): summed trial time down by at least 20%, evaluation share at most 30% with the
default, Table 1 and the collapse figure unchanged.

Usage from the repository root: ``python benchmarks/eval_cost.py [--repeats 1] [--set KEY=VALUE ...]``
(``--set`` reduces the grid, e.g. ``--set seeds=[1] --set epochs=2``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import machine, start_local_ray

SIDES = ("every", "final")


def run_side(preset: str, sets: list, eval_train: str, storage: str) -> dict:
    """Run the grid with ``eval_train`` into ``storage``; its wall seconds, summed train / eval seconds,
    Table 1 and collapse-figure CSV text."""
    from analysis.plots import make_figures
    from analysis.results import load_results
    from analysis.selection import CRITERIA, select
    from sweeps.launcher import run_sweep
    from sweeps.overrides import parse_overrides
    from sweeps.spec import load_spec

    spec = load_spec(preset, parse_overrides([*sets, f"eval_train={eval_train}"]))
    started = time.perf_counter()
    run_sweep(spec, storage=storage)
    seconds = time.perf_counter() - started
    results = load_results(f"{storage}/{spec.name}")
    frame = results.frame
    table = select(results, list(CRITERIA), epoch="final").table
    figure = make_figures(results, ["collapse"], Path(storage) / "figures")[0]
    return {"wall_s": seconds, "train_s": float(frame["time/train_s"].sum()), "eval_s": float(frame["time/eval_s"].sum()),
            "trials": len(results.trials), "table": table.to_csv(index=False),
            "collapse": figure.csv.read_text() if figure.csv is not None else ""}


def main(argv: list[str] | None = None) -> int:
    """Run both sides interleaved; print the sums, shares, the reduction and the identity checks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="reduce the grid (default: the whole demo)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved (every, final) pairs")
    parser.add_argument("--cores", type=int, default=2, help="CPUs of the local Ray")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    print(f"grid: {args.preset} {' '.join(args.sets)}; Ray with {args.cores} CPUs "
          f"(start-up {start_local_ray(args.cores):.1f} s, excluded)", flush=True)
    sums = {side: {"wall_s": 0.0, "train_s": 0.0, "eval_s": 0.0} for side in SIDES}
    outputs = {side: [] for side in SIDES}
    for repeat in range(args.repeats):
        for side in (SIDES if repeat % 2 == 0 else SIDES[::-1]):
            with tempfile.TemporaryDirectory() as storage:
                row = run_side(args.preset, args.sets, side, storage)
            for key in sums[side]:
                sums[side][key] += row[key]
            outputs[side].append((row["table"], row["collapse"]))
            print(f"  pair {repeat + 1}, eval_train {side:>5}: {row['trials']} trials, wall {row['wall_s']:.1f} s, "
                  f"train {row['train_s']:.1f} s, eval {row['eval_s']:.1f} s", flush=True)
    print(f"{'':24} {'every':>10} {'final':>10}")
    totals = {}
    for key, label in (("train_s", "sum time/train_s (s)"), ("eval_s", "sum time/eval_s (s)")):
        print(f"{label:24} {sums['every'][key]:>10.1f} {sums['final'][key]:>10.1f}")
    for side in SIDES:
        totals[side] = sums[side]["train_s"] + sums[side]["eval_s"]
    print(f"{'summed trial time (s)':24} {totals['every']:>10.1f} {totals['final']:>10.1f}")
    shares = {side: sums[side]["eval_s"] / totals[side] for side in SIDES}
    print(f"{'evaluation share':24} {shares['every']:>10.1%} {shares['final']:>10.1%}")
    print(f"{'sweep wall time (s)':24} {sums['every']['wall_s']:>10.1f} {sums['final']['wall_s']:>10.1f}")
    reduction = 1 - totals["final"] / totals["every"]
    ratios = {side: sums[side]["eval_s"] / sums[side]["train_s"] for side in SIDES}
    normalised = 1 - (1 + ratios["final"]) / (1 + ratios["every"])
    same_table = all(a[0] == b[0] for a, b in zip(outputs["every"], outputs["final"]))
    same_collapse = all(a[1] == b[1] for a, b in zip(outputs["every"], outputs["final"]))
    met = min(reduction, normalised) >= 0.20 and shares["final"] <= 0.30 and same_table and same_collapse
    print(f"eval_train final vs every: summed trial time {-reduction:+.1%} as measured, {-normalised:+.1%} "
          f"load-normalised (target: -20% or less), evaluation share "
          f"{shares['final']:.1%} (target <= 30%); Table 1 identical: {same_table}; collapse figure identical: "
          f"{same_collapse} ({'met' if met else 'MISSED'})")
    print(f"machine after: {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
