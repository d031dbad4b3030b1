"""Helpers shared by the benchmark scripts: repository import path, machine description, a local Ray, a sweep
of trivially short trials and the untimed warm-up sweep that runs before timed ones."""

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


WARM_UP_TRIALS = 2


def tiny_spec(count: int, name: str):
    """A sweep of ``count`` trivially short trials (one seed each): toy ResNet-XS, one epoch of 40 synthetic
    images, 20 validation and 20 test images, one CPU each."""
    from sweeps.spec import build_spec

    return build_spec({
        "name": name, "datasets": {"synthetic-waterbirds": {"options": {"size": 40, "val_size": 20, "test_size": 20}}},
        "models": ["toy-resnet-xs"], "methods": ["none"], "seeds": list(range(count)),
        "hparams": {"epochs": 1, "batch_size": 40, "eval_batch_size": 40, "lr": 1e-3}, "resources": {"cpu": 1},
        "max_failures": 0,
    })


def warm_up_sweep(storage: str) -> float:
    """Run an untimed sweep of ``WARM_UP_TRIALS`` tiny trials (``tiny_spec``, named ``warm-up``) in ``storage``
    and return the driver CPU seconds it took. The first sweep of a process pays one-time costs (imports, Tune's
    set-up, the first trial actors); a benchmark that times sweeps side by side runs this first, so that
    neither side pays them."""
    from sweeps.launcher import run_sweep

    started = time.process_time()
    run_sweep(tiny_spec(WARM_UP_TRIALS, "warm-up"), storage=storage)
    return time.process_time() - started
