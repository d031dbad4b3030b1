"""``trainables.inputs``: whole-batch fetching (``ExampleDataset.batch``, ``example_loader``) gives exactly the
batches the per-example path and ``default_collate`` give."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler

from trainables.inputs import ExampleDataset, example_loader


def sampler(dataset, seed=3):
    return RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))


def assert_same_batches(expected, got):
    assert len(expected) == len(got)
    for (inputs_a, labels_a, positions_a), (inputs_b, labels_b, positions_b) in zip(expected, got):
        if isinstance(inputs_a, dict):
            assert inputs_a.keys() == inputs_b.keys()
            for key in inputs_a:
                assert inputs_a[key].dtype == inputs_b[key].dtype and torch.equal(inputs_a[key], inputs_b[key])
        else:
            assert inputs_a.dtype == inputs_b.dtype == torch.uint8 and torch.equal(inputs_a, inputs_b)
        assert labels_a.dtype == labels_b.dtype and torch.equal(labels_a, labels_b)
        assert positions_a.dtype == positions_b.dtype and torch.equal(positions_a, positions_b)


@pytest.mark.parametrize("storage", ["array", "read-only", "memmap"])
def test_image_batches_equal_the_per_example_path(tmp_path, storage):
    """A read-only array (Ray's shared object store) and a memmap (the decode-once cache) are gathered into new
    memory, batch by batch, in the sampler's order, a last partial batch included."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 12, 10, 3), dtype=np.uint8)
    if storage == "memmap":
        mapped = np.lib.format.open_memmap(tmp_path / "images.npy", mode="w+", dtype=np.uint8, shape=images.shape)
        mapped[:] = images
        mapped.flush()
        images = np.load(tmp_path / "images.npy", mmap_mode="r")
    elif storage == "read-only":
        images.flags.writeable = False
    labels = rng.integers(0, 2, 50)
    examples = ExampleDataset(images, labels, rng.permutation(50)[:37])  # a subset, in a shuffled order
    expected = list(DataLoader(examples, batch_size=8, sampler=sampler(examples)))
    got = list(example_loader(examples, 8, sampler=sampler(examples)))
    assert_same_batches(expected, got)
    assert got[-1][0].shape == (5, 12, 10, 3)
    got[0][0][:] = 0  # a batch is its own memory, never a view of the stored images
    assert images.any()


def test_text_batches_equal_the_per_example_path():
    rng = np.random.default_rng(1)
    tokens = {key: torch.from_numpy(rng.integers(0, 100, (30, 7))) for key in ("input_ids", "attention_mask")}
    examples = ExampleDataset(tokens, rng.integers(0, 3, 30), np.arange(30))
    expected = list(DataLoader(examples, batch_size=4, sampler=sampler(examples)))
    assert_same_batches(expected, list(example_loader(examples, 4, sampler=sampler(examples))))


def test_in_order_without_a_sampler_and_with_worker_processes():
    images = np.arange(20 * 2 * 2 * 3, dtype=np.uint8).reshape(20, 2, 2, 3)
    examples = ExampleDataset(images, np.arange(20) % 2, np.arange(20))
    expected = list(DataLoader(examples, batch_size=6))
    assert_same_batches(expected, list(example_loader(examples, 6)))
    assert_same_batches(expected, list(example_loader(examples, 6, num_workers=2)))


@pytest.mark.parametrize("positions, size", [([0, 6], 6), ([-1], 6), ([2, 0, 3], 3)])
def test_positions_outside_the_split_are_refused_at_once(positions, size):
    """The batched gather never indexes outside the split: a bad position fails when the dataset is made."""
    with pytest.raises(IndexError, match=rf"positions must lie in \[0, {size}\)"):
        ExampleDataset(np.zeros((size, 2, 2, 3), dtype=np.uint8), np.zeros(size, dtype=int), positions)
