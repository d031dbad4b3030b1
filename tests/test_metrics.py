"""Accuracy metrics on hand-computed cases."""

import math

import numpy as np
import pytest

from analysis.metrics import (
    average_accuracy,
    bias_unsupervised_score,
    class_accuracies,
    evaluate_predictions,
    group_accuracies,
    worst_class_accuracy,
    worst_group_accuracy,
)
from trainables.errors import GroupsweepError

# Four possible groups (g = y * 2 + s); group 2 is absent from this split.
#   group 0 (y=0): predictions 0 0 0 1 -> 3/4     group 1 (y=0): 0 1 -> 1/2
#   group 3 (y=1): predictions 1 1 1   -> 3/3
GROUPS = np.array([0, 0, 0, 0, 1, 1, 3, 3, 3])
Y_TRUE = GROUPS // 2
Y_PRED = np.array([0, 0, 0, 1, 0, 1, 1, 1, 1])
ORDER = np.array([4, 0, 7, 2, 8, 1, 5, 3, 6])  # any order gives the same metrics


def test_group_accuracies_with_absent_group():
    acc, counts = group_accuracies(Y_TRUE[ORDER], Y_PRED[ORDER], GROUPS[ORDER], n_groups=4)
    assert counts.tolist() == [4, 2, 0, 3]
    assert acc[[0, 1, 3]].tolist() == [0.75, 0.5, 1.0]
    assert math.isnan(acc[2])


def test_group_accuracies_default_size():
    acc, counts = group_accuracies(Y_TRUE, Y_PRED, GROUPS)
    assert len(acc) == len(counts) == 4


def test_worst_group_accuracy_ignores_absent_groups():
    assert worst_group_accuracy(Y_TRUE, Y_PRED, GROUPS) == 0.5


def test_class_accuracies_and_worst_class():
    acc, counts = class_accuracies(Y_TRUE, Y_PRED)
    assert counts.tolist() == [6, 3]
    assert acc.tolist() == pytest.approx([4 / 6, 1.0])
    assert worst_class_accuracy(Y_TRUE, Y_PRED) == pytest.approx(2 / 3)


def test_class_accuracies_absent_class_is_nan():
    acc, counts = class_accuracies(np.array([0, 0, 2]), np.array([0, 1, 2]))
    assert counts.tolist() == [2, 0, 1] and math.isnan(acc[1])
    assert worst_class_accuracy(np.array([0, 0, 2]), np.array([0, 1, 2])) == 0.5


def test_pooled_average_accuracy():
    assert average_accuracy(Y_TRUE, Y_PRED) == pytest.approx(7 / 9)
    assert average_accuracy(Y_TRUE, Y_PRED, groups=GROUPS) == pytest.approx(7 / 9)


def test_weighted_average_accuracy_renormalises_over_present_groups():
    weights = [0.4, 0.1, 0.3, 0.2]  # group 2 (weight 0.3) is absent -> divide by 0.7
    expected = (0.4 * 0.75 + 0.1 * 0.5 + 0.2 * 1.0) / 0.7
    assert average_accuracy(Y_TRUE, Y_PRED, GROUPS, weights) == pytest.approx(expected)
    assert expected == pytest.approx(0.55 / 0.7)


def test_weighted_average_accuracy_all_groups_present():
    groups = np.array([0, 0, 1, 2, 3, 3])
    y_true = groups // 2
    y_pred = np.array([0, 1, 0, 0, 1, 0])  # group accuracies 1/2, 1, 0, 1/2
    weights = np.array([0.7, 0.05, 0.05, 0.2])
    assert average_accuracy(y_true, y_pred, groups, weights) == pytest.approx(0.7 * 0.5 + 0.05 + 0.2 * 0.5)


def test_bias_unsupervised_score_with_an_empty_cell():
    # cells S[y, b]: (0,0): 4 examples, candidate right on 3 -> 3/4
    #                (0,1): 2 examples, right on 1 -> 1/2
    #                (1,1): 3 examples, right on 2 -> 2/3
    #                (1,0): empty
    y_true = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1])
    y_biased = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
    y_pred = np.array([0, 0, 0, 1, 0, 1, 1, 1, 0])
    assert bias_unsupervised_score(y_true, y_pred, y_biased) == pytest.approx((3 / 4 + 1 / 2 + 2 / 3) / 3)
    assert bias_unsupervised_score(y_true, y_pred, y_biased, empty_cells="zero") == pytest.approx((3 / 4 + 1 / 2 + 2 / 3) / 4)
    # with three classes declared, the paper's formula divides by 3² = 9; skipping is unchanged
    assert bias_unsupervised_score(y_true, y_pred, y_biased, n_classes=3, empty_cells="zero") == pytest.approx(23 / 12 / 9)
    assert bias_unsupervised_score(y_true, y_pred, y_biased, n_classes=3) == pytest.approx(23 / 36)


def test_bias_unsupervised_score_full_cells_matches_both_rules():
    y_true = np.array([0, 0, 1, 1])
    y_biased = np.array([0, 1, 0, 1])
    y_pred = np.array([0, 1, 1, 0])  # cell accuracies 1, 0, 1, 0
    assert bias_unsupervised_score(y_true, y_pred, y_biased) == 0.5
    assert bias_unsupervised_score(y_true, y_pred, y_biased, empty_cells="zero") == 0.5


def test_evaluate_predictions():
    metrics = evaluate_predictions(Y_TRUE, Y_PRED, GROUPS, n_classes=2, n_groups=4)
    assert metrics["acc"] == pytest.approx(7 / 9) and metrics["avg_acc"] == pytest.approx(7 / 9)
    assert metrics["wga"] == 0.5 and metrics["wca"] == pytest.approx(2 / 3)
    assert [metrics[f"count_group_{g}"] for g in range(4)] == [4, 2, 0, 3]
    assert [metrics[f"acc_group_{g}"] for g in (0, 1, 3)] == [0.75, 0.5, 1.0]
    assert math.isnan(metrics["acc_group_2"])
    assert metrics["acc_class_0"] == pytest.approx(2 / 3) and metrics["acc_class_1"] == 1.0
    assert set(metrics) == {"acc", "avg_acc", "wga", "wca", "acc_class_0", "acc_class_1"} | {
        f"{k}_group_{g}" for k in ("acc", "count") for g in range(4)
    }
    assert all(type(v) in (float, int) for v in metrics.values())
    weighted = evaluate_predictions(Y_TRUE, Y_PRED, GROUPS, 2, 4, group_weights=[0.4, 0.1, 0.3, 0.2])
    assert weighted["avg_acc"] == pytest.approx(0.55 / 0.7) and weighted["acc"] == pytest.approx(7 / 9)


def test_evaluate_predictions_reports_absent_class_as_nan():
    metrics = evaluate_predictions(np.array([0, 0]), np.array([0, 1]), np.array([0, 1]), n_classes=3, n_groups=6)
    assert math.isnan(metrics["acc_class_2"]) and metrics["wca"] == 0.5 and metrics["count_group_5"] == 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: worst_group_accuracy([0, 1], [0], [0, 1]), "metric inputs differ in length"),
        (lambda: worst_group_accuracy([], [], []), "metric inputs are empty"),
        (lambda: worst_class_accuracy(np.array([0.0, 1.0]), [0, 1]), "metric input y_true must be a 1-D integer array"),
        (lambda: worst_class_accuracy([0, -1], [0, 1]), "metric input y_true contains -1"),
        (lambda: group_accuracies([0, 1], [0, 1], [0, 5], n_groups=4), "label 5 out of range for 4 groups; allowed: 0..3"),
        (lambda: average_accuracy([0, 1], [0, 1], None, [0.5, 0.5]), "needs the group labels"),
        (lambda: average_accuracy([0, 1], [0, 1], [0, 1], [0.5, -0.5]), "group weights [0.5, -0.5] are invalid"),
        (lambda: average_accuracy([0, 1], [0, 1], [0, 1], [0.0, 0.0, 1.0]), "give no weight to the groups present ([0, 1])"),
        (lambda: bias_unsupervised_score([0, 1], [0, 1], [0, 1], empty_cells="drop"),
         "unknown empty-cell rule 'drop'; choose one of: skip, zero"),
        (lambda: bias_unsupervised_score([0, 1], [0, 1], [0, 2], n_classes=2), "label 2 out of range for 2 classes"),
        (lambda: evaluate_predictions([0, 2], [0, 1], [0, 1], n_classes=2, n_groups=2), "label 2 out of range for 2 classes"),
    ],
)
def test_bad_input_one_line_error(call, message):
    with pytest.raises(GroupsweepError) as info:
        call()
    assert message in str(info.value)
    assert "\n" not in str(info.value)
