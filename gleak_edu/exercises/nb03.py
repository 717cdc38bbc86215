"""Exercises, questions and checks of notebook 03 (PRECODE and its bypass).

The notebook imports this module as ``ex``; the core helpers are re-exported.

* the prediction ``"03.which_change"`` and :func:`which_changed` -- which parameters' gradients change
  between two computations on the same photo (predict first, then run).
* :func:`row_cosines` and :func:`scale_and_direction` -- direction against value, measured.
* the why questions ``"03.why_bypass"`` (why the bypass works although its gradients change) and
  ``"03.why_width"`` (why the bottleneck's width does not matter to it), checked with :func:`ask`.
* the bottleneck-width exercise: :func:`precode_victim` (the reference the student rebuilds),
  :func:`check_victim` (scaffold check) and :func:`check_widths` (the measured SSIMs).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from gleak_edu import fl, metrics, models
from gleak_edu.attacks import precode_bypass
from gleak_edu.exercises import (
    Feedback,
    Question,
    ask,
    correct,
    course_checks,
    hint,
    predict,
    register,
    reveal,
    unanswered,
)
from gleak_edu.precode import VariationalBottleneck, add_precode

__all__ = [
    "Feedback",
    "WIDTHS",
    "ask",
    "check_victim",
    "check_widths",
    "course_checks",
    "predict",
    "precode_victim",
    "reveal",
    "row_cosines",
    "scale_and_direction",
    "which_changed",
    "width_runs",
]

#: The bottleneck widths K of the exercise (PRECODE's default is 256).
WIDTHS = (16, 1024)

register(
    Question(
        key="03.which_change",
        prompt=("The client computes its gradient twice on the same photo, with PRECODE in train mode (two "
                "samples of z). Which parameters' gradients come out different?"),
        options={
            "a": "none: the same photo and the same weights give the same gradient",
            "b": "only those of the decoder and the output layer, the layers after the sample",
            "c": "all of them, also those of the layers before the sample",
        },
        explanation=(
            "the sample changes the output, so it changes the error that flows *back* from the output through "
            "every layer: every gradient changes value, also before the sample (cosine well below 1). What does "
            "not change before the sample is the *direction* of each row of a weight gradient: a row is (a "
            "number) × that layer's input, and the input does not depend on z."
        ),
    ),
    Question(
        key="03.why_bypass",
        prompt=("The gradients the bypass matches change from one computation to the next (cosine about 0.8). "
                "Why does matching them still recover the photo?"),
        options={
            "a": "0.8 is close enough to 1: any two gradients that similar come from the same image",
            "b": "each row of the first layer's gradient is (a number that changes with z) × x: the sample "
                 "changes the numbers, not the direction x, and the cosine is largest when the image matches",
            "c": "the attacker seeds its random generator like the victim, so it sees the same sample",
            "d": "the total-variation prior fills in what the random gradients lack",
        },
        answer="b",
        hints={
            "a": ("the cosine of 0.8 is over the whole tensor. Look at the black diamonds of the figure: what "
                  "is the cosine of each *row* of a weight gradient before the sample?"),
            "c": ("reread section 5: in which mode does the attacker compute its own gradients, and does the "
                  "victim's seed ever leave the client?"),
            "d": ("the prior is a small term (weight 1e-3 in the bypass, 1e-4 in IG); Inverting Gradients on all "
                  "layers has one too and fails on PRECODE. What differs between the two attacks?"),
        },
        explanation=(
            "for a fully connected layer with input a, the gradient of row i is δ_i · a. The sample changes the "
            "numbers δ_i (the error flowing back), never the direction a. The first layer's term of the cosine "
            "objective is cos(δ', δ*) · cos(x', x): whatever the δs do, it is largest when x' points like x. "
            "The bypass matches directions, which is exactly what survives the sample."
        ),
    ),
    Question(
        key="03.why_width",
        prompt="Why does the bottleneck's width K make no difference to the bypass?",
        options={
            "a": "a wider bottleneck draws more random numbers, so it should help; the run was too short to show it",
            "b": "the bypass matches the layers before the sample: K changes only the size of the encoder's "
                 "output, while the first layers' gradient rows are still (a number) × their input",
            "c": "with K = 1024 the bottleneck is wider than the 256 features, so it copies them unchanged",
            "d": "the attacker is told K, and it would fail without it",
        },
        answer="b",
        hints={
            "a": ("look at which parameters the bypass matches (`deterministic_parameters`): which of them sees "
                  "the random numbers in its gradient's direction?"),
            "c": ("the decoder still sees a random sample at either width; and K = 16 gave the bypass no trouble "
                  "either. What do both widths leave unchanged?"),
            "d": ("the attacker knows the whole architecture in this threat model, at every K; the question is why "
                  "the attack works equally well at both widths."),
        },
        explanation=(
            "K sets how many random numbers the sample draws and the shape of the encoder and decoder. The "
            "bypass never looks at the decoder or the output layer, and the layers it matches have gradient rows "
            "(a number) × their input, whatever K is. PRECODE's knobs (K, β) move the randomness after the "
            "sample; they cannot reach the layers before it."
        ),
    ),
)


# --------------------------------------------------------------------------------------------------
# Where the randomness lives


def which_changed(cosines: Mapping[str, float], deterministic: list[str] | tuple[str, ...]) -> str:
    """The option of ``"03.which_change"`` the measured cosines support.

    Args:
        cosines: ``{parameter name: cosine of two gradient computations}``
            (:func:`gleak_edu.defenses.gradient_stochasticity`).
        deterministic: the parameters before the sample (:func:`gleak_edu.defenses.deterministic_parameters`).

    Returns:
        ``"a"`` when every gradient is the same (all cosines > 0.999), ``"c"`` when a gradient before the sample
        changes too (a cosine there < 0.99), ``"b"`` otherwise.
    """
    if all(c > 0.999 for c in cosines.values()):
        return "a"
    if any(cosines[n] < 0.99 for n in deterministic):
        return "c"
    return "b"


def row_cosines(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """Per weight matrix, how well each row's *direction* survives PRECODE's sample.

    Computes the gradient twice on the same (x, y) in train mode, exactly as
    :func:`gleak_edu.defenses.gradient_stochasticity` does with the same ``seed`` (two samples of z), and
    for every 2-D parameter returns the mean over its rows of ``|cos(row in run 1, row in run 2)|`` (the
    sign is ignored: a row that flips sign keeps its direction as a line). Rows that are zero in either run
    are skipped. 1 means every row points the same way in both runs, whatever its length.

    Returns:
        ``{parameter name: mean |row cosine|}`` for the weight matrices, in ``named_parameters()`` order.
    """
    was_training = model.training
    model.train()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            g1 = fl.client_gradient(model, x, y)
            g2 = fl.client_gradient(model, x, y)
    finally:
        model.train(was_training)
    out = {}
    for name, a in g1.items():
        if a.ndim != 2:
            continue
        b = g2[name]
        ok = (a.norm(dim=1) > 0) & (b.norm(dim=1) > 0)
        if bool(ok.any()):
            out[name] = float(F.cosine_similarity(a[ok], b[ok], dim=1).abs().mean())
    return out


def scale_and_direction(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """What a gradient's size and its direction say, for one image.

    Returns:
        ``confidence``: the model's probability for the true class; ``norm``: the L2 norm of the whole
        gradient (all parameters); ``first_rows``: the smallest ``|cos|`` between a non-zero row of the first
        layer's weight gradient and the image x (flattened): 1 means every row points along x.

    Raises:
        ValueError: for a batch (one image only) or a model whose first parameter is not a matrix.
    """
    if x.shape[0] != 1:
        raise ValueError(f"scale_and_direction looks at one image, got a batch of {x.shape[0]}")
    g = fl.client_gradient(model, x, y)
    first = next(iter(g.values()))
    if first.ndim != 2:
        raise ValueError("the model's first parameter is not a fully connected weight matrix")
    with torch.no_grad():
        confidence = float(torch.softmax(model(x), dim=1)[0, int(y[0])])
    rows = first[first.norm(dim=1) > 0]
    align = F.cosine_similarity(rows, x.reshape(1, -1).expand_as(rows), dim=1).abs()
    norm = math.sqrt(sum(float((t.double() ** 2).sum()) for t in g.values()))
    return {"confidence": confidence, "norm": norm, "first_rows": float(align.min())}


# --------------------------------------------------------------------------------------------------
# The exercise: does the bottleneck's width help the defense?


def precode_victim(width: int, x: torch.Tensor, y: torch.Tensor, seed: int = 0):
    """The reference victim of the exercise: (model, shared gradient).

    An untrained MLP for 32x32 photos, 100 classes (``models.build_model("mlp", (3, 32, 32), 100,
    seed=seed, init="pytorch")``), PRECODE with bottleneck ``width`` (``add_precode(net,
    bottleneck=width, seed=seed)``), then ``torch.manual_seed(seed)`` (the client's bottleneck sample)
    and the client's gradient of (x, y), in train mode.
    """
    net = models.build_model("mlp", tuple(x.shape[1:]), 100, seed=seed, init="pytorch")
    add_precode(net, bottleneck=int(width), seed=seed)
    torch.manual_seed(int(seed))
    return net, fl.client_gradient(net, x, y)


def _same_gradient(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    return list(a) == list(b) and all(a[n].shape == b[n].shape and bool(torch.allclose(a[n], b[n], atol=1e-6, rtol=1e-4))
                                      for n in a)


def check_victim(student: Callable[[int], Any], x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> Feedback:
    """Check the student's ``victim(width)`` -> (model, shared) against :func:`precode_victim` at K = 16.

    Prints ``Correct`` when the model has a bottleneck of that width and the shared gradient equals the
    reference's (same weights, same sample); a hint on what differs otherwise.
    """
    try:
        out = student(16)
    except NotImplementedError:
        return unanswered("`victim` is not written yet: replace the `...` and run the cell again.")
    except Exception as exc:  # the student's code failed: say how
        return hint(f"victim(16) raised {type(exc).__name__}: {exc}. Build the model, add the bottleneck, "
                    "seed, then compute the client's gradient.")
    if out is None or out is Ellipsis or (isinstance(out, tuple) and any(o is Ellipsis or o is None for o in out)):
        return unanswered("`victim` is not written yet: replace the `...` (and return the model and the gradient).")
    if not (isinstance(out, tuple) and len(out) == 2):
        return hint("victim(width) should return two things: the model and its shared gradient.")
    net, shared = out
    if not isinstance(net, nn.Module):
        return hint("the first value should be the model (the network you built), the second its shared gradient.")
    widths = [m.bottleneck for m in net.modules() if isinstance(m, VariationalBottleneck)]
    if widths != [16]:
        return hint("the model has no bottleneck of the width you passed: call add_precode(net, bottleneck=width, "
                    "seed=...) on the model before computing the gradient.")
    _, want = precode_victim(16, x, y, seed)
    if not isinstance(shared, Mapping) or list(shared) != list(want):
        return hint("the second value should be the shared gradient, `fl.client_gradient(net, x, y)`, "
                    "a dictionary with one entry per parameter.")
    if not _same_gradient(shared, want):
        return hint(f"the gradient differs from the victim's: same model seed ({seed}) for build_model and "
                    f"add_precode, and torch.manual_seed({seed}) right before fl.client_gradient (the client's "
                    "sample)?")
    return correct("victim(width) builds the exercise's victim and its shared gradient.")


def width_runs(x: torch.Tensor, y: torch.Tensor, *, iterations: int = 300, seed: int = 0,
               widths: tuple[int, ...] = WIDTHS) -> dict[int, float]:
    """The reference: the bypass's SSIM at each bottleneck width (``iterations`` steps, default settings)."""
    out = {}
    for k in widths:
        net, shared = precode_victim(k, x, y, seed)
        res = precode_bypass(net, shared, input_shape=tuple(x.shape), num_classes=100, iterations=iterations,
                             truth=(x, y))
        out[int(k)] = float(res.metrics["ssim_mean"])
    return out


def check_widths(ssim_by_width: Mapping[int, float] | None, x: torch.Tensor, y: torch.Tensor, *,
                 iterations: int = 300, seed: int = 0) -> Feedback:
    """Check ``{16: SSIM, 1024: SSIM}`` of the bypass against a recomputation (same victim, same settings).

    Never prints the expected values: a wrong entry gets a hint on the settings to compare.
    """
    if ssim_by_width is None or not isinstance(ssim_by_width, Mapping) or not ssim_by_width:
        return unanswered("fill `ssim_by_width` with the bypass's SSIM for each width, e.g. {16: ..., 1024: ...}.")
    missing = [k for k in WIDTHS if k not in ssim_by_width or ssim_by_width[k] is None or ssim_by_width[k] is Ellipsis]
    if missing:
        return unanswered(f"no SSIM yet for width(s) {missing}: run the bypass on each victim.")
    try:
        got = {k: float(ssim_by_width[k]) for k in WIDTHS}
    except (TypeError, ValueError):
        return hint("each value should be a number: the result's `.metrics['ssim_mean']`.")
    if any(not -1 <= v <= 1 for v in got.values()):
        return hint("an SSIM lies between -1 and 1: store `.metrics['ssim_mean']`, not the PSNR or the loss.")
    ref = width_runs(x, y, iterations=iterations, seed=seed)
    off = [k for k in WIDTHS if abs(got[k] - ref[k]) > 0.05]
    if off:
        return hint(f"the SSIM for width {off[0]} is not what this victim gives: build it with victim({off[0]}), "
                    f"run precode_bypass(net, shared, input_shape=x.shape, num_classes=100, "
                    f"iterations={iterations}, truth=(x, y)) and store its .metrics['ssim_mean'].")
    both = all(metrics.SUCCESS_SSIM <= ref[k] for k in WIDTHS)
    return correct("those are the bypass's SSIMs at both widths"
                   + (" (both an attack success: SSIM >= 0.6)." if both else ".")
                   + " Now the question below: why does the width not matter?")
