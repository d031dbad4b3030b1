"""Spectral analysis: eigenvalues of features with known spectra, rho(y) and Table 5 by hand, streaming
feature extraction from real checkpoints (image and text models), the ``groupsweep spectral`` command
on a finetuned sweep directory, and the ``demo-spectral`` preset end to end on Ray."""

import argparse
import io
import json
import os
import shutil
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from analysis.covariance import (
    CovarianceAccumulator,
    class_groups,
    minority_groups,
    spectral_norm_ratios,
    table5,
    table5_paper_view,
    top_eigenvalues,
)
from analysis.features import (
    accumulate_features,
    checkpoint_epochs,
    read_config,
    resolve_trials,
    trial_statistics,
)
from analysis.plots import DPI, figure_size
from results_fixtures import trial_config, write_trial
from sweeps import spectral_command
from trainables.builders import build_model_and_inputs
from trainables.config_data import load_config_dataset
from trainables.data import load_dataset
from trainables.errors import GroupsweepError
from trainables.finetune import finetune
from trainables.trial_dir import TrialDir

# Exactly constructed features: float64 round-off only.
EXACT_RTOL = 1e-9
# Float32 features computed in other batch sizes differ in the last bits; eigenvalues follow.
FLOAT32_RTOL = 1e-4


def features_with_spectrum(rng, n: int, eigenvalues, mean) -> np.ndarray:
    """n x D features whose population covariance (eq. 2) is exactly Q diag(eigenvalues) Q^T for a random
    orthogonal Q, with mean ``mean``: centred orthonormal columns W (W^T W = I, 1^T W = 0) give
    Z = mean + sqrt(n) W diag(sqrt(eigenvalues)) Q^T, whose covariance is Z_c^T Z_c / n as stated."""
    eigenvalues = np.asarray(eigenvalues, dtype=float)
    d = len(eigenvalues)
    raw = rng.normal(size=(n, d))
    w, _ = np.linalg.qr(raw - raw.mean(axis=0))
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return mean + np.sqrt(n) * (w * np.sqrt(eigenvalues)) @ q.T


SPECTRA = {0: [9.0, 4.0, 2.5, 1.0, 0.5, 0.25, 0.1, 0.05],
           1: [30.0, 3.0, 2.9, 2.8, 0.2, 0.1, 0.0, 0.0],   # rank 6
           2: [1.5, 1.4, 1.3, 1.2, 1.1, 1.0, 0.9, 0.8]}


def test_known_group_spectra_are_recovered_exactly_in_any_batching():
    rng = np.random.default_rng(0)
    sizes = {0: 300, 1: 57, 2: 40}
    parts = [features_with_spectrum(rng, n, SPECTRA[g], rng.normal(size=8) * 1e3) for g, n in sizes.items()]
    features = np.concatenate(parts)
    labels = np.repeat(list(sizes), list(sizes.values()))
    order = rng.permutation(len(labels))
    features, labels = features[order], labels[order]

    for k in (3, 8):
        values = top_eigenvalues(features, labels, k)
        assert sorted(values) == [0, 1, 2]
        for g, expected in SPECTRA.items():
            assert values[g].shape == (k,)
            assert np.all(np.diff(values[g]) <= 0)  # descending
            np.testing.assert_allclose(values[g], expected[:k], rtol=EXACT_RTOL, atol=EXACT_RTOL * 30)
    streamed = CovarianceAccumulator()
    for start in range(0, len(labels), 7):  # batches of 7 mixing every group
        streamed.update(features[start:start + 7], labels[start:start + 7])
    for g, expected in SPECTRA.items():
        np.testing.assert_allclose(streamed.top_eigenvalues(8)[g], expected, rtol=EXACT_RTOL, atol=EXACT_RTOL * 30)
        # the population covariance of equation (2): divide by |Omega_g|
        np.testing.assert_allclose(streamed.covariance(g), np.cov(features[labels == g].T, bias=True),
                                   rtol=1e-9, atol=1e-9 * 30)
    # A rank-deficient covariance gives non-negative eigenvalues; k above D gives all D of them.
    assert np.all(streamed.top_eigenvalues(8)[1] >= 0)
    assert len(top_eigenvalues(features, labels, 50)[0]) == 8


def test_gaussian_features_give_back_their_spectrum_within_sampling_error():
    """Gaussian features with covariance eigenvalues (8, 4, 2, 1): the sample eigenvalues of a
    well-separated spectrum have relative standard error sqrt(2 / n) (1% at n = 20000); the tolerance
    is five standard errors."""
    rng = np.random.default_rng(1)
    truth = np.array([8.0, 4.0, 2.0, 1.0])
    n = 20_000
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    features = rng.normal(size=(n, 4)) * np.sqrt(truth) @ q.T + 5.0
    values = top_eigenvalues(features, np.zeros(n, dtype=int), 4)[0]
    np.testing.assert_allclose(values, truth, rtol=5 * np.sqrt(2 / n))


def test_class_statistics_merged_from_groups_equal_direct_ones():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(500, 6)) * 3 + rng.normal(size=6) * 100
    groups = rng.integers(0, 4, size=500)
    accumulator = CovarianceAccumulator()
    accumulator.update(features, groups)
    classes = accumulator.merged({0: [0, 1], 1: [2, 3]})
    for y in (0, 1):
        rows = features[groups // 2 == y]
        assert classes.count(y) == len(rows)
        np.testing.assert_allclose(classes.mean(y), rows.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(classes.covariance(y), np.cov(rows.T, bias=True), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("features, labels, k, message", [
    (np.zeros((4, 3)), np.zeros(4, int), 0, "positive integer"),
    (np.zeros((4, 3)), np.zeros(3, int), 2, "one label per row"),
    (np.zeros(4), np.zeros(4, int), 2, "(N, D)"),
])
def test_bad_input_is_a_one_line_error(features, labels, k, message):
    with pytest.raises(GroupsweepError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        top_eigenvalues(features, labels, k)
    assert "\n" not in str(error.value)


def test_majority_and_minority_groups_come_from_training_counts():
    # Waterbirds' Table 2 training counts: groups 1 and 2 are the minority groups.
    waterbirds = class_groups([3498, 184, 56, 1057], n_spurious=2)
    assert [(c.majority, c.minority) for c in waterbirds] == [(0, 1), (3, 2)]
    assert minority_groups([3498, 184, 56, 1057], 2) == {1, 2}
    # Three attributes: every non-majority group is a minority, g_min is the smallest; an empty group
    # is neither; a class with one group has no g_min.
    groups = class_groups([50, 10, 5, 0, 7, 0], n_spurious=3)
    assert (groups[0].majority, groups[0].minority, groups[0].minorities) == (0, 2, (1, 2))
    assert (groups[1].majority, groups[1].minority, groups[1].minorities) == (4, None, ())
    # Ties: the lower group index is the majority, and g_min the lower of equally small minorities.
    assert class_groups([5, 5], 2)[0].majority == 0
    assert (class_groups([9, 3, 3], 3)[0].minority, class_groups([3, 9, 3], 3)[0].minority) == (1, 0)


def test_rho_and_table5_on_a_hand_built_case():
    counts = [100, 10, 20, 80, 60, 30]  # 3 classes x 2 attributes; majority groups 0, 3, 4
    lambda1 = {0: 2.0, 1: 5.0, 2: 3.0, 3: 1.0, 4: 4.0, 5: 2.0}
    acc = [0.95, 0.60, 0.50, 0.99, 0.90, 0.85]
    table = spectral_norm_ratios(lambda1, counts, 2, acc)
    assert table["majority_group"].tolist() == [0, 3, 4]
    assert table["minority_group"].tolist() == [1, 2, 5]
    np.testing.assert_allclose(table["rho"], [2.5, 3.0, 0.5])
    np.testing.assert_allclose(table["acc_gap"], [0.35, 0.49, 0.05])

    def trial(seed, lambdas, accuracies):
        rows = spectral_norm_ratios(lambdas, counts, 2, accuracies)
        return rows.assign(dataset="d", model="m", method_label="none", variant="", seed=seed,
                           trial_id=f"t{seed}", trial_name=f"n{seed}", epoch=3, examples="train")

    rho = pd.concat([
        trial(1, lambda1, acc),                                              # rho: class 1, gap: class 1
        trial(2, {**lambda1, 1: 8.0}, acc),                                  # rho: class 0, gap: class 1
        trial(3, lambda1, [np.nan] * 6),                                     # no test accuracies
        trial(4, lambda1, [1.0, 0.0, 1.0, 1.0, 1.0, 0.0]),                   # gaps tie at 1: class 0 taken
    ], ignore_index=True)
    result = table5(rho)
    assert result[["seed", "rho_class", "gap_class", "agree", "tie"]].values.tolist() == [
        [1, 1, 1, True, False], [2, 0, 1, False, False], [3, 1, -1, False, False], [4, 1, 0, False, True]]
    view = table5_paper_view(result)
    assert view.columns.tolist() == ["seed", "d / m / none"]
    assert view["d / m / none"].tolist() == ["(1, 1)", "(0, 1)", "(1, n/a)", "(1, 0)"]


def test_table5_keeps_search_configurations_apart_and_loses_no_trial():
    """In a search each configuration is a panel (Table 5's paper view: a column) of its own; trials that still
    share a panel and a seed (the same grid in two loaded sweeps) share the cell, neither dropped."""
    counts = [100, 10, 20, 80]

    def trial(seed, config_id, lambda1, sweep="a"):
        rows = spectral_norm_ratios(lambda1, counts, 2, [0.9, 0.5, 0.4, 0.95])  # gap: class 1
        return rows.assign(dataset="d", model="m", method_label="none", variant="", config_id=config_id, seed=seed,
                           trial_id=f"{sweep}/{config_id}-{seed}", trial_name=f"{config_id}-s{seed}", epoch=3,
                           examples="train")

    rho_0 = {0: 1.0, 1: 3.0, 2: 1.0, 3: 1.0}  # rho(0) = 3, rho(1) = 1: argmax class 0
    rho_1 = {0: 1.0, 1: 1.0, 2: 1.0, 3: 0.1}  # rho(0) = 1, rho(1) = 10: argmax class 1
    rho = pd.concat([trial(1, "h00", rho_0), trial(1, "h01", rho_1), trial(2, "h00", rho_1)], ignore_index=True)
    view = table5_paper_view(table5(rho))
    assert view.to_dict("list") == {"seed": [1, 2], "d / m / none / h00": ["(0, 1)", "(1, 1)"],
                                    "d / m / none / h01": ["(1, 1)", np.nan]}
    grid = pd.concat([trial(1, "", rho_0, sweep="a"), trial(1, "", rho_1, sweep="b")], ignore_index=True)
    assert table5_paper_view(table5(grid)).to_dict("list") == {"seed": [1], "d / m / none": ["(0, 1); (1, 1)"]}


def test_spectral_trials_named_twice_are_analysed_once_and_an_ambiguous_name_is_one_error():
    results = argparse.Namespace(run_dir="sweeps", trials=pd.DataFrame(
        {"trial_name": ["a-s1", "a-s2", "a-s2"]}, index=["t1", "x/t2", "y/t2"]))
    assert resolve_trials(results, ["a-s1", "t1", "x/t2", "y/t2", "x/t2"]) == ["t1", "x/t2", "y/t2"]
    with pytest.raises(GroupsweepError, match=r"^trial name 'a-s2' is in several sweeps of sweeps; give one of its "
                                              r"trial ids: x/t2, y/t2$"):
        resolve_trials(results, ["a-s2"])
    with pytest.raises(GroupsweepError, match=r"^unknown trial 'b' in sweeps; choose a trial id or name: a-s1, a-s2$"):
        resolve_trials(results, ["b"])


class FeatureProbe(torch.nn.Module):
    """A model whose ``features`` records weak references to every batch of features it returns."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = torch.nn.Linear(3, dim)
        self.returned = []
        self.most_alive = 0

    def features(self, inputs):
        self.most_alive = max(self.most_alive, sum(ref() is not None for ref in self.returned))
        out = self.linear(inputs)
        self.returned.append(weakref.ref(out))
        return out


def test_extraction_streams_without_keeping_features():
    """Memory is bounded by D x D per group: no batch of features outlives the next forward pass."""
    torch.manual_seed(0)
    n = 3000
    inputs = torch.randn(n, 3)
    groups = np.random.default_rng(3).integers(0, 4, size=n)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(inputs, torch.zeros(n, dtype=torch.long), torch.arange(n)), batch_size=50)
    probe = FeatureProbe(16)
    accumulator = accumulate_features(probe, loader, groups, torch.device("cpu"))
    assert len(probe.returned) == n // 50 and probe.most_alive <= 1
    with torch.no_grad():
        direct = probe.linear(inputs).double().numpy()
    expected = top_eigenvalues(direct, groups, 16)
    for g in range(4):
        assert accumulator.count(g) == int(np.sum(groups == g))
        np.testing.assert_allclose(accumulator.top_eigenvalues(16)[g], expected[g], rtol=1e-9, atol=1e-12)


# --- real checkpoints --------------------------------------------------------------------------------

IMAGE_DATA = {"size": 120, "val_size": 40, "test_size": 40}


def finetuned_trial(run_dir: Path, index: int, keep_epochs=None, **settings) -> Path:
    """Finetune for real (no Ray) and write the trial directory as the sweep does: Ray's files with the
    real per-epoch metrics, and ``checkpoint_NNNNNN/state.pt`` for the epochs in ``keep_epochs``
    (default: the last, as the sweep keeps)."""
    values = dict(dataset="synthetic-waterbirds", dataset_options=IMAGE_DATA, model="toy-convnextv2-xs",
                  method="none", seed=0, epochs=1, lr=1e-3, batch_size=32, num_threads=1, eval_batch_size=64)
    values.update(settings)
    config = trial_config(**values)
    states = {}

    def keep(result):
        buffer = io.BytesIO()
        torch.save(result.state(), buffer)
        states[result.epoch] = buffer.getvalue()

    history = finetune({k: v for k, v in config.items() if k != "trial_name"}, on_epoch=keep, cpu=True)
    path = write_trial(run_dir, index, config, history)
    for epoch in keep_epochs or [config["epochs"]]:
        folder = path / f"checkpoint_{epoch - 1:06d}"
        folder.mkdir()
        (folder / "state.pt").write_bytes(states[epoch])
    return path


def direct_top_eigenvalues(trial_dir: Path, epoch: int, k: int, positions=None) -> dict:
    """The reference: features of all training examples in one forward pass, then ``top_eigenvalues``."""
    config = read_config(trial_dir)
    dataset = load_config_dataset(config)
    model, model_inputs = build_model_and_inputs(config, dataset)
    trial = TrialDir(trial_dir)
    model.load_state_dict(trial.load_state(checkpoint_epochs(trial_dir)[epoch])["model"])
    model.eval()
    inputs = model_inputs.inputs["train"]
    if isinstance(inputs, dict):
        batch = dict(inputs)
    else:
        batch = model_inputs.eval_batch_transform(torch.from_numpy(np.array(inputs)))
    with torch.no_grad():
        features = model.features(batch).double().numpy()
    groups = dataset.groups("train")
    if positions is not None:
        features, groups = features[positions], groups[positions]
    return top_eigenvalues(features, groups, k)


@pytest.fixture(scope="module")
def image_sweep(tmp_path_factory) -> Path:
    """A sweep directory of real finetuned runs: none and upsampling, seeds 0 and 1, 2 epochs; the
    first trial keeps both checkpoints."""
    run_dir = tmp_path_factory.mktemp("sweep") / "spectral-test"
    index = 0
    for method in ("none", "upsampling"):
        for seed in (0, 1):
            finetuned_trial(run_dir, index, keep_epochs=[1, 2] if index == 0 else None, method=method, seed=seed,
                            epochs=2)
            index += 1
    return run_dir


def trial_path(run_dir: Path, method: str, seed: int) -> Path:
    return next(p for p in run_dir.iterdir() if f"method={method},seed={seed}_" in p.name)


def test_image_extraction_streams_the_unaugmented_training_features(image_sweep):
    trial_dir = trial_path(image_sweep, "none", 0)
    assert sorted(checkpoint_epochs(trial_dir)) == [1, 2]
    for epoch in (1, 2):
        statistics = trial_statistics(trial_dir, epoch=epoch, batch_size=13, device="cpu")
        assert statistics.epoch == epoch and statistics.n_examples == IMAGE_DATA["size"]
        expected = direct_top_eigenvalues(trial_dir, epoch, 10)
        got = statistics.accumulator.top_eigenvalues(10)
        for g in range(4):
            np.testing.assert_allclose(got[g], expected[g], rtol=FLOAT32_RTOL, atol=FLOAT32_RTOL * expected[g][0])
    assert trial_statistics(trial_dir, device="cpu").epoch == 2  # default: the last configured epoch
    np.testing.assert_array_equal(statistics.train_counts,
                                  load_dataset("synthetic-waterbirds", **IMAGE_DATA).group_counts("train"))


def test_only_kept_checkpoints_can_be_analysed(image_sweep):
    trial_dir = trial_path(image_sweep, "none", 1)
    with pytest.raises(GroupsweepError, match="no checkpoint of epoch 1; kept epochs: 2") as error:
        trial_statistics(trial_dir, epoch=1, device="cpu")
    assert "\n" not in str(error.value)


def test_features_are_refused_from_other_data_than_the_trial_trained_on(image_sweep, tmp_path):
    """The trial's ``labels.npz`` (val/test labels as trained) must match the dataset loaded here."""
    from trainables.finetune import split_labels
    from trainables.trial_dir import LABELS_FILE

    trial_dir = tmp_path / "trial"
    shutil.copytree(trial_path(image_sweep, "none", 1), trial_dir)
    labels = split_labels(load_dataset("synthetic-waterbirds", **IMAGE_DATA))
    TrialDir(str(trial_dir)).write_npz(LABELS_FILE, labels)
    assert trial_statistics(trial_dir, device="cpu").epoch == 2  # the same data: extracted
    labels["test_s"] = 1 - labels["test_s"]  # as if another data folder had been found here
    TrialDir(str(trial_dir)).write_npz(LABELS_FILE, labels)
    with pytest.raises(GroupsweepError, match=r"differs from the one trial trial trained on \(test split, s\)"):
        trial_statistics(trial_dir, device="cpu")


def test_subset_trained_on_is_the_plans_examples(tmp_path):
    trial_dir = finetuned_trial(tmp_path, 0, method="subsetting", seed=4)
    statistics = trial_statistics(trial_dir, examples="train_subset", device="cpu")
    from trainables.balancing import make_plan

    dataset = load_dataset("synthetic-waterbirds", **IMAGE_DATA)
    kept = np.unique(make_plan(dataset.splits["train"].y, dataset.groups("train"), "subsetting", None, 4).indices)
    assert statistics.n_examples == len(kept) < IMAGE_DATA["size"]
    expected = direct_top_eigenvalues(trial_dir, 1, 5, positions=kept)
    for g, values in statistics.accumulator.top_eigenvalues(5).items():
        assert statistics.accumulator.count(g) == int(np.sum(dataset.groups("train")[kept] == g))
        np.testing.assert_allclose(values, expected[g], rtol=FLOAT32_RTOL, atol=FLOAT32_RTOL * expected[g][0])


@pytest.mark.parametrize("method", ["d3m", "auto-d3m"])
def test_subset_of_a_d3m_trial_is_the_selection_saved_in_its_trial_directory(tmp_path, monkeypatch, method):
    """A data-selection trial trains on the examples D3M kept; ``train_subset`` analyses exactly those, as
    saved in the trial directory (no balancing plan exists for these methods, and nothing is re-scored)."""
    from trainables import d3m
    from trainables.plans import training_plan
    from trainables.trial_dir import CHECKPOINT_PREFIX, D3M_SCORES_FILE, PARAMS_FILE, STATE_FILE

    config = trial_config(dataset="synthetic-waterbirds", dataset_options=IMAGE_DATA, model="toy-convnextv2-xs",
                          method=method, seed=3, epochs=1, lr=1e-3, batch_size=32, num_threads=1,
                          eval_batch_size=64, d3m={"proj_dim": 32, "batch_size": 64, "last_layer": True})
    trial_dir = tmp_path / config["trial_name"]
    trial_dir.mkdir()
    (trial_dir / PARAMS_FILE).write_text(json.dumps(config))
    train_config = read_config(trial_dir)
    dataset = load_config_dataset(train_config)
    plan = training_plan(train_config, dataset, trial_dir=str(trial_dir), cpu=True)  # trains the base model
    states = []
    finetune(train_config, on_epoch=lambda result: states.append(result.state()), cpu=True, dataset=dataset,
             plan=plan)
    (trial_dir / f"{CHECKPOINT_PREFIX}000000").mkdir()
    torch.save(states[-1], trial_dir / f"{CHECKPOINT_PREFIX}000000" / STATE_FILE)

    def no_scoring(*args, **kwargs):
        raise AssertionError("the analysis must reuse the selection saved in the trial directory")

    monkeypatch.setattr(d3m, "base_states", no_scoring)
    kept = TrialDir(str(trial_dir)).read_npz(D3M_SCORES_FILE, ("kept",))["kept"]
    statistics = trial_statistics(trial_dir, examples="train_subset", device="cpu")
    assert statistics.n_examples == len(kept) == len(np.unique(plan.indices))
    assert IMAGE_DATA["size"] // 2 <= len(kept) <= IMAGE_DATA["size"]
    groups = dataset.groups("train")
    for g in range(4):
        assert statistics.accumulator.count(g) == int(np.sum(groups[kept] == g))
    # the same through a URI
    uri_statistics = trial_statistics(trial_dir.as_uri(), examples="train_subset", device="cpu")
    assert uri_statistics.n_examples == len(kept)
    # without the saved selection, the analysis refuses (it would select again: train and write here)
    (trial_dir / D3M_SCORES_FILE).unlink()
    with pytest.raises(GroupsweepError, match=f"the {method} trial has no saved selection"):
        trial_statistics(trial_dir, examples="train_subset", device="cpu")
    assert not (trial_dir / D3M_SCORES_FILE).exists()


def write_text_data(root: Path) -> None:
    """A custom text dataset: class words and attribute words, every group present in every split."""
    rng = np.random.default_rng(5)
    rows = []
    for split, counts in ((0, (30, 8, 6, 24)), (1, (5, 5, 5, 5)), (2, (5, 5, 5, 5))):
        for g, count in enumerate(counts):
            y, a = divmod(g, 2)
            for _ in range(count):
                words = rng.choice(["good", "fine", "nice"] if y else ["bad", "poor", "awful"], size=3).tolist()
                words += rng.choice(["sea", "lake"] if a else ["hill", "rock"], size=2).tolist()
                words += rng.choice(["the", "a", "it", "was", "very"], size=4).tolist()
                rows.append({"split": split, "y": y, "a": a, "text": " ".join(rng.permutation(words))})
    root.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)


def test_text_extraction_streams_bert_pooled_features(tmp_path):
    write_text_data(tmp_path / "data")
    trial_dir = finetuned_trial(tmp_path / "sweep", 0, dataset="custom", dataset_options={"max_length": 16},
                                data_root=str(tmp_path / "data"), model="toy-bert-xs", lr=1e-3)
    statistics = trial_statistics(trial_dir, batch_size=5, device="cpu")
    assert statistics.n_examples == 68 and statistics.accumulator.dim == 32
    expected = direct_top_eigenvalues(trial_dir, 1, 10)
    for g, values in statistics.accumulator.top_eigenvalues(10).items():
        np.testing.assert_allclose(values, expected[g], rtol=FLOAT32_RTOL, atol=FLOAT32_RTOL * expected[g][0])


# --- the command ----------------------------------------------------------------------------------

def run_command(argv: list) -> int:
    parser = argparse.ArgumentParser(prog="groupsweep")
    spectral_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["spectral", *argv])
    return args.func(args)


def test_spectral_command_writes_tables_and_figures(image_sweep, tmp_path, capsys):
    from analysis.results import load_results
    from analysis.selection import select

    out = tmp_path / "out"
    out.mkdir()
    for name in ("spectral_table5.csv", "spectral_rho.png"):  # an earlier run's files, each also linked elsewhere
        (out / name).write_text("earlier")
        os.link(out / name, tmp_path / name)
    assert run_command([str(image_sweep), "--criterion", "wga", "--top", "10", "--top", "50",
                        "--device", "cpu", "--out", str(out)]) == 0
    for name in ("spectral_table5.csv", "spectral_rho.png"):  # replaced by a new file, never written in place
        assert (tmp_path / name).read_text() == "earlier" and (out / name).read_bytes() != b"earlier"
    results = load_results(image_sweep)
    chosen = select(results, ["wga"], by_model=True).table["method"].iloc[0]

    eigenvalues = pd.read_csv(out / "spectral_eigenvalues.csv")
    assert set(eigenvalues["trial_name"]) == {trial_config("synthetic-waterbirds", "toy-convnextv2-xs", chosen,
                                                           seed=s)["trial_name"] for s in (0, 1)}
    assert set(eigenvalues["epoch"]) == {2}
    # 64-dimensional features: top 50 of each of 4 groups and 2 classes per seed.
    assert len(eigenvalues) == 2 * 6 * 50
    assert eigenvalues.groupby(["seed", "kind", "label"])["eigenvalue"].apply(lambda v: v.is_monotonic_decreasing).all()
    minority = eigenvalues[eigenvalues["kind"] == "group"].groupby("label")["minority"].first()
    assert minority.tolist() == [False, True, True, False]

    rho = pd.read_csv(out / "spectral_rho_table.csv")
    first = eigenvalues[eigenvalues["rank"] == 1].set_index(["seed", "kind", "label"])["eigenvalue"]
    for row in rho.itertuples():
        assert row.rho == pytest.approx(first[(row.seed, "group", row.minority_group)]
                                        / first[(row.seed, "group", row.majority_group)])
        reported = results.frame[(results.frame["trial_id"] == row.trial_id) & (results.frame["epoch"] == 2)]
        assert row.test_acc_minority == pytest.approx(reported[f"test/acc_group_{row.minority_group}"].iloc[0])
    table = pd.read_csv(out / "spectral_table5.csv")
    assert table["seed"].tolist() == [0, 1]
    assert (table["rho_class"] == [rho[rho.seed == s].sort_values("rho").iloc[-1]["class"] for s in (0, 1)]).all()
    markdown = (out / "spectral_table5.md").read_text()
    assert "synthetic-waterbirds / toy-convnextv2-xs" in markdown and "Table 5" in capsys.readouterr().out

    for stem in ("spectral_rho", "spectral_group_eigenvalues_top10", "spectral_group_eigenvalues_top50",
                 "spectral_class_eigenvalues_top10", "spectral_class_eigenvalues_top50"):
        for suffix in ("png", "pdf", "csv"):
            assert (out / f"{stem}.{suffix}").stat().st_size > 0, stem
        with Image.open(out / f"{stem}.png") as image:
            assert image.size == tuple(round(v * DPI) for v in figure_size(1))
    figure = pd.read_csv(out / "spectral_group_eigenvalues_top10.csv")
    mean = eigenvalues[(eigenvalues["kind"] == "group") & (eigenvalues["rank"] == 1) & (eigenvalues["label"] == 1)]
    assert figure[(figure["label"] == 1) & (figure["rank"] == 1)]["eigenvalue_mean"].iloc[0] == pytest.approx(
        mean["eigenvalue"].mean())
    assert len(figure) == 4 * 10


def test_spectral_command_on_named_trials(image_sweep, tmp_path):
    from analysis.results import load_results

    results = load_results(image_sweep)
    by_path = dict(zip(results.trials["path"], results.trials.index))
    trial_id = by_path[str(trial_path(image_sweep, "upsampling", 1))]
    name = read_config_name(trial_path(image_sweep, "none", 0))
    out = tmp_path / "named"
    assert run_command([str(image_sweep), "--trial", trial_id, "--trial", name, "--epoch", "2", "--device", "cpu",
                        "--out", str(out)]) == 0
    table = pd.read_csv(out / "spectral_table5.csv")
    assert sorted(table["trial_id"]) == sorted([trial_id, by_path[str(trial_path(image_sweep, "none", 0))]])


def read_config_name(trial_dir: Path) -> str:
    return json.loads((trial_dir / "params.json").read_text())["trial_name"]


@pytest.mark.parametrize("argv, message", [
    (["--trial", "nope"], "unknown trial 'nope'"),
    (["--top", "0"], "--top must be a positive integer, got 0"),
    (["--epoch", "7", "--trial", "synthetic-waterbirds_toy-convnextv2-xs_none_s1"], "kept epochs: 2"),
    (["--group-info", "labels"], "unknown group information 'labels'; choose one of: none, val, train[+]val"),
    (["--group-info", "none", "--trial", "synthetic-waterbirds_toy-convnextv2-xs_none_s1"],
     "--group-info restricts the methods a criterion chooses among"),
])
def test_spectral_command_bad_input(image_sweep, tmp_path, argv, message):
    with pytest.raises(GroupsweepError, match=message) as error:
        run_command([str(image_sweep), *argv, "--device", "cpu", "--out", str(tmp_path)])
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_demo_spectral_preset_end_to_end(tmp_path, capsys):
    """The demo-spectral preset, cut to one dataset, two seeds, two epochs and 200 images, run with
    ``groupsweep run``, which ends by writing the analysis; every epoch's checkpoint is kept."""
    import yaml

    from sweeps.cli import main
    from sweeps.spec import read_spec_source

    source = read_spec_source("demo-spectral")
    assert source["after"] == ["spectral --top 10 --top 50"] and source["keep_checkpoints"] == "all"
    source["datasets"] = {"synthetic-waterbirds": dict(source["datasets"]["synthetic-waterbirds"],
                                                       options={"size": 200, "val_size": 60, "test_size": 60})}
    source.update(seeds=[1, 2], models=["toy-convnextv2-xs"],
                  override={"epochs": 2, "num_threads": 1, "eval_batch_size": 100})
    spec_path = tmp_path / "demo-spectral.yaml"
    spec_path.write_text(yaml.safe_dump(source))
    storage = tmp_path / "storage"
    assert main(["run", str(spec_path), "--storage", str(storage), "--name", "demo"]) == 0
    printed = capsys.readouterr().out
    run_dir = storage / "demo"
    assert f"$ groupsweep spectral {run_dir} --top 10 --top 50" in printed
    out = run_dir / "groupsweep_analysis"
    table = pd.read_csv(out / "spectral_table5.csv")
    assert table["seed"].tolist() == [1, 2] and set(table["method_label"]) == {"mixture 2:1"}
    eigenvalues = pd.read_csv(out / "spectral_eigenvalues.csv")
    assert len(eigenvalues) == 2 * 6 * 50 and (eigenvalues["eigenvalue"] >= 0).all()
    for name in ("spectral_rho.png", "spectral_group_eigenvalues_top10.pdf", "spectral_group_eigenvalues_top50.png",
                 "spectral_class_eigenvalues_top50.png"):
        assert (out / name).exists(), name
    # keep_checkpoints: all -> an earlier epoch can be analysed on request
    trial_dir = next(path for path in run_dir.iterdir() if path.name.endswith("-s1"))
    assert sorted(checkpoint_epochs(trial_dir)) == [1, 2]
    epoch_out = tmp_path / "epoch1"
    assert run_command([str(run_dir), "--epoch", "1", "--device", "cpu", "--out", str(epoch_out)]) == 0
    assert set(pd.read_csv(epoch_out / "spectral_rho_table.csv")["epoch"]) == {1}


def test_spectral_on_a_device_torch_does_not_see_is_one_error_line(image_sweep, tmp_path):
    """Checked where the features would be extracted (on a cluster, a worker may have the GPU the driver lacks),
    before any: before, torch's error came as a traceback."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(GroupsweepError, match=rf"^--device 'cuda:{count}': torch sees {count} CUDA device\(s\) here; "
                                              "give cpu"):
        run_command([str(image_sweep), "--device", f"cuda:{count}", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
