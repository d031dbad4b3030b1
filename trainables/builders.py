"""What a config builds: its dataset, its tokenizer, its model and the model inputs of each split.

Every consumer that needs the run's data and network as the run itself had them (the finetuning loop,
D3M's attribution, spectral feature extraction) builds them here, so they are built one way only.
"""

from __future__ import annotations

import json

from trainables.config import TrainConfig
from trainables.data import GroupDataset, load_dataset
from trainables.inputs import ModelInputs, build_model_inputs, text_corpus
from trainables.models import GroupModel, build_model
from trainables.tokenization import build_tokenizer


def dataset_key(config: TrainConfig | dict) -> str:
    """What identifies the dataset a config loads (its name, loader options and data root), as a string:
    configs with equal keys load equal datasets, so a sweep can load each once and share it."""
    values = config.to_dict() if isinstance(config, TrainConfig) else config
    return json.dumps([values["dataset"], values.get("dataset_options") or {}, values.get("data_root")],
                      sort_keys=True, default=str)


def load_config_dataset(config: TrainConfig) -> GroupDataset:
    """Load the dataset a config names, passing ``data_root`` as the loader's ``root`` when it has one."""
    options = dict(config.dataset_options)
    if config.data_root is not None:
        options.setdefault("root", config.data_root)
    return load_dataset(config.dataset, **options)


def build_model_and_inputs(config: TrainConfig, dataset: GroupDataset) -> tuple[GroupModel, ModelInputs]:
    """The model (``config``'s architecture and initial weights, last-layer-only when the config says so) and
    the per-split ``ModelInputs`` of ``dataset``, built as every run of ``config`` builds them (the
    tokenizer included for text)."""
    tokenizer = None
    if dataset.modality == "text":
        tokenizer = build_tokenizer(config.model, model_path=config.model_path, corpus=text_corpus(dataset))
    model = build_model(config.model, dataset.n_classes, pretrained=config.pretrained, model_path=config.model_path,
                        vocab_size=len(tokenizer) if tokenizer is not None else None)
    if config.last_layer_only:
        model.set_last_layer_only()
    return model, build_model_inputs(dataset, model.modality, tokenizer)
