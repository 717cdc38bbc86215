"""Exercises, questions and checks of notebook 02 (GRNN).

The notebook imports this module as ``ex``; the core helpers are re-exported.

* :func:`check_grnn_loss` -- scaffold: the student writes GRNN's objective.
* :func:`race_outcome` and the prediction ``"02.race"`` -- which attack keeps a batch
  recognisable (predict first, then run).
* the why question ``"02.why_generator"`` (:func:`ask`).
* :func:`check_tv` -- the total-variation exercise: from which weight does the prior flatten the face?
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from gleak_edu import fl, metrics
from gleak_edu.attacks import grnn, total_variation
from gleak_edu.exercises import (
    Feedback,
    Question,
    ask,
    check_function,
    correct,
    course_checks,
    hint,
    predict,
    register,
    reveal,
    unanswered,
)

__all__ = [
    "FLAT_SSIM",
    "Feedback",
    "TV_CANDIDATES",
    "ask",
    "check_grnn_loss",
    "check_tv",
    "course_checks",
    "grnn_loss",
    "predict",
    "race_outcome",
    "reveal",
    "successes",
    "tv_breaking_point",
]

#: The total-variation weights the TV exercise tries (the paper's LeNet weight is 1e-3).
TV_CANDIDATES = (0.0, 1e-3, 1e-1, 1.0, 10.0)

#: Below this SSIM a reconstruction shows nothing of the image (the course's band, see ``metrics``).
FLAT_SSIM = 0.3

register(
    Question(
        key="02.race",
        prompt=("Notebook 01's LeNet shares the gradient of a batch of 4 photos. DLG and GRNN get the budgets "
                "above. Which attack still returns recognisable images (most of the 4 a success, SSIM >= 0.6)?"),
        options={
            "a": "both: at batch 1 both work, and 4 images are only 4 times the work",
            "b": "GRNN only: its generator keeps the images natural-looking, DLG's pixel search gets lost",
            "c": "DLG only: it gets more gradient evaluations than GRNN",
            "d": "neither: one averaged gradient cannot separate 4 images",
        },
        explanation=(
            "a batch gradient is the *average* of the images' gradients, so many different batches share "
            "nearly the same gradient. DLG's pixel search lands on one of them (noise that matches the "
            "gradient); GRNN's generator produces every image with the same smooth, shared convolution "
            "filters, which favours the natural-looking solution. The labels are another story: both find "
            "them all, because they sit in the output layer's gradient (notebook 01's iDLG rule)."
        ),
    ),
    Question(
        key="02.why_generator",
        prompt="Why does GRNN keep a batch of 4 recognisable where DLG, on the same victim, does not?",
        options={
            "a": "GRNN is given more gradient evaluations than DLG",
            "b": "the generator has fewer unknowns than the batch has pixels, so the search is smaller",
            "c": "many batches have nearly the same averaged gradient; the generator's shared, smooth "
                 "convolutions favour the natural-looking one among them",
            "d": "GRNN reads the labels from the output layer first, as iDLG does, and DLG does not",
        },
        answer="c",
        hints={
            "a": "look at the evaluations column of the race table: which attack used more?",
            "b": "compare the generator's parameter count (printed in section 1) with the batch's pixels.",
            "d": "look at the labels column: which labels does DLG get right, even where its images are noise?",
        },
        explanation=(
            "the generator has far *more* unknowns than the pixels, and DLG gets more evaluations and all the "
            "labels. What differs is the prior: every image comes out of the same upsampling convolutions, so "
            "among the many batches whose gradient matches, GRNN finds a natural-looking one."
        ),
    ),
)


def successes(result) -> int:
    """How many images of a result are an attack success (SSIM >= 0.6 to their private image)."""
    ssim = result.metrics.get("ssim")
    if ssim is None:
        raise ValueError("the result carries no SSIM: run the attack with truth=(images, labels)")
    return int(sum(float(s) >= metrics.SUCCESS_SSIM for s in ssim))


def race_outcome(dlg_runs: Mapping[int, object], grnn_runs: Mapping[int, object], batch: int | None = None) -> str:
    """The option of question ``"02.race"`` that the runs support, at ``batch`` (default: the largest run).

    An attack "keeps the batch recognisable" when more than half of its images are a success
    (SSIM >= 0.6). Returns ``"a"`` (both), ``"b"`` (GRNN only), ``"c"`` (DLG only) or ``"d"`` (neither).
    """
    b = max(set(dlg_runs) & set(grnn_runs)) if batch is None else int(batch)
    if b not in dlg_runs or b not in grnn_runs:
        raise KeyError(f"no run of both attacks at batch {b}; batches run: DLG {sorted(dlg_runs)}, GRNN {sorted(grnn_runs)}")
    d, g = (2 * successes(runs[b]) > b for runs in (dlg_runs, grnn_runs))
    return {(True, True): "a", (False, True): "b", (True, False): "c", (False, False): "d"}[(d, g)]


# --------------------------------------------------------------------------------------------------
# Scaffold: GRNN's objective


def grnn_loss(fake_grads: Sequence[torch.Tensor], true_grads: Sequence[torch.Tensor], fake_images: torch.Tensor,
              tv_weight: float) -> torch.Tensor:
    """GRNN's objective (the reference): ``||g - g*||^2 + ||g - g*|| + tv_weight * TV(fake_images)``.

    ``g`` and ``g*`` are all parameters' gradients, flattened and joined; TV is
    :func:`gleak_edu.attacks.total_variation` (mean absolute difference of neighbouring pixels,
    down plus across). The same formula as :func:`gleak_edu.attacks.grnn` minimises.
    """
    diff = torch.cat([(f - t).reshape(-1) for f, t in zip(fake_grads, true_grads)])
    sq = (diff**2).sum()
    return sq + sq.sqrt() + tv_weight * total_variation(fake_images)


def _loss_cases() -> list[tuple]:
    gen = torch.Generator().manual_seed(2)
    cases = []
    for shapes, b, tv in ((((6, 3, 5, 5), (6,), (10, 24)), 1, 1e-3), (((4, 1, 3, 3), (4,)), 2, 0.0), (((5,), (3, 5)), 3, 10.0)):
        fake = [torch.randn(s, generator=gen) for s in shapes]
        true = [torch.randn(s, generator=gen) for s in shapes]
        images = torch.rand(b, 3, 8, 8, generator=gen)
        cases.append((fake, true, images, tv))
    return cases


def check_grnn_loss(student) -> Feedback:
    """Check the student's GRNN objective against :func:`grnn_loss` on three small random cases."""
    return check_function(
        student, grnn_loss, _loss_cases(), what="your GRNN objective",
        hint_text=("The distance runs over *all* parameters together: join the differences into one vector, "
                   "square and sum for the first term; the second term is the square root of the first (a norm, "
                   "not squared); the TV term is weighted by tv_weight. Check each term on its own."),
    )


# --------------------------------------------------------------------------------------------------
# The TV exercise


def tv_breaking_point(victim, x: torch.Tensor, y: torch.Tensor, *, candidates: Sequence[float] = TV_CANDIDATES,
                      iterations: int = 300, seed: int = 0, threshold: float = FLAT_SSIM) -> float | None:
    """The smallest weight in ``candidates`` at which GRNN's reconstruction of ``(x, y)`` shows nothing of it.

    GRNN (``iterations`` updates, ``seed``) runs once per weight on the victim's gradient of
    ``(x, y)``, in increasing order; "shows nothing" means mean SSIM below ``threshold`` (0.3, the
    course's band for a reconstruction that shows nothing of the image). Returns None when no
    weight gets there.
    """
    shared = fl.client_gradient(victim, x, y)
    for tv in sorted(candidates):
        r = grnn(victim, shared, input_shape=tuple(x.shape), num_classes=victim.num_classes, iterations=iterations,
                 seed=seed, tv_weight=tv, truth=(x, y))
        if r.metrics["ssim_mean"] < threshold:
            return float(tv)
    return None


def check_tv(answer, victim, x: torch.Tensor, y: torch.Tensor, *, candidates: Sequence[float] = TV_CANDIDATES,
             iterations: int = 300, seed: int = 0) -> Feedback:
    """Check the TV exercise: ``answer`` is the smallest of ``candidates`` at which GRNN's image shows nothing.

    The reference is recomputed here with the notebook's settings (victim, image, iterations,
    seed), so it follows a student who changed them. Wrong answers get a hint, never the value.
    """
    if answer is None or answer is Ellipsis:
        return unanswered("set `tv_hurts` to the smallest weight whose reconstruction shows nothing of the face "
                          "(SSIM below 0.3).")
    try:
        value = float(answer)
    except (TypeError, ValueError):
        return hint("`tv_hurts` should be one number, one of the weights you tried.")
    if not any(abs(value - c) <= 1e-12 + 1e-6 * abs(c) for c in candidates):
        return hint(f"`tv_hurts` should be one of the weights you tried: {list(candidates)}.")
    ref = tv_breaking_point(victim, x, y, candidates=candidates, iterations=iterations, seed=seed)
    if ref is None:
        return hint("at these settings no weight you tried flattens the face below SSIM 0.3; did you change SEED "
                    "or the number of updates? Set them back, or add a larger weight to the candidates.")
    if abs(value - ref) <= 1e-12 + 1e-6 * abs(ref):
        return correct("from that weight on, the TV term outweighs the gradient match: the generator trades the "
                       "face's edges, which the gradient asks for, for a flat image with almost no variation.")
    if value < ref:
        return hint("at that weight the reconstruction still shows the face (SSIM 0.3 or more): read the SSIM in "
                    "each panel's title, from the left, and find the first one below 0.3.")
    return hint("a smaller weight already flattens the face: read the panels from the left and stop at the first "
                "SSIM below 0.3.")
