"""Accuracy metrics of group robustness, on plain numpy label arrays (the one definition: training
reports them every epoch, analysis re-exports them as ``analysis.metrics``).

Notation: example i has true class ``y_i``, predicted class ``ŷ_i`` and group ``g_i`` (``g = y *
n_spurious + s``); ``Ω_g`` is the set of examples of group g in the split evaluated. A group (or class)
is *present* when the split has at least one example of it. Every function raises
``trainables.errors.GroupsweepError`` (one line) for arrays that are not 1-D non-negative integers,
arrays of different lengths, or empty arrays.
"""

from __future__ import annotations

import numpy as np

from trainables.errors import GroupsweepError, choose

EMPTY_CELLS = ("skip", "zero")


def group_accuracies(y_true, y_pred, groups, n_groups: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and size of every group: ``acc_g = (1/|Ω_g|) Σ_{i∈Ω_g} 1(ŷ_i = y_i)``, ``count_g = |Ω_g|``.

    Returns ``(acc, counts)``, arrays of length ``n_groups`` (default ``max(groups) + 1``); ``acc`` is
    float64 with NaN for a group absent from the split, ``counts`` is int64.
    """
    y_true, y_pred, groups = _label_arrays(y_true=y_true, y_pred=y_pred, groups=groups)
    return _accuracy_by(y_true, y_pred, groups, _size("groups", groups, n_groups))


def worst_group_accuracy(y_true, y_pred, groups) -> float:
    """Worst-group accuracy (WGA): ``min_g acc_g`` over the groups present in the split."""
    acc, counts = group_accuracies(y_true, y_pred, groups)
    return float(acc[counts > 0].min())


def class_accuracies(y_true, y_pred, n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and size of every class: ``acc_c = (1/|{i: y_i = c}|) Σ_{i: y_i = c} 1(ŷ_i = c)``.

    Returns ``(acc, counts)`` of length ``n_classes`` (default ``max(y_true) + 1``); NaN for an absent class.
    """
    y_true, y_pred = _label_arrays(y_true=y_true, y_pred=y_pred)
    return _accuracy_by(y_true, y_pred, y_true, _size("classes", y_true, n_classes))


def worst_class_accuracy(y_true, y_pred) -> float:
    """Worst-class accuracy (WCA, Yang et al. 2023): ``min_c acc_c`` over the classes present in the split."""
    acc, counts = class_accuracies(y_true, y_pred)
    return float(acc[counts > 0].min())


def average_accuracy(y_true, y_pred, groups=None, group_weights=None) -> float:
    """Average accuracy: pooled, or weighted by group.

    Without ``group_weights``: the pooled accuracy ``(1/N) Σ_i 1(ŷ_i = y_i)`` (``groups`` is ignored).
    With ``group_weights`` w (length n_groups, non-negative, e.g. the full training split's group
    proportions for Waterbirds): ``Σ_{g present} w_g acc_g / Σ_{g present} w_g``, i.e. the weights are
    renormalised over the groups present in the split (a no-op when every group is present and w sums
    to 1); a group absent from the split contributes nothing. Needs ``groups``; raises
    ``GroupsweepError`` when the present groups carry no weight.
    """
    if group_weights is None:
        y_true, y_pred = _label_arrays(y_true=y_true, y_pred=y_pred)
        return float(np.mean(y_true == y_pred))
    if groups is None:
        raise GroupsweepError("average accuracy with group weights needs the group labels; got groups=None")
    weights = np.asarray(group_weights, dtype=np.float64)
    if weights.ndim != 1 or not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise GroupsweepError(f"group weights {weights.tolist()} are invalid; allowed: a 1-D array of finite numbers >= 0")
    acc, counts = group_accuracies(y_true, y_pred, groups, n_groups=len(weights))
    present = counts > 0
    total = weights[present].sum()
    if total <= 0:
        raise GroupsweepError(
            f"group weights {weights.tolist()} give no weight to the groups present ({np.flatnonzero(present).tolist()})"
        )
    return float(np.sum(weights[present] * acc[present]) / total)


def bias_unsupervised_score(y_true, y_pred, y_pred_biased, n_classes: int | None = None, empty_cells: str = "skip") -> float:
    """Bias-unsupervised validation score (Tsirigotis et al. 2023; eq. (1) of LaBonte et al. 2024).

    Cell ``S[y, b]`` = examples with true class y that the biased model (ERM without balancing)
    predicts as b; ``acc(S) = (1/|S|) Σ_{i∈S} 1(ŷ_i = y_i)`` is the candidate's accuracy in the cell.
    With K = ``n_classes`` (default: 1 + the largest label in the three arrays):

    - ``empty_cells="skip"`` (default, as the authors' reference code): the mean of ``acc(S[y, b])``
      over the non-empty cells only.
    - ``empty_cells="zero"`` (the paper's formula): ``(1/K²) Σ_{y, b} acc(S[y, b])`` with empty cells
      counting 0.

    For one biased model and validation split the two differ by the constant factor
    ``#non-empty cells / K²``, so they rank candidates identically there; means over seeds, each with its own
    biased model and so its own number of empty cells, can rank candidates differently under the two rules.
    """
    choose("empty-cell rule", empty_cells, EMPTY_CELLS)
    y_true, y_pred, y_pred_biased = _label_arrays(y_true=y_true, y_pred=y_pred, y_pred_biased=y_pred_biased)
    n_classes = _size("classes", np.concatenate([y_true, y_pred, y_pred_biased]), n_classes)
    acc, counts = _accuracy_by(y_true, y_pred, y_true * n_classes + y_pred_biased, n_classes * n_classes)
    if empty_cells == "skip":
        return float(acc[counts > 0].mean())
    return float(acc[counts > 0].sum() / n_classes**2)


def evaluate_predictions(y_true, y_pred, groups, n_classes: int, n_groups: int, group_weights=None) -> dict:
    """Every accuracy metric of one split as a flat dict of Python numbers.

    Keys: ``acc`` (pooled), ``avg_acc`` (``average_accuracy`` with ``group_weights``: pooled when
    None), ``wga``, ``wca``, and for every group g and class c ``acc_group_{g}`` (NaN if absent),
    ``count_group_{g}``, ``acc_class_{c}`` (NaN if absent).
    """
    group_acc, group_counts = group_accuracies(y_true, y_pred, groups, n_groups)
    class_acc, class_counts = class_accuracies(y_true, y_pred, n_classes)
    metrics = {
        "acc": average_accuracy(y_true, y_pred),
        "avg_acc": average_accuracy(y_true, y_pred, groups, group_weights),
        "wga": float(group_acc[group_counts > 0].min()),
        "wca": float(class_acc[class_counts > 0].min()),
    }
    for g in range(n_groups):
        metrics[f"acc_group_{g}"] = float(group_acc[g])
        metrics[f"count_group_{g}"] = int(group_counts[g])
    for c in range(n_classes):
        metrics[f"acc_class_{c}"] = float(class_acc[c])
    return metrics


def _accuracy_by(y_true: np.ndarray, y_pred: np.ndarray, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy (NaN where empty) and count of every value 0..size-1 of ``labels``."""
    counts = np.bincount(labels, minlength=size)
    correct = np.bincount(labels, weights=(y_true == y_pred).astype(np.float64), minlength=size)
    acc = np.full(size, np.nan)
    present = counts > 0
    acc[present] = correct[present] / counts[present]
    return acc, counts.astype(np.int64)


def _label_arrays(**arrays) -> list[np.ndarray]:
    """The named arrays as 1-D int64 arrays of one common, non-zero length; else a one-line error."""
    out = []
    for name, values in arrays.items():
        array = np.asarray(values)
        if array.shape == (0,):
            array = array.astype(np.int64)  # an empty list reads as float64; report it as empty below
        if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
            raise GroupsweepError(f"metric input {name} must be a 1-D integer array; got shape {array.shape} of {array.dtype}")
        if len(array) and array.min() < 0:
            raise GroupsweepError(f"metric input {name} contains {int(array.min())}; allowed: integers >= 0")
        out.append(array.astype(np.int64))
    lengths = {name: len(array) for name, array in zip(arrays, out)}
    if len(set(lengths.values())) > 1:
        raise GroupsweepError(f"metric inputs differ in length: {lengths}; they must match")
    if not out[0].size:
        raise GroupsweepError("metric inputs are empty; a split needs at least one example")
    return out


def _size(what: str, labels: np.ndarray, size: int | None) -> int:
    """``size`` if every label is below it, ``max(labels) + 1`` when ``size`` is None; else a one-line error."""
    largest = int(labels.max())
    if size is None:
        return largest + 1
    if largest >= size:
        raise GroupsweepError(f"label {largest} out of range for {size} {what}; allowed: 0..{size - 1}")
    return int(size)
