"""JTT (trainables.jtt): the error set, the upsampled plan, the identification model taken from the sweep's
``none`` trial at epoch T (or trained here), the saved error set, and a JTT trial that resumes bit-identically."""

import copy
import json

import numpy as np
import pytest
import torch
from ray.tune import Checkpoint

from trainables import base_model
from trainables.balancing import make_sampler
from trainables.config_data import load_config_dataset
from trainables.config import TrainConfig
from trainables.errors import GroupsweepError
from trainables.finetune import finetune
from trainables.jtt import error_set, jtt_plan, upsampled_plan
from trainables.plans import training_plan
from trainables.trainable import EpochReporter, InjectedFault, run_finetune
from trainables.trial_dir import JTT_ERRORS_FILE, METHOD_HPARAMS_KEY, TrialDir

SMALL = {"size": 160, "val_size": 60, "test_size": 60}


def trial_config(method: str, **overrides) -> TrainConfig:
    values = dict(dataset="synthetic-waterbirds", dataset_options=SMALL, model="toy-convnextv2-xs", method=method,
                  seed=2, epochs=2, lr=1e-3, batch_size=32, num_threads=1, eval_batch_size=80, jtt_epochs=1,
                  jtt_lambda_up=3)
    values.update(overrides)
    return TrainConfig.from_dict(values)


def write_trial(experiment, name: str, config: TrainConfig, states: list):
    """A Tune trial directory as the sweep writes it: params.json (with the sweep's ``_`` keys, which do not
    keep a trial from being a base) and one checkpoint per state."""
    trial = experiment / name
    for number, state in enumerate(states):
        (trial / f"checkpoint_{number:06d}").mkdir(parents=True)
        torch.save(state, trial / f"checkpoint_{number:06d}" / "state.pt")
    params = {**config.to_dict(), "trial_name": name, METHOD_HPARAMS_KEY: None}
    (trial / "params.json").write_text(json.dumps(params))
    return trial


def no_training(*args, **kwargs):
    raise AssertionError("the identification model should have been taken from the sweep's none trial")


# --- the error set and the upsampled plan (hand-computed) -------------------------------------------

def test_error_set_is_the_misclassified_indices():
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 0])
    predicted = np.array([0, 0, 1, 0, 1, 1, 0, 1, 0, 0])
    assert error_set(predicted, y).tolist() == [1, 5, 8]
    with pytest.raises(GroupsweepError, match="predictions"):
        error_set(predicted[:3], y)


def test_upsampled_plan_draws_every_error_lambda_up_times_per_epoch():
    plan = upsampled_plan(10, [1, 5, 8], lambda_up=4)
    assert plan.num_samples == 3 * 4 + 7 == len(plan.indices)
    assert plan.sampling_weights is None and plan.class_weights is None
    assert np.array_equal(np.bincount(plan.indices, minlength=10), [1, 4, 1, 1, 1, 4, 1, 1, 4, 1])
    generator = torch.Generator().manual_seed(0)
    sampler = make_sampler(plan, generator)
    for _ in range(2):  # every epoch: each error index exactly 4 times, the others once, in a shuffled order
        drawn = plan.indices[list(sampler)]
        assert np.array_equal(np.bincount(drawn, minlength=10), [1, 4, 1, 1, 1, 4, 1, 1, 4, 1])
        assert not np.array_equal(drawn, np.sort(drawn))
    assert np.array_equal(upsampled_plan(10, [], 4).indices, np.arange(10))  # no error: ERM
    assert np.array_equal(upsampled_plan(10, [1, 5], 1).indices, np.arange(10))  # λ_up = 1: ERM
    with pytest.raises(GroupsweepError, match="distinct indices"):
        upsampled_plan(10, [1, 1], 4)
    with pytest.raises(GroupsweepError, match="jtt_lambda_up"):
        upsampled_plan(10, [1], 0)


def test_config_validates_jtt_settings():
    assert TrainConfig().jtt_epochs == 1 and TrainConfig().jtt_lambda_up == 6
    with pytest.raises(GroupsweepError, match="jtt_epochs 3 exceeds epochs 2"):
        trial_config("jtt", jtt_epochs=3)
    trial_config("none", jtt_epochs=3)  # other methods ignore it
    for key, value in (("jtt_epochs", 0), ("jtt_lambda_up", 1.5)):
        with pytest.raises(GroupsweepError, match=f"{key} must be a positive integer"):
            trial_config("jtt", **{key: value})


# --- the identification model -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def erm_states():
    """The states after epochs 1 and 2 of the ERM counterpart of the JTT trials below (copies: a state's
    tensors are the live model's until it is saved)."""
    states = []
    finetune(trial_config("none"), on_epoch=lambda result: states.append(copy.deepcopy(result.state())), cpu=True)
    return states


@pytest.fixture(scope="module")
def dataset():
    return load_config_dataset(trial_config("none"))


def test_training_the_identification_model_here_gives_the_none_trials_epoch_t(erm_states, dataset):
    trained = base_model.train_model(trial_config("none"), dataset, cpu=True, epoch=1)
    for name, tensor in erm_states[0]["model"].items():
        assert torch.equal(trained[name], tensor), name


def test_plan_takes_epoch_t_of_the_none_trial_and_saves_the_error_set(tmp_path, monkeypatch, erm_states, dataset):
    # the none trial keeps both epochs (keep_checkpoints: all); another seed is not the base. Its epoch 2 is made
    # to predict class 1 everywhere (on this small data both epochs predict alike), so that reading the last
    # epoch instead of T = 1 would give another error set
    last = copy.deepcopy(erm_states[1])
    bias = next(key for key in last["model"] if key.endswith("head.fc.bias"))
    last["model"][bias] = torch.tensor([-1e3, 1e3])
    write_trial(tmp_path, "wb-none-s2", trial_config("none"), [erm_states[0], last])
    write_trial(tmp_path, "wb-none-s5", trial_config("none", seed=5), erm_states)
    monkeypatch.setattr(base_model, "train_model", no_training)
    config = trial_config("jtt")
    trial_dir = str(tmp_path / "wb-jtt-s2")
    plan = training_plan(config, dataset, trial_dir=trial_dir, experiment_dir=str(tmp_path), cpu=True)

    saved = TrialDir(trial_dir).read_npz(JTT_ERRORS_FILE)
    assert str(saved["base_source"]) == "wb-none-s2" and int(saved["jtt_epochs"]) == 1
    _, logits = base_model.model_outputs(config, dataset, erm_states[0]["model"], ("train",), 80, True)["train"]
    expected = np.flatnonzero(logits.argmax(axis=1) != dataset.splits["train"].y)
    assert 0 < len(expected) < SMALL["size"] and np.array_equal(saved["errors"], expected)
    groups = dataset.groups("train")  # the per-group count of errors kept for inspection: by group, not by class
    assert saved["errors_per_group"].tolist() == [int((groups[expected] == g).sum()) for g in range(dataset.n_groups)]
    _, final_logits = base_model.model_outputs(config, dataset, last["model"], ("train",), 80, True)["train"]
    final_errors = np.flatnonzero(final_logits.argmax(axis=1) != dataset.splits["train"].y)
    assert not np.array_equal(final_errors, expected)  # so taking the last epoch instead of T would be caught
    assert np.array_equal(plan.indices, upsampled_plan(SMALL["size"], expected, 3).indices)
    assert plan.num_samples == SMALL["size"] + 2 * len(expected)

    # a restarted trial reuses the saved error set instead of reading a model again
    monkeypatch.setattr(base_model, "base_model", no_training)
    again = jtt_plan(config, dataset, trial_dir, str(tmp_path), cpu=True)
    assert np.array_equal(again.indices, plan.indices)


def test_base_model_outputs_are_computed_in_the_trials_precision(erm_states, dataset):
    """D3M, JTT and DFR read a base model's outputs as its trial evaluated itself: under ``mixed_precision``'s
    autocast (what Accelerate's ``autocast`` runs), not in float32."""
    from trainables.builders import build_model_and_inputs

    state = erm_states[0]["model"]
    fp32 = trial_config("jtt")
    bf16 = trial_config("jtt", mixed_precision="bf16")
    model, inputs = build_model_and_inputs(bf16, dataset)
    model.load_state_dict(state)
    model.eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = torch.cat([model(batch).float() for batch, _ in inputs.eval_batches("val", 80)]).numpy()
    features, logits = base_model.model_outputs(bf16, dataset, state, ("val",), 80, True)["val"]
    assert np.array_equal(logits, expected) and features.dtype == np.float32
    _, logits_fp32 = base_model.model_outputs(fp32, dataset, state, ("val",), 80, True)["val"]
    assert not np.array_equal(logits_fp32, logits)  # the precision is applied: float32 gives other bits


def test_plan_trains_the_identification_model_when_the_none_trial_lacks_epoch_t(tmp_path, monkeypatch, erm_states,
                                                                                  dataset):
    write_trial(tmp_path, "wb-none-s2", trial_config("none"), erm_states[1:])  # keep_checkpoints 1: epoch 2 only
    trained = []

    def train_model(config, dataset, cpu, epoch=None):
        trained.append((config.method, config.seed, config.epochs, epoch))
        return erm_states[0]["model"]

    monkeypatch.setattr(base_model, "train_model", train_model)
    trial_dir = tmp_path / "wb-jtt-s2"
    jtt_plan(trial_config("jtt"), dataset, str(trial_dir), str(tmp_path), cpu=True)
    assert trained == [("none", 2, 2, 1)]  # epoch 1 of the 2-epoch ERM run
    assert str(TrialDir(str(trial_dir)).read_npz(JTT_ERRORS_FILE)["base_source"]) == "trained:seed=2"


def test_a_jtt_trial_killed_mid_run_resumes_bit_identical_without_a_second_identification(tmp_path, monkeypatch,
                                                                                         erm_states):
    class Reports:
        def __init__(self):
            self.rows, self.states = [], []

        def __call__(self, metrics, checkpoint=None):
            self.rows.append(dict(metrics))
            if checkpoint is not None:
                self.states.append(torch.load(f"{checkpoint.path}/state.pt", weights_only=False))

    write_trial(tmp_path, "wb-none-s2", trial_config("none"), erm_states)
    monkeypatch.setattr(base_model, "train_model", no_training)
    config = trial_config("jtt")
    full = Reports()
    run_finetune(config, EpochReporter(full, Checkpoint, TrialDir(str(tmp_path / "a")), "n"), None, cpu=True,
                 trial_dir=str(tmp_path / "a"), experiment_dir=str(tmp_path))
    crashed = Reports()
    with pytest.raises(InjectedFault):
        run_finetune(config, EpochReporter(crashed, Checkpoint, TrialDir(str(tmp_path / "b")), "n", fault_epoch=1),
                     None, cpu=True, trial_dir=str(tmp_path / "b"), experiment_dir=str(tmp_path))
    monkeypatch.setattr(base_model, "base_model", no_training)  # the retry reads the saved error set
    resumed = Reports()
    run_finetune(config, EpochReporter(resumed, Checkpoint, TrialDir(str(tmp_path / "b")), "n", fault_epoch=1),
                 crashed.states[-1], cpu=True, trial_dir=str(tmp_path / "b"), experiment_dir=str(tmp_path))
    assert [row["epoch"] for row in full.rows] == [1, 2] and [row["epoch"] for row in resumed.rows] == [2]
    n_errors = len(TrialDir(str(tmp_path / "a")).read_npz(JTT_ERRORS_FILE)["errors"])
    assert full.rows[0]["data/num_train_kept"] == SMALL["size"] and n_errors > 0
    for key, value in full.rows[1].items():
        if not key.startswith("time/"):
            assert resumed.rows[0][key] == value or (np.isnan(resumed.rows[0][key]) and np.isnan(value)), key
    for name, tensor in full.states[-1]["model"].items():
        assert torch.equal(resumed.states[-1]["model"][name], tensor), name


def test_specs_take_jtt_hparams_per_method_and_search_them():
    from sweeps.spec import build_spec

    source = {"datasets": ["synthetic-waterbirds"], "models": ["toy-resnet-xs"], "hparams": {"epochs": 3},
              "methods": ["none", {"jtt": {"hparams": {"jtt_epochs": 2, "jtt_lambda_up": 20}}}]}
    none, jtt = build_spec(source).trials
    assert (none.config["jtt_epochs"], jtt.config["jtt_epochs"], jtt.config["jtt_lambda_up"]) == (1, 2, 20)
    assert jtt.name == "synthetic-waterbirds-toy-resnet-xs-jtt-s0"
    searched = build_spec({**source, "search": {"num_samples": 2},
                           "methods": [{"jtt": {"hparams": {"jtt_lambda_up": {"choice": [6, 20, 50]}}}}]})
    assert searched.cells[0].space == {"jtt_lambda_up": {"choice": [6, 20, 50]}}
    with pytest.raises(GroupsweepError, match="jtt_epochs 4 exceeds epochs 3"):
        build_spec({**source, "methods": [{"jtt": {"hparams": {"jtt_epochs": 4}}}]})


def test_param_space_keeps_the_method_hparams_of_a_trial_that_is_not_the_first():
    """Every trial's params.json lists the keys its method set (analysis groups them with their method,
    not as a variant), also when the sweep's first trial has none."""
    from sweeps.launcher import param_space
    from sweeps.spec import build_spec

    spec = build_spec({"datasets": ["synthetic-waterbirds"], "models": ["toy-resnet-xs"], "hparams": {"epochs": 3},
                       "methods": ["none", {"jtt": {"hparams": {"jtt_epochs": 2}}}]})
    space = param_space(spec)
    none, jtt = (trial.config for trial in spec.trials)
    assert space[METHOD_HPARAMS_KEY].func(none) is None
    assert space[METHOD_HPARAMS_KEY].func(jtt) == ["jtt_epochs"]
