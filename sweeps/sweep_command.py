"""``groupsweep run | plan | presets | status``: sweeps on Ray Tune from a YAML spec or a shipped preset.

``plan`` and ``presets`` never start Ray; ``run`` validates the spec (and the resources it asks for)
before it starts Ray, then runs or resumes the sweep, prints a per-method summary and, once every trial
has finished, runs the spec's ``after`` commands (e.g. ``spectral --top 10``) on the sweep directory.
"""

from __future__ import annotations

import argparse
import shlex

from sweeps.overrides import parse_overrides

PLAN_COLUMNS = ("#", "trial", "dataset", "model", "method", "seed", "epochs", "lr", "cpu", "gpu")
STATUS_COLUMNS = ("trial", "state", "epoch", "val wga", "test wga")


def register(subparsers) -> None:
    """Add the ``run``, ``plan``, ``presets`` and ``status`` commands."""
    run = subparsers.add_parser(
        "run", help="run (or resume) a sweep on Ray Tune",
        description="Run every trial of a sweep spec or preset on Ray Tune. Running the same --name again "
                    "resumes the sweep: finished trials are kept, the others continue from their checkpoints.",
    )
    _spec_arguments(run)
    run.add_argument("--name", help="sweep name, the results folder under --storage (default: the spec's name)")
    run.add_argument("--storage", help="results root, a folder or a URI such as s3://bucket/path "
                                       "(default: $GROUPSWEEP_STORAGE or ~/groupsweep_results)")
    run.add_argument("--address", help="Ray cluster to use: 'auto' or HOST:PORT (default: $RAY_ADDRESS, "
                                       "else a local Ray started for this sweep)")
    run.add_argument("--max-concurrent", type=int, metavar="N", help="run at most N trials at once")
    run.add_argument("--no-after", action="store_true",
                     help="do not run the spec's `after` commands (analyses) when the sweep has finished")
    run.add_argument("--profile", action="store_true",
                     help="also record perf/samples_per_s, perf/data_wait_frac and, on a GPU, perf/gpu_mem_max_mb "
                          "and perf/gpu_util per epoch (same as --set profile=true)")
    run.set_defaults(func=run_command)

    plan = subparsers.add_parser(
        "plan", help="print the trials of a sweep without running it",
        description="Expand a sweep spec or preset into its trials and print them as a table (Ray is not started).",
    )
    _spec_arguments(plan)
    plan.set_defaults(func=plan_command)

    presets = subparsers.add_parser("presets", help="list the shipped sweep presets",
                                    description="List the presets runnable by name, with their trial counts.")
    presets.set_defaults(func=presets_command)

    status = subparsers.add_parser("status", help="print the state of each trial of a sweep",
                                   description="Print each trial's state and last reported epoch.")
    status.add_argument("name", help="sweep name (or the path of its folder)")
    status.add_argument("--storage", help="results root (default: $GROUPSWEEP_STORAGE or ~/groupsweep_results)")
    status.set_defaults(func=status_command)


def _spec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC|PRESET", help="a YAML sweep spec or a preset name (groupsweep presets)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="change the spec: a spec key (seeds=[0], resources.cpu=2) or a training setting "
                             "forced on every trial (epochs=1, dataset_options.size=500); repeatable")


def _load(args):
    from sweeps.spec import load_spec

    return load_spec(args.spec, parse_overrides(args.overrides))


def format_table(header, rows) -> str:
    """A plain text table with right-aligned columns."""
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(str(h))] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def plan_command(args: argparse.Namespace) -> int:
    """Print the grid of a spec as a table, ending with ``N trials``."""
    spec = _load(args)
    rows = []
    for index, trial in enumerate(spec.trials, 1):
        config = trial.config
        rows.append([index, trial.name, config["dataset"], config["model"], trial.method_label, config["seed"],
                     config["epochs"], f"{config['lr']:g}", f"{trial.resources.cpu:g}", f"{trial.resources.gpu:g}"])
    print(format_table(PLAN_COLUMNS, rows))
    for name, run_dir, *options in spec.after_argv(f"<storage>/{spec.name}"):
        print(f"then: groupsweep {name} {run_dir} {shlex.join(options)}".rstrip())
    print(f"{len(spec.trials)} trials")
    return 0


def presets_command(args: argparse.Namespace) -> int:
    """List the presets with their trial counts and descriptions."""
    from sweeps.presets import preset_rows

    rows = [[row["name"], row["trials"], row["description"]] for row in preset_rows()]
    print(format_table(("preset", "trials", "description"), rows))
    return 0


def run_command(args: argparse.Namespace) -> int:
    """Run or resume the sweep; print where results are and the per-method summary."""
    if args.profile:
        args.overrides = [*args.overrides, "profile=true"]
    spec = _load(args)
    if args.max_concurrent is not None and args.max_concurrent < 1:
        from trainables.errors import GroupsweepError

        raise GroupsweepError(f"--max-concurrent must be a positive integer, got {args.max_concurrent}")
    from sweeps.launcher import experiment_dir, final_rows, format_summary, resolve_storage, run_sweep, summarize

    name = args.name or spec.name
    exp_dir = experiment_dir(resolve_storage(args.storage), name)
    print(f"sweep {name}: {len(spec.trials)} trials -> {exp_dir}", flush=True)
    results = run_sweep(spec, name=name, storage=args.storage, address=args.address,
                        max_concurrent=args.max_concurrent)
    rows = final_rows(exp_dir, order=[trial.name for trial in spec.trials])
    print()
    print(format_summary(summarize(rows)))
    errors = sum(1 for result in results if result.error is not None)
    if errors:
        print(f"{errors} trial(s) failed; `groupsweep status {name}` lists them, rerun the command to retry")
        if spec.after and not args.no_after:
            print("the spec's `after` commands did not run: they run once every trial has finished")
        return 1
    return 0 if args.no_after else run_after(spec, exp_dir)


def run_after(spec, exp_dir: str) -> int:
    """Run the spec's ``after`` commands on the finished sweep, in order; returns the first non-zero status."""
    from sweeps.cli import build_parser

    for argv in spec.after_argv(exp_dir):
        print(f"\n$ groupsweep {shlex.join(argv)}", flush=True)
        args = build_parser().parse_args(argv)
        status = int(args.func(args) or 0)
        if status != 0:
            return status
    return 0


def status_command(args: argparse.Namespace) -> int:
    """Print each trial's state and last epoch."""
    import math
    import os

    from sweeps.launcher import experiment_dir, final_rows, read_saved_spec, resolve_storage, sweep_exists
    from sweeps.spec import build_spec
    from trainables.errors import GroupsweepError

    exp_dir = experiment_dir(resolve_storage(args.storage), args.name)
    if not sweep_exists(exp_dir) and os.sep in args.name and sweep_exists(os.path.abspath(args.name)):
        exp_dir = os.path.abspath(args.name)  # the sweep folder itself
    if not sweep_exists(exp_dir):
        raise GroupsweepError(f"no sweep {args.name!r} at {exp_dir}; pass --storage or the sweep folder")
    saved = read_saved_spec(exp_dir)
    rows = final_rows(exp_dir, order=[trial.name for trial in build_spec(saved).trials] if saved else None)

    def number(value) -> str:
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"

    table = []
    for row in rows.to_dict("records"):
        epoch = row.get("epoch")
        epoch = "-" if epoch is None or (isinstance(epoch, float) and math.isnan(epoch)) else int(epoch)
        state = row["state"] + (" (diverged)" if row.get("status") == "diverged" else "")
        table.append([row["trial_name"], state, f"{epoch}/{row['epochs']}", number(row.get("val/wga")),
                      number(row.get("test/wga"))])
    print(format_table(STATUS_COLUMNS, table))
    counts = rows["state"].value_counts()
    print(", ".join(f"{count} {state}" for state, count in counts.items()))
    return 0
