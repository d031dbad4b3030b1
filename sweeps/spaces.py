"""Search spaces and the ``search:`` block of a spec: parsed and checked before Ray starts.

Any ``hparams`` value, at any level of a spec (top, dataset, model, method, part), may be a search
space, written as a one-key mapping; ``sweeps.search`` maps it onto Tune's own space (no sampling code
here or there):

==========================  =============================================
``{loguniform: [lo, hi]}``   ``tune.loguniform(lo, hi)``, 0 < lo < hi
``{uniform: [lo, hi]}``      ``tune.uniform(lo, hi)``, lo < hi
``{quniform: [lo, hi, q]}``  ``tune.quniform(lo, hi, q)``, lo < hi, q > 0, lo and hi multiples of q
``{randint: [lo, hi]}``      ``tune.randint(lo, hi)`` (hi excluded), integers lo < hi
``{choice: [a, b, ...]}``    ``tune.choice([...])``, non-empty
``{grid: [a, b, ...]}``      ``tune.grid_search([...])`` (random search only), non-empty
==========================  =============================================

A setting that takes integers (``epochs``, ``batch_size``, ...: ``sweeps.spec.INTEGER_FIELDS``) may be
searched with ``randint``, ``choice`` or ``grid`` only: the other kinds sample real numbers.

The ``search:`` block::

    search:
      num_samples: 8            # sampled configurations per cell (grid values multiply them, as in Tune)
      algorithm: random         # random (Tune's variant generator), optuna (TPE), hyperopt (TPE)
      metric: val/wga           # any per-epoch validation or training metric a trial reports (a training
                                # metric needs eval_train: every, as it is NaN on the epochs not evaluated)
      mode: max                 # max or min (default: min for losses, else max)
      scheduler: asha           # fifo (every trial runs all its epochs) or asha (early stopping)
      grace_period: 1           # asha: epochs before a trial may be stopped
      reduction_factor: 2       # asha: keep the top 1/reduction_factor at each rung
      seeds: [0]                # seeds each configuration runs with while searching (default: the spec's)
      seed: 0                   # random state of the samplers, so a search is reproducible

A cell is one dataset x model x method (x ratio, x part tag) of the spec and gets its own search
(``SearchCell``); how the cells run on Tune is described in ``sweeps.search``. This module imports no Ray,
so ``groupsweep plan`` stays fast.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import re
from dataclasses import dataclass

from trainables.config import MAX_SEED
from trainables.errors import GroupsweepError, is_integer, is_real, positive_integer
from trainables.trial_dir import CELL_KEY, SAMPLE_KEY, SAMPLED_KEY

SPACE_KINDS = ("loguniform", "uniform", "quniform", "randint", "choice", "grid")
RANDINT_LIMIT = 2**63 - 1  # the largest bound of a randint space
# algorithm -> (Python package it needs, pip extra that installs it, Tune module, Tune class)
ALGORITHMS = {
    "random": None,
    "optuna": ("optuna", "optuna", "ray.tune.search.optuna", "OptunaSearch"),
    "hyperopt": ("hyperopt", "hyperopt", "ray.tune.search.hyperopt", "HyperOptSearch"),
}
SCHEDULERS = ("fifo", "asha")
SEARCH_KEYS = ("num_samples", "algorithm", "metric", "mode", "scheduler", "grace_period", "reduction_factor",
               "seeds", "seed")
MODES = ("max", "min")
# A metric of one group or class, and its index.
METRIC_INDEX = re.compile(r"acc_(group|class)_(\d+)$")
# Per-epoch metrics a trial reports that a search may optimise: validation and training splits only.
METRIC_PATTERN = re.compile(r"^(?:(?:val|train|train_subset)/(?:acc|avg_acc|wga|wca|loss|acc_group_\d+|acc_class_\d+)"
                            r"|optim/loss)$")


def _fail(where: str, message: str):
    raise GroupsweepError(f"{where}: {message}" if where else message)


# --- spaces -----------------------------------------------------------------------------------------

def is_space(value) -> bool:
    """Whether a spec value is a search space: a one-key mapping whose key is one of ``SPACE_KINDS``."""
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in SPACE_KINDS


def _numbers(where: str, kind: str, args, count: int, integer: bool = False) -> list:
    if not isinstance(args, list) or len(args) != count:
        _fail(where, f"{kind} takes a list of {count} numbers, got {args!r}")
    for value in args:
        if not (is_integer(value) if integer else is_real(value)):
            _fail(where, f"{kind} bound {value!r} is not {'an integer' if integer else 'a finite number'}")
        if integer and not -RANDINT_LIMIT <= value <= RANDINT_LIMIT:  # numpy draws 64-bit integers
            _fail(where, f"{kind} bound {value!r} is outside the 64-bit integers the searchers draw "
                         f"(from -2**63 + 1 to 2**63 - 1)")
    return args


def check_space(value, where: str) -> None:
    """Validate a space mapping (see the module docstring); a one-line ``GroupsweepError`` otherwise."""
    (kind, args), = value.items()
    if kind in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            _fail(where, f"{kind} needs a non-empty list of values, got {args!r}")
        return
    if kind == "quniform":
        lo, hi, q = _numbers(where, kind, args, 3)
        if not q > 0:
            _fail(where, f"quniform step q must be > 0, got {q!r}")
        if not math.isfinite(max(abs(lo), abs(hi)) / q):
            _fail(where, f"quniform step q={q!r} is too small for the bounds [{lo!r}, {hi!r}]")
        for bound in (lo, hi):  # Ray's quantized spaces refuse bounds off the grid of steps (as Tune checks)
            if not math.isclose(bound / q, round(bound / q)):
                _fail(where, f"quniform bound {bound!r} is not a multiple of the step {q!r}")
    else:
        lo, hi = _numbers(where, kind, args, 2, integer=kind == "randint")
    if kind == "loguniform" and lo <= 0:
        _fail(where, f"loguniform needs 0 < lo, got lo={lo!r}")
    if not lo < hi:
        _fail(where, f"{kind} needs lo < hi, got [{lo!r}, {hi!r}]")


def space_values(value) -> list:
    """Values that stand for a space when a trial config is validated: its bounds or every listed value."""
    (kind, args), = value.items()
    if kind in ("choice", "grid"):
        return list(args)
    if kind == "randint":
        return [args[0], args[1] - 1]
    return [args[0], args[1]]


def describe_space(value) -> str:
    """A space as ``plan`` shows it, e.g. ``loguniform(1e-05, 0.001)``."""
    (kind, args), = value.items()
    return f"{kind}({', '.join(f'{a:g}' if is_real(a) else repr(a) for a in args)})"


# --- the search block ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class SearchSettings:
    """A spec's ``search:`` block, validated (see the module docstring for each key)."""

    num_samples: int = 1
    algorithm: str = "random"
    metric: str = "val/wga"
    mode: str = "max"
    scheduler: str = "fifo"
    grace_period: int = 1
    reduction_factor: float = 2
    seeds: tuple | None = None
    seed: int = 0

    @property
    def adaptive(self) -> bool:
        """Whether configurations depend on earlier results (a model-based searcher)."""
        return self.algorithm != "random"


def parse_search(value, parse_seeds) -> SearchSettings | None:
    """The ``search:`` block of a spec (None when absent); ``parse_seeds(value, where)`` checks its seeds.

    Refuses, in one line: unknown keys, a bad number, an unknown algorithm or scheduler, a metric no trial
    reports (or a test metric: searching on the test split leaks it), and a searcher whose package is not
    installed (naming the pip extra that installs it).
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        _fail("search", f"expected a mapping, got {value!r}")
    for key in value:
        if key not in SEARCH_KEYS:
            _fail("search", f"unknown key {key!r}; allowed: {', '.join(SEARCH_KEYS)}")
    settings = dict(value)
    try:
        settings["num_samples"] = positive_integer("search.num_samples", settings.get("num_samples", 1))
        settings["grace_period"] = positive_integer("search.grace_period", settings.get("grace_period", 1))
    except GroupsweepError as error:
        _fail("", str(error))
    algorithm = settings.get("algorithm", "random")
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        _fail("search.algorithm", f"unknown search algorithm {algorithm!r}; choose one of: {', '.join(ALGORITHMS)}")
    check_searcher_installed(algorithm)
    metric = settings.get("metric", "val/wga")
    if not isinstance(metric, str) or not METRIC_PATTERN.match(metric):
        hint = " (searching on the test split would leak it into model selection)" \
            if isinstance(metric, str) and metric.startswith("test/") else ""
        _fail("search.metric", f"{metric!r} is not a metric trials report{hint}; use a validation or training "
                               "metric such as val/wga, val/wca, val/avg_acc, val/loss")
    mode = settings.get("mode", "min" if metric.endswith("loss") else "max")
    if mode not in MODES:
        _fail("search.mode", f"unknown mode {mode!r}; choose one of: max, min")
    scheduler = settings.get("scheduler", "fifo")
    if scheduler not in SCHEDULERS:
        _fail("search.scheduler", f"unknown scheduler {scheduler!r}; choose one of: {', '.join(SCHEDULERS)}")
    factor = settings.get("reduction_factor", 2)
    if not is_real(factor, 1, strict=True):
        _fail("search.reduction_factor", f"must be a number > 1, got {factor!r}")
    seed = settings.get("seed", 0)
    if not is_integer(seed, 0) or seed > MAX_SEED:
        _fail("search.seed", f"must be an integer from 0 to {MAX_SEED}, got {seed!r}")
    seeds = settings.get("seeds")
    return SearchSettings(num_samples=settings["num_samples"], algorithm=algorithm, metric=metric, mode=mode,
                          scheduler=scheduler, grace_period=settings["grace_period"], reduction_factor=float(factor),
                          seeds=None if seeds is None else tuple(parse_seeds(seeds, "search.seeds")), seed=seed)


def check_metric_index(settings: SearchSettings, cell_datasets: dict) -> None:
    """One-line ``GroupsweepError`` when the search metric names a group or class (``val/acc_group_N``,
    ``val/acc_class_N``) that a cell's dataset lacks: its trials never report it, so neither the searcher nor
    ASHA would have anything to compare. ``cell_datasets``: each cell's name and its loaded dataset (a
    ``GroupDataset``)."""
    match = METRIC_INDEX.search(settings.metric)
    if match is None:
        return
    kind, index = match.group(1), int(match.group(2))
    for name, dataset in cell_datasets.items():
        count = dataset.n_groups if kind == "group" else dataset.n_classes
        if index >= count:
            _fail("search.metric", f"{settings.metric!r} names {kind} {index}, but the dataset of cell {name} "
                                   f"has {count} {kind}s (0 to {count - 1}), so its trials never report it")


def check_metric_reported(settings: SearchSettings, cells) -> None:
    """One-line ``GroupsweepError`` when a search optimises a training-split metric (``train/*``,
    ``train_subset/*``) in a cell whose trials do not evaluate the training split every epoch: those
    metrics are NaN on the epochs ``eval_train`` skips, which a searcher or ASHA cannot compare. ``cells``:
    objects with the cell's fixed ``config``, its ``space`` and ``name`` (``SearchCell``)."""
    if not settings.metric.startswith(("train/", "train_subset/")):
        return
    for cell in cells:
        space = cell.space.get("eval_train")
        values = space_values(space) if space is not None else [cell.config.get("eval_train", "final")]
        skipping = [value for value in values if value not in ("every", 1)]
        if skipping:
            _fail("search.metric", f"{settings.metric!r} is reported only on the epochs that evaluate the training "
                                   f"split, but cell {cell.name} has eval_train {skipping[0]!r}; set eval_train: every "
                                   "(hparams) or search on a validation metric")


def check_searcher_installed(algorithm: str) -> None:
    """One-line ``GroupsweepError`` when the package a searcher needs is missing, naming the pip extra."""
    needs = ALGORITHMS[algorithm]
    if needs is not None and importlib.util.find_spec(needs[0]) is None:
        _fail("search.algorithm", f"algorithm {algorithm!r} needs the {needs[0]} package, which is not installed; "
                                  f"install it with: pip install 'groupsweep[{needs[1]}]'")


# --- cells -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SearchCell:
    """One cell of a search: its ``name`` (``<dataset>-<model>-<method><ratio>[-<tag>]``), its fixed trial
    ``config`` (every ``TrainConfig`` field; a sampled key holds a value of its space until sampled), its
    ``space`` (key -> space mapping, as written in the spec; empty for a cell that is not searched), the
    ``seeds`` each configuration runs with, its ``resources``, ``num_samples`` (1 for a cell without space),
    and for ``random`` the configurations drawn up front (``samples``: one dict of sampled values each;
    None until ``sweeps.search.search_plan`` draws them)."""

    name: str
    config: dict
    space: dict
    seeds: tuple
    resources: object
    samples: tuple | None = None
    num_samples: int = 1

    @property
    def n_configurations(self) -> int:
        """How many configurations the cell's search runs, each on every seed: ``num_samples`` times the
        product of its ``grid`` sizes (Tune's rule), or the number drawn."""
        if self.samples is not None:
            return len(self.samples)
        return self.num_samples * math.prod(len(value["grid"]) for value in self.space.values() if "grid" in value)

    @property
    def most_epochs(self) -> int:
        """The most epochs a trial of the cell runs: the largest value of a searched ``epochs``, else its epochs."""
        return max(space_values(self.space["epochs"])) if "epochs" in self.space else self.config["epochs"]

    def trial_config(self, sample: int, values: dict, seed: int) -> dict:
        """The flat config of configuration ``sample`` (sampled ``values``) on ``seed``, named and tagged."""
        config = {**copy.deepcopy(self.config), **values, "seed": seed}
        config["trial_name"] = trial_name(self.name, sample, seed, self.n_configurations)
        config[CELL_KEY], config[SAMPLE_KEY], config[SAMPLED_KEY] = self.name, sample, sorted(self.space)
        return config


def trial_name(cell: str, sample: int, seed: int, n_configurations: int) -> str:
    """``<cell>-hNN-s<seed>``: NN zero-padded to at least two digits (all of a cell's names sort in order)."""
    width = max(2, len(str(max(n_configurations - 1, 0))))
    return f"{cell}-h{sample:0{width}d}-s{seed}"


