"""``groupsweep train``: one finetuning run in this process, without Ray (for debugging a config)."""

from __future__ import annotations

import argparse
import sys

from sweeps.overrides import parse_overrides
from trainables.balancing import METHODS, RATIO_METHODS
from trainables.config import TrainConfig, check_precision_device

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
    parser.add_argument("--dataset", default="synthetic-waterbirds",
                        help="an embedded benchmark (synthetic-waterbirds, synthetic-celeba, colored-digits, "
                             "synthetic-civilcomments, synthetic-multinli) or a real dataset (waterbirds, celeba, "
                             "civilcomments, multinli, custom; with --set data_root=DIR) (default: %(default)s)")
    parser.add_argument("--model", default="toy-convnextv2-s",
                        help="a model of the registry; `groupsweep models` lists them (default: %(default)s)")
    parser.add_argument("--method", default="none",
                        help="balancing or data-selection method: " + ", ".join(METHODS) + " (default: %(default)s)")
    parser.add_argument("--ratio", type=float, default=None,
                        help="the class-imbalance ratio r (r:1, majority to minority) of " + " and ".join(RATIO_METHODS)
                             + "; 1 gives subsetting's class sizes (the other methods take none)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the run: initialisation, subset and batch order (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs, a positive integer (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate, > 0 (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch size (default: %(default)s)")
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
    import torch

    from trainables.config_data import check_model_inputs, load_config_dataset
    from trainables.finetune import DivergenceError
    from trainables.models import check_weights_request, get_spec
    from trainables.plans import train_run

    # every name, the model's inputs and weights, and the precision checked, and the data loaded, before anything
    # is printed
    check_model_inputs(config.dataset, config.model)
    check_weights_request(get_spec(config.model), config.pretrained, config.model_path)
    check_precision_device(config.mixed_precision, torch.cuda.is_available(), " and this machine has none")
    dataset = load_config_dataset(config)
    header = "  ".join(f"{name:>9}" for name in EPOCH_COLUMNS.values())
    print(f"{config.dataset} / {config.model} / {config.method}"
          + (f" {config.ratio:g}:1" if config.ratio else "") + f" / seed {config.seed}")
    print(header, flush=True)

    def show(result) -> None:
        cells = []
        for key in EPOCH_COLUMNS:
            value = result.metrics[key]
            if key == "epoch":
                cells.append(f"{value:>9d}")
            else:  # train acc is NaN on the epochs eval_train skips
                cells.append(f"{value:>9.4f}" if value == value else f"{'-':>9}")
        print("  ".join(cells), flush=True)

    try:
        train_run(config, dataset, show)
    except DivergenceError as error:  # a result of the run, not bad input: exit status 1, as a sweep's failed trial
        print(f"error: the run diverged: {error}", file=sys.stderr)
        return 1
    return 0
