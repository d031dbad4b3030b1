"""Checkpoint retention of a sweep (``sweeps.retention``): which checkpoints a trial keeps, and when the
others are deleted."""

from ray.tune import Checkpoint
from ray.tune.experiment import Trial

from sweeps.retention import CheckpointRetention
from trainables.trial_dir import atomic_local_filesystem, prune_checkpoints


def folders(path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def test_each_trial_keeps_its_last_checkpoints_and_the_others_go_once_a_newer_snapshot_is_written(tmp_path):
    prune_checkpoints([], 1)  # forget what earlier tests retired
    fs = atomic_local_filesystem()
    trial_dir = tmp_path / "trial"
    trial = Trial("__fake", stub=True)
    retention = CheckpointRetention(keep=2, counts_snapshots=False)

    def save(index: int) -> None:  # the trial reported checkpoint ``index``: Tune calls the callback
        folder = trial_dir / f"checkpoint_{index:06d}"
        folder.mkdir(parents=True)
        retention.on_checkpoint(iteration=index, trials=[trial], trial=trial,
                                checkpoint=Checkpoint(str(folder), filesystem=fs))

    def snapshot() -> None:  # Tune's experiment state written whole into the storage
        with fs.open_output_stream(str(tmp_path / "experiment_state-2026-01-01_00-00-00.json")) as stream:
            stream.write(b"{}")

    # a resumed trial: folders of a killed driver's run are there before this driver sees its first checkpoint
    for index in (0, 1):
        (trial_dir / f"checkpoint_{index:06d}").mkdir(parents=True)
    save(2)  # keeps 1 and 2: 0 retired
    save(3)  # keeps 2 and 3: 1 retired
    assert folders(trial_dir) == [f"checkpoint_00000{i}" for i in range(4)]  # no snapshot names 2 or 3 yet
    snapshot()
    assert folders(trial_dir) == [f"checkpoint_00000{i}" for i in range(4)]  # maybe saved before 3 came
    snapshot()
    assert folders(trial_dir) == ["checkpoint_000002", "checkpoint_000003"]
    save(4)
    snapshot()
    snapshot()
    assert folders(trial_dir) == ["checkpoint_000003", "checkpoint_000004"]


def test_on_a_uri_the_callback_counts_tunes_snapshot_saves(tmp_path):
    prune_checkpoints([], 1)
    fs = atomic_local_filesystem()
    trial = Trial("__fake", stub=True)
    retention = CheckpointRetention(keep=1, counts_snapshots=True)
    for index in (0, 1):
        folder = tmp_path / "trial" / f"checkpoint_{index:06d}"
        folder.mkdir(parents=True)
        retention.on_checkpoint(iteration=index, trials=[trial], trial=trial,
                                checkpoint=Checkpoint(str(folder), filesystem=fs))
    assert retention.get_state() is None  # one save: checkpoint 0 may still be named
    assert folders(tmp_path / "trial") == ["checkpoint_000000", "checkpoint_000001"]
    retention.get_state()
    assert folders(tmp_path / "trial") == ["checkpoint_000001"]


def test_a_retried_trials_logs_reach_the_storage_whole(tmp_path):
    from trainables.trial_dir import upload_logs

    local, stored = tmp_path / "driver", tmp_path / "storage" / "trial"
    local.mkdir()
    stored.mkdir(parents=True)
    (local / "result.json").write_text('{"epoch": 1}\n{"epoch": 2}\n')  # progress.csv not written yet
    (stored / "result.json").write_text("")  # the copy of the last (paced) snapshot: stale
    upload_logs(str(local), atomic_local_filesystem(), str(stored))
    assert (stored / "result.json").read_text() == '{"epoch": 1}\n{"epoch": 2}\n'
    assert not (stored / "progress.csv").exists()
