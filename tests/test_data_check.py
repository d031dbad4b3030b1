"""``groupsweep data check``: validation, the Table 2 layout, CSV output and the Table 2 comparison."""

from __future__ import annotations

import argparse
import io

import pandas as pd
import pytest

from native_fixtures import write_celeba_original, write_civilcomments, write_custom_text, write_multinli, write_waterbirds
from sweeps.data_command import register, table2_warnings
from trainables.data.table2 import TABLE2
from trainables.errors import GroupsweepError

COUNTS = {"train": (5, 2, 1, 3), "val": (2, 2, 1, 1), "test": (3, 2, 2, 1)}


def run(argv, capsys):
    """Parse ``argv`` with a parser holding only ``data`` and run its handler: (status, stdout, stderr)."""
    parser = argparse.ArgumentParser(prog="groupsweep")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    status = args.func(args)
    out = capsys.readouterr()
    return status, out.out, out.err


def test_text_table_in_table2_layout(tmp_path, capsys):
    write_waterbirds(tmp_path, COUNTS)
    status, out, _ = run(["data", "check", "waterbirds", "--root", str(tmp_path)], capsys)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith("waterbirds: 25 examples from ") and lines[0].endswith("metadata.csv")
    assert lines[1].split() == ["group", "y", "s", "class", "attribute", "p(y)", "p(g)", "p(y|s)", "train", "val", "test"]
    # group 2: waterbird on land, 1 of 11 training examples; p(y=1) = 4/11; p(y=1 | s=0) = 1/6
    assert lines[4].split() == ["2", "1", "0", "waterbird", "land", "0.364", "0.091", "0.167", "1", "1", "2"]
    assert lines[-1] == "total: train 11, val 6, test 8"


def test_csv_output(tmp_path, capsys):
    write_multinli(tmp_path, {"train": (3, 2, 3, 1, 3, 2), "val": (1,) * 6, "test": (2, 1, 2, 1, 2, 1)})
    status, out, _ = run(["data", "check", "multinli", "--root", str(tmp_path), "--csv"], capsys)
    assert status == 0
    frame = pd.read_csv(io.StringIO(out))
    assert {"group", "y", "s", "train", "val", "test"} <= set(frame.columns)
    assert frame.train.tolist() == [3, 2, 3, 1, 3, 2] and frame.test.tolist() == [2, 1, 2, 1, 2, 1]
    assert frame.y.tolist() == [0, 0, 1, 1, 2, 2] and frame.s.tolist() == [0, 1] * 3


def test_warnings_for_counts_that_differ_from_table2(tmp_path, capsys):
    write_civilcomments(tmp_path, COUNTS)
    _, out, err = run(["data", "check", "civilcomments", "--root", str(tmp_path), "--csv"], capsys)
    assert "warning" not in out  # stdout stays clean CSV
    lines = err.splitlines()
    assert len(lines) == 12
    assert "warning: group 2 train count 1 differs from Table 2 (12731)" in lines


def test_no_warnings_for_custom(tmp_path, capsys):
    write_custom_text(tmp_path, COUNTS)
    status, _, err = run(["data", "check", "custom", "--root", str(tmp_path)], capsys)
    assert status == 0 and err == ""


def table2_frame(name):
    _, _, counts = TABLE2[name]
    return pd.DataFrame({split: counts[split] for split in ("train", "val", "test")})


@pytest.mark.parametrize("name", sorted(TABLE2))
def test_table2_counts_give_no_warning(name):
    assert table2_warnings(name, table2_frame(name)) == []


def test_one_warning_per_differing_count():
    frame = table2_frame("waterbirds")
    frame.loc[2, "train"] = 5
    frame.loc[3, "test"] = 641
    assert table2_warnings("waterbirds", frame) == [
        "warning: group 2 train count 5 differs from Table 2 (56)",
        "warning: group 3 test count 641 differs from Table 2 (642)",
    ]
    assert table2_warnings("custom", frame) == []


def test_celeba_age_is_checked_without_the_table2_comparison(tmp_path, capsys):
    """CelebA-Age (target Young, spurious Male): its composition, and no Table 2 warnings, which hold for
    the paper's Blond_Hair / Male pairing only (the same folder read with it differs from Table 2)."""
    write_celeba_original(tmp_path, COUNTS, target="Young", spurious="Male")
    status, out, err = run(["data", "check", "celeba", "--root", str(tmp_path), "--target", "Young",
                            "--spurious", "Male"], capsys)
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].endswith("list_attr_celeba.txt (target Young, spurious Male)")
    # group 2, young female: 1 of 11 training examples; p(y=1) = 4/11; p(y=1 | s=0) = 1/6
    assert lines[4].split() == ["2", "1", "0", "young", "female", "0.364", "0.091", "0.167", "1", "1", "2"]
    assert lines[-1] == "total: train 11, val 6, test 8"
    _, _, err = run(["data", "check", "celeba", "--root", str(tmp_path)], capsys)
    assert err.count("differs from Table 2") == 12
    with pytest.raises(GroupsweepError, match=r"unknown celeba target attribute 'Age'; choose one of: "):
        run(["data", "check", "celeba", "--root", str(tmp_path), "--target", "Age"], capsys)
    write_waterbirds(tmp_path / "wb", COUNTS)
    with pytest.raises(GroupsweepError, match=r"--target applies to celeba only, not 'waterbirds'"):
        run(["data", "check", "waterbirds", "--root", str(tmp_path / "wb"), "--target", "Young"], capsys)


def test_check_validates_existence_without_decoding(tmp_path, capsys):
    write_celeba_original(tmp_path, COUNTS)
    (tmp_path / "img_align_celeba" / "000004.jpg").write_bytes(b"not a jpeg")
    status, _, _ = run(["data", "check", "celeba", "--root", str(tmp_path)], capsys)
    assert status == 0 and not (tmp_path / ".groupsweep_cache").exists()  # no decode, no cache
    with pytest.raises(GroupsweepError, match=r"list_attr_celeba.txt row 4: cannot decode image '000004.jpg'"):
        run(["data", "check", "celeba", "--root", str(tmp_path), "--verify-images"], capsys)
    (tmp_path / "img_align_celeba" / "000004.jpg").unlink()
    with pytest.raises(GroupsweepError, match=r"list_attr_celeba.txt row 4: image '000004.jpg' not found under"):
        run(["data", "check", "celeba", "--root", str(tmp_path)], capsys)


def test_malformed_file_is_an_error(tmp_path, capsys):
    write_waterbirds(tmp_path, COUNTS)
    frame = pd.read_csv(tmp_path / "metadata.csv")
    frame.loc[7, "split"] = 5
    frame.to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(GroupsweepError, match=r"metadata.csv row 8: split 5 in column 'split'; allowed: 0, 1, 2"):
        run(["data", "check", "waterbirds", "--root", str(tmp_path)], capsys)


def test_root_from_environment_and_unknown_name(tmp_path, capsys, monkeypatch):
    (tmp_path / "waterbirds").mkdir()
    write_waterbirds(tmp_path / "waterbirds", COUNTS)
    monkeypatch.setenv("GROUPSWEEP_DATA", str(tmp_path))
    assert run(["data", "check", "waterbirds"], capsys)[0] == 0
    with pytest.raises(SystemExit):
        run(["data", "check", "imagenet"], capsys)
