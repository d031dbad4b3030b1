"""``groupsweep report``: one self-contained HTML page about a sweep (``analysis.report``).

``report RUN_DIR [RUN_DIR ...] [--out FILE]`` loads the sweep directories offline (as one sweep, like
``analyze``) and writes a page with the run summary, Table 1 under every criterion, a search's chosen
configurations and their rerun, every figure (embedded PNGs), every trial's status and the notes about
what is missing (``--epoch``, ``--pool-models``, ``--methods`` and ``--group-info`` choose Table 1's candidates
as ``analyze``'s do). The page fetches nothing: open it in any browser, mail it, attach it. The default
``FILE`` is ``report.html`` in ``RUN_DIR/groupsweep_analysis`` (for a URI RUN_DIR, in
``<sweep>_groupsweep_analysis`` in the current folder); a storage URI ``FILE`` is uploaded there. A sweep
that is still running or partly failed gives a page with notes; a directory that does not exist or holds
no trial is a one-line error.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from sweeps.analyze_command import (DEFAULT_OUT, METHOD_NAMES, add_group_info_argument, check_group_info, check_output,
                                    default_out_dir, load_run, parse_methods, print_notes, upload)

REPORT_FILE = "report.html"


def register(subparsers) -> None:
    """Add the ``report`` command."""
    report = subparsers.add_parser(
        "report", help="write one self-contained HTML page: summary, Table 1, chosen hyperparameters, figures, "
                       "trials, notes",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("run_dir", metavar="RUN_DIR", nargs="+",
                        help="the sweep's directory (<storage>/<name>), or a folder of sweep directories; "
                             "several are reported as one")
    report.add_argument("--out", default=None, metavar="FILE",
                        help=f"the HTML file to write (default: RUN_DIR/{DEFAULT_OUT}/{REPORT_FILE})")
    report.add_argument("--epoch", default="final", choices=("final", "best"),
                        help="Table 1's epoch rule: final (default, the paper) or best (each run's best epoch)")
    report.add_argument("--pool-models", action="store_true",
                        help="select per dataset, pooling its models as runs (default: per dataset and model)")
    report.add_argument("--methods", default=None, metavar="NAME[,NAME...]",
                        help="comma-separated balancing methods Table 1 chooses among; names: "
                             + ", ".join(METHOD_NAMES) + " (default: every method present in the sweep)")
    add_group_info_argument(report, "Table 1 chooses")
    report.add_argument("--title", default=None, help="the page's title (default: the sweep directories' names)")
    report.set_defaults(func=run_report, check=check_report_args)


def check_report_args(args: argparse.Namespace) -> None:
    """The ``report`` arguments that can be checked without the sweep: its method names, group information and
    ``--out``."""
    parse_methods(args.methods)
    check_group_info(args.group_info)
    if args.out is not None:
        check_output(args.out, "file")


def run_report(args: argparse.Namespace) -> int:
    """Load the sweep, write the page, print where it went and its notes; 0 when Table 1 has a row."""
    check_report_args(args)
    out = check_output(args.out, "file") if args.out else default_out(args.run_dir[0])
    results = load_run(args.run_dir)
    report = publish_report(results, out, epoch=args.epoch, by_model=not args.pool_models,
                            methods=parse_methods(args.methods), title=args.title, group_info=args.group_info)
    print_notes(report.notes)
    print(f"wrote {out} ({len(report.html) // 1024} KiB; {len(report.figures)} figure(s), "
          f"{len(results.trials)} trial(s))")
    return 0 if not report.selection.table.empty else 1


def publish_report(results, out, **options):
    """Write the HTML report of ``results`` (``analysis.report.write_report`` with ``options``) to ``out``: a
    local file, or a storage URI, written to a temporary file and then uploaded (as every ``--out``); the
    ``Report``."""
    # deferred: pandas, matplotlib and the analysis modules load when a command runs, not for `groupsweep --help`
    from analysis.report import write_report

    remote = "://" in str(out)
    local = Path(tempfile.mkdtemp(prefix="groupsweep-report-")) / REPORT_FILE if remote else Path(out)
    try:
        report = write_report(results, local, **options)
        if remote:
            upload(local, out)
    finally:
        if remote:
            shutil.rmtree(local.parent, ignore_errors=True)
    return report


def default_out(run_dir) -> Path:
    """``report.html`` in ``default_out_dir(RUN_DIR)`` (``RUN_DIR/groupsweep_analysis``, or for a sweep in
    object storage ``<sweep>_groupsweep_analysis`` in the current folder)."""
    return default_out_dir(run_dir) / REPORT_FILE
