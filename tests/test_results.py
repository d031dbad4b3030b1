"""Loading sweep results offline: the tidy table, partial and damaged sweeps, saved predictions."""

import json
import math
import os
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analysis.results as results_module
from analysis.results import (READ_AHEAD, READ_PROBE, CorruptTrialWarning, MissingResultError, format_value,
                              load_results, method_label, read_in_threads)
from results_fixtures import diverged_report, epoch_metrics, make_labels, trial_config, write_trial
from trainables.errors import GroupsweepError

LABELS = make_labels([0, 0, 1, 1], [0, 1, 0, 1], [0, 1, 1], [1, 1, 0])


def reports(epochs, **per_key):
    """``epochs`` reports; ``per_key`` maps a metric key to its value per epoch (a list)."""
    return [epoch_metrics(e, overrides={key: values[e - 1] for key, values in per_key.items()})
            for e in range(1, epochs + 1)]


def test_tidy_frame_has_one_row_per_trial_epoch_with_every_metric(tmp_path):
    write_trial(tmp_path, 0, trial_config("waterbirds", "tiny", "none", seed=0, epochs=3), reports(3),
                labels=LABELS)
    write_trial(tmp_path, 1, trial_config("waterbirds", "tiny", "mixture", 2.0, seed=1, epochs=3),
                reports(3, **{"val/wga": [0.1, 0.2, float("nan")]}))
    results = load_results(tmp_path)

    frame = results.frame
    assert len(frame) == 6
    assert list(frame.columns[:15]) == ["trial_id", "trial_name", "dataset", "model", "num_parameters", "method",
                                        "ratio", "method_label", "group_info", "seed", "variant", "epochs",
                                        "last_epoch", "status", "epoch"]
    assert {"val/wga", "test/acc_group_3", "train_subset/count_group_0", "optim/lr"} <= set(frame.columns)
    assert "config" not in frame and "hostname" not in frame
    mixture = frame[frame["method"] == "mixture"].sort_values("epoch")
    assert mixture["epoch"].tolist() == [1, 2, 3]
    assert mixture["val/wga"].iloc[:2].tolist() == [0.1, 0.2] and math.isnan(mixture["val/wga"].iloc[2])
    assert mixture["method_label"].iloc[0] == "mixture 2:1"
    assert mixture["trial_id"].iloc[0] == "1a2b3_00001"
    assert mixture["trial_name"].iloc[0] == "waterbirds_tiny_mixture2_s1"
    assert frame["num_parameters"].eq(1000).all() and frame["status"].eq("complete").all()
    none = results.trials.loc["1a2b3_00000"]
    assert math.isnan(none["ratio"]) and none["method_label"] == "none" and none["seed"] == 0
    assert results.metric_keys[:2] == ["val/wga", "test/wga"]  # in the trainable's report order
    assert "train/loss" in results.metric_keys and "node_id" not in results.metric_keys
    assert frame["report_status"].eq("ok").all() and frame["node_id"].eq("node-1").all()
    assert results.configs["1a2b3_00001"]["ratio"] == 2.0


def test_method_label_formats_ratios():
    assert method_label("mixture", 2.0) == "mixture 2:1"
    assert method_label("mixture-nosubset", 1.5) == "mixture-nosubset 1.5:1"
    assert method_label("upsampling", None) == "upsampling"
    assert method_label("none", float("nan")) == "none"


def test_partial_sweep_statuses(tmp_path):
    write_trial(tmp_path, 0, trial_config("wb", "m", "none", epochs=3), reports(3))
    write_trial(tmp_path, 1, trial_config("wb", "m", "subsetting", epochs=3), reports(2))
    write_trial(tmp_path, 2, trial_config("wb", "m", "upsampling", epochs=3), reports(1), error="RuntimeError: boom")
    write_trial(tmp_path, 3, trial_config("wb", "m", "upweighting", epochs=3), [])
    write_trial(tmp_path, 4, trial_config("wb", "m", "groupdro", epochs=3), [], error="OSError: no data")  # at setup
    results = load_results(tmp_path)
    statuses = dict(zip(results.trials["method"], results.trials["status"]))
    assert statuses == {"none": "complete", "subsetting": "incomplete", "upsampling": "error",
                        "upweighting": "pending", "groupdro": "error"}
    assert results.trials.set_index("method").at["subsetting", "last_epoch"] == 2
    assert len(results.frame) == 6  # the pending trial has no rows
    assert len(results.final_rows()) == 1


def test_diverged_run_is_its_own_status(tmp_path):
    write_trial(tmp_path, 0, trial_config("wb", "m", "none", epochs=3), reports(1) + [diverged_report(2)])
    path = write_trial(tmp_path, 1, trial_config("wb", "m", "subsetting", epochs=2), reports(1) + [diverged_report(2)])
    (path / "progress.csv").unlink()  # the JSON reader must agree
    results = load_results(tmp_path)
    assert results.trials["status"].tolist() == ["diverged", "diverged"]  # also when it diverged in its last epoch
    assert results.frame["report_status"].tolist() == ["ok", "diverged"] * 2
    assert results.frame.loc[results.frame["epoch"] == 2, "val/wga"].isna().all()
    assert results.final_rows().empty


def test_half_written_last_line_is_ignored(tmp_path):
    write_trial(tmp_path, 0, trial_config("wb", "m", "none", epochs=3), reports(2), half_written_line=True)
    results = load_results(tmp_path)
    assert results.frame["epoch"].tolist() == [1, 2]
    assert results.trials["status"].tolist() == ["incomplete"]


def test_half_written_result_json_is_ignored_when_progress_csv_is_missing(tmp_path):
    path = write_trial(tmp_path, 0, trial_config("wb", "m", "none", epochs=3), reports(2), half_written_line=True)
    (path / "progress.csv").unlink()
    assert load_results(tmp_path).frame["epoch"].tolist() == [1, 2]


def test_repeated_epochs_of_a_restored_trial_keep_the_last_report(tmp_path):
    first = reports(2, **{"val/wga": [0.1, 0.2]})
    again = reports(3, **{"val/wga": [9.0, 0.25, 0.3]})[1:]  # restored from the epoch-1 checkpoint
    write_trial(tmp_path, 0, trial_config("wb", "m", "none", epochs=3), first + again)
    frame = load_results(tmp_path).frame
    assert frame["epoch"].tolist() == [1, 2, 3]
    assert frame["val/wga"].tolist() == [0.1, 0.25, 0.3]


@pytest.mark.parametrize("shift", [1, -1])
def test_shifted_progress_csv_falls_back_to_result_json(tmp_path, shift):
    """After a restore Ray appends rows without a header in the key order of the new first report,
    so a key present in only one of the two (``should_checkpoint``) shifts the columns."""
    path = write_trial(tmp_path, 0, trial_config("wb", "m", "none", epochs=3), reports(3, **{"val/wga": [0.1, 0.2, 0.3]}))
    write_trial(tmp_path, 1, trial_config("wb", "m", "subsetting", epochs=3), reports(3))
    lines = (path / "progress.csv").read_text().splitlines(keepends=True)
    header = lines[0].split(",")
    position = header.index("checkpoint_dir_name") + 1
    for row in (2, 3):
        fields = lines[row].split(",")
        fields = fields[:position] + ["True"] + fields[position:] if shift > 0 else fields[:position] + fields[position + 1:]
        lines[row] = ",".join(fields)
    (path / "progress.csv").write_text("".join(lines))
    frame = load_results(tmp_path).frame
    assert frame[frame["method"] == "none"]["val/wga"].tolist() == [0.1, 0.2, 0.3]
    assert len(frame) == 6


def test_rows_of_a_restored_run_are_read_from_result_json(tmp_path):
    """Ray appends a restored run's rows under the old header in the key order of its first new report: with
    the same columns in another order nothing in the CSV looks wrong, so a restored run's rows (Ray's
    iterations_since_restore behind training_iteration) are read from result.json, which names every value."""
    values = {"val/wga": [0.1, 0.2, 0.3], "test/wga": [0.6, 0.7, 0.8]}
    path = write_trial(tmp_path, 0, trial_config("wb", "m", "none", epochs=3), reports(3, **values))
    write_trial(tmp_path, 1, trial_config("wb", "m", "subsetting", epochs=3), reports(3))
    lines = (path / "progress.csv").read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    for row, since_restore in ((2, 1), (3, 2)):  # restored from epoch 1's checkpoint, keys in another order
        fields = lines[row].rstrip("\n").split(",")
        val, test = header.index("val/wga"), header.index("test/wga")
        fields[val], fields[test] = fields[test], fields[val]
        fields[header.index("iterations_since_restore")] = str(since_restore)
        lines[row] = ",".join(fields) + "\n"
    (path / "progress.csv").write_text("".join(lines))
    frame = load_results(tmp_path).frame
    mine = frame[frame["method"] == "none"]
    assert mine["val/wga"].tolist() == values["val/wga"] and mine["test/wga"].tolist() == values["test/wga"]
    assert "iterations_since_restore" not in frame and len(frame) == 6


def test_non_numeric_metric_in_progress_csv_falls_back_to_result_json(tmp_path):
    path = write_trial(tmp_path, 0, trial_config("wb", "m", "none", epochs=2), reports(2, **{"val/wga": [0.1, 0.2]}))
    (path / "progress.csv").write_text((path / "progress.csv").read_text().replace("0.2,", "garbage,", 1))
    assert load_results(tmp_path).frame["val/wga"].tolist() == [0.1, 0.2]


def test_a_non_numeric_metric_leaves_the_other_trials_numbers_as_numbers(tmp_path):
    # parsed together with a file whose column holds text, the good files' numbers came back as text ('0.3')
    bad = write_trial(tmp_path, 0, trial_config("wb", "m", "none", epochs=2), reports(2, **{"val/wga": [0.1, 0.2]}))
    write_trial(tmp_path, 1, trial_config("wb", "m", "upsampling", epochs=2), reports(2, **{"val/wga": [0.3, 0.4]}))
    (bad / "progress.csv").write_text((bad / "progress.csv").read_text().replace("0.2,", "garbage,", 1))
    frame = load_results(tmp_path).frame
    assert frame["val/wga"].dtype == np.float64
    assert frame["val/wga"].tolist() == [0.1, 0.2, 0.3, 0.4]  # trial 0 from its result.json


def test_reports_parsed_in_batches_load_as_one_parse_reads_them(tmp_path, monkeypatch):
    # trial 0's header lacks `note`; in the others, a text column that the first files leave empty: one parse reads
    # it as text, so must the batches; and the columns keep the order of the headers as first read, although the
    # second header's batches are parsed before the first one's
    first = write_trial(tmp_path, 0, trial_config("wb", "m", "none", seed=0, epochs=1), reports(1))
    for index in range(1, 5):
        note = "restored" if index == 4 else None
        write_trial(tmp_path, index, trial_config("wb", "m", "none", seed=index, epochs=3),
                    reports(3, note=[note] * 3))
    whole = load_results(tmp_path)
    first_body = (first / "progress.csv").read_bytes().split(b"\n", 1)[1]
    monkeypatch.setattr(results_module, "PARSE_BATCH_BYTES", len(first_body) + 1)  # each 3-epoch file a batch
    batched = load_results(tmp_path)
    pd.testing.assert_frame_equal(batched.frame, whole.frame)
    pd.testing.assert_frame_equal(batched.trials, whole.trials)
    assert pd.api.types.is_string_dtype(batched.frame["note"]) and batched.frame["note"].isna().sum() == 10
    assert list(batched.frame.columns).index("note") > list(batched.frame.columns).index("timestamp")


def test_reads_that_wait_run_in_threads_and_reads_that_do_not_in_the_caller():
    caller = threading.get_ident()
    readers = []

    def computes(item):
        readers.append(threading.get_ident())
        return item * 2

    def waits(item):
        readers.append(threading.get_ident())
        time.sleep(0.005)  # like a request to an object store
        return item * 2

    items = list(range(3 * READ_PROBE))
    assert list(read_in_threads(computes, items)) == [item * 2 for item in items]
    assert set(readers) == {caller}
    readers.clear()
    assert list(read_in_threads(waits, items)) == [item * 2 for item in items]  # in order
    assert set(readers[:READ_PROBE]) == {caller} and caller not in readers[READ_PROBE:]
    assert len(set(readers[READ_PROBE:])) > 1


def test_threaded_reads_stay_a_bounded_number_ahead_of_the_caller():
    started = []

    def waits(item):
        started.append(item)
        time.sleep(0.002)
        return item

    ahead = 0
    for used, item in enumerate(read_in_threads(waits, list(range(READ_PROBE + 4 * READ_AHEAD)))):
        assert item == used
        time.sleep(0.0005)  # the caller works on each result
        ahead = max(ahead, len(started) - used)
    assert ahead <= READ_AHEAD + 2


@pytest.mark.parametrize("damage", ["params", "both-logs"])
def test_corrupt_trial_is_skipped_with_a_warning_naming_it(tmp_path, damage):
    good = write_trial(tmp_path, 0, trial_config("wb", "m", "none", epochs=2), reports(2))
    bad = write_trial(tmp_path, 1, trial_config("wb", "m", "subsetting", epochs=2), reports(2))
    if damage == "params":
        (bad / "params.json").write_text("{not json")
    else:
        (bad / "result.json").write_text('{"epoch": 1}\n{broken\n{"epoch": 2}\n')
        (bad / "progress.csv").write_text("epoch,val/wga\n1,0.5\n2,0.6,7,8\n")
    with pytest.warns(CorruptTrialWarning, match=bad.name):
        results = load_results(tmp_path)
    assert results.trials["path"].tolist() == [str(good)]
    assert len(results.problems) == 1 and bad.name in results.problems[0]


def test_missing_or_empty_directory_is_a_one_line_error(tmp_path):
    with pytest.raises(GroupsweepError, match="does not exist") as error:
        load_results(tmp_path / "nope")
    assert "\n" not in str(error.value)
    (tmp_path / "other").mkdir()
    with pytest.raises(GroupsweepError, match="no trials in"):
        load_results(tmp_path)


def test_two_sweep_folders_and_their_parent_analyse_as_one_sweep_with_both_grids(tmp_path):
    from analysis.selection import CRITERIA, select
    from results_fixtures import write_study

    write_study(tmp_path / "parent" / "seed1", seeds=(1,))
    write_study(tmp_path / "parent" / "seed2", seeds=(2,))
    (tmp_path / "parent" / "notes").mkdir()  # a folder without trials is no sweep
    write_study(tmp_path / "one", seeds=(1, 2))
    together = load_results([tmp_path / "parent" / "seed1", tmp_path / "parent" / "seed2"])
    via_parent = load_results(tmp_path / "parent")
    one = load_results(tmp_path / "one")
    assert via_parent.run_dirs == together.run_dirs == tuple((tmp_path / "parent" / name).resolve()
                                                             for name in ("seed1", "seed2"))
    assert sorted(via_parent.trials["sweep"]) == ["seed1"] * 4 + ["seed2"] * 4 and via_parent.problems == []
    expected = select(one, list(CRITERIA)).table
    assert len(expected) == len(CRITERIA)  # a row per criterion (one dataset, one model)
    for results in (together, via_parent):
        assert len(results.trials) == len(one.trials) == 8
        pd.testing.assert_frame_equal(select(results, list(CRITERIA)).table, expected)
    from sweeps import cli

    for run_dir in ("parent", "one"):  # the command: the same Table 1 from the parent folder
        assert cli.main(["analyze", str(tmp_path / run_dir), "--out", str(tmp_path / f"out-{run_dir}")]) == 0
    assert (tmp_path / "out-parent" / "table1.csv").read_text() == (tmp_path / "out-one" / "table1.csv").read_text()
    # a folder given with its parent: each trial counted once, the repetition reported
    twice = load_results([tmp_path / "parent", tmp_path / "parent" / "seed1"])
    assert len(twice.trials) == 8 and twice.run_dirs == together.run_dirs


def test_parent_folder_of_sweeps_as_a_uri(tmp_path):
    write_trial(tmp_path / "a", 0, trial_config("wb", "m", "none", epochs=1), reports(1))
    write_trial(tmp_path / "b", 0, trial_config("wb", "m", "subsetting", epochs=1), reports(1))
    results = load_results(f"file://{tmp_path}")
    assert sorted(results.trials["sweep"]) == ["a", "b"]
    assert results.run_dirs == (f"file://{tmp_path}/a", f"file://{tmp_path}/b")
    # folder names a URI must percent-encode: the sweep in one is read, the others do not get in the way
    write_trial(tmp_path / "old runs", 0, trial_config("wb", "m", "upweighting", epochs=1), reports(1))
    (tmp_path / "x%zz").mkdir()
    results = load_results(f"file://{tmp_path}")
    assert sorted(results.trials["sweep"]) == ["a", "b", "old runs"]
    assert results.run_dirs[-1] == f"file://{tmp_path}/old%20runs"


def test_all_trials_corrupt_is_an_error(tmp_path):
    bad = write_trial(tmp_path, 0, trial_config("wb", "m", "none", epochs=1), reports(1))
    (bad / "params.json").write_text("[]")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorruptTrialWarning)
        with pytest.raises(GroupsweepError, match="no readable trials"):
            load_results(tmp_path)


def test_variant_names_settings_that_differ_within_a_dataset(tmp_path):
    write_trial(tmp_path, 0, trial_config("wb", "m", "none", epochs=1, last_layer_only=True), reports(1))
    write_trial(tmp_path, 1, trial_config("wb", "m", "none", epochs=1), reports(1))
    write_trial(tmp_path, 2, trial_config("celeba", "m", "none", epochs=2, lr=0.1), reports(2))
    trials = load_results(tmp_path).trials
    assert trials["variant"].tolist() == ["last_layer_only=true", "last_layer_only=false", ""]


def test_variant_values_differ_when_their_json_differs(tmp_path):
    # 1 and true (or 1.0) are equal in Python but not in the config file: two variants; equal lists are one setting
    for number, value in enumerate([1, True, 1, 1.0, [1, {"a": None}], [1, {"a": None}]]):
        dataset = ("wb", "celeba", "multinli")[number // 2]
        config = {**trial_config(dataset, "m", "none", seed=number, epochs=1), "knob": value}
        write_trial(tmp_path, number, config, reports(1))
    assert load_results(tmp_path).trials["variant"].tolist() == ["knob=1", "knob=true", "knob=1", "knob=1.0", "", ""]


def test_config_values_are_formatted_for_reading():
    assert [format_value(v) for v in (0.00123, 3.1e-05, 2.0, "adamw", True, None, 3, [1, 2], {"b": 1, "a": 2})] == [
        "0.00123", "3.1e-05", "2", "adamw", "true", "null", "3", "[1, 2]", '{"a": 2, "b": 1}']


def test_settings_that_never_change_the_training_make_no_variant(tmp_path):
    # profiling, evaluating the training split every epoch, checkpointing less often, another evaluation batch
    quiet = dict(profile=True, eval_train="every", checkpoint_every=2, eval_batch_size=64)
    write_trial(tmp_path, 0, trial_config("wb", "m", "none", epochs=2, **quiet), reports(2))
    write_trial(tmp_path, 1, trial_config("wb", "m", "none", epochs=2, seed=1), reports(2))
    assert load_results(tmp_path).trials["variant"].tolist() == ["", ""]  # one method, pooled over its seeds


def test_labels_and_predictions_of_a_trial(tmp_path):
    predictions = {2: {"val": [1, 0, 1, 1], "test": [0, 0, 1]}}
    write_trial(tmp_path, 0, trial_config("wb", "m", "none", epochs=2), reports(2), labels=LABELS,
                predictions=predictions)
    results = load_results(tmp_path)
    labels = results.labels("1a2b3_00000")
    assert labels["n_classes"] == 2 and labels["n_spurious"] == 2
    np.testing.assert_array_equal(labels["val_g"], [0, 1, 2, 3])
    saved = results.predictions("1a2b3_00000", 2)
    assert saved["val"].dtype == np.int16
    np.testing.assert_array_equal(saved["val"], [1, 0, 1, 1])
    np.testing.assert_array_equal(saved["test"], [0, 0, 1])
    with pytest.raises(MissingResultError, match="epoch_0001.npz"):
        results.predictions("1a2b3_00000", 1)
    with pytest.raises(GroupsweepError, match="unknown trial"):
        results.labels("nope")


def test_a_sweep_loaded_again_reads_the_predictions_a_rerun_rewrote(tmp_path):
    """Parsed files are cached per loaded ``SweepResults``: loading the sweep again after a rerun rewrote them (in
    the same process, e.g. a notebook) gives the new predictions, also after pickling."""
    import pickle

    from results_fixtures import write_predictions

    write_trial(tmp_path, 0, trial_config("wb", "m", "none", epochs=2), reports(2), labels=LABELS,
                predictions={2: {"val": [1, 0, 1, 1], "test": [0, 0, 1]}})
    first = load_results(tmp_path)
    np.testing.assert_array_equal(first.predictions("1a2b3_00000", 2)["val"], [1, 0, 1, 1])
    write_predictions(Path(first.trial_dir("1a2b3_00000")), 2, [0, 0, 0, 1], [1, 1, 1])
    again = load_results(tmp_path)
    np.testing.assert_array_equal(again.predictions("1a2b3_00000", 2)["val"], [0, 0, 0, 1])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(again)).predictions("1a2b3_00000", 2)["test"], [1, 1, 1])


def test_a_uri_loads_like_the_local_path(tmp_path):
    """A ``pyarrow.fs`` URI (here ``file://``) gives the same tables, labels and predictions as the path."""
    predictions = {2: {"val": [1, 0, 1, 1], "test": [0, 0, 1]}}
    write_trial(tmp_path, 0, trial_config("wb", "m", "none", epochs=2), reports(2), labels=LABELS,
                predictions=predictions)
    write_trial(tmp_path, 1, trial_config("wb", "m", "subsetting", epochs=3), reports(2))
    (tmp_path / "stray-folder").mkdir()
    local = load_results(tmp_path)
    remote = load_results(tmp_path.as_uri())
    assert remote.run_dir == tmp_path.as_uri()
    assert remote.trials["path"].tolist() == [f"{tmp_path.as_uri()}/{Path(path).name}" for path in local.trials["path"]]
    pd.testing.assert_frame_equal(remote.trials.drop(columns="path"), local.trials.drop(columns="path"))
    pd.testing.assert_frame_equal(remote.frame, local.frame)
    assert remote.configs == local.configs
    assert remote.trial_dir("1a2b3_00000").startswith("file://")
    np.testing.assert_array_equal(remote.labels("1a2b3_00000")["val_g"], [0, 1, 2, 3])
    np.testing.assert_array_equal(remote.predictions("1a2b3_00000", 2, splits=("val",))["val"], [1, 0, 1, 1])
    with pytest.raises(MissingResultError, match="epoch_0001.npz"):
        remote.predictions("1a2b3_00000", 1)
    with pytest.raises(GroupsweepError, match="does not exist"):
        load_results(f"{tmp_path.as_uri()}/nope")


@pytest.mark.slow
def test_real_ray_tune_directory_loads_like_experiment_analysis(tmp_path):
    """A real Tuner run with a function trainable that reports the contract's keys and saves
    groupsweep's files; the loader must agree with Ray's own offline ExperimentAnalysis, and the
    fixture writer must produce the same files and keys."""
    import ray
    from ray import tune

    def trainable(config):
        trial_dir = tune.get_context().get_storage().trial_fs_path
        from results_fixtures import trainable_report, write_labels, write_predictions
        write_labels(trial_dir, LABELS)
        for epoch in range(1, config["epochs"] + 1):
            value = 0.5 + 0.1 * epoch + 0.01 * config["seed"]
            write_predictions(trial_dir, epoch, [epoch % 2] * 4, [1, 0, 1])
            tune.report(trainable_report(
                epoch_metrics(epoch, value=value, overrides={"val/wga": float("nan")} if epoch == 1 else {})))

    storage = tmp_path / "storage"
    space = trial_config("wb", "m", "none", epochs=3)
    space["seed"] = tune.grid_search([0, 1])
    here = Path(__file__).resolve().parent  # Ray's workers import results_fixtures by name
    python_path = os.pathsep.join([str(here), str(here.parent), os.environ.get("PYTHONPATH", "")])
    ray.init(address="local", num_cpus=2, object_store_memory=80 * 1024 ** 2, include_dashboard=False,
             ignore_reinit_error=True, runtime_env={"env_vars": {"PYTHONPATH": python_path}})
    try:
        tune.Tuner(trainable, param_space=space,
                   run_config=tune.RunConfig(storage_path=str(storage), name="real", verbose=0),
                   tune_config=tune.TuneConfig(reuse_actors=True)).fit()
        analysis = tune.ExperimentAnalysis(str(storage / "real"))
    finally:
        ray.shutdown()

    results = load_results(storage / "real")
    assert len(results.trials) == 2 and set(results.trials["status"]) == {"complete"}
    for trial in analysis.trials:
        ours = results.frame[results.frame["trial_id"] == trial.trial_id].reset_index(drop=True)
        theirs = analysis.trial_dataframes[trial.trial_id]
        assert ours["epoch"].tolist() == theirs["epoch"].tolist() == [1, 2, 3]
        for key in ("val/wga", "test/acc_group_3", "train/acc", "model/num_parameters"):
            np.testing.assert_allclose(ours[key].to_numpy(float), theirs[key].to_numpy(float), equal_nan=True)
        assert ours["seed"].iloc[0] == trial.config["seed"]
        np.testing.assert_array_equal(results.predictions(trial.trial_id, 2)["val"], [0, 0, 0, 0])
    assert results.frame.loc[results.frame["epoch"] == 1, "val/wga"].isna().all()

    real_dir = Path(results.trial_dir(analysis.trials[0].trial_id))
    fake_dir = write_trial(tmp_path / "fake", 0, trial_config("wb", "m", "none", epochs=3),
                           [epoch_metrics(e) for e in (1, 2, 3)], labels=LABELS)
    listing = {path.name for path in real_dir.iterdir()} - {"groupsweep"}
    assert {"params.json", "params.pkl", "result.json", "progress.csv"} <= listing
    assert {name for name in listing if not name.startswith("events.out")} == \
        {path.name for path in fake_dir.iterdir()} - {"groupsweep"}
    real_line = json.loads((real_dir / "result.json").read_text().splitlines()[1])
    fake_line = json.loads((fake_dir / "result.json").read_text().splitlines()[1])
    assert list(real_line) == list(fake_line)
    real_header = (real_dir / "progress.csv").read_text().splitlines()[0]
    assert real_header == (fake_dir / "progress.csv").read_text().splitlines()[0]
    assert json.loads((real_dir / "params.json").read_text()).keys() == \
        json.loads((fake_dir / "params.json").read_text()).keys()
    assert pd.read_csv(real_dir / "progress.csv").shape == pd.read_csv(fake_dir / "progress.csv").shape
