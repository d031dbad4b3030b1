"""Penultimate features of a trained trial, streamed into per-group covariance statistics.

A trial directory holds Ray's ``params.json`` (the trial config) and Ray checkpoints
``checkpoint_NNNNNN/state.pt`` (multi-worker trials: ``train/checkpoint_NNNNNN/state.pt``), each the
``finetune`` state after one epoch (keys ``epoch``, ``config``, ``model``, ...). Ray numbers
checkpoint folders by report, not by epoch, and keeps only the last ``num_to_keep`` of them (the
sweep keeps one: the final epoch), so only the epochs whose checkpoints are still on disk can be
analysed; ``checkpoint_epochs`` lists them (it reads each ``state.pt`` memory-mapped, without loading
its tensors).

Extraction rebuilds the dataset and the model exactly as the run did (same config, tokenizer and
architecture), loads the checkpoint's weights, and runs ``GroupModel.features`` (the input of the final
linear layer) in eval mode, under ``torch.no_grad``, in float32, over the training split without
augmentation (images: the evaluation resize + centre crop), or over the subset the run trained on
(``examples='train_subset'``: the distinct examples of ``make_plan`` for the config's method, ratio and
seed, the plan ``finetune`` draws). Features are never kept: each batch is folded into a per-group
``CovarianceAccumulator`` (float64), so memory is bounded by ``groups x D x D`` plus one batch, not
by the number of examples, nor by their tokens or pre-pooling maps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.spectral import EXAMPLES, CovarianceAccumulator
from trainables.config import TrainConfig
from trainables.errors import GroupsweepError, choose
from trainables.trainable import STATE_FILE, TRAIN_RUN_NAME

CHECKPOINT_PATTERNS = (f"checkpoint_*/{STATE_FILE}", f"{TRAIN_RUN_NAME}/checkpoint_*/{STATE_FILE}")


@dataclass
class TrialStatistics:
    """Per-group feature statistics of one trial at one epoch.

    ``accumulator``: a ``CovarianceAccumulator`` keyed by group ``g = y * n_spurious + s``;
    ``train_counts``: per-group counts of the full training split (majority / minority groups);
    ``n_examples``: how many examples were fed; ``epoch`` / ``examples``: what was analysed."""

    accumulator: CovarianceAccumulator
    epoch: int
    examples: str
    n_examples: int
    n_spurious: int
    group_names: list
    class_names: list
    train_counts: np.ndarray


def read_config(trial_dir) -> TrainConfig:
    """The trial's ``TrainConfig`` from its ``params.json``."""
    path = Path(trial_dir) / "params.json"
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise GroupsweepError(f"cannot read the trial config {path} ({type(error).__name__}: {error})") from None
    return TrainConfig.from_dict(values)


def checkpoint_epochs(trial_dir) -> dict[int, Path]:
    """``{epoch: path of state.pt}`` for every checkpoint still on disk in ``trial_dir`` (the latest
    file wins if two hold the same epoch)."""
    import torch

    found = {}
    paths = sorted(path for pattern in CHECKPOINT_PATTERNS for path in Path(trial_dir).glob(pattern))
    for path in sorted(paths, key=lambda p: p.stat().st_mtime):
        try:
            state = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
        except (OSError, RuntimeError, EOFError) as error:
            raise GroupsweepError(f"cannot read checkpoint {path} ({type(error).__name__}: {error})") from None
        found[int(state["epoch"])] = path
    return found


def load_model_state(trial_dir, epoch: int) -> dict:
    """The model weights saved after ``epoch``; a one-line error lists the epochs kept otherwise."""
    import torch

    epochs = checkpoint_epochs(trial_dir)
    if epoch not in epochs:
        kept = ", ".join(map(str, sorted(epochs))) or "none"
        raise GroupsweepError(f"trial {Path(trial_dir).name} has no checkpoint of epoch {epoch}; kept epochs: {kept} "
                              "(Ray keeps only the last checkpoints of a trial)")
    return torch.load(epochs[epoch], map_location="cpu", weights_only=False)["model"]


def example_positions(config: TrainConfig, dataset, examples: str) -> np.ndarray:
    """Positions in the training split of the examples analysed: all (``train``) or the distinct
    examples of the run's balancing plan (``train_subset``)."""
    choose("examples", examples, EXAMPLES)
    y = dataset.splits["train"].y
    if examples == "train":
        return np.arange(len(y))
    from trainables.balancing import make_plan

    plan = make_plan(y, dataset.groups("train"), config.method, config.ratio, config.seed, n_classes=dataset.n_classes)
    return np.unique(plan.indices)


def _to_device(inputs, device):
    if isinstance(inputs, dict):
        return {key: value.to(device) for key, value in inputs.items()}
    return inputs.to(device)


def accumulate_features(model, loader, groups: np.ndarray, device, batch_transform=None) -> CovarianceAccumulator:
    """Stream ``model.features`` over ``loader`` (items ``(inputs, label, position)``) into a per-group
    ``CovarianceAccumulator``; ``groups[position]`` is each example's group. Runs in eval mode, without
    gradients, in float32; ``batch_transform`` (image evaluation preprocessing) is applied on ``device``."""
    import torch

    model = model.to(device=device, dtype=torch.float32).eval()
    accumulator = CovarianceAccumulator()
    with torch.no_grad():
        for inputs, _, positions in loader:
            inputs = _to_device(inputs, device)
            if batch_transform is not None:
                inputs = batch_transform(inputs)
            features = model.features(inputs)
            accumulator.update(features.double().cpu().numpy(), groups[positions.numpy()])
    return accumulator


def default_device() -> str:
    """``cuda`` when torch sees a GPU, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def trial_statistics(trial_dir, epoch: int | None = None, examples: str = "train", device: str | None = None,
                     batch_size: int | None = None) -> TrialStatistics:
    """Per-group statistics of the penultimate training features of the trial in ``trial_dir`` after
    ``epoch`` (default: its last configured epoch). ``examples``: ``train`` (the full training split)
    or ``train_subset`` (the examples the run trained on); ``device``: default ``default_device()``;
    ``batch_size``: default the config's ``eval_batch_size``. Raises a one-line ``GroupsweepError``
    when the checkpoint of ``epoch`` is not kept."""
    import torch
    from torch.utils.data import DataLoader, Subset

    from trainables.finetune import build_model_and_inputs, load_config_dataset

    choose("examples", examples, EXAMPLES)
    config = read_config(trial_dir)
    epoch = config.epochs if epoch is None else int(epoch)
    state = load_model_state(trial_dir, epoch)
    dataset = load_config_dataset(config)
    model, model_inputs = build_model_and_inputs(config, dataset)
    model.load_state_dict(state)
    del state
    positions = example_positions(config, dataset, examples)
    loader = DataLoader(Subset(model_inputs.eval_dataset("train"), positions.tolist()),
                        batch_size=batch_size or config.eval_batch_size)
    accumulator = accumulate_features(model, loader, dataset.groups("train"), torch.device(device or default_device()),
                                      model_inputs.eval_batch_transform)
    return TrialStatistics(
        accumulator=accumulator, epoch=epoch, examples=examples, n_examples=len(positions),
        n_spurious=dataset.n_spurious, group_names=list(dataset.group_names), class_names=list(dataset.class_names),
        train_counts=dataset.group_counts("train"),
    )
