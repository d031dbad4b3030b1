"""JTT, Just Train Twice (Liu et al., ICML 2021): retrain with the examples an early ERM model gets wrong upsampled.

1. The identification model is epoch T (``jtt_epochs``) of the trial's ERM counterpart: the same config
   with method ``none`` (``trainables.base_model``), taken from the sweep's ``none`` trial when it keeps
   a checkpoint of epoch T (``keep_checkpoints`` must reach back to T, and ``checkpoint_every`` must
   divide T unless T is the last epoch), else trained here for T epochs of that run.
2. The error set: the training examples that model misclassifies (no augmentation, eval mode).
3. The final model is an ERM run on the upsampled training set, in which every error example appears
   λ_up (``jtt_lambda_up``) times and every other example once: the plan lists each error index λ_up
   times and draws every entry once per epoch by plain shuffling, so an epoch has
   ``N + (λ_up − 1) · |errors|`` draws.

As the authors' code (``run_expt.py``) the upsampled set is a concatenation (the training set, then the
error set repeated), shuffled every epoch; it departs from it in one count: their ``--up_weight w``
concatenates w extra copies, so an error example appears w + 1 times, while here ``jtt_lambda_up`` is the
paper's λ_up, the total number of appearances (their w = λ_up − 1).

The error set and its source are saved in the trial directory (``JTT_ERRORS_FILE``) and reused by a
resumed trial. Group information: none (neither step reads a group label; the error set's count per
training group is saved for inspection only; selecting a JTT trial by validation worst-group accuracy,
as the paper tunes T and λ_up, uses validation groups).
"""

from __future__ import annotations

import logging

import numpy as np

from trainables import base_model
from trainables.balancing import BalancingPlan
from trainables.errors import GroupsweepError, positive_integer
from trainables.trial_dir import JTT_ERRORS_FILE, TrialDir

log = logging.getLogger("groupsweep.jtt")


def error_set(predicted, y) -> np.ndarray:
    """Sorted indices of the examples whose ``predicted`` class differs from their label ``y``."""
    predicted, y = np.asarray(predicted), np.asarray(y)
    if predicted.shape != y.shape:
        raise GroupsweepError(f"JTT: {len(predicted)} predictions for {len(y)} labels")
    return np.flatnonzero(predicted != y).astype(np.int64)


def upsampled_plan(n_train: int, errors, lambda_up: int) -> BalancingPlan:
    """The plan of JTT's final run: every training index once, each index of ``errors`` λ_up times in all;
    plain shuffling (each entry drawn once per epoch), ``num_samples = n_train + (λ_up − 1) · |errors|``."""
    lambda_up = positive_integer("jtt_lambda_up", lambda_up)
    errors = np.asarray(errors, dtype=np.int64)
    if len(errors) and (errors.min() < 0 or errors.max() >= n_train or len(np.unique(errors)) != len(errors)):
        raise GroupsweepError(f"JTT: the error set must be distinct indices in 0..{n_train - 1}")
    indices = np.sort(np.concatenate([np.arange(n_train, dtype=np.int64), np.repeat(errors, lambda_up - 1)]))
    return BalancingPlan(indices, None, None, len(indices))


def jtt_plan(config, dataset, trial_dir: str | None = None, experiment_dir: str | None = None, *,
             cpu: bool | None = None) -> BalancingPlan:
    """The training plan of a ``jtt`` trial (``config``, on its loaded ``dataset``): the upsampled error set.

    The identification model is epoch ``config.jtt_epochs`` of the trial's ERM counterpart
    (``base_model.base_model``: the matching ``none`` trial of ``experiment_dir``, else trained here).
    With ``trial_dir`` the error set is saved as ``JTT_ERRORS_FILE`` (``errors``, ``base_source``,
    ``jtt_epochs``, ``errors_per_group``), and a trial that finds that file (resumed, or analysed) reuses
    it. ``cpu=True`` forces the CPU.
    """
    if config.method != "jtt":
        raise GroupsweepError(f"jtt_plan is the plan of method 'jtt', not {config.method!r}")
    files = TrialDir(trial_dir) if trial_dir is not None else None
    n_train = len(dataset.splits["train"].y)
    if files is not None and files.exists(JTT_ERRORS_FILE):
        errors = files.read_npz(JTT_ERRORS_FILE, ("errors",))["errors"]
        log.info("JTT: reusing the error set saved in %s (%d examples)", trial_dir, len(errors))
        return upsampled_plan(n_train, errors, config.jtt_lambda_up)
    state, source = base_model.base_model(config, dataset, experiment_dir, cpu, epoch=config.jtt_epochs)
    _, logits = base_model.model_outputs(config, dataset, state, ("train",), config.eval_batch_size, cpu)["train"]
    if not np.isfinite(logits).all():
        raise GroupsweepError("JTT: the identification model's outputs are not all finite (it diverged); "
                              "no error set can be read from it")
    errors = error_set(logits.argmax(axis=1), dataset.splits["train"].y)
    per_group = np.bincount(dataset.groups("train")[errors], minlength=dataset.n_groups)
    log.info("JTT: %d of %d training examples misclassified at epoch %d (per training group: %s), each drawn "
             "%d times per epoch", len(errors), n_train, config.jtt_epochs, per_group.tolist(), config.jtt_lambda_up)
    if not len(errors):
        log.warning("JTT: the identification model misclassifies no training example; the final run is ERM")
    if files is not None:
        files.write_npz(JTT_ERRORS_FILE, {"errors": errors, "base_source": np.array(source),
                                          "jtt_epochs": np.array(config.jtt_epochs), "errors_per_group": per_group})
    return upsampled_plan(n_train, errors, config.jtt_lambda_up)
