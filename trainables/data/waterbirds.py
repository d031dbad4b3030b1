"""Waterbirds (Sagawa et al. 2020) in its native format.

Folder layout (e.g. ``waterbird_complete95_forest2water2/``): ``metadata.csv`` with columns ``img_id,
img_filename, y, split, place, place_filename``; ``y`` 1 = waterbird, ``place`` 1 = water (the spurious
attribute s), ``split`` 0/1/2 = train/val/test; ``img_filename`` is relative to the folder, in CUB-style
class folders such as ``001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg``.
Average accuracy is train-weighted (val/test group mix differs from train, as in the paper).
"""

from __future__ import annotations

from pathlib import Path

from trainables.data.base import GroupDataset, register_dataset
from trainables.data.native import (
    NUMERIC_SPLITS,
    NativeTable,
    find_file,
    image_dataset,
    map_codes,
    native_reader,
    read_csv,
    resolve_root,
)
from trainables.data.table2 import TABLE2

COLUMNS = ("img_id", "img_filename", "y", "split", "place", "place_filename")


@native_reader("waterbirds")
def read_waterbirds(root: Path) -> NativeTable:
    """Read and validate ``metadata.csv`` of a Waterbirds folder (every image must exist)."""
    path = find_file(root, ["metadata.csv"], "waterbirds metadata")
    frame = read_csv(path, COLUMNS, dtype={"img_filename": str, "place_filename": str})
    class_names, attribute_names, _ = TABLE2["waterbirds"]
    table = NativeTable(
        name="waterbirds", modality="image", source=path,
        inputs=frame["img_filename"].tolist(),
        y=map_codes(path, frame["y"], {0: 0, 1: 1}, "class"),
        s=map_codes(path, frame["place"], {0: 0, 1: 1}, "place"),
        split=map_codes(path, frame["split"], NUMERIC_SPLITS, "split"),
        class_names=class_names, attribute_names=attribute_names, average="train-weighted",
        image_root=root, meta={"root": str(root)},
    )
    table.check_images_exist()
    return table


@register_dataset("waterbirds", modality="image")
def load_waterbirds(root=None, image_size: int = 224, cache_dir=None) -> GroupDataset:
    """Waterbirds from ``root`` (default ``$GROUPSWEEP_DATA/waterbirds``), images decoded once into a cache.

    ``cache_dir`` defaults to ``$GROUPSWEEP_CACHE``, else ``<root>/.groupsweep_cache``.
    """
    folder = resolve_root("waterbirds", root)
    return image_dataset(read_waterbirds(folder), image_size, cache_dir, folder)
