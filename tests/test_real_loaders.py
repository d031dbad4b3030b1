"""The real-benchmark loaders on tiny folders written in each native format."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import trainables.data.celeba  # noqa: F401  (registers the loaders)
import trainables.data.civilcomments  # noqa: F401
import trainables.data.custom  # noqa: F401
import trainables.data.multinli  # noqa: F401
import trainables.data.waterbirds  # noqa: F401
from native_fixtures import (
    NA_TEXTS,
    civil_text,
    custom_text,
    examples,
    group_color,
    mnli_pair,
    write_celeba_kaggle,
    write_celeba_original,
    write_celeba_prepared,
    write_civilcomments,
    write_custom_images,
    write_custom_text,
    write_multinli,
    write_waterbirds,
)
from trainables.data.base import SPLITS, dataset_options, load_dataset
from trainables.data.image_cache import cache_resolution
from trainables.errors import GroupsweepError

COUNTS = {"train": (5, 2, 1, 3), "val": (2, 2, 1, 1), "test": (3, 2, 2, 1)}
COUNTS6 = {"train": (3, 2, 3, 1, 3, 2), "val": (1, 1, 1, 1, 1, 1), "test": (2, 1, 2, 1, 2, 1)}
SIZE = 32  # model input size in these tests: cached squares of round(32 * 256 / 224) = 37 px


def assert_counts(dataset, counts):
    for split in SPLITS:
        assert dataset.group_counts(split).tolist() == list(counts[split]), split


def assert_images_match_groups(dataset):
    """Every cached image has the solid colour of its own (y, s): images stay aligned with labels."""
    for split in SPLITS:
        part = dataset.splits[split]
        assert isinstance(part.inputs, np.memmap)
        assert part.inputs.shape == (len(part), cache_resolution(SIZE), cache_resolution(SIZE), 3)
        assert part.inputs.dtype == np.uint8
        for image, y, s in zip(part.inputs, part.y, part.s):
            assert np.abs(image.reshape(-1, 3).mean(0) - group_color(y, s)).max() < 6


def test_options_of_each_loader():
    assert dataset_options("waterbirds") == ["root", "image_size", "cache_dir"]
    assert dataset_options("celeba") == ["root", "image_size", "cache_dir", "target", "spurious"]
    assert dataset_options("civilcomments") == ["root", "max_length", "cache_dir"]
    assert dataset_options("multinli") == ["root", "max_length", "cache_dir"]
    assert dataset_options("custom") == ["root", "image_size", "cache_dir", "max_length", "average"]


def test_waterbirds(tmp_path):
    dataset = load_dataset("waterbirds", root=write_waterbirds(tmp_path, COUNTS), image_size=SIZE)
    assert_counts(dataset, COUNTS)
    assert dataset.class_names == ("landbird", "waterbird") and dataset.attribute_names == ("land", "water")
    assert dataset.average == "train-weighted" and dataset.modality == "image" and dataset.image_size == SIZE
    assert_images_match_groups(dataset)
    # split codes: rows with split 1 become the val split, in file order
    frame = pd.read_csv(tmp_path / "metadata.csv")
    val = frame[frame.split == 1]
    assert dataset.splits["val"].y.tolist() == val.y.tolist()
    assert dataset.splits["val"].s.tolist() == val.place.tolist()


@pytest.mark.parametrize("writer", [write_celeba_original, write_celeba_kaggle, write_celeba_prepared])
def test_celeba_layouts(tmp_path, writer):
    dataset = load_dataset("celeba", root=writer(tmp_path, COUNTS), image_size=SIZE)
    assert_counts(dataset, COUNTS)
    assert dataset.class_names == ("non-blond", "blond") and dataset.attribute_names == ("female", "male")
    assert dataset.average == "pooled"
    assert_images_match_groups(dataset)


def test_an_image_size_beyond_the_largest_is_refused_before_any_image_is_decoded(tmp_path):
    root = write_waterbirds(tmp_path, COUNTS)
    with pytest.raises(GroupsweepError, match="image_size 100000 is larger than 1024 px"):
        load_dataset("waterbirds", root=root, image_size=100000)
    assert not list(root.rglob("*.npy"))  # no cache (nor its temporary file) written

def test_celeba_original_reads_blond_and_male_columns(tmp_path):
    """y = Blond_Hair and s = Male (-1 -> 0, 1 -> 1), split from list_eval_partition.txt, in file order."""
    write_celeba_original(tmp_path, COUNTS)
    dataset = load_dataset("celeba", root=tmp_path, image_size=SIZE)
    lines = (tmp_path / "list_attr_celeba.txt").read_text().splitlines()
    names = lines[1].split()
    table = [line.split() for line in lines[2:]]
    blond = [int(row[1 + names.index("Blond_Hair")] == "1") for row in table]
    male = [int(row[1 + names.index("Male")] == "1") for row in table]
    split = [int(line.split()[1]) for line in (tmp_path / "list_eval_partition.txt").read_text().splitlines()]
    for code, name in enumerate(SPLITS):
        assert dataset.splits[name].y.tolist() == [b for b, c in zip(blond, split) if c == code]
        assert dataset.splits[name].s.tolist() == [m for m, c in zip(male, split) if c == code]


# CelebA-Age (the D3M paper): y = Young (old 0 / young 1), s = Male. Groups g = 2 y + s:
# old female, old male, young female, young male.
AGE_COUNTS = {"train": (2, 4, 6, 1), "val": (1, 2, 1, 1), "test": (3, 1, 2, 2)}


@pytest.mark.parametrize("writer", [write_celeba_original, write_celeba_kaggle])
def test_celeba_age_composition_from_the_native_files(tmp_path, writer):
    writer(tmp_path, AGE_COUNTS, target="Young", spurious="Male")
    age = load_dataset("celeba", root=tmp_path, image_size=SIZE, target="Young", spurious="Male")
    assert_counts(age, AGE_COUNTS)
    assert age.class_names == ("old", "young") and age.attribute_names == ("female", "male")
    assert age.group_names == ["old/female", "old/male", "young/female", "young/male"]
    counts = age.counts().set_index("group")
    # 13 training examples: 6 + 1 = 7 young (p(y=1) = 7/13); 2 + 6 = 8 female, 6 young: p(y=1 | s=0) = 6/8
    assert counts.at[3, "p_y"] == pytest.approx(7 / 13) and counts.at[2, "p_y_given_s"] == pytest.approx(6 / 8)
    assert counts.at[1, "p_g"] == pytest.approx(4 / 13)
    assert_images_match_groups(age)
    # The same files with the default pairing: y = Blond_Hair, whatever the fixture drew for it
    blond = load_dataset("celeba", root=tmp_path, image_size=SIZE)
    assert blond.class_names == ("non-blond", "blond")
    assert np.array_equal(blond.splits["train"].s, age.splits["train"].s)
    assert sum(len(blond.splits[split]) for split in SPLITS) == 26


def test_celeba_any_two_attributes_with_generic_names(tmp_path):
    write_celeba_original(tmp_path, COUNTS, target="Smiling", spurious="Eyeglasses")
    dataset = load_dataset("celeba", root=tmp_path, image_size=SIZE, target="Smiling", spurious="Eyeglasses")
    assert_counts(dataset, COUNTS)
    assert dataset.class_names == ("not Smiling", "Smiling") and dataset.attribute_names == ("not Eyeglasses", "Eyeglasses")


@pytest.mark.parametrize("options, message", [
    ({"target": "Yung"}, r"unknown celeba target attribute 'Yung'; choose one of: 5_o_Clock_Shadow, .*, Young$"),
    ({"spurious": "male"}, r"unknown celeba spurious attribute 'male'; choose one of: 5_o_Clock_Shadow, .*, Young$"),
    ({"target": "Male"}, r"celeba target and spurious attribute are both 'Male'"),
])
def test_bad_celeba_attributes_are_refused_before_reading(tmp_path, options, message):
    with pytest.raises(GroupsweepError, match=message) as error:
        load_dataset("celeba", root=tmp_path / "nowhere", **options)  # refused before the folder is looked at
    assert "\n" not in str(error.value)


def test_another_celeba_pairing_needs_the_attribute_table(tmp_path):
    write_celeba_prepared(tmp_path, COUNTS)
    with pytest.raises(GroupsweepError, match=r"celeba target 'Young' / spurious 'Male' need the attribute table"):
        load_dataset("celeba", root=tmp_path, target="Young")


def test_celeba_image_count_line_must_match(tmp_path):
    write_celeba_original(tmp_path, COUNTS)
    path = tmp_path / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(["999", *lines[1:]]) + "\n")
    with pytest.raises(GroupsweepError, match=r"list_attr_celeba.txt: first line says 999 images but 25 rows follow"):
        load_dataset("celeba", root=tmp_path, image_size=SIZE)


def test_celeba_attributes_may_start_with_a_bom_and_a_bad_byte_is_one_line(tmp_path):
    """A BOM (an editor saving as "UTF-8 with BOM") is read as the other files read it; a byte that is not UTF-8,
    even after the header lines, is a one-line error naming its line (it was a UnicodeDecodeError traceback)."""
    write_celeba_original(tmp_path, COUNTS)
    path = tmp_path / "list_attr_celeba.txt"
    text = path.read_text()
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert len(load_dataset("celeba", root=tmp_path, image_size=SIZE).splits["train"].y) > 0
    lines = text.splitlines()
    path.write_bytes("\n".join(lines[:4]).encode() + b"\xe9\n" + "\n".join(lines[4:]).encode() + b"\n")
    with pytest.raises(GroupsweepError, match=r"list_attr_celeba.txt: line 4 is not utf-8 text") as error:
        load_dataset("celeba", root=tmp_path, image_size=SIZE)
    assert "\n" not in str(error.value)


def test_celeba_image_missing_from_partition(tmp_path):
    write_celeba_original(tmp_path, COUNTS)
    path = tmp_path / "list_eval_partition.txt"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(GroupsweepError, match=r"list_attr_celeba.txt row 25: image '000025.jpg' has no row in list_eval_partition.txt"):
        load_dataset("celeba", root=tmp_path, image_size=SIZE)


def test_civilcomments(tmp_path):
    dataset = load_dataset("civilcomments", root=write_civilcomments(tmp_path, COUNTS))
    assert_counts(dataset, COUNTS)  # y: toxicity >= 0.5 (0.5 counts, 0.49 not); s: any identity >= 0.5
    assert dataset.modality == "text" and dataset.max_length == 220
    assert dataset.class_names == ("neutral", "toxic")
    rows = examples(COUNTS, 2)
    train = [i for i, (split, _, _) in enumerate(rows) if split == 0]
    # commas, quotes, newlines kept; "NA", "None", "null"... stay text (pandas would read them as missing)
    assert dataset.splits["train"].inputs == [civil_text(i) for i in train]
    assert set(NA_TEXTS) <= set(dataset.splits["train"].inputs + dataset.splits["val"].inputs
                                + dataset.splits["test"].inputs)
    assert load_dataset("civilcomments", root=tmp_path, max_length=64).max_length == 64


@pytest.mark.parametrize("layout", ["flat", "group_dro"])
def test_multinli(tmp_path, layout):
    dataset = load_dataset("multinli", root=write_multinli(tmp_path, COUNTS6, layout=layout))
    assert_counts(dataset, COUNTS6)
    assert dataset.class_names == ("contradiction", "entailment", "neither")
    assert dataset.attribute_names == ("no negation", "negation") and dataset.max_length == 128
    rows = examples(COUNTS6, 2)
    for code, split in enumerate(SPLITS):
        expected = [mnli_pair(k, s) for k, (c, _, s) in enumerate(rows) if c == code]
        assert dataset.splits[split].inputs == expected  # quotes kept verbatim, "null" stays text


def test_multinli_misaligned_labels_name_both_files(tmp_path):
    write_multinli(tmp_path, COUNTS6)
    path = tmp_path / "dev_matched.tsv"
    lines = path.read_text().splitlines()
    cells = lines[2].split("\t")
    cells[-1] = {"contradiction": "entailment"}.get(cells[-1], "contradiction")
    lines[2] = "\t".join(cells)
    path.write_text("\n".join(lines) + "\n")
    n_train = len((tmp_path / "train.tsv").read_text().splitlines()) - 1
    with pytest.raises(GroupsweepError, match=rf"metadata_random.csv row {n_train + 2}: gold_label .* but dev_matched.tsv row 2 is"):
        load_dataset("multinli", root=tmp_path)


def test_multinli_row_count_mismatch(tmp_path):
    write_multinli(tmp_path, COUNTS6)
    path = tmp_path / "dev_mismatched.tsv"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(GroupsweepError, match=r"metadata_random.csv has 29 rows but the GLUE MNLI text has .*align row by row"):
        load_dataset("multinli", root=tmp_path)


def test_custom_images_with_names(tmp_path):
    dataset = load_dataset("custom", root=write_custom_images(tmp_path, COUNTS, split_names=True), image_size=SIZE)
    assert_counts(dataset, COUNTS)
    assert dataset.class_names == ("class0", "class1") and dataset.attribute_names == ("attr0", "attr1")
    assert_images_match_groups(dataset)
    assert load_dataset("custom", root=tmp_path, image_size=SIZE, average="train-weighted").average == "train-weighted"


@pytest.mark.parametrize("pairs", [False, True])
def test_custom_text(tmp_path, pairs):
    dataset = load_dataset("custom", root=write_custom_text(tmp_path, COUNTS, pairs=pairs), max_length=40)
    assert_counts(dataset, COUNTS)
    assert dataset.modality == "text" and dataset.max_length == 40 and dataset.class_names == ("0", "1")
    first = dataset.splits["train"].inputs[0]
    assert isinstance(first, tuple) == pairs
    rows = examples(COUNTS, 2)
    expected = [custom_text(i, y) if not pairs else (custom_text(i, y), custom_text(i + 1, y, "second"))
                for i, (split, y, _) in enumerate(rows) if split == 0]
    assert dataset.splits["train"].inputs == expected  # "NA", "None", "null"... stay text


def test_custom_three_attributes(tmp_path):
    counts = {"train": (2, 1, 1, 1, 1, 2), "val": (1,) * 6, "test": (1,) * 6}
    dataset = load_dataset("custom", root=write_custom_images(tmp_path, counts, n_spurious=3), image_size=SIZE)
    assert dataset.n_spurious == 3 and dataset.n_groups == 6
    assert_counts(dataset, counts)


def test_custom_conflicting_names(tmp_path):
    write_custom_images(tmp_path, COUNTS)
    frame = pd.read_csv(tmp_path / "metadata.csv")
    frame.loc[3, "y_name"] = "other"
    frame.to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(GroupsweepError, match=r"metadata.csv row 4: y_name 'other' for value \d, but row \d names it 'class\d'"):
        load_dataset("custom", root=tmp_path, image_size=SIZE)


def test_an_image_listed_twice_is_refused_naming_both_rows(tmp_path):
    """One image in two splits (a test example also trained on), or twice in one: refused, as CelebA's files are."""
    write_waterbirds(tmp_path, COUNTS)
    frame = pd.read_csv(tmp_path / "metadata.csv")
    test_row = int(np.flatnonzero(frame["split"] == 2)[0])
    frame.loc[test_row, "img_filename"] = frame.loc[0, "img_filename"]
    frame.to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(GroupsweepError, match=rf"metadata.csv row {test_row + 1}: image '.*' listed twice \(first at "
                                              r"row 1\); each image is one example of one split"):
        load_dataset("waterbirds", root=tmp_path, image_size=SIZE)


def test_an_empty_cell_is_named_empty_not_nan(tmp_path):
    write_waterbirds(tmp_path, COUNTS)
    lines = (tmp_path / "metadata.csv").read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[3].split(",")
    cells[header.index("y")] = ""
    (tmp_path / "metadata.csv").write_text("\n".join([*lines[:3], ",".join(cells), *lines[4:]]) + "\n")
    with pytest.raises(GroupsweepError, match=r"metadata.csv row 3: class \(empty\) in column 'y'; allowed: 0, 1"):
        load_dataset("waterbirds", root=tmp_path, image_size=SIZE)


def test_a_custom_dataset_of_one_class_is_refused(tmp_path):
    write_custom_images(tmp_path, COUNTS)
    frame = pd.read_csv(tmp_path / "metadata.csv")
    frame["y"], frame["y_name"] = 0, "class0"
    frame.to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(GroupsweepError, match=r"dataset 'custom' has 1 class \(class0\); a classifier needs at least 2"):
        load_dataset("custom", root=tmp_path, image_size=SIZE)


def test_custom_needs_filename_or_text(tmp_path):
    (tmp_path / "metadata.csv").write_text("id,split,y,a\n0,0,0,0\n")
    with pytest.raises(GroupsweepError, match=r"needs exactly one of the columns 'filename' \(images\) or 'text'"):
        load_dataset("custom", root=tmp_path)


# ---- root resolution ----

def test_missing_root_says_how_to_pass_it(monkeypatch):
    monkeypatch.delenv("GROUPSWEEP_DATA", raising=False)
    with pytest.raises(GroupsweepError, match=r"dataset 'waterbirds' needs its data folder: set data_root .*--set data_root=DIR.*GROUPSWEEP_DATA"):
        load_dataset("waterbirds")


def test_root_from_environment(tmp_path, monkeypatch):
    (tmp_path / "civilcomments").mkdir()
    write_civilcomments(tmp_path / "civilcomments", COUNTS)
    monkeypatch.setenv("GROUPSWEEP_DATA", str(tmp_path))
    assert_counts(load_dataset("civilcomments"), COUNTS)


def test_root_that_does_not_exist(tmp_path):
    with pytest.raises(GroupsweepError, match=r"data folder '.*nowhere' of dataset 'celeba' does not exist"):
        load_dataset("celeba", root=tmp_path / "nowhere")


def test_cache_dir_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("GROUPSWEEP_CACHE", raising=False)
    write_waterbirds(tmp_path / "wb", COUNTS)
    load_dataset("waterbirds", root=tmp_path / "wb", image_size=SIZE)
    assert len(list((tmp_path / "wb" / ".groupsweep_cache").glob("waterbirds-*.npy"))) == 3
    monkeypatch.setenv("GROUPSWEEP_CACHE", str(tmp_path / "env_cache"))
    load_dataset("waterbirds", root=tmp_path / "wb", image_size=SIZE)
    assert len(list((tmp_path / "env_cache").glob("waterbirds-*.npy"))) == 3
    load_dataset("waterbirds", root=tmp_path / "wb", image_size=SIZE, cache_dir=tmp_path / "explicit")
    assert len(list((tmp_path / "explicit").glob("waterbirds-*.npy"))) == 3


# ---- malformed inputs: one line naming the file and the row ----

def rewrite_csv(path, edit):
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(frame)
    frame.to_csv(path, index=False)


def test_missing_metadata_file(tmp_path):
    with pytest.raises(GroupsweepError, match=r"waterbirds metadata: none of metadata.csv found in"):
        load_dataset("waterbirds", root=tmp_path)


@pytest.mark.parametrize("name, writer, filename, column", [
    ("waterbirds", write_waterbirds, "metadata.csv", "place"),
    ("civilcomments", write_civilcomments, "all_data_with_identities.csv", "LGBTQ"),
    ("celeba", write_celeba_prepared, "metadata.csv", "split"),
])
def test_missing_column(tmp_path, name, writer, filename, column):
    writer(tmp_path, COUNTS)
    rewrite_csv(tmp_path / filename, lambda frame: frame.drop(columns=[column], inplace=True))
    with pytest.raises(GroupsweepError, match=rf"{filename}: missing column '{column}'; found columns: "):
        load_dataset(name, root=tmp_path)


@pytest.mark.parametrize("name, writer, filename, column, value", [
    ("waterbirds", write_waterbirds, "metadata.csv", "split", "3"),
    ("civilcomments", write_civilcomments, "all_data_with_identities.csv", "split", "dev"),
    ("custom", write_custom_text, "metadata.csv", "split", "validation"),
])
def test_unknown_split_code(tmp_path, name, writer, filename, column, value):
    writer(tmp_path, COUNTS)
    rewrite_csv(tmp_path / filename, lambda frame: frame.loc.__setitem__((4, column), value))
    with pytest.raises(GroupsweepError, match=rf"{filename} row 5: split '?{value}'? in column 'split'; allowed: "):
        load_dataset(name, root=tmp_path)


def test_a_file_that_is_not_utf8_names_its_line(tmp_path):
    """A cell saved in another encoding (cp1252's é); pandas named only an offset in a chunk of the file."""
    write_waterbirds(tmp_path, COUNTS)
    path = tmp_path / "metadata.csv"
    lines = path.read_bytes().split(b"\n")
    lines[5] = lines[5].replace(b".jpg", b".jp\xe9", 1)
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(GroupsweepError, match=r"metadata.csv: line 6 is not utf-8 text \(invalid continuation byte: "
                                              r"byte 0xe9\); save the file as UTF-8$"):
        load_dataset("waterbirds", root=tmp_path, image_size=SIZE)


def test_an_image_listed_twice_in_the_celeba_attributes_is_refused(tmp_path):
    """Two rows of one image (with other labels): before, it was loaded twice, and `data check` passed."""
    write_celeba_original(tmp_path, COUNTS)
    path = tmp_path / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    lines[5] = lines[4].split()[0] + lines[5][len(lines[5].split()[0]):]  # data row 4 names data row 3's image
    path.write_text("\n".join(lines) + "\n")
    image = lines[4].split()[0]
    with pytest.raises(GroupsweepError, match=rf"list_attr_celeba.txt row 4: image '{image}' listed twice"):
        load_dataset("celeba", root=tmp_path)


def test_unknown_split_code_in_celeba_partition(tmp_path):
    write_celeba_original(tmp_path, COUNTS)
    path = tmp_path / "list_eval_partition.txt"
    lines = path.read_text().splitlines()
    lines[6] = lines[6].split()[0] + " 7"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(GroupsweepError, match=r"list_eval_partition.txt row 7: split 7 in column 'partition'; allowed: 0, 1, 2"):
        load_dataset("celeba", root=tmp_path)


@pytest.mark.parametrize("name, writer, filename, column, value, message", [
    ("waterbirds", write_waterbirds, "metadata.csv", "y", "2", r"class 2 in column 'y'; allowed: 0, 1"),
    ("celeba", write_celeba_kaggle, "list_attr_celeba.csv", "Blond_Hair", "0", r"class 0 in column 'Blond_Hair'; allowed: -1, 1"),
    ("civilcomments", write_civilcomments, "all_data_with_identities.csv", "toxicity", "1.5", r"toxicity 1.5 outside the allowed range 0..1"),
    ("civilcomments", write_civilcomments, "all_data_with_identities.csv", "male", "7",
     r"male 7 outside the allowed range 0..1"),
    ("civilcomments", write_civilcomments, "all_data_with_identities.csv", "muslim", "-0.5",
     r"muslim -0.5 outside the allowed range 0..1"),
    ("custom", write_custom_text, "metadata.csv", "y", "-1", r"class -1 in column 'y'; allowed: integers 0 to 9999"),
    ("custom", write_custom_text, "metadata.csv", "y", "99999999999999999999",
     r"class 99999999999999999999 in column 'y'; allowed: integers 0 to 9999"),
    ("custom", write_custom_text, "metadata.csv", "a", "x", r"value 'x' in column 'a' is not a number"),
])
def test_label_outside_the_classes(tmp_path, name, writer, filename, column, value, message):
    writer(tmp_path, COUNTS)
    rewrite_csv(tmp_path / filename, lambda frame: frame.loc.__setitem__((2, column), value))
    with pytest.raises(GroupsweepError, match=rf"{filename} row 3: {message}"):
        load_dataset(name, root=tmp_path)


def test_multinli_label_outside_the_classes(tmp_path):
    write_multinli(tmp_path, COUNTS6)
    frame = pd.read_csv(tmp_path / "metadata_random.csv", index_col=0)
    frame.iloc[5, 0] = 3
    frame.to_csv(tmp_path / "metadata_random.csv")
    with pytest.raises(GroupsweepError, match=r"metadata_random.csv row 6: class 3 in column 'gold_label'; allowed: 0, 1, 2"):
        load_dataset("multinli", root=tmp_path)


def test_celeba_txt_value_outside_minus_one_one(tmp_path):
    write_celeba_original(tmp_path, COUNTS)
    path = tmp_path / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    names = lines[1].split()
    cells = lines[4].split()
    cells[1 + names.index("Male")] = "2"
    lines[4] = " ".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(GroupsweepError, match=r"list_attr_celeba.txt row 3: attribute 2 in column 'Male'; allowed: -1, 1"):
        load_dataset("celeba", root=tmp_path)


def test_missing_image(tmp_path):
    write_waterbirds(tmp_path, COUNTS)
    name = pd.read_csv(tmp_path / "metadata.csv").img_filename[6]
    (tmp_path / name).unlink()
    with pytest.raises(GroupsweepError, match=rf"metadata.csv row 7: image '{name}' not found under"):
        load_dataset("waterbirds", root=tmp_path, image_size=SIZE)


def test_unreadable_image(tmp_path):
    write_waterbirds(tmp_path, COUNTS)
    frame = pd.read_csv(tmp_path / "metadata.csv")
    row = int(np.flatnonzero(frame.split.to_numpy() == 1)[1])  # the second val image
    (tmp_path / frame.img_filename[row]).write_bytes(b"not a jpeg")
    with pytest.raises(GroupsweepError, match=rf"metadata.csv row {row + 1}: cannot decode image '.*{frame.img_filename[row]}'"):
        load_dataset("waterbirds", root=tmp_path, image_size=SIZE)


def test_unparsable_csv(tmp_path):
    (tmp_path / "metadata.csv").write_text('img_id,img_filename,y,split,place,place_filename\n1,"a.jpg,0,0,0,x\n')
    with pytest.raises(GroupsweepError, match=r"metadata.csv: cannot parse: .*EOF inside string"):
        load_dataset("waterbirds", root=tmp_path)


def test_empty_split_is_refused_before_decoding(tmp_path):
    write_waterbirds(tmp_path, {"train": (2, 1, 1, 1), "val": (1, 1, 1, 1), "test": (0, 0, 0, 0)})
    with pytest.raises(GroupsweepError, match=r"metadata.csv: no example of split 'test'; every split "
                                              r"\(train, val, test\) needs examples"):
        load_dataset("waterbirds", root=tmp_path, image_size=SIZE)
    assert not (tmp_path / ".groupsweep_cache").exists()


def test_one_training_step_on_a_loaded_fixture(tmp_path):
    """A batch from the memmap, through the paper's train transform, into a tiny model, gives finite gradients."""
    import torch

    from trainables.data.transforms import to_chw, train_transform

    dataset = load_dataset("waterbirds", root=write_waterbirds(tmp_path, COUNTS), image_size=SIZE)
    train = dataset.splits["train"]
    transform = train_transform(SIZE)
    torch.manual_seed(0)
    batch = torch.stack([transform(to_chw(train.inputs[i])) for i in range(4)])
    assert batch.shape == (4, 3, SIZE, SIZE) and batch.dtype == torch.float32
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, dataset.n_classes))
    loss = torch.nn.functional.cross_entropy(model(batch), torch.as_tensor(train.y[:4]))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())



@pytest.mark.parametrize("name, writer, counts", [("civilcomments", write_civilcomments, COUNTS),
                                                  ("multinli", write_multinli, COUNTS6),
                                                  ("custom", write_custom_text, COUNTS)])
def test_a_native_text_dataset_is_tokenised_once_into_its_cache(tmp_path, monkeypatch, name, writer, counts):
    """Every run of a native text dataset builds its inputs through ``build_model_and_inputs``: the first
    tokenises each split into ``<root>/.groupsweep_cache`` (or ``$GROUPSWEEP_CACHE``, or ``cache_dir``), the
    next ones load the same token ids without tokenising."""
    import torch
    from transformers import PreTrainedTokenizerFast

    from trainables.builders import build_model_and_inputs
    from trainables.config import TrainConfig

    monkeypatch.delenv("GROUPSWEEP_CACHE", raising=False)
    (tmp_path / "data").mkdir()
    root = writer(tmp_path / "data", counts)
    config = TrainConfig(dataset=name, model="toy-bert-xs", dataset_options={"root": str(root)})
    dataset = load_dataset(name, root=root)
    assert dataset.cache_dir == str(root / ".groupsweep_cache")
    _, first = build_model_and_inputs(config, dataset)
    cached = sorted((root / ".groupsweep_cache").glob("tokens-*.npy"))
    assert len(cached) == len(SPLITS)

    def refuse(*args, **kwargs):
        raise AssertionError("tokenised again")

    monkeypatch.setattr(PreTrainedTokenizerFast, "__call__", refuse)
    _, again = build_model_and_inputs(config, load_dataset(name, root=root))
    for split in SPLITS:
        for key, ids in first.inputs[split].items():
            assert torch.equal(ids, again.inputs[split][key]), (split, key)
    monkeypatch.setenv("GROUPSWEEP_CACHE", str(tmp_path / "env-cache"))
    assert load_dataset(name, root=root).cache_dir == str(tmp_path / "env-cache")
    assert load_dataset(name, root=root, cache_dir=tmp_path / "own").cache_dir == str(tmp_path / "own")


@pytest.mark.parametrize("name, writer, option, value", [
    ("waterbirds", write_waterbirds, "image_size", 0),
    ("civilcomments", write_civilcomments, "max_length", -5),
    ("custom", write_custom_text, "max_length", "long"),
])
def test_sizes_must_be_positive_integers(tmp_path, name, writer, option, value):
    writer(tmp_path, COUNTS)
    with pytest.raises(GroupsweepError, match=rf"{option} must be a positive integer, got {value!r}"):
        load_dataset(name, root=tmp_path, **{option: value})
