"""A sweep stored in object storage (a real S3-protocol server on 127.0.0.1, ``s3_fixtures``), end to end.

The sweep's lock there is a lease (``sweeps.sweep_lock.ObjectLease``). The sweep runs with ``--storage s3://...``,
its driver is SIGKILLed after a trial has finished and the same command resumes it; ``status``, ``analyze``,
``plot`` and ``spectral`` then read it from the bucket, with no filesystem shared between the trials and the
analyses (the analyses write to a local folder).
"""

from __future__ import annotations

import _thread
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pyarrow.fs
import pytest
import yaml

from analysis.results import load_results
from ray_fixtures import TINY_DATA, run_cli
from s3_fixtures import s3_server  # noqa: F401  (the fixture)
from sweeps.sweep_lock import LOCK_FILE, ObjectLease, SweepLock, SweepLocked, stop_this_driver
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

    # the killed driver's lease names a process of this host that no longer exists: the same command takes it over
    again = start_cli(*args)
    output = finish(again)
    assert again.returncode == 0, output[-4000:]
    assert "final test WGA" in output
    assert not TrialDir(exp_uri).exists(LOCK_FILE)  # the run removed its lease when it ended
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


def test_an_upload_replaces_each_file_whole_and_leaves_no_temporary_file(tmp_path, s3_server):  # noqa: F811
    """``--out`` URIs: an analysis folder uploaded file by file, each written beside its target and moved over it
    (``write_atomically``), into a bucket and into a ``file://`` folder that holds an earlier analysis."""
    from sweeps.analyze_command import upload

    local = tmp_path / "analysis"
    (local / "figures").mkdir(parents=True)
    (local / "table1.md").write_text("new table\n")
    (local / "figures" / "collapse.csv").write_text("a,b\n1,2\n")
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "table1.md").write_text("old table, longer than the new one\n")
    for uri in (earlier.as_uri(), join_location(s3_server.uri("analyses"), "run1")):
        upload(local, uri)
        written = TrialDir(uri)
        assert written.read_bytes("table1.md") == b"new table\n"
        assert written.read_bytes("figures/collapse.csv") == b"a,b\n1,2\n"
    assert sorted(path.name for path in earlier.rglob("*")) == ["collapse.csv", "figures", "table1.md"]
    upload(local / "table1.md", (earlier / "single.md").as_uri())  # a single file
    assert (earlier / "single.md").read_text() == "new table\n"


def lock_record(exp_uri: str) -> dict:
    """The lock file's record, read as the lease reads it (again when a renewal was written meanwhile)."""
    return ObjectLease(exp_uri).read()


def test_a_bucket_sweeps_lock_is_a_lease_renewed_by_its_holder_and_refused_to_a_second_driver(tmp_path,
                                                                                              s3_server):  # noqa: F811
    storage = s3_server.uri("sweeps")
    exp_uri = join_location(storage, "leased")
    holder = ObjectLease(exp_uri, renew_s=0.2, settle_s=0.05)
    holder.acquire()
    try:
        first = lock_record(exp_uri)
        assert first["pid"] == os.getpid() and first["token"] == holder.token
        with pytest.raises(SweepLocked) as error:
            SweepLock(exp_uri).acquire()  # the launcher's lock of the same sweep: refused, naming the holder
        message = str(error.value)
        assert "\n" not in message and f"is already being run by pid {os.getpid()} on " in message
        # renewed every 0.2 s: 0 s ago, unless the box is slow
        assert re.search(r"lease renewed [01] s ago", message) and re.search(r"run again in 1(19|20) s", message)
        spec = tmp_path / "spec.yaml"
        spec.write_text(yaml.safe_dump({"datasets": {"synthetic-waterbirds": {"options": TINY_DATA}},
                                        "models": ["toy-resnet-xs"], "methods": ["none"], "seeds": [1]}))
        second = run_cli("run", str(spec), "--storage", storage, "--name", "leased")  # before Ray starts: one line
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1, second.stderr[-2000:]
        assert lines[0].startswith("error: ") and f"is already being run by pid {os.getpid()}" in lines[0]
        filesystem, path = pyarrow.fs.FileSystem.from_uri(exp_uri)
        assert [info.base_name for info in filesystem.get_file_info(pyarrow.fs.FileSelector(path))] == [LOCK_FILE]
        wait_until(lambda: lock_record(exp_uri)["renewed"] > first["renewed"], "a renewal")
    finally:
        holder.release()
    assert not TrialDir(exp_uri).exists(LOCK_FILE)  # released: removed
    with SweepLock(exp_uri) as lock:  # free again
        assert lock_record(exp_uri)["token"] == lock.lease.token
    assert not TrialDir(exp_uri).exists(LOCK_FILE)


def test_a_lapsed_lease_or_one_of_a_dead_local_process_is_taken_over(s3_server):  # noqa: F811
    exp_uri = s3_server.uri("sweeps/stale")
    filesystem, path = pyarrow.fs.FileSystem.from_uri(join_location(exp_uri, LOCK_FILE))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()

    def foreign(host: str, pid: int, age: float) -> None:
        with filesystem.open_output_stream(path) as stream:
            stream.write(json.dumps({"pid": pid, "host": host, "since": "2026-11-28 00:00:00", "command": "groupsweep",
                                     "token": "theirs", "renewed": time.time() - age}).encode())

    for host, pid, age, taken in (("elsewhere", 1, 10, False),  # current, another host: held
                                  ("elsewhere", 1, 200, True),  # not renewed for 200 s: lapsed
                                  (socket.gethostname(), dead.pid, 10, True),  # its process here has ended
                                  (socket.gethostname(), os.getpid(), 10, False)):  # a live process here: held
        foreign(host, pid, age)
        lease = ObjectLease(exp_uri, settle_s=0.05)
        if taken:
            lease.acquire()
            assert lock_record(exp_uri)["token"] == lease.token, (host, age)
            lease.release()
        else:
            with pytest.raises(SweepLocked, match=f"already being run by pid {pid} on {host} "):
                lease.acquire()
            assert lock_record(exp_uri)["token"] == "theirs"  # untouched


def test_of_two_drivers_taking_a_free_lease_at_once_only_the_one_whose_record_stayed_runs(s3_server):  # noqa: F811
    """The other driver found the lock free too (its check came before this one's write) and wrote its record
    while this one waited to read its own back: this one stops, the other's record stays."""
    exp_uri = s3_server.uri("sweeps/race")
    filesystem, path = pyarrow.fs.FileSystem.from_uri(join_location(exp_uri, LOCK_FILE))
    other = {"pid": os.getpid(), "host": "elsewhere", "since": "2026-11-28 00:00:00", "command": "groupsweep run",
             "token": "theirs", "renewed": time.time()}

    def other_writes() -> None:  # once this driver's record is there: while it waits to read it back
        wait_until(lambda: filesystem.get_file_info(path).type == pyarrow.fs.FileType.File, "this driver's record")
        with filesystem.open_output_stream(path) as stream:
            stream.write(json.dumps(other).encode())

    racing = threading.Thread(target=other_writes)
    racing.start()
    try:
        with pytest.raises(SweepLocked, match="on elsewhere .*it took the lock at the same moment as this run"):
            ObjectLease(exp_uri, settle_s=1.5).acquire()
    finally:
        racing.join()
    assert lock_record(exp_uri)["token"] == "theirs"


def test_a_lease_lost_while_held_stops_its_holder_and_is_not_removed_by_it(s3_server):  # noqa: F811
    exp_uri = s3_server.uri("sweeps/lost")
    filesystem, path = pyarrow.fs.FileSystem.from_uri(join_location(exp_uri, LOCK_FILE))
    lost: list = []
    lease = ObjectLease(exp_uri, renew_s=0.1, settle_s=0.05, on_lost=lost.append)
    for _ in range(2):  # a lease taken, released and taken again renews again
        lease.acquire()
        renewed = lock_record(exp_uri)["renewed"]
        wait_until(lambda renewed=renewed: lock_record(exp_uri)["renewed"] > renewed, "a renewal")
        lease.release()
    lease.acquire()

    def rival_writes() -> None:  # a rival's record, written after this one's read-back
        with filesystem.open_output_stream(path) as stream:
            stream.write(json.dumps({"pid": 1, "host": "elsewhere", "since": "2026-11-28 00:00:00",
                                     "command": "groupsweep", "token": "theirs", "renewed": time.time()}).encode())

    # written again while unnoticed: a renewal (a read, then a write) can overwrite a write landing between the two
    wait_until(lambda: lost or rival_writes(), "the lost lease noticed")
    assert lost[0].startswith(f"the lock of sweep {exp_uri} was taken by pid 1 on elsewhere")
    assert "this run stops" in lost[0]
    lease.release()
    assert lock_record(exp_uri)["token"] == "theirs"  # the rival's lock stays

    # a holder that cannot renew for lease_s loses its lease too (here its bucket is gone)
    bucket_uri = s3_server.uri("sweeps/gone")
    lapsing = ObjectLease(bucket_uri, lease_s=0.5, renew_s=0.1, settle_s=0.05, on_lost=lost.append)
    lapsing.acquire()
    bucket_fs, bucket_path = pyarrow.fs.FileSystem.from_uri(f"{bucket_uri}&allow_bucket_deletion=true")
    bucket = bucket_path.split("/")[0]
    bucket_fs.delete_dir_contents(bucket)
    bucket_fs.delete_dir(bucket)
    wait_until(lambda: len(lost) == 2, "the lapsed lease noticed")
    assert re.search(r"lapsed: no renewal succeeded for \d+ s", lost[1]), lost[1]  # 0.5 s, or more on a slow box
    lapsing.release()


def test_records_a_lease_cannot_have_written_hold_nothing_and_an_interrupted_take_leaves_none(
        s3_server, python_sigint):  # noqa: F811
    exp_uri = s3_server.uri("sweeps/odd")
    filesystem, path = pyarrow.fs.FileSystem.from_uri(join_location(exp_uri, LOCK_FILE))
    here = socket.gethostname()
    huge = "1" + "0" * 400  # an integer no float holds
    for record in (f'{{"pid": 1000000000000, "host": "{here}", "renewed": {time.time()}}}',  # pid out of range
                   '{"pid": 1, "host": "elsewhere", "renewed": "inf"}',
                   f'{{"pid": 1, "host": "elsewhere", "renewed": {huge}}}', '{"pid": 1}', '[1, 2]', 'not json'):
        with filesystem.open_output_stream(path) as stream:
            stream.write(record.encode())
        lease = ObjectLease(exp_uri, settle_s=0.05)
        lease.acquire()  # taken over, no traceback
        lease.release()
    lease = ObjectLease(exp_uri, settle_s=2)
    threading.Timer(0.5, _thread.interrupt_main).start()  # Ctrl-C while it waits to read its record back
    try:
        with pytest.raises(KeyboardInterrupt):
            lease.acquire()
    finally:
        lease.release()  # a no-op unless the interrupt missed
    assert not TrialDir(exp_uri).exists(LOCK_FILE)  # its record is gone with it


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler (KeyboardInterrupt) for one test, as a driver has it (a pytest-xdist worker
    ignores SIGINT)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_driver_that_lost_its_lease_is_stopped_as_ctrl_c_stops_it(capsys, python_sigint):
    threading.Timer(0.2, stop_this_driver, args=("the lock of sweep s3://b/s was taken by pid 7 on elsewhere",)).start()
    with pytest.raises(KeyboardInterrupt):  # what Tune's SIGINT handler turns into a stop that saves the sweep
        time.sleep(10)
    assert capsys.readouterr().err == "error: the lock of sweep s3://b/s was taken by pid 7 on elsewhere\n"


def test_a_lease_held_where_sigint_is_ignored_gives_it_pythons_handler_until_released(s3_server):  # noqa: F811
    """A driver started in the background by a non-interactive shell ignores SIGINT: a lost lease could not stop
    it."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        lease = ObjectLease(s3_server.uri("sweeps/sigint"), settle_s=0.05)
        lease.acquire()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        lease.release()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_file_uri_sweep_is_locked_like_a_local_folder(tmp_path):
    uri = (tmp_path / "new" / "sweep").as_uri()
    with SweepLock(uri) as lock:
        assert lock.lease is None
        assert json.loads((tmp_path / "new" / "sweep" / LOCK_FILE).read_text())["pid"] == os.getpid()
        with pytest.raises(SweepLocked):
            SweepLock(str(tmp_path / "new" / "sweep")).acquire()


def wait_until(condition, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


def test_analyses_of_a_bucket_write_to_a_local_folder_by_default(tmp_path, monkeypatch):
    from sweeps.analyze_command import default_out_dir

    monkeypatch.chdir(tmp_path)
    assert default_out_dir("s3://b/sweeps/s3?endpoint_override=127.0.0.1:9&scheme=http") == \
        tmp_path / "s3_groupsweep_analysis"
    assert default_out_dir(tmp_path / "sweep") == tmp_path / "sweep" / "groupsweep_analysis"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # "~" is the home folder, not a folder named "~"
    assert default_out_dir("~/runs/demo") == tmp_path / "home" / "runs" / "demo" / "groupsweep_analysis"
