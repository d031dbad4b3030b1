#!/usr/bin/env bash
# Set up .venv (if needed), run the demo sweep on the embedded synthetic-waterbirds benchmark
# (20 trials on Ray Tune), then write its Table 1 (per dataset and model), figures and HTML report.
# Results: $GROUPSWEEP_STORAGE (default ./groupsweep_results)/demo; tables, figures and report.html in
# .../demo/analysis.
# Running it again resumes the sweep (finished trials are kept) and rewrites the analysis.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
storage="${GROUPSWEEP_STORAGE:-$PWD/groupsweep_results}"
.venv/bin/groupsweep run demo --storage "$storage" "$@"
.venv/bin/groupsweep analyze "$storage/demo" --out "$storage/demo/analysis"
.venv/bin/groupsweep plot "$storage/demo" --figure all --out "$storage/demo/analysis"
.venv/bin/groupsweep report "$storage/demo" --out "$storage/demo/analysis/report.html"
echo "Table 1, figures and report.html written to $storage/demo/analysis"
