"""Figures of notebook 03 (PRECODE and its bypass): PRECODE's knob β, and what a gradient's size says.

The diagram (:func:`gleak_edu.viz.precode_figure`) and the per-parameter randomness bars
(:func:`gleak_edu.viz.stochasticity_figure`) live in ``_base`` with the PPP diagram they share a drawing with.

A *knob run* is what the notebook computes for one value of PRECODE's KL weight β::

    {"accuracy": test accuracy in [0, 1],
     "cosines": {parameter name: cosine of two gradients on the same image},
     "ig": AttackResult of Inverting Gradients on all layers,
     "bypass": AttackResult of the PRECODE bypass}

and ``runs`` maps β -> knob run.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from gleak_edu import metrics
from gleak_edu.viz._base import STYLE, _plt, to_numpy_image
from gleak_edu.viz.palette import DEFENSE, ROLE

__all__ = ["precode_knob_figure", "precode_knob_view"]

_KEYS = ("accuracy", "cosines", "ig", "bypass")


def _check_runs(runs: Mapping[float, Mapping]) -> list[float]:
    if not runs:
        raise ValueError("runs is empty: compute at least one β")
    for beta, run in runs.items():
        missing = [k for k in _KEYS if k not in run]
        if missing:
            raise ValueError(f"the run at β = {beta:g} lacks {missing}; a knob run has {list(_KEYS)}")
    return sorted(float(b) for b in runs)


def _after_sample_weights(cosines: Mapping[str, float], deterministic: Sequence[str] | None) -> list[str]:
    """The weight matrices after the sample (the ones PRECODE randomises), output layer first."""
    keep = set(deterministic or [])
    return [n for n in cosines if n.endswith("weight") and n not in keep][::-1]


def _short(name: str) -> str:
    """``classifier.1.weight`` -> "output layer", ``classifier.0.decoder.weight`` -> "decoder"."""
    return "decoder" if "decoder" in name else ("output layer" if name.startswith("classifier") else name)


def precode_knob_figure(runs: Mapping[float, Mapping], original: torch.Tensor, *,
                        plain_accuracy: float | None = None, deterministic: Sequence[str] | None = None):
    """PRECODE's KL weight β against what it costs and what it stops (the static counterpart of the slider).

    Args:
        runs: ``{β: knob run}`` (see the module's docstring), one trained PRECODE model per β.
        original: the attacked image ``[1, C, H, W]`` in [0, 1].
        plain_accuracy: test accuracy of the same model without PRECODE (a grey reference line), or None.
        deterministic: the parameters the bypass matches (to pick the weight gradients after the sample).

    Top left: test accuracy (%) against β (log axis), PRECODE in its defense colour, no defense grey.
    Top middle: mean SSIM of Inverting Gradients on all layers (grey: the attack PRECODE was built
    against) and of the bypass (vermillion) against β; dashed: the course's success line (SSIM 0.6).
    Top right: how random the weight gradients after the sample are (the cosine of two computations on the
    same image, one blue line per weight matrix: the output layer's and the decoder's). Bottom: the private
    image, then per β the two reconstructions, each titled with its SSIM.
    Returns the Figure.
    """
    plt = _plt()
    betas = _check_runs(runs)
    n = len(betas)
    fig = plt.figure(figsize=(max(7.5, 1.0 * (2 * n + 1)), 4.9))
    rows = fig.add_gridspec(2, 1, height_ratios=[1.4, 1.0], hspace=0.45)
    top = rows[0].subgridspec(1, 3, wspace=0.35)
    bottom = rows[1].subgridspec(1, 2 * n + 1, wspace=0.15)
    ax_acc, ax_ssim, ax_cos = (fig.add_subplot(top[0, k]) for k in range(3))
    acc = [100 * float(runs[b]["accuracy"]) for b in betas]
    ax_acc.plot(betas, acc, "D-", color=DEFENSE["precode"], label="PRECODE")
    if plain_accuracy is not None:
        ax_acc.axhline(100 * plain_accuracy, color=ROLE["reference"], ls="-", lw=1, label="no defense")
    ax_acc.set_title("test accuracy (%)", fontsize=8)
    ax_acc.set_ylim(0, 100)
    ax_acc.legend(fontsize=7)
    ig = [float(runs[b]["ig"].metrics["ssim_mean"]) for b in betas]
    by = [float(runs[b]["bypass"].metrics["ssim_mean"]) for b in betas]
    ax_ssim.plot(betas, ig, "s--", color=ROLE["reference"], label="IG, all layers")
    ax_ssim.plot(betas, by, "o-", color=ROLE["leak"], label="the bypass")
    ax_ssim.axhline(metrics.SUCCESS_SSIM, color=ROLE["threshold"], ls="--", lw=0.8)
    ax_ssim.set_ylim(-0.05, 1.05)
    ax_ssim.set_title("attack SSIM (dashed: success, 0.6)", fontsize=8)
    ax_ssim.legend(fontsize=7)
    for name, style in zip(_after_sample_weights(runs[betas[0]]["cosines"], deterministic), ("o-", "s--", "^:")):
        ax_cos.plot(betas, [runs[b]["cosines"][name] for b in betas], style, color=ROLE["protected"],
                    label=_short(name))
    ax_cos.legend(fontsize=7)
    ax_cos.set_ylim(-0.25, 1.05)
    ax_cos.axhline(0, color="0.5", lw=0.6)
    ax_cos.set_title("after the sample: cosine of two\nweight gradients (1 = fixed)", fontsize=8)
    for ax in (ax_acc, ax_ssim, ax_cos):
        ax.set_xscale("log")
        ax.set_xlabel("KL weight β")
        ax.tick_params(labelsize=7)
    images = [("private", original, None)]
    for b in betas:
        images += [(f"β={b:g}\nIG", runs[b]["ig"].reconstruction, runs[b]["ig"].metrics["ssim_mean"]),
                   (f"β={b:g}\nbypass", runs[b]["bypass"].reconstruction, runs[b]["bypass"].metrics["ssim_mean"])]
    for i, (title, img, ssim) in enumerate(images):
        ax = fig.add_subplot(bottom[0, i])
        ax.imshow(to_numpy_image(img[0] if img.ndim == 4 else img), cmap=STYLE["cmap"], vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_title(title + ("" if ssim is None else f"\nSSIM {float(ssim):.2f}"), fontsize=7)
        ax.axis("off")
    fig.suptitle("PRECODE's knob β: what it costs (accuracy), what it stops (IG) and what it does not (the bypass)",
                 fontsize=STYLE["title_size"])
    fig.subplots_adjust(left=0.06, right=0.98, top=0.86, bottom=0.03)
    return fig


def precode_knob_view(runs: Mapping[float, Mapping], beta: float, original: torch.Tensor, *,
                      plain_accuracy: float | None = None):
    """One β of the knob runs: the private image and both reconstructions, and a line of numbers.

    Args: as :func:`precode_knob_figure`; ``beta`` must be a key of ``runs``.

    Returns the Figure (three images, each reconstruction titled with its SSIM and whether it is an attack
    success, SSIM >= 0.6; the title gives the test accuracy at that β and, if given, without PRECODE).

    Raises:
        KeyError: for a β that was not run.
    """
    plt = _plt()
    _check_runs(runs)
    match = [b for b in runs if abs(float(b) - float(beta)) <= 1e-12 * max(1.0, abs(float(beta)))]
    if not match:
        raise KeyError(f"β = {beta:g} was not run; the runs have β = {sorted(float(b) for b in runs)}")
    run = runs[match[0]]
    fig, axes = plt.subplots(1, 3, figsize=(5.4, 2.3))
    items = [("private image", original, None), ("IG, all layers", run["ig"].reconstruction, run["ig"]),
             ("the bypass", run["bypass"].reconstruction, run["bypass"])]
    for ax, (title, img, res) in zip(axes, items):
        ax.imshow(to_numpy_image(img[0] if img.ndim == 4 else img), cmap=STYLE["cmap"], vmin=0, vmax=1,
                  interpolation="nearest")
        if res is not None:
            s = float(res.metrics["ssim_mean"])
            title += f"\nSSIM {s:.2f} ({'success' if s >= metrics.SUCCESS_SSIM else 'no success'})"
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    head = f"β = {float(match[0]):g}: test accuracy {100 * float(run['accuracy']):.1f} %"
    if plain_accuracy is not None:
        head += f" (no defense {100 * plain_accuracy:.1f} %)"
    fig.suptitle(head, fontsize=STYLE["title_size"])
    fig.tight_layout()
    return fig
