"""The Python API (``import groupsweep as gs``): the README's example runs as written, each function gives
what its command gives, and bad input raises the command line's ``GroupsweepError``."""

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

import groupsweep as gs
from analysis.results import SweepResults
from analysis.selection import CRITERIA, display_table, paper_view, select
from ray_fixtures import REPO, cli_env, tiny_spec
from results_fixtures import write_study

DATASETS = ("synthetic-waterbirds", "synthetic-celeba", "synthetic-civilcomments")


def readme_example() -> str:
    """The first ``python`` code block of the README's "Python API" section."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_on_a_sweep_directory(tmp_path, monkeypatch, capsys):
    """The example as written, in a folder where ``groupsweep_results/demo-table1`` is a (fake) finished
    sweep; ``gs.run`` is replaced by a stand-in that checks its spec and returns that sweep."""
    write_study(tmp_path / "groupsweep_results" / "demo-table1", datasets=DATASETS, models=("toy-resnet-s",))
    calls = []

    def fake_run(spec, storage=None, **options):
        calls.append((spec, storage, options))
        return gs.load_results(Path(storage) / gs.plan(spec).name)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(gs, "run", fake_run)
    exec(compile(readme_example(), "README.md (Python API)", "exec"), {})
    out = capsys.readouterr().out
    assert calls == [("demo-table1", "groupsweep_results", {})]
    assert "34 trials" in out  # gs.plan of the preset
    assert "worst-class" in out and "mixture 2:1" in out
    assert "error: unknown selection criterion 'val-wga'" in out
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and 'id="table1-details"' in page


def test_table1_and_report_give_what_the_commands_give(tmp_path):
    write_study(tmp_path / "run", models=("toy-resnet-xs", "toy-resnet-s"))
    results = gs.load_results(tmp_path / "run")
    assert isinstance(results, SweepResults) and len(results.trials) == 16
    selection = select(results, ["worst-class"])
    details = gs.table1(results, criterion="worst-class")
    pd.testing.assert_frame_equal(details, display_table(selection.table))
    assert details.attrs["notes"] == []
    pd.testing.assert_frame_equal(gs.table1(tmp_path / "run", layout="raw"), select(results, list(CRITERIA)).table)
    pd.testing.assert_frame_equal(gs.table1(results, layout="paper"), paper_view(select(results, list(CRITERIA)).table))
    pooled = gs.table1(results, criterion="wga", pool_models=True)
    assert "model" not in pooled and any("2 models pooled" in note for note in pooled.attrs["notes"])
    only = gs.table1(results, criterion="wga", methods=["none", "subsetting"], layout="raw")
    assert set(only["method"]) <= {"none", "subsetting"}
    class_only = gs.table1(results, criterion="wga", group_info="none", layout="raw")
    pd.testing.assert_frame_equal(class_only, select(results, ["wga"], group_info="none").table)
    assert set(class_only["group_info"]) == {"none"}
    whole = gs.select(tmp_path / "run", criterion="worst-class")  # a path, as every API function takes
    assert isinstance(whole, gs.Selection)
    pd.testing.assert_frame_equal(whole.table, selection.table)
    pd.testing.assert_frame_equal(whole.methods, selection.methods)

    page = gs.report(results, tmp_path / "page.html", title="my study")
    assert page == tmp_path / "page.html" and "<h1>my study</h1>" in page.read_text()
    gs.report(results, tmp_path / "class-only.html", group_info="none")
    assert "using at most none group information" in (tmp_path / "class-only.html").read_text()
    default = gs.report(str(tmp_path / "run"))
    assert default == tmp_path / "run" / "groupsweep_analysis" / "report.html" and default.exists()
    uri = f"file://{tmp_path}/uploaded/page.html"  # a storage URI is uploaded, as by `report --out`
    assert gs.report(results, uri) == uri and (tmp_path / "uploaded" / "page.html").read_text().startswith("<!DOCTYPE")
    assert not any(Path.cwd().glob("file:*"))
    assert gs.report(str(tmp_path)) == tmp_path / "groupsweep_analysis" / "report.html"  # a folder of sweeps: as
    # `groupsweep report FOLDER`, beside them


def test_plan_takes_a_preset_a_file_or_a_mapping_and_overrides_as_the_command_line_does(tmp_path):
    as_mapping = gs.plan("demo", {"epochs": 1, "seeds": [0], "lr": 1e-5, "dataset_options": {"size": 300}})
    as_strings = gs.plan("demo", ["epochs=1", "seeds=[0]", "lr=1e-5", "dataset_options.size=300"])
    assert [trial.config for trial in as_mapping.trials] == [trial.config for trial in as_strings.trials]
    assert len(as_mapping.trials) == 10 and as_mapping.trials[0].config["lr"] == 1e-5
    path = tiny_spec(tmp_path / "sweep.yaml", methods=["none", "upsampling"])
    assert len(gs.plan(path).trials) == 4
    source = {"name": "inline", "datasets": {"synthetic-waterbirds": {}}, "models": ["toy-resnet-xs"],
              "methods": ["none"], "seeds": [1], "after": ["analyze --pool-models"]}
    assert [trial.name for trial in gs.plan(source).trials] == ["synthetic-waterbirds-toy-resnet-xs-none-s1"]
    assert gs.plan(source).after == ("analyze --pool-models",)
    assert "table1" in gs.presets() and "demo-table1" in gs.presets()


def test_bad_input_raises_the_command_lines_one_line_errors(tmp_path):
    write_study(tmp_path / "run")
    cases = [
        (lambda: gs.table1(tmp_path / "run", criterion="val-wga"), "unknown selection criterion 'val-wga'"),
        (lambda: gs.table1(tmp_path / "run", epoch="last"), "unknown epoch rule 'last'"),
        (lambda: gs.table1(tmp_path / "run", layout="wide"), "unknown layout 'wide'"),
        (lambda: gs.table1(tmp_path / "run", group_info="train"), "unknown group information 'train'"),
        (lambda: gs.select(tmp_path / "run", criterion="val-wga"), "unknown selection criterion 'val-wga'"),
        (lambda: gs.select(tmp_path / "missing"), "results directory .* does not exist"),
        (lambda: gs.load_results(tmp_path / "missing"), "results directory .* does not exist"),
        (lambda: gs.plan("no-such-preset"), "no preset or spec file 'no-such-preset'"),
        (lambda: gs.plan("demo", {"epochs": 0}), "epochs must be a positive integer"),
        (lambda: gs.plan({"name": "x", "datasets": {"synthetic-waterbirds": {}}, "models": ["toy-resnet-xs"],
                          "methods": ["none"], "after": ["analyze --nope"]}), "after\\[0\\]"),
        (lambda: gs.run("demo", overrides=["epochs=zero"]), "epochs must be a positive integer, got 'zero'"),
        (lambda: gs.run("demo", max_concurrent=0), "--max-concurrent must be a positive integer"),
        # a name leading out of gs.run's temporary folder (made in the system's temporary folder)
        (lambda: gs.run({"name": f"../{tmp_path.name}-escaped", "datasets": {"synthetic-waterbirds": {}},
                         "models": ["toy-resnet-xs"], "methods": ["none"]}, storage=tmp_path / "s"), "name"),
        (lambda: gs.promote(tmp_path / "run", [3, 4]), "is not a hyperparameter search"),
        (lambda: gs.promote(tmp_path / "run", [3], criterion="oracle"), "unknown promote criterion 'oracle'"),
        (lambda: gs.promote(tmp_path / "run", ["x"]), "--seeds"),
        (lambda: gs.promote(tmp_path / "run", "12"), "seeds must be a list of integers, such as \\[3, 4\\], got '12'"),
        # a value of the wrong kind: the same one-line error, not Python's TypeError (nor a string read per letter)
        (lambda: gs.report(123), "a sweep directory must be a path or a storage URI, got 123"),
        (lambda: gs.report(tmp_path / "run", out=123), "out must be a path or a storage URI, got 123"),
        (lambda: gs.load_results(None), "a sweep directory must be a path or a storage URI, got None"),
        (lambda: gs.load_results(""), "a sweep directory must be a path or a storage URI, got ''"),
        (lambda: gs.plan("demo", overrides="epochs=1"), "overrides must be a mapping such as \\{'epochs': 1\\} or a "
                                                        "list of 'KEY=VALUE' strings, got 'epochs=1'"),
        (lambda: gs.table1(tmp_path / "run", methods=3), "methods must be a non-empty list of method names"),
    ]
    for call, message in cases:
        with pytest.raises(gs.GroupsweepError, match=message):
            call()
    assert not Path(tempfile.gettempdir(), f"{tmp_path.name}-escaped.yaml").exists()  # nothing written there


def test_storage_that_cannot_be_reached_is_the_command_lines_one_line_error(monkeypatch):
    """The command line prints a storage ``OSError`` as one ``error:`` line; the API raises that line as a
    ``GroupsweepError`` (the ``OSError`` its cause), not the ``OSError`` itself."""
    from s3_fixtures import free_port

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    closed = f"s3://b/sweeps/demo?endpoint_override=127.0.0.1:{free_port()}&scheme=http&region=us-east-1"
    with pytest.raises(gs.GroupsweepError, match=r"^When getting information for key 'sweeps/demo' in bucket 'b': "
                                                 r".*NETWORK_CONNECTION") as error:
        gs.table1(closed)
    assert isinstance(error.value.__cause__, OSError) and "\n" not in str(error.value)


@pytest.mark.slow
def test_run_runs_a_sweep_and_returns_its_results(tmp_path):
    """``gs.run`` in a fresh interpreter (it starts Ray there, as the command does): the tiny sweep runs,
    its summary is printed, and the returned results hold every trial, complete."""
    spec = tiny_spec(tmp_path / "sweep.yaml", methods=["none", "upsampling"], seeds=(1,), epochs=1)
    script = ("import groupsweep as gs\n"
              f"results = gs.run({str(spec)!r}, storage={str(tmp_path / 'results')!r}, name='api', max_concurrent=2,"
              " overrides={'epochs': 1})\n"
              "print('STATUSES', sorted(results.trials['status']))\n"
              "import os\n"
              "print('MARKED', 'GROUPSWEEP_RAY_GUARD' in os.environ)\n")  # what it starts later lives on
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=cli_env(), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "final test WGA" in result.stdout
    assert "STATUSES ['complete', 'complete']" in result.stdout
    assert "MARKED False" in result.stdout  # the local Ray's guard no longer marks this process's children
