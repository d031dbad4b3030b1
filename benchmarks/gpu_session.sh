#!/usr/bin/env bash
# The GPU benchmarks in one go, each under its own time limit (what a lent GPU machine runs in one call):
# finetune's training step against the bare loop with each GPU setting, the input pipeline with the batch
# augmentation on the device, and a checkpoint's share of an epoch at the device's measured speed.
# Usage from the repository root: bash benchmarks/gpu_session.sh   (PYTHON=... to pick the interpreter)
set -u
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
run() {
    local limit=$1
    shift
    echo "== $* (limit ${limit} s)"
    timeout "$limit" "$python" "$@"
    echo "== exit $?"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
"$python" -c "import torch, timm, transformers, accelerate; print('torch', torch.__version__, 'timm', timm.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)"
run 330 benchmarks/gpu_step.py --repeats 1 --variants channels_last compile
run 120 benchmarks/input_pipeline.py --n 3000 --epochs 2 --workers 6 --repeats 2
run 90 benchmarks/checkpoint_cost.py --models convnextv2-base bert-base --measure-steps 20 --repeats 2
