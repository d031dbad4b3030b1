"""``groupsweep data check NAME --root DIR [--csv] [--verify-images] [--target A --spurious B]``: validate a
native dataset folder.

The check reads the native files, validates every row and that every listed image exists (without
decoding them unless ``--verify-images``, and without building the image cache), then prints the
composition in the layout of the paper's Table 2. For the four benchmarks of the paper it prints one
``warning:`` line (on stderr) per group count that differs from Table 2. CelebA's ``--target`` and
``--spurious`` (its dataset options: any two of its 40 attributes, e.g. Young / Male for the D3M paper's
CelebA-Age) choose the class and the spurious attribute; only the paper's pairing (Blond_Hair / Male, the
default) is compared with Table 2. Exit status 0 when the folder is valid (warnings included), 2 with
``error: ...`` when it is not.
"""

from __future__ import annotations

import argparse
import sys

from trainables.errors import GroupsweepError

NATIVE_DATASETS = ("waterbirds", "celeba", "civilcomments", "multinli", "custom")


def register(subparsers) -> None:
    """Add ``data check`` to the ``groupsweep`` sub-command parsers."""
    data = subparsers.add_parser("data", help="inspect datasets in their native formats")
    commands = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    check = commands.add_parser(
        "check", help="validate a dataset folder and print its group composition (paper Table 2 layout)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("name", metavar="NAME", choices=NATIVE_DATASETS, help=f"one of: {', '.join(NATIVE_DATASETS)}")
    check.add_argument("--root", default=None, help="the dataset's folder (default: $GROUPSWEEP_DATA/NAME)")
    check.add_argument("--csv", action="store_true", help="print the composition as CSV")
    check.add_argument("--verify-images", action="store_true", help="also open and decode every image")
    check.add_argument("--target", default=None, metavar="ATTRIBUTE",
                       help="celeba only: the class attribute (default: Blond_Hair; CelebA-Age: Young)")
    check.add_argument("--spurious", default=None, metavar="ATTRIBUTE",
                       help="celeba only: the spurious attribute (default: Male)")
    check.set_defaults(func=check_command)


def _load_readers() -> dict:
    """The native readers, registered by importing their modules."""
    # deferred: the dataset modules import pandas; they load when the command runs, not for `--help`
    import trainables.data.celeba  # noqa: F401
    import trainables.data.civilcomments  # noqa: F401
    import trainables.data.custom  # noqa: F401
    import trainables.data.multinli  # noqa: F401
    import trainables.data.waterbirds  # noqa: F401
    from trainables.data.native import NATIVE_READERS

    return NATIVE_READERS


def verify_images(table) -> None:
    """Fully decode every image of an image table as training does (``load_rgb``); a one-line error names the row of
    the first failure."""
    # deferred: importing trainables.data imports pandas and every dataset module
    from trainables.data.image_cache import IMAGE_ERRORS, load_rgb

    for i, name in enumerate(table.inputs):
        try:
            load_rgb(table.image_root / name)
        except IMAGE_ERRORS as error:
            raise GroupsweepError(f"{table.where(i)}: cannot decode image {name!r}: {error}") from None


def table2_warnings(name: str, counts) -> list[str]:
    """``warning: ...`` lines for every group count of ``counts`` (``GroupDataset.counts()``) that differs from Table 2."""
    # deferred: importing trainables.data imports pandas and every dataset module
    from trainables.data.table2 import TABLE2

    if name not in TABLE2:
        return []
    _, _, expected = TABLE2[name]
    if len(counts) != len(expected["train"]):
        return [f"warning: {len(counts)} groups differ from Table 2 ({len(expected['train'])})"]
    return [
        f"warning: group {g} {split} count {count} differs from Table 2 ({expected[split][g]})"
        for split in ("train", "val", "test")
        for g, count in enumerate(counts[split])
        if count != expected[split][g]
    ]


def format_table(counts) -> str:
    """The composition as an aligned text table in the layout of the paper's Table 2."""
    shown = counts.rename(columns={"p_y": "p(y)", "p_g": "p(g)", "p_y_given_s": "p(y|s)"})
    return shown.to_string(index=False, float_format=lambda v: f"{v:.3f}")


def check_command(args) -> int:
    """Handler of ``groupsweep data check``: validate, print the composition and Table 2 warnings."""
    # deferred: importing trainables.data imports pandas and every dataset module
    from trainables.data.native import resolve_root

    options = {key: value for key, value in (("target", args.target), ("spurious", args.spurious))
               if value is not None}
    if options and args.name != "celeba":
        raise GroupsweepError(f"--{' and --'.join(options)} {'applies' if len(options) == 1 else 'apply'} to celeba "
                              f"only, not {args.name!r}")
    readers = _load_readers()
    root = resolve_root(args.name, args.root)
    table = readers[args.name](root, **options)
    if args.verify_images and table.modality == "image":
        verify_images(table)
    counts = table.dataset().counts()
    if args.csv:
        sys.stdout.write(counts.to_csv(index=False))
    else:
        pairing = f" (target {table.meta['target']}, spurious {table.meta['spurious']})" if options else ""
        print(f"{args.name}: {len(table.y)} examples from {table.source}{pairing}")
        print(format_table(counts))
        print("total: " + ", ".join(f"{split} {int(counts[split].sum())}" for split in ("train", "val", "test")))
    sys.stdout.flush()  # the table first, then the warnings, when both go to one terminal
    if table.meta.get("paper_composition", True):
        for line in table2_warnings(args.name, counts):
            print(line, file=sys.stderr)
    return 0
