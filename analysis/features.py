"""Which trials the spectral analysis looks at, and their penultimate features as per-group statistics.

Trials are chosen from a loaded sweep (``analysis.results.SweepResults``): per dataset and model, every
seed of the method a validation criterion selects (``criterion_trials``), or by id or name
(``resolve_trials``).

A trial is read only through its trial directory (``trainables.trial_dir.TrialDir``, a local path or a
``pyarrow.fs`` URI): its config (``TrialDir.params``) and its kept checkpoints (``TrialDir.state_files``
and ``load_state``), each the ``finetune`` state after one epoch. Ray numbers checkpoint folders by
report, not by epoch, and a sweep keeps only the last ``keep_checkpoints`` of them (default one: the final
epoch), so only the epochs whose checkpoints are still there can be analysed; ``checkpoint_epochs``
lists them.

Extraction rebuilds the dataset and the model exactly as the run did (``trainables.config_data``,
``trainables.builders``: same config, tokenizer and architecture), loads the checkpoint's weights, and runs
``GroupModel.features`` (the input of the final linear layer) in eval mode, under ``torch.no_grad``, in
float32, over the training split without augmentation (images: the evaluation resize + centre crop), or over the subset
the run trained on (``examples='train_subset'``: the distinct examples of the run's training plan,
``trainables.plans.training_plan``, so a balancing method's plan for its ratio and seed, or the
examples a D3M / AUTO-D3M trial kept, as saved in its trial directory). Features are never kept: each
batch is folded into a per-group ``analysis.covariance.CovarianceAccumulator`` (float64), so memory is
bounded by ``groups x D x D`` plus one batch, not by the number of examples, nor by their tokens or
pre-pooling maps. ``analyze_trials`` turns each trial's statistics into an
``analysis.covariance.TrialSpectrum``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from analysis.covariance import CovarianceAccumulator, TrialSpectrum, check_k, spectrum_from_statistics
from analysis.selection import select
from trainables.builders import build_model_and_inputs
from trainables.config import TrainConfig
from trainables.config_data import load_config_dataset
from trainables.errors import GroupsweepError, choose
from trainables.inputs import example_loader
from trainables.plans import training_plan
from trainables.trial_dir import D3M_SCORES_FILE, JTT_ERRORS_FILE, LABELS_FILE, TrialDir, UnreadableFile

# The file in which each data-selection method's trial saved the examples it trained on.
SELECTION_FILES = {"d3m": D3M_SCORES_FILE, "auto-d3m": D3M_SCORES_FILE, "jtt": JTT_ERRORS_FILE}
# The example sets features can be extracted from: the full training split, or the examples trained on.
EXAMPLES = ("train", "train_subset")


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


# --- choosing trials ---------------------------------------------------------------------------------

def criterion_trials(results, criterion: str, group_info: str | None = None) -> tuple[list, list]:
    """``(trial ids, notes)``: per dataset and model, the complete trials (every seed) of the balancing
    method that ``analysis.selection.select`` chooses with ``criterion`` (final epoch, by model) among the
    methods using at most ``group_info`` group information (None: every method); in a hyperparameter search,
    those of the method's chosen configuration only (its ``config_id``: not the method's other configurations,
    nor grid reruns of the chosen one, which selection does not score)."""
    selection = select(results, [criterion], epoch="final", by_model=True, group_info=group_info)
    trials = results.trials[results.trials["status"] == "complete"]
    chosen = []
    for row in selection.table.itertuples(index=False):
        variant = getattr(row, "variant", "")
        same_ratio = trials["ratio"].isna() if pd.isna(row.ratio) else trials["ratio"] == row.ratio
        same_config = trials["config_id"] == row.config_id if getattr(row, "config_id", "") else True
        match = trials[(trials["dataset"] == row.dataset) & (trials["model"] == row.model)
                       & (trials["method"] == row.method) & same_ratio & (trials["variant"] == variant) & same_config]
        chosen += sorted(match.index, key=lambda trial_id: (match.loc[trial_id, "seed"], trial_id))
    return chosen, list(selection.notes)


def resolve_trials(results, idents) -> list:
    """Trial ids of ``idents``, each a trial id or a trial name, in the order given and each trial once; a
    one-line error lists the known names for an unknown one, and the ids for a name that several loaded
    sweeps hold."""
    ids_by_name: dict = {}
    for trial_id, name in zip(results.trials.index, results.trials["trial_name"]):
        ids_by_name.setdefault(name, []).append(trial_id)
    out = []
    for ident in idents:
        if ident in results.trials.index:
            trial_id = ident
        elif len(ids_by_name.get(ident, ())) == 1:
            trial_id = ids_by_name[ident][0]
        elif ident in ids_by_name:
            raise GroupsweepError(f"trial name {ident!r} is in several sweeps of {results.run_dir}; give one of its "
                                  f"trial ids: {', '.join(ids_by_name[ident])}")
        else:
            raise GroupsweepError(f"unknown trial {ident!r} in {results.run_dir}; choose a trial id or name: "
                                  f"{', '.join(sorted(ids_by_name))}")
        if trial_id not in out:
            out.append(trial_id)
    return out


def reported_test_group_acc(results, trial_id: str, epoch: int, n_groups: int) -> np.ndarray:
    """``test/acc_group_g`` for every group as the trial reported it after ``epoch`` (NaN where absent)."""
    frame = results.frame
    row = frame[(frame["trial_id"] == trial_id) & (frame["epoch"] == epoch)]
    values = np.full(n_groups, np.nan)
    for g in range(n_groups):
        column = f"test/acc_group_{g}"
        if len(row) and column in row:
            values[g] = float(row[column].iloc[-1])
    return values


# --- one trial's files --------------------------------------------------------------------------------

def _as_trial_dir(trial_dir) -> TrialDir:
    """``trial_dir`` (a ``TrialDir``, a local path or a ``pyarrow.fs`` URI) as a ``TrialDir``."""
    return trial_dir if isinstance(trial_dir, TrialDir) else TrialDir(str(trial_dir))


def read_config(trial_dir) -> TrainConfig:
    """The trial's ``TrainConfig``, from its trial directory's config (``TrialDir.params``); a one-line
    ``GroupsweepError`` when it is missing or invalid."""
    return TrainConfig.from_dict(_as_trial_dir(trial_dir).params())


def _kept_states(trial: TrialDir):
    """``(state file name, state)`` of every readable checkpoint still in ``trial``, in
    ``TrialDir.state_files`` order (an unreadable one, e.g. damaged, is skipped with a warning); local
    states are memory-mapped, so their tensors are only read when used."""
    for name in trial.state_files():
        try:
            yield name, trial.load_state(name)
        except UnreadableFile as error:
            warnings.warn(str(error), stacklevel=2)


def checkpoint_epochs(trial_dir) -> dict[int, str]:
    """``{epoch: name of its state file in the trial directory}`` for every checkpoint still kept in
    ``trial_dir`` (a later ``TrialDir.state_files`` entry wins if two hold the same epoch); load one
    with ``TrialDir.load_state``."""
    return {state["epoch"]: name for name, state in _kept_states(_as_trial_dir(trial_dir))}


def load_model_state(trial_dir, epoch: int) -> dict:
    """The model weights saved after ``epoch``; a one-line error lists the epochs kept otherwise."""
    trial = _as_trial_dir(trial_dir)
    kept, model = set(), None
    for _, state in _kept_states(trial):
        kept.add(state["epoch"])
        if state["epoch"] == epoch:
            model = state["model"]
    if model is None:
        raise GroupsweepError(f"trial {trial.name} has no checkpoint of epoch {epoch}; kept epochs: "
                              f"{', '.join(map(str, sorted(kept))) or 'none'} "
                              "(Ray keeps only the last checkpoints of a trial)")
    return model


def example_positions(config: TrainConfig, dataset, examples: str, trial_dir=None) -> np.ndarray:
    """Positions in the training split of the examples analysed: all (``train``) or the distinct
    examples of the run's training plan (``train_subset``, ``trainables.plans.training_plan``; a D3M /
    AUTO-D3M trial's plan reuses the selection saved in ``trial_dir``)."""
    choose("examples", examples, EXAMPLES)
    if examples == "train":
        return np.arange(len(dataset.splits["train"].y))
    saved = SELECTION_FILES.get(config.method)
    if saved is not None and (trial_dir is None or not _as_trial_dir(trial_dir).exists(saved)):
        # without it, the plan would select again: train base models here and write into the trial
        raise GroupsweepError(f"the {config.method} trial has no saved selection ({saved}); the examples it "
                              "trained on are read from it")
    location = None if trial_dir is None else _as_trial_dir(trial_dir).location
    return np.unique(training_plan(config, dataset, trial_dir=location).indices)


# --- features ----------------------------------------------------------------------------------------

def _to_device(inputs, device):
    if isinstance(inputs, dict):
        return {key: value.to(device) for key, value in inputs.items()}
    return inputs.to(device)


def accumulate_features(model, loader, groups: np.ndarray, device, batch_transform=None) -> CovarianceAccumulator:
    """Stream ``model.features`` over ``loader`` (items ``(inputs, label, position)``) into a per-group
    ``CovarianceAccumulator``; ``groups[position]`` is each example's group. Runs in eval mode, without
    gradients, in float32; ``batch_transform`` (image evaluation preprocessing) is applied on ``device``."""
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
    return "cuda" if torch.cuda.is_available() else "cpu"


def usable_device(device: str | None) -> str:
    """``device`` (default ``default_device()``) when torch can run on it in this process, else a one-line
    ``GroupsweepError`` naming it: a CUDA device index must be one torch sees, MPS must be available."""
    device = device or default_device()
    kind, _, index = device.partition(":")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if int(index or 0) >= count:
            raise GroupsweepError(f"--device {device!r}: torch sees {count} CUDA device(s) here; give cpu"
                                  + (f" or cuda:0 to cuda:{count - 1}" if count else ""))
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise GroupsweepError(f"--device {device!r}: MPS is not available here; give cpu")
    return device


def check_same_data(trial: TrialDir, dataset) -> None:
    """Refuse, in one line, a dataset loaded here whose val or test labels or attributes differ from those the
    trial saved (its ``labels.npz``): another data folder, version or options than the trial trained on
    (e.g. a different ``$GROUPSWEEP_DATA`` on this machine). A trial without the file is not checked."""
    if not trial.exists(LABELS_FILE):
        return
    saved = trial.read_npz(LABELS_FILE)
    for split in ("val", "test"):
        for key in ("y", "s"):
            if not np.array_equal(saved[f"{split}_{key}"], getattr(dataset.splits[split], key)):
                raise GroupsweepError(
                    f"the {dataset.name} dataset loaded here differs from the one trial {trial.name} trained on "
                    f"({split} split, {key}); check its data_root or $GROUPSWEEP_DATA on this machine")


def trial_statistics(trial_dir, epoch: int | None = None, examples: str = "train", device: str | None = None,
                     batch_size: int | None = None) -> TrialStatistics:
    """Per-group statistics of the penultimate training features of the trial in ``trial_dir`` (a
    ``TrialDir``, a local path or a ``pyarrow.fs`` URI) after ``epoch`` (default: its last configured
    epoch). ``examples``: ``train`` (the full training split) or ``train_subset`` (the examples the run
    trained on); ``device``: default ``default_device()``; ``batch_size``: default the config's
    ``eval_batch_size``. Raises a one-line ``GroupsweepError`` when the checkpoint of ``epoch`` is not kept."""
    choose("examples", examples, EXAMPLES)
    trial = _as_trial_dir(trial_dir)
    config = read_config(trial)
    epoch = config.epochs if epoch is None else int(epoch)
    state = load_model_state(trial, epoch)
    dataset = load_config_dataset(config)
    check_same_data(trial, dataset)
    model, model_inputs = build_model_and_inputs(config, dataset)
    model.load_state_dict(state)
    del state
    positions = example_positions(config, dataset, examples, trial)
    loader = example_loader(model_inputs.eval_dataset("train", positions), batch_size or config.eval_batch_size)
    accumulator = accumulate_features(model, loader, dataset.groups("train"), torch.device(device or default_device()),
                                      model_inputs.eval_batch_transform)
    return TrialStatistics(
        accumulator=accumulator, epoch=epoch, examples=examples, n_examples=len(positions),
        n_spurious=dataset.n_spurious, group_names=list(dataset.group_names), class_names=list(dataset.class_names),
        train_counts=dataset.group_counts("train"),
    )


# --- trials to spectra ---------------------------------------------------------------------------------

def analyze_trials(results, trial_ids, k: int, epoch: int | None = None, examples: str = "train",
                   device: str | None = None, batch_size: int | None = None, log=None) -> list[TrialSpectrum]:
    """One ``TrialSpectrum`` per trial of ``results`` (an ``analysis.results.SweepResults``): features
    extracted from the checkpoint of ``epoch`` (default: each trial's last configured epoch), top-``k``
    eigenvalues, and the test group accuracies reported at that epoch, on ``device`` (``usable_device``).
    ``log(message)`` is told about each trial as it starts."""
    k = check_k(k)
    device = usable_device(device)
    spectra = []
    for trial_id in trial_ids:
        trial = results.trials.loc[trial_id]
        if log is not None:
            log(f"extracting features of {trial['trial_name']} ({trial['dataset']}, {trial['model']}, "
                f"seed {trial['seed']})")
        statistics = trial_statistics(results.trial_dir(trial_id), epoch=epoch, examples=examples, device=device,
                                      batch_size=batch_size)
        info = {"dataset": trial["dataset"], "model": trial["model"], "method_label": trial["method_label"],
                "variant": trial["variant"], "config_id": trial["config_id"], "seed": int(trial["seed"]),
                "trial_id": trial_id, "trial_name": trial["trial_name"], "epoch": statistics.epoch,
                "examples": examples}
        accuracy = reported_test_group_acc(results, trial_id, statistics.epoch, len(statistics.train_counts))
        spectra.append(spectrum_from_statistics(info, statistics, k, accuracy))
    return spectra
