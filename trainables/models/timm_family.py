"""Building the registry's image models (``library: timm``): ConvNeXt-V2 and ResNet at the paper's sizes,
and their toy ladders (the entries are in ``trainables.models.registry``).

Checkpoints (``model_path`` or the hub cache) are timm state dicts: a ``.safetensors``/``.pth``/``.bin``
file, or a directory holding ``model.safetensors``/``pytorch_model.bin``/``model.pth`` (the layout of
timm's hub repositories). A ``state_dict``/``model`` wrapper and a ``module.`` prefix are accepted
(timm's ``load_state_dict``). Classifier entries whose shape differs from the requested number of
classes (e.g. the 1000-class ImageNet head) are dropped and the head stays randomly initialised; every
other entry must match the architecture exactly.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from trainables.errors import GroupsweepError
from trainables.models.base import GroupModel
from trainables.models.hub import checkpoint_source
from trainables.models.registry import ModelSpec

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pth")


class TimmGroupModel(GroupModel):
    """A timm classifier; features = ``forward_head(forward_features(x), pre_logits=True)``."""

    @property
    def head(self) -> torch.nn.Linear:
        return self.backbone.get_classifier()

    def features(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_head(self.backbone.forward_features(inputs), pre_logits=True)


def _weights_file(path: Path, spec: ModelSpec) -> Path:
    if path.is_file():
        return path
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    raise GroupsweepError(
        f"checkpoint directory {str(path)!r} of model {spec.name!r} holds none of: {', '.join(WEIGHT_FILES)}"
    )


def load_timm_checkpoint(model: torch.nn.Module, path: Path, spec: ModelSpec) -> None:
    """Load the timm state dict at ``path`` (file or directory) into ``model`` (see module docstring)."""
    # deferred: timm loads only for image models
    from safetensors import SafetensorError
    from timm.models import load_state_dict

    file = _weights_file(path, spec)
    try:
        state = load_state_dict(str(file))
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError, SafetensorError) as error:
        raise GroupsweepError(f"cannot read checkpoint {str(file)!r} of model {spec.name!r}: {error}".splitlines()[0])
    expected = model.state_dict()
    head = model.pretrained_cfg["classifier"] + "."
    for key in [k for k in state if k.startswith(head) and k in expected]:
        if state[key].shape != expected[key].shape:
            del state[key]
    mismatched = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    unexpected, missing = [], []
    if not mismatched:
        # torch fills in the batch-norm counters that checkpoints older than PyTorch 0.4.1 lack
        result = model.load_state_dict(state, strict=False)
        unexpected = result.unexpected_keys
        missing = [k for k in result.missing_keys if not k.startswith(head)]
    if unexpected or missing or mismatched:
        problems = [f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                    for label, keys in (("unexpected", unexpected), ("missing", missing), ("wrong shape", mismatched))
                    if keys]
        raise GroupsweepError(
            f"checkpoint {str(file)!r} does not fit model {spec.name!r}: {'; '.join(problems)}"
        )


def build_timm_model(spec: ModelSpec, num_classes: int, *, pretrained: bool = False, model_path=None,
                     vocab_size: int | None = None) -> TimmGroupModel:
    """Build ``spec`` with timm for ``num_classes`` classes, loading weights per ``checkpoint_source``."""
    # deferred: timm loads only for image models
    import timm

    if vocab_size is not None:
        raise GroupsweepError(f"vocab_size applies to text models; {spec.name!r} is an image model")
    source = checkpoint_source(spec, pretrained, model_path)
    model = timm.create_model(spec.arch, pretrained=False, num_classes=num_classes, **spec.arch_args)
    if source is not None:
        load_timm_checkpoint(model, source, spec)
    return TimmGroupModel(spec, model)
