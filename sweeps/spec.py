"""Sweep specs: a YAML description of a grid of finetuning runs, validated and expanded into trials.

A spec is a mapping (every key but ``datasets`` optional)::

    name: demo                       # default sweep name (``groupsweep run --name`` overrides it)
    description: one line shown by ``groupsweep presets``
    datasets:                        # a list of names, or a mapping name -> settings (or null):
      synthetic-waterbirds:
        options: {size: 2000}        #   the dataset's loader options (TrainConfig.dataset_options),
                                     #   e.g. celeba: {target: Young, spurious: Male}; values a dataset can
                                     #   check without its data are checked here (Registries.check_options)
        hparams: {epochs: 8}         #   training settings for this dataset
        models: [toy-convnextv2-xs]  #   the models trained on it (default: the top-level ``models``)
        methods: [none]              #   its balancing methods (default: the top-level ``methods``)
        resources: {cpu: 2}          #   its per-trial resources
    models: [toy-convnextv2-xs]      # a list of names, or a mapping name -> {hparams, resources} (or null)
    methods: [none, subsetting, upsampling, upweighting, {mixture: [2, 3]}]   # or, with hparams of
                                     #   their own: {upweighting: {hparams: {lr: 1e-4}}},
                                     #   {mixture: {ratios: [2, 3], hparams: {...}}},
                                     #   {groupdro: {hparams: {groupdro_eta: 0.1, groupdro_adjustment: 1}}}
    seeds: [0, 1]                    # default [0]
    hparams: {lr: 1.0e-3, batch_size: 64, epochs: 8}    # TrainConfig fields, for every trial
    resources: {cpu: 1, gpu: 0}      # per trial: cpu (> 0), gpu (a fraction of one GPU, or a whole
                                     # number), workers (Accelerate processes through a Ray Train
                                     # TorchTrainer; default = gpu when gpu > 1; CPU workers need gpu 0)
    max_failures: 2                  # retries of a failed trial, from its last checkpoint
    max_concurrent: null             # cap on trials running at once (null: as many as resources allow)
    keep_checkpoints: 1              # checkpoints kept per trial (the last N epochs; ``all``: every epoch)
    after: ["spectral --top 10"]     # groupsweep commands (analyze, plot, spectral, promote, report) run on the sweep's
                                     # directory once every trial has finished (``run --no-after`` skips them)
    override: {epochs: 1}            # TrainConfig fields forced on every trial (what ``--set epochs=1`` adds)
    tracking: [tensorboard, mlflow]  # live tracking through Ray Tune's callbacks (``sweeps.tracking``)
    search: {num_samples: 8, scheduler: asha}   # a hyperparameter search (``sweeps.spaces``): any hparams
                                     # value may then be a space such as {loguniform: [1e-5, 1e-3]}
    parts:                           # optional sub-grids, expanded one after the other:
      - tag: lastlayer               #   appended to trial names, keeps them unique
        datasets: [waterbirds]       #   datasets / models / methods / seeds replace the top-level ones;
                                     #   a dataset named without settings keeps its top-level settings
        hparams: {last_layer_only: true, optimizer: sgd, lr: 1.0e-3, epochs: 20}
        resources: {gpu: 1}          #   hparams / resources are merged over the inherited ones

The grid is dataset x model x method (x ratio, for ``mixture`` and ``mixture-nosubset`` only) x seed, with
each dataset's own model and method lists: a spec pairs image models with image datasets and text models
with text datasets without meaningless cross products. Training settings are merged in this order, later
winning: top-level ``hparams``, the dataset's ``hparams``, the model's ``hparams``, the method's
``hparams``, the part's ``hparams``, ``override``. A trial is named
``<dataset>-<model>-<method><ratio>[-<tag>]-s<seed>`` (``waterbirds-convnextv2-base-mixture2-s1``) and
its config is a flat dict of every ``TrainConfig`` field plus ``trial_name``.

With a ``search:`` block the spec is a hyperparameter search: each dataset x model x method (x ratio,
x tag) is a cell (``sweeps.spaces.SearchCell``) whose spaces are searched on its own, and trials are
created while the search runs (``sweeps.search``); without one, a space in ``hparams`` is refused.

Numbers such as ``1e-5`` are read as floats (YAML 1.2). Every key, name and value is checked before Ray
starts; a bad spec raises a one-line ``GroupsweepError``.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from sweeps.presets import preset_names, preset_path
from sweeps.tracking import Tracking, parse_tracking
from sweeps.spaces import (SPACE_KINDS, SearchCell, SearchSettings, check_metric_reported, check_space, describe_space,
                           is_space, parse_search, space_values, trial_name)
from trainables.balancing import BASE_MODEL_METHODS, METHODS, RATIO_METHODS, method_label
from trainables.config import (BATCH_KEYS, MAX_SEED, METHODS_READING, NON_TRAINING_FIELDS, OPTIMIZERS_READING,
                               TrainConfig, check_batch_split, check_precision_device)
from trainables.errors import GroupsweepError, choose, is_integer, is_real, path_name
from trainables.models import MODELS, check_weights_request, get_spec
from trainables.trial_dir import METHOD_HPARAMS_KEY

SPEC_KEYS = ("name", "description", "datasets", "models", "methods", "seeds", "hparams", "resources",
             "max_failures", "max_concurrent", "keep_checkpoints", "after", "override", "parts", "search",
             "tracking")
METHOD_KEYS = ("ratios", "hparams")
# TrainConfig fields that hold a mapping of their own: never a search space.
UNSEARCHABLE_FIELDS = ("d3m",)
PART_KEYS = ("tag", "datasets", "models", "methods", "seeds", "hparams", "resources")
DATASET_KEYS = ("options", "hparams", "models", "methods", "resources")
MODEL_KEYS = ("hparams", "resources")
RESOURCE_KEYS = ("cpu", "gpu", "workers")
# TrainConfig fields that are grid axes, set by the spec's structure rather than by hparams.
AXIS_FIELDS = ("dataset", "dataset_options", "model", "method", "ratio", "seed")
# Training settings whose numbers are integers (their type admits int, not float: ``eval_train: 2`` too), and
# the space kinds that sample reals.
INTEGER_FIELDS = tuple(name for name, spec_field in TrainConfig.__dataclass_fields__.items()
                       if "int" in str(spec_field.type).split(" | ") and "float" not in str(spec_field.type))
REAL_SPACE_KINDS = ("uniform", "loguniform", "quniform")
# The spec key that sets each grid axis.
GRID_KEYS = {"dataset": "datasets", "model": "models", "method": "methods", "ratio": "methods", "seed": "seeds"}
HPARAM_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in AXIS_FIELDS)
DEFAULT_RESOURCES = {"cpu": 1, "gpu": 0}
# CPU of the Tune trial that only drives a multi-worker TorchTrainer (its workers hold the rest).
DRIVER_CPU = 0.01
# The groupsweep commands a spec's ``after`` list may run on the finished sweep's directory.
AFTER_COMMANDS = ("analyze", "plot", "spectral", "promote", "report")
# Where ``after`` commands are checked, the sweep directory is not known yet: this stands in for it.
RUN_DIR_PLACEHOLDER = "RUN_DIR"


# Defaults of the spec keys ``max_failures`` and ``keep_checkpoints``.
DEFAULT_MAX_FAILURES, DEFAULT_KEEP_CHECKPOINTS = 2, 1

@dataclass(frozen=True)
class Resources:
    """What one trial asks Ray for: ``cpu`` cores and ``gpu`` GPUs in all, split over ``workers`` processes.

    One worker: the trial itself holds ``{CPU: cpu, GPU: gpu}`` (``gpu`` may be a fraction of one GPU).
    Several workers: the Tune trial holds ``DRIVER_CPU`` and drives a Ray Train ``TorchTrainer`` whose
    workers each hold ``{CPU: (cpu - DRIVER_CPU) / workers, GPU: gpu / workers}`` and run Accelerate
    together.
    """

    cpu: float = 1
    gpu: float = 0
    workers: int = 1

    @property
    def worker_bundle(self) -> dict:
        """Resources of one training process, in Ray's resource names."""
        if self.workers == 1:
            return {"CPU": self.cpu, "GPU": self.gpu}
        return {"CPU": (self.cpu - DRIVER_CPU) / self.workers, "GPU": self.gpu / self.workers}


@dataclass(frozen=True)
class TrialPlan:
    """One trial of a sweep: its name, flat config (TrainConfig fields + ``trial_name``) and resources."""

    name: str
    config: dict
    resources: Resources

    @property
    def method_label(self) -> str:
        """The balancing method as shown in tables, e.g. ``mixture 2:1``."""
        return method_label(self.config["method"], self.config["ratio"])


@dataclass(frozen=True)
class SweepSpec:
    """A validated, expanded sweep: the trials in grid order plus sweep-wide settings.

    ``source`` is the effective spec mapping (command-line overrides included); saving it as YAML and
    loading it again gives the same trials.
    """

    name: str
    description: str
    trials: tuple[TrialPlan, ...]
    max_failures: int
    max_concurrent: int | None
    source: dict
    keep_checkpoints: int = 1
    after: tuple[str, ...] = ()
    search: SearchSettings | None = None
    cells: tuple[SearchCell, ...] = ()
    tracking: Tracking = Tracking()

    @property
    def units(self) -> tuple:
        """What the sweep runs, as named configs with resources: its trials, or a search's cells (whose
        trials are created while the search runs)."""
        return self.cells if self.search is not None else self.trials

    def after_argv(self, run_dir: str) -> list[list[str]]:
        """The ``after`` commands as ``groupsweep`` argument lists on the sweep directory ``run_dir``."""
        return [after_argv(command, run_dir) for command in self.after]


def random_weights_note(spec: SweepSpec) -> str | None:
    """A ``note:`` line naming the models that have pretrained weights (not toy ones) but that some of the sweep's
    trials train from random initialisation (``pretrained: false``, the default, and no ``model_path``): the
    papers finetune pretrained models, so an unset ``pretrained`` is easy to miss. None when there is none."""
    names = sorted({unit.config["model"] for unit in spec.units
                    if unit.config.get("pretrained") is False and unit.config.get("model_path") is None
                    and not get_spec(unit.config["model"]).toy})
    if not names:
        return None
    return (f"note: {', '.join(names)} train(s) from random initialisation in some trials (pretrained: false); "
            f"set pretrained: true to finetune the pretrained weights")


def method_slug(method: str, ratio: float | None) -> str:
    """The method as it appears in trial names: ``upsampling``, ``mixture2``, ``mixture-nosubset3.5``."""
    return method if ratio is None else f"{method}{ratio:g}"


class SpecLoader(yaml.SafeLoader):
    """YAML loader of specs and ``--set`` values that reads ``1e-5`` as a float, ``1:30`` as a string and only
    ``true`` and ``false`` as booleans, as YAML 1.2 does (PyYAML's 1.1 rules make the first a string, the second
    the base-60 number 90 and ``no`` the boolean false), and refuses a key repeated in one mapping (PyYAML keeps the
    last silently; YAML 1.2 forbids it)."""

    def construct_mapping(self, node, deep=False):
        """The mapping of ``node``; a ``ConstructorError`` at the second occurrence of a repeated key."""
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        """An int, except a base-60 one (``1:30``), which stays the string it was written as; one too long for
        Python to convert (over ``sys.get_int_max_str_digits()`` digits) is a ``ConstructorError`` at its line."""
        if ":" in node.value:
            return self.construct_scalar(node)
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            raise yaml.constructor.ConstructorError(None, None, f"an integer of {len(node.value)} characters is too "
                                                    "long", node.start_mark) from None

    def construct_yaml_bool(self, node):
        """A boolean only when written ``true`` or ``false`` (any case), as YAML 1.2 reads them; PyYAML's 1.1
        words ``yes``, ``no``, ``on``, ``off`` stay strings (``mixed_precision: no`` is the setting's ``no``)."""
        if node.value.lower() in ("true", "false"):
            return super().construct_yaml_bool(node)
        return self.construct_scalar(node)

    def construct_yaml_float(self, node):
        """A float, except a base-60 one (``1:30.5``), which stays the string it was written as."""
        return self.construct_scalar(node) if ":" in node.value else super().construct_yaml_float(node)


SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)
SpecLoader.add_constructor("tag:yaml.org,2002:bool", SpecLoader.construct_yaml_bool)
SpecLoader.add_constructor("tag:yaml.org,2002:int", SpecLoader.construct_yaml_int)
SpecLoader.add_constructor("tag:yaml.org,2002:float", SpecLoader.construct_yaml_float)


def _fail(where: str, message: str):
    raise GroupsweepError(f"{where}: {message}" if where else message)


def parse_yaml(text: str, what: str):
    """``text`` read as a spec reads YAML (``SpecLoader``). What it cannot read is a one-line ``GroupsweepError``
    naming ``what`` (``"spec file 'a.yaml'"``): not YAML (with the line), an integer too long to convert, or
    nesting deeper than Python's recursion limit."""
    try:
        return yaml.load(text, Loader=SpecLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise GroupsweepError(f"{what}{line} is not valid YAML ({' '.join(problem.split())})") from None
    except RecursionError:
        raise GroupsweepError(f"{what} is nested too deeply to read (deeper than Python's recursion limit of "
                              f"{sys.getrecursionlimit()} calls allows)") from None


def decode_text(data: bytes, what: str) -> str:
    """``data`` as UTF-8 text; other bytes are a one-line ``GroupsweepError`` naming ``what`` and the first bad
    byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise GroupsweepError(f"{what} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); "
                              "save it as UTF-8") from None


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        _fail(where, f"expected a mapping, got {value!r}")
    return value


def _check_keys(values: dict, allowed, where: str) -> None:
    for key in values:
        if key not in allowed:
            _fail(where, f"unknown key {key!r}; allowed: {', '.join(allowed)}")


def _named_entries(value, where: str, what: str) -> dict:
    """A list of names or a mapping name -> settings, as an ordered mapping name -> settings (or None)."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        entries = {}
        for item in value:
            if not isinstance(item, str):
                _fail(where, f"{what} names must be strings, got {item!r}")
            if item in entries:
                _fail(where, f"{what} {item!r} is listed twice")
            entries[item] = None
        return entries
    if isinstance(value, dict):
        return dict(value)
    _fail(where, f"expected a list of {what} names or a mapping, got {value!r}")


def _check_name(kind: str, name: str, allowed, where: str) -> None:
    try:
        choose(kind, name, sorted(allowed))
    except GroupsweepError as error:
        _fail(where, str(error))


@dataclass(frozen=True)
class Registries:
    """The names a spec may use: datasets (name -> loader option names), models, balancing methods; and
    ``check_options(dataset, options)``, which refuses option values a dataset can refuse without reading
    data, ``check_model(dataset, model)``, which refuses a model the dataset's inputs cannot feed, and
    ``check_weights(model, pretrained, model_path)``, which refuses weights no machine can have (each a
    one-line ``GroupsweepError``; None: no such check)."""

    datasets: dict
    models: tuple
    methods: tuple
    ratio_methods: tuple
    check_options: Callable[[str, dict], None] | None = None
    check_model: Callable[[str, str], None] | None = None
    check_weights: Callable[[str, bool, str | None], None] | None = None


def package_registries() -> Registries:
    """The package's datasets, models and methods."""
    # deferred: the dataset registry (pandas) loads when a spec is built, not for `--help`
    from trainables.config_data import check_model_inputs
    from trainables.data import DATASETS, check_dataset_options, dataset_options

    return Registries(datasets={name: tuple(dataset_options(name)) for name in DATASETS}, models=tuple(MODELS),
                      methods=tuple(METHODS), ratio_methods=tuple(RATIO_METHODS),
                      check_options=check_dataset_options, check_model=check_model_inputs,
                      check_weights=_check_model_weights)


def _check_model_weights(model: str, pretrained: bool, model_path: str | None) -> None:
    """``check_weights_request`` of the registry model named ``model``."""
    check_weights_request(get_spec(model), pretrained, model_path)


def _parse_ratio(value, method: str, where: str) -> float:
    if not is_real(value, 1):
        _fail(where, f"ratio {value!r} of method {method!r} must be a number >= 1")
    return float(value)


def parse_methods(value, where: str, methods: tuple, ratio_methods: tuple) -> list[tuple[str, float | None, dict]]:
    """``[none, {mixture: [2, 3]}, {upweighting: {hparams: {lr: 1e-4}}}]`` ->
    ``[("none", None, {}), ("mixture", 2.0, {}), ("mixture", 3.0, {}), ("upweighting", None, {"lr": 1e-4})]``.

    A ratio method must come with its ratios (``{mixture: [2]}``, ``{mixture: 2}`` or
    ``{mixture: {ratios: [2], hparams: {...}}}``); any other method takes none. A method's own ``hparams``
    (checked like every ``hparams``, spaces included) apply to its trials only.
    """
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list) or not value:
        _fail(where, f"methods must be a non-empty list, got {value!r}")
    parsed: list[tuple[str, float | None, dict]] = []
    for item in value:
        if isinstance(item, str):
            name, ratios = item, None
        elif isinstance(item, dict) and len(item) == 1:
            (name, ratios), = item.items()
        else:
            _fail(where, f"a method is a name, {{name: [ratios]}} or {{name: {{ratios, hparams}}}}, got {item!r}")
        _check_name("balancing method", name, methods, where)
        hparams = {}
        if isinstance(ratios, dict):
            _check_keys(ratios, METHOD_KEYS, f"{where}.{name}")
            hparams = check_hparams(ratios.get("hparams"), f"{where}.{name}.hparams")
            ratios = ratios.get("ratios")
        if name in ratio_methods:
            if ratios is None:
                _fail(where, f"method {name!r} needs mixture ratios, e.g. {{{name}: [2]}}")
            ratio_list = ratios if isinstance(ratios, list) else [ratios]
            if not ratio_list:
                _fail(where, f"method {name!r} has an empty ratio list")
            for ratio in ratio_list:
                parsed.append((name, _parse_ratio(ratio, name, where), hparams))
        else:
            if ratios is not None:
                _fail(where, f"method {name!r} takes no ratio (got {ratios!r}); ratios apply to: "
                             f"{', '.join(ratio_methods)}")
            parsed.append((name, None, hparams))
    seen = set()
    for method, ratio, _ in parsed:
        if (method, ratio) in seen:
            _fail(where, f"method {method_label(method, ratio)!r} is listed twice")
        seen.add((method, ratio))
    return parsed


def parse_seeds(value, where: str) -> list[int]:
    """A non-empty list of distinct non-negative integer seeds (a single integer is one seed)."""
    if is_integer(value):
        value = [value]
    if not isinstance(value, list) or not value:
        _fail(where, f"seeds must be a non-empty list of integers, got {value!r}")
    for seed in value:
        if not is_integer(seed, 0) or seed > MAX_SEED:
            _fail(where, f"seed {seed!r} is not an integer from 0 to {MAX_SEED}")
    if len(set(value)) != len(value):
        _fail(where, f"seeds {value!r} repeat a seed")
    return list(value)


def check_hparams(values, where: str) -> dict:
    """Training settings: TrainConfig fields other than the grid axes; a value may be a search space
    (``sweeps.spaces``), checked here."""
    values = _mapping(values, where)
    for key, value in values.items():
        if key in AXIS_FIELDS:
            _fail(where, f"{key!r} is set by the grid (datasets, options, models, methods, seeds), not by hparams")
        if key not in HPARAM_FIELDS:
            _fail(where, f"unknown training setting {key!r}; allowed: {', '.join(HPARAM_FIELDS)}")
        if is_space(value):
            check_searched_setting(key, value, f"{where}.{key}")
    return values


def check_searched_setting(key: str, space: dict, where: str) -> None:
    """Refuse a search space over the training setting ``key`` that is malformed (``check_space``) or that
    no search can use: a mapping of options, real numbers for an integer setting, or a setting that never
    changes the training (``NON_TRAINING_FIELDS``: every configuration would train the same)."""
    if key in UNSEARCHABLE_FIELDS:
        _fail(where, f"{key!r} is a mapping of options and cannot be searched")
    if key in NON_TRAINING_FIELDS:
        _fail(where, f"{key!r} does not change the training, so every configuration of a search over it would "
                     "train the same model; give it one value")
    check_space(space, where)
    kind = next(iter(space))
    if key in INTEGER_FIELDS and kind in REAL_SPACE_KINDS:
        _fail(where, f"{key!r} takes integers but {kind} samples real numbers; use randint or choice")


def parse_resources(values, where: str) -> dict:
    """Check a partial resource request ``{cpu, gpu, workers}`` of a spec level (numbers only; ``make_resources``
    checks the merged request) and return it."""
    values = _mapping(values, where)
    _check_keys(values, RESOURCE_KEYS, where)
    for key, rule in (("cpu", "a positive number"), ("gpu", "a non-negative number")):
        if key in values:
            value = values[key]
            if not is_real(value, 0) or (key == "cpu" and value == 0):
                _fail(where, f"{key} must be {rule}, got {value!r}")
            if not math.isclose(value * 10_000, round(value * 10_000)):  # Ray's resolution of a request
                _fail(where, f"{key} {value!r} is finer than Ray's resolution of 0.0001")
    if "workers" in values:
        workers = values["workers"]
        if not is_integer(workers, 1):
            _fail(where, f"workers must be a positive integer, got {workers!r}")
    return values


def make_resources(values: dict, where: str) -> Resources:
    """Complete a merged resource request: more than one GPU must be whole GPUs, one per worker."""
    cpu, gpu = float(values.get("cpu", 1)), float(values.get("gpu", 0))
    if gpu > 1 and gpu != int(gpu):
        _fail(where, f"gpu {gpu:g} is more than one GPU but not a whole number")
    workers = values.get("workers", int(gpu) if gpu > 1 else 1)
    if workers > 1 and gpu > 0 and gpu != workers:
        _fail(where, f"{workers} workers need one GPU each: set gpu to {workers} (or 0 for CPU workers)")
    if gpu > 1 and workers != gpu:
        _fail(where, f"gpu {gpu:g} needs {int(gpu)} workers (one per GPU), got workers {workers}")
    if workers > 1 and cpu <= DRIVER_CPU:
        _fail(where, f"cpu {cpu:g} is too little for {workers} workers")
    return Resources(cpu=cpu, gpu=gpu, workers=int(workers))


def _model_settings(models: dict, name: str, where: str) -> dict:
    settings = _mapping(models.get(name), f"{where}: models.{name}")
    _check_keys(settings, MODEL_KEYS, f"{where}: models.{name}")
    return settings


def _expand_part(part: dict, tag: str | None, override: dict, registries: Registries,
                 search: SearchSettings | None = None) -> list:
    """The trials of one (part of a) spec, in grid order: dataset, model, method, ratio, seed; with a
    ``search``, its cells instead (dataset, model, method, ratio), each with its spaces."""

    where = f"part {tag!r}" if tag else ""
    if part.get("datasets") is None:
        _fail(where, "no datasets given")
    datasets = _named_entries(part["datasets"], where, "dataset")
    if not datasets:
        _fail(where, "datasets is empty")
    defaults = part.get("dataset_defaults") or {}
    top_models = _named_entries(part["models"], where, "model") if part.get("models") is not None else {}
    top_methods = part.get("methods")
    if top_methods is not None:  # checked even where every dataset has its own list
        parse_methods(top_methods, f"{where}: methods" if where else "methods", registries.methods,
                      registries.ratio_methods)
    for model in top_models:
        _check_name("model", model, registries.models, f"{where + ': ' if where else ''}models")
        _model_settings(top_models, model, where or "models")
    seeds = parse_seeds(part.get("seeds", [0]), where)
    hparams = check_hparams(part.get("hparams"), f"{where}: hparams" if where else "hparams")
    part_hparams = check_hparams(part.get("part_hparams"), f"{where}: hparams")
    resources = parse_resources(part.get("resources"), "resources")
    part_resources = parse_resources(part.get("part_resources"), f"{where}: resources")

    trials = []
    for dataset, settings in datasets.items():
        dwhere = f"{where + ': ' if where else ''}datasets.{dataset}"
        _check_name("dataset", dataset, registries.datasets, dwhere)
        if settings is None:
            settings = defaults.get(dataset)
        settings = _mapping(settings, dwhere)
        _check_keys(settings, DATASET_KEYS, dwhere)
        options = _mapping(settings.get("options"), f"{dwhere}.options")
        allowed_options = registries.datasets[dataset]
        for key in options:
            if key not in allowed_options:
                _fail(f"{dwhere}.options", f"dataset {dataset!r} takes no option {key!r}; "
                                           f"allowed: {', '.join(allowed_options) or 'none'}")
        dataset_hparams = check_hparams(settings.get("hparams"), f"{dwhere}.hparams")
        dataset_resources = parse_resources(settings.get("resources"), f"{dwhere}.resources")
        if settings.get("models") is not None:
            model_names = list(_named_entries(settings["models"], f"{dwhere}.models", "model"))
        else:
            model_names = list(top_models)
        if not model_names:
            _fail(dwhere, "no models: give top-level models or the dataset's own models list")
        method_value = settings.get("methods", top_methods)
        if method_value is None:
            _fail(dwhere, "no methods: give top-level methods or the dataset's own methods list")
        method_list = parse_methods(method_value, f"{dwhere}.methods" if "methods" in settings else
                                    (f"{where}: methods" if where else "methods"),
                                    registries.methods, registries.ratio_methods)
        for model in model_names:
            mwhere = f"{dwhere}: model {model}"
            _check_name("model", model, registries.models, mwhere)
            if registries.check_model is not None:
                try:
                    registries.check_model(dataset, model)
                except GroupsweepError as error:
                    _fail(mwhere, str(error))
            model_settings = _model_settings(top_models, model, where or "models")
            model_hparams = check_hparams(model_settings.get("hparams"), f"models.{model}.hparams")
            model_resources = parse_resources(model_settings.get("resources"), f"models.{model}.resources")
            merged = {**DEFAULT_RESOURCES, **resources, **dataset_resources, **model_resources, **part_resources}
            trial_resources = make_resources(merged, mwhere)
            for method, ratio, method_hparams in method_list:
                if method in BASE_MODEL_METHODS and trial_resources.workers > 1:
                    _fail(mwhere, f"method {method!r} builds on a base model in one process; give its trials "
                                  f"one worker (got {trial_resources.workers})")
                cell = "-".join([dataset, model, method_slug(method, ratio)] + ([tag] if tag else []))
                values = {**hparams, **dataset_hparams, **model_hparams, **method_hparams, **part_hparams}
                values.update(dataset=dataset, dataset_options=dict(options), model=model, method=method,
                              ratio=ratio)
                values = _merge(values, override)
                if registries.check_options is not None and isinstance(values["dataset_options"], dict):
                    try:
                        registries.check_options(dataset, values["dataset_options"])
                    except GroupsweepError as error:
                        _fail(f"{dwhere}.options", str(error))
                if registries.check_weights is not None:
                    try:
                        registries.check_weights(model, values.get("pretrained") is True, values.get("model_path"))
                    except GroupsweepError as error:
                        _fail(f"cell {cell}", str(error))
                for key, value in values.items():
                    if (isinstance(value, dict) and len(value) == 1 and not is_space(value)
                            and not isinstance(getattr(DEFAULT_CONFIG, key, None), dict)):
                        _fail(f"cell {cell}", f"hparams {key}: {value!r} is not a search space; a space is one of "
                                              f"{', '.join(SPACE_KINDS)}")
                space = {key: value for key, value in values.items() if is_space(value)}
                if search is not None:
                    trials.append(_search_cell(cell, values, space, search, seeds, trial_resources,
                                               sorted(set(method_hparams) - set(space))))
                    continue
                if space:
                    key = sorted(space)[0]
                    _fail(f"cell {cell}", f"hparams {key}: {describe_space(space[key])} is a search space; add a "
                                          "`search:` block (e.g. search: {num_samples: 4}) to search it")
                for seed in seeds:
                    name = f"{cell}-s{seed}"
                    try:
                        trial_config = TrainConfig.from_dict({**values, "seed": seed})
                        _check_fits(trial_config, trial_resources)
                        config = trial_config.to_dict()
                    except GroupsweepError as error:
                        _fail(f"trial {name}", str(error))
                    config["trial_name"] = name
                    if method_hparams:
                        config[METHOD_HPARAMS_KEY] = sorted(method_hparams)
                    trials.append(TrialPlan(name=name, config=config, resources=trial_resources))
    return trials


def _most_epochs(trial) -> int:
    """The most epochs a trial (``TrialPlan``) or a search cell (``SearchCell.most_epochs``) runs."""
    return trial.most_epochs if isinstance(trial, SearchCell) else trial.config["epochs"]


# The most combinations of search-space values a cell's check tries together (a few searched settings of a few
# values); beyond it, pairs of settings, each of at most MAX_PAIR_VALUES values (``_check_space_combinations``).
MAX_SPACE_COMBINATIONS = 1024
MAX_PAIR_VALUES = 16
DEFAULT_CONFIG = TrainConfig()  # which settings take a mapping (not a search space)


def _search_cell(name: str, values: dict, space: dict, search: SearchSettings, seeds: list,
                 resources: Resources, method_keys: list) -> SearchCell:
    """The ``SearchCell`` of one dataset x model x method (x ratio, x tag): every value of each space is
    checked as a training setting first (bounds, choices), so a sampled config can never be refused."""
    if search.adaptive:
        for key, value in space.items():
            if "grid" in value:
                _fail(f"cell {name}", f"hparams {key}: grid spaces are for algorithm random only; "
                                      f"{search.algorithm} samples with choice instead")
    method, optimizer = values["method"], values.get("optimizer", DEFAULT_CONFIG.optimizer)
    for key, value in space.items():  # a setting the cell's method or optimizer never reads: nothing to search
        if key in METHODS_READING and method not in METHODS_READING[key]:
            readers = METHODS_READING[key]
            _fail(f"cell {name}: hparams {key}: {describe_space(value)}",
                  f"method {method} does not read {key!r} (searching it there only repeats configurations); "
                  f"search it in the hparams of {' or '.join(readers)} only (methods: [{{{readers[0]}: {{hparams: "
                  f"{{{key}: ...}}}}}}])")
        if key in OPTIMIZERS_READING and not is_space(optimizer) and optimizer not in OPTIMIZERS_READING[key]:
            _fail(f"cell {name}: hparams {key}: {describe_space(value)}",
                  f"optimizer {optimizer} does not read {key!r} (searching it there only repeats configurations); "
                  f"give {key} one value, or search it with optimizer {' or '.join(OPTIMIZERS_READING[key])}")
    fixed = {key: (space_values(value)[0] if key in space else value) for key, value in values.items()}
    for key, value in space.items():
        if key in BATCH_KEYS and resources.workers > 1 and "randint" in value:
            _fail(f"cell {name}: hparams {key}: {describe_space(value)}",
                  f"randint draws every integer, and with {resources.workers} workers {key} is the global batch, "
                  f"a multiple of {resources.workers}; search a choice of multiples of {resources.workers}")
        for candidate in space_values(value):
            try:
                drawn = TrainConfig.from_dict({**fixed, key: candidate, "seed": 0})
                check_batch_split(drawn, resources.workers, (key,) if key in BATCH_KEYS else ())
                if key == "mixed_precision":
                    check_precision_device(candidate, resources.gpu > 0, NO_GPU)
            except GroupsweepError as error:
                _fail(f"cell {name}: hparams {key}: {describe_space(value)}", str(error))
    _check_space_combinations(name, fixed, space)
    try:
        train_config = TrainConfig.from_dict({**fixed, "seed": 0})
        _check_fits(train_config, resources, tuple(key for key in BATCH_KEYS if key not in space))
        config = train_config.to_dict()
    except GroupsweepError as error:
        _fail(f"cell {name}", str(error))
    if method_keys:
        config[METHOD_HPARAMS_KEY] = method_keys
    return SearchCell(name=name, config=config, space=space, seeds=tuple(search.seeds or seeds), resources=resources,
                      num_samples=search.num_samples if space else 1)


# Why a trial of ``resources: {gpu: 0}`` has no GPU, for ``check_precision_device``'s refusal.
NO_GPU = " and its trials get none (resources gpu: 0)"


def _check_fits(config: TrainConfig, resources: Resources, batch_keys: tuple = BATCH_KEYS) -> None:
    """Refuse a trial config that its ``resources`` cannot run: ``batch_keys`` that do not split over its
    workers (``check_batch_split``), or fp16 without a GPU (``check_precision_device``)."""
    check_batch_split(config, resources.workers, batch_keys)
    check_precision_device(config.mixed_precision, resources.gpu > 0, NO_GPU)


def _check_space_combinations(name: str, fixed: dict, space: dict) -> None:
    """Refuse a cell whose spaces together can draw a config that no trial could run (settings that bound each
    other, such as ``jtt_epochs`` <= ``epochs``). Every combination of the spaces' values (``space_values``:
    bounds or listed values) is checked when there are at most ``MAX_SPACE_COMBINATIONS``; beyond that, every
    combination of each pair of keys (the other keys at their first value), a key with more numeric values
    than ``MAX_PAIR_VALUES`` by its smallest and largest (training settings bound each other in pairs, one at
    most or at least the other)."""
    keys = list(space)
    if len(keys) < 2:
        return
    values = {key: space_values(space[key]) for key in keys}
    if math.prod(len(values[key]) for key in keys) <= MAX_SPACE_COMBINATIONS:
        checked = [dict(zip(keys, combination)) for combination in itertools.product(*values.values())]
    else:
        reduced = {key: _extremes(values[key]) for key in keys}
        checked = [{**{key: values[key][0] for key in keys}, first: a, second: b}
                   for first, second in itertools.combinations(keys, 2)
                   for a, b in itertools.product(reduced[first], reduced[second])]
    for drawn in checked:
        try:
            TrainConfig.from_dict({**fixed, **drawn, "seed": 0})
        except GroupsweepError as error:
            shown = ", ".join(f"{key}={value!r}" for key, value in drawn.items())
            _fail(f"cell {name}: hparams {', '.join(keys)} can draw {shown}", str(error))


def _extremes(values: list) -> list:
    """``values``, or its smallest and largest when it holds more than ``MAX_PAIR_VALUES`` numbers only."""
    if len(values) <= MAX_PAIR_VALUES or not all(is_real(value) for value in values):
        return values
    return [min(values), max(values)]


def build_spec(source: dict, registries: Registries | None = None) -> SweepSpec:
    """Validate a spec mapping and expand it into trials; raises a one-line ``GroupsweepError``.

    ``registries`` defaults to ``package_registries()``.
    """
    source = _mapping(source, "spec")
    _check_keys(source, SPEC_KEYS, "spec")
    registries = registries or package_registries()
    name = source.get("name") or "sweep"
    _check_path_name("name", "sweep name", name)
    description = source.get("description") or ""
    if not isinstance(description, str):
        _fail("description", f"expected text, got {description!r}")
    max_failures = source.get("max_failures", DEFAULT_MAX_FAILURES)
    if not is_integer(max_failures, -1):
        _fail("max_failures", f"must be an integer >= 0 (or -1: retry forever), got {max_failures!r}")
    max_concurrent = source.get("max_concurrent")
    if max_concurrent is not None and not is_integer(max_concurrent, 1):
        _fail("max_concurrent", f"must be a positive integer or null, got {max_concurrent!r}")
    keep_checkpoints = source.get("keep_checkpoints", DEFAULT_KEEP_CHECKPOINTS)
    if keep_checkpoints != "all" and not is_integer(keep_checkpoints, 1):
        _fail("keep_checkpoints", f"must be a positive integer or 'all', got {keep_checkpoints!r}")
    after = parse_after(source.get("after"))
    search = parse_search(source.get("search"), parse_seeds)
    tracking = parse_tracking(source.get("tracking"))
    override = _mapping(source.get("override"), "override")
    for key in override:
        if key not in TrainConfig.__dataclass_fields__:
            _fail("override", f"unknown training setting {key!r}; allowed: {', '.join(TrainConfig.__dataclass_fields__)}")
        if key in AXIS_FIELDS and key != "dataset_options":  # forced on every trial, it would contradict its name
            _fail("override", f"{key!r} is set by the grid (datasets, models, methods, seeds), not forced on every "
                              f"trial; set the grid instead (e.g. --set {GRID_KEYS[key]}=[...])")
        if is_space(override[key]):
            check_searched_setting(key, override[key], f"override.{key}")

    base = {key: source.get(key) for key in ("datasets", "models", "methods", "seeds", "hparams", "resources")}
    if base["seeds"] is None:
        base["seeds"] = [0]
    parts = source.get("parts")
    trials: list[TrialPlan] = []
    if parts is None:
        trials = _expand_part(base, None, override, registries, search)
    else:
        if not isinstance(parts, list) or not parts:
            _fail("parts", f"expected a non-empty list of part mappings, got {parts!r}")
        for index, part in enumerate(parts):
            part = _mapping(part, f"parts[{index}]")
            _check_keys(part, PART_KEYS, f"parts[{index}]")
            tag = part.get("tag")
            if tag is not None:
                _check_path_name(f"parts[{index}].tag", "part tag", tag)
            merged = dict(base)
            for key in ("datasets", "models", "methods", "seeds"):
                if part.get(key) is not None:
                    merged[key] = part[key]
            if isinstance(base["datasets"], dict):
                merged["dataset_defaults"] = base["datasets"]
            merged["part_hparams"] = part.get("hparams")
            merged["part_resources"] = part.get("resources")
            trials.extend(_expand_part(merged, tag or None, override, registries, search))
    seen = {}
    for trial in trials:
        _check_path_name("spec", "trial name", longest_trial_name(trial))
        if trial.name in seen:
            what = "cells" if search is not None else "trials"
            _fail("spec", f"two {what} are named {trial.name!r}; give the parts distinct tags")
        seen[trial.name] = trial
    if keep_checkpoints == "all":  # every epoch of the longest trial (a search cell's: its largest epochs)
        keep_checkpoints = max(_most_epochs(trial) for trial in trials)
    cells = tuple(trials) if search is not None else ()
    if search is not None:
        check_metric_reported(search, cells)
    return SweepSpec(name=name, description=description, trials=() if search is not None else tuple(trials),
                     max_failures=max_failures, max_concurrent=max_concurrent, source=copy.deepcopy(source),
                     keep_checkpoints=keep_checkpoints, after=after, search=search, cells=cells, tracking=tracking)


def _check_path_name(where: str, what: str, value) -> None:
    """``trainables.errors.path_name``: the one rule for names that become folders, as a spec error."""
    try:
        path_name(what, value)
    except GroupsweepError as error:
        _fail(where, f"{error} (a trial is named <dataset>-<model>-<method>[-<part tag>]-s<seed>)"
              if what == "trial name" else str(error))


def longest_trial_name(unit) -> str:
    """The longest trial name a unit of a sweep gives its trials: a trial's own name, or for a search cell
    the name of its last configuration on its largest seed."""
    if isinstance(unit, TrialPlan):
        return unit.name
    return trial_name(unit.name, unit.n_configurations - 1, max(unit.seeds), unit.n_configurations)


def after_argv(command: str, run_dir: str) -> list[str]:
    """One ``after`` command (``"spectral --top 10"``) as a ``groupsweep`` argument list on ``run_dir``."""
    name, *options = shlex.split(command)
    return [name, run_dir, *options]


def parse_after(value) -> tuple[str, ...]:
    """Check the shape of a spec's ``after`` list: each item a ``groupsweep`` analysis command line without
    its RUN_DIR (``"spectral --top 10 --top 50"``) that splits like a shell line and starts with one of
    ``AFTER_COMMANDS``. The commands' own arguments are checked by the command layer
    (``sweeps.sweep_command.check_after_commands``), which knows their parsers."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        _fail("after", f"expected a list of groupsweep commands such as 'spectral --top 10', got {value!r}")
    for index, command in enumerate(value):
        try:
            argv = after_argv(command, RUN_DIR_PLACEHOLDER)
        except ValueError as error:
            _fail(f"after[{index}]", f"cannot split {command!r}: {error}")
        if argv[0] not in AFTER_COMMANDS:
            _fail(f"after[{index}]", f"unknown command {argv[0]!r}; allowed: {', '.join(AFTER_COMMANDS)} "
                                     "(the sweep directory is added as their RUN_DIR)")
    return tuple(value)


def read_spec_source(ref: str) -> dict:
    """The spec mapping that ``ref`` names: a shipped preset name, or the path of a YAML file."""
    path = Path(ref)
    if ref in preset_names():
        path = preset_path(ref)
    elif not (ref.endswith((".yaml", ".yml")) or path.is_file()):
        _fail("", f"no preset or spec file {ref!r}; presets: {', '.join(preset_names())}")
    try:
        data = path.read_bytes()
    except OSError as error:
        _fail("", f"cannot read spec file {ref!r}: {error.strerror}")
    source = parse_yaml(decode_text(data, f"spec file {ref!r}"), f"spec file {ref!r}")
    if not isinstance(source, dict):
        _fail("", f"spec file {ref!r} must hold a mapping, got {type(source).__name__}")
    return source


def apply_overrides(source: dict, overrides: dict) -> dict:
    """Merge ``--set`` values into a spec mapping.

    A key that is a spec key (``seeds``, ``resources.cpu``, ``datasets.waterbirds.options.size``) is
    merged into the spec; a key that is a training setting (``epochs``, ``dataset_options.size``) goes
    into ``override``, forced on every trial.
    """
    result = copy.deepcopy(source)
    for key, value in overrides.items():
        if key in SPEC_KEYS and key != "override":
            _deep_set(result, key, value)
        elif key in TrainConfig.__dataclass_fields__:
            result.setdefault("override", {})
            if not isinstance(result["override"], dict):
                _fail("override", f"expected a mapping, got {result['override']!r}")
            result["override"] = _merge(result["override"], {key: value})
        else:
            spec_keys = [name for name in SPEC_KEYS if name != "override"]
            _fail("--set", f"unknown key {key!r}; use a spec key ({', '.join(spec_keys)}) "
                           f"or a training setting ({', '.join(TrainConfig.__dataclass_fields__)})")
    return result


def _merge(base: dict, extra: dict) -> dict:
    """``base`` with ``extra``'s values: mappings merged key by key (``dataset_options``, ``d3m``), other values and
    search spaces replaced (a space is one value: ``{uniform: ...}`` replaces ``{loguniform: ...}``)."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and not (is_space(value)
                                                                                  or is_space(merged[key])):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _deep_set(target: dict, key: str, value) -> None:
    if isinstance(value, dict) and isinstance(target.get(key), dict):
        target[key] = _merge(target[key], value)
    elif isinstance(value, dict) and isinstance(target.get(key), list):
        # ``--set datasets.waterbirds.options.size=500`` on a spec listing datasets by name.
        target[key] = _merge({item: None for item in target[key]} if all(isinstance(i, str) for i in target[key])
                             else {}, value)
    else:
        target[key] = value


def load_spec(ref: str, overrides: dict | None = None) -> SweepSpec:
    """Read a preset or YAML spec, apply ``--set`` overrides (see ``apply_overrides``), validate and expand."""
    source = read_spec_source(ref)
    if overrides:
        source = apply_overrides(source, overrides)
    return build_spec(source)


def dump_spec(source: dict) -> str:
    """The spec mapping as YAML (keys in the order given)."""
    return yaml.safe_dump(source, sort_keys=False, default_flow_style=None)
