"""The training plan of a run, in one place: which training examples each epoch draws, and how; and what
a run of a method does with it (``train_run``).

``training_plan`` is what the trainable, ``groupsweep train`` and spectral feature extraction call, so
all three see the same examples: class-balancing methods get ``balancing.make_plan`` (a function of the
labels, method, ratio and seed); data-selection methods get theirs from a trained base model:
``d3m.d3m_plan`` for ``d3m`` / ``auto-d3m`` (the examples kept after D3M's removal) and ``jtt.jtt_plan``
for ``jtt`` (the upsampled error set), each reused from the trial directory once saved there; ``dfr``
gets its base ERM run's plan (``dfr.dfr_plan``), on which the features it retrains on were learned.
``train_run`` runs a config: ``finetune`` with its training plan, or for ``dfr`` the last-layer
retraining of ``dfr.run_dfr``; the trainable and ``groupsweep train`` both call it.
"""

from __future__ import annotations

from trainables.balancing import D3M_METHODS, BalancingPlan, make_plan
from trainables.config import TrainConfig
from trainables.d3m import d3m_plan
from trainables.data import GroupDataset
from trainables.dfr import dfr_plan, run_dfr
from trainables.finetune import finetune
from trainables.jtt import jtt_plan


def training_plan(config: TrainConfig, dataset: GroupDataset, *, trial_dir: str | None = None,
                  experiment_dir: str | None = None, cpu: bool | None = None) -> BalancingPlan:
    """The ``BalancingPlan`` that a run of ``config`` on ``dataset`` trains with.

    ``trial_dir`` / ``experiment_dir`` (paths or storage URIs) matter only for data-selection methods:
    D3M and JTT save their selection in the trial directory and reuse it when found there, and take their
    base model from the sweep's matching ``none`` trial in the experiment directory
    (``trainables.base_model``); ``cpu=True`` keeps any base-model training on the CPU. Raises
    ``GroupsweepError`` on a bad method or ratio.
    """
    if config.method in D3M_METHODS:
        return d3m_plan(config, dataset, trial_dir, experiment_dir, cpu=cpu)
    if config.method == "jtt":
        return jtt_plan(config, dataset, trial_dir, experiment_dir, cpu=cpu)
    if config.method == "dfr":
        return dfr_plan(config, dataset)
    return make_plan(dataset.splits["train"].y, dataset.groups("train"), config.method, config.ratio, config.seed,
                     n_classes=dataset.n_classes)


def train_run(config: TrainConfig, dataset: GroupDataset, on_epoch, *, resume_state: dict | None = None,
              cpu: bool | None = None, trial_dir: str | None = None, experiment_dir: str | None = None) -> list[dict]:
    """Run (or continue from ``resume_state``) ``config`` on ``dataset``, calling ``on_epoch`` with every
    ``EpochResult``; return the per-epoch metrics. ``dfr``: ``dfr.run_dfr`` (one result, epoch
    ``config.epochs``; a resume state, which only a finished DFR run has, was handled by the caller);
    every other method: ``finetune`` with ``training_plan``. ``trial_dir`` / ``experiment_dir`` and
    ``cpu`` as for ``training_plan``. Raises what ``finetune`` raises (``DivergenceError``,
    ``GroupsweepError``)."""
    if config.method == "dfr":
        return run_dfr(config, dataset, on_epoch, trial_dir=trial_dir, experiment_dir=experiment_dir, cpu=cpu)
    plan = training_plan(config, dataset, trial_dir=trial_dir, experiment_dir=experiment_dir, cpu=cpu)
    return finetune(config, on_epoch=on_epoch, resume_state=resume_state, cpu=cpu, dataset=dataset, plan=plan)
