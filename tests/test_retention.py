"""Checkpoint retention of a sweep (``sweeps.retention``): which checkpoints a trial keeps, and when the
others are deleted."""

import json

from ray.tune import Checkpoint
from ray.tune.experiment import Trial

from sweeps.retention import CheckpointRetention, SnapshotsAtEnd
from trainables.sweep_storage import (commit_snapshots, drop_snapshots, prune_checkpoints, retire_checkpoint,
                                      sweep_filesystem, upload_logs)


def upload_state(fs, state, version: int) -> None:
    """Ray Tune uploading its experiment state ``state`` (a path) through the sweep filesystem ``fs``, as
    ``{"version": version}``."""
    with fs.open_output_stream(str(state)) as stream:
        stream.write(json.dumps({"version": version}).encode())


def folders(path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def test_each_trial_keeps_its_last_checkpoints_and_the_others_go_once_a_newer_snapshot_is_written(tmp_path):
    prune_checkpoints([], 1)  # forget what earlier tests retired
    fs, _ = sweep_filesystem(str(tmp_path))
    trial_dir = tmp_path / "trial"
    trial = Trial("__fake", stub=True)
    retention = CheckpointRetention(keep=2)

    def save(index: int) -> None:  # the trial reported checkpoint ``index``: Tune calls the callback
        folder = trial_dir / f"checkpoint_{index:06d}"
        folder.mkdir(parents=True)
        retention.on_checkpoint(iteration=index, trials=[trial], trial=trial,
                                checkpoint=Checkpoint(str(folder), filesystem=fs))

    def snapshot() -> None:  # Tune uploads its experiment state: the one two uploads before is now in the storage
        with fs.open_output_stream(str(tmp_path / "experiment_state-2026-01-01_00-00-00.json")) as stream:
            stream.write(b"{}")

    # a resumed trial: folders of a killed driver's run are there before this driver sees its first checkpoint
    for index in (0, 1):
        (trial_dir / f"checkpoint_{index:06d}").mkdir(parents=True)
    save(2)  # keeps 1 and 2: 0 retired
    save(3)  # keeps 2 and 3: 1 retired
    assert folders(trial_dir) == [f"checkpoint_00000{i}" for i in range(4)]  # no snapshot names 2 or 3 yet
    snapshot()  # held back until the upload after it has ended
    snapshot()  # held back too
    snapshot()  # the first is in the storage now: maybe saved before 3 came, in an upload under way
    snapshot()  # the second: maybe saved before 3 came too
    snapshot()  # the third: maybe in the upload under way when 3 came
    assert folders(trial_dir) == [f"checkpoint_00000{i}" for i in range(4)]
    snapshot()  # the fourth, saved after the retirements: it names 2 and 3
    assert folders(trial_dir) == ["checkpoint_000002", "checkpoint_000003"]
    save(4)
    for _ in range(3):
        snapshot()
    assert folders(trial_dir) == ["checkpoint_000002", "checkpoint_000003", "checkpoint_000004"]
    commit_snapshots()  # the run ended: its last snapshot goes into the storage
    assert folders(trial_dir) == ["checkpoint_000003", "checkpoint_000004"]


def test_a_retried_trials_logs_reach_the_storage_whole(tmp_path):
    local, stored = tmp_path / "driver", tmp_path / "storage" / "trial"
    local.mkdir()
    stored.mkdir(parents=True)
    (local / "result.json").write_text('{"epoch": 1}\n{"epoch": 2}\n')  # progress.csv not written yet
    (stored / "result.json").write_text("")  # the copy of the last (paced) snapshot: stale
    upload_logs(str(local), sweep_filesystem(str(tmp_path))[0], str(stored))
    assert (stored / "result.json").read_text() == '{"epoch": 1}\n{"epoch": 2}\n'
    assert not (stored / "progress.csv").exists()
    # a trial that failed before Tune's first upload has no folder in the storage yet
    unseen = tmp_path / "storage" / "unseen"
    upload_logs(str(local), sweep_filesystem(str(tmp_path))[0], str(unseen))
    assert (unseen / "result.json").read_text() == '{"epoch": 1}\n{"epoch": 2}\n'
    assert not (tmp_path / "empty").exists()
    upload_logs(str(tmp_path / "empty"), sweep_filesystem(str(tmp_path))[0], str(tmp_path / "storage" / "none"))
    assert not (tmp_path / "storage" / "none").exists()  # nothing to upload: no folder made


def test_each_run_gives_every_trial_about_to_run_its_retries_again():
    """Tune keeps a trial's failure count in the sweep's state: an errored trial that a resumed run requeues
    (pending) would otherwise fail for good at its first failure (``Trial.should_recover``)."""
    from types import SimpleNamespace

    from ray.tune.experiment import Trial

    from sweeps.retention import FreshRetries

    def trial(status, failures):
        return SimpleNamespace(status=status, run_metadata=SimpleNamespace(num_failures=failures))

    requeued, finished = trial(Trial.PENDING, 3), trial(Trial.TERMINATED, 1)
    callback = FreshRetries()
    callback.on_step_begin(0, [requeued, finished])
    assert requeued.run_metadata.num_failures == 0 and finished.run_metadata.num_failures == 1
    requeued.run_metadata.num_failures = 2  # failures of this run count from then on
    callback.on_step_begin(1, [requeued, finished])
    assert requeued.run_metadata.num_failures == 2


def test_held_snapshots_reach_the_storage_at_the_end_of_a_run_only_after_tunes_final_save(tmp_path):
    """Tune's final save (outside its steps; it asks the callbacks for their state last) waits for the uploads
    before, and the final upload is waited for before the run's callbacks end: ``SnapshotsAtEnd`` writes the held
    snapshots then, since Tune reads its state back from the storage. A run that failed inside a step, or between
    two (its last upload may be under way), ends without them."""
    fs, _ = sweep_filesystem(str(tmp_path))
    state = tmp_path / "experiment_state-2026-01-01_00-00-00.json"

    def run(final_save: bool, failed_in_step: bool = False) -> None:
        drop_snapshots()  # as the launcher does when ``Tuner.fit`` raised
        callback = SnapshotsAtEnd()
        for iteration in (1, 2):
            callback.on_step_begin(iteration=iteration, trials=[])
            assert callback.get_state() is None  # the step's save: nothing kept
            upload_state(fs, state, iteration)
            if failed_in_step:
                break
            callback.on_step_end(iteration=iteration, trials=[])
        if final_save:
            assert callback.get_state() is None
            upload_state(fs, state, 3)
        callback.on_experiment_end(trials=[])

    run(final_save=False, failed_in_step=True)
    run(final_save=False)  # failed between two steps (printing the progress table, say)
    assert not state.exists()
    run(final_save=True)
    assert json.loads(state.read_text()) == {"version": 3}


def test_a_run_whose_final_save_failed_keeps_the_snapshot_before_and_every_checkpoint(tmp_path):
    """``end_storage`` after ``Tuner.fit`` returned: where ``SnapshotsAtEnd`` left snapshots held (Tune's final save
    failed), they are dropped, nothing is deleted, and the folders retired are forgotten (the snapshot in the
    storage may name them; a later run in this process must not delete them); a sweep started without
    ``SnapshotsAtEnd`` gets its last snapshot written here and its checkpoints pruned."""
    from sweeps.launcher import end_storage

    fs, _ = sweep_filesystem(str(tmp_path))
    trial_dir = tmp_path / "trial"
    checkpoints = [f"checkpoint_00000{index}" for index in range(3)]
    for name in checkpoints:
        (trial_dir / name).mkdir(parents=True)
    state = tmp_path / "experiment_state-2026-01-01_00-00-00.json"

    drop_snapshots()
    retire_checkpoint(fs, str(trial_dir / checkpoints[0]))
    for version in (1, 2, 3):
        upload_state(fs, state, version)
    latest = [(fs, str(trial_dir / checkpoints[2]))]
    end_storage([SnapshotsAtEnd()], latest, 1)
    assert json.loads(state.read_text()) == {"version": 1} and folders(trial_dir) == checkpoints
    for version in range(4, 9):  # the next run's uploads: 4 more snapshots written since the retirement above
        upload_state(fs, state, version)
    assert json.loads(state.read_text()) == {"version": 6} and folders(trial_dir) == checkpoints
    end_storage([], latest, 1)  # a sweep started before SnapshotsAtEnd
    assert json.loads(state.read_text()) == {"version": 8} and folders(trial_dir) == checkpoints[2:]
