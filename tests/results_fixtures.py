"""Write sweep results directories in Ray Tune 2.60's real on-disk layout, without Ray.

The layout was read off a real ``Tuner.fit()`` run (function trainable, local ``storage_path``):

    <storage>/<name>/<trainable>_<exp id>_<index:05d>_<index>_<short config>_<date>/
        params.json     the trial config: ``json.dump(config, indent=2, sort_keys=True)``
        params.pkl      the same config, pickled
        result.json     one JSON object per ``tune.report`` call, ``"\\n"``-terminated, with Ray's keys
                        (``trial_id``, ``training_iteration``, ``done``, ``config``, ...) after the
                        reported ones; NaN metrics appear as the bare token ``NaN``
        progress.csv    the same reports flattened, without ``config``; its columns are fixed by the
                        first report
        error.txt       only for a trial that raised
        groupsweep/labels.npz, groupsweep/predictions/epoch_XXXX.npz   (written by groupsweep's trainable)
        groupsweep/stopped_early.json   only for a search trial that ASHA stopped (``trial_dir.STOPPED_FILE``)

A hyperparameter search's trial (``searched_config``) is written like any other; its config carries the
sampled values, the ``<cell>-hNN-s<seed>`` trial name and the search keys of ``trainables.trial_dir``.

Reports are written as groupsweep's trainable reports them (``trainables.trainable.epoch_metrics``:
leading metrics first, then every metric, ``status`` and ``node_id``). Used by the results /
selection / plot tests and by ``benchmarks/analysis_scale.py`` (the one writer).
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from trainables.config import TrainConfig
from trainables.trainable import epoch_metrics as trainable_epoch_report
from trainables.trial_dir import CELL_KEY, SAMPLE_KEY, SAMPLED_KEY, STOPPED_FILE, TrialDir

SPLITS = ("train", "train_subset", "val", "test")
TRAINABLE_NAME = "groupsweep_trainable"
DATE = "2026-01-01_00-00-00"


def trial_config(dataset: str, model: str, method: str, ratio: float | None = None, seed: int = 0,
                 epochs: int = 3, **overrides) -> dict:
    """A trial config as the sweep stores it: ``TrainConfig`` fields plus ``trial_name``."""
    config = TrainConfig(dataset=dataset, model=model, method=method, ratio=ratio, seed=seed,
                         epochs=epochs, **overrides).to_dict()
    suffix = f"{ratio:g}" if ratio is not None else ""
    config["trial_name"] = f"{dataset}_{model}_{method}{suffix}_s{seed}"
    return config


def searched_config(dataset: str, model: str, method: str, ratio: float | None = None, *, sample: int,
                    seed: int = 0, sampled: dict | None = None, tag: str | None = None, epochs: int = 3,
                    width: int = 2, **overrides) -> dict:
    """A searched trial's config as ``sweeps.search`` stores it: ``TrainConfig`` fields with the ``sampled``
    values (key -> value; empty for an unsearched cell of a search), ``trial_name`` ``<cell>-hNN-s<seed>``
    (``NN``: ``sample`` padded to ``width`` digits) and the cell, sample and sampled keys."""
    sampled = dict(sampled or {})
    config = trial_config(dataset, model, method, ratio, seed, epochs, **overrides, **sampled)
    slug = method if ratio is None else f"{method}{ratio:g}"
    cell = "-".join([dataset, model, slug] + ([tag] if tag else []))
    config["trial_name"] = f"{cell}-h{sample:0{width}d}-s{seed}"
    config[CELL_KEY], config[SAMPLE_KEY], config[SAMPLED_KEY] = cell, sample, sorted(sampled)
    return config


def epoch_metrics(epoch: int, *, n_classes: int = 2, n_spurious: int = 2, num_parameters: int = 1000,
                  value: float = 0.8, overrides: dict | None = None) -> dict:
    """One epoch's report with every contract metric key; accuracies default to ``value``.

    ``overrides`` replaces chosen keys (e.g. ``{"val/wga": 0.6}``). Group counts are 100 per group
    except group 0 (the largest, 400), so the training split has a 5:2 class ratio for 2 x 2 groups (500 : 200).
    """
    n_groups = n_classes * n_spurious
    metrics: dict = {"epoch": epoch}
    for split in SPLITS:
        metrics[f"{split}/loss"] = 1.0 - value
        for key in ("acc", "avg_acc", "wga", "wca"):
            metrics[f"{split}/{key}"] = value
        for g in range(n_groups):
            metrics[f"{split}/acc_group_{g}"] = value
            metrics[f"{split}/count_group_{g}"] = 400 if g == 0 else 100
        for c in range(n_classes):
            metrics[f"{split}/acc_class_{c}"] = value
    metrics.update({
        "optim/loss": 1.0 - value, "optim/lr": 1e-5, "time/train_s": 1.5, "time/eval_s": 0.5,
        "model/num_parameters": num_parameters, "data/num_train_kept": 400 + 100 * (n_groups - 1),
    })
    metrics.update(overrides or {})
    return metrics


def trainable_report(metrics: dict, node_id: str = "node-1") -> dict:
    """What the trainable passes to ``tune.report`` for one epoch's metrics (the real function)."""
    return trainable_epoch_report(SimpleNamespace(metrics=metrics), node_id)


def diverged_report(epoch: int, node_id: str = "node-1") -> dict:
    """The last row a diverged run reports (as ``trainables.trainable.run_finetune`` does)."""
    return {"epoch": epoch, "status": "diverged", "error": "training loss is nan", "node_id": node_id}


def trial_dir_name(index: int, config: dict, experiment_id: str = "1a2b3") -> str:
    """Ray's default trial directory name for a grid-searched method and seed."""
    return (f"{TRAINABLE_NAME}_{experiment_id}_{index:05d}_{index}_"
            f"method={config['method']},seed={config['seed']}_{DATE}")


def write_trial(run_dir, index: int, config: dict, reports: list[dict], *, experiment_id: str = "1a2b3",
                labels: dict | None = None, predictions: dict | None = None, error: str | None = None,
                half_written_line: bool = False, stopped: bool = False) -> Path:
    """Write one trial directory under ``run_dir`` the way Ray Tune 2.60 does; return its path.

    ``reports`` are epoch metrics dicts (one per epoch, in order; a restored trial simply repeats
    epochs), written as the trainable reports them (``trainable_report``); a dict that already has
    ``status`` (``diverged_report``) is written as it is. ``labels`` is the trainable's labels dict and
    ``predictions`` maps an epoch to ``{"val": array, "test": array}``. ``error`` writes ``error.txt``
    as Ray does for a trial that raised; ``half_written_line`` appends a truncated JSON line and CSV
    row, as a trial killed mid-write leaves; ``stopped`` writes the marker of a search's ASHA stop
    after the last report (``{"epoch": <its epoch>}``).
    """
    trial_id = f"{experiment_id}_{index:05d}"
    path = Path(run_dir) / trial_dir_name(index, config, experiment_id)
    path.mkdir(parents=True, exist_ok=True)
    (path / "params.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    (path / "params.pkl").write_bytes(pickle.dumps(config))

    rows = []
    total = 0.0
    for iteration, report in enumerate(reports, start=1):
        total += 2.0
        row = dict(report) if "status" in report else trainable_report(report)
        row.update({
            "timestamp": 1767225600 + iteration, "checkpoint_dir_name": None, "done": False,
            "training_iteration": iteration, "trial_id": trial_id, "date": DATE, "time_this_iter_s": 2.0,
            "time_total_s": total, "pid": 4242, "hostname": "node", "node_ip": "127.0.0.1", "config": config,
            "time_since_restore": total, "iterations_since_restore": iteration,
        })
        rows.append(row)
    lines = "".join(json.dumps(row) + "\n" for row in rows)
    table = _progress_csv(rows)
    if half_written_line and rows:
        last = json.dumps(rows[-1])
        lines += last[: len(last) // 2]
        table += table.splitlines()[-1][:20]
    (path / "result.json").write_text(lines)
    (path / "progress.csv").write_text(table)
    if error is not None:
        (path / "error.txt").write_text(error + "\n")
    if stopped:
        TrialDir(path).write_json(STOPPED_FILE, {"epoch": reports[-1]["epoch"] if reports else 0})
    if labels is not None:
        write_labels(path, labels)
    for epoch, arrays in (predictions or {}).items():
        write_predictions(path, epoch, arrays["val"], arrays["test"])
    return path


def write_labels(trial_dir, labels: dict) -> Path:
    """Write ``groupsweep/labels.npz`` (the trainable's ``labels`` dict) atomically."""
    arrays = {key: np.asarray(value) for key, value in labels.items()}
    return _save_npz(Path(trial_dir) / "groupsweep" / "labels.npz", arrays)


def write_predictions(trial_dir, epoch: int, val, test) -> Path:
    """Write ``groupsweep/predictions/epoch_XXXX.npz`` (int16 ``val`` and ``test``) atomically."""
    arrays = {"val": np.asarray(val, dtype=np.int16), "test": np.asarray(test, dtype=np.int16)}
    return _save_npz(Path(trial_dir) / "groupsweep" / "predictions" / f"epoch_{epoch:04d}.npz", arrays)


def make_labels(val_y, val_s, test_y, test_s, n_classes: int = 2, n_spurious: int = 2) -> dict:
    """The trainable's labels dict from class and spurious labels (``g = y * n_spurious + s``)."""
    out = {"n_classes": n_classes, "n_spurious": n_spurious}
    for split, y, s in (("val", val_y, val_s), ("test", test_y, test_s)):
        y, s = np.asarray(y, dtype=np.int64), np.asarray(s, dtype=np.int64)
        out.update({f"{split}_y": y, f"{split}_s": s, f"{split}_g": y * n_spurious + s})
    return out


# The val split of ``write_study``'s trials (10 examples, 2 classes) and the biased (``none``) model's
# predictions on it (wrong on examples 4-7); the method at ``method_index`` k predicts the first k of
# those right, so its bias-unsupervised score grows with k.
STUDY_VAL_Y = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
STUDY_BIASED = [0, 0, 0, 0, 1, 1, 0, 0, 1, 1]


def study_value(metric: str, method_index: int, model_index: int, seed: int, epoch: int) -> float:
    """The value ``write_study`` reports for ``metric`` (``val/wga``, ``test/wga``, ...): distinct per
    method, model, seed and epoch; worst-group and worst-class accuracy rise with the method's index,
    average accuracy falls with it."""
    base = {"val/wga": 0.30, "val/wca": 0.50, "val/avg_acc": 0.70, "test/wga": 0.25, "test/avg_acc": 0.72,
            "test/wca": 0.45}[metric]
    slope = {"val/avg_acc": -0.03, "test/avg_acc": -0.02}.get(metric, 0.07)  # balancing costs average accuracy
    return round(base + slope * method_index + 0.04 * model_index + 0.01 * seed + 0.02 * epoch, 6)


def write_study(run_dir, datasets=("synthetic-waterbirds",), models=("toy-resnet-s",),
                methods=(("none", None), ("subsetting", None), ("upsampling", None), ("mixture", 2.0)),
                seeds=(1, 2), epochs: int = 3, incomplete: tuple = ()) -> list:
    """A grid sweep (datasets x models x methods x seeds) in Ray's layout under ``run_dir``, with labels and
    every epoch's val / test predictions (so every criterion, bias-unsupervised included, can be computed)
    and ``study_value`` metrics; a ``(dataset, model, method, ratio, seed)`` in ``incomplete`` reports
    one epoch fewer (a trial still running). Returns the configs written."""
    configs, index = [], 0
    labels = make_labels(STUDY_VAL_Y, [0] * 10, [0, 1, 0, 1], [0, 0, 1, 1])
    for dataset in datasets:
        for model_index, model in enumerate(models):
            for method_index, (method, ratio) in enumerate(methods):
                for seed in seeds:
                    config = trial_config(dataset, model, method, ratio, seed, epochs=epochs)
                    last = epochs - 1 if (dataset, model, method, ratio, seed) in incomplete else epochs
                    reports = [epoch_metrics(epoch, num_parameters=1000 * (model_index + 1), overrides={
                        key: study_value(key, method_index, model_index, seed, epoch)
                        for key in ("val/wga", "val/wca", "val/avg_acc", "test/wga", "test/avg_acc", "test/wca")})
                        for epoch in range(1, last + 1)]
                    val = [truth if 4 <= position < 4 + method_index else biased
                           for position, (truth, biased) in enumerate(zip(STUDY_VAL_Y, STUDY_BIASED))]
                    write_trial(run_dir, index, config, reports, labels=labels,
                                predictions={epoch: {"val": val, "test": [0, 1, 0, 1]} for epoch in range(1, last + 1)})
                    configs.append(config)
                    index += 1
    return configs


def _progress_csv(rows: list[dict]) -> str:
    """Ray's CSVLoggerCallback output: columns of the first report, ``config`` dropped."""
    if not rows:
        return ""
    buffer = io.StringIO()
    fields = [key for key in rows[0] if key != "config"]
    writer = csv.DictWriter(buffer, fields)
    writer.writeheader()
    for row in rows:
        writer.writerow({key: value for key, value in row.items() if key in fields})
    return buffer.getvalue()


def _save_npz(target: Path, arrays: dict) -> Path:
    """``np.savez`` to a temporary file beside ``target``, then ``os.replace`` (atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, target)
    return target
