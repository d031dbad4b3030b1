"""Image transforms: the paper's train/eval pipelines on uint8 CHW tensors."""

import numpy as np
import pytest
import torch

from trainables.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, EvalBatchTransform, channels_first, eval_resize,
                                        eval_transform, normalize, to_chw, train_augment, train_transform)
from trainables.errors import GroupsweepError

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def random_images(*shape) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))


def normalised(images: torch.Tensor) -> torch.Tensor:
    return (images.float() / 255 - MEAN) / STD


@pytest.mark.parametrize("make", [train_transform, eval_transform])
@pytest.mark.parametrize("image_size, height, width", [(32, 32, 32), (16, 40, 48), (24, 20, 30)])
def test_output_is_normalised_float_of_image_size(make, image_size, height, width):
    out = make(image_size)(random_images(3, height, width))
    assert out.dtype == torch.float32 and out.shape == (3, image_size, image_size)


@pytest.mark.parametrize("make", [train_transform, eval_transform])
def test_constant_image_maps_to_imagenet_normalised_value(make):
    value = torch.tensor([200, 100, 30], dtype=torch.uint8).view(3, 1, 1)
    out = make(32)(value.expand(3, 40, 40).contiguous())
    expected = ((value.float() / 255 - MEAN) / STD).expand(3, 32, 32)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_eval_at_paper_resolution_is_resize_256_then_centre_crop_224():
    image = random_images(3, 256, 256)
    torch.testing.assert_close(eval_transform(224)(image), normalised(image[:, 16:240, 16:240]), atol=1e-5, rtol=0)
    wide = random_images(3, 256, 320)  # shorter side already 256: only the centre crop acts
    torch.testing.assert_close(eval_transform(224)(wide), normalised(wide[:, 16:240, 48:272]), atol=1e-5, rtol=0)


def test_eval_resizes_the_shorter_side_to_size_times_256_over_224():
    # A 16-pixel image becomes 37 pixels (round(32 * 256 / 224)) before the 32-pixel centre crop: a
    # checkerboard of 1-pixel squares is blurred, not copied.
    board = (torch.arange(16).view(1, 16) + torch.arange(16).view(16, 1)) % 2 * 255
    out = eval_transform(32)(board.to(torch.uint8).expand(3, 16, 16).contiguous())
    assert out.shape == (3, 32, 32)
    assert 0.05 < (out[0] * STD[0] + MEAN[0]).std() < 0.49


def test_eval_is_deterministic_and_batchable():
    transform = eval_transform(32)
    batch = random_images(5, 3, 40, 36)
    once, twice = transform(batch), transform(batch)
    assert once.shape == (5, 3, 32, 32)
    torch.testing.assert_close(once, twice, atol=0, rtol=0)
    per_image = torch.stack([transform(image) for image in batch])
    torch.testing.assert_close(once, per_image, atol=1e-6, rtol=0)


@pytest.mark.parametrize("height, width", [(37, 37), (40, 52)])
def test_eval_batch_transform_takes_collated_channels_last_batches(height, width):
    """A (B, H, W, 3) batch as the DataLoader collates cached squares: exactly ``eval_transform`` of the
    channels-first images, as a contiguous (B, 3, S, S) float batch."""
    collated = random_images(4, height, width, 3)
    out = EvalBatchTransform(32)(collated)
    assert out.shape == (4, 3, 32, 32) and out.dtype == torch.float32 and out.is_contiguous()
    torch.testing.assert_close(out, eval_transform(32)(collated.permute(0, 3, 1, 2).contiguous()), atol=0, rtol=0)
    view = channels_first(collated)
    assert view.shape == (4, 3, height, width) and view.data_ptr() == collated.data_ptr()


def test_train_is_random_but_reproducible_from_torch_seed():
    transform = train_transform(32)
    image = random_images(3, 32, 32)
    torch.manual_seed(11)
    first = [transform(image) for _ in range(3)]
    torch.manual_seed(11)
    again = [transform(image) for _ in range(3)]
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])


def test_train_flips_horizontally_about_half_the_time():
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    image[:, :, 16:] = 255  # dark left half, bright right half: crops keep the order, flips reverse it
    transform = train_transform(32)
    torch.manual_seed(0)
    flipped = [bool(out[:, :, :8].mean() > out[:, :, -8:].mean()) for out in (transform(image) for _ in range(400))]
    # Binomial(400, 0.5): 4 standard deviations is +-40.
    assert abs(sum(flipped) - 200) <= 40


def test_train_crops_keep_at_least_70_percent_of_the_area():
    # A crop of at least 70% of a 100x100 image with aspect ratio in [3/4, 4/3] is at least 72 pixels on
    # each side, so it always contains the centre square 45..55 (torchvision's default scale (0.08, 1)
    # would often miss it).
    image = torch.zeros(3, 100, 100, dtype=torch.uint8)
    image[:, 45:55, 45:55] = 255
    transform = train_transform(32)
    torch.manual_seed(1)
    for _ in range(100):
        out = transform(image)
        assert (out[0] * STD[0] + MEAN[0]).max() > 0.9


def test_to_chw_from_channels_last_arrays_and_memmaps(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 6, 3), dtype=np.uint8)
    tensor = to_chw(images)
    assert tensor.dtype == torch.uint8 and tensor.shape == (4, 3, 8, 6)
    assert torch.equal(tensor.permute(0, 2, 3, 1), torch.from_numpy(images))
    assert to_chw(images[0]).shape == (3, 8, 6)
    path = tmp_path / "images.u8"
    images.tofile(path)
    memmap = np.memmap(path, dtype=np.uint8, mode="r", shape=images.shape)
    assert torch.equal(to_chw(memmap[1:3]), tensor[1:3])


@pytest.mark.parametrize("bad", [np.zeros((2, 8, 8, 3), np.float32), np.zeros((2, 8, 8), np.uint8),
                                 np.zeros((2, 3, 8, 8), np.uint8)])
def test_to_chw_rejects_other_layouts_with_one_line(bad):
    with pytest.raises(GroupsweepError, match="expected uint8 images") as info:
        to_chw(bad)
    assert "\n" not in str(info.value)


def test_augment_and_resize_keep_uint8_and_normalize_finishes_them():
    image = random_images(3, 40, 36)
    torch.manual_seed(5)
    augmented = train_augment(32)(image)
    assert augmented.dtype == torch.uint8 and augmented.shape == (3, 32, 32)
    torch.manual_seed(5)
    # The training pipeline split at uint8 (augment per image, normalise the batch) is the composition.
    torch.testing.assert_close(normalize()(augmented), train_transform(32)(image), atol=0, rtol=0)
    resized = eval_resize(32)(image)
    assert resized.dtype == torch.uint8
    torch.testing.assert_close(normalize()(resized), eval_transform(32)(image), atol=0, rtol=0)


def test_normalize_on_a_batch_equals_image_by_image_and_the_formula():
    batch = random_images(6, 3, 8, 8)
    out = normalize()(batch)
    assert out.dtype == torch.float32 and out.shape == batch.shape
    torch.testing.assert_close(out, torch.stack([normalize()(image) for image in batch]), atol=0, rtol=0)
    torch.testing.assert_close(out, normalised(batch), atol=1e-5, rtol=0)
