"""Live tracking through Ray Tune's callbacks: a real local MLflow store and TensorBoard event files, read back
after a real sweep; and the one-line errors of bad ``tracking`` settings."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import pytest
import yaml

from ray_fixtures import TINY_DATA, run_cli, trial_names
from sweeps.tracking import Tracking, mlflow_default_uri, parse_tracking, tracker_environment
from trainables.errors import GroupsweepError


def events(path) -> list:
    """The Event protos of one TensorBoard event file (TFRecord framing: length, its CRC, the Event proto, its
    CRC), parsed with tensorboardX's own protos."""
    from tensorboardX.proto.event_pb2 import Event

    data, offset, out = path.read_bytes(), 0, []
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        out.append(Event.FromString(data[offset + 12:offset + 12 + length]))
        offset += 12 + length + 4
    return out


def event_tags(path) -> dict:
    """``tag -> [(step, value)]`` of the scalars in one TensorBoard event file."""
    out = {}
    for event in events(path):
        for value in event.summary.value:
            out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_tracking_settings_are_checked_in_one_line(monkeypatch):
    import importlib.util

    assert parse_tracking(None) == Tracking({}) and not parse_tracking(None)
    assert parse_tracking(["tensorboard"], extra=["mlflow"]).trackers == {
        "tensorboard": {}, "mlflow": {"tracking_uri": None}}
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name))
    with pytest.raises(GroupsweepError, match=r"^tracking: wandb needs the wandb package, which is not installed; "
                                              r"install it with: pip install 'groupsweep\[wandb\]'$"):
        parse_tracking({"wandb": {"project": "p"}})
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: real("json") if name == "wandb" else real(name))
    assert parse_tracking({"wandb": {"project": "p"}}).trackers["wandb"] == {"project": "p", "mode": "offline"}
    for value, message in [
        (["neptune"], "tracking: unknown tracker 'neptune'; choose from: tensorboard, mlflow, wandb"),
        ({"mlflow": {"uri": "x"}}, "tracking.mlflow: unknown setting 'uri'; allowed: tracking_uri"),
        ({"wandb": {"mode": "cloud"}}, "tracking.wandb.mode: unknown mode 'cloud'; choose one of: offline, "
                                       "online, disabled"),
        (3, "tracking: expected a list of trackers or a mapping, got 3"),
    ]:
        with pytest.raises(GroupsweepError) as info:
            parse_tracking(value)
        assert str(info.value) == message


def test_the_trackers_environment_is_set_for_their_ray_callbacks_and_a_users_value_kept(monkeypatch):
    for name in ("MLFLOW_ALLOW_FILE_STORE", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    tracker_environment(Tracking({"tensorboard": {}}))
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ and "WANDB_MODE" not in os.environ
    tracker_environment(Tracking({"mlflow": {"tracking_uri": "/a/plain/path"}, "wandb": {"mode": "offline"}}))
    assert os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true" and os.environ["WANDB_MODE"] == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    tracker_environment(Tracking({"wandb": {"mode": "offline"}}))
    assert os.environ["WANDB_MODE"] == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    tracker_environment(Tracking({"wandb": {"mode": "online"}}))  # online: the API key is needed, as Ray asks
    assert "WANDB_MODE" not in os.environ


def test_the_embedded_mlflow_store_sits_in_the_sweep_directory(tmp_path):
    assert mlflow_default_uri(str(tmp_path / "s")) == f"file:{tmp_path / 's' / 'mlruns'}"
    assert mlflow_default_uri("s3://bucket/s?region=x").endswith("/mlruns")


@pytest.mark.slow
def test_a_sweep_tracked_by_mlflow_and_tensorboard(tmp_path, monkeypatch, cluster_address):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # groupsweep sets it for its driver itself
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "tracked", "datasets": {"synthetic-waterbirds": {"options": TINY_DATA}},
        "models": ["toy-resnet-xs"], "methods": ["none", "upsampling"], "seeds": [1],
        "hparams": {"lr": 1e-2, "batch_size": 64, "epochs": 2, "eval_batch_size": 128},
        "tracking": ["tensorboard"]}))
    done = run_cli("run", str(spec), "--storage", str(tmp_path / "out"), "--tracking", "mlflow",
                   "--address", cluster_address)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # the spec again (without --tracking) resumes the finished sweep: Tune restores its MLflow callback, which the
    # saved spec records, and sets it up
    again = run_cli("run", str(spec), "--storage", str(tmp_path / "out"), "--address", cluster_address)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    exp_dir = tmp_path / "out" / "tracked"
    names = {"synthetic-waterbirds-toy-resnet-xs-none-s1", "synthetic-waterbirds-toy-resnet-xs-upsampling-s1"}

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for this process's own client
    client = MlflowClient(f"file:{exp_dir / 'mlruns'}")
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    assert {run.info.run_name for run in runs} == names
    for run in runs:
        assert run.data.params["lr"] == "0.01" and run.data.params["method"] in ("none", "upsampling")
        assert run.data.tags["groupsweep.sweep"] == "tracked"
        history = client.get_metric_history(run.info.run_id, "val/wga")
        assert sorted(point.step for point in history) == [1, 2]

    for name in names:
        files = list((exp_dir / name).glob("events.out.tfevents.*"))
        assert len(files) == 1, name
        tags = event_tags(files[0])
        assert [step for step, _ in tags["ray/tune/val/wga"]] == [1, 2]



def test_the_live_table_ends_with_the_best_validation_wga_per_method():
    from types import SimpleNamespace

    from sweeps.launcher import best_by_method

    def trial(method, ratio, best):
        analysis = {"val/wga": {"max": best}} if best is not None else {}
        return SimpleNamespace(config={"method": method, "ratio": ratio}, metric_analysis=analysis)

    trials = [trial("none", None, 0.2), trial("none", None, 0.3), trial("mixture", 2.0, 0.5),
              trial("upsampling", None, None), trial("upweighting", None, float("nan"))]
    assert best_by_method(trials) == {"none": 0.3, "mixture 2:1": 0.5}


@pytest.mark.parametrize("tracking", [[], ["tensorboard"]])
def test_a_sweep_gets_the_loggers_it_lists_and_none_that_tune_would_add(tmp_path, tracking):
    """A sweep's Tuner lists the loggers of the trial-directory contract (CSV, JSON) and, only when tracking
    asks, TensorBoard's; while it runs Tune adds none of its own. A tuner whose saved callbacks lack the
    contract's loggers (a sweep started by an older groupsweep) keeps Tune's defaults, so it still writes its
    logs."""
    import os

    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    from ray_fixtures import tiny_spec
    from sweeps.launcher import AUTO_LOGGERS_ENV, build_tuner, listed_loggers_only
    from sweeps.spec import load_spec

    source = yaml.safe_load(tiny_spec(tmp_path / "spec.yaml", methods=["none"], seeds=(1,)).read_text())
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({**source, "tracking": tracking}))
    spec = load_spec(str(tmp_path / "spec.yaml"))
    tuner = build_tuner(spec, str(tmp_path / "out" / "it"), "it", str(tmp_path / "out"), None, shared=False)
    callbacks = tuner._local_tuner.get_run_config().callbacks
    kinds = [kind for kind in (CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback)
             if any(isinstance(callback, kind) for callback in callbacks)]
    assert kinds == [CSVLoggerCallback, JsonLoggerCallback] + ([TBXLoggerCallback] if tracking else [])

    before = os.environ.get(AUTO_LOGGERS_ENV)
    with listed_loggers_only(tuner) as listed:
        assert listed and os.environ[AUTO_LOGGERS_ENV] == "1"
    assert os.environ.get(AUTO_LOGGERS_ENV) == before
    older = tune.Tuner(lambda config: None, run_config=tune.RunConfig(callbacks=[]))
    with listed_loggers_only(older) as listed:
        assert not listed and os.environ.get(AUTO_LOGGERS_ENV) == before


@pytest.mark.slow
def test_a_resumed_trial_keeps_its_mlflow_run_and_purges_its_repeated_tensorboard_steps(tmp_path, monkeypatch):
    """What a killed and restarted driver leaves to Tune's logger callbacks: new callback objects, and the trial
    restored at its checkpoint's epoch 2 after the first driver had logged epochs 1-3, its last snapshot holding
    epoch 3's result but not yet its checkpoint (Tune registers a checkpoint after the result it came with). MLflow:
    the second driver takes up the first run (one run, FINISHED, every step once; before, a second run, the first
    left RUNNING), and logs the metrics of epoch 3 that the first driver, killed while logging them, did
    not. TensorBoard: the second writer starts with purge_step 3 (the checkpoint's epoch + 1, not the last
    result's), so the first file's epoch 3 is dropped."""
    import ray
    from mlflow.tracking import MlflowClient
    from ray import tune
    from ray.train._internal.storage import StorageContext
    from ray.train._internal.session import _TrainingResult
    from ray.tune.experiment import Trial

    from sweeps.resumed_tracking import ResumingMLflowLoggerCallback, ResumingTBXLoggerCallback, first_repeated_step

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    results = [{"training_iteration": epoch, "val/wga": 0.1 * epoch} for epoch in range(1, 6)]
    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
    try:
        tune.register_trainable("tracked", lambda config: None)
        trial = Trial("tracked", config={"lr": 0.01}, trial_id="t1",
                      storage=StorageContext(storage_path=str(tmp_path), experiment_dir_name="sweep"))
        assert first_repeated_step(trial) is None  # never reported: nothing to purge
        for epochs, last in ((range(0, 3), None), (range(1, 5), results[2])):  # the second driver resumes at epoch 2
            time.sleep(1.1)  # an event file is named by the second it was opened in: a real restart takes longer
            trial.run_metadata.last_result = last or {}
            if last:
                assert first_repeated_step(trial) == 1  # reported, no checkpoint: the trial starts over
                trial.run_metadata.checkpoint_manager.register_checkpoint(
                    _TrainingResult(checkpoint=tune.Checkpoint.from_directory(str(tmp_path)), metrics=results[1]))
            mlflow = ResumingMLflowLoggerCallback(str(tmp_path / "sweep"), tracking_uri=(tmp_path / "mlruns").as_uri(),
                                                  experiment_name="sweep", tags={"groupsweep.sweep": "sweep"})
            tensorboard = ResumingTBXLoggerCallback()
            for callback, logged in ((mlflow, epochs if last else range(0, 2)), (tensorboard, epochs)):
                callback.setup()
                callback.log_trial_start(trial)
                for index in logged:
                    callback.log_trial_result(index + 1, trial, results[index])
            if not last:  # Tune logs one metric per call: the first driver was killed between epoch 3's metrics
                MlflowClient((tmp_path / "mlruns").as_uri()).log_metric(mlflow._trial_runs[trial], "val/wga", 0.3,
                                                                        step=3)
            tensorboard.log_trial_end(trial)
        mlflow.log_trial_end(trial)
        local_path = trial.local_path
    finally:
        ray.shutdown()

    client = MlflowClient((tmp_path / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["groupsweep.sweep_dir"] == str(tmp_path / "sweep")
    for metric in ("val/wga", "training_iteration"):  # epoch 3's other metric is logged by the second driver
        assert [metric.step for metric in client.get_metric_history(run.info.run_id, metric)] == [1, 2, 3, 4, 5]
    first, second = sorted(Path(local_path).glob("events.out.tfevents.*"), key=lambda path: path.stat().st_mtime_ns)
    assert [step for step, _ in event_tags(first)["ray/tune/val/wga"]] == [1, 2, 3]
    assert [step for step, _ in event_tags(second)["ray/tune/val/wga"]] == [2, 3, 4, 5]
    # TensorBoard drops every earlier event from this step on: the first file's epoch 3, repeated here
    assert [event.step for event in events(second) if event.HasField("session_log")] == [3]


@pytest.mark.slow
def test_every_scalar_of_a_result_reaches_the_event_file_within_seconds(tmp_path):
    """Tune flushes a trial's writer after each result, but tensorboardX's flush does not wait for the events still
    queued: with Tune's 30 s timed flush, the last scalars of a result reached the file 30 s later (a driver killed
    meanwhile lost them; the resumed trial does not log that epoch again). The writer flushes every second now."""
    import ray
    from google.protobuf.message import DecodeError
    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment import Trial

    from sweeps.resumed_tracking import ResumingTBXLoggerCallback

    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")  # a trial's local path is in Ray's session
    try:
        trial = Trial("__fake", stub=True, trial_id="t1", config={},
                      storage=StorageContext(storage_path=str(tmp_path), experiment_dir_name="sweep"))
        tensorboard = ResumingTBXLoggerCallback()
        tensorboard.setup()
        tensorboard.log_trial_start(trial)
        metrics = {f"val/metric_{index:02d}": float(index) for index in range(40)}  # more than its queue holds
        tensorboard.log_trial_result(1, trial, {"training_iteration": 1, **metrics})

        def logged() -> set:
            files = list(Path(trial.local_path).glob("events.out.tfevents.*"))
            try:
                return {tag.removeprefix("ray/tune/") for tag in event_tags(files[0])} if files else set()
            except (struct.error, DecodeError):  # read while a record was being written
                return set()

        deadline = time.monotonic() + 10
        while not set(metrics) <= logged() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert set(metrics) <= logged()  # the writer still open: what a killed driver leaves
        tensorboard.log_trial_end(trial)
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_a_sweep_resumed_after_its_driver_was_killed_keeps_one_tracked_record_per_trial(tmp_path, monkeypatch):
    """The driver is killed (SIGKILL) once a checkpoint before the last epoch is recorded; the same command
    resumes the sweep. MLflow: one run per trial, FINISHED, each epoch's step once (before: a second run, the first
    left RUNNING, the repeated epochs twice). TensorBoard, read as it reads several event files (a later file's
    purge step drops the earlier files' events from that step on): each epoch once."""
    import signal

    from mlflow.tracking import MlflowClient

    from test_reliability import MID_TRIAL_DATA, finish, recorded_checkpoints, start_cli, wait_for, write_spec

    epochs = 6
    spec_path = write_spec(tmp_path / "sweep.yaml", seeds=(1,), epochs=epochs, data=MID_TRIAL_DATA)
    (name,) = trial_names(spec_path)
    exp_dir = tmp_path / "results" / "tracked"
    args = ("run", str(spec_path), "--storage", str(tmp_path / "results"), "--name", "tracked",
            "--tracking", "mlflow", "--tracking", "tensorboard")
    driver = start_cli(*args)
    try:
        wait_for(lambda: (exp_dir / name).exists() and any(epoch < epochs for epoch in
                                                            recorded_checkpoints(exp_dir).values()),
                 driver, what="a checkpoint recorded mid-trial")
        os.killpg(driver.pid, signal.SIGKILL)
        driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    again = start_cli(*args)
    output = finish(again)
    assert again.returncode == 0, output[-4000:]

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the store the sweep wrote (``tracker_environment``)
    client = MlflowClient((exp_dir / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("tracked").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["trial_name"] == name
    assert [metric.step for metric in client.get_metric_history(run.info.run_id, "val/wga")] == \
        list(range(1, epochs + 1))
    files = sorted((exp_dir / name).glob("events.out.tfevents.*"))  # TensorBoard reads them in name order
    written = {path.name: [(event.step, "purge" if event.HasField("session_log") else "") for event in events(path)
                           if event.HasField("session_log") or any(value.tag == "ray/tune/val/wga"
                                                                   for value in event.summary.value)]
               for path in files}
    shown: dict = {}  # step -> value, as TensorBoard shows the trial's event files
    for path in files:
        for event in events(path):
            if event.HasField("session_log"):
                shown = {step: value for step, value in shown.items() if step < event.step}
            for value in event.summary.value:
                if value.tag == "ray/tune/val/wga":
                    assert event.step not in shown, (path.name, event.step, written)
                    shown[event.step] = value.simple_value
    assert sorted(shown) == list(range(1, epochs + 1))
