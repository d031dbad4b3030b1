"""D3M and AUTO-D3M (Jain et al., NeurIPS 2024): remove the training examples that drive worst-group error.

From TRAK scores τ(z)_i of the base model (``trainables.attribution``), D3M computes

- group coefficients ``τ_g = mean over validation examples z of group g of τ(z)`` (a vector over training
  examples), for every group present in the validation split;
- alignment ``A_i = Σ_g w_g τ_g(i)`` with ``w = softmax(β · L_g)`` over the present groups, ``L_g`` the base
  model's mean validation cross-entropy on group g (β = 1 in the paper);
- the removed set: the examples with ``A_i < 0`` (the paper's default) or the k lowest, never more than
  ``max_removed`` of any class (default 0.5, groupsweep's safeguard; 1 is the paper's uncapped rule, and
  no class is ever emptied), and retrains plain ERM on the rest.

AUTO-D3M needs no group label: within each class, the validation examples' attribution vectors τ(z) are
projected on their top principal component; the side holding ``pseudo_fraction`` (35%) of the class with
the higher base-model loss becomes the pseudo-minority group (the paper's "lower performing group"), the
rest the pseudo-majority; then D3M runs with those 2 · n_classes pseudo-groups.

Guards (the authors' code could turn a group-loss lookup into NaN and then remove everything): a
non-finite gradient, probability, loss or score raises a one-line ``GroupsweepError``; a group absent
from the validation split is left out of the softmax (logged); the per-class cap holds whatever the scores.

``d3m_plan`` runs the whole selection for one sweep trial (base model, scores, files, plan); it is
reached through ``trainables.plans.training_plan``. Its options type, ``D3MOptions``, lives with the other
config types in ``trainables.config``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
from dataclasses import dataclass

import numpy as np
import torch

from trainables import base_model
from trainables.attribution import GaussianProjector, featurize, gradient_dimension, trak
from trainables.balancing import D3M_METHODS, BalancingPlan
from trainables.builders import build_model_and_inputs
from trainables.config import REMOVE_NEGATIVE, D3MOptions, TrainConfig
from trainables.errors import GroupsweepError, choose
from trainables.trial_dir import D3M_SCORES_FILE, TrialDir, join_location, write_atomically

log = logging.getLogger("groupsweep.d3m")

# Extra ensemble models (t = 1 .. T-1) are ERM runs with seed ``seed + t * SEED_STRIDE``.
SEED_STRIDE = 10_000
# The sweep's folder of those models' final states (``ensemble_member``), one file per run.
ENSEMBLE_DIR = "groupsweep_d3m_ensemble"


# ---------------------------------------------------------------------------------------------
# Selection (numpy): group coefficients, alignment, removal, pseudo-groups.
# ---------------------------------------------------------------------------------------------

@dataclass
class D3MSelection:
    """The outcome of D3M on one training split.

    ``groups``: the validation groups used (present ones, ascending); ``group_loss`` / ``group_weight``:
    their base-model loss and softmax weight; ``group_scores``: (n_train, len(groups)) coefficients τ_g;
    ``alignment``: A (n_train,); ``removed`` / ``kept``: sorted training indices.
    """

    groups: np.ndarray
    group_loss: np.ndarray
    group_weight: np.ndarray
    group_scores: np.ndarray
    alignment: np.ndarray
    removed: np.ndarray
    kept: np.ndarray


def group_weights(group_loss, beta: float) -> np.ndarray:
    """``softmax(beta · group_loss)``; one-line ``GroupsweepError`` if a loss is not finite."""
    group_loss = np.asarray(group_loss, dtype=np.float64)
    if not np.isfinite(group_loss).all():
        raise GroupsweepError(f"D3M: validation group losses {group_loss.tolist()} are not all finite; "
                              f"the base model is unusable and no example is removed")
    logits = beta * group_loss
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()


def removal(alignment, y, remove, max_removed: float, n_classes: int) -> np.ndarray:
    """Sorted indices of the examples to remove, lowest alignment first.

    At most ``floor(max_removed · n_c)`` examples of class c are removed (the lowest ones). ``remove``:
    ``negative`` removes every A_i < 0 that fits under its class's cap; k removes the k lowest that fit
    (fewer only when the caps leave fewer than k). ``max_removed = 1`` is the paper's rule, with no cap;
    a removal that would then empty a class raises a one-line ``GroupsweepError``, as do non-finite
    alignments.
    """
    alignment = np.asarray(alignment, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if not np.isfinite(alignment).all():
        bad = int((~np.isfinite(alignment)).sum())
        raise GroupsweepError(f"D3M: {bad} of {len(alignment)} alignment scores are not finite; no example is removed")
    order = np.argsort(alignment, kind="stable")
    wanted = int((alignment < 0).sum()) if remove == REMOVE_NEGATIVE else min(int(remove), len(order))
    sizes = np.bincount(y, minlength=n_classes)
    caps = np.floor(max_removed * sizes).astype(np.int64)
    taken = np.zeros(n_classes, dtype=np.int64)
    removed = []
    for index in order[:wanted] if remove == REMOVE_NEGATIVE else order:
        if len(removed) == wanted:
            break
        c = y[index]
        if taken[c] < caps[c]:
            taken[c] += 1
            removed.append(index)
    emptied = np.flatnonzero((sizes > 0) & (taken == sizes))
    if len(emptied):
        raise GroupsweepError(f"D3M would remove every training example of class(es) {emptied.tolist()}; "
                              f"allowed: a removal that keeps every class (set max_removed below 1)")
    if len(removed) < wanted:
        log.warning("D3M: %d examples qualified for removal but at most %g of each class may go; removing %d",
                    wanted, max_removed, len(removed))
    return np.sort(np.asarray(removed, dtype=np.int64))


def d3m_select(scores, train_y, val_groups, val_loss, options: D3MOptions, n_classes: int,
               n_groups: int) -> D3MSelection:
    """Run D3M from TRAK ``scores`` (training examples x validation examples, a ``TrakScores``).

    ``val_groups``: the group (or pseudo-group) of every validation example, in 0..n_groups-1;
    ``val_loss``: the base model's per-example validation loss. Groups absent from the validation split
    get no coefficient: the softmax runs over the present groups only (logged).
    """
    val_groups = np.asarray(val_groups, dtype=np.int64)
    val_loss = np.asarray(val_loss, dtype=np.float64)
    outside = np.unique(val_groups[(val_groups < 0) | (val_groups >= n_groups)])
    if len(outside):
        raise GroupsweepError(f"D3M: validation group(s) {outside.tolist()} are out of range; "
                              f"allowed: 0..{n_groups - 1}")
    counts = np.bincount(val_groups, minlength=n_groups)
    present = np.flatnonzero(counts)
    missing = np.flatnonzero(counts == 0)
    if len(missing):
        log.warning("D3M: the validation split has no example of group(s) %s; their coefficients are left out "
                    "and the weights renormalised over groups %s", missing.tolist(), present.tolist())
    group_loss = np.array([val_loss[val_groups == g].mean() for g in present])
    weights = group_weights(group_loss, options.beta)
    means = (val_groups[:, None] == present[None, :]) / counts[present][None, :]
    group_scores = scores.combine(means)
    if not np.isfinite(group_scores).all():
        raise GroupsweepError("D3M: group coefficients are not all finite; no example is removed")
    alignment = group_scores @ weights
    removed = removal(alignment, train_y, options.remove, options.max_removed, n_classes)
    kept = np.setdiff1d(np.arange(len(alignment)), removed)
    return D3MSelection(groups=present, group_loss=group_loss, group_weight=weights, group_scores=group_scores,
                     alignment=alignment, removed=removed, kept=kept)


def pseudo_groups(scores, val_y, val_loss, fraction: float, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """AUTO-D3M's pseudo-groups of the validation examples and their principal-component coordinates.

    For each class c: the attribution vectors of its validation examples are projected on their top
    principal component; the ``round(fraction · n_c)`` examples at one end (clipped to 1..n_c − 1) form
    pseudo-group ``2c + 1`` and the others ``2c``. The end is the "lower performing" one: the one whose
    base-model mean loss exceeds that of the rest of the class by more. The
    returned coordinates are oriented so that the pseudo-minority lies at the low end. A class with
    fewer than two validation examples is one group ``2c``.
    """
    val_y = np.asarray(val_y, dtype=np.int64)
    val_loss = np.asarray(val_loss, dtype=np.float64)
    groups = 2 * val_y
    projection = np.zeros(len(val_y))
    for c in range(n_classes):
        rows = np.flatnonzero(val_y == c)
        if len(rows) < 2:
            log.warning("AUTO-D3M: class %d has %d validation example(s); it is one pseudo-group", c, len(rows))
            continue
        coordinate = scores.principal_projection(rows)
        size = int(min(max(round(fraction * len(rows)), 1), len(rows) - 1))
        if not np.any(coordinate):
            log.warning("AUTO-D3M: the attribution vectors of class %d's validation examples do not vary; its "
                        "pseudo-minority is the first %d examples, not a found group", c, size)
        ascending, descending = np.argsort(coordinate, kind="stable"), np.argsort(-coordinate, kind="stable")
        if _loss_gap(val_loss[rows], descending[:size]) > _loss_gap(val_loss[rows], ascending[:size]):
            coordinate, ascending = -coordinate, descending
        groups[rows[ascending[:size]]] = 2 * c + 1
        projection[rows] = coordinate
    return groups, projection


def _loss_gap(loss: np.ndarray, members: np.ndarray) -> float:
    """Mean loss of ``members`` minus the mean loss of the others."""
    inside = np.zeros(len(loss), dtype=bool)
    inside[members] = True
    return float(loss[inside].mean() - loss[~inside].mean())


# ---------------------------------------------------------------------------------------------
# One sweep trial: base model(s), attribution, selection, files, plan.
# ---------------------------------------------------------------------------------------------

def d3m_plan(config, dataset, trial_dir: str | None = None, experiment_dir: str | None = None, *,
             options: D3MOptions | None = None, cpu: bool | None = None) -> BalancingPlan:
    """The training plan of a ``d3m`` or ``auto-d3m`` trial: the examples kept after D3M's removal.

    ``config``: the trial's ``TrainConfig``; ``dataset``: its loaded dataset; ``options``: default
    ``D3MOptions.from_dict(config.d3m)``. The base model (``trainables.base_model``) is the final
    checkpoint of the trial in ``experiment_dir`` whose config equals this one with method ``none`` (the
    same sweep's ERM run with the same dataset, model, seed and settings), when that trial has finished;
    otherwise it is trained here with that config (same seed: the same run). ``options.models > 1`` adds
    ERM runs with seeds ``seed + t * SEED_STRIDE``. With ``trial_dir`` the scores, group weights and removed indices are saved
    as the trial directory's ``D3M_SCORES_FILE``, and a trial that finds that file (a resumed trial, or an
    analysis of the finished trial) reuses its selection. Returns a plan of plain shuffling over the kept
    examples. ``cpu=True`` forces the CPU.
    """
    choose("data-selection method", config.method, D3M_METHODS)
    options = options if options is not None else D3MOptions.from_dict(config.d3m)
    files = TrialDir(trial_dir) if trial_dir is not None else None
    if files is not None and files.exists(D3M_SCORES_FILE):
        saved = files.read_npz(D3M_SCORES_FILE, ("kept", "alignment", "options"))
        if (len(saved["alignment"]) == len(dataset.splits["train"].y)
                and json.loads(str(saved["options"])) == options.to_dict()):
            log.info("D3M: reusing the selection saved in %s (%d examples kept)", trial_dir, len(saved["kept"]))
            return BalancingPlan(saved["kept"], None, None, len(saved["kept"]))
        log.warning("D3M: the selection saved in %s was made with other options or another training split; "
                    "selecting again", trial_dir)

    states, sources = base_states(config, dataset, experiment_dir, options.models, cpu)
    train, val = attribution_features(config, dataset, states, options, cpu)
    scores = trak(train, val, options.ridge)
    del train  # the kernels hold what the scores need; the n × k features of T models can go
    val_loss = val[0].loss.numpy()  # the paper's ℓ_g: the base classifier's loss (the ensemble's first model)
    val_y = dataset.splits["val"].y
    extra = {}
    if config.method == "auto-d3m":
        val_groups, extra["val_projection"] = pseudo_groups(scores, val_y, val_loss, options.pseudo_fraction,
                                                            dataset.n_classes)
        n_groups = 2 * dataset.n_classes
    else:
        val_groups, n_groups = dataset.groups("val"), dataset.n_groups
    selection = d3m_select(scores, dataset.splits["train"].y, val_groups, val_loss, options, dataset.n_classes,
                           n_groups)
    removed_per_group = np.bincount(dataset.groups("train")[selection.removed], minlength=dataset.n_groups)
    log.info("D3M (%s): removing %d of %d training examples (per training group: %s)", config.method,
             len(selection.removed), len(selection.alignment), removed_per_group.tolist())
    if files is not None:
        files.write_npz(D3M_SCORES_FILE, {
            **{field.name: getattr(selection, field.name) for field in dataclasses.fields(selection)},
            "val_groups": val_groups, "val_loss": val_loss, "removed_per_group": removed_per_group,
            "base_sources": np.array(sources), "options": np.array(json.dumps(options.to_dict())), **extra,
        })
    return BalancingPlan(selection.kept, None, None, len(selection.kept))


def base_states(config, dataset, experiment_dir: str | None, models: int, cpu: bool | None) -> tuple[list, list]:
    """Model state dicts of the T ensemble models and where each came from (a trial name or ``trained``)."""
    state, name = base_model.base_model(config, dataset, experiment_dir, cpu)
    states, sources = [state], [name]
    for t in range(1, models):
        member = dataclasses.replace(base_model.base_config(config), seed=config.seed + t * SEED_STRIDE)
        states.append(ensemble_member(member, dataset, experiment_dir, cpu, f"{t + 1} of {models}"))
        sources.append(f"trained:seed={member.seed}")
    return states, sources


def ensemble_member(member: TrainConfig, dataset, experiment_dir: str | None, cpu: bool | None, which: str) -> dict:
    """The final model state of the ensemble run ``member`` (method none): loaded from the sweep's
    ``ENSEMBLE_DIR`` when another D3M trial trained it already (the d3m and auto-d3m trials of one seed
    share their T − 1 extra models), else trained here and kept there (without ``experiment_dir``: trained)."""
    folder = TrialDir(join_location(experiment_dir, ENSEMBLE_DIR)) if experiment_dir is not None else None
    identity = json.dumps(base_model.training_identity(member.to_dict()), sort_keys=True)
    name = f"{hashlib.sha256(identity.encode()).hexdigest()[:20]}.pt"  # the run's settings name its file
    if folder is not None and folder.exists(name):
        try:
            state = torch.load(io.BytesIO(folder.read_bytes(name)), map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - a damaged file: train the model again
            log.warning("D3M: ensemble model %s is unreadable (%s); training it again", folder.path(name), error)
        else:
            log.info("D3M: ensemble model %s (seed %d) from %s", which, member.seed, folder.path(name))
            return state
    log.info("D3M: training ensemble model %s (method none, seed %d)", which, member.seed)
    state = base_model.train_model(member, dataset, cpu)
    if folder is not None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        write_atomically(folder.fs, folder.path(name), buffer.getvalue())
    return state


def attribution_features(config, dataset, states: list, options: D3MOptions, cpu: bool | None) -> tuple[list, list]:
    """Per-model ``GradientFeatures`` of the training split (no augmentation) and of the validation split."""
    device = base_model.device_of(cpu)
    model, model_inputs = build_model_and_inputs(config, dataset)
    projector = None
    if options.proj_dim is not None:
        projector = GaussianProjector(gradient_dimension(model, options.last_layer), options.proj_dim, config.seed,
                                      device)

    train, val = [], []
    for state in states:
        model.load_state_dict(state)
        for split, out in (("train", train), ("val", val)):
            out.append(featurize(model, model_inputs.eval_batches(split, options.batch_size),
                                 last_layer=options.last_layer, projector=projector, device=device))
    return train, val
