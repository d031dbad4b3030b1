"""Per-epoch throughput profile of a training loop (``TrainConfig.profile``, ``groupsweep run --profile``).

``EpochProfiler.epoch(batches)`` wraps the training batches of one epoch: it times every wait for the
next batch (the DataLoader fetching and collating it, and the training batch transform, the image
augmentation, that ``finetune`` applies inside that iterator) and counts the examples. On a CUDA device
it first waits for the GPU to finish the step before (``torch.cuda.synchronize``), so the wait is time the
GPU sits idle for the next batch; a profiled run gives up the overlap of fetching with the previous step's
GPU work (its epochs run somewhat slower), and a wait share of 0.5 or more means a batch takes longer to
prepare than a step to compute, so the GPU would wait even with full overlap. Only the profiling process's
batches are counted (rank 0 of a multi-worker trial: its ``samples_per_s`` is that process's), and the
first epoch includes one-time costs (compilation, the device's warm-up).
``metrics(train_seconds)`` then gives, with ``perf/`` keys added to the epoch's metrics:

- ``perf/samples_per_s``: training examples per second of the epoch's training time;
- ``perf/data_wait_frac``: the share of that time spent waiting for batches (near 1: input-bound);
- on a CUDA device, ``perf/gpu_mem_max_mb`` (peak memory allocated by torch in the epoch) and
  ``perf/gpu_util`` (mean of ``torch.cuda.utilization`` sampled at most every 0.5 s, in percent;
  absent when NVML is not available).
"""

from __future__ import annotations

from time import perf_counter
from typing import Iterable, Iterator

import torch

UTIL_INTERVAL_S = 0.5


class EpochProfiler:
    """Data-wait time, example count and (CUDA) memory and utilisation of the current epoch on ``device``."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.wait_s = 0.0
        self.samples = 0
        self.util: list[float] = []

    def epoch(self, loader: Iterable) -> Iterator:
        """Yield ``loader``'s batches (``(inputs, labels, ...)``), timing each wait (on CUDA, from the moment the
        GPU has finished the work queued before it) and counting labels."""
        self.wait_s, self.samples, self.util = 0.0, 0, []
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        last_util = 0.0
        batches = iter(loader)
        while True:
            if self.cuda:
                torch.cuda.synchronize(self.device)
            started = perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            now = perf_counter()
            self.wait_s += now - started
            self.samples += len(batch[1])
            if self.cuda and now - last_util >= UTIL_INTERVAL_S:
                last_util = now
                self._sample_util()
            yield batch

    def _sample_util(self) -> None:
        try:
            self.util.append(float(torch.cuda.utilization(self.device)))
        except Exception:  # noqa: BLE001 - no NVML (pynvml/amdsmi missing): no utilisation metric
            pass

    def metrics(self, train_seconds: float) -> dict:
        """The ``perf/`` metrics of the epoch just iterated, which took ``train_seconds`` of training time."""
        seconds = max(train_seconds, 1e-9)
        metrics = {"perf/samples_per_s": self.samples / seconds,
                   "perf/data_wait_frac": min(1.0, self.wait_s / seconds)}
        if self.cuda:
            metrics["perf/gpu_mem_max_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
            if self.util:
                metrics["perf/gpu_util"] = sum(self.util) / len(self.util)
        return metrics
