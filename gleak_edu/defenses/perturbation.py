"""Gaussian noise and gradient pruning on a shared gradient (DLG, Section 5)."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Mapping

import torch

__all__ = ["clip_and_noise", "gaussian_noise", "prune_gradients"]


def _check_tensors(shared: Mapping[str, torch.Tensor]) -> None:
    if not isinstance(shared, Mapping) or not shared:
        raise ValueError("shared must be a non-empty mapping parameter name -> gradient tensor")


def gaussian_noise(
    shared: Mapping[str, torch.Tensor], sigma: float, *, seed: int | None = 0
) -> "OrderedDict[str, torch.Tensor]":
    """Add i.i.d. Gaussian noise N(0, sigma^2) to every gradient entry.

    Scaling: ``sigma`` is the absolute standard deviation per coordinate, in the
    gradient's own units; it is not scaled by the gradient norm or by a clipping
    bound (that is DP-SGD's convention, notebook 05). This is the DLG paper's
    setting, which reports the variance sigma^2 (10^-4 .. 10^-1); DLG fails from
    variance about 10^-2 (sigma 0.1) on LeNet-Zhu.

    Args:
        shared: name -> gradient tensor (float).
        sigma: noise standard deviation, >= 0 (0 returns an exact copy).
        seed: seed of the noise (a private ``torch.Generator``); None draws from
            the global RNG.

    Returns:
        A new OrderedDict with the same names and shapes.

    Raises:
        ValueError: if sigma is negative or not finite, or shared is empty.
    """
    _check_tensors(shared)
    sigma = float(sigma)
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"noise sigma must be a finite number >= 0, got {sigma}")
    gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    out = OrderedDict()
    for name, g in shared.items():
        g = g.detach()
        if sigma == 0:
            out[name] = g.clone()
        else:
            out[name] = g + sigma * torch.randn(g.shape, generator=gen, dtype=g.dtype)
    return out


def prune_gradients(
    shared: Mapping[str, torch.Tensor], fraction: float
) -> "OrderedDict[str, torch.Tensor]":
    """Gradient pruning: in each layer, zero the ``fraction`` of entries smallest in magnitude.

    The remaining ``1 - fraction`` largest-magnitude entries of each tensor are
    kept unchanged (DLG's "gradient compression"; the paper reports that DLG
    fails once more than about 20 % of the entries are pruned).

    Args:
        shared: name -> gradient tensor.
        fraction: share of entries to zero per tensor, in [0, 1).

    Returns:
        A new OrderedDict with the same names and shapes.

    Raises:
        ValueError: if fraction is outside [0, 1).
    """
    _check_tensors(shared)
    fraction = float(fraction)
    if not math.isfinite(fraction) or not 0.0 <= fraction < 1.0:
        raise ValueError(f"pruning fraction must lie in [0, 1), got {fraction}")
    out = OrderedDict()
    for name, g in shared.items():
        g = g.detach()
        n_prune = int(math.floor(fraction * g.numel()))
        if n_prune == 0:
            out[name] = g.clone()
            continue
        flat = g.reshape(-1)
        idx = flat.abs().argsort(stable=True)[:n_prune]
        pruned = flat.clone()
        pruned[idx] = 0
        out[name] = pruned.view_as(g)
    return out


def clip_and_noise(
    shared: Mapping[str, torch.Tensor], sigma: float, clip: float = 1.0, *, seed: int | None = 0
) -> "OrderedDict[str, torch.Tensor]":
    """The Gaussian mechanism on one shared gradient: clip its L2 norm (over all tensors) to C, add N(0, (sigma C)^2).

    One release of this is (epsilon, delta)-DP with respect to the example
    (or the sentence) it was computed on, with epsilon from
    :func:`gleak_edu.defenses.gaussian_epsilon`: adding or removing the
    example moves the clipped gradient by at most C (its sensitivity, the
    add/remove convention Opacus also uses).

    Args:
        shared: name -> gradient tensor (one example's or one sentence's).
        sigma: noise multiplier (>= 0; relative to C).
        clip: the clipping bound C (> 0).
        seed: seed of the noise (None: the global RNG).

    Returns:
        A new OrderedDict with the same names and shapes.

    Raises:
        ValueError: for sigma < 0, C <= 0 or non-finite values.
    """
    _check_tensors(shared)
    sigma, clip = float(sigma), float(clip)
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"the noise multiplier sigma must be a finite number >= 0, got {sigma}")
    if not math.isfinite(clip) or clip <= 0:
        raise ValueError(f"the clipping bound C must be a finite number > 0, got {clip}")
    norm = float(torch.sqrt(sum(g.detach().double().pow(2).sum() for g in shared.values())))
    factor = min(1.0, clip / (norm + 1e-12))
    gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    out = OrderedDict()
    for name, g in shared.items():
        g = g.detach() * factor
        out[name] = g + sigma * clip * torch.randn(g.shape, generator=gen, dtype=g.dtype) if sigma > 0 else g.clone()
    return out
