"""Optimizer step: ``finetune``'s Adam and AdamW (``make_optimizer``: torch's multi-tensor ``foreach`` steps)
against torch's CPU default (a Python loop over the parameters), side by side in one process.

For each model and optimizer both sides get the same model (random weights), the same parameter groups
(``parameter_groups``: BERT's biases and LayerNorm weights without weight decay) and the same random
gradients; the steps alternate between the sides, one untimed warm-up step each first. Printed per row: the
milliseconds per step of each side, the ratio loop / foreach, and whether the two sides' parameters are
the same bits after every step (they must be: the same arithmetic per tensor). On a GPU torch's default is
already ``foreach``, so this is a CPU measurement (one thread, as a one-CPU trial runs).

``--sgd`` adds SGD with momentum measured the same way (``foreach`` against the loop, both torch's:
``make_optimizer`` keeps SGD's default, as its ``foreach`` steps were no faster on the CPU).

Usage from the repository root: ``python benchmarks/optimizer_step.py [--models toy-resnet-xs ...]
[--optimizers adamw adam] [--sgd] [--steps 40]``.
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import machine

TORCH_OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
OURS = ("adamw", "adam")  # the optimizers make_optimizer runs with foreach
DEFAULT_MODELS = ("toy-resnet-xs", "toy-resnet-s", "toy-convnextv2-s", "toy-bert-s", "resnet50")


def torch_optimizer(optimizer: str, model, foreach: bool):
    """torch's ``optimizer`` over ``model``'s parameter groups (``parameter_groups``), ``foreach`` as given."""
    from trainables.finetune import parameter_groups

    settings = {"momentum": 0.9} if optimizer == "sgd" else {}
    groups = parameter_groups(model.named_parameters(), 1e-4, model.no_weight_decay)
    return TORCH_OPTIMIZERS[optimizer](groups, lr=1e-3, foreach=foreach, **settings)


def measure(model_name: str, optimizer: str, steps: int) -> dict:
    """Milliseconds per step of ``make_optimizer`` (for ``sgd``: torch's SGD with ``foreach``) and of torch's
    per-parameter loop on ``model_name``, and whether their parameters stayed bit-identical."""
    from trainables.config import TrainConfig
    from trainables.finetune import make_optimizer
    from trainables.models.build import build_model

    ours, looped = build_model(model_name, 2), build_model(model_name, 2)
    looped.load_state_dict(ours.state_dict())
    if optimizer in OURS:
        stepper = make_optimizer(TrainConfig(dataset="synthetic-waterbirds", model=model_name, optimizer=optimizer,
                                             lr=1e-3, weight_decay=1e-4), ours)
    else:
        stepper = torch_optimizer(optimizer, ours, True)
    sides = {"foreach": (ours, stepper), "loop": (looped, torch_optimizer(optimizer, looped, False))}
    seconds = dict.fromkeys(sides, 0.0)
    generator = torch.Generator().manual_seed(0)
    identical = True
    for step in range(steps + 1):
        gradients = [torch.randn(parameter.shape, generator=generator) for parameter in ours.parameters()]
        for name in (("foreach", "loop") if step % 2 else ("loop", "foreach")):
            model, stepper = sides[name]
            for parameter, gradient in zip(model.parameters(), gradients):
                parameter.grad = gradient.clone()
            started = time.perf_counter()
            stepper.step()
            if step:  # the first step of each side is a warm-up
                seconds[name] += time.perf_counter() - started
        identical &= all(torch.equal(a, b) for a, b in zip(ours.parameters(), looped.parameters()))
    return {"parameters": sum(p.numel() for p in ours.parameters()), "tensors": len(list(ours.parameters())),
            "loop_ms": seconds["loop"] / steps * 1e3, "foreach_ms": seconds["foreach"] / steps * 1e3,
            "identical": identical}


def main(argv: list[str] | None = None) -> int:
    """Measure every (model, optimizer) pair and print one row each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--optimizers", nargs="+", default=list(OURS), choices=list(OURS))
    parser.add_argument("--sgd", action="store_true", help="also SGD with momentum, foreach against the loop")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per side (after one warm-up step)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"machine: {machine()}; torch {torch.__version__}, 1 thread")
    print(f"{'model':<18} {'optimizer':<9} {'tensors':>7} {'parameters':>11} {'loop ms':>8} {'foreach ms':>10} "
          f"{'loop/foreach':>12}  same bits")
    for model in args.models:
        for optimizer in [*args.optimizers, *(["sgd"] if args.sgd else [])]:
            row = measure(model, optimizer, args.steps)
            print(f"{model:<18} {optimizer:<9} {row['tensors']:>7} {row['parameters']:>11} {row['loop_ms']:>8.2f} "
                  f"{row['foreach_ms']:>10.2f} {row['loop_ms'] / row['foreach_ms']:>11.2f}x  {row['identical']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
