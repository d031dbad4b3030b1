"""The ``groupsweep`` command line: one dispatcher, each command defined in the module that owns it.

Every module in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its sub-commands
with ``parser.set_defaults(func=handler)``; ``handler(args)`` returns the exit status. Command modules
import heavy libraries (torch, ray) inside their handlers, so ``groupsweep plan`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from trainables.errors import GroupsweepError

COMMAND_MODULES = [
    "sweeps.train_command",
    "sweeps.models_command",
    "sweeps.data_command",
    "sweeps.analyze_command",
    "sweeps.spectral_command",
    "sweeps.sweep_command",
]


class CheckingParser(argparse.ArgumentParser):
    """An argument parser whose errors raise a one-line ``GroupsweepError`` instead of exiting."""

    def error(self, message: str):
        raise GroupsweepError(message)


def build_parser(parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The full argument parser with every registered command (sub-parsers of ``parser_class`` too)."""
    parser = parser_class(
        prog="groupsweep",
        description="Reproducible finetuning sweeps for group robustness on Ray Tune.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def check_arguments(argv: list[str]) -> argparse.Namespace:
    """Parse a ``groupsweep`` argument list without running it; bad arguments raise ``GroupsweepError``."""
    return build_parser(CheckingParser).parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; bad input prints ``error: <one line>`` and returns 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except GroupsweepError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
