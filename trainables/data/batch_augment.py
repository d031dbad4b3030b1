"""The paper's training augmentation for a whole batch at once, on the device the batch is on.

``BatchTrainAugment(S)`` maps a uint8 channels-last batch ``(B, H, W, 3)`` (as the DataLoader collates the
cached squares) to float32 ImageNet-normalised ``(B, 3, S, S)`` (contiguous) with, for every image
independently, torchvision's ``RandomResizedCrop(S, scale=(0.7, 1))`` (crop box drawn
by the same rule as ``RandomResizedCrop.get_params``), an antialiased bilinear resize of the box (the
weights of torch's ``interpolate(mode="bilinear", antialias=True)``), a horizontal flip with probability
1/2, and ImageNet normalisation.

On a GPU, a separable resize is two matrix products: image ``x`` (H x W) becomes ``R x C^T``, where row i
of ``R`` (S x H) holds the interpolation weights of output row i over the input rows of the crop box and
zeros elsewhere, and likewise ``C`` (S x W) for columns (a flip reverses the rows of ``C``). With one
``R`` and one ``C`` per image the whole batch is one batched matmul pair, which replaces B small
per-image resize calls in DataLoader workers with two large kernels where the model runs. The result
equals torch's float ``resized_crop(..., antialias=True)`` of each image up to float rounding (tests
check it). On the CPU the same boxes and flips go through torch's antialiased ``interpolate`` image by
image (dense products would cost more there than they save), in the images' dtype: for uint8 images,
exactly the per-image torchvision pipeline's pixels, turned into floats only by the normalisation.

Randomness (boxes and flips) comes from torch's global CPU RNG, so ``torch.manual_seed`` reproduces an
epoch's augmentation whatever the device. The boxes and flips reach a GPU in one non-blocking copy from
page-locked memory, and the normalisation constants are copied once per device: a copy from pageable memory
may wait for every kernel already queued (the previous training step; CUDA stages such a copy through its own
buffer and may synchronise the stream first), leaving the GPU idle while the host prepares the next batch.
"""

from __future__ import annotations

import math

import torch

from trainables.data.transforms import IMAGENET_MEAN, IMAGENET_STD, channels_first

SCALE = (0.7, 1.0)
RATIO = (3 / 4, 4 / 3)
# RandomResizedCrop.get_params tries this many random boxes before falling back to a centre crop.
ATTEMPTS = 10


def random_resized_crop_boxes(n: int, height: int, width: int, scale=SCALE, ratio=RATIO) -> torch.Tensor:
    """``n`` crop boxes ``(top, left, h, w)`` (int64, shape (n, 4)) drawn as ``RandomResizedCrop.get_params``:
    up to ``ATTEMPTS`` tries of area ~ U(scale) x H W and log aspect ratio ~ U(log ratio), the first box that
    fits placed uniformly; if none fits, the largest centred box whose aspect ratio is within ``ratio``."""
    area = height * width
    areas = area * torch.empty(n, ATTEMPTS).uniform_(scale[0], scale[1])
    log_ratio = torch.empty(n, ATTEMPTS).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(areas * aspect)).long()
    h = torch.round(torch.sqrt(areas / aspect)).long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(fits.long(), dim=1)  # first fitting attempt (0 when none fits: handled below)
    rows = torch.arange(n)
    h, w, found = h[rows, first], w[rows, first], fits[rows, first]
    top = (torch.rand(n) * (height - h + 1).clamp(min=1)).long()
    left = (torch.rand(n) * (width - w + 1).clamp(min=1)).long()
    boxes = torch.stack([top, left, h, w], dim=1)
    if not bool(found.all()):
        boxes[~found] = torch.tensor(centre_box(height, width, ratio))
    return boxes


def centre_box(height: int, width: int, ratio=RATIO) -> tuple[int, int, int, int]:
    """``RandomResizedCrop.get_params``'s fallback: the whole image, narrowed to the allowed aspect ratios."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resize_weights(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int,
                   device=None) -> torch.Tensor:
    """Antialiased bilinear interpolation matrices, one per box: float32 ``(n, out_size, in_size)``.

    Row i of matrix b weighs input pixels ``start[b] .. start[b] + length[b] - 1`` for output pixel i of
    a resize of that span to ``out_size`` (torch's antialias rule: triangle filter widened by the
    downscale factor, centres at half-pixels, weights renormalised at the span's edges); zero elsewhere.
    """
    start = start.to(device=device, dtype=torch.float64)
    length = length.to(device=device, dtype=torch.float64)
    scale = (length / out_size)[:, None, None]  # input pixels per output pixel
    support = scale.clamp(min=1.0)
    centre = (torch.arange(out_size, device=device, dtype=torch.float64)[None, :, None] + 0.5) * scale
    pixel = torch.arange(in_size, device=device, dtype=torch.float64)[None, None, :] - start[:, None, None]
    weights = (1.0 - (pixel + 0.5 - centre).abs() / support).clamp(min=0.0)
    weights = weights * ((pixel >= 0) & (pixel < length[:, None, None]))
    return (weights / weights.sum(dim=2, keepdim=True)).float()


def resized_crops(images: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor, size: int) -> torch.Tensor:
    """Each image's box ``(top, left, h, w)`` resized (antialiased bilinear) to ``size`` x ``size`` and, where
    ``flips`` is true, mirrored left-right: ``(B, C, H, W)`` (any memory layout) -> ``(B, C, size, size)`` in
    the input's units: ``matmul_resized_crops`` (float32) on a GPU, ``interpolated_crops`` (the images'
    dtype) on the CPU (dense products cost more than they save there)."""
    if images.device.type == "cpu":
        return interpolated_crops(images, boxes, flips, size)
    return matmul_resized_crops(images, boxes, flips, size)


def matmul_resized_crops(images: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor, size: int) -> torch.Tensor:
    """``resized_crops`` as two batched matrix products with ``resize_weights``, in float32 on the images' device."""
    _, _, height, width = images.shape
    device = images.device
    # One copy of boxes and flips, from page-locked memory: no wait for the queued kernels (module docstring).
    staged = torch.cat([boxes, flips.long()[:, None]], dim=1)
    if device.type == "cuda":
        staged = staged.pin_memory()
    staged = staged.to(device, non_blocking=True)
    rows = resize_weights(staged[:, 0], staged[:, 2], height, size, device)
    columns = resize_weights(staged[:, 1], staged[:, 3], width, size, device)
    columns = torch.where(staged[:, 4, None, None].bool(), columns.flip(1), columns)
    return rows[:, None] @ images.float() @ columns[:, None].transpose(-1, -2)


def interpolated_crops(images: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor, size: int) -> torch.Tensor:
    """``resized_crops`` image by image with torch's antialiased ``interpolate``, in the images' dtype (uint8 in,
    uint8 out: torch's integer kernel, exactly the per-image torchvision pipeline's pixels)."""
    batch, channels = images.shape[:2]
    out = torch.empty(batch, channels, size, size, dtype=images.dtype, device=images.device)
    images = images.contiguous(memory_format=torch.channels_last)  # torch's fast path for 3-channel uint8
    for index, ((top, left, h, w), flip) in enumerate(zip(boxes.tolist(), flips.tolist())):
        # sliced, not indexed: ``images[index][None]`` loses the channels-last strides and the fast path
        crop = torch.nn.functional.interpolate(images[index:index + 1, :, top:top + h, left:left + w],
                                               size=(size, size), mode="bilinear", antialias=True,
                                               align_corners=False)[0]
        out[index] = crop.flip(-1) if flip else crop
    return out


class BatchTrainAugment:
    """uint8 channels-last ``(B, H, W, 3)`` -> float32 ImageNet-normalised ``(B, 3, size, size)``, contiguous:
    random resized crop (scale 0.7-1), horizontal flip and normalisation, drawn independently per image
    (module docstring)."""

    def __init__(self, size: int):
        self.size = size
        self._normalisation: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def normalisation(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """ImageNet ``(mean, std)`` in pixel units (0-255), shape (1, 3, 1, 1), on ``device``; copied there once."""
        if device not in self._normalisation:
            self._normalisation[device] = tuple(torch.tensor(values).view(1, 3, 1, 1).mul_(255).to(device)
                                                for values in (IMAGENET_MEAN, IMAGENET_STD))
        return self._normalisation[device]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = channels_first(images)
        batch, _, height, width = images.shape
        boxes = random_resized_crop_boxes(batch, height, width)
        flips = torch.rand(batch) < 0.5
        mean, std = self.normalisation(images.device)
        return resized_crops(images, boxes, flips, self.size).float().sub_(mean).div_(std)

    def __repr__(self) -> str:
        return f"BatchTrainAugment(size={self.size})"
