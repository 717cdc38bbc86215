"""Figures of notebook 02 (GRNN): the race against DLG, re-identification, the TV prior.

Colours (from :mod:`gleak_edu.viz.palette`): GRNN, the attack the notebook
teaches, is vermillion (``ROLE["leak"]``); DLG, notebook 01's attack and the
baseline here, is grey (``ROLE["reference"]``); the course's success line
(SSIM 0.6, :data:`gleak_edu.metrics.SUCCESS_SSIM`) is dark grey and dashed; a
gallery match that is the victim's own photo is titled in vermillion (it leaks),
any other match in black.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from gleak_edu import metrics
from gleak_edu.viz._base import STYLE, _finish, _plt, to_numpy_image
from gleak_edu.viz.palette import ROLE

__all__ = ["ATTACK_COLORS", "gallery_neighbours", "race_figure", "race_images", "race_table", "reid_figure", "tv_figure"]

#: Colour of each attack in notebook 02's figures.
ATTACK_COLORS = {"GRNN": ROLE["leak"], "DLG": ROLE["reference"]}


def _per_image_ssim(result) -> list[float]:
    ssim = result.metrics.get("ssim")
    if ssim is None:
        raise ValueError(f"the {result.attack} result carries no SSIM: run the attack with truth=(images, labels)")
    return [float(s) for s in ssim]


def race_table(runs: Mapping[str, Mapping[int, object]], budgets: Mapping[str, int] | None = None) -> str:
    """A text table of the race: one row per (batch size, attack).

    Args:
        runs: ``{attack name: {batch size: AttackResult}}`` (results computed with ``truth=(x, y)``).
        budgets: ``{attack name: the most gradient evaluations it was allowed}``, printed beside
            the evaluations it used (optional).

    Returns:
        The table as a string (print it). Columns: batch, attack, mean PSNR (dB), mean SSIM,
        success (images with SSIM >= 0.6, of the batch, with the 95 % Wilson interval of the rate in %:
        :func:`gleak_edu.metrics.success_rate`), label accuracy, gradient evaluations
        used (of the budget), retries (DLG's fresh restarts after a stalled or exploding run),
        seconds of compute.
    """
    head = f"{'batch':>5} | {'attack':>6} | {'PSNR (dB)':>9} | {'SSIM':>5} | {'success [95 % CI]':>17} | {'labels':>6} | {'evaluations':>13} | {'retries':>7} | {'seconds':>7}"
    lines = [head, "-" * len(head)]
    batches = sorted({b for per in runs.values() for b in per})
    for b in batches:
        for name, per in runs.items():
            if b not in per:
                continue
            r = per[b]
            m = r.metrics
            per_image = _per_image_ssim(r)
            success = metrics.rate_brief(metrics.success_rate([s >= metrics.SUCCESS_SSIM for s in per_image]).row_fields())
            ev = f"{r.evaluations}" + (f" / {budgets[name]}" if budgets and name in budgets else "")
            labels = "-" if m.get("label_accuracy") is None else f"{m['label_accuracy']:.0%}"
            lines.append(f"{b:>5} | {name:>6} | {m['psnr_mean']:9.1f} | {m['ssim_mean']:5.2f} | {success:>17} | "
                         f"{labels:>6} | {ev:>13} | {r.retries:>7} | {r.seconds:7.1f}")
    return "\n".join(lines)


def race_figure(runs: Mapping[str, Mapping[int, object]], title: str | None = None):
    """SSIM against batch size, one line per attack: the mean, and a dot per image.

    Args:
        runs: ``{attack name: {batch size: AttackResult}}`` (with truth); GRNN is drawn in
            vermillion, DLG in grey (:data:`ATTACK_COLORS`), any other attack in black.
        title: the axes' title (default: none).

    Returns:
        The matplotlib Figure. The dashed line is the course's success threshold (SSIM 0.6);
        the x axis (batch size) is logarithmic with the measured sizes as ticks.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 3.0))
    batches = sorted({b for per in runs.values() for b in per})
    for k, (name, per) in enumerate(runs.items()):
        color = ATTACK_COLORS.get(name, ROLE["truth"])
        bs = sorted(per)
        shift = 1.0 + 0.04 * (k - (len(runs) - 1) / 2)  # keep the two attacks' dots apart
        for b in bs:
            s = _per_image_ssim(per[b])
            ax.scatter([b * shift] * len(s), s, s=14, color=color, alpha=0.55, linewidths=0)
        ax.plot([b * shift for b in bs], [per[b].metrics["ssim_mean"] for b in bs], "o-", color=color, lw=1.8, ms=5,
                label=f"{name} (mean; dots: each image)")
    ax.axhline(metrics.SUCCESS_SSIM, color=ROLE["threshold"], ls="--", lw=1)
    ax.text(batches[-1] * 1.35, metrics.SUCCESS_SSIM + 0.02, f"success: SSIM ≥ {metrics.SUCCESS_SSIM:g}", fontsize=7,
            color=ROLE["threshold"], ha="right")
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlim(batches[0] / 1.4, batches[-1] * 1.4)
    ax.set_ylim(-0.1, 1.05)
    ax.set_xlabel("batch size (images in the shared gradient)")
    ax.set_ylabel("SSIM to the private image")
    if title:
        ax.set_title(title, fontsize=STYLE["title_size"])
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    return fig


def race_images(truth: torch.Tensor, results: Mapping[str, object], caption: str | None = None):
    """The private batch (top row) above each attack's reconstruction, paired image by image.

    Args:
        truth: the private images ``[B, C, H, W]`` in [0, 1].
        results: ``{attack name: AttackResult}`` on that batch (with truth); a batch comes
            back in any order, so each row is reordered by ``metrics["order"]``.
        caption: a line under the figure (dataset and licence).

    Returns:
        The matplotlib Figure: one column per image; each reconstruction is titled with the
        attack's name and its SSIM, in the attack's colour when it is a success (SSIM >= 0.6)
        and in black otherwise.
    """
    plt = _plt()
    x = torch.as_tensor(truth)
    b = x.shape[0]
    rows = 1 + len(results)
    cell = STYLE["cell"]
    fig, axes = plt.subplots(rows, b, figsize=(cell * b, cell * rows + (0.3 if caption else 0)), squeeze=False)
    for j in range(b):
        axes[0, j].imshow(to_numpy_image(x[j]), cmap=STYLE["cmap"], vmin=0, vmax=1, interpolation="nearest")
        axes[0, j].set_title("private image", fontsize=STYLE["title_size"], color=ROLE["truth"])
    for i, (name, r) in enumerate(results.items(), start=1):
        rec = r.reconstruction[r.metrics["order"]]
        for j, s in enumerate(_per_image_ssim(r)):
            axes[i, j].imshow(to_numpy_image(rec[j]), cmap=STYLE["cmap"], vmin=0, vmax=1, interpolation="nearest")
            color = ATTACK_COLORS.get(name, ROLE["leak"]) if s >= metrics.SUCCESS_SSIM else ROLE["truth"]
            axes[i, j].set_title(f"{name}: SSIM {s:.2f}", fontsize=STYLE["title_size"], color=color)
    for ax in axes.flat:
        ax.axis("off")
    return _finish(fig, caption)


def gallery_neighbours(reconstructions: torch.Tensor, gallery: torch.Tensor, k: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` gallery images most similar (SSIM) to each reconstruction.

    Args:
        reconstructions: ``[B, C, H, W]`` in [0, 1].
        gallery: ``[N, C, H, W]`` in [0, 1], the same image shape.

    Returns:
        ``(indices, scores)``: int64 ``[B, k]`` gallery indices, most similar first, and
        float64 ``[B, k]`` their SSIM to the reconstruction. Index 0 of a row is the rank-1
        match of :func:`gleak_edu.metrics.reid_ranks` (same similarity).
    """
    rec = torch.as_tensor(reconstructions).detach().float()
    gal = torch.as_tensor(gallery).detach().float()
    if rec.ndim != 4 or gal.ndim != 4 or rec.shape[1:] != gal.shape[1:]:
        raise ValueError(f"reconstructions {tuple(rec.shape)} and gallery {tuple(gal.shape)} must be [B, C, H, W] images of one shape")
    scores = torch.stack([metrics.ssim(r[None].expand_as(gal), gal) for r in rec])
    top = scores.topk(min(k, gal.shape[0]), dim=1)
    return top.indices, top.values


def reid_figure(gallery: torch.Tensor, true_indices: Sequence[int], reconstructions: torch.Tensor, caption: str | None = None):
    """Re-identification, made visible: each reconstruction with its nearest gallery faces.

    One column per attacked face; rows: the private face, GRNN's reconstruction (titled
    with its SSIM to the private face), the gallery face most similar to the
    reconstruction (rank 1), and the runner-up (rank 2), each titled with its gallery
    index and its SSIM to the reconstruction. A match that is the private face itself is
    titled in vermillion ("it leaks"), any other face in black. The gap between the two
    matches' SSIM says how clearly the reconstruction singles out its photo.

    Args:
        gallery: ``[N, C, H, W]`` in [0, 1], the faces searched (it contains the private faces).
        true_indices: the gallery index of each attacked face (``B`` of them).
        reconstructions: ``[B, C, H, W]``, one per attacked face, in the same order.
        caption: a line under the figure (dataset and licence).

    Returns:
        The matplotlib Figure.
    """
    plt = _plt()
    ids = [int(i) for i in true_indices]
    rec = torch.as_tensor(reconstructions).detach().float()
    if rec.shape[0] != len(ids):
        raise ValueError(f"{rec.shape[0]} reconstructions but {len(ids)} true indices")
    idx, score = gallery_neighbours(rec, gallery, k=2)
    own = metrics.ssim(rec, gallery[ids])
    b = len(ids)
    cell = STYLE["cell"]
    fig, axes = plt.subplots(4, b, figsize=(cell * b, cell * 4 + (0.3 if caption else 0)), squeeze=False)
    for j, i in enumerate(ids):
        panels = [
            (gallery[i], f"private face {i}", ROLE["truth"]),
            (rec[j], f"reconstruction\nSSIM {float(own[j]):.2f} to it", ROLE["truth"]),
        ]
        for rank in range(idx.shape[1]):
            g = int(idx[j, rank])
            panels.append((gallery[g], f"rank {rank + 1}: face {g}\nSSIM {float(score[j, rank]):.2f}",
                           ROLE["leak"] if g == i else ROLE["truth"]))
        for r, (img, title, color) in enumerate(panels):
            axes[r, j].imshow(to_numpy_image(img), cmap=STYLE["cmap"], vmin=0, vmax=1, interpolation="nearest")
            axes[r, j].set_title(title, fontsize=STYLE["title_size"] - 1, color=color)
    for ax in axes.flat:
        ax.axis("off")
    return _finish(fig, caption)


def tv_figure(original: torch.Tensor, runs: Mapping[float, object], caption: str | None = None):
    """GRNN's reconstruction for each total-variation weight λ, beside the private image.

    Args:
        original: the private image ``[1, C, H, W]`` (or ``[C, H, W]``) in [0, 1].
        runs: ``{λ: AttackResult}`` (with truth), in the order to draw.
        caption: a line under the figure.

    Returns:
        The matplotlib Figure: one panel per weight, titled with λ and the SSIM to the
        private image, in vermillion when that is a success (SSIM >= 0.6), black otherwise.
    """
    plt = _plt()
    x = torch.as_tensor(original)
    if x.ndim == 4:
        x = x[0]
    n = 1 + len(runs)
    cell = STYLE["cell"]
    fig, axes = plt.subplots(1, n, figsize=(cell * n, cell + 0.7 + (0.3 if caption else 0)), squeeze=False)
    axes = axes[0]
    axes[0].imshow(to_numpy_image(x), cmap=STYLE["cmap"], vmin=0, vmax=1, interpolation="nearest")
    axes[0].set_title("private image", fontsize=STYLE["title_size"], color=ROLE["truth"])
    for ax, (tv, r) in zip(axes[1:], runs.items()):
        s = float(r.metrics["ssim_mean"])
        ax.imshow(to_numpy_image(r.reconstruction[0]), cmap=STYLE["cmap"], vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"λ = {tv:g}\nSSIM {s:.2f}", fontsize=STYLE["title_size"],
                     color=ROLE["leak"] if s >= metrics.SUCCESS_SSIM else ROLE["truth"])
    for ax in axes:
        ax.axis("off")
    return _finish(fig, caption)
