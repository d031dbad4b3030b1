"""How Ray Tune's uploads reach a sweep's storage (``trainables.sweep_storage``): an experiment snapshot is
never newer in the storage than the trial logs uploaded with it, on local storage and on a real S3-protocol
server (``s3_fixtures``). The uploads are made as Tune's driver makes them: ``pyarrow.fs.copy_files`` of its
staging folder into the storage, through the sweep's filesystem."""

from __future__ import annotations

import errno
import json
import os
import pickle
import subprocess
import sys
import threading

import pyarrow.fs
import pytest

from ray_fixtures import REPO
from s3_fixtures import s3_server  # noqa: F401  (the fixture)
from trainables.sweep_storage import commit_snapshots, drop_snapshots, sweep_filesystem

STATE = "experiment_state-2026-01-01_00-00-00.json"
SEARCHER = "basic-variant-state-2026-01-01_00-00-00.json"
TRIALS = [f"trial_{number:02d}" for number in range(24)]  # more files than pyarrow's 8 I/O threads


def stage(folder, version: int) -> None:
    """Tune's staging folder after snapshot ``version``: the state and searcher state name it, and every trial's
    logs hold its rows up to it."""
    folder.mkdir(exist_ok=True)
    for name in (STATE, SEARCHER):
        (folder / name).write_text(json.dumps({"version": version}))
    for trial in TRIALS:
        (folder / trial).mkdir(exist_ok=True)
        for log in ("result.json", "progress.csv"):
            (folder / trial / log).write_text("".join(f"{row}\n" for row in range(1, version + 1)))


def upload(staging, fs, root: str) -> None:
    """Tune's upload of its staging folder (``ray.train._internal.storage._upload_to_fs_path``), in threads as
    Tune makes it to any filesystem but pyarrow's own S3 one; fails the test if it does not end in 60 s."""
    errors = []

    def copy():
        try:
            pyarrow.fs.copy_files(str(staging), root, destination_filesystem=fs, chunk_size=64 * 1024 * 1024)
        except Exception as error:  # noqa: BLE001 - handed to the test
            errors.append(error)

    worker = threading.Thread(target=copy, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the upload hung"
    if errors:
        raise errors[0]


def stored_state(fs, root: str):
    """The state version in the storage, or None."""
    if fs.get_file_info(f"{root}/{STATE}").type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(f"{root}/{STATE}") as stream:
        return json.loads(stream.read())["version"]


def stored(fs, root: str):
    """``(state version or None, fewest rows of any trial log)`` in the storage."""
    def rows(path):
        with fs.open_input_stream(f"{root}/{path}") as stream:
            return stream.read().count(b"\n")

    logs = [f"{trial}/{log}" for trial in TRIALS for log in ("result.json", "progress.csv")]
    return stored_state(fs, root), min(rows(path) for path in logs)


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    """``(filesystem, root)`` of an empty sweep folder, on local storage or in a bucket of a moto server."""
    drop_snapshots()  # nothing held from an earlier test
    if request.param == "local":
        return sweep_filesystem(str(tmp_path / "storage" / "sweep"))
    server = request.getfixturevalue("s3_server")
    return sweep_filesystem(server.uri("sweeps/sweep"))


def test_a_snapshot_reaches_the_storage_after_the_logs_uploaded_with_it(tmp_path, storage):
    fs, root = storage
    staging = tmp_path / "staging"
    for version in (1, 2):
        stage(staging, version)
        upload(staging, fs, root)
        assert stored(fs, root) == (None, version)  # held back: the upload after it may not have ended
    for version in (3, 4):
        stage(staging, version)
        upload(staging, fs, root)
        assert stored(fs, root) == (version - 2, version)  # two uploads behind the logs
    commit_snapshots()  # the run ended: Tune's last upload had ended
    assert stored(fs, root) == (4, 4)
    with fs.open_input_stream(f"{root}/{SEARCHER}") as stream:
        assert json.loads(stream.read()) == {"version": 4}
    again = pickle.loads(pickle.dumps(fs))  # as Ray hands it to the trial processes
    assert again.equals(fs) and stored(again, root) == (4, 4)


def test_a_snapshot_saved_while_its_upload_ran_waits_for_the_logs_of_the_upload_after(tmp_path, storage):
    """Tune saves its state on its period even while an upload runs, rewriting the staging file in place: an
    upload that copied the logs of snapshot 3 can carry state 4. The next upload may open the state before it
    copies any log (pyarrow's copy order is not fixed): state 4 must not reach the storage then."""
    fs, root = storage
    staging = tmp_path / "staging"
    for version in (1, 2, 3):
        stage(staging, version)
        if version == 3:  # the upload copied the logs, then the state Tune saved while it ran
            (staging / STATE).write_text(json.dumps({"version": 4}))
        upload(staging, fs, root)
    with fs.open_output_stream(f"{root}/{STATE}") as stream:  # the next upload, its state first
        stream.write(json.dumps({"version": 4}).encode())
    assert stored(fs, root) == (2, 3)  # before: state 4 beside logs of 3


def test_a_snapshot_read_while_tune_rewrote_it_never_reaches_the_storage(tmp_path, storage):
    """Tune rewrites its experiment state in place (the other snapshot files it replaces atomically): an upload
    that reads it during the rewrite carries a truncated file. It is dropped; the storage keeps whole states."""
    fs, root = storage
    staging = tmp_path / "staging"
    states = []
    for version in (1, 2, 3, 4):
        stage(staging, version)
        if version == 2:
            (staging / STATE).write_text('{"version": 2')
        upload(staging, fs, root)
        states.append(stored_state(fs, root))  # json.loads: a truncated state in the storage fails here
    assert states == [None, None, None, 1]  # upload 2's state held nothing: 1 waited for the second upload after 2
    commit_snapshots()
    assert stored(fs, root) == (4, 4)


def test_after_a_failed_upload_the_storage_keeps_a_snapshot_its_logs_are_whole_for(tmp_path):
    fs, root = sweep_filesystem(str(tmp_path / "storage"))
    drop_snapshots()
    staging = tmp_path / "staging"
    versions = []
    for version in range(1, 9):
        stage(staging, version)
        blocker = tmp_path / "storage" / TRIALS[-1] / "result.json"
        if version == 3:  # one trial's log cannot be replaced (a folder is in its place): uploads 3 and 4 fail
            blocker.unlink()
            blocker.mkdir()
        if version == 5:  # the storage is fixed; that log holds the rows of the last upload that reached it
            blocker.rmdir()
            blocker.write_text("1\n2\n")
        upload(staging, fs, root)  # (copy_files does not raise a failed close: the filesystem counts it)
        state, rows = stored(fs, root) if version not in (3, 4) else (stored_state(fs, root), 2)
        versions.append(state)
        assert state is None or state <= rows, (version, state, rows)
    assert not {3, 4} & set(versions), versions  # never a snapshot an upload that failed carried
    assert versions[-1] == 6, versions  # snapshots move on once uploads end whole again (two behind the logs)
    assert not [name for name in os.listdir(tmp_path / "storage" / TRIALS[-1]) if name.startswith(".tmp-")]


FAILED_WRITE = """
import os, resource, signal, sys
import pyarrow.fs
from trainables.sweep_storage import sweep_filesystem

folder = sys.argv[1]
fs, root = sweep_filesystem(folder)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit raises EFBIG instead of ending the process
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
stream = fs.open_output_stream(f"{root}/state.pt")
try:
    stream.write(b"x" * 100_000)
except OSError as error:
    print("failed:", error.errno)
print("left:", sorted(os.listdir(folder)))  # the stream is still open and referenced
os._exit(0)  # ends as a killed worker does: nothing collected, nothing closed
"""


def test_a_write_that_fails_removes_its_temporary_file_at_once(tmp_path):
    """A write into local storage that fails (here the file-size limit, EFBIG, as a full disk gives ENOSPC)
    removes its temporary file at once, not when the stream is closed or collected: a writer may drop the
    stream unclosed in a process that ends first (a trial worker that fails). The target keeps its contents."""
    folder = tmp_path / "storage"
    folder.mkdir()
    (folder / "state.pt").write_bytes(b"before")
    done = subprocess.run([sys.executable, "-c", FAILED_WRITE, str(folder)], cwd=REPO, capture_output=True, check=False,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"failed: {errno.EFBIG}" in done.stdout, done.stdout
    assert "left: ['state.pt']" in done.stdout, done.stdout
    assert sorted(os.listdir(folder)) == ["state.pt"] and (folder / "state.pt").read_bytes() == b"before"
