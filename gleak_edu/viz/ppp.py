"""Figures of notebook 04 (PPP): the trade-off in two panels, the sweep's reconstructions, one digit per SSIM band.

Every function takes a :class:`gleak_edu.sweeps.SweepResult` (what
:func:`gleak_edu.sweeps.ppp_sweep` returns) and returns a matplotlib Figure.
Images are the sweep's 28x28 MNIST digits, pixels in [0, 1]. Each
reconstruction is titled with its SSIM to the private digit (scikit-image,
:func:`gleak_edu.metrics.ssim`); a title in vermillion (``ROLE["leak"]``)
marks an attack success (SSIM >= :data:`gleak_edu.metrics.SUCCESS_SSIM`,
the course's one definition), black otherwise.
"""

from __future__ import annotations

import torch

from gleak_edu import metrics
from gleak_edu.viz._base import STYLE, _plt, to_numpy_image, tradeoff_figure
from gleak_edu.viz.palette import ROLE

__all__ = ["ssim_bands_figure", "sweep_reconstructions_figure", "tradeoff_pair_figure"]

_NAMES = {"none": "no defense", "precode": "PRECODE alone", "full": "full perturbation", "ppp": "PPP"}


def tradeoff_pair_figure(result):
    """The trade-off against both attacks side by side: the bypass (left) and Inverting Gradients on all layers (right).

    Each panel is :func:`gleak_edu.viz.tradeoff_figure`: test accuracy (%) against the
    attack's mean SSIM, one line per defense (colours from ``palette.DEFENSE``, and a
    marker of its own per defense: no defense square, PRECODE diamond, full
    perturbation triangle, PPP circle), each point a noise multiplier σ (std σ·C).

    Args:
        result: a :class:`gleak_edu.sweeps.SweepResult`.

    Returns:
        The Figure (two axes).
    """
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    tradeoff_figure(result, "bypass", ax=axes[0])
    tradeoff_figure(result, "ig", ax=axes[1])
    axes[0].set_title("against the PRECODE bypass (the attack that beats PRECODE)", fontsize=STYLE["title_size"])
    axes[1].set_title("against Inverting Gradients on all layers", fontsize=STYLE["title_size"])
    fig.tight_layout()
    return fig


def _title_colour(ssim: float) -> str:
    return ROLE["leak"] if ssim >= metrics.SUCCESS_SSIM else ROLE["truth"]


def _cells(result, attack: str, seed: int | None):
    """[(label, reconstructions [N, 1, 28, 28])] for every (defense, σ) of the sweep, in the table's order."""
    settings = result.settings
    groups = [("none", 0.0), ("precode", 0.0)] + [(d, s) for s in settings.noise_levels for d in ("full", "ppp")]
    out = []
    for defense, sigma in groups:
        label = _NAMES[defense] + (f", σ={sigma:g}" if defense in ("full", "ppp") else "")
        out.append((label, result.reconstructions(defense, sigma, attack, seed=seed)))
    return out


def sweep_reconstructions_figure(result, attack: str = "bypass", seed: int | None = None):
    """The reconstructions behind the sweep's table: one row per (defense, σ), one column per attacked digit.

    The first row holds the private digits. Each reconstruction is titled with its SSIM
    to the private digit, in vermillion when the attack succeeds (SSIM >= 0.6).

    Args:
        result: a :class:`gleak_edu.sweeps.SweepResult`.
        attack: ``"bypass"`` (on models without a bottleneck it is Inverting Gradients on
            all layers) or ``"ig"``.
        seed: which training seed's models (default: the sweep's first seed).

    Returns:
        The Figure.
    """
    plt = _plt()
    truth = result.test_images
    rows = [("private digit", truth)] + _cells(result, attack, seed)
    n = truth.shape[0]
    fig, axes = plt.subplots(len(rows), n, figsize=(max(1.25 * n + 1.9, 4.4), 1.12 * len(rows) + 0.3), squeeze=False)
    for r, (label, images) in enumerate(rows):
        scores = metrics.ssim(images, truth).tolist() if r else [None] * n
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(to_numpy_image(images[c]), cmap=STYLE["cmap"], vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if scores[c] is not None:
                ax.set_title(f"SSIM {scores[c]:.3f}", fontsize=7.5, color=_title_colour(scores[c]), pad=2)
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(f"what the {'bypass' if attack == 'bypass' else 'Inverting Gradients'} rebuilds\n"
                 f"title: SSIM to the private digit; vermillion: attack success (SSIM ≥ {metrics.SUCCESS_SSIM:g})",
                 fontsize=8)
    fig.tight_layout()
    return fig


def ssim_bands_figure(result, bands: tuple[float, float] = (0.3, metrics.SUCCESS_SSIM)):
    """One reconstruction per SSIM band, from the sweep's own attacks, above its private digit.

    The bands are ``SSIM < low`` ("failed"), ``low <= SSIM < high`` (the grey zone:
    shapes can leak, yet it is not a success) and ``SSIM >= high`` (success, the course's
    definition). From every reconstruction of the sweep (all defenses, noise multipliers,
    seeds, digits and both attacks) the one closest to the middle of each band is shown
    (for the top band, the middle of [high, 1]); a band with no reconstruction stays empty.

    Args:
        result: a :class:`gleak_edu.sweeps.SweepResult`.
        bands: ``(low, high)`` SSIM limits (default 0.3 and :data:`gleak_edu.metrics.SUCCESS_SSIM`).

    Returns:
        The Figure: three columns, private digit (top) and reconstruction (bottom),
        each reconstruction titled with its SSIM, PSNR (dB) and where it comes from.
    """
    low, high = bands
    if not -1 <= low < high <= 1:
        raise ValueError(f"bands must be two SSIM limits low < high in [-1, 1], got {bands}")
    truth = result.test_images
    found = []  # (ssim, psnr, label, image index, reconstruction)
    for (defense, sigma, seed), cell in result.cells.items():
        for attack, run in cell["attacks"].items():
            if defense in ("none", "full") and attack == "bypass":
                continue  # the same run as "ig" on a model without a bottleneck
            recs = torch.tensor(run["reconstructions"], dtype=torch.float32)
            for i, s in enumerate(run["ssim"]):
                if s is None:
                    continue
                name = {"ig": "IG", "bypass": "bypass"}[attack]
                label = _NAMES[defense] + (f" σ={sigma:g}" if defense in ("full", "ppp") else "") + f"\n{name}, digit {i}"
                found.append((float(s), float(run["psnr"][i]), label, i, recs[i]))
    spans = [("failed: SSIM < %g" % low, -1.0, low), ("grey zone: %g ≤ SSIM < %g" % (low, high), low, high),
             ("success: SSIM ≥ %g" % high, high, 1.0001)]
    plt = _plt()
    fig, axes = plt.subplots(2, 3, figsize=(6.6, 4.6), squeeze=False)
    for c, (head, a, b) in enumerate(spans):
        inside = [f for f in found if a <= f[0] < b]
        middle = (max(a, 0.0) + min(b, 1.0)) / 2
        for ax in axes[:, c]:
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, c].set_title(head, fontsize=STYLE["title_size"], color=_title_colour(a))
        if not inside:
            axes[1, c].text(0.5, 0.5, "none in this sweep", ha="center", va="center", fontsize=8)
            continue
        s, p, label, i, rec = min(inside, key=lambda f: abs(f[0] - middle))
        axes[0, c].imshow(to_numpy_image(truth[i]), cmap=STYLE["cmap"], vmin=0, vmax=1, interpolation="nearest")
        axes[1, c].imshow(to_numpy_image(rec), cmap=STYLE["cmap"], vmin=0, vmax=1, interpolation="nearest")
        axes[1, c].set_title(f"SSIM {s:.3f}, {p:.1f} dB", fontsize=8, color=_title_colour(s))
        axes[1, c].set_xlabel(label, fontsize=7)
    axes[0, 0].set_ylabel("private", fontsize=8)
    axes[1, 0].set_ylabel("rebuilt", fontsize=8)
    fig.tight_layout()
    return fig
