#!/usr/bin/env bash
# Set up .venv (if needed) and run the whole test suite, in two processes (pytest-xdist; the tests on the
# session's shared Ray cluster all in one of them). Extra arguments go to pytest (-n 0: one process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q -n 2 --dist loadgroup "$@"
