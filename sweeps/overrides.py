"""``KEY=VALUE`` overrides from the command line, with values parsed as YAML scalars."""

from __future__ import annotations

from sweeps.spec import parse_yaml
from trainables.errors import GroupsweepError


def parse_overrides(items: list[str]) -> dict:
    """Turn ``["lr=1e-3", "dataset_options.size=500"]`` into ``{"lr": 0.001, "dataset_options": {"size": 500}}``.

    Values are YAML scalars read as a spec reads them (``sweeps.spec.SpecLoader``: numbers, booleans, null,
    strings, ``[a, b]`` lists); a dotted key sets a
    nested mapping. An item without ``=`` raises a one-line GroupsweepError.
    """
    result: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise GroupsweepError(f"override {item!r} is not KEY=VALUE")
        value = parse_yaml(raw, f"override {item!r}: the value") if raw else None  # 1e-3 a float, 1:30 a string
        target = result
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise GroupsweepError(f"override {item!r}: {parent!r} is set both as a value and as a mapping")
        target[leaf] = value
    return result
