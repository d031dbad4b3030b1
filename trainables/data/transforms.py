"""Image transforms of the paper (Appendix B), as torchvision.transforms.v2 pipelines on uint8 CHW tensors.

Training: RandomResizedCrop(image_size, scale=(0.7, 1)) + random horizontal flip + ImageNet
normalisation. Evaluation: Resize(round(image_size * 256 / 224)) + CenterCrop(image_size) + ImageNet
normalisation (Resize(256) + CenterCrop(224) at the paper's resolution). Randomness comes from torch's
global RNG, so ``torch.manual_seed`` reproduces a training epoch's crops and flips.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms import v2

from trainables.errors import GroupsweepError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _normalise() -> list:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def train_transform(image_size: int) -> v2.Compose:
    """Random crop-resize to ``image_size`` and flip, then normalise: uint8 (3, H, W) -> float32 (3, S, S).

    Apply it to one image at a time: on a batch it would draw one crop and one flip for all of them.
    """
    return v2.Compose([
        v2.RandomResizedCrop(image_size, scale=(0.7, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        *_normalise(),
    ])


def eval_transform(image_size: int) -> v2.Compose:
    """Deterministic resize + centre crop + normalise: uint8 (..., 3, H, W) -> float32 (..., 3, S, S).

    It has no randomness, so it may be applied to a whole batch (B, 3, H, W) at once with the same
    result as image by image.
    """
    return v2.Compose([
        v2.Resize(round(image_size * 256 / 224), antialias=True),
        v2.CenterCrop(image_size),
        *_normalise(),
    ])


def to_chw(images: np.ndarray) -> torch.Tensor:
    """Copy uint8 channels-last images (H, W, 3) or (B, H, W, 3) into a uint8 (..., 3, H, W) tensor.

    Works on read-only memmaps (the copy is a plain writable array). Anything else raises a one-line
    GroupsweepError.
    """
    array = np.array(images)
    if array.dtype != np.uint8 or array.ndim not in (3, 4) or array.shape[-1] != 3:
        raise GroupsweepError(f"expected uint8 images (H, W, 3) or (B, H, W, 3), got {array.dtype} {array.shape}")
    return torch.from_numpy(array).movedim(-1, -3)
