"""Model selection of the balancing method (the paper's Table 1).

For each group of trials (a dataset, optionally split by model; trials whose other settings differ,
see ``SweepResults`` ``variant``, are never pooled) every balancing method is a candidate, each
mixture ratio a separate one. A trial's *criterion value* is read on its validation split:

- ``wga``: ``val/wga``; ``worst-class``: ``val/wca``; ``average``: ``val/avg_acc``;
- ``bias-unsupervised``: ``analysis.metrics.bias_unsupervised_score`` of the trial's saved val
  predictions against those of the biased model, the ``none`` trial of the same dataset, model,
  variant and seed at its final epoch (empty cells skipped, as the authors' code);
- ``oracle``: ``test/wga`` (an upper bound, not a valid selection).

Epoch rule: ``final`` reads every trial at its last configured epoch (the paper trains to
completion); ``best`` reads each trial at the epoch that maximises the criterion (earliest on ties;
optimal early stopping). Only complete trials take part; the others are listed in the notes.

A method's score is the mean of its trials' criterion values over seeds; the method with the
highest score is chosen. Ties (scores within ``TIE_TOLERANCE``) go to the method listed first in
``trainables.balancing.METHODS`` (none, subsetting, upsampling, upweighting, mixture,
mixture-nosubset, subg, rwg; unknown methods after them, by name), then to the smaller ratio. The
chosen method's test metrics (``test/wga``, ``test/avg_acc``, ``test/wca`` at the same epochs) are
reported as mean and sample standard deviation (ddof=1; NaN for one seed) over its trials.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.metrics import bias_unsupervised_score
from analysis.results import SweepResults
from trainables.balancing import METHODS
from trainables.errors import GroupsweepError, choose

CRITERIA = {
    "wga": "val/wga",
    "worst-class": "val/wca",
    "bias-unsupervised": None,
    "average": "val/avg_acc",
    "oracle": "test/wga",
}
EPOCH_RULES = ("final", "best")
TEST_METRICS = {"test_wga": "test/wga", "test_avg_acc": "test/avg_acc", "test_wca": "test/wca"}
TIE_TOLERANCE = 1e-12


@dataclass
class Selection:
    """Result of ``select``.

    ``table`` (Table 1): one row per group x criterion with the chosen ``method_label`` (and
    ``method``, ``ratio``), its ``score`` (mean validation criterion), ``test_wga_mean/std``,
    ``test_avg_acc_mean/std``, ``test_wca_mean/std``, ``n_seeds``, ``n_runs`` (trials; more than
    ``n_seeds`` when models are pooled) and ``n_candidates``. ``methods``: the same numbers for
    every candidate (``selected`` marks the winner, ``rank`` 1 = best). ``notes``: what was missing
    or skipped, one line each.
    """

    table: pd.DataFrame
    methods: pd.DataFrame
    notes: list = field(default_factory=list)


def parse_criteria(criterion: str) -> list:
    """The criteria named by ``criterion`` (one of ``CRITERIA`` or ``all``), in ``CRITERIA`` order."""
    choose("selection criterion", criterion, [*CRITERIA, "all"])
    return list(CRITERIA) if criterion == "all" else [criterion]


def select(results: SweepResults, criteria=("wga",), epoch: str = "final", by_model: bool = False,
           methods=None) -> Selection:
    """Choose the balancing method per group for each criterion (see the module docstring).

    ``criteria``: names from ``CRITERIA``; ``epoch``: ``final`` or ``best``; ``by_model``: one group per
    (dataset, model) instead of per dataset (without it, the models of a dataset are pooled as extra
    runs of each method, and a note says so); ``methods``: restrict the candidates to these method
    names (default: every method present).
    """
    for criterion in criteria:
        choose("selection criterion", criterion, CRITERIA)
    choose("epoch rule", epoch, EPOCH_RULES)
    notes = _excluded_trials(results)
    frame = results.frame[results.frame["status"] == "complete"]
    if methods is not None:
        for name in methods:
            if name not in set(results.trials["method"]):
                notes.append(f"method {name!r} has no trials in this sweep")
        frame = frame[frame["method"].isin(list(methods))]
    keys = ["dataset", "model", "variant"] if by_model else ["dataset", "variant"]
    if not by_model:
        for dataset, models in frame.groupby("dataset")["model"].unique().items():
            if len(models) > 1:
                notes.append(f"{dataset}: {len(models)} models pooled as runs of one method "
                             f"({', '.join(sorted(models))}); use by-model selection to separate them")

    tables, per_method = [], []
    for criterion in criteria:
        runs = _criterion_runs(results, frame, criterion, epoch, notes)
        if runs.empty:
            notes.append(f"{criterion}: no complete trial with a value for this criterion; skipped")
            continue
        scored = _score_methods(runs, keys)
        scored.insert(len(keys), "criterion", criterion)
        scored.insert(len(keys) + 1, "epoch_rule", epoch)
        per_method.append(scored)
        tables.append(scored[scored["selected"]].drop(columns=["selected", "rank"]))
    if not per_method:
        return Selection(pd.DataFrame(), pd.DataFrame(), notes)
    methods_table = pd.concat(per_method, ignore_index=True)
    table = pd.concat(tables, ignore_index=True)
    counts = methods_table.groupby(keys + ["criterion"], dropna=False).size().rename("n_candidates")
    table = table.join(counts, on=keys + ["criterion"])
    if not (table["variant"] != "").any():
        table = table.drop(columns="variant")
        methods_table = methods_table.drop(columns="variant")
    return Selection(table=table, methods=methods_table, notes=notes)


def _excluded_trials(results: SweepResults) -> list:
    """Notes for the trials that are not complete (they take no part in selection)."""
    notes = []
    for trial in results.trials[results.trials["status"] != "complete"].itertuples():
        notes.append(f"{trial.dataset}/{trial.model}/{trial.method_label} seed {trial.seed}: "
                     f"{trial.status} (epoch {trial.last_epoch}/{trial.epochs}); excluded")
    return notes + list(results.problems)


def _criterion_runs(results: SweepResults, frame: pd.DataFrame, criterion: str, epoch: str,
                    notes: list) -> pd.DataFrame:
    """One row per trial: its criterion value (column ``value``) and test metrics at the chosen epoch."""
    column = CRITERIA[criterion]
    if column is not None and column not in frame:
        notes.append(f"{criterion}: metric {column} is not reported; skipped")
        return pd.DataFrame()
    rows = frame if epoch == "best" else frame[frame["epoch"] == frame["epochs"]]
    needed = ["trial_id", "dataset", "model", "variant", "method", "ratio", "method_label", "seed", "epoch",
              "epochs", *([column] if column else []), *TEST_METRICS.values()]
    needed = list(dict.fromkeys(needed))  # oracle's column is also a test metric
    rows = rows[[name for name in needed if name in rows]].copy()
    if column is None:
        rows["value"] = _bias_unsupervised_values(results, rows, notes)
    else:
        rows["value"] = rows[column].astype(float)
    rows = rows[rows["value"].notna()]
    if epoch == "best" and len(rows):
        # rows are sorted by trial then epoch, so idxmax returns the earliest best epoch
        rows = rows.loc[rows.groupby("trial_id", sort=False)["value"].idxmax()]
    for name, metric in TEST_METRICS.items():
        rows[name] = rows[metric].astype(float) if metric in rows else np.nan
    return rows


def _bias_unsupervised_values(results: SweepResults, rows: pd.DataFrame, notes: list) -> np.ndarray:
    """``bias_unsupervised_score`` of each row's val predictions against its biased (``none``) trial."""
    trials = results.trials
    biased = trials[(trials["method"] == "none") & (trials["status"] == "complete")]
    biased_by_key = {(t.dataset, t.model, t.variant, t.seed): t for t in biased.itertuples()}
    values = np.full(len(rows), np.nan)
    reported = set()
    for position, row in enumerate(rows[["trial_id", "dataset", "model", "variant", "seed", "epoch"]].itertuples(index=False)):
        key = (row.dataset, row.model, row.variant, row.seed)
        bias = biased_by_key.get(key)
        where = f"{row.dataset}/{row.model} seed {row.seed}" + (f" ({row.variant})" if row.variant else "")
        if bias is None:
            if key not in reported:
                notes.append(f"bias-unsupervised: no complete `none` trial for {where}; skipped")
                reported.add(key)
            continue
        try:
            labels = results.labels(row.trial_id, keys=("val_y", "n_classes"))
            values[position] = bias_unsupervised_score(
                labels["val_y"], results.predictions(row.trial_id, row.epoch, splits=("val",))["val"],
                results.predictions(bias.trial_id, bias.epochs, splits=("val",))["val"],
                n_classes=labels["n_classes"])
        except GroupsweepError as error:  # includes MissingResultError
            if row.trial_id not in reported:
                notes.append(f"bias-unsupervised: trial {row.trial_id} ({where}): {error}; skipped")
                reported.add(row.trial_id)
    return values


def _score_methods(runs: pd.DataFrame, keys: list) -> pd.DataFrame:
    """Per group and candidate method: mean criterion (``score``), test mean/std, counts; the winner."""
    candidate = keys + ["method", "ratio", "method_label"]
    grouped = runs.groupby(candidate, dropna=False, sort=False)
    aggregations = {"score": ("value", "mean"), "score_std": ("value", "std"),
                    "n_seeds": ("seed", "nunique"), "n_runs": ("value", "size"),
                    "mean_epoch": ("epoch", "mean")}
    for name in TEST_METRICS:
        aggregations[f"{name}_mean"] = (name, "mean")
        aggregations[f"{name}_std"] = (name, "std")  # pandas' std is the sample std (ddof=1)
    scored = grouped.agg(**aggregations).reset_index()
    scored["seeds"] = grouped["seed"].agg(lambda seeds: ",".join(map(str, sorted(set(seeds))))).to_numpy()
    order = {name: index for index, name in enumerate(METHODS)}
    scored["_order"] = [order.get(name, len(order)) for name in scored["method"]]
    scored = scored.sort_values(keys + ["score", "_order", "method", "ratio"],
                                ascending=[True] * len(keys) + [False, True, True, True],
                                na_position="first", kind="stable", ignore_index=True)
    ranked = []
    for _, group in scored.groupby(keys, dropna=False, sort=False):
        tied = group["score"] >= group["score"].iloc[0] - TIE_TOLERANCE
        winner = group[tied].sort_values(["_order", "method", "ratio"], na_position="first", kind="stable").index[0]
        ranked.append(pd.concat([group.loc[[winner]], group.drop(index=winner)]))
    scored = pd.concat(ranked, ignore_index=True)
    scored["rank"] = scored.groupby(keys, dropna=False, sort=False).cumcount() + 1
    scored["selected"] = scored["rank"] == 1
    return scored.drop(columns="_order")


def display_table(table: pd.DataFrame, plus_minus: str = "±") -> pd.DataFrame:
    """Table 1 (or the per-candidate table) for reading: accuracies in percent with one decimal,
    ``mean ± std`` (std over seeds, ddof=1; the mean alone for a single run), the validation score,
    the seed count (and run count when models are pooled) and, when present, the number of
    candidates or the candidate's rank."""
    if table.empty:
        return table
    keys = [column for column in ("dataset", "model", "variant") if column in table]
    shown = table[keys + ["criterion", "epoch_rule"]].copy()
    shown["method"] = table["method_label"]
    shown["val score (%)"] = [f"{100 * value:.1f}" for value in table["score"]]
    for name, title in (("test_wga", "test WGA (%)"), ("test_avg_acc", "test avg acc (%)"),
                        ("test_wca", "test WCA (%)")):
        shown[title] = [_mean_std(mean, std, plus_minus) for mean, std in
                        zip(table[f"{name}_mean"], table[f"{name}_std"])]
    shown["seeds"] = table["n_seeds"].to_numpy()
    if (table["n_runs"] != table["n_seeds"]).any():  # models pooled
        shown["runs"] = table["n_runs"].to_numpy()
    for column, title in (("n_candidates", "candidates"), ("rank", "rank")):
        if column in table:
            shown[title] = table[column].to_numpy()
    return shown.reset_index(drop=True)


def paper_view(table: pd.DataFrame) -> pd.DataFrame:
    """Table 1 in the paper's layout: a row per criterion, a column per dataset (and model / variant),
    cells ``method (mean test WGA %)``."""
    if table.empty:
        return table
    keys = [column for column in ("dataset", "model", "variant") if column in table]
    columns = ["/".join(str(part) for part in values if part != "") for values in table[keys].itertuples(index=False)]
    cells = [f"{label} ({100 * value:.1f})" for label, value in zip(table["method_label"], table["test_wga_mean"])]
    view = pd.DataFrame({"criterion": table["criterion"].to_numpy(), "column": columns, "cell": cells})
    order = [criterion for criterion in CRITERIA if criterion in set(view["criterion"])]
    view = view.pivot(index="criterion", columns="column", values="cell").reindex(order)
    view.columns.name = None
    return view.reset_index()


def _mean_std(mean: float, std: float, plus_minus: str) -> str:
    """``81.1 ± 0.4`` in percent; the mean alone when the std is undefined (one run)."""
    if np.isnan(mean):
        return "n/a"
    if np.isnan(std):
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} {plus_minus} {100 * std:.1f}"
