"""GroupDRO: the published update rule on hand-computed numbers, data-parallel equivalence, and a run that
reports its group weights and resumes exactly."""

import math

import pytest
import torch

from trainables.balancing import make_plan
from trainables.config import TrainConfig
from trainables.errors import GroupsweepError
from trainables.finetune import finetune
from trainables.groupdro import GroupDRO

LN2 = math.log(2.0)  # eta = ln 2 makes every factor exp(eta * x) = 2 ** x

# Groups 0, 1, 2 in the batch (group 3 absent): per-example losses 0.5 and 1.5 (group 0, mean 1), 0 (group 1),
# 2 (group 2).
LOSSES = [0.5, 0.0, 1.5, 2.0]
GROUPS = [0, 1, 0, 2]


def test_one_step_is_the_exponentiated_gradient_update_and_the_weighted_loss():
    dro = GroupDRO([4, 1, 16, 9], eta=LN2)
    losses = torch.tensor(LOSSES, requires_grad=True)
    loss = dro.loss(losses, torch.tensor(GROUPS))
    # q = (1/4) * (2**1, 2**0, 2**2, 1 [absent: not updated]) normalised: (2, 1, 4, 1) / 8
    assert dro.q.tolist() == pytest.approx([0.25, 0.125, 0.5, 0.125])
    # loss = 0.25 * 1 + 0.125 * 0 + 0.5 * 2 (+ 0.125 * nothing) = 1.25
    assert loss.item() == pytest.approx(1.25)
    loss.backward()
    # d loss / d loss_i = q_g / (count of g in the batch): 0.25 / 2, 0.125 / 1, 0.25 / 2, 0.5 / 1
    assert losses.grad.tolist() == pytest.approx([0.125, 0.125, 0.125, 0.5])
    # A second step with the same batch multiplies by the same factors again: (4, 1, 16, 1) / 22
    dro.loss(torch.tensor(LOSSES), torch.tensor(GROUPS))
    assert dro.q.tolist() == pytest.approx([4 / 22, 1 / 22, 16 / 22, 1 / 22])


def test_the_generalisation_adjustment_adds_c_over_sqrt_n_to_present_groups():
    dro = GroupDRO([4, 1, 16, 9], eta=LN2, adjustment=1.0)
    loss = dro.loss(torch.tensor(LOSSES), torch.tensor(GROUPS))
    # exponents (in bits): 1 + 1/2, 0 + 1/1, 2 + 1/4; group 3 is absent and keeps factor 1
    factors = [2 ** 1.5, 2 ** 1.0, 2 ** 2.25, 1.0]
    expected = [f / sum(factors) for f in factors]
    assert dro.q.tolist() == pytest.approx(expected)
    # the loss weighs the unadjusted group losses
    assert loss.item() == pytest.approx(expected[0] * 1 + expected[1] * 0 + expected[2] * 2)


def test_eta_zero_keeps_uniform_weights():
    dro = GroupDRO([3, 3, 3, 3], eta=0.0)
    loss = dro.loss(torch.tensor(LOSSES), torch.tensor(GROUPS))
    assert dro.q.tolist() == [0.25] * 4 and loss.item() == pytest.approx(0.25 * (1 + 0 + 2))


def test_two_processes_hold_the_same_weights_and_average_to_the_whole_batch_gradient():
    whole = GroupDRO([4, 1, 16, 9], eta=0.3, adjustment=0.5)
    losses = torch.tensor(LOSSES, requires_grad=True)
    whole.loss(losses, torch.tensor(GROUPS)).backward()

    halves = [slice(0, 2), slice(2, 4)]
    parts = [torch.tensor(LOSSES[half], requires_grad=True) for half in halves]
    groups = [torch.tensor(GROUPS[half]) for half in halves]
    # what each process hands to the all-reduce (its group sums and counts), as the module itself builds them
    handed = []
    for rank in range(2):
        GroupDRO([4, 1, 16, 9], eta=0.3).loss(parts[rank].detach(), groups[rank], processes=2,
                                              reduce=lambda stats: handed.append(stats.clone()) or stats)
    expected = [torch.stack([torch.zeros(4).index_add(0, g, p.detach()), torch.bincount(g, minlength=4).float()])
                for p, g in zip(parts, groups)]
    assert all(torch.equal(mine, theirs) for mine, theirs in zip(handed, expected))
    gradients = []
    for rank in range(2):
        def all_reduce(stats, rank=rank):  # the sum over processes of what each handed in
            assert torch.equal(stats, handed[rank])
            return handed[0] + handed[1]

        dro = GroupDRO([4, 1, 16, 9], eta=0.3, adjustment=0.5)
        dro.loss(parts[rank], groups[rank], reduce=all_reduce, processes=2).backward()
        assert dro.q.tolist() == pytest.approx(whole.q.tolist())
        gradients.append(parts[rank].grad)
    # Data parallel averages the processes' gradients
    assert (torch.cat(gradients) / 2).tolist() == pytest.approx(losses.grad.tolist())


def test_state_round_trip():
    dro = GroupDRO([4, 1, 16, 9], eta=LN2)
    dro.loss(torch.tensor(LOSSES), torch.tensor(GROUPS))
    state = dro.state_dict()
    other = GroupDRO([4, 1, 16, 9], eta=LN2)
    other.load_state_dict(state)
    assert torch.equal(other.q, dro.q) and other.q.data_ptr() != state["q"].data_ptr()
    saved = state["q"].clone()
    dro.q.mul_(2)  # in place: a state sharing q's storage would change with it
    assert torch.equal(state["q"], saved)  # the saved state is a copy


def test_groupdro_draws_its_batches_group_balanced_as_the_authors_do():
    """group_DRO's commands pass ``--reweight_groups --robust``: every example, each draw a present group
    uniformly, then an example of it (rwg's plan); the loss is what differs."""
    y, groups = [0, 0, 0, 1], [0, 1, 1, 3]
    plan = make_plan(y, groups, "groupdro")
    assert plan.indices.tolist() == [0, 1, 2, 3] and plan.num_samples == 4 and plan.class_weights is None
    assert plan.sampling_weights.tolist() == pytest.approx([1 / 3, 1 / 6, 1 / 6, 1 / 3])
    assert plan.sampling_weights.tolist() == make_plan(y, groups, "rwg").sampling_weights.tolist()


@pytest.mark.parametrize("key, value", [("groupdro_eta", -0.1), ("groupdro_eta", float("nan")),
                                        ("groupdro_adjustment", -1), ("groupdro_adjustment", "big")])
def test_bad_settings_are_refused(key, value):
    with pytest.raises(GroupsweepError, match=f"{key} must be a non-negative number"):
        TrainConfig.from_dict({"method": "groupdro", key: value})


def test_a_groupdro_run_reports_its_weights_and_saves_them_in_its_state():
    config = TrainConfig.from_dict(dict(dataset="synthetic-waterbirds", model="toy-convnextv2-xs",
                                        dataset_options={"size": 120, "val_size": 40, "test_size": 60},
                                        method="groupdro", groupdro_eta=0.5, seed=1, epochs=1, lr=1e-3,
                                        batch_size=32, num_threads=1))
    results = []
    finetune(config, on_epoch=results.append, cpu=True)
    metrics = results[0].metrics
    q = [metrics[f"optim/groupdro_q_group_{g}"] for g in range(4)]
    assert sum(q) == pytest.approx(1.0) and q != [0.25] * 4
    assert results[0].state()["groupdro"]["q"].tolist() == pytest.approx(q)
