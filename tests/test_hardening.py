"""Reliability and security, round two (issue 15): each class of failure on real files and real Ray.

- security: a local sweep's Ray listens on the loopback interface only (the listening sockets of the
  sweep's own processes); names that become paths are in ``test_catalogue.py``;
- concurrency: a second launch of a running sweep gets one line naming the holder; a killed driver
  leaves no process of its Ray running after a few seconds, nor its lock held;
- storage: a full disk (a small tmpfs) ends with the summary and a one-line cause, every file already
  written stays whole, and the same command resumes once there is space; a damaged latest checkpoint
  falls back to the newest readable one.

The end-to-end tests are ``slow`` (they run ``groupsweep run`` as users do); the full-disk tests need to
mount a tmpfs (root) and are skipped where that is not possible.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from ray_fixtures import REPO, cli_env, result_epochs, run_cli, trial_names
from test_reliability import MID_TRIAL_DATA, complete_epochs, finish, rows, start_cli, wait_for, write_spec

# "a few seconds": how long a process of a killed driver's local Ray may outlive it (2.7 s measured on a quiet
# machine; the suite runs in two processes, so another test may load both cores meanwhile)
DRIVER_DEATH_GRACE_S = 15.0


# --- the local Ray: loopback only, one driver at a time, gone with its driver ---------------------------


def descendants(pid: int) -> dict[int, tuple[float, str]]:
    """``{pid: (start time, name)}`` of every process below ``pid`` now."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return {}
    found = {}
    for child in children:
        with contextlib.suppress(psutil.Error):
            found[child.pid] = (child.create_time(), child.name())
    return found


def listening_sockets(pids) -> list[tuple[str, str, int]]:
    """``(process name, address, port)`` of every TCP/UDP socket in LISTEN state of the processes ``pids``."""
    sockets = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            for connection in process.net_connections(kind="inet"):
                if connection.status == psutil.CONN_LISTEN:
                    sockets.append((process.name(), connection.laddr.ip, connection.laddr.port))
    return sockets


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4-mapped loopback address (``::ffff:127.0.0.1``)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def still_running(processes: dict) -> list[str]:
    """Names of the processes of ``processes`` (``descendants``) that still run (zombies count as ended)."""
    alive = []
    for pid, (started, name) in processes.items():
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            if process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{name} ({pid})")
    return alive


def test_loopback_check_recognises_addresses():
    assert all(map(is_loopback, ["127.0.0.1", "::1", "::ffff:127.0.0.1", "127.0.1.1"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.0.2.2", "::ffff:10.0.0.1"]))


@pytest.mark.slow
def test_local_sweep_listens_on_loopback_runs_once_and_ends_with_its_driver(tmp_path):
    # one trial of 16 epochs of about a second: the first report reaches the storage folder with an experiment
    # snapshot (paced), and the checks below must all happen while the sweep still runs
    epochs = 16
    spec_path = write_spec(tmp_path / "sweep.yaml", seeds=(1,), epochs=epochs, data=MID_TRIAL_DATA)
    names = trial_names(spec_path)
    storage = tmp_path / "results"
    exp_dir = storage / "guarded"
    args = ("run", str(spec_path), "--storage", str(storage), "--name", "guarded")
    driver = start_cli(*args)
    seen: dict = {}
    try:
        def trial_reported() -> bool:
            seen.update(descendants(driver.pid))
            return any(result_epochs(exp_dir / name) for name in names)

        wait_for(trial_reported, driver, what="a trial's first report")
        seen.update(descendants(driver.pid))

        # security: every server of the sweep's Ray (GCS, raylet, object manager, agents, workers) and the
        # driver itself listen on the loopback interface only
        sockets = listening_sockets([driver.pid, *seen])
        names_listening = {name for name, _, _ in sockets}
        assert {"gcs_server", "raylet"} <= names_listening, sockets
        assert all(is_loopback(address) for _, address, _ in sockets), sockets

        # concurrency: a second launch of the same sweep is refused with one line naming the holder
        second = run_cli(*args)
        assert second.returncode == 2, second.stderr[-2000:]
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), second.stderr[-2000:]
        assert f"is already being run by pid {driver.pid}" in lines[0] and "groupsweep run" in lines[0], lines[0]
        assert "Traceback" not in second.stderr

        # driver death: SIGKILL to the driver alone; nothing of its Ray outlives it by more than a few seconds
        seen.update(descendants(driver.pid))
        assert any("raylet" in name for _, name in seen.values()), seen
        os.kill(driver.pid, signal.SIGKILL)
        killed = time.monotonic()
        driver.communicate(timeout=60)
        while still_running(seen) and time.monotonic() - killed < DRIVER_DEATH_GRACE_S:
            time.sleep(0.2)
        left = still_running(seen)
        print(f"processes of the killed driver's Ray ended {time.monotonic() - killed:.1f} s after the kill")
        assert not left, f"still running {DRIVER_DEATH_GRACE_S} s after the driver's death: {left}"
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        for pid in seen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # the killed driver's lock is released: the same command takes the sweep over and finishes it
    again = start_cli(*args)
    output = finish(again)
    assert again.returncode == 0, output[-4000:]
    complete_epochs(exp_dir, names, epochs)


def test_sweep_lock_names_its_holder_and_is_released_when_the_holder_is_killed(tmp_path):
    from sweeps.sweep_lock import LOCK_FILE, SweepLock, SweepLocked

    exp_dir = tmp_path / "sweep"
    code = ("import sys, time; sys.argv = ['groupsweep', 'run', 'held.yaml']; "
            "from sweeps.sweep_lock import SweepLock; "
            f"SweepLock({str(exp_dir)!r}).acquire(); print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SweepLocked) as error:
            SweepLock(str(exp_dir)).acquire()
        message = str(error.value)
        assert "\n" not in message and f"pid {holder.pid} on " in message and "(groupsweep run held.yaml)" in message
    finally:
        holder.kill()  # SIGKILL: the holder cleans up nothing
        holder.wait()
    with SweepLock(str(exp_dir)) as lock:  # the OS released the killed holder's lock
        assert json.loads((exp_dir / LOCK_FILE).read_text())["pid"] == os.getpid()
        with pytest.raises(SweepLocked):
            SweepLock(str(exp_dir)).acquire()  # a second holder in the same process is refused too
    assert lock.fd is None and (exp_dir / LOCK_FILE).read_text() == ""


# --- storage faults: a full disk, a damaged checkpoint ---------------------------------------------------


@contextlib.contextmanager
def small_disk(path: Path, size: str):
    """A tmpfs of ``size`` mounted at ``path`` (a real full disk); skips the test where it cannot be mounted."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip() or 'mount failed'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def grow_disk(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def fill(path: Path) -> None:
    """Fill the filesystem of ``path`` up to its last byte."""
    descriptor = os.open(path / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(descriptor, b"\0" * 4096)
    finally:
        os.close(descriptor)


def test_atomic_storage_keeps_the_previous_file_whole_on_a_full_disk(tmp_path):
    from trainables.sweep_storage import sweep_filesystem

    with small_disk(tmp_path / "disk", "256k") as disk:
        fs, _ = sweep_filesystem(str(disk))
        with fs.open_output_stream(str(disk / "state.json")) as stream:
            stream.write(b'{"epoch": 1}')
        fill(disk)
        with pytest.raises(OSError) as error:
            with fs.open_output_stream(str(disk / "state.json")) as stream:
                stream.write(b'{"epoch": 2, "padding": "' + b"x" * 100_000 + b'"}')
        assert error.value.errno == errno.ENOSPC
        assert json.loads((disk / "state.json").read_text()) == {"epoch": 1}  # the previous version, whole
        assert sorted(os.listdir(disk)) == ["filler", "state.json"]  # no temporary file left


def test_an_image_cache_on_a_full_disk_is_one_error_line_and_leaves_no_temporary_file(tmp_path):
    """The cache's file is a memory map: writing images past the free space would end the process with SIGBUS.
    Its space is reserved first, so a full disk is a ``GroupsweepError``, and the partial file is removed."""
    from native_fixtures import write_jpeg
    from trainables.data.image_cache import cached_images
    from trainables.errors import GroupsweepError

    names = [f"{index}.jpg" for index in range(24)]
    for name in names:
        write_jpeg(tmp_path / name, (200, 30, 30), size=(96, 96))
    with small_disk(tmp_path / "disk", "64k") as disk:
        with pytest.raises(GroupsweepError, match=r"cannot write the image cache .* \(No space left on device\); free "
                                                  "space there, or pass cache_dir or set GROUPSWEEP_CACHE"):
            cached_images(tmp_path, names, disk, key="k", image_size=32)
        assert [path.name for path in disk.iterdir() if not path.name.endswith(".lock")] == []


def test_a_retired_checkpoint_is_deleted_once_a_state_naming_its_successor_is_written(tmp_path):
    from trainables.sweep_storage import commit_snapshots, prune_checkpoints, retire_checkpoint, sweep_filesystem

    prune_checkpoints([], 1)  # forget what earlier tests retired
    fs, _ = sweep_filesystem(str(tmp_path))
    trial = tmp_path / "trial"
    for index in range(4):
        (trial / f"checkpoint_{index:06d}").mkdir(parents=True)

    def snapshot() -> None:  # Ray Tune uploading its experiment state (held back for two more uploads)
        with fs.open_output_stream(str(tmp_path / "experiment_state-2026-01-01_00-00-00.json")) as stream:
            stream.write(b"{}")

    retire_checkpoint(fs, str(trial / "checkpoint_000000"))  # checkpoint 1 was saved: checkpoint 0 retires
    assert (trial / "checkpoint_000000").exists()
    for _ in range(3):  # the third writes the first: it may have been saved before checkpoint 1 was registered
        snapshot()
    retire_checkpoint(fs, str(trial / "checkpoint_000001"))  # several retire between two paced snapshots
    retire_checkpoint(fs, str(trial / "checkpoint_000002"))
    snapshot()
    snapshot()
    assert sorted(p.name for p in trial.iterdir()) == [f"checkpoint_00000{i}" for i in range(4)]
    snapshot()  # the fourth written since checkpoint 0 retired: saved after it, checkpoint 0 is unreferenced now
    assert sorted(p.name for p in trial.iterdir()) == ["checkpoint_000001", "checkpoint_000002", "checkpoint_000003"]
    commit_snapshots()  # the run ended: the last one is in the storage too
    assert sorted(p.name for p in trial.iterdir()) == ["checkpoint_000003"]
    (trial / "checkpoint_000004").mkdir()
    retire_checkpoint(fs, str(trial / "checkpoint_000003"))
    (trial / "checkpoint_000001").mkdir()  # retired by a driver killed before deleting it
    (trial / "checkpoint_000005").mkdir()  # written, never registered (the disk filled up during its report)
    prune_checkpoints([(fs, str(trial / "checkpoint_000004"))], 1)  # the run ended: 4 is the trial's latest
    assert sorted(p.name for p in trial.iterdir()) == ["checkpoint_000004", "checkpoint_000005"]
    (tmp_path / "other").mkdir()
    fs.delete_dir(str(tmp_path / "other"))  # a folder deleted through the filesystem goes at once
    assert not (tmp_path / "other").exists()


def all_files_parse(exp_dir: Path) -> None:
    """Every JSON file Ray Tune keeps (experiment state, each trial's params and results) parses whole."""
    for path in exp_dir.glob("experiment_state-*.json"):
        json.loads(path.read_text())
    for trial in (p for p in exp_dir.iterdir() if p.is_dir()):
        for line in (trial / "result.json").read_text().splitlines() if (trial / "result.json").exists() else []:
            json.loads(line)
        if (trial / "params.json").exists():
            json.loads((trial / "params.json").read_text())
    leftovers = [str(p) for p in exp_dir.rglob(".tmp-*")]
    assert not leftovers, leftovers


@pytest.mark.slow
def test_full_disk_ends_with_the_summary_and_one_cause_and_the_same_command_resumes(tmp_path, cluster_address):
    spec_path = write_spec(tmp_path / "sweep.yaml", seeds=(1, 2), epochs=3, max_failures=1)
    names = trial_names(spec_path)
    with small_disk(tmp_path / "disk", "1500k") as disk:
        args = ("run", str(spec_path), "--storage", str(disk), "--name", "full", "--address", cluster_address)
        first = run_cli(*args)
        output = first.stdout + first.stderr
        assert first.returncode == 1, output[-4000:]
        assert "Traceback" not in output, output[-4000:]
        lines = first.stdout.strip().splitlines()
        header = max(i for i, line in enumerate(lines) if line.split()[:3] == ["dataset", "model", "method"])
        assert "final test WGA" in lines[header] and header < len(lines) - 2, lines[-6:]  # the summary, then
        cause = lines[-1]  # one line saying why
        assert cause.startswith("2 trial(s) failed (first error: OSError: [Errno 28]"), cause
        assert "No space left on device" in cause, cause
        assert f"; `groupsweep status {disk / 'full'}` lists them, rerun the command to retry" in cause, cause
        all_files_parse(disk / "full")

        grow_disk(disk, "64m")  # space freed: the same command resumes and finishes
        second = run_cli(*args)
        assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
        complete_epochs(disk / "full", names, 3)
        all_files_parse(disk / "full")


def test_ray_failures_logged_with_a_traceback_show_as_one_line(tmp_path):
    """Ray logs a failure with its traceback either as the record's exception (Tune's controller) or inside
    the message (the syncer that uploads the driver's files, e.g. on a full disk): the driver shows both as
    one line ending with the cause, and keeps the causes."""
    import logging
    import traceback

    from sweeps.launcher import OneLineErrors

    condensed = OneLineErrors()
    logger = logging.getLogger("groupsweep.test.one-line")
    logger.propagate = False
    handler = logging.FileHandler(tmp_path / "log.txt")
    logger.addHandler(handler)
    logger.addFilter(condensed)
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError:
            logger.warning(f"Last sync command failed with the following error:\n{traceback.format_exc()}")
            logger.error("Trial task failed for trial %s", "t1", exc_info=True)
        logger.warning("a plain warning\nkept as it is")
    finally:
        logger.removeHandler(handler)
        handler.close()
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert lines == ["Last sync command failed with the following error: OSError: [Errno 28] No space left on device",
                     "Trial task failed for trial t1 [Errno 28] No space left on device",
                     "a plain warning", "kept as it is"]
    assert condensed.errors == ["OSError: [Errno 28] No space left on device", "[Errno 28] No space left on device"]


def test_a_damaged_checkpoint_falls_back_to_the_newest_readable_one(tmp_path):
    import torch
    from ray.tune import Checkpoint

    from trainables.trainable import load_state
    from trainables.trial_dir import TrialDir

    for index, epoch in enumerate((1, 2, 3)):
        (tmp_path / f"checkpoint_{index:06d}").mkdir()
        torch.save({"epoch": epoch}, tmp_path / f"checkpoint_{index:06d}" / "state.pt")
    latest = tmp_path / "checkpoint_000002" / "state.pt"
    latest.write_bytes(latest.read_bytes()[:20])  # cut short
    (tmp_path / "checkpoint_000001" / "state.pt").write_bytes(b"not a torch file")
    trial = TrialDir(str(tmp_path))
    assert trial.newest_readable_state() == ("checkpoint_000000/state.pt", {"epoch": 1})
    assert load_state(Checkpoint.from_directory(str(latest.parent)), fallback=trial) == {"epoch": 1}
    (tmp_path / "checkpoint_000000" / "state.pt").unlink()
    assert load_state(Checkpoint.from_directory(str(latest.parent)), fallback=trial) is None  # starts over


@pytest.mark.slow
def test_a_trial_resumes_from_its_newest_readable_checkpoint_when_the_latest_is_damaged(tmp_path):
    spec_path = write_spec(tmp_path / "sweep.yaml", seeds=(1,), epochs=3, max_failures=0)
    spec_path.write_text(spec_path.read_text() + "keep_checkpoints: 3\n")
    (name,) = trial_names(spec_path)
    storage = tmp_path / "results"
    trial_dir = storage / "damaged" / name
    args = ("run", str(spec_path), "--storage", str(storage), "--name", "damaged")
    env = cli_env()
    env["GROUPSWEEP_FAULT_INJECT"] = f"{name}:2"  # fails once, right after epoch 2's report and checkpoint
    first = run_cli(*args, env=env)
    assert first.returncode == 1, (first.stdout + first.stderr)[-4000:]
    assert [row["epoch"] for row in rows(trial_dir)] == [1, 2]
    checkpoints = sorted(trial_dir.glob("checkpoint_*/state.pt"))
    assert len(checkpoints) == 2
    checkpoints[-1].write_bytes(checkpoints[-1].read_bytes()[:100])  # the latest checkpoint, damaged

    second = run_cli(*args)
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    # epoch 2 was trained again from epoch 1's checkpoint (not from the start, not from the damaged one)
    assert [row["epoch"] for row in rows(trial_dir)] == [1, 2, 2, 3]
    complete_epochs(storage / "damaged", [name], 3)
