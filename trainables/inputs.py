"""Turn a GroupDataset split into torch inputs: images or token tensors.

Images stay uint8 and channels-last, as the decode-once cache stores them, until they reach the model's
device: the DataLoader only copies the cached (H, W, 3) squares (never re-decoding files, never
transposing pixels), and each collated (B, H, W, 3) batch gets the paper's random crop, resize, flip and
normalisation where the model runs, independently per image but as whole-batch operations
(``trainables.data.batch_augment``); evaluation batches are resized, centre-cropped and normalised as
whole uint8 batches too. Both batch transforms hand the model float32 (B, 3, S, S) batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from trainables.data.base import SPLITS, GroupDataset
from trainables.errors import GroupsweepError


class ExampleDataset(Dataset):
    """Examples ``positions`` of one split; item i -> (input, label, position).

    ``inputs`` is a uint8 (N, H, W, 3) array (images: an item is its uint8 (H, W, 3) tensor, so a collated
    batch is channels-last (B, H, W, 3), the layout the batch transforms take) or a dict of (N, L) token
    tensors (texts: an item is a dict of (L,) tensors). ``example_loader`` fetches whole batches at once
    (``batch``).
    """

    def __init__(self, inputs, labels: np.ndarray, positions: np.ndarray):
        self.inputs = inputs
        self.labels = torch.tensor(np.asarray(labels), dtype=torch.long)
        self.positions = torch.tensor(np.asarray(positions), dtype=torch.long)
        if len(self.positions) and not 0 <= int(self.positions.min()) <= int(self.positions.max()) < len(labels):
            raise IndexError(f"positions must lie in [0, {len(labels)}), the split's examples")

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int):
        position = int(self.positions[i])
        if isinstance(self.inputs, dict):
            item = {key: value[position] for key, value in self.inputs.items()}
        else:
            # A private copy: the arrays may be read-only (memmaps, Ray's shared object store).
            item = torch.from_numpy(np.array(self.inputs[position]))
        return item, self.labels[position], position

    def batch(self, indices: list[int], pin_memory: bool = False) -> tuple:
        """Items ``indices`` collated: ``(inputs, labels, positions)`` as ``default_collate`` makes of
        ``[self[i] for i in indices]``, but each array gathered at once (one copy, no per-item Python); with
        ``pin_memory``, images are gathered straight into page-locked memory (no second copy to pin them)."""
        positions = self.positions[indices]
        if isinstance(self.inputs, dict):
            inputs = {key: value[positions] for key, value in self.inputs.items()}
        else:
            # gathered into new memory: the arrays may be read-only (memmaps, Ray's shared object store)
            dtype = torch.from_numpy(np.empty(0, dtype=self.inputs.dtype)).dtype
            inputs = torch.empty((len(positions), *self.inputs.shape[1:]), dtype=dtype, pin_memory=pin_memory)
            np.take(self.inputs, positions.numpy(), axis=0, out=inputs.numpy(), mode="clip")  # "raise" buffers
        return inputs, self.labels[positions], positions


class BatchedExamples(Dataset):
    """An ``ExampleDataset`` whose DataLoader fetches a whole batch per call (``__getitems__``:
    ``ExampleDataset.batch``); ``example_loader`` makes them."""

    def __init__(self, examples: ExampleDataset, pin_memory: bool = False):
        self.examples = examples
        self.pin_memory = pin_memory

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int):
        return self.examples[i]

    def __getitems__(self, indices: list[int]) -> tuple:
        return self.examples.batch(indices, self.pin_memory)


def example_loader(examples: ExampleDataset, batch_size: int, **options) -> DataLoader:
    """A DataLoader of ``(inputs, labels, positions)`` batches of ``examples``, each fetched in one gather per
    array (``ExampleDataset.batch``: what the process that drives the GPU saves per step; with ``pin_memory``
    and no workers, images are gathered into page-locked memory directly); ``options`` are DataLoader's
    (``sampler``, ``generator``, ``pin_memory``, ``shuffle``, ``num_workers``, ...)."""
    # Page-locked memory is a CUDA allocation: only the process that drives the GPU makes it, never a worker.
    pin = bool(options.get("pin_memory")) and not options.get("num_workers")
    return DataLoader(BatchedExamples(examples, pin), batch_size=batch_size, collate_fn=_collated, **options)


def _collated(batch: tuple) -> tuple:
    """``example_loader``'s collate function: ``BatchedExamples`` batches come collated."""
    return batch


@dataclass
class ModelInputs:
    """Per-split model inputs of a dataset, shared by training and evaluation.

    ``inputs[split]`` holds uint8 images or encoded tokens; ``train_batch_transform`` turns a collated uint8
    channels-last batch (B, H, W, 3) of training images into augmented model inputs; ``eval_batch_transform``
    prepares such a batch of evaluation images. The batch transforms are None for text.
    """

    inputs: dict
    labels: dict
    train_batch_transform: Callable | None
    eval_batch_transform: Callable | None

    def train_dataset(self, positions: np.ndarray) -> ExampleDataset:
        """The training examples at ``positions`` of the train split, with augmentation."""
        return ExampleDataset(self.inputs["train"], self.labels["train"], positions)

    def eval_dataset(self, split: str, positions: np.ndarray | None = None) -> ExampleDataset:
        """The examples at ``positions`` of ``split`` (default: every one) in that order, without augmentation."""
        positions = np.arange(len(self.labels[split])) if positions is None else positions
        return ExampleDataset(self.inputs[split], self.labels[split], positions)

    def eval_batches(self, split: str, batch_size: int):
        """Every example of ``split`` in order, as model-ready ``(inputs, labels)`` batches (images through
        ``eval_batch_transform``): how base-model consumers (D3M, JTT, DFR) read a split."""
        # own generator: the iterator would otherwise draw its base seed from torch's global stream
        loader = example_loader(self.eval_dataset(split), batch_size, generator=torch.Generator())
        for inputs, labels, _ in loader:
            if self.eval_batch_transform is not None:
                inputs = self.eval_batch_transform(inputs)
            yield inputs, labels


def build_model_inputs(dataset: GroupDataset, model_modality: str, tokenizer=None,
                       cache_dir: str | None = None) -> ModelInputs:
    """Prepare ``dataset`` for a model of ``model_modality`` (``image`` or ``text``).

    Text is tokenised once per split with ``tokenizer`` (cached on disk under ``cache_dir`` when given).
    Raises GroupsweepError when the dataset and model modalities differ.
    """
    if dataset.modality != model_modality:
        raise GroupsweepError(
            f"dataset {dataset.name!r} holds {dataset.modality} inputs but the model takes {model_modality} inputs"
        )
    labels = {split: dataset.splits[split].y for split in SPLITS}
    if dataset.modality == "image":
        # deferred: image runs never import the tokenizer libraries, text runs never import torchvision
        from trainables.data.batch_augment import BatchTrainAugment
        from trainables.data.transforms import EvalBatchTransform

        return ModelInputs(
            inputs={split: dataset.splits[split].inputs for split in SPLITS},
            labels=labels,
            train_batch_transform=BatchTrainAugment(dataset.image_size),
            eval_batch_transform=EvalBatchTransform(dataset.image_size),
        )
    from trainables.tokenization import encode_texts

    inputs = {
        split: encode_texts(tokenizer, list(dataset.splits[split].inputs), dataset.max_length, cache_dir=cache_dir)
        for split in SPLITS
    }
    return ModelInputs(inputs=inputs, labels=labels, train_batch_transform=None, eval_batch_transform=None)


def text_corpus(dataset: GroupDataset) -> list[str]:
    """Every training text (both sentences of a pair), the corpus a word-level tokenizer is built from."""
    corpus = []
    for item in dataset.splits["train"].inputs:
        corpus.extend(item if isinstance(item, (tuple, list)) else [item])
    return corpus
