"""Figures of notebook 01 (DLG and iDLG).

* :func:`matching_loss_figure` -- gradient-matching loss per L-BFGS iteration of several runs
  (e.g. the plain :func:`~gleak_edu.attacks.reference_dlg` beside the engine's :func:`~gleak_edu.attacks.dlg`).
* :func:`label_rowsum_figure` -- iDLG's label rule made visible: the row sums of the output layer's
  weight gradient, on a linear scale (the one negative bar) and on a log scale (every class's size).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from gleak_edu.viz._base import STYLE, _plt
from gleak_edu.viz.palette import ROLE

__all__ = ["label_rowsum_figure", "matching_loss_figure"]


def matching_loss_figure(curves: Mapping[str, Sequence[float]], title: str | None = None):
    """Gradient-matching loss against the L-BFGS iteration, one line per run, log scale.

    Args:
        curves: ``{label: losses}``, each a sequence of floats (the loss at the start of each
            iteration, as :func:`~gleak_edu.attacks.reference_dlg` returns and ``[h["loss"] for h in
            result.history]`` gives for :func:`~gleak_edu.attacks.dlg`).
        title: optional title.

    Colours: the first curve grey (``ROLE["reference"]``, circles, solid: the plain reference), the
    second vermillion (``ROLE["leak"]``, crosses, dashed: the attack the course uses), further ones
    black. Markers and dashes keep the lines apart without colour.

    Returns:
        The matplotlib Figure (5 x 2.8 in).
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 2.8))
    styles = [(ROLE["reference"], "o", "-"), (ROLE["leak"], "x", "--")]
    for k, (label, losses) in enumerate(curves.items()):
        color, marker, ls = styles[k] if k < len(styles) else (ROLE["truth"], ".", ":")
        values = [float(v) for v in losses]
        ax.semilogy(range(len(values)), values, marker=marker, ls=ls, color=color, label=label)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("L-BFGS iteration")
    ax.set_ylabel("gradient-matching loss")
    if title:
        ax.set_title(title, fontsize=STYLE["title_size"])
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def label_rowsum_figure(weight_grad: torch.Tensor, true_label: int | None = None):
    """iDLG's label rule as a picture: the row sums of the output layer's weight gradient.

    Row c of ``dL/dW_out`` is ``(p_c - [c = y]) * h`` (p: softmax, h >= 0: the features), so its sum is
    ``(p_c - [c = y]) * sum(h)``: negative for the true class only, and for every other class
    proportional to that class's softmax probability p_c. Left panel: the sums themselves (linear
    scale): one long negative bar, and only the few classes with a sizeable p_c show a visible
    positive bar. Right panel: the size of every sum on a log scale: all the other classes are
    positive too, but most are many orders of magnitude smaller, because the softmax puts almost all
    of its mass on a few classes.

    Args:
        weight_grad: float ``[K, F]``, the shared gradient of the output layer's weight (one image).
        true_label: the class to draw in black (``ROLE["truth"]``); None: the rule's pick (the argmin).

    Colours: the true class black (``ROLE["truth"]``); every other class grey (``ROLE["reference"]``).

    Returns:
        The matplotlib Figure (two panels, 9 x 2.6 in); the title names the rule's pick.
    """
    g = torch.as_tensor(weight_grad).detach().double()
    if g.ndim != 2:
        raise ValueError(f"weight_grad must be the output layer's weight gradient [K, F], got shape {tuple(g.shape)}")
    sums = g.sum(dim=1)
    pick = int(sums.argmin())
    mark = pick if true_label is None else int(true_label)
    k = sums.numel()
    colors = [ROLE["truth"] if c == mark else ROLE["reference"] for c in range(k)]
    plt = _plt()
    fig, (ax, ax_log) = plt.subplots(1, 2, figsize=(9, 2.6), gridspec_kw={"width_ratios": [1.2, 1]})
    ax.bar(range(k), sums.numpy(), color=colors, width=0.9)
    ax.axhline(0, color=ROLE["threshold"], lw=0.6)
    ax.set_xlabel("class c")
    ax.set_ylabel(r"$\sum_j \partial L / \partial W_{c,j}$")
    truth_note = "" if true_label is None else f" (true label {int(true_label)})"
    ax.set_title(f"row sums: the negative one is class {pick}{truth_note}", fontsize=STYLE["title_size"])
    size = sums.abs().clamp_min(1e-30)
    ax_log.bar(range(k), size.numpy(), color=colors, width=0.9)
    ax_log.set_yscale("log")
    ax_log.set_xlabel("class c")
    ax_log.set_ylabel("|row sum| (log scale)")
    positive = int((sums > 0).sum())
    ax_log.set_title(f"|row sums|, log scale: {positive} of the {k - 1} other rows are > 0",
                     fontsize=STYLE["title_size"])
    fig.tight_layout()
    return fig
