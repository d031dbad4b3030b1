"""``groupsweep promote``: rerun the configurations a hyperparameter search chose, on new seeds, without search.

``promote RUN_DIR --criterion C --seeds 1 2 3`` selects as ``groupsweep analyze RUN_DIR --criterion C
--epoch final --by-model`` does (``analysis.selection.select``): per dataset and model, each balancing
method's best configuration by the mean validation criterion over its search seeds. It writes a spec
(YAML, runnable anywhere with ``groupsweep run FILE``) with one part per dataset and model (and variant,
when the search had several) that trains every method with its chosen configuration on the given
seeds: ``methods: [{upweighting: {hparams: {...}}}, {mixture: {ratios: [2], hparams: {...}}}]``, whose
``hparams`` hold every training setting of the chosen configuration (every ``TrainConfig`` field but
the grid axes), so each rerun trains exactly the chosen configuration. The search spec's top-level
``resources``, ``max_failures`` and ``keep_checkpoints`` are carried over when the sweep directory
holds it; resources it sets per dataset, model or part are not (a note says so).

The spec goes to ``RUN_DIR/promoted_<criterion>.yaml`` (for a URI RUN_DIR, to
``<sweep>_promoted_<criterion>.yaml`` in the current folder) or ``--out``; its name defaults to
``<search name>-rerun``. ``--run`` then runs it exactly as ``groupsweep run FILE --storage S`` (S defaults
to the search's own storage, so the rerun lands beside it) and ends with ``groupsweep analyze RUN_DIR
RERUN_DIR``: the search's Table 1, each method's chosen configuration, and the rerun's Table 1. ``promote``
may also be one of a search spec's ``after`` commands (``after: ["promote --seeds 3 4 --run"]``).
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

from sweeps import analyze_command
from sweeps.analyze_command import check_output, load_run, make_folder, print_notes
from sweeps.spec import HPARAM_FIELDS, build_spec, dump_spec, method_slug, parse_seeds
from trainables.errors import GroupsweepError, path_name
from trainables.trial_dir import join_location, location_filesystem, split_location, write_local_atomically

# Validation criteria promote may select by (``oracle`` reads the test split: a reference, not a choice).
PROMOTE_CRITERIA = ("wga", "worst-class", "bias-unsupervised", "average")
# Settings of the search spec carried into the promoted spec when the sweep directory holds it.
CARRIED_KEYS = ("resources", "max_failures", "keep_checkpoints")
DEFAULT_TAG = "rerun"


def register(subparsers) -> None:
    """Add the ``promote`` command."""
    promote = subparsers.add_parser(
        "promote", help="write (and with --run, run) a spec that reruns a search's chosen configurations "
                        "on new seeds",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    promote.add_argument("run_dir", metavar="RUN_DIR", help="the search sweep's directory (<storage>/<name>)")
    promote.add_argument("--criterion", default="wga", choices=PROMOTE_CRITERIA,
                         help="validation criterion that chooses each method's configuration (default: wga)")
    promote.add_argument("--seeds", nargs="+", required=True, metavar="SEED",
                         help="seeds of the rerun (distinct non-negative integers)")
    promote.add_argument("--name", help="the rerun's sweep name (default: <search name>-rerun)")
    promote.add_argument("--out", help="the spec file to write (default: RUN_DIR/promoted_<criterion>.yaml)")
    promote.add_argument("--run", action="store_true", help="run the written spec (as groupsweep run FILE)")
    promote.add_argument("--storage", help="with --run: results root, as for groupsweep run (default: the "
                                           "folder holding RUN_DIR)")
    # ``run_spec(path, storage) -> status`` runs a spec file as ``groupsweep run`` does; the command line
    # that registers this command provides it (``sweeps.sweep_command.run_spec_file``), since ``run`` in
    # turn runs a spec's ``after`` commands, this one included.
    # run_spec runs the written spec (``groupsweep run``'s own code unless an after command passes its cluster's);
    # analysis_out is where ``--run``'s analysis writes (None: ``analyze``'s default; an after command of a sweep in
    # object storage passes the sweep's analysis folder there)
    promote.set_defaults(func=run_promote, check=check_promote_args, run_spec=None, analysis_out=None)


def check_promote_args(args: argparse.Namespace) -> None:
    """Every ``promote`` argument that can be checked without the search (also a spec's ``after`` command's,
    before the sweep runs); one-line ``GroupsweepError``."""
    parse_seed_arguments(args.seeds)
    if args.name is not None:
        path_name("--name", args.name)
    if args.out is not None:
        check_output(args.out, "file", local_only=True)  # a spec file, which `groupsweep run` reads locally
    if args.storage is not None and "://" in args.storage:
        location_filesystem(args.storage)  # a scheme pyarrow cannot open: refused now, not when the rerun starts


def run_promote(args: argparse.Namespace) -> int:
    """Select each method's configuration in the search, write the rerun spec, print what it reruns and,
    with ``--run``, run it. One-line ``GroupsweepError`` for bad seeds (the search's own seeds included), a
    sweep that did not search, or a search without a complete configuration."""
    check_promote_args(args)
    seeds = parse_seed_arguments(args.seeds)
    # deferred: pandas and the analysis modules load when a command runs, not for `groupsweep --help`
    from analysis.selection import display_hyperparameters, select

    results = load_run(args.run_dir)
    if not results.searched:
        raise GroupsweepError(f"{results.run_dir} is not a hyperparameter search (no trial names a search cell); "
                              "promote reruns the configurations a search chose")
    searched_seeds = sorted(set(results.trials.loc[results.trials["cell"] != "", "seed"]))
    reused = [seed for seed in seeds if seed in searched_seeds]
    if reused:
        raise GroupsweepError(f"--seeds {' '.join(map(str, reused))}: the search ran on seeds "
                              f"{', '.join(map(str, searched_seeds))}, and its choice is fitted to them; rerun the "
                              "chosen configurations on other seeds")
    selection = select(results, [args.criterion], epoch="final", by_model=True)
    print_notes(selection.notes)
    if selection.hyperparameters.empty:
        raise GroupsweepError(f"no complete configuration in {results.run_dir} to promote by {args.criterion} at "
                              "the final epoch (every configuration has a seed that is not complete: stopped, "
                              "diverged, failed or unfinished)")
    parent, sweep = split_location(results.run_dir)
    saved = _saved_spec(results.run_dir)
    source = promoted_spec(results, selection.hyperparameters, seeds, args.name or f"{sweep}-rerun",
                           f"Rerun of the configurations that {args.criterion} (mean over seeds at the final epoch, "
                           f"per dataset and model) chose in the search {sweep}, on seeds "
                           f"{', '.join(map(str, seeds))}, without search", saved)
    if saved is not None and _nested_resources(saved):
        print_notes([("the search spec sets resources per dataset, model or part; the promoted spec carries only "
                      "its top-level resources: check them before running it")])
    storage = args.storage or parent
    if args.run:  # the rerun's storage and folder are checked before its spec file is written
        # deferred: the launcher imports Ray and torch; only --run needs it
        from sweeps.launcher import check_sweep_folder

        check_sweep_folder(build_spec(source), storage=str(storage))
    out = Path(args.out) if args.out else default_out(results.run_dir, sweep, args.criterion)
    make_folder(out.parent, "--out's folder" if args.out else "the spec's folder")
    write_local_atomically(out, (f"# written by: groupsweep promote {results.run_dir} --criterion {args.criterion}\n"
                                 + "".join(f"# {line}\n" for line in chosen_lines(selection.hyperparameters))
                                 + dump_spec(source)).encode())
    print(display_hyperparameters(selection.hyperparameters).to_markdown(index=False, disable_numparse=True))
    print(f"wrote {out}: {len(selection.hyperparameters)} configuration(s) x {len(seeds)} seed(s)")
    if not args.run:
        print(f"run it with: {shlex.join(['groupsweep', 'run', str(out), '--storage', str(storage)])}")
        return 0
    status = args.run_spec(out, storage)
    if status != 0:
        return status
    rerun_dir = join_location(storage, source["name"])
    argv = [str(results.run_dir), rerun_dir, "--criterion", args.criterion,
            *(["--out", args.analysis_out] if args.analysis_out else [])]
    print(f"\n$ {shlex.join(['groupsweep', 'analyze', *argv])}", flush=True)
    analyze = analyze_command.analyze_args(argv)
    return int(analyze_command.run_analyze(analyze) or 0)


def chosen_lines(chosen) -> list:
    """One line per promoted configuration (a ``Selection.hyperparameters`` row), for the spec's header:
    ``wb/m upweighting: h01 (lr=0.0001), val wga 0.7000 over 2 seed(s), best of 3 configuration(s)``."""
    lines = []
    for row in chosen.to_dict("records"):
        where = "/".join(str(row[name]) for name in ("dataset", "model", "variant") if row.get(name))
        hparams = f" ({row['hparams']})" if row["hparams"] else ""
        lines.append(f"{where} {row['method_label']}: {row['config_id'] or 'grid'}{hparams}, val {row['criterion']} "
                     f"{row['score']:.4f} over {row['n_seeds']} seed(s), best of {row['n_configurations']} "
                     "configuration(s)")
    return lines


def parse_seed_arguments(values: list) -> list:
    """``--seeds`` values as distinct non-negative integers; one-line ``GroupsweepError`` otherwise."""
    for value in values:
        if not re.fullmatch(r"[+-]?\d+", str(value).strip()):
            raise GroupsweepError(f"--seeds: {value!r} is not an integer (seeds: distinct integers from 0)")
    seeds = [int(value) for value in values]
    return parse_seeds(seeds, "--seeds")


def promoted_spec(results, chosen, seeds: list, name: str, description: str, saved: dict | None = None) -> dict:
    """The rerun spec mapping: ``chosen`` is ``Selection.hyperparameters`` (by model, one criterion); one
    part per dataset, model (and variant) whose ``hparams`` hold the settings its chosen configurations share
    and whose methods carry the rest of their chosen configuration's settings as their own ``hparams``;
    ``saved`` (the search's spec, or None) gives the ``CARRIED_KEYS``."""
    source = {"name": name, "description": description}
    for key in CARRIED_KEYS:
        if saved is not None and saved.get(key) is not None:
            source[key] = saved[key]
    source["seeds"] = list(seeds)
    groups = ["dataset", "model"] + (["variant"] if "variant" in chosen else [])
    parts, tags = [], set()
    for _, rows in chosen.groupby(groups, sort=False):
        configs = [results.configs[_trial_of(results, row)] for row in rows.to_dict("records")]
        first = configs[0]
        settings = [{key: config[key] for key in HPARAM_FIELDS if key in config} for config in configs]
        # Settings every chosen configuration of the part shares are the part's; the rest (sampled values, a
        # method's own settings) its methods': the rerun's method keys are then those of the search, and
        # analysing search and rerun together keeps the search's variants (e.g. last_layer_only) apart.
        shared = {key: value for key, value in settings[0].items()
                  if all(key in other and other[key] == value for other in settings[1:])}
        methods = []
        for config, values in zip(configs, settings):
            hparams = {key: value for key, value in values.items() if key not in shared}
            entry = {"hparams": hparams} if hparams else {}
            if config.get("ratio") is not None:
                entry["ratios"] = [config["ratio"]]
            methods.append({config["method"]: entry})
        tag = _part_tag(rows, first, tags)
        parts.append({"tag": tag, "datasets": {first["dataset"]: {"options": dict(first.get("dataset_options") or {})}},
                      "models": [first["model"]], "hparams": shared, "methods": methods})
    source["parts"] = parts
    return source


def _trial_of(results, row: dict) -> str:
    """The id of one trial of the chosen configuration ``row`` (a ``Selection.hyperparameters`` row)."""
    trials = results.trials
    match = (trials["cell"] == row["cell"]) & (trials["config_id"] == row["config_id"])
    match &= (trials["dataset"] == row["dataset"]) & (trials["model"] == row["model"])
    match &= trials["method_label"] == row["method_label"]
    if "variant" in row:
        match &= trials["variant"] == row["variant"]
    return trials.index[match][0]


def _part_tag(rows, config: dict, taken: set) -> str:
    """A part's tag: the tag of the search cells it reruns when they share one, else ``rerun``; made unique
    per dataset and model with a ``-2``, ``-3``... suffix, so trial names stay unique."""
    tags = set()
    for row in rows.to_dict("records"):
        prefix = f"{row['dataset']}-{row['model']}-"
        rest = row["cell"][len(prefix):] if row["cell"].startswith(prefix) else ""
        ratio = row["ratio"] if row["ratio"] == row["ratio"] else None  # NaN (no ratio) is not equal to itself
        slug = method_slug(row["method"], ratio)
        tags.add(rest[len(slug) + 1:] if rest.startswith(f"{slug}-") else "")
    tag = tags.pop() if len(tags) == 1 and "" not in tags else DEFAULT_TAG
    unique, number = tag, 1
    while (config["dataset"], config["model"], unique) in taken:
        number += 1
        unique = f"{tag}-{number}"
    taken.add((config["dataset"], config["model"], unique))
    return unique


def _saved_spec(run_dir) -> dict | None:
    """The search spec saved in its sweep directory, or None."""
    # deferred: the launcher imports Ray and torch; only promote's reading of the saved spec needs it here
    from sweeps.launcher import read_saved_spec

    try:
        return read_saved_spec(str(run_dir))
    except (OSError, ValueError):
        return None


def _nested_resources(saved: dict) -> bool:
    """Whether a spec mapping sets resources below its top level (datasets, models or parts)."""
    levels = []
    for key in ("datasets", "models"):
        if isinstance(saved.get(key), dict):
            levels += list(saved[key].values())
    if isinstance(saved.get("parts"), list):
        levels += saved["parts"]
    return any(isinstance(level, dict) and level.get("resources") for level in levels)


def default_out(run_dir, sweep: str, criterion: str) -> Path:
    """``RUN_DIR/promoted_<criterion>.yaml``; for a URI, ``<sweep>_promoted_<criterion>.yaml`` here."""
    if "://" in str(run_dir):
        return Path.cwd() / f"{sweep}_promoted_{criterion}.yaml"
    return Path(run_dir) / f"promoted_{criterion}.yaml"
