"""What every embedded (generated, file-free) benchmark shares: option checks, seeded streams and group labels.

An embedded benchmark mirrors one real benchmark of the paper's Table 2: each split's per-group counts
are ``scaled_counts(<real name>, split, size)`` exactly, and the examples of a split come in a seeded
random order. Every split draws from its own random stream derived from ``(dataset name, seed)``, so
the training split depends only on the seed and the training options, not on ``val_size``/``test_size``.
"""

from __future__ import annotations

import zlib
from typing import Callable

import numpy as np

from trainables.data.base import SPLITS
from trainables.data.table2 import TABLE2, scaled_counts
from trainables.errors import GroupsweepError, is_integer


def check_int(dataset: str, option: str, value, minimum: int, maximum: int | None = None) -> int:
    """Return ``value`` if it is an int (not a bool) of at least ``minimum`` (and at most ``maximum`` when given);
    else raise a one-line GroupsweepError."""
    if not is_integer(value, minimum) or (maximum is not None and value > maximum):
        allowed = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        raise GroupsweepError(f"dataset {dataset!r}: option {option}={value!r} must be an integer {allowed}")
    return int(value)


def split_streams(dataset: str, seed: int, extra: tuple[str, ...] = ()) -> dict[str, np.random.Generator]:
    """Independent numpy Generators for each split and each name in ``extra``, a pure function of the
    dataset name and ``seed`` (a split's stream does not depend on ``extra``)."""
    seed = check_int(dataset, "seed", seed, 0)
    names = SPLITS + tuple(extra)
    children = np.random.SeedSequence([seed, zlib.crc32(dataset.encode())]).spawn(len(names))
    return {name: np.random.default_rng(child) for name, child in zip(names, children)}


SIZE_OPTIONS = {"train": "size", "val": "val_size", "test": "test_size"}  # split -> its size option


def split_group_counts(dataset: str, real: str, sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """Per-group counts of every split: ``scaled_counts(real, split, size)`` for ``sizes = {split: size}``.

    The option names are ``size`` (train), ``val_size`` and ``test_size``; a size below the number of
    groups (so that some group would be empty) raises a one-line GroupsweepError.
    """
    counts = {}
    for split in SPLITS:
        option = SIZE_OPTIONS[split]
        total = check_int(dataset, option, sizes[split], _group_count(real))
        counts[split] = scaled_counts(real, split, total)
    return counts


def _group_count(real: str) -> int:
    """The number of groups of the real benchmark ``real`` (classes x attribute values of its Table 2 column)."""
    return len(TABLE2[real][0]) * len(TABLE2[real][1])


def options_check(dataset: str, real: str, bounds: dict) -> Callable[..., None]:
    """``register_dataset``'s ``check_options`` for an embedded benchmark mirroring ``real``: the split sizes as
    ``split_group_counts`` checks them, ``seed`` as ``split_streams`` does, and each option of ``bounds``
    (``name -> (minimum, maximum or None)``) an integer within them; so ``plan`` refuses a bad value too."""

    def check(**options) -> None:
        for option in SIZE_OPTIONS.values():
            if option in options:
                check_int(dataset, option, options[option], _group_count(real))
        if "seed" in options:
            check_int(dataset, "seed", options["seed"], 0)
        for option, (minimum, maximum) in bounds.items():
            if option in options:
                check_int(dataset, option, options[option], minimum, maximum)

    return check


def group_labels(rng: np.random.Generator, counts: np.ndarray, n_spurious: int) -> tuple[np.ndarray, np.ndarray]:
    """Class ``y`` and attribute ``s`` of a split holding exactly ``counts[g]`` examples of group g, in random order.

    Groups are indexed ``g = y * n_spurious + s``.
    """
    groups = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    return groups // n_spurious, groups % n_spurious
