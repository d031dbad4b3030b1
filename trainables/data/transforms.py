"""Image transforms of the paper (Appendix B), as torchvision.transforms.v2 pipelines on uint8 CHW tensors.

Training: RandomResizedCrop(image_size, scale=(0.7, 1)) + random horizontal flip + ImageNet
normalisation. Evaluation: Resize(round(image_size * 256 / 224)) + CenterCrop(image_size) + ImageNet
normalisation (Resize(256) + CenterCrop(224) at the paper's resolution). Randomness comes from torch's
global RNG, so ``torch.manual_seed`` reproduces a training epoch's crops and flips.

Evaluation is split where its images stop being uint8: ``eval_resize`` keeps uint8 pixels (whole
batches at once) and ``normalize`` turns a uint8 batch into ImageNet-normalised floats on whatever
device the batch is on; ``eval_transform`` is the composition, and ``EvalBatchTransform`` applies it to
the channels-last batches the DataLoader collates from the cache. Training batches are augmented by
``trainables.data.batch_augment.BatchTrainAugment`` (each image its own crop and flip, as whole-batch
operations where the model runs); ``train_augment`` / ``train_transform`` are the same augmentation
image by image with torchvision, the reference that its tests and the input-pipeline benchmark compare
against.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms import v2

from trainables.errors import GroupsweepError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize() -> v2.Compose:
    """uint8 (..., 3, H, W) -> float32 ImageNet-normalised, elementwise: apply it to whole batches on the device."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def train_augment(image_size: int) -> v2.Compose:
    """Random crop-resize to ``image_size`` (scale 0.7-1) and horizontal flip: uint8 (3, H, W) -> uint8 (3, S, S).

    Apply it to one image at a time: on a batch it would draw one crop and one flip for all of them.
    """
    return v2.Compose([
        v2.RandomResizedCrop(image_size, scale=(0.7, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
    ])


def eval_resize(image_size: int) -> v2.Compose:
    """Deterministic resize of the shorter side to ``round(image_size * 256 / 224)`` + centre crop, uint8 in
    and out; batchable ((B, 3, H, W) gives the same result as image by image)."""
    return v2.Compose([v2.Resize(round(image_size * 256 / 224), antialias=True), v2.CenterCrop(image_size)])


def train_transform(image_size: int) -> v2.Compose:
    """``train_augment`` then ``normalize``: uint8 (3, H, W) -> float32 (3, S, S), one image at a time."""
    return v2.Compose([train_augment(image_size), normalize()])


def eval_transform(image_size: int) -> v2.Compose:
    """``eval_resize`` then ``normalize``: uint8 (..., 3, H, W) -> float32 (..., 3, S, S).

    It has no randomness, so it may be applied to a whole batch (B, 3, H, W) at once with the same
    result as image by image.
    """
    return v2.Compose([eval_resize(image_size), normalize()])


class EvalBatchTransform:
    """A collated uint8 channels-last batch (B, H, W, 3) -> float32 (B, 3, S, S), contiguous: ``eval_transform``
    applied to its ``channels_first`` view (no transposing copy of the uint8 pixels)."""

    def __init__(self, image_size: int):
        self.transform = eval_transform(image_size)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.transform(channels_first(images)).contiguous()

    def __repr__(self) -> str:
        return f"EvalBatchTransform({self.transform})"


def channels_first(images: torch.Tensor) -> torch.Tensor:
    """Channels-last images (..., H, W, 3), as the cache stores them and the DataLoader collates them, as a
    (..., 3, H, W) view: no copy (its memory stays channels-last, the layout torch's uint8 resize prefers)."""
    return images.movedim(-1, -3)


def to_chw(images: np.ndarray) -> torch.Tensor:
    """Copy uint8 channels-last images (H, W, 3) or (B, H, W, 3) into a uint8 (..., 3, H, W) tensor.

    Works on read-only memmaps (the copy is a plain writable array). Anything else raises a one-line
    GroupsweepError.
    """
    array = np.array(images)
    if array.dtype != np.uint8 or array.ndim not in (3, 4) or array.shape[-1] != 3:
        raise GroupsweepError(f"expected uint8 images (H, W, 3) or (B, H, W, 3), got {array.dtype} {array.shape}")
    return torch.from_numpy(array).movedim(-1, -3)
