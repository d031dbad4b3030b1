"""A guard that ends every process of a local Ray within a second of the death of the driver that started it.

Ray ties the processes a driver's ``ray.init`` starts (GCS, raylet, dashboard and log monitors) to the
driver (``PR_SET_PDEATHSIG``), and Ray's workers exit once the raylet is gone. Two of the raylet's own
children do not: after an unclean end of the raylet, the dashboard agent and the runtime-env agent try to
report it to the GCS, which died with it, and wait for that report for a minute. A driver killed with
SIGKILL can clean up nothing, so ``start_guard`` starts a small process beside it:

- it marks the driver's environment with a token (``GUARD_ENV``) that the processes the local Ray starts
  inherit (Ray's servers and workers, and whatever a trial starts); the raylet starts its two agents with
  an environment of its own, so the guard also remembers every descendant of a marked child of the driver
  (the agents are the raylet's children): twice a second while new ones appear, then less and less often
  (up to every 2 s) while none does;
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
# Seconds between checks that the driver runs, and the shortest and longest between scans for its Ray's processes.
ALIVE_CHECK_S = 0.5
SCAN_MIN_S = 0.5
SCAN_MAX_S = 2.0

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


def ray_descendants(driver_pid: int, token: str, marked: dict) -> dict:
    """``{pid: start time}`` of the children of ``driver_pid`` marked with ``token`` and of all their descendants,
    found in one pass over the machine's processes. ``marked`` (``{(pid, start time): bool}``) remembers which
    children carry the token, so that each child's environment is read once."""
    children: dict = {}  # parent pid -> its child processes, with their ppid and start time read
    for process in psutil.process_iter(["ppid", "create_time"]):
        children.setdefault(process.info["ppid"], []).append(process)
    found = {}
    for child in children.get(driver_pid, ()):
        key = (child.pid, child.info["create_time"])
        if key not in marked:
            try:
                marked[key] = child.pid != os.getpid() and child.environ().get(GUARD_ENV) == token
            except (psutil.Error, OSError):
                continue  # gone, or a zombie: asked again next time
        if not marked[key]:
            continue
        pending = [child]
        while pending:
            process = pending.pop()
            found[process.pid] = process.info["create_time"]
            pending.extend(children.get(process.pid, ()))
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
    """Return once the driver's pipe (this process's stdin) ends or the driver no longer runs (checked every
    ``ALIVE_CHECK_S``), with every process of its local Ray seen meanwhile (``ray_descendants``). The processes
    are looked for every ``SCAN_MIN_S`` until some are found and while new ones appear, at intervals doubling up
    to ``SCAN_MAX_S`` while none does: a scan reads every process of the machine (~10 ms for 75 processes here),
    and the processes it is for (the raylet's agents) start with the Ray."""
    stdin = sys.stdin.fileno()
    remembered, marked = {}, {}
    interval, next_scan = SCAN_MIN_S, 0.0
    while driver_alive(driver):
        if time.monotonic() >= next_scan:
            found = ray_descendants(driver.pid, token, marked)
            new = found.items() - remembered.items()
            remembered.update(found)
            interval = SCAN_MIN_S if new or not remembered else min(2 * interval, SCAN_MAX_S)
            next_scan = time.monotonic() + interval
        readable, _, _ = select.select([stdin], [], [], ALIVE_CHECK_S)
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
