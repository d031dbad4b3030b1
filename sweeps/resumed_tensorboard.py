"""Tune's TensorBoard logger callback, made to keep one record per trial across a resumed sweep.

Tune restores a sweep's trials after its driver died, but not its logger callbacks' memory. Its TensorBoard
callback then opens a second event file for every trial it resumes, and logs again the epochs that the trial
repeats after its checkpoint (its MLflow callback starts a second run: ``sweeps.resumed_mlflow``).

``ResumingTBXLoggerCallback``: a trial that reported before (an earlier driver's, or its own before it failed)
gets a writer with ``purge_step`` = the iteration of the checkpoint it resumes from + 1 (1 without one), so
TensorBoard drops the events of the epochs it repeats from the earlier file; the trial gets a second event
file, but each step shows once. The checkpoint, not the trial's last result: Tune registers a checkpoint only
when its save has been processed, after the result it came with, so a snapshot can hold a last result one
epoch newer than the checkpoint the trial restarts from.
"""

from __future__ import annotations

from ray.air.constants import TRAINING_ITERATION
from ray.tune.logger import TBXLoggerCallback
from ray.tune.result import TIMESTEPS_TOTAL

# How often a trial's TensorBoard writer flushes its event file (Tune's: 30 s). Tune flushes it after each result,
# but tensorboardX's flush does not wait for the events still queued: the last scalars of a result reach the file
# at the next timed flush, and a driver killed before it loses them for good when the trial resumes after that
# epoch.
FLUSH_SECONDS = 1


def result_step(result: dict) -> int:
    """The step Tune's logger callbacks log a result at (its total timesteps, else its training iteration)."""
    return result.get(TIMESTEPS_TOTAL) or result[TRAINING_ITERATION]


class ResumingTBXLoggerCallback(TBXLoggerCallback):
    """Tune's ``TBXLoggerCallback`` whose restored trials purge the steps after their checkpoint (module
    docstring), and whose writers flush every ``FLUSH_SECONDS``."""

    def log_trial_start(self, trial):
        """Open the trial's writer as Tune does, from the restored epoch on when the trial resumes."""
        if trial in self._trial_writer:
            self._trial_writer[trial].close()
        trial.init_local_path()
        self._trial_writer[trial] = self._summary_writer_cls(trial.local_path, flush_secs=FLUSH_SECONDS,
                                                             purge_step=first_repeated_step(trial))
        self._trial_result[trial] = {}


def first_repeated_step(trial) -> int | None:
    """The first step a starting trial may log again: the iteration after its latest checkpoint (Tune restores it
    from there; the epochs after it run again), 1 for a trial that reported but has no checkpoint (it starts
    over), None for a trial that never reported."""
    if not trial.has_reported_at_least_once:
        return None
    checkpoint = trial.latest_checkpoint_result
    return (result_step(checkpoint.metrics) if checkpoint else 0) + 1
