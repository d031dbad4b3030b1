"""One self-contained HTML page about a sweep: what ran, Table 1 under every criterion, the chosen
hyperparameters of a search, the figures, every trial, and what is missing.

``build_report(results)`` reads a loaded sweep (``analysis.results.SweepResults``, one directory or
several analysed as one) and returns a ``Report`` whose ``html`` is the page; ``write_report`` writes
it to a file. The page needs nothing but itself: the styles are inline, every figure is a PNG embedded
as base64 (``data:image/png;base64,...``, drawn by ``analysis.plots.make_figures`` into a temporary
folder at ``analysis.plots.DPI``), and each figure's plotted numbers come with it as an embedded CSV
link. No script, font or image is fetched from anywhere.

Sections, in order (each an ``<h2>`` with the ``id`` given, each table an HTML ``<table>`` with the
``id`` given, written by ``pandas.DataFrame.to_html``, which escapes every text):

- ``summary``: the trials per status and the run summary (``analysis.summary.summarize``, the table
  ``groupsweep run`` prints), table ``summary-table``;
- ``table1``: Table 1 under every criterion of ``analysis.selection.CRITERIA`` (``select`` with the
  epoch rule, grouping and candidates given): the paper's layout (``table1-paper``), the details
  (``table1-details``, the columns of ``display_table``) and every candidate (``table1-candidates``);
- ``hyperparameters`` (a search only): each method's chosen configuration (``hyperparameters-table``)
  and, when the directories hold reruns of them, the rerun's Table 1 (``rerun-table``);
- ``figures``: every figure of ``analysis.plots.FIGURES`` that could be drawn (``ablation`` only when the
  sweep has ``mixture-nosubset`` trials: without them it repeats ``mixture``; ``scaling`` only when a
  dataset has several models);
- ``trials``: one row per trial (``trials-table``): its dataset, model, method, seed (configuration,
  for a search), status, last and configured epoch, and its last reported val and test WGA;
- ``notes``: everything left out or missing (the selection's notes, the figures' notes), one item each.
"""

from __future__ import annotations

import base64
import html
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from analysis.plots import FIGURES, make_figures
from analysis.results import SweepResults
from analysis.selection import CRITERIA, Selection, display_hyperparameters, display_table, paper_view, select
from analysis.summary import display_summary, in_order, summarize, trial_progress
from trainables.balancing import METHODS
from trainables.errors import GroupsweepError
from trainables.trial_dir import split_location, write_local_atomically

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Titles of the figures of ``analysis.plots.FIGURES`` on the page.
FIGURE_TITLES = {
    "collapse": "Test worst-group accuracy per epoch (the kind of Figures 1 and 2)",
    "mixture": "Test worst-group accuracy against the mixture ratio (the kind of Figure 7)",
    "scaling": "Test worst-group and training accuracy against model size (the kind of Figures 3, 4 and 8)",
    "ablation": "Mixture with and without subsetting (the kind of Figure 7)",
}
STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1.5em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
p.meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.8em 0 1.2em; font-size: 0.88em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.9em; }
details summary { cursor: pointer; color: #0072B2; margin: 0.5em 0; }
.status-complete { color: #009E73; } .status-diverged, .status-error { color: #D55E00; font-weight: bold; }
.status-incomplete, .status-pending, .status-stopped { color: #8a6d00; }
ul.notes li { margin: 0.2em 0; }
"""


@dataclass
class Report:
    """A built report: ``html`` (the page), the ``selection`` its Table 1 shows (``select`` over every
    criterion), the names of the figures it embeds, and its ``notes`` (also on the page)."""

    html: str
    selection: Selection
    figures: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def build_report(results: SweepResults, epoch: str = "final", by_model: bool = True, methods=None,
                 title: str | None = None, group_info: str | None = None) -> Report:
    """The report page of ``results`` (see the module docstring).

    ``epoch`` (``final`` or ``best``), ``by_model``, ``methods`` and ``group_info`` are
    ``analysis.selection.select``'s (default: the final epoch, per dataset and model, every method present,
    whatever group information it uses); ``title`` defaults to the sweep directories' names. A bad epoch rule
    or group information raises ``GroupsweepError``; missing results never raise: they are left out and listed
    in the notes.
    """
    selection = select(results, list(CRITERIA), epoch=epoch, by_model=by_model, methods=methods,
                       group_info=group_info)
    notes = list(selection.notes)
    sweeps = _sweep_names(results)
    title = title or f"groupsweep report: {', '.join(sweeps)}"
    grouping = "per dataset and model" if by_model else "per dataset, models pooled"
    parts = [f"<h1>{_text(title)}</h1>",
             f"<p class=\"meta\">{_text(_describe(results, sweeps))} Selection: {epoch} epoch, {grouping}; "
             f"candidates: {_text(', '.join(methods)) if methods else 'every method present'}"
             f"{_text(f', using at most {group_info} group information') if group_info else ''}. "
             f"Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} by groupsweep.</p>"]
    order = _trial_order(results)
    parts += _summary_section(results, order)
    parts += _table1_section(selection, notes)
    parts += _search_section(selection, results)
    figure_parts, figures = _figures_section(results, notes)
    parts += figure_parts
    parts += _trials_section(results, order)
    parts += _notes_section(notes)
    page = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_text(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(parts) + "\n</body>\n</html>\n")
    return Report(html=page, selection=selection, figures=figures, notes=notes)


def write_report(results: SweepResults, out, **options) -> Report:
    """``build_report(results, **options)`` written to the file ``out`` (its folder created); returns the
    ``Report``. A file that cannot be written raises a one-line ``GroupsweepError``."""
    report = build_report(results, **options)
    out = Path(out)
    try:  # atomically: a failure leaves the previous report whole
        write_local_atomically(out, report.html.encode("utf-8"))
    except OSError as error:
        raise GroupsweepError(f"cannot write the report {str(out)!r}: {error.strerror or error}") from None
    return report


def _sweep_names(results: SweepResults) -> list:
    """The names of the sweep directories in ``results`` (the last part of each path or URI)."""
    return [split_location(run_dir)[1] for run_dir in results.run_dirs]


def _describe(results: SweepResults, sweeps: list) -> str:
    """One sentence: how many trials, datasets and models the sweep has and their statuses."""
    trials = results.trials
    statuses = trials["status"].value_counts()
    counts = ", ".join(f"{count} {status}" for status, count in statuses.items())
    return (f"{len(trials)} trial(s) in {len(sweeps)} sweep director{'y' if len(sweeps) == 1 else 'ies'} "
            f"({counts}); {trials['dataset'].nunique()} dataset(s), {trials['model'].nunique()} model(s), "
            f"{trials['method_label'].nunique()} method(s).")


def _trial_order(results: SweepResults) -> list:
    """Trial names ordered by dataset, method (in ``trainables.balancing.METHODS`` order), ratio, model,
    seed, configuration and sweep: the order of the summary and the trial table."""
    rank = {name: index for index, name in enumerate(METHODS)}
    trials = results.trials
    keys = sorted(zip(trials["dataset"], [rank.get(method, len(rank)) for method in trials["method"]],
                      trials["ratio"].fillna(0.0), trials["model"], trials["seed"], trials["config_id"],
                      trials["sweep"], trials["trial_name"]))
    return [key[-1] for key in keys]


def _summary_section(results: SweepResults, order: list) -> list:
    """The run summary: final test WGA per dataset, model and method."""
    return ['<h2 id="summary">Sweep summary</h2>',
            "<p>Final test worst-group accuracy per dataset, model (and variant) and method over the finished "
            "trials (mean ± sample std, ddof=1), as <code>groupsweep run</code> prints it.</p>",
            _table(display_summary(summarize(results, order)), "summary-table")]


def _table1_section(selection: Selection, notes: list) -> list:
    """Table 1 in the paper's layout, its details and every candidate."""
    parts = ['<h2 id="table1">Table 1: the balancing method each validation criterion selects</h2>']
    if selection.table.empty:
        notes.append("Table 1: no method could be selected (no complete trial has the needed results)")
        return parts + ["<p>No method could be selected: no complete trial has the needed results.</p>"]
    parts += ["<p>Per criterion, the method (every mixture ratio its own) with the best mean validation "
              "score over seeds, and its test worst-group accuracy in percent (mean over seeds). "
              "<code>oracle</code> selects by test WGA: an upper bound, not a valid selection.</p>",
              _table(paper_view(selection.table), "table1-paper"),
              "<p>Details: test metrics as mean ± sample std (ddof=1) over seeds.</p>",
              _table(display_table(selection.table), "table1-details"),
              "<details><summary>Every candidate (rank 1 = chosen)</summary>",
              _table(display_table(selection.methods), "table1-candidates"), "</details>"]
    return parts


def _search_section(selection: Selection, results: SweepResults) -> list:
    """A search's chosen configuration per method, and the rerun of the chosen configurations."""
    if not results.searched:
        return []
    parts = ['<h2 id="hyperparameters">Hyperparameter search: the chosen configurations</h2>']
    if selection.hyperparameters.empty:
        parts.append("<p>No configuration could be chosen.</p>")
    else:
        parts += ["<p>Each method's configuration with the best mean validation criterion over its seeds "
                  "(* marks the method Table 1 chose).</p>",
                  _table(display_hyperparameters(selection.hyperparameters), "hyperparameters-table")]
    if not selection.rerun.empty:
        parts += ["<p>Rerun of the chosen configurations on new seeds: their test metrics (the numbers to report; "
                  "val score: the search's).</p>", _table(display_table(selection.rerun), "rerun-table")]
    return parts


def _figures_section(results: SweepResults, notes: list) -> tuple:
    """``(html parts, names of the figures drawn)``: every figure drawn into a temporary folder and
    embedded as a base64 PNG, with its plotted numbers as an embedded CSV link."""
    parts, drawn = ['<h2 id="figures">Figures</h2>'], []
    names = list(FIGURES)
    if not (results.trials["method"] == "mixture-nosubset").any():
        names.remove("ablation")  # it is the mixture figure plus mixture-nosubset: without that method, a repeat
    if not (results.trials["method"] == "mixture").any():
        names.remove("mixture")  # a sweep without mixture ratios has nothing to draw there: not a missing result
    if results.trials.groupby("dataset")["model"].nunique().max() < 2:
        names.remove("scaling")
        notes.append("scaling: every dataset has one model; the scaling figure is left out")
    with tempfile.TemporaryDirectory(prefix="groupsweep-report-") as folder:
        for output in make_figures(results, names, folder):
            notes.extend(note for note in output.notes if note not in notes)
            if output.png is None:
                continue
            png = output.png.read_bytes()
            width = int.from_bytes(png[16:20], "big")  # the IHDR chunk: width, then height, in pixels
            csv = base64.b64encode(output.csv.read_bytes()).decode("ascii")
            parts.append(
                f'<figure id="figure-{output.name}"><img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" '
                f'width="{width // 2}" alt="{_text(FIGURE_TITLES.get(output.name, output.name))}">'
                f"<figcaption>{_text(FIGURE_TITLES.get(output.name, output.name))} "
                f'(<a download="{output.name}.csv" href="data:text/csv;base64,{csv}">plotted numbers, CSV</a>)'
                "</figcaption></figure>")
            drawn.append(output.name)
    if not drawn:
        parts.append("<p>No figure could be drawn (see the notes).</p>")
    return parts, drawn


def _trials_section(results: SweepResults, order: list) -> list:
    """Every trial, in ``order``: identity, status, epochs and its last reported val / test WGA."""
    progress = trial_progress(results, order)
    trials = in_order(results.trials, order)
    columns = ["trial_name", "dataset", "model", "method_label", "seed"]
    if results.searched:
        columns += ["config_id", "hparams"]
    if trials["sweep"].nunique() > 1:
        columns.insert(1, "sweep")
    table = trials[columns].rename(columns={"trial_name": "trial", "method_label": "method"})
    table["status"] = [f'<span class="status-{status}">{html.escape(status)}</span>' for status in progress["status"]]
    table["epoch"] = [f"{last} / {total}" for last, total in zip(progress["last_epoch"], progress["epochs"])]
    for key in ("val/wga", "test/wga"):
        table[f"last {key} (%)"] = ["-" if pd.isna(value) else f"{100 * value:.1f}" for value in progress[key]]
    for column in table.columns:  # escape every text but the status markup
        if column != "status":
            table[column] = [html.escape(str(value)) for value in table[column]]
    return ['<h2 id="trials">Trials</h2>',
            "<p>Status: complete (reached its last epoch), stopped (ended early by a search's ASHA), incomplete "
            "(running or interrupted), diverged, error or pending (no report yet).</p>",
            table.to_html(index=False, border=0, escape=False, table_id="trials-table", na_rep="-")]


def _notes_section(notes: list) -> list:
    """The notes as a list (or a line saying there are none)."""
    parts = ['<h2 id="notes">Notes</h2>']
    if not notes:
        return parts + ["<p>Nothing is missing: every trial is complete and every figure was drawn.</p>"]
    return parts + ['<ul class="notes">' + "".join(f"<li>{_text(note)}</li>" for note in notes) + "</ul>"]


def _table(frame: pd.DataFrame, table_id: str) -> str:
    """``frame`` as an escaped HTML table with the ``id`` ``table_id``."""
    return frame.to_html(index=False, border=0, table_id=table_id, na_rep="-")


def _text(value) -> str:
    """``value`` as HTML text (escaped)."""
    return html.escape(str(value))
