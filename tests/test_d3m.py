"""D3M / AUTO-D3M: options, group weights, removal and its guards, planted harmful examples, the trial plan."""

import dataclasses
import json
import logging

import numpy as np
import pytest
import torch
from torch import nn

from trainables import base_model, d3m
from trainables.attribution import featurize, trak
from trainables.config import TrainConfig
from trainables.config_data import load_config_dataset
from trainables.config import D3MOptions
from trainables.d3m import d3m_plan, d3m_select, group_weights, pseudo_groups, removal
from trainables.errors import GroupsweepError
from trainables.finetune import finetune
from trainables.plans import training_plan
from trainables.trial_dir import D3M_SCORES_FILE, TrialDir


# --- options ----------------------------------------------------------------------------------

def test_options_defaults_and_validation():
    options = D3MOptions.from_dict(None)
    assert options == D3MOptions.from_dict({}) and options.beta == 1.0 and options.remove == "negative"
    assert options.pseudo_fraction == 0.35 and options.max_removed == 0.5
    assert D3MOptions.from_dict({"remove": 25, "proj_dim": None}).remove == 25
    assert D3MOptions.from_dict(options.to_dict()) == options
    assert D3MOptions.from_dict({"max_removed": 1}).max_removed == 1  # the paper's rule, no cap
    for bad, match in [({"lambda": 1}, "unknown d3m option 'lambda'"), ({"models": 0}, "models=0"),
                       ({"remove": "some"}, "remove='some'"), ({"remove": -1}, "remove=-1"),
                       ({"max_removed": 0}, "max_removed=0"), ({"max_removed": 1.5}, "max_removed=1.5"),
                       ({"pseudo_fraction": 0}, "pseudo_fraction=0"),
                       ({"ridge": float("nan")}, "ridge=nan"), ({"last_layer": 1}, "last_layer=1"),
                       ({"proj_dim": 2.5}, "proj_dim=2.5"), ({"models": True}, "models=True")]:
        with pytest.raises(GroupsweepError, match=match.replace("(", r"\(")) as error:
            D3MOptions.from_dict(bad)
        assert "\n" not in str(error.value)
    with pytest.raises(GroupsweepError, match="mapping"):
        D3MOptions.from_dict([1])


# --- group weights and removal -------------------------------------------------------------------

def test_group_weights_are_a_softmax_of_beta_times_loss():
    loss = np.array([0.2, 1.5, 0.7])
    expected = np.exp(loss) / np.exp(loss).sum()
    assert np.allclose(group_weights(loss, 1.0), expected)
    assert np.allclose(group_weights(loss, 0.0), 1 / 3)
    assert np.argmax(group_weights(loss, 50.0)) == 1 and group_weights(loss, 50.0)[1] > 0.999
    assert np.allclose(group_weights(np.array([1000.0, 999.0]), 1.0).sum(), 1.0)  # no overflow


def test_a_nan_group_loss_raises_instead_of_removing_everything():
    with pytest.raises(GroupsweepError, match="not all finite"):
        group_weights(np.array([0.3, np.nan]), 1.0)


def test_removal_takes_negative_scores_or_the_k_lowest():
    alignment = np.array([0.5, -2.0, 0.1, -0.3, -1.0, 0.2, -0.1, 0.0])
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    assert removal(alignment, y, "negative", 0.99, 2).tolist() == [1, 3, 4, 6]
    assert removal(alignment, y, 2, 0.99, 2).tolist() == [1, 4]
    assert removal(alignment, y, 0, 0.99, 2).tolist() == []
    # at most floor(0.5 * 4) = 2 per class, the most negative ones
    assert removal(alignment - 5, y, "negative", 0.5, 2).tolist() == [1, 3, 4, 6]
    # a class at its cap leaves its further negative scores in place, and never makes room for a score >= 0 of
    # another class: class 0 (cap 1) keeps -2; class 1 (cap 1) has no negative score, so nothing of it goes
    assert removal(np.array([-3.0, -2.0, 5.0, 1.0, 2.0]), np.array([0, 0, 0, 1, 1]), "negative", 0.5, 2).tolist() == [0]


def test_removal_never_empties_a_class_or_takes_more_than_the_cap(caplog):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [50, 7, 1])
    alignment = -rng.random(len(y)) - 1  # every example "harmful"
    for cap in (0.5, 0.9, 0.999):
        with caplog.at_level(logging.WARNING, logger="groupsweep.d3m"):
            removed = removal(alignment, y, "negative", cap, 3)
        kept_per_class = np.bincount(np.delete(y, removed), minlength=3)
        assert np.all(kept_per_class >= 1)
        assert np.all(np.bincount(y[removed], minlength=3) <= np.floor(cap * np.bincount(y)))
    assert "at most" in caplog.text
    assert len(removal(alignment, y, 10_000, 0.5, 3)) == 25 + 3 + 0


def test_removing_k_fills_up_from_other_classes_when_a_class_reaches_its_cap():
    alignment = np.array([-5, -4, -3, -2, 1, 2, -0.5, -0.4, 3, 4])
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    # class 0 may lose floor(0.5 * 6) = 3: the 4th lowest overall (index 3) is skipped for index 6
    assert removal(alignment, y, 4, 0.5, 2).tolist() == [0, 1, 2, 6]
    assert removal(alignment, y, 4, 1.0, 2).tolist() == [0, 1, 2, 3]  # the paper's k lowest
    assert removal(alignment, y, 7, 0.5, 2).tolist() == [0, 1, 2, 6, 7]  # both caps reached
    assert removal(alignment, y, "negative", 1.0, 2).tolist() == [0, 1, 2, 3, 6, 7]


def test_the_uncapped_rule_refuses_to_empty_a_class():
    alignment = np.array([-1.0, -2.0, 0.5, -0.1])
    y = np.array([0, 0, 1, 1])
    with pytest.raises(GroupsweepError, match=r"every training example of class\(es\) \[0\]") as error:
        removal(alignment, y, "negative", 1.0, 2)
    assert "\n" not in str(error.value)
    assert removal(alignment, y, "negative", 0.5, 2).tolist() == [1, 3]


def test_removal_refuses_non_finite_alignment():
    with pytest.raises(GroupsweepError, match="not finite"):
        removal(np.array([0.1, np.nan, -1.0]), np.array([0, 1, 1]), "negative", 0.5, 2)


class FixedScores:
    """A stand-in for ``TrakScores`` with an explicit (n_train, n_val) matrix."""

    def __init__(self, matrix):
        self.matrix = np.asarray(matrix, dtype=np.float64)

    def combine(self, weights):
        return self.matrix @ weights


def test_select_uses_group_means_and_leaves_missing_groups_out(caplog):
    rng = np.random.default_rng(1)
    matrix = rng.normal(size=(30, 9))
    val_groups = np.array([0, 0, 1, 1, 1, 3, 3, 0, 1])  # group 2 is missing from validation
    val_loss = rng.random(9)
    train_y = np.repeat([0, 1], 15)
    with caplog.at_level(logging.WARNING, logger="groupsweep.d3m"):
        selection = d3m_select(FixedScores(matrix), train_y, val_groups, val_loss, D3MOptions(), 2, 4)
    assert "group(s) [2]" in caplog.text
    assert selection.groups.tolist() == [0, 1, 3]
    losses = np.array([val_loss[val_groups == g].mean() for g in (0, 1, 3)])
    weights = np.exp(losses) / np.exp(losses).sum()
    means = np.stack([matrix[:, val_groups == g].mean(axis=1) for g in (0, 1, 3)], axis=1)
    assert np.allclose(selection.group_loss, losses) and np.allclose(selection.group_weight, weights)
    assert np.allclose(selection.group_scores, means)
    assert np.allclose(selection.alignment, means @ weights)
    assert np.array_equal(np.sort(np.concatenate([selection.removed, selection.kept])), np.arange(30))
    assert np.all(selection.alignment[selection.removed] < 0)


def test_select_refuses_validation_groups_out_of_range():
    for groups in ([0, 1, 7], [0, -1, 1]):
        with pytest.raises(GroupsweepError, match="out of range; allowed: 0..3") as error:
            d3m_select(FixedScores(np.ones((4, 3))), np.array([0, 0, 1, 1]), np.array(groups), np.ones(3),
                       D3MOptions(), 2, 4)
        assert "\n" not in str(error.value)


def test_select_refuses_nan_losses_and_scores():
    matrix = np.ones((4, 2))
    with pytest.raises(GroupsweepError, match="not all finite"):
        d3m_select(FixedScores(matrix), np.array([0, 0, 1, 1]), np.array([0, 1]), np.array([0.1, np.nan]),
               D3MOptions(), 2, 2)
    matrix[0, 0] = np.nan
    with pytest.raises(GroupsweepError, match="not all finite"):
        d3m_select(FixedScores(matrix), np.array([0, 0, 1, 1]), np.array([0, 1]), np.array([0.1, 0.2]),
               D3MOptions(), 2, 2)


# --- planted harmful examples --------------------------------------------------------------------

PLANTED = 40


def planted_split(rng, counts, planted: int = 0):
    """Features (core, spurious, 3 noise); groups g = 2y + s with ``counts``; ``planted`` extra examples that look
    exactly like the minority group (y=1, s=0) but are labelled 0, i.e. mislabelled members of majority group (0, 0)."""
    groups = np.repeat(np.arange(4), counts)
    y, s = groups // 2, groups % 2
    core = y.copy()
    y, s, core = (np.concatenate([a, np.full(planted, v)]) for a, v in ((y, 0), (s, 0), (core, 1)))
    n = len(y)
    x = np.stack([(2 * core - 1) + rng.normal(0, 0.4, n), 2 * (2 * s - 1) + rng.normal(0, 0.5, n),
                  *rng.normal(size=(3, n))], axis=1)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y), 2 * y + s


def fit_linear(x, y, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    model = nn.Linear(x.shape[1], 2)
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y) + 1e-3 * (model.weight ** 2).sum()
        loss.backward()
        return loss

    for _ in range(3):
        optimizer.step(closure)
    return model


def group_accuracy(model, x, y, groups) -> np.ndarray:
    with torch.no_grad():
        correct = (model(x).argmax(dim=1) == y).numpy()
    return np.array([correct[groups == g].mean() for g in range(4)])


@pytest.fixture(scope="module", params=[0, 1, 2])
def planted(request):
    """A trained logistic model on a split with 40 planted mislabelled examples, and its TRAK scores."""
    rng = np.random.default_rng(request.param)
    x, y, groups = planted_split(rng, [250, 150, 150, 250], planted=PLANTED)
    xv, yv, val_groups = planted_split(rng, [50, 50, 50, 50])
    model = fit_linear(x, y, request.param)
    train, val = featurize(model, [(x, y)]), featurize(model, [(xv, yv)])
    scores = trak([train], [val], D3MOptions().ridge)
    return dict(x=x, y=y, xv=xv, yv=yv, val_groups=val_groups, model=model, scores=scores,
                val_loss=val.loss.numpy(), planted=np.arange(len(y) - PLANTED, len(y)), seed=request.param)


def test_d3m_removes_mostly_the_planted_examples_and_retraining_helps_the_minority(planted):
    """Tolerances (3 seeds): the A < 0 rule removes >= 90% of the planted examples, and they are at least half
    of what it removes (observed: all 40 planted among 63-72 removed of 680); the 40 lowest scores are >= 85%
    planted (observed 92-100%); retraining without the removed examples raises the worst-group validation
    accuracy."""
    selection = d3m_select(planted["scores"], planted["y"].numpy(), planted["val_groups"], planted["val_loss"],
                       D3MOptions(), 2, 4)
    hits = np.isin(selection.removed, planted["planted"]).sum()
    assert hits >= 0.9 * PLANTED and hits >= 0.5 * len(selection.removed)
    assert selection.group_weight.argmax() == 2  # the minority group (y=1, s=0) the planted examples hurt
    lowest = d3m_select(planted["scores"], planted["y"].numpy(), planted["val_groups"], planted["val_loss"],
                    D3MOptions(remove=PLANTED), 2, 4)
    assert np.isin(lowest.removed, planted["planted"]).mean() >= 0.85
    before = group_accuracy(planted["model"], planted["xv"], planted["yv"], planted["val_groups"])
    kept = torch.from_numpy(selection.kept)
    retrained = fit_linear(planted["x"][kept], planted["y"][kept], planted["seed"])
    after = group_accuracy(retrained, planted["xv"], planted["yv"], planted["val_groups"])
    assert after.min() > before.min()


def test_auto_d3m_finds_the_harmed_side_without_group_labels(planted):
    """Pseudo-minority = 35% of each class, at the end of the principal axis with the larger loss gap; in the
    harmed class it is >= 70% true minority (observed 77-97%). AUTO-D3M then removes >= 85% of the planted
    examples, which are >= 4x over-represented among the removed (base rate 40/680; observed >= 6x)."""
    yv = planted["yv"].numpy()
    groups, projection = pseudo_groups(planted["scores"], yv, planted["val_loss"], 0.35, 2)
    loss = planted["val_loss"]
    for c in (0, 1):
        rows = yv == c
        assert (groups[rows] == 2 * c + 1).sum() == round(0.35 * rows.sum())
        minority = rows & (groups == 2 * c + 1)
        assert projection[minority].max() <= projection[rows & ~minority].min()
        # the chosen end of the principal axis is the one whose loss exceeds the rest of the class by more
        other = rows & (projection >= np.sort(projection[rows])[::-1][minority.sum() - 1])
        gap = loss[minority].mean() - loss[rows & ~minority].mean()
        assert gap >= loss[other].mean() - loss[rows & ~other].mean()
    # in class 1, whose minority group (s=0) the planted examples hurt, the pseudo-minority is mostly that group
    minority = groups == 3
    assert loss[minority].mean() > loss[(yv == 1) & ~minority].mean()
    assert (planted["val_groups"][minority] == 2).mean() >= 0.7
    selection = d3m_select(planted["scores"], planted["y"].numpy(), groups, planted["val_loss"], D3MOptions(), 2, 4)
    hits = np.isin(selection.removed, planted["planted"]).sum()
    assert hits >= 0.85 * PLANTED
    assert hits / len(selection.removed) >= 4 * PLANTED / len(planted["y"])


def test_pseudo_groups_handle_classes_with_too_few_validation_examples():
    scores = trak_like_scores(n_train=10, n_val=5)
    groups, _ = pseudo_groups(scores, np.array([0, 0, 0, 0, 1]), np.linspace(0, 1, 5), 0.35, 2)
    assert groups[4] == 2 and (groups[:4] == 1).sum() == 1


def test_pseudo_groups_warn_when_a_class_has_no_principal_direction(caplog):
    torch.manual_seed(0)
    x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    same = x[:1].repeat(4, 1)  # four identical validation examples: identical attribution vectors
    model = nn.Linear(3, 2)
    scores = trak([featurize(model, [(x, y)])], [featurize(model, [(same, torch.zeros(4, dtype=torch.long))])], 0.1)
    with caplog.at_level(logging.WARNING, logger="groupsweep.d3m"):
        pseudo_groups(scores, np.zeros(4, dtype=np.int64), np.linspace(0, 1, 4), 0.5, 2)
    assert "do not vary" in caplog.text and "class 0" in caplog.text


def trak_like_scores(n_train: int, n_val: int):
    torch.manual_seed(0)
    x, y = torch.randn(n_train, 3), torch.randint(0, 2, (n_train,))
    model = nn.Linear(3, 2)
    return trak([featurize(model, [(x, y)])], [featurize(model, [(x[:n_val], y[:n_val])])], 0.1)


# --- the plan of a sweep trial -------------------------------------------------------------------

SMALL = {"size": 160, "val_size": 80, "test_size": 80}
FAST = D3MOptions(proj_dim=64, batch_size=64)


def trial_config(method: str, **overrides) -> TrainConfig:
    values = dict(dataset="synthetic-waterbirds", dataset_options=SMALL, model="toy-convnextv2-xs", method=method,
                  seed=2, epochs=1, lr=1e-3, batch_size=32, num_threads=1)
    values.update(overrides)
    return TrainConfig.from_dict(values)


def write_trial(experiment, name: str, config: TrainConfig, state: dict, checkpoint: str = "checkpoint_000000"):
    """A Tune trial directory as the sweep writes it: params.json and one Ray checkpoint with state.pt."""
    trial = experiment / name
    (trial / checkpoint).mkdir(parents=True)
    (trial / "params.json").write_text(json.dumps({**config.to_dict(), "trial_name": name}))
    torch.save(state, trial / checkpoint / "state.pt")
    return trial


@pytest.fixture(scope="module")
def erm_state():
    """The final state of the ERM (method none) run that the D3M trials below take as base model."""
    states = []
    finetune(trial_config("none"), on_epoch=lambda result: states.append(result.state()), cpu=True)
    return states[-1]


@pytest.fixture(scope="module")
def dataset():
    return load_config_dataset(trial_config("none"))


def no_training(*args, **kwargs):
    raise AssertionError("the base model should have been taken from the sweep's none trial")


@pytest.mark.parametrize("method", ["d3m", "auto-d3m"])
def test_plan_takes_the_sweeps_finished_none_trial_and_saves_its_selection(tmp_path, monkeypatch, erm_state,
                                                                          dataset, method):
    write_trial(tmp_path, "wb-none-s2", trial_config("none"), erm_state)
    # same dataset, model and seed but another method, or another seed: not the base
    write_trial(tmp_path, "wb-mixture2-s2", trial_config("mixture", ratio=2.0), erm_state)
    write_trial(tmp_path, "wb-d3m-s2-done", trial_config("d3m"), erm_state)
    write_trial(tmp_path, "wb-none-s5", trial_config("none", seed=5), erm_state)
    monkeypatch.setattr(base_model, "train_model", no_training)
    config = trial_config(method)
    trial_dir = str(tmp_path / f"wb-{method}-s2")
    plan = d3m_plan(config, dataset, trial_dir, str(tmp_path), options=FAST, cpu=True)

    saved = TrialDir(trial_dir).read_npz(D3M_SCORES_FILE)
    assert saved["base_sources"].tolist() == ["wb-none-s2"]
    assert np.array_equal(plan.indices, saved["kept"]) and plan.sampling_weights is None
    assert plan.num_samples == len(plan.indices) == SMALL["size"] - len(saved["removed"])
    assert len(saved["removed"]) <= SMALL["size"] // 2
    assert np.array_equal(np.union1d(saved["kept"], saved["removed"]), np.arange(SMALL["size"]))
    assert saved["alignment"].shape == (SMALL["size"],) and np.isfinite(saved["alignment"]).all()
    assert saved["removed_per_group"].sum() == len(saved["removed"])
    assert json.loads(str(saved["options"])) == FAST.to_dict()
    if method == "auto-d3m":
        y = dataset.splits["val"].y
        assert np.array_equal(saved["val_groups"] // 2, y) and "val_projection" in saved
    else:
        assert np.array_equal(saved["val_groups"], dataset.groups("val"))

    # a restarted trial reuses the saved selection instead of scoring again, unless its options differ
    monkeypatch.setattr(d3m, "base_states", no_training)
    again = d3m_plan(config, dataset, trial_dir, str(tmp_path), options=FAST, cpu=True)
    assert np.array_equal(again.indices, plan.indices)
    with pytest.raises(AssertionError, match="base model should have been taken"):
        d3m_plan(config, dataset, trial_dir, str(tmp_path), options=dataclasses.replace(FAST, beta=2.0), cpu=True)


def test_plan_trains_the_base_model_when_the_none_trial_has_not_finished(tmp_path, monkeypatch, erm_state, dataset):
    unfinished = dict(erm_state, epoch=1)
    write_trial(tmp_path, "wb-none-s2", trial_config("none", epochs=3), unfinished)
    trained = []

    def train_model(config, dataset, cpu, epoch=None):
        trained.append(config)
        if config.seed == 2:
            return erm_state["model"]
        return {key: value * 0.5 if key.endswith("head.fc.weight") else value  # another ensemble member
                for key, value in erm_state["model"].items()}

    monkeypatch.setattr(base_model, "train_model", train_model)
    options = D3MOptions(proj_dim=32, models=2, last_layer=True)
    d3m_plan(trial_config("d3m", epochs=3), dataset, str(tmp_path / "t"), str(tmp_path), options=options, cpu=True)
    assert [(c.method, c.seed, c.epochs) for c in trained] == [("none", 2, 3), ("none", 2 + d3m.SEED_STRIDE, 3)]
    saved = TrialDir(str(tmp_path / "t")).read_npz(D3M_SCORES_FILE)
    assert saved["base_sources"].tolist() == ["trained:seed=2", f"trained:seed={2 + d3m.SEED_STRIDE}"]
    # the group losses are the base classifier's (the paper's ℓ_g), not the ensemble's mean
    alone = dataclasses.replace(options, models=1)
    d3m_plan(trial_config("d3m", epochs=3), dataset, str(tmp_path / "t1"), str(tmp_path), options=alone, cpu=True)
    base_loss = TrialDir(str(tmp_path / "t1")).read_npz(D3M_SCORES_FILE)["val_loss"]
    assert np.array_equal(saved["val_loss"], base_loss)
    # the sweep's auto-d3m trial of that seed loads the extra ensemble model the d3m trial trained and kept
    trained.clear()
    d3m_plan(trial_config("auto-d3m", epochs=3), dataset, str(tmp_path / "t2"), str(tmp_path), options=options,
             cpu=True)
    assert [(c.method, c.seed) for c in trained] == [("none", 2)]  # the base only (its none trial is unfinished)
    kept = list((tmp_path / d3m.ENSEMBLE_DIR).iterdir())
    assert len(kept) == 1 and kept[0].suffix == ".pt"
    saved_auto = TrialDir(str(tmp_path / "t2")).read_npz(D3M_SCORES_FILE)
    assert saved_auto["base_sources"].tolist() == saved["base_sources"].tolist()
    from analysis.results import load_results  # the kept models' folder is no trial of the sweep

    assert sorted(load_results(tmp_path).trials["trial_name"]) == ["wb-none-s2"]


def test_a_diverged_base_model_raises_and_removes_nothing(tmp_path, monkeypatch, erm_state, dataset):
    broken = {key: value.clone() for key, value in erm_state["model"].items()}
    head = [key for key in broken if key.endswith("head.fc.weight")][0]
    broken[head][0, 0] = float("nan")
    write_trial(tmp_path, "wb-none-s2", trial_config("none"), dict(erm_state, model=broken))
    monkeypatch.setattr(base_model, "train_model", no_training)
    trial_dir = tmp_path / "wb-d3m-s2"
    with pytest.raises(GroupsweepError, match="not finite|non-finite") as error:
        d3m_plan(trial_config("d3m"), dataset, str(trial_dir), str(tmp_path), options=FAST, cpu=True)
    assert "\n" not in str(error.value)
    assert not (trial_dir / D3M_SCORES_FILE).exists()


def test_plan_refuses_methods_other_than_d3m(dataset):
    with pytest.raises(GroupsweepError, match="data-selection method 'none'"):
        d3m_plan(trial_config("none"), dataset, options=FAST)


# --- a D3M trial in a sweep (TrainConfig.d3m, the trainable, the spec) ------------------------------

def test_trial_configs_carry_validated_d3m_options():
    config = trial_config("auto-d3m", d3m={"remove": 5, "last_layer": True})
    assert config.d3m == {"remove": 5, "last_layer": True} and config.to_dict()["d3m"]["remove"] == 5
    with pytest.raises(GroupsweepError, match="unknown d3m option 'k'"):
        trial_config("d3m", d3m={"k": 5})


def test_a_d3m_trial_trains_on_the_kept_examples_and_reports_like_any_trial(tmp_path, monkeypatch, erm_state):
    from ray.tune import Checkpoint

    from trainables.trainable import EpochReporter, run_finetune

    write_trial(tmp_path, "wb-none-s2", trial_config("none"), erm_state)
    monkeypatch.setattr(base_model, "train_model", no_training)
    rows = []
    trial_dir = str(tmp_path / "wb-d3m-s2")
    reporter = EpochReporter(lambda metrics, checkpoint=None: rows.append(metrics), Checkpoint, TrialDir(trial_dir),
                             node_id="n")
    run_finetune(trial_config("d3m", d3m=FAST.to_dict()), reporter, None, cpu=True, trial_dir=trial_dir,
                 experiment_dir=str(tmp_path))
    saved = TrialDir(trial_dir).read_npz(D3M_SCORES_FILE)
    assert [row["epoch"] for row in rows] == [1] and rows[0]["status"] == "ok"
    assert rows[0]["data/num_train_kept"] == len(saved["kept"])
    assert sum(rows[0][f"train_subset/count_group_{g}"] for g in range(4)) == len(saved["kept"])
    assert (tmp_path / "wb-d3m-s2" / "groupsweep" / "predictions" / "epoch_0001.npz").exists()


def test_training_plan_selects_with_d3m_and_trains_the_base_model_itself():
    config = trial_config("d3m", d3m=FAST.to_dict())
    dataset = load_config_dataset(config)
    history = finetune(config, cpu=True, dataset=dataset, plan=training_plan(config, dataset, cpu=True))
    assert SMALL["size"] // 2 <= history[-1]["data/num_train_kept"] <= SMALL["size"]
    with pytest.raises(GroupsweepError, match="trainables.plans.training_plan"):
        finetune(config, cpu=True, dataset=dataset)  # finetune knows no data selection of its own


def test_specs_accept_d3m_methods_in_one_process_only():
    from sweeps.spec import build_spec

    source = {"datasets": ["synthetic-waterbirds"], "models": ["toy-resnet-xs"],
              "methods": ["none", "d3m", "auto-d3m"], "hparams": {"d3m": {"last_layer": True}}}
    spec = build_spec(source)
    assert [trial.name for trial in spec.trials] == [f"synthetic-waterbirds-toy-resnet-xs-{m}-s0"
                                                     for m in ("none", "d3m", "auto-d3m")]
    assert all(trial.config["d3m"] == {"last_layer": True} for trial in spec.trials)
    with pytest.raises(GroupsweepError, match="one worker"):
        build_spec({**source, "resources": {"cpu": 2, "workers": 2}})
    with pytest.raises(GroupsweepError, match="unknown d3m option"):
        build_spec({**source, "hparams": {"d3m": {"betta": 2}}})
