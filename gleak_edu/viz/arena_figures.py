"""Figures of notebook 07 (the defense arena): the signal-to-noise ratio behind the heatmap.

The heatmap itself is :func:`gleak_edu.viz.arena_heatmap` (attacks as rows,
defenses as columns). The figures here put, under the same defense columns,
what the attacks work against: how large one digit's shared gradient is on the
model each defense trained, how large the noise added to it is, and their ratio.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from gleak_edu import arena
from gleak_edu.viz._base import STYLE, _defense_tick, _plt, to_numpy_image
from gleak_edu.viz.palette import DEFENSE, ROLE

__all__ = ["arena_cells_figure", "arena_snr_figure", "snr_scatter"]


def _columns(rows: Sequence[dict]) -> list[str]:
    present = {r["defense"] for r in rows}
    return [d for d in arena.DEFENSES if d in present]


def arena_snr_figure(rows: Sequence[dict], *, level: float, attack: str = "ig", success_ssim: float = 0.6):
    """Per defense (columns, in the heatmap's order) and attacked digit: the shared gradient, the noise, their ratio.

    Top panel (log scale, the gradient's L2 norm): for every attacked digit a
    grey ring, the plain gradient on that defense's trained model (before the
    defense); a black dot, what the client shares without its noise (after
    clipping or pruning: the *signal*); a blue bar, the norm of the noise the
    defense adds (none for the defenses without noise). Bottom panel (log
    scale): the signal-to-noise ratio, signal norm / noise norm, one marker per
    digit: filled vermillion when ``attack`` rebuilt that digit (SSIM >=
    ``success_ssim``), hollow blue when it did not; the defenses without noise
    have no ratio (written "no noise").

    Args:
        rows: one dict per (defense, digit) at one noise level, as
            :func:`gleak_edu.exercises.nb07.snr_rows` returns: ``defense``,
            ``label`` (the defense at its level, in its unit), ``image``,
            ``gradient_norm``, ``signal_norm``, ``noise_norm``, ``snr`` (None
            without noise) and ``ssim`` (the attack's SSIM on that digit, None
            where it cannot run).
        level: the noise level the rows are at (for the title).
        attack: the attack whose success the bottom panel marks (its registry key).
        success_ssim: the success threshold (the course's 0.6).

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: for empty ``rows``.
    """
    if not rows:
        raise ValueError("arena_snr_figure needs at least one row")
    plt = _plt()
    cols = _columns(rows)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10.5, 5.4),
                                      gridspec_kw={"height_ratios": [1.2, 1.0], "hspace": 0.08})
    fig.subplots_adjust(left=0.17, right=0.98, top=0.8, bottom=0.16)
    labels = {}
    for j, d in enumerate(cols):
        mine = sorted((r for r in rows if r["defense"] == d), key=lambda r: r["image"])
        labels[d] = mine[0]["label"]
        offsets = np.linspace(-0.22, 0.22, len(mine)) if len(mine) > 1 else [0.0]
        for dx, r in zip(offsets, mine):
            top.scatter(j + dx, r["gradient_norm"], s=36, facecolors="none", edgecolors=ROLE["reference"], lw=1.2,
                        zorder=3)
            top.scatter(j + dx, r["signal_norm"], s=18, color=ROLE["truth"], zorder=4)
            if r["noise_norm"] > 0:
                top.hlines(r["noise_norm"], j + dx - 0.08, j + dx + 0.08, color=ROLE["protected"], lw=3, zorder=2)
            if r["snr"] is None or not math.isfinite(r["snr"]):
                continue
            leaked = r["ssim"] is not None and r["ssim"] >= success_ssim
            bottom.scatter(j + dx, r["snr"], s=40, zorder=3,
                           facecolors=ROLE["leak"] if leaked else "none",
                           edgecolors=ROLE["leak"] if leaked else ROLE["protected"], lw=1.4)
        if all(r["snr"] is None for r in mine):
            bottom.text(j, 0.5, "no noise", transform=bottom.get_xaxis_transform(), ha="center", va="center",
                        fontsize=8, color=ROLE["reference"])
    top.set_yscale("log")
    bottom.set_yscale("log")
    top.set_ylabel("gradient norm (L2)", fontsize=8)
    bottom.set_ylabel("signal / noise", fontsize=8)
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for ax in (top, bottom):
        ax.set_xlim(-0.5, len(cols) - 0.5)
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(labelsize=7)
        ax.grid(axis="y", which="major", color="0.9", lw=0.8)
        for spine in ("top", "right"):
            ax.spines[spine].set_visible(False)
    top.set_xticks(range(len(cols)))
    top.xaxis.tick_top()
    top.set_xticklabels([_defense_tick(d, labels[d]) for d in cols], fontsize=7.5)
    top.tick_params(axis="x", length=0)
    bottom.set_xticks([])
    handles = [
        plt.Line2D([], [], marker="o", ls="", mfc="none", mec=ROLE["reference"], label="plain gradient (before the defense)"),
        plt.Line2D([], [], marker="o", ls="", color=ROLE["truth"], ms=5, label="signal: shared, without its noise"),
        plt.Line2D([], [], color=ROLE["protected"], lw=3, label="noise added (its norm)"),
        plt.Line2D([], [], marker="o", ls="", color=ROLE["leak"], label=f"{arena.ATTACK_NAMES[attack]} rebuilt the digit"),
        plt.Line2D([], [], marker="o", ls="", mfc="none", mec=ROLE["protected"], label="it did not"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=7, frameon=False, bbox_to_anchor=(0.575, 0.0))
    fig.suptitle(f"noise level {level:g}: each digit's shared gradient on each defense's own model, and the noise "
                 f"added to it (one marker per digit)", fontsize=STYLE["title_size"], y=0.995)
    return fig


def snr_scatter(rows: Sequence[dict], *, attack: str = "ig", success_ssim: float = 0.6):
    """The attack's SSIM against the shared gradient's signal-to-noise ratio, every noisy cell and digit at once.

    One marker per (defense, level, digit) with noise (rows whose ``snr`` is
    None are skipped), coloured by defense (:data:`gleak_edu.viz.palette.DEFENSE`),
    marker shape by noise level; the dashed line is the success threshold.

    Args:
        rows: dicts with ``defense``, ``level``, ``snr`` and ``ssim`` (as
            :func:`gleak_edu.exercises.nb07.snr_rows` returns, for one or more levels).
        attack: the attack the SSIM is of (for the axis label).
        success_ssim: the success threshold (the course's 0.6).

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: when no row has a ratio and an SSIM.
    """
    pts = [r for r in rows if r.get("snr") is not None and r.get("ssim") is not None]
    if not pts:
        raise ValueError("snr_scatter needs rows with a signal-to-noise ratio and an SSIM")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    markers = ["o", "s", "^", "D", "v"]
    levels = sorted({r["level"] for r in pts})
    for d in _columns(pts):
        for k, lv in enumerate(levels):
            mine = [r for r in pts if r["defense"] == d and r["level"] == lv]
            if mine:
                ax.scatter([r["snr"] for r in mine], [r["ssim"] for r in mine], color=DEFENSE[d],
                           marker=markers[k % len(markers)], s=34, alpha=0.9, edgecolors="white", lw=0.5)
    ax.axhline(success_ssim, color=ROLE["threshold"], ls="--", lw=1)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("signal / noise of the shared gradient", fontsize=8)
    ax.set_ylabel(f"{arena.ATTACK_NAMES[attack]}: SSIM", fontsize=8)
    ax.tick_params(labelsize=7)
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)
    handles = [plt.Line2D([], [], marker="o", ls="", color=DEFENSE[d], label=arena.DEFENSE_NAMES[d]) for d in _columns(pts)]
    handles += [plt.Line2D([], [], marker=markers[k % len(markers)], ls="", color="0.4", label=f"level {lv:g}")
                for k, lv in enumerate(levels)]
    handles.append(plt.Line2D([], [], color=ROLE["threshold"], ls="--", label=f"success (SSIM {success_ssim:g})"))
    ax.legend(handles=handles, fontsize=6.5, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title("attack quality against the signal-to-noise ratio of what the client shares", fontsize=STYLE["title_size"])
    fig.tight_layout()
    return fig


def arena_cells_figure(truth, columns: Sequence[tuple[str, object, Sequence[float | None]]], *,
                       success_ssim: float = 0.6, title: str | None = None):
    """The digits behind some arena cells: one column per cell, one row per attacked digit, each with its SSIM.

    The first column is the private digits (black title). Every other column is
    one (attack, defense) cell: its reconstructions, each titled with its SSIM
    to the private digit, in vermillion when the attack succeeded on that digit
    (SSIM >= ``success_ssim``) and in blue when it did not.

    Args:
        truth: the private digits, float ``[n, 1, H, W]`` in [0, 1].
        columns: ``(head, reconstructions [n, 1, H, W] in [0, 1], ssims: n numbers or None)`` per cell;
            the head names the cell (e.g. "Inverting Gradients\\nvs none").
        success_ssim: the success threshold (the course's 0.6).
        title: a title over the figure.

    Returns:
        The matplotlib Figure.
    """
    plt = _plt()
    truth = torch.as_tensor(truth)
    n, ncols = truth.shape[0], len(columns) + 1
    fig, axes = plt.subplots(n, ncols, figsize=(1.25 * ncols, 1.2 * n + 0.75 + (0.3 if title else 0)), squeeze=False)
    cols = [("private", truth, [None] * n)] + [(h, torch.as_tensor(r), s) for h, r, s in columns]
    for j, (head, images, ssims) in enumerate(cols):
        for i in range(n):
            ax = axes[i, j]
            ax.imshow(to_numpy_image(images[i]), cmap=STYLE["cmap"], vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            q = ssims[i] if ssims is not None else None
            if j == 0:
                ax.set_title(f"digit {i}", fontsize=7, color=ROLE["truth"])
            elif q is None:
                ax.set_title("n/a", fontsize=7, color=ROLE["reference"])
            else:
                ax.set_title(f"SSIM {q:.2f}", fontsize=7, color=ROLE["leak"] if q >= success_ssim else ROLE["protected"])
            if i == 0:
                ax.annotate(head, (0.5, 1.0), xycoords="axes fraction", xytext=(0, 16), textcoords="offset points",
                            ha="center", va="bottom", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=STYLE["title_size"])
    fig.tight_layout()
    return fig
