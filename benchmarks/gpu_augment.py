"""The training batch augmentation inside a bare GPU training loop: what it costs the step, with the batch on the
device already or copied there every step as ``finetune``'s loader copies it, side by side in one run.

``benchmarks/gpu_step.py --variants no_augment`` found most of the gap between ``finetune``'s training step and the
bare loop to go away when ``finetune`` trains on one augmented batch instead of augmenting each (ConvNeXt-V2 Base,
H200, 2026-11-27: 321 vs 418 samples/s). This script asks whether the augmentation itself costs that: it times
the bare timm training step (``gpu_step.bare_model``, AdamW, autocast) fed, per combination of

- input ``source``: ``device`` (one uint8 batch on the device, reused), ``copied`` (each step a batch gathered
  into page-locked memory by ``trainables.inputs.ExampleDataset.batch``, as the training loader does, then copied
  without blocking, as Accelerate's prepared loader does) or ``loader`` (finetune's own training loader:
  ``trainables.inputs.example_loader`` prepared by an ``Accelerator`` set up as ``finetune`` sets it up, which
  also fetches each next batch before handing over the current one), and
- ``augment``: ``none`` (a pre-made float batch: the bare loop of ``gpu_step.py``; the copy still happens),
  ``current`` (``BatchTrainAugment``, finetune's augmentation) or ``crop_only`` (a centre crop, converted and
  normalised: the floor of any augmentation),

interleaved ``--repeats`` times (every other time in reverse order); and each augmentation alone on a device
batch, synchronised per call.
With ``--trace``, a ``torch.profiler`` summary of a few steps of (copied, current) (``gpu_step.trace_summary``).
It runs on a CPU too (tiny settings in ``tests/test_benchmarks.py``).
Usage from the repository root: ``python benchmarks/gpu_augment.py [--model convnextv2-base] [--steps 30]``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from _common import machine  # puts the repository on the import path
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration
from gpu_step import bare_model, synchronize, trace_steps

from trainables.data.batch_augment import BatchTrainAugment
from trainables.data.transforms import channels_first
from trainables.errors import GroupsweepError
from trainables.inputs import ExampleDataset, example_loader
from trainables.models import get_spec

SOURCES = ("device", "copied", "loader")
AUGMENTS = ("none", "current", "crop_only")
HOST_BATCHES = 8  # distinct batches the copied source cycles through


class CentreCrop(BatchTrainAugment):
    """The augmentation's floor: a fixed centre crop of the uint8 batch, converted and normalised."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = channels_first(images)
        top, left = (images.shape[-2] - self.size) // 2, (images.shape[-1] - self.size) // 2
        mean, std = self.normalisation(images.device)
        return images[..., top:top + self.size, left:left + self.size].float().sub_(mean).div_(std)


def uint8_batches(source: str, args, device: torch.device):
    """Endless uint8 channels-last ``(B, S, S, 3)`` batches on ``device`` from ``source`` (module docstring)."""
    stored = args.stored_size or args.image_size
    generator = np.random.default_rng(0)
    if source == "device":
        batch = torch.from_numpy(generator.integers(0, 256, (args.batch_size, stored, stored, 3), dtype=np.uint8))
        batch = batch.to(device)
        while True:
            yield batch
    count = HOST_BATCHES * args.batch_size
    images = generator.integers(0, 256, (count, stored, stored, 3), dtype=np.uint8)
    examples = ExampleDataset(images, np.zeros(count, dtype=np.int64), np.arange(count))
    if source == "loader":
        accelerator = Accelerator(cpu=device.type == "cpu",
                                  dataloader_config=DataLoaderConfiguration(non_blocking=True))
        loader = accelerator.prepare(example_loader(examples, args.batch_size, shuffle=True,
                                                    generator=torch.Generator(), pin_memory=device.type == "cuda"))
        while True:
            for batch, _, _ in loader:
                yield batch
    for start in itertools.cycle(range(0, count, args.batch_size)):
        batch, _, _ = examples.batch(list(range(start, start + args.batch_size)), pin_memory=device.type == "cuda")
        yield batch.to(device, non_blocking=True)


def parse_args(argv=None):
    """The benchmark's settings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="convnextv2-base")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--stored-size", type=int, default=None,
                        help="side of the uint8 squares (default: the image size, as gpu_step.py's synthetic data)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per combination and repeat")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps before each timed run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--trace", action="store_true", help="profile a few steps of (copied, current)")
    args = parser.parse_args(argv)
    try:
        modality = get_spec(args.model).modality
    except GroupsweepError as error:
        parser.error(str(error))
    if modality != "image":
        parser.error(f"--model {args.model!r} is a text model; the augmentation is for image models")
    return args


def main(argv=None) -> None:
    """Time every (source, augment) combination interleaved; print samples/s and ratios, then each augmentation
    alone."""
    args = parse_args(argv)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    print(f"machine: {machine()}")
    print(f"{args.model}, batch {args.batch_size}, {args.image_size} px, {'bf16' if cuda else 'fp32'}, "
          f"{args.steps} timed steps after {args.warmup}, {args.repeats} interleaved repeats")
    torch.manual_seed(0)
    network = bare_model(args.model, False)[0].to(device).train()
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-5, weight_decay=1e-4)
    fixed = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    targets = torch.randint(0, 2, (args.batch_size,), device=device)
    augments = {"current": BatchTrainAugment(args.image_size), "crop_only": CentreCrop(args.image_size)}
    sources = {source: uint8_batches(source, args, device) for source in SOURCES}

    def step(source: str, augment: str) -> None:
        raw = next(sources[source])
        inputs = fixed if augment == "none" else augments[augment](raw)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            output = network(inputs)
        F.cross_entropy(output.float(), targets).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    combinations = list(itertools.product(SOURCES, AUGMENTS))
    rates = {combination: [] for combination in combinations}
    for repeat in range(args.repeats):
        for source, augment in combinations if repeat % 2 == 0 else combinations[::-1]:  # no fixed first
            for _ in range(args.warmup):
                step(source, augment)
            synchronize()
            started = time.perf_counter()
            for _ in range(args.steps):
                step(source, augment)
            synchronize()
            rates[source, augment].append(args.steps * args.batch_size / (time.perf_counter() - started))
            print(f"  measured {source} {augment}: {rates[source, augment][-1]:.1f} samples/s", flush=True)
    baseline = statistics.median(rates["device", "none"])
    for (source, augment), values in rates.items():
        median = statistics.median(values)
        print(f"{args.model} step, {source:>6} batch, augment {augment:>9}: {median:8.1f} samples/s "
              f"({median / baseline:.3f} of device/none; runs: {', '.join(f'{v:.1f}' for v in values)})")
    raw = next(sources["device"])
    for augment, transform in augments.items():
        for _ in range(3):
            transform(raw)
        synchronize()
        started = time.perf_counter()
        for _ in range(10):
            transform(raw)
            synchronize()
        print(f"augment {augment} alone: {(time.perf_counter() - started) * 100:.2f} ms per batch (synchronised)")
    if args.trace:
        for key, value in trace_steps(lambda: step("copied", "current"), 5).items():
            print(f"trace copied/current {key}: {value}")


if __name__ == "__main__":
    main()
