"""ASHA against FIFO on the demo-hpo search space: trial-epochs spent, and what each search picks.

Both searches draw the same configurations (the ``demo-hpo`` preset's random search, same random state,
``--num-samples`` per method) and run in one local Ray session, one after the other, after an untimed
warm-up sweep (so that the first does not pay the process's first-sweep costs); only the scheduler
differs: ``fifo`` trains every configuration for all its epochs, ``asha`` (per method, grace period 1,
reduction factor 2) stops the worse half at each rung. Printed side by side: the trial-epochs each spent
(the sum over trials of the epochs they trained) and their ratio, the wall time, and per method the
configuration each picked by mean validation worst-group accuracy at the final epoch with its score,
then the method Table 1 picks. Identical picks with fewer trial-epochs is what early stopping promises.

Usage from the repository root: ``python benchmarks/search_schedulers.py [--num-samples 6] [--epochs 6]
[--size 2000]``.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

from _common import machine, start_local_ray, warm_up_sweep


def search_spec(scheduler: str, num_samples: int, epochs: int, size: int):
    """The demo-hpo search with the given scheduler and sizes, without its ``after`` commands."""
    from sweeps.spec import build_spec, read_spec_source

    source = copy.deepcopy(read_spec_source("demo-hpo"))
    source.pop("after", None)
    source["name"] = f"search-{scheduler}"
    source["search"].update(scheduler=scheduler, num_samples=num_samples)
    source["hparams"]["epochs"] = epochs
    source["datasets"]["synthetic-waterbirds"]["options"] = {"size": size, "val_size": max(60, size * 3 // 10),
                                                             "test_size": max(60, size // 2)}
    return build_spec(source)


def picks(results) -> dict:
    """method label -> (chosen configuration id, its validation score), and the Table 1 method."""
    from analysis.selection import select

    selection = select(results, ["wga"], epoch="final", by_model=True)
    chosen = {row.method_label: (row.config_id, row.score) for row in selection.hyperparameters.itertuples()}
    winner = selection.table.iloc[0]["method_label"] if not selection.table.empty else "-"
    return {"methods": chosen, "winner": winner}


def main(argv: list[str] | None = None) -> None:
    """Run the FIFO and the ASHA search and print their costs and picks side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=6, help="configurations per method")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--size", type=int, default=2000, help="training examples")
    parser.add_argument("--cores", type=int, default=2, help="CPUs of the local Ray")
    args = parser.parse_args(argv)

    from analysis.results import load_results
    from sweeps.launcher import run_sweep

    print(f"machine: {machine()}")
    print(f"search: demo-hpo space, {args.num_samples} configurations per method, {args.epochs} epochs, "
          f"{args.size} examples; Ray with {args.cores} CPUs (start-up {start_local_ray(args.cores):.1f} s, excluded)")
    rows = {}
    with tempfile.TemporaryDirectory() as storage:
        warm_up_sweep(storage)  # neither search pays the process's first-sweep costs
        for scheduler in ("fifo", "asha"):
            spec = search_spec(scheduler, args.num_samples, args.epochs, args.size)
            started = time.perf_counter()
            run_sweep(spec, storage=storage)
            seconds = time.perf_counter() - started
            results = load_results(f"{storage}/{spec.name}")
            trials = results.trials
            rows[scheduler] = {"seconds": seconds, "trial_epochs": int(trials["last_epoch"].sum()),
                               "trials": len(trials), "stopped": int((trials["status"] == "stopped").sum()),
                               **picks(results)}
    fifo, asha = rows["fifo"], rows["asha"]
    print(f"{'':28} {'fifo':>14} {'asha':>14}")
    print(f"{'trials (stopped early)':28} {fifo['trials']:>10} ({fifo['stopped']}) {asha['trials']:>10} ({asha['stopped']})")
    print(f"{'trial-epochs':28} {fifo['trial_epochs']:>14} {asha['trial_epochs']:>14}")
    print(f"{'wall time (s)':28} {fifo['seconds']:>14.1f} {asha['seconds']:>14.1f}")
    for method in fifo["methods"]:
        cells = []
        for row in (fifo, asha):
            config, score = row["methods"].get(method, ("-", float("nan")))
            cells.append(f"{config} {100 * score:5.1f}")
        print(f"{'picked: ' + method:28} {cells[0]:>14} {cells[1]:>14}")
    print(f"{'Table 1 method (wga)':28} {fifo['winner']:>14} {asha['winner']:>14}")
    print(f"asha / fifo: trial-epochs {asha['trial_epochs'] / fifo['trial_epochs']:.3f}, "
          f"wall time {asha['seconds'] / fifo['seconds']:.3f}; same configuration picked for "
          f"{sum(fifo['methods'].get(m, (None,))[0] == asha['methods'].get(m, (0,))[0] for m in fifo['methods'])} "
          f"of {len(fifo['methods'])} methods")
    print(f"machine after: {machine()}")


if __name__ == "__main__":
    main()
