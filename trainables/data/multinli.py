"""MultiNLI (Sagawa et al.'s random split) in its native format, with text from GLUE MNLI.

Labels, spurious attribute and split come from ``metadata_random.csv`` (its first, unnamed column is a
row index; ``gold_label`` 0 contradiction / 1 entailment / 2 neutral, ``sentence2_has_negation`` 0/1,
``split`` 0/1/2), as written by Sagawa et al.'s ``generate_multinli.py``. Their loader never reads text:
it pairs metadata row k with row k of cached BERT features built from GLUE MNLI ``train``,
``dev_matched`` and ``dev_mismatched`` in that order (the GLUE files already omit the unlabeled ``-``
pairs, which is why the metadata index has gaps). This loader uses the same alignment on text: the
k-th data row of ``metadata_random.csv`` is the k-th row of ``train.tsv`` + ``dev_matched.tsv`` +
``dev_mismatched.tsv`` concatenated, and every pair's GLUE ``gold_label`` must equal the metadata's
(an error names both files and rows otherwise). Inputs are (premise ``sentence1``, hypothesis
``sentence2``) pairs.

Files are looked up as ``metadata_random.csv`` or ``data/metadata_random.csv`` (Sagawa et al.'s
layout), and the GLUE files in the folder itself, ``glue_data/MNLI/`` or ``MNLI/``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from trainables.data.base import GroupDataset, register_dataset
from trainables.data.native import (
    NUMERIC_SPLITS,
    NativeTable,
    find_file,
    map_codes,
    native_reader,
    read_csv,
    resolve_root,
    row_error,
    text_dataset,
)
from trainables.data.table2 import TABLE2
from trainables.errors import GroupsweepError

METADATA_FILES = ("metadata_random.csv", "data/metadata_random.csv")
GLUE_DIRS = (".", "glue_data/MNLI", "MNLI")
GLUE_FILES = ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv")
LABELS = {"contradiction": 0, "entailment": 1, "neutral": 2}


def _glue_dir(root: Path) -> Path:
    """The folder holding the three GLUE MNLI files."""
    for candidate in GLUE_DIRS:
        if all((root / candidate / name).is_file() for name in GLUE_FILES):
            return root / candidate
    raise GroupsweepError(
        f"multinli text: GLUE MNLI {', '.join(GLUE_FILES)} not found together in "
        f"{', '.join(str(root / candidate) for candidate in GLUE_DIRS)}"
    )


def _read_glue(path: Path) -> pd.DataFrame:
    """``sentence1, sentence2, gold_label`` of a GLUE MNLI file, every cell as raw text (no quoting, no NA)."""
    return read_csv(
        path, ["sentence1", "sentence2", "gold_label"], sep="\t", quoting=csv.QUOTE_NONE, dtype=str,
        keep_default_na=False,
    )


@native_reader("multinli")
def read_multinli(root: Path) -> NativeTable:
    """Read ``metadata_random.csv`` and the GLUE MNLI text, check that they align row by row."""
    path = find_file(root, METADATA_FILES, "multinli metadata")
    frame = read_csv(path, ["gold_label", "sentence2_has_negation", "split"])
    y = map_codes(path, frame["gold_label"], {0: 0, 1: 1, 2: 2}, "class")
    glue = _glue_dir(root)
    parts = [(glue / name, _read_glue(glue / name)) for name in GLUE_FILES]
    if sum(len(part) for _, part in parts) != len(frame):
        sizes = " + ".join(f"{len(part)} ({glue_path.name})" for glue_path, part in parts)
        raise GroupsweepError(
            f"{path} has {len(frame)} rows but the GLUE MNLI text has {sizes}; they must align row by row"
        )
    start = 0
    for glue_path, part in parts:
        labels = map_codes(glue_path, part["gold_label"], LABELS, "gold_label")
        wrong = np.flatnonzero(labels != y[start:start + len(part)])
        if len(wrong):
            k = int(wrong[0])
            raise row_error(
                path, start + k + 1,
                f"gold_label {y[start + k]} ({TABLE2['multinli'][0][y[start + k]]}) but {glue_path.name} row {k + 1} "
                f"is {part['gold_label'].iloc[k]!r}; metadata rows must follow {' + '.join(GLUE_FILES)} in order",
            )
        start += len(part)
    text = pd.concat([part for _, part in parts], ignore_index=True)
    class_names, attribute_names, _ = TABLE2["multinli"]
    return NativeTable(
        name="multinli", modality="text", source=path,
        inputs=list(zip(text["sentence1"].tolist(), text["sentence2"].tolist())),
        y=y, s=map_codes(path, frame["sentence2_has_negation"], {0: 0, 1: 1}, "negation"),
        split=map_codes(path, frame["split"], NUMERIC_SPLITS, "split"),
        class_names=class_names, attribute_names=attribute_names,
        meta={"root": str(root), "text": str(glue)},
    )


@register_dataset("multinli", modality="text")
def load_multinli(root=None, max_length: int = 128, cache_dir=None) -> GroupDataset:
    """MultiNLI from ``root`` (default ``$GROUPSWEEP_DATA/multinli``); inputs are (premise, hypothesis) pairs,
    their token ids cached under ``cache_dir`` (default ``$GROUPSWEEP_CACHE``, else ``<root>/.groupsweep_cache``)."""
    folder = resolve_root("multinli", root)
    return text_dataset(read_multinli(folder), max_length, cache_dir, folder)
