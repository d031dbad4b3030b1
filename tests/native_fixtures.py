"""Writers of tiny dataset folders in every native format, with the real file and column names.

Each writer takes ``counts``: ``{split: per-group counts}`` with groups ``g = y * n_spurious + s`` and
splits ``train``/``val``/``test``, writes the files under ``root`` and returns ``root``. Rows are
interleaved across splits and groups (a fixed shuffle), as in the real files. Images are small solid
JPEGs whose colour encodes the group (``group_color``), so a test can check that each decoded image
sits next to its own labels.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
from PIL import Image

SPLIT_INDEX = {"train": 0, "val": 1, "test": 2}


def examples(counts: dict, n_spurious: int, seed: int = 0) -> list[tuple[int, int, int]]:
    """``(split code, y, s)`` for every example of ``counts``, in a fixed shuffled order."""
    rows = [
        (SPLIT_INDEX[split], g // n_spurious, g % n_spurious)
        for split, per_group in counts.items()
        for g, n in enumerate(per_group)
        for _ in range(n)
    ]
    random.Random(seed).shuffle(rows)
    return rows


def group_color(y: int, s: int) -> tuple[int, int, int]:
    """The solid RGB colour of the fixture images of group (y, s)."""
    return (40 + 170 * y, 40 + 170 * s, 120)


def write_jpeg(path: Path, color, size=(40, 30)) -> None:
    """A solid-colour JPEG of ``size`` (width, height) at ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, tuple(color)).save(path, quality=95)


def write_waterbirds(root: Path, counts: dict) -> Path:
    """``metadata.csv`` (img_id, img_filename, y, split, place, place_filename) and CUB-style class folders."""
    folders = {0: "094.White_breasted_Nuthatch", 1: "001.Black_footed_Albatross"}
    places = {0: "/b/bamboo_forest/00000001.jpg", 1: "/o/ocean/00000002.jpg"}
    rows = []
    for i, (split, y, s) in enumerate(examples(counts, 2), start=1):
        name = f"{folders[y]}/{folders[y].split('.')[1]}_{i:04d}_{100 + i}.jpg"
        write_jpeg(root / name, group_color(y, s))
        rows.append([i, name, y, split, s, places[s]])
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["img_id", "img_filename", "y", "split", "place", "place_filename"])
        writer.writerows(rows)
    return root


CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()


def _celeba_rows(counts: dict, target: str, spurious: str) -> list[tuple[str, int, list[int]]]:
    """``(file name, split code, 40 attribute values in -1/1)`` with ``target`` = y and ``spurious`` = s (the
    other attributes drawn at random)."""
    rng = np.random.default_rng(0)
    rows = []
    for i, (split, y, s) in enumerate(examples(counts, 2), start=1):
        values = list(rng.choice([-1, 1], size=len(CELEBA_ATTRIBUTES)))
        values[CELEBA_ATTRIBUTES.index(target)] = 1 if y else -1
        values[CELEBA_ATTRIBUTES.index(spurious)] = 1 if s else -1
        rows.append((f"{i:06d}.jpg", split, [int(v) for v in values]))
    return rows


def _celeba_color(values: list[int], target: str, spurious: str):
    """The fixture image colour of a row: its (target, spurious) group's."""
    return group_color(int(values[CELEBA_ATTRIBUTES.index(target)] == 1),
                       int(values[CELEBA_ATTRIBUTES.index(spurious)] == 1))


def write_celeba_original(root: Path, counts: dict, target: str = "Blond_Hair", spurious: str = "Male") -> Path:
    """The original release: ``list_attr_celeba.txt`` (count line, names line, space-aligned -1/1 rows),
    ``list_eval_partition.txt`` and ``img_align_celeba/``; ``counts`` are the groups of (``target``,
    ``spurious``)."""
    rows = _celeba_rows(counts, target, spurious)
    lines = [f"{len(rows)}", " ".join(CELEBA_ATTRIBUTES) + " "]
    for name, _, values in rows:
        lines.append(name + "".join(f" {v:2d}" for v in values))  # "-1" and " 1": runs of 1 or 2 spaces
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(f"{name} {split}\n" for name, split, _ in rows))
    for name, _, values in rows:
        write_jpeg(root / "img_align_celeba" / name, _celeba_color(values, target, spurious), size=(36, 44))
    return root


def write_celeba_kaggle(root: Path, counts: dict, target: str = "Blond_Hair", spurious: str = "Male") -> Path:
    """The Kaggle archive: ``list_attr_celeba.csv`` (image_id + 40 columns, -1/1),
    ``list_eval_partition.csv`` (image_id, partition) and ``img_align_celeba/img_align_celeba/``; ``counts``
    are the groups of (``target``, ``spurious``)."""
    rows = _celeba_rows(counts, target, spurious)
    with open(root / "list_attr_celeba.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", *CELEBA_ATTRIBUTES])
        writer.writerows([name, *values] for name, _, values in rows)
    with open(root / "list_eval_partition.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "partition"])
        writer.writerows([name, split] for name, split, _ in rows)
    for name, _, values in rows:
        write_jpeg(root / "img_align_celeba" / "img_align_celeba" / name, _celeba_color(values, target, spurious),
                   size=(36, 44))
    return root


def write_celeba_prepared(root: Path, counts: dict) -> Path:
    """A prepared ``metadata.csv`` (img_filename, y, place, split) with images in ``img_align_celeba/``."""
    rows = []
    for i, (split, y, s) in enumerate(examples(counts, 2), start=1):
        name = f"{i:06d}.jpg"
        write_jpeg(root / "img_align_celeba" / name, group_color(y, s), size=(36, 44))
        rows.append([name, y, s, split])
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["img_filename", "y", "place", "split"])
        writer.writerows(rows)
    return root


CIVIL_IDENTITIES = ("male", "female", "LGBTQ", "christian", "muslim", "other_religions", "black", "white")
CIVIL_COLUMNS = (
    "id", "comment_text", "split", "toxicity", "severe_toxicity", "obscene", "sexual_explicit",
    "identity_attack", "insult", "threat", *CIVIL_IDENTITIES, "identity_any", "male_identity", "comment_id",
)


# Texts that pandas reads as missing by default; a comment or custom text may be just that word.
NA_TEXTS = ("NA", "None", "null", "nan", "N/A")


def civil_text(i: int) -> str:
    """Comment ``i``: commas, quotes and a newline, so CSV quoting is exercised; every fourth one a word that
    pandas reads as missing (``NA_TEXTS``), which must stay text."""
    return NA_TEXTS[i // 4 % len(NA_TEXTS)] if i % 4 == 1 else f'comment {i}, says "hello"\nsecond line {i}'


def write_civilcomments(root: Path, counts: dict) -> Path:
    """WILDS v1.0 ``all_data_with_identities.csv``: split names, toxicity fractions, identity fractions.

    Toxicity is 0.5 exactly or 0.49 around the threshold; the identity group gets one identity at 0.5
    or above (cycling through all eight) and others below; some identity cells are left empty.
    """
    rows = []
    for i, (split, y, s) in enumerate(examples(counts, 2)):
        toxicity = (0.5, 0.9)[i % 2] if y else (0.49, 0.0)[i % 2]
        identities = {name: ("" if (i + k) % 5 == 0 else 0.2) for k, name in enumerate(CIVIL_IDENTITIES)}
        if s:
            identities[CIVIL_IDENTITIES[i % len(CIVIL_IDENTITIES)]] = (0.5, 1.0)[i % 2]
        row = {
            "id": 1000 + i, "comment_text": civil_text(i), "split": ("train", "val", "test")[split],
            "toxicity": toxicity, "severe_toxicity": 0.0, "obscene": 0.0, "sexual_explicit": 0.0,
            "identity_attack": 0.0, "insult": 0.1, "threat": 0.0, **identities,
            "identity_any": s, "male_identity": 0, "comment_id": 5000 + i,
        }
        rows.append([row[column] for column in CIVIL_COLUMNS])
    with open(root / "all_data_with_identities.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CIVIL_COLUMNS)
        writer.writerows(rows)
    return root


GLUE_TRAIN_COLUMNS = (
    "index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
    "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label",
)
GLUE_DEV_COLUMNS = GLUE_TRAIN_COLUMNS[:-1] + ("label2", "label3", "label4", "label5", "gold_label")
MNLI_LABELS = ("contradiction", "entailment", "neutral")


def mnli_pair(i: int, negation: int) -> tuple[str, str]:
    """Premise and hypothesis of pair ``i``: an unbalanced quote, and ``null`` (a pandas NA token) at i = 0."""
    premise = "null" if i == 0 else f'He said "it {i} is fine.'
    hypothesis = f"There is no thing {i}." if negation else f"There is a thing {i}."
    return premise, hypothesis


def write_multinli(root: Path, counts: dict, layout: str = "flat") -> Path:
    """``metadata_random.csv`` plus GLUE MNLI ``train.tsv``, ``dev_matched.tsv``, ``dev_mismatched.tsv``.

    The text rows are split 60/20/20 over the three GLUE files in metadata order (Sagawa et al. drew the
    random split independently of the GLUE files). ``layout`` ``flat`` puts everything in ``root``;
    ``group_dro`` uses ``data/metadata_random.csv`` and ``glue_data/MNLI/``.
    """
    rows = examples(counts, 2)
    meta_dir, glue_dir = (root, root) if layout == "flat" else (root / "data", root / "glue_data" / "MNLI")
    meta_dir.mkdir(parents=True, exist_ok=True)
    glue_dir.mkdir(parents=True, exist_ok=True)
    with open(meta_dir / "metadata_random.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", "gold_label", "sentence2_has_negation", "split"])
        # the index has gaps where the MultiNLI release had unlabeled pairs
        writer.writerows([i + i // 7, y, s, split] for i, (split, y, s) in enumerate(rows))
    bounds = (0, int(0.6 * len(rows)), int(0.8 * len(rows)), len(rows))
    for name, columns, lo, hi in zip(
        ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"),
        (GLUE_TRAIN_COLUMNS, GLUE_DEV_COLUMNS, GLUE_DEV_COLUMNS), bounds[:-1], bounds[1:],
    ):
        lines = ["\t".join(columns)]
        for k in range(lo, hi):
            _, y, s = rows[k]
            premise, hypothesis = mnli_pair(k, s)
            label = MNLI_LABELS[y]
            cells = {"index": str(k - lo), "promptID": str(k), "pairID": f"{k}e", "genre": "fiction",
                     "sentence1_binary_parse": "( x )", "sentence2_binary_parse": "( y )",
                     "sentence1_parse": "(ROOT x)", "sentence2_parse": "(ROOT y)",
                     "sentence1": premise, "sentence2": hypothesis, "gold_label": label}
            lines.append("\t".join(cells.get(column, label) for column in columns))
        (glue_dir / name).write_text("\n".join(lines) + "\n")
    return root


def write_custom_images(root: Path, counts: dict, n_spurious: int = 2, split_names: bool = False) -> Path:
    """Custom ``metadata.csv`` (id, filename, split, y, a, y_name, a_name) with images under ``images/``."""
    rows = []
    for i, (split, y, s) in enumerate(examples(counts, n_spurious)):
        name = f"images/{i:04d}.jpg"
        write_jpeg(root / name, group_color(y, s % 2))
        rows.append([i, name, ("train", "val", "test")[split] if split_names else split, y, s, f"class{y}", f"attr{s}"])
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "filename", "split", "y", "a", "y_name", "a_name"])
        writer.writerows(rows)
    return root


def custom_text(i: int, y: int, word: str = "text") -> str:
    """Text ``i`` of a custom text fixture."""
    return NA_TEXTS[i // 3 % len(NA_TEXTS)] if i % 3 == 1 else f"{word} {i}, y={y}"


def write_custom_text(root: Path, counts: dict, pairs: bool = False) -> Path:
    """Custom ``metadata.csv`` (id, text[, text_b], split, y, a) with integer names; every third text a word that
    pandas reads as missing (``NA_TEXTS``)."""
    header = ["id", "text", *(["text_b"] if pairs else []), "split", "y", "a"]
    rows = []
    for i, (split, y, s) in enumerate(examples(counts, 2)):
        texts = [custom_text(i, y), *([custom_text(i + 1, y, "second")] if pairs else [])]
        rows.append([i, *texts, split, y, s])
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return root
