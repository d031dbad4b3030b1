"""Run every groupsweep benchmark in turn, each printing its own side-by-side ratios.

Usage from the repository root: ``python benchmarks/run_all.py [--only NAME ...] [--quick]``.
``--quick`` passes each benchmark its smallest sensible settings (for a smoke run, not for figures).
Benchmarks: input_pipeline (cached uint8 vs JPEG decoding), engine_overhead (groupsweep run vs a plain
finetune loop), packing (concurrency 2 vs 1), dataset_sharing (object store vs per-trial loading),
analysis_scale (load + select on 10,000 trials x 100 epochs), search_schedulers (ASHA vs FIFO on the
demo-hpo search space), eval_cost (the demo with eval_train every vs final), checkpoint_cost (checkpoint
seconds as a share of an epoch per model size and storage), gpu_step (finetune's training step vs a bare
loop; meant for a GPU), gpu_augment (the batch augmentation's cost in a bare GPU training loop, the batch on
the device, copied there each step or from finetune's loader), driver_scale (driver CPU and wall time per
trial at 100, 300 and 1,000 trials),
driver_start (wall time of `groupsweep plan` and a one-trial `run`; `--baseline DIR` compares with another
checkout), optimizer_step (finetune's multi-tensor optimizer steps vs torch's per-parameter loop on the CPU).
Each runs in its own Python process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = {
    "input_pipeline": ([], ["--n", "400", "--epochs", "1", "--repeats", "1"]),
    "engine_overhead": ([], ["--repeats", "1", "--set", "seeds=[1]", "--set", "epochs=1",
                             "--set", "models=[toy-resnet-xs]"]),
    "packing": ([], ["--repeats", "1", "--epochs", "1", "--size", "600"]),
    "dataset_sharing": ([], ["--size", "4000", "--repeats", "1"]),
    "analysis_scale": (["--clean"], ["--trials", "1000", "--epochs", "20", "--clean"]),  # its 4.5 GB not left behind
    "search_schedulers": ([], ["--num-samples", "2", "--epochs", "2", "--size", "300"]),
    "eval_cost": ([], ["--set", "seeds=[1]", "--set", "epochs=2", "--set", "models=[toy-resnet-xs]"]),
    "checkpoint_cost": (["--moto"], ["--models", "toy-resnet-xs", "convnextv2-atto", "--repeats", "1"]),
    "driver_scale": ([], ["--counts", "10", "30"]),
    "driver_start": ([], ["--repeats", "1"]),
    "gpu_step": (["--variants", "channels_last", "compile"],
                 ["--models", "toy-resnet-xs", "toy-bert-xs", "--batch-size", "4", "--image-size", "32", "--steps", "2",
                  "--epochs", "1", "--warmup", "1", "--repeats", "1"]),
    "optimizer_step": ([], ["--models", "toy-resnet-xs", "--steps", "4"]),
    "gpu_augment": ([], ["--model", "toy-resnet-xs", "--batch-size", "4", "--image-size", "32", "--steps", "2",
                         "--warmup", "1", "--repeats", "1"]),
}


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks; return the number that failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these")
    parser.add_argument("--quick", action="store_true", help="smallest settings (smoke run)")
    args = parser.parse_args(argv)
    failed = 0
    for name in args.only or BENCHMARKS:
        full, quick = BENCHMARKS[name]
        command = [sys.executable, str(HERE / f"{name}.py"), *(quick if args.quick else full)]
        print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        status = subprocess.call(command, cwd=HERE.parent)
        print(f"=== {name}: exit {status} after {time.perf_counter() - started:.0f} s", flush=True)
        failed += status != 0
    return failed


if __name__ == "__main__":
    sys.exit(main())
