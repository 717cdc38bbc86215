"""Figures of notebook 08 (the leak inside Flower): the federation, K x B, DP modes, secure aggregation.

Colours (from :mod:`gleak_edu.viz.palette`): what reaches the curious server
and the unrolled attack are vermillion (``ROLE["leak"]``); the simple attack
(the update read as one gradient), a baseline, is grey (``ROLE["reference"]``);
what a defense hides is blue (``ROLE["protected"]``); the course's success line
(SSIM 0.6) is dark grey and dashed. Error bars are 95 % Wilson intervals of
success rates (:func:`gleak_edu.metrics.success_rate`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from gleak_edu import metrics
from gleak_edu.viz._base import _diagram, _finish, _plt, to_numpy_image
from gleak_edu.viz.palette import ROLE

__all__ = ["federation_figure", "federation_grid", "fedavg_figure", "dp_federation_figure", "secagg_figure"]

ATTACK_COLORS = {"unrolled": ROLE["leak"], "simple": ROLE["reference"]}


def federation_figure():
    """A federation on Flower in one picture: who runs where and what crosses the wire.

    The ServerApp (a FedAvg strategy; here the curious one) sends each sampled
    SuperNode the global weights w and a config (lr, K, B); each ClientApp
    (in a Ray worker in simulation, a SuperNode process in a deployment) runs
    K local SGD steps on its own digits and sends back its new weights w_K;
    the server keeps w_K - w (the update) and averages. Secure aggregation
    would hand the server only the sum.
    """
    from matplotlib.patches import FancyArrowPatch

    fig, ax, box = _diagram((8.2, 3.6), 10, 5)
    box(3.0, 3.6, 4.0, 1.1, "ServerApp: FedAvg strategy\n(CuriousServer keeps every update)", "#d9d9d9")
    box(7.7, 3.6, 2.1, 1.1, "attack each update\n(IG / unrolled)", "#f7d4bf")
    for i, x0 in enumerate((0.2, 2.7, 5.2)):
        box(x0, 0.3, 2.2, 1.2, f"SuperNode {i + 1}: ClientApp\nK SGD steps on its\nown digits", "#ececec")
        top = 3.3 + 1.3 * i  # where this client's arrows meet the server box
        ax.add_patch(FancyArrowPatch((top, 3.55), (x0 + 0.7, 1.55), arrowstyle="-|>", mutation_scale=11, color="0.25"))
        ax.add_patch(FancyArrowPatch((x0 + 1.5, 1.55), (top + 0.6, 3.55), arrowstyle="-|>", mutation_scale=11,
                                     color=ROLE["leak"]))
    ax.text(7.75, 0.75, "... N clients\n(sampled each round)", fontsize=8, color="0.3")
    ax.text(0.25, 2.55, "down: global weights w,\nconfig (lr, K, B)", fontsize=8, color="0.2")
    ax.text(6.7, 2.45, "up: new weights $w_K$\n(update $w_K - w$),\nnum-examples", fontsize=8, color=ROLE["leak"])
    ax.add_patch(FancyArrowPatch((7.05, 4.15), (7.65, 4.15), arrowstyle="-|>", mutation_scale=11, color=ROLE["leak"]))
    ax.text(5.0, 0.0, "simulation: ClientApps run in Ray workers of one machine; deployment: one SuperLink, "
            "one SuperNode process per client", ha="center", fontsize=7.5, style="italic", color="0.3")
    fig.tight_layout()
    return fig


def federation_grid(truth: Sequence[torch.Tensor], reconstructions: Sequence[torch.Tensor | None],
                    titles: Sequence[str], *, columns: int, ssims: Sequence[float | None] | None = None,
                    caption: str | None = None, scale: float = 0.8):
    """Truth above reconstruction for every update the server attacked, ``columns`` updates per row.

    Args:
        truth: per update, the client's digits ``[M, 1, H, W]`` in [0, 1] (shown side by side).
        reconstructions: per update, the server's estimate (same shape) or None (not attacked yet).
        titles: per update, a short title (round and client).
        columns: updates per row (e.g. the clients of a round).
        ssims: per update, the mean SSIM (titled vermillion at >= 0.6: a success) or None.
        caption: one line under the figure.
    """
    plt = _plt()
    n = len(truth)
    if not (len(reconstructions) == len(titles) == n) or n == 0:
        raise ValueError("give one truth, one reconstruction (or None) and one title per update")
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(2 * rows, columns, figsize=(scale * 1.6 * columns, scale * 1.6 * 2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, columns)
        strip = lambda t: torch.cat(list(torch.as_tensor(t)), dim=-1)  # noqa: E731
        axes[2 * r, c].imshow(to_numpy_image(strip(truth[i])), cmap="gray", vmin=0, vmax=1)
        axes[2 * r, c].set_title(titles[i], fontsize=7)
        if reconstructions[i] is not None:
            axes[2 * r + 1, c].imshow(to_numpy_image(strip(reconstructions[i])), cmap="gray", vmin=0, vmax=1)
            s = None if ssims is None else ssims[i]
            if s is not None:
                axes[2 * r + 1, c].set_title(f"SSIM {s:.2f}", fontsize=7,
                                             color=ROLE["leak"] if s >= metrics.SUCCESS_SSIM else "black")
    return _finish(fig, caption)


def _bars(ax, x, rate: metrics.Rate, color, label=None, offset=0.0):
    ax.errorbar([x + offset], [rate.rate], yerr=[[rate.rate - rate.low], [rate.high - rate.rate]], fmt="o", color=color,
                capsize=3, label=label, ms=5)


def fedavg_figure(rows: Sequence[Mapping]):
    """Success rate (SSIM >= 0.6, 95 % CI) of the simple and the unrolled attack against local steps K,
    one panel per local batch size B (rows of :meth:`gleak_edu.exercises.nb08.FlowerResults.fedavg_rows`)."""
    plt = _plt()
    batches = sorted({r["local_batch"] for r in rows})
    fig, axes = plt.subplots(1, len(batches), figsize=(4.2 * len(batches), 3.1), sharey=True, squeeze=False)
    for ax, b in zip(axes[0], batches):
        part = sorted((r for r in rows if r["local_batch"] == b), key=lambda r: r["local_steps"])
        ks = [r["local_steps"] for r in part]
        for j, attack in enumerate(("unrolled", "simple")):
            label = {"unrolled": "unrolled (K steps replayed)", "simple": "simple (update / -lr K)"}[attack]
            for i, r in enumerate(part):
                _bars(ax, i, r[attack], ATTACK_COLORS[attack], label if i == 0 else None, offset=0.1 * (j - 0.5))
            ax.plot([i + 0.1 * (j - 0.5) for i in range(len(part))], [r[attack].rate for r in part], color=ATTACK_COLORS[attack],
                    lw=1, alpha=0.6)
        ax.set_xticks(range(len(ks)), [str(k) for k in ks])
        ax.set_xlabel("local SGD steps K")
        ax.set_title(f"local batch B = {b} ({part[0]['simple'].n} digits per K)", fontsize=9)
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("digits rebuilt (SSIM ≥ 0.6)")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def dp_federation_figure(rows: Sequence[Mapping]):
    """Left: test accuracy after every round of each DP mode's federation; right: the curious server's
    success rate (95 % CI) on each (rows of :meth:`gleak_edu.exercises.nb08.FlowerResults.dp_rows`)."""
    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9.2, 3.2), gridspec_kw={"width_ratios": [1.3, 1]})
    colors = [ROLE["reference"], ROLE["leak"], ROLE["protected"], "#332288"]
    for r, color in zip(rows, colors):
        ax.plot(range(len(r["accuracy_curve"])), r["accuracy_curve"], color=color, label=r["name"], lw=1.5)
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    for i, (r, color) in enumerate(zip(rows, colors)):
        _bars(bx, i, r["success"], color)
    bx.set_xticks(range(len(rows)), [r["name"].replace(" (", "\n(") for r in rows], fontsize=7)
    bx.set_ylabel("digits rebuilt (SSIM ≥ 0.6)")
    bx.set_ylim(-0.05, 1.05)
    bx.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def secagg_figure(rows: Sequence[Mapping]):
    """The attack on what secure aggregation leaves the server, the sum of N clients' updates:
    success rate (95 % CI) and mean SSIM against N (rows of :meth:`gleak_edu.exercises.nb08.FlowerResults.secagg_rows`)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 3.0))
    ns = [r["clients"] for r in rows]
    for i, r in enumerate(rows):
        _bars(ax, i, r["success"], ROLE["leak"], "digits rebuilt (SSIM ≥ 0.6)" if i == 0 else None)
    ax.plot(range(len(rows)), [r["ssim"] for r in rows], "s--", color=ROLE["protected"], label="mean SSIM", ms=4)
    ax.set_xticks(range(len(ns)), [str(n) for n in ns])
    ax.set_xlabel("clients summed by secure aggregation N")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
