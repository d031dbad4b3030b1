"""CelebA (Liu et al. 2015) in its native formats: class y = the ``target`` attribute, spurious s = the
``spurious`` attribute, any two of the 40 attributes of ``list_attr_celeba.txt`` (value 1 -> 1, -1 -> 0).

The default, Blond_Hair / Male, is the pairing of the paper's Table 2 (and of Sagawa et al.);
``target: Young, spurious: Male`` is the D3M paper's CelebA-Age. Only the default pairing is compared
with Table 2 (``groupsweep data check``; the table's ``meta["paper_composition"]`` says which).

Two layouts are read (the original annotation files win when both are present):

* original: ``list_attr_celeba.txt`` (first line the image count, second line the 40 attribute names,
  then ``<file> v1 ... v40`` rows separated by any whitespace, values -1/1) or the same table as
  ``list_attr_celeba.csv`` (``image_id`` column first); ``list_eval_partition.txt`` (``<file> 0|1|2``)
  or ``list_eval_partition.csv`` (``image_id, partition``); images in ``img_align_celeba/``.
* prepared: ``metadata.csv`` with ``img_filename, y, place, split`` (y, place 0/1, split 0/1/2): Blond_Hair and
  Male only, so another pairing needs the original annotation files.

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
from trainables.errors import GroupsweepError, choose

# The 40 attributes, in the order of list_attr_celeba.txt.
ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young",
)
# (target, spurious) of the paper's Table 2: the defaults.
PAPER_PAIRING = ("Blond_Hair", "Male")
# Readable names of an attribute's values 0 and 1 (Table 2's for the paper's pairing); others: "not X", "X".
VALUE_NAMES = {"Blond_Hair": TABLE2["celeba"][0], "Male": TABLE2["celeba"][1], "Young": ("old", "young")}
ATTRIBUTE_FILES = ("list_attr_celeba.txt", "list_attr_celeba.csv")
PARTITION_FILES = ("list_eval_partition.txt", "list_eval_partition.csv")
IMAGE_DIRS = ("img_align_celeba", "img_align_celeba/img_align_celeba", ".")
SIGNS = {-1: 0, 1: 1}


def check_celeba_options(target: str = PAPER_PAIRING[0], spurious: str = PAPER_PAIRING[1], **_) -> None:
    """Refuse a ``target`` or ``spurious`` that is not one of the 40 ``ATTRIBUTES``, or the same attribute
    twice, with a one-line ``GroupsweepError`` (no file is read); the other options are checked on loading."""
    choose("celeba target attribute", target, ATTRIBUTES)
    choose("celeba spurious attribute", spurious, ATTRIBUTES)
    if target == spurious:
        raise GroupsweepError(f"celeba target and spurious attribute are both {target!r}; choose two different "
                              "attributes (default: Blond_Hair, Male)")


def value_names(attribute: str) -> tuple[str, str]:
    """The names of ``attribute``'s values 0 and 1 in tables (``VALUE_NAMES``, else ``not X``, ``X``)."""
    return VALUE_NAMES.get(attribute, (f"not {attribute}", attribute))


def _read_attributes(path: Path, target: str, spurious: str) -> pd.DataFrame:
    """``image_id`` and the ``target`` and ``spurious`` columns from ``list_attr_celeba.txt`` (count line, names
    line, rows) or ``.csv``."""
    columns = ["image_id", target, spurious]
    if path.suffix == ".csv":
        return read_csv(path, columns, dtype={"image_id": str})
    # the two header lines only (a BOM dropped); a bad byte further on is read_csv's one-line error, with its line
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        count, names = handle.readline().strip(), handle.readline().split()
    if not count.isdigit():
        raise GroupsweepError(f"{path}: first line should be the number of images, found {count[:40]!r}")
    frame = read_csv(
        path, columns, sep=r"\s+", skiprows=2, header=None,
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
    _check_listed_once(path, frame["image_id"])
    return codes


def _check_listed_once(path: Path, images: pd.Series) -> None:
    """A one-line error naming the row of ``path`` that lists an image of ``images`` (its rows, in order) again."""
    duplicated = np.flatnonzero(images.duplicated().to_numpy())
    if len(duplicated):
        row = int(duplicated[0])
        raise row_error(path, row + 1, f"image {images.iloc[row]!r} listed twice")


def _original(root: Path, attribute_path: Path, target: str, spurious: str) -> tuple:
    """(source, names, y, s, split) from the original annotation files: y = ``target``, s = ``spurious``."""
    attributes = _read_attributes(attribute_path, target, spurious)
    _check_listed_once(attribute_path, attributes["image_id"])
    partition_path = find_file(root, PARTITION_FILES, "celeba partition")
    split = _read_partition(partition_path).reindex(attributes["image_id"].to_numpy())
    missing = np.flatnonzero(split.isna().to_numpy())
    if len(missing):
        row = int(missing[0])
        raise row_error(
            attribute_path, row + 1, f"image {attributes['image_id'].iloc[row]!r} has no row in {partition_path.name}"
        )
    y = map_codes(attribute_path, attributes[target], SIGNS, "class")
    s = map_codes(attribute_path, attributes[spurious], SIGNS, "attribute")
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
def read_celeba(root: Path, target: str = PAPER_PAIRING[0], spurious: str = PAPER_PAIRING[1]) -> NativeTable:
    """Read and validate a CelebA folder in either native layout (every image must exist), with class
    ``target`` and spurious attribute ``spurious`` (``check_celeba_options``); ``meta`` records both and
    ``paper_composition`` (whether they are the paper's Table 2 pairing)."""
    check_celeba_options(target, spurious)
    paper = (target, spurious) == PAPER_PAIRING
    attribute_files = [root / name for name in ATTRIBUTE_FILES if (root / name).is_file()]
    if attribute_files:
        source, names, y, s, split = _original(root, attribute_files[0], target, spurious)
    elif not paper:
        raise GroupsweepError(f"celeba target {target!r} / spurious {spurious!r} need the attribute table "
                              f"({' or '.join(ATTRIBUTE_FILES)}) in {str(root)!r}; a prepared metadata.csv holds "
                              "only Blond_Hair and Male")
    else:
        source, names, y, s, split = _prepared(
            find_file(root, ["metadata.csv"], f"celeba annotations ({', '.join(ATTRIBUTE_FILES)} or metadata.csv)")
        )
    table = NativeTable(
        name="celeba", modality="image", source=source, inputs=names, y=y, s=s, split=split,
        class_names=value_names(target), attribute_names=value_names(spurious),
        image_root=image_base(root, next(iter(names), ""), IMAGE_DIRS),
        meta={"root": str(root), "target": target, "spurious": spurious, "paper_composition": paper},
    )
    table.check_images_exist()
    return table


@register_dataset("celeba", check_options=check_celeba_options, modality="image")
def load_celeba(root=None, image_size: int = 224, cache_dir=None, target: str = PAPER_PAIRING[0],
                spurious: str = PAPER_PAIRING[1]) -> GroupDataset:
    """CelebA from ``root`` (default ``$GROUPSWEEP_DATA/celeba``), images decoded once into a cache, with class
    ``target`` and spurious attribute ``spurious`` (any two of ``ATTRIBUTES``; default Blond_Hair / Male;
    CelebA-Age: Young / Male). The cache does not depend on the pairing.

    ``cache_dir`` defaults to ``$GROUPSWEEP_CACHE``, else ``<root>/.groupsweep_cache``.
    """
    folder = resolve_root("celeba", root)
    return image_dataset(read_celeba(folder, target, spurious), image_size, cache_dir, folder)
