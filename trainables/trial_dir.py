"""The trial directory: every name in it, and the one way to read and write it.

A sweep directory ``<storage>/<sweep name>/`` holds one directory per trial, named by its
``trial_name``. This module is the only place that spells a file name inside it; the trainable writes
through it, and D3M, results loading and feature extraction read through it. Like DomainBed's
``results.jsonl``, each trial directory describes itself: its config is in ``params.json``, so analysis
needs no training code to read it.

``<trial_name>/``

- ``params.json`` (Ray Tune): the trial config, flat ``TrainConfig`` fields plus ``trial_name``; a trial of
  a hyperparameter search also names its cell (``CELL_KEY``), its configuration's index in the cell
  (``SAMPLE_KEY``) and the sampled keys (``SAMPLED_KEY``), so analysis can group a search by itself; a
  trial whose method has hparams of its own lists their keys (``METHOD_HPARAMS_KEY``);
- ``progress.csv`` and ``result.json`` (Ray Tune): one row / JSON line per epoch report;
- ``error.txt`` (Ray Tune): the last exception, when the trial raised;
- ``checkpoint_NNNNNN/state.pt`` (Ray Tune checkpoints): ``finetune``'s resumable state after one epoch
  (keys ``epoch``, ``config``, ``model``, ``optimizer``, ``scheduler``, ``rng``); a multi-worker trial
  keeps them in its Ray Train run, ``train/checkpoint_NNNNNN/state.pt``;
- ``groupsweep/labels.npz``: val/test classes, attributes and groups, ``n_classes``, ``n_spurious``;
- ``groupsweep/predictions/epoch_XXXX.npz``: the val and test predictions after each epoch (int16);
- ``groupsweep/d3m/scores.npz``: a D3M / AUTO-D3M trial's scores and kept examples;
- ``groupsweep/jtt/errors.npz``: a JTT trial's error set (``errors``, training indices) and its base
  model's source (``base_source``);
- ``groupsweep/dfr/last_layer.npz``: a DFR trial's retrained last layer, chosen C, validation scores of
  the C grid, and its base model's source (``base_source``);
- ``groupsweep/stopped_early.json``: written by a search's ASHA scheduler when it stops the trial before its
  last epoch (``{"epoch": e}``), so analysis can tell a stopped trial from an interrupted one;
- ``groupsweep/fault_<epoch>``: the marker of an injected test fault.

Paths may be local paths or ``pyarrow.fs`` URIs (``s3://bucket/prefix``, ``file:///...``); every access
goes through ``pyarrow.fs``. Writes of groupsweep's own files are atomic (a temporary file, then a rename).
How Ray Tune writes a sweep into its storage (the order of its uploads, atomic replacement on local
storage, when a trial's old checkpoints go) is ``trainables.sweep_storage``'s.
"""

from __future__ import annotations

import io
import json
import os
import urllib.parse
import uuid
import zipfile

import numpy as np
import pyarrow.fs

from trainables.errors import GroupsweepError

PARAMS_FILE = "params.json"
PROGRESS_FILE = "progress.csv"
RESULT_FILE = "result.json"
ERROR_FILE = "error.txt"
STATE_FILE = "state.pt"
CHECKPOINT_PREFIX = "checkpoint_"
TRAIN_RUN_NAME = "train"
FILES_DIR = "groupsweep"
LABELS_FILE = f"{FILES_DIR}/labels.npz"
D3M_SCORES_FILE = f"{FILES_DIR}/d3m/scores.npz"
JTT_ERRORS_FILE = f"{FILES_DIR}/jtt/errors.npz"
DFR_FILE = f"{FILES_DIR}/dfr/last_layer.npz"
STOPPED_FILE = f"{FILES_DIR}/stopped_early.json"
# Keys of a searched trial's config (``params.json``) besides the TrainConfig fields; TrainConfig ignores
# them (they start with "_"): the cell's name, the configuration's index in it, the sampled keys.
CELL_KEY, SAMPLE_KEY, SAMPLED_KEY = "_cell", "_sample", "_sampled"
# Characters ``join_location`` leaves as they are in a URI's path (besides letters, digits and ``_.-~``).
URI_SAFE = "/=+:@,;!$&'()*"
# The keys a trial's method sets with hparams of its own (``methods: [{upweighting: {hparams: ...}}]``):
# part of the method's configuration, like sampled keys, not a variant of the sweep.
METHOD_HPARAMS_KEY = "_method_hparams"


def trial_dirname(trial) -> str:
    """Name and directory name of a Tune trial: its config's ``trial_name`` (unique within a sweep)."""
    return trial.config["trial_name"]


def unit_name(config: dict) -> str:
    """What the sweep's per-trial tables are keyed by: the trial's name, or for a trial of a hyperparameter
    search (whose name exists only once the search draws it) its cell's name (``CELL_KEY``)."""
    return config.get(CELL_KEY) or config["trial_name"]


def predictions_file(epoch: int) -> str:
    """The file of one epoch's val/test predictions, relative to the trial directory."""
    return f"{FILES_DIR}/predictions/epoch_{int(epoch):04d}.npz"


def fault_marker(epoch: int) -> str:
    """The marker file of a test fault injected after ``epoch``, relative to the trial directory."""
    return f"{FILES_DIR}/fault_{int(epoch)}"


class UnreadableFile(GroupsweepError):
    """A file of a trial directory is missing or cannot be parsed."""


def join_location(base, *names: str) -> str:
    """``base`` (a local path or a ``pyarrow.fs`` URI) with ``names`` (folder and file names as the filesystem
    lists them) appended as path components; a URI's query options (``?endpoint_override=...``) stay at the
    end, where ``pyarrow.fs`` reads them. On a URI, the characters a URI cannot hold as they are (a space,
    ``%``, ``?``, ``#``, non-ASCII) are percent-encoded (``URI_SAFE``), as ``pyarrow.fs`` decodes them."""
    path, separator, query = str(base).partition("?")
    path = path.rstrip("/") or "/"
    is_uri = "://" in path
    for name in names:
        path = f"{path.rstrip('/')}/{urllib.parse.quote(name, safe=URI_SAFE) if is_uri else name}"
    return f"{path}{separator}{query}"


def split_location(location) -> tuple[str, str]:
    """``(parent, name)`` of a local path or a ``pyarrow.fs`` URI: its last path component (a URI's decoded)
    and what holds it, a URI's query options (``?endpoint_override=...``) staying with the parent, so that
    ``join_location(parent, name)`` is ``location`` again."""
    path, separator, query = str(location).partition("?")
    parent, _, name = path.rstrip("/").rpartition("/")
    return f"{parent}{separator}{query}", urllib.parse.unquote(name) if "://" in path else name


def location_filesystem(path_or_uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """``(filesystem, path inside it)`` of a local path (relative ones included) or a ``pyarrow.fs`` URI; a URI
    that pyarrow cannot open (an unknown scheme, a missing account or library) is a one-line
    ``GroupsweepError`` naming it. Nothing is read or written."""
    path_or_uri = str(path_or_uri)
    if "://" not in path_or_uri:
        path_or_uri = os.path.abspath(os.path.expanduser(path_or_uri))
    try:
        return pyarrow.fs.FileSystem.from_uri(path_or_uri)
    except (ValueError, NotImplementedError, OSError) as error:  # pyarrow's ArrowInvalid is a ValueError
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise GroupsweepError(f"cannot open {path_or_uri!r}: {reason}; give a local path or a pyarrow.fs URI "
                              "(s3://, gs://, hdfs://, abfs://, file://)") from None


def parse_npz(data: bytes, keys: tuple | None, where: str) -> dict:
    """The arrays ``keys`` (default: all) of the ``.npz`` file whose bytes are ``data`` (``where``: its location, for
    the error); ``UnreadableFile`` when it is not an ``.npz`` file or lacks a key."""
    try:
        with np.load(io.BytesIO(data)) as archive:
            return {key: archive[key] for key in (archive.files if keys is None else keys)}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise UnreadableFile(f"cannot read {where} ({type(error).__name__}: {error})") from None


class TrialDir:
    """One trial directory, local or in object storage; names are relative to it (``LABELS_FILE``...)."""

    def __init__(self, path_or_uri, *, filesystem: pyarrow.fs.FileSystem | None = None):
        """``path_or_uri``: a local path or a ``pyarrow.fs`` URI; with ``filesystem``, a path inside it."""
        if filesystem is None:
            self.fs, self.root = location_filesystem(path_or_uri)
        else:
            self.fs, self.root = filesystem, str(path_or_uri)
        self.root = self.root.rstrip("/")
        self.location = str(path_or_uri)

    @property
    def name(self) -> str:
        """The directory's own name (the trial name)."""
        return self.root.rsplit("/", 1)[-1]

    def path(self, name: str) -> str:
        """``name`` inside this directory, as a path of its filesystem."""
        return f"{self.root}/{name}"

    def exists(self, name: str) -> bool:
        """Whether the file or folder ``name`` exists."""
        return self.fs.get_file_info(self.path(name)).type != pyarrow.fs.FileType.NotFound

    def read_bytes(self, name: str) -> bytes:
        """The contents of ``name``; ``UnreadableFile`` when it is missing or cannot be read. Read as a random-access
        file, whose size is known, into one buffer (a stream of unknown length is read in growing chunks)."""
        try:
            with self.fs.open_input_file(self.path(name)) as file:
                return file.read()
        except (OSError, pyarrow.ArrowException) as error:
            raise UnreadableFile(f"cannot read {self.location}/{name} ({type(error).__name__}: {error})") from None

    def read_json(self, name: str):
        """The JSON value in ``name``; ``UnreadableFile`` when it is missing or not JSON."""
        try:
            return json.loads(self.read_bytes(name))
        except ValueError as error:
            raise UnreadableFile(f"{self.location}/{name} is not JSON ({error})") from None

    def params(self) -> dict:
        """The trial config (``params.json``); ``UnreadableFile`` when missing or not a JSON object."""
        params = self.read_json(PARAMS_FILE)
        if not isinstance(params, dict):
            raise UnreadableFile(f"{self.location}/{PARAMS_FILE} is not a JSON object")
        return params

    def read_npz(self, name: str, keys: tuple | None = None) -> dict:
        """The arrays ``keys`` (default: all) of the ``.npz`` file ``name``; ``UnreadableFile`` when the
        file is missing, unreadable or lacks a key."""
        return parse_npz(self.read_bytes(name), keys, f"{self.location}/{name}")

    def write_npz(self, name: str, arrays: dict) -> None:
        """Write ``arrays`` as ``name`` atomically: to a temporary file beside it, then renamed over it."""
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        self._write_atomically(name, buffer.getvalue())

    def write_marker(self, name: str) -> None:
        """Create the empty file ``name``."""
        self._write_atomically(name, b"")

    def write_json(self, name: str, value) -> None:
        """Write ``value`` as the JSON file ``name``, atomically."""
        self._write_atomically(name, json.dumps(value, sort_keys=True).encode())

    def _write_atomically(self, name: str, data: bytes) -> None:
        write_atomically(self.fs, self.path(name), data)

    def state_files(self) -> list[str]:
        """Names of the ``state.pt`` files of every checkpoint still present (Tune's and, for
        multi-worker trials, the Ray Train run's), oldest checkpoint first within each."""
        names = []
        for prefix in ("", f"{TRAIN_RUN_NAME}/"):
            folder = self.path(prefix.rstrip("/")) if prefix else self.root
            files = [f"{prefix}{checkpoint_name(index)}/{STATE_FILE}" for index in checkpoint_indexes(self.fs, folder)]
            names += [name for name in files if self.exists(name)]
        return names

    def load_state(self, name: str) -> dict:
        """The ``finetune`` state saved as ``name`` (a ``state_files`` entry), tensors on the CPU;
        ``UnreadableFile`` when it is not a readable groupsweep state."""
        import torch  # deferred: results loading reads trial directories without importing torch

        try:
            if isinstance(self.fs, pyarrow.fs.LocalFileSystem):
                state = torch.load(self.path(name), map_location="cpu", mmap=True, weights_only=False)
            else:
                state = torch.load(io.BytesIO(self.read_bytes(name)), map_location="cpu", weights_only=False)
        except (OSError, RuntimeError, EOFError, pyarrow.ArrowException) as error:
            raise UnreadableFile(f"cannot read checkpoint {self.location}/{name} "
                                 f"({type(error).__name__}: {error})") from None
        if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
            raise UnreadableFile(f"checkpoint {self.location}/{name} holds no groupsweep training state")
        return state

    def newest_readable_state(self) -> tuple[str, dict] | None:
        """``(name, state)`` of the newest kept checkpoint whose state loads (``load_state``), trying them
        newest first; None when none does."""
        for name in sorted(self.state_files(), key=lambda name: name.rsplit("/", 2)[-2], reverse=True):
            try:
                return name, self.load_state(name)
            except UnreadableFile:
                continue
        return None


def write_atomically(filesystem: pyarrow.fs.FileSystem, path: str, data: bytes) -> None:
    """Write ``data`` as the file ``path`` on ``filesystem`` (its folder created): into a temporary file beside
    it, then moved over it, so that ``path`` is always the old file or the new one, whole."""
    directory = path.rsplit("/", 1)[0]
    filesystem.create_dir(directory, recursive=True)
    temporary = f"{directory}/.tmp-{uuid.uuid4().hex}"
    try:
        with filesystem.open_output_stream(temporary) as stream:
            stream.write(data)
        filesystem.move(temporary, path)
    except BaseException:
        # e.g. a full disk (ENOSPC): drop the partial file; the previous ``path`` stays intact
        if filesystem.get_file_info(temporary).type != pyarrow.fs.FileType.NotFound:
            filesystem.delete_file(temporary)
        raise


def write_local_atomically(path, data: bytes) -> None:
    """``write_atomically`` of ``data`` as the local file ``path`` (a ``Path`` or string)."""
    write_atomically(pyarrow.fs.LocalFileSystem(), os.path.abspath(path), data)


def file_type(path_or_uri) -> pyarrow.fs.FileType:
    """What ``path_or_uri`` (a local path or a ``pyarrow.fs`` URI) is: a ``FileType`` (``NotFound``, ``File``,
    ``Directory``)."""
    fs, root = location_filesystem(path_or_uri)
    return fs.get_file_info(root.rstrip("/") or "/").type


def is_directory(path_or_uri) -> bool:
    """Whether ``path_or_uri`` (a local path or a ``pyarrow.fs`` URI) is an existing directory."""
    return file_type(path_or_uri) == pyarrow.fs.FileType.Directory


def subdirectory_names(path_or_uri) -> list[str]:
    """Names of the directories directly inside ``path_or_uri`` (none when it does not exist), sorted."""
    fs, root = location_filesystem(path_or_uri)
    entries = fs.get_file_info(pyarrow.fs.FileSelector(root.rstrip("/"), allow_not_found=True))
    return sorted(entry.base_name for entry in entries if entry.type == pyarrow.fs.FileType.Directory)


def checkpoint_index(name: str) -> int | None:
    """The index of a Tune checkpoint folder named ``checkpoint_NNNNNN`` (None for any other name)."""
    digits = name[len(CHECKPOINT_PREFIX):]
    return int(digits) if name.startswith(CHECKPOINT_PREFIX) and digits.isdigit() else None


def checkpoint_indexes(filesystem: pyarrow.fs.FileSystem, folder: str) -> list[int]:
    """The indexes of the Tune checkpoint folders in ``folder`` (a path on ``filesystem``), sorted."""
    entries = filesystem.get_file_info(pyarrow.fs.FileSelector(folder.rstrip("/"), allow_not_found=True))
    found = (checkpoint_index(entry.base_name) for entry in entries if entry.type == pyarrow.fs.FileType.Directory)
    return sorted(index for index in found if index is not None)


def checkpoint_name(index: int) -> str:
    """The name of Tune's checkpoint folder of ``index`` (``checkpoint_NNNNNN``)."""
    return f"{CHECKPOINT_PREFIX}{index:06d}"


def trial_dirs(run_dir) -> list[TrialDir]:
    """The trial directories of a sweep directory (sub-directories with ``params.json`` or
    ``result.json``), sorted by name; a local path or a ``pyarrow.fs`` URI."""
    fs, root = location_filesystem(run_dir)
    root = root.rstrip("/")
    entries = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    out = []
    for entry in sorted(entries, key=lambda entry: entry.base_name):
        if entry.type != pyarrow.fs.FileType.Directory:
            continue
        trial = TrialDir(f"{root}/{entry.base_name}", filesystem=fs)
        trial.location = join_location(run_dir, entry.base_name)
        if trial.exists(PARAMS_FILE) or trial.exists(RESULT_FILE):
            out.append(trial)
    return out
