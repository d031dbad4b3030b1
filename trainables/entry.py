"""The trainable as the sweep driver hands it to Ray Tune, without importing the training code.

Tune pickles ``train_trial`` by reference (this module and its name); the trial process that calls it
imports ``trainables.trainable`` (torch, Accelerate, the model libraries) then, so the driver never
imports them: it starts about two seconds sooner and holds no torch in memory.
"""

from __future__ import annotations


def train_trial(config: dict, experiment_dir: str, workers: dict | None = None, datasets: dict | None = None) -> None:
    """Run one trial: ``trainables.trainable.train_trial`` with the same arguments (its docstring says what
    they hold), imported in the process that runs the trial."""
    # deferred: the training code (torch and the model libraries) loads in the trial process only
    from trainables.trainable import train_trial as run_trial

    run_trial(config, experiment_dir, workers=workers, datasets=datasets)
