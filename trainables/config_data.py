"""The dataset a trial config names: its identity (``dataset_key``) and its loading (``load_config_dataset``).

Torch-free, like ``trainables.data``: the sweep driver loads each dataset once and shares it with the trials
through Ray's object store without importing the training code.
"""

from __future__ import annotations

import json

from trainables.config import TrainConfig
from trainables.data import GroupDataset, load_dataset
from trainables.data.base import MODALITIES
from trainables.errors import GroupsweepError
from trainables.models import get_spec


def dataset_key(config: TrainConfig | dict) -> str:
    """What identifies the dataset a config loads (its name, loader options and data root), as a string:
    configs with equal keys load equal datasets, so a sweep can load each once and share it."""
    values = config.to_dict() if isinstance(config, TrainConfig) else config
    return json.dumps([values["dataset"], values.get("dataset_options") or {}, values.get("data_root")],
                      sort_keys=True, default=str)


def check_model_inputs(dataset: str, model: str) -> None:
    """Refuse, in one line, a model of the other modality than the dataset's inputs (a text model on an
    image dataset, ...) when the dataset's registration states its modality (``custom`` does not: its files
    tell, and the run checks)."""
    holds, takes = MODALITIES.get(dataset), get_spec(model).modality
    if holds is not None and holds != takes:
        raise GroupsweepError(f"model {model!r} takes {takes} inputs but dataset {dataset!r} holds {holds} inputs")


def load_config_dataset(config: TrainConfig) -> GroupDataset:
    """Load the dataset a config names, passing ``data_root`` as the loader's ``root`` when it has one."""
    options = dict(config.dataset_options)
    if config.data_root is not None:
        options.setdefault("root", config.data_root)
    return load_dataset(config.dataset, **options)
