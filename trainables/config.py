"""The configuration types of one finetuning run (one trial of a sweep): ``TrainConfig`` and the options of
the data-selection methods it may name, ``D3MOptions`` (GroupDRO's, JTT's and DFR's few settings are flat
``TrainConfig`` fields, ``groupdro_*``, ``jtt_*`` and ``dfr_*``, so a search can sample them).

Both are plain, JSON-able, validated data: every default of a run lives here, and nothing in this module
trains, loads or imports anything heavy, so every layer can read a config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from trainables.balancing import check_method
from trainables.errors import GroupsweepError, choose, is_integer, is_real, positive_integer

SCHEDULES = ("cosine", "linear", "constant")
# How often the learning-rate schedule advances: after every optimizer step, or once after every epoch
# (the authors' code for BERT: transformers' linear schedule stepped once per epoch).
SCHEDULE_STEPS = ("step", "epoch")
OPTIMIZERS = ("adamw", "adam", "sgd")
PRECISIONS = ("no", "fp16", "bf16")
# When the training split (and the subset trained on) is evaluated: the last epoch only, every epoch, or
# every N epochs (an integer) and the last; val and test are evaluated every epoch regardless.
EVAL_TRAIN_WORDS = ("final", "every")
# When the full training state is checkpointed: every N epochs (an integer) and the last, or the last only.
CHECKPOINT_WORDS = ("end",)
REMOVE_NEGATIVE = "negative"
# DFR (Kirichenko et al. 2023): the variants (the last layer retrained on the validation split, or on the
# training split), the regularisation strengths C tried (the authors' ``C_OPTIONS``) and the ensemble size
# of each variant when ``dfr_ensemble`` is null (the authors' ``num_retrains``: 20 and 10).
DFR_VARIANTS = ("val_tr", "tr_tr")
DFR_C_GRID = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)
DFR_ENSEMBLE = {"val_tr": 20, "tr_tr": 10}
# The largest seed numpy and torch accept (2**32 - 1).
MAX_SEED = 2**32 - 1
# Settings only their own method reads (D3M's options, JTT's, DFR's, GroupDRO's), each with the methods that read
# it: a base ERM trial whose config differs from a method's trial in them only is that trial's base model
# (``trainables.base_model``), and a search over one in another method's cell only repeats configurations.
METHODS_READING = {"d3m": ("d3m", "auto-d3m"), "jtt_epochs": ("jtt",), "jtt_lambda_up": ("jtt",),
                   "dfr_variant": ("dfr",), "dfr_ensemble": ("dfr",), "dfr_c_grid": ("dfr",),
                   "groupdro_eta": ("groupdro",), "groupdro_adjustment": ("groupdro",)}
METHOD_OPTION_FIELDS = tuple(METHODS_READING)
# Settings that change what a run reports, saves or measures, never what it trains: a state resumes under
# other values (``finetune.check_resume_state``), and a base ERM trial may differ from a method's base
# config in them (``trainables.base_model``).
NON_TRAINING_FIELDS = ("profile", "eval_train", "checkpoint_every", "eval_batch_size")
# The optimizers that read each optimizer-specific setting.
OPTIMIZERS_READING = {"momentum": ("sgd",)}


@dataclass(frozen=True)
class D3MOptions:
    """Settings of D3M / AUTO-D3M (the ``d3m`` mapping of a trial config; every key optional).

    models: T, the models whose scores are averaged: the base model, plus T − 1 ERM runs with seeds
      ``seed + t * SEED_STRIDE`` trained on demand.
    proj_dim: k, the Gaussian projection's dimension; null keeps raw gradients (small models only).
    ridge: λ relative to the kernel scale (λ = ridge · trace(ΦᵀΦ) / k).
    last_layer: differentiate only the final linear layer (cheap; exact when the backbone is frozen).
    beta: temperature β of the group-loss softmax.
    remove: ``negative`` (every example with A_i < 0) or an integer k (the k lowest A_i).
    max_removed: the largest fraction of any class that may be removed, in (0, 1]; 1 is the paper's rule (no
      cap), and a removal that would empty a class is refused.
    pseudo_fraction: AUTO-D3M's share of each class in the pseudo-minority group, in (0, 1).
    batch_size: examples per per-example-gradient batch.
    """

    models: int = 1
    proj_dim: int | None = 512
    ridge: float = 0.01
    last_layer: bool = False
    beta: float = 1.0
    remove: str | int = REMOVE_NEGATIVE
    max_removed: float = 0.5
    pseudo_fraction: float = 0.35
    batch_size: int = 32

    def __post_init__(self):
        for name in ("models", "batch_size"):
            _check_option(name, getattr(self, name), is_integer(getattr(self, name), 1), "an integer >= 1")
        _check_option("proj_dim", self.proj_dim, self.proj_dim is None or is_integer(self.proj_dim, 1),
                      "an integer >= 1 or null (no projection)")
        _check_option("ridge", self.ridge, is_real(self.ridge, 0), "a finite number >= 0")
        _check_option("last_layer", self.last_layer, isinstance(self.last_layer, bool), "true or false")
        _check_option("beta", self.beta, is_real(self.beta, 0), "a finite number >= 0")
        _check_option("remove", self.remove, self.remove == REMOVE_NEGATIVE or is_integer(self.remove, 0),
                      f"{REMOVE_NEGATIVE!r} or an integer k >= 0")
        _check_option("max_removed", self.max_removed, is_real(self.max_removed, 0, 1) and self.max_removed > 0,
                      "a number in (0, 1]")
        _check_option("pseudo_fraction", self.pseudo_fraction, is_real(self.pseudo_fraction, 0, 1, strict=True),
                      "a number strictly between 0 and 1")

    @classmethod
    def from_dict(cls, values) -> "D3MOptions":
        """Options from a mapping (None or {} gives the defaults); one-line ``GroupsweepError`` on a bad key or value."""
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise GroupsweepError(f"d3m options must be a mapping, got {values!r}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in names:
                raise GroupsweepError(f"unknown d3m option {key!r}; allowed: {', '.join(names)}")
        return cls(**values)

    def to_dict(self) -> dict:
        """The options as a plain JSON-able dict."""
        return dataclasses.asdict(self)


def _due(epoch: int, epochs: int, every: int) -> bool:
    """Whether a per-N-epochs action is due after ``epoch`` of ``epochs``: every ``every`` epochs and the last."""
    return epoch % every == 0 or epoch >= epochs


def _check_option(name: str, value, ok: bool, allowed: str) -> None:
    if not ok:
        raise GroupsweepError(f"d3m option {name}={value!r} is invalid; allowed: {allowed}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines one finetuning run; JSON-able, so it is also a Ray Tune trial config.

    Defaults are the paper's ERM hyperparameters (Table 4: AdamW, lr 1e-5, weight decay 1e-4,
    batch 32, cosine schedule) except ``epochs``; sweep presets set per-dataset values.
    ``optimizer='sgd'`` with ``last_layer_only=True`` is the paper's last-layer training (lr 1e-3).
    ``d3m`` holds the options of the ``d3m`` / ``auto-d3m`` methods (``D3MOptions``, validated
    here); other methods ignore them, as ``adamw`` ignores ``momentum``. JTT's and DFR's settings
    (``trainables.jtt``, ``trainables.dfr``; other methods ignore them too):

    - ``jtt_epochs``: T, the identification model is epoch T (1 <= T <= ``epochs``) of this run's ERM
      counterpart (method ``none``); ``jtt_lambda_up``: λ_up, every training example that model
      misclassifies is drawn λ_up times per epoch (the others once; 1 is ERM).
    - ``dfr_variant``: ``val_tr`` (the last layer retrained on group-balanced subsets of the validation
      split, C chosen on half of it) or ``tr_tr`` (retrained on balanced subsets of the training split, C
      chosen on the validation split); ``dfr_ensemble``: how many balanced subsets' regressions are
      averaged (null: 20 for ``val_tr``, 10 for ``tr_tr``, as the authors' code); ``dfr_c_grid``: the
      inverse L1 strengths C tried.
    - ``groupdro_eta`` (η, the step size of the group weights' exponentiated-gradient update; the authors'
      default 0.01) and ``groupdro_adjustment`` (C of the generalisation adjustment C / sqrt(n_g); 0 = none)
      are the ``groupdro`` method's settings (``trainables.groupdro``). Being plain numbers, a search may
      sample them (``{loguniform: [0.001, 0.1]}``).

    ``eval_train``: when the full training split and the subset trained on are evaluated (``train/*``,
    ``train_subset/*`` metrics): ``final`` (the last epoch; the default, all the paper's figures need),
    ``every`` epoch, or an integer N (every N epochs and the last); on other epochs those metrics are
    reported as NaN. ``checkpoint_every``: every N epochs (and always the last) the full training state
    is checkpointed; ``end``: the last epoch only. A trial killed mid-run resumes from its latest
    checkpoint, losing at most N - 1 epochs, and ends bit-identical on the CPU. Neither setting changes
    the training itself (``evaluates_train``, ``checkpoints``).

    ``schedule`` (``cosine``, ``linear``, ``constant``) decays the learning rate from ``lr`` to
    ``final_lr_factor`` × ``lr`` over the run, advancing after every optimizer step (``schedule_step:
    step``, the default) or once after every epoch (``epoch``). The defaults (per step, down to 0) are
    transformers' schedules without warm-up; ``schedule: linear, schedule_step: epoch`` is the authors' BERT
    schedule, transformers' ``get_scheduler("linear", num_warmup_steps=0, num_training_steps=epochs)`` stepped
    once per epoch.

    GPU settings (``benchmarks/gpu_step.py`` measures each): ``mixed_precision`` (``bf16``, ``fp16`` on a
    GPU; Accelerate's autocast), ``channels_last`` (image models: weights and training batches in
    channels-last memory order, what cuDNN's convolutions prefer; on a CPU it also trained the toy ResNets
    1.27-1.36x faster, README "Fractional GPU packing") and ``compile_model`` (the model compiled
    by ``torch.compile`` through Accelerate's ``dynamo_backend``). The last two change how the same
    computation is laid out and scheduled, not what is computed.
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
    groupdro_eta: float = 0.01
    groupdro_adjustment: float = 0.0
    jtt_epochs: int = 1
    jtt_lambda_up: int = 6
    dfr_variant: str = "val_tr"
    dfr_ensemble: int | None = None
    dfr_c_grid: list = field(default_factory=lambda: list(DFR_C_GRID))
    seed: int = 0
    epochs: int = 5
    lr: float = 1e-5
    weight_decay: float = 1e-4
    momentum: float = 0.9
    batch_size: int = 32
    schedule: str = "cosine"
    schedule_step: str = "step"
    final_lr_factor: float = 0.0
    optimizer: str = "adamw"
    last_layer_only: bool = False
    mixed_precision: str = "no"
    channels_last: bool = False
    compile_model: bool = False
    eval_batch_size: int = 256
    num_threads: int | None = None
    profile: bool = False
    eval_train: str | int = "final"
    checkpoint_every: int | str = 1

    def __post_init__(self):
        check_method(self.method, self.ratio)
        choose("schedule", self.schedule, SCHEDULES)
        choose("schedule_step", self.schedule_step, SCHEDULE_STEPS)
        if not is_real(self.final_lr_factor, 0, 1):
            raise GroupsweepError(f"final_lr_factor must be a number from 0 to 1, got {self.final_lr_factor!r}")
        choose("optimizer", self.optimizer, OPTIMIZERS)
        choose("mixed_precision", self.mixed_precision, PRECISIONS)
        for name in ("epochs", "batch_size", "eval_batch_size"):
            positive_integer(name, getattr(self, name))
        if not is_real(self.lr, 0) or self.lr == 0:
            raise GroupsweepError(f"lr must be a positive number, got {self.lr!r}")
        for name in ("weight_decay", "groupdro_eta", "groupdro_adjustment"):
            value = getattr(self, name)
            if not is_real(value, 0):
                raise GroupsweepError(f"{name} must be a non-negative number, got {value!r}")
        if not is_real(self.momentum, 0) or self.momentum >= 1:
            raise GroupsweepError(f"momentum must be a number from 0 to below 1 (SGD's velocity grows without bound "
                                  f"from 1 on), got {self.momentum!r}")
        if not is_integer(self.seed, 0) or self.seed > MAX_SEED:
            raise GroupsweepError(f"seed must be an integer from 0 to {MAX_SEED} (numpy's and torch's range), "
                                  f"got {self.seed!r}")
        D3MOptions.from_dict(self.d3m)
        for name in ("jtt_epochs", "jtt_lambda_up"):
            positive_integer(name, getattr(self, name))
        if self.method == "jtt" and self.jtt_epochs > self.epochs:
            raise GroupsweepError(f"jtt_epochs {self.jtt_epochs} exceeds epochs {self.epochs}: JTT's identification "
                                  f"model is epoch jtt_epochs of the run's ERM counterpart")
        choose("dfr_variant", self.dfr_variant, DFR_VARIANTS)
        if self.dfr_ensemble is not None:
            positive_integer("dfr_ensemble", self.dfr_ensemble)
        if (not isinstance(self.dfr_c_grid, (list, tuple)) or not self.dfr_c_grid
                or not all(is_real(c, 0) and c > 0 for c in self.dfr_c_grid)):
            raise GroupsweepError(f"dfr_c_grid must be a non-empty list of positive numbers, got {self.dfr_c_grid!r}")
        object.__setattr__(self, "dfr_c_grid", [float(c) for c in self.dfr_c_grid])  # JSON's form, always
        if not isinstance(self.dataset_options, dict):
            raise GroupsweepError(f"dataset_options must be a mapping, got {self.dataset_options!r}")
        for name in ("pretrained", "last_layer_only", "profile", "channels_last", "compile_model"):
            if not isinstance(getattr(self, name), bool):
                raise GroupsweepError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("data_root", "model_path"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise GroupsweepError(f"{name} must be a path (a non-empty string) or null, got {value!r}")
        if self.num_threads is not None and not is_integer(self.num_threads, 1):
            raise GroupsweepError(f"num_threads must be a positive integer or null, got {self.num_threads!r}")
        if self.eval_train not in EVAL_TRAIN_WORDS and not is_integer(self.eval_train, 1):
            raise GroupsweepError(f"eval_train must be 'final', 'every' or a positive integer N (every N epochs), "
                                  f"got {self.eval_train!r}")
        if self.checkpoint_every not in CHECKPOINT_WORDS and not is_integer(self.checkpoint_every, 1):
            raise GroupsweepError(f"checkpoint_every must be a positive integer N (every N epochs) or 'end', "
                                  f"got {self.checkpoint_every!r}")

    @property
    def dfr_models(self) -> int:
        """How many balanced subsets DFR's ensemble averages: ``dfr_ensemble``, or its variant's default."""
        return self.dfr_ensemble if self.dfr_ensemble is not None else DFR_ENSEMBLE[self.dfr_variant]

    def evaluates_train(self, epoch: int) -> bool:
        """Whether ``epoch`` evaluates the training split (``eval_train``): always the last epoch."""
        return _due(epoch, self.epochs, {"final": self.epochs, "every": 1}.get(self.eval_train, self.eval_train))

    def checkpoints(self, epoch: int) -> bool:
        """Whether ``epoch`` saves a checkpoint (``checkpoint_every``): always the last epoch."""
        return _due(epoch, self.epochs, self.epochs if self.checkpoint_every == "end" else self.checkpoint_every)

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


# The batch sizes, global over a trial's data-parallel workers (``check_batch_split``).
BATCH_KEYS = ("batch_size", "eval_batch_size")


def check_precision_device(mixed_precision: str, gpu: bool, why: str = "") -> None:
    """A one-line ``GroupsweepError`` for ``mixed_precision`` ``fp16`` where the run has no GPU (``gpu`` False;
    ``why`` says why, appended to "needs a GPU"): its loss scaling runs on one. ``bf16`` and ``no`` run anywhere."""
    if mixed_precision == "fp16" and not gpu:
        raise GroupsweepError(f"mixed_precision 'fp16' needs a GPU{why}; use 'bf16' or 'no' on CPU")


def check_batch_split(config: TrainConfig, processes: int, names: tuple = BATCH_KEYS) -> None:
    """A one-line ``GroupsweepError`` unless ``batch_size`` and ``eval_batch_size`` (``names``, by default both:
    with several data-parallel workers, global batches: each worker takes its share) split evenly over the
    ``processes`` workers."""
    for name in names:
        if getattr(config, name) % processes:
            raise GroupsweepError(f"{name} {getattr(config, name)} does not split over {processes} workers: with "
                                  f"several workers it is the global batch; give a multiple of {processes}")
