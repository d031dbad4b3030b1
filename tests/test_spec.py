"""Sweep specs: expansion into trials, setting precedence, --set overrides, and refusal of bad specs."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from sweeps.cli import main
from sweeps.launcher import check_nodes_fit, local_gpu_count, local_node_shape, save_spec
from sweeps.spec import Resources, apply_overrides, build_spec, load_spec
from sweeps.sweep_command import check_after_commands
from trainables.balancing import method_label
from trainables.config import TrainConfig
from trainables.errors import GroupsweepError

REPO = Path(__file__).resolve().parents[1]
TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def spec(**changes) -> dict:
    """A small valid spec: 2 datasets with their own models and methods."""
    source = {
        "name": "t",
        "datasets": {
            "synthetic-waterbirds": {"options": {"size": 300}, "hparams": {"epochs": 3},
                                     "methods": ["none", {"mixture": [2, 3]}]},
            "synthetic-celeba": {"models": ["toy-convnextv2-s"], "methods": ["subsetting", "upweighting"]},
        },
        "models": ["toy-convnextv2-xs", "toy-convnextv2-s"],
        "seeds": [1, 2],
        "hparams": {"lr": 1e-3, "epochs": 2},
    }
    source.update(changes)
    return source


def test_grid_is_dataset_model_method_ratio_seed_without_cross_products():
    built = build_spec(spec())
    # waterbirds: 2 models x (none + mixture 2, 3) x 2 seeds = 12; celeba: 1 model x 2 methods x 2 seeds = 4
    assert len(built.trials) == 12 + 4
    names = [t.name for t in built.trials]
    assert names[:4] == ["synthetic-waterbirds-toy-convnextv2-xs-none-s1", "synthetic-waterbirds-toy-convnextv2-xs-none-s2",
                         "synthetic-waterbirds-toy-convnextv2-xs-mixture2-s1",
                         "synthetic-waterbirds-toy-convnextv2-xs-mixture2-s2"]
    assert len(set(names)) == len(names)
    for trial in built.trials:
        config = trial.config
        assert set(config) == TRAIN_FIELDS | {"trial_name"} and config["trial_name"] == trial.name
        # ratios only on the ratio methods; celeba only with its own model list
        assert (config["ratio"] is not None) == (config["method"] == "mixture")
        if config["dataset"] == "synthetic-celeba":
            assert config["model"] == "toy-convnextv2-s" and config["dataset_options"] == {}
    assert sorted({t.config["ratio"] for t in built.trials if t.config["ratio"]}) == [2.0, 3.0]
    assert {t.method_label for t in built.trials} == {"none", "mixture 2:1", "mixture 3:1", "subsetting", "upweighting"}


def test_settings_merge_top_dataset_model_part_then_override():
    source = spec(models={"toy-convnextv2-xs": {"hparams": {"batch_size": 16}, "resources": {"cpu": 2}},
                          "toy-convnextv2-s": None},
                  hparams={"lr": 1e-3, "epochs": 2, "batch_size": 64, "weight_decay": 0.5},
                  resources={"cpu": 1},
                  parts=[{"tag": "a", "datasets": ["synthetic-waterbirds"], "hparams": {"epochs": 7}},
                         {"tag": "b", "seeds": [5], "resources": {"cpu": 3}}],
                  override={"weight_decay": 0.25, "dataset_options": {"val_size": 90}})
    trials = {t.name: t for t in build_spec(source).trials}
    a = trials["synthetic-waterbirds-toy-convnextv2-xs-none-a-s1"]
    # part hparams beat the dataset's epochs; the model's batch size beats the top-level one
    assert (a.config["epochs"], a.config["batch_size"], a.config["lr"]) == (7, 16, 1e-3)
    # override wins over everything and merges into dataset options
    assert a.config["weight_decay"] == 0.25 and a.config["dataset_options"] == {"size": 300, "val_size": 90}
    assert a.resources == Resources(cpu=2, gpu=0, workers=1)
    # part a named its dataset without settings: it keeps the top-level settings (methods, options)
    assert {t.config["method"] for t in trials.values() if "-a-" in t.name} == {"none", "mixture"}
    b = trials["synthetic-waterbirds-toy-convnextv2-s-none-b-s5"]
    assert b.config["epochs"] == 3 and b.resources.cpu == 3  # dataset hparams; part resources win
    assert trials["synthetic-celeba-toy-convnextv2-s-upweighting-b-s5"].config["epochs"] == 2
    # part a: waterbirds, 2 models x 3 methods x 2 seeds = 12; part b: (12 + 4) / 2 seeds = 8
    assert len(trials) == 12 + 8


def test_plain_list_datasets_and_scalar_forms():
    built = build_spec({"datasets": ["synthetic-waterbirds"], "models": "toy-convnextv2-xs",
                        "methods": {"mixture-nosubset": 1.5}, "seeds": 4})
    (trial,) = built.trials
    assert trial.name == "synthetic-waterbirds-toy-convnextv2-xs-mixture-nosubset1.5-s4"
    assert (trial.config["ratio"], built.name, built.max_failures) == (1.5, "sweep", 2)
    assert method_label("mixture-nosubset", 1.5) == "mixture-nosubset 1.5:1"


def test_groupdro_settings_are_method_hparams_and_may_be_searched():
    methods = ["none", {"groupdro": {"hparams": {"groupdro_eta": 0.1, "groupdro_adjustment": 2}}}]
    built = build_spec({"datasets": ["synthetic-waterbirds"], "models": "toy-convnextv2-xs", "methods": methods})
    none, groupdro = built.trials
    assert groupdro.name == "synthetic-waterbirds-toy-convnextv2-xs-groupdro-s0"
    assert (groupdro.config["groupdro_eta"], groupdro.config["groupdro_adjustment"]) == (0.1, 2)
    assert (none.config["groupdro_eta"], none.config["groupdro_adjustment"]) == (0.01, 0.0)  # the defaults
    searched = [{"groupdro": {"hparams": {"groupdro_eta": {"loguniform": [0.001, 0.1]}}}}]
    built = build_spec({"datasets": ["synthetic-waterbirds"], "models": "toy-convnextv2-xs", "methods": searched,
                        "search": {"num_samples": 3}})
    (cell,) = built.cells
    assert cell.space == {"groupdro_eta": {"loguniform": [0.001, 0.1]}} and cell.num_samples == 3
    with pytest.raises(GroupsweepError, match="groupdro_eta must be a non-negative number, got -1"):
        build_spec({"datasets": ["synthetic-waterbirds"], "models": "toy-convnextv2-xs",
                    "methods": [{"groupdro": {"hparams": {"groupdro_eta": -1}}}]})


def test_celeba_attributes_are_dataset_options_checked_before_ray(tmp_path, capsys):
    age = {"celeba": {"options": {"target": "Young", "spurious": "Male"}}}
    (trial,) = build_spec({"datasets": age, "models": "toy-convnextv2-xs", "methods": ["none"]}).trials
    assert trial.config["dataset_options"] == {"target": "Young", "spurious": "Male"}
    bad = {"celeba": {"options": {"target": "Yung"}}}
    with pytest.raises(GroupsweepError, match=r"^datasets.celeba.options: unknown celeba target attribute 'Yung'; "
                                              r"choose one of: 5_o_Clock_Shadow, .*Young$"):
        build_spec({"datasets": bad, "models": "toy-convnextv2-xs", "methods": ["none"]})
    with pytest.raises(GroupsweepError, match=r"unknown celeba spurious attribute 'Gender'"):  # a --set override
        build_spec(apply_overrides({"datasets": age, "models": "toy-convnextv2-xs", "methods": ["none"]},
                                   {"dataset_options": {"spurious": "Gender"}}))
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"datasets": bad, "models": ["toy-convnextv2-xs"], "methods": ["none"]}))
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: datasets.celeba.options: unknown celeba target attribute 'Yung'")
    assert err.count("\n") == 1


def test_resources_gpu_fractions_and_workers():
    def resources(values):
        source = spec(resources=values)
        return build_spec(source).trials[0].resources

    assert resources({"cpu": 2, "gpu": 0.25}) == Resources(cpu=2, gpu=0.25, workers=1)
    assert resources({"cpu": 8, "gpu": 4}) == Resources(cpu=8, gpu=4, workers=4)
    # several workers: the Tune trial keeps a token CPU to drive them, the workers share the rest
    assert resources({"cpu": 8, "gpu": 4}).worker_bundle == {"CPU": pytest.approx(7.99 / 4), "GPU": 1}
    assert resources({"cpu": 2, "gpu": 0.5}).worker_bundle == {"CPU": 2, "GPU": 0.5}
    assert resources({"cpu": 2, "workers": 2}) == Resources(cpu=2, gpu=0, workers=2)


@pytest.mark.parametrize("changes, message", [
    ({"datasets": ["synthetic-waterbirds"], "epochs": 3}, "spec: unknown key 'epochs'"),
    ({"datasets": ["no-such-data"]}, "unknown dataset 'no-such-data'"),
    ({"models": ["toy-convnextv2-xxl"]}, "unknown model 'toy-convnextv2-xxl'"),
    ({"methods": ["none", "reweigh"]}, "unknown balancing method 'reweigh'"),
    ({"methods": [{"upsampling": [2]}]}, "method 'upsampling' takes no ratio"),
    ({"methods": ["mixture"]}, "method 'mixture' needs mixture ratios"),
    ({"methods": [{"mixture": [0.5]}]}, "ratio 0.5 of method 'mixture' must be a number >= 1"),
    ({"methods": ["none", "none"]}, "method 'none' is listed twice"),
    ({"hparams": {"learning_rate": 1}}, "unknown training setting 'learning_rate'"),
    ({"hparams": {"seed": 3}}, "'seed' is set by the grid"),
    ({"hparams": {"lr": -1}}, "lr must be a positive number"),
    ({"hparams": {"schedule": "step"}}, "unknown schedule 'step'"),
    ({"datasets": {"synthetic-waterbirds": {"options": {"sizes": 3}}}}, "takes no option 'sizes'"),
    ({"datasets": {"synthetic-waterbirds": {"model": ["x"]}}}, "unknown key 'model'"),
    ({"resources": {"cpus": 2}}, "unknown key 'cpus'"),
    ({"resources": {"gpu": 1.5}}, "gpu 1.5 is more than one GPU but not a whole number"),
    ({"resources": {"gpu": 0.5, "workers": 2}}, "2 workers need one GPU each"),
    ({"resources": {"cpu": 0}}, "cpu must be a positive number"),
    ({"seeds": [1, 1]}, "repeat a seed"),
    ({"seeds": [-1]}, "seed -1 is not an integer from 0 to 4294967295"),
    ({"seeds": [2**32]}, "seed 4294967296 is not an integer from 0 to 4294967295"),
    ({"max_concurrent": 0}, "max_concurrent: must be a positive integer"),
    ({"override": {"colour": 1}}, "override: unknown training setting 'colour'"),
    ({"parts": [{"tag": "x"}, {"tag": "x"}]}, "two trials are named"),
    ({"parts": [{"methods": ["none"], "epochs": 1}]}, "parts[0]: unknown key 'epochs'"),
    ({"keep_checkpoints": 0}, "keep_checkpoints: must be a positive integer or 'all', got 0"),
    ({"keep_checkpoints": "last"}, "keep_checkpoints: must be a positive integer or 'all', got 'last'"),
    ({"after": "spectral"}, "after: expected a list of groupsweep commands"),
    ({"after": ["train demo"]}, "after[0]: unknown command 'train'; allowed: analyze, plot, spectral"),
    ({"after": ["plot 'unclosed"]}, "after[0]: cannot split"),
])
def test_bad_specs_are_refused_with_one_line(changes, message):
    with pytest.raises(GroupsweepError) as error:
        build_spec(spec(**changes))
    text = str(error.value)
    assert message in text and "\n" not in text


@pytest.mark.parametrize("after, message", [
    (["analyze", "spectral --tops 10"], "after[1]: 'spectral --tops 10': unrecognized arguments: --tops 10"),
    (["analyze --criterion best"],
     "after[0]: 'analyze --criterion best': argument --criterion: invalid choice: 'best'"),
    (["spectral --top ten"], "argument --top: invalid int value: 'ten'"),
])
def test_after_command_arguments_are_checked_by_the_command_layer(after, message):
    built = build_spec(spec(after=after))  # the spec checks the list's shape and command names only
    with pytest.raises(GroupsweepError) as error:
        check_after_commands(built)
    text = str(error.value)
    assert message in text and "\n" not in text


def test_spec_module_does_not_import_the_command_line():
    code = ("import sys, sweeps.spec; "
            "assert not [m for m in sys.modules if m.startswith('sweeps.') and m.endswith(('cli', '_command'))]")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert result.returncode == 0, result.stderr


def test_keep_checkpoints_and_after_commands():
    built = build_spec(spec())
    assert built.keep_checkpoints == 1 and built.after == ()
    assert build_spec(spec(keep_checkpoints=2)).keep_checkpoints == 2
    assert build_spec(spec(keep_checkpoints="all")).keep_checkpoints == 3  # the longest trial's epochs
    searched = spec(keep_checkpoints="all", hparams={"epochs": {"randint": [1, 10]}}, search={"num_samples": 2})
    assert build_spec(searched).keep_checkpoints == 9  # the most epochs a sampled configuration can run
    built = build_spec(spec(after=["analyze --criterion wga", "spectral --top 10 --out 'my out'"]))
    assert built.after_argv("/r/t") == [["analyze", "/r/t", "--criterion", "wga"],
                                        ["spectral", "/r/t", "--top", "10", "--out", "my out"]]


def test_set_overrides_spec_keys_and_training_settings():
    source = apply_overrides(spec(), {"seeds": [7], "epochs": 1, "resources": {"cpu": 2},
                                      "datasets": {"synthetic-waterbirds": {"options": {"size": 400}}},
                                      "dataset_options": {"seed": 3}})
    built = build_spec(source)
    assert {t.config["seed"] for t in built.trials} == {7}
    assert {t.config["epochs"] for t in built.trials} == {1}
    assert {t.resources.cpu for t in built.trials} == {2}
    wb = [t for t in built.trials if t.config["dataset"] == "synthetic-waterbirds"]
    assert wb[0].config["dataset_options"] == {"size": 400, "seed": 3}
    assert built.source["override"] == {"epochs": 1, "dataset_options": {"seed": 3}}
    with pytest.raises(GroupsweepError, match="unknown key 'colour'"):
        apply_overrides(spec(), {"colour": 1})


def test_yaml_file_reads_exponent_floats_and_reports_bad_yaml(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("datasets: [synthetic-waterbirds]\nmodels: [toy-convnextv2-xs]\nmethods: [none]\n"
                    "hparams: {lr: 1e-5, weight_decay: 5E-4}\n")
    (trial,) = load_spec(str(path)).trials
    assert (trial.config["lr"], trial.config["weight_decay"]) == (1e-5, 5e-4)
    path.write_text("datasets: [synthetic-waterbirds\n")
    with pytest.raises(GroupsweepError, match="is not valid YAML"):
        load_spec(str(path))
    with pytest.raises(GroupsweepError, match="no preset or spec file 'nonsense'"):
        load_spec("nonsense")


def test_spec_files_and_set_values_read_scalars_alike_and_never_as_base_60(tmp_path, capsys):
    """A spec file and ``--set`` read the same scalar the same way (``SpecLoader``, YAML 1.2's numbers and booleans):
    ``1e-3`` is a float, and ``1:30`` stays a string, so ``epochs: 1:30`` is refused instead of training 90 epochs
    (YAML 1.1's base-60 rule); ``no`` stays a string, so ``mixed_precision: no`` is the setting's ``no``, not false."""
    from sweeps.overrides import parse_overrides

    values = ["1e-3", "5E-4", "-1E+2", "2.5", "7", "1_000", ".inf", "true", "null", "nine", "1:30", "1:30.5",
              "[1e-4, 2]", "False", "no", "off", "yes"]
    path = tmp_path / "values.yaml"
    path.write_text("".join(f"v{i}: {value}\n" for i, value in enumerate(values)))
    from_file = load_spec_values(path)
    from_set = parse_overrides([f"v{i}={value}" for i, value in enumerate(values)])
    assert from_file == from_set
    assert list(from_set.values()) == [1e-3, 5e-4, -100.0, 2.5, 7, 1000, float("inf"), True, None, "nine", "1:30",
                                       "1:30.5", [1e-4, 2], False, "no", "off", "yes"]
    assert main(["plan", "demo-table1", "--set", "epochs=1:30"]) == 2
    assert "epochs must be a positive integer, got '1:30'" in capsys.readouterr().err
    assert main(["plan", "demo", "--set", "mixed_precision=no"]) == 0
    assert main(["plan", "demo", "--set", "pretrained=yes"]) == 2
    assert "pretrained must be true or false, got 'yes'" in capsys.readouterr().err


def load_spec_values(path: Path) -> dict:
    from sweeps.spec import SpecLoader

    return yaml.load(path.read_text(), Loader=SpecLoader)


def test_resources_no_node_provides_are_refused_locally_and_awaited_on_a_cluster(capsys):
    built = build_spec(spec(resources={"cpu": 4, "gpu": 1}))
    check_nodes_fit(built, [{"CPU": 8, "GPU": 1}])
    with pytest.raises(GroupsweepError, match=r"needs 4 CPU and 1 GPU per process but no node can provide") as error:
        check_nodes_fit(built, [{"CPU": 64}, {"CPU": 2, "GPU": 8}])
    assert "\n" not in str(error.value)
    workers = build_spec(spec(resources={"cpu": 8, "gpu": 4}))
    check_nodes_fit(workers, [{"CPU": 8, "GPU": 4}])
    # a local Ray is one node: the 4 worker processes must fit it together (else the trial waits forever)
    with pytest.raises(GroupsweepError, match=r"needs 8 CPU and 4 GPU for its 4 processes together but no node"):
        check_nodes_fit(workers, [{"CPU": 16, "GPU": 2}])
    # on a cluster too (the workers go to one node): a warning, as the autoscaler may add such a node
    capsys.readouterr()
    check_nodes_fit(workers, [{"CPU": 2, "GPU": 1}, {"CPU": 16, "GPU": 2}], autoscaling=True)
    err = capsys.readouterr().err
    assert "needs 8 CPU and 4 GPU for its 4 processes together but no live node" in err
    check_nodes_fit(workers, [{"CPU": 2, "GPU": 1}, {"CPU": 32, "GPU": 4}], autoscaling=True)
    assert capsys.readouterr().err == ""
    # a cluster's autoscaler may add a node that fits: one warning line naming the first trial, no refusal
    capsys.readouterr()
    check_nodes_fit(built, [{"CPU": 64}], autoscaling=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: trial {built.trials[0].name} needs 4 CPU and 1 GPU")
    assert "15 more trials" in err[0] and "wait for the cluster's autoscaler" in err[0]


def test_a_local_ray_offers_the_gpus_torch_sees_and_none_when_cuda_visible_devices_is_empty(monkeypatch):
    """The launcher counts GPUs without torch (as ``ray.init`` does: NVML, capped by CUDA_VISIBLE_DEVICES); the
    count is the one torch sees in this process, and an empty CUDA_VISIBLE_DEVICES leaves none."""
    import torch

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert local_gpu_count() == torch.cuda.device_count()
    assert local_node_shape(3) == {"CPU": 3.0, "GPU": float(torch.cuda.device_count())}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert local_gpu_count() == 0


def test_plan_prints_the_grid_and_count_without_ray(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec()))
    code = ("import sys; from sweeps.cli import main; code = main(['plan', sys.argv[1], '--set', 'seeds=[3]']); "
            "assert 'ray' not in sys.modules, 'plan imported ray'; sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "8 trials"  # (12 + 4) trials / 2 seeds
    assert lines[0].split()[:3] == ["#", "trial", "dataset"]
    assert "synthetic-waterbirds-toy-convnextv2-xs-mixture3-s3" in result.stdout
    path.write_text(yaml.safe_dump(spec(after=["spectral --top 10"])))
    result = subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-2:] == ["then: groupsweep spectral <storage>/t --top 10", "8 trials"]


def test_cli_refuses_bad_spec_before_ray(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec(methods=[{"subsetting": [2]}])))
    for command in ("plan", "run"):
        assert main([command, str(path), "--storage", str(tmp_path)] if command == "run" else [command, str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "takes no ratio" in err and "\n" not in err
    assert not (tmp_path / "t").exists()


def test_run_refuses_resources_beyond_this_machine_before_ray(tmp_path, capsys):
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(spec(resources={"cpu": 4096})))
    assert main(["run", str(path), "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: trial ") and "4096 CPU" in err and "\n" not in err
    assert "ray" not in sys.modules or not __import__("ray").is_initialized()
    assert not (tmp_path / "t").exists()


def test_summary_is_mean_and_sample_std_of_finished_trials_per_method(tmp_path):
    from results_fixtures import diverged_report, epoch_metrics, trial_config, write_trial

    from analysis.results import load_results
    from analysis.summary import format_summary, summarize

    def trial(method, ratio, seed, wga, epochs_done=3):
        config = trial_config("d", "m", method, ratio=ratio, seed=seed, epochs=3)
        reports = [epoch_metrics(epoch, overrides={"test/wga": wga}) for epoch in range(1, epochs_done + 1)]
        if wga is None:  # diverged in its second epoch
            reports = [epoch_metrics(1), diverged_report(2)]
        write_trial(tmp_path, len(list(tmp_path.iterdir())), config, reports)
        return config["trial_name"]

    names = [trial("none", None, 1, 0.5), trial("none", None, 2, 0.7), trial("none", None, 3, 0.1, epochs_done=2),
             trial("mixture", 2.0, 1, 0.9), trial("mixture", 2.0, 2, None)]
    results = load_results(tmp_path)
    summary = summarize(results, order=names).set_index("method")
    assert summary.loc["none", "n"] == 2 and summary.loc["none", "test_wga_mean"] == pytest.approx(0.6)
    assert summary.loc["none", "test_wga_std"] == pytest.approx(0.02 ** 0.5)  # sample std (ddof=1)
    assert summary.loc["mixture 2:1", "n"] == 1 and summary.loc["mixture 2:1", "diverged"] == 1
    assert np.isnan(summary.loc["mixture 2:1", "test_wga_std"])
    text = format_summary(summarize(results, order=names))
    assert "60.0 ± 14.1" in text and "90.0  (1 diverged)" in text
    assert text.splitlines()[0] == ("dataset                  model            method                   n    "
                                    "final test WGA (%)")
    assert text.splitlines()[1].startswith("d                        m                none ")
    # methods in the order of their first trial in ``order``
    assert list(summarize(results, order=names[::-1])["method"]) == ["mixture 2:1", "none"]
    assert list(summarize(results, order=names)["method"]) == ["none", "mixture 2:1"]


def test_summary_never_pools_models_or_variants(tmp_path):
    """The paper's tables are per dataset and model: a summary row holds the trials of one model and variant."""
    from results_fixtures import epoch_metrics, trial_config, write_trial

    from analysis.results import load_results
    from analysis.summary import summarize

    for index, (model, seed, wga, last_layer) in enumerate([("m", 1, 0.5, False), ("m", 2, 0.7, False),
                                                            ("m2", 1, 0.1, False), ("m2", 2, 0.3, False),
                                                            ("m", 3, 0.9, True)]):
        config = trial_config("d", model, "none", seed=seed, last_layer_only=last_layer)
        write_trial(tmp_path, index, config, [epoch_metrics(epoch, overrides={"test/wga": wga})
                                              for epoch in (1, 2, 3)])
    summary = summarize(load_results(tmp_path)).set_index("model")
    # no order given: rows in the order of the trials sorted by name (d_m2_none_s1 < d_m_none_s1)
    assert list(summary.index) == ["m2 (last_layer_only=false)", "m (last_layer_only=false)",
                                   "m (last_layer_only=true)"]
    assert list(summary["n"]) == [2, 2, 1]
    assert list(summary["test_wga_mean"]) == pytest.approx([0.2, 0.6, 0.9])


def test_status_lists_each_trial_state_in_grid_order(tmp_path, capsys):
    from results_fixtures import diverged_report, epoch_metrics, write_trial

    source = {"name": "st", "datasets": ["synthetic-waterbirds"], "models": ["toy-convnextv2-xs"],
              "methods": ["none", "upweighting"], "seeds": [0, 1], "hparams": {"epochs": 2}}
    exp_dir = tmp_path / "st"
    save_spec(str(exp_dir), source)
    trials = build_spec(source).trials
    write_trial(exp_dir, 0, trials[3].config, [epoch_metrics(1, value=0.5), epoch_metrics(2, value=0.75)])
    write_trial(exp_dir, 1, trials[1].config, [epoch_metrics(1), diverged_report(2)])
    write_trial(exp_dir, 2, trials[0].config, [epoch_metrics(1, value=0.25)], error="RuntimeError: boom")
    assert main(["status", "st", "--storage", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["trial", "state", "epoch", "val", "wga", "test", "wga"]
    assert [line.split() for line in lines[1:-1]] == [
        [trials[0].name, "error", "1/2", "0.2500", "0.2500"],
        [trials[1].name, "diverged", "2/2", "-", "-"],
        [trials[2].name, "pending", "-/2", "-", "-"],
        [trials[3].name, "complete", "2/2", "0.7500", "0.7500"],
    ]
    assert lines[-1] == "1 complete, 1 diverged, 1 error, 1 pending"


def test_plan_notes_real_models_trained_from_random_weights(tmp_path, capsys):
    source = {"name": "scratch", "datasets": ["synthetic-waterbirds"], "methods": ["none"], "seeds": [1],
              "models": ["resnet18", "toy-resnet-xs"]}
    for pretrained, noted in ((None, True), (True, False)):
        values = dict(source)
        if pretrained is not None:
            values["hparams"] = {"pretrained": pretrained}
            values["models"] = ["resnet18"]
        path = tmp_path / "spec.yaml"
        path.write_text(yaml.safe_dump(values))
        capsys.readouterr()
        assert main(["plan", str(path)]) == 0
        err = capsys.readouterr().err
        assert ("note: resnet18 train(s) from random initialisation" in err) == noted, err
        assert "toy-resnet-xs" not in err  # toy models have no pretrained weights to miss
