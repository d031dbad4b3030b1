"""The Ray Tune trainable's parts: atomic trial files, one report per epoch with a checkpoint, resume, divergence."""

import os

import numpy as np
import pytest
import torch
from ray.tune import Checkpoint

import trainables.plans
from trainables.config import TrainConfig
from trainables.finetune import DivergenceError, EpochResult
from trainables.trainable import (STAGING_PREFIX, EpochReporter, InjectedFault, epoch_metrics, load_state,
                                  run_finetune, staging_directory)
from trainables.trial_dir import LABELS_FILE, STATE_FILE, TrialDir, predictions_file

SMALL = {"size": 120, "val_size": 40, "test_size": 60}


class Reports:
    """A stand-in for ``ray.tune.report`` that keeps each row and a copy of each checkpoint's state."""

    def __init__(self):
        self.rows, self.states, self.checkpoint_dirs = [], [], []

    def __call__(self, metrics, checkpoint=None):
        self.rows.append(dict(metrics))
        if checkpoint is not None:
            self.checkpoint_dirs.append(checkpoint.path)
            self.states.append(load_state(checkpoint))
        else:
            self.states.append(None)


def fake_result(epoch: int) -> EpochResult:
    metrics = {"train/acc": 0.5, "optim/loss": 1.0 / epoch, "test/wga": 0.25, "val/wga": 0.5, "epoch": epoch}
    labels = {"val_y": np.array([0, 1]), "test_y": np.array([1, 1, 0]), "n_classes": 2, "n_spurious": 2}
    predictions = {"val": np.array([0, 1], np.int16), "test": np.array([1, 0, epoch % 2], np.int16)}
    return EpochResult(epoch=epoch, metrics=metrics, predictions=predictions, labels=labels,
                       state=lambda: {"epoch": epoch, "weights": torch.full((2,), float(epoch))})


def test_trial_files_are_written_atomically(tmp_path):
    files = TrialDir(str(tmp_path / "trial"))
    assert not files.exists(LABELS_FILE)
    files.write_npz(predictions_file(3), {"val": np.arange(4, dtype=np.int16)})
    files.write_npz(predictions_file(3), {"val": np.arange(5, dtype=np.int16)})  # replaced whole
    path = tmp_path / "trial" / "groupsweep" / "predictions" / "epoch_0003.npz"
    with np.load(path) as saved:
        assert saved["val"].dtype == np.int16 and saved["val"].tolist() == [0, 1, 2, 3, 4]
    assert os.listdir(path.parent) == ["epoch_0003.npz"]  # no temporary file left behind


def test_epoch_metrics_lead_with_table_columns_and_add_status_and_node():
    metrics = epoch_metrics(fake_result(2), node_id="abc")
    assert list(metrics)[:4] == ["epoch", "val/wga", "test/wga", "optim/loss"]
    assert metrics["status"] == "ok" and metrics["node_id"] == "abc" and metrics["train/acc"] == 0.5


def test_reporter_writes_files_then_reports_with_a_checkpoint(tmp_path):
    reports = Reports()
    reporter = EpochReporter(reports, Checkpoint, TrialDir(str(tmp_path)), node_id="n1")
    for epoch in (1, 2):
        reporter(fake_result(epoch))
    assert [row["epoch"] for row in reports.rows] == [1, 2] and reporter.last_epoch == 2
    assert [state["epoch"] for state in reports.states] == [1, 2]
    assert torch.equal(reports.states[1]["weights"], torch.full((2,), 2.0))
    # the temporary checkpoint directories are removed once Ray has the checkpoint
    assert not any(os.path.exists(path) for path in reports.checkpoint_dirs)
    with np.load(tmp_path / LABELS_FILE) as labels:
        assert labels["test_y"].tolist() == [1, 1, 0] and int(labels["n_classes"]) == 2
    for epoch in (1, 2):
        with np.load(tmp_path / predictions_file(epoch)) as saved:
            assert saved["test"].tolist() == [1, 0, epoch % 2]


def test_a_checkpoint_folder_left_by_a_killed_worker_is_removed_by_the_next_checkpoint(tmp_path):
    import subprocess
    import sys

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    orphan = tmp_path / f"{STAGING_PREFIX}{ended.pid}-abc"
    live = tmp_path / f"{STAGING_PREFIX}{os.getpid()}-def"
    unrelated = tmp_path / f"{STAGING_PREFIX}notapid"
    for folder in (orphan, live, unrelated):
        folder.mkdir()
        (folder / "state.pt").write_bytes(b"x")
    new = staging_directory(str(tmp_path))
    assert not orphan.exists() and live.exists() and unrelated.exists()
    assert os.path.basename(new).startswith(f"{STAGING_PREFIX}{os.getpid()}-") and os.path.isdir(new)


def test_non_zero_ranks_report_without_files_or_checkpoint():
    reports = Reports()
    EpochReporter(reports, Checkpoint, None, node_id="n2")(fake_result(1))
    assert reports.rows[0]["epoch"] == 1 and reports.states == [None]


def small_config(**changes) -> TrainConfig:
    values = dict(dataset="synthetic-waterbirds", dataset_options=SMALL, model="toy-convnextv2-xs",
                  method="upweighting", seed=2, epochs=2, lr=1e-3, batch_size=32, num_threads=1)
    values.update(changes)
    return TrainConfig.from_dict(values)


def test_run_finetune_reports_every_epoch_and_resumes_after_the_checkpoint(tmp_path):
    config = small_config()
    full = Reports()
    run_finetune(config, EpochReporter(full, Checkpoint, TrialDir(str(tmp_path / "a")), "n"), None, cpu=True)
    assert [row["epoch"] for row in full.rows] == [1, 2] and {row["status"] for row in full.rows} == {"ok"}

    resumed = Reports()
    run_finetune(config, EpochReporter(resumed, Checkpoint, TrialDir(str(tmp_path / "b")), "n"),
                 full.states[0], cpu=True)
    assert [row["epoch"] for row in resumed.rows] == [2]
    assert resumed.rows[0]["test/wga"] == full.rows[1]["test/wga"]
    assert resumed.rows[0]["optim/loss"] == pytest.approx(full.rows[1]["optim/loss"], rel=1e-6)

    # a trial whose checkpoint holds its last epoch trains no more; it reports that epoch's row again (a kill
    # between the checkpoint and the row, which multi-worker trials register apart, would have lost the row)
    finished = Reports()
    run_finetune(config, EpochReporter(finished, Checkpoint, None, "n"), full.states[1], cpu=True)
    assert finished.rows == [full.rows[1]] and finished.states == [None]


@pytest.mark.parametrize("method", [{"method": "mixture", "ratio": 2.0},
                                    {"method": "groupdro", "groupdro_eta": 0.1, "groupdro_adjustment": 1.0}])
def test_a_killed_trial_with_checkpoint_every_resumes_from_its_last_checkpoint_bit_identical(tmp_path, method):
    """checkpoint_every 2 over 5 epochs: checkpoints after epochs 2, 4 and 5; a fault after epoch 3 loses
    epoch 3 (N - 1 = 1 epoch), and the retry from epoch 2's checkpoint ends exactly where an uninterrupted
    run does (GroupDRO's group weights included)."""
    config = small_config(epochs=5, checkpoint_every=2, **method)
    full = Reports()
    run_finetune(config, EpochReporter(full, Checkpoint, TrialDir(str(tmp_path / "a")), "n"), None, cpu=True)
    assert [row["epoch"] for row in full.rows] == [1, 2, 3, 4, 5]
    assert [state and state["epoch"] for state in full.states] == [None, 2, None, 4, 5]
    assert all((tmp_path / "a" / predictions_file(epoch)).exists() for epoch in range(1, 6))

    crashed = Reports()
    with pytest.raises(InjectedFault):
        run_finetune(config, EpochReporter(crashed, Checkpoint, TrialDir(str(tmp_path / "b")), "n", fault_epoch=3),
                     None, cpu=True)
    assert [row["epoch"] for row in crashed.rows] == [1, 2, 3]
    latest = [state for state in crashed.states if state is not None][-1]
    assert latest["epoch"] == 2  # epoch 3 was reported, not saved: it is the one epoch lost
    resumed = Reports()
    run_finetune(config, EpochReporter(resumed, Checkpoint, TrialDir(str(tmp_path / "b")), "n", fault_epoch=3),
                 latest, cpu=True)
    assert [row["epoch"] for row in resumed.rows] == [3, 4, 5]
    for row, reference in zip(resumed.rows, full.rows[2:]):
        for key, value in reference.items():
            if not key.startswith("time/"):
                assert row[key] == value or (np.isnan(row[key]) and np.isnan(value)), key
    final, reference = resumed.states[-1], full.states[-1]
    for name, tensor in reference["model"].items():
        assert torch.equal(final["model"][name], tensor), name
    assert torch.equal(final["rng"]["torch"], reference["rng"]["torch"])
    if config.method == "groupdro":
        assert torch.equal(final["groupdro"]["q"], reference["groupdro"]["q"])
        assert not torch.equal(latest["groupdro"]["q"], reference["groupdro"]["q"])


def test_divergence_ends_the_trial_with_a_diverged_row(monkeypatch):
    def diverging(config, on_epoch, resume_state, cpu, dataset, plan):
        on_epoch(fake_result(1))
        raise DivergenceError("training loss is nan in epoch 2 of 2")

    monkeypatch.setattr(trainables.plans, "finetune", diverging)
    reports = Reports()
    run_finetune(small_config(), EpochReporter(reports, Checkpoint, None, "n"), None, cpu=True)
    assert [(row["epoch"], row["status"]) for row in reports.rows] == [(1, "ok"), (2, "diverged")]
    assert "nan" in reports.rows[-1]["error"]


def test_checkpoint_state_file_is_what_load_state_reads(tmp_path):
    torch.save({"epoch": 4}, tmp_path / STATE_FILE)
    assert load_state(Checkpoint.from_directory(str(tmp_path))) == {"epoch": 4}
    assert load_state(None) is None
