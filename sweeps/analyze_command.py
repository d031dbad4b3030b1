"""``groupsweep analyze`` (Table 1: balancing method chosen per validation criterion) and
``groupsweep plot`` (the paper's figures) on a sweep's results directory.

Both read the directory offline and work on a sweep that is still running or partly failed: what is
missing (incomplete trials, a missing biased ``none`` run, absent methods) is printed as ``note:``
lines instead of failing. A directory that does not exist or holds no trial is an error.

``analyze`` writes ``<stem>.md`` (the paper's layout, the detailed table, every candidate and the
notes), ``<stem>.csv`` (the raw numbers of Table 1), ``<stem>.tex`` and ``<stem>_methods.csv`` (every
candidate), with ``<stem>`` = ``table1`` plus ``_<criterion>``, ``_best``, ``_pooled``,
``_groupinfo-<level>`` and ``_emptycells-zero`` when chosen.

Selection is per dataset and model by default (the paper's Table 1 has one model per dataset);
``--pool-models`` pools the models of a dataset as extra runs of each method instead (a note says so).
The candidates are every balancing method present in the sweep (each mixture ratio its own candidate),
or those named by ``--methods``; ``--group-info none|val|train+val`` keeps only the methods that use at
most that much group information (each method's registration states it: ``trainables.balancing.GROUP_INFO``;
Table 1 shows it in its ``group info`` column), as the D3M paper compares methods.

For a hyperparameter search it also writes ``<stem>_hyperparameters.csv`` (each method's chosen
configuration) and, when the directories hold reruns of the chosen configurations (``groupsweep
promote``), ``<stem>_rerun.csv`` (Table 1 of the rerun); both are sections of ``<stem>.md`` too.

Both commands take several directories (``analyze SEARCH_DIR RERUN_DIR``) and parent folders of sweep
directories (``analyze <storage>``): their trials are analysed as one sweep, and the default output folder
is in the first directory given.
"""

from __future__ import annotations

import argparse
import shutil
import os
import sys
import tempfile
import warnings
from pathlib import Path

import pyarrow

from sweeps.sweep_lock import LOCK_FILE
from trainables.balancing import GROUP_INFO_LEVELS
from trainables.balancing import METHODS as METHOD_NAMES
from trainables.errors import GroupsweepError, choose
from trainables.metrics import EMPTY_CELLS
from trainables.sweep_storage import SNAPSHOT_PREFIXES, SPEC_FILE, TUNER_FILE
from trainables.trial_dir import (join_location, location_filesystem, split_location, write_atomically,
                                  write_local_atomically)

CRITERION_CHOICES = ("wga", "worst-class", "bias-unsupervised", "average", "oracle", "all")
FIGURE_CHOICES = ("collapse", "mixture", "scaling", "ablation", "all")
DEFAULT_OUT = "groupsweep_analysis"
# The files (names or name prefixes) in which a sweep folder keeps its state (Ray Tune's and groupsweep's): an
# output file is never written over one of them, nor into a trial folder (one holding Tune's params.json).
SWEEP_STATE_FILES = (SPEC_FILE, LOCK_FILE, TUNER_FILE, *SNAPSHOT_PREFIXES, ".validate_storage_marker")
# Tables ``analyze`` writes only for a search (``<stem>_<suffix>.csv``): its chosen configurations, its rerun.
OPTIONAL_TABLES = ("hyperparameters", "rerun")


def add_out_argument(parser) -> None:
    """The ``--out`` option of an analysis command (``output_folder`` and ``publish`` use it)."""
    parser.add_argument("--out", default=None, help=f"output folder, or a storage URI to upload to (default: "
                                                    f"RUN_DIR/{DEFAULT_OUT}; for a sweep in object storage, "
                                                    f"./<sweep>_{DEFAULT_OUT})")


def add_group_info_argument(parser, chooser: str = "choose") -> None:
    """The ``--group-info LEVEL`` option of a command that selects methods (``analyze``, ``report``, ``spectral``);
    ``chooser`` names what chooses, for its help. ``check_group_info`` checks its value."""
    parser.add_argument("--group-info", default=None, metavar="LEVEL",
                        help=f"{chooser} only among methods using at most this group information: "
                             + ", ".join(GROUP_INFO_LEVELS) + " (none < val < train+val; default: any)")


def check_group_info(level: str | None) -> None:
    """A one-line ``GroupsweepError`` unless ``level`` (a ``--group-info`` value) is None or a known level."""
    if level is not None:
        choose("group information", level, GROUP_INFO_LEVELS)


def register(subparsers) -> None:
    """Add the ``analyze`` and ``plot`` commands."""
    analyze = subparsers.add_parser(
        "analyze", help="choose the balancing method per validation criterion (the paper's Table 1)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    analyze.add_argument("run_dir", metavar="RUN_DIR", nargs="+",
                         help="the sweep's directory (<storage>/<name>), or a folder of sweep directories; "
                              "several are analysed as one")
    analyze.add_argument("--criterion", default="all", choices=CRITERION_CHOICES,
                         help="validation criterion (default: all; oracle = test WGA, a reference only)")
    analyze.add_argument("--epoch", default="final", choices=("final", "best"),
                         help="final: last epoch (the paper); best: each run's best epoch by the criterion")
    grouping = analyze.add_mutually_exclusive_group()
    grouping.add_argument("--by-model", action="store_true",
                          help="select per dataset and model (the default; kept for older command lines)")
    grouping.add_argument("--pool-models", action="store_true",
                          help="select per dataset, pooling its models as extra runs of each method")
    analyze.add_argument("--methods", default=None, metavar="NAME[,NAME...]",
                         help="comma-separated balancing methods to choose among, e.g. none,upsampling,mixture "
                              "(mixture keeps every ratio); names: " + ", ".join(METHOD_NAMES)
                              + " (default: every method present in the sweep)")
    add_group_info_argument(analyze)
    analyze.add_argument("--empty-cells", default="skip", choices=EMPTY_CELLS,
                         help="bias-unsupervised: a (class, biased prediction) cell without examples is skipped "
                              "(default, the authors' code) or counts 0 (zero, the paper's eq. 1)")
    add_out_argument(analyze)
    analyze.set_defaults(func=run_analyze, check=check_analyze_args)

    plot = subparsers.add_parser(
        "plot", help="draw the paper's figures (PNG, PDF and the CSV of the plotted numbers)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    plot.add_argument("run_dir", metavar="RUN_DIR", nargs="+",
                      help="the sweep's directory (<storage>/<name>), or a folder of sweep directories; "
                           "several are plotted as one")
    plot.add_argument("--figure", default="all", choices=FIGURE_CHOICES,
                      help="collapse: test WGA per epoch (Figures 1/2); scaling: WGA and train accuracy against "
                           "model size (Figures 3/4/8); mixture, ablation: WGA against the mixture ratio "
                           "(Figure 7); all (default): every one")
    plot.add_argument("--model", default=None,
                      help="model shown by collapse/mixture/ablation (default: the largest per dataset)")
    add_out_argument(plot)
    plot.set_defaults(func=run_plot, check=check_plot_args)


def analyze_args(argv: list[str]) -> argparse.Namespace:
    """The arguments that ``groupsweep analyze ARGV`` parses to (every option not in ``argv`` at its
    default), for commands that run an analysis themselves (``promote --run``)."""
    parser = argparse.ArgumentParser(prog="groupsweep")
    register(parser.add_subparsers())
    return parser.parse_args(["analyze", *argv])


def check_analyze_args(args: argparse.Namespace) -> None:
    """Every ``analyze`` argument that can be checked without the sweep (also a spec's ``after`` command's,
    before the sweep runs); one-line ``GroupsweepError``."""
    # deferred: pandas and the analysis modules load when a command runs, not for `groupsweep --help`
    from analysis.selection import parse_criteria

    parse_criteria(args.criterion)
    check_group_info(args.group_info)
    parse_methods(args.methods)
    if args.out is not None:
        check_output(args.out)


def run_analyze(args: argparse.Namespace) -> int:
    """Load the results, select per criterion, print Table 1 and write it as Markdown, CSV and LaTeX."""
    # deferred: pandas and the analysis modules load when a command runs, not for `groupsweep --help`
    from analysis.selection import display_hyperparameters, display_table, paper_view, parse_criteria, select

    check_analyze_args(args)
    criteria = parse_criteria(args.criterion)
    results = load_run(args.run_dir)
    methods = parse_methods(args.methods)
    selection = select(results, criteria, epoch=args.epoch, by_model=not args.pool_models, methods=methods,
                       group_info=args.group_info, empty_cells=args.empty_cells)
    print_notes(selection.notes)
    if selection.table.empty:  # a result of the sweep, not bad input: exit status 1
        print("error: no method could be selected: no complete trial has the needed results", file=sys.stderr)
        return 1
    out = output_folder(args)  # before anything is printed: an --out that cannot be made is the one line said

    title = (f"Table 1: method chosen per validation criterion ({args.epoch} epoch); test metrics: "
             "mean ± sample std (ddof=1) over seeds")
    shown = display_table(selection.table)
    paper = paper_view(selection.table)
    print(title)
    print(paper.to_markdown(index=False, disable_numparse=True))
    print()
    print(shown.to_markdown(index=False, disable_numparse=True))

    stem = "table1" + ("" if args.criterion == "all" else f"_{args.criterion}")
    stem += ("_best" if args.epoch == "best" else "") + ("_pooled" if args.pool_models else "")
    stem += f"_groupinfo-{args.group_info}" if args.group_info else ""
    stem += "_emptycells-zero" if args.empty_cells == "zero" else ""
    sections = [f"# {title}", paper.to_markdown(index=False, disable_numparse=True), "## Details", shown.to_markdown(index=False, disable_numparse=True),
                "## Every candidate (rank 1 = chosen)", display_table(selection.methods).to_markdown(index=False, disable_numparse=True)]
    extra = []  # (title, display table, raw table, file suffix) of a search's tables
    if not selection.hyperparameters.empty:
        extra.append(("Chosen configuration per method (* = the method Table 1 chose)",
                      display_hyperparameters(selection.hyperparameters), selection.hyperparameters,
                      OPTIONAL_TABLES[0]))
    if not selection.rerun.empty:
        heading = ("Rerun of the chosen configurations: test metrics over the rerun's seeds (val score: the "
                   "search's)")
        extra.append((heading, display_table(selection.rerun), selection.rerun, OPTIONAL_TABLES[1]))
    for heading, shown_extra, _, _ in extra:
        markdown = shown_extra.to_markdown(index=False, disable_numparse=True)
        print(f"\n{heading}\n{markdown}")
        sections += [f"## {heading}", markdown]
    if selection.notes:
        sections += ["## Notes", "\n".join(f"- {note}" for note in selection.notes)]
    latex = display_table(selection.table, plus_minus=r"$\pm$").map(_latex_text)
    files = {f"{stem}.md": "\n\n".join(sections) + "\n", f"{stem}.csv": selection.table.to_csv(index=False),
             f"{stem}_methods.csv": selection.methods.to_csv(index=False),
             **{f"{stem}_{suffix}.csv": raw.to_csv(index=False) for _, _, raw, suffix in extra},
             f"{stem}.tex": latex.to_latex(index=False, escape=False)}
    write_outputs(out, files, optional=[f"{stem}_{suffix}.csv" for suffix in OPTIONAL_TABLES])
    print(f"wrote {final_location(args, out, stem + '.md')}, .csv, .tex and {stem}_methods.csv"
          + "".join(f", {stem}_{suffix}.csv" for _, _, _, suffix in extra))
    publish(args, out)
    return 0


def write_outputs(out: Path, files: dict, optional: list) -> None:
    """Write ``files`` (name -> text) into the folder ``out``, each atomically (``write_atomically``: a file is
    the old one or the new one, whole); a file named in ``optional`` that this run did not produce is
    removed, so that no table of an earlier run stays beside the new ones as if it were theirs."""
    for name in optional:
        if name not in files:
            (out / name).unlink(missing_ok=True)
    for name, text in files.items():
        write_local_atomically(out / name, text.encode())


def check_plot_args(args: argparse.Namespace) -> None:
    """The ``plot`` arguments that can be checked without the sweep: its ``--out``."""
    if args.out is not None:
        check_output(args.out)


def run_plot(args: argparse.Namespace) -> int:
    """Load the results and draw the chosen figures; print the files written and what was missing."""
    # deferred: pandas and the analysis modules load when a command runs, not for `groupsweep --help`
    from analysis.plots import check_model, make_figures

    check_plot_args(args)
    results = load_run(args.run_dir)
    check_model(results, args.model)  # before the output folder is made
    planned = local_output_path(args)
    existed = planned is not None and planned.exists()
    out = output_folder(args)
    outputs = make_figures(results, [args.figure], out, model=args.model)
    print_notes(list(results.problems) + [note for output in outputs for note in output.notes])
    drawn = [output for output in outputs if output.png is not None]
    for output in drawn:
        print(f"{output.name}: {output.png}, {output.pdf.name}, {output.csv.name}")
    if not drawn:  # nothing to show: no empty folder of this run's making left here, nothing uploaded
        if not existed and not any(out.iterdir()):
            out.rmdir()
        print(f"error: no figure drawn ({args.figure}): the notes above say what is missing", file=sys.stderr)
        return 1
    publish(args, out)
    return 0


def load_run(run_dir):
    """``load_results`` of one sweep directory or a list of them, with the unreadable-trial warnings left to
    the notes."""
    # deferred: pandas and the analysis modules load when a command runs, not for `groupsweep --help`
    from analysis.results import CorruptTrialWarning, load_results

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorruptTrialWarning)
        return load_results(run_dir)


def parse_methods(text: str | None) -> list | None:
    """A ``--methods`` value (``none,upsampling,mixture``) as a list of method names, each checked; None (every
    method) when not given. One-line ``GroupsweepError`` for an unknown name or a value naming none."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise GroupsweepError(f"--methods {text!r} names no method; give comma-separated names such as "
                              "none,upsampling")
    for name in names:
        choose("method", name, METHOD_NAMES)
    return names


def default_out_dir(run_dir) -> Path:
    """Where an analysis of ``run_dir`` writes without ``--out``: ``RUN_DIR/groupsweep_analysis`` for a local
    sweep; for a sweep in object storage, ``<sweep name>_groupsweep_analysis`` in the current folder
    (analyses write locally unless ``--out`` names a URI)."""
    if "://" in str(run_dir):
        return Path.cwd() / f"{split_location(run_dir)[1]}_{DEFAULT_OUT}"
    return Path(run_dir).expanduser() / DEFAULT_OUT


def local_output_path(args: argparse.Namespace) -> Path | None:
    """Where the output folder is on this machine: ``--out``, else ``default_out_dir`` of the (first) sweep
    directory; None when ``--out`` is a URI (the files are written into a temporary folder and uploaded)."""
    if args.out and "://" in str(args.out):
        return None
    run_dir = args.run_dir[0] if isinstance(args.run_dir, (list, tuple)) else args.run_dir
    return check_output(args.out) if args.out else default_out_dir(run_dir)


def output_folder(args: argparse.Namespace) -> Path:
    """The local output folder, created: ``local_output_path``, or a new temporary folder when ``--out`` is a
    URI (``publish`` uploads it)."""
    out = local_output_path(args)
    if out is None:
        return Path(tempfile.mkdtemp(prefix="groupsweep-out-"))
    make_folder(out, "--out" if args.out else "the output folder")
    return out


def make_folder(folder: Path, what: str) -> None:
    """Create ``folder`` (and its parents) if needed; a one-line ``GroupsweepError`` naming ``what`` it is (an
    option such as ``--out``) when it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise GroupsweepError(f"{what} {str(folder)!r}: cannot create the folder ({error.strerror or error})") from None


def final_location(args: argparse.Namespace, out: Path, name: str) -> str:
    """Where the file ``name`` written into the output folder ``out`` ends up, as the lines printed name it:
    under ``--out`` when that is a URI (``out`` is then a temporary folder that ``publish`` uploads there)."""
    return join_location(args.out, name) if args.out and "://" in str(args.out) else str(out / name)


def publish(args: argparse.Namespace, out: Path) -> None:
    """When ``--out`` is a storage URI, upload every file written into the local folder ``out`` there
    (``upload``) and remove the folder."""
    if not (args.out and "://" in str(args.out)):
        return
    try:
        upload(out, args.out)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def upload(local: Path, uri: str) -> None:
    """Copy the local file or folder ``local`` to the storage URI ``uri``, each file atomically
    (``write_atomically``: a failed upload leaves each earlier file there whole), and say so; a failing upload is
    one ``GroupsweepError`` line."""
    local = Path(local)
    files = [(local, "")] if local.is_file() else [(file, "/" + file.relative_to(local).as_posix())
                                                      for file in sorted(local.rglob("*")) if file.is_file()]
    try:
        filesystem, path = location_filesystem(uri)
        for file, relative in files:
            write_atomically(filesystem, path.rstrip("/") + relative, file.read_bytes())
    except (OSError, pyarrow.ArrowException) as error:
        raise GroupsweepError(f"cannot upload to --out {uri!r}: {error}") from None
    print(f"uploaded to {uri}")


def check_output(path, kind: str = "folder", local_only: bool = False) -> Path | str:
    """``path`` (an ``--out`` value) as a ``Path`` if an output ``kind`` (``folder`` or ``file``) can be
    written there: it is one already, or its nearest existing parent is a writable folder. Else a one-line
    ``GroupsweepError`` naming it. Nothing is created. A storage URI (a folder or file to upload to) is
    returned as given once pyarrow knows its scheme, unless ``local_only`` (then it is refused in one line)."""
    if "://" in str(path):
        if local_only:
            raise GroupsweepError(f"--out {str(path)!r} must be a local path here, not a storage URI")
        location_filesystem(path)  # a scheme pyarrow cannot open: refused now, not after the analysis ran
        return path
    if not str(path).strip():
        raise GroupsweepError(f"--out is empty; give the {kind} to write")
    path = Path(path).expanduser()
    if path.exists() and (path.is_dir() != (kind == "folder")):
        what = "a regular file" if kind == "folder" else "a folder"
        raise GroupsweepError(f"--out {str(path)!r} is {what}; give the {kind} to write")
    if kind == "file":
        _check_not_sweep_state(path)
    existing = path if path.exists() and kind == "folder" else path.absolute().parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise GroupsweepError(f"--out {str(path)!r} cannot be created: {str(existing)!r} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise GroupsweepError(f"--out {str(path)!r} cannot be written: folder {str(existing)!r} is not writable")
    return path


def _check_not_sweep_state(path: Path) -> None:
    """A one-line ``GroupsweepError`` if writing the file ``path`` would change a sweep's own files: a name of
    ``SWEEP_STATE_FILES`` in a folder, or any file in a trial folder or below it."""
    folder = path.absolute().parent
    if path.name.startswith(SWEEP_STATE_FILES):
        raise GroupsweepError(f"--out {str(path)!r} is named as a sweep's own state ({path.name}); give another file")
    for parent in (folder, *folder.parents):
        if (parent / "params.json").is_file():
            raise GroupsweepError(f"--out {str(path)!r} is in the trial folder {str(parent)!r}, whose files the sweep "
                                  "reads; give a file outside it")


def print_notes(notes: list) -> None:
    """Print each note as one ``note:`` line on stderr."""
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


def _latex_text(value):
    """``value`` with LaTeX's special characters escaped (``$\\pm$`` kept)."""
    if not isinstance(value, str):
        return value
    for char in "&%#_{}":
        value = value.replace(char, "\\" + char)
    return value.replace("$\\pm$", "\x00").replace("$", "\\$").replace("\x00", "$\\pm$")
