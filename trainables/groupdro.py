"""GroupDRO (Sagawa et al., ICLR 2020, "Distributionally Robust Neural Networks"): the online algorithm,
Algorithm 1, on minibatches as the authors' ``loss.py`` computes it.

Groups are ``g = y * n_spurious + s``. Each training step:

1. ``loss_g``: the mean per-example loss of group g's examples in the batch;
2. the group weights q (uniform at the start of training) take an exponentiated-gradient step,
   ``q_g <- q_g * exp(eta * (loss_g + C / sqrt(n_g)))``, then are normalised to sum to 1; ``n_g`` is
   group g's training count and ``C`` the generalisation adjustment (0 by default: no adjustment);
3. the loss to minimise is ``sum_g q_g * loss_g`` with the weights just updated.

A group absent from the batch is not updated (the paper's Algorithm 1 updates only the groups it draws):
its factor is exp(0) = 1, so it changes only through the normalisation. This is the authors' code for
C = 0 (an absent group has loss 0 there); for C > 0 their code also adds C / sqrt(n_g) to absent groups,
which this module does not. Their robust loss also adds the constant ``sum_g q_g C / sqrt(n_g)``
(an in-place ``+=`` on the group losses); it has no gradient, so this module leaves it out.

With several processes (data parallel), the group sums and counts are summed over processes before the
update, so every process holds the same q, and each process's loss is scaled so that the processes'
averaged gradients are the gradient of the whole batch's loss.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch


class GroupDRO:
    """The group weights q of one run and the GroupDRO loss (see the module docstring).

    ``train_group_counts``: n_g per group (length = the number of groups); ``eta``: the step size η;
    ``adjustment``: C. ``q`` is a float32 tensor on ``device``, part of the training state
    (``state_dict`` / ``load_state_dict``).
    """

    def __init__(self, train_group_counts, eta: float, adjustment: float = 0.0, device=None):
        counts = torch.as_tensor(np.asarray(train_group_counts, dtype=np.float64), dtype=torch.float32, device=device)
        self.eta = float(eta)
        # A group without training examples never appears in a batch, so its (undefined) term is never used.
        self.adjustment = float(adjustment) / torch.sqrt(counts.clamp(min=1))
        self.q = torch.full_like(counts, 1.0 / len(counts))

    @property
    def n_groups(self) -> int:
        """The number of groups."""
        return len(self.q)

    def loss(self, losses: torch.Tensor, groups: torch.Tensor, reduce: Callable | None = None,
             processes: int = 1) -> torch.Tensor:
        """Update q with one batch and return its GroupDRO loss ``sum_g q_g * loss_g``.

        ``losses``: per-example losses (float, with their autograd graph); ``groups``: their group indices.
        ``reduce`` sums a tensor over the ``processes`` data-parallel processes (None: one process, the
        batch is the whole batch).
        """
        one_hot = (groups.unsqueeze(0) == torch.arange(self.n_groups, device=groups.device).unsqueeze(1))
        one_hot = one_hot.to(losses.dtype)
        sums = one_hot @ losses
        stats = torch.stack([sums.detach(), one_hot.sum(dim=1)])
        if reduce is not None:
            stats = reduce(stats)
        total_sums, counts = stats
        denominator = counts.clamp(min=1)
        present = counts > 0
        exponent = torch.where(present, self.eta * (total_sums / denominator + self.adjustment),
                               torch.zeros_like(counts))
        q = self.q * torch.exp(exponent)
        self.q = q / q.sum()
        return processes * (self.q * sums / denominator).sum()

    def state_dict(self) -> dict:
        """The resumable state: a copy of q."""
        return {"q": self.q.detach().clone()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a ``state_dict``: q as saved, on this instance's device."""
        self.q = state["q"].to(device=self.q.device, dtype=self.q.dtype).clone()
