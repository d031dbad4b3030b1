"""The finetuning loop: metrics every epoch, exact resume, last-layer mode, bad input."""

import io

import numpy as np
import pytest
import torch

from trainables.config import TrainConfig
from trainables.errors import GroupsweepError
from trainables.finetune import EpochResult, finetune

SMALL_DATA = {"size": 240, "val_size": 80, "test_size": 120}


def small_config(**overrides) -> TrainConfig:
    values = dict(dataset="synthetic-waterbirds", dataset_options=SMALL_DATA, model="toy-convnextv2-xs",
                  method="upsampling", seed=3, epochs=2, lr=1e-3, batch_size=32, num_threads=1)
    values.update(overrides)
    return TrainConfig.from_dict(values)


def snapshot(state: dict) -> dict:
    """A deep copy of a state dict (its tensors alias the live model otherwise)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def test_every_epoch_reports_every_metric_and_predictions():
    results: list[EpochResult] = []
    history = finetune(small_config(), on_epoch=results.append, cpu=True)
    assert [r.epoch for r in results] == [1, 2] and len(history) == 2
    metrics = results[-1].metrics
    for split in ("train", "train_subset", "val", "test"):
        for key in ("loss", "acc", "avg_acc", "wga", "wca", "acc_class_0", "acc_class_1"):
            assert np.isfinite(metrics[f"{split}/{key}"]), f"{split}/{key}"
        for g in range(4):
            assert f"{split}/acc_group_{g}" in metrics and f"{split}/count_group_{g}" in metrics
    for key in ("optim/loss", "optim/lr", "time/train_s", "time/eval_s", "model/num_parameters", "data/num_train_kept"):
        assert key in metrics
    assert sum(metrics[f"test/count_group_{g}"] for g in range(4)) == SMALL_DATA["test_size"]
    assert metrics["test/wga"] <= metrics["test/acc"] + 1e-12
    labels = results[-1].labels
    for split in ("val", "test"):
        predictions = results[-1].predictions[split]
        assert predictions.dtype == np.int16 and len(predictions) == SMALL_DATA[f"{split}_size"]
        assert np.array_equal(labels[f"{split}_g"], labels[f"{split}_y"] * 2 + labels[f"{split}_s"])
        # The reported accuracy is the accuracy of the saved predictions.
        assert metrics[f"{split}/acc"] == pytest.approx(np.mean(predictions == labels[f"{split}_y"]))
        # Waterbirds-like data report the train-weighted average accuracy: each group's accuracy weighted by the
        # group's share of the full training split (renormalised over the groups the split holds), not pooled
        train_counts = np.array([metrics[f"train/count_group_{g}"] for g in range(4)], dtype=float)
        y, groups = labels[f"{split}_y"], labels[f"{split}_g"]
        present = [g for g in range(4) if (groups == g).any()]
        weighted = sum(train_counts[g] * np.mean(predictions[groups == g] == y[groups == g]) for g in present)
        assert metrics[f"{split}/avg_acc"] == pytest.approx(weighted / train_counts[present].sum(), abs=1e-12)
        assert abs(metrics[f"{split}/avg_acc"] - metrics[f"{split}/acc"]) > 1e-6  # so pooling would be caught


def test_train_subset_metrics_cover_exactly_the_kept_examples():
    results = []
    finetune(small_config(method="subsetting", epochs=1), on_epoch=results.append, cpu=True)
    metrics = results[0].metrics
    kept = metrics["data/num_train_kept"]
    assert sum(metrics[f"train_subset/count_group_{g}"] for g in range(4)) == kept
    assert sum(metrics[f"train/count_group_{g}"] for g in range(4)) == SMALL_DATA["size"]
    assert kept < SMALL_DATA["size"]


@pytest.mark.parametrize("schedule", [{}, {"schedule": "linear", "schedule_step": "epoch", "final_lr_factor": 0.1}])
def test_resume_from_state_matches_an_uninterrupted_run(schedule):
    config = small_config(epochs=3, method="mixture", ratio=2.0, **schedule)
    saved = {}
    uninterrupted = []

    def keep(result):
        uninterrupted.append(result.metrics)
        saved[result.epoch] = snapshot(result.state())

    finetune(config, on_epoch=keep, cpu=True)
    resumed = []
    finetune(config, on_epoch=lambda r: resumed.append((r.metrics, snapshot(r.state()))),
             resume_state=saved[2], cpu=True)
    assert len(resumed) == 1
    metrics, state = resumed[0]
    assert metrics["epoch"] == 3
    for key, value in uninterrupted[2].items():
        if not key.startswith("time/"):
            assert metrics[key] == value, key
    for name, tensor in saved[3]["model"].items():
        assert torch.equal(tensor, state["model"][name]), name
    assert state["scheduler"] == saved[3]["scheduler"]
    if schedule:  # per epoch: the learning rate after epoch e is lr (1 - 0.9 e / 3)
        assert [m["optim/lr"] for m in uninterrupted] == pytest.approx([1e-3 * (1 - 0.3 * e) for e in (1, 2, 3)])


@pytest.mark.parametrize("eval_train, evaluated", [("final", [3]), ("every", [1, 2, 3]), (2, [2, 3])])
def test_eval_train_evaluates_the_training_split_when_asked_and_never_changes_the_training(eval_train, evaluated):
    config = small_config(epochs=3, method="mixture", ratio=2.0)
    every = finetune(config.__class__.from_dict({**config.to_dict(), "eval_train": "every"}), cpu=True)
    history = finetune(config.__class__.from_dict({**config.to_dict(), "eval_train": eval_train}), cpu=True)
    assert [row["epoch"] for row in history if np.isfinite(row["train/acc"])] == evaluated
    for row, reference in zip(history, every):
        # the same columns in the same order every epoch (NaN where not evaluated): Ray's progress.csv appends
        # a resumed trial's rows under the header of its first report
        assert list(row) == list(reference) == list(history[0])
        for key, value in reference.items():
            if key.startswith("time/"):
                continue
            if key.startswith(("train/", "train_subset/")) and row["epoch"] not in evaluated:
                assert np.isnan(row[key]), key
            else:
                assert row[key] == value, key  # val, test, loss: identical, as is the training


@pytest.mark.parametrize("checkpoint_every, saved", [(1, [1, 2, 3, 4, 5]), (2, [2, 4, 5]), ("end", [5])])
def test_checkpoint_every_marks_the_epochs_to_save_and_always_the_last(checkpoint_every, saved):
    config = TrainConfig(epochs=5, checkpoint_every=checkpoint_every)
    assert [epoch for epoch in range(1, 6) if config.checkpoints(epoch)] == saved


@pytest.mark.parametrize("key, value", [("eval_train", 0), ("eval_train", "last"), ("eval_train", True),
                                        ("checkpoint_every", 0), ("checkpoint_every", "final"),
                                        ("checkpoint_every", 1.5)])
def test_bad_eval_train_and_checkpoint_every_are_refused(key, value):
    with pytest.raises(GroupsweepError, match=f"{key} must be") as error:
        TrainConfig.from_dict({key: value})
    assert "\n" not in str(error.value)


def test_resume_refuses_a_state_from_other_settings():
    states = []
    finetune(small_config(epochs=1), on_epoch=lambda r: states.append(r.state()), cpu=True)
    with pytest.raises(GroupsweepError, match="different settings.*seed"):
        finetune(small_config(epochs=2, seed=4), resume_state=states[0], cpu=True)
    # epochs too: the schedule spans the run's epochs, so the resumed run would match neither run
    with pytest.raises(GroupsweepError, match=r"different settings \(epochs\)"):
        finetune(small_config(epochs=2), resume_state=states[0], cpu=True)


def test_last_layer_only_changes_only_the_head():
    states = []
    finetune(small_config(epochs=1, last_layer_only=True, optimizer="sgd", lr=1e-2),
             on_epoch=lambda r: states.append(snapshot(r.state())), cpu=True)
    from trainables.models.build import build_model
    torch.manual_seed(3)
    model = build_model("toy-convnextv2-xs", 2)
    initial = model.state_dict()
    head = {name for name, parameter in model.named_parameters()
            if any(parameter is own for own in model.head.parameters())}
    assert head == {"backbone.head.fc.weight", "backbone.head.fc.bias"}
    changed = {name for name, tensor in states[0]["model"].items() if not torch.equal(tensor, initial[name])}
    assert changed == head  # the head trained; nothing else moved (no weight, norm or batch statistic)


def test_upweighting_trains_with_the_class_weights_n_max_over_n_y(monkeypatch):
    import torch.nn.functional as F

    from trainables.config_data import load_config_dataset

    config = small_config(epochs=1, method="upweighting")
    counts = np.bincount(load_config_dataset(config).splits["train"].y, minlength=2)
    weights = []
    cross_entropy = F.cross_entropy

    def recording(*args, weight=None, **kwargs):
        weights.append(weight)
        return cross_entropy(*args, weight=weight, **kwargs)

    monkeypatch.setattr(F, "cross_entropy", recording)
    finetune(config, cpu=True)
    training = [w for w in weights if w is not None]
    assert training and len(training) == len(weights) - 4  # every step; not val, test, train, train_subset
    assert all(w.tolist() == pytest.approx((counts.max() / counts).tolist()) for w in training)
    assert counts[0] != counts[1]  # the weights are not all 1


def test_class_weighted_loss_over_two_processes_averages_to_the_whole_batch_gradient():
    """Upweighting normalises by the weight sum of the whole batch: split over two data-parallel processes, each
    normalising its own part (``cross_entropy(weight=...)`` per process) would give the one class-1 example the
    weight 3.3 / (3 + 3.3) instead of 3.3 / (7 + 3.3); the processes' averaged gradient must be the whole batch's."""
    from trainables.finetune import class_weighted_loss

    torch.manual_seed(0)
    logits = torch.randn(8, 2, requires_grad=True)
    targets = torch.tensor([0, 0, 0, 0, 0, 0, 0, 1])  # the only class-1 example in the second half
    weights = torch.tensor([1.0, 3.3])
    whole = class_weighted_loss(logits, targets, weights)
    expected = torch.autograd.grad(whole, logits)[0]
    assert whole.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, targets, weight=weights).item())

    halves = [slice(0, 4), slice(4, 8)]
    handed = [weights[targets[half]].sum() for half in halves]  # each process's weight sum, all-reduced
    parts = [class_weighted_loss(logits[half], targets[half], weights, reduce=lambda _: handed[0] + handed[1],
                                 processes=2) for half in halves]
    averaged = torch.autograd.grad(sum(parts) / 2, logits)[0]  # DDP averages the processes' gradients
    torch.testing.assert_close(averaged, expected)
    assert (sum(parts) / 2).item() == pytest.approx(whole.item())
    assert class_weighted_loss(logits, targets, None, reduce=lambda total: total, processes=2).item() == \
        pytest.approx(torch.nn.functional.cross_entropy(logits, targets).item())  # no weights: the plain mean


def test_a_last_batch_of_one_example_is_left_out_for_a_batchnorm_model_only():
    """BatchNorm cannot train on one example (a ResNet's epoch of n = k * batch + 1 draws used to stop with a
    traceback); the other models keep every draw."""
    from trainables.config_data import load_config_dataset
    from trainables.finetune import single_example_batch
    from trainables.models.build import build_model

    n_train = len(load_config_dataset(small_config(method="none")).splits["train"].y)
    history = finetune(small_config(model="toy-resnet-xs", method="none", epochs=1, batch_size=n_train - 1),
                       cpu=True)
    assert history[0]["epoch"] == 1 and np.isfinite(history[0]["optim/loss"])
    assert single_example_batch(build_model("toy-resnet-xs", 2, pretrained=False), 2 * 32 + 1, 32)
    assert not single_example_batch(build_model("toy-resnet-xs", 2, pretrained=False), 2 * 32 + 2, 32)
    assert not single_example_batch(build_model("toy-convnextv2-xs", 2, pretrained=False), 2 * 32 + 1, 32)


def test_a_nan_loss_stops_the_run_with_a_divergence_error():
    from trainables.finetune import DivergenceError

    with pytest.raises(DivergenceError, match="training loss is nan in epoch 1"):
        finetune(small_config(epochs=2, lr=1e30), cpu=True)


def test_a_last_step_that_blows_the_weights_up_is_a_divergence_too():
    """One step per epoch, one epoch: its loss (computed before the step) is finite, and no later loss would see
    the step's non-finite weights; the validation loss does."""
    from trainables.config_data import load_config_dataset
    from trainables.finetune import DivergenceError

    n_train = len(load_config_dataset(small_config(method="none")).splits["train"].y)
    with pytest.raises(DivergenceError, match="validation loss is nan after epoch 1 of 1"):
        finetune(small_config(model="toy-resnet-xs", method="none", epochs=1, batch_size=n_train, lr=1e12), cpu=True)


@pytest.mark.parametrize("overrides, message", [
    ({"dataset": "waterbird"}, "unknown dataset 'waterbird'"),
    ({"model": "convnext-huge"}, "unknown model 'convnext-huge'"),
    ({"method": "oversampling"}, "unknown .*method 'oversampling'"),
    ({"method": "mixture", "ratio": 0.5}, "ratio"),
    ({"model": "toy-bert-xs"}, "image inputs but the model takes text"),
    ({"dataset_options": {"sise": 10}}, "no option 'sise'"),
    ({"mixed_precision": "fp16"}, "mixed_precision 'fp16' needs a GPU; use 'bf16' or 'no' on CPU"),
])
def test_bad_input_is_one_line_error(overrides, message):
    with pytest.raises(GroupsweepError, match=message) as error:
        finetune(small_config(**overrides), cpu=True)
    assert "\n" not in str(error.value)


def test_bad_settings_are_refused_when_the_config_is_built():
    with pytest.raises(GroupsweepError, match="unknown training setting 'learning_rate'"):
        TrainConfig.from_dict({"learning_rate": 1e-3})
    with pytest.raises(GroupsweepError, match="schedule 'step'"):
        TrainConfig.from_dict({"schedule": "step"})
    with pytest.raises(GroupsweepError, match="epochs must be a positive integer"):
        TrainConfig.from_dict({"epochs": 0})


def learning_rates(scheduler, optimizer, steps: int) -> list[float]:
    """The learning rate before each of ``steps`` scheduler steps."""
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def sgd() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_schedules_equal_transformers_schedules_without_warmup(schedule):
    from transformers import get_constant_schedule, get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    from trainables.finetune import make_scheduler

    reference = {"cosine": lambda opt: get_cosine_schedule_with_warmup(opt, 0, 20),
                 "linear": lambda opt: get_linear_schedule_with_warmup(opt, 0, 20),
                 "constant": get_constant_schedule}[schedule]
    config = TrainConfig.from_dict({"schedule": schedule, "epochs": 4})  # 4 epochs x 5 steps
    optimizer = sgd()
    ours = learning_rates(make_scheduler(config, optimizer, 5), optimizer, 23)
    optimizer = sgd()
    assert ours == pytest.approx(learning_rates(reference(optimizer), optimizer, 23), abs=1e-12)
    assert ours[0] == 0.1 and (schedule == "constant" or ours[20] == 0.0)


@pytest.mark.parametrize("name, decoupled", [("adamw", True), ("adam", False)])
def test_adam_and_adamw_apply_weight_decay_as_their_papers_define_it(name, decoupled):
    """One step from w = 1 with gradient g = 0: AdamW (decoupled) shrinks w by lr * wd directly; Adam (the D3M
    paper's optimizer) adds wd * w to the gradient, whose first normalised Adam step is lr * sign = lr."""
    from trainables.finetune import make_optimizer

    model = torch.nn.Linear(1, 1, bias=False)
    model.no_weight_decay = ()  # as a GroupModel says which of its parameters take no weight decay
    torch.nn.init.ones_(model.weight)
    optimizer = make_optimizer(TrainConfig(dataset="synthetic-waterbirds", model="toy-resnet-s", optimizer=name,
                                           lr=0.1, weight_decay=0.5), model)
    model.weight.grad = torch.zeros_like(model.weight)
    optimizer.step()
    expected = 1 - 0.1 * 0.5 if decoupled else 1 - 0.1  # Adam: m/sqrt(v) of g' = wd * w is 1 on step one
    assert model.weight.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("optimizer", ["adamw", "adam", "sgd"])
def test_bert_biases_and_layernorm_weights_take_no_weight_decay_as_the_authors_train_them(optimizer):
    """The authors' ``bert.py``: parameters whose name contains ``bias`` or ``LayerNorm.weight`` in a group with weight
    decay 0; every other BERT weight, and every weight of an image model, decays. One step with zero gradients:
    only decayed weights move."""
    from trainables.finetune import make_optimizer
    from trainables.models.build import build_model

    config = TrainConfig(dataset="synthetic-civilcomments", model="toy-bert-xs", optimizer=optimizer, lr=0.1,
                         weight_decay=0.5)
    bert = build_model("toy-bert-xs", 2)
    stepped = make_optimizer(config, bert)
    groups = stepped.param_groups
    names = {id(parameter): name for name, parameter in bert.named_parameters()}
    exempt = sorted(names[id(p)] for group in groups if group["weight_decay"] == 0 for p in group["params"])
    assert [group["weight_decay"] for group in groups] == [0.5, 0.0]
    assert exempt == sorted(name for name in names.values() if "bias" in name or "LayerNorm.weight" in name)
    assert "backbone.classifier.bias" in exempt and "backbone.bert.embeddings.LayerNorm.weight" in exempt
    before = {name: parameter.detach().clone() for name, parameter in bert.named_parameters()}
    for parameter in bert.parameters():
        parameter.grad = torch.zeros_like(parameter)
    stepped.step()
    moved = {name for name, parameter in bert.named_parameters() if not torch.equal(parameter, before[name])}
    assert moved == set(names.values()) - set(exempt)
    image = build_model("toy-resnet-xs", 2)
    assert [group["weight_decay"] for group in make_optimizer(config, image).param_groups] == [0.5]


@pytest.mark.parametrize("optimizer", ["adamw", "adam"])
def test_adams_multi_tensor_steps_are_torchs_per_parameter_steps_bit_for_bit(optimizer):
    """``make_optimizer`` runs torch's ``foreach`` Adam and AdamW; on the CPU, where torch's default is its loop
    over the parameters, five steps on a BERT (two weight-decay groups) give the same bits as that loop."""
    from trainables.finetune import make_optimizer, parameter_groups
    from trainables.models.build import build_model

    config = TrainConfig(dataset="synthetic-civilcomments", model="toy-bert-xs", optimizer=optimizer, lr=0.1,
                         weight_decay=0.5)
    ours, looped = build_model("toy-bert-xs", 2), build_model("toy-bert-xs", 2)
    looped.load_state_dict(ours.state_dict())
    initial = [parameter.detach().clone() for parameter in ours.parameters()]
    stepped = make_optimizer(config, ours)
    assert all(group["foreach"] for group in stepped.param_groups)
    groups = parameter_groups(looped.named_parameters(), 0.5, looped.no_weight_decay)
    reference = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[optimizer](groups, lr=0.1, foreach=False)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        for a, b in zip(ours.parameters(), looped.parameters()):
            a.grad = torch.randn(a.shape, generator=generator)
            b.grad = a.grad.clone()
        stepped.step()
        reference.step()
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), looped.parameters()))
    assert not any(torch.equal(a, b) for a, b in zip(ours.parameters(), initial))  # every parameter moved


def test_a_state_saved_with_other_parameter_groups_is_refused_in_one_line():
    state, config = {}, small_config(model="toy-bert-xs", dataset="synthetic-civilcomments", epochs=2)
    finetune(config, cpu=True, stop_after=1, on_epoch=lambda result: state.update(snapshot(result.state())))
    state["optimizer"]["param_groups"] = state["optimizer"]["param_groups"][:1]  # as saved before the exemption
    with pytest.raises(GroupsweepError, match="saved training state's optimizer does not fit") as error:
        finetune(config, cpu=True, resume_state=state)
    assert "\n" not in str(error.value)


# (schedule, schedule_step, final_lr_factor) -> the factor in force at step t of T steps (T = epochs x 5
# optimizer steps per step, epochs per epoch), in closed form.
CLOSED_FORMS = {
    ("linear", "epoch", 0.1): lambda t, T: 1 - 0.9 * min(t, T) / T,
    ("linear", "step", 0.1): lambda t, T: 1 - 0.9 * min(t, T) / T,
    ("linear", "epoch", 0.0): lambda t, T: 1 - min(t, T) / T,
    ("cosine", "epoch", 0.1): lambda t, T: 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * t / T)),
    ("cosine", "step", 0.2): lambda t, T: 0.2 + 0.8 * 0.5 * (1 + np.cos(np.pi * t / T)),
    ("constant", "epoch", 0.1): lambda t, T: 1.0,
}


@pytest.mark.parametrize("schedule, step, final", sorted(CLOSED_FORMS))
def test_schedule_options_equal_their_closed_forms_at_every_step(schedule, step, final):
    from trainables.finetune import make_scheduler

    epochs, steps_per_epoch = 7, 5
    config = TrainConfig.from_dict({"schedule": schedule, "schedule_step": step, "final_lr_factor": final,
                                    "epochs": epochs})
    total = epochs * (steps_per_epoch if step == "step" else 1)
    optimizer = sgd()
    rates = learning_rates(make_scheduler(config, optimizer, steps_per_epoch), optimizer, total + 1)
    expected = [0.1 * CLOSED_FORMS[schedule, step, final](t, total) for t in range(total + 1)]
    assert rates == pytest.approx(expected, abs=1e-12)


def test_per_epoch_linear_is_the_authors_bert_schedule():
    """The authors' BERT schedule (their ``bert.py``): transformers' ``get_scheduler("linear", num_warmup_steps=0,
    num_training_steps=epochs)`` stepped once per epoch: the factor of epoch e (0-based) of E is 1 - e / E; mean
    0.525 and last epoch 0.05 over 20."""
    from transformers import get_scheduler

    from trainables.finetune import make_scheduler

    epochs = 20
    config = TrainConfig.from_dict({"schedule": "linear", "schedule_step": "epoch", "epochs": epochs})
    optimizer = sgd()
    ours = learning_rates(make_scheduler(config, optimizer, 17), optimizer, epochs + 1)
    optimizer = sgd()
    authors = learning_rates(get_scheduler("linear", optimizer=optimizer, num_warmup_steps=0,
                                           num_training_steps=epochs), optimizer, epochs + 1)
    assert ours == pytest.approx(authors, abs=1e-12)
    factors = np.array(ours[:epochs]) / 0.1
    assert factors == pytest.approx([1 - e / epochs for e in range(epochs)], abs=1e-12)
    assert factors.mean() == pytest.approx(0.525) and factors[-1] == pytest.approx(0.05)


def test_per_epoch_linear_to_a_final_factor_is_torchs_linear_lr():
    """``final_lr_factor`` f with a per-epoch linear decay: torch's ``LinearLR(start_factor=1, end_factor=f,
    total_iters=epochs)`` (the factor of epoch e of E is 1 - (1 - f) e / E)."""
    from trainables.finetune import make_scheduler

    epochs = 20
    config = TrainConfig.from_dict({"schedule": "linear", "schedule_step": "epoch", "final_lr_factor": 0.1,
                                    "epochs": epochs})
    optimizer = sgd()
    ours = learning_rates(make_scheduler(config, optimizer, 17), optimizer, epochs + 3)
    optimizer = sgd()
    torchs = learning_rates(torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1, end_factor=0.1,
                                                              total_iters=epochs), optimizer, epochs + 3)
    assert ours == pytest.approx(torchs, abs=1e-12)
    factors = np.array(ours[:epochs]) / 0.1
    assert factors == pytest.approx([1 - 0.9 * e / epochs for e in range(epochs)], abs=1e-12)


@pytest.mark.parametrize("key, value", [("schedule_step", "batch"), ("final_lr_factor", 1.5),
                                        ("final_lr_factor", -0.1), ("final_lr_factor", "0.1")])
def test_bad_schedule_options_are_refused(key, value):
    with pytest.raises(GroupsweepError, match=key) as error:
        TrainConfig.from_dict({key: value})
    assert "\n" not in str(error.value)


# Batch sizes that divide every split (240 / 80 / 120 examples): one compiled graph for training and one for
# evaluation, no recompilation for a smaller last batch (compiling dominates this test's time).
COMPILED_RUN = """
import json, sys
import torch
from tests.test_finetune import small_config
from trainables.finetune import finetune
from tests.test_finetune import snapshot
config = small_config(model="toy-resnet-xs", channels_last=True, compile_model=True, epochs=3, batch_size=40, eval_batch_size=40)
states = []
history = finetune(config, cpu=True, on_epoch=lambda result: states.append(snapshot(result.state())))
compiled_modules = [m for m in sys.modules if m.startswith("torch._inductor")]
resumed = finetune(config, cpu=True, resume_state=states[1])
print(json.dumps({"history": history, "resumed": resumed, "keys": sorted(states[-1]["model"]),
                  "inductor": bool(compiled_modules)}))
"""


@pytest.mark.slow
def test_channels_last_and_compiled_training_computes_what_the_plain_loop_does():
    """``channels_last`` and ``compile_model`` (inductor, through Accelerate) train the same model: the same
    losses and accuracies up to float reordering, a checkpoint with the plain model's keys, and an exact
    resume. Run in a fresh process: Accelerate keeps one dynamo backend per process."""
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", COMPILED_RUN], cwd=root, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": root})
    assert done.returncode == 0, done.stderr[-3000:]
    compiled = json.loads(done.stdout.strip().splitlines()[-1])
    plain = finetune(small_config(model="toy-resnet-xs", epochs=3, batch_size=40, eval_batch_size=40), cpu=True)
    assert compiled["inductor"]
    plain_keys = sorted(small_state_keys())
    assert compiled["keys"] == plain_keys  # no torch.compile wrapper prefix: the checkpoint loads anywhere
    resumed, = compiled["resumed"]
    assert resumed["epoch"] == 3
    for key, value in compiled["history"][-1].items():
        if not key.startswith("time/"):
            assert resumed[key] == value or (value != value and resumed[key] != resumed[key]), key  # NaN == NaN
    for got, expected in zip(compiled["history"], plain):
        assert got["epoch"] == expected["epoch"]
        assert got["optim/loss"] == pytest.approx(expected["optim/loss"], rel=1e-2)
        for key in ("val/acc", "test/acc", "val/wga"):
            assert got[key] == pytest.approx(expected[key], abs=0.02), key


def small_state_keys() -> list[str]:
    states = []
    finetune(small_config(model="toy-resnet-xs", epochs=1), cpu=True, on_epoch=lambda result: states.append(result.state()))
    return list(states[0]["model"])
