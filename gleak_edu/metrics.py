"""Reconstruction and label metrics.

Images are float ``[B, C, H, W]`` (or ``[C, H, W]``) with pixels in [0, 1]; both
arguments are clamped to [0, 1] first. Per-image values are returned as float64
tensors ``[B]``; average them yourself (``.mean()``) so that the per-image
spread stays visible.

- PSNR: ``10 log10(1 / MSE)`` in dB per image (peak 1), capped at 100 dB for
  identical images.
- SSIM: scikit-image's ``structural_similarity`` (Wang et al. 2004; 7x7 uniform
  window, or the largest odd window that fits small images; data range 1;
  colour channels averaged).
- Attack success (one definition for the whole course): a reconstruction
  *succeeds* on an image when its SSIM to the private image is at least
  :data:`SUCCESS_SSIM` = 0.6 (:func:`attack_success`). Below about 0.3 a
  reconstruction shows nothing of the image; between 0.3 and 0.6 shapes can
  show through without the image being reliably recognisable (see
  ``docs/glossary.md`` for pictures of each band).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["SUCCESS_SSIM", "attack_success", "Rate", "rate_brief", "success_rate", "mse", "psnr", "ssim", "label_accuracy", "match_order", "reid_ranks", "rank1_accuracy", "PSNR_CAP_DB"]

PSNR_CAP_DB = 100.0

#: The course's one definition of attack success: SSIM to the private image >= this, per image.
SUCCESS_SSIM = 0.6


def _pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(x).detach().to(torch.float64)
    y = torch.as_tensor(y).detach().to(torch.float64)
    if x.ndim == 3:
        x = x[None]
    if y.ndim == 3:
        y = y[None]
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(
            f"images must both be [B, C, H, W] of the same shape; got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    return x.clamp(0, 1), y.clamp(0, 1)


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image (pixels in [0, 1]), float64 ``[B]``."""
    x, y = _pair(x, y)
    return ((x - y) ** 2).flatten(1).mean(1)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB (peak 1), float64 ``[B]``, at most 100 dB."""
    m = mse(x, y).clamp_min(10 ** (-PSNR_CAP_DB / 10))
    return 10.0 * torch.log10(1.0 / m)


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Structural similarity per image (scikit-image), float64 ``[B]`` in [-1, 1]."""
    from skimage.metrics import structural_similarity

    x, y = _pair(x, y)
    side = min(x.shape[-2:])
    win = min(7, side if side % 2 == 1 else side - 1)
    out = []
    for a, b in zip(x.numpy(), y.numpy()):
        out.append(structural_similarity(a, b, data_range=1.0, channel_axis=0, win_size=win))
    return torch.tensor(out, dtype=torch.float64)


def attack_success(reconstruction: torch.Tensor, truth: torch.Tensor, threshold: float = SUCCESS_SSIM) -> torch.Tensor:
    """Whether each reconstruction counts as a successful attack: SSIM >= ``threshold`` (the course's 0.6).

    Args:
        reconstruction, truth: float ``[B, C, H, W]`` (or ``[C, H, W]``), pixels in [0, 1], same shape
            and in matching order (see :func:`match_order` for a batch).
        threshold: the SSIM an image must reach; in (0, 1].

    Returns:
        bool ``[B]``.

    Raises:
        ValueError: for a threshold outside (0, 1] or mismatched shapes.
    """
    if not 0 < float(threshold) <= 1:
        raise ValueError(f"the success threshold is an SSIM in (0, 1], got {threshold}")
    return ssim(reconstruction, truth) >= float(threshold)


@dataclass(frozen=True)
class Rate:
    """A success rate with its 95 % (or other) confidence interval: ``successes`` of ``n``.

    Attributes:
        successes: how many trials succeeded (0..n).
        n: how many trials (>= 0; with 0 the rate is undefined: ``rate`` is nan, the interval [0, 1]).
        rate: successes / n, in [0, 1] (nan for n = 0).
        low, high: the interval's ends, in [0, 1].
        confidence: the interval's level (0.95).
        method: how the interval was computed ("wilson": scipy's Wilson score interval).
    """

    successes: int
    n: int
    rate: float
    low: float
    high: float
    confidence: float = 0.95
    method: str = "wilson"

    def __str__(self) -> str:
        if self.n == 0:
            return "no trials"
        return (f"{self.successes}/{self.n} = {100 * self.rate:.0f} % "
                f"({100 * self.confidence:.0f} % CI {100 * self.low:.0f}-{100 * self.high:.0f} %)")

    def row_fields(self) -> dict:
        """The fields a results row carries: ``success_rate``, ``successes``, ``n``, ``success_low``, ``success_high``."""
        return {"success_rate": self.rate, "successes": self.successes, "n": self.n,
                "success_low": self.low, "success_high": self.high}

    def as_dict(self) -> dict:
        """JSON-ready: successes, n, rate, low, high, confidence, method (rate null for n = 0)."""
        return {"successes": self.successes, "n": self.n, "rate": None if self.n == 0 else self.rate,
                "low": self.low, "high": self.high, "confidence": self.confidence, "method": self.method}


def rate_brief(row: dict) -> str:
    """A results row's rate in a table cell: ``"2/3 [21-94]"`` (successes/n, the interval's ends in %)."""
    return f"{row['successes']}/{row['n']} [{100 * row['success_low']:.0f}-{100 * row['success_high']:.0f}]"


def success_rate(outcomes=None, *, successes: int | None = None, n: int | None = None,
                 confidence: float = 0.95, method: str = "wilson") -> Rate:
    """A success rate with its confidence interval, from scipy (``binomtest(...).proportion_ci``).

    Give either ``outcomes`` (an iterable or tensor of bools, one per trial; None entries, e.g. an
    attack that could not run, count as trials that failed) or ``successes`` and ``n``.

    Args:
        outcomes: one bool per (image, seed) trial.
        successes, n: the counts, whole numbers with 0 <= successes <= n.
        confidence: the interval's level, in (0, 1).
        method: "wilson" (default; good at small n and near 0 or 1) or "exact" (Clopper-Pearson).

    Returns:
        :class:`Rate`; ``str(rate)`` reads "4/50 = 8 % (95 % CI 3-19 %)".

    Raises:
        ValueError: for both or neither of ``outcomes`` and the counts, counts that are not whole
            numbers with 0 <= successes <= n, a confidence outside (0, 1), or an unknown method.
    """
    from scipy.stats import binomtest

    if (outcomes is None) == (successes is None and n is None):
        raise ValueError("give either outcomes (one bool per trial) or successes= and n=")
    if outcomes is not None:
        if isinstance(outcomes, torch.Tensor):
            outcomes = outcomes.reshape(-1).tolist()
        flags = [bool(o) if o is not None else False for o in outcomes]
        successes, n = sum(flags), len(flags)
    for name, v in (("successes", successes), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be a whole number >= 0, got {v!r}")
    successes, n = int(successes), int(n)
    if successes > n:
        raise ValueError(f"successes ({successes}) cannot exceed the number of trials n ({n})")
    if not 0 < float(confidence) < 1:
        raise ValueError(f"confidence must lie in (0, 1), e.g. 0.95; got {confidence}")
    if method not in ("wilson", "exact"):
        raise ValueError(f"method must be 'wilson' or 'exact' (Clopper-Pearson), got {method!r}")
    if n == 0:
        return Rate(0, 0, float("nan"), 0.0, 1.0, float(confidence), method)
    ci = binomtest(successes, n).proportion_ci(confidence_level=float(confidence), method=method)
    return Rate(successes, n, successes / n, float(ci.low), float(ci.high), float(confidence), method)


def label_accuracy(predicted, true) -> float:
    """Fraction of true labels recovered, order-invariant (multiset overlap / batch size)."""
    p = Counter(int(v) for v in torch.as_tensor(predicted).flatten())
    t = Counter(int(v) for v in torch.as_tensor(true).flatten())
    n = sum(t.values())
    if n == 0:
        raise ValueError("no true labels given")
    return sum((p & t).values()) / n


def match_order(reconstruction: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Permutation ``perm`` so that ``reconstruction[perm][i]`` best matches ``truth[i]``.

    Attacks on a batch recover the images in any order; this pairs them by
    minimum total MSE (Hungarian algorithm, scipy). Returns int64 ``[B]``.
    """
    from scipy.optimize import linear_sum_assignment

    r, t = _pair(reconstruction, truth)
    cost = ((t.flatten(1)[:, None, :] - r.flatten(1)[None, :, :]) ** 2).mean(-1).numpy()
    _, cols = linear_sum_assignment(cost)
    return torch.as_tensor(np.asarray(cols), dtype=torch.int64)


def reid_ranks(
    reconstructions: torch.Tensor,
    gallery: torch.Tensor,
    true_indices,
    similarity: str = "ssim",
) -> torch.Tensor:
    """Re-identification: the rank of each reconstruction's true identity in a gallery.

    Every reconstruction is compared with every gallery image; the gallery is
    sorted from most to least similar, and the rank of the true image is
    returned (1 = the true face is the closest match). This measures whether the
    reconstruction singles out the person *among the gallery's images*, by pixel
    similarity; GRNN's paper used a face recognition network's embeddings
    instead, which also matches other photos of the same person.

    Args:
        reconstructions: ``[B, C, H, W]`` in [0, 1].
        gallery: ``[N, C, H, W]`` in [0, 1], containing the true images.
        true_indices: ``[B]`` gallery index of each reconstruction's true image.
        similarity: ``"ssim"`` (scikit-image) or ``"mse"`` (negative MSE).

    Returns:
        int64 ``[B]`` ranks in 1..N.

    Raises:
        ValueError: for mismatched image shapes, an index outside the gallery,
            or an unknown similarity.
    """
    rec = torch.as_tensor(reconstructions).detach().float()
    gal = torch.as_tensor(gallery).detach().float()
    idx = torch.as_tensor(true_indices, dtype=torch.int64).reshape(-1)
    if rec.ndim != 4 or gal.ndim != 4 or rec.shape[1:] != gal.shape[1:]:
        raise ValueError(f"reconstructions {tuple(rec.shape)} and gallery {tuple(gal.shape)} must be [B, C, H, W] images of one shape")
    if idx.numel() != rec.shape[0] or int(idx.min()) < 0 or int(idx.max()) >= gal.shape[0]:
        raise ValueError(f"true_indices must give one gallery index in 0..{gal.shape[0] - 1} per reconstruction")
    if similarity not in ("ssim", "mse"):
        raise ValueError(f"similarity must be 'ssim' or 'mse', got {similarity!r}")
    ranks = []
    for r, true in zip(rec, idx.tolist()):
        reps = r[None].expand_as(gal)
        score = ssim(reps, gal) if similarity == "ssim" else -mse(reps, gal)
        ranks.append(int((score > score[true]).sum()) + 1)
    return torch.tensor(ranks, dtype=torch.int64)


def rank1_accuracy(ranks: torch.Tensor) -> float:
    """Share of reconstructions whose true identity is the closest gallery match (rank 1)."""
    ranks = torch.as_tensor(ranks)
    if ranks.numel() == 0:
        raise ValueError("no ranks given")
    return float((ranks == 1).double().mean())
