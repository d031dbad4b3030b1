"""Pretrained weights from the local Hugging Face hub cache only: look up, never download.

Every lookup reads the cache directory (``huggingface_hub.constants.HF_HUB_CACHE``, i.e. ``HF_HUB_CACHE``
or ``HF_HOME/hub``, default ``~/.cache/huggingface/hub``) without touching the network, so a missing
model fails at once with a message saying how to get it, instead of hanging on a machine without
internet.
"""

from __future__ import annotations

from pathlib import Path

from trainables.errors import GroupsweepError
from trainables.models.base import ModelSpec


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


def missing_from_cache(spec: ModelSpec, what: str) -> GroupsweepError:
    """The one-line error for ``what`` (e.g. ``pretrained weights``) of ``spec`` absent from the cache."""
    return GroupsweepError(
        f"{what} of model {spec.name!r} (hub id {spec.hub_id}) are not in the local Hugging Face cache "
        f"{hub_cache_dir()}; on a machine with internet run `hf download {spec.hub_id}` and copy that cache "
        f"here (or point HF_HUB_CACHE at it), or pass model_path=DIR with a local checkpoint"
    )


def pretrained_dir(spec: ModelSpec) -> Path:
    """The cached snapshot directory with ``spec``'s pretrained weights; one-line error when absent."""
    if spec.toy:
        raise GroupsweepError(
            f"model {spec.name!r} is a toy model without pretrained weights; use pretrained=False "
            f"or pass model_path=DIR with a checkpoint of it"
        )
    snapshot = cached_snapshot(spec.hub_id, spec.hub_files)
    if snapshot is None:
        raise missing_from_cache(spec, "pretrained weights")
    return snapshot


def weights_available(spec: ModelSpec) -> str:
    """``yes``/``no``: whether ``spec``'s pretrained weights are in the local cache; ``n/a`` for toy models."""
    if spec.toy:
        return "n/a"
    return "yes" if cached_snapshot(spec.hub_id, spec.hub_files) is not None else "no"


def checkpoint_source(spec: ModelSpec, pretrained: bool, model_path: str | Path | None) -> Path | None:
    """Where ``build_model`` loads weights from: ``model_path`` when given (it implies pretrained
    weights), the cached snapshot when ``pretrained``, else None (random initialisation)."""
    if model_path is not None:
        path = Path(model_path)
        if not path.exists():
            raise GroupsweepError(f"model_path {str(path)!r} of model {spec.name!r} does not exist")
        return path
    return pretrained_dir(spec) if pretrained else None
