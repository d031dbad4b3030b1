"""``groupsweep run | plan | presets | status``: sweeps on Ray Tune from a YAML spec or a shipped preset.

``plan`` and ``presets`` never start Ray; ``run`` validates the spec (its ``after`` commands' arguments
and the resources it asks for included) before it starts Ray, then runs, resumes or extends the sweep
(``sweeps.launcher.run_sweep``), prints a per-method summary and, once every trial has finished, runs
the spec's ``after`` commands (e.g. ``spectral --top 10``) on the sweep directory. ``run``'s summary and
``status`` read the sweep directory through ``analysis.results.load_results``, as every analysis does.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import io
import math
import os
import shlex
import sys

from sweeps import analyze_command, promote_command, report_command, spectral_command
from sweeps.analyze_command import load_run, print_notes
from sweeps.overrides import parse_overrides
from sweeps.presets import preset_names
from sweeps.spaces import describe_space
from sweeps.spec import RUN_DIR_PLACEHOLDER, build_spec, load_spec, random_weights_note, read_spec_source
from sweeps.tracking import parse_tracking
from trainables.balancing import method_label
from trainables.config import TrainConfig
from trainables.errors import GroupsweepError, path_name, positive_integer

PLAN_COLUMNS = ("#", "trial", "dataset", "model", "method", "seed", "epochs", "lr", "cpu", "gpu")
SEARCH_PLAN_COLUMNS = ("#", "cell", "method", "searched", "configs", "seeds", "trials", "epochs", "cpu", "gpu")
STATUS_COLUMNS = ("trial", "state", "epoch", "val wga", "test wga")


def register(subparsers) -> None:
    """Add the ``run``, ``plan``, ``presets`` and ``status`` commands."""
    run = subparsers.add_parser(
        "run", help="run (or resume, or extend) a sweep on Ray Tune",
        description="Run every trial of a sweep spec or preset on Ray Tune. Running the same --name again "
                    "resumes the sweep: finished trials are kept, the others continue from their checkpoints. "
                    "A spec that adds trials (seeds, methods, ratios, models, datasets) extends it: only the "
                    "added trials run; a spec that changes or drops a trial it holds is refused.",
    )
    _spec_arguments(run)
    run.add_argument("--name", help="sweep name, the results folder under --storage (default: the spec's name)")
    run.add_argument("--storage", help="results root, a folder or a URI such as s3://bucket/path "
                                       "(default: $GROUPSWEEP_STORAGE or ~/groupsweep_results)")
    run.add_argument("--address", help="Ray cluster to use: 'auto' or HOST:PORT (default: $RAY_ADDRESS, "
                                       "else a local Ray started for this sweep)")
    run.add_argument("--max-concurrent", type=int, metavar="N", help="run at most N trials at once")
    run.add_argument("--tracking", action="append", default=[], metavar="TRACKER",
                     choices=("tensorboard", "mlflow", "wandb"),
                     help="also track the sweep live with TRACKER (tensorboard, mlflow or wandb; repeatable; "
                          "added to the spec's `tracking`; see the README's Live tracking)")
    run.add_argument("--dashboard", action="store_true",
                     help="start Ray's dashboard for a local sweep, on 127.0.0.1 only (its URL is printed)")
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
    status.add_argument("name", help="sweep name (or the path or storage URI of its folder)")
    status.add_argument("--storage", help="results root (default: $GROUPSWEEP_STORAGE or ~/groupsweep_results)")
    status.set_defaults(func=status_command)


def _spec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC|PRESET", help="a YAML sweep spec or a preset name (groupsweep presets)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="change the spec: a spec key (seeds=[0], resources.cpu=2) or a training setting "
                             "forced on every trial (epochs=1, dataset_options.size=500); repeatable")


# --- the spec's `after` commands -----------------------------------------------------------------

class CheckingParser(argparse.ArgumentParser):
    """An argument parser whose errors raise a one-line ``GroupsweepError`` instead of exiting; ``-h`` /
    ``--help`` is one too (a command line parsed here runs unattended: a spec's ``after`` command, the API)."""

    def error(self, message: str):
        raise GroupsweepError(message)

    def print_help(self, file=None):
        raise GroupsweepError("-h/--help would print the help and run nothing; remove it")


def after_parser() -> argparse.ArgumentParser:
    """The parser of the commands a spec's ``after`` list may run: the analysis commands (``analyze``,
    ``plot``, ``spectral``, ``report``) and ``promote``, each registered by its own module; errors raise
    ``GroupsweepError``."""
    parser = CheckingParser(prog="groupsweep")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    analyze_command.register(subparsers)
    spectral_command.register(subparsers)
    promote_command.register(subparsers)
    report_command.register(subparsers)
    provide_runner(subparsers)
    return parser


def provide_runner(subparsers) -> None:
    """Give ``promote --run`` the way to run a spec file: ``run_spec_file`` (promote cannot import this
    module, which runs it as an ``after`` command)."""
    subparsers.choices["promote"].set_defaults(run_spec=run_spec_file)


def run_spec_file(path, storage: str | None, address: str | None = None) -> int:
    """Run the spec file ``path`` exactly as ``groupsweep run PATH [--storage STORAGE] [--address ADDRESS]``
    does (the ``run`` command's own parser and handler)."""
    parser = CheckingParser(prog="groupsweep")
    register(parser.add_subparsers(dest="command", required=True))
    options = (["--storage", storage] if storage else []) + (["--address", address] if address else [])
    args = parser.parse_args(["run", str(path)] + options)
    return int(args.func(args) or 0)


def check_after_commands(spec) -> None:
    """Parse each of the spec's ``after`` commands (on a stand-in RUN_DIR) as it will run and check every
    argument that needs no sweep (each command's ``check``: values, names, ``--out``); a bad one raises the
    one-line ``GroupsweepError`` ``after[<i>]: '<command>': <the message>``, before the sweep runs."""
    parser = after_parser()
    for index, (command, argv) in enumerate(zip(spec.after, spec.after_argv(RUN_DIR_PLACEHOLDER))):
        try:
            args = parser.parse_args(argv)
            args.check(args)
            _check_against_spec(args, spec)
        except GroupsweepError as error:
            raise GroupsweepError(f"after[{index}]: {command!r}: {error}") from None


def _check_against_spec(args: argparse.Namespace, spec) -> None:
    """Refuse an ``after`` command that the sweep of ``spec`` cannot satisfy: ``promote`` of a sweep without a
    search, ``spectral --epoch E`` where a trial keeps no checkpoint of epoch E (``checkpoint_every``,
    ``keep_checkpoints``; checked for grid trials, whose epochs are known before they run)."""
    if args.command == "promote" and spec.search is None:
        raise GroupsweepError("promote reruns a hyperparameter search's chosen configurations; this spec has no "
                              "search: block")
    if args.command != "spectral" or args.epoch is None or spec.search is not None:
        return
    for trial in spec.trials:
        config = TrainConfig.from_dict(trial.config)
        saved = [epoch for epoch in range(1, config.epochs + 1) if config.checkpoints(epoch)]
        kept = saved[-spec.keep_checkpoints:]  # keep_checkpoints: all is the most epochs of any trial
        if args.epoch in kept:
            continue
        if args.epoch > config.epochs:
            remedy = f"trial {trial.name} runs {config.epochs} epoch(s)"
        elif args.epoch not in saved:
            remedy = f"checkpoint_every {config.checkpoint_every} saves no checkpoint of epoch {args.epoch}"
        else:
            remedy = "set keep_checkpoints: all to analyse an earlier epoch"
        raise GroupsweepError(f"--epoch {args.epoch}: trial {trial.name} keeps the checkpoints of epochs "
                              f"{', '.join(map(str, kept))} only; {remedy}")


# The after commands that read the models and the data again (feature extraction), not only the storage:
# on a cluster they run where a trial runs (``run_after``).
TRIAL_SIDE_COMMANDS = ("spectral",)


def run_after(spec, exp_dir: str, address: str | None = None) -> int:
    """Run the spec's ``after`` commands on the finished sweep, in order; returns the first non-zero status.

    For a sweep in object storage, a command given no ``--out`` writes beside the sweep, into
    ``<sweep>/groupsweep_analysis`` there (``promote`` keeps its local spec file; the analysis of ``promote
    --run`` goes there too). On a cluster (``address``
    or ``$RAY_ADDRESS``), ``TRIAL_SIDE_COMMANDS`` run as a Ray task with a trial's resources
    (``sweeps.launcher.run_on_cluster``): the driver's node may hold neither the data nor the weights; and
    ``promote --run`` runs its rerun on that cluster too."""
    # deferred: Ray loads only when a sweep runs, not for `groupsweep --help`
    from sweeps.launcher import cluster_address, run_on_cluster

    parser = after_parser()
    for argv in spec.after_argv(exp_dir):
        args = parser.parse_args(argv)
        if "://" in exp_dir and args.command != "promote" and args.out is None:
            argv = [*argv, "--out", after_output(args.command, exp_dir)]
        print(f"\n$ groupsweep {shlex.join(argv)}", flush=True)
        if args.command in TRIAL_SIDE_COMMANDS and cluster_address(address):
            status, out, err = run_on_cluster(address, functools.partial(captured_command, argv),
                                              trial_bundle(spec))
            sys.stdout.write(out)
            sys.stderr.write(err)
        else:
            args = parser.parse_args(argv)
            if args.command == "promote":  # `promote --run` reruns on the sweep's own cluster
                args.run_spec = functools.partial(run_spec_file, address=address)
                if "://" in exp_dir:
                    args.analysis_out = after_output("analyze", exp_dir)
            status = int(args.func(args) or 0)
        if status != 0:
            return status
    return 0


def after_output(command: str, exp_dir: str) -> str:
    """Where an ``after`` command writes without ``--out`` for a sweep at the URI ``exp_dir``: the sweep's
    ``groupsweep_analysis`` folder there (``report``: its ``report.html``)."""
    # deferred: pyarrow (behind trial_dir) loads only for commands that read a sweep directory
    from trainables.trial_dir import join_location

    folder = join_location(exp_dir, analyze_command.DEFAULT_OUT)
    return join_location(folder, report_command.REPORT_FILE) if command == "report" else folder


def trial_bundle(spec) -> dict:
    """The resources of the largest training process of ``spec`` (``{"CPU": c, "GPU": g}``, most GPUs first)."""
    bundles = [unit.resources.worker_bundle for unit in spec.units]
    return max(bundles, key=lambda bundle: (bundle["GPU"], bundle["CPU"]))


def captured_command(argv: list) -> tuple[int, str, str]:
    """Run the after command ``argv`` here, capturing what it prints: ``(status, stdout, stderr)``; a
    ``GroupsweepError`` is status 2 with its ``error:`` line, as the command line prints it."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            args = after_parser().parse_args(argv)
            status = int(args.func(args) or 0)
        except GroupsweepError as error:
            print(f"error: {error}", file=sys.stderr)
            status = 2
    return status, out.getvalue(), err.getvalue()


# --- commands ------------------------------------------------------------------------------------

def load_checked_spec(args):
    """The spec that ``args.spec`` and ``args.overrides`` name, its ``after`` commands' arguments checked; a
    ``random_weights_note`` goes to stderr."""
    spec = load_spec(args.spec, parse_overrides(args.overrides))
    check_after_commands(spec)
    note = random_weights_note(spec)
    if note:
        print(note, file=sys.stderr)
    return spec


def format_table(header, rows) -> str:
    """A plain text table with right-aligned columns."""
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(str(h))] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def trial_count(spec) -> int:
    """How many trials the sweep runs: its grid's, or for a search every cell's configurations x seeds."""
    if spec.search is None:
        return len(spec.trials)
    return sum(cell.n_configurations * len(cell.seeds) for cell in spec.cells)


def plan_search(spec) -> None:
    """Print a search's cells: each with its spaces, configurations, seeds and trials; then the search."""
    rows = []
    for index, cell in enumerate(spec.cells, 1):
        searched = ", ".join(f"{key}={describe_space(value)}" for key, value in sorted(cell.space.items())) or "-"
        config = cell.config
        rows.append([index, cell.name, method_label(config["method"], config["ratio"]), searched, cell.n_configurations,
                     " ".join(map(str, cell.seeds)), cell.n_configurations * len(cell.seeds),
                     f"<={cell.most_epochs}" if "epochs" in cell.space else config["epochs"],
                     f"{cell.resources.cpu:g}", f"{cell.resources.gpu:g}"])
    print(format_table(SEARCH_PLAN_COLUMNS, rows))
    search = spec.search
    scheduler = search.scheduler if search.scheduler == "fifo" else \
        f"asha (grace period {search.grace_period}, reduction factor {search.reduction_factor:g})"
    print(f"search: {search.algorithm}, {search.metric} ({search.mode}), scheduler {scheduler}, "
          f"random state {search.seed}")


def plan_command(args: argparse.Namespace) -> int:
    """Print the grid of a spec as a table (a search: its cells), its ``after`` commands, and ``N trials``."""
    spec = load_checked_spec(args)
    if spec.search is not None:
        plan_search(spec)
    else:
        rows = []
        for index, trial in enumerate(spec.trials, 1):
            config = trial.config
            rows.append([index, trial.name, config["dataset"], config["model"], trial.method_label, config["seed"],
                         config["epochs"], f"{config['lr']:g}", f"{trial.resources.cpu:g}",
                         f"{trial.resources.gpu:g}"])
        print(format_table(PLAN_COLUMNS, rows))
    for name, run_dir, *options in spec.after_argv(f"<storage>/{spec.name}"):
        print(f"then: groupsweep {name} {run_dir} {shlex.join(options)}".rstrip())
    cells = f"{len(spec.cells)} cells, " if spec.search is not None else ""
    print(f"{cells}{trial_count(spec)} trials")
    return 0


def preset_rows() -> list[dict]:
    """One row per preset: ``name``, ``trials`` (the expanded grid's size) and ``description``."""
    rows = []
    for name in preset_names():
        spec = build_spec(read_spec_source(name))
        rows.append({"name": name, "trials": trial_count(spec), "description": spec.description})
    return rows


def presets_command(args: argparse.Namespace) -> int:
    """List the presets with their trial counts and descriptions."""
    rows = [[row["name"], row["trials"], row["description"]] for row in preset_rows()]
    print(format_table(("preset", "trials", "description"), rows))
    return 0


def grid_order(spec, results) -> list:
    """Trial names in the spec's grid order; for a search (whose trials are named as it runs), the names
    found in ``results`` ordered by their cell's position in the spec, then by name."""
    if spec.search is None:
        return [trial.name for trial in spec.trials]
    if results is None:
        return []
    position = {cell.name: index for index, cell in enumerate(spec.cells)}
    trials = zip(results.trials["cell"], results.trials["trial_name"])
    return [name for _, name in sorted(trials, key=lambda trial: (position.get(trial[0], len(position)), trial[1]))]


def load_sweep(exp_dir: str):
    """The sweep directory's ``SweepResults`` (unreadable trials printed as ``note:`` lines), or None while it
    holds no trial directory yet."""
    # deferred: pyarrow loads only for commands that read a sweep directory, not for `plan` or `--help`
    from trainables.trial_dir import trial_dirs

    if not trial_dirs(exp_dir):
        return None
    results = load_run(exp_dir)
    print_notes(results.problems)
    return results


def run_command(args: argparse.Namespace) -> int:
    """Run or resume the sweep; print where results are and the per-method summary."""
    if args.profile:
        args.overrides = [*args.overrides, "profile=true"]
    spec = load_checked_spec(args)
    if args.tracking:  # the saved spec records them too: a resumed sweep sets up the trackers it started with
        tracking = parse_tracking(spec.source.get("tracking"), extra=args.tracking)
        spec = dataclasses.replace(spec, tracking=tracking, source={**spec.source, "tracking": dict(tracking.trackers)})
    if args.max_concurrent is not None:
        positive_integer("--max-concurrent", args.max_concurrent)
    if args.name is not None:
        path_name("--name", args.name)
    # deferred: Ray (and pandas for the summary) load only when a sweep runs, not for `plan` or `--help`
    from analysis.summary import format_summary, summarize
    from sweeps.launcher import StorageFailure, experiment_dir, failed_trials, resolve_storage, run_sweep

    name = args.name or spec.name
    exp_dir = experiment_dir(resolve_storage(args.storage), name)
    try:
        results = run_sweep(spec, name=name, storage=args.storage, address=args.address,
                            max_concurrent=args.max_concurrent, dashboard=args.dashboard,
                            on_checked=lambda: print(f"sweep {name}: {trial_count(spec)} trials -> {exp_dir}",
                                                     flush=True))
    except StorageFailure as failure:  # the summary of what was written, then the cause
        results, stopped = None, failure
    else:
        stopped = None
    print()
    sweep = load_sweep(exp_dir)
    print(format_summary(summarize(sweep, order=grid_order(spec, sweep))))
    if stopped is not None:
        print(f"error: {stopped}", file=sys.stderr)
        return 1
    errors, cause = failed_trials(results)
    if errors:
        cause = f" (first error: {cause})" if cause else ""
        print(f"{errors} trial(s) failed{cause}; `{shlex.join(['groupsweep', 'status', str(exp_dir)])}` lists them, "
              "rerun the command to retry")
        if spec.after and not args.no_after:
            print("the spec's `after` commands did not run: they run once every trial has finished")
        return 1
    return 0 if args.no_after else run_after(spec, exp_dir, args.address)


def status_command(args: argparse.Namespace) -> int:
    """Print each trial's state (its ``SweepResults`` status), last reported epoch and last val / test WGA,
    in the spec's grid order; trials of the saved spec without a directory yet are ``pending``. Ends with
    the count of trials per state."""
    # deferred: Ray (and pandas for the results) load only when this command runs, not for `plan` or `--help`
    from analysis.results import STATUSES
    from analysis.summary import trial_progress
    from sweeps.launcher import experiment_dir, read_saved_spec, resolve_storage, sweep_exists

    if "://" in args.name:  # the sweep folder itself, in object storage
        exp_dir = args.name
    else:
        exp_dir = experiment_dir(resolve_storage(args.storage), args.name)
    if not sweep_exists(exp_dir) and os.sep in args.name and sweep_exists(os.path.abspath(args.name)):
        exp_dir = os.path.abspath(args.name)  # the sweep folder itself
    if not sweep_exists(exp_dir):
        where = os.path.abspath(args.name) if os.sep in args.name and "://" not in args.name else exp_dir
        raise GroupsweepError(f"no sweep {args.name!r} at {where}; pass --storage or the sweep folder")
    saved = read_saved_spec(exp_dir)
    try:  # the grid, not the trackers: their packages need not be installed where status runs (a laptop)
        spec = build_spec({**saved, "tracking": None}) if saved else None
    except GroupsweepError as error:
        raise GroupsweepError(f"the saved spec of {exp_dir}: {error}") from None
    sweep = load_sweep(exp_dir)
    planned = spec.trials if spec is not None else ()  # a search's trials are named as it runs
    progress = trial_progress(sweep, order=grid_order(spec, sweep) if spec is not None else ())

    def number(value) -> str:
        return "-" if value is None or math.isnan(value) else f"{value:.4f}"

    rows = {row["trial_name"]: [row["trial_name"], row["status"], f"{row['last_epoch'] or '-'}/{row['epochs']}",
                                number(row["val/wga"]), number(row["test/wga"])]
            for row in progress.to_dict("records")}
    table = [rows.pop(trial.name, [trial.name, "pending", f"-/{trial.config['epochs']}", "-", "-"])
             for trial in planned]
    table += list(rows.values())  # trials the saved spec does not name, by name
    print(format_table(STATUS_COLUMNS, table))
    counts = {state: sum(1 for row in table if row[1] == state) for state in STATUSES}
    print(", ".join(f"{count} {state}" for state, count in counts.items() if count))
    return 0
