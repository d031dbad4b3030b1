"""Live tracking of a sweep, through Ray Tune's own logger callbacks: TensorBoard, MLflow, Weights & Biases.

A spec's ``tracking:`` (or ``groupsweep run --tracking NAME``, repeatable) names the trackers::

    tracking: [tensorboard, mlflow]                 # defaults for each
    tracking:                                       # or with settings
      mlflow: {tracking_uri: "http://mlflow.example:5000"}
      wandb: {project: group-robustness, mode: offline}

- ``tensorboard``: Tune's ``TBXLoggerCallback`` writes an event file per trial into the trial's directory
  (one run per trial, every per-epoch metric); ``tensorboard --logdir <storage>/<sweep>`` shows them.
- ``mlflow``: Tune's ``MLflowLoggerCallback``: one MLflow experiment per sweep (its name), one run per trial
  named by the trial, the trial config (sampled hyperparameters included) as params, every per-epoch
  metric as a metric history, and the tag ``groupsweep.sweep``. The default tracking URI is a local file
  store, ``<sweep directory>/mlruns`` (``./mlruns`` for a sweep in object storage); MLflow 3 keeps that
  backend in maintenance mode, so groupsweep sets ``MLFLOW_ALLOW_FILE_STORE=true`` (``tracker_environment``;
  a server or a database URI is passed as given and ignores it).
- ``wandb``: Tune's ``WandbLoggerCallback``: project (default: the sweep name), the sweep as the group, one
  run per trial; ``mode: offline`` (the default here) works without a network or an API key (``wandb sync``
  uploads later; groupsweep sets ``WANDB_MODE`` to it, which Ray's callback reads).

A resumed sweep keeps the trackers it started with: Tune restores its callbacks with the experiment (their
environment is set again from the saved spec); trials that a grid spec adds run with the spec's trackers. The
TensorBoard and MLflow callbacks are Tune's, made to keep one record per trial across a resume
(``sweeps.resumed_tracking``).

Each tracker's package is optional (pip extras ``mlflow`` and ``wandb``; TensorBoard needs ``tensorboardX``,
which Ray Tune installs); a missing one is refused in one line before Ray starts.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field

from trainables.errors import GroupsweepError
from trainables.trial_dir import join_location

# tracker -> (its settings and their defaults, Python package it needs, pip extra or package to install)
TRACKERS = {
    "tensorboard": ({}, "tensorboardX", "tensorboardX"),
    "mlflow": ({"tracking_uri": None}, "mlflow", "groupsweep[mlflow]"),
    "wandb": ({"project": None, "mode": "offline"}, "wandb", "groupsweep[wandb]"),
}
WANDB_MODES = ("offline", "online", "disabled")
MLFLOW_STORE = "mlruns"


@dataclass(frozen=True)
class Tracking:
    """The trackers of a sweep and their settings (``tracker -> {setting: value}``), in the spec's order."""

    trackers: dict = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.trackers)


def parse_tracking(value, extra=()) -> Tracking:
    """A spec's ``tracking`` value (None, a list of names, or a mapping name -> settings) plus the names of
    ``run --tracking`` (``extra``), checked: unknown trackers or settings, a bad wandb mode, and a missing
    package are one-line ``GroupsweepError``s."""
    if value is None:
        value = {}
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        for name in value:
            if not isinstance(name, str):
                raise GroupsweepError(f"tracking: expected tracker names (or a mapping name -> settings), got {name!r}")
        value = {name: None for name in value}
    if not isinstance(value, dict):
        raise GroupsweepError(f"tracking: expected a list of trackers or a mapping, got {value!r}")
    trackers = {}
    for name, settings in list(value.items()) + [(name, None) for name in extra if name not in value]:
        if name not in TRACKERS:
            raise GroupsweepError(f"tracking: unknown tracker {name!r}; choose from: {', '.join(TRACKERS)}")
        defaults, package, install = TRACKERS[name]
        settings = {} if settings is None else settings
        if not isinstance(settings, dict):
            raise GroupsweepError(f"tracking.{name}: expected a mapping of settings, got {settings!r}")
        for key in settings:
            if key not in defaults:
                allowed = ", ".join(defaults) or "none"
                raise GroupsweepError(f"tracking.{name}: unknown setting {key!r}; allowed: {allowed}")
        for key, setting in settings.items():
            if setting is not None and not isinstance(setting, str):
                raise GroupsweepError(f"tracking.{name}.{key}: expected a string, got {setting!r}")
        merged = {**defaults, **settings}
        if name == "wandb" and merged["mode"] not in WANDB_MODES:
            raise GroupsweepError(f"tracking.wandb.mode: unknown mode {merged['mode']!r}; "
                                  f"choose one of: {', '.join(WANDB_MODES)}")
        if importlib.util.find_spec(package) is None:
            raise GroupsweepError(f"tracking: {name} needs the {package} package, which is not installed; "
                                  f"install it with: pip install '{install}'")
        trackers[name] = merged
    return Tracking(trackers)


def mlflow_default_uri(exp_dir: str) -> str:
    """The embedded MLflow store of a sweep: ``<sweep directory>/mlruns`` as a ``file:`` URI, or ``./mlruns``
    for a sweep in object storage."""
    if "://" in exp_dir and not exp_dir.startswith("file://"):
        return f"file:{os.path.abspath(MLFLOW_STORE)}"
    path = exp_dir[len("file://"):] if exp_dir.startswith("file://") else exp_dir
    return f"file:{join_location(os.path.abspath(path), MLFLOW_STORE)}"


def tracker_environment(tracking: Tracking) -> None:
    """Set, in this driver process, what the trackers' Ray callbacks read from the environment when they are set
    up, which Tune also does to the callbacks it restores with a resumed sweep: ``MLFLOW_ALLOW_FILE_STORE=true``
    for MLflow (MLflow 3 refuses its file store without it: the default store, a ``file:`` URI or a plain
    path; a tracking server ignores it) and ``WANDB_MODE`` for W&B in ``offline`` or ``disabled`` mode (Ray's
    ``WandbLoggerCallback`` asks for an API key unless that variable says so). Values already set are kept."""
    if "mlflow" in tracking.trackers:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    mode = tracking.trackers.get("wandb", {}).get("mode")
    if mode in ("offline", "disabled"):
        os.environ.setdefault("WANDB_MODE", mode)


def tracking_callbacks(tracking: Tracking, sweep: str, exp_dir: str) -> list:
    """Ray Tune logger callbacks for ``tracking`` of the sweep named ``sweep`` in ``exp_dir`` (the environment
    they need set first: ``tracker_environment``)."""
    # deferred: Ray and each tracker's package load only when a sweep runs with it
    from sweeps.resumed_tracking import ResumingMLflowLoggerCallback, ResumingTBXLoggerCallback

    tracker_environment(tracking)
    callbacks = []
    for name, settings in tracking.trackers.items():
        if name == "tensorboard":
            callbacks.append(ResumingTBXLoggerCallback())
        elif name == "mlflow":
            uri = settings["tracking_uri"] or mlflow_default_uri(exp_dir)
            callbacks.append(ResumingMLflowLoggerCallback(exp_dir, tracking_uri=uri, experiment_name=sweep,
                                                          tags={"groupsweep.sweep": sweep}, save_artifact=False))
        else:
            from ray.air.integrations.wandb import WandbLoggerCallback  # deferred: Ray and wandb load on use

            callbacks.append(WandbLoggerCallback(project=settings["project"] or sweep, group=sweep,
                                                 mode=settings["mode"], log_config=True))
    return callbacks
