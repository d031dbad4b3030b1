"""A catalogue of malformed input, written from the README's promises (issue 15).

Every case is one ``groupsweep`` command line on real files. Each must exit with status 2 and print
exactly one line on stderr, ``error: ...``, that names the bad value, and no traceback. A ``run`` case
must fail before Ray starts (Ray is not initialised in the test process afterwards) and leave the
results folder exactly as it was (nothing written, so nothing can block the corrected run).

Most cases run ``sweeps.cli.main`` in this process (fast); ``SUBPROCESS_CASES`` run ``python -m
sweeps.cli`` as users do, and also check that nothing was written outside ``--storage``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from native_fixtures import (CELEBA_ATTRIBUTES, write_celeba_original, write_civilcomments, write_custom_images,
                             write_waterbirds)
from ray_fixtures import run_cli
from test_bad_input import assert_one_error_line, snapshot, spec_file, text_file

from sweeps.sweep_lock import SweepLock

COUNTS = {"train": (3, 2, 1, 2), "val": (1, 1, 1, 1), "test": (1, 1, 1, 1)}
# A part tag that makes a cell name of 124 characters: its plain trials fit the name limit (127), the trials
# of a search over it (``-h01-s0``) do not (131).
SEARCH_TAG = "t" * 80


def storage(tmp: Path) -> str:
    return str(tmp / "results")


def run(tmp: Path, spec: str, *extra: str) -> list[str]:
    """``run SPEC --storage <tmp>/results EXTRA``."""
    return ["run", spec, "--storage", storage(tmp), *extra]


def spec_with(tmp: Path, **changes) -> str:
    return spec_file(tmp, **changes)


def hparams(tmp: Path, **values) -> str:
    return spec_file(tmp, hparams=values)


def a_file(tmp: Path, name: str = "a_file") -> str:
    return text_file(tmp, name, "not a folder\n")


# --- native files, each damaged in one row ------------------------------------------------------------


def rewrite_records(path: Path, edit, delimiter: str = ",") -> None:
    """Apply ``edit(records)`` to the CSV records of ``path`` (``records[0]`` is the header) and write them back."""
    with open(path, newline="") as handle:
        records = list(csv.reader(handle, delimiter=delimiter))
    edit(records)
    with open(path, "w", newline="") as handle:
        csv.writer(handle, delimiter=delimiter).writerows(records)


def set_cell(column: str, value, row: int = 1):
    def edit(records):
        records[row][records[0].index(column)] = value
    return edit


def add_cell(row: int = 1):
    def edit(records):
        records[row].append("1")
    return edit


def drop_cell(row: int = 1):
    def edit(records):
        records[row].pop()
    return edit


def waterbirds(tmp: Path, edit=None) -> str:
    root = write_waterbirds(tmp / "waterbirds", COUNTS) if not (tmp / "waterbirds").exists() else tmp / "waterbirds"
    if edit is not None:
        rewrite_records(root / "metadata.csv", edit)
    return str(root)


def civilcomments(tmp: Path, edit) -> str:
    root = tmp / "civilcomments"
    root.mkdir()
    write_civilcomments(root, COUNTS)
    rewrite_records(root / "all_data_with_identities.csv", edit)
    return str(root)


def custom(tmp: Path, edit) -> str:
    root = write_custom_images(tmp / "custom", COUNTS)
    rewrite_records(root / "metadata.csv", edit)
    return str(root)


def celeba(tmp: Path, edit_line, line: int = 3, name: str = "list_attr_celeba.txt") -> str:
    """A CelebA folder in the original layout with line ``line`` (0-based) of ``name`` changed by ``edit_line``."""
    root = tmp / "celeba"
    root.mkdir()
    write_celeba_original(root, COUNTS)
    path = root / name
    lines = path.read_text().splitlines()
    lines[line] = edit_line(lines[line])
    path.write_text("\n".join(lines) + "\n")
    return str(root)


def celeba_value(attribute: str, value: str):
    """An edit of a ``list_attr_celeba.txt`` row that sets ``attribute`` to ``value``."""
    def edit(line: str) -> str:
        values = line.split()
        values[1 + CELEBA_ATTRIBUTES.index(attribute)] = value
        return " ".join(values)
    return edit


def sweep_folder_is_a_file(tmp: Path) -> list[str]:
    a_file(tmp)
    return ["run", spec_file(tmp), "--storage", str(tmp), "--name", "a_file"]


def check(dataset: str, root: str) -> list[str]:
    return ["data", "check", dataset, "--root", root]


def run_on(tmp: Path, dataset: str, root: str) -> list[str]:
    """``run`` of a one-trial sweep on the native ``dataset`` in ``root`` (its loader reads it before Ray starts)."""
    spec = spec_file(tmp, datasets={dataset: {"options": {"root": root, "image_size": 32}}})
    return run(tmp, spec)


def locked(tmp: Path) -> list[str]:
    """``run`` of a sweep whose directory another driver holds (a lock taken by this test)."""
    exp_dir = tmp / "results" / "held"
    locked.lock = SweepLock(str(exp_dir)).acquire()
    return run(tmp, spec_file(tmp), "--name", "held")


# Each case: id, argv builder (tmp_path -> argv), a fragment of the error line naming the bad value.
CASES = [
    # --- names that become paths: one rule (trainables.errors.path_name) --------------------------------
    ("name-parent", lambda t: run(t, spec_file(t), "--name", "../escape"), "--name '../escape' is not a valid name"),
    ("name-nested-parent", lambda t: run(t, spec_file(t), "--name", "a/../../b"), "'a/../../b'"),
    ("name-absolute", lambda t: run(t, spec_file(t), "--name", "/etc/cron.d"), "'/etc/cron.d'"),
    ("name-hidden", lambda t: run(t, spec_file(t), "--name", ".hidden"), "'.hidden'"),
    ("name-option-like", lambda t: run(t, spec_file(t), "--name=-rf"), "'-rf'"),
    ("name-space", lambda t: run(t, spec_file(t), "--name", "my sweep"), "'my sweep'"),
    ("name-uri", lambda t: run(t, spec_file(t), "--name", "s3://bucket/x"), "'s3://bucket/x'"),
    ("name-too-long", lambda t: run(t, spec_file(t), "--name", "n" * 129), "(129 characters)"),
    ("spec-name-parent", lambda t: ["plan", spec_with(t, name="../../up")], "sweep name '../../up'"),
    ("spec-name-slash", lambda t: run(t, spec_with(t, name="a/b")), "sweep name 'a/b'"),
    ("spec-name-number", lambda t: ["plan", spec_with(t, name=123)], "sweep name 123"),
    ("tag-space", lambda t: ["plan", spec_with(t, parts=[{"tag": "last layer"}])], "part tag 'last layer'"),
    ("tag-parent", lambda t: ["plan", spec_with(t, parts=[{"tag": ".."}])], "part tag '..'"),
    ("tag-slash", lambda t: run(t, spec_with(t, parts=[{"tag": "x/y"}])), "part tag 'x/y'"),
    ("tag-query", lambda t: ["plan", spec_with(t, parts=[{"tag": "a?b=1"}])], "part tag 'a?b=1'"),
    ("tag-empty", lambda t: ["plan", spec_with(t, parts=[{"tag": ""}])], "part tag ''"),
    ("tag-trial-name-too-long", lambda t: ["plan", spec_with(t, parts=[{"tag": "x" * 100}])],
     "trial name 'synthetic-waterbirds-toy-convnextv2-xs-none-" + "x" * 100 + "-s0' is not a valid name"),
    ("tag-search-trial-name-too-long",
     lambda t: ["plan", spec_with(t, parts=[{"tag": SEARCH_TAG}], search={"num_samples": 2},
                                  hparams={"lr": {"loguniform": [1e-4, 1e-2]}})], f"{SEARCH_TAG}-h01-s0'"),
    ("promote-name-parent", lambda t: ["promote", str(t), "--seeds", "1", "--name", "../x"], "--name '../x'"),
    # --- numbers: finite, in range ----------------------------------------------------------------------
    ("lr-nan", lambda t: run(t, hparams(t, lr=float("nan"))), "lr must be a positive number, got nan"),
    ("lr-inf", lambda t: run(t, hparams(t, lr=float("inf"))), "got inf"),
    ("lr-set-inf", lambda t: run(t, spec_file(t), "--set", "lr=.inf"), "got inf"),
    ("lr-set-nan-text", lambda t: run(t, spec_file(t), "--set", "lr=nan"), "got 'nan'"),
    ("lr-zero", lambda t: ["plan", hparams(t, lr=0)], "lr must be a positive number, got 0"),
    ("weight-decay-negative", lambda t: ["plan", hparams(t, weight_decay=-0.001)], "got -0.001"),
    ("momentum-nan", lambda t: ["plan", hparams(t, momentum=float("nan"))],
     "momentum must be a number from 0 to below 1 (SGD's velocity grows without bound from 1 on), got nan"),
    ("epochs-fraction", lambda t: ["plan", hparams(t, epochs=2.5)], "epochs must be a positive integer, got 2.5"),
    ("batch-size-boolean", lambda t: ["plan", hparams(t, batch_size=True)], "got True"),
    ("d3m-beta-nan", lambda t: ["plan", hparams(t, d3m={"beta": float("nan")})], "beta=nan"),
    ("d3m-max-removed-above-one", lambda t: ["plan", hparams(t, d3m={"max_removed": 1.5})], "max_removed=1.5"),
    ("ratio-inf", lambda t: ["plan", spec_with(t, methods=[{"mixture": [float("inf")]}])], "ratio inf"),
    ("ratio-nan", lambda t: ["plan", spec_with(t, methods=[{"mixture": [float("nan")]}])], "ratio nan"),
    ("seed-fraction", lambda t: ["plan", spec_with(t, seeds=[1.5])], "seed 1.5"),
    ("momentum-one", lambda t: ["plan", hparams(t, optimizer="sgd", momentum=1)],
     "momentum must be a number from 0 to below 1 (SGD's velocity grows without bound from 1 on), got 1"),
    ("description-not-text", lambda t: ["plan", spec_with(t, description=["a"])],
     "description: expected text, got ['a']"),
    ("cpu-nan", lambda t: ["plan", spec_with(t, resources={"cpu": float("nan")})],
     "cpu must be a positive number, got nan"),
    ("gpu-inf", lambda t: ["plan", spec_with(t, resources={"gpu": float("inf")})], "gpu must be a non-negative number, got inf"),
    ("keep-checkpoints-zero", lambda t: ["plan", spec_with(t, keep_checkpoints=0)], "got 0"),
    ("max-failures-below-minus-one", lambda t: ["plan", spec_with(t, max_failures=-2)], "got -2"),
    ("max-concurrent-spec-zero", lambda t: ["plan", spec_with(t, max_concurrent=0)], "got 0"),
    ("max-concurrent-flag-negative", lambda t: run(t, spec_file(t), "--max-concurrent", "-1"), "got -1"),
    ("search-num-samples-zero",
     lambda t: ["plan", spec_with(t, search={"num_samples": 0}, hparams={"lr": {"loguniform": [1e-4, 1e-3]}})],
     "num_samples must be a positive integer, got 0"),
    ("search-bound-nan",
     lambda t: ["plan", spec_with(t, search={"num_samples": 2}, hparams={"lr": {"loguniform": [float("nan"), 1e-3]}})],
     "bound nan"),
    ("dataset-size-nan",
     lambda t: run(t, spec_with(t, datasets={"synthetic-waterbirds": {"options": {"size": float("nan")}}})), "size=nan"),
    ("dataset-max-length-one",
     lambda t: run(t, spec_with(t, datasets={"synthetic-civilcomments": {"options": {"max_length": 1}}},
                                models=["toy-bert-xs"])), "option max_length=1 must be an integer >= 2"),
    ("train-lr-inf", lambda t: ["train", "--dataset", "synthetic-waterbirds", "--model", "toy-convnextv2-xs",
                                "--set", "lr=.inf"], "got inf"),
    # --- storage and output paths -----------------------------------------------------------------------
    ("storage-is-a-file", lambda t: ["run", spec_file(t), "--storage", a_file(t)], "--storage"),
    ("storage-under-a-file", lambda t: ["run", spec_file(t), "--storage", a_file(t) + "/sub"], "is not a folder"),
    ("sweep-folder-is-a-file", sweep_folder_is_a_file, "sweep folder"),
    ("analyze-out-is-a-file", lambda t: ["analyze", str(t), "--out", a_file(t)], "is a regular file"),
    ("plot-out-is-a-file", lambda t: ["plot", str(t), "--out", a_file(t)], "is a regular file"),
    ("plot-out-under-a-file", lambda t: ["plot", str(t), "--out", a_file(t) + "/figs"], "is not a folder"),
    ("spectral-out-is-a-file", lambda t: ["spectral", str(t), "--out", a_file(t)], "is a regular file"),
    ("promote-out-is-a-folder", lambda t: ["promote", str(t), "--seeds", "1", "--out", str(t)], "is a folder"),
    ("after-asks-for-help", lambda t: run(t, spec_with(t, after=["analyze --help"])),
     "after[0]: 'analyze --help': -h/--help would print the help and run nothing"),
    ("pretrained-is-a-string", lambda t: run(t, hparams(t, pretrained="no")), "pretrained must be true or false"),
    ("last-layer-only-is-a-string", lambda t: run(t, hparams(t, last_layer_only="false")),
     "last_layer_only must be true or false"),
    ("data-root-is-a-number", lambda t: run(t, hparams(t, data_root=2024)), "data_root must be a path"),
    ("data-root-is-empty", lambda t: run(t, hparams(t, data_root="")), "data_root must be a path"),
    ("seed-too-large", lambda t: run(t, spec_with(t, seeds=[2**32])), "seed 4294967296 is not an integer from 0"),
    ("set-forces-a-model", lambda t: run(t, spec_file(t), "--set", "model=resnet18"),
     "override: 'model' is set by the grid"),
    ("set-forces-a-seed", lambda t: run(t, spec_file(t), "--set", "seed=3"), "override: 'seed' is set by the grid"),
    ("quniform-bound-off-the-step", lambda t: run(t, hparams(t, lr={"quniform": [1.0e-4, 1.0e-3, 3.0e-4]})),
     "quniform bound 0.0001 is not a multiple of the step 0.0003"),
    ("integer-setting-sampled-as-a-real", lambda t: run(t, hparams(t, epochs={"uniform": [2, 8]})),
     "'epochs' takes integers but uniform samples real numbers"),
    ("optional-integer-sampled-as-a-real", lambda t: run(t, hparams(t, dfr_ensemble={"uniform": [2, 8]})),
     "'dfr_ensemble' takes integers but uniform samples real numbers"),
    # spaces given by --set (override) are checked as those in hparams are
    ("set-space-log-of-zero", lambda t: run(t, spec_file(t), "--set", "weight_decay={loguniform: [0, 1]}"),
     "override.weight_decay: loguniform needs 0 < lo, got lo=0"),
    ("set-space-empty-choice", lambda t: run(t, spec_file(t), "--set", "weight_decay={choice: []}"),
     "override.weight_decay: choice needs a non-empty list of values"),
    ("set-space-integer-as-a-real", lambda t: run(t, spec_file(t), "--set", "epochs={uniform: [2, 5]}"),
     "override.epochs: 'epochs' takes integers but uniform samples real numbers"),
    ("search-over-a-setting-that-does-not-train", lambda t: run(t, hparams(t, eval_train={"choice": [1, 2]})),
     "'eval_train' does not change the training"),
    ("search-over-another-methods-setting",
     lambda t: run(t, spec_with(t, search={"num_samples": 2}, hparams={"epochs": 1, "groupdro_eta": {
         "loguniform": [1.0e-3, 1.0e-1]}})),
     "method none does not read 'groupdro_eta' (searching it there only repeats configurations); search it in the "
     "hparams of groupdro only"),
    ("search-metric-of-a-group-the-data-lacks",
     lambda t: run(t, spec_with(t, search={"num_samples": 1, "metric": "val/acc_group_9"}, hparams={"epochs": 1, "lr": {
         "loguniform": [1.0e-4, 1.0e-2]}})),
     "'val/acc_group_9' names group 9, but the dataset of cell synthetic-waterbirds-toy-convnextv2-xs-none has 4 "
     "groups (0 to 3)"),
    ("search-over-momentum-with-adamw",
     lambda t: run(t, spec_with(t, search={"num_samples": 2}, hparams={"epochs": 1, "momentum": {
         "uniform": [0.5, 0.9]}})), "optimizer adamw does not read 'momentum'"),
    ("tracking-item-is-a-mapping", lambda t: run(t, spec_with(t, tracking=[{"mlflow": {}}])),
     "tracking: expected tracker names"),
    ("tracking-uri-is-a-number", lambda t: run(t, spec_with(t, tracking={"mlflow": {"tracking_uri": 5}})),
     "tracking.mlflow.tracking_uri: expected a string, got 5"),
    ("search-algorithm-is-a-list", lambda t: run(t, spec_with(t, search={"algorithm": ["optuna"]})),
     "unknown search algorithm ['optuna']"),
    ("cache-dir-is-empty", lambda t: run(t, spec_with(t, datasets={"waterbirds": {"options": {
        "root": waterbirds(t), "cache_dir": ""}}})), "cache_dir must be a folder path, got ''"),
    ("text-model-on-image-data", lambda t: run(t, spec_with(t, models=["toy-bert-xs"])),
     "model 'toy-bert-xs' takes text inputs but dataset 'synthetic-waterbirds' holds image inputs"),
    ("after-spectral-top-zero", lambda t: run(t, spec_with(t, after=["spectral --top 0"])),
     "after[0]: 'spectral --top 0': --top must be a positive integer, got 0"),
    ("after-spectral-batch-size-zero", lambda t: run(t, spec_with(t, after=["spectral --top 5 --batch-size 0"])),
     "after[0]: 'spectral --top 5 --batch-size 0': --batch-size must be a positive integer, got 0"),
    ("after-analyze-unknown-method", lambda t: run(t, spec_with(t, after=["analyze --methods none,bogus"])),
     "after[0]: 'analyze --methods none,bogus': unknown method 'bogus'"),
    ("after-promote-bad-seed", lambda t: run(t, spec_with(t, after=["promote --seeds -1"])),
     "after[0]: 'promote --seeds -1': --seeds: seed -1 is not an integer from 0"),
    ("after-promote-bad-name", lambda t: run(t, spec_with(t, after=["promote --seeds 3 --name ../x"])),
     "after[0]: 'promote --seeds 3 --name ../x': --name"),
    ("gpu-finer-than-ray-counts", lambda t: run(t, spec_with(t, resources={"cpu": 1, "gpu": 1.0e-9})),
     "gpu 1e-09 is finer than Ray's resolution of 0.0001"),
    ("promote-out-is-a-uri", lambda t: ["promote", str(t), "--seeds", "1", "--out", "s3://b/spec.yaml"],
     "must be a local path here, not a storage URI"),
    ("after-promote-out-is-a-uri", lambda t: run(t, spec_with(t, after=["promote --seeds 3 --out s3://b/s.yaml"])),
     "after[0]: 'promote --seeds 3 --out s3://b/s.yaml': --out 's3://b/s.yaml' must be a local path"),
    ("after-out-is-a-file", lambda t: run(t, spec_with(t, after=[f"analyze --out {a_file(t)}"])),
     "after[0]: 'analyze --out"),
    ("swept-while-locked", locked, "is already being run by pid"),
    # --- data roots and native files: checked before Ray starts ----------------------------------------
    ("data-root-missing-run",
     lambda t: run(t, spec_with(t, datasets=["waterbirds"], hparams={"data_root": str(t / "nowhere")})),
     "nowhere' of dataset 'waterbirds' does not exist"),
    ("data-root-unset-run", lambda t: run(t, spec_with(t, datasets=["waterbirds"])),
     "set data_root in the sweep spec (or --set data_root=DIR"),
    ("data-root-is-a-file-run", lambda t: run(t, spec_with(t, datasets=["celeba"], hparams={"data_root": a_file(t)})),
     "a_file' of dataset 'celeba' is a file, not a folder"),
    ("celeba-row-value-too-many", lambda t: check("celeba", celeba(t, lambda line: line + " 1")),
     "list_attr_celeba.txt row 2: 42 values where the file has 41 columns"),
    ("celeba-row-value-too-few", lambda t: check("celeba", celeba(t, lambda line: line.rsplit(" ", 1)[0])),
     "row 2: 40 values where the file has 41 columns (image_id, "),
    ("celeba-row-without-file-name", lambda t: check("celeba", celeba(t, lambda line: line.split(" ", 1)[1])),
     "row 2: 40 values"),
    ("celeba-row-value-not-a-sign", lambda t: check("celeba", celeba(t, celeba_value("Blond_Hair", "7"))),
     "row 2: class 7 in column 'Blond_Hair'"),
    ("celeba-row-value-text", lambda t: check("celeba", celeba(t, celeba_value("Male", "yes"))),
     "row 2: attribute 'yes' in column 'Male'"),
    ("celeba-count-line-wrong", lambda t: check("celeba", celeba(t, lambda line: "999", line=0)), "999 images"),
    ("celeba-partition-value-too-many",
     lambda t: check("celeba", celeba(t, lambda line: line + " 0", line=0, name="list_eval_partition.txt")),
     "list_eval_partition.txt row 1: 3 values where the file has 2 columns"),
    ("celeba-row-too-many-run", lambda t: run_on(t, "celeba", celeba(t, lambda line: line + " 1")), "42 values"),
    ("waterbirds-row-value-too-many", lambda t: check("waterbirds", waterbirds(t, add_cell(2))),
     "metadata.csv row 2: 7 values where the file has 6 columns"),
    ("waterbirds-row-value-too-few", lambda t: check("waterbirds", waterbirds(t, drop_cell(3))),
     "metadata.csv row 3: 5 values"),
    ("waterbirds-image-outside-root", lambda t: check("waterbirds", waterbirds(t, set_cell("img_filename", "../x.jpg"))),
     "image file name '../x.jpg' leaves its folder"),
    ("waterbirds-image-absolute", lambda t: check("waterbirds", waterbirds(t, set_cell("img_filename", "/etc/passwd"))),
     "'/etc/passwd' leaves its folder"),
    ("waterbirds-class-two", lambda t: check("waterbirds", waterbirds(t, set_cell("y", "2"))), "class 2 in column 'y'"),
    ("waterbirds-split-text", lambda t: check("waterbirds", waterbirds(t, set_cell("split", "dev"))), "split 'dev'"),
    ("waterbirds-image-missing", lambda t: check("waterbirds", waterbirds(t, set_cell("img_filename", "gone.jpg"))),
     "image 'gone.jpg' not found"),
    ("waterbirds-image-outside-run", lambda t: run_on(t, "waterbirds", waterbirds(t, set_cell("img_filename", "../x.jpg"))),
     "'../x.jpg' leaves its folder"),
    ("civilcomments-row-value-too-many", lambda t: check("civilcomments", civilcomments(t, add_cell(4))),
     "all_data_with_identities.csv row 4: 22 values where the file has 21 columns"),
    ("civilcomments-toxicity-above-one", lambda t: check("civilcomments", civilcomments(t, set_cell("toxicity", "1.5"))),
     "toxicity 1.5 outside"),
    ("civilcomments-toxicity-text", lambda t: check("civilcomments", civilcomments(t, set_cell("toxicity", "high"))),
     "value 'high' in column 'toxicity' is not a number"),
    ("custom-file-outside-root", lambda t: check("custom", custom(t, set_cell("filename", "../../secret.jpg"))),
     "'../../secret.jpg' leaves its folder"),
    ("custom-class-negative", lambda t: check("custom", custom(t, set_cell("y", "-1"))), "row 1: class -1 in column 'y'"),
    ("custom-row-value-too-few", lambda t: check("custom", custom(t, drop_cell(5))), "row 5: 6 values"),
]


@pytest.fixture(autouse=True)
def no_data_env(monkeypatch):
    monkeypatch.delenv("GROUPSWEEP_DATA", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield
    lock = getattr(locked, "lock", None)
    if lock is not None:
        lock.release()
        locked.lock = None


def test_the_catalogue_is_large_and_its_ids_unique():
    ids = [case[0] for case in CASES] + [case[0] for case in SUBPROCESS_CASES]
    assert len(ids) >= 60 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("argv, fragment", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_error_line_before_ray_starts(tmp_path, capsys, argv, fragment):
    import ray

    args = argv(tmp_path)
    results = tmp_path / "results"
    before = snapshot(results) if results.exists() else None
    ray_was_running = ray.is_initialized()
    err = assert_one_error_line(args, capsys, fragment)
    assert "Traceback" not in err
    if args and args[0] == "run":
        assert ray_was_running or not ray.is_initialized()  # refused before Ray started
        assert (snapshot(results) if results.exists() else None) == before  # nothing written


# --- the same promises through `python -m sweeps.cli`, as users run it ---------------------------------

SUBPROCESS_CASES = [
    ("cli-name-escapes-storage", lambda t: run(t, spec_file(t), "--name", "../../escaped"), "'../../escaped'"),
    ("cli-lr-nan", lambda t: run(t, spec_file(t), "--set", "lr=.nan"), "got nan"),
    ("cli-storage-is-a-file", lambda t: ["run", spec_file(t), "--storage", a_file(t)], "is not a folder"),
    ("cli-celeba-row-value-too-many", lambda t: check("celeba", celeba(t, lambda line: line + " 1")), "42 values"),
]


@pytest.mark.parametrize("argv, fragment", [case[1:] for case in SUBPROCESS_CASES],
                         ids=[case[0] for case in SUBPROCESS_CASES])
def test_bad_input_through_the_command_line(tmp_path, argv, fragment):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    args = argv(work)
    before = sorted(map(str, tmp_path.rglob("*")))
    completed = run_cli(*args, timeout=300)
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], completed.stderr
    assert "Traceback" not in completed.stderr + completed.stdout
    assert sorted(map(str, tmp_path.rglob("*"))) == before  # nothing written, inside --storage or out of it


def test_a_refused_start_does_not_block_the_corrected_run(tmp_path):
    """A run that stopped before its first trial (its spec saved, no trial) is no sweep yet: a corrected spec
    under the same name is not refused as "a different sweep"."""
    from sweeps.launcher import check_resumable, save_spec
    from sweeps.spec import load_spec

    exp_dir = tmp_path / "results" / "fix"
    save_spec(str(exp_dir), yaml.safe_load(Path(spec_file(tmp_path, datasets=["waterbirds"])).read_text()))
    corrected = load_spec(spec_file(tmp_path, name="fix"))
    assert check_resumable(corrected, str(exp_dir)) is False  # not started: its saved spec will be replaced
    (exp_dir / "some-trial").mkdir()
    (exp_dir / "some-trial" / "params.json").write_text("{}")
    from trainables.errors import GroupsweepError

    with pytest.raises(GroupsweepError, match="holds trial .* which the spec lacks"):
        check_resumable(corrected, str(exp_dir))  # started: a different sweep is refused
