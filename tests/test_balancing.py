"""Balancing plans: kept counts, draw probabilities, sampler frequencies, seeding, nesting, errors."""

import dataclasses
import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainables.balancing import (METHODS, RATIO_METHODS, check_method, group_info, make_plan, make_sampler,
                                  method_label, within_group_info)
from trainables.errors import GroupsweepError

# Waterbirds-like layout, g = y * 2 + s: landbirds (class 0) 27 on land + 3 on water, waterbirds
# (class 1) 2 on land + 8 on water. Class counts 30/10 (native ratio 3:1); examples interleaved.
GROUP_SIZES = {0: 27, 1: 3, 2: 2, 3: 8}
_ORDER = np.random.default_rng(12345).permutation(40)
GROUPS = np.repeat(list(GROUP_SIZES), list(GROUP_SIZES.values()))[_ORDER]
Y = GROUPS // 2

DRAWS = 200_000


def class_counts(plan, y=Y):
    return np.bincount(y[plan.indices], minlength=y.max() + 1)


def draw_positions(plan, seed=0, draws=None):
    """Positions drawn by the plan's sampler (``draws`` overrides the plan's num_samples)."""
    if draws is not None:
        plan = dataclasses.replace(plan, num_samples=draws)
    sampler = make_sampler(plan, torch.Generator().manual_seed(seed))
    assert len(sampler) == plan.num_samples
    return np.fromiter(iter(sampler), dtype=np.int64)


def assert_frequencies(labels, expected):
    """Empirical frequencies of ``labels`` within 5 binomial standard deviations of ``expected``."""
    n = len(labels)
    freq = np.bincount(labels, minlength=len(expected)) / n
    for value, p in enumerate(expected):
        tolerance = 5 * math.sqrt(p * (1 - p) / n)
        assert abs(freq[value] - p) <= tolerance, (value, freq[value], p, tolerance)


def test_layout():
    assert np.bincount(Y).tolist() == [30, 10]
    assert np.bincount(GROUPS).tolist() == [27, 3, 2, 8]


def test_none():
    plan = make_plan(Y, GROUPS, "none")
    assert plan.indices.tolist() == list(range(40))
    assert plan.sampling_weights is None and plan.class_weights is None
    assert plan.num_samples == 40


def test_subsetting_cuts_every_class_to_n_min():
    plan = make_plan(Y, GROUPS, "subsetting", seed=3)
    assert class_counts(plan).tolist() == [10, 10]
    assert plan.num_samples == 20
    assert plan.sampling_weights is None and plan.class_weights is None
    assert np.all(np.diff(plan.indices) > 0)  # sorted, no duplicates
    # the minority class is kept whole
    assert set(np.flatnonzero(Y == 1)) <= set(plan.indices.tolist())


def test_upsampling_weights():
    plan = make_plan(Y, GROUPS, "upsampling")
    assert plan.indices.tolist() == list(range(40))
    assert plan.num_samples == 40 and plan.class_weights is None
    expected = np.where(Y == 0, 1 / 60, 1 / 20)  # 1 / (K * n_y)
    np.testing.assert_allclose(plan.sampling_weights, expected)
    assert plan.sampling_weights.sum() == pytest.approx(1.0)


def test_upweighting_weights():
    plan = make_plan(Y, GROUPS, "upweighting")
    assert plan.indices.tolist() == list(range(40))
    assert plan.sampling_weights is None and plan.num_samples == 40
    assert plan.class_weights.tolist() == [1.0, 3.0]  # n_max / n_y


def test_upweighting_three_classes():
    y = np.repeat([0, 1, 2], [8, 32, 16])
    plan = make_plan(y, y, "upweighting")
    assert plan.class_weights.tolist() == [4.0, 1.0, 2.0]


def test_weighted_cross_entropy_is_normalised_by_the_weight_sum():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 2, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0] * 11 + [1] * 5)
    weights = torch.from_numpy(make_plan(Y, GROUPS, "upweighting").class_weights.copy())
    per_example = F.cross_entropy(logits, labels, reduction="none")
    w = weights[labels]
    expected = (w * per_example).sum() / w.sum()
    assert F.cross_entropy(logits, labels, weight=weights).item() == pytest.approx(expected.item(), rel=1e-12)
    assert expected.item() != pytest.approx(per_example.mul(w).mean().item())  # not the plain batch mean


def test_upweighting_objective_equals_upsampling_expectation():
    """Over the whole split, weighted CE equals the expected loss of one upsampling draw."""
    logits = torch.randn(40, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    labels = torch.from_numpy(Y)
    weights = torch.from_numpy(make_plan(Y, GROUPS, "upweighting").class_weights.copy())
    draw_probability = torch.from_numpy(make_plan(Y, GROUPS, "upsampling").sampling_weights.copy())
    expected_upsampled = (draw_probability * F.cross_entropy(logits, labels, reduction="none")).sum()
    assert F.cross_entropy(logits, labels, weight=weights).item() == pytest.approx(expected_upsampled.item(), rel=1e-12)


@pytest.mark.parametrize(("ratio", "kept"), [(1, [10, 10]), (1.55, [15, 10]), (2, [20, 10]), (2.5, [25, 10])])
def test_mixture_caps_classes_then_balances(ratio, kept):
    plan = make_plan(Y, GROUPS, "mixture", ratio=ratio, seed=1)
    assert class_counts(plan).tolist() == kept
    assert plan.num_samples == sum(kept)
    assert plan.class_weights is None
    kept_y = Y[plan.indices]
    np.testing.assert_allclose(plan.sampling_weights, 1 / (2 * np.array(kept)[kept_y]))


def test_mixture_one_is_the_subsetting_subset():
    for seed in range(3):
        mix = make_plan(Y, GROUPS, "mixture", ratio=1, seed=seed)
        sub = make_plan(Y, GROUPS, "subsetting", seed=seed)
        assert mix.indices.tolist() == sub.indices.tolist()


@pytest.mark.parametrize("ratio", [3, 3.0, 30 / 10, 4, 1e308])
def test_mixture_at_or_above_native_ratio_is_upsampling(ratio, caplog):
    caplog.set_level(logging.INFO, logger="groupsweep.balancing")
    mix = make_plan(Y, GROUPS, "mixture", ratio=ratio)
    up = make_plan(Y, GROUPS, "upsampling")
    assert mix.indices.tolist() == up.indices.tolist()
    np.testing.assert_array_equal(mix.sampling_weights, up.sampling_weights)
    assert mix.num_samples == up.num_samples == 40
    assert any("equals upsampling" in r.getMessage() and r.name == "groupsweep.balancing" for r in caplog.records)


def test_mixture_ratio_from_floating_division_reaches_n_max():
    y = np.repeat([0, 1], [15, 11])
    assert (15 / 11) * 11 < 15  # floating point falls short of n_max
    plan = make_plan(y, y, "mixture", ratio=15 / 11)
    assert class_counts(plan, y).tolist() == [15, 11]


def test_mixture_below_native_ratio_does_not_log(caplog):
    caplog.set_level(logging.INFO, logger="groupsweep.balancing")
    make_plan(Y, GROUPS, "mixture", ratio=2.9)
    assert not caplog.records


def test_mixture_nosubset_probabilities():
    plan = make_plan(Y, GROUPS, "mixture-nosubset", ratio=2)
    assert plan.indices.tolist() == list(range(40)) and plan.num_samples == 40
    # p(y) ∝ min(n_y, 2 * 10) = (20, 10) -> (2/3, 1/3), uniform within class
    np.testing.assert_allclose(plan.sampling_weights, np.where(Y == 0, (2 / 3) / 30, (1 / 3) / 10))


def test_mixture_nosubset_three_classes():
    y = np.repeat([0, 1, 2], [40, 20, 10])
    plan = make_plan(y, y, "mixture-nosubset", ratio=3)
    # caps min(n_y, 30) = (30, 20, 10) -> p = (1/2, 1/3, 1/6)
    class_p = np.bincount(y, weights=plan.sampling_weights)
    np.testing.assert_allclose(class_p, [1 / 2, 1 / 3, 1 / 6])
    mixture = make_plan(y, y, "mixture", ratio=3)
    assert class_counts(mixture, y).tolist() == [30, 20, 10] and mixture.num_samples == 60


def test_mixture_nosubset_endpoints():
    up = make_plan(Y, GROUPS, "upsampling")
    np.testing.assert_allclose(make_plan(Y, GROUPS, "mixture-nosubset", ratio=1).sampling_weights, up.sampling_weights)
    natural = make_plan(Y, GROUPS, "mixture-nosubset", ratio=3).sampling_weights
    np.testing.assert_allclose(natural, np.full(40, 1 / 40))


def test_subg_cuts_every_group_to_the_smallest():
    plan = make_plan(Y, GROUPS, "subg", seed=2)
    assert np.bincount(GROUPS[plan.indices], minlength=4).tolist() == [2, 2, 2, 2]
    assert plan.num_samples == 8 and plan.sampling_weights is None and plan.class_weights is None


def test_subg_ignores_absent_groups():
    groups = np.repeat([0, 2, 3], [9, 4, 6])  # group 1 absent
    plan = make_plan(groups // 2, groups, "subg")
    assert np.bincount(groups[plan.indices], minlength=4).tolist() == [4, 0, 4, 4]


def test_rwg_weights():
    plan = make_plan(Y, GROUPS, "rwg")
    assert plan.indices.tolist() == list(range(40)) and plan.num_samples == 40
    sizes = np.array([27, 3, 2, 8])
    np.testing.assert_allclose(plan.sampling_weights, 1 / (4 * sizes[GROUPS]))


# --- sampler frequencies (200k draws; tolerance 5 binomial standard deviations) ---

def test_upsampling_sampler_frequencies():
    plan = make_plan(Y, GROUPS, "upsampling")
    assert len(draw_positions(plan)) == 40
    positions = draw_positions(plan, seed=0, draws=DRAWS)
    assert_frequencies(Y[plan.indices[positions]], [0.5, 0.5])
    # uniform within class: every example of class 1 has probability 1/20
    assert_frequencies(positions, plan.sampling_weights)


def test_mixture_sampler_frequencies():
    plan = make_plan(Y, GROUPS, "mixture", ratio=2, seed=4)
    assert len(draw_positions(plan)) == 30
    positions = draw_positions(plan, seed=1, draws=DRAWS)
    assert positions.max() < len(plan.indices)
    assert_frequencies(Y[plan.indices[positions]], [0.5, 0.5])
    # draws never leave the subset
    assert set(plan.indices[positions].tolist()) == set(plan.indices.tolist())


def test_mixture_nosubset_sampler_frequencies():
    plan = make_plan(Y, GROUPS, "mixture-nosubset", ratio=2)
    positions = draw_positions(plan, seed=2, draws=DRAWS)
    assert_frequencies(Y[plan.indices[positions]], [2 / 3, 1 / 3])


def test_rwg_sampler_group_frequencies():
    plan = make_plan(Y, GROUPS, "rwg")
    positions = draw_positions(plan, seed=3, draws=DRAWS)
    assert_frequencies(GROUPS[plan.indices[positions]], [0.25] * 4)


@pytest.mark.parametrize("method", ["none", "subsetting", "upweighting", "subg"])
def test_plain_plans_shuffle_each_kept_example_once(method):
    plan = make_plan(Y, GROUPS, method)
    positions = draw_positions(plan, seed=5)
    assert sorted(positions.tolist()) == list(range(len(plan.indices)))
    assert positions.tolist() == draw_positions(plan, seed=5).tolist()
    assert positions.tolist() != draw_positions(plan, seed=6).tolist()


def test_weighted_sampler_is_reproducible():
    plan = make_plan(Y, GROUPS, "upsampling")
    assert draw_positions(plan, seed=7).tolist() == draw_positions(plan, seed=7).tolist()


# --- seeding and nesting ---

@pytest.mark.parametrize(("method", "ratio"), [("subsetting", None), ("mixture", 2), ("subg", None)])
def test_subset_depends_only_on_inputs_and_seed(method, ratio):
    first = make_plan(Y, GROUPS, method, ratio=ratio, seed=11).indices.tolist()
    np.random.seed(999)
    torch.manual_seed(999)
    np.random.default_rng().permutation(100)
    again = make_plan(list(Y), list(GROUPS), method, ratio=ratio, seed=11).indices.tolist()
    assert first == again
    subsets = {tuple(make_plan(Y, GROUPS, method, ratio=ratio, seed=s).indices.tolist()) for s in range(5)}
    assert len(subsets) == 5


def test_class_subset_does_not_depend_on_group_labels():
    shuffled_groups = Y * 2 + np.random.default_rng(0).integers(0, 2, size=40)
    assert make_plan(Y, GROUPS, "subsetting", seed=8).indices.tolist() == \
        make_plan(Y, shuffled_groups, "subsetting", seed=8).indices.tolist()


def test_class_and_group_subsets_of_one_seed_are_drawn_from_separate_streams():
    """Where a group label is the class label (one group per class), ``subsetting`` and ``subg`` cut the same
    counts, but from separate random streams: the examples they keep differ for every seed."""
    for seed in range(5):
        by_class = make_plan(Y, Y, "subsetting", seed=seed).indices
        by_group = make_plan(Y, Y, "subg", seed=seed).indices
        assert np.bincount(Y[by_class]).tolist() == np.bincount(Y[by_group]).tolist() == [10, 10]
        assert by_class.tolist() != by_group.tolist()


def test_subsets_are_nested_across_ratios():
    for seed in range(4):
        chain = [set(make_plan(Y, GROUPS, "subsetting", seed=seed).indices.tolist())]
        chain += [set(make_plan(Y, GROUPS, "mixture", ratio=r, seed=seed).indices.tolist()) for r in (1.5, 2, 2.5, 3)]
        for smaller, larger in zip(chain, chain[1:]):
            assert smaller < larger
        assert chain[-1] == set(range(40))


def test_plan_arrays_are_read_only():
    plan = make_plan(Y, GROUPS, "upsampling")
    with pytest.raises(ValueError):
        plan.indices[0] = 5
    with pytest.raises(ValueError):
        plan.sampling_weights[0] = 1.0


# --- labels and validation ---

def test_method_label():
    assert method_label("upsampling") == "upsampling"
    assert method_label("mixture", 2) == "mixture 2:1"
    assert method_label("mixture", 2.5) == "mixture 2.5:1"
    assert method_label("mixture-nosubset", 3.0) == "mixture-nosubset 3:1"
    assert method_label("mixture-nosubset", 1.5) == "mixture-nosubset 1.5:1"
    assert method_label("none", float("nan")) == "none"  # a table's empty ratio cell
    assert METHODS == ("none", "subsetting", "upsampling", "upweighting", "mixture", "mixture-nosubset", "subg", "rwg",
                       "d3m", "auto-d3m", "jtt", "dfr", "groupdro")
    assert method_label("d3m") == "d3m"
    assert RATIO_METHODS == ("mixture", "mixture-nosubset")


def test_every_method_states_the_group_labels_it_reads():  # the D3M paper files JTT under val (README)
    assert {method: group_info(method) for method in METHODS} == {
        "none": "none", "subsetting": "none", "upsampling": "none", "upweighting": "none", "mixture": "none",
        "mixture-nosubset": "none", "auto-d3m": "none", "jtt": "none",
        "d3m": "val", "dfr": "val",
        "subg": "train+val", "rwg": "train+val", "groupdro": "train+val",
    }
    assert group_info("a-method-of-another-version") is None
    # DFR^Tr_Tr fits its last layer on group-balanced training data: training group labels too
    assert group_info("dfr", {"dfr_variant": "tr_tr"}) == "train+val"
    assert group_info("dfr", {"dfr_variant": "val_tr"}) == group_info("dfr", {}) == "val"
    assert group_info("none", {"dfr_variant": "tr_tr"}) == "none"  # the key is DFR's alone


@pytest.mark.parametrize("limit, allowed", [
    ("none", {"none", "upsampling", "auto-d3m"}),
    ("val", {"none", "upsampling", "auto-d3m", "d3m"}),
    ("train+val", {"none", "upsampling", "auto-d3m", "d3m", "rwg", "groupdro"}),
])
def test_within_group_info_orders_none_val_train_and_val(limit, allowed):
    methods = ["none", "upsampling", "auto-d3m", "d3m", "rwg", "groupdro", "unknown"]
    assert {method for method in methods if within_group_info(group_info(method), limit)} == allowed


def test_a_bad_group_information_limit_is_one_line():
    with pytest.raises(GroupsweepError, match=r"unknown group information 'train'; choose one of: none, val, "
                                              r"train\+val"):
        within_group_info("none", "train")


@pytest.mark.parametrize("method", ["d3m", "auto-d3m", "jtt", "dfr"])
def test_base_model_methods_get_their_plan_from_training_plan_not_make_plan(method):
    with pytest.raises(GroupsweepError, match="trainables.plans.training_plan"):
        make_plan(Y, GROUPS, method)


def test_check_method_returns_float_ratio():
    assert check_method("mixture", 2) == 2.0 and isinstance(check_method("mixture", 2), float)
    assert check_method("none") is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(method="balanced"), "unknown balancing method 'balanced'; choose one of: none, subsetting, upsampling"),
        (dict(method="mixture", ratio=0.5), "balancing ratio 0.5 for 'mixture' is invalid; allowed: a finite number >= 1"),
        (dict(method="mixture", ratio=float("nan")), "balancing ratio nan"),
        (dict(method="mixture", ratio=float("inf")), "balancing ratio inf"),
        (dict(method="mixture", ratio="2"), "balancing ratio '2'"),
        (dict(method="mixture", ratio=True), "balancing ratio True"),
        (dict(method="upsampling", ratio=2), "balancing method 'upsampling' takes no ratio (got 2); only mixture, mixture-nosubset"),
        (dict(method="mixture"), "balancing method 'mixture' needs a ratio; allowed: a number >= 1"),
        (dict(method="mixture-nosubset"), "balancing method 'mixture-nosubset' needs a ratio"),
        (dict(method="none", seed=-1), "balancing seed -1 is invalid; allowed: an integer >= 0"),
        (dict(method="none", seed=1.5), "balancing seed 1.5 is invalid"),
        (dict(method="none", y=np.array([0, 2, 2, 0]), groups=np.array([0, 4, 4, 0])),
         "class 1 has no training example; every class 0..2 must be present"),
        (dict(method="none", y=np.array([0, 1]), groups=np.array([0, 2]), n_classes=3), "class 2 has no training example"),
        (dict(method="none", y=np.array([0, 3]), groups=np.array([0, 2]), n_classes=3), "class label 3 out of range; allowed: 0..2"),
        (dict(method="none", y=np.array([0, 1, 1]), groups=np.array([0, 2])),
         "balancing got 3 class labels but 2 group labels; they must match"),
        (dict(method="none", y=np.array([0.0, 1.0]), groups=np.array([0, 2])), "balancing class labels must be a 1-D integer array"),
        (dict(method="none", y=np.array([[0, 1]]), groups=np.array([0, 2])), "balancing class labels must be a 1-D integer array"),
        (dict(method="none", y=np.array([0, -1]), groups=np.array([0, 2])), "balancing class labels contain -1"),
        (dict(method="none", y=np.array([], dtype=int), groups=np.array([], dtype=int)), "empty training split"),
    ],
)
def test_bad_input_one_line_error(kwargs, message):
    kwargs = {"y": Y, "groups": GROUPS, **kwargs}
    with pytest.raises(GroupsweepError) as info:
        make_plan(**kwargs)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
