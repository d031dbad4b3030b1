"""A sweep at a glance: per-trial progress and the per-model, per-method summary that ``groupsweep run`` and
``groupsweep status`` print.

Both read the sweep through ``analysis.results.load_results`` (a ``SweepResults``), so "finished"
and "diverged" mean here what they mean in every analysis: a trial is finished when its status is
``complete`` (it reported its last configured epoch without diverging) and diverged when its status
is ``diverged``. Tables follow an ``order`` of trial names (the spec's grid order); trials it does not
name come after, sorted by name. ``None`` in place of the results (a sweep without any trial directory
yet) gives a table without rows.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.results import SweepResults

SUMMARY_COLUMNS = ("dataset", "model", "method", "n", "diverged", "test_wga_mean", "test_wga_std")
PROGRESS_COLUMNS = ("trial_name", "status", "last_epoch", "epochs", "val/wga", "test/wga")


def in_order(trials: pd.DataFrame, order=()) -> pd.DataFrame:
    """``trials`` (a table with a ``trial_name`` column) sorted by the position of each trial name in
    ``order``, then, for names not in ``order``, by name."""
    rank = {name: index for index, name in enumerate(order)}
    keys = [(rank.get(name, len(rank)), name) for name in trials["trial_name"]]
    positions = sorted(range(len(keys)), key=keys.__getitem__)
    return trials.iloc[positions]


def trial_progress(results: SweepResults | None, order=()) -> pd.DataFrame:
    """One row per trial of ``results``, in ``order``: ``PROGRESS_COLUMNS``.

    ``status`` is the trial's ``SweepResults`` status (``complete``, ``stopped``, ``incomplete``,
    ``diverged``, ``error`` or ``pending``), ``last_epoch`` the last reported epoch (0: none yet), ``epochs`` the
    configured epochs, ``val/wga`` and ``test/wga`` the metrics of the last report (NaN when there is
    none or it has none, as a diverged trial's last report).
    """
    if results is None:
        return pd.DataFrame(columns=list(PROGRESS_COLUMNS))
    trials = in_order(results.trials, order)
    last = results.frame.groupby("trial_id", sort=False).tail(1).set_index("trial_id")
    table = trials[["trial_name", "status", "last_epoch", "epochs"]].copy()
    for key in ("val/wga", "test/wga"):
        table[key] = trials["trial_id"].map(last[key]) if key in last else float("nan")
    return table.reset_index(drop=True)


def summarize(results: SweepResults | None, order=()) -> pd.DataFrame:
    """Final test worst-group accuracy per dataset, model and method: ``SUMMARY_COLUMNS``.

    One row per (dataset, model, variant, method label), in the order of first appearance among the trials
    sorted by ``order``, as the paper's tables are per dataset and model: trials of different models (or
    variants, such as ``last_layer_only=true``) are never pooled. ``model`` is the model's name, with the
    trial's ``variant`` (``SweepResults.trials``) in parentheses when it has one. ``n`` counts the finished
    trials with a final ``test/wga`` (their row of ``SweepResults.final_rows()``), ``test_wga_mean`` is
    their mean and ``test_wga_std`` their sample
    standard deviation (ddof=1; NaN for fewer than two, the mean NaN for none); ``diverged`` counts the
    diverged trials. Accuracies are fractions.
    """
    if results is None:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    trials = in_order(results.trials, order)
    final = results.final_rows()
    if "test/wga" in final:
        final_wga = trials["trial_id"].map(final.set_index("trial_id")["test/wga"])
    else:
        final_wga = pd.Series(float("nan"), index=trials.index)
    trials = trials.assign(final_wga=final_wga, is_diverged=trials["status"] == "diverged")
    rows = []
    for (dataset, model, variant, label), group in trials.groupby(["dataset", "model", "variant", "method_label"],
                                                                  sort=False):
        values = group["final_wga"].dropna()
        rows.append({"dataset": dataset, "model": f"{model} ({variant})" if variant else model, "method": label,
                     "n": len(values),
                     "diverged": int(group["is_diverged"].sum()),
                     "test_wga_mean": values.mean() if len(values) else float("nan"),
                     "test_wga_std": values.std(ddof=1) if len(values) > 1 else float("nan")})
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def format_summary(summary: pd.DataFrame) -> str:
    """A ``summarize`` table as text: a header line, then one line per row with the accuracy in
    percent as ``mean ± std`` (``mean`` alone for one trial, ``-`` for none) and ``(N diverged)``
    when some trials diverged."""
    lines = [f"{'dataset':<24} {'model':<16} {'method':<22} {'n':>3}  {'final test WGA (%)':>20}"]
    for row in summary.itertuples(index=False):
        value = _percent(row.test_wga_mean, row.test_wga_std)
        extra = f"  ({row.diverged} diverged)" if row.diverged else ""
        lines.append(f"{row.dataset:<24} {row.model:<16} {row.method:<22} {row.n:>3}  {value:>20}{extra}")
    return "\n".join(lines)


def display_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """A ``summarize`` table for reading (the numbers of ``format_summary``): ``dataset``, ``model``,
    ``method``, ``n``, ``diverged`` and ``final test WGA (%)`` as ``mean ± std`` (``mean`` alone for one trial, ``-``
    for none)."""
    shown = summary[["dataset", "model", "method", "n", "diverged"]].copy()
    shown["final test WGA (%)"] = [_percent(mean, std) for mean, std in
                                   zip(summary["test_wga_mean"], summary["test_wga_std"])]
    return shown.reset_index(drop=True)


def _percent(mean: float, std: float) -> str:
    """``70.1 ± 10.9`` from fractions; the mean alone when ``std`` is NaN, ``-`` when ``mean`` is."""
    if math.isnan(mean):
        return "-"
    return f"{100 * mean:.1f}" + ("" if math.isnan(std) else f" ± {100 * std:.1f}")
