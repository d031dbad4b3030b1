"""A sweep stored in object storage (a real S3-protocol server on 127.0.0.1, ``s3_fixtures``), end to end.

The sweep runs with ``--storage s3://...``, its driver is SIGKILLed after a trial has finished and the same
command resumes it; ``status``, ``analyze``, ``plot`` and ``spectral`` then read it from the bucket, with no
filesystem shared between the trials and the analyses (the analyses write to a local folder).
"""

from __future__ import annotations

import os
import signal

import pytest
import yaml

from analysis.results import load_results
from ray_fixtures import TINY_DATA, run_cli
from s3_fixtures import s3_server  # noqa: F401  (the fixture)
from test_reliability import finish, start_cli, wait_for
from trainables.trial_dir import RESULT_FILE, TrialDir, UnreadableFile, join_location

NAMES = ["synthetic-waterbirds-toy-resnet-xs-none-s1", "synthetic-waterbirds-toy-resnet-xs-upsampling-s1"]


def reported_epochs(exp_uri: str, name: str) -> int:
    """How many epochs the trial has reported in the bucket (0 before its first report)."""
    try:
        return TrialDir(join_location(exp_uri, name)).read_bytes(RESULT_FILE).count(b"\n")
    except UnreadableFile:
        return 0


# Enough epochs that the second trial (one at a time) is still running when the first one's last report has
# reached the bucket and the driver is killed, maybe in the middle of an upload (paced: every second in the
# tests). The experiment state in the bucket may still call the first trial running (a snapshot lands one
# upload after the logs it was saved with): then the resumed run redoes its last epochs.
EPOCHS = 6


@pytest.mark.slow
def test_a_sweep_in_a_bucket_resumes_after_a_driver_kill_and_every_reader_reads_it(tmp_path, s3_server):  # noqa: F811
    storage = s3_server.uri("sweeps")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "s3", "datasets": {"synthetic-waterbirds": {"options": TINY_DATA}}, "models": ["toy-resnet-xs"],
        "methods": ["none", "upsampling"], "seeds": [1], "max_concurrent": 1, "after": ["analyze", "report"],
        "hparams": {"lr": 1e-2, "batch_size": 64, "epochs": EPOCHS, "eval_batch_size": 128}}))
    exp_uri = join_location(storage, "s3")
    args = ("run", str(spec), "--storage", storage)

    driver = start_cli(*args)
    try:
        wait_for(lambda: reported_epochs(exp_uri, NAMES[0]) == EPOCHS, driver, what="the first trial finished")
        os.killpg(driver.pid, signal.SIGKILL)
        driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert reported_epochs(exp_uri, NAMES[1]) < EPOCHS

    again = start_cli(*args)
    output = finish(again)
    assert again.returncode == 0, output[-4000:]
    assert "final test WGA" in output
    # the after commands write beside the sweep, in the bucket
    written = TrialDir(join_location(exp_uri, "groupsweep_analysis"))
    assert b"criterion" in written.read_bytes("table1.csv")
    assert written.read_bytes("report.html").startswith(b"<!DOCTYPE html>")
    results = load_results(exp_uri)
    for name in NAMES:
        history = results.frame.loc[results.frame["trial_name"] == name, "epoch"].tolist()
        assert history == list(range(1, EPOCHS + 1)), (name, history)
        # retention on a bucket: the last checkpoint kept, the earlier ones deleted (by the end of the sweep)
        assert TrialDir(join_location(exp_uri, name)).state_files() == [f"checkpoint_{EPOCHS - 1:06d}/state.pt"], name
        assert results.labels(results.trials.set_index("trial_name").loc[name, "trial_id"])["n_classes"] == 2

    status = run_cli("status", "s3", "--storage", storage)
    assert status.returncode == 0 and "2 complete" in status.stdout, status.stdout + status.stderr
    by_uri = run_cli("status", exp_uri)  # the sweep folder's URI itself
    assert by_uri.returncode == 0 and by_uri.stdout == status.stdout, by_uri.stdout + by_uri.stderr
    out = tmp_path / "analysis"
    analysis = run_cli("analyze", exp_uri, "--out", str(out))
    assert analysis.returncode == 0, analysis.stdout[-2000:] + analysis.stderr[-2000:]
    assert (out / "table1.csv").exists()
    figures = run_cli("plot", exp_uri, "--figure", "collapse", "--out", str(out))
    assert figures.returncode == 0 and (out / "collapse.png").exists(), figures.stderr[-2000:]
    spectral = run_cli("spectral", exp_uri, "--trial", NAMES[1], "--top", "5", "--out", str(out))
    assert spectral.returncode == 0, spectral.stdout[-2000:] + spectral.stderr[-2000:]
    assert any(path.name.startswith("spectral_") for path in out.iterdir())
    # an analysis written to the bucket when asked
    remote = join_location(storage, "s3-analysis")
    uploaded = run_cli("analyze", exp_uri, "--out", remote)
    assert uploaded.returncode == 0 and f"uploaded to {remote}" in uploaded.stdout, uploaded.stderr[-2000:]
    assert b"criterion" in TrialDir(remote).read_bytes("table1.csv")
    # the printed lines name where the tables went, not the temporary folder they were written to first
    assert f"wrote {join_location(remote, 'table1.md')}, .csv, .tex" in uploaded.stdout, uploaded.stdout[-2000:]


def test_analyses_of_a_bucket_write_to_a_local_folder_by_default(tmp_path, monkeypatch):
    from sweeps.analyze_command import default_out_dir

    monkeypatch.chdir(tmp_path)
    assert default_out_dir("s3://b/sweeps/s3?endpoint_override=127.0.0.1:9&scheme=http") == \
        tmp_path / "s3_groupsweep_analysis"
    assert default_out_dir(tmp_path / "sweep") == tmp_path / "sweep" / "groupsweep_analysis"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # "~" is the home folder, not a folder named "~"
    assert default_out_dir("~/runs/demo") == tmp_path / "home" / "runs" / "demo" / "groupsweep_analysis"
