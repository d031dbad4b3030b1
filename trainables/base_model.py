"""The base ERM model that D3M, AUTO-D3M, JTT and DFR build on, found in the sweep or trained here, and
what it outputs.

A method's base model is its trial's config run with method ``none`` (``base_config``): the same
dataset, model, seed and settings, so the same run as the sweep's ERM trial of that seed. When that
trial (``find_base_trial``) has a kept checkpoint of the wanted epoch (its last, or JTT's epoch T), that
checkpoint's model is used; otherwise the run is trained here (``train_model``, the same seed: the same
run). ``base_model`` does both and says which (a trial name, or ``trained:seed=<seed>``), so a trial can
record where its base came from.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import torch

from trainables.builders import build_model_and_inputs
from trainables.config import METHOD_OPTION_FIELDS, NON_TRAINING_FIELDS, TrainConfig
from trainables.finetune import finetune
from trainables.trial_dir import UnreadableFile, trial_dirs

log = logging.getLogger("groupsweep.base_model")

# Trial-config keys in which a base trial may differ from the base config (the base config itself sets
# method ``none`` and no ratio, so only ``none`` trials match): its name, the settings that only other
# methods read, and those that do not change the training (what is evaluated, saved or measured; a spec
# may set them for one method only, e.g. ``checkpoint_every: 1`` on ``none``).
BASE_FREE_KEYS = ("trial_name", *METHOD_OPTION_FIELDS, *NON_TRAINING_FIELDS)


def base_config(config):
    """The ERM config a method's base model is trained with: the same run with method ``none``."""
    return dataclasses.replace(config, method="none", ratio=None)


def training_identity(values: dict) -> dict:
    """A config as JSON values, without the keys in which a base trial may differ from the base config
    (``BASE_FREE_KEYS``, and the sweep's own keys starting with ``_``, which ``TrainConfig`` ignores); a
    setting the config lacks (saved before the setting existed) counts as its default."""
    values = json.loads(json.dumps({**TrainConfig().to_dict(), **values}))
    return {key: value for key, value in values.items() if key not in BASE_FREE_KEYS and not key.startswith("_")}


def find_base_trial(experiment_dir: str, config, epoch: int | None = None) -> tuple[dict, str] | None:
    """``(model state, trial name)`` of the trial of ``experiment_dir`` run with ``config`` at ``epoch``
    (default: its last, ``config.epochs``), or None.

    A trial matches when its ``params.json`` equals ``config`` (its method included; the name, the options
    of other methods and the sweep's ``_`` keys aside); it has the epoch when one of its kept checkpoints holds epoch
    ``epoch`` of that config (newest checkpoints are tried first).
    """
    epoch = config.epochs if epoch is None else epoch
    wanted = training_identity(config.to_dict())
    for trial in trial_dirs(experiment_dir):
        try:
            trial_config = trial.params()
        except UnreadableFile:
            continue
        if training_identity(trial_config) != wanted:
            continue
        name = trial_config.get("trial_name", trial.name)
        state_files = trial.state_files()
        if not state_files:
            log.info("base trial %s has no checkpoint yet", name)
            continue
        reached = []
        for state_file in reversed(state_files):
            try:
                state = trial.load_state(state_file)
            except UnreadableFile as error:  # e.g. damaged: an older kept checkpoint may still do
                log.info("%s", error)
                continue
            if state.get("epoch") == epoch and training_identity(state.get("config", {})) == wanted:
                return state["model"], name
            reached.append(state.get("epoch"))
        log.info("base trial %s keeps checkpoints of epochs %s, not %d; training the base model here",
                 name, sorted(e for e in reached if e is not None), epoch)
    return None


def train_model(config, dataset, cpu: bool | None, epoch: int | None = None) -> dict:
    """Train ``config`` with ``finetune`` up to ``epoch`` (default: all its epochs) and return the model
    state after it (on the CPU)."""
    epoch = config.epochs if epoch is None else epoch
    final = {}

    def keep(result) -> None:
        if result.epoch == epoch:
            final.update({key: value.detach().cpu().clone() for key, value in result.state()["model"].items()})

    finetune(config, on_epoch=keep, cpu=cpu, dataset=dataset, stop_after=epoch)
    return final


def base_model(config, dataset, experiment_dir: str | None, cpu: bool | None,
               epoch: int | None = None) -> tuple[dict, str]:
    """``(model state, source)`` of ``config``'s base model (``base_config``) at ``epoch`` (default: its
    last): the checkpoint of the sweep's matching trial in ``experiment_dir`` when there is one
    (``source`` = its trial name), else trained here (``source`` = ``trained:seed=<seed>``)."""
    base = base_config(config)
    epoch = base.epochs if epoch is None else epoch
    found = find_base_trial(experiment_dir, base, epoch) if experiment_dir is not None else None
    if found is not None:
        log.info("base model (%s): epoch %d of trial %s", config.method, epoch, found[1])
        return found
    log.info("base model (%s): training epochs 1-%d of method none, seed %d here", config.method, epoch, base.seed)
    return train_model(base, dataset, cpu, epoch), f"trained:seed={base.seed}"


def device_of(cpu: bool | None) -> torch.device:
    """The device base-model computations run on: a GPU when torch sees one, unless ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu")


@torch.inference_mode()
def model_outputs(config, dataset, state: dict, splits, batch_size: int, cpu: bool | None) -> dict:
    """``{split: (features, logits)}``: the penultimate features (``GroupModel.features``, float32
    (N, D)) and logits (N, C) of the model ``state`` of ``config``'s architecture on every example of
    each split, in order, without augmentation, in eval mode (as numpy arrays), computed in ``config``'s
    ``mixed_precision`` as the trial evaluates its own splits (autocast; fp16 only on a GPU)."""
    device = device_of(cpu)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.mixed_precision)
    autocast = dtype is torch.bfloat16 or (dtype is torch.float16 and device.type == "cuda")
    model, model_inputs = build_model_and_inputs(config, dataset)
    model.load_state_dict(state)
    model = model.to(device).eval()
    outputs = {}
    for split in splits:
        features, logits = [], []
        for inputs, _ in model_inputs.eval_batches(split, batch_size):
            inputs = {key: value.to(device) for key, value in inputs.items()} if isinstance(inputs, dict) \
                else inputs.to(device)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=autocast):
                batch_features = model.features(inputs)
                batch_logits = model.head(batch_features)
            features.append(batch_features.float().cpu())
            logits.append(batch_logits.float().cpu())
        outputs[split] = (torch.cat(features).numpy(), torch.cat(logits).numpy())
    return outputs

