"""A sweep at a glance: per-trial progress and the per-model, per-method summary that ``groupsweep run`` and
``groupsweep status`` print.

In a hyperparameter search a method's trials are configurations, not repeats, so the summary does not pool
them: it reports each method's configuration chosen by validation worst-group accuracy (mean over its search
seeds, final epoch: ``analysis.selection.select``, the rule of ``groupsweep analyze``).

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
from analysis.selection import select

SUMMARY_COLUMNS = ("dataset", "model", "method", "config", "n", "diverged", "test_wga_mean", "test_wga_std")
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
    trial's ``variant`` (``SweepResults.trials``) in parentheses when it has one. ``diverged`` counts the
    diverged trials. Accuracies are fractions.

    In a grid sweep ``config`` is empty and the row pools the method's trials (its seeds): ``n`` counts the
    finished trials with a final ``test/wga`` (their row of ``SweepResults.final_rows()``), ``test_wga_mean``
    is their mean and ``test_wga_std`` their sample standard deviation (ddof=1; NaN for fewer than two, the
    mean NaN for none). In a search (``SweepResults.searched``) the row is the method's configuration chosen
    by validation WGA (module docstring): ``config`` is ``"<config_id> of <configurations of the method in the
    sweep>"`` (those ASHA stopped or that diverged included), and ``n`` and
    the test numbers are over that configuration's finished seeds (``n`` 0 and an empty ``config`` while no
    configuration of the method has finished).
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
    chosen = _chosen_configurations(results) if results.searched else {}
    rows = []
    for (dataset, model, variant, label), group in trials.groupby(["dataset", "model", "variant", "method_label"],
                                                                  sort=False):
        row = {"dataset": dataset, "model": f"{model} ({variant})" if variant else model, "method": label,
               "diverged": int(group["is_diverged"].sum())}
        if results.searched:
            row.update(chosen.get((dataset, model, variant, label),
                                  {"config": "", "n": 0, "test_wga_mean": float("nan"), "test_wga_std": float("nan")}))
            if row["config"]:
                row["config"] += f" of {group['config_id'].nunique()}"
        else:
            values = group["final_wga"].dropna()
            row.update({"config": "", "n": len(values),
                        "test_wga_mean": values.mean() if len(values) else float("nan"),
                        "test_wga_std": values.std(ddof=1) if len(values) > 1 else float("nan")})
        rows.append(row)
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def _chosen_configurations(results: SweepResults) -> dict:
    """(dataset, model, variant, method label) -> the ``summarize`` values of the configuration ``select`` chooses
    for that method by validation WGA at the final epoch (methods without a finished configuration are absent)."""
    methods = select(results, ["wga"], epoch="final").methods
    if methods.empty:
        return {}
    if "variant" not in methods:
        methods = methods.assign(variant="")
    return {(row.dataset, row.model, row.variant, row.method_label): {
                "config": row.config_id, "n": int(row.n_seeds),
                "test_wga_mean": row.test_wga_mean, "test_wga_std": row.test_wga_std}
            for row in methods.itertuples(index=False)}


def format_summary(summary: pd.DataFrame) -> str:
    """A ``summarize`` table as text: a header line, then one line per row with the accuracy in
    percent as ``mean ± std`` (``mean`` alone for one trial, ``-`` for none) and ``(N diverged)``
    when some trials diverged; for a search (any ``config``), the chosen configuration after the method."""
    searched = bool(summary["config"].astype(bool).any())
    config = f" {'config (by val WGA)':<20}" if searched else ""
    lines = [f"{'dataset':<24} {'model':<16} {'method':<22}{config} {'n':>3}  {'final test WGA (%)':>20}"]
    for row in summary.itertuples(index=False):
        value = _percent(row.test_wga_mean, row.test_wga_std)
        extra = f"  ({row.diverged} diverged)" if row.diverged else ""
        config = f" {row.config:<20}" if searched else ""
        lines.append(f"{row.dataset:<24} {row.model:<16} {row.method:<22}{config} {row.n:>3}  {value:>20}{extra}")
    return "\n".join(lines)


def display_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """A ``summarize`` table for reading (the numbers of ``format_summary``): ``dataset``, ``model``,
    ``method``, for a search ``config (by val WGA)``, ``n``, ``diverged`` and ``final test WGA (%)`` as
    ``mean ± std`` (``mean`` alone for one trial, ``-`` for none)."""
    columns = ["dataset", "model", "method", "config", "n", "diverged"]
    if not summary["config"].astype(bool).any():
        columns.remove("config")
    shown = summary[columns].rename(columns={"config": "config (by val WGA)"})
    shown["final test WGA (%)"] = [_percent(mean, std) for mean, std in
                                   zip(summary["test_wga_mean"], summary["test_wga_std"])]
    return shown.reset_index(drop=True)


def _percent(mean: float, std: float) -> str:
    """``70.1 ± 10.9`` from fractions; the mean alone when ``std`` is NaN, ``-`` when ``mean`` is."""
    if math.isnan(mean):
        return "-"
    return f"{100 * mean:.1f}" + ("" if math.isnan(std) else f" ± {100 * std:.1f}")
