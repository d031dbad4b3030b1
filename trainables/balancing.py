"""Class- and group-balancing plans: which training examples are used, and how they are drawn.

A plan is computed once, before training, from the training split's class labels ``y`` and group
labels ``groups`` (``g = y * n_spurious + s``). It says which examples are kept (``indices``), how a
draw picks among them (``sampling_weights``, or plain shuffling), how the loss weighs each class
(``class_weights``) and how many draws make one epoch (``num_samples``). The methods follow LaBonte
et al. (NeurIPS 2024), Section 2, 3.2 and Appendix C, plus the group-level SUBG and RWG baselines of
Idrissi et al. (2022); ``n_y`` is the training count of class y, ``n_min``/``n_max`` the smallest and
largest class counts, N the size of the training split and K the number of classes.

Random subsets (subsetting, mixture, subg) depend only on the labels, the cap that the method and
ratio set, and the seed: every class (or group) has one permutation drawn from
``np.random.default_rng([seed, stream, label])`` and a subset keeps a prefix of it. Hence, for one seed,
subsets are nested across ratios (subsetting == mixture 1:1 ⊂ mixture 2:1 ⊂ mixture 3:1 ⊂ ... ⊂ the full
split), are the same for every model and worker, and differ between seeds.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from trainables.errors import GroupsweepError, choose, is_integer, is_real

logger = logging.getLogger("groupsweep.balancing")

# D3M's methods (``trainables.d3m.d3m_plan``).
D3M_METHODS = ("d3m", "auto-d3m")
# Data-selection methods: their plan is computed from a trained base model (``trainables.plans.training_plan``:
# D3M's removal, JTT's upsampled error set).
SELECTION_METHODS = (*D3M_METHODS, "jtt")
# Methods built on the sweep's base ERM model (``trainables.base_model``), run in one process: the
# data-selection methods, and DFR, which retrains that model's last layer (``trainables.dfr``).
BASE_MODEL_METHODS = (*SELECTION_METHODS, "dfr")
# Methods that change the training objective: ``groupdro`` weighs per-group losses (``trainables.groupdro``)
# and draws its batches as ``rwg`` does (each draw a group uniformly), as the authors train it (group_DRO's
# ``--reweight_groups --robust``; BalancingGroups' ``dro`` samples with ``rwg``'s weights).
OBJECTIVE_METHODS = ("groupdro",)
METHODS = ("none", "subsetting", "upsampling", "upweighting", "mixture", "mixture-nosubset", "subg", "rwg",
           *BASE_MODEL_METHODS, *OBJECTIVE_METHODS)
RATIO_METHODS = ("mixture", "mixture-nosubset")

# The group labels a method uses, least to most (the D3M paper's Table 1 categories): ``none`` (class labels
# at most), ``val`` (group labels of the validation split only), ``train+val`` (of the training split too).
GROUP_INFO_LEVELS = ("none", "val", "train+val")
# Per method its level. Names of other branches' methods (jtt, dfr) may be listed before they exist here:
# a plain mapping, read only for the methods a sweep holds.
GROUP_INFO = {
    "none": "none", "subsetting": "none", "upsampling": "none", "upweighting": "none", "mixture": "none",
    "mixture-nosubset": "none", "auto-d3m": "none", "jtt": "none",
    "d3m": "val", "dfr": "val",
    "subg": "train+val", "rwg": "train+val", "groupdro": "train+val",
}

# Separate random streams for class-level and group-level subsets of one seed.
_CLASS_STREAM = 0
_GROUP_STREAM = 1


@dataclass(frozen=True, eq=False)
class BalancingPlan:
    """How one training run uses its training split (all arrays are read-only).

    Fields:
      indices: np.int64, sorted indices into the training split of the examples trained on; an index may
        repeat (JTT's upsampled error set): each entry is one position a draw can pick.
      sampling_weights: np.float64, one per entry of ``indices`` (aligned with it): the probability
        that one draw picks it (draws are with replacement); ``None`` means plain shuffling without
        replacement, each entry once per epoch (an index listed k times is drawn k times).
      class_weights: np.float64 loss weight per class (for ``cross_entropy(weight=...)``), or ``None``.
      num_samples: draws per epoch.
    """

    indices: np.ndarray
    sampling_weights: np.ndarray | None
    class_weights: np.ndarray | None
    num_samples: int

    def __post_init__(self):
        for name, dtype in (("indices", np.int64), ("sampling_weights", np.float64), ("class_weights", np.float64)):
            value = getattr(self, name)
            if value is not None:
                value = np.array(value, dtype=dtype)
                value.setflags(write=False)
                object.__setattr__(self, name, value)
        object.__setattr__(self, "num_samples", int(self.num_samples))


def check_method(method: str, ratio=None) -> float | None:
    """Validate a balancing ``method`` and its ``ratio``; return the ratio as a float (or ``None``).

    ``mixture`` and ``mixture-nosubset`` need a finite ratio >= 1; every other method takes none.
    Raises ``GroupsweepError`` (one line) otherwise.
    """
    choose("balancing method", method, METHODS)
    if method not in RATIO_METHODS:
        if ratio is not None:
            raise GroupsweepError(
                f"balancing method {method!r} takes no ratio (got {ratio!r}); only {', '.join(RATIO_METHODS)} take one"
            )
        return None
    if ratio is None:
        raise GroupsweepError(f"balancing method {method!r} needs a ratio; allowed: a number >= 1 (e.g. 2 for {method} 2:1)")
    if not is_real(ratio, 1):
        raise GroupsweepError(f"balancing ratio {ratio!r} for {method!r} is invalid; allowed: a finite number >= 1")
    return float(ratio)


def method_label(method: str, ratio=None) -> str:
    """Display name of a balancing method in every table, figure and summary: ``upsampling``,
    ``mixture 2:1``, ``mixture-nosubset 3.5:1``. A ``ratio`` of None or NaN (a table's empty cell) means
    none. A display function: it does not validate (``check_method`` does)."""
    if ratio is None or (isinstance(ratio, float) and math.isnan(ratio)):
        return str(method)
    return f"{method} {float(ratio):g}:1"


def group_info(method: str, config: Mapping | None = None) -> str | None:
    """The group information ``method`` uses (one of ``GROUP_INFO_LEVELS``); None for a method this version
    does not know (e.g. one read from another version's sweep). With the trial's ``config``, its settings
    count too: DFR fitted on the training split (``dfr_variant: tr_tr``) uses training group labels."""
    if method == "dfr" and config is not None and config.get("dfr_variant") == "tr_tr":
        return "train+val"
    return GROUP_INFO.get(method)


def within_group_info(level: str | None, limit: str) -> bool:
    """Whether group information ``level`` (a ``group_info``) is at most ``limit`` (``none`` < ``val`` <
    ``train+val``); False for an unknown one (None). A ``limit`` outside ``GROUP_INFO_LEVELS`` is a one-line
    ``GroupsweepError``."""
    choose("group information", limit, GROUP_INFO_LEVELS)
    return level in GROUP_INFO_LEVELS and GROUP_INFO_LEVELS.index(level) <= GROUP_INFO_LEVELS.index(limit)


def make_plan(y, groups, method: str, ratio=None, seed: int = 0, *, n_classes: int | None = None) -> BalancingPlan:
    """Compute the balancing plan of ``method`` for a training split with labels ``y`` and ``groups``.

    ``n_classes`` (default ``max(y) + 1``) lets a missing top class be detected. Methods:

    - ``none``: all N examples, plain shuffling, no class weights; num_samples = N.
    - ``subsetting``: every class cut to n_min examples, uniformly at random, once (the kept prefix of
      the class's seeded permutation); plain shuffling; num_samples = subset size = K * n_min.
    - ``upsampling``: all examples; a draw picks y ~ Uniform(classes), then an example of class y
      uniformly, i.e. weight ``1 / (K * n_y)`` per example, with replacement; num_samples = N.
    - ``upweighting``: all examples, plain shuffling, ``class_weights[y] = n_max / n_y``. Meant for
      ``torch.nn.functional.cross_entropy(logits, y, weight=class_weights)``, whose ``mean`` reduction
      is ``sum_i w_{y_i} l_i / sum_i w_{y_i}`` over the batch (normalised by the batch's weight sum, not
      by the batch size); this is the form equal in expectation to upsampling.
    - ``mixture`` (ratio r): every class capped at ``cap = floor(r * n_min)`` by the same seeded prefix
      as subsetting, then class-balanced upsampling on that subset; num_samples = subset size. r = 1
      gives subsetting's subset (drawn with replacement instead of shuffled); r >= n_max / n_min keeps
      every example, which is upsampling (logged at INFO on ``groupsweep.balancing``).
    - ``mixture-nosubset`` (ratio r): all examples; class probabilities ``p(y) ∝ min(n_y, cap)`` with the
      same ``cap = floor(r * n_min)``, so draws have the class mix of the mixture r:1 subset; uniform
      within a class, with replacement; num_samples = N. r = 1 is upsampling; r >= n_max / n_min gives
      the natural class mix (ERM drawn with replacement; logged at INFO).
    - ``subg`` (Idrissi et al.): every group present cut to the smallest present group's size by a
      seeded prefix (a stream separate from the class-level one); plain shuffling; num_samples = subset size.
    - ``rwg`` (Idrissi et al.): all examples; a draw picks a present group uniformly, then an example
      of it uniformly (weight ``1 / (G_present * n_g)``), with replacement; num_samples = N. ``groupdro``
      (Sagawa et al.) gets the same plan: the authors train it on group-balanced draws; its loss differs.

    ``r * n_min`` is rounded to 6 decimals before the floor, so a ratio computed as n_max / n_min in
    floating point reaches n_max exactly. Raises ``GroupsweepError`` (one line) for an unknown method,
    a bad or misplaced ratio, a bad seed, label arrays that are not 1-D non-negative integers, ``y``
    and ``groups`` of different lengths, or a class with no training example.
    """
    ratio = check_method(method, ratio)
    if method in BASE_MODEL_METHODS:
        raise GroupsweepError(f"balancing method {method!r} builds on a trained base model; "
                              f"its plan comes from trainables.plans.training_plan, not make_plan")
    if not is_integer(seed, 0):
        raise GroupsweepError(f"balancing seed {seed!r} is invalid; allowed: an integer >= 0")
    seed = int(seed)
    y = _labels("class labels", y)
    groups = _labels("group labels", groups)
    if len(y) != len(groups):
        raise GroupsweepError(f"balancing got {len(y)} class labels but {len(groups)} group labels; they must match")
    if len(y) == 0:
        raise GroupsweepError("balancing got an empty training split; every class needs at least one example")
    if n_classes is None:
        n_classes = int(y.max()) + 1
    elif y.max() >= n_classes:
        raise GroupsweepError(f"class label {int(y.max())} out of range; allowed: 0..{n_classes - 1}")
    class_counts = np.bincount(y, minlength=n_classes)
    missing = np.flatnonzero(class_counts == 0)
    if len(missing):
        raise GroupsweepError(
            f"class {int(missing[0])} has no training example; every class 0..{n_classes - 1} must be present to balance"
        )

    n = len(y)
    everything = np.arange(n)
    n_min, n_max = int(class_counts.min()), int(class_counts.max())
    if method == "none":
        return BalancingPlan(everything, None, None, n)
    if method == "subsetting":
        kept = _prefix_subset(y, n_min, seed, _CLASS_STREAM)
        return BalancingPlan(kept, None, None, len(kept))
    if method == "upsampling":
        return BalancingPlan(everything, _uniform_over_labels(y), None, n)
    if method == "upweighting":
        return BalancingPlan(everything, None, n_max / class_counts, n)
    if method in ("rwg", "groupdro"):
        return BalancingPlan(everything, _uniform_over_labels(groups), None, n)
    if method == "subg":
        group_counts = np.bincount(groups)
        kept = _prefix_subset(groups, int(group_counts[group_counts > 0].min()), seed, _GROUP_STREAM)
        return BalancingPlan(kept, None, None, len(kept))

    product = round(ratio * n_min, 6)
    cap = n_max if product >= n_max else math.floor(product)
    if method == "mixture":
        if cap >= n_max:
            logger.info("mixture %g:1 is at or above the native class ratio %.4g:1; it equals upsampling", ratio, n_max / n_min)
        kept = _prefix_subset(y, cap, seed, _CLASS_STREAM)
        return BalancingPlan(kept, _uniform_over_labels(y[kept]), None, len(kept))
    # mixture-nosubset
    if cap >= n_max:
        logger.info(
            "mixture %g:1 without subset is at or above the native class ratio %.4g:1; it draws the natural class mix",
            ratio, n_max / n_min,
        )
    class_mass = np.minimum(class_counts, cap)
    class_probability = class_mass / class_mass.sum()
    return BalancingPlan(everything, (class_probability / class_counts)[y], None, n)


def make_sampler(plan: BalancingPlan, generator=None):
    """A torch sampler over positions ``0 .. len(plan.indices) - 1`` (map them through ``plan.indices``).

    ``WeightedRandomSampler(sampling_weights, num_samples, replacement=True)`` when the plan has sampling
    weights, else ``RandomSampler`` (a fresh permutation each epoch, without replacement). ``generator``
    is the ``torch.Generator`` that makes the draws reproducible.
    """
    # deferred: balancing plans are numpy; only the sampler needs torch (specs are checked without it)
    from torch import from_numpy
    from torch.utils.data import RandomSampler, WeightedRandomSampler

    if plan.sampling_weights is None:
        return RandomSampler(range(len(plan.indices)), num_samples=plan.num_samples, generator=generator)
    weights = from_numpy(plan.sampling_weights.copy())
    return WeightedRandomSampler(weights, plan.num_samples, replacement=True, generator=generator)


def _labels(what: str, values) -> np.ndarray:
    """``values`` as a 1-D int64 array of non-negative labels, or a one-line ``GroupsweepError``."""
    array = np.asarray(values)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise GroupsweepError(f"balancing {what} must be a 1-D integer array; got shape {array.shape} of {array.dtype}")
    if len(array) and array.min() < 0:
        raise GroupsweepError(f"balancing {what} contain {int(array.min())}; allowed: integers >= 0")
    return array.astype(np.int64)


def _prefix_subset(labels: np.ndarray, cap: int, seed: int, stream: int) -> np.ndarray:
    """Sorted indices keeping, for every label value present, at most ``cap`` of its examples.

    The kept examples of label v are the first ``cap`` of a permutation drawn from
    ``default_rng([seed, stream, v])``, so subsets for one seed are nested as ``cap`` grows.
    """
    kept = []
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        if len(members) > cap:
            order = np.random.default_rng([seed, stream, int(value)]).permutation(len(members))
            members = members[np.sort(order[:cap])]
        kept.append(members)
    return np.sort(np.concatenate(kept))


def _uniform_over_labels(labels: np.ndarray) -> np.ndarray:
    """Per-example draw probabilities: a label value present uniformly, then an example of it uniformly."""
    values, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return 1.0 / (len(values) * counts[inverse])
