"""Building registry models: ``build_model`` and the parameter count of any entry without weights.

``BUILDERS`` maps an entry's ``library`` to the family module's builder
``builder(spec, num_classes, pretrained=, model_path=, vocab_size=) -> GroupModel``.
"""

from __future__ import annotations

import torch

from trainables.models.base import GroupModel
from trainables.models.bert_family import build_bert_model
from trainables.models.registry import get_spec
from trainables.models.timm_family import build_timm_model

BUILDERS = {"timm": build_timm_model, "transformers": build_bert_model}


def build_model(name: str, num_classes: int, *, pretrained: bool = False, model_path=None,
                vocab_size: int | None = None) -> GroupModel:
    """Build registry model ``name`` with a ``num_classes``-way linear head.

    ``pretrained=True`` loads the entry's hub weights from the local Hugging Face cache only (never the
    network) and raises a one-line ``GroupsweepError`` naming the model, its hub id and the fix when they
    are absent. ``model_path`` (a local checkpoint file or directory, see the family modules) takes
    precedence and implies pretrained weights. The head is always new and randomly initialised unless
    the checkpoint holds one of the right shape. ``vocab_size`` sizes the token embeddings of text models
    (pass ``len(tokenizer)``); image models take none. Unknown names raise a one-line error listing all.
    """
    spec = get_spec(name)
    return BUILDERS[spec.library](spec, num_classes, pretrained=pretrained, model_path=model_path,
                                  vocab_size=vocab_size)


def parameter_count(name: str, num_classes: int = 2, vocab_size: int | None = None) -> int:
    """Parameters of ``name`` with a ``num_classes``-way head, counted on the meta device (no memory,
    no weights, no download)."""
    with torch.device("meta"):
        return build_model(name, num_classes, vocab_size=vocab_size).num_parameters
