#!/usr/bin/env bash
# The GPU benchmarks in one go, each under its own time limit (what a lent GPU machine runs in one call):
# finetune's training step against the bare loop with each GPU setting, the input pipeline with the batch
# augmentation on the device. Sized for one call of at most 10 minutes, the most wanted figures first; the
# compiled variant runs last under its own limit (compiling ConvNeXt-V2 Base's training and evaluation
# graphs took over 4 minutes on the H200); the checkpoint benchmark, measured on the H200 on 2026-11-26,
# is run apart:
#   python benchmarks/checkpoint_cost.py --models convnextv2-base bert-base --measure-steps 20 --repeats 2
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
run 180 benchmarks/gpu_step.py --models convnextv2-base --repeats 1 --steps 60 --variants channels_last
run 90 benchmarks/gpu_step.py --models bert-base --repeats 1 --steps 60
run 90 benchmarks/input_pipeline.py --n 3000 --epochs 2 --workers 6 --repeats 2
run 220 benchmarks/gpu_step.py --models convnextv2-base --repeats 1 --steps 60 --variants compile
