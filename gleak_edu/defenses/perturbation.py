"""Defenses on one shared gradient: DLG's Gaussian noise and pruning (Zhu et al. 2019, Section 5), and the Gaussian mechanism.

Two units of noise, two names: :func:`gaussian_noise` takes ``noise_std``, an
absolute standard deviation per entry; :func:`clip_and_noise` takes
``noise_multiplier``, relative to the clipping bound ``max_grad_norm`` C
(noise std = noise_multiplier * C, Opacus's meaning).
"""

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
    shared: Mapping[str, torch.Tensor], noise_std: float, *, seed: int | None = 0
) -> "OrderedDict[str, torch.Tensor]":
    """Add i.i.d. Gaussian noise N(0, noise_std^2) to every gradient entry (DLG's noise defense).

    Unit: ``noise_std`` is the *absolute* standard deviation per coordinate,
    in the gradient's own units; it is not scaled by the gradient norm or by a
    clipping bound (that is DP-SGD's noise multiplier, std = noise_multiplier * C:
    :func:`clip_and_noise`, notebook 05). This is the DLG paper's setting
    (Zhu et al., 2019, Section 5), which reports the variance noise_std^2
    (10^-4 .. 10^-1, i.e. noise_std 0.01 .. 0.32). The paper saw leakage up to
    variance about 10^-3; on the course's LeNet-Zhu and photo 0, iDLG is mostly
    lost already at noise_std 0.01 (notebook 01).

    Args:
        shared: name -> gradient tensor (float).
        noise_std: the noise's standard deviation, >= 0 (0 returns an exact copy).
        seed: seed of the noise (a private ``torch.Generator``); None draws from
            the global RNG.

    Returns:
        A new OrderedDict with the same names, shapes and dtypes.

    Raises:
        ValueError: if noise_std is negative or not finite, or shared is empty.
    """
    _check_tensors(shared)
    std = float(noise_std)
    if not math.isfinite(std) or std < 0:
        raise ValueError(f"noise_std (the absolute noise standard deviation) must be a finite number >= 0, got {std}")
    gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    out = OrderedDict()
    for name, g in shared.items():
        g = g.detach()
        if std == 0:
            out[name] = g.clone()
        else:
            out[name] = g + std * torch.randn(g.shape, generator=gen, dtype=g.dtype)
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
    shared: Mapping[str, torch.Tensor], noise_multiplier: float, max_grad_norm: float = 1.0, *, seed: int | None = 0
) -> "OrderedDict[str, torch.Tensor]":
    """The Gaussian mechanism on one shared gradient: clip its L2 norm (over all tensors) to C, add N(0, (sigma C)^2).

    C is ``max_grad_norm`` and sigma ``noise_multiplier``: the noise std per
    entry is ``noise_multiplier * max_grad_norm`` (DP-SGD's unit, Abadi et al.
    2016, for a batch of one). One release of this is (epsilon, delta)-DP with
    respect to the example (or the sentence) it was computed on, with epsilon
    from ``epsilon_for_steps(noise_multiplier, 1.0, 1, delta)`` (Opacus RDP, one
    step at sample rate 1, valid at every epsilon; the classical formula
    :func:`gleak_edu.defenses.gaussian_epsilon` holds only for epsilon < 1):
    adding or removing the
    example moves the clipped gradient by at most C (its sensitivity, the
    add/remove convention Opacus also uses).

    Args:
        shared: name -> gradient tensor (one example's or one sentence's).
        noise_multiplier: sigma, >= 0, relative to C (0: clipping only).
        max_grad_norm: the clipping bound C on the whole gradient's L2 norm (> 0).
        seed: seed of the noise (None: the global RNG).

    Returns:
        A new OrderedDict with the same names, shapes and dtypes.

    Raises:
        ValueError: for noise_multiplier < 0, max_grad_norm <= 0, non-finite values, or an empty ``shared``.
    """
    _check_tensors(shared)
    sigma, bound = float(noise_multiplier), float(max_grad_norm)
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"noise_multiplier must be a finite number >= 0 (noise std = noise_multiplier * C), got {sigma}")
    if not math.isfinite(bound) or bound <= 0:
        raise ValueError(f"max_grad_norm (the clipping bound C) must be a finite number > 0, got {bound}")
    norm = float(torch.sqrt(sum(g.detach().double().pow(2).sum() for g in shared.values())))
    factor = min(1.0, bound / (norm + 1e-12))
    gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    out = OrderedDict()
    for name, g in shared.items():
        g = g.detach() * factor
        out[name] = g + sigma * bound * torch.randn(g.shape, generator=gen, dtype=g.dtype) if sigma > 0 else g.clone()
    return out
