"""Figures of notebook 05 (DP-SGD, fixed vs dynamic).

Every function returns a ``matplotlib.figure.Figure``. Runs are
:class:`gleak_edu.defenses.DPRun` results of :func:`gleak_edu.defenses.train_dp`,
in a dict ``{method label: DPRun}``. Colours (:func:`method_color`): "none"
(no DP) is the reference grey, each noise schedule its
:data:`gleak_edu.viz.palette.SCHEDULE` colour (fixed noise: DP fixed's
indigo), dynamic clipping DP dynamic's wine. In reconstruction grids a title
is vermillion when the attack succeeds on that image (SSIM >= 0.6,
:data:`gleak_edu.metrics.SUCCESS_SSIM`) and blue when the defense held.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import torch

from gleak_edu import metrics
from gleak_edu.attacks import ATTACKS
from gleak_edu.viz._base import (
    NOISE_MULTIPLIER_LABEL,
    STYLE,
    _plt,
    metric_bars,
    to_numpy_image,
    training_curves_figure,
)
from gleak_edu.viz.palette import DEFENSE, ROLE, SCHEDULE

__all__ = [
    "dp_checkpoint_grid",
    "dp_metrics_figure",
    "dp_training_curves",
    "method_color",
    "method_colors",
    "noise_return_figure",
]

_SHORT = {"idlg": "iDLG", "ig": "IG", "dlg": "DLG"}


def method_color(label: str) -> str:
    """The colour of a DP method's label: "none" grey, a schedule its colour, dynamic clipping wine.

    A label that starts with a schedule's name ("fixed σ=0.60", "exponential, seed 1") takes that
    schedule's colour; one that mentions "dynamic" takes DP dynamic's; anything else the course's blue.
    """
    key = label.lower()
    if key in ("none", "no dp"):
        return ROLE["reference"]
    if "dynamic" in key:
        return DEFENSE["dp_dynamic"]
    for kind, colour in SCHEDULE.items():
        if key.startswith(kind):
            return colour
    return ROLE["protected"]


def method_colors(labels: Iterable[str]) -> dict[str, str]:
    """``{label: method_color(label)}`` for the keys of a dict of runs, schedules or metrics."""
    return {label: method_color(label) for label in labels}


def dp_training_curves(runs: Mapping[str, object], smooth: int = 5):
    """Static training-loss curves of several DP runs (the live :class:`gleak_edu.widgets.TrainingCurves`, kept).

    Args:
        runs: ``{label: DPRun}`` (its ``step_loss``: the mean training loss of each step's batch) or
            ``{label: [loss per step]}``.
        smooth: running mean over this many steps.
    """
    curves = {k: list(getattr(r, "step_loss", r)) for k, r in runs.items()}
    fig = training_curves_figure(curves, smooth=smooth, colors=method_colors(curves))
    fig.axes[0].set_title(f"training loss per step (running mean over {smooth} steps)", fontsize=STYLE["title_size"])
    return fig


def _number(x: float) -> str:
    """1e-05 -> "1e-5"."""
    return f"{x:g}".replace("e-0", "e-").replace("e+0", "e+")


def _short(attack: str) -> str:
    return _SHORT.get(attack, ATTACKS[attack].name if attack in ATTACKS else attack)


def dp_checkpoint_grid(runs: Mapping[str, object], private: torch.Tensor, *, image: int = 0,
                       attacks: Sequence[str] | None = None, success_ssim: float = metrics.SUCCESS_SSIM):
    """The attacks at the checkpoints of each run: one row per method, the private image first.

    Each reconstruction is the best attack's (highest SSIM) at that checkpoint; its title gives
    the step, that step's noise multiplier σ (noise std σ·C), and every attack's SSIM, the best
    first, in vermillion when the best reaches ``success_ssim`` (the attack succeeds) and in blue
    otherwise.

    Args:
        runs: ``{label: DPRun}`` with checkpoints (an :class:`gleak_edu.defenses.AttackPlan`).
        private: the attacked images float ``[M, C, H, W]`` in [0, 1] (the plan's images).
        image: which of the plan's images to show.
        attacks: the attack keys to compare (default: those each checkpoint holds, e.g. "idlg", "ig").
        success_ssim: the success threshold (the course's 0.6).

    Raises:
        ValueError: for runs without checkpoints.
    """
    plt = _plt()
    runs = {k: r for k, r in runs.items()}
    if not runs or any(not r.checkpoints for r in runs.values()):
        raise ValueError("every run needs checkpoints: train it with an AttackPlan")
    ncols = 1 + max(len(r.checkpoints) for r in runs.values())
    cell = 1.45
    fig, axes = plt.subplots(len(runs), ncols, figsize=(cell * ncols + 0.5, (cell + 0.2) * len(runs)), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
    original = to_numpy_image(torch.as_tensor(private)[image])
    for r, (label, run) in enumerate(runs.items()):
        ax = axes[r, 0]
        ax.imshow(original, cmap=STYLE["cmap"], vmin=0, vmax=1)
        ax.set_ylabel("no DP" if label == "none" else label, fontsize=8, color=method_color(label), weight="bold")
        ax.set_title("private" if r == 0 else "", fontsize=7)
        for c, cp in enumerate(run.checkpoints):
            keys = [a for a in (attacks or ("idlg", "ig", "dlg")) if a in cp]
            ssim = {a: cp[a]["ssim"][image] for a in keys}
            best = max(keys, key=lambda a: ssim[a])
            ax = axes[r, c + 1]
            rec = torch.tensor(cp[best]["reconstructions"][image])
            ax.imshow(to_numpy_image(rec), cmap=STYLE["cmap"], vmin=0, vmax=1)
            sigma = "no DP" if run.method == "none" else f"σ {cp['noise_multiplier']:.2g}"
            scores = " · ".join(f"{_short(a)} {ssim[a]:.2f}" for a in sorted(keys, key=lambda a: -ssim[a]))
            leaked = ssim[best] >= success_ssim
            ax.set_title(f"after step {cp['step']}, {sigma}\nSSIM {scores}", fontsize=6.5,
                         color=ROLE["leak"] if leaked else ROLE["protected"])
    fig.text(0.5, 0.005, f"image: the better attack's reconstruction; title: each attack's SSIM, best first; "
             f"vermillion: success (SSIM ≥ {success_ssim:g}), blue: failure", ha="center", fontsize=7, color="0.3")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    return fig


def dp_metrics_figure(report: Mapping[str, Mapping[str, float]]):
    """The four metrics side by side: accuracy, ε, attack success rate, mean SSIM of the best attack.

    Args:
        report: ``{label: DPRun.summary()}`` (keys ``test_accuracy`` in [0, 1], ``epsilon`` at the
            run's δ (inf without DP, drawn as a grey "∞" bar), ``attack_success_rate`` in [0, 1], ``ssim``;
            with ``attack_success_low``, ``attack_success_high`` and ``attack_n``, as ``DPRun.summary()`` gives
            them, the success bars carry their 95 % Wilson interval).
    """
    plt = _plt()
    colors = method_colors(report)
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.3))
    delta = next((s.get("delta") for s in report.values() if s.get("delta")), None)
    panels = (
        ("test_accuracy", 100, "test accuracy (%)", "{:.1f}", "accuracy"),
        ("epsilon", 1, "ε" + (f" at δ = {_number(delta)}" if delta else ""), "{:.3g}", "privacy spent (∞: no DP)"),
        ("attack_success_rate", 100, f"attack success (%, SSIM ≥ {metrics.SUCCESS_SSIM:g})", "{:.0f}",
         "attack success rate"),
        ("ssim", 1, "mean SSIM of the best attack", "{:.2f}", "reconstruction quality"),
    )
    for ax, (key, scale, ylabel, fmt, title) in zip(axes, panels):
        values = {m: scale * s[key] if math.isfinite(s[key]) else s[key] for m, s in report.items()}
        metric_bars(values, ylabel, ax=ax, fmt=fmt, title=title, colors=colors)
        if key == "attack_success_rate" and all(s.get("attack_success_low") is not None for s in report.values()):
            rates = [100 * s[key] for s in report.values()]
            lows = [100 * s["attack_success_low"] for s in report.values()]
            highs = [100 * s["attack_success_high"] for s in report.values()]
            ax.errorbar(range(len(rates)), rates, yerr=[[r - lo for r, lo in zip(rates, lows)],
                                                        [hi - r for r, hi in zip(rates, highs)]],
                        fmt="none", ecolor="0.2", elinewidth=1, capsize=3, zorder=5)
            ax.set_ylim(0, 110)
            n = {s["attack_n"] for s in report.values()}
            ax.set_title(f"{title}\n(95 % Wilson interval, n = {'/'.join(map(str, sorted(n)))})",
                         fontsize=ax.title.get_fontsize())
    fig.tight_layout()
    return fig


def noise_return_figure(run, private: torch.Tensor, *, attack: str = "ig", image: int = 0,
                        success_ssim: float = metrics.SUCCESS_SSIM):
    """Where the attack comes back along a decaying schedule: reconstructions, and SSIM against σ.

    Top: the private image, then the attack's reconstruction after each checkpoint, titled with that
    step's noise multiplier σ and the SSIM (vermillion: success, blue: failure). Bottom: SSIM against
    σ on a log axis (σ falls from left to right, as in training), with the success threshold dashed.

    Args:
        run: a DPRun whose checkpoints hold ``attack``.
        private: the plan's images float ``[M, C, H, W]`` in [0, 1]; image: which one.
        attack: the attack key ("ig" or "idlg").
    """
    plt = _plt()
    cps = [cp for cp in run.checkpoints if attack in cp]
    if not cps:
        raise ValueError(f"the run has no checkpoint attacked with {attack!r}")
    n = len(cps) + 1
    width = max(6.5, 0.95 * n)
    fig = plt.figure(figsize=(width, 1.25 * width / n + 2.6))
    grid = fig.add_gridspec(2, n, height_ratios=(1.25 * width / n, 2.1), hspace=0.35, left=0.08, right=0.98,
                            top=0.93, bottom=0.15)
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(to_numpy_image(torch.as_tensor(private)[image]), cmap=STYLE["cmap"], vmin=0, vmax=1)
    ax.set_title("private", fontsize=7)
    ax.axis("off")
    sigmas, ssims = [], []
    for i, cp in enumerate(cps):
        s = cp[attack]["ssim"][image]
        sigmas.append(cp["noise_multiplier"])
        ssims.append(s)
        ax = fig.add_subplot(grid[0, i + 1])
        ax.imshow(to_numpy_image(torch.tensor(cp[attack]["reconstructions"][image])), cmap=STYLE["cmap"], vmin=0, vmax=1)
        ax.set_title(f"σ {cp['noise_multiplier']:.2g}\nSSIM {s:.2f}", fontsize=7,
                     color=ROLE["leak"] if s >= success_ssim else ROLE["protected"])
        ax.axis("off")
    ax = fig.add_subplot(grid[1, :])
    ax.plot(sigmas, ssims, color=ROLE["protected"], lw=1.2, zorder=1)
    ax.scatter(sigmas, ssims, c=[ROLE["leak"] if s >= success_ssim else ROLE["protected"] for s in ssims], zorder=2)
    ax.axhline(success_ssim, color=ROLE["threshold"], ls="--", lw=1)
    ax.text(min(sigmas), success_ssim - 0.04, f"success: SSIM ≥ {success_ssim:g}", fontsize=7,
            color=ROLE["threshold"], ha="right", va="top")
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel(NOISE_MULTIPLIER_LABEL + " of the attacked step (C = 1 here: it is the noise std)"
                  if run.max_grad_norm == 1 else NOISE_MULTIPLIER_LABEL + " of the attacked step")
    ax.set_ylabel(f"SSIM ({_short(attack)})")
    ax.set_ylim(-0.1, 1.05)
    ax.set_title(f"{ATTACKS[attack].name} on one digit's shared gradient as the noise decays",
                 fontsize=STYLE["title_size"])
    return fig
