"""The grid sweep's trial source: Ray Tune's variant generator, restored in agreement with the experiment.

A limit of Ray Tune (2.5x, 2.60) worked around here. Tune's ``BasicVariantGenerator`` (the search algorithm
of a grid) counts the trials it has handed out and not yet seen complete (``_live_trials``), and hands out
no more while ``max_concurrent`` of them are counted. It saves that set in a state file of its own,
``basic-variant-state-<session>.json``, beside the experiment state ``experiment_state-<session>.json``; the
driver writes both into its staging folder and uploads the folder, file by file, to the sweep folder. A driver
killed during an upload can leave the two files from different snapshots, so the generator's state can count
as running a trial that the experiment state records as finished (TERMINATED). Restored, that trial never
runs or completes again: it holds one of the ``max_concurrent`` slots for good, and with ``max_concurrent=1``
the resumed driver waits forever for a next trial (``TuneController._update_trial_queue``).

The same skew, with a generator state older than the experiment state, can also make the generator hand out
again a grid point that the experiment already holds as a trial (same id, config and folder): the restored
run would hold two trials of one id at once. With the generator state newer than the experiment state, a trial
the generator handed out can be missing from the experiment: it counts as running and never completes either.

``GridVariantGenerator`` is that generator with two changes: once restored, it counts as running exactly the
trials the restored experiment will run again (unfinished or errored), and it hands out no trial the restored experiment holds.
(A trial missing from the experiment is not handed out again; ``sweeps.launcher.run_trials`` runs it
afterwards, as it runs the trials a spec adds: ``added_trials``.) Tune tells a search algorithm nothing about
the trials its controller restores, but ``TuneController.resume`` restores the search algorithm from the
staging folder into which it has just downloaded the sweep's state files, so the generator reads, with Tune's
own loader, the same newest experiment state the controller resumes from. The launcher passes it as the
grid's ``TuneConfig(search_alg=...)``; ``Tuner.restore`` brings it back from the Tuner's saved state
(``tuner.pkl``), so a resumed sweep restores it this way too.
"""

from __future__ import annotations

from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint
from ray.tune.experiment import Trial
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.utils.serialization import _loads_with_cloudpickle


class GridVariantGenerator(BasicVariantGenerator):
    """Tune's grid generator (same trials, ids and configs) that, once restored, agrees with the restored
    experiment; ``max_concurrent``: at most that many of its trials run at once (0: no limit)."""

    def __init__(self, max_concurrent: int = 0):
        super().__init__(max_concurrent=max_concurrent)
        self._restored_trials: set[str] = set()

    def restore_from_dir(self, dirpath: str) -> None:
        """Restore the generator from its newest state file in ``dirpath`` (Tune's), then count as running
        exactly the trials that the newest experiment state in ``dirpath`` holds as not terminated (unfinished
        or errored: Tune runs both again), and note every trial it holds. Its ``max_concurrent`` stays the
        one it has (this run's: ``sweeps.launcher.build_tuner`` sets it), not the one saved."""
        limit = self.max_concurrent
        super().restore_from_dir(dirpath)
        self.max_concurrent = limit
        trials = saved_trials(dirpath)
        self._restored_trials = {trial.trial_id for trial in trials}
        # every trial but a terminated one runs again: the launcher resumes errored trials too (resume_errored)
        self._live_trials = {trial.trial_id for trial in trials if trial.status != Trial.TERMINATED}

    def next_trial(self) -> Trial | None:
        """Tune's next trial of the grid (None while ``max_concurrent`` trials run, or once the grid is done),
        passing over the trials the restored experiment already holds."""
        running = set(self._live_trials)
        trial = super().next_trial()
        while trial is not None and trial.trial_id in self._restored_trials:
            if trial.trial_id not in running:  # that trial has ended: it holds no slot
                self._live_trials.discard(trial.trial_id)
            trial = super().next_trial()
        return trial


def saved_trials(dirpath: str) -> list[Trial]:
    """The trials of the newest experiment state file in the local folder ``dirpath``, loaded as
    ``TuneController.resume`` loads them (``RuntimeError`` when the folder holds none)."""
    path = _find_newest_experiment_checkpoint(dirpath)
    if path is None:
        raise RuntimeError(f"no Tune experiment state in {dirpath}")
    with open(path) as file:
        state = _loads_with_cloudpickle(file.read())
    return [Trial.from_json_state(trial_state, stub=True) for trial_state, _ in state["trial_data"]]
