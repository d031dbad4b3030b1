"""The lock that lets one driver at a time run a sweep directory.

``SweepLock(exp_dir)`` holds an exclusive ``fcntl.flock`` on ``<exp_dir>/groupsweep.lock`` while a driver
runs the sweep, and writes who holds it into the file (process id, host, start time, command line). A
second ``groupsweep run`` of the same sweep finds the lock taken and stops with one line naming the
holder (``SweepLocked``), before it starts Ray or writes anything. The operating system releases an
``flock`` when its process ends, however it ends (SIGKILL, a crash, a reboot), so a killed driver never
leaves the lock stuck; the file itself stays (naming the last holder, which is read only while another
driver holds the lock) and is harmless.

The lock works on a local disk and on NFS (Linux maps ``flock`` to NFS locks). Object storage
(``s3://``, ``gs://``...) has no lock, so there the lock is skipped: do not launch one sweep twice. Nor does
a filesystem whose ``flock`` fails (NFS without its lock daemon: ``ENOLCK``; some Lustre and FUSE mounts):
there the sweep runs without its lock, after one ``warning:`` line.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import shlex
import socket
import sys

from trainables.errors import GroupsweepError

LOCK_FILE = "groupsweep.lock"


class SweepLocked(GroupsweepError):
    """Another driver is running the sweep."""


def holder_description(text: str) -> str:
    """The lock file's contents as ``pid N on HOST since TIME (COMMAND)``; ``another process`` when unreadable."""
    try:
        holder = json.loads(text)
        return f"pid {holder['pid']} on {holder['host']} since {holder['since']} ({holder['command']})"
    except (ValueError, TypeError, KeyError):
        return "another process"


class SweepLock:
    """An exclusive lock on a local sweep directory (created if needed); a no-op for a URI. Use it as a
    context manager, or ``acquire()`` / ``release()``."""

    def __init__(self, exp_dir: str):
        self.exp_dir = exp_dir
        self.path = os.path.join(exp_dir, LOCK_FILE)
        self.fd: int | None = None

    def acquire(self) -> SweepLock:
        """Take the lock, or raise ``SweepLocked`` naming the holder."""
        if "://" in self.exp_dir:
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
        command = shlex.join(["groupsweep", *sys.argv[1:]]) if sys.argv else "groupsweep"
        since = datetime.datetime.now().isoformat(sep=" ", timespec="seconds")
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since, "command": command})
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        """Clear the holder and release the lock (the file stays)."""
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
