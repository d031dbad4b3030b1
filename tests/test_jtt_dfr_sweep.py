"""End to end: a sweep of none, jtt, dfr and groupdro through the real ``groupsweep run`` CLI (local Ray).

The jtt and dfr trials take their base model from the sweep's none trial (its epoch-T and final
checkpoints: ``keep_checkpoints: all``; one trial at a time, so the none trial runs first), the jtt trial
fails once after epoch 1 and resumes from its checkpoint with its saved error set, and ``groupsweep
analyze`` ranks them and groupdro (its group weights reported every epoch) under every criterion.
"""

import csv
import json

import numpy as np
import pytest
import yaml

from ray_fixtures import result_epochs, run_cli, run_here, tiny_spec

pytestmark = pytest.mark.slow


def test_jtt_dfr_and_groupdro_trials_run_in_a_sweep_reuse_the_none_trial_resume_and_are_analysed(tmp_path,
                                                                                                   monkeypatch, capsys):
    from trainables.trial_dir import DFR_FILE, JTT_ERRORS_FILE, TrialDir, fault_marker

    spec_path = tiny_spec(tmp_path / "sweep.yaml", seeds=(1,), epochs=2, max_concurrent=1, methods=[
        "none", {"jtt": {"hparams": {"jtt_epochs": 1, "jtt_lambda_up": 3}}}, {"dfr": {"hparams": {"dfr_ensemble": 2}}},
        {"groupdro": {"hparams": {"groupdro_eta": 0.1}}}])
    source = yaml.safe_load(spec_path.read_text())
    spec_path.write_text(yaml.safe_dump({**source, "keep_checkpoints": "all"}))
    storage = tmp_path / "results"
    names = {method: f"synthetic-waterbirds-toy-convnextv2-xs-{method}-s1"
             for method in ("none", "jtt", "dfr", "groupdro")}
    monkeypatch.setenv("GROUPSWEEP_FAULT_INJECT", f"{names['jtt']}:1")  # the CLI's environment, its trials'
    result = run_cli("run", str(spec_path), "--storage", str(storage), "--name", "base")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    exp_dir = storage / "base"

    assert result_epochs(exp_dir / names["none"]) == [1, 2]
    assert result_epochs(exp_dir / names["jtt"]) == [1, 2]  # epoch 1, the fault, epoch 2 after the restore
    assert result_epochs(exp_dir / names["dfr"]) == [2]  # DFR: one epoch, the base run's last
    jtt, dfr = TrialDir(str(exp_dir / names["jtt"])), TrialDir(str(exp_dir / names["dfr"]))
    errors = jtt.read_npz(JTT_ERRORS_FILE)
    assert str(errors["base_source"]) == names["none"] and len(errors["errors"]) > 0
    assert str(dfr.read_npz(DFR_FILE)["base_source"]) == names["none"]
    # the retry reused the error set saved before the fault instead of computing it again
    assert jtt.exists(fault_marker(1))
    marker = (exp_dir / names["jtt"] / fault_marker(1)).stat().st_mtime_ns
    assert (exp_dir / names["jtt"] / JTT_ERRORS_FILE).stat().st_mtime_ns < marker
    rows = [json.loads(line) for line in (exp_dir / names["jtt"] / "result.json").read_text().splitlines()]
    assert rows[-1]["data/num_train_kept"] == 200 and rows[-1]["iterations_since_restore"] == 1
    dfr_row = json.loads((exp_dir / names["dfr"] / "result.json").read_text().splitlines()[-1])
    assert np.isfinite(dfr_row["val/wga"]) and np.isfinite(dfr_row["test/wga"]) and dfr_row["status"] == "ok"

    groupdro_rows = [json.loads(line)
                     for line in (exp_dir / names["groupdro"] / "result.json").read_text().splitlines()]
    assert [row["epoch"] for row in groupdro_rows] == [1, 2]
    for row in groupdro_rows:  # the group weights: a distribution over the 4 groups, moved away from uniform
        weights = [row[f"optim/groupdro_q_group_{g}"] for g in range(4)]
        assert sum(weights) == pytest.approx(1.0, abs=1e-5) and max(weights) > 0.25

    status = run_here(capsys, "status", "base", "--storage", str(storage))
    assert status.returncode == 0 and status.stdout.strip().splitlines()[-1] == "4 complete", status.stdout

    out = tmp_path / "analysis"
    analyze = run_here(capsys, "analyze", str(exp_dir), "--out", str(out))
    assert analyze.returncode == 0, analyze.stdout[-3000:] + analyze.stderr[-3000:]
    candidates = [row for path in sorted(out.glob("*_methods.csv")) for row in csv.DictReader(path.open())]
    assert candidates
    for criterion in ("wga", "worst-class", "bias-unsupervised"):
        ranked = {row["method"] for row in candidates if row["criterion"] == criterion and row["score"] != ""}
        assert {"none", "jtt", "dfr", "groupdro"} <= ranked, (criterion, ranked)
