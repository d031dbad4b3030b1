"""Bad input catalogue: malformed specs, CLI arguments, datasets, checkpoints and result files.

Every case gives ONE line naming the bad value; through the command line that is ``error: ...`` on
stderr with exit status 2 (``sweeps.cli.main``), before Ray starts or anything is written. The last
cases check that a bad re-run leaves an existing results directory untouched.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from s3_fixtures import s3_server  # noqa: F401  (the fixture)
from sweeps.cli import main
from trainables.errors import GroupsweepError

GOOD_SPEC = {
    "datasets": {"synthetic-waterbirds": {"options": {"size": 200}}},
    "models": ["toy-convnextv2-xs"],
    "methods": ["none"],
    "seeds": [0],
}


def spec_file(tmp_path: Path, **changes) -> str:
    """A valid small spec with ``changes`` applied (a key set to None is removed)."""
    source = dict(GOOD_SPEC, **changes)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in source.items() if v is not None}))
    return str(path)


def text_file(tmp_path: Path, name: str, text: str | bytes) -> str:
    """``text`` (or raw bytes) written to ``tmp_path / name``; returns the path."""
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


# Each case: id, argv builder (tmp_path -> argv), fragment the one-line message must contain.
CLI_CASES = [
    # --- specs ---
    ("spec-unknown-key", lambda t: ["plan", spec_file(t, colour=1)], "unknown key 'colour'"),
    ("spec-unknown-dataset", lambda t: ["plan", spec_file(t, datasets=["nope"])], "unknown dataset 'nope'"),
    ("spec-unknown-model", lambda t: ["plan", spec_file(t, models=["resnet-9000"])], "unknown model 'resnet-9000'"),
    ("spec-unknown-method", lambda t: ["plan", spec_file(t, methods=["shuffle"])],
     "unknown balancing method 'shuffle'"),
    ("spec-mixture-without-ratio", lambda t: ["plan", spec_file(t, methods=["mixture"])],
     "method 'mixture' needs mixture ratios"),
    ("spec-ratio-below-one", lambda t: ["plan", spec_file(t, methods=[{"mixture": [0.5]}])], "ratio 0.5"),
    ("spec-negative-seed", lambda t: ["plan", spec_file(t, seeds=[-1])], "seed -1"),
    ("spec-repeated-seed", lambda t: ["plan", spec_file(t, seeds=[1, 1])], "seeds [1, 1] repeat"),
    ("spec-zero-cpu", lambda t: ["plan", spec_file(t, resources={"cpu": 0})], "cpu must be a positive number, got 0"),
    ("spec-fractional-gpus", lambda t: ["plan", spec_file(t, resources={"gpu": 1.5})], "gpu 1.5"),
    ("spec-unknown-hparam", lambda t: ["plan", spec_file(t, hparams={"learning_rate": 1})],
     "unknown training setting 'learning_rate'"),
    ("spec-bad-schedule", lambda t: ["plan", spec_file(t, hparams={"schedule": "cubic"})],
     "unknown schedule 'cubic'"),
    ("spec-negative-lr", lambda t: ["plan", spec_file(t, hparams={"lr": -1})], "lr must be a positive number, got -1"),
    ("spec-max-failures-text", lambda t: ["plan", spec_file(t, max_failures="two")], "got 'two'"),
    ("spec-unknown-dataset-option",
     lambda t: ["plan", spec_file(t, datasets={"synthetic-waterbirds": {"options": {"sizee": 3}}})],
     "no option 'sizee'"),
    ("spec-dataset-size-negative",
     lambda t: ["plan", spec_file(t, datasets={"synthetic-waterbirds": {"options": {"size": -5}}})],
     "option size=-5 must be an integer >= 4"),
    ("spec-dataset-seed-negative",
     lambda t: ["plan", spec_file(t, datasets={"synthetic-celeba": {"options": {"seed": -1}}})],
     "option seed=-1 must be an integer >= 0"),
    ("spec-dataset-image-size-huge",
     lambda t: ["plan", spec_file(t, datasets={"colored-digits": {"options": {"image_size": 100000}}})],
     "option image_size=100000 must be an integer from 16 to 1024"),
    ("spec-dataset-max-length-text",
     lambda t: ["plan", spec_file(t, models=["toy-bert-xs"],
                                  datasets={"synthetic-civilcomments": {"options": {"max_length": "x"}}})],
     "option max_length='x' must be an integer >= 2"),
    ("run-dataset-does-not-fit-in-memory",  # 8 PB: more than any address space, whatever the overcommit policy
     lambda t: ["run", spec_file(t, datasets={"synthetic-waterbirds": {"options": {"size": 10 ** 15}}}),
                "--storage", str(t / "st")],
     "dataset 'synthetic-waterbirds' with options {'size': 1000000000000000} does not fit in this machine's memory"),
    ("spec-toy-model-pretrained", lambda t: ["plan", spec_file(t, hparams={"pretrained": True})],
     "model 'toy-convnextv2-xs' is a toy model without pretrained weights"),
    ("run-model-path-missing", lambda t: ["run", spec_file(t, hparams={"model_path": str(t / "nockpt")}),
                                          "--storage", str(t / "st")], "nockpt' of model 'toy-convnextv2-xs' does not exist"),
    ("spec-after-promote-without-search", lambda t: ["plan", spec_file(t, after=["promote --seeds 3"])],
     "after[0]: 'promote --seeds 3': promote reruns a hyperparameter search's chosen configurations"),
    ("spec-after-spectral-epoch-not-kept",
     lambda t: ["plan", spec_file(t, hparams={"epochs": 5}, after=["spectral --epoch 3"])],
     "--epoch 3: trial synthetic-waterbirds-toy-convnextv2-xs-none-s0 keeps the checkpoints of epochs 5 only; set "
     "keep_checkpoints: all to analyse an earlier epoch"),
    ("spec-after-spectral-epoch-past-the-last",
     lambda t: ["plan", spec_file(t, hparams={"epochs": 2}, keep_checkpoints="all", after=["spectral --epoch 3"])],
     "keeps the checkpoints of epochs 1, 2 only; trial synthetic-waterbirds-toy-convnextv2-xs-none-s0 runs 2 epoch(s)"),
    ("spec-after-spectral-epoch-not-saved",
     lambda t: ["plan", spec_file(t, hparams={"epochs": 4, "checkpoint_every": 2}, keep_checkpoints="all",
                                  after=["spectral --epoch 1"])],
     "keeps the checkpoints of epochs 2, 4 only; checkpoint_every 2 saves no checkpoint of epoch 1"),
    ("spec-after-spectral-device", lambda t: ["plan", spec_file(t, after=["spectral --device tpu"])],
     "--device 'tpu' is not a torch device"),
    ("spec-after-out-unknown-scheme", lambda t: ["plan", spec_file(t, after=["analyze --out foo://bar"])],
     "cannot open 'foo://bar'"),
    ("spec-unknown-space-kind", lambda t: ["plan", spec_file(t, hparams={"lr": {"normal": [0, 1]}})],
     "hparams lr: {'normal': [0, 1]} is not a search space; a space is one of loguniform, uniform"),
    ("spec-not-yaml", lambda t: ["plan", text_file(t, "bad.yaml", "datasets: [a\n")], "not valid YAML"),
    ("spec-duplicate-key", lambda t: ["plan", text_file(t, "dup.yaml", "datasets: [synthetic-waterbirds]\n"
                                                               "seeds: [1]\nseeds: [2]\n")],
     "line 3 is not valid YAML (duplicate key 'seeds')"),
    ("spec-not-a-mapping", lambda t: ["plan", text_file(t, "list.yaml", "- a\n- b\n")], "must hold a mapping, got list"),
    ("spec-not-utf8", lambda t: ["plan", text_file(t, "latin.yaml", "description: caf\xe9\n".encode("latin-1"))],
     "latin.yaml' is not UTF-8 text (byte 0xe9 at offset 16); save it as UTF-8"),
    ("spec-nul-character", lambda t: ["plan", text_file(t, "nul.yaml", "seeds: \0\n")],
     "nul.yaml' is not valid YAML (unacceptable character #x0000: special characters are not allowed in "),
    ("spec-integer-too-long",
     lambda t: ["plan", text_file(t, "long.yaml", "datasets: [synthetic-waterbirds]\nseeds: [" + "9" * 5000 + "]\n")],
     "long.yaml' line 2 is not valid YAML (an integer of 5000 characters is too long)"),
    ("spec-nested-too-deeply", lambda t: ["plan", text_file(t, "deep.yaml", "hparams: " + "[" * 20000 + "]" * 20000)],
     "deep.yaml' is nested too deeply to read"),
    ("set-integer-too-long", lambda t: ["plan", spec_file(t), "--set", "epochs=" + "9" * 5000],
     "the value line 1 is not valid YAML (an integer of 5000 characters is too long)"),
    ("spec-missing-file", lambda t: ["plan", str(t / "absent.yaml")], "absent.yaml"),
    # --- CLI arguments ---
    ("spec-after-bad-arguments", lambda t: ["plan", spec_file(t, after=["spectral --tops 10"])],
     "after[0]: 'spectral --tops 10': unrecognized arguments: --tops 10"),
    ("set-without-equals", lambda t: ["plan", spec_file(t), "--set", "epochs"], "override 'epochs' is not KEY=VALUE"),
    ("set-unknown-key", lambda t: ["plan", spec_file(t), "--set", "epochz=3"], "unknown key 'epochz'"),
    ("set-bad-value", lambda t: ["plan", spec_file(t), "--set", "epochs=zero"], "got 'zero'"),
    ("max-concurrent-zero", lambda t: ["run", spec_file(t), "--max-concurrent", "0"], "got 0"),
    ("too-many-cpus", lambda t: ["run", spec_file(t, resources={"cpu": 4096})], "needs 4096 CPU"),
    ("models-too-many-classes", lambda t: ["models", "--num-classes", "100000000"],
     "--num-classes 100000000 must be from 1 to 10000"),
    ("status-unknown-sweep", lambda t: ["status", "nosuch", "--storage", str(t)], "no sweep 'nosuch'"),
    ("status-unknown-uri-scheme", lambda t: ["status", "foo://bar"],
     "cannot open 'foo://bar': Unrecognized filesystem type in URI"),
    ("analyze-unknown-uri-scheme", lambda t: ["analyze", "foo://bar"], "cannot open 'foo://bar'"),
    ("batch-does-not-split-over-workers",
     lambda t: ["plan", spec_file(t, hparams={"batch_size": 33}, resources={"cpu": 3, "gpu": 0, "workers": 2})],
     "batch_size 33 does not split over 2 workers: with several workers it is the global batch; give a multiple of 2"),
    ("searched-batch-does-not-split-over-workers",  # a sampled batch of 48 would fail its trial at start
     lambda t: ["plan", spec_file(t, hparams={"batch_size": {"choice": [32, 48]}}, search={"num_samples": 2},
                                  resources={"cpu": 3, "gpu": 0, "workers": 3})],
     "hparams batch_size: choice(32, 48): batch_size 32 does not split over 3 workers"),
    ("searched-batch-randint-over-workers",
     lambda t: ["plan", spec_file(t, hparams={"batch_size": {"randint": [32, 65]}}, search={"num_samples": 2},
                                  resources={"cpu": 2, "gpu": 0, "workers": 2})],
     "randint draws every integer, and with 2 workers batch_size is the global batch, a multiple of 2"),
    ("search-cell-batch-does-not-split-over-workers",
     lambda t: ["plan", spec_file(t, hparams={"batch_size": 33, "lr": {"loguniform": [1.0e-4, 1.0e-2]}},
                                  search={"num_samples": 2}, resources={"cpu": 2, "gpu": 0, "workers": 2})],
     ": batch_size 33 does not split over 2 workers"),
    ("fp16-without-a-gpu", lambda t: ["plan", spec_file(t, hparams={"mixed_precision": "fp16"})],
     "trial synthetic-waterbirds-toy-convnextv2-xs-none-s0: mixed_precision 'fp16' needs a GPU and its trials get "
     "none (resources gpu: 0); use 'bf16' or 'no' on CPU"),
    ("fp16-searched-without-a-gpu",
     lambda t: ["plan", spec_file(t, hparams={"mixed_precision": {"choice": ["bf16", "fp16"]}},
                                  search={"num_samples": 2})],
     "hparams mixed_precision: choice('bf16', 'fp16'): mixed_precision 'fp16' needs a GPU and its trials get none"),
    ("run-bad-address", lambda t: ["run", spec_file(t), "--storage", str(t / "st"), "--address", "notanaddress"],
     "--address 'notanaddress' is not a Ray cluster address"),
    ("run-unreachable-address", lambda t: ["run", spec_file(t), "--storage", str(t / "st"), "--address", "127.0.0.1:1"],
     "--address '127.0.0.1:1': cannot reach the Ray cluster there"),
    ("run-unknown-uri-scheme", lambda t: ["run", spec_file(t), "--storage", "foo://bar"], "cannot open 'foo://bar'"),
    ("status-damaged-saved-spec",
     lambda t: ["status", "s", "--storage", str(Path(text_file(t, "s/groupsweep_spec.yaml", "datasets: [x\n")).parents[1])],
     "groupsweep_spec.yaml line 2 is not valid YAML"),
    ("status-saved-spec-not-utf8",
     lambda t: ["status", "s", "--storage", str(Path(text_file(t, "s/groupsweep_spec.yaml", b"\xff\n")).parents[1])],
     "groupsweep_spec.yaml is not UTF-8 text (byte 0xff at offset 0)"),
    ("analyze-missing-dir", lambda t: ["analyze", str(t / "nodir")], "nodir does not exist"),
    ("analyze-a-file", lambda t: ["analyze", text_file(t, "table.csv", "a\n")], "table.csv is a file, not a folder"),
    ("analyze-dir-without-trials", lambda t: ["analyze", str(t)], "no trials in"),
    ("train-unknown-dataset", lambda t: ["train", "--dataset", "nope", "--model", "toy-convnextv2-xs"],
     "unknown dataset 'nope'"),
    ("train-ratio-below-one", lambda t: ["train", "--dataset", "synthetic-waterbirds", "--model", "toy-convnextv2-xs",
                                         "--method", "mixture", "--ratio", "0.5"], "ratio 0.5"),
    # --- datasets ---
    ("dataset-option-not-a-number",
     lambda t: ["train", "--dataset", "synthetic-waterbirds", "--model", "toy-convnextv2-xs",
                "--set", "dataset_options.size=abc"], "size='abc'"),
    ("dataset-folder-missing", lambda t: ["data", "check", "waterbirds", "--root", str(t / "missing")],
     "missing' of dataset 'waterbirds' does not exist"),
    ("dataset-missing-column",
     lambda t: ["data", "check", "waterbirds", "--root",
                str(Path(text_file(t, "wb/metadata.csv", "img_id,img_filename,y,split,place\n1,a.jpg,0,0,0\n")).parent)],
     "missing column 'place_filename'"),
    ("dataset-text-missing-column",
     lambda t: ["data", "check", "civilcomments", "--root",
                str(Path(text_file(t, "cc/all_data_with_identities.csv", "x\n1\n")).parent)],
     "missing column 'comment_text'"),
]


def assert_one_error_line(args: list, capsys, fragment: str) -> str:
    """Run ``groupsweep ARGS`` in this process; check exit status 2, nothing on stdout and exactly one stderr line,
    ``error: ...`` containing ``fragment``. Returns stderr."""
    capsys.readouterr()
    status = main(args)
    out, err = capsys.readouterr()
    assert status == 2, err
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and lines[0].startswith("error: "), (out, err)
    assert fragment in lines[0], lines[0]
    return err


@pytest.mark.parametrize("argv, fragment", [case[1:] for case in CLI_CASES], ids=[case[0] for case in CLI_CASES])
def test_bad_cli_input_is_one_error_line_and_exit_2(tmp_path, capsys, argv, fragment):
    assert_one_error_line(argv(tmp_path), capsys, fragment)


@pytest.mark.parametrize("argv, fragment", [
    (["run", "x.yaml", "--max-concurrent", "x"], "groupsweep run: argument --max-concurrent: invalid int value: 'x'"),
    (["analyze", "d", "--pool-models", "--by-model"], "argument --by-model: not allowed with argument --pool-models"),
    (["data", "check", "foo"], "groupsweep data check: argument NAME: invalid choice: 'foo'"),
])
def test_a_bad_argument_is_one_error_line_too(capsys, argv, fragment):
    with pytest.raises(SystemExit) as exit_status:
        main(argv)
    assert exit_status.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines


def test_address_auto_is_resolved_as_ray_resolves_it_and_checked_before_anything_is_written(tmp_path, capsys,
                                                                                             monkeypatch):
    """``--address auto`` takes ``$RAY_ADDRESS`` first (as ``ray.init`` does): one that nothing listens on is refused
    in one line, before Ray starts and before the sweep folder (its lock) is made."""
    import ray

    from s3_fixtures import free_port

    closed = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("RAY_ADDRESS", closed)
    assert_one_error_line(["run", spec_file(tmp_path), "--storage", str(tmp_path / "st"), "--address", "auto"], capsys,
                          f"--address 'auto' ({closed}): cannot reach the Ray cluster there")
    assert not ray.is_initialized() and not (tmp_path / "st").exists()


@pytest.mark.parametrize("argv, fragment", [
    (["--method", "none", "--ratio", "2"], "balancing method 'none' takes no ratio (got 2.0)"),
    (["--method", "mixture"], "balancing method 'mixture' needs a ratio"),
    (["--method", "nope"], "unknown balancing method 'nope'"),
    (["--model", "nope"], "unknown model 'nope'"),
    (["--dataset", "nope"], "unknown dataset 'nope'"),
    (["--set", "dataset_options.size=abc"], "size='abc'"),
    (["--model", "bert-tiny"], "model 'bert-tiny' takes text inputs but dataset 'synthetic-waterbirds' holds image"),
    (["--set", "pretrained=true"], "model 'toy-resnet-xs' is a toy model without pretrained weights"),
    pytest.param(["--set", "mixed_precision=fp16"], "mixed_precision 'fp16' needs a GPU and this machine has none",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
])
def test_train_prints_nothing_before_refusing_bad_input(capsys, argv, fragment):
    """Before, ``train`` printed its banner (``none 2:1``) and header, then the error."""
    capsys.readouterr()
    assert main(["train", "--model", "toy-resnet-xs", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1 and fragment in err, (out, err)


def test_a_train_run_that_diverges_ends_with_one_error_line_and_exit_1(capsys):
    capsys.readouterr()
    assert main(["train", "--model", "toy-resnet-xs", "--epochs", "2", "--lr", "1e12",
                 "--set", "dataset_options.size=200"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the run diverged: training loss is nan in epoch 1 of 2") and err.count("\n") == 1


def test_pretrained_weights_missing_here_stop_a_local_run_before_ray_starts(tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    spec = spec_file(tmp_path, datasets={"synthetic-civilcomments": {"options": {"size": 200}}}, models=["bert-tiny"],
                     hparams={"pretrained": True})
    assert_one_error_line(["run", spec, "--storage", str(tmp_path / "st")], capsys,
                          "pretrained weights of model 'bert-tiny' (hub id google/bert_uncased_L-2_H-128_A-2) are not "
                          "in the local Hugging Face cache")
    assert not (tmp_path / "st").exists()


def test_status_reads_a_sweep_tracked_with_a_package_not_installed_here(tmp_path, capsys):
    saved = yaml.safe_load(Path(spec_file(tmp_path)).read_text())
    text_file(tmp_path, "st/s/groupsweep_spec.yaml", yaml.safe_dump({**saved, "tracking": {"wandb": {"mode": "offline"}}}))
    capsys.readouterr()
    assert main(["status", "s", "--storage", str(tmp_path / "st")]) == 0
    assert "pending" in capsys.readouterr().out


def test_set_names_the_spec_keys_it_takes(tmp_path, capsys):
    err = assert_one_error_line(["plan", spec_file(tmp_path), "--set", "override=1"], capsys, "unknown key 'override'")
    assert "override," not in err.split("use a spec key", 1)[1]


# --- checkpoints and result files (read by the trainable and by analysis) --------------------------


def damaged_checkpoint(tmp_path: Path, damage: str):
    import torch
    from ray.tune import Checkpoint

    from trainables.trial_dir import STATE_FILE

    path = tmp_path / STATE_FILE
    torch.save({"epoch": 2, "model": torch.zeros(1000)}, path)
    if damage == "truncated":  # a copy cut short
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "missing":
        path.unlink()
    else:
        torch.save([1, 2], path)
    return Checkpoint.from_directory(str(tmp_path))


def load_damaged_checkpoint(tmp_path: Path, damage: str):
    from trainables.trainable import load_state

    return load_state(damaged_checkpoint(tmp_path, damage))


def read_damaged_predictions(tmp_path: Path, damage: str):
    from results_fixtures import epoch_metrics, trial_config, write_predictions, write_trial

    from analysis.results import load_results

    trial = write_trial(tmp_path, 0, trial_config("wb", "m", "none", epochs=1), [epoch_metrics(1)])
    path = write_predictions(trial, 1, np.zeros(4, np.int16), np.zeros(4, np.int16))
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:40])
    else:
        path.write_bytes(b"not a zip file")
    results = load_results(tmp_path)
    return results.predictions(results.trials["trial_id"].iloc[0], 1)


API_CASES = [
    ("checkpoint-truncated", lambda t: load_damaged_checkpoint(t, "truncated"), "state.pt"),
    ("checkpoint-without-state", lambda t: load_damaged_checkpoint(t, "missing"), "state.pt"),
    ("checkpoint-foreign-state", lambda t: load_damaged_checkpoint(t, "foreign"), "without an integer 'epoch'"),
    ("predictions-truncated", lambda t: read_damaged_predictions(t, "truncated"), "epoch_0001.npz"),
    ("predictions-not-npz", lambda t: read_damaged_predictions(t, "garbage"), "epoch_0001.npz"),
]


@pytest.mark.parametrize("call, fragment", [case[1:] for case in API_CASES], ids=[case[0] for case in API_CASES])
def test_damaged_files_are_one_line_errors_naming_them(tmp_path, call, fragment):
    with pytest.raises(GroupsweepError) as error:
        call(tmp_path)
    message = str(error.value)
    assert "\n" not in message and fragment in message and str(tmp_path) in message, message


# --- nothing already written is lost ---------------------------------------------------------------


def snapshot(root: Path) -> dict:
    """Every file under ``root`` with its bytes and modification time."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file()}


def existing_sweep(tmp_path: Path) -> tuple[Path, Path]:
    """A results root holding sweep ``kept`` (its saved spec and one trial's files), as ``groupsweep run`` leaves it."""
    from results_fixtures import epoch_metrics, trial_config, write_predictions, write_trial

    from sweeps.launcher import save_spec

    storage = tmp_path / "results"
    exp_dir = storage / "kept"
    save_spec(str(exp_dir), dict(GOOD_SPEC, name="kept"))
    trial = write_trial(exp_dir, 0, trial_config("synthetic-waterbirds", "toy-convnextv2-xs", "none", epochs=1),
                        [epoch_metrics(1)])
    write_predictions(trial, 1, np.zeros(4, np.int16), np.zeros(4, np.int16))
    return storage, exp_dir


@pytest.mark.parametrize("change, fragment", [
    ({"hparams": {"lr": 0.5}}, "with other settings (lr 1e-05, now 0.5)"),  # a trial it holds, changed
    ({"seeds": [1]}, "which the spec lacks"),  # a trial it holds, dropped
    ({"methods": ["shuffle"]}, "unknown balancing method 'shuffle'"),  # an invalid spec
    ({"resources": {"cpu": 4096}}, "needs 4096 CPU"),  # resources no node has
    ({"keep_checkpoints": "all"}, "was started with keep_checkpoints 1, the spec now says 'all'"),  # Tune keeps 1
    ({"max_failures": 5}, "was started with max_failures 2, the spec now says 5"),
])
def test_bad_rerun_leaves_the_existing_results_untouched(tmp_path, capsys, change, fragment):
    storage, exp_dir = existing_sweep(tmp_path)
    before = snapshot(exp_dir)
    spec = spec_file(tmp_path, **change)
    assert main(["run", spec, "--storage", str(storage), "--name", "kept"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err
    assert snapshot(exp_dir) == before
    assert sorted(os.listdir(storage)) == ["kept"]


def test_a_started_sweep_may_gain_trials_but_not_change_its_resources(tmp_path):
    from sweeps.launcher import check_resumable
    from sweeps.spec import load_spec

    _, exp_dir = existing_sweep(tmp_path)
    assert check_resumable(load_spec(spec_file(tmp_path, seeds=[0, 1], methods=["none", "upweighting"])),
                           str(exp_dir)) is True  # more seeds and methods: an extension
    with pytest.raises(GroupsweepError, match="holds trial .* with other resources"):
        check_resumable(load_spec(spec_file(tmp_path, seeds=[0, 1], resources={"cpu": 2})), str(exp_dir))


def test_object_storage_that_cannot_be_reached_is_one_error_line(tmp_path, capsys, monkeypatch):
    import socket

    import ray

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    bucket = f"s3://nobucket/sweeps?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    # run: refused before Ray starts
    assert_one_error_line(["run", spec_file(tmp_path), "--storage", bucket], capsys,
                          f"--storage '{bucket}' cannot be read: ")
    assert not ray.is_initialized()
    # the readers: exit status 1 (the storage failed, not the input), one line
    capsys.readouterr()
    assert main(["analyze", bucket.replace("/sweeps?", "/sweeps/demo?")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "NETWORK_CONNECTION" in lines[0], lines


def test_a_bucket_that_does_not_exist_is_refused_before_ray_starts(tmp_path, capsys, s3_server):  # noqa: F811
    """An object store answers a missing bucket as a missing folder: the run used to start Ray and then stop on its
    first write, telling the user to resume."""
    import pyarrow.fs
    import ray

    storage = s3_server.uri("sweeps").replace("s3://gs-", "s3://missing-gs-", 1)
    bucket = storage.split("/")[2]
    assert_one_error_line(["run", spec_file(tmp_path), "--storage", storage], capsys,
                          f"--storage '{storage}': bucket '{bucket}' not found (it does not exist, or its endpoint "
                          "cannot be reached); create it, or give another")
    assert not ray.is_initialized()
    filesystem, _ = pyarrow.fs.FileSystem.from_uri(s3_server.uri("sweeps"))
    assert not [info for info in filesystem.get_file_info(pyarrow.fs.FileSelector("", recursive=False))
                if info.base_name.startswith("missing-")]  # nothing was written, no bucket made
