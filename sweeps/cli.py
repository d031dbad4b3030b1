"""The ``groupsweep`` command line: one dispatcher, each command defined in the module that owns it.

Every module in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its sub-commands
with ``parser.set_defaults(func=handler)``; ``handler(args)`` returns the exit status. Command modules
import heavy libraries (torch, ray, pandas) inside their handlers, so ``groupsweep plan`` stays fast.
This module imports the command modules; none of them imports it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sweeps import sweep_command
from trainables.errors import GroupsweepError, single_line

COMMAND_MODULES = [
    "sweeps.train_command",
    "sweeps.models_command",
    "sweeps.data_command",
    "sweeps.analyze_command",
    "sweeps.spectral_command",
    "sweeps.sweep_command",
    "sweeps.promote_command",
    "sweeps.report_command",
]


def build_parser(parser_class=argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The full argument parser with every registered command, built of ``parser_class`` parsers (the
    Python API, ``groupsweep``, passes one whose errors raise ``GroupsweepError`` instead of exiting)."""
    parser = parser_class(
        prog="groupsweep",
        description="Reproducible finetuning sweeps for group robustness on Ray Tune.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    sweep_command.provide_runner(subparsers)  # `promote --run` runs its spec as `run` does
    return parser


class CommandLineParser(argparse.ArgumentParser):
    """argparse's parser, but a bad argument is one line, ``error: <command>: <what is wrong> (see <command>
    --help)``, and exit status 2, like every other refusal (argparse prints the usage first)."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; bad input prints ``error: <one line>`` and returns 2 (a bad argument exits with 2);
    storage that cannot be read or written (``OSError``: pyarrow's for a bucket that cannot be reached or
    lacks credentials, a full disk) prints ``error: <one line>`` too and returns 1."""
    parser = build_parser(CommandLineParser)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except GroupsweepError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: {single_line(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
