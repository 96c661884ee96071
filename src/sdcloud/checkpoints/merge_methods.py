"""Merge methods as pure functions over one tensor of each model (reference/checkpoints.md §3).

Inputs are float32 tensors of equal shape on the compute device; ``a`` is the primary model,
``b`` the secondary, ``c`` the tertiary (the common base for difference methods). No function
here knows about files, keys or blocks except DARE, whose random mask is seeded per key so a
merge is reproducible whatever the read order.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# Canonical name -> (needs a third model, A1111/supermerger display name)
METHODS: dict[str, tuple[bool, str]] = {
    "weighted_sum": (False, "Weighted sum"),
    "add_difference": (True, "Add difference"),
    "train_difference": (True, "Train difference"),
    "ties": (True, "TIES"),
    "dare": (False, "DARE"),
}


def weighted_sum(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """``(1-α)·A + α·B`` (as ``A + α·(B−A)``, one pass)."""
    return a.lerp_(b, alpha)


def add_difference(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, alpha: float) -> torch.Tensor:
    """``A + α·(B − C)``."""
    return a.add_(b.sub(c), alpha=alpha)


def train_difference(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, alpha: float) -> torch.Tensor:
    """supermerger's train difference: ``A + 1.8·α·(B−C)·|B−A| / (|B−A| + |B−C|)``.

    Where both distances are 0 the factor is 0; if B equals C the key keeps A.
    """
    import torch

    diff = b - c
    if not torch.any(diff):
        return a
    dist_a = (b - a).abs_()
    denom = diff.abs().add_(dist_a)
    scale = torch.where(denom > 0, dist_a / denom.clamp_min(torch.finfo(torch.float32).tiny), 0.0)
    return a.add_(diff.mul_(scale), alpha=1.8 * alpha)


def _trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``density`` fraction of entries with the largest magnitude, zero the rest."""
    import torch

    n = delta.numel()
    keep = max(1, int(round(density * n))) if n else 0
    if keep >= n:
        return delta
    flat = delta.abs().reshape(-1)
    threshold = torch.kthvalue(flat, n - keep + 1).values
    return torch.where(delta.abs() >= threshold, delta, 0.0)


def ties(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, alpha: float, density: float) -> torch.Tensor:
    """TIES-merging of A and B onto the base C (Yadav et al. 2023).

    Task vectors ``τ = model − C`` are trimmed to their top-``density`` magnitudes; the sign
    of each entry is elected by the **sum** of the trimmed task vectors (the TIES paper and
    mergekit's default, not meh's count vote); the entries agreeing with the elected sign are
    averaged (disjoint mean). Result ``C + α·τ_merged``.
    """
    import torch

    ta = _trim(a - c, density)
    tb = _trim(b - c, density)
    sign = torch.sign(ta + tb)
    agree_a = torch.sign(ta) == sign
    agree_b = torch.sign(tb) == sign
    agree_a &= ta != 0
    agree_b &= tb != 0
    total = torch.where(agree_a, ta, 0.0) + torch.where(agree_b, tb, 0.0)
    count = agree_a.to(torch.float32) + agree_b.to(torch.float32)
    merged = total / count.clamp_min(1.0)
    return c.add_(merged, alpha=alpha)


def dare_mask(shape: tuple[int, ...], drop_rate: float, seed: int, key: str,
              device: str | torch.device = "cpu") -> torch.Tensor:
    """Bernoulli keep-mask (keep probability ``1 − drop_rate``), seeded by ``seed`` and the key
    name so each tensor's mask is the same whatever order or device the merge runs in."""
    import torch

    gen = torch.Generator(device="cpu").manual_seed((seed * 1_000_003 + zlib.crc32(key.encode())) % 2**63)
    return (torch.rand(shape, generator=gen) >= drop_rate).to(device)


def dare(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None, alpha: float, drop_rate: float,
         seed: int, key: str) -> torch.Tensor:
    """DARE (Yu et al. 2023): drop entries of the task vector, rescale the rest by ``1/(1−p)``.

    Two models: the task vector is ``B − A`` and the result ``A + α·m⊙(B−A)/(1−p)`` (a
    weighted sum with random drop). Three models: ``A + α·m⊙(B−C)/(1−p)`` (add difference
    with random drop). ``m`` comes from :func:`dare_mask`.
    """
    delta = b - (a if c is None else c)
    mask = dare_mask(tuple(delta.shape), drop_rate, seed, key, delta.device)
    return a.add_(delta.mul_(mask), alpha=alpha / (1.0 - drop_rate))
