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

A ``file://`` URI is a local folder, locked so. Object storage (``s3://``, ``gs://``...) has neither locks nor a
create-if-absent that ``pyarrow.fs`` offers, so there the lock is a lease (``ObjectLease``): the file names its
holder and a token, and the holder renews it every ``RENEW_SECONDS``. A lock renewed within ``LEASE_SECONDS`` is
held, unless its holder is a process of this host that no longer exists (a driver killed here is taken over at
once; one killed on another host after the lease lapses). A driver takes a free lock by writing its record,
waits ``SETTLE_SECONDS`` and reads the record back: of two drivers that wrote at once, only the one whose record
stayed runs (the stores' reads follow their writes). A rival whose write landed later than that (a write slower
than ``SETTLE_SECONDS``) is found at the next renewal: the driver whose record was replaced stops as Ctrl-C stops
it (Tune saves the sweep's state), within ``RENEW_SECONDS``; so does a driver that could not renew its lease for
``LEASE_SECONDS``. It removes the file when it ends. The hosts' clocks must agree to well within
``LEASE_SECONDS`` (NTP), and one host name must mean one process table (containers that share a host name but
not their process ids would take each other's leases at once).
"""

from __future__ import annotations

import datetime
import fcntl
import json
import math
import os
import shlex
import signal
import socket
import sys
import threading
import time
import uuid

import psutil
import pyarrow
import pyarrow.fs

from trainables.errors import GroupsweepError, single_line
from trainables.trial_dir import join_location, location_filesystem

LOCK_FILE = "groupsweep.lock"
# Object storage (``ObjectLease``): a lock not renewed for this long is taken to be left by a driver that died;
# its holder renews it this often; a driver that wrote its record reads it back after this long.
LEASE_SECONDS = 120.0
RENEW_SECONDS = 30.0
SETTLE_SECONDS = 1.0
# Reads of the lock file that are not JSON before it is taken to hold no lease (``ObjectLease.read``).
READ_ATTEMPTS = 4


class SweepLocked(GroupsweepError):
    """Another driver is running the sweep."""


def holder_description(holder: str | dict | None) -> str:
    """A lock file's record (its text, or the record read from it) as ``pid N on HOST since TIME (COMMAND)``;
    ``another process`` when it is unreadable or names no holder."""
    try:
        holder = json.loads(holder) if isinstance(holder, str) else holder
        return f"pid {holder['pid']} on {holder['host']} since {holder['since']} ({holder['command']})"
    except (ValueError, TypeError, KeyError):
        return "another process"


def holder_record(**extra) -> dict:
    """What a lock file says of the process taking it: pid, host, start time, command line (and ``extra``)."""
    command = shlex.join(["groupsweep", *sys.argv[1:]]) if sys.argv else "groupsweep"
    since = datetime.datetime.now().isoformat(sep=" ", timespec="seconds")
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": since, "command": command, **extra}


class SweepLock:
    """An exclusive lock on a sweep directory (a local one, or a ``file://`` URI's, created if needed and locked
    with ``flock``; another URI's: ``ObjectLease``). Use it as a context manager, or ``acquire()`` /
    ``release()``."""

    def __init__(self, exp_dir: str):
        self.exp_dir = exp_dir
        self.folder = exp_dir  # the local folder that holds the lock file, for a local sweep
        self.lease = None
        if "://" in exp_dir:
            filesystem, path = location_filesystem(exp_dir)
            if isinstance(filesystem, pyarrow.fs.LocalFileSystem):
                self.folder = path
            else:
                self.lease = ObjectLease(exp_dir)
        self.path = os.path.join(self.folder, LOCK_FILE)
        self.fd: int | None = None

    def acquire(self) -> SweepLock:
        """Take the lock, or raise ``SweepLocked`` naming the holder."""
        if self.lease is not None:
            self.lease.acquire()
            return self
        try:
            os.makedirs(self.folder, exist_ok=True)
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

    @property
    def lost(self) -> str | None:
        """Why the lock was lost while held (a lease another driver took, or one not renewed), else None."""
        return self.lease.lost if self.lease is not None else None

    def __enter__(self) -> SweepLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class ObjectLease:
    """The lock of a sweep in object storage: a renewed lease on ``<exp_dir>/groupsweep.lock`` (module
    docstring). ``lease_s``, ``renew_s`` and ``settle_s`` default to ``LEASE_SECONDS``, ``RENEW_SECONDS`` and
    ``SETTLE_SECONDS``. ``on_lost(message)`` is called (from the renewing thread) when the lease is lost while
    held: another driver's record replaced it, or no renewal succeeded for ``lease_s``; by default it stops
    this driver as Ctrl-C does (``stop_this_driver``)."""

    def __init__(self, exp_dir: str, lease_s: float = LEASE_SECONDS, renew_s: float = RENEW_SECONDS,
                 settle_s: float = SETTLE_SECONDS, on_lost=None):
        self.exp_dir = exp_dir
        self.filesystem, self.path = location_filesystem(join_location(exp_dir, LOCK_FILE))
        self.lease_s, self.renew_s, self.settle_s = lease_s, renew_s, settle_s
        self.on_lost = on_lost or stop_this_driver
        self.token = uuid.uuid4().hex
        self.record: dict | None = None
        self.lost: str | None = None  # why the lease was lost while held, once it was
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._sigint = None  # SIGINT's disposition before ``acquire`` gave it Python's handler, to restore

    def acquire(self) -> None:
        """Take the lease, or raise ``SweepLocked`` naming the holder: one whose lease is current, or one that
        wrote its record at the same moment and kept it. Then renew it in a daemon thread until ``release``. A
        storage that fails is a one-line ``GroupsweepError``; an acquisition that fails or is interrupted after
        writing its record removes it again."""
        try:
            held = self.read()
        except (OSError, pyarrow.ArrowException) as error:
            raise self.storage_error(error) from None
        if held is not None and self.current(held):
            raise self.locked(held)
        self.record = holder_record(token=self.token, renewed=time.time())
        self.lost = None
        try:
            self.write()
            time.sleep(self.settle_s)
            held = self.read()
            if held is None or held.get("token") != self.token:
                raise self.locked(held, "; it took the lock at the same moment as this run")
        except BaseException as error:
            self._remove_if_ours()
            self.record = None
            if isinstance(error, (OSError, pyarrow.ArrowException)):
                raise self.storage_error(error) from None
            raise
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew, name="groupsweep-lease", daemon=True)
        self._renewer.start()
        self._handle_sigint()

    def _handle_sigint(self) -> None:
        """Give SIGINT Python's handler while the lease is held, where it is ignored (a driver started in the
        background by a non-interactive shell), so that a lost lease can stop the driver (``stop_this_driver``);
        ``release`` restores it. Only the main thread can set a handler."""
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL):
            self._sigint = signal.signal(signal.SIGINT, signal.default_int_handler)

    def release(self) -> None:
        """Stop renewing and remove the file if it still holds this lease (not after the lease lapsed: another
        driver may hold the file by then); a storage that fails then is left to the lease's expiry."""
        if self.record is None:
            return
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        if self.lost is None and time.time() - self.record["renewed"] < self.lease_s:
            self._remove_if_ours()
        self.record = None
        if self._sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._sigint)
            self._sigint = None

    def current(self, held: dict) -> bool:
        """Whether the lease ``held`` (a lock file's record) is still held: renewed within ``lease_s``, and, when it
        names this host, by a process that still exists. A record this module did not write (fields missing or
        out of range) holds nothing."""
        try:
            renewed, pid = float(held["renewed"]), int(held["pid"])
            if not math.isfinite(renewed) or not 0 < pid < 2 ** 31:
                return False
            if held["host"] == socket.gethostname() and not psutil.pid_exists(pid):
                return False
        except (KeyError, TypeError, ValueError, OverflowError):
            return False
        return time.time() - renewed < self.lease_s

    def locked(self, held: dict | None, why: str = "") -> SweepLocked:
        """The ``SweepLocked`` error naming the holder of ``held`` and when it renewed the lease."""
        holder = holder_description(held)
        renewed = ""
        if held is not None and self.current(held):
            age = max(0.0, time.time() - float(held["renewed"]))
            renewed = (f", lease renewed {age:.0f} s ago (a lease not renewed for {self.lease_s:.0f} s is taken to be "
                       f"left by a driver that died: if that driver is gone, run again in {self.lease_s - age:.0f} s)")
        return SweepLocked(f"sweep {self.exp_dir} is already being run by {holder}{renewed}{why}; wait for that run "
                           "to end (or stop it), then run the command again")

    def storage_error(self, error: BaseException) -> GroupsweepError:
        """The one-line error of a storage that failed while the lease was being taken."""
        return GroupsweepError(f"cannot take the lock of sweep {self.exp_dir} ({LOCK_FILE}): "
                               f"{single_line(error)}")

    def read(self) -> dict | None:
        """The lock file's record, or None when there is none (or it is not a JSON object). A read that is not
        JSON is tried again (``READ_ATTEMPTS``): pyarrow reads an object by its size, then its bytes, so a read
        while the holder renews the lease can mix two records."""
        for attempt in range(READ_ATTEMPTS):
            try:
                with self.filesystem.open_input_stream(self.path) as stream:
                    held = json.loads(stream.read().decode(errors="replace"))
            except FileNotFoundError:
                return None
            except ValueError:  # not JSON (pyarrow's own errors are OSErrors and ArrowExceptions: raised)
                time.sleep(0.1 * (attempt + 1))
                continue
            return held if isinstance(held, dict) else None
        return None

    def write(self) -> None:
        """Write this lease's record (one object written whole: object stores replace an object atomically)."""
        with self.filesystem.open_output_stream(self.path) as stream:
            stream.write(json.dumps(self.record).encode())

    def _remove_if_ours(self) -> None:
        """Delete the lock file if it holds this lease's token; a storage that fails is left to the expiry."""
        try:
            held = self.read()
            if held is not None and held.get("token") == self.token:
                self.filesystem.delete_file(self.path)
        except (OSError, pyarrow.ArrowException):
            pass

    def _renew(self) -> None:
        """Every ``renew_s``: renew the lease while it is still this run's. A failed renewal is tried again at the
        next turn (one ``warning:`` line the first time); the lease is lost (``on_lost``) when another driver's
        record replaced it or no renewal succeeded for ``lease_s``."""
        warned = False
        while not self._stop.wait(self.renew_s):
            try:
                held = self.read()
                if held is not None and held.get("token") != self.token:
                    self._lose(f"the lock of sweep {self.exp_dir} was taken by {holder_description(held)}")
                    return
                renewed = time.time()
                self.write()
                self.record["renewed"] = renewed
            except (OSError, pyarrow.ArrowException) as error:
                if time.time() - self.record["renewed"] >= self.lease_s:
                    self._lose(f"the lease on sweep {self.exp_dir} lapsed: no renewal succeeded for "
                               f"{self.lease_s:.0f} s ({single_line(error)})")
                    return
                if not warned:
                    print(f"warning: cannot renew the lock of sweep {self.exp_dir} "
                          f"({single_line(error)}); trying again every {self.renew_s:.0f} s",
                          file=sys.stderr, flush=True)
                    warned = True

    def _lose(self, why: str) -> None:
        """Record why the lease was lost and call ``on_lost``."""
        self.lost = why
        self.on_lost(f"{why}; two drivers must not run one sweep: this run stops (as Ctrl-C stops it; what it "
                     "saved is kept), run the command again once the other run has ended")


def stop_this_driver(message: str) -> None:
    """``ObjectLease``'s default ``on_lost``: print ``message`` as an ``error:`` line and stop this driver as Ctrl-C
    does (SIGINT to the main thread, which interrupts a call it is blocked in: Tune then saves the sweep's state and
    returns)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
