"""The paper's figures from a sweep's results, each saved as PNG, PDF and the CSV of the plotted numbers.

Figures (``FIGURES``), one panel per dataset (scaling: two rows of panels):

- ``collapse`` (Figures 1 and 2): test WGA against epoch, a line per balancing method (a mixture at its
  best ratio by mean final validation WGA, as Figure 2 plots it; a note names it), mean over seeds with a
  band of +/- one sample standard deviation (ddof=1).
- ``scaling`` (Figures 3, 4 and 8): test WGA (top) and training accuracy ``train/acc`` (bottom) of the
  final epoch against the parameter count (log axis), a line per method, error bars +/- one std;
  a dashed vertical line marks the interpolation threshold: the smallest model whose ``none`` run
  reaches 100% training accuracy at its final epoch for at least one seed; one per variant (last-layer
  training and full finetuning, as Figure 4 draws them apart).
- ``mixture`` (Figure 7, ratio ablation): final test WGA against the mixture ratio; subsetting is
  drawn as the point at ratio 1 and upsampling at the dataset's native class-imbalance ratio
  (from the ``train/count_group_*`` counts), when those runs exist.
- ``ablation`` (Figure 7, subsetting ablation): the same axes with both ``mixture`` (subset, then
  upsample) and ``mixture-nosubset`` (class probabilities only).

``collapse`` plots every reported epoch (also of trials still running); the other figures use
complete trials at their final epoch. Training-split metrics (``train/*``) are needed only there, at the
final epoch, which every trial evaluates (``TrainConfig.eval_train``: by default the training split is
evaluated at the last epoch only, and its metrics are NaN on the other epochs); a figure of per-epoch
training accuracy would need trials run with ``eval_train: every``. ``collapse``, ``mixture`` and ``ablation`` show one model per
dataset: the one asked for, else the largest. Accuracies are plotted in percent; the CSV holds the
plotted statistics as fractions, like the results. Sizes are fixed: ``figure_size`` gives inches
(the panels, and a column for the legend to their right), PNGs are written at ``DPI`` dots per inch. Colours are the Okabe-Ito colour-blind-safe palette (``OKABE_ITO``, with
``MARKERS`` and ``LINESTYLES``).

``panel_figure`` and ``save_figure`` are the one way a figure is laid out and written, here and in
``analysis.spectral_plots`` (the spectral figures): a grid of fixed-size panels, one shared legend with
the caption as its title beside the panels (right, vertically centred), PNG + PDF + the CSV of the
plotted numbers.
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.results import SweepResults
from trainables.balancing import METHODS, RATIO_METHODS
from trainables.errors import GroupsweepError, choose
from trainables.trial_dir import write_local_atomically

FIGURES = ("collapse", "mixture", "scaling", "ablation")
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", ":", "-.")
PANEL_WIDTH, PANEL_HEIGHT, LEGEND_WIDTH = 4.0, 3.2, 2.2
DPI = 200
# Characters per line of the caption (the legend's title) in the legend column, by font size.
CAPTION_CHARS = {"small": 34, "x-small": 40}
# Legend entries that fit one column beside one row of panels at the small font; more go x-small, and
# beyond ``2 x`` this, into two columns.
LEGEND_ROWS = 10
PERCENT = 100.0


@dataclass
class FigureOutput:
    """One figure's files (``png``, ``pdf``, ``csv``; None when nothing could be drawn) and notes."""

    name: str
    png: Path | None = None
    pdf: Path | None = None
    csv: Path | None = None
    notes: list = field(default_factory=list)


def figure_size(n_cols: int, n_rows: int = 1) -> tuple:
    """Figure size in inches for a grid of ``n_rows`` x ``n_cols`` panels with the shared legend beside them."""
    return (PANEL_WIDTH * n_cols + LEGEND_WIDTH, PANEL_HEIGHT * n_rows)


def make_figures(results: SweepResults, names, out_dir, model: str | None = None) -> list:
    """Draw the figures ``names`` (from ``FIGURES``, or ``["all"]``) into ``out_dir``; one ``FigureOutput`` each.
    ``model``: the model that the one-model figures show (``check_model``)."""
    names = list(FIGURES) if list(names) == ["all"] else list(names)
    for name in names:
        choose("figure", name, FIGURES)
    check_model(results, model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    drawers = {
        "collapse": lambda: plot_collapse(results, out_dir, model=model),
        "scaling": lambda: plot_scaling(results, out_dir),  # every model size, by definition
        "mixture": lambda: plot_mixture(results, out_dir, model=model),
        "ablation": lambda: plot_ablation(results, out_dir, model=model),
    }
    return [drawers[name]() for name in names]


def check_model(results: SweepResults, model: str | None) -> None:
    """A one-line ``GroupsweepError`` listing the sweep's models when ``model`` (None: each dataset's largest) is
    not one of them."""
    models = sorted(set(results.trials["model"].dropna()))
    if model is not None and model not in models:
        raise GroupsweepError(f"model {model!r} is not in this sweep; its models: {', '.join(models)}")


def plot_collapse(results: SweepResults, out_dir, model: str | None = None) -> FigureOutput:
    """Figure 1/2 kind: test WGA against epoch per method (a mixture at its best ratio by validation WGA),
    mean +/- std band over seeds, a panel per dataset."""
    # deferred: matplotlib loads only when a figure is drawn (as in panel_figure)
    from matplotlib.ticker import MaxNLocator

    output = FigureOutput("collapse")
    frame = _best_ratio_only(_one_model_per_dataset(results.frame, model, output.notes), output.notes)
    if frame.empty or "test/wga" not in frame:
        output.notes.append("collapse: no reported test/wga; nothing to draw")
        return output
    stats = _seed_stats(_without_diverged(frame, output.notes)[lambda rows: rows["test/wga"].notna()],
                        ["dataset", "model", "series", "epoch"], {"test_wga": "test/wga"})
    stats = _epochs_of_every_seed(stats, output.notes)
    fig, styles, panels = _dataset_panels(stats)
    for ax, dataset, part in panels:
        for series, line in _by_series(part):
            _line_with_band(ax, line["epoch"], line["test_wga_mean"], line["test_wga_std"], series, styles[series])
        ax.set_title(f"{dataset} ({part['model'].iloc[0]})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers, also over 2 epochs
        ax.set_xlabel("Epoch")
        ax.set_ylabel("Test worst-group accuracy (%)")
    save_figure(fig, output, out_dir, stats, "Mean over seeds; band: +/- 1 sample std (ddof=1)")
    return output


def plot_scaling(results: SweepResults, out_dir) -> FigureOutput:
    """Figure 3/4/8 kind: final test WGA and train accuracy against parameter count (log x), a line
    per method, the interpolation threshold marked; a column of two panels per dataset."""
    output = FigureOutput("scaling")
    final = _with_series(results.final_rows())
    final = final[final["num_parameters"].notna()] if "num_parameters" in final else final.iloc[:0]
    needed = [column for column in ("test/wga", "train/acc") if column not in final]
    if final.empty or needed:
        output.notes.append(f"scaling: no complete trial with a parameter count and {', '.join(needed) or 'metrics'}; "
                            "nothing to draw")
        return output
    stats = _seed_stats(final, ["dataset", "variant", "series", "model", "num_parameters"],
                        {"test_wga": "test/wga", "train_acc": "train/acc"})
    thresholds = _interpolation_thresholds(final, output.notes)
    stats["interpolation_threshold"] = [thresholds.get(key, np.nan) for key in zip(stats["dataset"], stats["variant"])]
    datasets = sorted(stats["dataset"].unique())
    for dataset in datasets:
        if stats.loc[stats["dataset"] == dataset, "num_parameters"].nunique() < 2:
            output.notes.append(f"scaling: {dataset} has results for only one model size")
    styles = _styles(stats["series"])
    fig, axes = panel_figure(len(datasets), 2)
    for column, dataset in enumerate(datasets):
        part = stats[stats["dataset"] == dataset].sort_values("num_parameters")
        for row, (metric, label) in enumerate((("test_wga", "Test worst-group accuracy (%)"),
                                               ("train_acc", "Train accuracy (%)"))):
            ax = axes[row][column]
            for series, line in _by_series(part):
                colour, marker, linestyle = styles[series]
                ax.errorbar(line["num_parameters"], line[f"{metric}_mean"] * PERCENT,
                            yerr=line[f"{metric}_std"].fillna(0) * PERCENT, color=colour, marker=marker,
                            linestyle=linestyle, capsize=3, label=series)
            marked = [(variant, at) for (where, variant), at in thresholds.items() if where == dataset]
            for index, (variant, at) in enumerate(marked):  # one per setting (e.g. last-layer vs full)
                ax.axvline(at, color="0.3", linestyle=(0, (6, 3 + 2 * index)), linewidth=1.5,
                           label="interpolation threshold" + (f" [{variant}]" if variant else ""))
            ax.set_xscale("log")
            ax.set_xlabel("Parameters")
            ax.set_ylabel(label)
            ax.set_title(dataset)
    save_figure(fig, output, out_dir, stats, "Final epoch; mean over seeds, error bars +/- 1 sample std (ddof=1). "
          "Interpolation threshold: smallest model whose `none` run reaches 100% train accuracy (>= 1 seed)")
    return output


def plot_mixture(results: SweepResults, out_dir, model: str | None = None) -> FigureOutput:
    """Figure 7 kind (ratio ablation): final test WGA against the mixture ratio, with subsetting (ratio 1)
    and upsampling (native ratio) as reference points."""
    return _ratio_figure(results, out_dir, "mixture", ("mixture",), model)


def plot_ablation(results: SweepResults, out_dir, model: str | None = None) -> FigureOutput:
    """Figure 7 kind (subsetting ablation): final test WGA against ratio for mixture with subsetting
    (``mixture``) and without (``mixture-nosubset``), with subsetting/upsampling reference points."""
    return _ratio_figure(results, out_dir, "ablation", ("mixture", "mixture-nosubset"), model)


def _ratio_figure(results: SweepResults, out_dir, name: str, methods: tuple, model) -> FigureOutput:
    """Test WGA at the final epoch against the class ratio for ``methods``, plus reference points."""
    output = FigureOutput(name)
    final = _one_model_per_dataset(results.final_rows(), model, output.notes)
    if final.empty or "test/wga" not in final or not final["method"].isin(methods).any():
        output.notes.append(f"{name}: no complete {' or '.join(methods)} trial; nothing to draw")
        return output
    for method in methods:
        if not (final["method"] == method).any():
            output.notes.append(f"{name}: no complete {method} trial")
    native = _native_ratios(final)
    rows = _with_series(final[final["method"].isin(methods)], "method")  # one line per method (and variant)
    rows["x"] = rows["ratio"]
    references = []
    for method, position in (("subsetting", None), ("upsampling", native)):
        part = final[final["method"] == method].copy()
        if part.empty:
            continue
        part["x"] = 1.0 if position is None else part["dataset"].map(position)
        missing = part["x"].isna()
        for dataset in sorted(part.loc[missing, "dataset"].unique()):
            output.notes.append(f"{name}: {dataset} has no training group counts; upsampling point omitted")
        references.append(_with_series(part[~missing], "method"))
    rows = pd.concat([rows, *references], ignore_index=True)
    stats = _seed_stats(rows, ["dataset", "model", "series", "method", "x"], {"test_wga": "test/wga"})
    stats = stats.rename(columns={"x": "ratio"})
    fig, styles, panels = _dataset_panels(stats)
    for ax, dataset, part in panels:
        for series, line in _by_series(part):
            colour, marker, linestyle = styles[series]
            line = line.sort_values("ratio")
            reference = line["method"].iloc[0] not in methods
            ax.errorbar(line["ratio"], line["test_wga_mean"] * PERCENT, yerr=line["test_wga_std"].fillna(0) * PERCENT,
                        color=colour, marker=marker, linestyle="none" if reference else linestyle,
                        markersize=8 if reference else 6, capsize=3,
                        label=series + (" (reference)" if reference else ""))
        ax.set_title(f"{dataset} ({part['model'].iloc[0]})")
        ax.set_xlabel("Class-imbalance ratio (majority : minority)")
        ax.set_ylabel("Test worst-group accuracy (%)")
    save_figure(fig, output, out_dir, stats, "Final epoch; mean over seeds, error bars +/- 1 sample std (ddof=1)")
    return output


def _dataset_panels(stats: pd.DataFrame):
    """``(figure, series styles, [(axis, dataset, its rows of stats)])``: one panel per dataset of ``stats``
    (sorted), in one row."""
    datasets = sorted(stats["dataset"].unique())
    fig, axes = panel_figure(len(datasets), 1)
    panels = [(ax, dataset, stats[stats["dataset"] == dataset]) for ax, dataset in zip(axes[0], datasets)]
    return fig, _styles(stats["series"]), panels


def _with_series(frame: pd.DataFrame, label: str = "method_label") -> pd.DataFrame:
    """``frame`` with a ``series`` column: its ``label`` column (the method label), plus the variant when there
    is one: trials of different variants are never pooled."""
    frame = frame.copy()
    frame["series"] = [name if not variant else f"{name} [{variant}]"
                       for name, variant in zip(frame[label], frame["variant"])]
    return frame


def _one_model_per_dataset(frame: pd.DataFrame, model, notes: list) -> pd.DataFrame:
    """The rows of ``model`` (or, per dataset, of the model with the most parameters), with ``series``."""
    frame = _with_series(frame)
    if model is not None:
        if not (frame["model"] == model).any():
            notes.append(f"model {model!r} has no results here")
        return frame[frame["model"] == model]
    keep = []
    for dataset, part in frame.groupby("dataset"):
        sizes = part.groupby("model")["num_parameters"].max().fillna(-1).sort_index()
        largest = sizes.idxmax()
        if len(sizes) > 1:
            notes.append(f"{dataset}: showing the largest model {largest} of {len(sizes)}")
        keep.append(part[part["model"] == largest])
    return pd.concat(keep) if keep else frame.iloc[:0]


def _best_ratio_only(frame: pd.DataFrame, notes: list) -> pd.DataFrame:
    """``frame`` with each ratio method (mixture, mixture-nosubset) kept at one ratio per dataset, model and
    variant: the best by mean final-epoch ``val/wga`` over seeds (ties: the smallest ratio), as the paper's
    Figure 2 plots "the mixture method with the best class-imbalance ratio during validation"; a note names it."""
    ratio_rows = frame["method"].isin(RATIO_METHODS)
    if not ratio_rows.any() or "val/wga" not in frame:
        return frame
    final = frame[ratio_rows & (frame["epoch"] == frame["epochs"])]
    scores = final.groupby(["dataset", "model", "variant", "method", "ratio"])["val/wga"].mean().reset_index()
    dropped = []
    for (dataset, model, variant, method), part in scores.groupby(["dataset", "model", "variant", "method"]):
        if len(part) < 2:
            continue
        best = part.sort_values(["val/wga", "ratio"], ascending=[False, True]).iloc[0]["ratio"]
        where = ((frame["dataset"] == dataset) & (frame["model"] == model) & (frame["variant"] == variant)
                 & (frame["method"] == method))
        dropped.append(where & (frame["ratio"] != best))
        notes.append(f"collapse: {dataset}: {method} drawn at its best ratio by validation WGA, {best:g}:1 "
                     f"(of {', '.join(f'{r:g}:1' for r in sorted(part['ratio']))})")
    return frame[~np.logical_or.reduce(dropped)] if dropped else frame


def _without_diverged(frame: pd.DataFrame, notes: list) -> pd.DataFrame:
    """``frame`` (rows with ``series``) without its diverged trials, as Table 1 and the other figures leave them
    out: otherwise the seeds that did not diverge would lose every epoch after the divergence
    (``_epochs_of_every_seed``), the very fall a collapse figure shows; a note counts them per line."""
    diverged = frame["status"] == "diverged"
    for (dataset, series), part in frame[diverged].groupby(["dataset", "series"]):
        notes.append(f"collapse: {dataset}: {series}: {part['seed'].nunique()} diverged seed(s) left out")
    return frame[~diverged]


def _epochs_of_every_seed(stats: pd.DataFrame, notes: list) -> pd.DataFrame:
    """The collapse figure's per-epoch ``stats`` at the epochs that every seed of their line reported: a seed
    that failed or is still running (diverged ones are left out before, ``_without_diverged``) would otherwise
    drop out of the mean where it stops, and the line would jump there (a mean over other seeds, not a change
    of accuracy); a note names each line cut."""
    every = stats.groupby(["dataset", "model", "series"])["n_seeds"].transform("max")
    for (dataset, series), part in stats[stats["n_seeds"] < every].groupby(["dataset", "series"]):
        notes.append(f"collapse: {dataset}: {series}: {len(part)} epoch(s) from epoch {part['epoch'].min()} left "
                     "out: fewer seeds reported them than the line's other epochs")
    return stats[stats["n_seeds"] == every].reset_index(drop=True)


def _seed_stats(frame: pd.DataFrame, by: list, metrics: dict) -> pd.DataFrame:
    """Per ``by`` group: ``n_seeds`` and, per ``metrics`` entry (name -> column), mean and sample std."""
    aggregations = {"n_seeds": ("seed", "nunique")}
    for name, column in metrics.items():
        aggregations[f"{name}_mean"] = (column, "mean")
        aggregations[f"{name}_std"] = (column, "std")
    return frame.groupby(by, dropna=False).agg(**aggregations).reset_index()


def _interpolation_thresholds(final: pd.DataFrame, notes: list) -> dict:
    """Per dataset and variant (a setting such as last-layer training, which the paper's Figure 4 draws apart),
    the smallest parameter count at which a ``none`` run has ``train/acc`` = 1: ``{(dataset, variant): count}``."""
    thresholds = {}
    for (dataset, variant), part in final.groupby(["dataset", "variant"], sort=True):
        where = f"{dataset}" + (f" [{variant}]" if variant else "")
        none = part[part["method"] == "none"]
        interpolating = none.loc[none["train/acc"] >= 1.0, "num_parameters"]
        if none.empty:
            notes.append(f"scaling: {where} has no complete `none` trial; no interpolation threshold")
        elif interpolating.empty:
            notes.append(f"scaling: {where}: the `none` model reaches 100% training accuracy at no size; "
                         "no interpolation threshold")
        else:
            thresholds[dataset, variant] = float(interpolating.min())
    return thresholds


def _native_ratios(final: pd.DataFrame) -> dict:
    """Per dataset, the training split's class-imbalance ratio ``n_max / n_min`` from the
    ``train/count_group_{g}`` counts (``g = y * n_spurious + s``; n_spurious = groups / classes)."""
    group_columns = sorted((c for c in final.columns if c.startswith("train/count_group_")),
                           key=lambda c: int(c.rsplit("_", 1)[1]))
    class_columns = [c for c in final.columns if c.startswith("train/acc_class_")]
    ratios = {}
    for dataset, part in final.groupby("dataset"):
        # the dataset's own classes: a sweep may mix datasets of 2 and 3 classes (columns of the others are NaN)
        n_classes = sum(1 for c in class_columns if part[c].notna().any())
        counts = part[group_columns].iloc[0].to_numpy(dtype=float) if group_columns else np.array([])
        counts = counts[~np.isnan(counts)]
        if not n_classes or not len(counts) or len(counts) % n_classes:
            continue
        per_class = counts.reshape(n_classes, -1).sum(axis=1)
        if per_class.min() > 0:
            ratios[dataset] = float(per_class.max() / per_class.min())
    return ratios


def _by_series(stats: pd.DataFrame):
    """``(series, rows)`` pairs in a stable order: methods in ``METHODS`` order, then by ratio."""
    return sorted(stats.groupby("series"), key=lambda item: _series_key(item[0]))


def _series_key(series: str) -> tuple:
    """Sort key of a series label such as ``"mixture 2:1"``."""
    method, _, rest = series.partition(" ")
    ratio = rest.split(":", 1)[0]
    try:
        ratio = float(ratio)
    except ValueError:
        ratio = 0.0
    order = METHODS.index(method) if method in METHODS else len(METHODS)
    return (order, method, ratio, series)


def _styles(series) -> dict:
    """Colour, marker and line style per series label: Okabe-Ito colours in ``_series_key`` order;
    after every eight series the line style changes and the markers shift, so no two series look alike."""
    ordered = sorted(set(series), key=_series_key)
    styles = {}
    for i, label in enumerate(ordered):
        cycle = i // len(OKABE_ITO)
        styles[label] = (OKABE_ITO[i % len(OKABE_ITO)], MARKERS[(i + cycle) % len(MARKERS)],
                         LINESTYLES[cycle % len(LINESTYLES)])
    return styles


def _line_with_band(ax, x, mean, std, series: str, style: tuple) -> None:
    """A mean line with a +/- std band (where the std exists)."""
    colour, marker, linestyle = style
    x = np.asarray(x, dtype=float)
    mean = np.asarray(mean, dtype=float) * PERCENT
    std = np.nan_to_num(np.asarray(std, dtype=float)) * PERCENT
    ax.plot(x, mean, color=colour, marker=marker, linestyle=linestyle, markevery=max(1, len(x) // 10),
            markersize=4, label=series)
    ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)


def panel_figure(n_cols: int, n_rows: int):
    """``(figure, axes)``: a figure of fixed size (``figure_size``) with an ``n_rows`` x ``n_cols`` grid
    of axes (``axes[row][col]``, always 2-D) and fixed margins, the right ``LEGEND_WIDTH`` inches kept
    for the shared legend that ``save_figure`` adds. Built without pyplot (no global state, faster to
    import). Every figure of the package is drawn on one of these, then written by ``save_figure``."""
    # deferred: matplotlib takes about a second to import, and only drawing needs it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width, height = figure_size(n_cols, n_rows)
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False, gridspec_kw={
        "left": 0.75 / width, "right": 1 - (LEGEND_WIDTH + 0.15) / width, "top": 1 - 0.35 / height,
        "bottom": 0.5 / height, "wspace": 0.8 / (PANEL_WIDTH - 0.9),
        "hspace": 0.9 / (PANEL_HEIGHT - 0.85)})
    for ax in axes.flat:
        ax.grid(True, alpha=0.3)
    return fig, axes


def save_figure(fig, output: FigureOutput, out_dir, stats: pd.DataFrame, caption: str) -> None:
    """Finish a ``panel_figure``: add the shared legend (every labelled artist of its axes, once per
    label) with ``caption`` as its title in the legend column beside the panels, and write
    ``<output.name>.png`` (at ``DPI``), ``.pdf`` and ``.csv`` (``stats``, the plotted numbers) into
    ``out_dir``, setting ``output``'s paths."""
    handles, labels = {}, []
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    rows = max(1, round(fig.get_figheight() / PANEL_HEIGHT))
    size = "small" if len(labels) <= LEGEND_ROWS * rows else "x-small"
    columns = 1 if len(labels) <= 2 * LEGEND_ROWS * rows else 2
    width = fig.get_figwidth()
    fig.legend([handles[label] for label in labels], labels, loc="center left",
               bbox_to_anchor=(1 - LEGEND_WIDTH / width, 0.5), ncols=columns, fontsize=size,
               title=textwrap.fill(caption, CAPTION_CHARS[size]), title_fontsize=size,
               alignment="left", frameon=False, borderaxespad=0.0, handlelength=2.2)
    out_dir = Path(out_dir)
    output.png, output.pdf, output.csv = (out_dir / f"{output.name}.{kind}" for kind in ("png", "pdf", "csv"))
    for path, data in ((output.png, figure_bytes(fig, "png", dpi=DPI)), (output.pdf, figure_bytes(fig, "pdf")),
                       (output.csv, stats.to_csv(index=False).encode())):
        write_local_atomically(path, data)  # an earlier figure stays whole if the write fails


def figure_bytes(fig, kind: str, **options) -> bytes:
    """``fig`` saved as a ``kind`` (``png``, ``pdf``) file's bytes (``Figure.savefig`` ``options``)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=kind, **options)
    return buffer.getvalue()
