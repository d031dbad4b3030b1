"""Running a search on Tune: one Tuner for every cell, one searcher and one scheduler per cell.

A cell is one dataset x model x method (x ratio, x part tag) of a spec (``sweeps.spaces``); each cell gets
its own search, because each method must get its own tuned configuration. All cells run in ONE Tuner:
its search algorithm is a ``CellSearch`` (a Tune ``Searcher``) that holds one searcher per cell — Tune's
``OptunaSearch`` / ``HyperOptSearch`` wrapped in Tune's ``Repeater`` (one sampled configuration, run once
per seed, scored by the mean over seeds), or for ``random`` the configurations drawn up front by Tune's
variant generator (``generate_variants``, exactly as ``BasicVariantGenerator`` draws them) — and hands out
each cell's trials until the cell has its configurations, each on every seed. (Tune's model-based
searchers take no ``grid_search``, and one searcher over all cells would tune one configuration for every
method; a Tuner per cell would run the cells one after another.) Its scheduler is a ``CellScheduler`` that
gives every cell its own ``AsyncHyperBandScheduler``, so ASHA compares only configurations of one method.
One Tuner keeps one experiment directory, concurrency across cells, and Tune's resume: the ``CellSearch``
state (every cell's searcher and ASHA rungs) is saved with the experiment, so a resumed search continues
each cell's searcher and rungs and ends with exactly its configurations per cell.

A searched trial is named ``<cell>-hNN-s<seed>`` (``NN``: the configuration's index in its cell) and its
config (``params.json``) holds every ``TrainConfig`` field, the sampled values included, plus
``trial_name``, ``_cell`` (the cell's name), ``_sample`` (NN) and ``_sampled`` (the sampled keys).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import math
import zlib
from dataclasses import dataclass

import numpy as np
from ray import cloudpickle, tune
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Repeater, Searcher
from ray.tune.search.variant_generator import generate_variants

from sweeps.spaces import ALGORITHMS, SearchCell, SearchSettings, check_searcher_installed
from trainables.trial_dir import CELL_KEY, STOPPED_FILE, TrialDir, join_location


def tune_domain(value):
    """The Tune space of a (checked) space mapping: ``tune.loguniform`` ... ``tune.grid_search``."""
    (kind, args), = value.items()
    if kind == "grid":
        return tune.grid_search(list(args))
    if kind == "choice":
        return tune.choice(list(args))
    return getattr(tune, kind)(*args)


def draw_samples(space: dict, num_samples: int, seed: int, cell: str) -> tuple:
    """``num_samples`` draws of ``space`` by Tune's variant generator (grid values expand each draw, as
    ``BasicVariantGenerator`` does), with a random state fixed by ``seed`` and the cell's name."""
    random_state = np.random.RandomState((seed * 1_000_003 + zlib.crc32(cell.encode())) % (2**32))
    unresolved = {key: tune_domain(value) for key, value in space.items()}
    samples = []
    for _ in range(num_samples):
        for _, resolved in generate_variants(copy.deepcopy(unresolved), random_state=random_state):
            samples.append({key: _plain(resolved[key]) for key in space})
    return tuple(samples)


def _plain(value):
    """A sampled value as a plain JSON number (numpy scalars become Python numbers)."""
    if isinstance(value, np.generic):
        return value.item()
    return value


# --- the searcher and the scheduler of a search ----------------------------------------------------------

class CellSearch(Searcher):
    """One Tune ``Searcher`` over every cell of a search: hands out each cell's trials (configuration ×
    seed) until every cell has its configurations, and routes results back to the cell's own searcher.

    Cells take turns, one configuration (all its seeds) at a time, so that adaptive searchers of every
    cell learn as the search goes. ``scheduler`` (a ``CellScheduler`` or None) is saved and restored with
    this searcher, since Tune checkpoints the search algorithm but not the scheduler.
    """

    def __init__(self, cells: list, settings: SearchSettings, scheduler: "CellScheduler | None" = None):
        super().__init__(metric=settings.metric, mode=settings.mode)
        self.cells = list(cells)
        self.settings = settings
        self.scheduler = scheduler
        self.searchers = {cell.name: self._cell_searcher(index, cell) for index, cell in enumerate(self.cells)}
        self.started = {cell.name: 0 for cell in self.cells}  # configurations begun per cell
        self.queue: list = []  # (cell name, sample, seed index) of the configuration being handed out
        self.turn = 0
        self.owner: dict = {}  # trial id -> cell name

    @property
    def total_trials(self) -> int:
        """Every trial the search will run: configurations x seeds, summed over cells."""
        return sum(cell.n_configurations * len(cell.seeds) for cell in self.cells)

    def _cell_searcher(self, index: int, cell: SearchCell):
        if not self.settings.adaptive or not cell.space:
            return None
        _, _, module, name = ALGORITHMS[self.settings.algorithm]
        searcher_class = getattr(importlib.import_module(module), name)
        space = {key: tune_domain(value) for key, value in cell.space.items()}
        seed_argument = "random_state_seed" if name == "HyperOptSearch" else "seed"  # the two searchers' names for it
        searcher = searcher_class(space=space, metric=self.settings.metric, mode=self.settings.mode,
                                  **{seed_argument: self.settings.seed + index})
        return Repeater(searcher, repeat=len(cell.seeds), set_index=True)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        """The cells carry their own spaces, metric and mode; Tune's ``param_space`` is empty."""
        return True

    def _next_configuration(self) -> bool:
        """Queue the next configuration's trials (all its seeds), taking cells in turn; False when done."""
        for _ in range(len(self.cells)):
            cell = self.cells[self.turn % len(self.cells)]
            self.turn += 1
            if self.started[cell.name] < cell.n_configurations:
                sample = self.started[cell.name]
                self.started[cell.name] += 1
                self.queue = [(cell.name, sample, index) for index in range(len(cell.seeds))]
                return True
        return False

    def suggest(self, trial_id: str):
        """The next trial's config, or ``Searcher.FINISHED`` when every cell has all its trials."""
        if not self.queue and not self._next_configuration():
            return Searcher.FINISHED
        name, sample, seed_index = self.queue.pop(0)
        cell = next(cell for cell in self.cells if cell.name == name)
        searcher = self.searchers[name]
        if searcher is not None:
            values = searcher.suggest(trial_id)
            values = {key: _plain(values[key]) for key in cell.space}
        elif cell.samples is not None:
            values = cell.samples[sample]
        else:
            values = {}
        self.owner[trial_id] = name
        return cell.trial_config(sample, values, cell.seeds[seed_index])

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        searcher = self.searchers.get(self.owner.get(trial_id))
        if searcher is not None:
            searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Pass the result on to the trial's cell searcher. A diverged trial (its last report has no metric) and
        one that failed for good (``error``: its retries spent) are reported as the worst value there is (-inf
        when the metric is maximised), so the configuration's mean over seeds is the worst too: as the analysis
        leaves it out, the searcher steers away from it (Tune's ``Repeater`` would otherwise average the seeds
        that did not diverge or fail, and a failed trial alone would never be scored)."""
        searcher = self.searchers.get(self.owner.get(trial_id))
        if searcher is None:
            return
        if error or (result and result.get("status") == "diverged"):
            result = {**(result or {}), self.settings.metric: -math.inf if self.settings.mode == "max" else math.inf}
        searcher.on_trial_complete(trial_id, result=result, error=error)

    def save(self, checkpoint_path: str) -> None:
        """Pickle every cell's searcher and progress, and the scheduler's state (with Ray's cloudpickle, as
        Tune's own searchers save themselves: HyperOpt's search domain holds a lambda)."""
        state = {key: value for key, value in self.__dict__.items() if key != "scheduler"}
        state["scheduler_state"] = self.scheduler.get_state() if self.scheduler is not None else None
        with open(checkpoint_path, "wb") as stream:
            cloudpickle.dump(state, stream)

    def restore(self, checkpoint_path: str) -> None:
        """Continue from what ``save`` wrote (Tune calls it when a search resumes)."""
        with open(checkpoint_path, "rb") as stream:
            state = cloudpickle.load(stream)
        scheduler_state = state.pop("scheduler_state")
        self.__dict__.update(state)
        if self.scheduler is not None and scheduler_state is not None:
            self.scheduler.set_state(scheduler_state)


class CellScheduler(TrialScheduler):
    """Tune's ``AsyncHyperBandScheduler`` once per cell (ASHA compares only trials of one cell), or FIFO.

    Trials run in submission order; each cell's ASHA stops a trial at a rung (epochs grace_period,
    grace_period x reduction_factor, ...) when its metric is outside the top 1/reduction_factor of that
    cell's trials at the rung. ``max_t`` is the most epochs of the cell (the largest of a searched ``epochs``).
    A trial stopped before its own last epoch gets the trial directory's ``STOPPED_FILE`` (when
    ``experiment_dir`` is given), so analysis can tell it from an interrupted one.
    """

    def __init__(self, cells: list, settings: SearchSettings, experiment_dir: str | None = None):
        super().__init__()
        self.settings = settings
        self.experiment_dir = experiment_dir
        self.epochs = {cell.name: cell.most_epochs for cell in cells}  # ASHA's max_t: a searched epochs' largest
        self.by_cell: dict = {}
        self.added: dict = {}
        self.stopped = 0
        self.order = FIFOScheduler()

    def _cell(self, trial):
        name = trial.config[CELL_KEY]
        if name not in self.by_cell:
            self.by_cell[name] = AsyncHyperBandScheduler(
                time_attr="epoch", metric=self.settings.metric, mode=self.settings.mode, max_t=self.epochs[name],
                grace_period=min(self.settings.grace_period, self.epochs[name]),
                reduction_factor=self.settings.reduction_factor)
            self.added[name] = set()
        if trial.trial_id not in self.added[name]:
            self.by_cell[name].on_trial_add(None, trial)
            self.added[name].add(trial.trial_id)
        return self.by_cell[name]

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True

    def on_trial_add(self, tune_controller, trial) -> None:
        self._cell(trial)

    def on_trial_error(self, tune_controller, trial) -> None:
        self._cell(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get("status") == "diverged":
            return TrialScheduler.CONTINUE  # the trial ends by itself; a diverged row has no metric
        decision = self._cell(trial).on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and result.get("epoch", 0) < trial.config["epochs"]:
            self.stopped += 1
            if self.experiment_dir is not None:
                trial_dir = TrialDir(join_location(self.experiment_dir, trial.config["trial_name"]))
                trial_dir.write_json(STOPPED_FILE, {"epoch": int(result["epoch"])})
        return decision

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        scheduler = self._cell(trial)
        if result and math.isfinite(result.get(self.settings.metric, math.nan)):
            scheduler.on_trial_complete(tune_controller, trial, result)
        self.added[trial.config[CELL_KEY]].discard(trial.trial_id)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._cell(trial).on_trial_remove(tune_controller, trial)
        self.added[trial.config[CELL_KEY]].discard(trial.trial_id)

    def choose_trial_to_run(self, tune_controller):
        return self.order.choose_trial_to_run(tune_controller)

    def debug_string(self) -> str:
        return f"Using ASHA per cell: {len(self.by_cell)} cells, {self.stopped} trials stopped early"

    def get_state(self) -> dict:
        """Every cell's ASHA (its rungs) and which trials each one knows."""
        return {"by_cell": self.by_cell, "added": self.added, "stopped": self.stopped}

    def set_state(self, state: dict) -> None:
        """Restore what ``get_state`` returned."""
        self.by_cell, self.added, self.stopped = state["by_cell"], state["added"], state["stopped"]


@dataclass
class SearchPlan:
    """What the launcher needs to run a search: the searcher, the scheduler (None: FIFO) and the trial count."""

    searcher: CellSearch
    scheduler: CellScheduler | None
    total_trials: int


def early_stopping_warning(cells: list, settings: SearchSettings) -> str | None:
    """A ``warning:`` line when ``settings`` stop trials early (ASHA) while some cell runs each configuration
    with several seeds, else None. ASHA judges every trial on its own, so it may stop one seed of a
    configuration and not another; such a configuration is then no candidate at the final epoch (Tune's own
    advice for repeated trials is to run no early-stopping scheduler with them)."""
    seeds = max((len(cell.seeds) for cell in cells), default=1)
    if settings.scheduler != "asha" or seeds < 2:
        return None
    return (f"warning: search scheduler 'asha' with {seeds} search seeds judges each seed's trial on its own: a "
            "configuration with one stopped seed is no candidate at the final epoch; use one search seed "
            "(search: {seeds: [1]}) or scheduler 'fifo'")


def search_plan(cells: list, settings: SearchSettings, experiment_dir: str | None = None) -> SearchPlan:
    """The ``CellSearch`` and ``CellScheduler`` of a search over ``cells`` (for ``random``, each cell's
    configurations are drawn here, reproducibly, by ``draw_samples``); ``experiment_dir``: the sweep's
    directory, where the scheduler marks the trials it stops early."""
    check_searcher_installed(settings.algorithm)
    if not settings.adaptive:
        cells = [dataclasses.replace(cell, samples=draw_samples(cell.space, cell.num_samples, settings.seed, cell.name)
                                     if cell.space else ({},))
                 for cell in cells]
    scheduler = CellScheduler(cells, settings, experiment_dir) if settings.scheduler == "asha" else None
    searcher = CellSearch(cells, settings, scheduler)
    return SearchPlan(searcher=searcher, scheduler=scheduler, total_trials=searcher.total_trials)
