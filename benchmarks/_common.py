"""Helpers shared by the benchmark scripts: repository import path, machine description, a local Ray."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as `python benchmarks/x.py` from a fresh clone


def machine() -> str:
    """One line: CPU count, memory, GPU (if torch sees one) and the current 1-minute load average."""
    import torch

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()} {os.cpu_count()} CPUs, {memory:.0f} GiB, {gpu}; "
            f"load average {os.getloadavg()[0]:.2f} (1 min)")


def start_local_ray(num_cpus: int | None = None, object_store_bytes: int | None = None) -> float:
    """Start groupsweep's local Ray (``sweeps.launcher.start_ray``) and return its start-up time in seconds."""
    from sweeps import launcher

    launcher.set_env_defaults()
    if object_store_bytes is not None:
        launcher.LOCAL_OBJECT_STORE_BYTES = object_store_bytes
    started = time.perf_counter()
    launcher.start_ray(None, num_cpus)
    return time.perf_counter() - started
