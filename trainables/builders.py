"""What a config builds: its tokenizer, its model and the model inputs of each split (its dataset:
``trainables.config_data``).

Every consumer that needs the run's data and network as the run itself had them (the finetuning loop,
D3M's attribution, spectral feature extraction) builds them here, so they are built one way only.
"""

from __future__ import annotations

from trainables.config import TrainConfig
from trainables.data import GroupDataset
from trainables.inputs import ModelInputs, build_model_inputs, text_corpus
from trainables.models.base import GroupModel
from trainables.models.build import build_model
from trainables.tokenization import build_tokenizer


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
    return model, build_model_inputs(dataset, model.modality, tokenizer, cache_dir=dataset.cache_dir)
