"""Figures of notebook 06 (transformers): the rows that leak, the noise curve, noisy SGD.

Colours (:mod:`gleak_edu.viz.palette`): vermillion (``ROLE["leak"]``) is what
reaches the attacker or an attack that works; grey (``ROLE["reference"]``)
is chance, the start, or no noise; blue (``ROLE["protected"]``) is a run with
noise, lighter for less noise and full blue for the most (:func:`noise_level_colors`).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch

from gleak_edu.viz._base import NOISE_MULTIPLIER_LABEL, STYLE, _plt
from gleak_edu.viz.palette import ROLE

__all__ = ["embedding_rows_figure", "noise_level_colors", "noisy_sgd_figure", "text_noise_figure"]

_TOKEN, _POSITION = "token_embedding.weight", "position_embedding.weight"


def _row_norms(rows) -> np.ndarray:
    return torch.as_tensor(rows).detach().double().reshape(len(rows), -1).norm(dim=1).cpu().numpy()


def embedding_rows_figure(shared: Mapping[str, torch.Tensor], words: Sequence[str], *, max_labels: int = 20):
    """Which rows of the embedding gradients "light up": one bar per row, its L2 norm.

    Args:
        shared: a gradient of a :class:`~gleak_edu.models.TinyTransformer` (name -> tensor) holding
            ``token_embedding.weight`` ``[V, d]`` (one row per vocabulary word) and
            ``position_embedding.weight`` ``[max_len, d]`` (one row per position).
        words: the vocabulary's words, ``V`` strings (``vocab.words``), to label the rows that light up.
        max_labels: at most this many word labels (the strongest rows) are written.

    Left: the token-embedding gradient's rows; right: the position-embedding gradient's rows.
    A row whose norm is exactly 0 is drawn as a grey tick on the axis (a word that does not occur,
    a position past the end); a non-zero row is a vermillion bar (it leaks: a word of the sentence,
    a position it fills), labelled with its word.

    Returns:
        A matplotlib Figure.
    """
    plt = _plt()
    tok, pos = _row_norms(shared[_TOKEN]), _row_norms(shared[_POSITION])
    if len(words) != len(tok):
        raise ValueError(f"words has {len(words)} entries but the token-embedding gradient has {len(tok)} rows")
    fig, (ax_t, ax_p) = plt.subplots(1, 2, figsize=(8.6, 2.9), gridspec_kw={"width_ratios": [5, 1.3]})
    top = max(float(tok.max()), float(pos.max()), 1e-12)
    for ax, norms in ((ax_t, tok), (ax_p, pos)):
        lit = norms > 0
        x = np.arange(len(norms))
        ax.bar(x[lit], norms[lit], width=0.8, color=ROLE["leak"])
        ax.plot(x[~lit], np.zeros(int((~lit).sum())), "|", color=ROLE["reference"], markersize=5, zorder=3)
        ax.set_ylim(0, top * 1.75)
        ax.set_xlim(-1, len(norms))
        ax.spines[["top", "right"]].set_visible(False)
    # labels in one row above the bars, pushed apart where words are neighbours in the vocabulary,
    # each joined to its bar by a thin line
    labelled = sorted(v for v in np.argsort(-tok)[:max_labels] if tok[v] > 0)
    gap = len(tok) / 40  # about one label's width, in rows
    placed: list[float] = []
    for v in labelled:
        placed.append(float(v) if not placed else max(float(v), placed[-1] + gap))
    shift = max(0.0, (placed[-1] - (len(tok) - 1)) if placed else 0.0)  # keep the last label inside
    placed = [x - shift for x in placed]
    for k in range(len(placed) - 2, -1, -1):  # after the shift, keep the gaps going left too
        placed[k] = min(placed[k], placed[k + 1] - gap)
    for v, x in zip(labelled, placed):
        ax_t.plot([v, v, x], [tok[v], top * 1.04, top * 1.08], color=ROLE["reference"], lw=0.6)
        ax_t.text(x, top * 1.1, str(words[v]), rotation=90, ha="center", va="bottom", fontsize=STYLE["font_size"] - 1)
    n_words, length = int((tok > 0).sum()), int((pos > 0).sum())
    ax_t.set_xlabel(f"vocabulary row v (word id, {len(tok)} words)")
    ax_t.set_ylabel("row norm  ‖∂L/∂row‖")
    ax_t.set_title(f"token-embedding gradient ∂L/∂E: {n_words} non-zero rows = the words", fontsize=STYLE["title_size"])
    ax_p.set_xlabel("position j")
    ax_p.set_title(f"∂L/∂P: {length} non-zero rows\n= the length", fontsize=STYLE["title_size"])
    fig.tight_layout()
    return fig


def _fmt_eps(e: float) -> str:
    if not math.isfinite(e):
        return "∞"
    if e >= 1000:
        mantissa, exponent = f"{e:.1e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{e:.2g}" if e < 10 else f"{e:.0f}"


def text_noise_figure(order_accuracy: Mapping[float, float], set_recall: Mapping[float, float], *, chance: float,
                      epsilons: Mapping[float, float] | None = None, delta: float | None = None,
                      max_grad_norm: float = 1.0, epsilon_name: str = "ε per release"):
    """The attack's success against the noise multiplier, with each level's epsilon on the top axis.

    Args:
        order_accuracy: noise multiplier σ -> mean in-order token accuracy in [0, 1] (share of the
            places holding the right word); σ = 0 (no noise) is drawn at the left edge.
        set_recall: σ -> mean word-set recall in [0, 1] (share of the sentence's words found).
        chance: the chance line (e.g. 1 / vocabulary size: a uniformly random word at each place).
            The legend sits in the upper right, where a curve that falls with the noise leaves room.
        epsilons: σ -> epsilon of one release at ``delta``, written above each noisy level
            (``inf`` for σ = 0); None: no top axis.
        delta: the delta of ``epsilons`` (for the label).
        max_grad_norm: the clipping bound C (noise std = σ·C), for the label.
        epsilon_name: what the top axis's numbers are (its label).

    Vermillion: the attack's two measures (solid circles: in order; dashed squares: word set);
    grey dotted: chance.

    Returns:
        A matplotlib Figure.
    """
    plt = _plt()
    levels = sorted(order_accuracy)
    positive = [s for s in levels if s > 0]
    if not positive:
        raise ValueError("need at least one noise multiplier > 0")
    zero_at = min(positive) / 3  # where σ = 0 is drawn
    xs = [s if s > 0 else zero_at for s in levels]
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    ax.semilogx(xs, [order_accuracy[s] for s in levels], "o-", color=ROLE["leak"], label="in-order accuracy")
    ax.semilogx(xs, [set_recall[s] for s in levels], "s--", color=ROLE["leak"], mfc="white", label="word-set recall")
    ax.axhline(chance, color=ROLE["reference"], ls=":", label=f"chance ({chance:.3g})")
    ax.set_ylim(-0.04, 1.06)
    ax.set_xticks(xs, ["0" if s == 0 else f"{s:g}" for s in levels])
    ax.minorticks_off()
    ax.set_xlabel(f"{NOISE_MULTIPLIER_LABEL}, C = {max_grad_norm:g}")
    ax.set_ylabel("share recovered")
    ax.legend(loc="upper right", fontsize=STYLE["font_size"] - 1)
    if epsilons is not None:
        top = ax.secondary_xaxis("top")
        top.set_xticks(xs, [_fmt_eps(float(epsilons[s])) for s in levels], fontsize=STYLE["font_size"] - 1)
        top.minorticks_off()
        top.set_xlabel(epsilon_name + (f" (δ = {delta:g})" if delta is not None else ""))
    fig.tight_layout()
    return fig


def _blend(color: str, t: float) -> tuple[float, float, float]:
    """``color`` mixed with white: t = 1 the colour itself, t = 0 white."""
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(color)
    return (1 - t + t * r, 1 - t + t * g, 1 - t + t * b)


def noise_level_colors(noise_multipliers: Sequence[float]) -> dict[float, tuple[float, float, float]]:
    """One colour per noise multiplier: grey (``ROLE["reference"]``) for 0, blues for the rest.

    The blues are ``ROLE["protected"]`` mixed with white, lightest for the smallest noise
    multiplier, the palette's blue itself for the largest.

    Returns:
        ``{noise_multiplier: (r, g, b)}``.
    """
    from matplotlib.colors import to_rgb

    positive = sorted({float(s) for s in noise_multipliers if s > 0})
    colors = {}
    for s in noise_multipliers:
        if s <= 0:
            colors[s] = to_rgb(ROLE["reference"])
        else:
            k = positive.index(float(s))
            colors[s] = _blend(ROLE["protected"], 0.35 + 0.65 * (k / max(len(positive) - 1, 1)))
    return colors


def noisy_sgd_figure(curves: Mapping[tuple[float, float], Sequence[tuple[int, float]]], *, max_grad_norm: float = 1.0,
                     epsilons: Mapping[tuple[float, float], float] | None = None, title: str | None = None):
    """Training loss of noisy SGD (DP-SGD) runs, one line per (noise multiplier, step size).

    Args:
        curves: ``(noise_multiplier σ, step size lr)`` -> ``[(step, training loss)]`` (e.g.
            :func:`gleak_edu.training.noisy_sgd`'s return).
        max_grad_norm: the clipping bound C (for the legend's title).
        epsilons: the same keys -> epsilon of the whole run (written in the legend), optional.
        title: the axes' title.

    Colours: grey for σ = 0, blues for the noisy runs (:func:`noise_level_colors`, darker for more
    noise); solid lines for the most common step size, dashed for the others. A grey dotted line
    marks the loss at the start. The y axis is logarithmic; the legend sits outside the axes.

    Returns:
        A matplotlib Figure.
    """
    plt = _plt()
    if not curves:
        raise ValueError("no curves to draw")
    colors = noise_level_colors(sorted({s for s, _ in curves}))
    lrs = [lr for _, lr in curves]
    main_lr = max(set(lrs), key=lrs.count)
    fig, ax = plt.subplots(figsize=(7.6, 3.3))
    start = None
    for (s, lr), c in curves.items():
        steps, losses = zip(*c)
        start = losses[0] if start is None else start
        label = f"σ = {s:g}, step {lr:g}"
        if epsilons is not None and (s, lr) in epsilons:
            label += f" (ε = {_fmt_eps(float(epsilons[(s, lr)]))})"
        ax.plot(steps, losses, color=colors[s], ls="-" if lr == main_lr else "--", lw=1.6, label=label)
    ax.axhline(start, color=ROLE["reference"], ls=":", lw=1, label="loss at the start")
    ax.set_yscale("log")
    ax.set_xlabel("SGD step")
    ax.set_ylabel("training loss (all examples)")
    ax.legend(title=f"noise multiplier σ (C = {max_grad_norm:g})", loc="upper left", bbox_to_anchor=(1.01, 1.0),
              fontsize=STYLE["font_size"] - 1, title_fontsize=STYLE["font_size"] - 1, frameon=False)
    if title:
        ax.set_title(title, fontsize=STYLE["title_size"])
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig
