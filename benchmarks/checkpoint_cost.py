"""Checkpoint cost: what saving a trial's full training state costs against the epoch it follows.

Per model (random weights; the paper's sizes by default), the state ``finetune`` checkpoints is built as a
trial builds it (``EpochResult.state()``: weights, AdamW with both moment buffers filled, schedule, random
state) and saved as the trainable saves it: ``torch.save`` into a temporary folder, then copied into the
sweep's storage (what Ray Tune does with a reported checkpoint, through ``pyarrow.fs``) and the temporary
folder removed. Storage: a local folder (``--storage``, default a temporary one on local disk) and, with
``--s3 URI`` (e.g. ``s3://bucket/prefix?endpoint_override=localhost:9000&scheme=http``), an
S3-protocol server; ``--moto`` starts moto's S3 server on 127.0.0.1 in this process for that (the
local S3-protocol server the object-storage tests use). Printed per model and storage: the state's size, the median checkpoint seconds of
``--repeats`` saves, and its share of an epoch:

- ``H100 epoch``: a training epoch of the smaller and of the larger dataset of the model's kind (images:
  Waterbirds, 4,795 training images, and CelebA, 162,770; texts: MultiNLI, 206,175 training examples, and
  CivilComments, 269,038) at the training throughput the README's fractional-GPU table measured on the
  H100 box (batch 32, fp32, 224 px; ConvNeXt-V2 only);
- ``this device``: with ``--measure-steps N``, the throughput of ``N`` timed training steps of the
  model at ``--batch-size`` and ``--image-size`` (``--seq-len`` tokens for BERT) on this machine's
  device (after one warm-up step), for the same two epoch sizes.

A checkpoint every ``k`` epochs costs ``share / k`` of the training time.

Usage from the repository root: ``python benchmarks/checkpoint_cost.py [--models ...] [--repeats 3]
[--measure-steps 0] [--s3 URI]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import tempfile
import time

from _common import machine

DEFAULT_MODELS = ["convnextv2-atto", "convnextv2-nano", "convnextv2-tiny", "convnextv2-base", "bert-small",
                  "bert-base"]
# Training examples of the papers' datasets (LaBonte et al., Table 2), the smaller one first: an epoch of an
# image model on Waterbirds and CelebA, of a text model on MultiNLI and CivilComments.
EPOCH_EXAMPLES = {"image": {"Waterbirds": 4795, "CelebA": 162770},
                  "text": {"MultiNLI": 206175, "CivilComments": 269038}}
# Training images per second of one trial alone on the H100 box (README, "Fractional GPU packing": batch 32,
# fp32, AdamW, 224 px, random weights).
H100_IMAGES_PER_S = {"convnextv2-atto": 1584, "convnextv2-pico": 1177, "convnextv2-nano": 664,
                     "convnextv2-tiny": 459, "convnextv2-base": 193}


def start_moto() -> tuple:
    """``(server, URI of a fresh bucket)`` of moto's S3 server on a free 127.0.0.1 port, with its test
    credentials in the environment."""
    import socket

    import pyarrow.fs
    from moto.server import ThreadedMotoServer

    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    query = f"endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    filesystem, _ = pyarrow.fs.FileSystem.from_uri(f"s3://checkpoints?{query}&allow_bucket_creation=true")
    filesystem.create_dir("checkpoints")
    return server, f"s3://checkpoints/sweep?{query}"


def build(name: str, image_size: int):
    """``(model, optimizer, inputs maker)`` of a randomly initialised registry model with AdamW's state filled."""
    import torch

    from trainables.models import get_spec
    from trainables.models.build import build_model

    model = build_model(name, 2, pretrained=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()  # creates both moment buffers of every parameter, as after a training step
    optimizer.zero_grad(set_to_none=True)
    text = get_spec(name).modality == "text"

    def inputs(batch: int, seq_len: int, device):
        if text:
            ids = torch.randint(1000, 2000, (batch, seq_len), device=device)
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        return torch.randn(batch, 3, image_size, image_size, device=device)

    return model, optimizer, inputs


def training_state(model, optimizer) -> dict:
    """The dict ``finetune``'s ``EpochResult.state()`` returns for this model and optimizer."""
    import torch

    from trainables.config import TrainConfig
    from trainables.finetune import make_scheduler, rng_state

    scheduler = make_scheduler(TrainConfig(), optimizer, 1000)
    return {"epoch": 1, "config": TrainConfig().to_dict(), "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
            "_bytes": sum(t.numel() * t.element_size() for t in model.state_dict().values())
            + sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
                  if isinstance(v, torch.Tensor))}


def save_once(state: dict, storage: str, number: int) -> float:
    """Seconds of one checkpoint as the trainable makes it: torch.save to a temporary folder, copied into
    ``storage`` (a local path or a ``pyarrow.fs`` URI) as Ray Tune persists it, temporary folder removed.
    Raises ``RuntimeError`` when the stored file is not the saved one's size (checked after the timing): a
    copy that did not land whole is no measured checkpoint."""
    import pyarrow.fs
    import torch

    state = {key: value for key, value in state.items() if key != "_bytes"}
    started = time.perf_counter()
    directory = tempfile.mkdtemp(prefix="groupsweep-ckpt-")
    try:
        torch.save(state, os.path.join(directory, "state.pt"))
        if "://" in storage:
            filesystem, root = pyarrow.fs.FileSystem.from_uri(storage)
        else:
            filesystem, root = pyarrow.fs.LocalFileSystem(), os.path.abspath(storage)
        target = f"{root.rstrip('/')}/checkpoint_{number:06d}"
        filesystem.create_dir(target, recursive=True)
        pyarrow.fs.copy_files(directory, target, source_filesystem=pyarrow.fs.LocalFileSystem(),
                              destination_filesystem=filesystem)
        seconds = time.perf_counter() - started
        saved = os.path.getsize(os.path.join(directory, "state.pt"))
        stored = filesystem.get_file_info(f"{target}/state.pt").size
        if stored != saved:
            raise RuntimeError(f"checkpoint {number} stored {stored} bytes of {saved} in {storage}")
        filesystem.delete_dir(target)  # like num_to_keep: only the last checkpoint stays
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return seconds


def images_per_second(model, inputs, steps: int, batch: int, seq_len: int) -> float:
    """Training examples per second of ``steps`` timed AdamW steps (after one warm-up) on the default device."""
    import torch
    import torch.nn.functional as F

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    targets = torch.zeros(batch, dtype=torch.long, device=device)
    batch_inputs = inputs(batch, seq_len, device)
    for step in range(steps + 1):
        if step == 1:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        loss = F.cross_entropy(model(batch_inputs).float(), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    """Measure and print the checkpoint seconds and their share of an epoch per model and storage."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--storage", default=None, help="local storage folder (default: a temporary one)")
    parser.add_argument("--s3", default=None, help="an S3-protocol storage URI, measured besides the local one")
    parser.add_argument("--moto", action="store_true", help="also measure a local moto S3 server")
    parser.add_argument("--measure-steps", type=int, default=0, help="time this many training steps per model")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per text example (MultiNLI's 128; "
                        "CivilComments' 220 makes its epochs longer, so its share smaller)")
    args = parser.parse_args(argv)
    import torch

    from trainables.models import get_spec

    print(f"machine: {machine()}")
    temporary = tempfile.TemporaryDirectory() if args.storage is None else None
    storages = {"local disk": args.storage or temporary.name}
    if args.s3:
        storages["s3"] = args.s3
    server = None
    if args.moto:
        server, storages["s3 (moto)"] = start_moto()
    print("share of an epoch of the smaller and the larger dataset: "
          + "; ".join(f"{modality} models {' and '.join(f'{name} ({count:,})' for name, count in sizes.items())}"
                      for modality, sizes in EPOCH_EXAMPLES.items()))
    header = (f"{'model':18} {'params':>8} {'state MiB':>9} {'storage':>10} {'ckpt s':>7} "
              f"{'H100 epoch: smaller':>22} {'larger':>7} {'this device: smaller':>23} {'larger':>7}")
    print(header)
    try:
        for name in args.models:
            torch.manual_seed(0)
            model, optimizer, inputs = build(name, args.image_size)
            modality = get_spec(name).modality
            state = training_state(model, optimizer)
            parameters = sum(p.numel() for p in model.parameters())
            rate = images_per_second(model, inputs, args.measure_steps, args.batch_size, args.seq_len) \
                if args.measure_steps else None
            state = training_state(model.cpu(), optimizer) if rate else state
            for label, storage in storages.items():
                seconds = statistics.median(save_once(state, storage, n) for n in range(args.repeats))
                cells = []
                for per_second in (H100_IMAGES_PER_S.get(name), rate):
                    for examples in EPOCH_EXAMPLES[modality].values():
                        cells.append(f"{seconds / (examples / per_second):.1%}" if per_second else "-")
                print(f"{name:18} {parameters / 1e6:>7.1f}M {state['_bytes'] / 2**20:>9.0f} {label:>10} "
                      f"{seconds:>7.2f} {cells[0]:>22} {cells[1]:>7} {cells[2]:>23} {cells[3]:>7}", flush=True)
            if rate:
                print(f"  {name}: {rate:.1f} training examples/s on this device (batch {args.batch_size})")
            del model, optimizer, state
    finally:
        if temporary is not None:
            temporary.cleanup()
        if server is not None:
            server.stop()
    print("share = checkpoint seconds / training-epoch seconds; a checkpoint every k epochs costs share / k")
    print(f"machine after: {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
