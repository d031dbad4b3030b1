"""``TrainConfig.profile``: per-epoch throughput metrics of the finetuning loop."""

import pytest
import torch

from trainables.config import TrainConfig
from trainables.errors import GroupsweepError
from trainables.finetune import finetune, transformed_batches
from trainables.profiling import EpochProfiler


def test_profiler_counts_examples_and_times_the_waits_for_batches(monkeypatch):
    clock = [0.0]  # a fake clock: each batch takes 0.05 s to load and 0.15 s to train on
    monkeypatch.setattr("trainables.profiling.perf_counter", lambda: clock[0])

    def slow_loader():
        for size in (4, 4, 2):
            clock[0] += 0.05
            yield torch.zeros(size, 3), torch.zeros(size), None

    profiler = EpochProfiler(torch.device("cpu"))
    for _ in profiler.epoch(slow_loader()):
        clock[0] += 0.15
    metrics = profiler.metrics(clock[0])
    assert set(metrics) == {"perf/samples_per_s", "perf/data_wait_frac"}  # no GPU metrics on the CPU
    assert metrics["perf/data_wait_frac"] == pytest.approx(0.25)
    assert metrics["perf/samples_per_s"] == pytest.approx(10 / 0.6)


def test_the_wait_for_a_batch_includes_its_augmentation(monkeypatch):
    clock = [0.0]  # each batch takes 0.05 s to load, 0.10 s to augment (the batch transform) and 0.15 s to train on
    monkeypatch.setattr("trainables.profiling.perf_counter", lambda: clock[0])

    def loader():
        for size in (4, 4):
            clock[0] += 0.05
            yield torch.zeros(size, 3), torch.zeros(size), None

    def augment(inputs):
        clock[0] += 0.10
        return inputs + 1

    profiler = EpochProfiler(torch.device("cpu"))
    for inputs, _, _ in profiler.epoch(transformed_batches(loader(), augment)):
        assert bool((inputs == 1).all())  # augmented
        clock[0] += 0.15
    assert profiler.metrics(clock[0])["perf/data_wait_frac"] == pytest.approx(0.5)


def test_profiled_finetune_reports_sane_perf_metrics_and_unprofiled_none():
    values = dict(dataset="synthetic-waterbirds", dataset_options={"size": 160, "val_size": 40, "test_size": 40},
                  model="toy-resnet-xs", seed=1, epochs=2, lr=1e-3, batch_size=32, num_threads=1)
    profiled = finetune(TrainConfig.from_dict({**values, "profile": True}), cpu=True)
    plain = finetune(TrainConfig.from_dict(values), cpu=True)
    for metrics in profiled:
        assert 0 < metrics["perf/data_wait_frac"] < 1
        assert metrics["perf/samples_per_s"] == pytest.approx(160 / metrics["time/train_s"], rel=1e-6)
    assert not any(key.startswith("perf/") for key in plain[0])
    # Profiling observes the run without changing it.
    assert profiled[-1]["test/acc"] == plain[-1]["test/acc"]
    assert profiled[-1]["optim/loss"] == pytest.approx(plain[-1]["optim/loss"], rel=1e-6)


def test_profile_must_be_a_boolean():
    with pytest.raises(GroupsweepError, match="profile must be true or false"):
        TrainConfig.from_dict({"profile": "yes"})


@pytest.mark.slow
def test_run_with_profile_records_perf_metrics_per_epoch(tmp_path, cluster_address):
    import json

    from tests.ray_fixtures import run_cli, tiny_spec

    spec = tiny_spec(tmp_path / "spec.yaml", methods=["none"], seeds=[1], epochs=2, name="prof")
    done = run_cli("run", str(spec), "--storage", str(tmp_path / "results"), "--profile", "--address", cluster_address)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in next((tmp_path / "results" / "prof").glob("*/result.json")).open()]
    assert [row["epoch"] for row in rows] == [1, 2]
    for row in rows:
        assert row["perf/samples_per_s"] > 0 and 0 <= row["perf/data_wait_frac"] <= 1
