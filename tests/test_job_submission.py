"""The README's cluster path on a real local head node (``slow``): ``ray start --head`` on 127.0.0.1 with the
job server, ``ray job submit --working-dir . -- groupsweep run SPEC --address auto --storage ...``, then the
results analysed from outside the cluster. The head node is started by this test, in its own process group,
and stopped by that group's id (never ``ray stop``, which would end every Ray on the machine)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from ray_fixtures import TINY_DATA, cli_env, run_here
from s3_fixtures import free_ports

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).with_name("ray"))


def head_env() -> dict:
    """The CLI environment with this interpreter's scripts (``ray``, ``groupsweep``) first on PATH, as on a
    cluster node where groupsweep is installed."""
    env = cli_env()
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def forget_head(address: str) -> None:
    """Remove ``ray start``'s note of the latest cluster (``<temp dir>/ray_current_cluster``) when it names
    this test's stopped head node, so that a later plain ``ray.init()`` starts a new Ray instead of
    joining the dead one; a note naming any other cluster is left alone."""
    note = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    if note.exists() and note.read_text().strip() == address:
        note.unlink()


def wait_for_dashboard(url: str, head: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise AssertionError("the head node exited:\n" + head.stdout.read()[-3000:])
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise AssertionError("the head node's job server did not answer")


def submit_job(url: str, work: Path, argv: list, timeout: float = 120) -> subprocess.CompletedProcess:
    """``ray job submit`` of ``argv``, submitted again while the head node answers that its job agent is not up
    yet (its dashboard answers first: "No available agent to submit job, please try again later")."""
    deadline = time.monotonic() + timeout
    while True:
        job = subprocess.run([RAY, "job", "submit", "--address", url, "--working-dir", str(work), "--", *argv],
                             env=head_env(), capture_output=True, text=True, timeout=600)
        if "No available agent" not in job.stdout + job.stderr or time.monotonic() > deadline:
            return job
        time.sleep(2)


def test_a_sweep_submitted_as_a_ray_job_to_a_local_head_node(tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "spec.yaml").write_text(yaml.safe_dump({
        "name": "job", "datasets": {"synthetic-waterbirds": {"options": TINY_DATA}}, "models": ["toy-resnet-xs"],
        "methods": ["none", "upsampling"], "seeds": [1],
        "hparams": {"lr": 1e-2, "batch_size": 64, "epochs": 2, "eval_batch_size": 128}}))
    storage = tmp_path / "results"
    # every port the head binds is a distinct free one, not Ray's fixed defaults (the job agent's 52365, the Ray
    # client's 10001), which another Ray on this machine may hold: the head would come up without its job agent
    options = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "ray-client-server-port",
               "runtime-env-agent-port", "metrics-export-port")
    port, dashboard, *agent_ports = free_ports(2 + len(options))
    url = f"http://127.0.0.1:{dashboard}"
    agents = [f"--{option}={number}" for option, number in zip(options, agent_ports)]
    head = subprocess.Popen([RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--include-dashboard=true",
                             *agents, "--num-cpus=2", "--block"], env=head_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for_dashboard(url, head)
        job = submit_job(url, work, ["groupsweep", "run", "spec.yaml", "--address", "auto", "--storage", str(storage)])
        assert job.returncode == 0 and "succeeded" in job.stdout + job.stderr, job.stdout[-3000:] + job.stderr[-3000:]
        assert "final test WGA" in job.stdout
    finally:
        for sent in (signal.SIGTERM, signal.SIGKILL):  # then whatever of this head node's processes is left
            try:
                os.killpg(head.pid, sent)
            except ProcessLookupError:  # the group is gone (a head node that could not start)
                break
            try:
                head.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        head.wait(timeout=30)
        forget_head(f"127.0.0.1:{port}")
    analysis = run_here(capsys, "analyze", str(storage / "job"), "--out", str(tmp_path / "analysis"))
    assert analysis.returncode == 0, analysis.stdout[-2000:] + analysis.stderr[-2000:]
    assert (tmp_path / "analysis" / "table1.csv").exists()
