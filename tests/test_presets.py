"""Shipped presets: trial counts (each with its formula), the paper's hyperparameters, CPU-only demos."""

import pytest

from sweeps.cli import main
from sweeps.presets import preset_names
from sweeps.spec import build_spec, read_spec_source
from sweeps.sweep_command import preset_rows
from trainables.models import MODELS

PAPER = ("fig1-balancing", "fig2-mixture", "fig3-scaling", "fig4-resnet", "fig7-ablation", "spectral", "table1")
SEEDS = 3
# Trial count of every preset, as the formula that defines its grid.
COUNTS = {
    # 3 datasets (one model each) x 4 methods (none, subsetting, upsampling, upweighting) x 3 seeds
    "fig1-balancing": 3 * 4 * SEEDS,
    # 3 seeds x 3 methods (subsetting, upsampling, upweighting) per dataset + mixture at every integer
    # ratio between 1:1 and the native ratio: Waterbirds 2 (2, 3), CelebA 4 (2-5), CivilComments 6 (2-7)
    "fig2-mixture": SEEDS * ((3 + 2) + (3 + 4) + (3 + 6)),
    # 3 seeds x (6 ConvNeXt-V2 x 5 methods on Waterbirds + 6 x 4 on CelebA + 5 BERT x 5 on
    # CivilComments + 5 BERT x 1 (no balancing) on MultiNLI)
    "fig3-scaling": SEEDS * (6 * 5 + 6 * 4 + 5 * 5 + 5 * 1),
    # 3 seeds x 5 ResNets x (Waterbirds last-layer 2 methods + Waterbirds full 2 + CelebA full 2)
    "fig4-resnet": SEEDS * 5 * (2 + 2 + 2),
    # 3 seeds x 2 methods (with / without subsetting) x ratios: Waterbirds 4, CelebA 6, CivilComments 8
    "fig7-ablation": SEEDS * 2 * (4 + 6 + 8),
    # 4 datasets x 1 model x 1 (best) method x 3 seeds
    "spectral": 4 * 1 * 1 * SEEDS,
    # 3 seeds x (none + 3 class-balancing methods + the authors' mixture ratios) per dataset, one model each:
    # Waterbirds 4 + 1 (2:1), CelebA 4 + 2 (2:1, 4:1), CivilComments 4 + 2 (3:1, 5:1)
    "table1": SEEDS * ((4 + 1) + (4 + 2) + (4 + 2)),
    # 1 dataset x 2 toy models x 5 methods (none, subsetting, upsampling, upweighting, mixture 2:1) x 2 seeds
    "demo": 1 * 2 * 5 * 2,
    # the demo-* presets mirror their paper preset's structure on the embedded benchmarks
    # (synthetic-waterbirds / -celeba / -civilcomments / -multinli) with toy models
    "demo-fig1-balancing": 3 * 4 * SEEDS,
    "demo-fig2-mixture": SEEDS * ((3 + 2) + (3 + 4) + (3 + 6)),
    "demo-fig3-scaling": SEEDS * (4 * 5 + 4 * 4 + 4 * 5 + 4 * 1),  # 4 toy sizes per family
    "demo-fig4-resnet": SEEDS * 4 * (2 + 2 + 2),  # 4 toy ResNet sizes
    "demo-fig7-ablation": SEEDS * 2 * (4 + 6 + 8),
    "demo-spectral": 4 * 1 * 1 * SEEDS,
    "demo-table1": 2 * ((4 + 1) + (4 + 2) + (4 + 2)),  # 2 seeds (sized for a few minutes on 2 cores)
    # 2 embedded image benchmarks x 1 toy model x 5 methods (none, upsampling, mixture 2:1, d3m, auto-d3m)
    "demo-d3m": 2 * 1 * 5 * SEEDS,
    # synthetic-civilcomments x the pretrained MiniLM-L6 x 6 methods (none, subsetting, upsampling,
    # upweighting, mixture 3:1 and 5:1) x 2 seeds
    "demo-finetune": 1 * 1 * 6 * 2,
    # D3M's Table 1: 4 datasets (CelebA-Age, CelebA-Blond, Waterbirds, MultiNLI) x 8 methods x 3 seeds
    "d3m-table1": SEEDS * 4 * 8,
    # its CPU counterpart: 3 embedded benchmarks x 8 methods x 2 seeds
    "demo-d3m-table1": 3 * 8 * 2,
    # searches: cells x configurations per cell x search seeds
    # 3 datasets (one model each) x 4 methods x 16 configurations x 1 seed
    "tune-balancing": 3 * 4 * 16 * 1,
    # 1 dataset x 1 toy model x 4 methods (none, upsampling, upweighting, mixture 2:1) x 6 configurations x 1 seed
    "demo-hpo": 1 * 1 * 4 * 6 * 1,
}
# Searches and the number of cells (dataset x model x method) each searches in.
SEARCH_CELLS = {"tune-balancing": 3 * 4, "demo-hpo": 4}
# Demos that finetune a real pretrained model on a CPU (the rest train toy models from scratch).
PRETRAINED_DEMOS = ("demo-finetune",)
TABLE4 = {"waterbirds": (100, "cosine"), "celeba": (20, "cosine"), "civilcomments": (20, "linear"),
          "multinli": (20, "linear")}
# (schedule_step, final_lr_factor) of the paper presets: the authors' BERT schedule (transformers' linear decay to
# 0, stepped per epoch) for the linear schedule; groupsweep's per-step cosine to 0 for the images.
AUTHORS_SCHEDULE = {"linear": ("epoch", 0.0), "cosine": ("step", 0.0)}


def test_every_preset_has_a_demo_counterpart_and_a_stated_count():
    names = preset_names()
    assert set(names) == set(COUNTS)
    for name in PAPER:
        assert f"demo-{name}" in names


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_plan_prints_each_preset_count(name, capsys):
    assert main(["plan", name]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    after = [line for line in lines if line.startswith("then: groupsweep ")]
    if name in SEARCH_CELLS:  # header, one row per cell, the search line, the `after` commands, count
        assert lines[-1] == f"{SEARCH_CELLS[name]} cells, {COUNTS[name]} trials"
        assert len(lines) == SEARCH_CELLS[name] + 3 + len(after)
        return
    assert lines[-1] == f"{COUNTS[name]} trials"
    assert len(lines) == COUNTS[name] + 2 + len(after)  # header, one row per trial, the `after` commands, count
    if "spectral" in name:
        assert after == [f"then: groupsweep spectral <storage>/{name} --top 10 --top 50"]


def test_presets_command_lists_names_and_counts(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for row in preset_rows():
        assert row["description"]
        line = next(line for line in out.splitlines() if line.split()[:1] == [row["name"]])
        assert line.split()[1] == str(COUNTS[row["name"]])


@pytest.mark.parametrize("name", PAPER)
def test_paper_presets_use_table4_hyperparameters(name):
    for trial in build_spec(read_spec_source(name)).trials:
        config = trial.config
        assert config["pretrained"] is True and config["seed"] in (1, 2, 3)
        assert MODELS[config["model"]].modality == ("image" if config["dataset"] in ("waterbirds", "celeba") else "text")
        assert config["weight_decay"] == 1e-4 and config["schedule"] == TABLE4[config["dataset"]][1]
        assert (config["schedule_step"], config["final_lr_factor"]) == AUTHORS_SCHEDULE[config["schedule"]]
        if config["last_layer_only"]:  # Appendix B: last-layer training with SGD, lr 1e-3, 20 epochs
            # no momentum, as the authors' SGD ran (their code sets an attribute that torch's SGD never reads)
            assert (config["optimizer"], config["lr"], config["epochs"], config["momentum"]) == ("sgd", 1e-3, 20, 0)
        else:
            assert (config["optimizer"], config["lr"], config["batch_size"]) == ("adamw", 1e-5, 32)
            assert config["epochs"] == TABLE4[config["dataset"]][0]
        assert trial.resources.gpu > 0


def test_the_tuning_preset_searches_idrissi_et_als_ranges_per_method():
    spec = build_spec(read_spec_source("tune-balancing"))
    assert spec.search.num_samples == 16 and spec.search.scheduler == "asha" and spec.search.metric == "val/wga"
    for cell in spec.cells:
        assert cell.space["lr"] == {"loguniform": [1e-5, 1e-3]}
        assert cell.space["weight_decay"] == {"loguniform": [1e-4, 1.0]}
        sizes = cell.space["batch_size"]["choice"]
        assert max(sizes) == (128 if cell.config["dataset"] in ("waterbirds", "celeba") else 32) and min(sizes) == 2
        assert cell.config["pretrained"] is True and cell.config["schedule"] == TABLE4[cell.config["dataset"]][1]
        assert (cell.config["schedule_step"], cell.config["final_lr_factor"]) == AUTHORS_SCHEDULE[cell.config["schedule"]]


def test_fig4_has_last_layer_and_full_finetuning():
    trials = build_spec(read_spec_source("fig4-resnet")).trials
    last_layer = {(t.config["dataset"], t.config["model"]) for t in trials if t.config["last_layer_only"]}
    full = {(t.config["dataset"], t.config["model"]) for t in trials if not t.config["last_layer_only"]}
    resnets = {f"resnet{depth}" for depth in (18, 34, 50, 101, 152)}
    assert {m for _, m in last_layer} == resnets == {m for _, m in full}
    assert {d for d, _ in full} == {"waterbirds", "celeba"}


@pytest.mark.parametrize("name", sorted(n for n in COUNTS if n.startswith("demo") and n not in PRETRAINED_DEMOS))
def test_demo_presets_run_on_a_cpu_with_embedded_data_and_toy_models(name):
    from trainables.data import load_dataset

    modality = {}
    for trial in build_spec(read_spec_source(name)).units:
        dataset = trial.config["dataset"]
        if dataset not in modality:  # a tiny copy of the embedded dataset tells its modality
            modality[dataset] = load_dataset(dataset, size=60, val_size=60, test_size=60).modality
        model = MODELS[trial.config["model"]]
        assert model.toy and trial.config["pretrained"] is False
        assert model.modality == modality[dataset], (dataset, model.name)
        assert dataset.startswith("synthetic-") and trial.resources.gpu == 0 and trial.resources.cpu == 1


def test_demo_finetune_finetunes_the_pretrained_minilm_on_a_cpu():
    """demo-finetune: the pretrained MiniLM-L6 (no model_path: the registry finds it) on the embedded
    text benchmark, none + the three class-balancing methods + mixture ratios, 2 seeds, the paper's text
    optimiser and schedule (AdamW, wd 1e-4, linear), one CPU per trial, ending with Table 1 and figures."""
    spec = build_spec(read_spec_source("demo-finetune"))
    configs = [trial.config for trial in spec.trials]
    assert {c["dataset"] for c in configs} == {"synthetic-civilcomments"}
    assert {c["model"] for c in configs} == {"minilm-l6"} and not MODELS["minilm-l6"].toy
    assert all(c["pretrained"] is True and c["model_path"] is None for c in configs)
    assert {(c["method"], c["ratio"]) for c in configs} == {
        ("none", None), ("subsetting", None), ("upsampling", None), ("upweighting", None),
        ("mixture", 3), ("mixture", 5)}
    assert {c["seed"] for c in configs} == {1, 2}
    assert {(c["optimizer"], c["weight_decay"], c["schedule"]) for c in configs} == {("adamw", 1e-4, "linear")}
    assert all(c["lr"] <= 1e-4 and c["epochs"] <= 3 for c in configs)
    assert all(t.resources.gpu == 0 and t.resources.cpu == 1 for t in spec.trials)
    assert spec.after == ("analyze", "plot")


@pytest.mark.parametrize("name", ["table1", "demo-table1"])
def test_table1_presets_hold_the_papers_candidates_and_end_with_analyze(name):
    """table1: one model per dataset as in the paper's Table 1 (ConvNeXt-V2 Base for Waterbirds and CelebA,
    BERT Base for CivilComments), none + subsetting + upsampling + upweighting + the authors' mixture
    ratios; demo-table1: the same candidates on the embedded counterparts; both end with `analyze`."""
    spec = build_spec(read_spec_source(name))
    prefix = "synthetic-" if name.startswith("demo") else ""
    ratios = {"waterbirds": {2}, "celeba": {2, 4}, "civilcomments": {3, 5}}
    models = {}
    for dataset, mixture in ratios.items():
        configs = [trial.config for trial in spec.trials if trial.config["dataset"] == prefix + dataset]
        methods = {(c["method"], None if c["ratio"] is None else float(c["ratio"])) for c in configs}
        assert methods == {("none", None), ("subsetting", None), ("upsampling", None), ("upweighting", None)} | {
            ("mixture", float(r)) for r in mixture}
        models[dataset] = {c["model"] for c in configs}
    if not prefix:
        assert models == {"waterbirds": {"convnextv2-base"}, "celeba": {"convnextv2-base"},
                          "civilcomments": {"bert-base"}}
    else:
        assert all(len(names) == 1 for names in models.values())
    assert spec.after == ("analyze",)


@pytest.mark.slow
def test_demo_table1_through_the_cli_writes_a_table1_row_for_every_criterion(tmp_path, cluster_address):
    """`groupsweep run demo-table1` as users run it (scaled down by --set: one seed, one epoch, small
    splits): the sweep finishes, its `after: [analyze]` writes Table 1, and every dataset/model has a
    row for each validation criterion (wga, worst-class, bias-unsupervised) and for average and oracle."""
    import pandas as pd

    from ray_fixtures import run_cli

    storage = tmp_path / "results"
    done = run_cli("run", "demo-table1", "--storage", str(storage), "--set", "seeds=[1]", "--set", "epochs=1",
                   "--set", "dataset_options.size=300", "--set", "dataset_options.val_size=120",
                   "--set", "dataset_options.test_size=120", "--address", cluster_address)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Table 1: method chosen per validation criterion" in done.stdout
    table = pd.read_csv(storage / "demo-table1" / "groupsweep_analysis" / "table1.csv")
    cells = {("synthetic-waterbirds", "toy-resnet-s"), ("synthetic-celeba", "toy-resnet-s"),
             ("synthetic-civilcomments", "toy-bert-s")}
    criteria = {"wga", "worst-class", "bias-unsupervised", "average", "oracle"}
    assert set(zip(table["dataset"], table["model"], table["criterion"])) == {
        (dataset, model, criterion) for dataset, model in cells for criterion in criteria}
    assert len(table) == len(cells) * len(criteria)
    assert table["method_label"].notna().all() and table["test_wga_mean"].between(0, 1).all()


D3M_TABLE1_METHODS = {"none", "auto-d3m", "jtt", "dfr", "d3m", "rwg", "subg", "groupdro"}


def test_d3m_table1_preset_holds_the_papers_methods_and_appendix_b2_settings():
    """Every dataset of the D3M paper's Table 1 (CelebA-Age = celeba with target Young / spurious Male) with its
    eight methods; Appendix B.2: Adam, ResNet-18 (random init for CelebA, ImageNet for Waterbirds), CelebA lr
    1e-3 / wd 1e-4 / batch 512 / 5 or 10 epochs, Waterbirds ERM-type lr 1e-4 / wd 1e-4 and re-weighting
    methods lr 1e-5 / wd 0.1, batch 32, 20 epochs."""
    spec = build_spec(read_spec_source("d3m-table1"))
    tables = {}
    for trial in spec.trials:
        c = trial.config
        task = "celeba-age" if (c["dataset_options"] or {}).get("target") == "Young" else c["dataset"]
        tables.setdefault(task, set()).add(c["method"])
        assert c["optimizer"] == "adam" and c["seed"] in (1, 2, 3)
        if c["method"] in ("d3m", "auto-d3m"):  # the paper's removal: every negative alignment, no class cap
            assert c["d3m"]["max_removed"] == 1.0 and c["d3m"].get("remove", "negative") == "negative"
        if c["dataset"] == "celeba":
            assert (c["model"], c["pretrained"], c["lr"], c["weight_decay"], c["batch_size"]) == (
                "resnet18", False, 1e-3, 1e-4, 512)
            assert c["epochs"] == (5 if task == "celeba-age" else 10)
        if c["dataset"] == "waterbirds":
            reweighting = c["method"] in ("rwg", "subg", "groupdro", "jtt")
            assert (c["model"], c["pretrained"], c["batch_size"], c["epochs"]) == ("resnet18", True, 32, 20)
            assert (c["lr"], c["weight_decay"]) == ((1e-5, 0.1) if reweighting else (1e-4, 1e-4))
    assert tables == {task: D3M_TABLE1_METHODS for task in ("celeba-age", "celeba", "waterbirds", "multinli")}
    assert spec.after == ("analyze", "analyze --epoch best")


def test_demo_d3m_table1_runs_the_same_methods_on_the_embedded_benchmarks():
    spec = build_spec(read_spec_source("demo-d3m-table1"))
    tables = {}
    for trial in spec.trials:
        tables.setdefault(trial.config["dataset"], set()).add(trial.config["method"])
        assert trial.resources.gpu == 0 and trial.config["pretrained"] is False
    assert tables == {dataset: D3M_TABLE1_METHODS
                      for dataset in ("synthetic-celeba", "synthetic-waterbirds", "synthetic-multinli")}
    assert spec.after == ("analyze",)
