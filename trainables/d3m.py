"""D3M and AUTO-D3M (Jain et al., NeurIPS 2024): remove the training examples that drive worst-group error.

From TRAK scores τ(z)_i of the base model (``trainables.attribution``), D3M computes

- group coefficients ``τ_g = mean over validation examples z of group g of τ(z)`` (a vector over training
  examples), for every group present in the validation split;
- alignment ``A_i = Σ_g w_g τ_g(i)`` with ``w = softmax(β · L_g)`` over the present groups, ``L_g`` the base
  model's mean validation cross-entropy on group g (β = 1 in the paper);
- the removed set: the examples with ``A_i < 0`` (the paper's default) or the k lowest, never more than
  ``max_removed`` of any class (so no class is ever emptied), and retrains plain ERM on the rest.

AUTO-D3M needs no group label: within each class, the validation examples' attribution vectors τ(z) are
projected on their top principal component; the side holding ``pseudo_fraction`` (35%) of the class with
the higher base-model loss becomes the pseudo-minority group (the paper's "lower performing group"), the
rest the pseudo-majority; then D3M runs with those 2 · n_classes pseudo-groups.

Guards (the authors' code could turn a group-loss lookup into NaN and then remove everything): a
non-finite gradient, probability, loss or score raises a one-line ``GroupsweepError``; a group absent
from the validation split is left out of the softmax (logged); the per-class cap holds whatever the scores.

``d3m_plan`` runs the whole selection for one sweep trial (base model, scores, files, plan).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import numbers
from dataclasses import dataclass

import numpy as np

from trainables.balancing import SELECTION_METHODS as D3M_METHODS
from trainables.balancing import BalancingPlan
from trainables.errors import GroupsweepError, choose

log = logging.getLogger("groupsweep.d3m")

REMOVE_NEGATIVE = "negative"
# Extra ensemble models (t = 1 .. T-1) are ERM runs with seed ``seed + t * SEED_STRIDE``.
SEED_STRIDE = 10_000
SCORES_NAME = "groupsweep/d3m/scores.npz"
# Trial-config keys in which a base trial may differ from the base config (the base config itself sets
# method ``none`` and no ratio, so only ``none`` trials match).
BASE_FREE_KEYS = ("trial_name", "d3m")


@dataclass(frozen=True)
class D3MOptions:
    """Settings of D3M / AUTO-D3M (the ``d3m`` mapping of a trial config; every key optional).

    models: T, the models whose scores are averaged: the base model, plus T − 1 ERM runs with seeds
      ``seed + t * SEED_STRIDE`` trained on demand.
    proj_dim: k, the Gaussian projection's dimension; null keeps raw gradients (small models only).
    ridge: λ relative to the kernel scale (λ = ridge · trace(ΦᵀΦ) / k).
    last_layer: differentiate only the final linear layer (cheap; exact when the backbone is frozen).
    beta: temperature β of the group-loss softmax.
    remove: ``negative`` (every example with A_i < 0) or an integer k (the k lowest A_i).
    max_removed: the largest fraction of any class that may be removed, in (0, 1).
    pseudo_fraction: AUTO-D3M's share of each class in the pseudo-minority group, in (0, 1).
    batch_size: examples per per-example-gradient batch.
    """

    models: int = 1
    proj_dim: int | None = 512
    ridge: float = 0.01
    last_layer: bool = False
    beta: float = 1.0
    remove: str | int = REMOVE_NEGATIVE
    max_removed: float = 0.5
    pseudo_fraction: float = 0.35
    batch_size: int = 32

    def __post_init__(self):
        for name in ("models", "batch_size"):
            _check(name, getattr(self, name), _is_int(getattr(self, name)) and getattr(self, name) >= 1,
                   "an integer >= 1")
        _check("proj_dim", self.proj_dim, self.proj_dim is None or (_is_int(self.proj_dim) and self.proj_dim >= 1),
               "an integer >= 1 or null (no projection)")
        _check("ridge", self.ridge, _is_real(self.ridge) and self.ridge >= 0, "a finite number >= 0")
        _check("last_layer", self.last_layer, isinstance(self.last_layer, bool), "true or false")
        _check("beta", self.beta, _is_real(self.beta) and self.beta >= 0, "a finite number >= 0")
        _check("remove", self.remove, self.remove == REMOVE_NEGATIVE or (_is_int(self.remove) and self.remove >= 0),
               f"{REMOVE_NEGATIVE!r} or an integer k >= 0")
        for name in ("max_removed", "pseudo_fraction"):
            value = getattr(self, name)
            _check(name, value, _is_real(value) and 0 < value < 1, "a number strictly between 0 and 1")

    @classmethod
    def from_dict(cls, values) -> "D3MOptions":
        """Options from a mapping (None or {} gives the defaults); one-line ``GroupsweepError`` on a bad key or value."""
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise GroupsweepError(f"d3m options must be a mapping, got {values!r}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in names:
                raise GroupsweepError(f"unknown d3m option {key!r}; allowed: {', '.join(names)}")
        return cls(**values)

    def to_dict(self) -> dict:
        """The options as a plain JSON-able dict."""
        return dataclasses.asdict(self)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check(name: str, value, ok: bool, allowed: str) -> None:
    if not ok:
        raise GroupsweepError(f"d3m option {name}={value!r} is invalid; allowed: {allowed}")


# ---------------------------------------------------------------------------------------------
# Selection (numpy): group coefficients, alignment, removal, pseudo-groups.
# ---------------------------------------------------------------------------------------------

@dataclass
class Selection:
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

    ``remove``: ``negative`` (every A_i < 0) or k (the k lowest); then at most ``floor(max_removed · n_c)``
    examples of each class c are removed (the most negative ones), so no class is emptied when
    ``max_removed < 1``. Non-finite alignments raise a one-line ``GroupsweepError``.
    """
    alignment = np.asarray(alignment, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if not np.isfinite(alignment).all():
        bad = int((~np.isfinite(alignment)).sum())
        raise GroupsweepError(f"D3M: {bad} of {len(alignment)} alignment scores are not finite; no example is removed")
    order = np.argsort(alignment, kind="stable")
    candidates = order[alignment[order] < 0] if remove == REMOVE_NEGATIVE else order[:int(remove)]
    caps = np.floor(max_removed * np.bincount(y, minlength=n_classes)).astype(np.int64)
    taken = np.zeros(n_classes, dtype=np.int64)
    removed = []
    for index in candidates:
        c = y[index]
        if taken[c] < caps[c]:
            taken[c] += 1
            removed.append(index)
    if len(removed) < len(candidates):
        log.warning("D3M: %d examples qualified for removal but at most %g of each class may go; removing %d",
                    len(candidates), max_removed, len(removed))
    return np.sort(np.asarray(removed, dtype=np.int64))


def select(scores, train_y, val_groups, val_loss, options: D3MOptions, n_classes: int, n_groups: int) -> Selection:
    """Run D3M from TRAK ``scores`` (training examples x validation examples, a ``TrakScores``).

    ``val_groups``: the group (or pseudo-group) of every validation example, in 0..n_groups-1;
    ``val_loss``: the base model's per-example validation loss. Groups absent from the validation split
    get no coefficient: the softmax runs over the present groups only (logged).
    """
    val_groups = np.asarray(val_groups, dtype=np.int64)
    val_loss = np.asarray(val_loss, dtype=np.float64)
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
    return Selection(groups=present, group_loss=group_loss, group_weight=weights, group_scores=group_scores,
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
    ``D3MOptions.from_dict(config.d3m)``. The base model is the final checkpoint of the trial in
    ``experiment_dir`` whose config equals this one with method ``none`` (the same sweep's ERM run with
    the same dataset, model, seed and settings), when that trial has finished; otherwise it is trained
    here with that config (same seed: the same run). ``options.models > 1`` adds ERM runs with seeds
    ``seed + t * SEED_STRIDE``. With ``trial_dir`` the scores, group weights and removed indices are saved
    as ``groupsweep/d3m/scores.npz``, and a trial that finds that file (a resumed trial) reuses its
    selection. Returns a plan of plain shuffling over the kept examples. ``cpu=True`` forces the CPU.
    """
    choose("data-selection method", config.method, D3M_METHODS)
    options = options if options is not None else D3MOptions.from_dict(config.d3m)
    files = None
    if trial_dir is not None:
        from trainables.trainable import TrialFiles

        files = TrialFiles(trial_dir)
        if files.exists(SCORES_NAME):
            kept = read_npz(files, SCORES_NAME)["kept"]
            log.info("D3M: reusing the selection saved in %s (%d examples kept)", trial_dir, len(kept))
            return BalancingPlan(kept, None, None, len(kept))

    states, sources = base_states(config, dataset, experiment_dir, options.models, cpu)
    train, val = attribution_features(config, dataset, states, options, cpu)
    from trainables.attribution import trak

    scores = trak(train, val, options.ridge)
    val_loss = np.mean([features.loss.numpy() for features in val], axis=0)
    val_y = dataset.splits["val"].y
    extra = {}
    if config.method == "auto-d3m":
        val_groups, extra["val_projection"] = pseudo_groups(scores, val_y, val_loss, options.pseudo_fraction,
                                                            dataset.n_classes)
        n_groups = 2 * dataset.n_classes
    else:
        val_groups, n_groups = dataset.groups("val"), dataset.n_groups
    selection = select(scores, dataset.splits["train"].y, val_groups, val_loss, options, dataset.n_classes, n_groups)
    removed_per_group = np.bincount(dataset.groups("train")[selection.removed], minlength=dataset.n_groups)
    log.info("D3M (%s): removing %d of %d training examples (per training group: %s)", config.method,
             len(selection.removed), len(selection.alignment), removed_per_group.tolist())
    if files is not None:
        files.write_npz(SCORES_NAME, {
            **{field.name: getattr(selection, field.name) for field in dataclasses.fields(selection)},
            "val_groups": val_groups, "val_loss": val_loss, "removed_per_group": removed_per_group,
            "base_sources": np.array(sources), "options": np.array(json.dumps(options.to_dict())), **extra,
        })
    return BalancingPlan(selection.kept, None, None, len(selection.kept))


def read_npz(files, name: str) -> dict:
    """The arrays of an ``.npz`` file in a trial directory (``files``: a ``TrialFiles``)."""
    with files.fs.open_input_file(f"{files.root}/{name}") as stream:
        data = stream.read()
    with np.load(io.BytesIO(data)) as archive:
        return {key: archive[key] for key in archive.files}


def base_config(config):
    """The ERM config a D3M trial's base model is trained with: the same run with method ``none``."""
    return dataclasses.replace(config, method="none", ratio=None)


def base_states(config, dataset, experiment_dir: str | None, models: int, cpu: bool | None) -> tuple[list, list]:
    """Model state dicts of the T ensemble models and where each came from (a trial name or ``trained``)."""
    base = base_config(config)
    states, sources = [], []
    for t in range(models):
        member = base if t == 0 else dataclasses.replace(base, seed=config.seed + t * SEED_STRIDE)
        found = find_base_trial(experiment_dir, member) if experiment_dir is not None and t == 0 else None
        if found is not None:
            state, name = found
            log.info("D3M: base model is the final checkpoint of trial %s", name)
        else:
            log.info("D3M: training ensemble model %d of %d (method none, seed %d)", t + 1, models, member.seed)
            state, name = train_model(member, dataset, cpu), f"trained:seed={member.seed}"
        states.append(state)
        sources.append(name)
    return states, sources


def _identity(values: dict) -> dict:
    """A config as JSON values, without the keys in which a base trial may differ from the base config."""
    values = json.loads(json.dumps(values))
    return {key: value for key, value in values.items() if key not in BASE_FREE_KEYS}


def find_base_trial(experiment_dir: str, config) -> tuple[dict, str] | None:
    """``(model state, trial name)`` of a finished trial of ``experiment_dir`` run with ``config``, or None.

    A trial matches when its ``params.json`` equals ``config`` (its method included; the name and d3m
    options aside); it is finished when its latest Ray checkpoint holds epoch ``config.epochs`` of that
    config.
    """
    import pyarrow.fs
    import torch

    fs, root = pyarrow.fs.FileSystem.from_uri(experiment_dir)
    wanted = _identity(config.to_dict())
    entries = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    for entry in sorted((e for e in entries if e.type == pyarrow.fs.FileType.Directory), key=lambda e: e.path):
        params = f"{entry.path}/params.json"
        if fs.get_file_info(params).type == pyarrow.fs.FileType.NotFound:
            continue
        with fs.open_input_file(params) as stream:
            try:
                trial_config = json.loads(stream.read())
            except ValueError:
                continue
        if not isinstance(trial_config, dict) or _identity(trial_config) != wanted:
            continue
        checkpoints = sorted(e.path for e in fs.get_file_info(pyarrow.fs.FileSelector(entry.path))
                             if e.type == pyarrow.fs.FileType.Directory and e.base_name.startswith("checkpoint_"))
        name = trial_config.get("trial_name", entry.base_name)
        if not checkpoints or fs.get_file_info(f"{checkpoints[-1]}/state.pt").type == pyarrow.fs.FileType.NotFound:
            log.info("D3M: base trial %s has no checkpoint yet", name)
            continue
        with fs.open_input_file(f"{checkpoints[-1]}/state.pt") as stream:
            state = torch.load(io.BytesIO(stream.read()), map_location="cpu", weights_only=False)
        if state.get("epoch") == config.epochs and _identity(state.get("config", {})) == wanted:
            return state["model"], name
        log.info("D3M: base trial %s is at epoch %s of %d; training the base model here",
                 name, state.get("epoch"), config.epochs)
    return None


def train_model(config, dataset, cpu: bool | None) -> dict:
    """Train ``config`` with ``finetune`` and return the final model state (on the CPU)."""
    from trainables.finetune import finetune

    final = {}

    def keep_final(result) -> None:
        if result.epoch == config.epochs:
            final.update({key: value.detach().cpu().clone() for key, value in result.state()["model"].items()})

    finetune(config, on_epoch=keep_final, cpu=cpu, dataset=dataset)
    return final


def attribution_features(config, dataset, states: list, options: D3MOptions, cpu: bool | None) -> tuple[list, list]:
    """Per-model ``GradientFeatures`` of the training split (no augmentation) and of the validation split."""
    import torch
    from torch.utils.data import DataLoader

    from trainables.attribution import GaussianProjector, featurize, gradient_dimension
    from trainables.inputs import build_model_inputs, text_corpus
    from trainables.models import build_model
    from trainables.tokenization import build_tokenizer

    device = torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu")
    tokenizer = None
    if dataset.modality == "text":
        tokenizer = build_tokenizer(config.model, model_path=config.model_path, corpus=text_corpus(dataset))
    model = build_model(config.model, dataset.n_classes, pretrained=config.pretrained, model_path=config.model_path,
                        vocab_size=len(tokenizer) if tokenizer is not None else None)
    if config.last_layer_only:
        model.set_last_layer_only()
    model_inputs = build_model_inputs(dataset, model.modality, tokenizer)
    projector = None
    if options.proj_dim is not None:
        projector = GaussianProjector(gradient_dimension(model, options.last_layer), options.proj_dim, config.seed,
                                      device)

    def batches(split: str):
        for inputs, labels, _ in DataLoader(model_inputs.eval_dataset(split), batch_size=options.batch_size):
            if model_inputs.eval_batch_transform is not None:
                inputs = model_inputs.eval_batch_transform(inputs)
            yield inputs, labels

    train, val = [], []
    for state in states:
        model.load_state_dict(state)
        for split, out in (("train", train), ("val", val)):
            out.append(featurize(model, batches(split), last_layer=options.last_layer, projector=projector,
                                 device=device))
    return train, val
