"""The one split-aware group dataset that every loader returns, and the dataset registry.

A group dataset holds, per split (``train``, ``val``, ``test``), the inputs, the class ``y`` and the
spurious attribute ``s`` of every example. The group of an example is ``g = y * n_spurious + s``
(the convention of every peer tool). Images are uint8 arrays of shape (N, H, W, 3); texts are a
sequence of strings, or of (premise, hypothesis) pairs for sentence-pair tasks.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import numpy as np
import pandas as pd

from trainables.errors import GroupsweepError, choose, single_line

SPLITS = ("train", "val", "test")
# The largest image side a dataset is built at (the paper's models take 224 px; ConvNeXt-V2 also 384 px): one
# uint8 image of this side is 3 MiB, so a mistyped size fails in one line instead of allocating terabytes.
MAX_IMAGE_SIZE = 1024
# The most classes (or attribute values) a dataset may have: a head or a label table of that size is small, and a
# mistyped label fails in one line instead of allocating one name per value up to it.
MAX_LABELS = 10_000
SPLIT_CODES = {0: "train", 1: "val", 2: "test"}


@dataclass(frozen=True)
class Split:
    """The examples of one split: ``inputs[i]`` has class ``y[i]`` and spurious attribute ``s[i]``."""

    inputs: np.ndarray | Sequence
    y: np.ndarray
    s: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "y", np.asarray(self.y, dtype=np.int64))
        object.__setattr__(self, "s", np.asarray(self.s, dtype=np.int64))
        if not (len(self.inputs) == len(self.y) == len(self.s)):
            raise GroupsweepError(
                f"split has {len(self.inputs)} inputs but {len(self.y)} labels and {len(self.s)} attributes"
            )

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class GroupDataset:
    """A classification dataset with a spurious attribute, split into train/val/test.

    Fields:
      name: registry name, e.g. ``synthetic-waterbirds``.
      modality: ``image`` (inputs uint8 (N, H, W, 3)) or ``text`` (strings or string pairs).
      splits: ``{"train": Split, "val": Split, "test": Split}``.
      class_names / attribute_names: human-readable names for tables, indexed by y and s.
      average: how average accuracy is reported: ``pooled`` (plain accuracy) or ``train-weighted``
        (per-group accuracy weighted by the full training split's group proportions, as the paper
        does for Waterbirds whose val/test group mix differs from train).
      image_size: model input resolution (images only); stored images may be larger.
      max_length: tokenizer max length (text only).
      cache_dir: the folder where the inputs derived from a native dataset's files are cached (decoded
        images, token ids: ``trainables.data.native.resolve_cache_dir``); None for the embedded benchmarks,
        which are generated.
    """

    name: str
    modality: Literal["image", "text"]
    splits: dict[str, Split]
    class_names: tuple[str, ...]
    attribute_names: tuple[str, ...]
    average: Literal["pooled", "train-weighted"] = "pooled"
    image_size: int | None = None
    max_length: int | None = None
    cache_dir: str | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        choose("modality", self.modality, ("image", "text"))
        choose("average", self.average, ("pooled", "train-weighted"))
        if len(self.class_names) < 2:
            raise GroupsweepError(f"dataset {self.name!r} has {len(self.class_names)} class "
                                  f"({', '.join(self.class_names) or 'none'}); a classifier needs at least 2")
        if set(self.splits) != set(SPLITS):
            raise GroupsweepError(f"dataset {self.name!r} has splits {sorted(self.splits)}; need {list(SPLITS)}")
        for split_name in SPLITS:
            split = self.splits[split_name]
            if len(split) == 0:
                raise GroupsweepError(f"dataset {self.name!r}: split {split_name!r} is empty")
            for values, names, what in ((split.y, self.class_names, "class"), (split.s, self.attribute_names, "attribute")):
                bad = values[(values < 0) | (values >= len(names))]
                if len(bad):
                    raise GroupsweepError(
                        f"dataset {self.name!r}: split {split_name!r} has {what} value {int(bad[0])}; "
                        f"allowed 0..{len(names) - 1} ({', '.join(names)})"
                    )
        present = np.bincount(self.splits["train"].y, minlength=self.n_classes)
        for c, count in enumerate(present):
            if count == 0:
                raise GroupsweepError(
                    f"dataset {self.name!r}: split 'train' has no example of class {c} ({self.class_names[c]!r}); "
                    f"every class must be present"
                )

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_spurious(self) -> int:
        return len(self.attribute_names)

    @property
    def n_groups(self) -> int:
        return self.n_classes * self.n_spurious

    @property
    def group_names(self) -> list[str]:
        """``class/attribute`` for every group index g = y * n_spurious + s."""
        return [f"{c}/{a}" for c in self.class_names for a in self.attribute_names]

    def groups(self, split: str) -> np.ndarray:
        """Group index ``y * n_spurious + s`` of every example of ``split``."""
        choose("split", split, SPLITS)
        part = self.splits[split]
        return part.y * self.n_spurious + part.s

    def group_counts(self, split: str) -> np.ndarray:
        """Number of examples of each group in ``split`` (length n_groups)."""
        return np.bincount(self.groups(split), minlength=self.n_groups)

    def train_group_proportions(self) -> np.ndarray:
        """Group proportions of the full training split (weights of the train-weighted average)."""
        counts = self.group_counts("train")
        return counts / counts.sum()

    def counts(self) -> pd.DataFrame:
        """Per-group composition in the layout of the paper's Table 2.

        One row per group with columns ``group, y, s, class, attribute, p_y, p_g, p_y_given_s,
        train, val, test``; the probabilities are those of the training split.
        """
        train = self.group_counts("train").astype(float)
        total = train.sum()
        rows = []
        for g, name in enumerate(self.group_names):
            y, s = divmod(g, self.n_spurious)
            class_total = train[y * self.n_spurious:(y + 1) * self.n_spurious].sum()
            attr_total = train[s::self.n_spurious].sum()
            rows.append({
                "group": g, "y": y, "s": s,
                "class": self.class_names[y], "attribute": self.attribute_names[s],
                "p_y": class_total / total, "p_g": train[g] / total,
                "p_y_given_s": train[g] / attr_total if attr_total else float("nan"),
                **{split: int(self.group_counts(split)[g]) for split in SPLITS},
            })
        return pd.DataFrame(rows)


DatasetBuilder = Callable[..., GroupDataset]
DATASETS: dict[str, DatasetBuilder] = {}
# dataset name -> check(**options): refuses option values that are wrong whatever the data (one line)
OPTION_CHECKS: dict[str, Callable[..., None]] = {}
# dataset name -> the modality of its inputs (``image`` or ``text``), when its registration states one
MODALITIES: dict[str, str] = {}


def register_dataset(name: str, check_options: Callable[..., None] | None = None, modality: str | None = None
                     ) -> Callable[[DatasetBuilder], DatasetBuilder]:
    """Decorator registering a builder ``fn(**options) -> GroupDataset`` under ``name``.

    ``check_options(**options)``, when given, checks the option values that can be checked without reading
    any data (so a spec is refused before Ray starts) and raises a one-line ``GroupsweepError``.
    ``modality`` (``image`` or ``text``): what every dataset it builds holds, so a model of the other
    modality is refused before Ray starts; None when only its files tell (``custom``).
    """

    def wrap(fn: DatasetBuilder) -> DatasetBuilder:
        if name in DATASETS:
            raise RuntimeError(f"dataset {name!r} registered twice")
        DATASETS[name] = fn
        if check_options is not None:
            OPTION_CHECKS[name] = check_options
        if modality is not None:
            MODALITIES[name] = modality
        return fn

    return wrap


def dataset_options(name: str) -> list[str]:
    """Names of the keyword options that dataset ``name`` accepts."""
    choose("dataset", name, sorted(DATASETS))
    return [p for p in inspect.signature(DATASETS[name]).parameters]


def reads_files(name: str) -> bool:
    """Whether dataset ``name`` is read from files under a data root (its loader takes ``root``: a native
    dataset), rather than generated (an embedded benchmark)."""
    return "root" in dataset_options(name)


def check_dataset_options(name: str, options: dict) -> None:
    """Refuse, in one ``GroupsweepError`` line and without reading any data, an unknown dataset ``name``, an
    option it does not take, or an option value its registered check refuses (``register_dataset``)."""
    allowed = dataset_options(name)
    for key in options:
        if key not in allowed:
            raise GroupsweepError(f"dataset {name!r} takes no option {key!r}; allowed: {', '.join(allowed) or 'none'}")
    if name in OPTION_CHECKS:
        OPTION_CHECKS[name](**options)


def load_dataset(name: str, **options) -> GroupDataset:
    """Build the registered dataset ``name`` with ``options``.

    Raises ``GroupsweepError`` (one line) for an unknown name or an option the dataset does not take or
    whose value it refuses (``check_dataset_options``), and for a dataset that does not fit in memory.
    """
    check_dataset_options(name, options)
    try:
        return DATASETS[name](**options)
    except MemoryError as error:
        raise GroupsweepError(f"dataset {name!r} with options {options} does not fit in this machine's memory "
                              f"({single_line(error)})") from None
