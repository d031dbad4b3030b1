"""Load a sweep's results directory offline into one tidy table (no Ray cluster, no experiment state).

A results directory is Ray Tune's ``<storage>/<name>/``: one sub-directory per trial holding Ray's
``params.json`` (the trial config), ``progress.csv`` and ``result.json`` (one row / line per epoch
report), ``error.txt`` if the trial raised, and groupsweep's ``groupsweep/labels.npz`` and
``groupsweep/predictions/epoch_XXXX.npz``. It may belong to a sweep that is still running.

Reports are read from ``progress.csv``: all trials whose CSV header is identical are parsed in one
``pandas.read_csv`` call, about ten times faster than parsing ``result.json`` (which repeats the whole
config on every line). ``progress.csv`` has two weaknesses, so every file is checked and a trial
falls back to its ``result.json`` when the check fails: Ray fixes its columns at the first report (a
key first reported later is dropped), and after a restore Ray appends rows without a header in the
key order of the first new report, which can shift columns. A shifted row shows up as a comma count
that does not fit the header (such files are parsed alone and strictly), a second ``trial_id``
value, or a non-number in a metric column. A last line without its newline (a write cut
short) is ignored in both files. A trial whose files cannot be read is skipped with a
``CorruptTrialWarning`` naming it; the others load. Epochs reported twice (a trial restored from a
checkpoint repeats the epochs after it) keep the last report.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from trainables.errors import GroupsweepError

# Ray's bookkeeping keys that carry no information about the run's results.
RAY_DROPPED = ("config", "date", "pid", "hostname", "node_ip", "time_this_iter_s", "time_since_restore",
               "iterations_since_restore", "should_checkpoint", "done", "logdir")
# Reported columns that must hold numbers (every metric key has a ``/``); others may hold text
# (e.g. the trainable's ``status`` and ``node_id``).
INDEX_COLUMNS = ("epoch", "training_iteration")
# Config keys that identify a trial's cell of the study, or that cannot change its results.
IDENTITY_KEYS = ("dataset", "model", "method", "ratio", "seed", "trial_name")
NEUTRAL_KEYS = ("data_root", "model_path", "num_threads", "eval_batch_size")
# Trial-level columns placed first in ``SweepResults.frame``, in this order.
TRIAL_COLUMNS = ("trial_id", "trial_name", "dataset", "model", "num_parameters", "method", "ratio",
                 "method_label", "seed", "variant", "epochs", "last_epoch", "status")
STATUSES = ("complete", "incomplete", "diverged", "error", "pending")
_TRIAL_ID = re.compile(r"_([0-9a-f]{5}_\d{5})_")


class CorruptTrialWarning(UserWarning):
    """A trial directory whose files cannot be read; the trial is left out of the results."""


class MissingResultError(GroupsweepError):
    """A trial lacks a saved file (labels or predictions) that an analysis asked for."""


class _Unreadable(Exception):
    """Internal: why one trial's files cannot be read."""


def method_label(method: str, ratio) -> str:
    """Display name of a balancing method: ``"upsampling"``, or ``"mixture 2:1"`` with its ratio."""
    if ratio is None or (isinstance(ratio, float) and math.isnan(ratio)):
        return str(method)
    return f"{method} {float(ratio):g}:1"


@dataclass
class SweepResults:
    """Everything a sweep directory holds, as tables.

    ``frame``: one row per (trial, epoch) report, sorted by trial then epoch, with the columns of
    ``TRIAL_COLUMNS`` first and then every reported metric key (``val/wga``, ``test/acc_group_3``, ...),
    plus Ray's ``training_iteration``, ``timestamp``, ``time_total_s`` and ``checkpoint_dir_name``.
    ``trials``: one row per readable trial (also those with no report yet), indexed by ``trial_id``,
    with ``TRIAL_COLUMNS`` and ``path``. ``status`` is ``complete`` (reported epoch ``epochs``),
    ``diverged`` (the trainable's last report says ``status: diverged``; that row's epoch has no
    metrics), ``error`` (incomplete and Ray wrote ``error.txt``), ``incomplete`` (still running or
    interrupted) or ``pending`` (no report yet). A reported key that is also a trial column (the
    trainable's per-report ``status``) is renamed ``report_<key>``. ``variant`` names the config
    keys that differ between trials of one dataset besides model, method, ratio and seed (e.g.
    ``last_layer_only=true``); empty when there are none. ``configs`` maps trial_id to its full config; ``problems`` lists the
    trials skipped as unreadable.
    """

    run_dir: Path
    frame: pd.DataFrame
    trials: pd.DataFrame
    configs: dict
    problems: list = field(default_factory=list)

    def __post_init__(self):
        self._paths = dict(zip(self.trials.index, self.trials["path"]))

    @property
    def metric_keys(self) -> list:
        """The reported metric keys (every column with a ``/``, e.g. ``val/wga``)."""
        return [column for column in self.frame.columns if "/" in column]

    def trial_dir(self, trial_id: str) -> Path:
        """The directory of one trial; ``GroupsweepError`` for an unknown trial id."""
        if trial_id not in self._paths:
            raise GroupsweepError(f"unknown trial {trial_id!r} in {self.run_dir}")
        return Path(self._paths[trial_id])

    def labels(self, trial_id: str, keys=None) -> dict:
        """The trial's ``groupsweep/labels.npz``: ``val_y, val_s, val_g, test_y, test_s, test_g`` (int
        arrays), ``n_classes`` and ``n_spurious`` (ints); only ``keys`` when given (faster).
        Arrays are read-only (cached). ``MissingResultError`` if not saved."""
        path = self.trial_dir(trial_id) / "groupsweep" / "labels.npz"
        labels = dict(_load_npz(str(path), None if keys is None else tuple(keys)))
        for key in ("n_classes", "n_spurious"):
            if key in labels:
                labels[key] = int(labels[key])
        return labels

    def predictions(self, trial_id: str, epoch: int, splits=None) -> dict:
        """Predicted classes saved after ``epoch``: ``{"val": int16 array, "test": int16 array}``, or
        only ``splits`` (faster). Arrays are read-only (cached). ``MissingResultError`` if the trial
        saved none for that epoch."""
        path = self.trial_dir(trial_id) / "groupsweep" / "predictions" / f"epoch_{int(epoch):04d}.npz"
        return dict(_load_npz(str(path), None if splits is None else tuple(splits)))

    def final_rows(self) -> pd.DataFrame:
        """The rows of complete trials at their last configured epoch (the paper's trained-to-completion models)."""
        frame = self.frame
        return frame[(frame["status"] == "complete") & (frame["epoch"] == frame["epochs"])]


def load_results(run_dir) -> SweepResults:
    """Load the sweep directory ``run_dir`` (finished or still running) into a ``SweepResults``.

    Raises a one-line ``GroupsweepError`` when ``run_dir`` does not exist or holds no readable trial;
    unreadable trials are skipped with a ``CorruptTrialWarning`` (also listed in ``problems``).
    """
    run_dir = Path(run_dir).expanduser().resolve()
    if not run_dir.is_dir():
        raise GroupsweepError(f"results directory {run_dir} does not exist")
    trial_dirs = _trial_dirs(run_dir)
    if not trial_dirs:
        nested = sorted(path.name for path in run_dir.iterdir() if path.is_dir() and _trial_dirs(path))
        hint = f"; it holds sweep directories, pass one of: {', '.join(nested)}" if nested else ""
        raise GroupsweepError(f"no trials in {run_dir} (expected Ray Tune trial directories with params.json){hint}")

    problems: list = []
    configs: dict = {}
    for path in trial_dirs:
        try:
            configs[path] = _read_params(path)
        except _Unreadable as reason:
            problems.append(_skip(path, reason))
    tables, fallback = _parse_progress(configs)
    for path in fallback:
        try:
            table = _read_result_json(path)
        except _Unreadable as reason:
            problems.append(_skip(path, reason))
            del configs[path]
            continue
        tables.append(table.assign(_path=str(path)))
    if not configs:
        raise GroupsweepError(f"no readable trials in {run_dir}: " + "; ".join(problems))
    return _assemble(run_dir, configs, tables, problems)


def _skip(path: Path, reason) -> str:
    """Warn that the trial at ``path`` is skipped and return the message."""
    message = f"skipped unreadable trial {path.name}: {reason}"
    warnings.warn(message, CorruptTrialWarning, stacklevel=3)
    return message


def _trial_dirs(run_dir: Path) -> list:
    """Sub-directories of ``run_dir`` that are Ray trial directories (have params.json or result.json)."""
    out = []
    for entry in sorted(os.scandir(run_dir), key=lambda entry: entry.name):
        if entry.is_dir() and (os.path.exists(os.path.join(entry.path, "params.json"))
                               or os.path.exists(os.path.join(entry.path, "result.json"))):
            out.append(Path(entry.path))
    return out


def _read_params(path: Path) -> dict:
    """The trial config from ``params.json``; ``_Unreadable`` if it is missing or not a JSON object."""
    try:
        config = json.loads((path / "params.json").read_text())
    except (OSError, ValueError) as error:
        raise _Unreadable(f"params.json cannot be read ({type(error).__name__}: {error})") from None
    if not isinstance(config, dict) or "method" not in config or "dataset" not in config:
        raise _Unreadable("params.json is not a groupsweep trial config (needs dataset and method)")
    return config


def _read_progress_bytes(path: Path):
    """``(header, body, n_rows)`` of progress.csv with any half-written last line cut; None if absent."""
    try:
        data = (path / "progress.csv").read_bytes()
    except OSError:
        return None
    end = data.rfind(b"\n")
    if end < 0:
        return None
    header_end = data.find(b"\n")
    header, body = data[:header_end].rstrip(b"\r"), data[header_end + 1: end + 1]
    return header, body, body.count(b"\n")


def _parse_progress(configs: dict):
    """Parse the trials' progress.csv files, one ``read_csv`` per distinct header.

    Returns ``(tables, fallback)``: ``tables`` hold the reports of the trials whose files pass the
    checks, with a ``_path`` column naming the trial directory; ``fallback`` lists the trials whose
    progress.csv is absent or fails the checks (to be read from result.json instead).
    """
    tables, fallback, groups = [], [], {}
    for path in configs:
        parts = _read_progress_bytes(path)
        if parts is None:
            fallback.append(path)
        else:
            groups.setdefault(parts[0], []).append((path, parts[1], parts[2]))
    for header, group in groups.items():
        more_tables, more_fallback = _parse_group(header, group)
        tables += more_tables
        fallback += more_fallback
    return tables, fallback


def _parse_group(header: bytes, group: list):
    """``(tables, fallback)`` for the progress.csv files sharing ``header``; ``group`` holds
    ``(path, body, n_rows)``. Files whose comma count fits the header are parsed together, fast;
    the others (a shifted row, or a quoted comma) and, if the joint parse fails, all are parsed one
    by one, strictly."""
    commas = header.count(b",")
    regular = [member for member in group if member[1].count(b",") == member[2] * commas]
    one_by_one = [member for member in group if member[1].count(b",") != member[2] * commas]
    tables, fallback = [], []
    if regular:
        counts = np.array([n_rows for _, _, n_rows in regular])
        try:
            table = _read_csv(header, b"".join(body for _, body, _ in regular), strict=False)
        except (ValueError, pd.errors.ParserError):
            table = None
        if table is None or len(table) != counts.sum():
            one_by_one += regular
        else:
            owner = np.repeat(np.arange(len(regular)), counts)
            bad = _bad_files(table, owner)
            keep = ~np.isin(owner, bad)
            paths = np.array([str(path) for path, _, _ in regular], dtype=object)
            tables.append(table[keep].assign(_path=paths[owner[keep]]))
            fallback += [regular[number][0] for number in bad]
    for path, body, n_rows in one_by_one:
        try:
            table = _read_csv(header, body, strict=True)
        except (ValueError, pd.errors.ParserError):
            table = None
        if table is None or len(table) != n_rows or _bad_files(table, np.zeros(len(table), int)).size:
            fallback.append(path)
        else:
            tables.append(table.assign(_path=str(path)))
    return tables, fallback


def _read_csv(header: bytes, body: bytes, strict: bool) -> pd.DataFrame:
    """Parse progress.csv rows under ``header``, without Ray's bookkeeping columns. ``strict`` parses
    every column, so a row with surplus fields raises (with ``usecols`` pandas drops them silently)."""
    if not body:
        return pd.DataFrame(columns=[name for name in header.decode().split(",") if name not in RAY_DROPPED])
    options = {"dtype": {"trial_id": str}, "low_memory": False}
    if not strict:
        options["usecols"] = lambda name: name not in RAY_DROPPED
    table = pd.read_csv(io.BytesIO(header + b"\n" + body), **options)
    return table.drop(columns=[name for name in RAY_DROPPED if name in table])


def _numeric(name: str) -> bool:
    """Whether a reported column must hold numbers: a metric key (has a ``/``), ``epoch`` or ``training_iteration``."""
    return "/" in name or name in INDEX_COLUMNS


def _bad_files(table: pd.DataFrame, owner: np.ndarray) -> np.ndarray:
    """Indices (values of ``owner``) of files whose rows are shifted or hold non-numbers in numeric columns."""
    bad = np.zeros(len(table), dtype=bool)
    if "trial_id" in table:
        ids = table["trial_id"].to_numpy(dtype=object)
        per_file = pd.Series(ids).groupby(owner).transform("nunique").to_numpy()
        bad |= (per_file != 1) | pd.isna(ids)
    for name in table.columns:
        if not _numeric(name) or pd.api.types.is_numeric_dtype(table[name].dtype):
            continue
        column = table[name]
        bad |= (pd.to_numeric(column, errors="coerce").isna() & column.notna()).to_numpy()
    return np.unique(owner[bad])


def _read_result_json(path: Path) -> pd.DataFrame:
    """The trial's reports from result.json (JSON lines), without a half-written last line."""
    if not (path / "result.json").exists():
        return pd.DataFrame()  # a trial that has not reported yet
    try:
        text = (path / "result.json").read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise _Unreadable(f"progress.csv is unusable and result.json cannot be read ({error})") from None
    lines = text.split("\n")[:-1]  # the text after the last newline is empty or a line cut short
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
        except ValueError:
            raise _Unreadable(f"result.json line {number} is not JSON") from None
        if not isinstance(row, dict):
            raise _Unreadable(f"result.json line {number} is not a JSON object")
        for key in RAY_DROPPED:
            row.pop(key, None)
        rows.append(row)
    table = pd.DataFrame(rows)
    for name in table.columns:
        if _numeric(name) and not pd.api.types.is_numeric_dtype(table[name].dtype):
            converted = pd.to_numeric(table[name], errors="coerce")
            if (converted.isna() & table[name].notna()).any():
                raise _Unreadable(f"result.json has a non-numeric value in column {name!r}")
            table[name] = converted
    return table


def _assemble(run_dir: Path, configs: dict, tables: list, problems: list) -> SweepResults:
    """Join the reports (tables with a ``_path`` column) with the trial configs into ``SweepResults``."""
    tables = [table for table in tables if len(table)]
    if tables:
        reports = pd.concat(tables, ignore_index=True)
        if "epoch" not in reports:
            reports["epoch"] = reports["training_iteration"]
        reports["epoch"] = reports["epoch"].astype(np.int64)
        reports = reports.drop_duplicates(["_path", "epoch"], keep="last")
        reports = reports.rename(columns={c: f"report_{c}" for c in TRIAL_COLUMNS if c in reports and c != "trial_id"})
        by_path = reports.groupby("_path", sort=False)
        last_epoch = by_path["epoch"].max()
        last_status = by_path["report_status"].last() if "report_status" in reports else pd.Series(dtype=object)
        ray_ids = by_path["trial_id"].last() if "trial_id" in reports else pd.Series(dtype=object)
        num_parameters = (by_path["model/num_parameters"].last() if "model/num_parameters" in reports
                          else pd.Series(dtype=float))
    else:
        reports = pd.DataFrame({"_path": pd.Series(dtype=object), "epoch": pd.Series(dtype=np.int64)})
        last_epoch = ray_ids = num_parameters = last_status = pd.Series(dtype=object)

    rows = []
    for path, config in configs.items():
        key = str(path)
        rows.append(_trial_row(path, config, _trial_id(path, ray_ids.get(key)), int(last_epoch.get(key, 0)),
                               float(num_parameters.get(key, np.nan)), last_status.get(key) == "diverged"))
    trials = pd.DataFrame(rows).set_index("trial_id", drop=False)
    trials.index.name = None
    trials["variant"] = _variants(trials["dataset"], list(configs.values()))

    columns = [c for c in TRIAL_COLUMNS if c != "trial_id"]
    reports = reports.drop(columns=["trial_id"], errors="ignore")
    frame = trials[["path", *columns]].merge(reports, left_on="path", right_on="_path", how="inner")
    frame.insert(0, "trial_id", frame.pop("path").map(dict(zip(trials["path"], trials.index))))
    frame = frame.drop(columns=["_path"])
    leading = list(TRIAL_COLUMNS) + ["epoch"]
    frame = frame[leading + [c for c in frame.columns if c not in leading]]
    frame = frame.sort_values(["trial_id", "epoch"], kind="stable", ignore_index=True)
    by_id = {trial_id: configs[Path(path)] for trial_id, path in zip(trials.index, trials["path"])}
    return SweepResults(run_dir=run_dir, frame=frame, trials=trials, configs=by_id, problems=problems)


def _trial_id(path: Path, ray_id) -> str:
    """Ray's trial id: as reported, else from the directory name, else the directory name."""
    if isinstance(ray_id, str) and ray_id:
        return ray_id
    match = _TRIAL_ID.search(path.name)
    return match.group(1) if match else path.name


def _trial_row(path: Path, config: dict, trial_id: str, last_epoch: int, num_parameters: float,
               diverged: bool) -> dict:
    """One row of ``SweepResults.trials``."""
    ratio = config.get("ratio")
    ratio = float("nan") if ratio is None else float(ratio)
    epochs = int(config["epochs"]) if config.get("epochs") is not None else -1
    if last_epoch == 0:
        status = "pending"
    elif diverged:
        status = "diverged"
    elif epochs > 0 and last_epoch >= epochs:
        status = "complete"
    elif (path / "error.txt").exists():
        status = "error"
    else:
        status = "incomplete"
    return {
        "trial_id": trial_id, "trial_name": config.get("trial_name", path.name),
        "dataset": config["dataset"], "model": config.get("model"), "num_parameters": num_parameters,
        "method": config["method"], "ratio": ratio, "method_label": method_label(config["method"], ratio),
        "seed": int(config.get("seed", 0)), "variant": "", "epochs": epochs,
        "last_epoch": last_epoch, "status": status, "path": str(path),
    }


def _variants(datasets: pd.Series, configs: list) -> list:
    """Per trial, ``key=value`` pairs of the config keys that vary among the trials of its dataset
    (ignoring ``IDENTITY_KEYS``, ``NEUTRAL_KEYS`` and keys starting with ``_``)."""
    out = [""] * len(configs)
    for dataset in datasets.unique():
        members = np.flatnonzero(datasets.to_numpy() == dataset)
        keys = sorted({key for i in members for key in configs[i]})
        varying = []
        for key in keys:
            if key in IDENTITY_KEYS or key in NEUTRAL_KEYS or key.startswith("_"):
                continue
            values = {json.dumps(configs[i].get(key), sort_keys=True) for i in members}
            if len(values) > 1:
                varying.append(key)
        for i in members:
            out[i] = ",".join(f"{key}={json.dumps(configs[i].get(key), sort_keys=True)}" for key in varying)
    return out


@lru_cache(maxsize=4096)
def _load_npz(path: str, keys: tuple | None = None) -> dict:
    """The arrays ``keys`` (default: all) of one ``.npz`` file, read-only as they are cached;
    ``MissingResultError`` if the file is missing, unreadable or lacks a key."""
    try:
        with np.load(path) as data:
            arrays = {key: data[key] for key in (data.files if keys is None else keys)}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise MissingResultError(f"cannot read {path} ({type(error).__name__}: {error})") from None
    for array in arrays.values():
        array.flags.writeable = False
    return arrays
