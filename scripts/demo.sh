#!/usr/bin/env bash
# Set up .venv (if needed), run the demo sweep on the embedded synthetic-waterbirds benchmark
# (20 trials on Ray Tune), then write its Table 1 and figures.
# Results: $GROUPSWEEP_STORAGE (default ./groupsweep_results)/demo; tables and figures in .../demo/analysis.
# Running it again resumes the sweep (finished trials are kept) and rewrites the analysis.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
storage="${GROUPSWEEP_STORAGE:-$PWD/groupsweep_results}"
.venv/bin/groupsweep run demo --storage "$storage" "$@"
.venv/bin/groupsweep analyze "$storage/demo" --out "$storage/demo/analysis"
.venv/bin/groupsweep plot "$storage/demo" --figure all --out "$storage/demo/analysis"
echo "Table 1 and figures written to $storage/demo/analysis"
