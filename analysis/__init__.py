"""Analysis side of groupsweep: results loading, metrics, model selection, plots, spectral analysis."""
