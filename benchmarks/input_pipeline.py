"""Training-input throughput: decode-once memmap cache vs decoding the JPEGs every epoch.

Writes a Waterbirds-format folder (``metadata.csv`` + CUB-style class folders) of ``--n`` textured
JPEGs whose shorter side is ``--size`` px (4:3 aspect), then times, with the same DataLoader settings
and the same augmentation (RandomResizedCrop(image_size, scale=(0.7, 1)) + horizontal flip + ImageNet
normalisation):

* cache: ``load_dataset("waterbirds")`` builds the decode-once cache (its one-time build is timed
  separately), and every epoch reads uint8 squares from the memmap and augments them as tensors;
* jpeg: every epoch opens and decodes each JPEG with PIL and augments it with the classic torchvision
  transforms on PIL images (the paper's pipeline).

Each pair is timed twice: augmenting and normalising every example in the DataLoader (``example``: the
cache side applies ``train_transform`` image by image, the project's first pipeline) and the project's
training pipeline (``batch``: ``build_model_inputs(...).train_dataset`` only copies uint8 squares in the
DataLoader and ``train_batch_transform`` draws each image's crop and flip and resizes and normalises the
whole batch on ``--device``, default the GPU when there is one; the JPEG side crops and flips per image
and normalises per batch on the device); every batch is moved to the device in both cases.
Both iterate the training split for ``--epochs`` epochs after one warm-up epoch, ``--repeats`` times,
alternating (each ratio compares a JPEG measurement with the cache measurement right after it, so a
busy machine slows both); it prints the median images/s of both, the median ratio and every pair's ratio.
DataLoader workers default to 0, as groupsweep's ``finetune`` loads. Usage, from the repository root:
``python benchmarks/input_pipeline.py [--dir DIR] [--n 2000] [--workers 0] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from _common import machine  # first: puts the repository on sys.path
from trainables.data.base import load_dataset
from trainables.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize, to_chw, train_transform
from trainables.data.waterbirds import load_waterbirds  # noqa: F401  (registers "waterbirds")
from trainables.inputs import ExampleDataset, build_model_inputs, example_loader

SPLIT_SHARES = (0.8, 0.1, 0.1)
FOLDERS = ("094.White_breasted_Nuthatch", "001.Black_footed_Albatross")


def write_tree(root: Path, n: int, size: int, seed: int = 0) -> None:
    """``n`` textured JPEGs (shorter side ``size``, 4:3) in Waterbirds format; groups drawn like Table 2's train split."""
    rng = np.random.default_rng(seed)
    groups = rng.choice(4, size=n, p=np.array([3498, 184, 56, 1057]) / 4795)
    splits = rng.choice(3, size=n, p=SPLIT_SHARES)
    groups[:4], splits[:4] = np.arange(4), 0  # every group in train
    width = round(size * 4 / 3)
    rows = []
    for i, (g, split) in enumerate(zip(groups, splits)):
        y, place = divmod(int(g), 2)
        coarse = Image.fromarray(rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)).resize((width, size), Image.BICUBIC)
        pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, size=(size, width, 3))
        name = f"{FOLDERS[y]}/{FOLDERS[y][4:]}_{i:05d}.jpg"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / name, quality=90)
        rows.append([i + 1, name, y, int(split), place, "/o/ocean/00000001.jpg"])
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["img_id", "img_filename", "y", "split", "place", "place_filename"])
        writer.writerows(rows)


class CachedImages(Dataset):
    """Training examples read from the decode-once memmap and augmented as uint8 tensors by ``transform``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(to_chw(self.images[i])), int(self.labels[i])


class JpegImages(Dataset):
    """Training examples decoded from JPEG at every access and augmented as PIL images by ``transform``."""

    def __init__(self, paths: list[Path], labels: np.ndarray, transform):
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        with Image.open(self.paths[i]) as image:
            return self.transform(image.convert("RGB")), int(self.labels[i])


def pipelines(dataset, paths: list[Path], where: str) -> tuple:
    """``((cache Dataset, its batch transform), (jpeg Dataset, its batch transform))``: one augmentation
    in two pipelines.

    ``where="example"``: each example is augmented and normalised to float in the DataLoader (the cache
    side uses ``train_transform`` on uint8 tensors, the JPEG side the classic torchvision pipeline on PIL
    images). ``where="batch"``: the project's training inputs on the cache side (the DataLoader copies
    uint8 squares; ``train_batch_transform`` crops, resizes, flips and normalises each collated batch on
    the device); the JPEG side crops and flips each decoded PIL image in the DataLoader, keeps it uint8
    and normalises each batch on the device.
    """
    image_size, train = dataset.image_size, dataset.splits["train"]
    crop_flip = [T.RandomResizedCrop(image_size, scale=(0.7, 1.0)), T.RandomHorizontalFlip()]
    if where == "example":
        jpeg = T.Compose([*crop_flip, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
        return ((CachedImages(train.inputs, train.y, train_transform(image_size)), None),
                (JpegImages(paths, train.y, jpeg), None))
    inputs = build_model_inputs(dataset, "image")
    cache = inputs.train_dataset(np.arange(len(train.y)))
    return ((cache, inputs.train_batch_transform),
            (JpegImages(paths, train.y, T.Compose([*crop_flip, T.PILToTensor()])), normalize()))


def make_loader(dataset: Dataset, device: str, batch_size: int, workers: int) -> DataLoader:
    """A shuffling DataLoader over ``dataset`` (persistent workers, so each pass reuses them)."""
    options = {"shuffle": True, "num_workers": workers, "persistent_workers": workers > 0,
               "pin_memory": device != "cpu"}
    return (example_loader(dataset, batch_size, **options) if isinstance(dataset, ExampleDataset)  # as finetune
            else DataLoader(dataset, batch_size=batch_size, **options))


def images_per_second(loader: DataLoader, batch_transform, device: str, epochs: int) -> float:
    """Images/s delivered on ``device`` over ``epochs`` full passes of ``loader``; each batch is moved to
    ``device`` and, if given, ``batch_transform`` runs there, timed with the rest."""
    start, seen = time.perf_counter(), 0
    for _ in range(epochs):
        for batch in loader:
            images = batch[0].to(device, non_blocking=True)
            if batch_transform is not None:
                images = batch_transform(images)
            seen += len(images)
    if device != "cpu":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def paired_rates(pipelines_: tuple, args) -> list[tuple[float, float]]:
    """``args.repeats`` (jpeg img/s, cache img/s) pairs, each pair timed back to back so that both sides of a
    ratio see the same machine load."""
    (cache_data, cache_batch), (jpeg_data, jpeg_batch) = pipelines_
    settings = (args.device, args.batch_size, args.workers)
    jpeg_loader, cache_loader = make_loader(jpeg_data, *settings), make_loader(cache_data, *settings)
    # one untimed pass of each, as timed (copies to the device and the batch transform included): it starts the
    # workers, warms the page cache and pays the device's first-call set-up on both sides alike
    images_per_second(jpeg_loader, jpeg_batch, args.device, 1)
    images_per_second(cache_loader, cache_batch, args.device, 1)
    return [(images_per_second(jpeg_loader, jpeg_batch, args.device, args.epochs),
             images_per_second(cache_loader, cache_batch, args.device, args.epochs))
            for _ in range(args.repeats)]


def main(argv: list[str] | None = None) -> None:
    """Generate the folder, time both pipelines side by side and print the rates and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="folder for the generated tree (default: a temp dir)")
    parser.add_argument("--n", type=int, default=2000, help="number of JPEGs (all splits)")
    parser.add_argument("--size", type=int, default=224, help="shorter side of the generated JPEGs")
    parser.add_argument("--image-size", type=int, default=224, help="model input size")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0,
                        help="DataLoader workers, both pipelines (default 0: how groupsweep's finetune loads)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per measurement (after one warm-up)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved jpeg/cache measurements per pipeline")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where batches go and batch normalisation runs (default: cuda if available)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        root = args.dir or Path(scratch) / "waterbirds"
        if not (root / "metadata.csv").exists():
            root.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            write_tree(root, args.n, args.size)
            print(f"wrote {args.n} JPEGs ({args.size} px shorter side) to {root} in {time.perf_counter() - start:.1f} s")
        else:
            print(f"using the JPEGs already in {root} (--n and --size apply only to a folder written here)")
        cache_dir = Path(scratch) / "cache"
        start = time.perf_counter()
        dataset = load_dataset("waterbirds", root=root, image_size=args.image_size, cache_dir=cache_dir)
        build = time.perf_counter() - start
        start = time.perf_counter()
        load_dataset("waterbirds", root=root, image_size=args.image_size, cache_dir=cache_dir)
        reload = time.perf_counter() - start
        train = dataset.splits["train"]
        with open(root / "metadata.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        paths = [root / row["img_filename"] for row in rows if row["split"] == "0"]
        print(f"cache: built in {build:.1f} s for {len(rows)} images, reloaded in {reload:.2f} s; "
              f"train split {len(train)} images; batch {args.batch_size}, {args.workers} workers, "
              f"{args.epochs} timed epochs; torch threads {torch.get_num_threads()}; batches to {args.device}")
        print(f"machine: {machine()}; {args.repeats} interleaved pairs per pipeline, median ratio")
        print(f"{'normalised per':<16}{'jpeg img/s':>12}{'cache img/s':>13}{'ratio':>8}  ratios of the pairs")
        for where in ("example", "batch"):
            pairs = paired_rates(pipelines(dataset, paths, where), args)
            jpeg, cached = (float(np.median(side)) for side in zip(*pairs))
            ratio = float(np.median([c / j for j, c in pairs]))
            label = where + (" (project)" if where == "batch" else "")
            spread = ", ".join(f"{c / j:.2f}" for j, c in pairs)
            print(f"{label:<16}{jpeg:12.1f}{cached:13.1f}{ratio:7.2f}x  {spread}")
        print("target: project pipeline (batch) >= 3x the JPEG-decoding pipeline")

if __name__ == "__main__":
    main()
