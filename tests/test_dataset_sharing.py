"""``sweeps.launcher.share_datasets``: one object-store copy per distinct dataset of a sweep.

Ray itself is replaced by a recorder here (the sharing decisions are plain Python); the sweep
integration tests run real sweeps through the shared path.
"""

import numpy as np
import pytest
import ray

from sweeps import launcher
from sweeps.spec import build_spec
from trainables.config_data import dataset_key
from trainables.data.base import GroupDataset, Split

TINY = {"size": 120, "val_size": 40, "test_size": 40}


def spec_with(datasets: dict, seeds=(1, 2)):
    return build_spec({"name": "share", "datasets": datasets, "models": ["toy-resnet-xs"], "methods": ["none"],
                       "seeds": list(seeds), "resources": {"cpu": 1}})


@pytest.fixture
def fake_ray(monkeypatch):
    """ray.put returns a token naming the put number; the store holds ``capacity`` bytes."""
    puts = []

    def put(value):
        puts.append(value)
        return f"ref{len(puts)}"

    state = {"capacity": 10 * 2**20}
    monkeypatch.setattr(ray, "put", put)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"object_store_memory": state["capacity"]})
    return puts, state


def test_each_distinct_dataset_is_put_once_and_every_trial_finds_it(fake_ray):
    puts, _ = fake_ray
    spec = spec_with({"synthetic-waterbirds": {"options": TINY},
                      "colored-digits": {"options": {"size": 100, "val_size": 30, "test_size": 30}}})
    refs = launcher.share_datasets(spec)
    assert len(puts) == 2 and sorted(p.name for p in puts) == ["colored-digits", "synthetic-waterbirds"]
    assert set(refs) == {dataset_key(trial.config) for trial in spec.trials}
    for trial in spec.trials:
        shared = puts[int(refs[dataset_key(trial.config)][3:]) - 1]
        assert shared.name == trial.config["dataset"]
        assert len(shared.splits["train"].y) == trial.config["dataset_options"]["size"]


def test_datasets_too_big_for_the_store_are_left_to_the_trials(fake_ray):
    puts, state = fake_ray
    state["capacity"] = 1000  # far below the dataset
    assert launcher.share_datasets(spec_with({"synthetic-waterbirds": {"options": TINY}})) == {}
    assert puts == []


def test_memory_mapped_datasets_are_not_copied_into_the_store(tmp_path, fake_ray, monkeypatch):
    images = np.zeros((4, 8, 8, 3), np.uint8)
    images.tofile(tmp_path / "x.u8")
    mapped = np.memmap(tmp_path / "x.u8", dtype=np.uint8, mode="r", shape=images.shape)
    split = Split(mapped, np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1]))
    dataset = GroupDataset("m", "image", {"train": split, "val": split, "test": split}, ["a", "b"], ["p", "q"],
                           image_size=8)
    assert launcher.is_memory_mapped(dataset)
    assert launcher.dataset_nbytes(dataset) == 3 * (images.nbytes + 2 * split.y.nbytes)  # fits the store
    monkeypatch.setattr("sweeps.launcher.load_config_dataset", lambda config: dataset)
    puts, _ = fake_ray
    assert launcher.share_datasets(spec_with({"synthetic-waterbirds": {"options": TINY}})) == {}
    assert puts == []
