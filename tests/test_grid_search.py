"""The grid's generator restored from state files that disagree, as a driver killed during Tune's upload of its
snapshot leaves them: the generator's own state counts as running a trial the experiment state records as
finished, or has not yet handed out a trial the experiment state holds (README, Reliability). No Ray cluster
in the fast tests: the trials and both files are made with Tune's own classes."""

import json
import os
import signal
from pathlib import Path

import pytest
import ray
import ray.cloudpickle
from ray import tune
from ray.tune.execution.tune_controller import TuneController
from ray.tune.experiment import Experiment, Trial
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch
from ray.tune.utils.serialization import TuneFunctionEncoder

from sweeps.grid_search import GridVariantGenerator
from sweeps.launcher import limit_restored_run

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


def handed_out(generator) -> Trial:
    """The generator's next trial, taken as ``TuneController.add_trial`` takes it."""
    trial = generator.next_trial()
    trial.create_placement_group_factory()
    return trial


def ghost_state(tmp_path: Path) -> tuple[Path, list]:
    """A state folder whose generator state (an older snapshot) counts trials 0 and 1 as running, and whose
    experiment state (the newer one) records trial 0 as TERMINATED and trial 1 as still running."""
    folder = tmp_path / "state"
    folder.mkdir()
    generator = grid(BasicVariantGenerator, tmp_path / "storage", max_concurrent=2)
    trials = [handed_out(generator), handed_out(generator)]
    generator.save_to_dir(str(folder), SESSION)
    trials[0].set_status(Trial.TERMINATED)
    trials[1].set_status(Trial.RUNNING)
    save_experiment_state(folder, trials)
    return folder, [trial.trial_id for trial in trials]


def handed_out_again_state(tmp_path: Path, max_concurrent: int = 1) -> tuple[Path, list]:
    """A state folder whose generator state (an older snapshot) counts trial 0 as running and has not handed
    out trial 1 yet, and whose experiment state (the newer one) records trial 0 as TERMINATED and trial 1,
    handed out after trial 0 ended, as running."""
    folder = tmp_path / "state"
    folder.mkdir()
    generator = grid(BasicVariantGenerator, tmp_path / "storage", max_concurrent=max_concurrent)
    first = handed_out(generator)
    generator.save_to_dir(str(folder), SESSION)
    generator.on_trial_complete(first.trial_id)
    second = handed_out(generator)
    first.set_status(Trial.TERMINATED)
    second.set_status(Trial.RUNNING)
    save_experiment_state(folder, [first, second])
    return folder, [first.trial_id, second.trial_id]


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


def test_an_errored_trial_that_the_resume_runs_again_holds_a_slot(tmp_path):
    """The launcher resumes errored trials too (``resume_errored``): one that errored holds a slot as it runs
    again, so no more than ``max_concurrent`` trials run at once."""
    folder, (finished, running) = ghost_state(tmp_path)
    trials = [Trial.from_json_state(state, stub=True) for state, _ in
              json.loads((folder / TuneController.CKPT_FILE_TMPL.format(SESSION)).read_text())["trial_data"]]
    trials[0].set_status(Trial.ERROR)  # trial 0 errored instead of finishing
    save_experiment_state(folder, trials)
    generator = GridVariantGenerator(max_concurrent=2)
    generator.restore_from_dir(str(folder))
    assert generator._live_trials == {finished, running}
    assert generator.next_trial() is None  # both slots held: the errored trial and the unfinished one
    generator.on_trial_complete(finished)
    assert generator.next_trial().config["x"] == 2


def test_tunes_own_generator_restores_the_finished_trial_as_running(tmp_path):
    # the Ray limit this module works around: if this fails, Tune agrees with its experiment state by itself
    folder, trial_ids = ghost_state(tmp_path)
    generator = BasicVariantGenerator(max_concurrent=2)
    generator.restore_from_dir(str(folder))
    assert generator._live_trials == set(trial_ids)
    assert generator.next_trial() is None  # both slots held: with trial 1 done, one stays held for good


def test_the_restored_generator_hands_out_no_trial_the_experiment_holds(tmp_path):
    folder, (finished, running) = handed_out_again_state(tmp_path)
    generator = GridVariantGenerator(max_concurrent=1)
    generator.restore_from_dir(str(folder))
    assert generator._live_trials == {running}
    assert generator.next_trial() is None  # the restored trial 1 holds the only slot
    generator.on_trial_complete(running)
    third = generator.next_trial()
    assert third.config["x"] == 2 and third.trial_id not in (finished, running)  # not trial 1 a second time
    generator.on_trial_complete(third.trial_id)
    fourth = generator.next_trial()
    assert fourth.config["x"] == 3
    generator.on_trial_complete(fourth.trial_id)
    assert generator.next_trial() is None and generator.is_finished()


def test_a_restored_generator_with_room_passes_over_a_held_trial_that_still_runs(tmp_path):
    folder, (_, running) = handed_out_again_state(tmp_path, max_concurrent=2)
    generator = GridVariantGenerator(max_concurrent=2)
    generator.restore_from_dir(str(folder))
    assert generator.next_trial().config["x"] == 2  # trial 1 handed out again is passed over
    assert running in generator._live_trials and len(generator._live_trials) == 2  # still counted
    assert generator.next_trial() is None


def test_tunes_own_generator_hands_out_a_held_trial_again(tmp_path):
    # the same Ray limit, its other effect: trial 1 twice once the ghost's slot is free
    folder, (finished, running) = handed_out_again_state(tmp_path)
    generator = BasicVariantGenerator(max_concurrent=1)
    generator.restore_from_dir(str(folder))
    assert generator._live_trials == {finished} and generator.next_trial() is None
    generator.on_trial_complete(finished)
    assert generator.next_trial().trial_id == running


def test_restoring_without_an_experiment_state_says_so(tmp_path):
    folder, _ = ghost_state(tmp_path)
    (folder / TuneController.CKPT_FILE_TMPL.format(SESSION)).unlink()
    with pytest.raises(RuntimeError, match="no Tune experiment state"):
        GridVariantGenerator(max_concurrent=2).restore_from_dir(str(folder))


class InterruptAfterTheFirstPoint(tune.Callback):
    """Stops the run when the grid's first point completes, as SIGUSR1 stops Tune: it saves the experiment's
    state (generator state included) one last time and returns."""

    def on_trial_complete(self, iteration, trials, trial, **info):
        if trial.config["x"] == 0:
            os.kill(os.getpid(), signal.SIGUSR1)


@pytest.mark.slow
def test_a_restored_tuner_brings_the_generator_back_and_runs_the_grid_past_a_ghost(tmp_path):
    def point(config):
        tune.report({"x": config["x"]})

    exp_dir = tmp_path / "grid"
    ray.init(address="local", num_cpus=1, object_store_memory=80 * 1024 ** 2, include_dashboard=False)
    try:
        # time_budget_s: a generator that held the ghost would make the resumed run wait (10 minutes per wait
        # in Tune), then stop with trials left, instead of hanging the test
        tune.Tuner(point, param_space={"x": tune.grid_search([0, 1, 2])},
                   tune_config=tune.TuneConfig(search_alg=GridVariantGenerator(max_concurrent=1), num_samples=1,
                                               time_budget_s=300),
                   run_config=tune.RunConfig(storage_path=str(tmp_path), name="grid", verbose=0,
                                             callbacks=[InterruptAfterTheFirstPoint()])).fit()
        first = {trial.config["x"]: trial for trial in tune.ExperimentAnalysis(str(exp_dir)).trials}[0]
        assert first.status == Trial.TERMINATED
        # the ghost: the generator's saved state counts the finished first point as running
        state_file = max(exp_dir.glob(GridVariantGenerator.CKPT_FILE_TMPL.format("*")))
        state = ray.cloudpickle.loads(state_file.read_bytes())
        state["_live_trials"].add(first.trial_id)
        state_file.write_bytes(ray.cloudpickle.dumps(state))

        # resumed with another max_concurrent (--max-concurrent 2): the run's limit, not the saved one
        results = limit_restored_run(tune.Tuner.restore(str(exp_dir), trainable=point), 2).fit()
    finally:
        ray.shutdown()
    assert sorted(result.config["x"] for result in results) == [0, 1, 2]
    assert results.num_terminated == 3 and results.num_errors == 0
    # the resumed run's generator state: saved by a GridVariantGenerator that Tuner.restore brought back
    resumed = ray.cloudpickle.loads(max(exp_dir.glob(GridVariantGenerator.CKPT_FILE_TMPL.format("*"))).read_bytes())
    assert first.trial_id in resumed["_restored_trials"]
    assert resumed["max_concurrent"] == 2


def test_a_restored_generator_keeps_the_limit_it_is_given_not_the_saved_one(tmp_path):
    folder = tmp_path / "state"
    folder.mkdir()
    saved = grid(GridVariantGenerator, tmp_path / "storage", max_concurrent=1)
    trials = [handed_out(saved)]
    saved.save_to_dir(str(folder), SESSION)
    save_experiment_state(folder, trials)
    restored = grid(GridVariantGenerator, tmp_path / "storage", max_concurrent=1)
    restored.max_concurrent = 3  # as limit_restored_run sets it before Tune restores the generator
    restored.restore_from_dir(str(folder))
    assert restored.max_concurrent == 3
    assert [handed_out(restored) is not None for _ in range(2)] == [True, True]  # 3 running: the first, and two more
    assert restored.next_trial() is None  # the limit: three at once


def unfitted_tuner(search_alg, max_concurrent_trials=None):
    """A Tuner holding ``search_alg`` as a restored one holds what it was built with (not run)."""
    return tune.Tuner(trainable, param_space={"x": tune.grid_search([0, 1])},
                      tune_config=tune.TuneConfig(search_alg=search_alg, max_concurrent_trials=max_concurrent_trials))


def test_a_resumed_run_takes_a_new_limit_where_tune_lets_it_and_says_so_where_not(capsys):
    grid_tuner = unfitted_tuner(GridVariantGenerator(max_concurrent=1))
    assert limit_restored_run(grid_tuner, 4) is grid_tuner
    assert grid_tuner._local_tuner._tune_config.search_alg.max_concurrent == 4
    assert capsys.readouterr().err == ""

    # Tune's own generator (a grid started by an older groupsweep) restores its saved limit: not applied
    limit_restored_run(unfitted_tuner(BasicVariantGenerator(max_concurrent=1)), 4)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("warning: ") and "it started with (1)" in line and "max_concurrent 4 is not" in line

    # a search: Tune's ConcurrencyLimiter restores its saved limit
    searcher = OptunaSearch(metric="x", mode="max")
    limit_restored_run(unfitted_tuner(searcher, max_concurrent_trials=2), 3)
    (line,) = capsys.readouterr().err.splitlines()
    assert "it started with (2)" in line and "max_concurrent 3 is not applied" in line
    limit_restored_run(unfitted_tuner(searcher, max_concurrent_trials=2), 2)  # the same limit: nothing to say
    limit_restored_run(unfitted_tuner(searcher, max_concurrent_trials=2), None)  # none asked for
    assert capsys.readouterr().err == ""
