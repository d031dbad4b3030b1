"""Analysing a hyperparameter search: configurations chosen within methods and methods across, ties, the
stopped-trial rule under final and best, the biased model of a searched ``none``, sampled keys that never
make variants, several sweep directories (duplicates, clashing ids) and the rerun of chosen configurations."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis.results import STATUSES, load_results
from analysis.selection import _in_configurations, display_hyperparameters, display_table, select
from results_fixtures import epoch_metrics, searched_config, trial_config, write_trial
from test_selection import BIASED, LABELS, UPSAMPLING_PRED, UPSAMPLING_SCORE, VAL_Y

# The search of every test: dataset wb, model m, 3 epochs, seeds 0 and 1. Final-epoch val/wga per
# configuration and seed, and the sampled learning rate:
#   upweighting h00 (0.50, 0.70) -> 0.60, lr 1e-3
#               h01 (0.80, 0.60) -> 0.70, lr 1e-4   <- tied with h02 (0.8 + 0.6 is 1.4000000000000001): lower id
#               h02 (0.65, 0.75) -> 0.70, lr 1e-5
#   subsetting  h00 (0.60, 0.60) -> 0.60, lr 1e-3
#               h01 (0.66, 0.68) -> 0.67, lr 1e-4
#   none        h00 (0.30, 0.30) -> 0.30, not searched (sampled keys: none)
# so upweighting h01 wins (0.70 > 0.67 > 0.30); its test WGA is 0.72 and 0.76.
SEARCH = {
    ("upweighting", 0): (1e-3, (0.50, 0.70)),
    ("upweighting", 1): (1e-4, (0.80, 0.60)),
    ("upweighting", 2): (1e-5, (0.65, 0.75)),
    ("subsetting", 0): (1e-3, (0.60, 0.60)),
    ("subsetting", 1): (1e-4, (0.66, 0.68)),
    ("none", 0): (None, (0.30, 0.30)),
}
WINNER_TEST_WGA = (0.72, 0.76)


def reports(final: dict, epochs: int = 3, last: int | None = None) -> list:
    """Reports up to ``last`` (default: every epoch) whose values at epoch ``epochs`` are ``final``
    (earlier epochs: val/wga lower by 0.1 per epoch)."""
    out = []
    for epoch in range(1, (last or epochs) + 1):
        values = dict(final)
        values["val/wga"] = final["val/wga"] - 0.1 * (epochs - epoch)
        out.append(epoch_metrics(epoch, overrides=values))
    return out


def write_search(run_dir, search=SEARCH, index: int = 0, experiment_id: str = "5e4c1", **trial_options) -> int:
    """Write the search ``search`` ((method, sample) -> (lr, val/wga per seed)) into ``run_dir``; return
    the next trial index."""
    for (method, sample), (lr, values) in search.items():
        for seed, value in enumerate(values):
            sampled = {} if lr is None else {"lr": lr}
            test = WINNER_TEST_WGA[seed] if (method, sample) == ("upweighting", 1) else 0.5
            write_trial(run_dir, index, searched_config("wb", "m", method, sample=sample, seed=seed, sampled=sampled),
                        reports({"val/wga": value, "test/wga": test}), experiment_id=experiment_id, **trial_options)
            index += 1
    return index


def test_trials_carry_config_ids_sampled_values_and_no_sampled_variant(tmp_path):
    write_search(tmp_path / "search")
    results = load_results(tmp_path / "search")
    trials = results.trials.set_index("trial_name")
    row = trials.loc["wb-m-upweighting-h01-s1"]
    assert row["cell"] == "wb-m-upweighting" and row["config_id"] == "h01" and row["hparams"] == "lr=0.0001"
    assert row["lr"] == 1e-4 and row["sweep"] == "search"
    none = trials.loc["wb-m-none-h00-s0"]
    assert none["config_id"] == "h00" and none["hparams"] == "" and none["lr"] == 1e-5  # the fixed default
    assert trials["variant"].eq("").all()  # lr differs between trials, but it is sampled
    assert results.searched and results.sampled_keys == ["lr"]
    frame = results.frame
    assert {"sweep", "cell", "config_id", "hparams", "lr"} <= set(frame.columns)
    assert frame.loc[frame["trial_id"] == row["trial_id"], "lr"].eq(1e-4).all()
    assert results.configs[row["trial_id"]]["_sampled"] == ["lr"]


def test_config_id_is_padded_like_the_trial_names(tmp_path):
    write_trial(tmp_path, 0, searched_config("wb", "m", "none", sample=3, sampled={"lr": 0.1}),
                reports({"val/wga": 0.5}))
    write_trial(tmp_path, 1, searched_config("wb", "m", "upweighting", sample=104, width=3, sampled={"lr": 0.1,
                "weight_decay": 3.1e-05}), reports({"val/wga": 0.5}))
    write_trial(tmp_path, 2, searched_config("wb", "m", "upweighting", sample=7, width=3,
                                             sampled={"lr": 0.00123, "weight_decay": 0.5}), reports({"val/wga": 0.5}))
    trials = load_results(tmp_path).trials.set_index("trial_name")
    assert trials.loc["wb-m-none-h03-s0", "config_id"] == "h03"
    assert trials.loc["wb-m-upweighting-h104-s0", "config_id"] == "h104"
    assert trials.loc["wb-m-upweighting-h007-s0", "config_id"] == "h007"
    assert trials.loc["wb-m-upweighting-h007-s0", "hparams"] == "lr=0.00123, weight_decay=0.5"
    assert trials.loc["wb-m-upweighting-h104-s0", "hparams"] == "lr=0.1, weight_decay=3.1e-05"


def test_each_method_keeps_its_best_configuration_and_the_best_method_wins(tmp_path):
    write_search(tmp_path)
    selection = select(load_results(tmp_path), ["wga"])
    row = selection.table.iloc[0]
    assert row["method_label"] == "upweighting" and row["config_id"] == "h01" and row["hparams"] == "lr=0.0001"
    assert row["score"] == pytest.approx(0.70) and row["n_candidates"] == 3 and row["n_seeds"] == 2
    assert row["test_wga_mean"] == pytest.approx(0.74)
    assert row["test_wga_std"] == pytest.approx(np.std(WINNER_TEST_WGA, ddof=1))
    assert "cell" not in selection.table and "variant" not in selection.table

    chosen = selection.hyperparameters.set_index("method_label")
    assert chosen["config_id"].to_dict() == {"upweighting": "h01", "subsetting": "h01", "none": "h00"}
    assert chosen["n_configurations"].to_dict() == {"upweighting": 3, "subsetting": 2, "none": 1}
    assert chosen.at["subsetting", "score"] == pytest.approx(0.67) and chosen.at["subsetting", "lr"] == 1e-4
    assert chosen.at["none", "hparams"] == "" and chosen["n_seeds"].eq(2).all()
    assert chosen["selected"].to_dict() == {"upweighting": True, "subsetting": False, "none": False}
    shown = display_hyperparameters(selection.hyperparameters)
    assert shown["method"].tolist()[0] == "upweighting *" and shown["config"].tolist()[0] == "h01"
    assert display_table(selection.table).at[0, "config"] == "h01"
    assert selection.notes == []


def test_the_run_summary_of_a_search_reports_each_methods_chosen_configuration_not_all_of_them(tmp_path):
    """Pooled, upweighting's three configurations would give (0.5 * 4 + 0.72 + 0.76) / 6 = 0.58; the summary gives
    its configuration chosen by validation WGA (h01, 0.74 over its 2 seeds), as ``analyze`` does. A method whose
    configurations have not finished (subsetting: stopped by ASHA) has no chosen one yet."""
    from analysis.summary import display_summary, format_summary, summarize

    write_search(tmp_path, {key: value for key, value in SEARCH.items() if key[0] != "subsetting"})
    write_trial(tmp_path, 9, searched_config("wb", "m", "upweighting", sample=3, seed=0, sampled={"lr": 1e-2}),
                [epoch_metrics(1, overrides={"val/wga": 0.9})], stopped=True)  # counted, not a candidate
    for seed in (0, 1):
        write_trial(tmp_path, 10 + seed, searched_config("wb", "m", "subsetting", sample=0, seed=seed,
                                                         sampled={"lr": 1e-3}),
                    [epoch_metrics(1, overrides={"val/wga": 0.9})], stopped=True)
    summary = summarize(load_results(tmp_path)).set_index("method")
    assert summary.loc["upweighting", ["config", "n"]].tolist() == ["h01 of 4", 2]
    assert summary.loc["upweighting", "test_wga_mean"] == pytest.approx(0.74)
    assert summary.loc["upweighting", "test_wga_std"] == pytest.approx(np.std(WINNER_TEST_WGA, ddof=1))
    assert summary.loc["none", ["config", "n", "test_wga_mean"]].tolist() == ["h00 of 1", 2, 0.5]
    assert summary.loc["subsetting", ["config", "n"]].tolist() == ["", 0]
    assert math.isnan(summary.loc["subsetting", "test_wga_mean"])
    lines = format_summary(summary.reset_index()).splitlines()
    assert "config (by val WGA)" in lines[0]
    assert [line.split()[2:6] for line in lines[1:] if "upweighting" in line] == [["upweighting", "h01", "of", "4"]]
    assert "74.0 ± 2.8" in next(line for line in lines if "upweighting" in line)
    assert display_summary(summary.reset_index())["config (by val WGA)"].tolist()[:1] == ["h00 of 1"]


def test_spectral_analyses_the_chosen_configuration_of_the_chosen_method_only(tmp_path):
    from analysis.features import criterion_trials

    write_search(tmp_path)  # upweighting h01 wins; h00 and h02 are complete too
    results = load_results(tmp_path)
    chosen, _ = criterion_trials(results, "wga")
    assert results.trials.loc[chosen, "trial_name"].tolist() == ["wb-m-upweighting-h01-s0", "wb-m-upweighting-h01-s1"]


def test_spectral_with_group_info_chooses_only_among_methods_using_at_most_that_much(tmp_path):
    from analysis.features import criterion_trials

    # groupdro (train+val group labels) has the best validation WGA, upweighting (none) the next best
    write_search(tmp_path, {("groupdro", 0): (None, (0.90, 0.80)), ("upweighting", 0): (None, (0.70, 0.60)),
                           ("none", 0): (None, (0.30, 0.20))})
    results = load_results(tmp_path)

    def names(trial_ids):
        return results.trials.loc[trial_ids, "trial_name"].tolist()

    assert names(criterion_trials(results, "wga")[0]) == ["wb-m-groupdro-h00-s0", "wb-m-groupdro-h00-s1"]
    for level in ("none", "val"):
        chosen, notes = criterion_trials(results, "wga", group_info=level)
        assert names(chosen) == ["wb-m-upweighting-h00-s0", "wb-m-upweighting-h00-s1"]
        assert any(f"at most {level}: left out groupdro (train+val)" in note for note in notes)
    assert names(criterion_trials(results, "wga", group_info="train+val")[0])[0] == "wb-m-groupdro-h00-s0"


def test_a_method_whose_best_configuration_wins_on_one_seed_only_loses_on_the_mean(tmp_path):
    search = {("upweighting", 0): (1e-3, (0.95, 0.05)), ("upweighting", 1): (1e-4, (0.55, 0.55)),
              ("subsetting", 0): (1e-3, (0.52, 0.52))}
    write_search(tmp_path, search)
    selection = select(load_results(tmp_path), ["wga"])
    chosen = selection.hyperparameters.set_index("method_label")
    assert chosen.at["upweighting", "config_id"] == "h01"  # 0.55 mean beats 0.50
    assert selection.table.iloc[0]["method_label"] == "upweighting"


def test_a_configuration_is_matched_by_its_cell_and_id_together():
    """A row belongs to a configuration only when both its cell and its config_id match one configuration's: ids
    repeat across cells (h00 in every cell), and each component matching some configuration is not enough."""
    frame = pd.DataFrame({"cell": ["a", "a", "b", "b", ""], "config_id": ["h00", "h01", "h00", "h01", ""]})
    configurations = pd.DataFrame({"cell": ["a", "b", "b"], "config_id": ["h01", "h00", "h00"], "seed": [1, 1, 2]})
    assert _in_configurations(frame, configurations).tolist() == [False, True, True, False, False]
    assert _in_configurations(frame, configurations.iloc[0:0]).tolist() == [False] * 5
    assert _in_configurations(frame.iloc[0:0], configurations).tolist() == []


def test_stopped_configurations_are_left_out_at_the_final_epoch_and_scored_at_their_best(tmp_path):
    # upweighting h00: seed 0 complete (final val/wga 0.60, its best), seed 1 stopped by ASHA at epoch 1
    # with val/wga 0.95; h01 complete with 0.70 on both seeds.
    write_trial(tmp_path, 0, searched_config("wb", "m", "upweighting", sample=0, seed=0, sampled={"lr": 1e-3}),
                reports({"val/wga": 0.60}))
    write_trial(tmp_path, 1, searched_config("wb", "m", "upweighting", sample=0, seed=1, sampled={"lr": 1e-3}),
                [epoch_metrics(1, overrides={"val/wga": 0.95})], stopped=True)
    for seed in (0, 1):
        write_trial(tmp_path, 2 + seed, searched_config("wb", "m", "upweighting", sample=1, seed=seed,
                                                        sampled={"lr": 1e-4}), reports({"val/wga": 0.70}))
    results = load_results(tmp_path)
    assert "stopped" in STATUSES
    assert results.trials.set_index("trial_name").at["wb-m-upweighting-h00-s1", "status"] == "stopped"

    final = select(results, ["wga"], epoch="final")
    assert final.table.iloc[0]["config_id"] == "h01" and final.table.iloc[0]["score"] == pytest.approx(0.70)
    assert final.hyperparameters.iloc[0]["n_configurations"] == 1
    assert final.notes == [("wb/m/upweighting: 1 of 2 configurations left out (h00): ASHA stopped 1 of their trials "
                            "before epoch 3 (the final epoch rule needs every seed at its final epoch)")]

    best = select(results, ["wga"], epoch="best")
    row = best.table.iloc[0]
    assert row["config_id"] == "h00" and row["score"] == pytest.approx((0.60 + 0.95) / 2)
    assert row["mean_epoch"] == pytest.approx(2.0)  # seed 0 at epoch 3, the stopped seed at epoch 1
    assert best.hyperparameters.iloc[0]["n_configurations"] == 2
    assert best.notes == [("wb/m/upweighting: 1 trial(s) stopped early by ASHA are scored at the best of the "
                           "epochs they reached (best epoch rule)")]


def test_a_configuration_that_diverged_on_a_seed_is_left_out(tmp_path):
    """upweighting h00 reaches 0.95 on seed 0 but diverges on seed 1: scored on seed 0 alone it would win; a
    configuration is compared over all its seeds, so h01 (0.70 on both) is chosen, and a note says why."""
    from results_fixtures import diverged_report

    write_trial(tmp_path, 0, searched_config("wb", "m", "upweighting", sample=0, seed=0, sampled={"lr": 1e-2}),
                reports({"val/wga": 0.95}))
    write_trial(tmp_path, 1, searched_config("wb", "m", "upweighting", sample=0, seed=1, sampled={"lr": 1e-2}),
                [epoch_metrics(1, overrides={"val/wga": 0.9}), diverged_report(2)])
    for seed in (0, 1):
        write_trial(tmp_path, 2 + seed, searched_config("wb", "m", "upweighting", sample=1, seed=seed,
                                                        sampled={"lr": 1e-4}), reports({"val/wga": 0.70}))
    for epoch in ("final", "best"):
        selection = select(load_results(tmp_path), ["wga"], epoch=epoch)
        assert selection.table.iloc[0]["config_id"] == "h01", epoch
        assert selection.table.iloc[0]["score"] == pytest.approx(0.70)
        assert ("wb/m/upweighting: 1 of 2 configurations left out (h00): 1 of their trials diverged (a configuration "
                "is compared over all its seeds)") in selection.notes


def test_a_configuration_with_a_failed_or_unfinished_seed_is_left_out(tmp_path):
    """upweighting h00 reaches 0.95 on seed 0, but its seed 1 failed (h01: 0.70 on both) or is still running:
    scored on seed 0 alone it would win on one lucky seed, as a diverged seed would."""
    for status in ("failed", "did not finish"):
        run_dir = tmp_path / status.replace(" ", "-")
        write_trial(run_dir, 0, searched_config("wb", "m", "upweighting", sample=0, seed=0, sampled={"lr": 1e-2}),
                    reports({"val/wga": 0.95}))
        write_trial(run_dir, 1, searched_config("wb", "m", "upweighting", sample=0, seed=1, sampled={"lr": 1e-2}),
                    reports({"val/wga": 0.9}, last=1), error="RuntimeError: CUDA error" if status == "failed" else None)
        for seed in (0, 1):
            write_trial(run_dir, 2 + seed, searched_config("wb", "m", "upweighting", sample=1, seed=seed,
                                                           sampled={"lr": 1e-4}), reports({"val/wga": 0.70}))
        selection = select(load_results(run_dir), ["wga"])
        assert selection.table.iloc[0]["config_id"] == "h01", status
        assert selection.hyperparameters.iloc[0]["n_configurations"] == 1
        assert (f"wb/m/upweighting: 1 of 2 configurations left out (h00): 1 of their trials {status} (a "
                "configuration is compared over all its seeds)") in selection.notes


def test_a_search_with_no_complete_configuration_is_noted_not_a_crash(tmp_path):
    """Every configuration diverged or is unfinished (a running search whose first trials diverged): no
    candidate, a note per criterion and per trial, for every criterion and epoch rule."""
    from results_fixtures import diverged_report

    write_trial(tmp_path, 0, searched_config("wb", "m", "none", sample=0, seed=0, sampled={"lr": 1e8}),
                [epoch_metrics(1, overrides={"val/wga": 0.9}), diverged_report(2)])
    write_trial(tmp_path, 1, searched_config("wb", "m", "none", sample=0, seed=1, sampled={"lr": 1e8}),
                reports({"val/wga": 0.9}, last=1))
    criteria = ["wga", "worst-class", "bias-unsupervised", "average", "oracle"]
    for epoch in ("final", "best"):
        selection = select(load_results(tmp_path), criteria, epoch=epoch)
        assert selection.table.empty and selection.methods.empty
        assert [note for note in selection.notes if note.endswith("; skipped")] == [
            f"{criterion}: no complete trial with a value for this criterion; skipped" for criterion in criteria]
        assert "wb/m/none seed 0: diverged (epoch 2/3); excluded" in selection.notes
        assert "wb/m/none seed 1: incomplete (epoch 1/3); excluded" in selection.notes


def test_configuration_ties_go_to_the_lower_number_across_cells_of_different_widths(tmp_path):
    """With models pooled, a method's configurations come from every model's cell; a cell of 100 or more
    configurations pads its ids to three digits: h010 (10) is not lower than h05 (5)."""
    for index, (model, sample, width, value) in enumerate([("m1", 5, 2, 0.6), ("m2", 10, 3, 0.6), ("m2", 100, 3, 0.1)]):
        write_trial(tmp_path, index, searched_config("wb", model, "upweighting", sample=sample, width=width,
                                                     sampled={"lr": 1e-3 * (index + 1)}), reports({"val/wga": value}))
    results = load_results(tmp_path)
    assert sorted(results.trials["config_id"]) == ["h010", "h05", "h100"]
    assert select(results, ["wga"], by_model=False).table.iloc[0]["config_id"] == "h05"


def test_an_interrupted_trial_is_still_excluded_one_by_one(tmp_path):
    write_search(tmp_path, {("upweighting", 0): (1e-3, (0.5, 0.7))})
    write_trial(tmp_path, 9, searched_config("wb", "m", "upweighting", sample=1, seed=0, sampled={"lr": 1e-4}),
                reports({"val/wga": 0.9}, last=1))
    selection = select(load_results(tmp_path), ["wga"])
    assert selection.notes == ["wb/m/upweighting seed 0: incomplete (epoch 1/3); excluded"]
    assert selection.table.iloc[0]["config_id"] == "h00"


def write_bias_search(run_dir, none_accuracy: dict) -> None:
    """``none`` searched with two configurations: h00 predicts ``BIASED[seed]``, h01 is always right;
    ``none_accuracy`` gives each one's val/avg_acc. Upsampling (one configuration) predicts UPSAMPLING_PRED."""
    index = 0
    for seed in (0, 1):
        for sample, predictions in ((0, BIASED[seed]), (1, VAL_Y)):
            write_trial(run_dir, index, searched_config("wb", "m", "none", sample=sample, seed=seed,
                                                        sampled={"lr": 10.0 ** -(3 + sample)}),
                        reports({"val/wga": 0.3, "val/avg_acc": none_accuracy[sample]}), labels=LABELS,
                        predictions={e: {"val": predictions, "test": [0, 1]} for e in (1, 2, 3)})
            index += 1
        write_trial(run_dir, index, searched_config("wb", "m", "upsampling", sample=0, seed=seed, sampled={"lr": 1e-3}),
                    reports({"val/wga": 0.5}), labels=LABELS,
                    predictions={e: {"val": UPSAMPLING_PRED, "test": [0, 1]} for e in (1, 2, 3)})
        index += 1


@pytest.mark.parametrize("best_none, expected", [
    ("h00", UPSAMPLING_SCORE),  # against BIASED: the hand computation of test_selection
    ("h01", 19 / 24),           # against an always-right model only cells S00 {0..5} and S11 {6..9}: (5/6 + 3/4) / 2
])
def test_bias_unsupervised_takes_the_none_configuration_with_the_best_average_accuracy(tmp_path, best_none, expected):
    write_bias_search(tmp_path, {0: 0.9, 1: 0.8} if best_none == "h00" else {0: 0.8, 1: 0.9})
    selection = select(load_results(tmp_path), ["bias-unsupervised"])
    methods = selection.methods.set_index("method_label")
    assert methods.at["upsampling", "score"] == pytest.approx(expected)
    accuracy = 0.9
    assert f"bias-unsupervised: the biased model of wb/m is `none` {best_none} (best mean val/avg_acc " \
           f"{accuracy:.4f} over 2 seed(s), of 2 configurations)" in selection.notes


def test_a_stopped_none_configuration_cannot_be_the_biased_model(tmp_path):
    write_bias_search(tmp_path, {0: 0.9, 1: 0.8})
    write_trial(tmp_path, 50, searched_config("wb", "m", "none", sample=0, seed=2, sampled={"lr": 1e-3}),
                [epoch_metrics(1)], stopped=True)
    write_trial(tmp_path, 51, searched_config("wb", "m", "none", sample=1, seed=2, sampled={"lr": 1e-4}),
                reports({"val/wga": 0.3, "val/avg_acc": 0.8}), labels=LABELS,
                predictions={e: {"val": VAL_Y, "test": [0, 1]} for e in (1, 2, 3)})
    selection = select(load_results(tmp_path), ["bias-unsupervised"])
    assert selection.methods.set_index("method_label").at["upsampling", "score"] == pytest.approx(19 / 24)


@pytest.mark.parametrize("absent", ["none", "upweighting"])
def test_a_configuration_without_a_trial_of_a_seed_its_rivals_ran_is_left_out(tmp_path, absent):
    """Tune makes a trial's folder only when it starts: a seed still waiting (or never started in an interrupted
    search) has none. A configuration without it is compared on fewer seeds than its rivals, so it is left out, as
    one with an unfinished seed is; a `none` configuration without it is no biased model either."""
    index = 0
    for method in ("none", "upweighting"):
        for sample, values in ((0, (0.5, 0.7)), (1, (0.95, None))):  # h01: its seed 1 has no trial yet
            for seed, value in enumerate(values):
                if value is None and method == absent:
                    continue
                write_trial(tmp_path, index, searched_config("wb", "m", method, sample=sample, seed=seed,
                                                             sampled={"lr": 10.0 ** -(3 + sample)}),
                            reports({"val/wga": value or 0.6, "val/avg_acc": value or 0.6}), labels=LABELS,
                            predictions={e: {"val": VAL_Y, "test": [0, 1]} for e in (1, 2, 3)})
                index += 1
    selection = select(load_results(tmp_path), ["wga", "bias-unsupervised"])
    chosen = selection.methods[selection.methods["method_label"] == absent].set_index("criterion")
    assert set(chosen["config_id"]) == {"h00"}
    assert (f"wb/m/{absent}: 1 of 2 configurations left out (h01): no trial yet of seed(s) 1 that the cell's other "
            "configurations ran (a configuration is compared over all its seeds)") in selection.notes
    if absent == "none":
        assert ("bias-unsupervised: the biased model of wb/m is `none` h00 (best mean val/avg_acc 0.6000 over 2 "
                "seed(s), of 1 configurations)") in selection.notes


def test_reruns_in_a_second_directory_make_the_rerun_table(tmp_path):
    write_search(tmp_path / "search")
    rerun = tmp_path / "rerun"
    for index, (method, lr, seed, test_wga) in enumerate([
            ("upweighting", 1e-4, 5, 0.90), ("upweighting", 1e-4, 6, 0.80),  # the winner h01
            ("subsetting", 1e-4, 5, 0.40),                                   # subsetting's chosen h01
            ("upweighting", 1e-3, 5, 0.10)]):                                # h00: not chosen
        write_trial(rerun, index, trial_config("wb", "m", method, seed=seed, lr=lr),
                    reports({"val/wga": 0.99, "test/wga": test_wga}), experiment_id="9f8e7")
    alone = select(load_results(tmp_path / "search"), ["wga", "average"])
    assert alone.rerun.empty
    both = select(load_results([tmp_path / "search", rerun]), ["wga", "average"])
    # the reruns are no candidates: Table 1 is the search's
    pd.testing.assert_frame_equal(both.table, alone.table)
    assert "4 grid trial(s) rerun searched configurations: they are reported as the rerun of the chosen " \
           "configurations, not as candidates" in both.notes
    table = both.rerun.set_index("criterion")
    assert table.at["wga", "method_label"] == "upweighting" and table.at["wga", "config_id"] == "h01"
    assert table.at["wga", "score"] == pytest.approx(0.70)  # the search's validation score
    assert table.at["wga", "test_wga_mean"] == pytest.approx(0.85)
    assert table.at["wga", "test_wga_std"] == pytest.approx(np.std([0.9, 0.8], ddof=1))
    assert table.at["wga", "n_seeds"] == 2 and table.at["wga", "seeds"] == "5,6" and table.at["wga", "sweep"] == "rerun"
    assert "n_candidates" not in both.rerun
    # average: every trial reports val/avg_acc 0.8, so the first method (none) wins; it has no rerun
    assert list(table.index) == ["wga"]
    assert "rerun: wb/m wga" not in " ".join(both.notes)
    assert any(note.startswith("rerun: wb/m average: the chosen none h00 has no complete rerun") for note in both.notes)
    assert display_table(both.rerun).at[0, "test WGA (%)"] == "85.0 ± 7.1"


def test_reruns_that_did_not_complete_are_named_in_a_note(tmp_path):
    """The winner's rerun on seed 6 diverged: the rerun metrics are over seeds 5 and 7, and a note says so
    (once, although two criteria chose the same configuration)."""
    from results_fixtures import diverged_report

    write_search(tmp_path / "search")
    rerun = tmp_path / "rerun"
    for index, seed in enumerate((5, 6, 7)):
        final = [diverged_report(2)] if seed == 6 else reports({"val/wga": 0.99, "test/wga": 0.9 if seed == 5 else 0.1})
        write_trial(rerun, index, trial_config("wb", "m", "upweighting", seed=seed, lr=1e-4),
                    final if seed != 6 else [epoch_metrics(1), *final], experiment_id="9f8e7")
    selection = select(load_results([tmp_path / "search", rerun]), ["wga", "oracle"])
    assert selection.rerun.set_index("criterion").at["wga", "seeds"] == "5,7"
    assert [note for note in selection.notes if note.startswith("rerun: ")] == [
        "rerun: wb/m: 1 of 3 reruns of upweighting h01 did not complete (seed 6 diverged); its rerun metrics are "
        "over the others only"]


def test_best_epoch_rerun_reads_each_rerun_at_its_best_epoch(tmp_path):
    write_search(tmp_path / "search")
    rerun = tmp_path / "rerun"
    write_trial(rerun, 0, trial_config("wb", "m", "upweighting", seed=5, lr=1e-4), [
        epoch_metrics(1, overrides={"val/wga": 0.9, "test/wga": 0.88}),
        epoch_metrics(2, overrides={"val/wga": 0.5, "test/wga": 0.5}),
        epoch_metrics(3, overrides={"val/wga": 0.5, "test/wga": 0.6})], experiment_id="9f8e7")
    results = load_results([tmp_path / "search", rerun])
    assert select(results, ["wga"], epoch="final").rerun.iloc[0]["test_wga_mean"] == pytest.approx(0.6)
    best = select(results, ["wga"], epoch="best").rerun.iloc[0]
    assert best["test_wga_mean"] == pytest.approx(0.88) and best["mean_epoch"] == 1
    assert math.isnan(best["test_wga_std"])


def test_a_trial_in_two_directories_is_counted_once_and_clashing_ids_are_kept_apart(tmp_path):
    config = trial_config("wb", "m", "none", seed=0)
    write_trial(tmp_path / "a", 0, config, reports({"val/wga": 0.5}))
    write_trial(tmp_path / "b", 0, config, reports({"val/wga": 0.5}))            # the same trial
    write_trial(tmp_path / "b", 1, trial_config("wb", "m", "subsetting", seed=0), reports({"val/wga": 0.6}))
    write_trial(tmp_path / "a", 1, trial_config("wb", "m", "upsampling", seed=0), reports({"val/wga": 0.7}))
    results = load_results([tmp_path / "a", tmp_path / "b"])
    assert len(results.trials) == 3 and len(results.frame) == 9
    assert results.problems == [("trial wb_m_none_s0 is in both a and b with the same config; counted once, from a "
                                 "(epochs reported: 3 there, 3 in b)")]
    assert dict(zip(results.trials["method"], results.trials.index)) == {
        "none": "1a2b3_00000", "upsampling": "1a2b3_00001", "subsetting": "b/1a2b3_00001"}
    assert dict(zip(results.trials["method"], results.trials["sweep"])) == {
        "none": "a", "upsampling": "a", "subsetting": "b"}
    assert results.run_dir == (tmp_path / "a").resolve() and len(results.run_dirs) == 2
    assert results.trial_dir("b/1a2b3_00001").startswith(str((tmp_path / "b").resolve()))
    assert select(results, ["wga"]).table.iloc[0]["method_label"] == "upsampling"
    # the same directory twice reads once; a list of one is that directory
    assert len(load_results([tmp_path / "a", tmp_path / "a"]).trials) == 2
    assert load_results([tmp_path / "a"]).problems == []
    # a copy that got further wins, wherever it comes in the order (a sweep rerun under another name)
    write_trial(tmp_path / "c", 0, config, reports({"val/wga": 0.5}, last=1))
    write_trial(tmp_path / "d", 0, config, reports({"val/wga": 0.8}))
    results = load_results([tmp_path / "c", tmp_path / "d"])
    assert len(results.trials) == 1 and results.trials.iloc[0]["sweep"] == "d"
    assert results.trials.iloc[0]["status"] == "complete" and results.frame["epoch"].tolist() == [1, 2, 3]
    assert results.problems == [("trial wb_m_none_s0 is in both d and c with the same config; counted once, from d "
                                 "(epochs reported: 3 there, 1 in c)")]


def test_analyze_and_plot_take_several_directories(tmp_path, capsys):
    from sweeps import cli

    write_search(tmp_path / "search")
    write_trial(tmp_path / "rerun", 0, trial_config("wb", "m", "upweighting", seed=5, lr=1e-4),
                reports({"val/wga": 0.9, "test/wga": 0.8}), experiment_id="9f8e7")
    out = tmp_path / "out"
    assert cli.main(["analyze", str(tmp_path / "search"), str(tmp_path / "rerun"), "--criterion", "wga",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Chosen configuration per method" in printed and "upweighting *" in printed and "lr=0.0001" in printed
    assert "Rerun of the chosen configurations" in printed
    hyperparameters = pd.read_csv(out / "table1_wga_hyperparameters.csv")
    assert hyperparameters.set_index("method_label").at["upweighting", "config_id"] == "h01"
    rerun = pd.read_csv(out / "table1_wga_rerun.csv")
    assert rerun.iloc[0]["test_wga_mean"] == pytest.approx(0.8) and rerun.iloc[0]["sweep"] == "rerun"
    table = pd.read_csv(out / "table1_wga.csv")
    assert table.iloc[0]["config_id"] == "h01" and table.iloc[0]["hparams"] == "lr=0.0001"
    markdown = (out / "table1_wga.md").read_text()
    assert "## Chosen configuration per method" in markdown and "## Rerun of the chosen configurations" in markdown

    assert cli.main(["analyze", str(tmp_path / "search"), "--criterion", "wga", "--out", str(out / "alone")]) == 0
    assert not (out / "alone" / "table1_wga_rerun.csv").exists()
    assert (out / "alone" / "table1_wga_hyperparameters.csv").exists()
    # the search alone into the same folder: the rerun's table of the run before is gone, not left as if current
    assert cli.main(["analyze", str(tmp_path / "search"), "--criterion", "wga", "--out", str(out)]) == 0
    assert not (out / "table1_wga_rerun.csv").exists() and (out / "table1_wga_hyperparameters.csv").exists()
    assert "## Rerun" not in (out / "table1_wga.md").read_text()
    assert not list(out.glob(".tmp-*"))  # written atomically: no temporary file left
    assert cli.main(["plot", str(tmp_path / "search"), str(tmp_path / "rerun"), "--figure", "collapse",
                     "--out", str(out / "plots")]) == 0
    assert (out / "plots" / "collapse.png").exists()
    capsys.readouterr()
    assert cli.main(["analyze", str(tmp_path / "search"), str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.startswith("error: results directory")


def test_keys_a_method_sets_itself_are_part_of_the_method_not_a_variant(tmp_path):
    # a promoted rerun analysed alone: each method trains with its own (chosen) lr
    for index, (method, lr) in enumerate((("upweighting", 1e-4), ("subsetting", 1e-3))):
        config = trial_config("wb", "m", method, seed=0, lr=lr)
        config["_method_hparams"] = ["lr"]
        write_trial(tmp_path, index, config, reports({"val/wga": 0.6 + index / 10}))
    results = load_results(tmp_path)
    assert set(results.trials["variant"]) == {""}
    table = select(results, ["wga"]).table
    assert len(table) == 1 and table.iloc[0]["method_label"] == "subsetting"


def test_a_spec_marks_the_keys_a_method_sets_itself():
    from sweeps.spec import build_spec

    spec = build_spec({"datasets": ["synthetic-waterbirds"], "models": ["toy-resnet-xs"],
                       "methods": ["none", {"upweighting": {"hparams": {"lr": 1e-4}}}], "hparams": {"lr": 1e-3}})
    configs = {trial.config["method"]: trial.config for trial in spec.trials}
    assert configs["upweighting"]["lr"] == 1e-4 and configs["upweighting"]["_method_hparams"] == ["lr"]
    assert configs["none"]["lr"] == 1e-3 and "_method_hparams" not in configs["none"]
