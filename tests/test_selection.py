"""Model selection (Table 1): each criterion's winner, bias-unsupervised scores computed by hand,
best-epoch selection, mean ± sample std over seeds, ties, and partial sweeps."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis.results import load_results
from analysis.selection import CRITERIA, display_table, paper_view, parse_criteria, select
from results_fixtures import epoch_metrics, make_labels, trial_config, write_trial
from trainables.errors import GroupsweepError

# Validation split of 10 examples, K = 2 classes.
VAL_Y = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
LABELS = make_labels(VAL_Y, [0] * 10, [0, 1], [0, 1])
# Biased (`none`) model predictions. Seed 0: cells S[y, b] = S[0,0] = {0..3}, S[0,1] = {4, 5},
# S[1,1] = {6, 7}, S[1,0] = {8, 9}. Seed 1: always right, so only S[0,0] = {0..5} and S[1,1] = {6..9}
# are non-empty (the empty cells S[0,1], S[1,0] are skipped).
BIASED = {0: [0, 0, 0, 0, 1, 1, 1, 1, 0, 0], 1: VAL_Y}
# Upsampling's val predictions (both seeds): wrong on examples 3 and 7.
UPSAMPLING_PRED = [0, 0, 0, 1, 0, 0, 1, 0, 1, 1]
# Hand-computed scores (mean accuracy over non-empty cells):
#   upsampling, seed 0: S00 3/4, S01 2/2, S11 1/2, S10 2/2          -> (0.75 + 1 + 0.5 + 1) / 4 = 0.8125
#   upsampling, seed 1: S00 5/6, S11 3/4                            -> (5/6 + 3/4) / 2 = 19/24
#   others predict BIASED[0]: seed 0: S00 1, S01 0, S11 1, S10 0     -> 0.5
#                             seed 1: S00 4/6, S11 2/4               -> (2/3 + 1/2) / 2 = 7/12
UPSAMPLING_SCORE = (0.8125 + 19 / 24) / 2
OTHER_SCORE = (0.5 + 7 / 12) / 2

# Final-epoch metrics per method: (val/wga, val/wca, val/avg_acc, test/wga seed 0, test/wga seed 1).
# Each criterion has a different winner: wga -> mixture 2:1, worst-class -> subsetting,
# average -> none, oracle -> mixture 3:1, bias-unsupervised -> upsampling.
METHODS = {
    ("none", None): (0.30, 0.60, 0.95, 0.20, 0.22),
    ("subsetting", None): (0.70, 0.90, 0.85, 0.70, 0.72),
    ("upsampling", None): (0.60, 0.70, 0.80, 0.60, 0.64),
    ("mixture", 2.0): (0.80, 0.85, 0.88, 0.80, 0.84),
    ("mixture", 3.0): (0.75, 0.80, 0.90, 0.90, 0.94),
}
EXPECTED = {"wga": "mixture 2:1", "worst-class": "subsetting", "average": "none", "oracle": "mixture 3:1",
            "bias-unsupervised": "upsampling"}


def final_report(epoch, method, ratio, seed, epochs=3):
    """A report whose values at the final epoch are those of METHODS (earlier epochs: lower by 0.1)."""
    wga, wca, avg, test0, test1 = METHODS[(method, ratio)]
    shift = 0.1 * (epochs - epoch)
    return epoch_metrics(epoch, overrides={
        "val/wga": wga - shift, "val/wca": wca - shift, "val/avg_acc": avg - shift,
        "test/wga": (test0 if seed == 0 else test1) - shift, "test/avg_acc": avg, "test/wca": wca,
    })


def build_sweep(run_dir, seeds=(0, 1), skip=(), dataset="wb", flipped=False, index=0):
    """The study above: 5 methods x ``seeds`` on one dataset/model, with labels and predictions (``flipped``: every
    class label and prediction c is 1 - c, which leaves every score as it is), as trials ``index``, ``index + 1``..."""
    def flip(classes):
        return [1 - c for c in classes] if flipped else classes

    labels = make_labels(flip(VAL_Y), [0] * 10, flip([0, 1]), [0, 1])  # LABELS unless flipped
    for (method, ratio) in METHODS:
        for seed in seeds:
            if (method, ratio, seed) in skip:
                continue
            val = UPSAMPLING_PRED if method == "upsampling" else BIASED[0]
            if method == "none":
                val = BIASED[seed]
            write_trial(run_dir, index, trial_config(dataset, "m", method, ratio, seed, epochs=3),
                        [final_report(e, method, ratio, seed) for e in (1, 2, 3)], labels=labels,
                        predictions={e: {"val": flip(val), "test": flip([0, 1])} for e in (1, 2, 3)})
            index += 1


def test_each_criterion_picks_its_own_winner(tmp_path):
    build_sweep(tmp_path)
    selection = select(load_results(tmp_path), list(CRITERIA))
    chosen = dict(zip(selection.table["criterion"], selection.table["method_label"]))
    assert chosen == EXPECTED
    assert selection.table["n_candidates"].eq(5).all() and selection.table["n_seeds"].eq(2).all()
    assert selection.notes == []


def test_bias_unsupervised_scores_match_the_hand_computation(tmp_path):
    build_sweep(tmp_path)
    methods = select(load_results(tmp_path), ["bias-unsupervised"]).methods.set_index("method_label")
    assert methods.at["upsampling", "score"] == pytest.approx(UPSAMPLING_SCORE)
    for label in ("subsetting", "mixture 2:1", "mixture 3:1"):
        assert methods.at[label, "score"] == pytest.approx(OTHER_SCORE)
    # the biased model scored against itself: right in the aligned cells, wrong in the others
    assert methods.at["none", "score"] == pytest.approx((0.5 + 1.0) / 2)
    assert methods.at["upsampling", "rank"] == 1 and methods.at["upsampling", "selected"]


def test_bias_unsupervised_scores_each_dataset_with_its_own_labels(tmp_path):
    # the trials of a dataset save the same labels (parsed once); celeba's are wb's with every class flipped, and
    # so are its predictions: the same scores, which wb's labels would not give
    build_sweep(tmp_path)
    build_sweep(tmp_path, dataset="celeba", flipped=True, index=100)
    methods = select(load_results(tmp_path), ["bias-unsupervised"]).methods
    upsampling = methods[methods["method_label"] == "upsampling"].set_index("dataset")["score"]
    assert upsampling.to_dict() == pytest.approx({"wb": UPSAMPLING_SCORE, "celeba": UPSAMPLING_SCORE})
    others = methods[methods["method_label"] == "subsetting"].set_index("dataset")["score"]
    assert others.to_dict() == pytest.approx({"wb": OTHER_SCORE, "celeba": OTHER_SCORE})


def test_bias_unsupervised_with_empty_cells_counted_zero_follows_the_papers_formula(tmp_path):
    """eq. (1): (1/K^2) sum over all K^2 cells, an empty cell counting 0. Seed 1's biased model fills 2 of the
    4 cells, so its scores halve there: upsampling (0.8125 + (5/6 + 3/4) / 4) / 2, the others
    (0.5 + (2/3 + 1/2) / 4) / 2, none (0.5 + 2/4) / 2."""
    build_sweep(tmp_path)
    results = load_results(tmp_path)
    methods = select(results, ["bias-unsupervised"], empty_cells="zero").methods.set_index("method_label")
    assert methods.at["upsampling", "score"] == pytest.approx((0.8125 + 19 / 48) / 2)
    for label in ("subsetting", "mixture 2:1", "mixture 3:1"):
        assert methods.at[label, "score"] == pytest.approx((0.5 + 7 / 24) / 2)
    assert methods.at["none", "score"] == pytest.approx(0.5)
    with pytest.raises(GroupsweepError, match="unknown empty-cell rule 'none'"):
        select(results, ["bias-unsupervised"], empty_cells="none")


def test_chosen_method_reports_mean_and_sample_std_over_seeds(tmp_path):
    build_sweep(tmp_path)
    row = select(load_results(tmp_path), ["wga"]).table.iloc[0]
    assert row["method"] == "mixture" and row["ratio"] == 2.0
    assert row["score"] == pytest.approx(0.80)
    assert row["test_wga_mean"] == pytest.approx(0.82)
    assert row["test_wga_std"] == pytest.approx(np.std([0.80, 0.84], ddof=1))  # 0.0283, not 0.02
    assert row["test_avg_acc_mean"] == pytest.approx(0.88) and row["test_wca_mean"] == pytest.approx(0.85)
    assert row["test_avg_acc_std"] == pytest.approx(0.0)
    assert row["seeds"] == "0,1" and row["mean_epoch"] == 3


def test_best_epoch_selection_reads_each_run_at_its_best_epoch(tmp_path):
    """Upsampling peaks at epoch 1 then collapses; the final rule picks mixture, the best rule upsampling."""
    for seed in (0, 1):
        write_trial(tmp_path, seed, trial_config("wb", "m", "upsampling", seed=seed, epochs=3), [
            epoch_metrics(1, overrides={"val/wga": 0.9, "test/wga": 0.85 + 0.02 * seed}),
            epoch_metrics(2, overrides={"val/wga": 0.6, "test/wga": 0.5}),
            epoch_metrics(3, overrides={"val/wga": 0.6, "test/wga": 0.6}),
        ])
        write_trial(tmp_path, 2 + seed, trial_config("wb", "m", "mixture", 2.0, seed=seed, epochs=3), [
            epoch_metrics(e, overrides={"val/wga": v, "test/wga": 0.7}) for e, v in ((1, 0.8), (2, 0.8), (3, 0.7))
        ])
    results = load_results(tmp_path)
    final = select(results, ["wga"], epoch="final").table.iloc[0]
    assert final["method_label"] == "mixture 2:1" and final["test_wga_mean"] == pytest.approx(0.7)
    best = select(results, ["wga"], epoch="best")
    row = best.table.iloc[0]
    assert row["method_label"] == "upsampling" and row["epoch_rule"] == "best"
    assert row["test_wga_mean"] == pytest.approx(0.86) and row["mean_epoch"] == 1
    mixture = best.methods.set_index("method_label").loc["mixture 2:1"]
    assert mixture["mean_epoch"] == 1  # epochs 1 and 2 tie at 0.8: the earliest wins


def test_best_epoch_bias_unsupervised_uses_each_epochs_predictions(tmp_path):
    build_sweep(tmp_path)
    results = load_results(tmp_path)
    best = select(results, ["bias-unsupervised"], epoch="best").methods.set_index("method_label")
    # predictions are the same at every epoch, so the earliest epoch is the best
    assert best.at["upsampling", "score"] == pytest.approx(UPSAMPLING_SCORE)
    assert best.at["upsampling", "mean_epoch"] == 1


def test_best_epoch_bias_unsupervised_scores_each_epoch_against_the_biased_models_final_epoch(tmp_path):
    """Upsampling predicts as UPSAMPLING_PRED at epoch 2 only; the biased model is BIASED[0] at its final epoch
    only (right everywhere before): the best epoch is 2, scored against the final biased predictions (0.8125,
    see above), which no epoch would score if another epoch of either model were read."""
    none_predictions = {1: VAL_Y, 2: VAL_Y, 3: BIASED[0]}
    upsampling_predictions = {1: BIASED[0], 2: UPSAMPLING_PRED, 3: BIASED[0]}
    runs = (("none", none_predictions), ("upsampling", upsampling_predictions))
    for index, (method, predictions) in enumerate(runs):
        write_trial(tmp_path, index, trial_config("wb", "m", method, None, 0, epochs=3),
                    [final_report(e, method, None, 0) for e in (1, 2, 3)], labels=LABELS,
                    predictions={e: {"val": val, "test": [0, 1]} for e, val in predictions.items()})
    results = load_results(tmp_path)
    best = select(results, ["bias-unsupervised"], epoch="best").methods.set_index("method_label")
    assert best.at["upsampling", "mean_epoch"] == 2 and best.at["upsampling", "score"] == pytest.approx(0.8125)
    final = select(results, ["bias-unsupervised"]).methods.set_index("method_label")
    assert final.at["upsampling", "score"] == pytest.approx(0.5)  # epoch 3: the biased model's own predictions


def test_ties_go_to_the_method_listed_first_then_the_smaller_ratio(tmp_path):
    index = 0
    for method, ratio in (("mixture", 3.0), ("mixture", 2.0), ("upsampling", None), ("subsetting", None)):
        write_trial(tmp_path, index, trial_config("wb", "m", method, ratio, epochs=1),
                    [epoch_metrics(1, overrides={"val/wga": 0.5, "val/wca": 0.9 if method == "mixture" else 0.1})])
        index += 1
    results = load_results(tmp_path)
    chosen = select(results, ["wga", "worst-class"]).table.set_index("criterion")["method_label"]
    assert chosen["wga"] == "subsetting"
    assert chosen["worst-class"] == "mixture 2:1"


@pytest.mark.parametrize("upsampling_score, chosen", [(0.1 + 0.2, "subsetting"),  # 0.30000000000000004: a tie
                                                      (0.3 + 1e-9, "upsampling")])  # beyond TIE_TOLERANCE: better
def test_scores_within_the_tie_tolerance_tie_and_any_larger_difference_counts(tmp_path, upsampling_score, chosen):
    for index, (method, score) in enumerate((("subsetting", 0.3), ("upsampling", upsampling_score))):
        write_trial(tmp_path, index, trial_config("wb", "m", method, None, epochs=1),
                    [epoch_metrics(1, overrides={"val/wga": score})])
    assert select(load_results(tmp_path), ["wga"]).table.set_index("criterion").at["wga", "method_label"] == chosen


def test_partial_sweep_is_selected_with_notes(tmp_path):
    build_sweep(tmp_path, skip={("none", None, 1), ("mixture", 3.0, 1)})
    write_trial(tmp_path, 50, trial_config("wb", "m", "mixture", 3.0, seed=1, epochs=3),
                [final_report(1, "mixture", 3.0, 1)])  # still running
    selection = select(load_results(tmp_path), ["bias-unsupervised", "oracle"])
    assert any("no complete `none` trial for wb/m seed 1; skipped" in note for note in selection.notes)
    assert any("mixture 3:1 seed 1: incomplete (epoch 1/3); excluded" in note for note in selection.notes)
    # the oracle's candidates were scored on different seeds (seed 1 of none and mixture 3:1 is missing): said once
    unequal = [note for note in selection.notes if "candidates scored on different seeds" in note]
    assert unequal == ["wb/m: candidates scored on different seeds (mixture 2:1 0,1; mixture 3:1 0; none 0; "
                       "subsetting 0,1; upsampling 0,1); finish the missing runs for a comparison over the same seeds"]
    twice = select(load_results(tmp_path), ["wga", "worst-class", "oracle"]).notes  # rankings differ: one note
    assert len([note for note in twice if "candidates scored on different seeds" in note]) == 1
    table = selection.table.set_index("criterion")
    assert table.at["bias-unsupervised", "method_label"] == "upsampling"
    assert table.at["bias-unsupervised", "n_seeds"] == 1  # seed 1 has no biased model
    assert table.at["bias-unsupervised", "score"] == pytest.approx(0.8125)
    assert table.at["oracle", "method_label"] == "mixture 3:1"
    assert table.at["oracle", "n_seeds"] == 1 and math.isnan(table.at["oracle", "test_wga_std"])


def test_missing_predictions_are_noted_not_fatal(tmp_path):
    build_sweep(tmp_path)
    results = load_results(tmp_path)
    upsampling = results.trials[results.trials["method"] == "upsampling"]
    for path in upsampling["path"]:
        for file in (results.run_dir / path / "groupsweep" / "predictions").glob("epoch_0003.npz"):
            file.unlink()
    selection = select(results, ["bias-unsupervised"])
    assert sum("cannot read" in note for note in selection.notes) == 2
    assert selection.table.iloc[0]["method_label"] != "upsampling"


def test_unreadable_labels_and_missing_biased_model_files_are_noted_not_fatal(tmp_path):
    # a label file read (in a thread) that cannot be parsed (in the caller); the biased models' predictions missing
    build_sweep(tmp_path / "labels")
    results = load_results(tmp_path / "labels")
    (upsampling, *_) = results.trials.loc[results.trials["method"] == "upsampling", "path"]
    (results.run_dir / upsampling / "groupsweep" / "labels.npz").write_bytes(b"not a zip file")
    selection = select(results, ["bias-unsupervised"])
    damaged = [note for note in selection.notes if "labels.npz" in note]
    assert len(damaged) == 1 and "cannot read" in damaged[0] and "skipped" in damaged[0], selection.notes

    build_sweep(tmp_path / "biased")
    results = load_results(tmp_path / "biased")
    for path in results.trials.loc[results.trials["method"] == "none", "path"]:
        for file in (results.run_dir / path / "groupsweep" / "predictions").glob("*.npz"):
            file.unlink()
    selection = select(results, ["bias-unsupervised"])
    assert selection.table.empty
    assert any("cannot read" in note and "epoch_0003.npz" in note for note in selection.notes), selection.notes


def test_by_model_groups_and_candidate_restriction(tmp_path):
    build_sweep(tmp_path / "run")
    index = 100
    for method, value in (("none", 0.9), ("subsetting", 0.1)):
        write_trial(tmp_path / "run", index, trial_config("wb", "big", method, epochs=3),
                    [epoch_metrics(e, num_parameters=10 ** 6, overrides={"val/wga": value}) for e in (1, 2, 3)])
        index += 1
    results = load_results(tmp_path / "run")
    pooled = select(results, ["wga"], by_model=False)
    assert any("2 models pooled" in note for note in pooled.notes)
    none = pooled.methods.set_index("method_label").loc["none"]
    assert none["n_runs"] == 3 and none["n_seeds"] == 2 and none["score"] == pytest.approx((0.3 + 0.3 + 0.9) / 3)
    assert display_table(pooled.methods).set_index("method")["runs"]["none"] == 3
    per_model = select(results, ["wga"]).table.set_index("model")["method_label"]  # by model: the default
    assert per_model.to_dict() == {"big": "none", "m": "mixture 2:1"}
    assert select(results, ["wga"], by_model=True).table.equals(select(results, ["wga"]).table)
    restricted = select(results, ["wga"], by_model=True, methods=["subsetting", "upsampling", "rwg"])
    assert restricted.table.set_index("model")["method_label"].to_dict() == {"big": "subsetting", "m": "subsetting"}
    assert any("'rwg' has no trials" in note for note in restricted.notes)


def test_group_information_is_shown_and_restricts_the_candidates(tmp_path, capsys):
    """The D3M paper's comparison: with group information at most ``val`` the train+val methods (rwg,
    groupdro) are no candidates; with ``none`` neither is d3m."""
    from sweeps import cli

    build_sweep(tmp_path / "run")
    index = 100
    for method, value in (("groupdro", 0.95), ("rwg", 0.92), ("d3m", 0.9)):
        for seed in (0, 1):
            write_trial(tmp_path / "run", index, trial_config("wb", "m", method, None, seed, epochs=3),
                        [epoch_metrics(e, overrides={"val/wga": value}) for e in (1, 2, 3)])
            index += 1
    results = load_results(tmp_path / "run")
    every = select(results, ["wga"])
    assert every.table.iloc[0][["method_label", "group_info"]].tolist() == ["groupdro", "train+val"]
    assert dict(zip(every.methods["method"], every.methods["group_info"])) == {
        "groupdro": "train+val", "rwg": "train+val", "d3m": "val", "mixture": "none", "subsetting": "none",
        "upsampling": "none", "none": "none"}
    assert display_table(every.table).at[0, "group info"] == "train+val"
    validation = select(results, ["wga"], group_info="val")
    assert validation.table.iloc[0][["method_label", "group_info"]].tolist() == ["d3m", "val"]
    assert set(validation.methods["method"]) == {"d3m", "mixture", "subsetting", "upsampling", "none"}
    assert "group information at most val: left out groupdro (train+val), rwg (train+val)" in validation.notes
    no_groups = select(results, ["wga"], group_info="none")
    assert no_groups.table.iloc[0]["method_label"] == "mixture 2:1" and "d3m" not in set(no_groups.methods["method"])
    assert select(results, ["wga"], group_info="train+val").table.equals(every.table)

    out = tmp_path / "out"
    assert cli.main(["analyze", str(tmp_path / "run"), "--criterion", "wga", "--group-info", "val",
                     "--out", str(out)]) == 0
    assert "| group info " in capsys.readouterr().out
    assert pd.read_csv(out / "table1_wga_groupinfo-val.csv")["method_label"].tolist() == ["d3m"]
    assert cli.main(["analyze", str(tmp_path / "run"), "--group-info", "train"]) == 2
    err = capsys.readouterr().err
    assert err == "error: unknown group information 'train'; choose one of: none, val, train+val\n"
    with pytest.raises(GroupsweepError, match="unknown group information 'all'"):
        select(results, ["wga"], group_info="all")


def test_dfr_fitted_on_the_training_split_counts_its_training_group_labels(tmp_path):
    """DFR^Tr_Tr (``dfr_variant: tr_tr``, set as the method's own hparams) fits its last layer on
    group-balanced training data: it is a ``train+val`` candidate, left out at ``val``, unlike DFR^Val_Tr."""
    from trainables.trial_dir import METHOD_HPARAMS_KEY

    build_sweep(tmp_path / "run")
    for index, seed in ((100, 0), (101, 1)):
        config = trial_config("wb", "m", "dfr", None, seed, epochs=3, dfr_variant="tr_tr")
        config[METHOD_HPARAMS_KEY] = ["dfr_variant"]
        write_trial(tmp_path / "run", index, config,
                    [epoch_metrics(e, overrides={"val/wga": 0.97}) for e in (1, 2, 3)])
    results = load_results(tmp_path / "run")
    assert set(results.trials.loc[results.trials["method"] == "dfr", "group_info"]) == {"train+val"}
    every = select(results, ["wga"])
    assert every.table.iloc[0][["method_label", "group_info"]].tolist() == ["dfr", "train+val"]
    assert "variant" not in every.table  # a method's own hparams make no variant: DFR is one more candidate
    validation = select(results, ["wga"], group_info="val")
    assert "dfr" not in set(validation.methods["method"])
    assert "group information at most val: left out dfr (train+val)" in validation.notes
    assert not any("dfr (val_tr)" in note for note in every.notes)  # fitted on training data: val is held out


def test_dfr_fitted_on_the_validation_split_is_noted_when_chosen_by_validation(tmp_path):
    """DFR^Val_Tr (the default) fits its last layer on the validation split: a choice by validation metrics
    against other methods favours it, and a note says so (never for the oracle alone, which reads test)."""
    build_sweep(tmp_path / "run")
    for index, seed in ((100, 0), (101, 1)):
        write_trial(tmp_path / "run", index, trial_config("wb", "m", "dfr", None, seed, epochs=3),
                    [epoch_metrics(e, overrides={"val/wga": 0.97}) for e in (1, 2, 3)])
    results = load_results(tmp_path / "run")
    note = ("dfr (val_tr) retrained its last layer on the validation split: its validation metrics, and a choice "
            "by them against other methods, are optimistic; compare it by test metrics (oracle) or leave it out "
            "(--methods)")
    assert note in select(results, ["wga", "oracle"]).notes
    assert note not in select(results, ["oracle"]).notes
    assert note not in select(results, ["wga"], methods=["upsampling", "mixture"]).notes


def test_bad_names_are_one_line_errors(tmp_path):
    build_sweep(tmp_path)
    results = load_results(tmp_path)
    with pytest.raises(GroupsweepError, match="unknown selection criterion 'wgaa'"):
        select(results, ["wgaa"])
    with pytest.raises(GroupsweepError, match="unknown epoch rule 'last'"):
        select(results, ["wga"], epoch="last")
    assert parse_criteria("all") == list(CRITERIA)
    with pytest.raises(GroupsweepError, match="choose one of"):
        parse_criteria("nope")
    with pytest.raises(GroupsweepError, match="unknown method 'bogus'; choose one of: none, subsetting"):
        select(results, ["wga"], methods=["none", "bogus"])
    for methods in ("none", []):  # a name where a list is meant (its letters are no methods), or nothing
        with pytest.raises(GroupsweepError, match="methods must be a non-empty list of method names"):
            select(results, ["wga"], methods=methods)


@pytest.mark.parametrize("command", ["analyze", "report"])
@pytest.mark.parametrize("methods, message", [("bogus", "unknown method 'bogus'"),
                                              (",", "--methods ',' names no method"),
                                              ("groupdro,jtt", "methods groupdro, jtt: no trials of them in this "
                                                               "sweep; its methods: none, ")])
def test_unknown_methods_are_one_line_errors_of_the_commands(tmp_path, capsys, command, methods, message):
    from sweeps import cli

    build_sweep(tmp_path / "run")
    assert cli.main([command, str(tmp_path / "run"), "--methods", methods, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # nothing written


def test_display_and_paper_layout(tmp_path):
    build_sweep(tmp_path)
    table = select(load_results(tmp_path), ["bias-unsupervised", "worst-class", "wga"]).table
    shown = display_table(table).set_index("criterion")
    assert shown.at["wga", "test WGA (%)"] == "82.0 ± 2.8"
    assert shown.at["wga", "seeds"] == 2 and shown.at["wga", "candidates"] == 5
    paper = paper_view(table)
    assert paper["criterion"].tolist() == ["bias-unsupervised", "worst-class", "wga"]  # the paper's order
    assert paper["group labels"].tolist() == ["none", "none", "val"]  # its "Group Anns" column
    assert paper.set_index("criterion").at["wga", "wb/m"] == "mixture 2:1 (82.0)"  # a column per dataset/model


def test_paper_layout_orders_the_datasets_as_the_papers_tables_do():
    datasets = ["multinli", "custom", "celeba", "synthetic-waterbirds", "civilcomments"]  # as sorted by name, shuffled
    table = pd.DataFrame({"criterion": "wga", "dataset": datasets, "model": "m", "method_label": "none",
                          "test_wga_mean": 0.5})
    assert paper_view(table).columns.tolist() == ["criterion", "group labels", "synthetic-waterbirds/m", "celeba/m",
                                                  "civilcomments/m", "multinli/m", "custom/m"]


def test_analyze_command_prints_and_writes_table1(tmp_path, monkeypatch, capsys):
    from sweeps import cli

    build_sweep(tmp_path / "run", skip={("none", None, 1)})
    out = tmp_path / "out"
    assert cli.main(["analyze", str(tmp_path / "run"), "--criterion", "all", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "mixture 2:1 (82.0)" in captured.out and "82.0 ± 2.8" in captured.out
    assert "note: bias-unsupervised: no complete `none` trial for wb/m seed 1; skipped" in captured.err
    table = pd.read_csv(out / "table1.csv")
    assert dict(zip(table["criterion"], table["method_label"])) == EXPECTED
    assert len(pd.read_csv(out / "table1_methods.csv")) == 5 * len(CRITERIA)
    markdown = (out / "table1.md").read_text()
    assert "| wga " in markdown and "## Notes" in markdown
    latex = (out / "table1.tex").read_text()
    assert "\\begin{tabular}" in latex and "82.0 $\\pm$ 2.8" in latex

    assert cli.main(["analyze", str(tmp_path / "run"), "--criterion", "wga", "--epoch", "best", "--by-model",
                     "--out", str(out)]) == 0
    assert (out / "table1_wga_best.csv").exists()  # --by-model is the default; the files have no suffix for it
    assert cli.main(["analyze", str(tmp_path / "run"), "--criterion", "wga", "--pool-models", "--out", str(out)]) == 0
    assert (out / "table1_wga_pooled.csv").exists()
    assert cli.main(["analyze", str(tmp_path / "run"), "--criterion", "bias-unsupervised", "--empty-cells", "zero",
                     "--out", str(out)]) == 0
    zero = pd.read_csv(out / "table1_bias-unsupervised_emptycells-zero.csv")
    assert zero["score"].tolist() == pytest.approx([0.8125])  # seed 0 only (seed 1 has no biased model): all full
    capsys.readouterr()
    with pytest.raises(SystemExit):  # the two groupings exclude each other
        cli.main(["analyze", str(tmp_path / "run"), "--by-model", "--pool-models"])
    assert "not allowed with argument" in capsys.readouterr().err
    capsys.readouterr()
    assert cli.main(["analyze", str(tmp_path / "empty-or-missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: results directory") and err.count("\n") == 1


def test_trials_with_different_settings_are_selected_separately(tmp_path):
    index = 0
    for last_layer_only, winner in ((True, "subsetting"), (False, "upsampling")):
        for method in ("subsetting", "upsampling"):
            write_trial(tmp_path, index, trial_config("wb", "m", method, epochs=1, last_layer_only=last_layer_only),
                        [epoch_metrics(1, overrides={"val/wga": 0.9 if method == winner else 0.5})])
            index += 1
    table = select(load_results(tmp_path), ["wga"]).table
    assert dict(zip(table["variant"], table["method_label"])) == {
        "last_layer_only=false": "upsampling", "last_layer_only=true": "subsetting"}
    assert table["n_candidates"].eq(2).all()
