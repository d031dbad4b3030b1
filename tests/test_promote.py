"""``groupsweep promote``: the spec it writes reruns exactly the configurations the search chose (checked
through ``sweeps.spec.build_spec``), the rerun analyses beside the search, options and one-line errors."""

from pathlib import Path

import pytest
import yaml

from analysis.results import load_results
from analysis.selection import select
from results_fixtures import epoch_metrics, searched_config, trial_config, write_trial
from sweeps import cli, sweep_command
from sweeps.spec import AXIS_FIELDS, Registries, SpecLoader, build_spec
from test_search_analysis import reports, write_search
from trainables.balancing import METHODS, RATIO_METHODS
from trainables.config import TrainConfig

REGISTRIES = Registries(datasets={"wb": ("size",)}, models=("m",), methods=METHODS, ratio_methods=RATIO_METHODS)


def write_full_search(run_dir) -> None:
    """``write_search``'s search plus a searched mixture 2:1 (h01 wins with 0.66) on the dataset option size=100."""
    index = write_search(run_dir)
    for sample, (lr, value) in enumerate(((1e-3, 0.2), (3e-4, 0.66))):
        for seed in (0, 1):
            write_trial(run_dir, index, searched_config("wb", "m", "mixture", 2.0, sample=sample, seed=seed,
                                                        sampled={"lr": lr}), reports({"val/wga": value}),
                        experiment_id="5e4c1")
            index += 1


def chosen_configs(run_dir, criterion: str = "wga") -> dict:
    """method label -> the chosen configuration's config (TrainConfig fields), as the search ran it."""
    results = load_results(run_dir)
    chosen = select(results, [criterion], by_model=True).hyperparameters
    configs = {}
    for row in chosen.to_dict("records"):
        trials = results.trials
        trial_id = trials.index[(trials["cell"] == row["cell"]) & (trials["config_id"] == row["config_id"])][0]
        configs[row["method_label"]] = TrainConfig.from_dict(results.configs[trial_id]).to_dict()
    return configs


def promote(*argv) -> int:
    return cli.main(["promote", *map(str, argv)])


def test_the_promoted_spec_reruns_each_chosen_configuration_on_the_new_seeds(tmp_path, capsys):
    run_dir = tmp_path / "search"
    write_full_search(run_dir)
    assert promote(run_dir, "--seeds", 2, 3, 4) == 0
    printed = capsys.readouterr().out
    path = run_dir / "promoted_wga.yaml"
    assert f"wrote {path}: 4 configuration(s) x 3 seed(s)" in printed and "upweighting *" in printed
    assert f"run it with: groupsweep run {path}" in printed
    text = path.read_text()
    assert "# wb/m upweighting: h01 (lr=0.0001), val wga 0.7000 over 2 seed(s), best of 3 configuration(s)\n" in text
    source = yaml.load(text, Loader=SpecLoader)
    assert source["name"] == "search-rerun" and source["seeds"] == [2, 3, 4]
    assert "wga" in source["description"] and "search" in source["description"]
    (part,) = source["parts"]
    assert part["tag"] == "rerun" and part["datasets"] == {"wb": {"options": {}}} and part["models"] == ["m"]
    methods = {name: entry for item in part["methods"] for name, entry in item.items()}
    assert set(methods) == {"upweighting", "subsetting", "none", "mixture"}
    assert methods["mixture"]["ratios"] == [2.0] and "ratios" not in methods["upweighting"]
    assert methods["upweighting"]["hparams"]["lr"] == 1e-4 and methods["mixture"]["hparams"]["lr"] == 3e-4
    assert not set(methods["none"]["hparams"]) & set(AXIS_FIELDS)

    chosen = chosen_configs(run_dir)
    spec = build_spec(source, REGISTRIES)
    assert len(spec.trials) == 4 * 3
    for trial in spec.trials:
        config = TrainConfig.from_dict(trial.config).to_dict()
        label = trial.method_label
        assert {**config, "seed": 0} == {**chosen[label], "seed": 0}, label  # the configuration, on a new seed
        assert config["seed"] in (2, 3, 4) and trial.name.endswith(f"-rerun-s{config['seed']}")


def test_the_rerun_of_the_promoted_spec_is_analysed_beside_the_search(tmp_path, capsys):
    run_dir = tmp_path / "search"
    write_search(run_dir)
    out = tmp_path / "rerun.yaml"
    assert promote(run_dir, "--seeds", 7, 8, "--out", out, "--name", "again") == 0
    spec = build_spec(yaml.load(out.read_text(), Loader=SpecLoader), REGISTRIES)
    assert spec.name == "again"
    for index, trial in enumerate(spec.trials):  # what running the spec would leave on disk
        test_wga = 0.9 if trial.config["seed"] == 7 else 0.7
        write_trial(tmp_path / "again", index, trial.config, reports({"val/wga": 0.5, "test/wga": test_wga}),
                    experiment_id="77777")
    selection = select(load_results([run_dir, tmp_path / "again"]), ["wga"])
    row = selection.rerun.iloc[0]
    assert row["method_label"] == "upweighting" and row["config_id"] == "h01" and row["sweep"] == "again"
    assert row["n_seeds"] == 2 and row["test_wga_mean"] == pytest.approx(0.8)
    assert "3 configuration(s)" in capsys.readouterr().out


def test_parts_follow_the_search_variants_and_cell_tags(tmp_path):
    index = 0
    for tag, last_layer_only in (("lastlayer", True), (None, False)):
        for method in ("none", "upweighting"):
            for seed in (0, 1):
                write_trial(tmp_path, index, searched_config("wb", "m", method, sample=0, seed=seed, tag=tag,
                                                             sampled={"lr": 1e-3}, last_layer_only=last_layer_only),
                            reports({"val/wga": 0.5}))
                index += 1
    assert promote(tmp_path, "--seeds", 4, "--criterion", "average") == 0
    source = yaml.load((tmp_path / "promoted_average.yaml").read_text(), Loader=SpecLoader)
    assert sorted(part["tag"] for part in source["parts"]) == ["lastlayer", "rerun"]
    spec = build_spec(source, REGISTRIES)
    assert sorted(trial.name for trial in spec.trials) == [
        "wb-m-none-lastlayer-s4", "wb-m-none-rerun-s4", "wb-m-upweighting-lastlayer-s4", "wb-m-upweighting-rerun-s4"]
    assert {trial.name: trial.config["last_layer_only"] for trial in spec.trials}["wb-m-none-lastlayer-s4"] is True
    # the shared settings are the part's, so the rerun's method keys are the search's: analysed together, search
    # and rerun keep the two variants apart (before, every setting was a method key and no variant was left)
    parts = {part["tag"]: part for part in source["parts"]}
    assert parts["lastlayer"]["hparams"]["last_layer_only"] is True
    assert parts["rerun"]["hparams"]["last_layer_only"] is False
    for part in parts.values():
        assert all("last_layer_only" not in (entry.get(name, {}).get("hparams") or {})
                   for entry in part["methods"] if isinstance(entry, dict) for name in entry)
    for index, trial in enumerate(spec.trials):
        write_trial(tmp_path / "rerun", index, trial.config, reports({"val/wga": 0.5}), experiment_id="77777")
    joint = load_results([tmp_path, tmp_path / "rerun"])
    assert set(joint.trials["variant"]) == {"last_layer_only=false", "last_layer_only=true"}
    assert set(joint.trials["variant"]) == set(load_results(tmp_path).trials["variant"])
    rerun = select(joint, ["average"]).rerun
    assert set(rerun["variant"]) == {"last_layer_only=false", "last_layer_only=true"}  # each variant's winner


def test_the_search_specs_top_level_settings_are_carried(tmp_path, capsys):
    from trainables.sweep_storage import SPEC_FILE

    write_search(tmp_path)
    (tmp_path / SPEC_FILE).write_text(yaml.safe_dump({
        "name": "search", "datasets": {"wb": {"resources": {"cpu": 3}}}, "models": ["m"], "methods": ["none"],
        "resources": {"cpu": 2, "gpu": 0.5}, "max_failures": 0, "keep_checkpoints": "all"}))
    assert promote(tmp_path, "--seeds", 2) == 0
    source = yaml.load((tmp_path / "promoted_wga.yaml").read_text(), Loader=SpecLoader)
    assert source["resources"] == {"cpu": 2, "gpu": 0.5} and source["max_failures"] == 0
    assert source["keep_checkpoints"] == "all"
    assert "note: the search spec sets resources per dataset, model or part" in capsys.readouterr().err


def test_the_printed_command_is_quoted_for_the_shell_and_a_bad_storage_is_refused(tmp_path, capsys):
    write_search(tmp_path)
    storage = "s3://b/sweeps?endpoint_override=127.0.0.1:9000&scheme=http&region=us-east-1"
    assert promote(tmp_path, "--seeds", 2, "--storage", storage) == 0
    assert (f"run it with: groupsweep run {tmp_path / 'promoted_wga.yaml'} --storage '{storage}'"
            in capsys.readouterr().out)
    assert promote(tmp_path, "--seeds", 2, "--storage", "bogus://q", "--out", tmp_path / "x.yaml") == 2
    assert capsys.readouterr().err.startswith("error: cannot open 'bogus://q': ")
    assert not (tmp_path / "x.yaml").exists()


def test_an_out_folder_that_cannot_be_made_is_one_error_line_before_any_table(tmp_path, capsys):
    """``/proc`` refuses new folders, even to root (for whom it passes the writability check)."""
    write_search(tmp_path)
    capsys.readouterr()
    for argv in (["promote", tmp_path, "--seeds", 2, "--out", "/proc/nope/x.yaml"],
                 ["analyze", tmp_path, "--out", "/proc/nope"]):
        assert cli.main(list(map(str, argv))) == 2, argv
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert lines[-1].startswith("error: ") and "'/proc/nope" in lines[-1] and "--out" in lines[-1], err
        assert "Table 1" not in out and "|" not in out, out
    assert not list(tmp_path.glob("promoted_*"))


@pytest.mark.parametrize("command", ["promote", "report"])
def test_an_out_file_never_overwrites_the_sweeps_own_files(tmp_path, capsys, command):
    """A file ``--out`` named as a sweep's state (its saved spec, Tune's experiment state...) or inside a trial
    folder is refused before anything is written; an empty ``--out`` too."""
    write_search(tmp_path)
    (tmp_path / "groupsweep_spec.yaml").write_text("name: kept\n")
    trial = next(path.parent for path in tmp_path.rglob("params.json"))
    cases = [(tmp_path / "groupsweep_spec.yaml", "is named as a sweep's own state (groupsweep_spec.yaml)"),
             (tmp_path / "experiment_state-x.json", "is named as a sweep's own state"),
             (trial / "result.json", f"is in the trial folder '{trial}'"),
             (trial / "checkpoint_000001" / "new.html", f"is in the trial folder '{trial}'"),
             ("", "--out is empty; give the file to write")]
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    for out, message in cases:
        capsys.readouterr()
        assert cli.main([command, str(tmp_path), *(["--seeds", "2"] if command == "promote" else []),
                         "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before


def test_run_runs_the_written_spec_as_the_run_command_does(tmp_path, monkeypatch):
    write_search(tmp_path)
    monkeypatch.setattr("sweeps.spec.package_registries", lambda: REGISTRIES)  # --run checks the rerun's spec
    calls = []
    # a failing run's status is passed on, and nothing is analysed (tests/test_search_integration.py runs it)
    monkeypatch.setattr(sweep_command, "run_command", lambda args: calls.append(args) or 3)
    assert promote(tmp_path, "--seeds", 2, 3, "--run", "--storage", tmp_path / "storage") == 3
    (args,) = calls
    assert args.spec == str(tmp_path / "promoted_wga.yaml") and args.storage == str(tmp_path / "storage")
    assert args.overrides == [] and args.name is None and not args.no_after and args.address is None


def test_run_into_a_storage_it_cannot_use_writes_no_spec(tmp_path, monkeypatch, capsys):
    """``--run`` checks the rerun's storage (and folder) before it writes the spec file: a refused run leaves no
    spec file, and an earlier one as it was."""
    write_search(tmp_path)
    monkeypatch.setattr("sweeps.spec.package_registries", lambda: REGISTRIES)
    (tmp_path / "a-file").write_text("x")
    earlier = tmp_path / "promoted_wga.yaml"
    for argv in ([], ["--out", tmp_path / "new.yaml"]):
        earlier.write_text("# edited by hand\n")
        capsys.readouterr()
        assert promote(tmp_path, "--seeds", 2, "--run", "--storage", tmp_path / "a-file", *argv) == 2
        err = capsys.readouterr().err
        assert err == f"error: --storage '{tmp_path / 'a-file'}' is not a folder\n", err
        assert earlier.read_text() == "# edited by hand\n" and not (tmp_path / "new.yaml").exists()


def test_promote_run_as_an_after_command_reruns_on_the_sweeps_cluster(tmp_path, monkeypatch):
    """``groupsweep run SPEC --address A`` whose spec ends with ``promote --run``: the rerun joins A too."""
    write_search(tmp_path / "search")
    calls = []
    monkeypatch.setattr(sweep_command, "run_command", lambda args: calls.append(args) or 3)  # nothing to analyse
    spec = build_spec({"name": "search", "datasets": {"synthetic-waterbirds": {}}, "models": ["toy-resnet-xs"],
                       "methods": ["none"], "after": ["promote --seeds 3 --run"]})
    monkeypatch.setattr("sweeps.spec.package_registries", lambda: REGISTRIES)  # --run checks the rerun's spec
    assert sweep_command.run_after(spec, str(tmp_path / "search"), address="127.0.0.1:6379") == 3
    (args,) = calls
    assert args.address == "127.0.0.1:6379" and args.storage == str(tmp_path)


def test_promote_run_after_a_sweep_in_object_storage_writes_its_analysis_there(tmp_path, monkeypatch, capsys):
    """An after command of a sweep in object storage writes into the sweep's analysis folder there, the analysis
    that ``promote --run`` ends with included (before, it went to the driver's current folder); only the spec file
    stays local. A ``file://`` URI stands in for a bucket."""
    write_search(tmp_path / "search")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")

    def run_command(args):  # what running the promoted spec leaves beside the search
        spec = build_spec(yaml.load(Path(args.spec).read_text(), Loader=SpecLoader), REGISTRIES)
        for index, trial in enumerate(spec.trials):
            write_trial(tmp_path / spec.name, index, trial.config, reports({"val/wga": 0.5, "test/wga": 0.8}),
                        experiment_id="77777")
        return 0

    monkeypatch.setattr(sweep_command, "run_command", run_command)
    spec = build_spec({"name": "search", "datasets": {"synthetic-waterbirds": {}}, "models": ["toy-resnet-xs"],
                       "methods": ["none"], "after": ["promote --seeds 3 --run"]})
    monkeypatch.setattr("sweeps.spec.package_registries", lambda: REGISTRIES)  # --run checks the rerun's spec
    exp_dir = (tmp_path / "search").as_uri()
    assert sweep_command.run_after(spec, exp_dir) == 0
    analysis = tmp_path / "search" / "groupsweep_analysis"
    assert (analysis / "table1_wga_rerun.csv").is_file() and (analysis / "table1_wga.md").is_file()
    assert [path.name for path in (tmp_path / "cwd").iterdir()] == ["search_promoted_wga.yaml"]
    out = capsys.readouterr().out
    assert f"$ groupsweep analyze {exp_dir} {exp_dir}-rerun --criterion wga --out {exp_dir}/groupsweep_analysis" in out


@pytest.mark.parametrize("seeds, message", [
    (["1", "x"], "--seeds: 'x' is not an integer (seeds: distinct integers from 0)"),
    (["1", "1"], "--seeds: seeds [1, 1] repeat a seed"),
    (["-2"], "--seeds: seed -2 is not an integer from 0 to 4294967295"),
])
def test_bad_seeds_are_one_line_errors(tmp_path, capsys, seeds, message):
    write_search(tmp_path)
    assert promote(tmp_path, "--seeds", *seeds) == 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_the_searchs_own_seeds_are_refused_before_anything_is_written(tmp_path, capsys):
    """The search chose its configurations on seeds 0 and 1: a "rerun" on them would repeat the trials that
    chose it (the same numbers, on one machine), not test the choice on new seeds."""
    write_search(tmp_path)
    assert promote(tmp_path, "--seeds", 5, 1, 0) == 2
    assert capsys.readouterr().err == ("error: --seeds 1 0: the search ran on seeds 0, 1, and its choice is fitted "
                                       "to them; rerun the chosen configurations on other seeds\n")
    assert not (tmp_path / "promoted_wga.yaml").exists()


def test_a_grid_sweep_or_a_search_without_a_complete_configuration_cannot_be_promoted(tmp_path, capsys):
    write_trial(tmp_path / "grid", 0, trial_config("wb", "m", "none"), reports({"val/wga": 0.5}))
    assert promote(tmp_path / "grid", "--seeds", 1) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is not a hyperparameter search" in err and err.count("\n") == 1
    write_trial(tmp_path / "running", 0, searched_config("wb", "m", "none", sample=0, sampled={"lr": 1e-3}),
                [epoch_metrics(1)])
    write_trial(tmp_path / "running", 1, searched_config("wb", "m", "none", sample=1, sampled={"lr": 1e-4}),
                [epoch_metrics(1)], stopped=True)
    assert promote(tmp_path / "running", "--seeds", 1) == 2
    err = capsys.readouterr().err
    assert "error: no complete configuration in" in err and err.count("error:") == 1
    assert not (tmp_path / "running" / "promoted_wga.yaml").exists()


def test_the_analysis_promote_runs_parses_like_the_analyze_command():
    """``promote --run`` analyses the search and its reruns with ``analyze``'s own parser: every option the
    command has (``--group-info`` included) is present at its default."""
    from sweeps.analyze_command import analyze_args

    args = analyze_args(["search", "rerun", "--criterion", "average"])
    assert args.run_dir == ["search", "rerun"] and args.criterion == "average"
    assert (args.epoch, args.pool_models, args.methods, args.group_info, args.out) == ("final", False, None, None, None)
