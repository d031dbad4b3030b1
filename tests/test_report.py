"""The HTML report: one self-contained page whose images decode and whose tables hold the analysed
numbers (the same as ``analysis.selection.select`` on the same results), with notes for what is missing;
rendered in a real browser where Debian's chromium is installed."""

import base64
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser

import matplotlib.image
import pytest

from analysis.report import PNG_MAGIC, build_report
from analysis.results import load_results
from analysis.selection import CRITERIA, display_hyperparameters, display_table, paper_view, select
from analysis.summary import display_summary, summarize
from results_fixtures import epoch_metrics, searched_config, trial_config, write_study, write_trial
from sweeps import cli

MODELS = ("toy-resnet-xs", "toy-resnet-s")
INCOMPLETE = ("synthetic-waterbirds", "toy-resnet-s", "upsampling", None, 2)


class Tables(HTMLParser):
    """Every ``<table id=...>`` of a page as rows of cell texts (header row first), and every ``<img>``'s src."""

    def __init__(self):
        super().__init__()
        self.tables, self.images, self._table, self._cell = {}, [], None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None:
            self._table[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(page: str) -> Tables:
    tables = Tables()
    tables.feed(page)
    return tables


def rows_of(frame) -> list:
    """A display table as the page shows it: the header, then every row as text."""
    return [[str(column) for column in frame.columns]] + [["-" if value != value else str(value) for value in row]
                                                           for row in frame.itertuples(index=False)]


@pytest.fixture
def sweep(tmp_path):
    run_dir = tmp_path / "study"
    write_study(run_dir, datasets=("synthetic-waterbirds", "synthetic-celeba"), models=MODELS, incomplete=(INCOMPLETE,))
    return run_dir


def test_report_command_writes_a_self_contained_page_with_the_analysed_numbers(sweep, tmp_path, capsys):
    out = tmp_path / "page" / "report.html"
    assert cli.main(["report", str(sweep), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"wrote {out}" in captured.out
    assert "note: synthetic-waterbirds/toy-resnet-s/upsampling seed 2: incomplete (epoch 2/3); excluded" in captured.err
    page = out.read_text()
    # self-contained: nothing fetched, no script
    assert "<script" not in page and "<link" not in page and not re.search(r'(src|href)="(https?:)?//', page)
    tables = parse(page)

    # every figure decodes as a PNG image
    assert len(tables.images) == 3  # collapse, mixture, scaling (no ablation: no mixture-nosubset trial)
    for src in tables.images:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1])
        assert png.startswith(PNG_MAGIC)
        image = matplotlib.image.imread(io.BytesIO(png), format="png")
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300 and image.std() > 0

    # the tables hold what select() gives on the same results (per dataset and model, every criterion)
    results = load_results(sweep)
    selection = select(results, list(CRITERIA))
    assert tables.tables["table1-details"] == rows_of(display_table(selection.table))
    assert tables.tables["table1-paper"] == rows_of(paper_view(selection.table))
    assert tables.tables["table1-candidates"] == rows_of(display_table(selection.methods))
    assert len(tables.tables["table1-details"]) == 1 + 2 * 2 * len(CRITERIA)  # 2 datasets x 2 models
    summary = tables.tables["summary-table"]
    assert summary[0] == ["dataset", "model", "method", "n", "diverged", "final test WGA (%)"]
    expected = display_summary(summarize(results)).set_index(["dataset", "model", "method"])["final test WGA (%)"]
    assert {(row[0], row[1], row[2]): row[5] for row in summary[1:]} == expected.to_dict()
    assert len(summary) == 1 + 2 * 2 * 4  # 2 datasets x 2 models x 4 methods: models never pooled
    first = [row[2] for row in summary[1:] if row[:2] == summary[1][:2]]  # one dataset and model
    assert first == ["none", "subsetting", "upsampling", "mixture 2:1"]  # method order

    # one row per trial, with its status
    trials = tables.tables["trials-table"]
    assert len(trials) == 1 + len(results.trials)
    status = trials[0].index("status")
    assert sorted(row[status] for row in trials[1:]) == ["complete"] * (len(results.trials) - 1) + ["incomplete"]
    assert "hyperparameters-table" not in tables.tables  # not a search
    assert "incomplete (epoch 2/3); excluded" in page  # the notes section


def test_a_search_report_shows_each_methods_chosen_configuration(tmp_path):
    index = 0
    for method, values in (("none", (0.3, 0.4)), ("upsampling", (0.6, 0.8))):
        for sample, value in enumerate(values):
            for seed in (1, 2):
                config = searched_config("synthetic-waterbirds", "toy-resnet-s", method, sample=sample, seed=seed,
                                         sampled={"lr": 1e-4 * (sample + 1)})
                write_trial(tmp_path, index, config, [epoch_metrics(epoch, overrides={"val/wga": value, "test/wga": value})
                                                      for epoch in (1, 2, 3)])
                index += 1
    results = load_results(tmp_path)
    report = build_report(results)
    tables = parse(report.html).tables
    chosen = select(results, list(CRITERIA)).hyperparameters
    assert tables["hyperparameters-table"] == rows_of(display_hyperparameters(chosen))
    row = next(row for row in tables["hyperparameters-table"][1:] if row[2] == "wga" and row[4] == "upsampling *")
    assert row[5] == "h01" and row[6] == "lr=0.0002"
    trials = tables["trials-table"]
    assert "config_id" in trials[0] and "hparams" in trials[0]


def test_a_report_with_group_info_chooses_only_among_methods_using_at_most_that_much(tmp_path, capsys):
    index = 0
    for method, value in (("none", 0.4), ("upsampling", 0.6), ("groupdro", 0.9)):  # group labels: none, none, train+val
        for seed in (1, 2):
            write_trial(tmp_path, index, trial_config("synthetic-waterbirds", "toy-resnet-s", method, seed=seed),
                        [epoch_metrics(epoch, overrides={"val/wga": value, "test/wga": value}) for epoch in (1, 2, 3)])
            index += 1
    results = load_results(tmp_path)
    assert set(select(results, ["wga"]).table["method"]) == {"groupdro"}
    report = build_report(results, group_info="none")
    table = report.selection.table
    assert table.loc[table["criterion"] == "wga", "method"].tolist() == ["upsampling"]
    assert "groupdro" not in set(table["method"])
    candidates = parse(report.html).tables["table1-candidates"]
    assert not any("groupdro" in cell for row in candidates for cell in row)
    assert any("upsampling" in cell for row in candidates for cell in row)
    assert "every method present, using at most none group information." in report.html
    assert "group information at most none: left out groupdro (train+val)" in report.html  # the notes section

    out = tmp_path / "page.html"
    assert cli.main(["report", str(tmp_path), "--group-info", "none", "--out", str(out)]) == 0
    assert parse(out.read_text()).tables["table1-details"] == parse(report.html).tables["table1-details"]
    assert cli.main(["report", str(tmp_path), "--group-info", "labels", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "error: unknown group information 'labels'; choose one of: none, val, train+val"


def test_a_report_without_any_complete_trial_says_what_is_missing(tmp_path, capsys):
    write_trial(tmp_path / "run", 0, searched_config("synthetic-waterbirds", "toy-resnet-s", "none", sample=0),
                [epoch_metrics(1)])  # 1 of 3 epochs
    out = tmp_path / "report.html"
    assert cli.main(["report", str(tmp_path / "run"), "--out", str(out)]) == 1
    page = out.read_text()
    assert "No method could be selected" in page and "incomplete (epoch 1/3); excluded" in page
    assert cli.main(["report", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("error: results directory")
    assert cli.main(["report", str(tmp_path / "run"), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"error: --out {str(tmp_path)!r} is a folder; give the file to write"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_page_renders_in_a_real_browser(sweep, tmp_path):
    out = tmp_path / "report.html"
    assert cli.main(["report", str(sweep), "--out", str(out)]) == 0
    shot = tmp_path / "report.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,3000",
                    out.as_uri()], check=True, capture_output=True, timeout=120)
    image = matplotlib.image.imread(shot)
    assert image.shape[:2] == (3000, 1200)
    # the page drew more than a blank canvas: text, tables and the embedded figures
    assert (image[..., :3] < 0.5).mean() > 0.005 and len({tuple(pixel) for pixel in image[::7, ::7, :3].reshape(-1, 3)}) > 50


def test_ablation_and_scaling_figures_are_shown_only_when_they_have_something_to_compare(tmp_path):
    write_study(tmp_path / "plain")  # one model, no mixture-nosubset
    report = build_report(load_results(tmp_path / "plain"))
    assert report.figures == ["collapse", "mixture"]
    assert "scaling: every dataset has one model; the scaling figure is left out" in report.notes
    write_study(tmp_path / "ablation", models=MODELS,
                methods=(("none", None), ("mixture", 2.0), ("mixture-nosubset", 2.0)))
    assert build_report(load_results(tmp_path / "ablation")).figures == ["collapse", "mixture", "scaling", "ablation"]
