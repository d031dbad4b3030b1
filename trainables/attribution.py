"""TRAK data attribution (Park et al. 2023), in the form D3M uses (Jain et al. 2024, Section 4).

For a model with parameters θ and an example (x, y), the *margin* is
``f(x, y) = logit_y − logsumexp_{c≠y} logit_c`` (= log p_y / (1 − p_y)). With ``φ(x) = Pᵀ ∇θ f(x, y)``, the
margin gradient projected by a seeded Gaussian matrix P (p × k, entries N(0, 1/k), so inner products are
preserved in expectation), the score of training example i for a target example z is

    τ(z)_i = φ(z)ᵀ (Φᵀ Φ + λ I)⁻¹ φ(x_i) · Q_i,     Q_i = 1 − p(y_i | x_i),

with Φ the (n × k) matrix of the training φ's. λ is given relative to the kernel's scale:
``λ = ridge · trace(ΦᵀΦ) / k``. Over T models (independent runs or checkpoints) the paper averages the
kernel term and Q *separately*: ``τ = mean_t[Φ_t K_t⁻¹ φ_t(z)] ⊙ mean_t[Q_t]``; every model counts (the
authors' public code scored only the last checkpoint). A positive τ(z)_i says training on example i raises
the margin of z.

Per-example gradients use ``torch.func`` (``functional_call`` + ``vmap`` + ``grad``) on the model in eval
mode. ``last_layer=True`` differentiates only the final linear layer (features computed once, without
gradients): cheap, and exact when the backbone is frozen (last-layer training). Otherwise the gradient is
taken w.r.t. every parameter that requires a gradient. Non-finite gradients or probabilities raise a
one-line ``GroupsweepError``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from trainables.errors import GroupsweepError, is_integer, is_real

# Rows of the projection matrix generated (and multiplied) at once: blocks of about 2^22 entries.
PROJECTION_BLOCK_ELEMENTS = 1 << 22
# Projection matrices up to this many entries (1 GiB of float32) are generated once and kept.
PROJECTION_CACHE_ELEMENTS = 1 << 28


def margin(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Correct-class margin ``logit_y − logsumexp_{c≠y} logit_c`` of one example (``logits`` of shape (C,)).

    Written without indexing by ``label`` so that ``torch.func.vmap`` can batch it.
    """
    is_label = torch.arange(logits.shape[-1], device=logits.device) == label
    return (logits * is_label).sum() - torch.logsumexp(logits.masked_fill(is_label, float("-inf")), dim=-1)


class GaussianProjector:
    """The map g ↦ Pᵀ g for a seeded Gaussian P of shape (``dim``, ``proj_dim``), entries N(0, 1/proj_dim).

    P is generated in blocks of rows, block b on ``device`` by a ``torch.Generator`` of that device seeded
    with a function of (``seed``, b), as TRAK's own ``BasicProjector`` does: P never has to exist whole, and
    drawing it on the host for every batch would not scale (for a ResNet-18 and ``proj_dim`` 2048, P has
    24 G entries: 144 s per batch on one thread of the 2-core box at 1.7e8 normals/s, plus a 96 GB copy to
    the GPU). The same seed gives the same P on every device of one type (CPU and CUDA generators draw
    different numbers). P is kept (on ``device``) when it has at most ``PROJECTION_CACHE_ELEMENTS`` entries
    and regenerated for every call otherwise.
    """

    def __init__(self, dim: int, proj_dim: int, seed: int, device: torch.device | str = "cpu"):
        if not is_integer(proj_dim, 1):
            raise GroupsweepError(f"projection dimension {proj_dim!r} is invalid; allowed: an integer >= 1")
        self.dim, self.proj_dim, self.seed = int(dim), proj_dim, int(seed)
        self.device = torch.device(device)
        self.rows = max(1, PROJECTION_BLOCK_ELEMENTS // proj_dim)
        self._cache = None
        if self.dim * proj_dim <= PROJECTION_CACHE_ELEMENTS:
            self._cache = [self._block(start) for start in range(0, self.dim, self.rows)]

    def _block(self, start: int) -> torch.Tensor:
        index = start // self.rows
        generator = torch.Generator(device=self.device).manual_seed((self.seed * 1_000_003 + index) % (2**63))
        rows = min(self.rows, self.dim - start)
        block = torch.randn(rows, self.proj_dim, generator=generator, dtype=torch.float32, device=self.device)
        return block / math.sqrt(self.proj_dim)

    def __call__(self, gradients: torch.Tensor) -> torch.Tensor:
        """Project a (B, dim) batch of flat gradients to (B, proj_dim)."""
        if gradients.shape[-1] != self.dim:
            raise GroupsweepError(f"projector expects gradients of dimension {self.dim}, got {gradients.shape[-1]}")
        out = torch.zeros(gradients.shape[0], self.proj_dim, device=gradients.device, dtype=gradients.dtype)
        for number, start in enumerate(range(0, self.dim, self.rows)):
            block = self._cache[number] if self._cache is not None else self._block(start)
            out += gradients[:, start:start + block.shape[0]] @ block.to(gradients.dtype)
        return out


@dataclass
class GradientFeatures:
    """One model's view of one split: projected margin gradients and what the scores need besides.

    ``phi``: (N, k) float64 projected gradients (k = number of parameters without projection);
    ``q``: (N,) ``1 − p(y | x)``; ``loss``: (N,) cross-entropy of every example.
    """

    phi: torch.Tensor
    q: torch.Tensor
    loss: torch.Tensor


def _single(inputs):
    """One example of a vmapped batch as a batch of one, as the model takes it.

    Token dicts get their 2-D attention mask turned into the additive 4-D mask transformers builds
    itself: its own mask construction branches on the mask's values (``padding_mask.all()``), which
    ``vmap`` cannot trace, while a 4-D mask is used as given.
    """
    if not isinstance(inputs, dict):
        return inputs.unsqueeze(0)
    batch = {key: value.unsqueeze(0) for key, value in inputs.items()}
    mask = batch.get("attention_mask")
    if mask is not None and mask.dim() == 2:
        blocked = (1.0 - mask.to(torch.float32)) * torch.finfo(torch.float32).min
        batch["attention_mask"] = blocked[:, None, None, :]
    return batch


def margin_gradients(module: nn.Module, params: dict, inputs, labels: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """Per-example gradients of the margin w.r.t. ``params`` (a subset of ``module``'s named parameters).

    ``inputs``: a (B, ...) tensor or a dict of (B, ...) tensors; ``labels``: (B,) classes. Returns
    ``({name: (B, *shape)}, logits (B, C))``. ``module`` should be in eval mode (no dropout, fixed
    batch-norm statistics), as TRAK differentiates the trained model's output function.
    """

    def example_margin(p, x, y):
        logits = functional_call(module, p, (_single(x),))[0]
        return margin(logits, y), logits.detach()

    gradients, logits = vmap(grad(example_margin, has_aux=True), in_dims=(None, 0, 0))(params, inputs, labels)
    return gradients, logits


def gradient_parameters(model: nn.Module, last_layer: bool) -> tuple[nn.Module, dict]:
    """The module to differentiate and its parameters: the head's (``last_layer``) or every trainable one."""
    module = model.head if last_layer else model
    params = {name: p.detach() for name, p in module.named_parameters() if p.requires_grad or last_layer}
    if not params:
        raise GroupsweepError("model has no trainable parameter to attribute through; use last_layer")
    return module, params


def _use_vmappable_attention(model: nn.Module) -> None:
    """Text backbones: eager attention, which ``vmap`` batches natively (no backward fallback per example)."""
    backbone = getattr(model, "backbone", None)
    if getattr(model, "modality", None) == "text" and hasattr(backbone, "set_attn_implementation"):
        backbone.set_attn_implementation("eager")


def _to(inputs, device):
    if isinstance(inputs, dict):
        return {key: value.to(device) for key, value in inputs.items()}
    return inputs.to(device)


def featurize(model: nn.Module, batches: Iterable, *, last_layer: bool = False,
              projector: GaussianProjector | None = None, device: torch.device | str = "cpu") -> GradientFeatures:
    """Projected margin gradients, ``1 − p(y | x)`` and losses of every example of ``batches``.

    ``batches`` yields ``(inputs, labels)`` ready for the model (images already transformed). With
    ``last_layer`` the model must have ``features(inputs)`` and ``head`` (a ``GroupModel``), and only the
    head is differentiated. ``projector=None`` keeps the raw gradients (k = number of parameters; small
    models only). The model is put in eval mode. Raises ``GroupsweepError`` when a gradient or probability
    is not finite (a diverged model), so that no selection is ever made from NaN scores.
    """
    model = model.to(device).eval()
    if not last_layer:
        _use_vmappable_attention(model)
    module, params = gradient_parameters(model, last_layer)
    names = list(params)
    phis, qs, losses = [], [], []
    for inputs, labels in batches:
        inputs, labels = _to(inputs, device), labels.to(device)
        if last_layer:
            with torch.no_grad():
                inputs = model.features(inputs)
        gradients, logits = margin_gradients(module, params, inputs, labels)
        flat = torch.cat([gradients[name].reshape(len(labels), -1) for name in names], dim=1)
        phi = projector(flat) if projector is not None else flat
        log_probs = F.log_softmax(logits.double(), dim=1)
        picked = log_probs.gather(1, labels[:, None])[:, 0]
        phis.append(phi.detach().double().cpu())
        qs.append((1.0 - picked.exp()).double().cpu())
        losses.append((-picked).double().cpu())
    features = GradientFeatures(phi=torch.cat(phis), q=torch.cat(qs), loss=torch.cat(losses))
    bad = int((~torch.isfinite(features.phi).all(dim=1) | ~torch.isfinite(features.q)).sum())
    if bad:
        raise GroupsweepError(f"attribution: {bad} of {len(features.q)} examples have non-finite margin gradients "
                              f"or probabilities (the model has diverged); nothing can be selected from them")
    return features


def gradient_dimension(model: nn.Module, last_layer: bool) -> int:
    """Number of parameters that ``featurize`` differentiates (the projector's input dimension)."""
    return sum(p.numel() for p in gradient_parameters(model, last_layer)[1].values())


@dataclass
class TrakScores:
    """TRAK scores of n training examples for m target examples, kept in factored form.

    ``kernels[t]`` = Φ_t (Φ_tᵀΦ_t + λ_t I)⁻¹ (n × k), ``targets[t]`` = the targets' φ (m × k), ``q`` = Q
    averaged over models (n,). ``τ(z_j)_i = q_i · mean_t kernels[t][i] · targets[t][j]``. The full n × m
    matrix is only built on request (``matrix``); ``combine`` and ``principal_projection`` never build it.
    """

    kernels: list
    targets: list
    q: torch.Tensor
    _gram: torch.Tensor | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def n_train(self) -> int:
        return len(self.q)

    @property
    def n_targets(self) -> int:
        return self.targets[0].shape[0]

    def matrix(self) -> np.ndarray:
        """The (n_train, n_targets) matrix of scores τ(z_j)_i."""
        return self.combine(np.eye(self.n_targets))

    def combine(self, weights) -> np.ndarray:
        """``Σ_j τ(z_j)_i · weights[j, r]``: (n_train, r) scores of r weighted sets of targets (e.g. group means)."""
        weights = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if weights.ndim != 2 or weights.shape[0] != self.n_targets:
            raise GroupsweepError(f"target weights must have shape ({self.n_targets}, r), got {tuple(weights.shape)}")
        total = sum(kernel @ (target.T @ weights) for kernel, target in zip(self.kernels, self.targets))
        return (self.q[:, None] * total / len(self.kernels)).numpy()

    def principal_projection(self, rows) -> np.ndarray:
        """Projection of the attribution vectors τ(z_j) ∈ R^n of targets ``rows`` on their top principal component.

        The vectors are centred over ``rows``; the result (one value per row) is the coordinate along the
        first principal direction (its sign is arbitrary). Computed from the (len(rows) × len(rows)) Gram
        matrix ``Ū (VᵀV) Ūᵀ`` of the factored form, never from the n-dimensional vectors.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) < 2:
            return np.zeros(len(rows))
        u = torch.cat([target[rows] for target in self.targets], dim=1) / len(self.targets)
        u = u - u.mean(dim=0, keepdim=True)
        gram = u @ self._kernel_gram() @ u.T
        values, vectors = torch.linalg.eigh((gram + gram.T) / 2)
        return (vectors[:, -1] * values[-1].clamp(min=0).sqrt()).numpy()

    def _kernel_gram(self) -> torch.Tensor:
        """``VᵀV`` for ``V = diag(q) [K_1 … K_T]``, a (T·k × T·k) matrix, built block by block and kept.

        Block (s, t) is ``K_sᵀ diag(q²) K_t``, so no n × T·k matrix is ever built (for CelebA with T = 10
        and k = 2048 that matrix alone is 27 GB).
        """
        if self._gram is None:
            k = self.kernels[0].shape[1]
            gram = torch.empty(len(self.kernels) * k, len(self.kernels) * k, dtype=self.kernels[0].dtype)
            for t, kernel in enumerate(self.kernels):
                weighted = kernel * (self.q ** 2)[:, None]  # one n × k temporary at a time
                for s, other in enumerate(self.kernels):
                    gram[s * k:(s + 1) * k, t * k:(t + 1) * k] = other.T @ weighted
            self._gram = gram
        return self._gram


def trak(train: Sequence[GradientFeatures], targets: Sequence[GradientFeatures], ridge: float) -> TrakScores:
    """TRAK scores from per-model features of the training split and of the targets (same models, same order).

    ``ridge``: λ relative to the kernel's scale (λ = ridge · trace(ΦᵀΦ) / k); 0 uses the plain inverse and
    needs ΦᵀΦ invertible (n ≥ k). Kernel terms and Q are averaged over the models separately: TRAK's own
    ensemble estimator (Park et al. 2023; the ``traker`` package that the D3M authors ran computes it so). The
    D3M paper's step (e), "repeat steps (a)-(d) for T trials, and average the results", read literally would
    average the products (mean_t K_t Q_t instead of mean_t K_t · mean_t Q_t): the two differ only for T > 1.
    """
    if not train or len(train) != len(targets):
        raise GroupsweepError(f"trak needs the same number (>= 1) of train and target features, got "
                              f"{len(train)} and {len(targets)}")
    if not is_real(ridge, 0):
        raise GroupsweepError(f"ridge {ridge!r} is invalid; allowed: a finite number >= 0")
    kernels = []
    for features in train:
        phi = features.phi
        gram = phi.T @ phi
        if ridge == 0 and int(torch.linalg.matrix_rank(gram)) < gram.shape[0]:
            raise GroupsweepError(f"TRAK kernel ΦᵀΦ ({gram.shape[0]}x{gram.shape[0]}) from {phi.shape[0]} examples "
                                  f"is singular; use ridge > 0 or a smaller projection")
        scale = ridge * torch.trace(gram) / gram.shape[0]
        kernel = torch.linalg.solve(gram + scale * torch.eye(gram.shape[0], dtype=gram.dtype), phi.T).T
        kernels.append(kernel)
    q = torch.stack([features.q for features in train]).mean(dim=0)
    return TrakScores(kernels=kernels, targets=[features.phi for features in targets], q=q)
