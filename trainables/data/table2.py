"""The paper's Table 2: per-group counts of the four real benchmarks.

Groups are indexed ``g = y * n_spurious + s``. The embedded benchmarks draw their group proportions
from these counts and ``groupsweep data check`` compares real datasets against them.
"""

from __future__ import annotations

import numpy as np

# name -> (class names, attribute names, {split: counts per group})
TABLE2 = {
    "waterbirds": (
        ("landbird", "waterbird"), ("land", "water"),
        {"train": (3498, 184, 56, 1057), "val": (467, 466, 133, 133), "test": (2225, 2225, 642, 642)},
    ),
    "celeba": (
        ("non-blond", "blond"), ("female", "male"),
        {"train": (71629, 66874, 22880, 1387), "val": (8535, 8276, 2874, 182), "test": (9767, 7535, 2480, 180)},
    ),
    "civilcomments": (
        ("neutral", "toxic"), ("no identity", "identity"),
        {"train": (148186, 90337, 12731, 17784), "val": (25159, 14966, 2111, 2944),
         "test": (74780, 43778, 6455, 8769)},
    ),
    "multinli": (
        ("contradiction", "entailment", "neither"), ("no negation", "negation"),
        {"train": (57498, 11158, 67376, 1521, 66630, 1992), "val": (22814, 4634, 26949, 613, 26655, 797),
         "test": (34597, 6655, 40496, 886, 39930, 1148)},
    ),
}


def table2_counts(name: str, split: str) -> np.ndarray:
    """Per-group counts of the real benchmark ``name`` in ``split`` as printed in Table 2."""
    return np.asarray(TABLE2[name][2][split], dtype=np.int64)


def scaled_counts(name: str, split: str, total: int) -> np.ndarray:
    """Group counts summing to ``total`` in the proportions of Table 2 (largest-remainder rounding).

    Every group keeps at least one example, so a small ``total`` never drops a group.
    """
    counts = table2_counts(name, split).astype(float)
    if total < len(counts):
        raise ValueError(f"total {total} is smaller than the number of groups {len(counts)}")
    exact = counts / counts.sum() * total
    scaled = np.maximum(np.floor(exact).astype(np.int64), 1)
    remainder = exact - np.floor(exact)
    while scaled.sum() < total:
        g = int(np.argmax(np.where(scaled < exact + 1, remainder, -1)))
        scaled[g] += 1
        remainder[g] = -1
    while scaled.sum() > total:
        g = int(np.argmax(np.where(scaled > 1, scaled - exact, -np.inf)))
        scaled[g] -= 1
    return scaled
