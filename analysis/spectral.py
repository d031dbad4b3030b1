"""Every output of the spectral analysis (Section 5 of the paper), written into one folder.

The spectral analysis is cut by job, each module importing only those above it in this list:

- ``analysis.covariance``: the maths (streamed group covariances, eigenvalues, majority / minority
  groups, rho(y), Table 5) and the tables built from per-trial spectra; its docstring states every
  definition;
- ``analysis.features``: which trials to analyse and their penultimate features, read from the trial
  directories' checkpoints and streamed into per-group statistics, one ``TrialSpectrum`` per trial;
- ``analysis.spectral_plots``: the figures (5, 6, 10-12);
- ``analysis.spectral`` (here): ``write_outputs`` writes the tables (CSV and Markdown) and figures of a
  list of spectra, without touching trials or features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.covariance import eigenvalue_table, panel_names, rho_table, table5, table5_paper_view
from analysis.spectral_plots import plot_eigenvalues, plot_rho
from trainables.trial_dir import write_local_atomically


@dataclass
class SpectralOutputs:
    """Files written by ``write_outputs`` (tables and figures) and notes on what could not be drawn."""

    files: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    table5: pd.DataFrame | None = None
    rho: pd.DataFrame | None = None


def write_outputs(spectra: list, tops, out_dir) -> SpectralOutputs:
    """From ``spectra`` (``analysis.covariance.TrialSpectrum`` objects, as ``analysis.features.analyze_trials``
    returns them), write into ``out_dir`` (created) the eigenvalue CSV (``spectral_eigenvalues.csv``, up
    to the largest of ``tops``), the rho table (``spectral_rho_table.csv``), Table 5
    (``spectral_table5.csv`` and ``.md``), Figure 6 and, for each ``k`` of ``tops``, the group and class
    eigenvalue figures (PNG, PDF and CSV each)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = SpectralOutputs()
    eigenvalues = eigenvalue_table(spectra)
    rho = rho_table(spectra)
    table = table5(rho)
    outputs.rho, outputs.table5 = rho, table
    for name, frame in (("spectral_eigenvalues.csv", eigenvalues), ("spectral_rho_table.csv", rho),
                        ("spectral_table5.csv", table)):
        write_local_atomically(out_dir / name, frame.to_csv(index=False).encode())
        outputs.files.append(out_dir / name)
    write_local_atomically(out_dir / "spectral_table5.md", table5_markdown(table, rho).encode())
    outputs.files.append(out_dir / "spectral_table5.md")
    figures = [plot_rho(rho, out_dir)]
    for k in sorted(set(tops)):
        figures += [plot_eigenvalues(eigenvalues, kind, k, out_dir) for kind in ("group", "class")]
    for figure in figures:
        outputs.notes += figure.notes
        outputs.files += [path for path in (figure.png, figure.pdf, figure.csv) if path is not None]
    return outputs


def table5_markdown(table: pd.DataFrame, rho: pd.DataFrame) -> str:
    """Table 5 (paper layout and per-trial detail) and the rho table as Markdown."""
    if table.empty:
        return "# Table 5\n\nno trial analysed\n"
    detail = rho.copy()
    for column in ("lambda1_majority", "lambda1_minority", "rho", "test_acc_majority", "test_acc_minority", "acc_gap"):
        detail[column] = detail[column].map(lambda value: "n/a" if pd.isna(value) else f"{value:.4g}")
    shown = [c for c in ("dataset", "model", "method_label", "variant", "seed", "epoch", "class", "class_name",
                         "majority_group", "minority_group", "lambda1_majority", "lambda1_minority", "rho",
                         "test_acc_majority", "test_acc_minority", "acc_gap") if c in detail]
    agree = int(table["agree"].sum())
    ties = table[table["tie"]]
    tied = ("" if ties.empty else " Ties, broken toward the lower class, in: "
            + ", ".join(f"{name} seed {seed}" for name, seed in zip(panel_names(ties), ties["seed"])) + ".")
    return "\n\n".join([
        "# Table 5: (argmax_y rho(y), argmax_y [Acc(g_maj(y)) - Acc(g_min(y))]) per seed",
        "Test group accuracies at the analysed epoch; the classes agree in "
        f"{agree} of {len(table)} trial(s).{tied}",
        table5_paper_view(table).to_markdown(index=False, disable_numparse=True),
        "## Intra-class spectral norm ratio rho(y) per trial",
        detail[shown].to_markdown(index=False, disable_numparse=True),
    ]) + "\n"
