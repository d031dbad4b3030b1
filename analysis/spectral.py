"""Spectral imbalance of penultimate features (Section 5, Table 5 and Figures 5, 6, 10-12 of the paper).

Definitions (``z`` = penultimate features, the input of the final linear layer, see ``analysis.features``):

- Group covariance, equation (2): ``Sigma_g = (1/|Omega_g|) sum_{i in Omega_g} (z_i - zbar_g)(z_i - zbar_g)^T``
  over the training examples of group g (the population covariance: divided by ``|Omega_g|``, not
  ``|Omega_g| - 1``). Class covariances ``Sigma_y`` are the same over the examples of class y.
  ``CovarianceAccumulator`` computes them in one streaming pass, in float64, by merging per-batch
  means and centred scatter matrices (Chan, Golub and LeVeque's pairwise update), which stays exact
  when the features have a large mean; memory is ``labels x D x D``, independent of the number of
  examples. Class statistics are merged exactly from their groups' statistics.
- Eigenvalues: ``numpy.linalg.eigvalsh`` (LAPACK's exact symmetric solver) in float64, sorted in
  descending order, the top ``k`` kept (all ``D`` when ``k > D``). A covariance is positive
  semi-definite, so the tiny negative values rounding can give for a rank-deficient matrix (a group
  with fewer examples than feature dimensions) are clipped to 0.
- Majority and minority groups within class y, from the *training* split's group counts (the full
  split, also when the features come from the subset trained on): ``g_maj(y)`` is the group of class y
  with the most training examples; every other group of class y with examples is a minority group
  (marked ``*`` in figures, the paper's Section 2); ``g_min(y)``, the minority group that ``rho`` and
  Table 5 use, is the one with the fewest training examples (for two spurious attributes the only
  one). Ties go to the lower group index.
- Intra-class spectral norm ratio ``rho(y) = lambda_1(Sigma_{g_min(y)}) / lambda_1(Sigma_{g_maj(y)})``;
  NaN when class y has fewer than two groups with training examples.
- Table 5, per trial (one row per seed): ``argmax_y rho(y)`` against ``argmax_y [Acc(g_maj(y)) -
  Acc(g_min(y))]`` with the *test* group accuracies the trial reported at the analysed epoch
  (``test/acc_group_g``), and whether they agree. Ties go to the lower class; NaN values are ignored.

Across seeds, figures and the CSV beside them show the mean and the sample standard deviation
(ddof=1; NaN for one seed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from trainables.errors import GroupsweepError

EXAMPLES = ("train", "train_subset")
# Columns naming the trial (and epoch, example set) that every table row comes from.
TRIAL_KEYS = ("dataset", "model", "method_label", "variant", "seed", "trial_id", "trial_name", "epoch", "examples")
FIGURE_NUMBERS = {("group", 10): 5, ("group", 50): 10, ("class", 10): 11, ("class", 50): 12}


# --- covariance and eigenvalues --------------------------------------------------------------------

class CovarianceAccumulator:
    """Per-label count, mean and centred scatter matrix ``M2 = sum (z - mean)(z - mean)^T`` in float64,
    updated batch by batch; ``covariance(label) = M2 / count`` (equation (2))."""

    def __init__(self):
        self._count: dict[int, int] = {}
        self._mean: dict[int, np.ndarray] = {}
        self._scatter: dict[int, np.ndarray] = {}
        self.dim: int | None = None

    def update(self, features, labels) -> None:
        """Add the rows of ``features`` (N, D), row i belonging to label ``labels[i]``."""
        features = np.asarray(features, dtype=np.float64)
        labels = np.asarray(labels)
        if features.ndim != 2 or labels.shape != (len(features),):
            raise GroupsweepError(f"features must be (N, D) with one label per row; got features {features.shape} "
                                  f"and labels {labels.shape}")
        if self.dim is None:
            self.dim = features.shape[1]
        elif features.shape[1] != self.dim:
            raise GroupsweepError(f"features have {features.shape[1]} dimensions; earlier ones had {self.dim}")
        for label in np.unique(labels):
            rows = features[labels == label]
            mean = rows.mean(axis=0)
            centred = rows - mean
            self._merge(int(label), len(rows), mean, centred.T @ centred)

    def _merge(self, label: int, count: int, mean: np.ndarray, scatter: np.ndarray) -> None:
        """Pairwise merge of (count, mean, scatter) into ``label``'s statistics (Chan et al. 1979)."""
        if label not in self._count:
            self._count[label], self._mean[label], self._scatter[label] = count, mean.copy(), scatter.copy()
            return
        n_a = self._count[label]
        total = n_a + count
        delta = mean - self._mean[label]
        self._mean[label] = self._mean[label] + delta * (count / total)
        self._scatter[label] = self._scatter[label] + scatter + np.outer(delta, delta) * (n_a * count / total)
        self._count[label] = total

    @property
    def labels(self) -> list[int]:
        """Labels seen so far, sorted."""
        return sorted(self._count)

    def count(self, label: int) -> int:
        """Number of rows seen with ``label`` (0 if none)."""
        return self._count.get(label, 0)

    def mean(self, label: int) -> np.ndarray:
        """Mean feature vector of ``label`` (float64, D)."""
        return self._mean[label]

    def covariance(self, label: int) -> np.ndarray:
        """Population covariance (D, D) of ``label``'s rows, float64."""
        return self._scatter[label] / self._count[label]

    def merged(self, members: dict) -> "CovarianceAccumulator":
        """A new accumulator with one label per ``members`` entry ``new_label -> [labels]``, pooling the
        statistics of those labels exactly (e.g. class statistics from group statistics); labels
        never seen are skipped."""
        pooled = CovarianceAccumulator()
        pooled.dim = self.dim
        for new_label, old_labels in members.items():
            for old in old_labels:
                if old in self._count:
                    pooled._merge(int(new_label), self._count[old], self._mean[old], self._scatter[old])
        return pooled

    def top_eigenvalues(self, k: int) -> dict[int, np.ndarray]:
        """``{label: the k largest eigenvalues of its covariance, descending}`` (see module docstring)."""
        return {label: covariance_top_eigenvalues(self.covariance(label), k) for label in self.labels}


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise GroupsweepError(f"number of eigenvalues k must be a positive integer, got {k!r}")
    return int(k)


def covariance_top_eigenvalues(covariance: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` largest eigenvalues (all when ``k`` exceeds the dimension) of a symmetric matrix,
    descending, from ``numpy.linalg.eigvalsh`` in float64, negatives from rounding clipped to 0."""
    k = _check_k(k)
    values = np.linalg.eigvalsh(np.asarray(covariance, dtype=np.float64))
    return np.clip(values[::-1][:k], 0.0, None)


def top_eigenvalues(features, labels, k: int) -> dict[int, np.ndarray]:
    """``{label: descending top-k eigenvalues of the population covariance (eq. 2) of its rows}``.

    ``features``: (N, D) array; ``labels``: N integers (group or class of each row); ``k``: how many
    eigenvalues per label (all D when ``k > D``). Computed in float64 with an exact symmetric solver.
    """
    k = _check_k(k)
    accumulator = CovarianceAccumulator()
    accumulator.update(features, labels)
    return accumulator.top_eigenvalues(k)


# --- majority / minority groups, rho and Table 5 ---------------------------------------------------

@dataclass(frozen=True)
class ClassGroups:
    """The groups of one class by training count: ``majority`` (g_maj), ``minority`` (g_min, the smallest;
    None when the class has one non-empty group) and ``minorities`` (every non-majority group with examples)."""

    label: int
    majority: int
    minority: int | None
    minorities: tuple[int, ...]


def class_groups(train_counts, n_spurious: int) -> list[ClassGroups]:
    """Majority and minority groups within each class (groups ``g = y * n_spurious + s``) from the
    training split's per-group counts; see the module docstring for the rules and ties."""
    counts = np.asarray(train_counts, dtype=np.int64)
    if n_spurious < 1 or len(counts) % n_spurious:
        raise GroupsweepError(f"{len(counts)} group counts do not split into classes of {n_spurious} groups")
    out = []
    for y in range(len(counts) // n_spurious):
        members = [y * n_spurious + s for s in range(n_spurious) if counts[y * n_spurious + s] > 0]
        if not members:
            raise GroupsweepError(f"class {y} has no training examples; cannot find its majority group")
        majority = min(members, key=lambda g: (-counts[g], g))
        minorities = tuple(g for g in members if g != majority)
        minority = min(minorities, key=lambda g: (counts[g], g)) if minorities else None
        out.append(ClassGroups(label=y, majority=majority, minority=minority, minorities=minorities))
    return out


def minority_groups(train_counts, n_spurious: int) -> set[int]:
    """Every minority group within its class (the groups marked ``*``)."""
    return {g for groups in class_groups(train_counts, n_spurious) for g in groups.minorities}


def spectral_norm_ratios(lambda1: dict, train_counts, n_spurious: int, test_group_acc=None) -> pd.DataFrame:
    """One row per class: ``class, majority_group, minority_group, lambda1_majority, lambda1_minority, rho``
    and, from ``test_group_acc`` (per-group test accuracy, NaN where unknown), ``test_acc_majority``,
    ``test_acc_minority`` and ``acc_gap = Acc(g_maj) - Acc(g_min)``.

    ``lambda1``: top eigenvalue per group (groups without one give NaN)."""
    n_groups = len(train_counts)
    accuracy = np.full(n_groups, np.nan) if test_group_acc is None else np.asarray(test_group_acc, dtype=float)
    rows = []
    for groups in class_groups(train_counts, n_spurious):
        major = float(lambda1.get(groups.majority, np.nan))
        minor = float(lambda1.get(groups.minority, np.nan)) if groups.minority is not None else np.nan
        rows.append({
            "class": groups.label, "majority_group": groups.majority,
            "minority_group": groups.minority if groups.minority is not None else -1,
            "lambda1_majority": major, "lambda1_minority": minor,
            "rho": minor / major if major > 0 else np.nan,
            "test_acc_majority": accuracy[groups.majority],
            "test_acc_minority": accuracy[groups.minority] if groups.minority is not None else np.nan,
        })
    table = pd.DataFrame(rows)
    table["acc_gap"] = table["test_acc_majority"] - table["test_acc_minority"]
    return table


def _argmax(values: pd.Series, labels: pd.Series) -> tuple[int, bool]:
    """``(label of the largest non-NaN value, whether another label ties with it)``; the lowest label
    wins a tie; ``(-1, False)`` when all values are NaN."""
    values = values.to_numpy(dtype=float)
    if np.all(np.isnan(values)):
        return -1, False
    best = int(np.nanargmax(values))
    return int(labels.to_numpy()[best]), int(np.sum(values == values[best])) > 1


def table5(rho: pd.DataFrame) -> pd.DataFrame:
    """Table 5 from a ``rho`` table (``rho_table``'s layout, rows sorted by class within each trial):
    one row per trial with ``rho_class`` (argmax rho), ``gap_class`` (argmax of the test accuracy gap;
    -1 when none is known), ``agree``, and ``tie`` (another class reaches the same maximum of rho or of
    the gap, e.g. gaps of 100% on a small test set; the lower class was taken)."""
    keys = [column for column in TRIAL_KEYS if column in rho]
    rows = []
    for values, part in rho.groupby(keys, sort=True, dropna=False):
        part = part.sort_values("class")
        rho_class, rho_tie = _argmax(part["rho"], part["class"])
        gap_class, gap_tie = _argmax(part["acc_gap"], part["class"])
        rows.append({**dict(zip(keys, values)), "rho_class": rho_class, "gap_class": gap_class,
                     "agree": bool(rho_class == gap_class and rho_class >= 0), "tie": rho_tie or gap_tie})
    return pd.DataFrame(rows, columns=keys + ["rho_class", "gap_class", "agree", "tie"])


def table5_paper_view(table: pd.DataFrame) -> pd.DataFrame:
    """Table 5 in the paper's layout: a row per seed, a column per panel (dataset / model / method),
    cells ``(argmax rho, argmax gap)``."""
    if table.empty:
        return table
    view = table.assign(column=_panel_names(table), cell=[
        f"({a}, {b})" if b >= 0 else f"({a}, n/a)" for a, b in zip(table["rho_class"], table["gap_class"])])
    view = view.pivot_table(index="seed", columns="column", values="cell", aggfunc="first")
    view.columns.name = None
    return view.reset_index()


# --- per-trial spectra ------------------------------------------------------------------------------

@dataclass
class TrialSpectrum:
    """The spectra of one trial at one epoch.

    ``info``: the ``TRIAL_KEYS`` values; ``group_eigenvalues`` / ``class_eigenvalues``: label ->
    descending top eigenvalues; ``group_sizes``: examples per group in the features analysed;
    ``train_counts``: the full training split's group counts; ``test_group_acc``: per-group test
    accuracy reported at that epoch (NaN where not reported)."""

    info: dict
    n_spurious: int
    group_names: list
    class_names: list
    train_counts: np.ndarray
    group_sizes: dict
    group_eigenvalues: dict
    class_eigenvalues: dict
    test_group_acc: np.ndarray


def spectrum_from_statistics(info: dict, statistics, k: int, test_group_acc=None) -> TrialSpectrum:
    """A ``TrialSpectrum`` from an ``analysis.features.TrialStatistics`` (per-group accumulator and
    the dataset's facts): group and class covariances and their top-``k`` eigenvalues."""
    groups = statistics.accumulator
    n_spurious = statistics.n_spurious
    n_classes = len(statistics.class_names)
    classes = groups.merged({y: range(y * n_spurious, (y + 1) * n_spurious) for y in range(n_classes)})
    n_groups = n_classes * n_spurious
    accuracy = np.full(n_groups, np.nan) if test_group_acc is None else np.asarray(test_group_acc, dtype=float)
    return TrialSpectrum(
        info=dict(info), n_spurious=n_spurious, group_names=list(statistics.group_names),
        class_names=list(statistics.class_names), train_counts=np.asarray(statistics.train_counts),
        group_sizes={g: groups.count(g) for g in groups.labels},
        group_eigenvalues=groups.top_eigenvalues(k), class_eigenvalues=classes.top_eigenvalues(k),
        test_group_acc=accuracy,
    )


def eigenvalue_table(spectra: list) -> pd.DataFrame:
    """Every eigenvalue, long format: ``TRIAL_KEYS``, ``kind`` (group / class), ``label``, ``name``,
    ``minority`` (groups: a minority within its class), ``n_examples``, ``rank`` (1 = largest), ``eigenvalue``."""
    rows = []
    for spectrum in spectra:
        minorities = minority_groups(spectrum.train_counts, spectrum.n_spurious)
        class_sizes = {}
        for g, size in spectrum.group_sizes.items():
            class_sizes[g // spectrum.n_spurious] = class_sizes.get(g // spectrum.n_spurious, 0) + size
        for kind, values, names, sizes in (
                ("group", spectrum.group_eigenvalues, spectrum.group_names, spectrum.group_sizes),
                ("class", spectrum.class_eigenvalues, spectrum.class_names, class_sizes)):
            for label, eigenvalues in values.items():
                for rank, value in enumerate(eigenvalues, start=1):
                    rows.append({**spectrum.info, "kind": kind, "label": label, "name": names[label],
                                 "minority": kind == "group" and label in minorities,
                                 "n_examples": sizes[label], "rank": rank, "eigenvalue": float(value)})
    return pd.DataFrame(rows)


def rho_table(spectra: list) -> pd.DataFrame:
    """``spectral_norm_ratios`` of every trial, with the ``TRIAL_KEYS`` columns first."""
    tables = []
    for spectrum in spectra:
        lambda1 = {g: values[0] for g, values in spectrum.group_eigenvalues.items() if len(values)}
        table = spectral_norm_ratios(lambda1, spectrum.train_counts, spectrum.n_spurious, spectrum.test_group_acc)
        for position, (key, value) in enumerate(spectrum.info.items()):
            table.insert(position, key, value)
        table.insert(len(spectrum.info) + 1, "class_name", [spectrum.class_names[y] for y in table["class"]])
        tables.append(table)
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


# --- choosing and analysing trials ---------------------------------------------------------------

def criterion_trials(results, criterion: str) -> tuple[list, list]:
    """``(trial ids, notes)``: per dataset and model, the complete trials (every seed) of the balancing
    method that ``analysis.selection.select`` chooses with ``criterion`` (final epoch, by model)."""
    from analysis.selection import select

    selection = select(results, [criterion], epoch="final", by_model=True)
    trials = results.trials[results.trials["status"] == "complete"]
    chosen = []
    for row in selection.table.itertuples(index=False):
        variant = getattr(row, "variant", "")
        same_ratio = trials["ratio"].isna() if pd.isna(row.ratio) else trials["ratio"] == row.ratio
        match = trials[(trials["dataset"] == row.dataset) & (trials["model"] == row.model)
                       & (trials["method"] == row.method) & same_ratio & (trials["variant"] == variant)]
        chosen += sorted(match.index, key=lambda trial_id: (match.loc[trial_id, "seed"], trial_id))
    return chosen, list(selection.notes)


def resolve_trials(results, idents) -> list:
    """Trial ids of ``idents``, each a trial id or a trial name; a one-line error lists the known names."""
    names = dict(zip(results.trials["trial_name"], results.trials.index))
    out = []
    for ident in idents:
        if ident in results.trials.index:
            out.append(ident)
        elif ident in names:
            out.append(names[ident])
        else:
            raise GroupsweepError(f"unknown trial {ident!r} in {results.run_dir}; choose a trial id or name: "
                                  f"{', '.join(sorted(names))}")
    return out


def reported_test_group_acc(results, trial_id: str, epoch: int, n_groups: int) -> np.ndarray:
    """``test/acc_group_g`` for every group as the trial reported it after ``epoch`` (NaN where absent)."""
    frame = results.frame
    row = frame[(frame["trial_id"] == trial_id) & (frame["epoch"] == epoch)]
    values = np.full(n_groups, np.nan)
    for g in range(n_groups):
        column = f"test/acc_group_{g}"
        if len(row) and column in row:
            values[g] = float(row[column].iloc[-1])
    return values


def analyze_trials(results, trial_ids, k: int, epoch: int | None = None, examples: str = "train",
                   device: str | None = None, batch_size: int | None = None, log=None) -> list:
    """One ``TrialSpectrum`` per trial of ``results`` (an ``analysis.results.SweepResults``): features
    extracted from the checkpoint of ``epoch`` (default: each trial's last configured epoch), top-``k``
    eigenvalues, and the test group accuracies reported at that epoch. ``log(message)`` is told about
    each trial as it starts."""
    from analysis.features import trial_statistics

    k = _check_k(k)
    spectra = []
    for trial_id in trial_ids:
        trial = results.trials.loc[trial_id]
        if log is not None:
            log(f"extracting features of {trial['trial_name']} ({trial['dataset']}, {trial['model']}, "
                f"seed {trial['seed']})")
        statistics = trial_statistics(results.trial_dir(trial_id), epoch=epoch, examples=examples, device=device,
                                      batch_size=batch_size)
        info = {"dataset": trial["dataset"], "model": trial["model"], "method_label": trial["method_label"],
                "variant": trial["variant"], "seed": int(trial["seed"]), "trial_id": trial_id,
                "trial_name": trial["trial_name"], "epoch": statistics.epoch, "examples": examples}
        accuracy = reported_test_group_acc(results, trial_id, statistics.epoch, len(statistics.train_counts))
        spectra.append(spectrum_from_statistics(info, statistics, k, accuracy))
    return spectra


# --- figures -----------------------------------------------------------------------------------------

PANEL_KEYS = ("dataset", "model", "method_label", "variant")


def _panel_names(frame: pd.DataFrame) -> list:
    """``dataset / model / method`` (plus the variant when set) per row."""
    keys = [key for key in PANEL_KEYS if key in frame]
    return [" / ".join(str(part) for part in values if part not in ("", None))
            for values in frame[keys].itertuples(index=False)]


def _panels(frame: pd.DataFrame):
    """``(panel name, rows)`` per panel, sorted by name."""
    names = pd.Series(_panel_names(frame), index=frame.index)
    return [(name, frame[names == name]) for name in sorted(names.unique())]


def figure_name(kind: str, k: int) -> str:
    """File stem of an eigenvalue figure: ``spectral_group_eigenvalues_top10`` (the paper's Figure 5)."""
    return f"spectral_{kind}_eigenvalues_top{k}"


def plot_eigenvalues(eigenvalues: pd.DataFrame, kind: str, k: int, out_dir):
    """Figures 5 / 10 (``kind='group'``) and 11 / 12 (``kind='class'``): the mean over seeds of the top
    ``k`` eigenvalues against their rank, a line per group (minority groups marked ``*``, dashed) or
    class, a panel per dataset / model / method. Returns an ``analysis.plots.FigureOutput``."""
    from analysis.plots import MARKERS, OKABE_ITO, FigureOutput, _figure, _save

    output = FigureOutput(figure_name(kind, k))
    rows = eigenvalues[(eigenvalues["kind"] == kind) & (eigenvalues["rank"] <= k)] if len(eigenvalues) else eigenvalues
    if rows.empty:
        output.notes.append(f"{output.name}: no eigenvalues to draw")
        return output
    keys = [key for key in PANEL_KEYS if key in rows]
    stats = (rows.groupby(keys + ["label", "name", "minority", "rank"], dropna=False)
             .agg(n_seeds=("seed", "nunique"), eigenvalue_mean=("eigenvalue", "mean"),
                  eigenvalue_std=("eigenvalue", "std"))
             .reset_index())
    panels = _panels(stats)
    fig, axes = _figure(len(panels), 1)
    for ax, (title, part) in zip(axes[0], panels):
        for (label, minority), line in part.groupby(["label", "minority"], sort=True):
            line = line.sort_values("rank")
            text = f"{kind} {label}" + ("*" if minority else "")
            ax.plot(line["rank"], line["eigenvalue_mean"], color=OKABE_ITO[label % len(OKABE_ITO)],
                    marker=MARKERS[label % len(MARKERS)], markersize=4, markevery=max(1, k // 10),
                    linestyle="--" if minority else "-", label=text)
        if kind == "group":
            marked = sorted(part.loc[part["minority"], "label"].unique())
            title += "\nminority groups: " + (", ".join(f"{g}*" for g in marked) or "none")
        ax.set_title(title, fontsize="small")
        ax.set_xlabel("Eigenvalue rank")
        ax.set_ylabel(f"Eigenvalue of the {kind} covariance")
    number = FIGURE_NUMBERS.get((kind, k))
    caption = (f"{'Figure ' + str(number) + ': ' if number else ''}top {k} eigenvalues of the {kind} covariance "
               f"matrices of penultimate training features; mean over seeds (CSV: + sample std, ddof=1)"
               + ("; * = minority group within its class (by training counts)" if kind == "group" else ""))
    _save(fig, output, out_dir, stats, caption)
    return output


def plot_rho(rho: pd.DataFrame, out_dir):
    """Figure 6: ``rho(y)`` per class, mean over seeds with +/- one sample std (ddof=1) error bars, each
    seed's value as a dot, a dashed line at 1; a panel per dataset / model / method."""
    from analysis.plots import OKABE_ITO, FigureOutput, _figure, _save

    output = FigureOutput("spectral_rho")
    rows = rho[rho["rho"].notna()] if len(rho) else rho
    if rows.empty:
        output.notes.append("spectral_rho: no class has both a majority and a minority group; nothing to draw")
        return output
    keys = [key for key in PANEL_KEYS if key in rows]
    stats = (rows.groupby(keys + ["class", "class_name"], dropna=False)
             .agg(n_seeds=("seed", "nunique"), rho_mean=("rho", "mean"), rho_std=("rho", "std"))
             .reset_index())
    panels = _panels(stats)
    seeds = _panels(rows)
    fig, axes = _figure(len(panels), 1)
    for ax, (title, part), (_, points) in zip(axes[0], panels, seeds):
        ax.bar(part["class"], part["rho_mean"], yerr=part["rho_std"].fillna(0), color=OKABE_ITO[1], capsize=4,
               width=0.6, label="mean ± std over seeds")
        ax.scatter(points["class"], points["rho"], color=OKABE_ITO[6], s=14, zorder=3, label="one seed")
        ax.axhline(1.0, color=OKABE_ITO[4], linestyle="--", linewidth=1.2, label="ρ = 1")
        ax.set_xticks(part["class"].to_list(), [str(c) for c in part["class"]])
        ax.set_title(title, fontsize="small")
        ax.set_xlabel("Class y")
        ax.set_ylabel("ρ(y) = λ1(g_min) / λ1(g_maj)")
    _save(fig, output, out_dir, stats, "Figure 6: intra-class spectral norm ratio; bars: mean over seeds, "
          "error bars: +/- 1 sample std (ddof=1); dots: single seeds")
    return output


# --- everything at once ------------------------------------------------------------------------------

@dataclass
class SpectralOutputs:
    """Files written by ``write_outputs`` (tables and figures) and notes on what could not be drawn."""

    files: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    table5: pd.DataFrame | None = None
    rho: pd.DataFrame | None = None


def write_outputs(spectra: list, tops, out_dir) -> SpectralOutputs:
    """Write the eigenvalue CSV (``spectral_eigenvalues.csv``, up to the largest of ``tops``), the rho
    table (``spectral_rho_table.csv``), Table 5 (``spectral_table5.csv`` and ``.md``), Figure 6 and, for
    each ``k`` of ``tops``, the group and class eigenvalue figures (PNG, PDF and CSV each)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = SpectralOutputs()
    eigenvalues = eigenvalue_table(spectra)
    rho = rho_table(spectra)
    table = table5(rho)
    outputs.rho, outputs.table5 = rho, table
    for name, frame in (("spectral_eigenvalues.csv", eigenvalues), ("spectral_rho_table.csv", rho),
                        ("spectral_table5.csv", table)):
        frame.to_csv(out_dir / name, index=False)
        outputs.files.append(out_dir / name)
    (out_dir / "spectral_table5.md").write_text(table5_markdown(table, rho))
    outputs.files.append(out_dir / "spectral_table5.md")
    figures = [plot_rho(rho, out_dir)]
    for k in sorted(set(tops)):
        figures += [plot_eigenvalues(eigenvalues, kind, k, out_dir) for kind in ("group", "class")]
    for figure in figures:
        outputs.notes += figure.notes
        outputs.files += [path for path in (figure.png, figure.pdf, figure.csv) if path is not None]
    return outputs


def table5_markdown(table: pd.DataFrame, rho: pd.DataFrame) -> str:
    """Table 5 (paper layout and per-trial detail) and the rho table as Markdown."""
    if table.empty:
        return "# Table 5\n\nno trial analysed\n"
    detail = rho.copy()
    for column in ("lambda1_majority", "lambda1_minority", "rho", "test_acc_majority", "test_acc_minority", "acc_gap"):
        detail[column] = detail[column].map(lambda value: "n/a" if pd.isna(value) else f"{value:.4g}")
    shown = [c for c in ("dataset", "model", "method_label", "variant", "seed", "epoch", "class", "class_name",
                         "majority_group", "minority_group", "lambda1_majority", "lambda1_minority", "rho",
                         "test_acc_majority", "test_acc_minority", "acc_gap") if c in detail]
    agree = int(table["agree"].sum())
    ties = table[table["tie"]]
    tied = ("" if ties.empty else " Ties, broken toward the lower class, in: "
            + ", ".join(f"{name} seed {seed}" for name, seed in zip(_panel_names(ties), ties["seed"])) + ".")
    return "\n\n".join([
        "# Table 5: (argmax_y rho(y), argmax_y [Acc(g_maj(y)) - Acc(g_min(y))]) per seed",
        "Test group accuracies at the analysed epoch; the classes agree in "
        f"{agree} of {len(table)} trial(s).{tied}",
        table5_paper_view(table).to_markdown(index=False, disable_numparse=True),
        "## Intra-class spectral norm ratio rho(y) per trial",
        detail[shown].to_markdown(index=False, disable_numparse=True),
    ]) + "\n"
