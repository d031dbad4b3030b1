"""Bring-your-own data in the peers' common schema (SubpopBench, BalancingGroups).

One ``metadata.csv`` in the data folder with columns ``split`` (0/1/2 or train/val/test), ``y`` (class,
an integer >= 0), ``a`` (spurious attribute, an integer >= 0) and either ``filename`` (an image path
relative to the folder) or ``text`` (plus ``text_b`` for sentence pairs). Optional ``id`` is ignored;
optional ``y_name`` / ``a_name`` give the class and attribute names (each value must always carry the
same name), else the names are the integers. The number of classes (attributes) is the largest value
plus one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from trainables.data.base import MAX_LABELS, GroupDataset, register_dataset
from trainables.data.native import (SPLIT_CODES, NativeTable, find_file, image_dataset, map_codes, native_reader,
                                    numeric_column, read_csv, resolve_root, row_error, shown, text_dataset)
from trainables.errors import GroupsweepError

OPTIONAL = ("id", "filename", "text", "text_b", "y_name", "a_name")


def _labels(path: Path, column: pd.Series, what: str) -> np.ndarray:
    """Integer values from 0 to ``MAX_LABELS`` - 1 of ``column``; anything else raises a row error."""
    values = numeric_column(path, column, missing_ok=False)
    bad = np.flatnonzero((values < 0) | (values >= MAX_LABELS) | (values != np.floor(values)))
    if len(bad):
        row = int(bad[0])
        raise row_error(path, row + 1, f"{what} {shown(column.iloc[row])} in column {column.name!r}; allowed: integers "
                                       f"0 to {MAX_LABELS - 1}")
    return values.astype(np.int64)


def _names(path: Path, frame: pd.DataFrame, values: np.ndarray, column: str) -> tuple[str, ...]:
    """Name of every value 0..max: from ``column`` when present (one name per value), else the integer."""
    names = [str(v) for v in range(int(values.max()) + 1 if len(values) else 0)]
    if column not in frame:
        return tuple(names)
    seen: dict[int, tuple[str, int]] = {}
    for row, (value, name) in enumerate(zip(values, frame[column].fillna("").astype(str)), start=1):
        first = seen.setdefault(int(value), (name, row))
        if first[0] != name:
            raise row_error(path, row, f"{column} {name!r} for value {value}, but row {first[1]} names it {first[0]!r}")
        names[int(value)] = name
    return tuple(names)


@native_reader("custom")
def read_custom(root: Path) -> NativeTable:
    """Read and validate a custom ``metadata.csv`` (images must exist)."""
    path = find_file(root, ["metadata.csv"], "custom metadata")
    frame = read_csv(path, ["split", "y", "a"], optional=OPTIONAL, literal=OPTIONAL)
    if ("filename" in frame) == ("text" in frame):
        raise GroupsweepError(
            f"{path}: needs exactly one of the columns 'filename' (images) or 'text' (text); found columns: "
            f"{', '.join(frame.columns)}"
        )
    y, s = _labels(path, frame["y"], "class"), _labels(path, frame["a"], "attribute")
    if "filename" in frame:
        modality, inputs = "image", frame["filename"].tolist()
    elif "text_b" in frame:
        modality, inputs = "text", list(zip(frame["text"].tolist(), frame["text_b"].tolist()))
    else:
        modality, inputs = "text", frame["text"].tolist()
    table = NativeTable(
        name="custom", modality=modality, source=path, inputs=inputs, y=y, s=s,
        split=map_codes(path, frame["split"], SPLIT_CODES, "split"),
        class_names=_names(path, frame, y, "y_name"), attribute_names=_names(path, frame, s, "a_name"),
        image_root=root if modality == "image" else None, meta={"root": str(root)},
    )
    if modality == "image":
        table.check_images_exist()
    return table


@register_dataset("custom")
def load_custom(root=None, image_size: int = 224, cache_dir=None, max_length: int = 128, average: str = "pooled") -> GroupDataset:
    """A custom dataset from ``root`` (default ``$GROUPSWEEP_DATA/custom``).

    Images are decoded once, texts tokenised once, into a cache (``cache_dir`` default ``$GROUPSWEEP_CACHE``,
    else ``<root>/.groupsweep_cache``); ``image_size`` applies to images, ``max_length`` to texts.
    ``average`` is ``pooled`` or ``train-weighted``.
    """
    folder = resolve_root("custom", root)
    table = read_custom(folder)
    table.average = average
    if table.modality == "image":
        return image_dataset(table, image_size, cache_dir, folder)
    return text_dataset(table, max_length, cache_dir, folder)
