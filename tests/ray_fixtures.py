"""Shared Ray test helpers: a small sweep spec on embedded data and the ``groupsweep`` CLI as a subprocess.

Each ``groupsweep run`` here starts (or connects to) Ray in its own process, as users do; the test
process itself never calls ``ray.init``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TINY_DATA = {"size": 200, "val_size": 60, "test_size": 60}
# Per-group counts of the native Waterbirds folder that only the shared cluster's workers can find
# (``conftest.cluster_address``).
CLUSTER_WATERBIRDS_COUNTS = {"train": [30, 8, 8, 30], "val": [6, 6, 6, 6], "test": [6, 6, 6, 6]}


def tiny_spec(path: Path, *, methods, seeds=(1, 2), epochs: int = 2, resources=None, name: str = "it",
              max_concurrent: int | None = 1, data: dict = TINY_DATA) -> Path:
    """Write a sweep of toy-convnextv2-xs on a tiny synthetic-waterbirds (its options ``data``); returns the YAML
    path. One trial at a time by default: a tiny trial trains in under a second, and a second trial process
    would cost its imports (torch and timm, about 5 s of CPU) again."""
    source = {
        "name": name,
        "datasets": {"synthetic-waterbirds": {"options": data}},
        "models": ["toy-convnextv2-xs"],
        "methods": list(methods),
        "seeds": list(seeds),
        "hparams": {"lr": 1e-3, "batch_size": 64, "epochs": epochs, "eval_batch_size": 128},
        "resources": resources or {"cpu": 1},
        "max_failures": 1,
        "max_concurrent": max_concurrent,
    }
    path.write_text(yaml.safe_dump(source))
    return path


def cli_env() -> dict:
    """Environment of a CLI subprocess: this checkout importable, no telemetry, no Ray token auth, and Tune's
    experiment snapshots paced every second (``TUNE_GLOBAL_CHECKPOINT_S``; by default at least 10 s apart):
    the trials of a test sweep last seconds, and tests that kill a driver watch the storage folder, which
    changes at each snapshot."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", TUNE_GLOBAL_CHECKPOINT_S="1")
    env.pop("RAY_ADDRESS", None)
    return env


def cli_command(*args: str) -> list[str]:
    """The argv of ``groupsweep ARGS`` run with this interpreter."""
    return [sys.executable, "-m", "sweeps.cli", *args]


def run_cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``groupsweep ARGS`` to completion in the environment ``env`` (default ``cli_env()``), capturing its
    output."""
    return subprocess.run(cli_command(*args), cwd=REPO, env=env or cli_env(), capture_output=True, text=True,
                          timeout=timeout)


def run_here(capsys, *args: str) -> subprocess.CompletedProcess:
    """Run ``groupsweep ARGS`` in this process, its output captured by ``capsys``: for the commands that read a
    finished sweep (``plan``, ``status``, ``analyze``, ``plot``, ``spectral``), which start no Ray; a subprocess
    would cost a Python start-up and its imports (1-6 s of CPU) for the same code path."""
    from sweeps.cli import main

    capsys.readouterr()
    status = main(list(args))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), status, captured.out, captured.err)


def result_epochs(trial_dir: Path) -> list[int]:
    """The ``epoch`` of every row of a trial's result.json (empty when it has none yet)."""
    path = trial_dir / "result.json"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row["epoch"] for row in rows if "epoch" in row]


def trial_names(spec_path: Path) -> list[str]:
    """The names of the trials of the sweep spec at ``spec_path``, in the spec's order."""
    from sweeps.spec import load_spec

    return [trial.name for trial in load_spec(str(spec_path)).trials]


def prediction_times(trial_dir: Path) -> dict:
    """Modification time of each saved predictions file of a trial (empty when it has written none)."""
    folder = trial_dir / "groupsweep" / "predictions"
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} if folder.exists() else {}
