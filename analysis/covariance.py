"""Spectral maths of penultimate features: covariances, eigenvalues, majority / minority groups, rho(y)
and Table 5 (Section 5 of the paper); numpy and pandas only, no trial files, no figures.

The spectral analysis is cut by job: ``analysis.features`` chooses the trials and streams their
features into this module's ``CovarianceAccumulator``; this module turns the statistics into spectra
and tables; ``analysis.spectral_plots`` draws them; ``analysis.spectral`` writes every output.

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

from dataclasses import dataclass

import numpy as np
import pandas as pd

from trainables.errors import GroupsweepError, positive_integer

# Columns naming the trial (and epoch, example set) that every table row comes from.
TRIAL_KEYS = ("dataset", "model", "method_label", "variant", "config_id", "seed", "trial_id", "trial_name", "epoch",
              "examples")
# Columns naming a panel of the figures and a column of Table 5's paper view: in a hyperparameter search each
# configuration (``config_id``, empty for grid trials) is a panel of its own, never averaged with another.
PANEL_KEYS = ("dataset", "model", "method_label", "variant", "config_id")


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


def check_k(k) -> int:
    """``k`` as an ``int`` when it is a valid number of eigenvalues (an integer >= 1); else a one-line
    ``GroupsweepError``."""
    return positive_integer("number of eigenvalues k", k)


def covariance_top_eigenvalues(covariance: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` largest eigenvalues (all when ``k`` exceeds the dimension) of a symmetric matrix,
    descending, from ``numpy.linalg.eigvalsh`` in float64, negatives from rounding clipped to 0."""
    k = check_k(k)
    values = np.linalg.eigvalsh(np.asarray(covariance, dtype=np.float64))
    return np.clip(values[::-1][:k], 0.0, None)


def top_eigenvalues(features, labels, k: int) -> dict[int, np.ndarray]:
    """``{label: descending top-k eigenvalues of the population covariance (eq. 2) of its rows}``.

    ``features``: (N, D) array; ``labels``: N integers (group or class of each row); ``k``: how many
    eigenvalues per label (all D when ``k > D``). Computed in float64 with an exact symmetric solver.
    """
    k = check_k(k)
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
    """Table 5 in the paper's layout: a row per seed, a column per panel (dataset / model / method, and the
    configuration in a search), cells ``(argmax rho, argmax gap)``. Trials that share a panel and a seed
    (e.g. the same grid in two sweeps) share its cell, their pairs joined by ``; `` in ``table``'s order."""
    if table.empty:
        return table
    view = table.assign(column=panel_names(table), cell=[
        f"({a}, {b})" if b >= 0 else f"({a}, n/a)" for a, b in zip(table["rho_class"], table["gap_class"])])
    view = view.pivot_table(index="seed", columns="column", values="cell", aggfunc="; ".join, sort=True)
    view.columns.name = None
    return view.reset_index()


# --- per-trial spectra and their tables ------------------------------------------------------------

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


def panel_names(frame: pd.DataFrame) -> list:
    """``dataset / model / method`` (plus the variant and the search configuration when set) per row of
    ``frame`` (columns ``PANEL_KEYS``, those present): the panel of a figure, or the column of Table 5's paper view."""
    keys = [key for key in PANEL_KEYS if key in frame]
    return [" / ".join(str(part) for part in values if part not in ("", None))
            for values in frame[keys].itertuples(index=False)]

