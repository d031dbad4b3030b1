"""``trainables.base_model.find_base_trial``: which ``none`` trial of a sweep is a method's base ERM model."""

import json

import torch

from trainables.base_model import base_config, find_base_trial
from trainables.config import TrainConfig


def write_none_trial(run_dir, name: str, config: TrainConfig, epoch: int) -> None:
    """A trial directory as a sweep leaves it: ``params.json`` and one checkpoint holding ``epoch``."""
    folder = run_dir / name
    (folder / "checkpoint_000000").mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps({**config.to_dict(), "trial_name": name}))
    torch.save({"epoch": epoch, "config": config.to_dict(), "model": {"weight": torch.full((1,), float(epoch))}},
               folder / "checkpoint_000000" / "state.pt")


def test_the_base_trial_may_differ_in_what_is_evaluated_saved_or_measured_not_in_the_training(tmp_path):
    jtt = TrainConfig(method="jtt", jtt_epochs=2, epochs=3, lr=1e-3, seed=1)
    base = base_config(jtt)
    # the spec set these for `none` only: they change what is reported or saved, not the model
    write_none_trial(tmp_path, "none-s1", TrainConfig(**{**base.to_dict(), "checkpoint_every": 1,
                                                        "eval_train": "every", "eval_batch_size": 64,
                                                        "profile": True}), epoch=3)
    write_none_trial(tmp_path, "none-s1-lr", TrainConfig(**{**base.to_dict(), "lr": 1e-4}), epoch=3)
    state, name = find_base_trial(str(tmp_path), base)
    assert name == "none-s1" and state["weight"].item() == 3.0
    assert find_base_trial(str(tmp_path), base, epoch=2) is None  # no kept checkpoint of that epoch
    assert find_base_trial(str(tmp_path), TrainConfig(**{**base.to_dict(), "seed": 2})) is None


def test_a_damaged_newer_checkpoint_does_not_hide_an_older_kept_one(tmp_path):
    base = base_config(TrainConfig(method="jtt", epochs=3, seed=1))
    write_none_trial(tmp_path, "none-s1", base, epoch=3)
    (tmp_path / "none-s1" / "checkpoint_000001").mkdir()
    (tmp_path / "none-s1" / "checkpoint_000001" / "state.pt").write_bytes(b"not a checkpoint")
    state, name = find_base_trial(str(tmp_path), base)
    assert name == "none-s1" and state["weight"].item() == 3.0
