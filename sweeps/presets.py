"""The sweep presets shipped with the package: one YAML spec per experiment of the paper, plus demos.

Each ``sweeps/presets/<name>.yaml`` is a spec in the format of ``sweeps.spec`` and is runnable by name
(``groupsweep run fig1-balancing``). ``demo-*`` presets mirror the paper's experiments on the embedded
benchmarks with tiny models, so they run on a CPU; the others need the real data and weights.
"""

from __future__ import annotations

from pathlib import Path

PRESET_DIR = Path(__file__).resolve().parent / "presets"


def preset_names() -> list[str]:
    """Names of the shipped presets, sorted."""
    return sorted(path.stem for path in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    """The YAML file of preset ``name``; a one-line ``GroupsweepError`` names the presets otherwise."""
    from trainables.errors import choose

    choose("preset", name, preset_names())
    return PRESET_DIR / f"{name}.yaml"


def preset_rows() -> list[dict]:
    """One row per preset: ``name``, ``trials`` (the expanded grid's size) and ``description``."""
    from sweeps.spec import build_spec, read_spec_source

    rows = []
    for name in preset_names():
        spec = build_spec(read_spec_source(name))
        rows.append({"name": name, "trials": len(spec.trials), "description": spec.description})
    return rows
