"""CelebA (Liu et al. 2015) in its native formats: y = Blond_Hair, spurious s = Male.

Two layouts are read (the original annotation files win when both are present):

* original: ``list_attr_celeba.txt`` (first line the image count, second line the 40 attribute names,
  then ``<file> v1 ... v40`` rows separated by any whitespace, values -1/1) or the same table as
  ``list_attr_celeba.csv`` (``image_id`` column first); ``list_eval_partition.txt`` (``<file> 0|1|2``)
  or ``list_eval_partition.csv`` (``image_id, partition``); images in ``img_align_celeba/``.
* prepared: ``metadata.csv`` with ``img_filename, y, place, split`` (y, place 0/1, split 0/1/2).

Images are looked up in ``img_align_celeba/``, then ``img_align_celeba/img_align_celeba/`` (the Kaggle
archive), then the folder itself: the first that holds the first listed image is used for all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from trainables.data.base import GroupDataset, register_dataset
from trainables.data.native import (
    NUMERIC_SPLITS,
    NativeTable,
    find_file,
    image_base,
    image_dataset,
    map_codes,
    native_reader,
    read_csv,
    resolve_root,
    row_error,
)
from trainables.data.table2 import TABLE2
from trainables.errors import GroupsweepError

ATTRIBUTE_FILES = ("list_attr_celeba.txt", "list_attr_celeba.csv")
PARTITION_FILES = ("list_eval_partition.txt", "list_eval_partition.csv")
IMAGE_DIRS = ("img_align_celeba", "img_align_celeba/img_align_celeba", ".")
SIGNS = {-1: 0, 1: 1}


def _read_attributes(path: Path) -> pd.DataFrame:
    """``image_id, Blond_Hair, Male`` from ``list_attr_celeba.txt`` (count line, names line, rows) or ``.csv``."""
    if path.suffix == ".csv":
        return read_csv(path, ["image_id", "Blond_Hair", "Male"], dtype={"image_id": str})
    with open(path) as handle:
        count, names = handle.readline().strip(), handle.readline().split()
    if not count.isdigit():
        raise GroupsweepError(f"{path}: first line should be the number of images, found {count[:40]!r}")
    frame = read_csv(
        path, ["image_id", "Blond_Hair", "Male"], sep=r"\s+", skiprows=2, header=None,
        names=["image_id", *names], dtype={"image_id": str},
    )
    if int(count) != len(frame):
        raise GroupsweepError(f"{path}: first line says {int(count)} images but {len(frame)} rows follow")
    return frame


def _read_partition(path: Path) -> pd.Series:
    """Split code (0/1/2) per image file name from ``list_eval_partition.txt`` or ``.csv``."""
    if path.suffix == ".csv":
        frame = read_csv(path, ["image_id", "partition"], dtype={"image_id": str})
    else:
        frame = read_csv(
            path, ["image_id", "partition"], sep=r"\s+", header=None, names=["image_id", "partition"],
            dtype={"image_id": str},
        )
    codes = pd.Series(map_codes(path, frame["partition"], NUMERIC_SPLITS, "split"), index=frame["image_id"])
    duplicated = np.flatnonzero(codes.index.duplicated())
    if len(duplicated):
        row = int(duplicated[0])
        raise row_error(path, row + 1, f"image {codes.index[row]!r} listed twice")
    return codes


def _original(root: Path, attribute_path: Path) -> tuple:
    """(source, names, y, s, split) from the original annotation files."""
    attributes = _read_attributes(attribute_path)
    partition_path = find_file(root, PARTITION_FILES, "celeba partition")
    split = _read_partition(partition_path).reindex(attributes["image_id"].to_numpy())
    missing = np.flatnonzero(split.isna().to_numpy())
    if len(missing):
        row = int(missing[0])
        raise row_error(
            attribute_path, row + 1, f"image {attributes['image_id'].iloc[row]!r} has no row in {partition_path.name}"
        )
    y = map_codes(attribute_path, attributes["Blond_Hair"], SIGNS, "class")
    s = map_codes(attribute_path, attributes["Male"], SIGNS, "attribute")
    return attribute_path, attributes["image_id"].tolist(), y, s, split.to_numpy(dtype=np.int64)


def _prepared(path: Path) -> tuple:
    """(source, names, y, s, split) from a prepared ``metadata.csv``."""
    frame = read_csv(path, ["img_filename", "y", "place", "split"], dtype={"img_filename": str})
    return (
        path, frame["img_filename"].tolist(),
        map_codes(path, frame["y"], {0: 0, 1: 1}, "class"),
        map_codes(path, frame["place"], {0: 0, 1: 1}, "place"),
        map_codes(path, frame["split"], NUMERIC_SPLITS, "split"),
    )


@native_reader("celeba")
def read_celeba(root: Path) -> NativeTable:
    """Read and validate a CelebA folder in either native layout (every image must exist)."""
    attribute_files = [root / name for name in ATTRIBUTE_FILES if (root / name).is_file()]
    if attribute_files:
        source, names, y, s, split = _original(root, attribute_files[0])
    else:
        source, names, y, s, split = _prepared(
            find_file(root, ["metadata.csv"], f"celeba annotations ({', '.join(ATTRIBUTE_FILES)} or metadata.csv)")
        )
    class_names, attribute_names, _ = TABLE2["celeba"]
    table = NativeTable(
        name="celeba", modality="image", source=source, inputs=names, y=y, s=s, split=split,
        class_names=class_names, attribute_names=attribute_names,
        image_root=image_base(root, next(iter(names), ""), IMAGE_DIRS), meta={"root": str(root)},
    )
    table.check_images_exist()
    return table


@register_dataset("celeba")
def load_celeba(root=None, image_size: int = 224, cache_dir=None) -> GroupDataset:
    """CelebA from ``root`` (default ``$GROUPSWEEP_DATA/celeba``), images decoded once into a cache.

    ``cache_dir`` defaults to ``$GROUPSWEEP_CACHE``, else ``<root>/.groupsweep_cache``.
    """
    folder = resolve_root("celeba", root)
    return image_dataset(read_celeba(folder), image_size, cache_dir, folder)
