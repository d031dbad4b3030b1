"""The embedded benchmarks show the phenomenon under study: plain ERM's worst-group accuracy is far
below its average accuracy, while the average is well above chance."""

import pytest

from trainables.config import TrainConfig
from trainables.finetune import finetune

CASES = {
    # dataset: (model, dataset options, epochs)
    "synthetic-waterbirds": ("toy-resnet-xs", {"size": 1000, "val_size": 300, "test_size": 600}, 4),
    "synthetic-celeba": ("toy-resnet-xs", {"size": 1000, "val_size": 400, "test_size": 1000}, 4),
    "colored-digits": ("toy-resnet-xs", {}, 4),
    "synthetic-civilcomments": ("toy-bert-xs", {"size": 1000, "val_size": 400, "test_size": 1000}, 4),
    "synthetic-multinli": ("toy-bert-xs", {"size": 1500, "val_size": 600, "test_size": 1500}, 4),
}


@pytest.mark.slow
@pytest.mark.parametrize("dataset", sorted(CASES))
def test_erm_worst_group_accuracy_is_far_below_average(dataset):
    model, options, epochs = CASES[dataset]
    config = TrainConfig(dataset=dataset, dataset_options=options, model=model, method="none", seed=0,
                         epochs=epochs, lr=2e-3, batch_size=64, num_threads=1)
    final = finetune(config, cpu=True)[-1]
    chance = 1 / (3 if dataset == "synthetic-multinli" else 2)
    print(f"{dataset}: test avg {final['test/avg_acc']:.3f} wga {final['test/wga']:.3f}")
    assert final["test/avg_acc"] > chance + 0.2
    assert final["test/wga"] < final["test/avg_acc"] - 0.15
