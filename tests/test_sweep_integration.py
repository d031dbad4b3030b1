"""End to end: real Ray Tune sweeps on embedded data through the ``groupsweep`` CLI.

- a 4-trial sweep on a Ray cluster (``--address``, the session's shared one): every trial reports every
  epoch, writes its files, the folder loads offline with ``ray.tune.ExperimentAnalysis``, ``status`` lists
  it and a rerun resumes without training anything again;
- a trial with two workers (a Ray Train ``TorchTrainer`` with Accelerate on CPU) driven from Tune, failing once
  and resuming from its checkpoint;
- a finished sweep extended by a seed and a method: only the added trials run, ``analyze`` reads the union,
  and a spec changing a trial it holds is refused in one line with nothing written;
- a sweep whose driver is SIGKILLed once a trial has finished (local Ray), while it runs trials added to a
  finished sweep: the same command resumes that latest experiment (as it resumes any sweep) and finishes it,
  rerunning no trial that had finished, of either experiment.
"""

import json
import os
import signal
import subprocess
import time

import numpy as np
import yaml
import pytest

from ray_fixtures import (CLUSTER_WATERBIRDS_COUNTS, REPO, cli_command, cli_env, prediction_times, result_epochs,
                          run_cli, run_here, tiny_spec, trial_names)
from trainables.trial_dir import TrialDir

pytestmark = pytest.mark.slow


def test_cli_sweep_reports_every_epoch_and_loads_offline(tmp_path, cluster_address, capsys):
    from ray.tune import ExperimentAnalysis

    from sweeps.spec import load_spec

    spec_path = tiny_spec(tmp_path / "sweep.yaml", methods=["none", {"mixture": [2]}])
    storage = tmp_path / "results"
    args = ("run", str(spec_path), "--storage", str(storage), "--name", "four", "--address", cluster_address)
    result = run_cli(*args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Trial name" in result.stdout  # Ray's trial table
    assert "mixture 2:1" in result.stdout and "final test WGA" in result.stdout  # the summary

    exp_dir = storage / "four"
    trials = load_spec(str(spec_path)).trials
    assert len(trials) == 4 and (exp_dir / "groupsweep_spec.yaml").exists()
    for trial in trials:
        trial_dir = exp_dir / trial.name
        assert result_epochs(trial_dir) == [1, 2], trial.name
        assert json.loads((trial_dir / "params.json").read_text()) == trial.config
        rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
        assert all(row["status"] == "ok" and row["node_id"] and "test/acc_group_3" in row for row in rows)
        with np.load(trial_dir / "groupsweep" / "labels.npz") as labels:
            n_test = len(labels["test_y"])
        for epoch in (1, 2):
            with np.load(trial_dir / "groupsweep" / "predictions" / f"epoch_{epoch:04d}.npz") as saved:
                assert saved["test"].dtype == np.int16 and len(saved["test"]) == n_test
        assert [p.name for p in trial_dir.glob("checkpoint_*")] == ["checkpoint_000001"]  # one kept

    analysis = ExperimentAnalysis(str(exp_dir))
    assert sorted(t.config["trial_name"] for t in analysis.trials) == sorted(t.name for t in trials)
    assert {t.status for t in analysis.trials} == {"TERMINATED"}
    assert all(len(frame) == 2 for frame in analysis.trial_dataframes.values())

    status = run_here(capsys, "status", "four", "--storage", str(storage))
    assert status.returncode == 0, status.stderr
    states = [line.split()[1] for line in status.stdout.strip().splitlines()[1:-1]]
    assert states == ["complete"] * 4 and "2/2" in status.stdout
    assert status.stdout.strip().splitlines()[-1] == "4 complete"

    before = {t.name: (exp_dir / t.name / "result.json").read_text() for t in trials}
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {t.name: (exp_dir / t.name / "result.json").read_text() for t in trials} == before


def recorded_finished(exp_dir, names) -> set[str]:
    """Those of ``names`` that the sweep's saved Tune state (what a resumed run restores) records as finished."""
    from ray.tune import ExperimentAnalysis

    try:
        trials = ExperimentAnalysis(str(exp_dir)).trials
    except Exception:  # no state saved yet, or it is being replaced
        return set()
    return {trial.config["trial_name"] for trial in trials if trial.status == "TERMINATED"} & set(names)


def kill_after_first_finished(args, exp_dir, names) -> list[str]:
    """Run ``groupsweep ARGS`` (trials of 3 epochs), SIGKILL its driver once the state snapshot in the sweep
    folder records one of ``names`` as finished, and return those it records so; asserts that some, but not
    all, are."""
    driver = subprocess.Popen(cli_command(*args), cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and driver.poll() is None and not recorded_finished(exp_dir, names):
            time.sleep(0.2)
        assert driver.poll() is None, "the sweep ended before it could be killed"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            os.kill(driver.pid, signal.SIGKILL)
    finished = recorded_finished(exp_dir, names)
    assert finished and len(finished) < len(names), (finished, names)
    return sorted(finished)


def test_a_cluster_sweep_leaves_a_native_dataset_to_the_trials_on_the_workers(tmp_path, cluster_address):
    """On a cluster the driver reads no native dataset: its node need not hold it (cluster.yaml's head does
    not). The trials load it on the workers, from their own ``GROUPSWEEP_DATA``, which the driver lacks, and
    so does the ``spectral`` after-command, which extracts features again: it runs as a task on the cluster."""
    spec_path = tmp_path / "native.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "native", "datasets": {"waterbirds": {"options": {"image_size": 32}}}, "models": ["toy-resnet-xs"],
        "methods": ["none"], "seeds": [1], "hparams": {"epochs": 1, "batch_size": 32}, "resources": {"cpu": 1},
        "after": ["spectral --top 3"]}))
    env = cli_env()
    env.pop("GROUPSWEEP_DATA", None)
    done = subprocess.run(cli_command("run", str(spec_path), "--storage", str(tmp_path / "out"), "--address",
                                      cluster_address), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (trial_dir,) = (tmp_path / "out" / "native").glob("waterbirds-*")
    (row,) = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    assert row["status"] == "ok" and row["data/num_train_kept"] == sum(CLUSTER_WATERBIRDS_COUNTS["train"])
    assert row["test/count_group_0"] == CLUSTER_WATERBIRDS_COUNTS["test"][0]
    assert "$ groupsweep spectral" in done.stdout
    assert list((tmp_path / "out" / "native" / "groupsweep_analysis").glob("spectral_*")), done.stdout[-2000:]


def test_the_python_api_in_a_process_that_joined_a_cluster_runs_the_sweep_there(tmp_path, cluster_address,
                                                                                  monkeypatch):
    """``ray.init(address=...)`` then ``gs.run(spec)`` with no ``address``: the sweep is a cluster sweep (the driver
    reads no native dataset, which only the workers hold; the ``spectral`` after-command runs as a task there),
    and the caller's Ray connection is left as it was. Before, the joined Ray was taken for a local one: the
    driver looked for the dataset itself and the sweep stopped."""
    import ray

    import groupsweep as gs

    monkeypatch.delenv("GROUPSWEEP_DATA", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    spec = {"name": "joined", "datasets": {"waterbirds": {"options": {"image_size": 32}}}, "models": ["toy-resnet-xs"],
            "methods": ["none"], "seeds": [1], "hparams": {"epochs": 1, "batch_size": 32}, "resources": {"cpu": 1},
            "after": ["spectral --top 3"]}
    ray.init(address=cluster_address, logging_level="WARNING", log_to_driver=False)
    try:
        results = gs.run(spec, storage=tmp_path / "out")
        assert ray.is_initialized() and ray.get_runtime_context().gcs_address == cluster_address
    finally:
        ray.shutdown()
    (row,) = results.frame.to_dict("records")
    assert row["data/num_train_kept"] == sum(CLUSTER_WATERBIRDS_COUNTS["train"])
    assert list((tmp_path / "out" / "joined" / "groupsweep_analysis").glob("spectral_*"))


def test_trial_with_two_workers_runs_accelerate_through_a_torch_trainer_and_resumes_after_a_failure(tmp_path, capsys):
    """Rank 0 fails once after epoch 1's report and checkpoint (``GROUPSWEEP_FAULT_INJECT``; a local Ray, whose
    workers have the driver's environment): the Ray Train run fails, Tune retries the trial, and the retry's
    TorchTrainer resumes from the run's epoch-1 checkpoint (epoch 1 is not trained or reported again)."""
    from ray.tune import ExperimentAnalysis

    spec_path = tiny_spec(tmp_path / "sweep.yaml", methods=["upsampling"], seeds=[1],
                          resources={"cpu": 2, "workers": 2})
    (name,) = trial_names(spec_path)
    storage = tmp_path / "results"
    env = cli_env()
    env["GROUPSWEEP_FAULT_INJECT"] = f"{name}:1"
    result = run_cli("run", str(spec_path), "--storage", str(storage), "--name", "ddp", env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trial_dir = storage / "ddp" / name
    assert (trial_dir / "groupsweep" / "fault_1").exists()  # the failure happened
    assert result_epochs(trial_dir) == [1, 2]
    ((status, failures),) = [(t.status, t.num_failures) for t in ExperimentAnalysis(str(storage / "ddp")).trials]
    assert (status, failures) == ("TERMINATED", 1)
    assert (trial_dir / "groupsweep" / "predictions" / "epoch_0002.npz").exists()
    # the Ray Train run's own checkpoint, named as the trial directory's readers list them (spectral, D3M's base)
    assert TrialDir(str(trial_dir)).state_files() == ["train/checkpoint_000002/state.pt"]
    spectral = run_here(capsys, "spectral", str(storage / "ddp"), "--trial", name, "--top", "3")
    assert spectral.returncode == 0, spectral.stdout[-2000:] + spectral.stderr[-2000:]


def test_extending_a_finished_sweep_runs_only_the_added_trials_and_analyses_the_union(tmp_path, capsys):
    # a local Ray for each run: on a cluster that outlives its drivers, Tune's staging folder of the experiment
    # outlives them too, and the restored experiment uploads the finished trial's logs from it again (the
    # same bytes, new modification times)
    from analysis.results import load_results

    storage = tmp_path / "results"
    exp_dir = storage / "grow"
    first = tiny_spec(tmp_path / "first.yaml", methods=["none"], seeds=(1,))
    result = run_cli("run", str(first), "--storage", str(storage), "--name", "grow")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (kept,) = trial_names(first)
    files = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (exp_dir / kept).rglob("*") if p.is_file()}

    # one more seed and one more method: 3 trials added to the finished one
    grown = tiny_spec(tmp_path / "grown.yaml", methods=["none", "upweighting"], seeds=(1, 2))
    result = run_cli("run", str(grown), "--storage", str(storage), "--name", "grow")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "adding 3 trial(s) to its 1" in result.stdout
    names = trial_names(grown)
    assert len(names) == 4 and kept in names
    now = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (exp_dir / kept).rglob("*") if p.is_file()}
    assert now == files  # the finished trial: not run again, not a byte or timestamp changed
    for name in names:
        assert result_epochs(exp_dir / name) == [1, 2], name
    from sweeps.launcher import read_saved_spec
    from sweeps.spec import build_spec

    assert [t.name for t in build_spec(read_saved_spec(str(exp_dir))).trials] == names  # the record: the union

    trials = load_results(str(exp_dir)).trials
    assert sorted(trials["trial_name"]) == sorted(names) and set(trials["status"]) == {"complete"}
    analyzed = run_here(capsys, "analyze", str(exp_dir), "--out", str(tmp_path / "table1"))
    assert analyzed.returncode == 0, analyzed.stderr[-3000:]
    candidates = (tmp_path / "table1" / "table1_methods.csv").read_text()  # every candidate method, scored
    assert "upweighting" in candidates and "none" in candidates

    # a method with its own hparams: the new trials' configs have a key (METHOD_HPARAMS_KEY) that the restored
    # experiment's trials lack, and Tune's restore still gets the param_space keys it started with; the
    # restored experiment's trials (all finished) do not run again
    before = {name: (exp_dir / name / "result.json").read_bytes() for name in names}
    widened = tiny_spec(tmp_path / "widened.yaml", seeds=(1, 2),
                        methods=["none", "upweighting", {"subsetting": {"hparams": {"weight_decay": 0.01}}}])
    result = run_cli("run", str(widened), "--storage", str(storage), "--name", "grow", "--no-after")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "adding 2 trial(s) to its 4" in result.stdout
    assert {name: (exp_dir / name / "result.json").read_bytes() for name in names} == before
    names = trial_names(widened)
    assert sorted(load_results(str(exp_dir)).trials["trial_name"]) == sorted(names)

    # a spec that changes a trial the sweep holds is refused in one line, before anything is written
    changed = tiny_spec(tmp_path / "changed.yaml", methods=["none", "upweighting", "subsetting"], seeds=(1, 2))
    source = yaml.safe_load(changed.read_text())
    source["hparams"]["lr"] = 1e-2
    changed.write_text(yaml.safe_dump(source))
    listing = {str(p): p.stat().st_mtime_ns for p in storage.rglob("*")}
    refused = run_cli("run", str(changed), "--storage", str(storage), "--name", "grow")
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "holds trial" in lines[0], refused.stderr
    assert "lr 0.001, now 0.01" in lines[0]
    assert {str(p): p.stat().st_mtime_ns for p in storage.rglob("*")} == listing


# Training data of the grown-sweep kill test, large enough that the sweep folder's state (uploaded about every
# second) records the first of the 11 added trials finished some 9 s before the last (quiet 2-core box). With
# TINY_DATA that window was 1.6 s, and under the test suite's load one snapshot recorded all 11 finished.
GROWN_DATA = {"size": 1000, "val_size": 60, "test_size": 60}


def test_a_sweep_killed_while_it_runs_its_added_trials_resumes_them(tmp_path):
    storage = tmp_path / "results"
    exp_dir = storage / "grown"
    first = tiny_spec(tmp_path / "first.yaml", methods=["none"], seeds=(1,), epochs=3, max_concurrent=1,
                      data=GROWN_DATA)
    result = run_cli("run", str(first), "--storage", str(storage), "--name", "grown", "--no-after")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (kept,) = trial_names(first)
    kept_predictions = prediction_times(exp_dir / kept)

    grown = tiny_spec(tmp_path / "grown.yaml", methods=["none", "subsetting", "upweighting"], seeds=(1, 2, 3, 4),
                      epochs=3, max_concurrent=1, data=GROWN_DATA)
    names = trial_names(grown)
    added = [name for name in names if name != kept]
    args = ("run", str(grown), "--storage", str(storage), "--name", "grown", "--no-after")
    finished = kill_after_first_finished(args, exp_dir, added)
    predictions = {name: prediction_times(exp_dir / name) for name in finished}

    result = run_cli(*args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "adding" not in result.stdout  # the added trials' experiment is resumed, not started again
    for name in names:
        assert sorted(set(result_epochs(exp_dir / name))) == [1, 2, 3], name
    for name in [kept, *finished]:  # finished before the kill: not trained again, not reported again
        assert result_epochs(exp_dir / name) == [1, 2, 3], name
        assert prediction_times(exp_dir / name) == (kept_predictions if name == kept else predictions[name]), name
