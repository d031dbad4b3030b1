"""``groupsweep train``: one finetuning run in this process, without Ray (for debugging a config)."""

from __future__ import annotations

import argparse

from sweeps.overrides import parse_overrides
from trainables.config import TrainConfig

EPOCH_COLUMNS = {
    "epoch": "epoch",
    "optim/loss": "loss",
    "train/acc": "train acc",
    "val/wga": "val wga",
    "test/avg_acc": "test avg",
    "test/wca": "test wca",
    "test/wga": "test wga",
    "time/train_s": "train s",
}


def register(subparsers) -> None:
    """Add the ``train`` command."""
    parser = subparsers.add_parser(
        "train", help="run one finetuning run without Ray",
        description="Finetune one model with one balancing method and print per-epoch metrics.",
    )
    parser.add_argument("--dataset", default="synthetic-waterbirds")
    parser.add_argument("--model", default="toy-convnextv2-s")
    parser.add_argument("--method", default="none")
    parser.add_argument("--ratio", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="any other training setting, e.g. --set weight_decay=0.01 (repeatable)")
    parser.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Build the config from the arguments, run ``finetune`` and print one line per epoch."""
    values = {
        "dataset": args.dataset, "model": args.model, "method": args.method, "ratio": args.ratio,
        "seed": args.seed, "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
    }
    values.update(parse_overrides(args.overrides))
    config = TrainConfig.from_dict(values)

    # deferred: torch and the model libraries load only when a run starts, not for `groupsweep --help`
    from trainables.builders import load_config_dataset
    from trainables.finetune import finetune
    from trainables.plans import training_plan

    header = "  ".join(f"{name:>9}" for name in EPOCH_COLUMNS.values())
    print(f"{config.dataset} / {config.model} / {config.method}"
          + (f" {config.ratio:g}:1" if config.ratio else "") + f" / seed {config.seed}")
    print(header, flush=True)

    def show(result) -> None:
        cells = []
        for key in EPOCH_COLUMNS:
            value = result.metrics[key]
            cells.append(f"{value:>9d}" if key == "epoch" else f"{value:>9.4f}")
        print("  ".join(cells), flush=True)

    dataset = load_config_dataset(config)
    finetune(config, on_epoch=show, dataset=dataset, plan=training_plan(config, dataset))
    return 0
