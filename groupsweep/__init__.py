"""groupsweep's Python API: the main operations of the command line (plan, run, analyze, report, promote) as
functions, for notebooks and scripts.

    import groupsweep as gs

    gs.plan("demo-table1").trials               # a spec or preset, expanded (no Ray)
    results = gs.run("demo-table1", storage="groupsweep_results")   # run or resume it; its results
    results = gs.load_results("groupsweep_results/demo-table1")     # or read any sweep directory / URI
    gs.table1(results, criterion="worst-class") # Table 1 as a DataFrame
    gs.report(results, "report.html")           # the HTML report

A thin layer above ``sweeps`` (the top layer of docs/architecture.md): each function does what its
command does, through the same code, and fails the same way: bad input raises the one-line
``GroupsweepError`` that the command prints as ``error: ...`` (argument errors included, instead of
argparse's exit), and so does storage that cannot be read or written (the command's ``OSError`` line, the
``OSError`` chained as its cause). ``run`` and ``promote`` print what their commands print.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from analysis.report import Report
from analysis.results import SweepResults
from analysis.results import load_results as _load_results
from analysis.selection import CRITERIA, Selection, display_table, paper_view, parse_criteria
from analysis.selection import select as _select
from sweeps import cli
from sweeps.analyze_command import check_output as _check_output
from sweeps.overrides import parse_overrides
from sweeps.presets import preset_names
from sweeps.promote_command import PROMOTE_CRITERIA
from sweeps.promote_command import default_out as _promoted_spec_file
from sweeps.report_command import default_out as _report_file
from sweeps.report_command import publish_report as _publish_report
from sweeps.spec import SweepSpec, apply_overrides, build_spec, load_spec
from sweeps.sweep_command import CheckingParser, check_after_commands
from trainables.errors import GroupsweepError, choose, single_line
from trainables.trial_dir import split_location

__all__ = ["CRITERIA", "GroupsweepError", "Report", "Selection", "SweepResults", "SweepSpec", "load_results",
           "plan", "presets", "promote", "report", "run", "select", "table1"]

# What ``table1`` returns: the readable table, the paper's layout, or the raw numbers.
TABLE1_LAYOUTS = ("details", "paper", "raw")


def _one_line_errors(function):
    """``function``, raising storage that cannot be read or written (an ``OSError``: a bucket that cannot be
    reached, a full disk) as the one-line ``GroupsweepError`` that the command line prints for it."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except OSError as error:
            raise GroupsweepError(single_line(error)) from error
    return wrapper


@_one_line_errors
def load_results(path_or_uri) -> SweepResults:
    """The sweep directory ``path_or_uri`` (a local folder ``<storage>/<name>``, a ``pyarrow.fs`` URI such as
    ``s3://bucket/sweeps/demo``, a parent folder of sweep directories, or a list of them, analysed as one)
    as a ``SweepResults``: ``.frame``, one row per trial and epoch with every metric; ``.trials``, one row
    per trial. Works on a sweep that is
    still running. ``GroupsweepError`` when the directory does not exist or holds no trial; a trial whose
    files cannot be read is left out with a ``CorruptTrialWarning`` and listed in ``.problems``."""
    if isinstance(path_or_uri, (list, tuple)):
        return _load_results([_location(path, "a sweep directory") for path in path_or_uri])
    return _load_results(_location(path_or_uri, "a sweep directory"))


@_one_line_errors
def select(results, criterion: str = "all", epoch: str = "final", pool_models: bool = False, methods=None,
           group_info: str | None = None, empty_cells: str = "skip") -> Selection:
    """The whole selection behind ``table1`` (same arguments, same choices), an ``analysis.selection.Selection``:
    ``.table`` (Table 1, the numbers as fractions), ``.methods`` (every candidate method's validation and
    test scores), ``.hyperparameters`` (a search's chosen configurations), ``.rerun`` (their reruns' scores)
    and ``.notes``.
    ``GroupsweepError`` for an unknown criterion, epoch rule or group information."""
    if not isinstance(results, SweepResults):
        results = load_results(results)
    return _select(results, parse_criteria(criterion), epoch=epoch, by_model=not pool_models, methods=methods,
                   group_info=group_info, empty_cells=empty_cells)


@_one_line_errors
def table1(results, criterion: str = "all", epoch: str = "final", pool_models: bool = False, methods=None,
           layout: str = "details", group_info: str | None = None, empty_cells: str = "skip") -> pd.DataFrame:
    """Table 1 of ``results`` (a ``SweepResults``, or what ``load_results`` takes), as ``groupsweep analyze``
    selects it: per dataset and model (``pool_models=True``: per dataset, its models pooled), the
    balancing method with the best mean validation ``criterion`` over seeds (``wga``, ``worst-class``,
    ``bias-unsupervised``, ``average``, ``oracle`` or ``all``) at the ``final`` or ``best`` epoch, among
    ``methods`` (names such as ``["none", "upsampling", "mixture"]``; default: every method present) that
    use at most ``group_info`` group information (``none``, ``val`` or ``train+val``; default: any), as
    ``analyze --group-info`` restricts them; ``empty_cells``: ``bias-unsupervised``'s rule for a cell without
    examples, ``skip`` (default) or ``zero`` (``analyze --empty-cells``).

    ``layout``: ``details`` (default; one row per group and criterion, test metrics in percent as
    ``mean ± std`` over seeds: ``analysis.selection.display_table``), ``paper`` (a row per criterion, a
    column per dataset and model, cells ``method (test WGA)``) or ``raw`` (the numbers, as fractions:
    ``Selection.table``). The selection's notes (what was missing or left out) are in
    ``frame.attrs["notes"]``. ``GroupsweepError`` for an unknown criterion, epoch rule, layout or group
    information."""
    choose("layout", layout, TABLE1_LAYOUTS)
    selection = select(results, criterion, epoch=epoch, pool_models=pool_models, methods=methods,
                       group_info=group_info, empty_cells=empty_cells)
    table = {"details": display_table, "paper": paper_view, "raw": lambda frame: frame}[layout](selection.table)
    table = table.copy()
    table.attrs["notes"] = list(selection.notes)
    return table


@_one_line_errors
def report(results, out=None, epoch: str = "final", pool_models: bool = False, methods=None,
           title: str | None = None, group_info: str | None = None) -> Path | str:
    """Write the HTML report of ``results`` (a ``SweepResults``, or what ``load_results`` takes) to ``out``
    and return where it went (see ``analysis.report``; the same page, written the same way, as ``groupsweep
    report``). ``out``: a local file (checked as ``--out`` is), or a storage URI, uploaded; it defaults to
    ``report.html`` in the ``groupsweep_analysis`` folder of the given directory (the first, given several;
    given a ``SweepResults``, of its first sweep directory; for a sweep in object storage,
    ``<sweep>_groupsweep_analysis/report.html`` in the current folder). ``epoch``, ``pool_models``, ``methods``
    and ``group_info`` choose Table 1's candidates as ``table1``'s do."""
    if out is not None:
        out = _check_output(_location(out, "out"), "file")
    elif isinstance(results, SweepResults):
        out = _report_file(results.run_dirs[0])
    else:
        out = _report_file(_location(results if not isinstance(results, (list, tuple)) else next(iter(results), None),
                                     "a sweep directory"))
    if not isinstance(results, SweepResults):
        results = load_results(results)
    _publish_report(results, out, epoch=epoch, by_model=not pool_models, methods=methods, title=title,
                    group_info=group_info)
    return out


def presets() -> list:
    """The names of the shipped presets (``groupsweep presets`` shows their trial counts)."""
    return preset_names()


@_one_line_errors
def plan(spec, overrides=None) -> SweepSpec:
    """The sweep that ``spec`` describes, validated and expanded, as ``groupsweep plan`` sees it (Ray is not
    started): ``.trials`` (one ``TrialPlan`` per trial, ``.config`` its training settings), or a search's
    ``.cells``; ``.after`` its after-commands. ``spec``: a preset name, the path of a YAML spec, or the spec
    as a mapping; ``overrides``: ``--set`` values, as ``{"epochs": 1, "seeds": [0]}`` or
    ``["epochs=1", "seeds=[0]"]``. ``GroupsweepError`` for anything invalid."""
    overrides = _override_mapping(overrides)
    if isinstance(spec, dict):
        source = apply_overrides(spec, overrides) if overrides else spec
        built = build_spec(source)
    else:
        built = load_spec(str(spec), overrides)
    check_after_commands(built)
    return built


@_one_line_errors
def run(spec, storage=None, name: str | None = None, overrides=None, address: str | None = None,
        max_concurrent: int | None = None, after: bool = True, profile: bool = False) -> SweepResults:
    """Run (or resume, or extend with the trials a grown spec adds) the sweep ``spec`` exactly as
    ``groupsweep run`` does, then return its results (``load_results`` of ``<storage>/<name>``). Arguments
    as ``plan``'s and ``run``'s options: ``storage`` (default ``$GROUPSWEEP_STORAGE`` or
    ``~/groupsweep_results``), ``name`` (default: the spec's), ``address`` (a Ray cluster),
    ``max_concurrent``, ``after=False`` (``--no-after``), ``profile``.

    Bad input raises ``GroupsweepError`` before Ray starts; so does a sweep that ends with failed trials
    or a failed after-command (the message names it; rerunning resumes, and ``load_results`` reads what
    finished)."""
    with tempfile.TemporaryDirectory(prefix="groupsweep-spec-") as folder:
        if isinstance(spec, dict):  # the command reads a file: write the mapping as one
            path = Path(folder) / "spec.yaml"  # the spec's name is checked by the command, never used as a path
            path.write_text(yaml.safe_dump(spec, sort_keys=False))
            spec = str(path)
        argv = ["run", str(spec)] + _set_arguments(overrides)
        for option, value in (("--storage", storage), ("--name", name), ("--address", address),
                              ("--max-concurrent", max_concurrent)):
            if value is not None:
                argv += [option, str(value)]
        argv += ([] if after else ["--no-after"]) + (["--profile"] if profile else [])
        status = _command(argv)
        name = name or load_spec(str(spec), _override_mapping(overrides)).name
    # deferred: the launcher imports Ray and torch; only a run needs it (for where its results went)
    from sweeps.launcher import experiment_dir, resolve_storage

    run_dir = experiment_dir(resolve_storage(None if storage is None else str(storage)), name)
    if status != 0:
        raise GroupsweepError(f"sweep {name} ended with exit status {status}: a trial or an after-command failed "
                              f"(the output above says which); gs.load_results({run_dir!r}) reads what finished, "
                              "and running it again resumes it")
    return load_results(run_dir)


@_one_line_errors
def promote(search_dir, seeds, criterion: str = "wga", name: str | None = None, out=None, run: bool = False,
            storage=None) -> Path:
    """Write the spec that reruns the configurations a hyperparameter search chose, on new ``seeds``, and
    with ``run=True`` run it and analyse search and rerun together: ``groupsweep promote`` (its docstring
    in ``sweeps.promote_command`` has the details). Returns the spec file's path (default
    ``SEARCH_DIR/promoted_<criterion>.yaml``). ``GroupsweepError`` for bad seeds, a criterion other than
    ``wga``, ``worst-class``, ``bias-unsupervised`` or ``average``, a sweep that did not search, or a failed
    rerun."""
    choose("promote criterion", criterion, PROMOTE_CRITERIA)
    if not isinstance(seeds, (list, tuple)):
        raise GroupsweepError(f"seeds must be a list of integers, such as [3, 4], got {seeds!r}")
    search_dir = str(search_dir)
    sweep = split_location(search_dir)[1]
    out = Path(out) if out is not None else _promoted_spec_file(search_dir, sweep, criterion)
    argv = ["promote", search_dir, "--seeds", *map(str, seeds), "--criterion", criterion, "--out", str(out)]
    for option, value in (("--name", name), ("--storage", storage)):
        if value is not None:
            argv += [option, str(value)]
    status = _command(argv + (["--run"] if run else []))
    if status != 0:
        raise GroupsweepError(f"promote {search_dir} ended with exit status {status} (the output above says why)")
    return out


def _location(value, what: str) -> str:
    """``value`` (a path or a storage URI) as a string; anything else, or an empty one, a one-line
    ``GroupsweepError`` naming ``what`` it should be."""
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise GroupsweepError(f"{what} must be a path or a storage URI, got {value!r}")
    return str(value)


def _command(argv: list) -> int:
    """Run one ``groupsweep`` command line in this process; its exit status. Argument errors raise
    ``GroupsweepError`` (not argparse's exit), as do the command's own one-line errors."""
    args = cli.build_parser(CheckingParser).parse_args(argv)
    return int(args.func(args) or 0)


def _override_mapping(overrides) -> dict:
    """``overrides`` (a mapping, a list of ``KEY=VALUE`` strings, or None) as ``load_spec``'s mapping, read
    as the command line reads ``--set`` values."""
    return parse_overrides(_set_arguments(overrides)[1::2])


def _set_arguments(overrides) -> list:
    """``overrides`` as ``--set KEY=VALUE`` arguments: a mapping's values are written as JSON (which the
    command line reads as YAML), a list's items are taken as they are."""
    if not overrides:
        return []
    if not isinstance(overrides, (dict, list, tuple)):
        raise GroupsweepError(f"overrides must be a mapping such as {{'epochs': 1}} or a list of 'KEY=VALUE' strings, "
                              f"got {overrides!r}")
    items = ([f"{key}={json.dumps(value)}" for key, value in overrides.items()] if isinstance(overrides, dict)
             else [str(item) for item in overrides])
    return [part for item in items for part in ("--set", item)]
