"""DFR, Deep Feature Reweighting (Kirichenko et al., ICLR 2023): retrain the base ERM model's last layer on
group-balanced data.

Following the authors' ``dfr_evaluate_spurious.py`` (their defaults: no class weights, features standardised):

1. The base model is the trial's config run with method ``none`` (``trainables.base_model``): the sweep's
   ``none`` trial's final checkpoint when it has finished, else trained here. Its penultimate features
   (``GroupModel.features``, no augmentation) of the train, val and test splits are extracted.
2. The regularisation strength C is chosen from ``dfr_c_grid`` (the authors' ``[1, 0.7, 0.3, 0.1, 0.07,
   0.03, 0.01]``) by worst-group accuracy (ties: the first in the grid), each candidate an L1 logistic
   regression (scikit-learn, ``liblinear``):
   - ``val_tr`` (DFR^Val_Tr): the validation split is cut in two random halves; the regression is fitted
     on a group-balanced subset of one (features standardised on that subset) and scored on the other;
   - ``tr_tr`` (DFR^Tr_Tr): fitted on a group-balanced subset of the training split (features
     standardised on the whole training split) and scored on the validation split.
3. The final last layer is the average of the coefficients and intercepts of ``dfr_models`` regressions
   with that C (``dfr_ensemble``; null: the authors' 20 for ``val_tr``, 10 for ``tr_tr``), each fitted on
   a fresh group-balanced subset of the whole validation split (``val_tr``) or training split
   (``tr_tr``), features standardised with the training split's mean and scale.

A group-balanced subset keeps, of every group present, as many examples as the smallest present group
has, uniformly at random. Every random draw (halves, subsets, liblinear's) is seeded from the trial's
seed, so a DFR trial is deterministic. Departures from the authors' code: groups absent from a split are
left out (their code would balance to zero examples); liblinear runs its default 100 iterations also
when tuning ``tr_tr`` (their code caps that one at 20).

How a DFR trial reports: as one epoch, numbered ``epochs`` (the base run's last epoch, whose model it
retrains), with the same metrics as every other trial's last epoch (train/*, train_subset/* over the whole
training split, val/*, test/*), its val/test predictions and a checkpoint whose model is the base model
with the retrained head (the standardisation folded into the linear layer), so the trial is complete,
selectable by every criterion, and its saved model predicts exactly what was reported. The ``best``
epoch rule then has that one epoch to choose. A killed DFR trial has no checkpoint and reruns, with
the same result. ``optim/loss`` and ``optim/lr`` are NaN (no gradient step); ``dfr/c`` is the chosen C.

Selection caveat: in ``val_tr`` the final regressions were fitted on the validation split, so a DFR
trial's ``val/*`` metrics (and model selection by them against other methods) are optimistic; the paper
tunes C on the held-out half only, as step 2 does.

Group information: ``val`` for ``val_tr`` (validation groups for balancing and tuning); ``tr_tr`` uses
training groups too (balancing) and validation groups (tuning) — the variant is in the trial's
``dfr_variant`` parameter. The retrained layer, its C, the grid's scores and the base model's source
are saved in the trial directory (``DFR_FILE``).
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from trainables import base_model
from trainables.balancing import BalancingPlan, make_plan
from trainables.builders import build_model_and_inputs
from trainables.errors import GroupsweepError
from trainables.finetune import EpochResult, output_metrics, split_labels
from trainables.metrics import group_accuracies
from trainables.trial_dir import DFR_FILE, TrialDir

log = logging.getLogger("groupsweep.dfr")

# Random streams of one seed: the validation halves, the tuning subset, and the ensemble's subsets.
_HALVES_STREAM, _TUNE_STREAM, _ENSEMBLE_STREAM = 0, 1, 2


def balanced_subset(groups, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a group-balanced subset: of every group present in ``groups``, ``min_g n_g``
    examples drawn uniformly without replacement by ``rng``."""
    groups = np.asarray(groups, dtype=np.int64)
    present, counts = np.unique(groups, return_counts=True)
    if not len(present):
        raise GroupsweepError("DFR: no example to balance")
    size = int(counts.min())
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(groups == g))[:size] for g in present]))


def l1_logistic_regression(c: float, seed: int):
    """An unfitted scikit-learn ``LogisticRegression`` with an L1 penalty of strength 1/``c``, the
    ``liblinear`` solver and ``random_state=seed`` (the authors' ``penalty="l1"``; scikit-learn >= 1.8
    spells it ``l1_ratio=1``, earlier versions only ``penalty="l1"``)."""
    # deferred: scikit-learn loads only in DFR trials
    from sklearn.linear_model import LogisticRegression

    penalty = {"penalty": "l1"}
    if inspect.signature(LogisticRegression).parameters["penalty"].default == "deprecated":
        penalty = {"l1_ratio": 1.0}
    return LogisticRegression(C=c, solver="liblinear", random_state=seed, **penalty)


def fit_regression(x, y, c: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(coef (K', D), intercept (K',), classes (K,))`` of ``l1_logistic_regression(c, seed)`` fitted on
    ``(x, y)``, ``classes`` being the class ids present in ``y`` (sorted): for two classes one row (the decision
    for the larger class), for more one row per class, each its own one-vs-rest regression (what ``liblinear``
    did for several classes before scikit-learn 1.8 refused them)."""
    classes = np.unique(y)
    if len(classes) == 2:
        model = l1_logistic_regression(c, seed).fit(x, y)
        return model.coef_, model.intercept_, classes
    rows = [l1_logistic_regression(c, seed).fit(x, (y == k).astype(np.int64)) for k in classes]
    return np.vstack([row.coef_ for row in rows]), np.concatenate([row.intercept_ for row in rows]), classes


def predict(x, coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The class ids a regression ``(coef, intercept)`` fitted on ``classes`` predicts for ``x`` (scikit-learn's
    rule: for one row the larger class where the decision is positive, else the class of the rows' argmax)."""
    decision = x @ coef.T + intercept
    rows = (decision[:, 0] > 0).astype(np.int64) if coef.shape[0] == 1 else decision.argmax(axis=1)
    return np.asarray(classes)[rows]


def _scaler(x):
    """scikit-learn's ``StandardScaler`` fitted on ``x``."""
    # deferred: scikit-learn loads only in DFR trials
    from sklearn.preprocessing import StandardScaler

    return StandardScaler().fit(x)


def worst_group_accuracy(predicted, y, groups) -> float:
    """The lowest accuracy over the groups present in ``groups``."""
    groups = np.asarray(groups, dtype=np.int64)
    accuracy, counts = group_accuracies(np.asarray(y), np.asarray(predicted), groups, int(groups.max()) + 1)
    return float(accuracy[counts > 0].min())


@dataclass
class LastLayer:
    """DFR's retrained last layer: the averaged regression (``coef`` (K', D), ``intercept`` (K',); K' = 1 for
    two classes, else one-vs-rest rows) on features standardised by ``mean`` and ``scale``; ``c``: the
    chosen C; ``c_scores``: the tuning worst-group accuracy of every C of the grid; ``n_retrain``: the
    size of each balanced retraining subset; ``classes``: the class ids of the retraining data."""

    coef: np.ndarray
    intercept: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    c: float
    c_scores: np.ndarray
    n_retrain: int
    classes: np.ndarray

    def linear(self, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """``(weight (n_classes, D), bias (n_classes,))`` of the linear layer on raw features whose argmax is
        the regression's prediction: the standardisation folded in, and for two classes the logits
        ``(0, decision)``. Raises ``GroupsweepError`` when the retraining data lacked one of the ``n_classes``
        classes (no layer can then predict it)."""
        if not np.array_equal(self.classes, np.arange(n_classes)):
            raise GroupsweepError(f"DFR: the retraining data holds the classes {self.classes.tolist()} of "
                                  f"{n_classes}; every class needs examples in it")
        weight = self.coef / self.scale
        bias = self.intercept - weight @ self.mean
        if weight.shape[0] == 1 and n_classes == 2:
            weight = np.vstack([np.zeros_like(weight), weight])
            bias = np.concatenate([[0.0], bias])
        return weight, bias


def fit_last_layer(features: dict, y: dict, groups: dict, variant: str, c_grid, n_models: int,
                   seed: int) -> LastLayer:
    """DFR's last layer from the ``features``, labels ``y`` and ``groups`` of the ``train`` and ``val``
    splits (numpy arrays keyed by split): C chosen on the ``variant``'s tuning data, then ``n_models``
    regressions on balanced subsets averaged (see the module docstring); deterministic in ``seed``."""
    retrain = "val" if variant == "val_tr" else "train"
    if variant == "val_tr":
        order = np.random.default_rng([seed, _HALVES_STREAM]).permutation(len(y["val"]))
        held_out, fit_half = order[:len(order) // 2], order[len(order) // 2:]
        subset = fit_half[balanced_subset(groups["val"][fit_half], np.random.default_rng([seed, _TUNE_STREAM]))]
        scaler = _scaler(features["val"][subset])
        tune_x, tune_y = features["val"][subset], y["val"][subset]
        score_x, score_y, score_g = features["val"][held_out], y["val"][held_out], groups["val"][held_out]
    else:
        subset = balanced_subset(groups["train"], np.random.default_rng([seed, _TUNE_STREAM]))
        scaler = _scaler(features["train"])
        tune_x, tune_y = features["train"][subset], y["train"][subset]
        score_x, score_y, score_g = features["val"], y["val"], groups["val"]
    scores = []
    for c in c_grid:
        coef, intercept, classes = fit_regression(scaler.transform(tune_x), tune_y, c, seed)
        scores.append(worst_group_accuracy(predict(scaler.transform(score_x), coef, intercept, classes), score_y,
                                           score_g))
    best = float(c_grid[int(np.argmax(scores))])
    log.info("DFR (%s): C=%g (tuning worst-group accuracies %s)", variant, best,
             ", ".join(f"C={c:g}: {s:.3f}" for c, s in zip(c_grid, scores)))

    scaler = _scaler(features["train"])
    coefs, intercepts = [], []
    for member in range(n_models):
        subset = balanced_subset(groups[retrain], np.random.default_rng([seed, _ENSEMBLE_STREAM, member]))
        coef, intercept, classes = fit_regression(scaler.transform(features[retrain][subset]), y[retrain][subset],
                                                  best, seed)
        coefs.append(coef)
        intercepts.append(intercept)
    return LastLayer(coef=np.mean(coefs, axis=0), intercept=np.mean(intercepts, axis=0), mean=scaler.mean_,
                     scale=scaler.scale_, c=best, c_scores=np.asarray(scores), n_retrain=len(subset), classes=classes)


def dfr_plan(config, dataset) -> BalancingPlan:
    """The training plan behind a DFR trial's features: its base ERM run's (every training example once)."""
    return make_plan(dataset.splits["train"].y, dataset.groups("train"), "none", None, config.seed,
                     n_classes=dataset.n_classes)


def run_dfr(config, dataset, on_epoch, *, trial_dir: str | None = None, experiment_dir: str | None = None,
            cpu: bool | None = None) -> list[dict]:
    """Run DFR for the trial ``config`` on its loaded ``dataset`` and hand its one epoch (numbered
    ``config.epochs``) to ``on_epoch`` as an ``EpochResult`` with a checkpoint; return ``[metrics]``.

    The base model comes from ``base_model.base_model`` (the sweep's finished ``none`` trial in
    ``experiment_dir``, else trained here); with ``trial_dir`` the last layer, C, the grid's scores and the
    base model's source are written to ``DFR_FILE`` first. Raises ``GroupsweepError`` when the base model's
    features are not finite.
    """
    if config.method != "dfr":
        raise GroupsweepError(f"run_dfr runs method 'dfr', not {config.method!r}")
    state, source = base_model.base_model(config, dataset, experiment_dir, cpu)
    started = time.perf_counter()
    outputs = base_model.model_outputs(config, dataset, state, ("train", "val", "test"), config.eval_batch_size, cpu)
    features = {split: features for split, (features, _) in outputs.items()}
    if not all(np.isfinite(values).all() for values in features.values()):
        raise GroupsweepError("DFR: the base model's features are not all finite (it diverged); no last layer "
                              "can be fitted on them")
    y = {split: dataset.splits[split].y for split in features}
    groups = {split: dataset.groups(split) for split in features}
    layer = fit_last_layer(features, y, groups, config.dfr_variant, config.dfr_c_grid, config.dfr_models, config.seed)
    weight, bias = (torch.tensor(value, dtype=torch.float32) for value in layer.linear(dataset.n_classes))
    train_seconds = time.perf_counter() - started

    started = time.perf_counter()
    evaluated = {split: (torch.nn.functional.linear(torch.from_numpy(features[split]), weight, bias),
                         torch.from_numpy(np.asarray(y[split], dtype=np.int64))) for split in ("train", "val", "test")}
    plan = dfr_plan(config, dataset)
    metrics, predictions = output_metrics(evaluated, dataset, plan)
    model, _ = build_model_and_inputs(config, dataset)
    model.load_state_dict(state)
    model.head.weight.data.copy_(weight)
    model.head.bias.data.copy_(bias)
    metrics.update({
        "epoch": config.epochs, "optim/loss": math.nan, "optim/lr": math.nan, "time/train_s": train_seconds,
        "time/eval_s": time.perf_counter() - started, "model/num_parameters": model.num_parameters,
        "data/num_train_kept": int(len(np.unique(plan.indices))), "dfr/c": layer.c, "dfr/n_retrain": layer.n_retrain,
    })
    if trial_dir is not None:
        TrialDir(trial_dir).write_npz(DFR_FILE, {
            "coef": layer.coef, "intercept": layer.intercept, "mean": layer.mean, "scale": layer.scale,
            "c": np.array(layer.c), "c_grid": np.array(config.dfr_c_grid), "c_scores": layer.c_scores,
            "variant": np.array(config.dfr_variant), "n_models": np.array(config.dfr_models),
            "base_source": np.array(source),
        })
    final_state = {"epoch": config.epochs, "config": config.to_dict(),
                   "model": {key: value.detach().clone() for key, value in model.state_dict().items()}}
    on_epoch(EpochResult(epoch=config.epochs, metrics=metrics, predictions=predictions, labels=split_labels(dataset),
                         state=lambda: final_state, checkpoint=True))
    return [metrics]
