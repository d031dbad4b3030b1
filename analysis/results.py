"""Load a sweep's results directory offline into one tidy table (no Ray cluster, no experiment state).

A results directory is Ray Tune's ``<storage>/<name>/``, a local path or a ``pyarrow.fs`` URI
(``file:///...``, ``s3://...``): one trial directory per trial, whose files ``trainables.trial_dir``
names and reads (this module spells no file name): the trial config (``PARAMS_FILE``), the reports
(``PROGRESS_FILE``, a CSV, and ``RESULT_FILE``, JSON lines; one row / line per epoch report), Ray's
``ERROR_FILE`` if the trial raised, and groupsweep's ``LABELS_FILE`` and ``predictions_file(epoch)``.
It may belong to a sweep that is still running.

Reports are read from the CSV: the files of trials whose CSV header is identical are parsed together, in
batches of ``PARSE_BATCH_BYTES`` per ``pandas.read_csv`` call, about ten times faster than parsing the JSON lines
(which repeat the whole config on every line). The CSV has two weaknesses, so every file is checked and a trial falls back to
its JSON lines when the check fails: Ray fixes its columns at the first report (a key first reported
later is dropped), and after a restore Ray appends rows without a header in the key order of the
first new report, which can shift columns. A shifted row shows up as a comma count that does not fit
the header (such files are parsed alone and strictly), a second ``trial_id`` value, or a non-number
in a metric column. A last line without its newline (a write cut short) is ignored in both files. A
trial whose files cannot be read is skipped with a ``CorruptTrialWarning`` naming it; the others
load. Epochs reported twice (a trial restored from a checkpoint repeats the epochs after it) keep the
last report.

Several sweep directories (``load_results([a, b])``, e.g. a hyperparameter search and the rerun of its
chosen configurations that ``groupsweep promote`` wrote) load as one table, with a ``sweep`` column
naming each trial's directory. A trial found in two of them (the same ``trial_name`` and an equal config)
is counted once, from the first directory given, and listed in ``problems``; trials of different
directories that share a Ray trial id get ``<sweep>/<trial id>`` as their id. A parent folder of sweep
directories (a ``--storage`` root, or any folder of sweeps) stands for the sweeps inside it.

A trial of a hyperparameter search (``sweeps.search``) names its cell, its configuration and the keys its
search sampled in its config (``trial_dir.CELL_KEY``, ``SAMPLE_KEY``, ``SAMPLED_KEY``): they give the
``cell``, ``config_id`` (``h03``) and ``hparams`` (``lr=0.00123, weight_decay=3.1e-05``) columns, and one
column per sampled key holding each trial's value. A search's ASHA scheduler marks the trials it stopped
before their last epoch (``trial_dir.STOPPED_FILE``): their status is ``stopped``. Grid trials have
``cell``, ``config_id`` and ``hparams`` empty.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
import uuid
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.fs

from trainables.balancing import group_info, method_label
from trainables.config import NON_TRAINING_FIELDS
from trainables.errors import GroupsweepError
from trainables.trial_dir import (CELL_KEY, ERROR_FILE, LABELS_FILE, METHOD_HPARAMS_KEY, PARAMS_FILE, PROGRESS_FILE,
                                  RESULT_FILE, SAMPLE_KEY, SAMPLED_KEY, STOPPED_FILE, TrialDir, UnreadableFile,
                                  file_type, is_directory, join_location, parse_npz, predictions_file, split_location,
                                  subdirectory_names, trial_dirs)

# Ray's bookkeeping keys that carry no information about the run's results.
RAY_DROPPED = ("config", "date", "pid", "hostname", "node_ip", "time_this_iter_s", "time_since_restore",
               "iterations_since_restore", "should_checkpoint", "done", "logdir")
# Ray's count of reports since the trial's last restore: below ``training_iteration`` in a restored run's rows.
RESTORE_COLUMN = "iterations_since_restore"
# Reported columns that must hold numbers (every metric key has a ``/``); others may hold text
# (e.g. the trainable's ``status`` and ``node_id``).
INDEX_COLUMNS = ("epoch", "training_iteration")
# Config keys that identify a trial's cell of the study, or that cannot change its results.
IDENTITY_KEYS = ("dataset", "model", "method", "ratio", "seed", "trial_name")
NEUTRAL_KEYS = ("data_root", "model_path", "num_threads", "channels_last", "compile_model", *NON_TRAINING_FIELDS)
# Trial-level columns placed first in ``SweepResults.frame``, in this order.
TRIAL_COLUMNS = ("trial_id", "trial_name", "dataset", "model", "num_parameters", "method", "ratio",
                 "method_label", "group_info", "seed", "variant", "epochs", "last_epoch", "status")
# Columns of every trial after ``TRIAL_COLUMNS`` (and, in ``frame``, after ``epoch``): the sweep directory's
# name, and a searched trial's cell, configuration id and sampled values (empty for grid trials).
SEARCH_COLUMNS = ("sweep", "cell", "config_id", "hparams")
STATUSES = ("complete", "stopped", "incomplete", "diverged", "error", "pending")
# The statuses of a trial that has nothing left to run.
ENDED = ("complete", "diverged")
# Reading many files (``read_in_threads``): reads probed in the calling thread, the mean wait per read beyond
# which the rest are read in threads (about what handing a read to a thread costs; a page-cached local read waits
# ~1 us, a network filesystem's or an SSD's 0.1 ms or more, an object store's milliseconds), the threads, and the
# results read ahead of their use.
READ_PROBE = 16
READ_WAIT_S = 0.0001
READ_THREADS = 8
READ_AHEAD = 64
# CSV text parsed per ``read_csv`` call while loading (``_parse_progress``): the parser needs several times it.
PARSE_BATCH_BYTES = 32 * 2**20
# Parsed ``.npz`` files (labels, predictions) kept in memory, the least recently used dropped first.
NPZ_CACHE_SIZE = 4096
_TRIAL_ID = re.compile(r"_([0-9a-f]{5}_\d{5})_")


class CorruptTrialWarning(UserWarning):
    """A trial directory whose files cannot be read; the trial is left out of the results."""


class MissingResultError(GroupsweepError):
    """A trial lacks a saved file (labels or predictions) that an analysis asked for."""


class _Unreadable(Exception):
    """Internal: why one trial's files cannot be read."""


@dataclass
class SweepResults:
    """Everything a sweep directory holds, as tables.

    ``frame``: one row per (trial, epoch) report, sorted by trial then epoch, with the columns of
    ``TRIAL_COLUMNS`` first and then every reported metric key (``val/wga``, ``test/acc_group_3``, ...),
    plus Ray's ``training_iteration``, ``timestamp``, ``time_total_s`` and ``checkpoint_dir_name``.
    ``trials``: one row per readable trial (also those with no report yet), indexed by ``trial_id``,
    with ``TRIAL_COLUMNS`` and ``path`` (the trial directory's location: a local path, or a URI when the
    sweep was loaded from one). ``run_dir``: the sweep directory (a resolved ``Path``; a URI string
    for a URI; the first one when several were loaded, all of them in ``run_dirs``). ``status`` is
    ``complete`` (reported epoch ``epochs``),
    ``diverged`` (the trainable's last report says ``status: diverged``; that row's epoch has no
    metrics), ``stopped`` (short of its epochs, stopped by a search's ASHA scheduler: ``STOPPED_FILE``),
    ``error`` (incomplete and Ray wrote its ``ERROR_FILE``), ``incomplete`` (still running or
    interrupted) or ``pending`` (no report yet). A reported key that is also a trial column (the
    trainable's per-report ``status``, or a key named like a sampled one) is renamed ``report_<key>``.
    ``variant`` names the config
    keys that differ between trials of one dataset besides model, method, ratio and seed (e.g.
    ``last_layer_only=true``); empty when there are none. Keys a search sampled for any trial of the
    dataset never make a variant (a sampled point is a configuration of its method, not a setting).
    Both tables also have ``SEARCH_COLUMNS`` (``sweep``: the name of the trial's sweep directory;
    ``cell``, ``config_id`` and ``hparams``: see the module docstring) and one column per sampled key
    (``lr``, ...; each trial's config value, also for trials that did not sample it), unless a trial
    column has that name already (``epochs``). ``configs`` maps trial_id to its full config (sampled
    values and the search's ``_`` keys included); ``problems`` lists the trials skipped as unreadable
    and the duplicates counted once.
    """

    run_dir: Path | str
    frame: pd.DataFrame
    trials: pd.DataFrame
    configs: dict
    problems: list = field(default_factory=list)
    run_dirs: tuple = ()

    def __post_init__(self):
        self._paths = dict(zip(self.trials.index, self.trials["path"]))
        # names this object's parsed files in the cache: a new ``load_results`` reads files rewritten since
        self._cache_key = uuid.uuid4().hex
        if not self.run_dirs:
            self.run_dirs = (self.run_dir,)

    @property
    def searched(self) -> bool:
        """Whether any trial belongs to a hyperparameter search (has a ``cell``)."""
        return bool((self.trials["cell"] != "").any())

    @property
    def sampled_keys(self) -> list:
        """The config keys that any searched trial sampled, sorted."""
        return sorted({key for config in self.configs.values() for key in sampled_keys(config)})

    @property
    def metric_keys(self) -> list:
        """The reported metric keys (every column with a ``/``, e.g. ``val/wga``)."""
        return [column for column in self.frame.columns if "/" in column]

    def trial_dir(self, trial_id: str) -> str:
        """The location of one trial's directory (the ``path`` column: a local path or a URI, as
        ``trainables.trial_dir.TrialDir`` takes it); ``GroupsweepError`` for an unknown trial id."""
        if trial_id not in self._paths:
            raise GroupsweepError(f"unknown trial {trial_id!r} in {self.run_dir}")
        return self._paths[trial_id]

    def labels(self, trial_id: str, keys=None, data: bytes | None = None) -> dict:
        """The trial's saved labels (``LABELS_FILE``): ``val_y, val_s, val_g, test_y, test_s, test_g``
        (int arrays), ``n_classes`` and ``n_spurious`` (ints); only ``keys`` when given (faster).
        Arrays are read-only (cached, unless parsed from ``data``: the file's bytes, ``read_files``).
        ``MissingResultError`` if not saved."""
        labels = dict(self._npz(self.trial_dir(trial_id), LABELS_FILE, None if keys is None else tuple(keys), data))
        for key in ("n_classes", "n_spurious"):
            if key in labels:
                labels[key] = int(labels[key])
        return labels

    def predictions(self, trial_id: str, epoch: int, splits=None, data: bytes | None = None) -> dict:
        """Predicted classes saved after ``epoch``: ``{"val": int16 array, "test": int16 array}``, or
        only ``splits`` (faster). Arrays are read-only (cached, unless parsed from ``data``: the file's
        bytes, ``read_files``). ``MissingResultError`` if the trial saved none for that epoch."""
        return dict(self._npz(self.trial_dir(trial_id), predictions_file(epoch),
                              None if splits is None else tuple(splits), data))

    def _npz(self, location: str, name: str, keys: tuple | None, data: bytes | None) -> dict:
        """The read-only arrays ``keys`` (default: all) of the ``.npz`` file ``name`` of the trial directory at
        ``location``: parsed from ``data`` (the file's bytes) when given, else read, and cached by location, name
        and keys for this object (``_cached_npz``); ``MissingResultError`` if it is missing, unreadable or lacks
        a key."""
        if data is None:
            return _cached_npz(self._cache_key, location, name, keys)
        return _read_npz(location, name, keys, data)

    def read_files(self, trial_id: str, names) -> list:
        """The bytes of each of the trial's files ``names`` (``LABELS_FILE``, ``predictions_file(epoch)``), for
        ``labels`` and ``predictions`` to parse: reading many files in threads (``read_in_threads``) pays where
        each read waits on a disk or the network, but parsing an ``.npz`` holds the GIL, so the threads should
        only read. ``MissingResultError`` if one cannot be read."""
        trial = TrialDir(self.trial_dir(trial_id))
        try:
            return [trial.read_bytes(name) for name in names]
        except UnreadableFile as error:
            raise MissingResultError(str(error)) from None

    def final_rows(self) -> pd.DataFrame:
        """The rows of complete trials at their last configured epoch (the paper's trained-to-completion models)."""
        frame = self.frame
        return frame[(frame["status"] == "complete") & (frame["epoch"] == frame["epochs"])]


def load_results(run_dirs) -> SweepResults:
    """Load the sweep directory ``run_dirs`` (finished or still running; a local path or a ``pyarrow.fs``
    URI), or a list of them as one table, into a ``SweepResults``. A parent folder of sweep directories
    stands for all of them (``sweep_dirs``).

    Raises a one-line ``GroupsweepError`` when a directory does not exist or holds no readable trial;
    unreadable trials are skipped with a ``CorruptTrialWarning`` (also listed in ``problems``). A trial
    found in two directories (same ``trial_name``, equal config) is counted once, from the directory where it
    reported the most epochs (the first given on a tie), with one line in ``problems``; a directory given
    twice is read once.
    """
    given = [run_dirs] if isinstance(run_dirs, (str, os.PathLike)) else list(run_dirs)
    if not given:
        raise GroupsweepError("no results directory given")
    locations = list(dict.fromkeys(sweep for run_dir in given for sweep in sweep_dirs(_resolve(run_dir))))
    problems: list = []
    configs: dict = {}
    sweeps: dict = {}
    copies: dict = {}  # trial_name -> the trials of that name, in the order given (``_one_copy_each``)
    for run_dir in locations:
        sweep = _sweep_name(run_dir)
        trials = _sweep_trials(run_dir)
        for trial, config in zip(trials, read_in_threads(_params_or_reason, trials)):
            if isinstance(config, _Unreadable):
                problems.append(_skip(trial, config))
                continue
            copies.setdefault(config.get("trial_name", trial.name), []).append(trial)
            configs[trial] = config
            sweeps[trial.location] = sweep
    order = list(configs)  # a trial's index here is its number: the ``_trial`` column of its reports
    tables, fallback = _parse_progress(order)
    for number in fallback:
        trial = order[number]
        try:
            table = _read_result_json(trial)
        except _Unreadable as reason:
            problems.append(_skip(trial, reason))
            del configs[trial]
            continue
        tables.append(table.assign(_trial=number))
    tables = _one_copy_each(copies, configs, order, tables, sweeps, problems)
    if not configs:
        where = locations[0] if len(locations) == 1 else ", ".join(map(str, locations))
        raise GroupsweepError(f"no readable trials in {where}: " + "; ".join(problems))
    return _assemble(locations, configs, order, tables, problems, sweeps)


def _one_copy_each(copies: dict, configs: dict, order: list, tables: list, sweeps: dict, problems: list) -> list:
    """Of a trial found in several directories (``copies``: the trials of each ``trial_name``; copies have an equal
    config too), keep the copy that reported the most epochs (the first given on a tie): drop the others from
    ``configs`` and from the reports ``tables`` (returned; their ``_trial`` column holds indices in ``order``), with
    one line in ``problems`` each."""
    named = [[trial for trial in trials if trial in configs] for trials in copies.values()]
    same = [group for trials in named if len(trials) > 1 for group in _equal_configs(trials, configs) if len(group) > 1]
    if not same:
        return tables
    numbers = {trial: number for number, trial in enumerate(order)}
    epochs = {}
    for table in tables:
        if len(table) and "epoch" in table:
            last = pd.to_numeric(table["epoch"], errors="coerce").groupby(table["_trial"]).max()
            epochs.update(last.fillna(0).astype(int).to_dict())
    dropped = set()
    for trials in same:
        reported = {trial: epochs.get(numbers[trial], 0) for trial in trials}
        kept = max(trials, key=reported.get)  # max keeps the first on a tie
        name = configs[kept].get("trial_name", kept.name)
        for trial in trials:
            if trial is not kept:
                problems.append(f"trial {name} is in both {sweeps[kept.location]} and {sweeps[trial.location]} "
                                f"with the same config; counted once, from {sweeps[kept.location]} (epochs "
                                f"reported: {reported[kept]} there, {reported[trial]} in {sweeps[trial.location]})")
                del configs[trial]
                dropped.add(numbers[trial])
    return [table[~table["_trial"].isin(dropped)] if "_trial" in table else table for table in tables]


def _equal_configs(trials: list, configs: dict) -> list:
    """``trials`` grouped by equal config (compared as JSON), each group in the order given."""
    groups: dict = {}
    for trial in trials:
        groups.setdefault(json.dumps(configs[trial], sort_keys=True), []).append(trial)
    return list(groups.values())


def ended_trials(run_dir) -> set[str]:
    """The ``trial_name`` of every trial of the sweep directory ``run_dir`` that ran to its end (status
    ``complete`` or ``diverged``: nothing more to run); an empty set when it holds no trial yet."""
    if not trial_dirs(run_dir):
        return set()
    trials = load_results(run_dir).trials
    return set(trials.loc[trials["status"].isin(ENDED), "trial_name"])


def sweep_dirs(run_dir) -> list:
    """The sweep directories ``run_dir`` (a local ``Path`` or a ``pyarrow.fs`` URI) stands for: itself when it
    holds trial directories, else every folder directly inside it that holds some (a parent folder of
    sweeps, such as a ``--storage`` root), sorted by name; itself when it holds neither (reading it then
    says why)."""
    if not is_directory(run_dir) or trial_dirs(run_dir):
        return [run_dir]
    nested = [join_location(run_dir, name) for name in subdirectory_names(run_dir)]
    nested = [location for location in nested if trial_dirs(location)]
    return [_resolve(location) for location in nested] or [run_dir]


def _resolve(run_dir):
    """A local sweep directory as a resolved ``Path``; a URI as its string."""
    run_dir = str(run_dir)
    return run_dir if "://" in run_dir else Path(run_dir).expanduser().resolve()


def _sweep_name(run_dir) -> str:
    """The name of a sweep directory (its last path component, without a URI's query)."""
    return split_location(run_dir)[1]


def _sweep_trials(run_dir) -> list:
    """The trial directories of ``run_dir``; a one-line ``GroupsweepError`` when it does not exist or holds
    none (naming the sweep directories inside it when it is a storage folder)."""
    kind = file_type(run_dir)
    if kind != pyarrow.fs.FileType.Directory:
        what = "is a file, not a folder" if kind == pyarrow.fs.FileType.File else "does not exist"
        raise GroupsweepError(f"results directory {run_dir} {what}")
    trials = trial_dirs(run_dir)
    if not trials:
        raise GroupsweepError(f"no trials in {run_dir} (expected Ray Tune trial directories with {PARAMS_FILE}, "
                              "or sweep directories holding them)")
    return trials


def sampled_keys(config: dict) -> list:
    """The keys a searched trial's config says its search sampled (``SAMPLED_KEY``); [] for a grid trial."""
    keys = config.get(SAMPLED_KEY) or []
    return [str(key) for key in keys] if isinstance(keys, list) else []


def method_keys(config: dict) -> list:
    """The keys a trial's method set with hparams of its own (``METHOD_HPARAMS_KEY``); [] when none."""
    keys = config.get(METHOD_HPARAMS_KEY) or []
    return [str(key) for key in keys] if isinstance(keys, list) else []


def _skip(trial: TrialDir, reason) -> str:
    """Warn that ``trial`` is skipped and return the message."""
    message = f"skipped unreadable trial {trial.name}: {reason}"
    warnings.warn(message, CorruptTrialWarning, stacklevel=3)
    return message


def read_in_threads(read, items: list):
    """``read(item)`` for each of ``items``, in order; an iterator, so each result can be used and dropped while
    later files are read. The first ``READ_PROBE`` reads run in the calling thread; if they waited (wall time
    beyond their CPU time: a disk, a network filesystem, an object store) more than ``READ_WAIT_S`` each on
    average, the rest run in ``READ_THREADS`` threads at once (a waiting read releases the GIL, so their waits
    overlap), at most ``READ_AHEAD`` + 1 items ahead of the caller, so memory holds a bounded number of results.
    Reads that do not wait (files in the page cache) stay in the calling thread: there, handing each read to a
    thread costs more than the read (the threads contend for the GIL)."""
    items = list(items)
    waited = 0.0
    for item in items[:READ_PROBE]:
        start, cpu = time.perf_counter(), time.thread_time()
        result = read(item)
        waited += (time.perf_counter() - start) - (time.thread_time() - cpu)
        yield result
    rest = items[READ_PROBE:]
    if not rest:
        return
    if waited <= READ_WAIT_S * READ_PROBE:
        yield from map(read, rest)
        return
    pool = ThreadPoolExecutor(max_workers=READ_THREADS)
    pending: deque = deque()
    try:
        for item in rest:
            pending.append(pool.submit(read, item))
            if len(pending) > READ_AHEAD:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # reads already running end on their own


def _params_or_reason(trial: TrialDir):
    """``_read_params(trial)``, or the ``_Unreadable`` saying why it cannot be read."""
    try:
        return _read_params(trial)
    except _Unreadable as reason:
        return reason


def _read_params(trial: TrialDir) -> dict:
    """The trial config (``TrialDir.params``); ``_Unreadable`` if it is missing, not a JSON object or
    not a groupsweep config."""
    try:
        config = trial.params()
    except UnreadableFile as error:
        raise _Unreadable(str(error)) from None
    if "method" not in config or "dataset" not in config:
        raise _Unreadable(f"{PARAMS_FILE} is not a groupsweep trial config (needs dataset and method)")
    return config


def _read_progress_bytes(trial: TrialDir):
    """``(header, body, n_rows)`` of the trial's CSV reports with any half-written last line cut; None if absent."""
    try:
        data = trial.read_bytes(PROGRESS_FILE)
    except UnreadableFile:
        return None
    end = data.rfind(b"\n")
    if end < 0:
        return None
    header_end = data.find(b"\n")
    header, body = data[:header_end].rstrip(b"\r"), data[header_end + 1: end + 1]
    return header, body, body.count(b"\n")


def _parse_progress(trials: list):
    """Parse the CSV reports (``PROGRESS_FILE``) of ``trials`` (``TrialDir``), one ``read_csv`` per batch of files
    with one header.

    Returns ``(tables, fallback)``: ``tables`` hold the reports of the trials whose files pass the checks, with a
    ``_trial`` column holding the trial's index in ``trials``; ``fallback`` lists (ascending) the indices of the
    trials whose CSV is absent or fails the checks (to be read from ``RESULT_FILE`` instead). Files whose comma
    count fits their header are gathered, as they are read, into batches of one header, each parsed together once
    it holds ``PARSE_BATCH_BYTES`` (or at the end), fast (``_parse_batch``); the others (a shifted row, or a quoted
    comma) are parsed one by one, strictly (``_parse_alone``). Files are read a bounded number ahead
    (``read_in_threads``) and a batch's text is dropped once parsed, so the text in memory is about a batch per
    header, not the sweep's.
    """
    batches: dict = {}
    grouped: dict = {}  # header -> its batches' tables; headers in the order first read (the frame's column order)
    alone, fallback = [], []

    def parse(batch: _CsvBatch) -> None:
        more_tables, more_fallback = _parse_batch(batch)
        grouped[batch.header] += more_tables
        fallback.extend(more_fallback)

    for number, parts in enumerate(read_in_threads(_read_progress_bytes, trials)):
        if parts is None:
            fallback.append(number)
            continue
        header, body, n_rows = parts
        if body.count(b",") != n_rows * header.count(b","):
            more_tables, more_fallback = _parse_each(header, [number], [body], [n_rows])
            alone += more_tables
            fallback += more_fallback
            continue
        if header not in batches:
            batches[header] = _CsvBatch(header)
            grouped.setdefault(header, [])
        batch = batches[header]
        batch.add(number, body, n_rows)
        if batch.size >= PARSE_BATCH_BYTES:
            parse(batches.pop(header))
    for batch in batches.values():
        parse(batch)
    return [table for tables in grouped.values() for table in tables] + alone, sorted(fallback)


@dataclass
class _CsvBatch:
    """The CSV reports of several trials whose files share ``header``: each file's rows (``bodies``, without the
    header), its trial's number and its row count."""

    header: bytes
    numbers: list = field(default_factory=list)
    bodies: list = field(default_factory=list)
    counts: list = field(default_factory=list)
    size: int = 0

    def add(self, number: int, body: bytes, n_rows: int) -> None:
        """Add one trial's rows."""
        self.numbers.append(number)
        self.bodies.append(body)
        self.counts.append(n_rows)
        self.size += len(body)

    def without(self, positions) -> _CsvBatch:
        """This batch without the files at ``positions`` (indices in ``numbers``)."""
        batch = _CsvBatch(self.header)
        for position, (number, body, n_rows) in enumerate(zip(self.numbers, self.bodies, self.counts)):
            if position not in positions:
                batch.add(number, body, n_rows)
        return batch


def _parse_batch(batch: _CsvBatch):
    """``(tables, fallback)`` for the files of ``batch``, whose comma counts fit their header: parsed together, and
    checked per file. Files that fail the checks go to ``fallback`` (their trials' numbers) and the others are
    parsed again without them, so that a bad file's text cannot change how the good files' columns are read;
    if the joint parse fails, each file is parsed alone, strictly."""
    fallback = []
    while batch.numbers:
        try:
            table = _read_csv(b"".join([batch.header, b"\n", *batch.bodies]), strict=False)
        except (ValueError, pd.errors.ParserError):
            table = None
        if table is None or len(table) != sum(batch.counts):
            tables, more_fallback = _parse_each(batch.header, batch.numbers, batch.bodies, batch.counts)
            return tables, fallback + more_fallback
        owner = np.repeat(np.arange(len(batch.numbers)), batch.counts)
        bad = _bad_files(table, owner)
        if not bad.size:
            table = table.drop(columns=[RESTORE_COLUMN], errors="ignore")
            table["_trial"] = np.array(batch.numbers, dtype=np.int64)[owner]
            return [table], fallback
        fallback += [batch.numbers[position] for position in bad]
        batch = batch.without(set(bad.tolist()))
    return [], fallback


def _parse_each(header: bytes, numbers: list, bodies: list, counts: list):
    """``(tables, fallback)`` for files of CSV reports under ``header``, each parsed alone, strictly
    (``_parse_alone``): the tables (with the ``_trial`` column: the file's number in ``numbers``) of the files that
    pass the checks, and the numbers of those that do not."""
    tables, fallback = [], []
    for number, body, n_rows in zip(numbers, bodies, counts):
        table = _parse_alone(header, body, n_rows)
        if table is None:
            fallback.append(number)
        else:
            tables.append(table.assign(_trial=number))
    return tables, fallback


def _parse_alone(header: bytes, body: bytes, n_rows: int):
    """One file's CSV reports parsed strictly, or None when they fail the checks."""
    try:
        table = _read_csv(header + b"\n" + body, strict=True)
    except (ValueError, pd.errors.ParserError):
        return None
    if len(table) != n_rows or _bad_files(table, np.zeros(len(table), int)).size:
        return None
    return table.drop(columns=[RESTORE_COLUMN], errors="ignore")


def _read_csv(data: bytes, strict: bool) -> pd.DataFrame:
    """Parse CSV reports (``data``: the header line, then rows), without Ray's bookkeeping columns but
    ``RESTORE_COLUMN`` (for ``_bad_files``; the callers drop it after). ``strict`` parses every column, so a
    row with surplus fields raises (with ``usecols`` pandas drops them silently)."""
    dropped = [name for name in RAY_DROPPED if name != RESTORE_COLUMN]
    end = data.find(b"\n")
    if end < 0 or end == len(data) - 1:  # no rows
        header = data if end < 0 else data[:end]
        return pd.DataFrame(columns=[name for name in header.decode().split(",") if name not in dropped])
    options = {"dtype": {"trial_id": str}, "low_memory": False}
    if not strict:
        options["usecols"] = lambda name: name not in dropped
    table = pd.read_csv(io.BytesIO(data), **options)
    return table.drop(columns=[name for name in dropped if name in table])


def _numeric(name: str) -> bool:
    """Whether a reported column must hold numbers: a metric key (has a ``/``), ``epoch`` or ``training_iteration``."""
    return "/" in name or name in INDEX_COLUMNS


def _bad_files(table: pd.DataFrame, owner: np.ndarray) -> np.ndarray:
    """Indices (values of ``owner``) of files whose rows are shifted, hold non-numbers in numeric columns, or
    come (in part) from a restored run (``RESTORE_COLUMN`` behind ``training_iteration``: Ray appends those rows
    without a header, in the key order of the first report after the restore, so their columns are not
    certain; ``result.json`` names every value)."""
    bad = np.zeros(len(table), dtype=bool)
    if RESTORE_COLUMN in table and "training_iteration" in table:
        restored = pd.to_numeric(table[RESTORE_COLUMN], errors="coerce")
        bad |= (restored != pd.to_numeric(table["training_iteration"], errors="coerce")).to_numpy()
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


def _read_result_json(trial: TrialDir) -> pd.DataFrame:
    """The trial's reports from its JSON lines (``RESULT_FILE``), without a half-written last line."""
    if not trial.exists(RESULT_FILE):
        return pd.DataFrame()  # a trial that has not reported yet
    try:
        text = trial.read_bytes(RESULT_FILE).decode()
    except (UnreadableFile, UnicodeDecodeError) as error:
        raise _Unreadable(f"{PROGRESS_FILE} is unusable and {RESULT_FILE} cannot be read ({error})") from None
    lines = text.split("\n")[:-1]  # the text after the last newline is empty or a line cut short
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
        except ValueError:
            raise _Unreadable(f"{RESULT_FILE} line {number} is not JSON") from None
        if not isinstance(row, dict):
            raise _Unreadable(f"{RESULT_FILE} line {number} is not a JSON object")
        for key in RAY_DROPPED:
            row.pop(key, None)
        rows.append(row)
    table = pd.DataFrame(rows)
    for name in table.columns:
        if _numeric(name) and not pd.api.types.is_numeric_dtype(table[name].dtype):
            converted = pd.to_numeric(table[name], errors="coerce")
            if (converted.isna() & table[name].notna()).any():
                raise _Unreadable(f"{RESULT_FILE} has a non-numeric value in column {name!r}")
            table[name] = converted
    return table


def _assemble(run_dirs: list, configs: dict, order: list, tables: list, problems: list, sweeps: dict) -> SweepResults:
    """Join the reports (tables with a ``_trial`` column: indices in ``order``) with the trial configs
    (``TrialDir`` -> config; ``order`` lists these trials and those dropped since) into ``SweepResults``;
    ``sweeps`` maps a trial location to its sweep's name."""
    tables = [table for table in tables if len(table)]
    config_list = list(configs.values())
    sampled = sorted({key for config in config_list for key in sampled_keys(config)} - set(TRIAL_COLUMNS))
    renamed = [c for c in (*TRIAL_COLUMNS, *SEARCH_COLUMNS, *sampled) if c != "trial_id"]
    last_epoch, last_status, ray_ids, num_parameters = {}, {}, {}, {}
    if tables:
        reports = _text_columns_as_text(pd.concat(tables, ignore_index=True))
        if "epoch" not in reports:
            reports["epoch"] = reports["training_iteration"]
        reports["epoch"] = reports["epoch"].astype(np.int64)
        reports = reports.drop_duplicates(["_trial", "epoch"], keep="last")
        reports = reports.rename(columns={c: f"report_{c}" for c in renamed if c in reports})
        by_trial = reports.groupby("_trial", sort=False)
        last_epoch = by_trial["epoch"].max().to_dict()
        if "report_status" in reports:
            last_status = by_trial["report_status"].last().to_dict()
        if "trial_id" in reports:
            ray_ids = by_trial["trial_id"].last().to_dict()
        if "model/num_parameters" in reports:
            num_parameters = by_trial["model/num_parameters"].last().to_dict()
    else:
        reports = pd.DataFrame({"_trial": pd.Series(dtype=np.int64), "epoch": pd.Series(dtype=np.int64)})

    numbers = [number for number, trial in enumerate(order) if trial in configs]
    rows = [_trial_row(order[number], configs[order[number]], _trial_id(order[number], ray_ids.get(number)),
                       int(last_epoch.get(number, 0)), float(num_parameters.get(number, np.nan)),
                       last_status.get(number) == "diverged") for number in numbers]
    _unique_ids(rows, [sweeps[trial.location] for trial in configs])
    trials = pd.DataFrame(rows).set_index("trial_id", drop=False)
    trials.index.name = None
    trials["variant"] = _variants(trials["dataset"], config_list)
    search = _search_columns(config_list)
    for name in SEARCH_COLUMNS:
        trials[name] = [sweeps[trial.location] for trial in configs] if name == "sweep" else search[name]
    for key in sampled:
        trials[key] = [config.get(key) for config in config_list]

    # each report's row in ``trials`` (the join on the trial, inner: reports of a trial not kept are dropped)
    row_of = np.full(len(order), -1, dtype=np.int64)
    row_of[numbers] = np.arange(len(numbers))
    where = row_of[reports["_trial"].to_numpy()]
    kept = where >= 0
    reports = reports[kept].drop(columns=["_trial", "trial_id"], errors="ignore").reset_index(drop=True)
    leading = list(TRIAL_COLUMNS) + ["epoch"] + list(SEARCH_COLUMNS) + sampled
    frame = pd.concat([trials[[c for c in leading if c != "epoch"]].iloc[where[kept]].reset_index(drop=True),
                       reports], axis=1)
    frame = frame[leading + [c for c in frame.columns if c not in leading]]
    frame = frame.sort_values(["trial_id", "epoch"], kind="stable", ignore_index=True)
    by_location = {trial.location: config for trial, config in configs.items()}
    by_id = {trial_id: by_location[path] for trial_id, path in zip(trials.index, trials["path"])}
    return SweepResults(run_dir=run_dirs[0], frame=frame, trials=trials, configs=by_id, problems=problems,
                        run_dirs=tuple(run_dirs))


def _text_columns_as_text(reports: pd.DataFrame) -> pd.DataFrame:
    """``reports`` with each column that holds only text and missing values as text (``str``). Batches of files
    parsed apart (``_parse_progress``) read a text column that one batch never filled as numbers (NaN); joined,
    such a column holds objects, which the text of one parse would not."""
    for name in reports.columns:
        if reports[name].dtype == object and pd.api.types.infer_dtype(reports[name], skipna=True) == "string":
            reports[name] = reports[name].astype("str")
    return reports


def _unique_ids(rows: list, sweeps: list) -> None:
    """Make the rows' trial ids unique: a Ray id already taken by a trial of another sweep directory
    becomes ``<sweep>/<id>`` (in place)."""
    taken = set()
    for row, sweep in zip(rows, sweeps):
        if row["trial_id"] in taken:
            row["trial_id"] = f"{sweep}/{row['trial_id']}"
        taken.add(row["trial_id"])


def _search_columns(configs: list) -> dict:
    """``cell``, ``config_id`` and ``hparams`` per trial (empty strings for grid trials). ``config_id`` is
    ``h`` and the configuration's index in its cell, zero-padded as the trial names are: to at least two
    digits, and to the width of the cell's largest index."""
    cells = [str(config.get(CELL_KEY) or "") for config in configs]
    samples = [config.get(SAMPLE_KEY) for config in configs]
    widths: dict = {}
    for cell, sample in zip(cells, samples):
        if cell and isinstance(sample, int):
            widths[cell] = max(widths.get(cell, 2), len(str(sample)))
    config_ids = [f"h{sample:0{widths[cell]}d}" if cell and isinstance(sample, int) else ""
                  for cell, sample in zip(cells, samples)]
    hparams = [", ".join(f"{key}={format_value(config.get(key))}" for key in sampled_keys(config)) if cell else ""
               for cell, config in zip(cells, configs)]
    return {"cell": cells, "config_id": config_ids, "hparams": hparams}


def format_value(value) -> str:
    """A config value for reading: floats with 3 significant digits (``0.00123``, ``3.1e-05``), strings as
    they are, anything else as JSON (``true``, ``[1, 2]``)."""
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def _trial_id(trial: TrialDir, ray_id) -> str:
    """Ray's trial id: as reported, else from the directory name, else the directory name."""
    if isinstance(ray_id, str) and ray_id:
        return ray_id
    match = _TRIAL_ID.search(trial.name)
    return match.group(1) if match else trial.name


def _trial_row(trial: TrialDir, config: dict, trial_id: str, last_epoch: int, num_parameters: float,
               diverged: bool) -> dict:
    """One row of ``SweepResults.trials``."""
    ratio = config.get("ratio")
    ratio = float("nan") if ratio is None else float(ratio)
    epochs = int(config["epochs"]) if config.get("epochs") is not None else -1
    if last_epoch == 0:
        status = "error" if trial.exists(ERROR_FILE) else "pending"  # failed before its first report, or not begun
    elif diverged:
        status = "diverged"
    elif epochs > 0 and last_epoch >= epochs:
        status = "complete"
    elif trial.exists(STOPPED_FILE):
        status = "stopped"
    elif trial.exists(ERROR_FILE):
        status = "error"
    else:
        status = "incomplete"
    return {
        "trial_id": trial_id, "trial_name": config.get("trial_name", trial.name),
        "dataset": config["dataset"], "model": config.get("model"), "num_parameters": num_parameters,
        "method": config["method"], "ratio": ratio, "method_label": method_label(config["method"], ratio),
        "group_info": group_info(config["method"], config) or "", "seed": int(config.get("seed", 0)), "variant": "",
        "epochs": epochs,
        "last_epoch": last_epoch, "status": status, "path": trial.location,
    }


def _variants(datasets: pd.Series, configs: list) -> list:
    """Per trial, ``key=value`` pairs of the config keys that vary among the trials of its dataset
    (ignoring ``IDENTITY_KEYS``, ``NEUTRAL_KEYS``, keys starting with ``_``, every key that a search
    sampled for any trial of the dataset: a sampled point is one of its method's configurations, and the
    reruns of chosen configurations group with their search; and every key a method set with hparams of
    its own, which is part of that method, as in a promoted rerun)."""
    out = [""] * len(configs)
    for dataset in datasets.unique():
        members = np.flatnonzero(datasets.to_numpy() == dataset)
        keys = sorted({key for i in members for key in configs[i]})
        searched = {key for i in members for key in sampled_keys(configs[i]) + method_keys(configs[i])}
        varying = []
        for key in keys:
            if key in IDENTITY_KEYS or key in NEUTRAL_KEYS or key.startswith("_") or key in searched:
                continue
            values = {_json_key(configs[i].get(key)) for i in members}
            if len(values) > 1:
                varying.append(key)
        for i in members:
            out[i] = ",".join(f"{key}={json.dumps(configs[i].get(key), sort_keys=True)}" for key in varying)
    return out


def _json_key(value):
    """A hashable stand-in for a config value, equal for two values exactly when their JSON is equal: a number
    or string with its type (``1``, ``1.0`` and ``true`` differ, as in JSON; a float by its ``repr``, which is its
    JSON, so NaN equals NaN); anything else its JSON."""
    if isinstance(value, float):
        return float, repr(value)
    if value is None or isinstance(value, (str, int)):
        return type(value), value
    return json.dumps(value, sort_keys=True)


def _read_npz(location: str, name: str, keys: tuple | None, data: bytes | None = None) -> dict:
    """``SweepResults._npz`` without the cache."""
    try:
        if data is None:
            arrays = TrialDir(location).read_npz(name, keys)
        else:
            arrays = parse_npz(data, keys, f"{location}/{name}")
    except UnreadableFile as error:
        raise MissingResultError(str(error)) from None
    for array in arrays.values():
        array.flags.writeable = False
    return arrays


@lru_cache(maxsize=NPZ_CACHE_SIZE)
def _cached_npz(cache_key: str, location: str, name: str, keys: tuple | None) -> dict:
    """``_read_npz``, cached per ``SweepResults`` (``cache_key``: its ``_cache_key``): the same sweep loaded again
    reads its files again, which a rerun may have rewritten."""
    return _read_npz(location, name, keys)
