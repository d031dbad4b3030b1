"""The filesystem Ray Tune writes a sweep through, and when a trial's old checkpoints may be deleted.

Tune's driver keeps the sweep's experiment-level files (the experiment state, which names each trial's
status and latest checkpoint, and the searcher's and callbacks' states: ``SNAPSHOT_PREFIXES``) and every
trial's logs (``result.json``, ``progress.csv``) in a local staging folder, and uploads the whole folder to
the storage now and then, one file after another in directory order (``pyarrow.fs.copy_files``). A driver
killed during an upload would leave an experiment state newer than some trials' logs: a trial the state
calls finished would keep a log short of its last epochs for good, and one resumed from the checkpoint the
state names would leave a gap in its log. So the sweep's storage goes through ``SweepStorageHandler``,
which holds each upload of a snapshot file back and writes it when Tune begins the second upload of that file
after it (``HELD_UPLOADS``), or when the run ends (``commit_snapshots``): the experiment state in the storage
is always one whose trial logs are there whole, two or three snapshots behind the driver's (a resumed trial
redoes the epochs since; results are identical on the CPU). The second, not the next: Tune saves its
experiment state on its period whether or not the upload before has ended, rewriting the staging file in
place, so an upload still running can carry a state newer than the logs it copied before it; the next upload
begins after that save and copies every log again. A state read while Tune rewrote it (not whole JSON) is not
held; the other snapshot files Tune replaces atomically.

On local storage every file is replaced atomically besides (``_AtomicOutput``): a write that fails (a full
disk) leaves the previous version of the file, never a truncated one.

Checkpoint retention (``sweeps.retention``) retires the checkpoint folders that fall out of a trial's kept
ones (``retire_checkpoint``); a retired folder is deleted only once the storage holds an experiment state
saved after it was retired (``count_snapshot``), which names a newer checkpoint, so a resumed trial never
looks for a deleted one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import uuid
from dataclasses import dataclass

import pyarrow.fs

from trainables.trial_dir import (
    CHECKPOINT_PREFIX,
    PROGRESS_FILE,
    RESULT_FILE,
    checkpoint_index,
    checkpoint_indexes,
    checkpoint_name,
    location_filesystem,
)

# The sweep's effective spec, saved in its folder by the launcher; the file Tune writes into the folder when an
# experiment starts (``tune_state_saved``).
SPEC_FILE = "groupsweep_spec.yaml"
TUNER_FILE = "tuner.pkl"
# Tune's experiment-level snapshot files (their ``CKPT_FILE_TMPL``: the controller, the searchers, the callbacks).
EXPERIMENT_STATE_PREFIX = "experiment_state-"
SNAPSHOT_PREFIXES = (EXPERIMENT_STATE_PREFIX, "basic-variant-state-", "search_gen_state-", "searcher-state-",
                     "callback-states-")
# Snapshot files uploaded but held back (``SweepStorageHandler``): path -> its ``_Held`` uploads, oldest first.
# ``_failed_writes`` counts the writes into a sweep storage that failed in this process; ``_opened_at`` maps each
# snapshot path to that count when Tune last began uploading it.
_held: dict[str, list[_Held]] = {}
_failed_writes = [0]
_opened_at: dict[str, int] = {}
_held_lock = threading.Lock()
# Checkpoint folders retired in this process (no longer among their trial's kept ones), each with its
# filesystem and the number of experiment states written into the storage when it was retired.
_retired: list[tuple[pyarrow.fs.FileSystem, str, int]] = []
_snapshots_written = [0]
_retired_lock = threading.Lock()
# Uploads of a snapshot file held back at once: when Tune begins another, the oldest is written (module docstring).
HELD_UPLOADS = 2
# Experiment states to be written after a folder's retirement before it is deleted (``retire_checkpoint``).
SNAPSHOTS_BEFORE_DELETE = HELD_UPLOADS + 2


def is_snapshot_file(path: str) -> bool:
    """Whether ``path`` names one of Tune's experiment-level snapshot files (``SNAPSHOT_PREFIXES``)."""
    return os.path.basename(path).startswith(SNAPSHOT_PREFIXES)


class _MemoryOutput:
    """A file written into memory; closing it hands its bytes to ``finish(data)``, once. Dropped unclosed (a
    writer that failed), it hands nothing. The base of the files this module's filesystem writes: they
    write to ``self.file``."""

    def __init__(self, finish=None):
        self.finish = finish
        self.file = io.BytesIO()

    @property
    def closed(self) -> bool:
        return self.file.closed

    def write(self, data) -> int:
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()

    def tell(self) -> int:
        return self.file.tell()

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.file.closed:
            data = self.file.getvalue()
            self.file.close()
            self.finish(data)


class _AtomicOutput(_MemoryOutput):
    """A file being written as ``<folder>/.tmp-<uuid>`` beside ``path``; closing it renames it over ``path``,
    unless a write, flush or close failed (a full disk) or the writer dropped it unclosed: then the
    temporary file is removed, ``path`` keeps its previous contents, and the failure is counted
    (``_count_failed_write``)."""

    def __init__(self, path: str):
        self.path = path
        self.temporary = f"{os.path.dirname(path)}/.tmp-{uuid.uuid4().hex}"
        self.file = open(self.temporary, "wb")  # noqa: SIM115 - closed by close()
        self.failed = False

    def _guard(self, method, *args):
        try:
            return method(*args)
        except BaseException:
            self._discard()
            raise

    def _discard(self) -> None:
        """Count the failure (once), close the file and remove the temporary file now: a writer whose write
        failed may drop this stream unclosed, in a process that ends before the stream is collected."""
        if not self.failed:
            self.failed = True
            _count_failed_write()
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.temporary)

    def write(self, data) -> int:
        return self._guard(self.file.write, data)

    def flush(self) -> None:
        self._guard(self.file.flush)

    def close(self) -> None:
        if self.file.closed:
            return
        self._guard(self.file.close)
        self._guard(os.replace, self.temporary, self.path)

    def __del__(self):
        file = getattr(self, "file", None)
        if file is not None and not file.closed:  # dropped unclosed: the writer gave up on it
            self._discard()


def _count_failed_write() -> None:
    """Count a write into a sweep storage that failed: the snapshots held back now are not written (``_Held``)."""
    with _held_lock:
        _failed_writes[0] += 1


@dataclass
class _Held:
    """A snapshot file's upload held back: its bytes, the handler to write them with, and the count of failed
    writes when Tune began the upload before it (``_opened_at``). It is written only if no write has failed
    since: then the upload that carried it, the one before and the one after ended whole."""

    handler: SweepStorageHandler
    data: bytes
    failures_before: int

    def commit(self, path: str) -> None:
        """Write ``path`` into the storage, unless a write failed since ``failures_before``; count a written
        experiment state (``count_snapshot``)."""
        if _failed_writes[0] != self.failures_before:
            return
        with self.handler.open_written_stream(path) as stream:
            stream.write(self.data)
        if os.path.basename(path).startswith(EXPERIMENT_STATE_PREFIX):
            count_snapshot()


def _held_snapshot(handler: SweepStorageHandler, path: str) -> _MemoryOutput:
    """An upload of the snapshot file ``path``, kept in memory; once closed whole, it is held back
    (``_Held``) until Tune has begun ``HELD_UPLOADS`` more uploads of ``path`` or the run ends
    (``commit_snapshots``); dropped unclosed (an upload that failed), or an experiment state that is not whole
    JSON (read while Tune rewrote it), it is forgotten. Opening it writes the oldest upload of ``path`` held
    back when ``HELD_UPLOADS`` are."""
    with _held_lock:
        held = _held.setdefault(path, [])
        due = held.pop(0) if len(held) >= HELD_UPLOADS else None
        failures_before = _opened_at.get(path, handler.failures_at_start)
        _opened_at[path] = _failed_writes[0]
    if due is not None:
        due.commit(path)

    def hold(data: bytes) -> None:
        if os.path.basename(path).startswith(EXPERIMENT_STATE_PREFIX) and not _is_json(data):
            return
        with _held_lock:
            _held.setdefault(path, []).append(_Held(handler, data, failures_before))

    return _MemoryOutput(hold)


def commit_snapshots() -> None:
    """Write every snapshot file held back (``SweepStorageHandler``) into the storage. Call it once Tune's
    last upload has ended (``sweeps.retention.SnapshotsAtEnd``, at the end of a run)."""
    with _held_lock:
        held = [(path, snapshot) for path, snapshots in _held.items() for snapshot in snapshots]
        _held.clear()
        _opened_at.clear()
    for path, snapshot in held:  # each path's oldest first: its newest is the one left in the storage
        snapshot.commit(path)


def _is_json(data: bytes) -> bool:
    """Whether ``data`` is one whole JSON document (a file read while it was rewritten in place is not)."""
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def snapshots_held() -> bool:
    """Whether any snapshot file is held back (``SweepStorageHandler``), not yet written nor dropped."""
    with _held_lock:
        return any(_held.values())


def drop_snapshots() -> None:
    """Forget the snapshot files held back without writing them (a run that failed: their upload may not
    have ended, and the storage keeps the snapshot before), and the checkpoint folders retired without deleting
    them (that snapshot may name them; ``prune_checkpoints`` deletes them at the end of the sweep's next run)."""
    with _held_lock:
        _held.clear()
        _opened_at.clear()
    with _retired_lock:
        _retired.clear()


class SweepStorageHandler(pyarrow.fs.FileSystemHandler):
    """``storage`` (a ``pyarrow.fs`` filesystem; local when None) as Ray Tune's ``storage_filesystem`` for a
    sweep: Tune's snapshot files are held back until their upload has ended (module docstring), and on
    local storage every file written is replaced atomically (``_AtomicOutput``). Picklable, so Ray can hand
    it to the trial processes with the rest of the sweep's storage settings (they hold nothing back: they
    write no snapshot file)."""

    def __init__(self, storage: pyarrow.fs.FileSystem | None = None):
        self.storage = storage if storage is not None else pyarrow.fs.LocalFileSystem()
        self.local = isinstance(self.storage, pyarrow.fs.LocalFileSystem)
        self.direct = None if self.local else _without_background_writes(self.storage)
        self.failures_at_start = _failed_writes[0]

    def __eq__(self, other):
        return isinstance(other, SweepStorageHandler) and other.storage.equals(self.storage)

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash((SweepStorageHandler, self.storage.type_name))

    def get_type_name(self) -> str:
        return f"groupsweep-{self.storage.type_name}"

    def normalize_path(self, path):
        return self.storage.normalize_path(path)

    def get_file_info(self, paths):
        return self.storage.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.storage.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.storage.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.storage.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.storage.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise OSError("refusing to delete the contents of the storage's root")

    def delete_file(self, path):
        self.storage.delete_file(path)

    def move(self, src, dest):
        self.storage.move(src, dest)

    def copy_file(self, src, dest):
        if self.local:
            with self.storage.open_input_stream(src) as source, self.open_written_stream(dest) as target:
                while chunk := source.read(1 << 20):
                    target.write(chunk)
        else:
            self.storage.copy_file(src, dest)

    def open_input_stream(self, path):
        return self.storage.open_input_stream(path)

    def open_input_file(self, path):
        return self.storage.open_input_file(path)

    def open_output_stream(self, path, metadata):
        if is_snapshot_file(path):
            return pyarrow.PythonFile(_held_snapshot(self, path), mode="w")
        return self.open_written_stream(path, metadata)

    def open_written_stream(self, path: str, metadata=None):
        """An output stream that writes ``path`` into the storage now: atomically on local storage; in object
        storage, a checkpoint's file streams there, any other file is put whole when closed
        (``_MemoryOutput``, ``_put``), so a failure is counted."""
        if self.local:
            return pyarrow.PythonFile(_AtomicOutput(path), mode="w")
        if any(part.startswith(CHECKPOINT_PREFIX) for part in path.split("/")):
            return self.storage.open_output_stream(path, metadata=metadata)
        return pyarrow.PythonFile(_MemoryOutput(lambda data: self._put(path, data, metadata)), mode="w")

    def _put(self, path: str, data: bytes, metadata) -> None:
        """Put ``data`` as the object ``path``; count a failure (``_count_failed_write``) and raise it."""
        try:
            with self.direct.open_output_stream(path, metadata=metadata) as stream:
                stream.write(data)
        except BaseException:
            _count_failed_write()
            raise

    def open_append_stream(self, path, metadata):
        return self.storage.open_append_stream(path, metadata=metadata)


def _without_background_writes(storage: pyarrow.fs.FileSystem) -> pyarrow.fs.FileSystem:
    """``storage`` again, writing in the calling thread: a stream closed in one of pyarrow's I/O threads
    (``copy_files``) must not wait for a background write queued behind it in the same pool."""
    rebuild, arguments = storage.__reduce__()
    if len(arguments) == 1 and isinstance(arguments[0], dict) and "background_writes" in arguments[0]:
        return rebuild({**arguments[0], "background_writes": False})
    return storage


def sweep_filesystem(location: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """``(filesystem, path)``: the filesystem Ray Tune writes the sweep storage ``location`` (a local path or a
    ``pyarrow.fs`` URI) through (``SweepStorageHandler``), and ``location``'s path inside it (what Tune's
    ``storage_path`` and ``Tuner.restore`` take beside ``storage_filesystem``)."""
    location = str(location)
    if "://" not in location:
        return pyarrow.fs.PyFileSystem(SweepStorageHandler()), os.path.abspath(os.path.expanduser(location))
    storage, path = location_filesystem(location)
    return pyarrow.fs.PyFileSystem(SweepStorageHandler(storage)), path


def _delete_folders(folders) -> None:
    for filesystem, path in folders:
        with contextlib.suppress(OSError):
            filesystem.delete_dir(path)


def retire_checkpoint(filesystem: pyarrow.fs.FileSystem, path: str) -> None:
    """Delete the checkpoint folder ``path`` (on ``filesystem``) once it can no longer be the one a sweep
    resumes from: after ``SNAPSHOTS_BEFORE_DELETE`` more experiment states have been written into the storage
    (``count_snapshot``), the last of which was saved after the folder was retired, so it names a newer
    checkpoint; or when the sweep ends (``prune_checkpoints``). Four, because a state reaches the storage
    ``HELD_UPLOADS`` uploads after the one that carried it (the two held when the folder retired may have been
    saved before), and the upload under way then may carry a state saved before too."""
    with _retired_lock:
        _retired.append((filesystem, path, _snapshots_written[0]))


def count_snapshot() -> None:
    """Count an experiment state written whole into the storage; delete the retired checkpoint folders it
    makes unreferenced (``retire_checkpoint``)."""
    with _retired_lock:
        _snapshots_written[0] += 1
        due = [(fs, path) for fs, path, at in _retired if _snapshots_written[0] >= at + SNAPSHOTS_BEFORE_DELETE]
        _retired[:] = [entry for entry in _retired if _snapshots_written[0] < entry[2] + SNAPSHOTS_BEFORE_DELETE]
    _delete_folders(due)


def upload_logs(local_dir: str, filesystem: pyarrow.fs.FileSystem, trial_path: str) -> None:
    """Copy a trial's Tune logs (``result.json``, ``progress.csv``) from the driver's local folder ``local_dir``
    to the trial's folder ``trial_path`` on ``filesystem``, whole (the folder is made when missing: a trial that
    failed before Tune's first upload has none yet); a log not written yet is skipped."""
    sources = [name for name in (RESULT_FILE, PROGRESS_FILE) if os.path.exists(os.path.join(local_dir, name))]
    if sources:
        filesystem.create_dir(trial_path, recursive=True)
    for name in sources:
        pyarrow.fs.copy_files(os.path.join(local_dir, name), f"{trial_path.rstrip('/')}/{name}",
                              destination_filesystem=filesystem)


def prune_checkpoints(latest: list[tuple[pyarrow.fs.FileSystem, str]], keep: int) -> None:
    """Given each trial's latest checkpoint ``(filesystem, path)`` (the one Tune resumes it from), delete the
    trial's checkpoint folders older than the ``keep`` newest up to it, the retired ones not yet deleted
    included (a driver killed before deleting them leaves them behind); a folder newer than the latest (a
    checkpoint written but never registered) stays, to be overwritten when the trial goes on. Call it once
    Tune's final experiment state is in the storage (``commit_snapshots``)."""
    with _retired_lock:
        _retired.clear()
    for filesystem, path in latest:
        folder, name = path.rstrip("/").rsplit("/", 1)
        newest = checkpoint_index(name)
        if newest is not None:
            _delete_folders((filesystem, f"{folder}/{checkpoint_name(index)}")
                            for index in checkpoint_indexes(filesystem, folder) if index <= newest - keep)
