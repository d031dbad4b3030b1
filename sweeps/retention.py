"""Checkpoint retention of a sweep: each trial keeps its latest ``keep_checkpoints`` checkpoints.

Ray Tune can delete a trial's older checkpoints itself (``CheckpointConfig(num_to_keep=N)``), but then it
also forces an experiment snapshot whenever a trial has saved N checkpoints since the last one, and each
snapshot costs in proportion to every trial of the sweep (it encodes every trial's metadata and copies the
driver's staging folder): with one checkpoint per epoch, a sweep's driver cost grew with the square of its
trials (README, "Driver scale"). So the sweep runs with ``num_to_keep=None`` (time-paced snapshots, Tune's
``auto`` period: at most about 5% of the driver's time, at least 10 s apart) and this Tune callback retires
the checkpoints that fall out of a trial's last ``keep``. A retired folder is deleted only once the storage
holds an experiment snapshot saved after it was retired (``trainables.sweep_storage.retire_checkpoint``),
so the snapshot in the storage always names a checkpoint that exists: a killed driver resumes each trial
from the checkpoint its last snapshot names, redoing at most the epochs trained since (results identical on
the CPU).

Paced snapshots also mean the storage copy of a trial's logs can lag behind the driver's. When a failed trial
is retried, Tune's loggers replace the driver's ``result.json`` and ``progress.csv`` by the storage copies
(``LoggerCallback._restore_from_remote``), which would drop the rows reported since the last snapshot;
``RetryLogs`` uploads the driver's logs of a trial about to be retried first.
"""

from __future__ import annotations

import posixpath

from ray.tune import Callback
from ray.tune.experiment import Trial

from trainables.sweep_storage import commit_snapshots, retire_checkpoint, upload_logs
from trainables.trial_dir import checkpoint_index, checkpoint_indexes, checkpoint_name


class CheckpointRetention(Callback):
    """Retire every checkpoint of a trial but its latest ``keep`` (``trainables.sweep_storage.retire_checkpoint``)."""

    def __init__(self, keep: int):
        self.keep = keep
        self._seen: set[str] = set()

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        """Retire the checkpoint that falls out of ``trial``'s last ``keep`` now that ``checkpoint`` was saved;
        at a trial's first checkpoint in this driver, every older one (a resumed trial's) too."""
        parent, name = posixpath.split(checkpoint.path.rstrip("/"))
        newest = checkpoint_index(name)
        if newest is None:
            return
        if trial.trial_id in self._seen:
            older = [newest - self.keep] if newest - self.keep >= 0 else []
        else:
            self._seen.add(trial.trial_id)
            older = [index for index in checkpoint_indexes(checkpoint.filesystem, parent) if index <= newest - self.keep]
        for index in older:
            retire_checkpoint(checkpoint.filesystem, f"{parent}/{checkpoint_name(index)}")


class FreshRetries(Callback):
    """Each run of a sweep gives each of its trials ``max_failures`` retries. Tune keeps a trial's failure count
    in the sweep's state, so without this a resumed trial that had errored (its retries spent) would fail for
    good at its first failure of the new run, and failures before a driver died would count against the next
    run's retries."""

    def __init__(self):
        self._reset = False

    def on_step_begin(self, iteration, trials, **info) -> None:
        """At the run's first step, set the failure count of every trial about to run (pending) to zero."""
        if self._reset:
            return
        self._reset = True
        for trial in trials:
            if trial.status == Trial.PENDING:
                trial.run_metadata.num_failures = 0  # what ``Trial.should_recover`` compares to max_failures


class RetryLogs(Callback):
    """Before a failed trial is retried, upload its logs from the driver to the storage
    (``trainables.sweep_storage.upload_logs``), so the copies Tune restores them from hold every reported row."""

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        """Upload ``trial``'s ``result.json`` and ``progress.csv`` as the driver has them."""
        upload_logs(trial.local_path, trial.storage.storage_filesystem, trial.storage.trial_fs_path)


class SnapshotsAtEnd(Callback):
    """At the end of a run whose final snapshot Tune saved (every trial done, or interrupted), write the snapshots
    held back into the storage (``trainables.sweep_storage.commit_snapshots``): Tune's last upload has ended
    then (after its final save, outside its steps, it waits for it before it ends the run's callbacks), and it
    reads the experiment state back from the storage before ``Tuner.fit`` returns (a short run's state would
    still be held). Tune asks the callbacks for their state (``get_state``) as the last part of every save: one
    asked outside a step is its final save. A run that failed before it ends without it: its last upload may be
    under way, and the storage keeps the snapshot before."""

    def __init__(self):
        self._in_step = False
        self._saved_after_steps = False

    def on_step_begin(self, iteration, trials, **info) -> None:
        self._in_step, self._saved_after_steps = True, False

    def on_step_end(self, iteration, trials, **info) -> None:
        self._in_step, self._saved_after_steps = False, False

    def get_state(self) -> None:
        """Note a save outside Tune's steps (its final one); this callback keeps no state."""
        if not self._in_step:
            self._saved_after_steps = True
        return None

    def on_experiment_end(self, trials, **info) -> None:
        """Write the held snapshots if Tune's final save came after its last step."""
        if self._saved_after_steps:
            commit_snapshots()
