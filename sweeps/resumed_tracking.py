"""Tune's TensorBoard and MLflow logger callbacks, made to keep one record per trial across a resumed sweep.

Tune restores a sweep's trials after its driver died, but not its logger callbacks' memory. Its MLflow callback
then starts a second run for every trial it resumes (the first stays ``RUNNING`` for ever) and its TensorBoard
callback a second event file, and both log again the epochs that the trial repeats after its checkpoint.

- ``ResumingMLflowLoggerCallback``: a trial that has no run in this callback's memory takes up the run already
  tagged with its name and the sweep's directory (``SWEEP_DIR_TAG``), and a metric's step that the run already
  holds is not logged again (a repeated epoch reports what it reported before: bit-identical on a CPU). Per metric:
  Tune logs a result one metric at a time, so a driver killed while logging leaves a step with some of its metrics;
  the resumed trial logs the others.
- ``ResumingTBXLoggerCallback``: a trial that reported before (an earlier driver's, or its own before it failed)
  gets a writer with ``purge_step`` = the iteration of the checkpoint it resumes from + 1 (1 without one), so
  TensorBoard drops the events of the epochs it repeats from the earlier file; the trial gets a second event
  file, but each step shows once. The checkpoint, not the trial's last result: Tune registers a checkpoint only
  when its save has been processed, after the result it came with, so a snapshot can hold a last result one
  epoch newer than the checkpoint the trial restarts from.
"""

from __future__ import annotations

from ray.air.constants import TRAINING_ITERATION
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.logger import TBXLoggerCallback
from ray.tune.result import TIMESTEPS_TOTAL
from ray.tune.utils import flatten_dict

# The MLflow tag naming a run's sweep directory: a resumed sweep takes up its trials' runs by it and the trial name.
SWEEP_DIR_TAG = "groupsweep.sweep_dir"
# How often a trial's TensorBoard writer flushes its event file (Tune's: 30 s). Tune flushes it after each result,
# but tensorboardX's flush does not wait for the events still queued: the last scalars of a result reach the file
# at the next timed flush, and a driver killed before it loses them for good when the trial resumes after that
# epoch.
FLUSH_SECONDS = 1


def result_step(result: dict) -> int:
    """The step Tune's logger callbacks log a result at (its total timesteps, else its training iteration)."""
    return result.get(TIMESTEPS_TOTAL) or result[TRAINING_ITERATION]


class ResumingMLflowLoggerCallback(MLflowLoggerCallback):
    """Tune's ``MLflowLoggerCallback`` with one run per trial across resumes (module docstring)."""

    def __init__(self, sweep_dir: str, *args, **kwargs):
        """``sweep_dir``: the sweep's directory, tagged on every run (``SWEEP_DIR_TAG``); the other arguments are
        ``MLflowLoggerCallback``'s."""
        super().__init__(*args, **kwargs)
        self.tags = {**(self.tags or {}), SWEEP_DIR_TAG: sweep_dir}
        self._logged_steps: dict = {}  # trial -> {metric: the last step the trial's run holds of it}

    def log_trial_start(self, trial):
        """Take up the trial's run from an earlier driver, if there is one, then log its config as Tune does."""
        if trial not in self._trial_runs:
            run = self._earlier_run(str(trial))
            if run is not None:
                self._trial_runs[trial] = run.info.run_id
                self._logged_steps[trial] = {
                    key: max(metric.step for metric in self._client().get_metric_history(run.info.run_id, key))
                    for key in run.data.metrics}
        super().log_trial_start(trial)

    def log_trial_result(self, iteration: int, trial, result: dict):
        """Log the metrics of ``result`` whose step the trial's run does not hold yet."""
        step = result_step(result)
        logged = self._logged_steps.setdefault(trial, {})
        new = {key: value for key, value in flatten_dict(result).items() if step > logged.get(key, 0)}
        if new:  # (a repeated epoch has nothing new: no request to the tracking server)
            self.mlflow_util.log_metrics(run_id=self._trial_runs[trial], metrics_to_log=new, step=step)  # as Tune does
            logged.update(dict.fromkeys(new, step))

    def _earlier_run(self, trial_name: str):
        """The run of this sweep (its directory, ``SWEEP_DIR_TAG``) tagged with ``trial_name``, or None."""
        sweep_dir = self.tags.get(SWEEP_DIR_TAG, "")
        if "'" in trial_name or "'" in sweep_dir:  # not expressible in MLflow's filter: start a run, as Tune does
            return None
        runs = self._client().search_runs([self.mlflow_util.experiment_id], max_results=1,
                                  filter_string=f"tags.trial_name = '{trial_name}' and "
                                                f"tags.`{SWEEP_DIR_TAG}` = '{sweep_dir}'")
        return runs[0] if runs else None

    def _client(self):
        """An ``MlflowClient`` of the callback's tracking URI."""
        # deferred: MLflow is optional; a sweep tracked by TensorBoard alone imports this module without it
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.tracking_uri)


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
