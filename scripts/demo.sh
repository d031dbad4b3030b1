#!/usr/bin/env bash
# Set up .venv (if needed) and run the demo on the embedded synthetic-waterbirds benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/groupsweep train --dataset synthetic-waterbirds --model toy-convnextv2-s --epochs 5 "$@"
