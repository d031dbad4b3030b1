"""The trial-directory contract: names, atomic writes, reads through pyarrow.fs for paths and URIs alike."""

import json

import numpy as np
import pytest
import torch

from trainables.errors import GroupsweepError, is_integer, is_real, positive_integer
from trainables.trial_dir import (D3M_SCORES_FILE, LABELS_FILE, PARAMS_FILE, STATE_FILE, TrialDir, UnreadableFile,
                                  join_location, predictions_file, split_location, trial_dirs)


def make_trial(root, name, epochs=(1, 2), train_run=False):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / PARAMS_FILE).write_text(json.dumps({"trial_name": name, "dataset": "d", "method": "none"}))
    for number, epoch in enumerate(epochs):
        checkpoint = folder / ("train" if train_run else "") / f"checkpoint_{number:06d}"
        checkpoint.mkdir(parents=True)
        torch.save({"epoch": epoch, "model": {"w": torch.full((2,), float(epoch))}}, checkpoint / STATE_FILE)
    return folder


def test_names_are_the_documented_layout():
    assert predictions_file(3) == "groupsweep/predictions/epoch_0003.npz"
    assert LABELS_FILE == "groupsweep/labels.npz" and D3M_SCORES_FILE == "groupsweep/d3m/scores.npz"


@pytest.mark.parametrize("as_uri", [False, True])
def test_a_trial_directory_reads_the_same_through_a_path_or_a_file_uri(tmp_path, as_uri):
    folder = make_trial(tmp_path, "t1")
    trial = TrialDir(f"file://{folder}" if as_uri else str(folder))
    trial.write_npz(predictions_file(1), {"val": np.arange(3, dtype=np.int16)})
    assert trial.name == "t1" and trial.params()["trial_name"] == "t1"
    assert trial.read_npz(predictions_file(1))["val"].tolist() == [0, 1, 2]
    assert trial.state_files() == [f"checkpoint_000000/{STATE_FILE}", f"checkpoint_000001/{STATE_FILE}"]
    assert trial.load_state(trial.state_files()[-1])["epoch"] == 2
    assert [t.name for t in trial_dirs(f"file://{tmp_path}" if as_uri else tmp_path)] == ["t1"]


def test_multi_worker_checkpoints_are_found_in_the_train_run(tmp_path):
    trial = TrialDir(make_trial(tmp_path, "t2", epochs=(1,), train_run=True))
    assert trial.state_files() == [f"train/checkpoint_000000/{STATE_FILE}"]


def test_only_trial_directories_are_listed(tmp_path):
    make_trial(tmp_path, "b")
    make_trial(tmp_path, "a", epochs=())
    (tmp_path / "groupsweep_analysis").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    assert [t.name for t in trial_dirs(tmp_path)] == ["a", "b"]
    assert trial_dirs(tmp_path / "missing") == []


def test_unreadable_files_raise_one_line_errors(tmp_path):
    folder = make_trial(tmp_path, "t3", epochs=())
    trial = TrialDir(folder)
    with pytest.raises(UnreadableFile, match="cannot read .*labels.npz"):
        trial.read_npz(LABELS_FILE)
    (folder / PARAMS_FILE).write_text("[1, 2]")
    with pytest.raises(UnreadableFile, match="not a JSON object"):
        trial.params()
    (folder / "checkpoint_000000").mkdir()
    (folder / "checkpoint_000000" / STATE_FILE).write_bytes(b"not a torch file")
    with pytest.raises(UnreadableFile, match="cannot read checkpoint") as info:
        trial.load_state(trial.state_files()[0])
    assert "\n" not in str(info.value) and isinstance(info.value, GroupsweepError)


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    trial = TrialDir(tmp_path / "t4")
    trial.write_npz(LABELS_FILE, {"y": np.arange(2)})

    class Unsaveable:
        def __array__(self, *args, **kwargs):
            raise OSError("disk full")

    with pytest.raises(OSError):
        trial.write_npz(LABELS_FILE, {"y": Unsaveable()})
    assert trial.read_npz(LABELS_FILE)["y"].tolist() == [0, 1]
    assert sorted(p.name for p in (tmp_path / "t4" / "groupsweep").iterdir()) == ["labels.npz"]


def test_value_checks_refuse_booleans_and_non_finite_numbers():
    assert is_integer(3, 1) and is_integer(np.int64(0), 0) and not is_integer(True) and not is_integer(2.0)
    assert not is_integer(0, 1)
    assert is_real(0.5, 0, 1, strict=True) and not is_real(1, 0, 1, strict=True) and is_real(1, 0, 1)
    assert not is_real(float("nan")) and not is_real(float("inf"), 0) and not is_real(False)
    assert positive_integer("epochs", 4) == 4
    with pytest.raises(GroupsweepError, match="epochs must be a positive integer, got True"):
        positive_integer("epochs", True)


@pytest.mark.parametrize("location, parent, name", [
    ("/runs/sweeps/demo", "/runs/sweeps", "demo"),
    ("/runs/sweeps/demo/", "/runs/sweeps", "demo"),
    ("s3://bucket/sweeps/demo", "s3://bucket/sweeps", "demo"),
    ("s3://bucket/sweeps/demo?endpoint_override=127.0.0.1:9&scheme=http",
     "s3://bucket/sweeps?endpoint_override=127.0.0.1:9&scheme=http", "demo"),
    # a URI holds a listed name's space, % and ? percent-encoded (pyarrow decodes them); a path as it is
    ("s3://bucket/old%20runs%25%3F", "s3://bucket", "old runs%?"),
    ("file:///runs/a=1,b+2", "file:///runs", "a=1,b+2"),
    ("/runs/old runs%", "/runs", "old runs%"),
])
def test_split_location_keeps_a_uris_query_with_the_parent(location, parent, name):
    assert split_location(location) == (parent, name)
    assert join_location(parent, name) == location.rstrip("/")
