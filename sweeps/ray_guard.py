"""A guard that ends every process of a local Ray within a second of the death of the driver that started it.

Ray ties the processes a driver's ``ray.init`` starts (GCS, raylet, dashboard and log monitors) to the
driver (``PR_SET_PDEATHSIG``), and Ray's workers exit once the raylet is gone. Two of the raylet's own
children do not: after an unclean end of the raylet, the dashboard agent and the runtime-env agent try to
report it to the GCS, which died with it, and wait for that report for a minute. A driver killed with
SIGKILL can clean up nothing, so ``start_guard`` starts a small process beside it:

- it marks the driver's environment with a token (``GUARD_ENV``) that the processes the local Ray starts
  inherit (Ray's servers and workers, and whatever a trial starts); the raylet starts its two agents with
  an environment of its own, so the guard also remembers, twice a second, every descendant of a marked
  child of the driver (the agents are the raylet's children);
- the guard waits for the end of a pipe that only the driver holds open, which ends however the driver
  ends (exit, exception, SIGKILL), and checks twice a second that the driver still runs;
- it then sends SIGTERM to every process that carries the token or that it remembered (and that still
  runs: same process id and start time), SIGKILL a second later to those that remain, and exits.

After a clean exit Ray has stopped its processes already and the guard finds none. The guard runs this
file as a script (``python ray_guard.py TOKEN``), importing only the standard library and ``psutil``.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
import uuid

import psutil

GUARD_ENV = "GROUPSWEEP_RAY_GUARD"
# Seconds between SIGTERM and SIGKILL, and how long the guard goes on looking for processes.
TERM_GRACE_S = 1.0
SWEEP_S = 5.0

_started: list = []  # (guard process, token) of this process (its pipe must stay open while the process lives)


def start_guard() -> str:
    """Start this process's guard (once) and mark the environment; returns the token."""
    if not _started:
        token = uuid.uuid4().hex
        env = {key: value for key, value in os.environ.items() if key != GUARD_ENV}
        guard = subprocess.Popen([sys.executable, os.path.abspath(__file__), token], stdin=subprocess.PIPE,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                 start_new_session=True)
        _started.append((guard, token))
    token = _started[0][1]
    os.environ[GUARD_ENV] = token
    return token


def unmark_environment() -> None:
    """Stop marking the processes this one starts (its local Ray has stopped): a process started later (by a
    caller of the Python API) would otherwise be ended with this one. The guard stays for the next Ray."""
    os.environ.pop(GUARD_ENV, None)


def marked_processes(token: str) -> list:
    """The processes (``psutil.Process``) whose environment carries ``token``, this one excepted."""
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            if process.environ().get(GUARD_ENV) == token:
                found.append(process)
        except (psutil.Error, OSError):
            continue  # gone, a zombie, or not ours to read
    return found


def ray_descendants(driver: psutil.Process, token: str) -> dict:
    """``{pid: start time}`` of the driver's children marked with ``token`` and of all their descendants."""
    found = {}
    try:
        children = driver.children()
    except psutil.Error:
        return found
    for child in children:
        try:
            if child.pid == os.getpid() or child.environ().get(GUARD_ENV) != token:
                continue
            for process in [child, *child.children(recursive=True)]:
                found[process.pid] = process.create_time()
        except (psutil.Error, OSError):
            continue
    return found


def remembered_processes(remembered: dict) -> list:
    """The processes of ``remembered`` (``{pid: start time}``) that still run (pid not reused)."""
    alive = []
    for pid, started in remembered.items():
        try:
            process = psutil.Process(pid)
            if process.create_time() == started:
                alive.append(process)
        except psutil.Error:
            continue
    return alive


def end_processes(token: str, remembered: dict | None = None) -> None:
    """SIGTERM every process marked with ``token`` or ``remembered`` (``{pid: start time}``), then SIGKILL
    those left after ``TERM_GRACE_S``; repeated for ``SWEEP_S`` while any is found."""
    deadline = time.monotonic() + SWEEP_S
    while time.monotonic() < deadline:
        processes = {process.pid: process for process in marked_processes(token)}
        processes.update({process.pid: process for process in remembered_processes(remembered or {})})
        processes = [process for process in processes.values() if process.pid != os.getpid()]
        if not processes:
            return
        for process in processes:
            try:
                process.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(processes, timeout=TERM_GRACE_S)
        for process in alive:
            try:
                process.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=TERM_GRACE_S)


def driver_alive(driver: psutil.Process) -> bool:
    """Whether the driver process still runs (not ended, not a zombie, its pid not reused)."""
    try:
        return driver.is_running() and driver.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_for_driver_end(driver: psutil.Process, token: str) -> dict:
    """Return once the driver's pipe (this process's stdin) ends or the driver no longer runs, with every
    process of its local Ray seen meanwhile (``ray_descendants``)."""
    stdin = sys.stdin.fileno()
    remembered = {}
    while driver_alive(driver):
        remembered.update(ray_descendants(driver, token))
        readable, _, _ = select.select([stdin], [], [], 0.5)
        if readable and not os.read(stdin, 4096):
            break
    return remembered


def main(argv: list[str]) -> int:
    """The guard: wait until the driver (this process's parent) is gone, then end its Ray's processes."""
    token = argv[1]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C; the guard outlives it
    remembered = wait_for_driver_end(psutil.Process(os.getppid()), token)
    end_processes(token, remembered)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
