"""The model interface every sweep trains: ``GroupModel``, a library model split into backbone and head.

The family modules (``timm_family``, ``bert_family``) subclass it for their library; the registry of
named models is ``trainables.models.registry`` and ``trainables.models.build`` builds its entries.
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.models.registry import ModelSpec


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

    # Substrings of the names of the parameters trained without weight decay (``finetune.make_optimizer``): none
    # for the image models (the authors' image code decays every weight); ``BertGroupModel`` names its own.
    no_weight_decay: tuple[str, ...] = ()

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

    def set_last_layer_only(self) -> GroupModel:
        """Freeze everything but the head and keep the backbone in eval mode from now on."""
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        for parameter in self.head.parameters():
            parameter.requires_grad_(True)
        self.last_layer_only = True
        return self.train(self.training)

    def train(self, mode: bool = True) -> GroupModel:
        """Set train/eval mode; in last-layer-only mode the backbone stays in eval mode."""
        super().train(mode)
        if self.last_layer_only:
            self.backbone.eval()
            self.head.train(mode)
        return self
