"""The spectral figures (Figures 5, 6, 10-12 of the paper), drawn from ``analysis.covariance``'s tables.

Each figure is laid out and written with ``analysis.plots``' ``panel_figure`` and ``save_figure`` (fixed
panel size, one shared legend and caption, PNG + PDF + the CSV of the plotted statistics), one panel
per dataset / model / method, and per configuration in a search (``analysis.covariance.panel_names``).
Across seeds a figure shows the mean and its CSV the mean and the sample standard deviation (ddof=1; NaN
for one seed).
"""

from __future__ import annotations

import pandas as pd

from analysis.covariance import PANEL_KEYS, panel_names
from analysis.plots import MARKERS, OKABE_ITO, FigureOutput, panel_figure, save_figure

# The paper's figure number of each (kind, k) eigenvalue figure.
FIGURE_NUMBERS = {("group", 10): 5, ("group", 50): 10, ("class", 10): 11, ("class", 50): 12}


def _panels(frame: pd.DataFrame):
    """``(panel name, rows)`` per panel, sorted by name."""
    names = pd.Series(panel_names(frame), index=frame.index)
    return [(name, frame[names == name]) for name in sorted(names.unique())]


def figure_name(kind: str, k: int) -> str:
    """File stem of an eigenvalue figure: ``spectral_group_eigenvalues_top10`` (the paper's Figure 5)."""
    return f"spectral_{kind}_eigenvalues_top{k}"


def plot_eigenvalues(eigenvalues: pd.DataFrame, kind: str, k: int, out_dir) -> FigureOutput:
    """Figures 5 / 10 (``kind='group'``) and 11 / 12 (``kind='class'``): the mean over seeds of the top
    ``k`` eigenvalues of an ``eigenvalue_table`` against their rank, a line per group (minority groups
    marked ``*``, dashed) or class, a panel per dataset / model / method. Returns an
    ``analysis.plots.FigureOutput`` (no files, and a note, when there is nothing to draw)."""
    output = FigureOutput(figure_name(kind, k))
    rows = eigenvalues[(eigenvalues["kind"] == kind) & (eigenvalues["rank"] <= k)] if len(eigenvalues) else eigenvalues
    if rows.empty:
        output.notes.append(f"{output.name}: no eigenvalues to draw")
        return output
    keys = [key for key in PANEL_KEYS if key in rows]
    stats = (rows.groupby(keys + ["label", "name", "minority", "rank"], dropna=False)
             .agg(n_seeds=("seed", "nunique"), eigenvalue_mean=("eigenvalue", "mean"),
                  eigenvalue_std=("eigenvalue", "std"))
             .reset_index())
    panels = _panels(stats)
    fig, axes = panel_figure(len(panels), 1)
    for ax, (title, part) in zip(axes[0], panels):
        for (label, minority), line in part.groupby(["label", "minority"], sort=True):
            line = line.sort_values("rank")
            text = f"{kind} {label}" + ("*" if minority else "")
            ax.plot(line["rank"], line["eigenvalue_mean"], color=OKABE_ITO[label % len(OKABE_ITO)],
                    marker=MARKERS[label % len(MARKERS)], markersize=4, markevery=max(1, k // 10),
                    linestyle="--" if minority else "-", label=text)
        if kind == "group":
            marked = sorted(part.loc[part["minority"], "label"].unique())
            title += "\nminority groups: " + (", ".join(f"{g}*" for g in marked) or "none")
        ax.set_title(title, fontsize="small")
        ax.set_xlabel("Eigenvalue rank")
        ax.set_ylabel(f"Eigenvalue of the {kind} covariance")
    number = FIGURE_NUMBERS.get((kind, k))
    caption = (f"{'Figure ' + str(number) + ': ' if number else ''}top {k} eigenvalues of the {kind} covariance "
               f"matrices of penultimate training features; mean over seeds (CSV: + sample std, ddof=1)"
               + ("; * = minority group within its class (by training counts)" if kind == "group" else ""))
    save_figure(fig, output, out_dir, stats, caption)
    return output


def plot_rho(rho: pd.DataFrame, out_dir) -> FigureOutput:
    """Figure 6 from a ``rho_table``: ``rho(y)`` per class, mean over seeds with +/- one sample std
    (ddof=1) error bars, each seed's value as a dot, a dashed line at 1; a panel per dataset / model /
    method. Returns an ``analysis.plots.FigureOutput`` (no files, and a note, when no rho is known)."""
    output = FigureOutput("spectral_rho")
    rows = rho[rho["rho"].notna()] if len(rho) else rho
    if rows.empty:
        output.notes.append("spectral_rho: no class has both a majority and a minority group; nothing to draw")
        return output
    keys = [key for key in PANEL_KEYS if key in rows]
    stats = (rows.groupby(keys + ["class", "class_name"], dropna=False)
             .agg(n_seeds=("seed", "nunique"), rho_mean=("rho", "mean"), rho_std=("rho", "std"))
             .reset_index())
    panels = _panels(stats)
    seeds = _panels(rows)
    fig, axes = panel_figure(len(panels), 1)
    for ax, (title, part), (_, points) in zip(axes[0], panels, seeds):
        ax.bar(part["class"], part["rho_mean"], yerr=part["rho_std"].fillna(0), color=OKABE_ITO[1], capsize=4,
               width=0.6, label="mean ± std over seeds")
        ax.scatter(points["class"], points["rho"], color=OKABE_ITO[6], s=14, zorder=3, label="one seed")
        ax.axhline(1.0, color=OKABE_ITO[4], linestyle="--", linewidth=1.2, label="ρ = 1")
        ax.set_xticks(part["class"].to_list(), [str(c) for c in part["class"]])
        ax.set_title(title, fontsize="small")
        ax.set_xlabel("Class y")
        ax.set_ylabel("ρ(y) = λ1(g_min) / λ1(g_maj)")
    save_figure(fig, output, out_dir, stats, "Figure 6: intra-class spectral norm ratio; bars: mean over seeds, "
          "error bars: +/- 1 sample std (ddof=1); dots: single seeds")
    return output

