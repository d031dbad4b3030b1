"""The metrics analysis reports, under the analysis package's name.

The formulas themselves live in ``trainables.metrics``, the bottom layer, because every training epoch
reports them; this module re-exports them for analysis code and notebooks, so there is one definition.
"""

from trainables.metrics import (EMPTY_CELLS, average_accuracy, bias_unsupervised_score, class_accuracies,  # noqa: F401
                                evaluate_predictions, group_accuracies, worst_class_accuracy, worst_group_accuracy)
