"""Shared machinery of the loaders that read real benchmarks in their native on-disk formats.

Data folder (``root``): the dataset's own folder, e.g. the unpacked ``waterbird_complete95_forest2water2/``.
When a loader gets ``root=None`` it uses ``$GROUPSWEEP_DATA/<dataset name>`` (e.g.
``$GROUPSWEEP_DATA/waterbirds``); with neither, it stops with a one-line ``GroupsweepError`` saying how
to pass the folder.

Decoded-image cache (``cache_dir``): an explicit ``cache_dir`` wins, then ``$GROUPSWEEP_CACHE``, then
``<root>/.groupsweep_cache``. Cache files are keyed by dataset, split, resolution and a fingerprint of the
file list, so one cache folder may serve several datasets and data folders.

Errors about a malformed file name the file and the row: ``row N`` is the N-th data record of the file
(1-based, header lines and blank lines not counted; a CSV record may span several lines when a quoted
text holds a newline). Every record must have exactly as many values as the file has columns: a row
with one value too many or too few is refused, never padded or shifted. Every file name a file lists
must be relative to the data folder, without ``..`` (``trainables.errors.relative_path``).
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from pandas._libs.parsers import STR_NA_VALUES  # pandas' own missing-value strings (no public name)

from trainables.data.base import MAX_IMAGE_SIZE, SPLITS, GroupDataset, Split
from trainables.data.image_cache import cached_images
from trainables.errors import GroupsweepError, positive_integer, relative_path

DATA_ENV = "GROUPSWEEP_DATA"
CACHE_ENV = "GROUPSWEEP_CACHE"
CACHE_SUBDIR = ".groupsweep_cache"

# split codes of every native format: Sagawa et al.'s 0/1/2 and the WILDS / custom names
SPLIT_CODES: dict[object, int] = {0: 0, 1: 1, 2: 2, "train": 0, "val": 1, "test": 2}
NUMERIC_SPLITS = {0: 0, 1: 1, 2: 2}
NAMED_SPLITS = {"train": 0, "val": 1, "test": 2}


def folder_path(what: str, value) -> Path:
    """``value`` as a ``Path`` (``~`` expanded); a one-line ``GroupsweepError`` naming ``what`` when it is not a
    non-empty path (an empty one would mean the current folder)."""
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise GroupsweepError(f"{what} must be a folder path, got {value!r}")
    return Path(value).expanduser()


def resolve_root(name: str, root: str | os.PathLike | None) -> Path:
    """The data folder of dataset ``name``: ``root``, else ``$GROUPSWEEP_DATA/<name>``.

    Raises a one-line ``GroupsweepError`` when neither is given or the folder does not exist.
    """
    if root is None:
        base = os.environ.get(DATA_ENV)
        if not base:
            raise GroupsweepError(
                f"dataset {name!r} needs its data folder: set data_root in the sweep spec (or --set data_root=DIR; "
                f"groupsweep data check: --root DIR), or set {DATA_ENV} to a folder holding {name}/"
            )
        root = Path(base) / name
    path = folder_path(f"dataset {name!r}: root", root)
    if not path.is_dir():
        problem = "is a file, not a folder" if path.exists() else "does not exist"
        raise GroupsweepError(
            f"data folder {str(path)!r} of dataset {name!r} {problem}; pass the folder holding its files "
            f"(data_root, --set data_root=DIR, or {DATA_ENV}/{name})"
        )
    return path


def resolve_cache_dir(root: Path, cache_dir: str | os.PathLike | None) -> Path:
    """Where decoded images and token ids are cached: ``cache_dir``, else ``$GROUPSWEEP_CACHE``, else
    ``<root>/.groupsweep_cache``."""
    if cache_dir is not None:
        return folder_path("cache_dir", cache_dir)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return root / CACHE_SUBDIR


def find_file(root: Path, candidates: Sequence[str], what: str) -> Path:
    """The first of ``candidates`` (paths relative to ``root``) that exists; a one-line error naming them all if none."""
    for candidate in candidates:
        path = root / candidate
        if path.is_file():
            return path
    raise GroupsweepError(f"{what}: none of {', '.join(candidates)} found in {str(root)!r}")


def row_error(path: Path, row: int, message: str) -> GroupsweepError:
    """``GroupsweepError('<path> row <row>: <message>')`` for the 1-based data record ``row`` of ``path``."""
    return GroupsweepError(f"{path} row {row}: {message}")


def read_csv(path: Path, required: Sequence[str], optional: Sequence[str] = (), literal: Sequence[str] = (),
             **options) -> pd.DataFrame:
    """Read the columns ``required`` (and those of ``optional`` present) of the delimited file ``path``.

    ``options`` go to ``pandas.read_csv``. The values of the ``literal`` columns (texts, names) are kept as
    written, as strings: pandas would read a comment ``NA``, ``None`` or ``null`` as missing; the other
    columns keep pandas' missing values (an empty cell, ``NA``). One-line errors name the file for a missing
    file, an unparsable file or a missing column (listing the columns found), and the file and row for a row
    with more or fewer values than the file has columns (``check_field_counts``).
    """
    if not path.is_file():
        raise GroupsweepError(f"file {str(path)!r} not found")
    options = {"index_col": False, **options}  # cells beyond the header never turn into an index
    try:
        header = pd.read_csv(path, nrows=0, **options).columns
        if literal:
            options.update(keep_default_na=False, dtype={**options.get("dtype", {}), **dict.fromkeys(literal, str)},
                           na_values={column: list(STR_NA_VALUES) for column in header if column not in literal})
        missing = [column for column in required if column not in header]
        if missing:
            raise GroupsweepError(
                f"{path}: missing column {missing[0]!r}; found columns: {', '.join(map(str, header))}"
            )
        columns = list(required) + [column for column in optional if column in header and column not in required]
        frame = pd.read_csv(path, usecols=columns, **options)[columns]
        check_field_counts(path, options)  # pandas pads a row with too few values: refuse it
    except UnicodeDecodeError as error:  # (pandas lets some undecodable bytes through: the count check reads them)
        raise GroupsweepError(f"{path}: {_undecodable_line(path, error)}; save the file as UTF-8") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        try:  # a row with too many values: name it, rather than the line pandas names
            check_field_counts(path, options, strict=True)
        except (csv.Error, UnicodeDecodeError):
            pass
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise GroupsweepError(f"{path}: cannot parse: {first_line}") from None
    return frame


def _undecodable_line(path: Path, error: UnicodeDecodeError) -> str:
    """``line N is not <encoding> text (<reason>, byte <value>)``: the first line of ``path`` that ``error``'s
    encoding cannot decode (pandas names only an offset in a chunk)."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode(error.encoding)
            except UnicodeDecodeError as bad:
                return f"line {number} is not {error.encoding} text ({bad.reason}: byte {line[bad.start]:#04x})"
    return f"not {error.encoding} text ({error.reason})"


def _records(handle, options: dict, strict: bool):
    """The records of an open delimited file as lists of values, as ``pandas.read_csv`` splits them with
    ``options`` (``sep``: a delimiter or ``\\s+`` for whitespace; ``quoting``); ``strict``: a quoting
    error raises ``csv.Error``."""
    sep = options.get("sep", ",")
    if sep == r"\s+":
        return (line.split() for line in handle)
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # long texts (comments) are one value
    return csv.reader(handle, delimiter=sep, quoting=options.get("quoting", csv.QUOTE_MINIMAL), strict=strict)


def check_field_counts(path: Path, options: dict, strict: bool = False) -> None:
    """Check that every data record of ``path`` has as many values as the file has columns (the header's,
    or ``options["names"]``); ``skiprows`` leading lines are skipped and blank lines ignored, as pandas does.
    The first bad record raises ``<path> row N: K values where the file has C columns (...): <values>``."""
    names = options.get("names")
    expected = len(names) if names is not None else None
    with open(path, encoding="utf-8", newline="") as handle:
        for _ in range(options.get("skiprows") or 0):
            handle.readline()
        row = 0
        for values in _records(handle, options, strict):
            if not values:
                continue
            if expected is None:  # the header line
                expected, names = len(values), values
                continue
            row += 1
            if len(values) != expected:
                shown_values = ", ".join(map(repr, values))
                shown_values = shown_values if len(shown_values) <= 120 else shown_values[:117] + "..."
                raise row_error(path, row, f"{len(values)} values where the file has {expected} columns "
                                           f"({', '.join(map(str, names[:4]))}{', ...' if expected > 4 else ''}): "
                                           f"{shown_values}")


def _normal(value):
    """A cell value in the form the code tables use: integral numbers as int, text stripped and lower-cased."""
    if isinstance(value, (bool, np.bool_, int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return int(value) if float(value).is_integer() else value
    if isinstance(value, str):
        text = value.strip()
        return int(text) if re.fullmatch(r"[+-]?\d+", text) else text.lower()
    return value


def shown(value) -> str:
    """``repr`` of a cell value for messages, with numpy scalars shown as plain Python values and a missing value
    (an empty cell, which pandas reads as NaN) as ``(empty)``."""
    value = value.item() if isinstance(value, np.generic) else value
    return "(empty)" if value is None or (isinstance(value, float) and np.isnan(value)) else repr(value)


def map_codes(path: Path, column: pd.Series, codes: Mapping[object, int], what: str) -> np.ndarray:
    """Translate every value of ``column`` through ``codes`` (int keys and lower-case text keys).

    Integral floats and digit strings count as integers. The first value not in ``codes`` raises
    ``<path> row N: <what> <value> in column <name>; allowed: ...``.
    """
    keys = column if pd.api.types.is_integer_dtype(column.dtype) else column.map(_normal)
    mapped = keys.map(dict(codes))
    bad = np.flatnonzero(mapped.isna().to_numpy())
    if len(bad):
        row = int(bad[0])
        allowed = ", ".join(str(key) for key in codes)
        raise row_error(path, row + 1, f"{what} {shown(column.iloc[row])} in column {column.name!r}; allowed: {allowed}")
    return mapped.to_numpy(dtype=np.int64)


def numeric_column(path: Path, column: pd.Series, *, missing_ok: bool) -> np.ndarray:
    """The float values of ``column``; a non-numeric cell (or an empty one unless ``missing_ok``) raises a row error."""
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
    empty = column.isna().to_numpy()
    bad = np.flatnonzero(np.isnan(values) & ~(empty & missing_ok))
    if len(bad):
        row = int(bad[0])
        raise row_error(path, row + 1, f"value {shown(column.iloc[row])} in column {column.name!r} is not a number")
    return values


@dataclass
class NativeTable:
    """Everything a native format says about its examples, before any image is decoded.

    ``inputs[i]`` is a file name relative to ``image_root`` (images) or a string / (premise, hypothesis)
    pair (text); ``y``, ``s`` and ``split`` (0 train, 1 val, 2 test) are int arrays; ``rows[i]`` is the
    1-based record of ``source`` that example ``i`` came from (for error messages).
    """

    name: str
    modality: str
    source: Path
    inputs: Sequence
    y: np.ndarray
    s: np.ndarray
    split: np.ndarray
    class_names: tuple[str, ...]
    attribute_names: tuple[str, ...]
    average: str = "pooled"
    image_root: Path | None = None
    rows: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        """Refuse, in one line, a split without examples (naming the file) and an image listed twice (one image in
        two splits, or twice in one; naming both rows)."""
        for code, name in enumerate(SPLITS):
            if not (np.asarray(self.split) == code).any():
                raise GroupsweepError(f"{self.source}: no example of split {name!r}; every split ({', '.join(SPLITS)}) "
                                      "needs examples")
        if self.modality != "image":
            return
        names = pd.Series(list(self.inputs))
        repeated = np.flatnonzero(names.duplicated().to_numpy())
        if len(repeated):
            again = int(repeated[0])
            first = int(np.flatnonzero((names == names.iloc[again]).to_numpy())[0])
            raise GroupsweepError(f"{self.where(again)}: image {names.iloc[again]!r} listed twice (first at row "
                                  f"{self.row(first)}); each image is one example of one split")

    def indices(self, split: str) -> np.ndarray:
        """Positions of the examples of ``split`` (``train``, ``val`` or ``test``), in file order."""
        return np.flatnonzero(self.split == SPLITS.index(split))

    def row(self, i: int) -> int:
        """The 1-based record of ``source`` that example ``i`` came from."""
        return int(self.rows[i]) if self.rows is not None else i + 1

    def where(self, i: int) -> str:
        """``<source> row N``: where example ``i`` is described."""
        return f"{self.source} row {self.row(i)}"

    def dataset(self, inputs: Mapping[str, Sequence] | None = None, **fields) -> GroupDataset:
        """The ``GroupDataset`` of this table with per-split ``inputs`` (default: the table's own inputs).

        With the default, image inputs are file names: enough for counting (``groupsweep data check``),
        not for training. ``fields`` (``image_size``, ``max_length``, ``cache_dir``) are passed to
        ``GroupDataset``.
        """
        if inputs is None:
            inputs = {name: [self.inputs[i] for i in self.indices(name)] for name in SPLITS}
        splits = {
            name: Split(inputs[name], self.y[self.indices(name)], self.s[self.indices(name)]) for name in SPLITS
        }
        return GroupDataset(
            name=self.name, modality=self.modality, splits=splits, class_names=self.class_names,
            attribute_names=self.attribute_names, average=self.average,
            meta={"source": str(self.source), **self.meta}, **fields,
        )

    def check_images_exist(self) -> None:
        """Raise ``<source> row N: image <name> not found under <image_root>`` for the first missing image, and a
        row error for a file name that is empty or leaves the data folder (``relative_path``)."""
        for i, name in enumerate(self.inputs):
            if not isinstance(name, str) or not name.strip():
                raise GroupsweepError(f"{self.where(i)}: missing image file name")
            try:
                relative_path("image file name", name)
            except GroupsweepError as error:
                raise GroupsweepError(f"{self.where(i)}: {error}") from None
            if not (self.image_root / name).is_file():
                raise GroupsweepError(f"{self.where(i)}: image {name!r} not found under {str(self.image_root)!r}")


def image_base(root: Path, first_name: str, candidates: Sequence[str]) -> Path:
    """The folder (``root / c`` for the first ``c`` in ``candidates``) that holds the image ``first_name``.

    Falls back to ``root / candidates[0]`` so the missing-image error names the expected place.
    """
    for candidate in candidates:
        if isinstance(first_name, str) and first_name and (root / candidate / first_name).is_file():
            return root / candidate
    return root / candidates[0]


NativeReader = Callable[..., NativeTable]
NATIVE_READERS: dict[str, NativeReader] = {}


def native_reader(name: str) -> Callable[[NativeReader], NativeReader]:
    """Decorator registering ``reader(root, **options) -> NativeTable`` for the native format of dataset ``name``
    (``options``: the dataset's options that change what is read, e.g. CelebA's ``target``)."""

    def wrap(fn: NativeReader) -> NativeReader:
        if name in NATIVE_READERS:
            raise RuntimeError(f"native reader {name!r} registered twice")
        NATIVE_READERS[name] = fn
        return fn

    return wrap


def image_dataset(table: NativeTable, image_size: int, cache_dir: str | os.PathLike | None, root: Path) -> GroupDataset:
    """The training-ready dataset of an image table: each split's images as a decode-once uint8 memmap.

    The table is validated (every split and class present) before any image is decoded.
    """
    image_size = positive_integer("image_size", image_size)
    if image_size > MAX_IMAGE_SIZE:
        raise GroupsweepError(f"dataset {table.name!r}: image_size {image_size} is larger than {MAX_IMAGE_SIZE} px; "
                              f"give a size from 1 to {MAX_IMAGE_SIZE} (the paper's models take 224)")
    table.dataset()  # validates splits and labels before the (slow) first decode
    directory = resolve_cache_dir(root, cache_dir)
    inputs = {}
    for split in SPLITS:
        idx = table.indices(split)
        inputs[split] = cached_images(
            table.image_root, [table.inputs[i] for i in idx], directory,
            key=f"{table.name}-{split}", image_size=image_size, where=lambda j, idx=idx: table.where(idx[j]),
        )
    return table.dataset(inputs, image_size=image_size, cache_dir=str(directory))


def text_dataset(table: NativeTable, max_length: int, cache_dir: str | os.PathLike | None, root: Path) -> GroupDataset:
    """The training-ready dataset of a text table; its token ids are cached under ``resolve_cache_dir`` by the
    first run that tokenises it (``trainables.tokenization.encode_texts``)."""
    return table.dataset(max_length=positive_integer("max_length", max_length),
                         cache_dir=str(resolve_cache_dir(root, cache_dir)))
