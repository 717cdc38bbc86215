"""Exercises, questions and checks of notebook 04 (PPP).

The notebook imports this module as ``ex``; the core helpers are re-exported.

* ``04.trend`` (predict first, then run): how PPP's accuracy moves with the
  noise multiplier; :func:`observed_trend` reads the answer off the student's sweep.
* ``04.why-rise`` (why): why PPP's accuracy rises at σ = 3.
* ``04.scope`` (why): why noise on the encoder alone fails and noise on the first layer alone nearly holds.
* Exercise ``attack-scope`` (scaffold): a function that perturbs a chosen set of
  layers and runs the bypass on chosen layers; :func:`check_attack_scope`.
* Exercise ``scope-table``: three defenses built with it; :func:`check_scope_table`.

A check recomputes its reference here and never prints it.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from gleak_edu.attacks import precode_bypass
from gleak_edu.defenses import perturbed_gradient
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

__all__ = [
    "ENCODER",
    "FIRST_LAYER",
    "SECOND_LAYER",
    "TREND_POINTS",
    "Feedback",
    "ask",
    "attack_scope",
    "check_attack_scope",
    "check_scope_table",
    "course_checks",
    "observed_trend",
    "predict",
    "reveal",
]

#: Parameter names of the course's PRECODE MLP (784-128-128-10 with the bottleneck): its deterministic layers.
FIRST_LAYER = ["features.0.weight", "features.0.bias"]
SECOND_LAYER = ["features.2.weight", "features.2.bias"]
ENCODER = ["classifier.0.encoder.weight", "classifier.0.encoder.bias"]

#: Points of accuracy a change must exceed to count as a rise or a fall (below it: "about flat").
TREND_POINTS = 2.0

register(
    Question(
        key="04.trend",
        prompt=("The sweep trains PPP at noise multipliers σ = 0.03, 0.3 and 3. How does PPP's test accuracy "
                "change from the smallest σ to the largest?"),
        options={
            "a": "it falls by more than 2 points: more noise, worse model",
            "b": "it stays within 2 points: PPP's noise never reaches the layers that decide",
            "c": "it rises by more than 2 points",
        },
        explanation=("more noise does not make better features here. At σ = 3 the noise swamps the clipped "
                     "gradients of the deterministic layers: they learn next to nothing from the data and drift into "
                     "larger random weights, and PRECODE's decoder and output layer, trained on clean, unclipped "
                     "gradients, learn the task on top of those random features. Section 6 tests this."),
    ),
    Question(
        key="04.why-rise",
        prompt="Why does PPP train a better model at σ = 3 than at σ = 0.3 in this notebook?",
        options={
            "a": "Noise regularises: the feature layers learn better, more general features from noisy gradients.",
            "b": ("At σ = 3 the feature layers learn next to nothing from the data; the noise makes them larger "
                  "random features, and the unclipped decoder and output layer learn the task on top."),
            "c": "At σ = 3 clipping switches off, so the feature layers finally get their full gradient.",
        },
        answer="b",
        explanation=("the random-features run matches PPP at σ = 3 without any data reaching the deterministic "
                     "layers, and the same layers frozen at their small initial weights do much worse. The rise is "
                     "a property of this short, clipped training (random features plus a clean back half), not a "
                     "benefit of noise; at σ = 10 it collapses."),
        hints={
            "a": ("if the feature layers learned better features, freezing them and giving them only the noise "
                  "should do much worse than PPP. Compare the random-features run with PPP at σ = 3."),
            "c": ("clipping does not depend on σ: every example's gradient is clipped to C = 1 at every noise "
                  "multiplier. Look at what the noise does to the size of the weights instead."),
        },
    ),
    Question(
        key="04.scope",
        prompt=("Noise on the encoder alone: the adaptive attacker rebuilds the digit. Noise on the first layer "
                "alone: the adaptive attacker gets only a faint trace. Why the difference?"),
        options={
            "a": "The encoder has fewer parameters than the first layer, so the same σ hides less there.",
            "b": ("For one digit, every row of the first layer's weight gradient is a multiple of the digit itself; "
                  "later layers only see a 128-number summary of it, which cannot pin down 784 pixels."),
            "c": "The bypass cannot match the encoder's gradient, so noising it changes nothing.",
        },
        answer="b",
        explanation=("the first layer's weight gradient is (dL/dh1) x^T: a clean first layer hands the image over "
                     "(notebook 03's analytic attack reads it off exactly), while the second layer and the encoder "
                     "see only h1 = tanh(W1 x + b1), 128 numbers. PPP has to noise every deterministic layer, and the "
                     "first one matters most."),
        hints={
            "a": ("the noise is N(0, (σC)²) on every perturbed entry, whatever the layer's size. Think about what a "
                  "single digit's first-layer gradient looks like, row by row."),
            "c": ("the bypass matches the encoder by default; the adaptive attacker simply left it out. Ask what "
                  "each remaining clean layer's gradient contains about the 784 pixels."),
        },
    ),
)


def observed_trend(sweep) -> str:
    """The option of ``04.trend`` that ``sweep`` supports: PPP's accuracy at its largest σ minus at its smallest.

    "a" when it falls by more than :data:`TREND_POINTS` points, "c" when it rises by more, "b" otherwise.

    Raises:
        ValueError: when the sweep has fewer than two noise multipliers.
    """
    rows = sweep.select("ppp", "bypass")
    if len(rows) < 2:
        raise ValueError("the sweep needs at least two noise multipliers to show a trend")
    change = 100 * (rows[-1]["accuracy"] - rows[0]["accuracy"])
    return "a" if change < -TREND_POINTS else ("c" if change > TREND_POINTS else "b")


def attack_scope(model, x: torch.Tensor, y: torch.Tensor, scope, layers: Sequence[str] | None = None, *,
                 seed: int = 0, noise_multiplier: float = 1.0, max_grad_norm: float = 1.0,
                 iterations: int = 300, num_classes: int = 10) -> float:
    """The exercise's reference: SSIM of the bypass on ``layers`` against a gradient perturbed on ``scope``.

    ``torch.manual_seed(seed)`` (PRECODE's sample), then
    :func:`gleak_edu.defenses.perturbed_gradient` with ``scope`` (noise std σ·C), then
    :func:`gleak_edu.attacks.precode_bypass` (``iterations`` steps, ``layers``: None means
    every deterministic layer); returns its mean SSIM to ``x``.
    """
    torch.manual_seed(seed)
    shared = perturbed_gradient(model, x, y, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
                                scope=scope, seed=seed)
    res = precode_bypass(model, shared, input_shape=tuple(x.shape), num_classes=num_classes,
                         iterations=iterations, truth=(x, y), layers=layers)
    return float(res.metrics["ssim_mean"])


_REFERENCE: dict = {}


def _fingerprint(model, x) -> tuple:
    with torch.no_grad():
        return (id(model), float(sum(p.double().abs().sum() for p in model.parameters())), float(x.double().sum()))


def _reference(model, x, y, scope, layers, seed) -> float:
    key = (_fingerprint(model, x), int(y.sum()), tuple(scope) if not isinstance(scope, str) else scope,
           tuple(layers) if layers is not None else None, int(seed))
    if key not in _REFERENCE:
        _REFERENCE[key] = attack_scope(model, x, y, scope, layers, seed=seed)
    return _REFERENCE[key]


def _number(value) -> float | None:
    """A float from the student's answer, None when unanswered (None or ...)."""
    if value is None or value is Ellipsis:
        return None
    return float(value)


def check_attack_scope(student: Callable, model, x: torch.Tensor, y: torch.Tensor, *, seed: int = 0) -> Feedback:
    """Check the student's ``attack_scope(scope, layers=None)`` against the reference on one defense.

    The test case: noise on the encoder alone, the attacker matching the first layer. The
    student's function must return the bypass's SSIM (a float) within 0.02 of the reference.
    """
    case_scope, case_layers = ENCODER, FIRST_LAYER
    try:
        got = student(case_scope, case_layers)
    except NotImplementedError:
        return unanswered("attack_scope is not written yet: replace the `...` lines and run the cell again.")
    except Exception as exc:  # the student's code failed: say how, as a hint
        return hint(f"attack_scope raised {type(exc).__name__}: {exc}. Check the names and keyword arguments "
                    "against the calls of section 3 (perturbed_gradient) and section 1 (precode_bypass).")
    if got is None or got is Ellipsis:
        return unanswered("attack_scope does not return anything yet: return the attack's SSIM (a float).")
    try:
        value = float(got)
    except (TypeError, ValueError):
        return hint("attack_scope should return one number, the bypass's SSIM: `result.metrics['ssim_mean']`.")
    want = _reference(model, x, y, case_scope, case_layers, seed)
    if not math.isfinite(value) or abs(value - want) > 0.02:
        return hint("on the test case (noise on the encoder, the attacker matching the first layer) your function "
                    "gives a different SSIM. Did you seed with torch.manual_seed(SEED) first, pass scope=scope and "
                    "seed=SEED to perturbed_gradient, and layers=layers, iterations=300 and truth=(x, y) to "
                    "precode_bypass?")
    return correct("attack_scope matches the package's reference on the test case. Now use it below.")


def check_scope_table(ssim_encoder_noised, ssim_first_noised, ssim_ppp, model, x: torch.Tensor, y: torch.Tensor,
                      *, seed: int = 0) -> Feedback:
    """Check the three SSIMs of the exercise (each within 0.02 of the reference); hints name what to look at."""
    answers = {"ssim_encoder_noised": _number(ssim_encoder_noised), "ssim_first_noised": _number(ssim_first_noised),
               "ssim_ppp": _number(ssim_ppp)}
    missing = [k for k, v in answers.items() if v is None]
    if missing:
        return unanswered(f"fill in {', '.join(missing)} above, then run this cell again.")
    cases = {
        "ssim_encoder_noised": (ENCODER, FIRST_LAYER + SECOND_LAYER,
                                "noise on the encoder only (scope=ENCODER); the attacker matches the clean first "
                                "and second layers (layers=FIRST_LAYER + SECOND_LAYER)"),
        "ssim_first_noised": (FIRST_LAYER, SECOND_LAYER + ENCODER,
                              "noise on the first layer only (scope=FIRST_LAYER); the attacker matches the clean "
                              "second layer and encoder (layers=SECOND_LAYER + ENCODER)"),
        "ssim_ppp": ("ppp", None, "scope=\"ppp\" and the ordinary bypass (layers=None)"),
    }
    wrong = []
    for name, (scope, layers, what) in cases.items():
        want = _reference(model, x, y, scope, layers, seed)
        if not math.isfinite(answers[name]) or abs(answers[name] - want) > 0.02:
            wrong.append(f"{name} should come from {what}")
    if wrong:
        return hint("; ".join(wrong) + ". Use your attack_scope with those arguments.")
    return correct("all three match. Noise on the encoder alone leaves a clean first layer and the adaptive attacker "
                   "succeeds; noise on the first layer alone leaves only a faint trace; PPP leaves nothing. "
                   "Now answer the why question below.")

