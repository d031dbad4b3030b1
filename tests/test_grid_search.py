"""The grid's generator restored from state files that disagree, as a driver killed during Tune's upload of its
snapshot leaves them: the generator's own state counts as running a trial the experiment state records as
finished (README, Reliability). No Ray cluster: the trials and both files are made with Tune's own classes."""

import json
from pathlib import Path

import pytest
from ray import tune
from ray.tune.execution.tune_controller import TuneController
from ray.tune.experiment import Experiment, Trial
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.utils.serialization import TuneFunctionEncoder

from sweeps.grid_search import GridVariantGenerator

SESSION = "2026-01-01_00-00-00"


def trainable(config):
    pass


def grid(generator_class, storage: Path, max_concurrent: int):
    """A generator of ``generator_class`` over a 4-point grid, as Tune sets one up for a new experiment."""
    generator = generator_class(max_concurrent=max_concurrent)
    generator.add_configurations(Experiment("grid", trainable, config={"x": tune.grid_search([0, 1, 2, 3])},
                                            storage_path=str(storage)))
    return generator


def save_experiment_state(folder: Path, trials) -> None:
    """The experiment state file of ``trials``, written as ``TuneController.save_to_dir`` writes it."""
    state = {"trial_data": [trial.get_json_state() for trial in trials], "runner_data": {}, "stats": {}}
    path = folder / TuneController.CKPT_FILE_TMPL.format(SESSION)
    path.write_text(json.dumps(state, cls=TuneFunctionEncoder))


def ghost_state(tmp_path: Path) -> tuple[Path, list]:
    """A state folder whose generator state (an older snapshot) counts trials 0 and 1 as running, and whose
    experiment state (the newer one) records trial 0 as TERMINATED and trial 1 as still running."""
    folder = tmp_path / "state"
    folder.mkdir()
    generator = grid(BasicVariantGenerator, tmp_path / "storage", max_concurrent=2)
    trials = [generator.next_trial(), generator.next_trial()]
    for trial in trials:  # as TuneController.add_trial takes them
        trial.create_placement_group_factory()
    generator.save_to_dir(str(folder), SESSION)
    trials[0].set_status(Trial.TERMINATED)
    trials[1].set_status(Trial.RUNNING)
    save_experiment_state(folder, trials)
    return folder, [trial.trial_id for trial in trials]


def test_the_restored_generator_drops_a_finished_trial_and_keeps_the_running_one(tmp_path):
    folder, (finished, running) = ghost_state(tmp_path)
    generator = GridVariantGenerator(max_concurrent=2)
    generator.restore_from_dir(str(folder))
    assert generator._live_trials == {running}
    third = generator.next_trial()  # the freed slot goes to the grid's next point
    assert third.config["x"] == 2 and third.trial_id not in (finished, running)
    assert generator.next_trial() is None  # trial 1 still holds the other slot
    generator.on_trial_complete(running)
    assert generator.next_trial().config["x"] == 3


def test_tunes_own_generator_restores_the_finished_trial_as_running(tmp_path):
    # the Ray limit this module works around: if this fails, Tune agrees with its experiment state by itself
    folder, trial_ids = ghost_state(tmp_path)
    generator = BasicVariantGenerator(max_concurrent=2)
    generator.restore_from_dir(str(folder))
    assert generator._live_trials == set(trial_ids)
    assert generator.next_trial() is None  # both slots held: with trial 1 done, one stays held for good


def test_restoring_without_an_experiment_state_says_so(tmp_path):
    folder, _ = ghost_state(tmp_path)
    (folder / TuneController.CKPT_FILE_TMPL.format(SESSION)).unlink()
    with pytest.raises(RuntimeError, match="no Tune experiment state"):
        GridVariantGenerator(max_concurrent=2).restore_from_dir(str(folder))
