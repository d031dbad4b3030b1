"""The finetuning loop: one balanced ERM run (or one GroupDRO run) on Accelerate, evaluated on val and test
after every epoch and on the training split when ``config.eval_train`` says so (by default after the last
epoch).

A plain function, usable without Ray: ``finetune(config, on_epoch=...)``. The Ray trainable wraps it,
turning each ``EpochResult`` into a ``ray.tune.report``, with a checkpoint of ``EpochResult.state()`` on the
epochs ``EpochResult.checkpoint`` names (``config.checkpoint_every``).
Shaped after Accelerate's ``nlp_example.py``: build data, model, optimizer; ``accelerator.prepare``;
train with ``accelerator.backward``; evaluate with ``gather_for_metrics``. Nothing foreign is inside the
loop: the dataset comes from ``trainables.config_data``, the model and inputs from ``trainables.builders``,
the training plan from the caller (``trainables.plans.training_plan``), the metrics from
``trainables.metrics``; it knows neither Ray nor D3M nor the trial directory.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed

from trainables.balancing import BalancingPlan, make_plan, make_sampler
from trainables.builders import build_model_and_inputs
from trainables.config import NON_TRAINING_FIELDS, TrainConfig, check_batch_split, check_precision_device
from trainables.config_data import load_config_dataset
from trainables.data import GroupDataset
from trainables.errors import GroupsweepError
from trainables.groupdro import GroupDRO
from trainables.inputs import ModelInputs, example_loader
from trainables.metrics import evaluate_predictions
from trainables.models.base import GroupModel
from trainables.profiling import EpochProfiler

log = logging.getLogger("groupsweep.finetune")

# Evaluated splits, in the order of their keys in every reported row: val and test (every epoch), then train
# (real values or NaN). Ray's progress.csv fixes its columns at a trial's first report and appends a resumed
# trial's rows without a header, so a row with its keys in another order would put values under wrong names.
EVAL_SPLITS = ("val", "test", "train")


class DivergenceError(RuntimeError):
    """The training loss, or the trained model's validation loss, became NaN or infinite; the run cannot
    continue."""


@dataclass
class EpochResult:
    """What one finished epoch hands to the ``on_epoch`` callback.

    ``metrics``: flat metric dict (keys such as ``val/wga``, ``test/acc_group_3``, ``optim/loss``).
    ``predictions``: predicted classes of the val and test splits (int16, in split order).
    ``labels``: val/test classes, attributes and groups, plus ``n_classes`` and ``n_spurious``.
    ``state``: call it to get the full resumable state (a torch.save-able dict).
    ``checkpoint``: whether the run's checkpoint schedule (``TrainConfig.checkpoints``) saves this epoch.
    """

    epoch: int
    metrics: dict
    predictions: dict
    labels: dict
    state: Callable[[], dict]
    checkpoint: bool = True


def sampler_seed(seed: int, epoch: int) -> int:
    """Seed of the training sampler in ``epoch``: a function of the run seed and epoch only,
    so a resumed run draws exactly the batches an uninterrupted run would."""
    return (seed * 1_000_003 + epoch) % (2**63)


def split_labels(dataset: GroupDataset) -> dict:
    """Labels, attributes and groups of the val and test splits (what predictions are scored against)."""
    labels = {"n_classes": dataset.n_classes, "n_spurious": dataset.n_spurious}
    for split in ("val", "test"):
        labels[f"{split}_y"] = dataset.splits[split].y
        labels[f"{split}_s"] = dataset.splits[split].s
        labels[f"{split}_g"] = dataset.groups(split)
    return labels


def make_accelerator(config: TrainConfig, cpu: bool | None) -> Accelerator:
    """An Accelerator for this run; ``cpu=None`` uses a GPU when torch sees one. ``compile_model`` sets
    Accelerate's ``dynamo_backend`` to ``inductor`` (``prepare`` then compiles the model). Its prepared
    DataLoaders copy batches to the device without blocking (``non_blocking``; with ``pin_memory`` on a GPU,
    see ``finetune``): a blocking copy waits for the kernels already queued, so the GPU would sit idle while
    the host fetches the next batch. With several data-parallel processes, ``batch_size`` (and
    ``eval_batch_size``) is the global batch, each process taking its share (``split_batches``): the number of
    workers changes neither the batch nor the steps of an epoch (``check_batch_split``).

    Accelerate keeps one device, precision and dynamo backend per process; a process that already ran with
    other settings gets a one-line ``GroupsweepError`` (the launcher therefore reuses trial processes only
    across trials of one precision and compile setting).
    """
    if cpu is None:
        cpu = not torch.cuda.is_available()
    check_precision_device(config.mixed_precision, gpu=not cpu)
    backend = "inductor" if config.compile_model else "no"
    problem = None
    try:
        accelerator = Accelerator(cpu=cpu, mixed_precision=config.mixed_precision, dynamo_backend=backend,
                                  dataloader_config=DataLoaderConfiguration(non_blocking=True, split_batches=True))
        if str(accelerator.state.dynamo_plugin.backend.value).lower() != backend:
            problem = f"compile_model={config.compile_model}"
    except ValueError:  # Accelerate's "AcceleratorState has already been initialized"
        problem = f"mixed_precision={config.mixed_precision!r}"
    if problem is not None:
        raise GroupsweepError(f"this process already trained with other device, precision or compile settings; "
                              f"run {problem} in a new process")
    check_batch_split(config, accelerator.num_processes)
    return accelerator


def parameter_groups(named_parameters, weight_decay: float, exempt: tuple[str, ...]) -> list[dict]:
    """The optimizer's parameter groups of the trainable ones of ``named_parameters`` (``(name, parameter)``
    pairs): ``weight_decay`` on each, except those whose name contains one of the substrings ``exempt`` (a
    second group with weight decay 0); an empty group is left out."""
    decayed, exempted = [], []
    for name, parameter in named_parameters:
        if parameter.requires_grad:
            (exempted if any(part in name for part in exempt) else decayed).append(parameter)
    return [group for group in ({"params": decayed, "weight_decay": weight_decay},
                                {"params": exempted, "weight_decay": 0.0}) if group["params"]]


def make_optimizer(config: TrainConfig, model: GroupModel) -> torch.optim.Optimizer:
    """The optimizer of ``config`` over the model's trainable parameters, weight decay on all but the model's
    ``no_weight_decay`` ones (``parameter_groups``): ``adamw`` (decoupled weight decay, LaBonte et al.'s
    finetuning), ``adam`` (weight decay as an L2 term in the gradient, the D3M paper's and the GroupDRO / JTT
    authors' optimizer) or ``sgd`` with ``momentum`` (LaBonte et al.'s last-layer training, with momentum 0:
    their code sets an attribute that torch's SGD never reads). Adam and AdamW run torch's multi-tensor
    (``foreach``) steps on every device: a GPU's default; on the CPU, where torch defaults to a Python loop over
    the parameters, the same arithmetic on each tensor (the same bits) in a few calls per step, 1.4-1.8x
    faster steps for the toy models (README, "Performance": optimizer steps). SGD keeps torch's default (on
    the CPU its multi-tensor steps were no faster: ``benchmarks/optimizer_step.py``)."""
    groups = parameter_groups(model.named_parameters(), config.weight_decay, model.no_weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, foreach=True)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, foreach=True)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)


def schedule_factor(schedule: str, step: int, total_steps: int, final: float = 0.0) -> float:
    """Learning-rate multiplier after ``step`` of ``total_steps`` schedule steps, without warm-up, decaying
    from 1 to ``final``: ``cosine`` final + (1 - final) 0.5 (1 + cos(pi t)) and ``linear``
    max(final, 1 - (1 - final) t) with t = step / total_steps, ``constant`` 1. With ``final=0`` these are
    transformers' ``get_cosine_schedule_with_warmup`` / ``get_linear_schedule_with_warmup`` with no
    warm-up steps; ``linear`` is torch's ``LinearLR(start_factor=1, end_factor=final, total_iters=total_steps)``."""
    progress = step / max(1, total_steps)
    if schedule == "cosine":
        return max(0.0, final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress)))
    if schedule == "linear":
        return max(final, 1.0 - (1.0 - final) * progress)
    return 1.0


def make_scheduler(config: TrainConfig, optimizer, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The run's learning-rate schedule: ``schedule_factor`` as a torch ``LambdaLR`` over the whole run,
    down to ``config.final_lr_factor``, in ``config.epochs * steps_per_epoch`` optimizer steps
    (``schedule_step: step``; the caller steps it after every optimizer step) or in ``config.epochs``
    epochs (``epoch``; stepped once after every epoch).

    (Closed-form lambdas rather than transformers' schedule helpers: importing transformers costs a
    second in every fresh trial process, image models included.)
    """
    total = config.epochs * (steps_per_epoch if config.schedule_step == "step" else 1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(
        schedule_factor, config.schedule, total_steps=total, final=config.final_lr_factor))


def rng_state() -> dict:
    """Every global random state that training consumes (augmentation, dropout)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what ``rng_state`` captured."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_resume_state(config: TrainConfig, state: dict) -> None:
    """Refuse a saved state from a different run: every setting but ``NON_TRAINING_FIELDS``
    must match (a state saved before a setting existed matches its default)."""
    defaults = TrainConfig().to_dict()
    saved = {**defaults, **state["config"]}
    current = config.to_dict()
    for key in NON_TRAINING_FIELDS:  # none changes the training itself
        saved.pop(key, None)
        current.pop(key, None)
    differing = sorted(k for k in current if saved.get(k) != current[k])
    if differing:
        raise GroupsweepError(
            f"checkpoint was saved by a run with different settings ({', '.join(differing)}); "
            "resume only with the config that produced it"
        )


def transformed_batches(loader, transform: Callable | None) -> Iterator:
    """``loader``'s training batches ``(inputs, targets, positions)``, with ``transform`` (the training batch
    transform: the image augmentation; None for none) applied to the inputs as each batch is taken."""
    for inputs, targets, positions in loader:
        yield (inputs if transform is None else transform(inputs)), targets, positions


@torch.inference_mode()
def predict(model, loader, accelerator, batch_transform: Callable | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of every example of an evaluation loader, in loader order (all processes gathered),
    under ``torch.inference_mode``, returned on the CPU. Image batches go in channels-last (the weights stay as
    they are): on the CPU that made the toy ResNets' forward pass 2.4-2.9x faster (README, "Evaluation cost").
    The batches' logits stay on the device until the split is done, then come over in one copy: a copy per
    batch would wait for that batch's forward pass, so the host could not fetch the next batch meanwhile."""
    model.eval()
    all_logits, all_labels = [], []
    for inputs, labels, _ in loader:
        if batch_transform is not None:
            inputs = batch_transform(inputs)
        if isinstance(inputs, torch.Tensor) and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with accelerator.autocast():
            logits = model(inputs)
        logits, labels = accelerator.gather_for_metrics((logits.float(), labels))
        all_logits.append(logits)
        all_labels.append(labels)
    return torch.cat(all_logits).cpu(), torch.cat(all_labels).cpu()


def split_metrics(prefix: str, logits: torch.Tensor, labels: torch.Tensor, groups: np.ndarray,
                  dataset: GroupDataset) -> dict:
    """Loss and every accuracy metric of one split, with keys ``{prefix}/...``."""
    weights = dataset.train_group_proportions() if dataset.average == "train-weighted" else None
    y_pred = logits.argmax(dim=1).numpy()
    metrics = evaluate_predictions(labels.numpy(), y_pred, groups, dataset.n_classes, dataset.n_groups,
                                   group_weights=weights)
    metrics["loss"] = float(F.cross_entropy(logits, labels))
    return {f"{prefix}/{key}": value for key, value in metrics.items()}


def output_metrics(outputs: dict, dataset: GroupDataset, plan: BalancingPlan) -> tuple[dict, dict]:
    """Metrics and val/test predictions from the ``(logits, labels)`` tensors of each split in ``outputs``
    (every example of the split, in order): ``{split}/...`` keys, and for ``train`` also ``train_subset/...``
    over the plan's distinct examples; predictions (int16 classes) of every split but ``train``."""
    metrics, predictions = {}, {}
    for split, (logits, labels) in outputs.items():
        groups = dataset.groups(split)
        metrics.update(split_metrics(split, logits, labels, groups, dataset))
        if split == "train":
            kept = np.unique(plan.indices)
            metrics.update(split_metrics("train_subset", logits[kept], labels[kept], groups[kept], dataset))
        else:
            predictions[split] = logits.argmax(dim=1).numpy().astype(np.int16)
    return metrics, predictions


def evaluate(model, eval_loaders: dict, accelerator, model_inputs: ModelInputs, dataset: GroupDataset,
             plan: BalancingPlan, train: bool = True) -> tuple[dict, dict]:
    """Metrics of val and test and, with ``train``, of the full training split and the subset trained on
    (without ``train`` those keys are present with NaN values); and val/test predictions. The keys come
    in the same order either way (``EVAL_SPLITS``), as Ray's ``progress.csv`` fixes its columns at the first
    report."""
    outputs = {split: predict(model, eval_loaders[split], accelerator, model_inputs.eval_batch_transform)
               for split in EVAL_SPLITS if split != "train" or train}
    metrics, predictions = output_metrics(outputs, dataset, plan)
    if not train:
        keys = [key.split("/", 1)[1] for key in metrics if key.startswith("val/")]
        metrics.update({f"{split}/{key}": math.nan for split in ("train", "train_subset") for key in keys})
    return metrics, predictions


def single_example_batch(model: torch.nn.Module, examples: int, batch_size: int) -> bool:
    """Whether an epoch of ``examples`` draws would end with a batch of one example that ``model`` cannot train on:
    BatchNorm in training mode needs two values per channel (the ResNets; a subset or mixture with n = k * batch
    + 1 examples). The loader then leaves that one draw out of the epoch (``drop_last``); nothing else changes."""
    return examples % batch_size == 1 and any(isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
                                              for module in model.modules())


def class_weighted_loss(logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None,
                        reduce: Callable | None = None, processes: int = 1) -> torch.Tensor:
    """The batch's cross-entropy, each example weighted by its class (``class_weights``; None: unweighted) and
    normalised by the weight sum of the whole batch (``upweighting``: equal in expectation to upsampling).

    One process (``reduce`` None): ``F.cross_entropy(weight=...)``, which is exactly that. Several
    data-parallel processes (``reduce`` sums a tensor over the ``processes``; DDP averages their gradients):
    each returns ``processes * sum(w * loss) / W``, ``W`` the weight sum of every process's part, so the
    averaged gradient is the whole batch's, not the mean of per-process normalisations."""
    if reduce is None or class_weights is None:
        return F.cross_entropy(logits.float(), targets, weight=class_weights)
    weights = class_weights[targets]
    losses = F.cross_entropy(logits.float(), targets, reduction="none")
    return processes * (weights * losses).sum() / reduce(weights.sum().detach())


def make_group_dro(config: TrainConfig, dataset: GroupDataset, plan: BalancingPlan, device) -> GroupDRO | None:
    """The run's ``GroupDRO`` (``groupdro`` method: ``groupdro_eta``, ``groupdro_adjustment``, n_g the group
    counts of the examples trained on), or None for every other method."""
    if config.method != "groupdro":
        return None
    counts = np.bincount(dataset.groups("train")[plan.indices], minlength=dataset.n_groups)
    return GroupDRO(counts, config.groupdro_eta, config.groupdro_adjustment, device=device)


def finetune(config: TrainConfig | dict, on_epoch: Callable[[EpochResult], None] | None = None,
             resume_state: dict | None = None, cpu: bool | None = None,
             dataset: GroupDataset | None = None, plan: BalancingPlan | None = None,
             stop_after: int | None = None) -> list[dict]:
    """Finetune ``config.model`` on ``config.dataset`` with ``config.method`` balancing; return per-epoch metrics.

    After each epoch, evaluates val and test, and the full training split (no augmentation) and the
    subset actually trained on when ``config.evaluates_train(epoch)`` (else their metrics are NaN), and
    calls ``on_epoch(EpochResult)``. Evaluation draws from no global random stream, so ``eval_train``
    never changes the training. ``resume_state`` (an ``EpochResult.state()``)
    continues exactly after its epoch: same weights, optimizer, schedule, sampler and random streams as
    an uninterrupted run. ``cpu=True`` forces the CPU (``None``: GPU if visible). ``dataset`` may pass an
    already loaded dataset (it must be the one the config names). ``plan`` is the run's training plan
    (``trainables.plans.training_plan``); without one, the class-balancing plan of ``config.method``
    (``balancing.make_plan``) is used, and a data-selection method is refused. The ``groupdro`` method
    minimises the GroupDRO loss (``trainables.groupdro``); its group weights are part of the state and are
    reported after every epoch as ``optim/groupdro_q_group_{g}``. ``stop_after``: end after that epoch,
    the run cut short (its schedule still spans ``config.epochs``): what JTT's identification model is.
    Raises ``DivergenceError``
    when the training loss, or the validation loss after an epoch, is not finite; ``GroupsweepError`` on bad
    settings.
    """
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    if resume_state is not None:
        check_resume_state(config, resume_state)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    accelerator = make_accelerator(config, cpu)
    set_seed(config.seed)

    dataset = dataset if dataset is not None else load_config_dataset(config)
    if plan is None:
        plan = make_plan(dataset.splits["train"].y, dataset.groups("train"), config.method, config.ratio,
                         config.seed, n_classes=dataset.n_classes)
    model, model_inputs = build_model_and_inputs(config, dataset)
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)

    generator = torch.Generator()
    pin_memory = accelerator.device.type == "cuda"  # page-locked batches: asynchronous copies to the GPU
    sampler = make_sampler(plan, generator)
    train_loader = example_loader(model_inputs.train_dataset(plan.indices), config.batch_size, sampler=sampler,
                                  pin_memory=pin_memory, drop_last=single_example_batch(model, len(sampler),
                                                                                        config.batch_size))
    # Own generators: a DataLoader iterator otherwise draws its base seed from torch's global stream, and
    # training (augmentation, dropout) would then depend on which splits were evaluated.
    eval_loaders = {split: example_loader(model_inputs.eval_dataset(split), config.eval_batch_size,
                                          generator=torch.Generator(), pin_memory=pin_memory)
                    for split in EVAL_SPLITS}
    optimizer = make_optimizer(config, model)
    model, optimizer, train_loader, *eval_list = accelerator.prepare(model, optimizer, train_loader,
                                                                      *eval_loaders.values())
    eval_loaders = dict(zip(EVAL_SPLITS, eval_list))
    scheduler = make_scheduler(config, optimizer, len(train_loader))
    class_weights = None
    if plan.class_weights is not None:
        class_weights = torch.tensor(plan.class_weights.tolist(), dtype=torch.float32, device=accelerator.device)
    group_dro = make_group_dro(config, dataset, plan, accelerator.device)
    if group_dro is not None:
        train_groups = torch.as_tensor(dataset.groups("train"), device=accelerator.device)
    # sums a tensor over the data-parallel processes, for the losses normalised by the whole batch (None: one)
    reduce = functools.partial(accelerator.reduce, reduction="sum") if accelerator.num_processes > 1 else None

    start_epoch = 1
    if resume_state is not None:
        try:
            optimizer.load_state_dict(resume_state["optimizer"])
        except ValueError as error:  # other parameter groups
            raise GroupsweepError(f"the saved training state's optimizer does not fit this run's ({error}); a state "
                                  "saved by a groupsweep from before BERT models' biases and LayerNorm weights were "
                                  "exempt from weight decay cannot be resumed: run the trial in a new sweep "
                                  "folder") from None
        scheduler.load_state_dict(resume_state["scheduler"])
        set_rng_state(resume_state["rng"])
        if group_dro is not None:
            group_dro.load_state_dict(resume_state["groupdro"])
        if accelerator.scaler is not None and "scaler" in resume_state:
            accelerator.scaler.load_state_dict(resume_state["scaler"])
        start_epoch = resume_state["epoch"] + 1

    labels = split_labels(dataset)
    num_parameters = accelerator.unwrap_model(model).num_parameters
    history = []
    profiler = EpochProfiler(accelerator.device) if config.profile else None
    for epoch in range(start_epoch, min(config.epochs, stop_after or config.epochs) + 1):
        generator.manual_seed(sampler_seed(config.seed, epoch))
        model.train()
        started = time.perf_counter()
        loss_sum = torch.zeros((), device=accelerator.device)
        steps = 0
        batches = transformed_batches(train_loader, model_inputs.train_batch_transform)
        for inputs, targets, positions in (batches if profiler is None else profiler.epoch(batches)):
            if config.channels_last and isinstance(inputs, torch.Tensor) and inputs.dim() == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            logits = model(inputs)
            if group_dro is None:
                loss = class_weighted_loss(logits, targets, class_weights, reduce, accelerator.num_processes)
            else:
                loss = group_dro.loss(F.cross_entropy(logits.float(), targets, reduction="none"),
                                      train_groups[positions], reduce, accelerator.num_processes)
            accelerator.backward(loss)
            optimizer.step()
            if config.schedule_step == "step":
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
            steps += 1
        if config.schedule_step == "epoch":
            scheduler.step()
        mean_loss = float(accelerator.reduce(loss_sum, reduction="mean")) / max(steps, 1)
        if not math.isfinite(mean_loss):
            raise DivergenceError(f"training loss is {mean_loss} in epoch {epoch} of {config.epochs}")
        train_seconds = time.perf_counter() - started

        started = time.perf_counter()
        metrics, predictions = evaluate(model, eval_loaders, accelerator, model_inputs, dataset, plan,
                                        train=config.evaluates_train(epoch))
        if not math.isfinite(metrics["val/loss"]):  # the epoch's last step blew the weights up: no loss saw it
            raise DivergenceError(f"validation loss is {metrics['val/loss']} after epoch {epoch} of {config.epochs}")
        metrics.update({
            "epoch": epoch,
            "optim/loss": mean_loss,
            "optim/lr": scheduler.get_last_lr()[0],
            "time/train_s": train_seconds,
            "time/eval_s": time.perf_counter() - started,
            "model/num_parameters": num_parameters,
            "data/num_train_kept": int(len(np.unique(plan.indices))),
        })
        if group_dro is not None:
            metrics.update({f"optim/groupdro_q_group_{g}": float(q) for g, q in enumerate(group_dro.q.tolist())})
        if profiler is not None:
            metrics.update(profiler.metrics(train_seconds))
        history.append(metrics)

        def state(epoch=epoch, group_state=None if group_dro is None else group_dro.state_dict()) -> dict:
            saved = {
                "epoch": epoch,
                "config": config.to_dict(),
                "model": accelerator.unwrap_model(model, keep_torch_compile=False).state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng_state(),
            }
            if group_state is not None:
                saved["groupdro"] = group_state
            if accelerator.scaler is not None:  # fp16: the loss scale and its growth tracker
                saved["scaler"] = accelerator.scaler.state_dict()
            return saved

        if on_epoch is not None:
            on_epoch(EpochResult(epoch=epoch, metrics=metrics, predictions=predictions, labels=labels, state=state,
                                 checkpoint=config.checkpoints(epoch)))
    return history
