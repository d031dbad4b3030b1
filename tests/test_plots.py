"""Figures: real images of the fixed size, the CSV beside each matches the results, partial sweeps,
and the ``groupsweep plot`` command."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analysis.plots import DPI, figure_size, make_figures
from analysis.results import load_results
from sweeps import cli
from results_fixtures import epoch_metrics, trial_config, write_trial
from trainables.errors import GroupsweepError

MODELS = {"small": 1_000, "medium": 10_000, "large": 100_000}
METHODS = [("none", None), ("subsetting", None), ("upsampling", None), ("mixture", 2.0), ("mixture", 3.0),
           ("mixture-nosubset", 2.0), ("mixture-nosubset", 3.0)]
EPOCHS = 4


def test_wga(dataset, model, method_index, seed, epoch):
    """A distinct, known test WGA for every run and epoch."""
    return round(0.3 + 0.05 * method_index + 0.1 * (dataset == "celeba") + 0.02 * seed
                 + 0.01 * epoch + 0.03 * list(MODELS).index(model), 6)


test_wga.__test__ = False  # a helper, not a test


def train_acc(dataset, model, method, seed):
    """`none` interpolates waterbirds from the medium model on, for seed 1 only; celeba never."""
    if method == "none" and dataset == "waterbirds" and model != "small" and seed == 1:
        return 1.0
    return 0.9 + 0.01 * list(MODELS).index(model)


def build_sweep(run_dir, datasets=("waterbirds", "celeba"), methods=METHODS):
    index = 0
    for dataset in datasets:
        for model, size in MODELS.items():
            for method_index, (method, ratio) in enumerate(methods):
                for seed in (0, 1):
                    reports = [epoch_metrics(e, num_parameters=size, overrides={
                        "test/wga": test_wga(dataset, model, method_index, seed, e),
                        "train/acc": train_acc(dataset, model, method, seed)}) for e in range(1, EPOCHS + 1)]
                    write_trial(run_dir, index, trial_config(dataset, model, method, ratio, seed, epochs=EPOCHS), reports)
                    index += 1


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("sweep")
    build_sweep(run_dir)
    return load_results(run_dir)


def check_image(path, n_cols, n_rows):
    """A real PNG of the documented size with more than one colour."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = figure_size(n_cols, n_rows)
        assert image.size == (round(width * DPI), round(height * DPI))
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
        assert colours is not None and len(colours) > 10


def test_collapse_figure_and_its_csv(sweep, tmp_path):
    (output,) = make_figures(sweep, ["collapse"], tmp_path)
    check_image(output.png, 2, 1)
    assert output.pdf.read_bytes().startswith(b"%PDF") and output.pdf.stat().st_size > 1000
    table = pd.read_csv(output.csv)
    assert set(table["model"]) == {"large"}  # the largest model by default
    # each mixture method at one ratio: validation WGA ties here (every run 0.8), so the smallest, 2:1
    assert len(table) == 2 * (len(METHODS) - 2) * EPOCHS
    series = set(table["series"])
    assert {"mixture 2:1", "mixture-nosubset 2:1"} <= series and "mixture 3:1" not in series
    assert any("celeba: mixture drawn at its best ratio by validation WGA, 2:1 (of 2:1, 3:1)" in note
               for note in output.notes)
    row = table[(table["dataset"] == "celeba") & (table["series"] == "mixture 2:1") & (table["epoch"] == 2)].iloc[0]
    values = [test_wga("celeba", "large", 3, seed, 2) for seed in (0, 1)]
    assert row["test_wga_mean"] == pytest.approx(np.mean(values))
    assert row["test_wga_std"] == pytest.approx(np.std(values, ddof=1))
    assert row["n_seeds"] == 2
    drawn = sweep.frame[(sweep.frame["model"] == "large") & sweep.frame["method_label"].isin(set(table["series"]))]
    expected = drawn.groupby(["dataset", "method_label", "epoch"])["test/wga"].mean()
    got = table.set_index(["dataset", "series", "epoch"])["test_wga_mean"]
    np.testing.assert_allclose(got.sort_index().to_numpy(), expected.sort_index().to_numpy())
    assert any("showing the largest model large of 3" in note for note in output.notes)


def test_scaling_figure_marks_the_interpolation_threshold(sweep, tmp_path):
    (output,) = make_figures(sweep, ["scaling"], tmp_path)
    check_image(output.png, 2, 2)
    table = pd.read_csv(output.csv)
    assert len(table) == 2 * len(METHODS) * len(MODELS)
    thresholds = table.groupby("dataset")["interpolation_threshold"].first()
    assert thresholds["waterbirds"] == MODELS["medium"] and np.isnan(thresholds["celeba"])
    assert any("celeba: the `none` model reaches 100% training accuracy at no size" in n for n in output.notes)
    row = table[(table["dataset"] == "waterbirds") & (table["series"] == "none") & (table["model"] == "medium")].iloc[0]
    assert row["num_parameters"] == MODELS["medium"]
    assert row["train_acc_mean"] == pytest.approx((0.91 + 1.0) / 2)
    assert row["test_wga_mean"] == pytest.approx(np.mean([test_wga("waterbirds", "medium", 0, s, EPOCHS) for s in (0, 1)]))


def test_the_collapse_figure_draws_a_mixture_at_its_best_validation_ratio(tmp_path):
    index = 0
    for ratio, val_wga in ((2.0, 0.5), (3.0, 0.7), (4.0, 0.6)):
        for seed in (0, 1):
            reports = [epoch_metrics(e, overrides={"val/wga": val_wga}) for e in range(1, EPOCHS + 1)]
            write_trial(tmp_path / "run", index, trial_config("waterbirds", "m", "mixture", ratio, seed, epochs=EPOCHS),
                        reports)
            index += 1
    (output,) = make_figures(load_results(tmp_path / "run"), ["collapse"], tmp_path / "out")
    assert set(pd.read_csv(output.csv)["series"]) == {"mixture 3:1"}
    assert "collapse: waterbirds: mixture drawn at its best ratio by validation WGA, 3:1 (of 2:1, 3:1, 4:1)" \
        in output.notes


def test_each_setting_gets_its_own_interpolation_threshold(tmp_path):
    """Figure 4 draws last-layer training and full finetuning apart: a threshold per variant, never the
    smallest model of either (last-layer `none` runs never reach 100% here; full ones do from medium)."""
    index = 0
    for last_layer in (True, False):
        for model, size in MODELS.items():
            accuracy = 0.95 if last_layer or model == "small" else 1.0
            reports = [epoch_metrics(e, num_parameters=size, overrides={"train/acc": accuracy})
                       for e in range(1, EPOCHS + 1)]
            config = trial_config("waterbirds", model, "none", None, 0, epochs=EPOCHS, last_layer_only=last_layer)
            write_trial(tmp_path / "run", index, config, reports)
            index += 1
    (output,) = make_figures(load_results(tmp_path / "run"), ["scaling"], tmp_path / "out")
    table = pd.read_csv(output.csv, keep_default_na=False)
    thresholds = table.groupby("variant")["interpolation_threshold"].first()
    assert float(thresholds["last_layer_only=false"]) == MODELS["medium"] and thresholds["last_layer_only=true"] == ""
    assert any("waterbirds [last_layer_only=true]: the `none` model reaches 100% training accuracy at no size" in note
               for note in output.notes)


@pytest.mark.parametrize("name, lines", [("mixture", {"mixture"}), ("ablation", {"mixture", "mixture-nosubset"})])
def test_ratio_figures_with_reference_points(sweep, tmp_path, name, lines):
    (output,) = make_figures(sweep, [name], tmp_path, model="medium")
    check_image(output.png, 2, 1)
    table = pd.read_csv(output.csv)
    assert set(table["series"]) == lines | {"subsetting", "upsampling"}
    assert set(table["model"]) == {"medium"}
    points = table[table["dataset"] == "waterbirds"].set_index("series")
    assert points.loc["subsetting", "ratio"] == 1.0
    # training groups 400, 100 | 100, 100 (g = y * 2 + s): classes 500 : 200 -> native ratio 2.5
    assert points.loc["upsampling", "ratio"] == pytest.approx(2.5)
    mixture = points.loc["mixture"].set_index("ratio")
    assert mixture.loc[3.0, "test_wga_mean"] == pytest.approx(
        np.mean([test_wga("waterbirds", "medium", 4, s, EPOCHS) for s in (0, 1)]))


def test_ratio_figures_never_pool_variants(tmp_path):
    """Mixture 2:1 trained two ways (full finetuning and last layer only) is two lines, each the mean of its own
    seeds; so are the reference points."""
    index = 0
    for last_layer, wga in ((False, 0.8), (True, 0.6)):
        for method, ratio in (("mixture", 2.0), ("subsetting", None)):
            for seed in (0, 1):
                reports = [epoch_metrics(e, overrides={"test/wga": wga + seed / 100}) for e in range(1, EPOCHS + 1)]
                config = trial_config("waterbirds", "m", method, ratio, seed, epochs=EPOCHS, last_layer_only=last_layer)
                write_trial(tmp_path / "run", index, config, reports)
                index += 1
    (output,) = make_figures(load_results(tmp_path / "run"), ["mixture"], tmp_path / "out")
    table = pd.read_csv(output.csv).set_index("series")
    assert table.loc["mixture [last_layer_only=false]", "test_wga_mean"] == pytest.approx(0.805)
    assert table.loc["mixture [last_layer_only=true]", "test_wga_mean"] == pytest.approx(0.605)
    assert table.loc["subsetting [last_layer_only=true]", "ratio"] == 1.0
    assert set(table["n_seeds"]) == {2}


def test_the_collapse_figure_leaves_out_diverged_seeds_and_cuts_a_line_at_a_seed_still_running(tmp_path):
    """upweighting: a seed that diverged at epoch 3 of 4 is left out, as Table 1 leaves it out (before, it cut the
    others' line at epoch 2, hiding the fall the figure shows). upsampling: a seed still running at epoch 2 stops
    the line there (a mean over the two others would jump by its share, not by any change of accuracy)."""
    from results_fixtures import diverged_report

    index = 0
    for method in ("upweighting", "upsampling"):
        for seed, wga in ((0, 0.7), (1, 0.72), (2, 0.4)):
            reports = [epoch_metrics(e, overrides={"test/wga": wga - 0.1 * e}) for e in range(1, 5)]
            if seed == 2:
                reports = reports[:2] + ([diverged_report(3)] if method == "upweighting" else [])
            write_trial(tmp_path / "run", index, trial_config("waterbirds", "m", method, None, seed, epochs=4),
                        reports)
            index += 1
    (output,) = make_figures(load_results(tmp_path / "run"), ["collapse"], tmp_path / "out")
    table = pd.read_csv(output.csv).set_index(["series", "epoch"])
    upweighting = table.loc["upweighting"]
    assert upweighting.index.tolist() == [1, 2, 3, 4] and set(upweighting["n_seeds"]) == {2}
    assert upweighting["test_wga_mean"].tolist() == pytest.approx([0.71 - 0.1 * e for e in range(1, 5)])
    upsampling = table.loc["upsampling"]
    assert upsampling.index.tolist() == [1, 2] and set(upsampling["n_seeds"]) == {3}
    assert upsampling["test_wga_mean"].tolist() == pytest.approx([(0.7 + 0.72 + 0.4) / 3 - 0.1 * e for e in (1, 2)])
    assert "collapse: waterbirds: upweighting: 1 diverged seed(s) left out" in output.notes
    assert "collapse: waterbirds: upsampling: 2 epoch(s) from epoch 3 left out: fewer seeds reported them than " \
           "the line's other epochs" in output.notes


def test_the_upsampling_reference_uses_each_datasets_own_classes(tmp_path):
    """A sweep with a 2-class and a 3-class dataset: each dataset's native ratio comes from its own classes
    (the 3-class dataset's class columns are NaN for the other and must not count there)."""
    index = 0
    for dataset, n_classes in (("waterbirds", 2), ("multinli", 3)):
        for method, ratio in (("subsetting", None), ("upsampling", None), ("mixture", 2.0)):
            reports = [epoch_metrics(e, n_classes=n_classes) for e in range(1, EPOCHS + 1)]
            write_trial(tmp_path / "run", index, trial_config(dataset, "medium", method, ratio, 0, epochs=EPOCHS),
                        reports)
            index += 1
    (output,) = make_figures(load_results(tmp_path / "run"), ["mixture"], tmp_path / "out")
    table = pd.read_csv(output.csv)
    upsampling = table[table["series"] == "upsampling"].set_index("dataset")["ratio"]
    assert upsampling.to_dict() == pytest.approx({"waterbirds": 2.5, "multinli": 2.5})  # 500:200, 500:200:200


def test_partial_sweep_draws_what_it_can_and_says_what_is_missing(tmp_path):
    build_sweep(tmp_path, datasets=("waterbirds",), methods=[("none", None), ("mixture", 2.0)])
    write_trial(tmp_path, 999, trial_config("waterbirds", "large", "upsampling", seed=0, epochs=EPOCHS),
                [epoch_metrics(1, num_parameters=MODELS["large"])])  # still running
    results = load_results(tmp_path)
    outputs = {output.name: output for output in make_figures(results, ["all"], tmp_path / "figs")}
    check_image(outputs["collapse"].png, 1, 1)
    collapse = pd.read_csv(outputs["collapse"].csv)
    assert collapse[collapse["series"] == "upsampling"]["epoch"].tolist() == [1]
    assert outputs["mixture"].png is not None
    assert any("no complete mixture-nosubset trial" in note for note in outputs["ablation"].notes)
    assert outputs["ablation"].png is not None
    assert pd.read_csv(outputs["ablation"].csv)["series"].tolist() == ["mixture"]
    check_image(outputs["scaling"].png, 1, 2)


def test_nothing_to_draw_is_a_note(tmp_path):
    write_trial(tmp_path, 0, trial_config("waterbirds", "small", "none", epochs=2), [epoch_metrics(1)])
    (output,) = make_figures(load_results(tmp_path), ["mixture"], tmp_path / "figs")
    assert output.png is None and output.csv is None
    assert output.notes == ["mixture: no complete mixture trial; nothing to draw"]


def test_the_plot_command_with_nothing_to_draw_leaves_no_empty_folder(tmp_path, capsys):
    run = tmp_path / "run"
    write_trial(run, 0, trial_config("waterbirds", "small", "none", epochs=2), [epoch_metrics(1)])
    (tmp_path / "kept").mkdir()
    for out in (["--out", str(tmp_path / "new")], [], ["--out", str(tmp_path / "kept")]):
        assert cli.main(["plot", str(run), "--figure", "mixture", *out]) == 1
        err = capsys.readouterr().err
        assert "note: mixture: no complete mixture trial; nothing to draw" in err
        assert err.splitlines()[-1] == "error: no figure drawn (mixture): the notes above say what is missing", err
    assert not (tmp_path / "new").exists() and not (run / "groupsweep_analysis").exists()
    assert (tmp_path / "kept").is_dir()  # a folder that was there stays


def test_unknown_figure_is_a_one_line_error(sweep, tmp_path):
    with pytest.raises(GroupsweepError, match="unknown figure 'bars'; choose one of: collapse"):
        make_figures(sweep, ["bars"], tmp_path)


def test_plot_command(sweep, tmp_path, monkeypatch, capsys):
    assert cli.main(["plot", str(sweep.run_dir), "--figure", "all", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("collapse", "mixture", "scaling", "ablation"):
        assert f"{name}: {tmp_path / name}.png" in out
        assert (tmp_path / f"{name}.pdf").exists() and (tmp_path / f"{name}.csv").exists()
    assert cli.main(["plot", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_a_model_not_in_the_sweep_is_one_error_line_listing_its_models(sweep, tmp_path, capsys):
    """Before, a typo drew fewer figures with a note and exit status 0 (or 1 and no error line)."""
    models = ", ".join(sorted(set(sweep.trials["model"])))
    for figure in ("all", "collapse"):
        assert cli.main(["plot", str(sweep.run_dir), "--figure", figure, "--model", "nosuch",
                         "--out", str(tmp_path / "out")]) == 2
        out, err = capsys.readouterr()
        assert err == f"error: model 'nosuch' is not in this sweep; its models: {models}\n" and out == ""
    assert not (tmp_path / "out").exists()
