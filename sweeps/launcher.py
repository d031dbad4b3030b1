"""Run a sweep on Ray Tune: local Ray by default, an existing cluster with an address; resume by name.

``run_sweep`` turns a ``SweepSpec`` into a ``ray.tune.Tuner``: one grid point per trial (the grid is over
``trial_name``, every other config key is looked up from the spec's trial table, so each trial's
``params.json`` is its flat config), per-trial resources, readable trial names and directories,
``FailureConfig(max_failures)``, the spec's ``keep_checkpoints`` (default: the last one) per trial and
Ray's trial table as progress.
Results go to ``<storage>/<name>/`` with the spec saved as ``groupsweep_spec.yaml``; running a sweep
whose directory already holds a Tune experiment resumes it (``Tuner.restore``): finished trials are
kept, unfinished and errored ones continue from their last checkpoints. A grid's trials come from
``sweeps.grid_search.GridVariantGenerator``: Tune's variant generator, which holds the sweep's
``max_concurrent``, restored in agreement with the experiment state. A spec that adds trials to a
grid sweep (more seeds, methods, ratios, models, datasets) extends it: once the resumed trials have
ended, the added ones run as a new Tune experiment in the same folder and the saved spec becomes the
union (``run_trials``); a spec that changes or drops a trial the sweep holds is refused
(``check_same_sweep``).

Trials on the same dataset share it: the driver loads each distinct (dataset, options, data root) once
and puts it into Ray's object store (``share_datasets``), and each trial reads it from there, its numpy
arrays mapped from the node's one shared copy instead of generated or decoded again per trial. On a
cluster the driver reads no native dataset (its node may hold no data, as cluster.yaml's head does not):
the trials load those on the workers.

Every trial checkpoints (``checkpoint_every``) and keeps its latest ``keep_checkpoints`` checkpoints
(``sweeps.retention.CheckpointRetention``); Tune snapshots the experiment state at its own pace (``auto``: at
most ~5% of the driver's time), so the driver's cost per trial stays flat as sweeps grow. A driver killed at
any moment resumes each trial from the checkpoint its last snapshot in the storage names (never deleted
before a newer snapshot is there), redoing at most the epochs trained since; a trial that had finished by
then is not run again. Tune writes the sweep through ``trainables.sweep_storage.sweep_filesystem``, which
puts a snapshot into the storage only once the trial logs uploaded with it are there whole (a driver killed
during an upload leaves a snapshot that no trial's log lags behind).

Tune reuses a trial's actor process for the next trial (``reuse_actors``) only when every trial of the
sweep has the same ``mixed_precision``: a process keeps the Accelerate state of the first trial it ran.

Before Ray starts and before anything is written, ``run_sweep`` checks everything it can: the sweep
name (``trainables.errors.path_name``), the storage folder (``check_storage``), the resources, that a
started sweep directory holds the same sweep, and, for a local run, every dataset (each is loaded once,
which reads and checks its files; the trials then share the loaded copy). A sweep directory whose saved
spec belongs to a run that never started a trial does not count as a sweep: it is replaced, so a
refused or failed start never blocks the corrected run. While a driver runs the sweep it holds the
directory's lock (``sweeps.sweep_lock``): a second launch stops with one line naming the holder.

A local Ray (no ``--address``) serves only this machine: every server of it binds the loopback
interface (``start_ray``), and a guard process (``sweeps.ray_guard``) ends all of its processes within a
second when the driver dies. On local storage that filesystem replaces every file atomically, so a full
disk leaves every file Tune had written whole; a storage failure that stops the sweep is raised as
``StorageFailure``, one line.

This module imports Ray at its top (the command line imports it only when a sweep runs or is inspected),
and never torch or a model library: the trials import them (``trainables.entry``). Reading a sweep's results
is ``analysis.results``' job.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import pickle
import socket
import sys
from typing import Callable

import numpy as np
import pyarrow.fs
import ray
from ray import tune
from ray._private import ray_constants
from ray._private.accelerators.nvidia_gpu import NvidiaGPUAcceleratorManager
from ray.tune import (Callback, CheckpointConfig, CLIReporter, FailureConfig, PlacementGroupFactory, RunConfig,
                      TuneConfig)
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.search.basic_variant import BasicVariantGenerator

from analysis.results import ended_trials
from sweeps.grid_search import GridVariantGenerator
from sweeps.ray_guard import start_guard, unmark_environment
from sweeps.retention import CheckpointRetention, FreshRetries, RetryLogs, SnapshotsAtEnd
from sweeps.search import early_stopping_warning, search_plan
from sweeps.spaces import check_metric_index
from sweeps.spec import (DEFAULT_KEEP_CHECKPOINTS, DEFAULT_MAX_FAILURES, DRIVER_CPU, Resources, SweepSpec,
                         TrialPlan, build_spec, decode_text, dump_spec, parse_yaml)
from sweeps.sweep_lock import SweepLock, SweepLocked
from sweeps.tracking import tracker_environment, tracking_callbacks
from trainables.balancing import method_label
from trainables.config import TrainConfig
from trainables.config_data import dataset_key, load_config_dataset
from trainables.data import reads_files
from trainables.entry import train_trial
from trainables.errors import GroupsweepError, path_name
from trainables.models import checkpoint_source, get_spec
from trainables.sweep_storage import (EXPERIMENT_STATE_PREFIX, SPEC_FILE, TUNER_FILE, commit_snapshots, drop_snapshots,
                                      prune_checkpoints, snapshots_held, sweep_filesystem)
from trainables.trial_dir import (join_location, location_filesystem, trial_dirname, trial_dirs, unit_name,
                                  write_atomically)

STORAGE_ENV = "GROUPSWEEP_STORAGE"
DEFAULT_STORAGE = "~/groupsweep_results"
# Local Ray on a small machine: a small object store (trials exchange metrics, file paths and the
# shared in-memory datasets).
LOCAL_OBJECT_STORE_BYTES = 200 * 1024 * 1024
# Ray settings of a local Ray: no idle workers started for the first driver (one per CPU, each importing Ray:
# about 1 s of CPU apiece). Tune's trial actors never ran in them (each started a process of its own, seen in
# the workers' logs), so they only took CPU from the trials while the sweep started.
LOCAL_RAY_SYSTEM_CONFIG = {"prestart_worker_first_driver": False}
# Tune's switch off for the loggers it adds to a run on its own (``listed_loggers_only``).
AUTO_LOGGERS_ENV = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"
# Tune's switch off for its check that every result holds the search's metric: a diverged trial's last row
# (``status: diverged``) has none, and the check then ended the whole search (again on every resume). The
# search's wrappers read that row by its status (``sweeps.search``); the metric's name is checked before
# Ray starts (``sweeps.spaces.check_metric_reported``).
STRICT_METRIC_ENV = "TUNE_DISABLE_STRICT_METRIC_CHECKING"
# A dataset is shared through the object store only when it takes at most this share of the store.
SHARED_DATASET_STORE_SHARE = 0.5
ENV_DEFAULTS = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    # Ray's classic trial table (CLIReporter) with chosen columns, instead of per-trial result boxes.
    "RAY_AIR_NEW_OUTPUT": "0",
    # A sweep started before groupsweep kept checkpoints itself (sweeps.retention) resumes with its saved
    # CheckpointConfig(num_to_keep=N): Tune then snapshots after every checkpoint and warns that it does.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "TOKENIZERS_PARALLELISM": "false",
}
PROGRESS_COLUMNS = {"epoch": "epoch", "optim/loss": "loss", "val/wga": "val wga", "test/wga": "test wga",
                    "status": "run"}
# Ray Tune's loggers that log a failure with its traceback (as the record's exception, or for the syncer that
# uploads the driver's files, inside the message); the driver shows each as one line instead (the traceback
# stays in the trial's error.txt).
CONDENSED_LOGGERS = ("ray.tune.execution.tune_controller", "ray.tune.execution.experiment_state",
                     "ray.train._internal.syncer")
TRACEBACK_HEADER = "Traceback (most recent call last):"
# Tune's log line when it cannot restore a sweep's state (``RefuseRestart``).
RESTORE_FAILED = "Failed to restore the run state."


class StorageFailure(GroupsweepError):
    """The sweep stopped because its storage failed (a full disk, a vanished or read-only folder)."""


def one_line(error: BaseException) -> str:
    """An exception as one line: the last line of its text (a Ray task error's text ends with the cause's
    ``Type: message``), else its type's name."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


class OneLineErrors(logging.Filter):
    """A logging filter that turns a record's traceback (its exception, or a formatted traceback inside its
    message) into one line, the message before it and the traceback's last line, and keeps those last lines
    (``errors``): the cause of a failure whose error file could not be written."""

    def __init__(self):
        super().__init__()
        self.errors: list[str] = []
        self.failed_restore: str | None = None  # the cause, when Tune could not restore the sweep's state

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            cause = one_line(record.exc_info[1])
            record.exc_info = record.exc_text = None
        elif TRACEBACK_HEADER in message:
            message, trace = message.split(TRACEBACK_HEADER, 1)
            lines = [line.strip() for line in trace.splitlines() if line.strip()]
            cause = lines[-1] if lines else ""
        else:
            return True
        if message.startswith(RESTORE_FAILED):
            self.failed_restore = cause
        self.errors.append(cause)
        record.msg = f"{' '.join(message.split())} {cause}".strip()
        record.args = ()
        return True


RAY_ERRORS = OneLineErrors()


class RefuseRestart(Callback):
    """Stop a resumed run whose sweep state Tune could not restore (``RAY_ERRORS.failed_restore``), before any
    trial starts. Tune logs the failure and then starts the whole experiment again: every trial from its first
    epoch, in new folders beside the old ones, its results counted twice."""

    def setup(self, **info) -> None:
        """Raise a one-line ``GroupsweepError`` naming the cause when the restore failed."""
        if RAY_ERRORS.failed_restore is not None:
            raise GroupsweepError(f"Tune could not restore the sweep's state ({RAY_ERRORS.failed_restore}); "
                                  "nothing was run (Tune would have started every trial again): fix the cause, "
                                  "often the storage, and run the same command again")


def condense_ray_errors() -> None:
    """Show Ray Tune's trial and state-saving failures as one line each (``RAY_ERRORS``, emptied: it keeps
    the failures of the sweep about to run)."""
    RAY_ERRORS.errors.clear()
    RAY_ERRORS.failed_restore = None
    for name in CONDENSED_LOGGERS:
        logger = logging.getLogger(name)
        if RAY_ERRORS not in logger.filters:
            logger.addFilter(RAY_ERRORS)


def failed_trials(results) -> tuple[int, str | None]:
    """``(number of trials of a ResultGrid that did not terminate normally, one line saying why)``: the
    first error a trial recorded, else the first failure Ray logged (a trial whose error file could not be
    written, on a full disk, has no recorded error). ``results`` may be an empty list (no trial ran)."""
    if not len(results):
        return 0, None
    failed = len(results) - results.num_terminated
    causes = [one_line(result.error) for result in results if result.error is not None] + RAY_ERRORS.errors
    return failed, (causes[0] if failed and causes else None)


def set_env_defaults() -> None:
    """Environment settings for Ray and Tune that suit groupsweep (existing values win)."""
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def resolve_storage(storage: str | None) -> str:
    """Absolute storage path (or URI) of sweeps: ``storage``, else ``$GROUPSWEEP_STORAGE``, else ``~/groupsweep_results``."""
    storage = storage or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE
    if "://" in storage:
        return storage.rstrip("/")
    return os.path.abspath(os.path.expanduser(storage))


def experiment_dir(storage: str, name: str) -> str:
    """``<storage>/<name>``: the sweep's Tune experiment directory (a URI keeps its query options last)."""
    return join_location(storage, name)


def check_storage(storage: str, exp_dir: str) -> None:
    """Check, before anything is written, that a local ``storage`` can hold the sweep folder ``exp_dir``:
    each of them is a folder or can be created as one, and the folder that will be written is writable.
    One-line ``GroupsweepError`` naming the path otherwise. Of a URI (object storage), the scheme is checked
    (``location_filesystem``) and the sweep folder looked up once: a bucket that cannot be reached, or that
    refuses these credentials, is a one-line ``GroupsweepError`` too, and so is a bucket that is not found
    (object stores answer a missing bucket as a missing folder, and pyarrow creates none)."""
    if "://" in storage:
        location_filesystem(storage)
        filesystem, path = location_filesystem(exp_dir)
        bucket = path.split("/", 1)[0]  # empty for a filesystem of absolute paths (file://, hdfs://)
        try:
            filesystem.get_file_info(path)
            bucket_found = not bucket or filesystem.get_file_info(bucket).type != pyarrow.fs.FileType.NotFound
        except OSError as error:
            raise GroupsweepError(f"--storage {storage!r} cannot be read: {one_line(error)}") from None
        if not bucket_found:
            raise GroupsweepError(f"--storage {storage!r}: bucket {bucket!r} not found (it does not exist, or its "
                                  "endpoint cannot be reached); create it, or give another")
        return
    for path, what in ((storage, "--storage"), (exp_dir, "sweep folder")):
        if os.path.exists(path) and not os.path.isdir(path):
            raise GroupsweepError(f"{what} {path!r} is not a folder")
    existing = exp_dir
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise GroupsweepError(f"--storage {storage!r} cannot be created: {existing!r} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise GroupsweepError(f"--storage {storage!r}: folder {existing!r} is not writable")


# --- resources -----------------------------------------------------------------------------------

def local_gpu_count() -> int:
    """The GPUs a local Ray started here offers, counted as ``ray.init`` counts them: the NVIDIA GPUs of the
    machine (NVML), at most as many as ``CUDA_VISIBLE_DEVICES`` lists when it is set."""
    gpus = NvidiaGPUAcceleratorManager
    count = gpus.get_current_node_num_accelerators()
    visible = gpus.get_current_process_visible_accelerator_ids()
    return count if visible is None else min(count, len(visible))


def local_node_shape(num_cpus: int | None = None) -> dict:
    """What a local Ray started by ``start_ray`` offers: this machine's CPUs (``num_cpus`` if given) and its
    GPUs (``local_gpu_count``)."""
    return {"CPU": float(num_cpus or os.cpu_count() or 1), "GPU": float(local_gpu_count())}


def live_node_shapes() -> list[dict]:
    """Resources of every live node of the Ray cluster this process is connected to (``ray.nodes()``)."""
    return [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]


def unplaceable_trials(spec: SweepSpec, shapes: list[dict]) -> list[tuple[TrialPlan, dict]]:
    """``(trial, bundle)`` for each trial that no node of ``shapes`` can hold, its processes together (``bundle``:
    what they need in all), in grid order."""
    def fits(bundle: dict, shape: dict) -> bool:
        return all(shape.get(key, 0) + 1e-9 >= amount for key, amount in bundle.items() if amount > 0)

    out = []
    for trial in spec.units:
        bundle = {"CPU": trial.resources.cpu, "GPU": trial.resources.gpu}
        if not any(fits(bundle, shape) for shape in shapes):
            out.append((trial, bundle))
    return out


def check_nodes_fit(spec: SweepSpec, shapes: list[dict], *, autoscaling: bool = False) -> None:
    """Check that each trial fits on one node of ``shapes`` (Ray resource dicts), its processes together (a
    multi-worker trial places its workers on one node: ``STRICT_PACK``; one that no node can hold would wait
    for its workers forever, as RUNNING).

    Local Ray (``autoscaling=False``; ``shapes`` = ``[local_node_shape()]`` before Ray starts, its live node
    after): a trial asking for more than the node offers is refused with a one-line ``GroupsweepError``.
    A connected cluster (``autoscaling=True``; ``shapes`` = its live nodes): its
    autoscaler may add node types that no live node has, and Ray offers no public API listing them, so
    such a trial is not refused; one ``warning:`` line on stderr names the first one and says that Tune
    will wait for the autoscaler to add such a node (on a cluster without an autoscaler it waits forever).
    """
    missing = unplaceable_trials(spec, shapes)
    if not missing:
        return
    (trial, bundle), others = missing[0], len(missing) - 1
    offered = ", ".join(sorted({f"{s.get('CPU', 0):g} CPU/{s.get('GPU', 0):g} GPU" for s in shapes})) or "none"
    workers = trial.resources.workers
    per = " per process" if workers == 1 else f" for its {workers} processes together"
    need = f"trial {trial.name} needs {bundle['CPU']:g} CPU and {bundle['GPU']:g} GPU{per}"
    if not autoscaling:
        raise GroupsweepError(f"{need} but no node can provide that (nodes: {offered}); "
                              "lower resources in the spec or --set")
    more = f" ({others} more trial{'s' if others > 1 else ''} too)" if others else ""
    print(f"warning: {need} but no live node can provide that (nodes: {offered}){more}; "
          "Tune will wait for the cluster's autoscaler to add such a node", file=sys.stderr, flush=True)


def can_reuse_actors(spec: SweepSpec) -> bool:
    """Whether Tune may run several trials one after the other in one actor process: only when every trial
    has the same ``mixed_precision`` and ``compile_model`` (a process keeps the Accelerate state of its first
    trial, and ``trainables.finetune`` refuses a trial that needs another)."""
    return len({(trial.config["mixed_precision"], trial.config.get("compile_model", False))
                for trial in spec.units}) <= 1


def trial_placement(resources: Resources):
    """The placement group of a Tune trial: its process's bundle, or a token driver for TorchTrainer runs."""
    if resources.workers > 1:
        return PlacementGroupFactory([{"CPU": DRIVER_CPU}])
    bundle = {"CPU": resources.cpu}
    if resources.gpu > 0:
        bundle["GPU"] = resources.gpu
    return PlacementGroupFactory([bundle])


class TrialResources:
    """Tune's per-trial resource function: trial config -> placement group, looked up by the trial's name
    (a search trial: its cell's name, ``trainables.trial_dir.unit_name``)."""

    def __init__(self, spec: SweepSpec):
        self.table = {unit.name: unit.resources for unit in spec.units}

    def __call__(self, config: dict):
        return trial_placement(self.table[unit_name(config)])


class ConfigValue:
    """Tune ``sample_from`` function giving one config key of the trial its ``trial_name`` names (None where
    that trial's config lacks the key: one only some trials have, such as ``METHOD_HPARAMS_KEY``)."""

    def __init__(self, table: dict, key: str):
        self.table = table
        self.key = key

    def __call__(self, config: dict) -> object:
        return self.table[config["trial_name"]].get(self.key)


def param_space(spec: SweepSpec, keys: list[str] | None = None) -> dict:
    """A grid over trial names whose other keys resolve to that trial's config values (flat params.json).

    ``keys``: the config keys (default: every key of any trial's config, so a key only some trials have,
    such as ``METHOD_HPARAMS_KEY``, is None in the others).
    """
    table = {trial.name: trial.config for trial in spec.trials}
    if keys is None:
        keys = list(dict.fromkeys(key for trial in spec.trials for key in trial.config if key != "trial_name"))
    space = {"trial_name": tune.grid_search([trial.name for trial in spec.trials])}
    space.update({key: tune.sample_from(ConfigValue(table, key)) for key in keys})
    return space


# --- Ray and the sweep directory ------------------------------------------------------------------

def best_by_method(trials) -> dict:
    """``method label -> the best validation worst-group accuracy`` any of its trials has reported so far
    (Tune's running maximum per trial, ``trial.metric_analysis``), for the methods that reported one."""
    best = {}
    for trial in trials:
        value = trial.metric_analysis.get("val/wga", {}).get("max")
        label = method_label(trial.config.get("method"), trial.config.get("ratio"))
        if value is not None and math.isfinite(value):
            best[label] = max(best.get(label, value), value)
    return best


class SweepReporter(CLIReporter):
    """Ray's trial table (states, epochs, losses, WGA), then one line with ``best_by_method``."""

    def report(self, trials, done, *sys_info) -> None:
        super().report(trials, done, *sys_info)
        best = best_by_method(trials)
        if best:
            print("best val WGA so far: " + " | ".join(f"{label} {100 * value:.1f}%" for label, value in best.items()),
                  flush=True)


def cluster_address(address: str | None) -> str | None:
    """The Ray cluster to join: ``address``, else ``$RAY_ADDRESS``, else the one this process already joined
    (``joined_ray_address``: ``ray.init(address=...)`` before calling the Python API); None for a new local
    Ray (also for Ray's own ``local``) or the local Ray this process started itself."""
    address = address or os.environ.get("RAY_ADDRESS") or joined_ray_address()
    return None if address == "local" else address


CONNECT_TIMEOUT_S = 5.0


def check_cluster_address(address: str) -> None:
    """Refuse, in one line and before anything is written, a cluster ``address`` that Ray cannot join:
    one that is neither ``auto`` nor ``[ray://]host:port`` (port 1-65535), or whose host does not accept a
    TCP connection on that port within ``CONNECT_TIMEOUT_S`` (Ray itself would retry for minutes). ``auto`` is
    resolved as ``ray.init`` resolves it (``$RAY_ADDRESS``, the cluster ``ray start`` last started here, or a
    running one found here), then checked the same way; finding none is refused too."""
    if address == joined_ray_address():
        return
    given = address
    if address == "auto":
        try:  # Ray's own lookup of "auto", the one ray.init makes
            address = ray._private.services.get_ray_address_from_environment("auto", None)
        except ConnectionError:
            raise GroupsweepError("--address 'auto': no running Ray cluster found on this machine (RAY_ADDRESS is "
                                  "not set, and none was started here); start one (ray start --head) or give "
                                  "host:port of its head node") from None
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise GroupsweepError(f"--address {given!r} is not a Ray cluster address; give host:port of its head node "
                              "(its GCS, e.g. 10.0.0.1:6379), ray://host:port (Ray Client) or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        where = repr(given) if given == address else f"{given!r} ({address})"
        raise GroupsweepError(f"--address {where}: cannot reach the Ray cluster there ({error.strerror or error}); "
                              "start its head node (ray start --head) or fix the address") from None


def joined_ray_address() -> str | None:
    """The GCS address of the Ray this process joined as a driver, or None when Ray is not initialized here or
    this process started it (``ray.init()`` without an address: a Ray of this machine only)."""
    if not ray.is_initialized():
        return None
    node = ray._private.worker._global_node  # no public API tells a Ray this process started from one it joined
    if node is not None and node.head:
        return None
    return ray.get_runtime_context().gcs_address


def start_ray(address: str | None, num_cpus: int | None = None, dashboard: bool = False) -> None:
    """Connect to the cluster at ``address`` (or ``$RAY_ADDRESS``), else start a new small local Ray.

    The local Ray serves this machine only. Its servers (GCS, raylet, object manager, agents and every
    worker) bind the node's address, which Ray takes from ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``, read once
    when Ray is imported: ``0``, Ray's setting on macOS and Windows, makes it the loopback address. The
    setting is applied for the ``ray.init`` of a local Ray only (a driver joining a cluster needs its
    routable address). No dashboard is started unless ``dashboard`` (then on 127.0.0.1, its URL printed).
    A guard process (``sweeps.ray_guard``) ends every process of the local Ray within a second when this
    driver dies, even by SIGKILL.
    """
    if ray.is_initialized():
        return
    address = cluster_address(address)
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        return
    start_guard()
    cluster_addressing = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False  # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: the loopback address
    try:
        # address="local": a new Ray for this sweep, even when another one runs on this machine.
        context = ray.init(address="local", num_cpus=num_cpus or os.cpu_count(),
                           object_store_memory=LOCAL_OBJECT_STORE_BYTES, include_dashboard=dashboard,
                           dashboard_host="127.0.0.1", logging_level=logging.WARNING, log_to_driver=False,
                           _system_config=LOCAL_RAY_SYSTEM_CONFIG)
        if dashboard:
            print(f"Ray dashboard (this machine only): http://{context.dashboard_url}", flush=True)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster_addressing


def run_on_cluster(address: str, function, resources: dict):
    """``function()`` (a picklable callable) run as one Ray task on the cluster at ``address`` (or
    ``$RAY_ADDRESS``) holding ``resources`` (``{"CPU": c, "GPU": g}``), where a trial would run: on a node that
    has the datasets and the model weights, which the driver's node (a cluster's head) may lack. Returns
    what ``function`` returns."""
    joins = not ray.is_initialized()  # a Ray this process joined already (the Python API's caller's) stays joined
    if joins:
        ray.init(address=cluster_address(address), logging_level=logging.WARNING, log_to_driver=False)
    try:
        task = ray.remote(_call).options(num_cpus=resources.get("CPU", 1), num_gpus=resources.get("GPU", 0))
        return ray.get(task.remote(function))
    finally:
        if joins:
            ray.shutdown()


def _call(function):
    """The body of ``run_on_cluster``'s task."""
    return function()


def sweep_exists(exp_dir: str) -> bool:
    """Whether ``exp_dir`` (a local path or a storage URI) holds a Tune experiment or a saved groupsweep spec."""
    fs, root = location_filesystem(exp_dir)
    if tune.Tuner.can_restore(exp_dir):
        return True
    return fs.get_file_info(f"{root}/{SPEC_FILE}").type == pyarrow.fs.FileType.File


def read_saved_spec(exp_dir: str) -> dict | None:
    """The spec mapping saved in a sweep directory, or None; a saved file that is not YAML is a one-line
    ``GroupsweepError`` naming it."""
    fs, root = location_filesystem(exp_dir)
    path = f"{root}/{SPEC_FILE}"
    if fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
        return None
    with fs.open_input_stream(path) as stream:
        data = stream.read()
    what = f"the saved spec {join_location(exp_dir, SPEC_FILE)}"
    return parse_yaml(decode_text(data, what), what)


def save_spec(exp_dir: str, source: dict) -> None:
    """Write the effective spec to ``<exp_dir>/groupsweep_spec.yaml`` atomically (``write_atomically``: a failed
    write leaves the previous spec whole and no temporary file)."""
    fs, root = location_filesystem(exp_dir)
    write_atomically(fs, f"{root}/{SPEC_FILE}", dump_spec(source).encode())


def sweep_started(exp_dir: str) -> bool:
    """Whether ``exp_dir`` holds a sweep that has started: Tune's experiment state or a trial directory."""
    location_filesystem(exp_dir)  # an unknown URI scheme: one line, not pyarrow's traceback from Tune
    return tune.Tuner.can_restore(exp_dir) or bool(trial_dirs(exp_dir))


def check_resumable(spec: SweepSpec, exp_dir: str) -> bool:
    """Whether ``exp_dir`` holds a started sweep (``sweep_started``) to resume or extend; ``check_same_sweep``
    refuses one that ``spec`` changes. A saved spec without a started sweep (a run stopped before its first
    trial) does not count: it is replaced."""
    if not sweep_started(exp_dir):
        return False
    saved = read_saved_spec(exp_dir)
    if saved is not None:
        check_same_sweep(spec, saved, exp_dir)
    return True


def check_same_sweep(spec: SweepSpec, saved: dict, exp_dir: str) -> None:
    """Refuse to continue a sweep directory with a spec that changes it (``run_trials`` runs the trials it adds).

    A grid spec may add trials (seeds, methods, ratios, models, datasets) to the saved one; every trial of
    the saved spec must keep its name, config and resources. A search must keep its cells and settings.
    Anything else is refused with a one-line ``GroupsweepError`` naming the first trial that differs. So
    are other ``keep_checkpoints`` and ``max_failures``: Tune restores the retention and failure settings the
    sweep started with, whatever the spec now says.
    """
    previous = build_spec(saved)
    for key, default in (("keep_checkpoints", DEFAULT_KEEP_CHECKPOINTS), ("max_failures", DEFAULT_MAX_FAILURES)):
        # compared as written: `all` may resolve to more epochs when a grid grows
        before, now = saved.get(key, default), spec.source.get(key, default)
        if before != now:
            raise GroupsweepError(f"sweep directory {exp_dir} was started with {key} {before!r}, the spec now says "
                                  f"{now!r}; a started sweep keeps its {key} (Tune restores it): rerun with "
                                  f"{before!r}, or pick another --name")
    old = {t.name: (t.config, t.resources, getattr(t, "space", None)) for t in previous.units}
    new = {t.name: (t.config, t.resources, getattr(t, "space", None)) for t in spec.units}
    growing = previous.search is None and spec.search is None
    if not growing and (old != new or previous.search != spec.search):
        changed = sorted(set(old) ^ set(new)) or sorted(n for n in new if old[n] != new[n]) or ["search"]
        raise GroupsweepError(f"sweep directory {exp_dir} holds a search with other cells or settings (first "
                              f"difference: {changed[0]}); rerun it with the same spec and --set values, or pick "
                              "another --name")
    for name, (config, resources, _) in old.items():
        if name not in new:
            reason = "which the spec lacks"
        elif new[name][1] != resources:
            reason = "with other resources"
        else:
            keys = [key for key in new[name][0] if new[name][0][key] != config.get(key)]
            if not keys:
                continue
            changes = ", ".join(f"{key} {config.get(key)!r}, now {new[name][0][key]!r}" for key in keys)
            reason = f"with other settings ({changes})"
        raise GroupsweepError(f"sweep directory {exp_dir} holds trial {name} {reason}; a sweep can only gain "
                              "trials: keep every trial it holds as it is, or pick another --name")


def dataset_nbytes(dataset) -> int:
    """Approximate in-memory size of a dataset's inputs and labels (texts counted by their characters)."""
    total = 0
    for split in dataset.splits.values():
        for values in (split.inputs, split.y, split.s):
            if isinstance(values, np.ndarray):
                total += values.nbytes
            else:
                total += sum(len(str(item)) for item in values)
    return total


def is_memory_mapped(dataset) -> bool:
    """Whether any split's inputs are a ``np.memmap`` (already shared between processes by the page cache)."""
    return any(isinstance(split.inputs, np.memmap) for split in dataset.splits.values())


def load_datasets(spec: SweepSpec) -> dict:
    """Each distinct dataset of the sweep, loaded once: ``{trainables.config_data.dataset_key(config): dataset}``.
    Loading reads and checks every file and value of a native dataset, so a bad data root or file stops
    the run with one line."""
    datasets = {}
    for unit in spec.units:
        key = dataset_key(unit.config)
        if key not in datasets:
            datasets[key] = load_config_dataset(TrainConfig.from_dict(unit.config))
    return datasets


def check_local_weights(spec: SweepSpec) -> None:
    """Check that every pretrained model or ``model_path`` the sweep's trials load is on this machine
    (``checkpoint_source``: the local Hugging Face cache, the package that ships it, or the path), so a local
    sweep stops with one line before Ray starts instead of failing in every trial."""
    for unit in spec.units:  # a search cell's value may be a space: only a plain True or path asks for weights
        pretrained = unit.config.get("pretrained") is True
        model_path = unit.config.get("model_path") if isinstance(unit.config.get("model_path"), str) else None
        if pretrained or model_path is not None:
            checkpoint_source(get_spec(unit.config["model"]), pretrained, model_path)


def share_datasets(spec: SweepSpec, loaded: dict | None = None) -> dict:
    """Put each distinct dataset of the single-process trials into Ray's object store once.

    Returns ``{trainables.config_data.dataset_key(config): ObjectRef}``. ``loaded``: datasets loaded already
    (``load_datasets``); the embedded ones among the others are generated here, the native ones (read from
    files: ``reads_files``) are left to the trials, as the driver's node may not hold their files (a cluster's
    head). Datasets that are memory-mapped (decode-once caches, already shared by the OS) or that would take
    more than ``SHARED_DATASET_STORE_SHARE`` of the cluster's object store are left out too.
    """
    capacity = ray.cluster_resources().get("object_store_memory", LOCAL_OBJECT_STORE_BYTES)
    refs = {}
    for unit in spec.units:
        key = dataset_key(unit.config)
        if unit.resources.workers > 1 or key in refs:
            continue
        known = loaded is not None and key in loaded
        if not known and reads_files(unit.config["dataset"]):
            continue
        dataset = loaded[key] if known else load_config_dataset(TrainConfig.from_dict(unit.config))
        shareable = not is_memory_mapped(dataset) and dataset_nbytes(dataset) <= SHARED_DATASET_STORE_SHARE * capacity
        refs[key] = ray.put(dataset) if shareable else None
    return {key: ref for key, ref in refs.items() if ref is not None}


def build_tuner(spec: SweepSpec, exp_dir: str, name: str, storage: str, max_concurrent: int | None,
                shared: bool = True, loaded: dict | None = None, restore: bool = False):
    """A new ``ray.tune.Tuner`` over the trials of ``spec`` (a search: its cells), or with ``restore`` the
    Tune experiment that ``exp_dir`` holds (the latest one run there), restored with every trial config
    that ``spec`` names.

    ``shared``: trials take their datasets from the object store (``share_datasets``, given the datasets
    ``loaded`` already) instead of loading them.
    """
    workers = {t.name: {"workers": t.resources.workers, "bundle": t.resources.worker_bundle,
                        "keep_checkpoints": spec.keep_checkpoints}
               for t in spec.units if t.resources.workers > 1}
    datasets = share_datasets(spec, loaded) if shared else {}
    filesystem, storage_path = sweep_filesystem(storage)
    exp_path = f"{storage_path.rstrip('/')}/{name}"  # exp_dir inside the filesystem
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, experiment_dir=exp_dir, workers=workers, datasets=datasets),
        TrialResources(spec),
    )
    if restore:
        saved = read_saved_spec(exp_dir)  # Tune restores the callbacks of the tracking the sweep started with
        tracker_environment(build_spec(saved).tracking if saved else spec.tracking)
        tracker_environment(spec.tracking)  # ... and the trials a grid spec adds get this run's
        if spec.search is not None:  # the searcher (every cell's state) comes back with the experiment
            return limit_restored_run(tune.Tuner.restore(exp_path, trainable=trainable, resume_errored=True,
                                                         storage_filesystem=filesystem), max_concurrent)
        # The grid's generator (GridVariantGenerator) comes back from the Tuner's saved state and restores
        # itself from the experiment's (sweeps.grid_search).
        # The grid's sample_from functions are saved as placeholders: trials not created before the
        # interruption get their configs only if a param_space is given back; the spec's (every trial of
        # the sweep) resolves each of them by its trial name, whichever trials the experiment ran.
        # Tune refuses a param_space whose keys differ from the one the experiment started with: the keys of
        # its trials' configs are those, whatever the spec adds (a new method's hparams, or a setting that
        # this version of groupsweep has and the one that started the sweep had not; a trial config lacking
        # a setting runs with its default, which check_same_sweep has compared).
        return limit_restored_run(tune.Tuner.restore(
            exp_path, trainable=trainable, resume_errored=True, storage_filesystem=filesystem,
            param_space=param_space(spec, restored_config_keys(exp_path, filesystem))), max_concurrent)
    reporter = SweepReporter(metric_columns=PROGRESS_COLUMNS, parameter_columns={"seed": "seed"},
                             max_report_frequency=30, max_progress_rows=12)
    if spec.search is not None:
        search = search_plan(list(spec.cells), spec.search, exp_dir)
        space, samples = {}, {"search_alg": search.searcher, "scheduler": search.scheduler,
                              "num_samples": search.total_trials, "max_concurrent_trials": max_concurrent}
    else:  # the grid's generator holds the limit itself: Tune ignores max_concurrent_trials beside a search_alg
        space, samples = param_space(spec), {"search_alg": GridVariantGenerator(max_concurrent=max_concurrent or 0),
                                             "num_samples": 1}
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=TuneConfig(**samples, reuse_actors=can_reuse_actors(spec),
                               trial_name_creator=trial_dirname, trial_dirname_creator=trial_dirname),
        run_config=RunConfig(
            name=name, storage_path=storage_path, storage_filesystem=filesystem, verbose=1,
            progress_reporter=reporter,
            failure_config=FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=None),  # retention: CheckpointRetention (sweeps.retention)
            callbacks=[RefuseRestart(), FreshRetries(), CheckpointRetention(spec.keep_checkpoints), RetryLogs(),
                       *tracking_callbacks(spec.tracking, name, exp_dir), *result_loggers(), SnapshotsAtEnd()],
        ),
    )


def limit_restored_run(tuner, max_concurrent: int | None):
    """Return the restored ``tuner``, which runs at most ``max_concurrent`` trials at once when that is given
    (None: the limit the sweep started with).

    ``Tuner.restore`` brings back the limit an experiment started with, and takes no new one. A grid's limit
    is its generator's (``GridVariantGenerator``, which keeps the limit it is given when it restores its
    state), so it is set there. Elsewhere the saved state brings the old limit back (a search's Tune
    ``ConcurrencyLimiter``; the generator of a grid started by a groupsweep older than
    ``GridVariantGenerator``): a different limit is not applied, and one ``warning:`` line says so."""
    if max_concurrent is None:
        return tuner
    local = getattr(tuner, "_local_tuner", None)  # None through Ray Client; Tuner has no public tune config
    config = local._tune_config if local is not None else None
    if config is not None and isinstance(config.search_alg, GridVariantGenerator):
        config.search_alg.max_concurrent = max_concurrent
        return tuner
    if config is not None and isinstance(config.search_alg, BasicVariantGenerator):
        started = config.search_alg.max_concurrent
    else:
        started = config.max_concurrent_trials if config is not None else "unknown"
    if (started or None) != max_concurrent:
        print(f"warning: this sweep resumes with the limit of trials at once that it started with ({started or 'none'}"
              f"): Tune restores it with the sweep's state; max_concurrent {max_concurrent} is not applied",
              file=sys.stderr, flush=True)
    return tuner


def tune_state_saved(exp_dir: str) -> bool:
    """Whether the latest Tune experiment in ``exp_dir`` saved its state: an experiment state written after its
    ``tuner.pkl`` (which Tune writes when an experiment starts, and only then). A driver stopped before its
    first snapshot reached the storage leaves a ``tuner.pkl`` that ``Tuner.can_restore`` accepts but that
    Tune cannot restore (no state; or, when a grid spec's added trials were stopped so, the state of the
    experiment before)."""
    filesystem, path = location_filesystem(exp_dir)
    entries = filesystem.get_file_info(pyarrow.fs.FileSelector(path.rstrip("/"), allow_not_found=True))
    started = [entry.mtime for entry in entries if entry.base_name == TUNER_FILE]
    saved = [entry.mtime for entry in entries
             if entry.base_name.startswith(EXPERIMENT_STATE_PREFIX) and entry.base_name.endswith(".json")]
    if None in started + saved:  # a store that gives no modification times: only whether a state exists
        return bool(saved)
    return bool(started and saved) and max(saved) >= started[0]


def restored_config_keys(exp_path: str, filesystem) -> list[str] | None:
    """The config keys of the trials of the Tune experiment that ``exp_path`` on ``filesystem`` holds (the
    latest one run there), read with Tune's ``ExperimentAnalysis``; None when it holds no trial."""
    trials = tune.ExperimentAnalysis(exp_path, storage_filesystem=filesystem).trials
    if not trials:
        return None
    return [key for key in trials[0].config if key != "trial_name"]


def result_loggers() -> list:
    """The Tune callbacks that write each trial's ``progress.csv`` and ``result.json`` (the trial-directory
    contract, ``trainables.trial_dir``)."""
    return [CSVLoggerCallback(), JsonLoggerCallback()]


def run_callbacks(tuner) -> list:
    """The Tune callbacks of ``tuner``'s run (a restored tuner's: as saved when its sweep started); none known
    on a Ray Client connection."""
    # Tuner has no public accessor of its run config; _local_tuner is None on a Ray Client connection
    local = getattr(tuner, "_local_tuner", None)
    return (local.get_run_config().callbacks or []) if local is not None else []


@contextlib.contextmanager
def listed_loggers_only(tuner):
    """Within this context Tune adds no logger of its own to ``tuner``'s run when the run's callbacks (a
    restored tuner's: as saved when its sweep started) hold the ``result_loggers``.

    Unasked, Tune adds its CSV, JSON and TensorBoard loggers to every run that lacks them; the TensorBoard
    one writes an event file per trial that only ``tracking: [tensorboard]`` asks for, and imports torch
    (through tensorboardX) into the driver, which otherwise never imports it (about two seconds of every
    launch). ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1`` is Tune's switch for that. A sweep started by a
    groupsweep that did not list the result loggers keeps Tune's defaults, so it goes on writing its logs.
    """
    callbacks = run_callbacks(tuner)
    listed = all(any(isinstance(callback, kind) for callback in callbacks)
                 for kind in (CSVLoggerCallback, JsonLoggerCallback))
    with scoped_environment({AUTO_LOGGERS_ENV: "1"} if listed else {}):
        yield listed


@contextlib.contextmanager
def scoped_environment(values: dict):
    """Within this context ``os.environ`` holds ``values``; after it, each key is as it was (unset or not)."""
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def fit(tuner, keep_checkpoints: int):
    """``tuner.fit()``, with Ray's failures shown as one line each, no logger Tune adds on its own
    (``listed_loggers_only``) and no strict metric check (``STRICT_METRIC_ENV``), then Tune's last snapshot
    written into the storage (``SnapshotsAtEnd`` does it within ``fit``; ``commit_snapshots`` here for a sweep
    started without it) and each trial left with its newest ``keep_checkpoints`` checkpoints up to the latest
    one Tune holds (``prune_checkpoints``); returns its ``ResultGrid``. If ``fit`` raised, or Tune's final save
    failed (``SnapshotsAtEnd`` wrote nothing), the storage keeps the snapshot before, and every checkpoint."""
    condense_ray_errors()
    try:
        with listed_loggers_only(tuner), scoped_environment({STRICT_METRIC_ENV: "1"}):
            results = tuner.fit()
    except BaseException:
        drop_snapshots()
        raise
    end_storage(run_callbacks(tuner), [(result.checkpoint.filesystem, result.checkpoint.path) for result in results
                                       if result.checkpoint is not None], keep_checkpoints)
    return results


def end_storage(callbacks: list, latest: list, keep_checkpoints: int) -> None:
    """After ``Tuner.fit`` returned: write Tune's last snapshot into the storage where the run's ``callbacks`` lack
    ``SnapshotsAtEnd`` (a sweep started before it), then leave each trial its newest ``keep_checkpoints`` up to
    its latest ``(filesystem, path)`` in ``latest`` (``prune_checkpoints``); but where ``SnapshotsAtEnd`` left
    snapshots held (Tune's final save failed: its last upload may not have ended), drop them and delete nothing:
    the storage keeps the snapshot before, and the checkpoints it names."""
    if not any(isinstance(callback, SnapshotsAtEnd) for callback in callbacks):
        commit_snapshots()
    elif snapshots_held():
        drop_snapshots()
        return
    prune_checkpoints(latest, keep_checkpoints)


def added_trials(spec: SweepSpec, exp_dir: str, results) -> tuple[TrialPlan, ...]:
    """The trials of ``spec`` that no Tune experiment in ``exp_dir`` holds: neither one of the trials of the
    experiment just run there (its ``ResultGrid``, ``results``) nor a trial that ran to its end
    (``analysis.results.ended_trials``: the trials of earlier experiments in the folder)."""
    held = {result.config["trial_name"] for result in results} | ended_trials(exp_dir)
    return tuple(trial for trial in spec.trials if trial.name not in held)


def run_trials(spec: SweepSpec, exp_dir: str, name: str, storage: str, max_concurrent: int | None, *,
               shared: bool, loaded: dict | None):
    """Run the sweep's trials in ``exp_dir``; return the ``ResultGrid`` of the last Tune experiment run.

    A new sweep is one Tune experiment (the spec saved first, as the sweep's record). A started one is
    first resumed (``Tuner.restore``: finished trials kept, unfinished and errored ones continue from
    their last checkpoints). A grid spec that adds trials to it (``check_same_sweep``) then runs them,
    once every trial of the resumed experiment has ended without error, as a new Tune experiment in the
    same folder (Ray Tune cannot add trials to a restored grid), after saving the spec as the sweep's
    record: the latest experiment is the one a later run resumes, and the trials of earlier ones have
    all ended. While a resumed trial is still failing, the added trials wait for the run that finishes it.
    A latest experiment whose driver stopped before Tune's first snapshot reached the storage
    (``tune_state_saved``) cannot be restored: its trials that had not ended (a search: all of it) run
    again as a new experiment, from the start. Returns an empty list when no trial is left to run.
    """
    def tuner(trials_spec: SweepSpec, restore: bool):
        return build_tuner(trials_spec, exp_dir, name, storage, max_concurrent, shared=shared, loaded=loaded,
                           restore=restore)

    started = tune.Tuner.can_restore(exp_dir)  # False: a new sweep, or one stopped before Tune started it
    if started and not tune_state_saved(exp_dir):  # Tune has nothing to restore the latest experiment from
        if spec.search is None:
            spec = dataclasses.replace(spec, trials=added_trials(spec, exp_dir, ()))
        print(f"sweep {name}: its last run stopped before Tune saved its state; its trials that had not ended "
              f"start again ({len(spec.trials) if spec.search is None else 'the search'})", flush=True)
        if not spec.units:
            return []
        started = False
    if not started:
        save_spec(exp_dir, spec.source)
        return fit(tuner(spec, restore=False), spec.keep_checkpoints)
    results = fit(tuner(spec, restore=True), spec.keep_checkpoints)
    if spec.search is not None:
        return results
    added = added_trials(spec, exp_dir, results)
    if not added:
        return results
    if failed_trials(results)[0]:
        print(f"the {len(added)} trial(s) this spec adds start once the sweep's other trials have finished",
              flush=True)
        return results
    print(f"sweep {name}: adding {len(added)} trial(s) to its {len(spec.trials) - len(added)}", flush=True)
    save_spec(exp_dir, spec.source)
    return fit(tuner(dataclasses.replace(spec, trials=added), restore=False), spec.keep_checkpoints)


def check_sweep_folder(spec: SweepSpec, name: str | None = None, storage: str | None = None) -> tuple[str, str, str]:
    """The sweep's name, storage and folder (``name`` defaults to the spec's, ``storage`` to ``resolve_storage``'s),
    checked before anything is written: the name (``path_name``), the storage (``check_storage``) and, if the
    folder holds a started sweep, that ``spec`` only extends it (``check_resumable``). One-line
    ``GroupsweepError`` otherwise. Returns ``(name, storage, exp_dir)``."""
    name = path_name("sweep name", name or spec.name)
    storage = resolve_storage(storage)
    exp_dir = experiment_dir(storage, name)
    check_storage(storage, exp_dir)
    check_resumable(spec, exp_dir)
    return name, storage, exp_dir


def run_sweep(spec: SweepSpec, *, name: str | None = None, storage: str | None = None, address: str | None = None,
              max_concurrent: int | None = None, num_cpus: int | None = None, share: bool = True,
              dashboard: bool = False, on_checked: Callable[[], None] | None = None):
    """Run, resume or extend a sweep (``run_trials``) and return the ``ResultGrid`` of its last Tune experiment.

    ``name`` defaults to the spec's name, ``storage`` to ``resolve_storage(None)``. ``share=False``
    makes every trial load its dataset itself instead of reading it from the object store. Resource requests
    are checked with ``check_nodes_fit``: for local Ray, impossible ones are refused before Ray starts (and
    again against its live node); on a cluster (``address`` or ``$RAY_ADDRESS``), a trial that no live node
    can hold gets a warning, and Tune waits for the autoscaler. Every check of the module docstring runs
    before Ray starts and before anything is written; then the sweep directory is locked for the run
    (``SweepLocked`` when another driver holds it) and ``on_checked()`` is called before Ray starts (the command
    line prints its header there, so that a refusal is its only line). A storage failure that stops the sweep
    raises ``StorageFailure``.
    """
    set_env_defaults()
    address = cluster_address(address)
    if address:
        check_cluster_address(address)
    if not address and not ray.is_initialized():
        check_nodes_fit(spec, [local_node_shape(num_cpus)])
    name, storage, exp_dir = check_sweep_folder(spec, name, storage)
    warning = early_stopping_warning(list(spec.cells), spec.search) if spec.search is not None else None
    if warning:
        print(warning, file=sys.stderr, flush=True)
    # a cluster's datasets and weights may live on its workers only: there, the trials load and check them
    loaded = load_datasets(spec) if not address else None
    if loaded is not None and spec.search is not None:  # (on a cluster the trials load the datasets)
        check_metric_index(spec.search, {cell.name: loaded[dataset_key(cell.config)] for cell in spec.cells})
    if not address:
        check_local_weights(spec)
    with SweepLock(exp_dir) as lock:
        check_resumable(spec, exp_dir)  # again: no other driver can change it now
        if on_checked is not None:
            on_checked()
        ray_started_here = not ray.is_initialized()
        start_ray(address, num_cpus, dashboard=dashboard)
        try:
            check_nodes_fit(spec, live_node_shapes(), autoscaling=bool(address))
            results = run_trials(spec, exp_dir, name, storage, max_concurrent or spec.max_concurrent, shared=share,
                                 loaded=loaded)
            if lock.lost:  # a lease on object storage that another driver took: this run was stopped
                raise SweepLocked(f"{lock.lost}; this run stopped")
            return results
        except ConnectionError:
            raise  # Ray's own connections, not the storage
        except (OSError, EOFError, pickle.UnpicklingError) as error:
            raise StorageFailure(f"the sweep stopped: its storage {exp_dir} failed ({one_line(error)}); files "
                                 "already written are intact: free space or fix the storage, then run the same "
                                 "command again to resume") from None
        finally:
            if ray_started_here:  # a caller in this process (the Python API, a test) gets its process back as it was
                ray.shutdown()
                unmark_environment()

