"""The batched training augmentation against torchvision's per-image RandomResizedCrop + flip."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torchvision import transforms as T
from torchvision.transforms.v2 import functional as F

from trainables.data.batch_augment import (
    BatchTrainAugment,
    centre_box,
    interpolated_crops,
    matmul_resized_crops,
    random_resized_crop_boxes,
    resize_weights,
    resized_crops,
)
from trainables.data.transforms import normalize, train_transform


@pytest.mark.parametrize("crops", [matmul_resized_crops, interpolated_crops, resized_crops])
@pytest.mark.parametrize("height, width, size", [(73, 73, 64), (64, 96, 56), (40, 40, 72)])
def test_resized_crops_equal_torch_antialiased_resized_crop(crops, height, width, size):
    torch.manual_seed(0)
    images = torch.rand(6, 3, height, width) * 255
    boxes = random_resized_crop_boxes(6, height, width)
    flips = torch.tensor([False, True, False, True, True, False])
    got = crops(images, boxes, flips, size)
    for b, (top, left, h, w) in enumerate(boxes.tolist()):
        expected = F.resized_crop(images[b], top, left, h, w, [size, size], antialias=True)
        if flips[b]:
            expected = expected.flip(-1)
        torch.testing.assert_close(got[b], expected, atol=2e-3, rtol=1e-5)  # in 0-255 units


def test_each_weight_row_is_a_normalised_kernel_inside_its_span():
    weights = resize_weights(torch.tensor([3, 0]), torch.tensor([10, 20]), 20, 7).double()
    torch.testing.assert_close(weights.sum(2), torch.ones(2, 7, dtype=torch.float64))
    assert (weights[0, :, :3] == 0).all() and (weights[0, :, 13:] == 0).all()
    assert (weights >= 0).all()
    # identity size: the identity matrix
    torch.testing.assert_close(resize_weights(torch.tensor([0]), torch.tensor([5]), 5, 5)[0], torch.eye(5))


def test_uint8_images_match_the_per_image_uint8_pipeline():
    """On the CPU, exactly torchvision's uint8 resized crop; on the GPU path, up to its integer rounding."""
    torch.manual_seed(1)
    images = torch.randint(0, 256, (4, 3, 73, 73), dtype=torch.uint8)
    boxes = random_resized_crop_boxes(4, 73, 73)
    no_flip = torch.zeros(4, dtype=torch.bool)
    on_cpu, by_matmul = resized_crops(images, boxes, no_flip, 64), matmul_resized_crops(images, boxes, no_flip, 64)
    assert on_cpu.dtype == torch.uint8 and by_matmul.dtype == torch.float32
    for b, (top, left, h, w) in enumerate(boxes.tolist()):
        expected = F.resized_crop(images[b], top, left, h, w, [64, 64], antialias=True)
        torch.testing.assert_close(on_cpu[b], expected, atol=0, rtol=0)
        assert (by_matmul[b] - expected.float()).abs().max() <= 1.0


@pytest.mark.parametrize("crops", [matmul_resized_crops, interpolated_crops])
def test_channels_last_views_give_the_same_crops(crops):
    """Collated cache batches reach the crops as channels-last (B, 3, H, W) views: same pixels as contiguous."""
    torch.manual_seed(5)
    cached = torch.randint(0, 256, (5, 40, 48, 3), dtype=torch.uint8)  # (B, H, W, 3), as collated
    boxes = random_resized_crop_boxes(5, 40, 48)
    flips = torch.tensor([True, False, True, False, False])
    view = cached.permute(0, 3, 1, 2)
    torch.testing.assert_close(crops(view, boxes, flips, 32), crops(view.contiguous(), boxes, flips, 32), atol=0, rtol=0)


def test_boxes_follow_torchvision_get_params_in_distribution():
    torch.manual_seed(2)
    n, height, width = 4000, 73, 97
    ours = random_resized_crop_boxes(n, height, width).numpy()
    image = torch.zeros(3, height, width)
    reference = np.array([T.RandomResizedCrop.get_params(image, [0.7, 1.0], [3 / 4, 4 / 3]) for _ in range(n)])
    assert (ours[:, 2] <= height).all() and (ours[:, 3] <= width).all()
    assert (ours[:, 0] + ours[:, 2] <= height).all() and (ours[:, 1] + ours[:, 3] <= width).all()
    for column in range(4):  # top, left, h, w: same distributions (two-sample KS, 4000 each)
        assert stats.ks_2samp(ours[:, column], reference[:, column]).pvalue > 1e-3, column


def test_no_fitting_box_falls_back_to_torchvision_centre_box():
    for height, width in ((30, 100), (100, 30), (50, 60)):
        image = torch.zeros(3, height, width)
        expected = T.RandomResizedCrop.get_params(image, [2.0, 3.0], [3 / 4, 4 / 3])  # never fits
        assert centre_box(height, width) == tuple(expected)
        boxes = random_resized_crop_boxes(3, height, width, scale=(2.0, 3.0))
        assert boxes.tolist() == [list(expected)] * 3


def test_batch_augment_flips_half_normalises_and_is_seeded():
    images = torch.randint(0, 256, (400, 20, 20, 3), dtype=torch.uint8)  # channels-last, as collated
    augment = BatchTrainAugment(16)
    torch.manual_seed(3)
    first = augment(images)
    torch.manual_seed(3)
    torch.testing.assert_close(augment(images), first, atol=0, rtol=0)
    assert first.shape == (400, 3, 16, 16) and first.dtype == torch.float32 and first.is_contiguous()
    # a constant image stays constant (whatever the box and flip) and is normalised like ``normalize``
    grey = torch.full((2, 20, 20, 3), 128, dtype=torch.uint8)
    torch.testing.assert_close(augment(grey), normalize()(grey[:, :16, :16].permute(0, 3, 1, 2)), atol=1e-5, rtol=1e-5)
    # flips: an image that is black on the left and white on the right comes out mirrored half the time
    halves = torch.zeros(2000, 20, 20, 3, dtype=torch.uint8)
    halves[:, :, 10:] = 255
    out = augment(halves)
    mirrored = (out[:, 0, :, 0] > out[:, 0, :, -1]).all(dim=1).float().mean().item()
    assert abs(mirrored - 0.5) < 4 * math.sqrt(0.25 / 2000)


def test_batch_augment_matches_the_per_image_pipeline_statistically():
    """Mean and spread of each output pixel over many draws agree with the per-image ``train_transform``."""
    torch.manual_seed(4)
    image = torch.randint(0, 256, (3, 24, 24), dtype=torch.uint8)
    draws = 3000
    batched = BatchTrainAugment(20)(image.permute(1, 2, 0).expand(draws, -1, -1, -1))
    per_image = torch.stack([train_transform(20)(image) for _ in range(draws)])
    tolerance = 4 * per_image.std(0) / math.sqrt(draws) + 0.02
    assert ((batched.mean(0) - per_image.mean(0)).abs() <= tolerance * math.sqrt(2)).float().mean() > 0.99
