"""The sweep presets shipped with the package: one YAML spec per experiment of the paper, plus demos.

Each ``sweeps/presets/<name>.yaml`` is a spec in the format of ``sweeps.spec`` and is runnable by name
(``groupsweep run fig1-balancing``). ``demo-*`` presets mirror the paper's experiments on the embedded
benchmarks with tiny models, so they run on a CPU; the others need the real data and weights. This
module only knows the preset files (names and paths); ``sweeps.spec`` reads them.
"""

from __future__ import annotations

from pathlib import Path

from trainables.errors import choose

PRESET_DIR = Path(__file__).resolve().parent / "presets"


def preset_names() -> list[str]:
    """Names of the shipped presets, sorted."""
    return sorted(path.stem for path in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    """The YAML file of preset ``name``; a one-line ``GroupsweepError`` names the presets otherwise."""
    choose("preset", name, preset_names())
    return PRESET_DIR / f"{name}.yaml"
