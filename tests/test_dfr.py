"""DFR (trainables.dfr): balanced subsets, the regression against scikit-learn called directly, the folded
last layer, and a DFR trial that takes the sweep's none trial as its base and reports like any trial."""

import copy
import json

import numpy as np
import pytest
import torch
from ray.tune import Checkpoint
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler

from trainables import base_model
from trainables.builders import build_model_and_inputs
from trainables.config import DFR_C_GRID, TrainConfig
from trainables.config_data import load_config_dataset
from trainables.dfr import (LastLayer, balanced_subset, fit_last_layer, fit_regression, l1_logistic_regression,
                            predict, run_dfr)
from trainables.errors import GroupsweepError
from trainables.finetune import finetune
from trainables.plans import training_plan
from trainables.trainable import EpochReporter, run_finetune
from trainables.trial_dir import DFR_FILE, LABELS_FILE, TrialDir, predictions_file

SMALL = {"size": 160, "val_size": 80, "test_size": 60}


def trial_config(method: str, **overrides) -> TrainConfig:
    values = dict(dataset="synthetic-waterbirds", dataset_options=SMALL, model="toy-convnextv2-xs", method=method,
                  seed=2, epochs=1, lr=1e-3, batch_size=32, num_threads=1, eval_batch_size=80, dfr_ensemble=3)
    values.update(overrides)
    return TrainConfig.from_dict(values)


# --- balanced subsets ------------------------------------------------------------------------------

def test_balanced_subset_keeps_the_smallest_groups_count_of_every_present_group():
    groups = np.array([0] * 5 + [1] * 2 + [3] * 3 + [0] * 4)  # group 2 absent
    subset = balanced_subset(groups, np.random.default_rng(7))
    assert np.array_equal(np.bincount(groups[subset], minlength=4), [2, 2, 0, 2])
    assert np.array_equal(subset, np.sort(subset)) and len(np.unique(subset)) == 6
    assert np.array_equal(subset, balanced_subset(groups, np.random.default_rng(7)))  # deterministic
    draws = {tuple(balanced_subset(groups, np.random.default_rng(seed))) for seed in range(10)}
    assert len(draws) > 1  # and random
    with pytest.raises(GroupsweepError, match="no example"):
        balanced_subset([], np.random.default_rng(0))


# --- the regression, against scikit-learn called directly ---------------------------------------

def synthetic_features(seed=0, n_classes=2):
    """Features of train / val / test whose first coordinate carries the class and second the spurious
    attribute, with groups y * 2 + s (minority groups small in train)."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", 300), ("val", 160), ("test", 100)):
        y = rng.integers(0, n_classes, n)
        s = np.where(rng.random(n) < (0.9 if split == "train" else 0.5), y % 2, 1 - y % 2)
        x = np.column_stack([y + rng.normal(0, 1.0, n), s + rng.normal(0, 0.3, n), rng.normal(0, 1, (n, 4))])
        out[split] = (x.astype(np.float32), y, y * 2 + s)
    return out


def sklearn_model(c, seed, n_classes):
    """scikit-learn's L1 logistic regression (liblinear), one-vs-rest for more than two classes."""
    model = l1_logistic_regression(c, seed)
    assert isinstance(model, LogisticRegression) and model.solver == "liblinear" and model.C == c
    return model if n_classes == 2 else OneVsRestClassifier(model)


def sklearn_dfr(data, variant, c_grid, n_models, seed, n_classes):
    """DFR written out with scikit-learn calls, drawing the same subsets (the authors' steps); returns C,
    the grid's worst-group accuracies, the averaged model (coefficients set as the authors do) and the scaler."""
    features = {split: x for split, (x, _, _) in data.items()}
    y = {split: v for split, (_, v, _) in data.items()}
    g = {split: v for split, (_, _, v) in data.items()}
    if variant == "val_tr":
        order = np.random.default_rng([seed, 0]).permutation(len(y["val"]))
        held_out, half = order[:len(order) // 2], order[len(order) // 2:]
        subset = half[balanced_subset(g["val"][half], np.random.default_rng([seed, 1]))]
        scaler = StandardScaler().fit(features["val"][subset])
        fit_x, fit_y = features["val"][subset], y["val"][subset]
        score_x, score_y, score_g = features["val"][held_out], y["val"][held_out], g["val"][held_out]
    else:
        subset = balanced_subset(g["train"], np.random.default_rng([seed, 1]))
        scaler = StandardScaler().fit(features["train"])
        fit_x, fit_y = features["train"][subset], y["train"][subset]
        score_x, score_y, score_g = features["val"], y["val"], g["val"]
    worst = []
    for c in c_grid:
        model = sklearn_model(c, seed, n_classes).fit(scaler.transform(fit_x), fit_y)
        predicted = model.predict(scaler.transform(score_x))
        worst.append(min((predicted == score_y)[score_g == group].mean() for group in np.unique(score_g)))
    c = c_grid[int(np.argmax(worst))]
    scaler = StandardScaler().fit(features["train"])
    split = "val" if variant == "val_tr" else "train"
    members = []
    for member in range(n_models):
        subset = balanced_subset(g[split], np.random.default_rng([seed, 2, member]))
        members.append(sklearn_model(c, seed, n_classes).fit(scaler.transform(features[split][subset]),
                                                              y[split][subset]))
    coef = np.mean([coefficients(m)[0] for m in members], axis=0)
    intercept = np.mean([coefficients(m)[1] for m in members], axis=0)
    model = members[-1]
    for k, estimator in enumerate([model] if n_classes == 2 else model.estimators_):
        estimator.coef_, estimator.intercept_ = coef[k:k + 1], intercept[k:k + 1]  # averaged, as the authors do
    return c, worst, model, scaler


def coefficients(model):
    """``(coef, intercept)`` of a fitted regression, one row per one-vs-rest estimator."""
    if isinstance(model, LogisticRegression):
        return model.coef_, model.intercept_
    return (np.vstack([m.coef_ for m in model.estimators_]), np.concatenate([m.intercept_ for m in model.estimators_]))


def test_the_regression_is_l1_penalised_whichever_way_scikit_learn_spells_it():
    """DFR's regression is L1 (sparse): at a strong penalty, uninformative features get exactly zero weight,
    which an L2 regression (scikit-learn's default penalty) never gives."""
    x, y, _ = synthetic_features()["train"]
    x = StandardScaler().fit_transform(x)
    l1 = l1_logistic_regression(0.05, 0).fit(x, y)
    params = l1.get_params()
    assert params.get("l1_ratio") == 1.0 or params.get("penalty") == "l1"
    assert (l1.coef_ == 0).sum() >= 2 and l1.coef_[0, 0] != 0  # the label feature kept, noise features cut
    l2 = LogisticRegression(C=0.05, solver="liblinear", random_state=0).fit(x, y)
    assert (l2.coef_ == 0).sum() == 0


@pytest.mark.parametrize("variant", ["val_tr", "tr_tr"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_last_layer_is_scikit_learns_regression_and_predicts_as_it_does(variant, n_classes):
    data = synthetic_features(n_classes=n_classes)
    features = {split: x for split, (x, _, _) in data.items()}
    y = {split: v for split, (_, v, _) in data.items()}
    groups = {split: v for split, (_, _, v) in data.items()}
    grid = [1.0, 0.1, 0.01]
    layer = fit_last_layer(features, y, groups, variant, grid, 4, seed=5)
    c, worst, reference, scaler = sklearn_dfr(data, variant, grid, 4, 5, n_classes)
    assert layer.c == c and np.array_equal(layer.c_scores, worst)
    coef, intercept = coefficients(reference)
    assert np.array_equal(layer.coef, coef) and np.array_equal(layer.intercept, intercept)
    assert np.array_equal(layer.mean, scaler.mean_) and np.array_equal(layer.scale, scaler.scale_)
    weight, bias = layer.linear(n_classes)
    assert weight.shape == (n_classes, 6)
    logits = features["test"].astype(np.float64) @ weight.T + bias
    assert np.array_equal(logits.argmax(axis=1), reference.predict(scaler.transform(features["test"])))
    again = fit_last_layer(features, y, groups, variant, grid, 4, seed=5)
    assert np.array_equal(again.coef, layer.coef)  # deterministic
    other = fit_last_layer(features, y, groups, variant, grid, 4, seed=6)
    assert not np.array_equal(other.coef, layer.coef)


def test_binary_layer_is_zero_then_the_decision():
    layer = LastLayer(coef=np.array([[2.0, -1.0]]), intercept=np.array([0.5]), mean=np.array([1.0, 0.0]),
                      scale=np.array([2.0, 1.0]), c=1.0, c_scores=np.array([1.0]), n_retrain=4, classes=np.arange(2))
    weight, bias = layer.linear(2)
    x = np.array([3.0, 1.0])  # standardised (1, 1): decision 2 - 1 + 0.5
    assert np.allclose(weight @ x + bias, [0.0, 1.5])
    with pytest.raises(GroupsweepError, match=r"holds the classes \[0, 1\] of 3; every class needs examples"):
        layer.linear(3)


@pytest.mark.parametrize("present", [(0, 2), (0, 2, 3)])
def test_a_regression_on_some_of_the_classes_predicts_their_ids(present):
    """Tuning data may hold only some classes of a dataset (a small class missing from the val half): C is then
    scored on the class ids the regression was fitted on, never on its row numbers."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.asarray(present), 40)
    x = np.eye(4)[y] * 3 + rng.normal(0, 0.1, (len(y), 4))  # each class on its own axis: separable
    coef, intercept, classes = fit_regression(x, y, 1.0, seed=0)
    assert classes.tolist() == list(present)
    assert np.array_equal(predict(x, coef, intercept, classes), y)


def test_config_validates_dfr_settings():
    assert TrainConfig().dfr_c_grid == list(DFR_C_GRID) == [1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01]
    assert TrainConfig().dfr_models == 20 and TrainConfig(dfr_variant="tr_tr").dfr_models == 10
    assert TrainConfig(dfr_ensemble=3).dfr_models == 3
    assert TrainConfig(dfr_c_grid=(1, 0.5)).to_dict()["dfr_c_grid"] == [1.0, 0.5]
    for key, value, message in (("dfr_variant", "val", "dfr_variant"), ("dfr_ensemble", 0, "dfr_ensemble"),
                                ("dfr_c_grid", [], "dfr_c_grid"), ("dfr_c_grid", [1.0, 0], "dfr_c_grid")):
        with pytest.raises(GroupsweepError, match=message):
            TrainConfig(**{key: value})


# --- a DFR trial -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def erm_state():
    states = []
    finetune(trial_config("none"), on_epoch=lambda result: states.append(copy.deepcopy(result.state())), cpu=True)
    return states[-1]


@pytest.fixture(scope="module")
def dataset():
    return load_config_dataset(trial_config("none"))


def write_trial(experiment, name: str, config: TrainConfig, state: dict):
    trial = experiment / name
    (trial / "checkpoint_000000").mkdir(parents=True)
    (trial / "params.json").write_text(json.dumps({**config.to_dict(), "trial_name": name}))
    torch.save(state, trial / "checkpoint_000000" / "state.pt")


class Reports:
    def __init__(self):
        self.rows, self.states = [], []

    def __call__(self, metrics, checkpoint=None):
        self.rows.append(dict(metrics))
        self.states.append(torch.load(f"{checkpoint.path}/state.pt", weights_only=False) if checkpoint else None)


def no_training(*args, **kwargs):
    raise AssertionError("the base model should have been taken from the sweep's none trial")


@pytest.mark.parametrize("variant", ["val_tr", "tr_tr"])
def test_a_dfr_trial_retrains_the_none_trials_last_layer_and_reports_one_final_epoch(tmp_path, monkeypatch,
                                                                                    erm_state, dataset, variant):
    write_trial(tmp_path, "wb-none-s2", trial_config("none"), erm_state)
    monkeypatch.setattr(base_model, "train_model", no_training)
    config = trial_config("dfr", dfr_variant=variant)
    trial_dir = str(tmp_path / "wb-dfr-s2")
    reports = Reports()
    run_finetune(config, EpochReporter(reports, Checkpoint, TrialDir(trial_dir), "n"), None, cpu=True,
                 trial_dir=trial_dir, experiment_dir=str(tmp_path))
    (row,), (state,) = reports.rows, reports.states
    assert row["epoch"] == config.epochs and row["status"] == "ok" and row["dfr/c"] in DFR_C_GRID
    for key in ("val/wga", "val/wca", "test/wga", "test/avg_acc", "train/acc", "train_subset/acc", "test/acc_group_3"):
        assert np.isfinite(row[key]), key
    assert row["data/num_train_kept"] == SMALL["size"] and np.isnan(row["optim/loss"])
    saved = TrialDir(trial_dir).read_npz(DFR_FILE)
    assert str(saved["base_source"]) == "wb-none-s2" and str(saved["variant"]) == variant
    assert int(saved["n_models"]) == 3 and float(saved["c"]) == row["dfr/c"] and len(saved["c_scores"]) == 7
    assert TrialDir(trial_dir).exists(LABELS_FILE) and TrialDir(trial_dir).exists(predictions_file(config.epochs))
    head = [key for key in state["model"] if key.endswith("weight") and state["model"][key].shape[0] == 2][-1]
    assert not torch.equal(state["model"][head], erm_state["model"][head])  # the head was retrained

    # the checkpoint's model predicts what the trial reported
    model, model_inputs = build_model_and_inputs(config, dataset)
    model.load_state_dict(state["model"])
    model.eval()
    with torch.inference_mode():
        predicted = torch.cat([model(inputs).argmax(dim=1) for inputs, _ in model_inputs.eval_batches("test", 80)])
    assert np.array_equal(predicted.numpy(), TrialDir(trial_dir).read_npz(predictions_file(1))["test"])

    # deterministic: a rerun (a trial killed before its checkpoint) reports the same; a finished one its row again
    rerun = Reports()
    run_dfr(config, dataset, EpochReporter(rerun, Checkpoint, TrialDir(str(tmp_path / "again")), "n"),
            trial_dir=str(tmp_path / "again"), experiment_dir=str(tmp_path), cpu=True)
    assert set(rerun.rows[0]) == set(row)
    for key, value in row.items():
        if not key.startswith("time/"):
            assert rerun.rows[0][key] == value or (np.isnan(value) and np.isnan(rerun.rows[0][key])), key
    finished = Reports()
    run_finetune(config, EpochReporter(finished, Checkpoint, TrialDir(trial_dir), "n"), state, cpu=True,
                 trial_dir=trial_dir, experiment_dir=str(tmp_path))
    assert len(finished.rows) == 1 and finished.states == [None] and list(finished.rows[0]) == list(row)
    assert all(finished.rows[0][key] == value or (np.isnan(value) and np.isnan(finished.rows[0][key]))
               for key, value in row.items())


def test_a_dfr_trial_trains_its_base_model_when_there_is_no_none_trial(tmp_path, monkeypatch, erm_state, dataset):
    trained = []

    def train_model(config, dataset, cpu, epoch=None):
        trained.append((config.method, config.seed, config.epochs, epoch))
        return erm_state["model"]

    monkeypatch.setattr(base_model, "train_model", train_model)
    run_dfr(trial_config("dfr"), dataset, lambda result: None, trial_dir=str(tmp_path / "t"),
            experiment_dir=str(tmp_path), cpu=True)
    assert trained == [("none", 2, 1, 1)]
    assert str(TrialDir(str(tmp_path / "t")).read_npz(DFR_FILE)["base_source"]) == "trained:seed=2"


def test_the_plan_of_a_dfr_trial_is_its_base_runs():
    config = trial_config("dfr")
    dataset = load_config_dataset(config)
    plan = training_plan(config, dataset)
    assert np.array_equal(plan.indices, np.arange(SMALL["size"])) and plan.sampling_weights is None


def test_specs_take_dfr_hparams_per_method():
    from sweeps.spec import build_spec

    source = {"datasets": ["synthetic-waterbirds"], "models": ["toy-resnet-xs"],
              "methods": ["none", {"dfr": {"hparams": {"dfr_variant": "tr_tr", "dfr_ensemble": 5}}}]}
    none, dfr = build_spec(source).trials
    assert (dfr.config["dfr_variant"], dfr.config["dfr_ensemble"], none.config["dfr_variant"]) == ("tr_tr", 5, "val_tr")
    with pytest.raises(GroupsweepError, match="one worker"):
        build_spec({**source, "resources": {"cpu": 2, "workers": 2}})
