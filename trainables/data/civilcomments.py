"""CivilComments (WILDS v1.0) in its native format, read without the ``wilds`` package.

Folder layout (``civilcomments_v1.0/``): ``all_data_with_identities.csv`` with ``comment_text``,
``split`` (train/val/test), ``toxicity`` and the identity columns. y = toxicity >= 0.5; s = 1 when any
of male, female, LGBTQ, black, white, christian, muslim, other_religions is >= 0.5 (four groups, as in
the paper). As in WILDS, an empty identity cell counts as below 0.5, and an empty comment is the empty
string; an empty toxicity, or one outside 0..1, is an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from trainables.data.base import GroupDataset, register_dataset
from trainables.data.native import (NAMED_SPLITS, NativeTable, find_file, map_codes, native_reader, numeric_column,
                                    read_csv, resolve_root, row_error, text_dataset)
from trainables.data.table2 import TABLE2

IDENTITIES = ("male", "female", "LGBTQ", "black", "white", "christian", "muslim", "other_religions")
THRESHOLD = 0.5


def _fraction(path: Path, column: pd.Series, name: str, missing_ok: bool) -> np.ndarray:
    """The values of ``column`` (a fraction of annotators: toxicity, an identity) as floats, each from 0 to 1
    (empty cells NaN when ``missing_ok``); a one-line error naming the row otherwise."""
    values = numeric_column(path, column, missing_ok=missing_ok)
    outside = np.flatnonzero((values < 0) | (values > 1))
    if len(outside):
        row = int(outside[0])
        raise row_error(path, row + 1, f"{name} {values[row]:g} outside the allowed range 0..1")
    return values


@native_reader("civilcomments")
def read_civilcomments(root: Path) -> NativeTable:
    """Read and validate ``all_data_with_identities.csv`` of a WILDS CivilComments folder."""
    path = find_file(root, ["all_data_with_identities.csv"], "civilcomments data")
    frame = read_csv(path, ["comment_text", "split", "toxicity", *IDENTITIES], literal=["comment_text"])
    identity = np.zeros(len(frame), dtype=bool)
    for column in IDENTITIES:
        fraction = _fraction(path, frame[column], column, missing_ok=True)
        identity |= np.nan_to_num(fraction, nan=0.0) >= THRESHOLD
    toxicity = _fraction(path, frame["toxicity"], "toxicity", missing_ok=False)
    class_names, attribute_names, _ = TABLE2["civilcomments"]
    return NativeTable(
        name="civilcomments", modality="text", source=path,
        inputs=frame["comment_text"].tolist(),
        y=(toxicity >= THRESHOLD).astype(np.int64),
        s=identity.astype(np.int64),
        split=map_codes(path, frame["split"], NAMED_SPLITS, "split"),
        class_names=class_names, attribute_names=attribute_names, meta={"root": str(root)},
    )


@register_dataset("civilcomments", modality="text")
def load_civilcomments(root=None, max_length: int = 220, cache_dir=None) -> GroupDataset:
    """CivilComments from ``root`` (default ``$GROUPSWEEP_DATA/civilcomments``); inputs are the comment strings,
    their token ids cached under ``cache_dir`` (default ``$GROUPSWEEP_CACHE``, else ``<root>/.groupsweep_cache``)."""
    folder = resolve_root("civilcomments", root)
    return text_dataset(read_civilcomments(folder), max_length, cache_dir, folder)
