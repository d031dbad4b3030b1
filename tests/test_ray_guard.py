"""The guard of a local Ray (``sweeps.ray_guard``) with real processes and no Ray: which processes it finds, and
that it ends them all when the driver that started it is killed (the end-to-end check with a real local Ray is
``tests/test_hardening.py``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

from ray_fixtures import REPO, cli_env
from sweeps import ray_guard

SLEEP = [sys.executable, "-c", "import time; time.sleep(600)"]
# A process that starts a child with an environment of its own (as the raylet starts its agents), prints the
# child's pid, and sleeps.
PARENT_OF_UNMARKED = [sys.executable, "-c",
                      "import subprocess, sys, time; child = subprocess.Popen(sys.argv[1:], env={}); "
                      "print(child.pid, flush=True); time.sleep(600)", *SLEEP]


def stop(processes) -> None:
    """SIGKILL the processes (``subprocess.Popen`` or pids) this test started that still run."""
    for process in processes:
        pid = process if isinstance(process, int) else process.pid
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if not isinstance(process, int):
            process.wait(timeout=10)


def test_the_descendants_of_the_marked_children_are_found_and_nothing_else(monkeypatch):
    token = "test-token"
    monkeypatch.setenv(ray_guard.GUARD_ENV, token)
    marked = subprocess.Popen(PARENT_OF_UNMARKED, stdout=subprocess.PIPE, text=True)
    monkeypatch.delenv(ray_guard.GUARD_ENV)
    unmarked = subprocess.Popen(SLEEP)
    grandchild = int(marked.stdout.readline())
    try:
        seen: dict = {}
        found = ray_guard.ray_descendants(os.getpid(), token, seen)
        assert found == {marked.pid: psutil.Process(marked.pid).create_time(),
                         grandchild: psutil.Process(grandchild).create_time()}
        # the children looked at, by pid and start time (this process may have others, none marked)
        assert seen[(marked.pid, found[marked.pid])] is True
        assert seen[(unmarked.pid, psutil.Process(unmarked.pid).create_time())] is False
        assert ray_guard.ray_descendants(os.getpid(), "another-token", {}) == {}
    finally:
        stop([grandchild, marked, unmarked])


def test_a_killed_driver_s_processes_end_with_it_marked_or_not():
    """A driver starts its guard, a marked child (the environment it starts processes with) and through it an
    unmarked grandchild (a raylet's agent); SIGKILL of the driver alone ends both within seconds."""
    driver_code = ("import subprocess, sys; from sweeps.ray_guard import start_guard; start_guard(); "
                   f"child = subprocess.Popen({PARENT_OF_UNMARKED!r}, stdout=subprocess.PIPE, text=True); "
                   "print(child.pid, child.stdout.readline().strip(), flush=True); child.wait()")
    driver = subprocess.Popen([sys.executable, "-c", driver_code], cwd=REPO, env=cli_env(), stdout=subprocess.PIPE,
                              text=True)
    pids = [int(pid) for pid in driver.stdout.readline().split()]
    try:
        assert len(pids) == 2 and all(psutil.pid_exists(pid) for pid in pids)
        time.sleep(ray_guard.SCAN_MAX_S + 3)  # the guard has scanned since the grandchild started
        driver.kill()
        driver.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(psutil.pid_exists(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in pids if psutil.pid_exists(pid)]
    finally:
        stop([*pids, driver])
