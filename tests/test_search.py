"""Search spaces, the search block, and the per-cell searcher and scheduler, without starting Ray."""

import math
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
from ray import tune
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.sample import Categorical, Float, Integer

from sweeps.search import CellScheduler, draw_samples, early_stopping_warning, search_plan, tune_domain
from sweeps.spaces import (SearchCell, SearchSettings, check_space, describe_space, is_space, parse_search,
                           trial_name)
from trainables.errors import GroupsweepError


def parse_seeds(value, where):
    return list(value)


# --- spaces -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("space, kind, bounds", [
    ({"loguniform": [1e-5, 1e-3]}, Float, (1e-5, 1e-3)),
    ({"uniform": [0.0, 0.5]}, Float, (0.0, 0.5)),
    ({"quniform": [0, 1, 0.25]}, Float, (0, 1)),
    ({"randint": [16, 65]}, Integer, (16, 65)),
])
def test_numeric_spaces_map_onto_tunes_own(space, kind, bounds):
    check_space(space, "hparams.x")
    domain = tune_domain(space)
    assert isinstance(domain, kind) and (domain.lower, domain.upper) == bounds
    assert is_space(space)


def test_choice_and_grid_map_onto_tunes_own():
    assert isinstance(tune_domain({"choice": [16, 32]}), Categorical)
    assert tune_domain({"choice": [16, 32]}).categories == [16, 32]
    assert tune_domain({"grid": [1, 2]}) == tune.grid_search([1, 2])
    assert describe_space({"loguniform": [1e-5, 1e-3]}) == "loguniform(1e-05, 0.001)"
    assert not is_space({"models": 2}) and not is_space(0.1) and not is_space({"choice": [1], "grid": [2]})


@pytest.mark.parametrize("space, message", [
    ({"loguniform": [0, 1e-3]}, "loguniform needs 0 < lo, got lo=0"),
    ({"loguniform": [-1, 1e-3]}, "loguniform needs 0 < lo, got lo=-1"),
    ({"uniform": [0.5, 0.1]}, "uniform needs lo < hi, got [0.5, 0.1]"),
    ({"uniform": [0.1]}, "uniform takes a list of 2 numbers, got [0.1]"),
    ({"uniform": [0.1, float("nan")]}, "uniform bound nan is not a finite number"),
    ({"quniform": [0, 1, 0]}, "quniform step q must be > 0, got 0"),
    ({"quniform": [1, 2, 1e-310]}, "quniform step q=1e-310 is too small for the bounds [1, 2]"),
    ({"randint": [1.5, 4]}, "randint bound 1.5 is not an integer"),
    ({"randint": [1, 10**20]}, "randint bound 100000000000000000000 is outside the 64-bit integers the searchers "
                               "draw (from -2**63 + 1 to 2**63 - 1)"),
    ({"randint": [4, 4]}, "randint needs lo < hi, got [4, 4]"),
    ({"choice": []}, "choice needs a non-empty list of values, got []"),
    ({"grid": "abc"}, "grid needs a non-empty list of values, got 'abc'"),
])
def test_bad_spaces_are_refused_in_one_line(space, message):
    with pytest.raises(GroupsweepError) as info:
        check_space(space, "hparams.lr")
    assert str(info.value) == f"hparams.lr: {message}"


def test_spaces_that_bound_each_other_are_checked_together():
    """``jtt_epochs`` <= ``epochs``: each space alone passes against the other's first value (10 and 1), but
    together they can draw epochs 3 with jtt_epochs 5, which no trial could run; a space whose every draw
    fits is accepted."""
    from sweeps.spec import build_spec

    def jtt_search(epochs):
        return {"datasets": ["synthetic-waterbirds"], "models": ["toy-convnextv2-xs"], "seeds": [0],
                "search": {"num_samples": 2},
                "methods": [{"jtt": {"hparams": {"epochs": epochs, "jtt_epochs": {"randint": [1, 6]}}}}]}

    with pytest.raises(GroupsweepError) as info:
        build_spec(jtt_search({"choice": [10, 3]}))
    assert str(info.value) == ("cell synthetic-waterbirds-toy-convnextv2-xs-jtt: hparams epochs, jtt_epochs can draw "
                               "epochs=3, jtt_epochs=5: jtt_epochs 5 exceeds epochs 3: JTT's identification model "
                               "is epoch jtt_epochs of the run's ERM counterpart")
    assert len(build_spec(jtt_search({"choice": [10, 6]})).cells) == 1

    # beyond MAX_SPACE_COMBINATIONS combinations (2 x 2 x 300), the keys are checked pair by pair
    many = jtt_search({"choice": [10, 3]})
    many["methods"][0]["jtt"]["hparams"]["lr"] = {"choice": [1e-5 * (1 + k) for k in range(300)]}
    with pytest.raises(GroupsweepError, match="can draw epochs=3, jtt_epochs=5, lr=1e-05: jtt_epochs 5 exceeds"):
        build_spec(many)
    many["methods"][0]["jtt"]["hparams"]["epochs"] = {"choice": [10, 6]}
    assert len(build_spec(many).cells) == 1


# --- the search block --------------------------------------------------------------------------------

def test_search_block_defaults_and_values():
    assert parse_search(None, parse_seeds) is None
    settings = parse_search({"num_samples": 3, "scheduler": "asha", "seeds": [4, 5]}, parse_seeds)
    assert settings == SearchSettings(num_samples=3, scheduler="asha", seeds=(4, 5))
    assert parse_search({"metric": "val/loss"}, parse_seeds).mode == "min"
    assert parse_search({"metric": "val/wca", "mode": "max"}, parse_seeds).metric == "val/wca"


@pytest.mark.parametrize("block, message", [
    ({"algorithm": "grid-walk"}, "search.algorithm: unknown search algorithm 'grid-walk'; choose one of: random, "
                                 "optuna, hyperopt"),
    ({"metric": "val/f1"}, "search.metric: 'val/f1' is not a metric trials report; use a validation or training "
                           "metric such as val/wga, val/wca, val/avg_acc, val/loss"),
    ({"metric": "test/wga"}, "search.metric: 'test/wga' is not a metric trials report (searching on the test split "
                             "would leak it into model selection)"),
    ({"num_samples": 0}, "search.num_samples must be a positive integer, got 0"),
    ({"mode": "up"}, "search.mode: unknown mode 'up'; choose one of: max, min"),
    ({"scheduler": "pbt"}, "search.scheduler: unknown scheduler 'pbt'; choose one of: fifo, asha"),
    ({"reduction_factor": 1}, "search.reduction_factor: must be a number > 1, got 1"),
    ({"samples": 3}, "search: unknown key 'samples'"),
])
def test_bad_search_blocks_are_refused_in_one_line(block, message):
    with pytest.raises(GroupsweepError) as info:
        parse_search(block, parse_seeds)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_a_searcher_whose_package_is_missing_names_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "hyperopt" else real(name))
    with pytest.raises(GroupsweepError, match=r"needs the hyperopt package.*pip install 'groupsweep\[hyperopt\]'"):
        parse_search({"algorithm": "hyperopt"}, parse_seeds)


# --- sampling ----------------------------------------------------------------------------------------

SPACE = {"lr": {"loguniform": [1e-4, 1e-1]}, "batch_size": {"choice": [16, 32, 64]},
         "weight_decay": {"uniform": [0.0, 0.1]}}


def test_draws_are_inside_their_spaces_reproducible_and_differ_between_cells():
    samples = draw_samples(SPACE, 200, seed=0, cell="a")
    assert len(samples) == 200 and samples == draw_samples(SPACE, 200, seed=0, cell="a")
    assert samples != draw_samples(SPACE, 200, seed=0, cell="b")
    lr = np.array([s["lr"] for s in samples])
    assert lr.min() >= 1e-4 and lr.max() <= 1e-1 and all(type(s["lr"]) is float for s in samples)
    assert {s["batch_size"] for s in samples} == {16, 32, 64}
    # log-uniform: log10(lr) is uniform on [-4, -1], so about a third of the draws lie below 1e-3
    assert abs(np.mean(np.log10(lr) < -3) - 1 / 3) < 0.1


def test_grid_values_multiply_the_draws_as_in_tune():
    samples = draw_samples({"lr": {"loguniform": [1e-4, 1e-1]}, "epochs": {"grid": [1, 2]}}, 3, seed=1, cell="c")
    assert [s["epochs"] for s in samples] == [1, 2, 1, 2, 1, 2]


def cell(name, space=None, seeds=(0, 1), num_samples=2, epochs=4):
    config = {"lr": 1e-3, "epochs": epochs, "seed": 0, "method": "none"}
    return SearchCell(name=name, config=config, space=space or {}, seeds=tuple(seeds), resources=None,
                      num_samples=num_samples if space else 1)


def test_asha_with_several_search_seeds_gets_a_warning():
    space = {"lr": {"loguniform": [1e-4, 1e-1]}}
    warning = early_stopping_warning([cell("a", space, seeds=(1,)), cell("b", space, seeds=(1, 2, 3))],
                                     SearchSettings(scheduler="asha"))
    assert warning.startswith("warning: search scheduler 'asha' with 3 search seeds") and "\n" not in warning
    assert early_stopping_warning([cell("a", space, seeds=(1,))], SearchSettings(scheduler="asha")) is None
    assert early_stopping_warning([cell("b", space, seeds=(1, 2))], SearchSettings(scheduler="fifo")) is None


def test_cell_search_hands_out_every_configuration_on_every_seed_then_finishes():
    cells = [cell("a", {"lr": {"loguniform": [1e-4, 1e-1]}}), cell("b")]
    plan = search_plan(cells, SearchSettings(num_samples=2))
    assert plan.total_trials == 2 * 2 + 1 * 2
    configs = [plan.searcher.suggest(f"t{i}") for i in range(plan.total_trials)]
    assert plan.searcher.suggest("t-extra") == Searcher.FINISHED
    names = [config["trial_name"] for config in configs]
    assert names == ["a-h00-s0", "a-h00-s1", "b-h00-s0", "b-h00-s1", "a-h01-s0", "a-h01-s1"]
    assert configs[0]["lr"] == configs[1]["lr"] != configs[4]["lr"]  # one configuration, every seed
    assert configs[0]["_cell"] == "a" and configs[0]["_sample"] == 0 and configs[0]["_sampled"] == ["lr"]
    assert configs[2]["lr"] == 1e-3 and configs[2]["_sampled"] == []
    assert trial_name("a", 7, 3, 120) == "a-h007-s3"


def test_cell_search_state_survives_save_and_restore(tmp_path):
    cells = [cell("a", {"lr": {"loguniform": [1e-4, 1e-1]}})]
    first = search_plan(cells, SearchSettings(num_samples=2, scheduler="asha"))
    handed = [first.searcher.suggest(f"t{i}") for i in range(3)]
    first.searcher.save(str(tmp_path / "searcher.pkl"))
    second = search_plan(cells, SearchSettings(num_samples=2, scheduler="asha"))
    second.searcher.restore(str(tmp_path / "searcher.pkl"))
    rest = [second.searcher.suggest(f"t{i}") for i in range(3, 5)]
    assert [c["trial_name"] for c in handed + rest[:1]] == ["a-h00-s0", "a-h00-s1", "a-h01-s0", "a-h01-s1"]
    assert rest[1] == Searcher.FINISHED and rest[0]["lr"] == handed[2]["lr"]
    pickle.dumps(second.scheduler.get_state())


@pytest.mark.parametrize("algorithm", ["hyperopt", "optuna"])
def test_an_adaptive_search_survives_save_and_restore(tmp_path, algorithm):
    """Tune saves the searcher after trials complete: HyperOpt's domain holds a lambda, which the standard pickle
    cannot save (every hyperopt search stopped at its first save); the restored search goes on suggesting."""
    cells = [cell("a", {"lr": {"loguniform": [1e-4, 1e-1]}}, seeds=(0,), num_samples=3)]
    first = search_plan(cells, SearchSettings(num_samples=3, algorithm=algorithm))
    handed = [first.searcher.suggest(f"t{i}") for i in range(2)]
    first.searcher.on_trial_complete("t0", {"val/wga": 0.5, "epoch": 4})
    first.searcher.save(str(tmp_path / "searcher.pkl"))
    second = search_plan(cells, SearchSettings(num_samples=3, algorithm=algorithm))
    second.searcher.restore(str(tmp_path / "searcher.pkl"))
    rest = second.searcher.suggest("t2")
    assert rest["trial_name"] == "a-h02-s0" and 1e-4 <= rest["lr"] <= 1e-1
    assert [config["trial_name"] for config in handed] == ["a-h00-s0", "a-h01-s0"]


def test_an_adaptive_searcher_is_told_a_diverged_seed_is_the_worst_configuration():
    """Seed 0 of the first configuration diverges, seed 1 reaches 0.8: the searcher (Optuna's TPE behind Tune's
    Repeater) records the configuration at -inf, not at 0.8, the mean of the seed that did not diverge."""
    cells = [cell("a", {"lr": {"loguniform": [1e-4, 1e-1]}}, seeds=(0, 1), num_samples=2)]
    searcher = search_plan(cells, SearchSettings(num_samples=2, algorithm="optuna")).searcher
    for index in range(4):
        searcher.suggest(f"t{index}")
    searcher.on_trial_complete("t0", {"status": "diverged", "epoch": 2})
    searcher.on_trial_complete("t1", {"val/wga": 0.8, "epoch": 4})
    searcher.on_trial_complete("t2", {"val/wga": 0.5, "epoch": 4})
    searcher.on_trial_complete("t3", {"val/wga": 0.6, "epoch": 4})
    study = searcher.searchers["a"].searcher._ot_study
    assert [trial.values for trial in study.trials] == [[-math.inf], [pytest.approx(0.55)]]


def test_an_adaptive_searcher_is_told_a_failed_seed_is_the_worst_configuration_too():
    """A trial that failed for good (its retries spent: Tune calls ``on_trial_complete(error=True)`` without a
    result) counts as the worst value, with one seed or several: the configuration is not scored on its other
    seed (nor, alone, left unscored)."""
    for seeds in ((0, 1), (0,)):
        cells = [cell("a", {"lr": {"loguniform": [1e-4, 1e-1]}}, seeds=seeds, num_samples=2)]
        searcher = search_plan(cells, SearchSettings(num_samples=2, algorithm="optuna")).searcher
        trial_ids = [f"t{index}" for index in range(2 * len(seeds))]
        for trial_id in trial_ids:
            searcher.suggest(trial_id)
        searcher.on_trial_complete(trial_ids[0], None, error=True)
        for trial_id in trial_ids[1:]:
            searcher.on_trial_complete(trial_id, {"val/wga": 0.8, "epoch": 4})
        study = searcher.searchers["a"].searcher._ot_study
        assert [trial.values for trial in study.trials] == [[-math.inf], [pytest.approx(0.8)]], seeds


def fake_trial(trial_id, cell_name, epochs=4):
    return SimpleNamespace(trial_id=trial_id, config={"_cell": cell_name, "epochs": epochs})


def test_asha_runs_per_cell_and_stops_the_worse_half_at_a_rung():
    cells = [cell("a", {"lr": {"loguniform": [1e-4, 1e-1]}}, epochs=4), cell("b", {"lr": {"uniform": [0, 1]}})]
    scheduler = CellScheduler(cells, SearchSettings(scheduler="asha", grace_period=1, reduction_factor=2))
    trials = {name: [fake_trial(f"{name}{i}", name) for i in range(4)] for name in ("a", "b")}
    for group in trials.values():
        for trial in group:
            scheduler.on_trial_add(None, trial)
    decisions = {}
    for name, scores in (("a", [0.9, 0.8, 0.1, 0.05]), ("b", [0.1, 0.2, 0.3, 0.4])):
        for trial, score in zip(trials[name], scores):
            decisions[trial.trial_id] = scheduler.on_trial_result(None, trial, {"epoch": 1, "val/wga": score})
    # each rung keeps the results above the median of those it has seen (reduction factor 2), per cell:
    # a3 (0.05) is stopped by a's rung; b0 (0.1, far below a's cutoff) is the first of its own cell
    assert decisions["a0"] == TrialScheduler.CONTINUE and decisions["a3"] == TrialScheduler.STOP
    assert decisions["b0"] == decisions["b1"] == decisions["b3"] == TrialScheduler.CONTINUE
    assert scheduler.stopped >= 1 and "stopped early" in scheduler.debug_string()
    assert scheduler.on_trial_result(None, trials["a"][0], {"epoch": 2, "status": "diverged"}) == "CONTINUE"


def test_asha_runs_a_searched_epochs_up_to_its_largest_value():
    """A cell searching ``epochs: {choice: [2, 6]}``: ASHA's max_t is 6, not the space's first value (which
    stopped every longer trial at epoch 2, leaving it 'incomplete'); a trial ending at its own last epoch is
    not 'stopped early'."""
    scheduler = CellScheduler([cell("a", {"epochs": {"choice": [2, 6]}}, epochs=2)],
                              SearchSettings(scheduler="asha", grace_period=1, reduction_factor=2))
    long, short = fake_trial("long", "a", epochs=6), fake_trial("short", "a", epochs=2)
    for trial in (long, short):
        scheduler.on_trial_add(None, trial)
    decisions = [scheduler.on_trial_result(None, long, {"epoch": epoch, "val/wga": 0.9}) for epoch in range(1, 6)]
    assert decisions == [TrialScheduler.CONTINUE] * 5
    assert scheduler.on_trial_result(None, short, {"epoch": 1, "val/wga": 0.95}) == TrialScheduler.CONTINUE
    scheduler.on_trial_result(None, short, {"epoch": 2, "val/wga": 0.95})  # its last epoch: ends by itself
    scheduler.on_trial_result(None, long, {"epoch": 6, "val/wga": 0.9})
    assert scheduler.stopped == 0


def test_a_training_metric_search_needs_the_training_split_evaluated_every_epoch():
    from sweeps.spaces import check_metric_reported

    settings = parse_search({"metric": "train/acc"}, parse_seeds)
    default = cell("wb-none", space={"lr": {"loguniform": [1e-4, 1e-1]}})
    with pytest.raises(GroupsweepError, match="cell wb-none has eval_train 'final'; set eval_train: every"):
        check_metric_reported(settings, [default])
    every = SearchCell(name="wb-every", config={**default.config, "eval_train": "every"}, space=default.space,
                       seeds=(0,), resources=None)
    check_metric_reported(settings, [every])  # evaluated every epoch: accepted
    searched = SearchCell(name="wb-searched", config=every.config, space={"eval_train": {"choice": ["every", 2]}},
                          seeds=(0,), resources=None)
    with pytest.raises(GroupsweepError, match="wb-searched"):
        check_metric_reported(settings, [searched])
    check_metric_reported(parse_search({"metric": "val/wga"}, parse_seeds), [default])  # validation: any eval_train


def test_a_search_summary_lists_trials_in_the_specs_cell_order():
    import pandas as pd

    from sweeps.sweep_command import grid_order

    spec = SimpleNamespace(search=SearchSettings(), cells=[cell("z-none"), cell("a-upsampling")])
    results = SimpleNamespace(trials=pd.DataFrame({"cell": ["a-upsampling", "z-none", "z-none"],
                                                   "trial_name": ["a-upsampling-h00-s1", "z-none-h01-s1",
                                                                  "z-none-h00-s1"]}))
    assert grid_order(spec, results) == ["z-none-h00-s1", "z-none-h01-s1", "a-upsampling-h00-s1"]


def test_plan_shows_a_searched_epochs_as_the_most_a_trial_runs(capsys):
    from sweeps.spec import build_spec
    from sweeps.sweep_command import plan_search

    spec = build_spec({"datasets": {"synthetic-waterbirds": {"options": {"size": 200}}}, "models": ["toy-resnet-xs"],
                       "methods": ["none"], "search": {"num_samples": 2},
                       "hparams": {"epochs": {"choice": [3, 6]}, "lr": {"loguniform": [1.0e-4, 1.0e-2]}}})
    plan_search(spec)
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert row[header.index(" epochs ") + 1:].split()[0] == "<=6"  # the epochs column (aligned under its header)


def test_set_replaces_a_space_with_a_space_of_another_kind():
    """A space is one value: ``--set lr={uniform: ...}`` (a training setting) or ``hparams.lr=...`` (a spec key)
    replaces the spec's ``{loguniform: ...}``; before, the two mappings were merged into an invalid two-key
    space, refused under another key's name. Mappings that are not spaces still merge key by key."""
    from sweeps.spec import apply_overrides, build_spec

    source = {"datasets": {"synthetic-waterbirds": {"options": {"size": 200}}}, "models": ["toy-resnet-xs"],
              "methods": ["none"], "search": {"num_samples": 2},
              "hparams": {"lr": {"loguniform": [1.0e-4, 1.0e-2]}, "weight_decay": {"loguniform": [1.0e-5, 1.0e-2]}}}
    for overrides in ({"lr": {"uniform": [0.001, 0.01]}}, {"hparams": {"lr": {"uniform": [0.001, 0.01]}}}):
        (searched,) = build_spec(apply_overrides(source, overrides)).cells
        assert searched.space["lr"] == {"uniform": [0.001, 0.01]}, overrides
        assert searched.space["weight_decay"] == {"loguniform": [1.0e-5, 1.0e-2]}
    (fixed,) = build_spec(apply_overrides(source, {"lr": 0.001})).cells  # a value replaces a space too
    assert "lr" not in fixed.space and fixed.config["lr"] == 0.001
    options = build_spec(apply_overrides(source, {"dataset_options": {"val_size": 50}})).cells[0].config
    assert options["dataset_options"] == {"size": 200, "val_size": 50}
