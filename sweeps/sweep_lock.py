"""The lock that lets one driver at a time run a sweep directory.

``SweepLock(exp_dir)`` holds the sweep's lock, ``<exp_dir>/groupsweep.lock``, while a driver runs the sweep, and
writes who holds it into that file (process id, host, start time, command line). A second ``groupsweep run`` of
the same sweep finds the lock taken and stops with one line naming the holder (``SweepLocked``), before it
starts Ray or writes anything.

On a local disk (and NFS: Linux maps ``flock`` to NFS locks) it is an exclusive ``fcntl.flock`` on the file. The
operating system releases an ``flock`` when its process ends, however it ends (SIGKILL, a crash, a reboot), so a
killed driver never leaves the lock stuck; the file itself stays (naming the last holder, which is read only
while another driver holds it) and is harmless. A filesystem whose ``flock`` fails (NFS without its lock daemon:
``ENOLCK``; some Lustre and FUSE mounts) runs the sweep without its lock, after one ``warning:`` line.

Object storage (``s3://``, ``gs://``...) has neither locks nor a create-if-absent that ``pyarrow.fs`` offers, so
there the lock is a lease (``ObjectLease``): the file names its holder and a token, and the holder renews it
every ``RENEW_SECONDS``. A lock renewed within ``LEASE_SECONDS`` is held, unless its holder is a process of this
host that no longer exists (a driver killed here is taken over at once; one killed on another host after the
lease lapses). A driver takes a free lock by writing its record, waits ``SETTLE_SECONDS`` and reads the record
back: of two drivers that wrote at once, only the one whose record stayed runs (the stores' reads follow their
writes). It removes the file when it ends. The hosts' clocks must agree to well within ``LEASE_SECONDS`` (NTP).
"""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import shlex
import socket
import sys
import threading
import time
import uuid

import psutil
import pyarrow

from trainables.errors import GroupsweepError
from trainables.trial_dir import join_location, location_filesystem

LOCK_FILE = "groupsweep.lock"
# Object storage (``ObjectLease``): a lock not renewed for this long is taken to be left by a driver that died;
# its holder renews it this often; a driver that wrote its record reads it back after this long.
LEASE_SECONDS = 120.0
RENEW_SECONDS = 30.0
SETTLE_SECONDS = 1.0


class SweepLocked(GroupsweepError):
    """Another driver is running the sweep."""


def holder_description(text: str) -> str:
    """The lock file's contents as ``pid N on HOST since TIME (COMMAND)``; ``another process`` when unreadable."""
    try:
        holder = json.loads(text)
        return f"pid {holder['pid']} on {holder['host']} since {holder['since']} ({holder['command']})"
    except (ValueError, TypeError, KeyError):
        return "another process"


def holder_record(**extra) -> dict:
    """What a lock file says of the process taking it: pid, host, start time, command line (and ``extra``)."""
    command = shlex.join(["groupsweep", *sys.argv[1:]]) if sys.argv else "groupsweep"
    since = datetime.datetime.now().isoformat(sep=" ", timespec="seconds")
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": since, "command": command, **extra}


class SweepLock:
    """An exclusive lock on a sweep directory (a local one created if needed; a URI's: ``ObjectLease``). Use it
    as a context manager, or ``acquire()`` / ``release()``."""

    def __init__(self, exp_dir: str):
        self.exp_dir = exp_dir
        self.path = os.path.join(exp_dir, LOCK_FILE)
        self.fd: int | None = None
        self.lease = ObjectLease(exp_dir) if "://" in exp_dir else None

    def acquire(self) -> SweepLock:
        """Take the lock, or raise ``SweepLocked`` naming the holder."""
        if self.lease is not None:
            self.lease.acquire()
            return self
        try:
            os.makedirs(self.exp_dir, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise GroupsweepError(f"cannot create the lock file {self.path}: {error.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = holder_description(os.pread(fd, 4096, 0).decode(errors="replace"))
            os.close(fd)
            raise SweepLocked(f"sweep {self.exp_dir} is already being run by {holder}; wait for that run to end "
                              "(or stop it), then run the command again") from None
        except OSError as error:  # the filesystem has no working flock: no lock, as on object storage
            os.close(fd)
            print(f"warning: the filesystem of {self.exp_dir} cannot lock files ({error.strerror}); the sweep runs "
                  "without its lock: do not launch it twice at once", file=sys.stderr, flush=True)
            return self
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder_record()).encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        """Clear the holder and release the lock (a local file stays; a URI's is removed)."""
        if self.lease is not None:
            self.lease.release()
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass  # a full or failing disk: the lock is released all the same
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> SweepLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class ObjectLease:
    """The lock of a sweep in object storage: a renewed lease on ``<exp_dir>/groupsweep.lock`` (module
    docstring). ``lease_s``, ``renew_s`` and ``settle_s`` default to ``LEASE_SECONDS``, ``RENEW_SECONDS`` and
    ``SETTLE_SECONDS``."""

    def __init__(self, exp_dir: str, lease_s: float = LEASE_SECONDS, renew_s: float = RENEW_SECONDS,
                 settle_s: float = SETTLE_SECONDS):
        self.exp_dir = exp_dir
        self.filesystem, self.path = location_filesystem(join_location(exp_dir, LOCK_FILE))
        self.lease_s, self.renew_s, self.settle_s = lease_s, renew_s, settle_s
        self.token = uuid.uuid4().hex
        self.record: dict | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self) -> None:
        """Take the lease, or raise ``SweepLocked`` naming the holder: one whose lease is current, or one that
        wrote its record at the same moment and kept it. Then renew it in a daemon thread until ``release``. A
        storage that fails is a one-line ``GroupsweepError``."""
        try:
            held = self.read()
            if held is not None and self.current(held):
                raise self.locked(held)
            self.record = holder_record(token=self.token, renewed=time.time())
            self.write()
            time.sleep(self.settle_s)
            held = self.read()
        except (OSError, pyarrow.ArrowException) as error:
            raise GroupsweepError(f"cannot take the lock of sweep {self.exp_dir} ({LOCK_FILE}): "
                                  f"{' '.join(str(error).split())}") from None
        if held is None or held.get("token") != self.token:
            self.record = None
            raise self.locked(held, "; it took the lock at the same moment as this run")
        self._renewer = threading.Thread(target=self._renew, name="groupsweep-lease", daemon=True)
        self._renewer.start()

    def release(self) -> None:
        """Stop renewing and remove the file if it still holds this lease; a storage that fails then is left to
        the lease's expiry."""
        if self.record is None:
            return
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            held = self.read()
            if held is not None and held.get("token") == self.token:
                self.filesystem.delete_file(self.path)
        except (OSError, pyarrow.ArrowException):
            pass
        self.record = None

    def current(self, held: dict) -> bool:
        """Whether the lease ``held`` (a lock file's record) is still held: renewed within ``lease_s``, and, when it
        names this host, by a process that still exists."""
        try:
            age = time.time() - float(held["renewed"])
            if held["host"] == socket.gethostname() and not psutil.pid_exists(int(held["pid"])):
                return False
        except (KeyError, TypeError, ValueError):  # a record this module did not write: not a lease
            return False
        return age < self.lease_s

    def locked(self, held: dict | None, why: str = "") -> SweepLocked:
        """The ``SweepLocked`` error naming the holder of ``held`` and when it renewed the lease."""
        holder = holder_description(json.dumps(held)) if held is not None else "another process"
        renewed = ""
        if held is not None and isinstance(held.get("renewed"), (int, float)):
            age = max(0.0, time.time() - held["renewed"])
            renewed = (f", lease renewed {age:.0f} s ago (a lease not renewed for {self.lease_s:.0f} s is taken to be "
                       f"left by a driver that died: if that driver is gone, run again in {self.lease_s - age:.0f} s)")
        return SweepLocked(f"sweep {self.exp_dir} is already being run by {holder}{renewed}{why}; wait for that run "
                           "to end (or stop it), then run the command again")

    def read(self) -> dict | None:
        """The lock file's record, or None when there is none (or it is not a JSON object)."""
        try:
            with self.filesystem.open_input_stream(self.path) as stream:
                held = json.loads(stream.read().decode(errors="replace"))
        except FileNotFoundError:
            return None
        except ValueError:  # not JSON (pyarrow's own errors are OSErrors and ArrowExceptions: raised)
            return None
        return held if isinstance(held, dict) else None

    def write(self) -> None:
        """Write this lease's record (one object written whole: object stores replace an object atomically)."""
        with self.filesystem.open_output_stream(self.path) as stream:
            stream.write(json.dumps(self.record).encode())

    def _renew(self) -> None:
        """Every ``renew_s``: renew the lease while it is still this run's; a failed write is tried again at the
        next turn, a lease another driver took after this one lapsed is left to it (one ``warning:`` line)."""
        while not self._stop.wait(self.renew_s):
            try:
                held = self.read()
                if held is not None and held.get("token") != self.token:
                    print(f"warning: the lock of sweep {self.exp_dir} was taken over by "
                          f"{holder_description(json.dumps(held))} after this run's lease lapsed; two drivers may be "
                          "running the sweep", file=sys.stderr, flush=True)
                    return
                self.record["renewed"] = time.time()
                self.write()
            except (OSError, pyarrow.ArrowException):
                continue
