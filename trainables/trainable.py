"""The Ray Tune function trainable: one trial is one ``finetune`` run, reported every epoch and checkpointed
as its ``checkpoint_every`` says.

A trial's config is a flat dict of ``TrainConfig`` fields plus ``trial_name``; its directory is
``<experiment_dir>/<trial_name>`` (``trial_dir.trial_dirname`` is the Tuner's trial name and dirname creator).
Every epoch the trial

- writes the labels (once) and that epoch's val/test predictions into its directory through the
  trial-directory contract (``trainables.trial_dir``: ``LABELS_FILE``, ``predictions_file``), atomically;
- calls ``ray.tune.report`` with every metric of the epoch (flat keys such as ``val/wga``), plus
  ``status`` (``ok``) and ``node_id``, and, on the epochs ``TrainConfig.checkpoints`` names (every
  ``checkpoint_every`` epochs and the last), a checkpoint holding ``EpochResult.state()``; on the
  other epochs the report has no checkpoint (predictions are still written every epoch).

Its run is ``trainables.plans.train_run``: ``finetune`` with the training plan of ``training_plan`` (D3M
and JTT trials select their examples there), or DFR's last-layer retraining (one epoch, numbered ``epochs``).
A restarted trial resumes from ``ray.tune.get_checkpoint()``, its latest checkpoint, and repeats the
epochs after it (at most ``checkpoint_every - 1``), bit-identically on the CPU; one whose checkpoint
already holds its last epoch reports that epoch's row again (kept in the checkpoint, ``REPORT_KEY``) and
returns. A run whose loss diverges reports one last row with ``status: diverged``
and ends normally, so Tune does not retry it. The device is the GPU Ray assigned to the trial
(``ray.get_gpu_ids()``), else the CPU; torch uses as many threads as the trial has CPUs.

Fault injection (tests only, off by default): with ``GROUPSWEEP_FAULT_INJECT="<trial_name>:<epoch>"`` in
the trial's environment, that trial (its rank 0 worker, for a trial with several) raises ``InjectedFault`` once,
right after reporting that epoch; a marker file (``trial_dir.fault_marker``) in its directory makes the retry
run on normally.

A trial with several workers (``Resources.workers > 1``, e.g. ``gpu: 4``) drives a Ray Train
``TorchTrainer`` from the Tune trial: each worker runs ``finetune`` under Accelerate (data parallel),
rank 0 writes the files and the checkpoint, and ``TuneReportCallback`` forwards rank 0's metrics to Tune.
Its Ray Train run lives in ``<trial dir>/train``: a worker's failure fails the run and so the Tune trial, and
Tune's retry starts a ``TorchTrainer`` of the same name there, whose workers resume from the run's latest
checkpoint.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

import psutil
import ray
import ray.train
import ray.tune
import torch
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from trainables.config import TrainConfig
from trainables.config_data import dataset_key, load_config_dataset
from trainables.errors import GroupsweepError
from trainables.finetune import DivergenceError
from trainables.plans import train_run
from trainables.trial_dir import (LABELS_FILE, STATE_FILE, TRAIN_RUN_NAME, TrialDir, checkpoint_name, fault_marker,
                                  join_location, predictions_file, unit_name)

log = logging.getLogger("groupsweep.trainable")

# Metrics shown first (Ray's trial table picks the first numeric ones).
LEADING_METRICS = ("epoch", "val/wga", "test/wga", "test/avg_acc", "optim/loss")
# A checkpoint is written into a temporary folder ``<tempdir>/groupsweep-ckpt-<pid>-<random>`` before Tune takes it.
STAGING_PREFIX = "groupsweep-ckpt-"
FAULT_ENV = "GROUPSWEEP_FAULT_INJECT"
# A checkpoint's state also holds the row reported with it, so that a trial restored from its last epoch's
# checkpoint can report that row again (``run_finetune``): the checkpoint may have been kept without its row.
REPORT_KEY = "report"


class InjectedFault(RuntimeError):
    """The failure raised by ``GROUPSWEEP_FAULT_INJECT`` (tests of trial retries)."""


def epoch_metrics(result, node_id: str) -> dict:
    """The row reported for one epoch: leading metrics first, then the rest, ``status`` and ``node_id``."""
    metrics = {key: result.metrics[key] for key in LEADING_METRICS if key in result.metrics}
    metrics.update(result.metrics)
    metrics["status"] = "ok"
    metrics["node_id"] = node_id
    return metrics


def load_state(checkpoint, fallback: TrialDir | None = None) -> dict | None:
    """The ``finetune`` state saved in a Ray checkpoint (None for no checkpoint).

    A checkpoint without a readable ``state.pt`` holding a state dict with an ``epoch`` raises a
    one-line ``GroupsweepError`` naming the checkpoint (the trial fails instead of training from a
    damaged state); with ``fallback``, the trial's directory, it falls back instead to the newest
    kept checkpoint that is readable (``TrialDir.newest_readable_state``), or to no state (the trial
    starts over) when none is, with a warning.
    """
    if checkpoint is None:
        return None
    if fallback is not None:
        try:
            return load_state(checkpoint)
        except GroupsweepError as damaged:
            found = fallback.newest_readable_state()
            log.warning("%s; resuming from %s", damaged,
                        f"{found[0]} (epoch {found[1]['epoch']})" if found else "the start (no readable checkpoint)")
            return found[1] if found else None
    try:
        with checkpoint.as_directory() as directory:  # a URI's checkpoint is downloaded
            state = torch.load(os.path.join(directory, STATE_FILE), map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - missing (folder or file), truncated or not a torch file
        reason = " ".join(str(error).split())[:200]
        raise GroupsweepError(f"checkpoint {checkpoint.path} is unreadable: {STATE_FILE} "
                              f"({type(error).__name__}: {reason})") from None
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
        raise GroupsweepError(f"checkpoint {checkpoint.path} holds no groupsweep training state "
                              f"({STATE_FILE} is a {type(state).__name__} without an integer 'epoch')")
    return state


def injected_fault(trial_name: str) -> int | None:
    """The epoch after which ``GROUPSWEEP_FAULT_INJECT`` makes ``trial_name`` fail once, or None."""
    value = os.environ.get(FAULT_ENV, "")
    name, _, epoch = value.rpartition(":")
    return int(epoch) if name == trial_name and epoch.isdigit() else None


class EpochReporter:
    """The ``on_epoch`` callback of a trial: files, then one report, with a checkpoint when
    ``EpochResult.checkpoint`` says the epoch is one to save.

    ``report(metrics, checkpoint)`` is ``ray.tune.report`` (single-process trials) or
    ``ray.train.report`` (TorchTrainer workers). ``files`` is None on workers other than rank 0, which
    report their metrics without files or checkpoint.
    """

    def __init__(self, report, checkpoint_class, files: TrialDir | None, node_id: str,
                 fault_epoch: int | None = None):
        self.report = report
        self.checkpoint_class = checkpoint_class
        self.files = files
        self.node_id = node_id
        self.fault_epoch = fault_epoch
        self.last_epoch = 0

    def __call__(self, result) -> None:
        metrics = epoch_metrics(result, self.node_id)
        if self.files is None:
            self.report(metrics, checkpoint=None)
            self.last_epoch = result.epoch
            return
        if not self.files.exists(LABELS_FILE):
            self.files.write_npz(LABELS_FILE, result.labels)
        self.files.write_npz(predictions_file(result.epoch), result.predictions)
        if result.checkpoint:
            directory = staging_directory()
            try:
                torch.save({**result.state(), REPORT_KEY: metrics}, os.path.join(directory, STATE_FILE))
                self.report(metrics, checkpoint=self.checkpoint_class.from_directory(directory))
            finally:
                shutil.rmtree(directory, ignore_errors=True)
        else:
            self.report(metrics, checkpoint=None)
        self.last_epoch = result.epoch
        marker = fault_marker(result.epoch)
        if result.epoch == self.fault_epoch and not self.files.exists(marker):
            self.files.write_marker(marker)
            raise InjectedFault(f"{FAULT_ENV}: failing once after epoch {result.epoch}")


def staging_directory(root: str | None = None) -> str:
    """A new folder in ``root`` (default: the temporary folder) to write one checkpoint into, named after this
    process (``STAGING_PREFIX``); first removes the ones that processes no longer alive left behind (a worker
    killed while it reported a checkpoint: its ``finally`` never ran, and a checkpoint is up to ~1 GB)."""
    root = root or tempfile.gettempdir()
    for name in os.listdir(root):
        owner = name.removeprefix(STAGING_PREFIX).split("-", 1)[0]
        if name.startswith(STAGING_PREFIX) and owner.isdigit() and not psutil.pid_exists(int(owner)):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=root)


def run_finetune(config: TrainConfig, reporter: EpochReporter, state: dict | None, cpu: bool,
                 dataset=None, trial_dir: str | None = None, experiment_dir: str | None = None) -> None:
    """Run (or continue) the trial's run (on ``dataset`` when given, else the one ``config`` loads) with
    ``trainables.plans.train_run``; a divergence is reported as a final ``status: diverged`` row.

    ``trial_dir`` / ``experiment_dir`` reach the plan: a ``d3m`` / ``auto-d3m`` / ``jtt`` / ``dfr`` trial
    takes its base model from the sweep's ``none`` trial in ``experiment_dir`` (or trains it here), and
    saves its selection (or DFR's last layer) in ``trial_dir``; a selection is reused when the trial resumes.
    """
    if state is not None:
        reporter.last_epoch = state["epoch"]
        if state["epoch"] >= config.epochs:
            log.info("trial already finished its %d epochs", config.epochs)
            if REPORT_KEY in state:  # its last row again: a kill between its checkpoint and its row lost the row
                reporter.report(state[REPORT_KEY], checkpoint=None)
            return
    try:
        dataset = dataset if dataset is not None else load_config_dataset(config)
        train_run(config, dataset, reporter, resume_state=state, cpu=cpu, trial_dir=trial_dir,
                  experiment_dir=experiment_dir)
    except DivergenceError as error:
        log.warning("run diverged: %s", error)
        reporter.report({"epoch": reporter.last_epoch + 1, "status": "diverged", "error": str(error),
                         "node_id": reporter.node_id}, checkpoint=None)


def _set_threads(config: TrainConfig, cpus: float) -> None:
    torch.set_num_threads(config.num_threads or max(1, int(cpus)))


def train_trial(config: dict, experiment_dir: str, workers: dict | None = None, datasets: dict | None = None) -> None:
    """The Tune function trainable.

    ``experiment_dir``: the sweep's directory (``<storage>/<name>``, a path or URI), parent of the trial
    directories. ``workers``: ``{unit_name: {"workers": n, "bundle": {"CPU": c, "GPU": g}}}`` for the
    trials that run ``n`` workers (each holding ``bundle``) through a ``TorchTrainer``; every other
    trial runs in this process. ``datasets``: ``{dataset_key(config): ObjectRef}`` of the datasets the
    sweep shares through the object store (a trial whose dataset is not listed loads its own).
    """
    train_config = TrainConfig.from_dict(config)
    trial_dir = join_location(experiment_dir, config["trial_name"])
    spread = (workers or {}).get(unit_name(config))
    if spread is not None:
        run_workers(train_config, config["trial_name"], trial_dir, spread)
        return
    resources = ray.tune.get_context().get_trial_resources().required_resources
    _set_threads(train_config, resources.get("CPU", 1))
    reporter = EpochReporter(ray.tune.report, ray.tune.Checkpoint, TrialDir(trial_dir),
                             ray.get_runtime_context().get_node_id(), injected_fault(config["trial_name"]))
    state = load_state(ray.tune.get_checkpoint(), fallback=TrialDir(trial_dir))
    ref = (datasets or {}).get(dataset_key(config))
    run_finetune(train_config, reporter, state, cpu=not ray.get_gpu_ids(),
                 dataset=ray.get(ref) if ref is not None else None, trial_dir=trial_dir,
                 experiment_dir=experiment_dir)


def run_workers(config: TrainConfig, trial_name: str, trial_dir: str, spread: dict) -> None:
    """Drive a Ray Train ``TorchTrainer`` with one Accelerate process per worker, reporting to the trial
    ``trial_name`` (whose directory is ``trial_dir``).

    ``spread``: ``{"workers": n, "bundle": {"CPU": c, "GPU": g}, "keep_checkpoints": k}``: the resources of
    each worker and how many of the run's latest checkpoints to keep.
    """
    bundle = spread["bundle"]
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"config": config.to_dict(), "trial_name": trial_name, "trial_dir": trial_dir,
                           "cpus_per_worker": bundle["CPU"]},
        scaling_config=ray.train.ScalingConfig(
            num_workers=spread["workers"], use_gpu=bundle["GPU"] > 0,
            resources_per_worker={key: value for key, value in bundle.items() if value > 0},
            placement_strategy="STRICT_PACK",  # every worker on one node (PACK may spread them over nodes)
        ),
        run_config=ray.train.RunConfig(
            name=TRAIN_RUN_NAME, storage_path=trial_dir, callbacks=[TuneReportCallback()],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=spread["keep_checkpoints"]),
        ),
    )
    trainer.fit()


def report_to_train(metrics: dict, checkpoint=None) -> None:
    """``ray.train.report``, naming a checkpoint's folder ``checkpoint_<epoch, 6 digits>``
    (``trial_dir.checkpoint_name``), the names the trial directory's readers list (``TrialDir.state_files``):
    Ray Train would name it by the time it was saved."""
    name = checkpoint_name(metrics["epoch"]) if checkpoint is not None else None
    ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)


def worker_loop(loop_config: dict) -> None:
    """One TorchTrainer worker: ``finetune`` under Accelerate; rank 0 writes files and checkpoints."""
    config = TrainConfig.from_dict(loop_config["config"])
    _set_threads(config, loop_config["cpus_per_worker"])
    rank = ray.train.get_context().get_world_rank()
    files = TrialDir(loop_config["trial_dir"]) if rank == 0 else None
    reporter = EpochReporter(report_to_train, ray.train.Checkpoint, files, ray.get_runtime_context().get_node_id(),
                             injected_fault(loop_config["trial_name"]) if rank == 0 else None)
    state = load_state(ray.train.get_checkpoint(), fallback=TrialDir(loop_config["trial_dir"]))
    run_finetune(config, reporter, state, cpu=not ray.get_gpu_ids())
