"""Model selection of the balancing method (the paper's Table 1).

For each group of trials (by default a dataset and model, as the paper's Table 1 uses one model per
dataset; with ``by_model=False`` a dataset, its models pooled as extra runs of each method; trials whose
other settings differ, see ``SweepResults`` ``variant``, are never pooled) every balancing method present
is a candidate (or those of ``methods``), each mixture ratio a separate one. A trial's *criterion value* is read on its validation split:

- ``wga``: ``val/wga``; ``worst-class``: ``val/wca``; ``average``: ``val/avg_acc``;
- ``bias-unsupervised``: ``analysis.metrics.bias_unsupervised_score`` of the trial's saved val
  predictions against those of the biased model, the ``none`` trial of the same dataset, model,
  variant and seed at its final epoch (empty cells skipped, as the authors' code);
- ``oracle``: ``test/wga`` (an upper bound, not a valid selection).

Epoch rule: ``final`` reads every trial at its last configured epoch (the paper trains to
completion); ``best`` reads each trial at the epoch that maximises the criterion (earliest on ties;
optimal early stopping). Only complete trials take part; the others are listed in the notes.

Group information (``group_info``): each method's registration states the group labels it uses
(``trainables.balancing.GROUP_INFO``: ``none``, ``val`` or ``train+val``; a trial's settings may raise it:
DFR with ``dfr_variant: tr_tr`` uses training group labels), a column of ``SweepResults.trials``, shown in
every table as ``group_info``; ``group_info="val"`` keeps only the trials that use at most validation
group labels (``none`` < ``val`` < ``train+val``), which is how the D3M paper compares methods. A note
names the methods it leaves out (and any method of unknown group information).

A method's score is the mean of its trials' criterion values over seeds; the method with the
highest score is chosen. Ties (scores within ``TIE_TOLERANCE``) go to the method listed first in
``trainables.balancing.METHODS`` (none, subsetting, upsampling, upweighting, mixture,
mixture-nosubset, subg, rwg; unknown methods after them, by name), then to the smaller ratio. The
chosen method's test metrics (``test/wga``, ``test/avg_acc``, ``test/wca`` at the same epochs) are
reported as mean and sample standard deviation (ddof=1; NaN for one seed) over its trials.

Hyperparameter searches (trials with a ``cell``, see ``analysis.results``). A method's candidates are
its configurations (``config_id``; with models pooled, the configurations of every model's cell, since
a sampled configuration belongs to one model). A configuration's score is the mean criterion over its
seeds; each method's chosen configuration is its best-scoring one (ties within ``TIE_TOLERANCE``: the
lower ``config_id`` by number, then the cell's name), and the methods then compete with their chosen
configurations exactly as above. Table 1 gains the winner's ``config_id`` and ``hparams``;
``Selection.hyperparameters`` lists every method's chosen configuration. Grid trials loaded together
with a search count as one configuration (``config_id`` empty) of their method.

Early-stopped trials (status ``stopped``: the search's ASHA scheduler ended them at a rung). With the
``final`` rule a configuration with any stopped seed is not a candidate: it never reached the final
epoch, and ASHA judged it worse than its cell's others at a rung, so scoring its remaining seeds would
compare it on a different footing. With the ``best`` rule stopped trials are candidates, read at their
best epoch among those they reached (what early stopping would have kept). Either way the notes say,
per cell, how many configurations were left out or how many stopped trials were scored; other
incomplete trials are excluded and noted one by one as before. A searched configuration with a seed that
diverged, failed or has not finished is not a candidate under either rule (its mean would be over its other
seeds, and an unstable configuration could win on one lucky seed), noted per cell.

``bias-unsupervised`` with a searched ``none`` method (several ``none`` configurations of one dataset,
model and variant): the biased model of a seed is that seed's trial of the ``none`` configuration with
the best mean final-epoch ``val/avg_acc`` over its complete seeds (average accuracy needs no group
labels; ties: the lower ``config_id``; configurations with a stopped trial are not eligible), and a
note names it. With one ``none`` configuration (a grid, or an unsearched ``none`` cell) nothing changes.

Reruns (``Selection.rerun``). A grid trial loaded with a search (e.g. from the directory that
``groupsweep promote`` ran) whose dataset, model, variant, method, ratio and values of a searched
configuration's sampled keys equal that configuration's is a rerun of it: it takes no part in the
selection above. For each Table 1 row whose chosen configuration has reruns, ``rerun`` reports the
reruns' test metrics (mean and sample std over their seeds), read at their final epoch (``final``) or
at each rerun's best epoch by the criterion (``best``; for ``bias-unsupervised`` against the rerun
``none`` trial of the same seed); ``score`` stays the search's validation score that chose it. Reruns that
did not complete (diverged, failed, unfinished) are left out of those means, and a note names them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.metrics import EMPTY_CELLS, bias_unsupervised_score
from analysis.results import SweepResults, read_in_threads, sampled_keys
from trainables.balancing import GROUP_INFO_LEVELS, METHODS, within_group_info
from trainables.data.table2 import TABLE2
from trainables.errors import GroupsweepError, choose
from trainables.trial_dir import LABELS_FILE, predictions_file

CRITERIA = {
    "wga": "val/wga",
    "worst-class": "val/wca",
    "bias-unsupervised": None,
    "average": "val/avg_acc",
    "oracle": "test/wga",
}
# Table 1's rows in the paper's order, with the group labels each criterion reads (the paper's "Group Anns").
PAPER_ROWS = {"bias-unsupervised": "none", "worst-class": "none", "wga": "val", "average": "none", "oracle": "test"}
EPOCH_RULES = ("final", "best")
TEST_METRICS = {"test_wga": "test/wga", "test_avg_acc": "test/avg_acc", "test_wca": "test/wca"}
TIE_TOLERANCE = 1e-12
# How the notes say that a searched configuration's trial did not complete, by status.
UNFINISHED_WORDS = {"diverged": "diverged", "error": "failed", "incomplete": "did not finish", "pending": "never began"}


@dataclass
class Selection:
    """Result of ``select``.

    ``table`` (Table 1): one row per group x criterion with the chosen ``method_label`` (and
    ``method``, ``ratio``, ``group_info``), its ``score`` (mean validation criterion), ``test_wga_mean/std``,
    ``test_avg_acc_mean/std``, ``test_wca_mean/std``, ``n_seeds``, ``n_runs`` (trials; more than
    ``n_seeds`` when models are pooled) and ``n_candidates``; for a search also the winner's
    ``config_id`` and ``hparams``. ``methods``: the same numbers for every candidate (``selected``
    marks the winner, ``rank`` 1 = best; for a search also each method's ``cell`` and
    ``n_configurations``). ``notes``: what was missing or skipped, one line each.
    ``hyperparameters`` (searches only, else empty): per group x criterion x method its chosen
    configuration: ``cell``, ``config_id``, ``hparams``, one column per sampled key, ``score``,
    ``n_seeds``, ``n_configurations`` and ``selected`` (the Table 1 winner). ``rerun`` (empty without
    reruns): Table 1's columns for the chosen configurations' reruns (see the module docstring), plus
    ``sweep`` (the reruns' sweep directories).
    """

    table: pd.DataFrame
    methods: pd.DataFrame
    notes: list = field(default_factory=list)
    hyperparameters: pd.DataFrame = field(default_factory=pd.DataFrame)
    rerun: pd.DataFrame = field(default_factory=pd.DataFrame)


def parse_criteria(criterion: str) -> list:
    """The criteria named by ``criterion`` (one of ``CRITERIA`` or ``all``), in ``CRITERIA`` order."""
    choose("selection criterion", criterion, [*CRITERIA, "all"])
    return list(CRITERIA) if criterion == "all" else [criterion]


def select(results: SweepResults, criteria=("wga",), epoch: str = "final", by_model: bool = True,
           methods=None, group_info: str | None = None, empty_cells: str = "skip") -> Selection:
    """Choose the balancing method (and, in a search, each method's configuration) per group for each
    criterion (see the module docstring).

    ``criteria``: names from ``CRITERIA``; ``epoch``: ``final`` or ``best``; ``by_model`` (default): one
    group per (dataset, model); ``by_model=False`` makes one group per dataset, its models pooled as extra
    runs of each method (a note says so); ``methods``: restrict the candidates to these method names
    (``trainables.balancing`` names such as ``mixture``, which keeps every mixture ratio; default None:
    every method present; a name without trials gives a note, and none with trials a one-line
    ``GroupsweepError`` naming the sweep's methods); ``group_info``: keep only the methods that
    use at most this group information (``none``, ``val`` or ``train+val``; default None: no restriction);
    ``empty_cells``: how ``bias-unsupervised`` treats a (class, biased prediction) cell without examples,
    ``skip`` (the authors' code: averaged over the other cells) or ``zero`` (the paper's eq. (1): counted as 0;
    ``analysis.metrics.bias_unsupervised_score``). Unknown criteria, epoch rules, group information or
    empty-cell rules raise a one-line ``GroupsweepError``; missing results never raise: they are left out
    and noted.
    """
    for criterion in criteria:
        choose("selection criterion", criterion, CRITERIA)
    choose("epoch rule", epoch, EPOCH_RULES)
    if group_info is not None:
        choose("group information", group_info, GROUP_INFO_LEVELS)
    choose("empty-cell rule", empty_cells, EMPTY_CELLS)
    notes = _excluded_trials(results)
    searched = results.searched
    reruns = _reruns(results) if searched else {}
    if reruns:
        notes.append(f"{len(reruns)} grid trial(s) rerun searched configurations: they are reported as the "
                     "rerun of the chosen configurations, not as candidates")
    taking_part = ("complete", "stopped") if epoch == "best" else ("complete",)
    frame = results.frame[results.frame["status"].isin(taking_part) & ~results.frame["trial_id"].isin(list(reruns))]
    frame = _stopped_trials(results, frame, epoch, notes)
    frame = _unfinished_configurations(results, frame, notes)
    if methods is not None:
        if not isinstance(methods, (list, tuple, set)) or not methods:
            raise GroupsweepError(f"methods must be a non-empty list of method names (or None for all), "
                                  f"got {methods!r}")
        present = set(results.trials["method"])
        for name in methods:
            choose("method", name, METHODS)
        if not present.intersection(methods):
            raise GroupsweepError(f"methods {', '.join(methods)}: no trials of them in this sweep; its methods: "
                                  f"{', '.join(name for name in METHODS if name in present)}")
        notes += [f"method {name!r} has no trials in this sweep" for name in methods if name not in present]
        frame = frame[frame["method"].isin(list(methods))]
    if group_info is not None:
        frame = _within_group_info(frame, group_info, notes)
    _note_in_sample_validation(frame, criteria, notes)
    keys = ["dataset", "model", "variant"] if by_model else ["dataset", "variant"]
    if not by_model:
        for dataset, models in frame.groupby("dataset")["model"].unique().items():
            if len(models) > 1:
                notes.append(f"{dataset}: {len(models)} models pooled as runs of one method "
                             f"({', '.join(sorted(models))}); by-model selection (the default) separates them")
                if searched:
                    notes.append(f"{dataset}: a searched configuration belongs to one model, so each method's "
                                 "candidates are the configurations of every model")
    trials = results.trials
    biased = (_biased_models(results, trials[~trials.index.isin(list(reruns))], notes)
              if "bias-unsupervised" in criteria else {})

    tables, per_method = [], []
    for criterion in criteria:
        runs = _criterion_runs(results, frame, criterion, epoch, notes, biased, empty_cells)
        if runs.empty:
            notes.append(f"{criterion}: no complete trial with a value for this criterion; skipped")
            continue
        configurations = None
        if searched:
            runs, configurations = _choose_configurations(runs, keys)
        scored = _score_methods(runs, keys)
        _note_unequal_seeds(scored, keys, notes)
        if configurations is not None:
            scored = _with_configurations(scored, configurations, keys)
        scored.insert(len(keys), "criterion", criterion)
        scored.insert(len(keys) + 1, "epoch_rule", epoch)
        per_method.append(scored)
        tables.append(scored[scored["selected"]].drop(columns=["selected", "rank", "cell", "n_configurations"],
                                                      errors="ignore"))
    if not per_method:
        return Selection(pd.DataFrame(), pd.DataFrame(), notes)
    methods_table = pd.concat(per_method, ignore_index=True)
    table = pd.concat(tables, ignore_index=True)
    counts = methods_table.groupby(keys + ["criterion"], dropna=False).size().rename("n_candidates")
    table = table.join(counts, on=keys + ["criterion"])
    hyperparameters = _hyperparameters(results, methods_table, keys) if searched else pd.DataFrame()
    rerun = _rerun_table(results, methods_table, list(table.columns), reruns, keys, epoch, notes, empty_cells) \
        if reruns else pd.DataFrame()
    if not (table["variant"] != "").any():
        table, methods_table, hyperparameters, rerun = (
            part.drop(columns="variant", errors="ignore") for part in (table, methods_table, hyperparameters, rerun))
    return Selection(table=table, methods=methods_table, notes=notes, hyperparameters=hyperparameters, rerun=rerun)


def _where(trial) -> str:
    """``dataset/model/method`` of a trial row, as the notes name it (with its variant when it has one)."""
    variant = f" ({trial.variant})" if trial.variant else ""
    return f"{trial.dataset}/{trial.model}/{trial.method_label}{variant}"


def _excluded_trials(results: SweepResults) -> list:
    """Notes for the trials that are not complete (they take no part in selection), except the searched
    trials that ASHA stopped (``_stopped_trials`` notes those per cell)."""
    notes = []
    trials = results.trials
    for trial in trials[(trials["status"] != "complete") & ~((trials["status"] == "stopped") & (trials["cell"] != ""))
                        ].itertuples():
        notes.append(f"{trial.dataset}/{trial.model}/{trial.method_label} seed {trial.seed}: "
                     f"{trial.status} (epoch {trial.last_epoch}/{trial.epochs}); excluded")
    return notes + list(results.problems)


def _within_group_info(frame: pd.DataFrame, limit: str, notes: list) -> pd.DataFrame:
    """The rows of ``frame`` whose trial uses at most ``limit`` group information (its ``group_info``: its
    method's, raised by a setting such as DFR's ``dfr_variant: tr_tr``); a note names the methods left out,
    with their group information."""
    kept = frame["group_info"].isin([level for level in GROUP_INFO_LEVELS if within_group_info(level, limit)])
    left_out = frame.loc[~kept, ["method", "group_info"]].drop_duplicates()
    if len(left_out):
        shown = ", ".join(f"{row.method} ({row.group_info or 'unknown group information'})"
                          for row in left_out.itertuples())
        notes.append(f"group information at most {limit}: left out {shown}")
    return frame[kept]


def _stopped_trials(results: SweepResults, frame: pd.DataFrame, epoch: str, notes: list) -> pd.DataFrame:
    """Apply the stopped-trial rule to the rows taking part (see the module docstring) and note, per cell,
    what it did: ``final`` drops every configuration with a stopped seed; ``best`` keeps them."""
    trials = results.trials
    stopped = trials[(trials["status"] == "stopped") & (trials["cell"] != "")]
    if stopped.empty:
        return frame
    for cell, group in stopped.groupby("cell", sort=False):
        first = group.iloc[0]
        if epoch == "best":
            notes.append(f"{_where(first)}: {len(group)} trial(s) stopped early by ASHA are scored at the "
                         "best of the epochs they reached (best epoch rule)")
        else:
            total = trials.loc[trials["cell"] == cell, "config_id"].nunique()
            notes.append(f"{_where(first)}: {_left_out(group, total)}: "
                         f"ASHA stopped {len(group)} of their trials before epoch {first['epochs']} "
                         "(the final epoch rule needs every seed at its final epoch)")
    if epoch == "best":
        return frame
    return _without_configurations(frame, stopped)


def _unfinished_configurations(results: SweepResults, frame: pd.DataFrame, notes: list) -> pd.DataFrame:
    """``frame`` without the searched configurations that have a seed that diverged, failed or has not finished
    (``_stopped_trials`` rules on stopped seeds), noted per cell for the configurations that would otherwise be
    scored: their mean would be over their other seeds, and an unstable configuration could win on one lucky
    seed. (``_excluded_trials`` notes each such trial too.)"""
    trials = results.trials
    unfinished = trials[~trials["status"].isin(("complete", "stopped")) & (trials["cell"] != "")]
    unfinished = unfinished[_in_configurations(unfinished, frame)]
    for cell, group in unfinished.groupby("cell", sort=False):
        total = trials.loc[trials["cell"] == cell, "config_id"].nunique()
        counts = group["status"].value_counts()
        outcomes = [f"{counts[status]} {word}" for status, word in UNFINISHED_WORDS.items() if status in counts]
        outcomes[0] = outcomes[0].replace(" ", " of their trials ", 1)
        notes.append(f"{_where(group.iloc[0])}: {_left_out(group, total)}: "
                     f"{', '.join(outcomes)} (a configuration is compared over all its seeds)")
    frame = _without_configurations(frame, unfinished)
    return _without_configurations(frame, _seedless_configurations(trials, frame, notes))


def _seedless_configurations(trials: pd.DataFrame, frame: pd.DataFrame, notes: list) -> pd.DataFrame:
    """One trial row of each searched configuration in ``frame`` that lacks a trial of a seed that other
    configurations of its cell have (Tune makes a trial's folder only when it starts: a seed still waiting, or
    never started in an interrupted search, has none), noted per cell; such a configuration would be scored on
    fewer seeds than its rivals."""
    searched = trials[(trials["cell"] != "") & _in_configurations(trials, frame)]
    if searched.empty:
        return searched
    cell_seeds = searched.groupby("cell")["seed"].agg(frozenset)
    config_seeds = searched.groupby(["cell", "config_id"])["seed"].agg(frozenset)
    short = [key for key, seeds in config_seeds.items() if seeds != cell_seeds[key[0]]]
    first = searched.drop_duplicates(["cell", "config_id"])
    lacking = first[pd.MultiIndex.from_frame(first[["cell", "config_id"]]).isin(short)]
    for cell, group in lacking.groupby("cell", sort=False):
        total = trials.loc[trials["cell"] == cell, "config_id"].nunique()
        missing = sorted(set().union(*(cell_seeds[cell] - config_seeds[(cell, config_id)]
                                       for config_id in group["config_id"])))
        notes.append(f"{_where(group.iloc[0])}: {_left_out(group, total)}: no trial yet of seed(s) "
                     f"{', '.join(map(str, missing))} that the cell's other configurations ran (a configuration is "
                     "compared over all its seeds)")
    return lacking


def _left_out(trials: pd.DataFrame, total: int) -> str:
    """``N of TOTAL configurations left out (h00, h03)``: the configurations of ``trials`` (one cell's), by id."""
    ids = sorted(set(trials["config_id"]), key=lambda config_id: int(config_id[1:]))
    return f"{len(ids)} of {total} configurations left out ({', '.join(ids)})"


def _in_configurations(frame: pd.DataFrame, configurations: pd.DataFrame) -> np.ndarray:
    """Per row of ``frame``, whether its searched configuration ``(cell, config_id)`` is one of the rows of
    ``configurations`` (a boolean array, also for a frame of no rows, which a list would index by columns).
    Vectorised: a sweep's frame has a row per trial and epoch (a million for 10,000 trials of 100 epochs)."""
    if frame.empty or configurations.empty:
        return np.zeros(len(frame), dtype=bool)
    keys = ["cell", "config_id"]
    return pd.MultiIndex.from_frame(frame[keys]).isin(pd.MultiIndex.from_frame(configurations[keys]))


def _without_configurations(frame: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``frame`` outside every searched configuration (cell, config_id) that ``trials`` belong to."""
    return frame[~_in_configurations(frame, trials)]


def _criterion_runs(results: SweepResults, frame: pd.DataFrame, criterion: str, epoch: str,
                    notes: list, biased: dict, empty_cells: str = "skip") -> pd.DataFrame:
    """One row per trial: its criterion value (column ``value``) and test metrics at the chosen epoch;
    ``biased`` maps (dataset, model, variant, seed) to the biased trial (``_biased_models``); ``empty_cells``:
    ``bias-unsupervised``'s rule (``select``)."""
    column = CRITERIA[criterion]
    if column is not None and column not in frame:
        notes.append(f"{criterion}: metric {column} is not reported; skipped")
        return pd.DataFrame()
    rows = frame if epoch == "best" else frame[frame["epoch"] == frame["epochs"]]
    needed = ["trial_id", "dataset", "model", "variant", "method", "ratio", "method_label", "group_info", "seed",
              "epoch", "epochs", "sweep", "cell", "config_id", "hparams", *([column] if column else []),
              *TEST_METRICS.values()]
    needed = list(dict.fromkeys(needed))  # oracle's column is also a test metric
    rows = rows[[name for name in needed if name in rows]].copy()
    if column is None:
        rows["value"] = _bias_unsupervised_values(results, rows, notes, biased, empty_cells)
    else:
        rows["value"] = rows[column].astype(float)
    rows = rows[rows["value"].notna()]
    if epoch == "best" and len(rows):
        # rows are sorted by trial then epoch, so idxmax returns the earliest best epoch
        rows = rows.loc[rows.groupby("trial_id", sort=False)["value"].idxmax()]
    return _with_test_metrics(rows)


def _with_test_metrics(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with the ``TEST_METRICS`` columns (NaN where a metric is not reported)."""
    for name, metric in TEST_METRICS.items():
        rows[name] = rows[metric].astype(float) if metric in rows else np.nan
    return rows


def _biased_models(results: SweepResults, trials: pd.DataFrame, notes: list) -> dict:
    """The biased model of each (dataset, model, variant, seed) among ``trials``: its complete ``none``
    trial; with several ``none`` configurations, the one with the best mean final ``val/avg_acc``
    (see the module docstring). Values are trial rows (``trial_id``, ``epochs``, ...)."""
    none = trials[(trials["method"] == "none") & (trials["status"] == "complete")]
    # a configuration with a seed stopped, unfinished or without a trial yet is no candidate, as in selection
    excluded = pd.concat([trials[trials["status"] != "complete"], _seedless_configurations(trials, trials, [])])
    biased = {}
    for _, group in none.groupby(["dataset", "model", "variant"], dropna=False, sort=False):
        chosen = group
        if group[["cell", "config_id"]].drop_duplicates().shape[0] > 1:
            chosen = _best_biased_configuration(results, excluded, group, notes)
        for trial in chosen.itertuples():
            biased[(trial.dataset, trial.model, trial.variant, trial.seed)] = trial
    return biased


def _best_biased_configuration(results: SweepResults, excluded: pd.DataFrame, group: pd.DataFrame,
                               notes: list) -> pd.DataFrame:
    """The trials of the ``none`` configuration of ``group`` (complete ``none`` trials of one dataset,
    model and variant) with the best mean final-epoch ``val/avg_acc``, among the configurations of no trial of
    ``excluded``; ties: the lower config_id."""
    final = results.final_rows().set_index("trial_id")
    accuracy = group["trial_id"].map(final["val/avg_acc"]) if "val/avg_acc" in final else np.nan
    scores = (group.assign(score=accuracy).fillna({"score": -np.inf}).groupby(["cell", "config_id"], sort=False)
              .agg(score=("score", "mean"), n_seeds=("seed", "nunique")).reset_index())
    scores = scores[~_in_configurations(scores, excluded)]
    first = group.iloc[0]
    if scores.empty:
        notes.append(f"bias-unsupervised: every `none` configuration of {first['dataset']}/{first['model']} "
                     "has a seed stopped, unfinished or not begun; no biased model")
        return group.iloc[0:0]
    ranked = _rank(scores.assign(_group=0, _number=_config_numbers(scores)), ["_group"], ["_number", "cell"])
    best = ranked.iloc[0]
    notes.append(f"bias-unsupervised: the biased model of {first['dataset']}/{first['model']} is `none` "
                 f"{best['config_id'] or 'grid'} (best mean val/avg_acc {best['score']:.4f} over "
                 f"{best['n_seeds']} seed(s), of {len(scores)} configurations)")
    return group[(group["cell"] == best["cell"]) & (group["config_id"] == best["config_id"])]


def _bias_unsupervised_values(results: SweepResults, rows: pd.DataFrame, notes: list, biased: dict,
                              empty_cells: str) -> np.ndarray:
    """``bias_unsupervised_score`` (``empty_cells`` rule) of each row's val predictions against its biased trial
    in ``biased``. The rows' label and prediction files are read by ``analysis.results.read_in_threads`` (in
    threads where reads wait on a disk or the network), and parsed and scored here: ``.npz`` parsing holds the GIL,
    and threads contending for it scored slower than one thread does (1.5-2x on a 2-core box)."""
    values = np.full(len(rows), np.nan)
    reported, labels_by_bytes = set(), {}
    table = list(rows[["trial_id", "dataset", "model", "variant", "seed", "epoch"]].itertuples(index=False))
    pairs = [(row, biased.get((row.dataset, row.model, row.variant, row.seed))) for row in table]

    def read(pair):
        row, bias = pair
        if bias is None:
            return None
        try:
            return results.read_files(row.trial_id, (LABELS_FILE, predictions_file(row.epoch)))
        except GroupsweepError as error:  # includes MissingResultError
            return error

    for position, ((row, bias), files) in enumerate(zip(pairs, read_in_threads(read, pairs))):
        key = (row.dataset, row.model, row.variant, row.seed)
        where = f"{row.dataset}/{row.model} seed {row.seed}" + (f" ({row.variant})" if row.variant else "")
        if bias is None:
            if key not in reported:
                notes.append(f"bias-unsupervised: no complete `none` trial for {where}; skipped")
                reported.add(key)
            continue
        if isinstance(files, GroupsweepError):
            outcome = files
        else:
            outcome = _bias_unsupervised_value(results, row, bias, files, empty_cells, labels_by_bytes)
        if isinstance(outcome, GroupsweepError):
            if row.trial_id not in reported:
                notes.append(f"bias-unsupervised: trial {row.trial_id} ({where}): {outcome}; skipped")
                reported.add(row.trial_id)
        else:
            values[position] = outcome
    return values


def _bias_unsupervised_value(results: SweepResults, row, bias, files: list, empty_cells: str,
                             labels_by_bytes: dict):
    """The bias-unsupervised score of ``row`` (``trial_id``, ``epoch``) against its biased trial ``bias``
    (``trial_id``, ``epochs``; its predictions cached, as a biased trial serves every method of its seed), from
    ``files``: the bytes of the row's labels and predictions; or the ``GroupsweepError`` saying why there is none.
    ``labels_by_bytes`` holds the labels parsed so far, by their file's bytes: the trials of one dataset save
    the same labels, parsed once."""
    labels_bytes, predictions_bytes = files
    try:
        if labels_bytes not in labels_by_bytes:
            labels_by_bytes[labels_bytes] = results.labels(row.trial_id, ("val_y", "n_classes"), labels_bytes)
        labels = labels_by_bytes[labels_bytes]
        predicted = results.predictions(row.trial_id, row.epoch, splits=("val",), data=predictions_bytes)["val"]
        return bias_unsupervised_score(labels["val_y"], predicted,
                                       results.predictions(bias.trial_id, bias.epochs, splits=("val",))["val"],
                                       n_classes=labels["n_classes"], empty_cells=empty_cells)
    except GroupsweepError as error:  # includes MissingResultError
        return error


def _choose_configurations(runs: pd.DataFrame, keys: list) -> tuple:
    """``(runs of each candidate method's chosen configuration, every configuration ranked)``: a
    configuration's ``score`` is its mean criterion over seeds; ``selected`` marks each method's best."""
    candidate = keys + ["method", "ratio", "method_label"]
    grouped = runs.groupby(candidate + ["cell", "config_id"], dropna=False, sort=False)
    configurations = grouped.agg(score=("value", "mean"), n_seeds=("seed", "nunique"),
                                 hparams=("hparams", "first")).reset_index()
    configurations = _rank(configurations.assign(_number=_config_numbers(configurations)), candidate,
                           ["_number", "cell"]).drop(columns="_number")
    configurations["n_configurations"] = configurations.groupby(candidate, dropna=False, sort=False)[
        "config_id"].transform("size")
    chosen = _configuration_keys(configurations[configurations["selected"]], keys)
    return runs[[key in chosen for key in _configuration_keys(runs, keys)]], configurations


def _config_numbers(table: pd.DataFrame) -> list:
    """Each row's configuration index (``config_id`` ``h07`` -> 7; -1 for a grid trial's empty id), which orders
    the ids of cells padded to different widths (``h05`` before ``h010``)."""
    return [int(config_id[1:]) if config_id else -1 for config_id in table["config_id"]]


def _configuration_keys(table: pd.DataFrame, keys: list) -> list:
    """Per row, the tuple that names its configuration within its group: keys, method label, cell, config_id."""
    return list(zip(*[table[name] for name in keys + ["method_label", "cell", "config_id"]]))


def _with_configurations(scored: pd.DataFrame, configurations: pd.DataFrame, keys: list) -> pd.DataFrame:
    """``scored`` (one row per method) with its chosen configuration's ``config_id`` and ``hparams`` (after
    ``method_label``), ``cell`` and ``n_configurations``."""
    chosen = configurations[configurations["selected"]]
    by_method = dict(zip(zip(*[chosen[name] for name in keys + ["method_label"]]),
                         chosen[["cell", "config_id", "hparams", "n_configurations"]].itertuples(index=False)))
    found = [by_method[key] for key in zip(*[scored[name] for name in keys + ["method_label"]])]
    at = scored.columns.get_loc("method_label") + 1
    scored.insert(at, "config_id", [entry.config_id for entry in found])
    scored.insert(at + 1, "hparams", [entry.hparams for entry in found])
    scored["cell"] = [entry.cell for entry in found]
    scored["n_configurations"] = [entry.n_configurations for entry in found]
    return scored


def _hyperparameters(results: SweepResults, methods_table: pd.DataFrame, keys: list) -> pd.DataFrame:
    """Per group x criterion x method its chosen configuration, one column per sampled key (the
    configuration's value; NaN for grid trials)."""
    columns = keys + ["criterion", "epoch_rule", "method_label", "method", "ratio", "cell", "config_id", "hparams"]
    table = methods_table[columns].copy()
    trials = results.trials[results.trials["cell"] != ""].drop_duplicates(["cell", "config_id"])
    first_trial = dict(zip(zip(trials["cell"], trials["config_id"]), trials.index))
    for key in results.sampled_keys:
        table[key] = [results.configs[first_trial[configuration]].get(key) if configuration in first_trial else np.nan
                      for configuration in zip(table["cell"], table["config_id"])]
    for name in ("score", "n_seeds", "n_configurations", "selected"):
        table[name] = methods_table[name].to_numpy()
    return table.reset_index(drop=True)


def _reruns(results: SweepResults) -> dict:
    """Grid trials that rerun a searched configuration: trial_id -> [(cell, config_id), ...] of the
    configurations whose dataset, model, variant, method, ratio and sampled values they share."""
    trials = results.trials
    searched = trials[trials["cell"] != ""].drop_duplicates(["cell", "config_id"])
    by_identity: dict = {}
    for trial in searched.itertuples():
        config = results.configs[trial.Index]
        by_identity.setdefault((trial.dataset, trial.model, trial.variant, trial.method_label), []).append(
            ((trial.cell, trial.config_id), {key: config.get(key) for key in sampled_keys(config)}))
    reruns = {}
    for trial in trials[trials["cell"] == ""].itertuples():
        config = results.configs[trial.Index]
        matches = [configuration for configuration, values in
                   by_identity.get((trial.dataset, trial.model, trial.variant, trial.method_label), [])
                   if all(_same_value(config.get(key), value) for key, value in values.items())]
        if matches:
            reruns[trial.Index] = matches
    return reruns


def _same_value(a, b) -> bool:
    """Config values equal; numbers within a relative 1e-9 (a value written to YAML and read back)."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


def _rerun_table(results: SweepResults, methods_table: pd.DataFrame, columns: list, reruns: dict, keys: list,
                 epoch: str, notes: list, empty_cells: str) -> pd.DataFrame:
    """Table 1 of the reruns: per Table 1 winner (``selected`` in ``methods_table``) whose configuration has
    complete reruns, their test metrics over seeds (see the module docstring) in Table 1's ``columns``
    (without ``n_candidates``) plus ``sweep``; ``score`` is the search's validation score; ``empty_cells``:
    ``bias-unsupervised``'s rule (``select``)."""
    trials = results.trials
    rerun_trials = trials[trials.index.isin(list(reruns))]
    frame = results.frame[results.frame["trial_id"].isin(list(reruns)) & (results.frame["status"] == "complete")]
    rows, noted = [], set()
    for criterion, winners in methods_table[methods_table["selected"]].groupby("criterion", sort=False):
        if epoch == "best":
            biased = _biased_models(results, rerun_trials, []) if criterion == "bias-unsupervised" else {}
            runs = _criterion_runs(results, frame, criterion, epoch, notes, biased, empty_cells)
        else:
            runs = _with_test_metrics(frame[frame["epoch"] == frame["epochs"]].assign(value=np.nan))
        for winner in winners.to_dict("records"):
            configuration = (winner["cell"], winner["config_id"])
            ids = [trial_id for trial_id, matches in reruns.items() if configuration in matches]
            part = runs[runs["trial_id"].isin(ids)] if len(runs) else runs
            where = "/".join(str(winner[name]) for name in keys if winner[name] != "")
            if part.empty:
                notes.append(f"rerun: {where} {criterion}: the chosen {winner['method_label']} "
                             f"{winner['config_id']} has no complete rerun")
                continue
            unfinished = rerun_trials.loc[ids][rerun_trials.loc[ids, "status"] != "complete"].sort_values("seed")
            if len(unfinished) and configuration not in noted:
                noted.add(configuration)
                shown = ", ".join(f"seed {trial.seed} {UNFINISHED_WORDS.get(trial.status, trial.status)}"
                                  for trial in unfinished.itertuples())
                notes.append(f"rerun: {where}: {len(unfinished)} of {len(ids)} reruns of {winner['method_label']} "
                             f"{winner['config_id']} did not complete ({shown}); its rerun metrics are over the "
                             "others only")
            summary = _aggregate(part, keys + ["method", "ratio", "method_label"]).iloc[0].to_dict()
            summary.update({name: winner[name] for name in keys + ["criterion", "epoch_rule", "config_id",
                                                                   "hparams", "score"]})
            summary["sweep"] = ",".join(sorted(set(part["sweep"])))
            rows.append(summary)
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows)[[column for column in columns if column != "n_candidates"] + ["sweep"]]


def _most_group_info(levels: pd.Series) -> str:
    """The highest of the group information ``levels`` (``GROUP_INFO_LEVELS`` order; "" when unknown)."""
    known = [level for level in levels if level in GROUP_INFO_LEVELS]
    return max(known, key=GROUP_INFO_LEVELS.index) if known else ""


def _aggregate(runs: pd.DataFrame, by: list) -> pd.DataFrame:
    """Per group of ``runs`` (rows with ``value``, ``seed``, ``epoch`` and the test metrics): mean criterion
    (``score``) and its std, test metrics mean/std over the runs, seed and run counts, mean epoch, seeds."""
    grouped = runs.groupby(by, dropna=False, sort=False)
    aggregations = {"score": ("value", "mean"), "score_std": ("value", "std"),
                    "n_seeds": ("seed", "nunique"), "n_runs": ("value", "size"),
                    "mean_epoch": ("epoch", "mean")}
    for name in TEST_METRICS:
        aggregations[f"{name}_mean"] = (name, "mean")
        aggregations[f"{name}_std"] = (name, "std")  # pandas' std is the sample std (ddof=1)
    scored = grouped.agg(**aggregations).reset_index()
    if "method_label" in scored:  # the most any of the candidate's trials uses
        scored.insert(scored.columns.get_loc("method_label") + 1, "group_info",
                      grouped["group_info"].agg(_most_group_info).to_numpy())
    scored["seeds"] = grouped["seed"].agg(lambda seeds: ",".join(map(str, sorted(set(seeds))))).to_numpy()
    return scored


def _score_methods(runs: pd.DataFrame, keys: list) -> pd.DataFrame:
    """Per group and candidate method: mean criterion (``score``), test mean/std, counts; the winner."""
    scored = _aggregate(runs, keys + ["method", "ratio", "method_label"])
    order = {name: index for index, name in enumerate(METHODS)}
    scored["_order"] = [order.get(name, len(order)) for name in scored["method"]]
    return _rank(scored, keys, ["_order", "method", "ratio"]).drop(columns="_order")


def _note_in_sample_validation(frame: pd.DataFrame, criteria, notes: list) -> None:
    """Note when DFR trials fitted on the validation split (``dfr_variant: val_tr``, whose group information is
    ``val``; ``tr_tr``'s is ``train+val``) compete by a validation criterion: their ``val/*`` metrics are those
    of the data they were fitted on (``trainables.dfr``)."""
    if set(criteria) <= {"oracle"} or "method" not in frame:  # a frame of no trial has no columns
        return
    if ((frame["method"] == "dfr") & (frame["group_info"] == "val")).any():
        notes.append("dfr (val_tr) retrained its last layer on the validation split: its validation metrics, and a "
                     "choice by them against other methods, are optimistic; compare it by test metrics (oracle) or "
                     "leave it out (--methods)")


def _note_unequal_seeds(scored: pd.DataFrame, keys: list, notes: list) -> None:
    """Note (once) each group of ``keys`` whose candidate methods were scored on different seeds: the paper
    compares means over the same seeds, and a candidate missing a seed is compared on fewer runs."""
    for values, group in scored.groupby(keys, dropna=False, sort=False):
        if group["seeds"].nunique() > 1:
            where = "/".join(str(value) for value in (values if isinstance(values, tuple) else (values,)) if value)
            # sorted: the criteria rank the methods differently, and the note is made once for all of them
            shown = "; ".join(sorted(f"{row.method_label} {row.seeds}" for row in group.itertuples()))
            note = (f"{where}: candidates scored on different seeds ({shown}); finish the missing runs for a "
                    "comparison over the same seeds")
            if note not in notes:
                notes.append(note)


def _rank(scored: pd.DataFrame, keys: list, tie_order: list) -> pd.DataFrame:
    """``scored`` ranked by ``score`` (highest first) within each group of ``keys``: the winner first (of the
    scores within ``TIE_TOLERANCE`` of the best, the first by ``tie_order``), then the others by score and
    ``tie_order``; adds ``rank`` (1 = winner) and ``selected``."""
    scored = scored.sort_values(keys + ["score", *tie_order],
                                ascending=[True] * len(keys) + [False] + [True] * len(tie_order),
                                na_position="first", kind="stable", ignore_index=True)
    ranked = []
    for _, group in scored.groupby(keys, dropna=False, sort=False):
        tied = group["score"] >= group["score"].iloc[0] - TIE_TOLERANCE
        winner = group[tied].sort_values(tie_order, na_position="first", kind="stable").index[0]
        ranked.append(pd.concat([group.loc[[winner]], group.drop(index=winner)]))
    scored = pd.concat(ranked, ignore_index=True)
    scored["rank"] = scored.groupby(keys, dropna=False, sort=False).cumcount() + 1
    scored["selected"] = scored["rank"] == 1
    return scored


def display_table(table: pd.DataFrame, plus_minus: str = "±") -> pd.DataFrame:
    """Table 1 (or the per-candidate table, or the rerun table) for reading: the method and the group
    information it uses, accuracies in percent with
    one decimal, ``mean ± std`` (std over seeds, ddof=1; the mean alone for a single run), the validation
    score, the seed count (and run count when models are pooled) and, when present, the chosen
    configuration (``config``, ``hparams``: a search) and the number of candidates or the candidate's rank."""
    if table.empty:
        return table
    keys = [column for column in ("dataset", "model", "variant") if column in table]
    shown = table[keys + ["criterion", "epoch_rule"]].copy()
    shown["method"] = table["method_label"]
    if "group_info" in table:
        shown["group info"] = table["group_info"].to_numpy()
    if "config_id" in table:  # a search: the chosen configuration
        shown["config"] = table["config_id"].to_numpy()
        shown["hparams"] = table["hparams"].to_numpy()
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


def display_hyperparameters(table: pd.DataFrame) -> pd.DataFrame:
    """``Selection.hyperparameters`` for reading: per group, criterion and method the chosen configuration,
    its sampled values, validation score (percent), seed and configuration counts, and ``*`` on the
    method Table 1 chose."""
    if table.empty:
        return table
    keys = [column for column in ("dataset", "model", "variant") if column in table]
    shown = table[keys + ["criterion", "epoch_rule"]].copy()
    shown["method"] = [f"{label} *" if selected else label for label, selected in zip(table["method_label"],
                                                                                      table["selected"])]
    shown["config"] = table["config_id"].to_numpy()
    shown["hparams"] = table["hparams"].to_numpy()
    shown["val score (%)"] = [f"{100 * value:.1f}" for value in table["score"]]
    shown["seeds"] = table["n_seeds"].to_numpy()
    shown["configurations"] = table["n_configurations"].to_numpy()
    return shown.reset_index(drop=True)


def paper_view(table: pd.DataFrame) -> pd.DataFrame:
    """Table 1 in the paper's layout: a row per criterion in the paper's order (bias-unsupervised, worst-class,
    worst-group, then average and oracle), with the group labels it reads (``PAPER_ROWS``: the paper's "Group
    Anns" column), a column per dataset (and model / variant), cells ``method (mean test WGA %)``."""
    if table.empty:
        return table
    keys = [column for column in ("dataset", "model", "variant") if column in table]
    columns = ["/".join(str(part) for part in values if part != "") for values in table[keys].itertuples(index=False)]
    cells = [f"{label} ({100 * value:.1f})" for label, value in zip(table["method_label"], table["test_wga_mean"])]
    view = pd.DataFrame({"criterion": table["criterion"].to_numpy(), "column": columns, "cell": cells})
    order = [criterion for criterion in PAPER_ROWS if criterion in set(view["criterion"])]
    paper_columns = sorted(dict.fromkeys(columns), key=lambda column: _paper_position(column.split("/")[0]))
    view = view.pivot(index="criterion", columns="column", values="cell").reindex(index=order, columns=paper_columns)
    view.columns.name = None
    view.insert(0, "group labels", [PAPER_ROWS[criterion] for criterion in order])
    return view.reset_index()


def _paper_position(dataset: str) -> int:
    """A dataset's column in the papers' tables (Waterbirds, CelebA, CivilComments, MultiNLI: ``TABLE2``'s order),
    an embedded benchmark beside its counterpart (``synthetic-celeba`` as CelebA); any other after them."""
    name = dataset.removeprefix("synthetic-")
    return list(TABLE2).index(name) if name in TABLE2 else len(TABLE2)


def _mean_std(mean: float, std: float, plus_minus: str) -> str:
    """``81.1 ± 0.4`` in percent; the mean alone when the std is undefined (one run)."""
    if np.isnan(mean):
        return "n/a"
    if np.isnan(std):
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} {plus_minus} {100 * std:.1f}"
