"""The configuration of one finetuning run (one trial of a sweep)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from trainables.d3m import D3MOptions
from trainables.errors import GroupsweepError, choose

SCHEDULES = ("cosine", "linear", "constant")
OPTIMIZERS = ("adamw", "sgd")
PRECISIONS = ("no", "fp16", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines one finetuning run; JSON-able, so it is also a Ray Tune trial config.

    Defaults are the paper's ERM hyperparameters (Table 4: AdamW, lr 1e-5, weight decay 1e-4,
    batch 32, cosine schedule) except ``epochs``; sweep presets set per-dataset values.
    ``optimizer='sgd'`` with ``last_layer_only=True`` is the paper's last-layer training (lr 1e-3).
    ``d3m`` holds the options of the ``d3m`` / ``auto-d3m`` methods (``trainables.d3m.D3MOptions``, validated
    here); other methods ignore them, as ``adamw`` ignores ``momentum``.
    """

    dataset: str = "synthetic-waterbirds"
    dataset_options: dict = field(default_factory=dict)
    data_root: str | None = None
    model: str = "toy-convnextv2-s"
    pretrained: bool = False
    model_path: str | None = None
    method: str = "none"
    ratio: float | None = None
    d3m: dict = field(default_factory=dict)
    seed: int = 0
    epochs: int = 5
    lr: float = 1e-5
    weight_decay: float = 1e-4
    momentum: float = 0.9
    batch_size: int = 32
    schedule: str = "cosine"
    optimizer: str = "adamw"
    last_layer_only: bool = False
    mixed_precision: str = "no"
    eval_batch_size: int = 256
    num_threads: int | None = None
    profile: bool = False

    def __post_init__(self):
        choose("schedule", self.schedule, SCHEDULES)
        choose("optimizer", self.optimizer, OPTIMIZERS)
        choose("mixed_precision", self.mixed_precision, PRECISIONS)
        for name in ("epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise GroupsweepError(f"{name} must be a positive integer, got {value!r}")
        for name in ("lr", "weight_decay", "momentum"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise GroupsweepError(f"{name} must be a non-negative number, got {value!r}")
        if self.lr == 0:
            raise GroupsweepError("lr must be positive, got 0")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise GroupsweepError(f"seed must be a non-negative integer, got {self.seed!r}")
        D3MOptions.from_dict(self.d3m)
        if not isinstance(self.dataset_options, dict):
            raise GroupsweepError(f"dataset_options must be a mapping, got {self.dataset_options!r}")
        if not isinstance(self.profile, bool):
            raise GroupsweepError(f"profile must be true or false, got {self.profile!r}")
        if self.num_threads is not None and (not isinstance(self.num_threads, int) or self.num_threads < 1):
            raise GroupsweepError(f"num_threads must be a positive integer or null, got {self.num_threads!r}")

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Build a config from a mapping, refusing unknown keys with a one-line error.

        Keys that Ray Tune or the sweep add to a trial config (``trial_name`` and any key starting
        with ``_``) are ignored.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        known = {}
        for key, value in values.items():
            if key == "trial_name" or key.startswith("_"):
                continue
            if key not in names:
                raise GroupsweepError(f"unknown training setting {key!r}; allowed: {', '.join(names)}")
            known[key] = value
        return cls(**known)

    def to_dict(self) -> dict:
        """The config as a plain JSON-able dict."""
        return dataclasses.asdict(self)
