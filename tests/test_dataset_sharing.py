"""``sweeps.launcher.share_datasets``: one object-store copy per distinct dataset of a sweep, on a real local
Ray started by this module (the sweep integration tests run whole sweeps through the shared path)."""

import numpy as np
import pytest
import ray

from native_fixtures import write_civilcomments
from sweeps import launcher
from sweeps.spec import build_spec
from trainables.config_data import dataset_key
from trainables.data import reads_files
from trainables.data.base import GroupDataset, Split

TINY = {"size": 120, "val_size": 40, "test_size": 40}
CIVIL_COUNTS = {"train": (5, 2, 1, 3), "val": (2, 2, 1, 1), "test": (3, 2, 2, 1)}


def spec_with(datasets: dict, seeds=(1, 2), model: str = "toy-resnet-xs"):
    return build_spec({"name": "share", "datasets": datasets, "models": [model], "methods": ["none"],
                       "seeds": list(seeds), "resources": {"cpu": 1}})


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """A one-CPU local Ray for this module, stopped at its end."""
    ray.init(address="local", num_cpus=1, object_store_memory=80 * 2**20, include_dashboard=False,
             log_to_driver=False)
    yield
    ray.shutdown()


def test_each_distinct_dataset_is_put_once_and_every_trial_finds_it():
    spec = spec_with({"synthetic-waterbirds": {"options": TINY},
                      "colored-digits": {"options": {"size": 100, "val_size": 30, "test_size": 30}}})
    refs = launcher.share_datasets(spec)
    assert set(refs) == {dataset_key(trial.config) for trial in spec.trials}  # two datasets, four trials
    assert len({ref.hex() for ref in refs.values()}) == 2
    for trial in spec.trials:
        shared = ray.get(refs[dataset_key(trial.config)])
        assert shared.name == trial.config["dataset"]
        assert len(shared.splits["train"].y) == trial.config["dataset_options"]["size"]


def test_datasets_too_big_for_the_store_are_left_to_the_trials(monkeypatch):
    monkeypatch.setattr(launcher, "SHARED_DATASET_STORE_SHARE", 1e-6)  # 80 bytes of the store: far below it
    assert launcher.share_datasets(spec_with({"synthetic-waterbirds": {"options": TINY}})) == {}


def test_memory_mapped_datasets_are_not_copied_into_the_store(tmp_path, monkeypatch):
    images = np.zeros((4, 8, 8, 3), np.uint8)
    images.tofile(tmp_path / "x.u8")
    mapped = np.memmap(tmp_path / "x.u8", dtype=np.uint8, mode="r", shape=images.shape)
    split = Split(mapped, np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1]))
    dataset = GroupDataset("m", "image", {"train": split, "val": split, "test": split}, ["a", "b"], ["p", "q"],
                           image_size=8)
    assert launcher.is_memory_mapped(dataset)
    assert launcher.dataset_nbytes(dataset) == 3 * (images.nbytes + 2 * split.y.nbytes)  # fits the store
    monkeypatch.setattr("sweeps.launcher.load_config_dataset", lambda config: dataset)
    assert launcher.share_datasets(spec_with({"synthetic-waterbirds": {"options": TINY}})) == {}


def test_a_native_dataset_is_shared_only_when_the_driver_has_loaded_it(tmp_path):
    """A local run loads (and checks) every dataset first and shares the native ones it loaded; on a cluster
    the driver loads none (its node may hold no data: cluster.yaml's head does not), so a native dataset is
    left to the trials and never read here: this root does not even exist."""
    assert reads_files("civilcomments") and not reads_files("synthetic-civilcomments")
    missing = spec_with({"civilcomments": {"options": {"root": str(tmp_path / "nowhere")}}}, model="toy-bert-xs")
    assert launcher.share_datasets(missing) == {}

    spec = spec_with({"civilcomments": {"options": {"root": str(write_civilcomments(tmp_path, CIVIL_COUNTS))}},
                      "synthetic-civilcomments": {"options": TINY}}, model="toy-bert-xs")
    native = next(dataset_key(t.config) for t in spec.trials if t.config["dataset"] == "civilcomments")
    assert set(launcher.share_datasets(spec)) == {dataset_key(t.config) for t in spec.trials} - {native}
    refs = launcher.share_datasets(spec, launcher.load_datasets(spec))
    assert native in refs and len(ray.get(refs[native]).splits["train"].y) == sum(CIVIL_COUNTS["train"])
