"""Exercises, questions and checks of notebook 05 (DP-SGD, fixed vs dynamic).

The notebook imports this module as ``ex``; the core helpers are re-exported.

* :func:`check_dp_sgd_step`: the scaffolded DP-SGD step (per-example clipping
  to the bound C, Gaussian noise of std sigma * C, average), compared with the
  package's Gaussian mechanism :func:`gleak_edu.defenses.clip_and_noise`
  through :func:`dp_sgd_step` (the noise is passed in, so the comparison is
  exact).
* ``"05.cost"``: predict first, then run (how much more epsilon a decaying
  schedule spends than fixed noise at its start); :func:`observed_cost` reads
  the answer off the run.
* :func:`check_budget`: the exercise "spend the same budget differently"
  (hints only, never the values).
* ``"05.why-end"``: the checked why question after it.
"""

from __future__ import annotations

import functools
import io
import math
from contextlib import redirect_stdout
from typing import Callable, Mapping

import torch

from gleak_edu.defenses import clip_and_noise, epsilon, get_noise_multiplier, history_from_noise_multipliers, noise_schedule
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
    "COST_RATIOS",
    "Feedback",
    "ask",
    "budget_reference",
    "check_budget",
    "check_dp_sgd_step",
    "course_checks",
    "dp_sgd_step",
    "observed_cost",
    "predict",
    "reveal",
]


# --------------------------------------------------------------------------------------------------
# Scaffolded code: one DP-SGD step


def dp_sgd_step(per_example_grads: torch.Tensor, max_grad_norm: float, noise_multiplier: float,
                z: torch.Tensor) -> torch.Tensor:
    """One DP-SGD step on a batch, the package's way: the noisy mean of the clipped per-example gradients.

    Each row is clipped by :func:`gleak_edu.defenses.clip_and_noise` (noise
    multiplier 0: clipping only, to L2 norm at most C); the rows are summed,
    noise ``noise_multiplier * max_grad_norm * z`` is added to the sum, and the
    result is divided by the batch size (Abadi et al., 2016). The noise is
    passed in as standard normal draws ``z``, so the result is deterministic.

    Args:
        per_example_grads: float tensor ``[B, d]``, one example's flattened gradient per row.
        max_grad_norm: the clipping bound C (> 0).
        noise_multiplier: sigma (>= 0); the noise std on the sum is sigma * C per entry.
        z: float tensor ``[d]`` of standard normal draws.

    Returns:
        float tensor ``[d]``: the gradient the optimiser steps with.
    """
    grads = torch.as_tensor(per_example_grads)
    clipped = torch.stack([clip_and_noise({"g": g}, 0.0, max_grad_norm)["g"] for g in grads])
    return (clipped.sum(dim=0) + float(noise_multiplier) * float(max_grad_norm) * torch.as_tensor(z)) / len(grads)


def _step_cases(noise: bool) -> list[tuple]:
    """Test inputs: rows above and below the bound (norms 0.2 to 6), several C; with or without noise."""
    gen = torch.Generator().manual_seed(5)
    cases = []
    for b, d, bound, sigma in ((4, 6, 1.0, 0.8), (6, 10, 0.5, 2.0), (3, 5, 3.0, 1.3)):
        direction = torch.randn(b, d, generator=gen, dtype=torch.float64)
        direction /= direction.norm(dim=1, keepdim=True)
        norms = torch.linspace(0.2, 6.0, b, dtype=torch.float64)[:, None] * bound
        z = torch.randn(d, generator=gen, dtype=torch.float64)
        cases.append((direction * norms, bound, sigma if noise else 0.0, z))
    return cases


def check_dp_sgd_step(student: Callable) -> Feedback:
    """Check the notebook's scaffolded ``dp_sgd_step`` against :func:`dp_sgd_step`.

    First with noise multiplier 0 (the clipping alone), then with noise; a
    wrong result gets a hint about the part that differs, never the line.
    """
    probe = _step_cases(False)[0]
    try:
        student(*probe)
    except (TypeError, AttributeError) as exc:  # an Ellipsis left in the body fails on its first use
        if "ellipsis" in str(exc).lower():
            return unanswered("the step is not written yet: replace both `...` and run the cell again.")
    except Exception:  # reported by check_function below, with a hint
        pass
    with redirect_stdout(io.StringIO()):
        clip = check_function(
            student, dp_sgd_step, _step_cases(False), what="your step with noise multiplier 0 (clipping only)",
            hint_text="Look at `clipped`: each row must be scaled by min(1, C / its norm), so a row shorter "
                      "than C stays as it is and a longer one is shrunk to norm C (its direction unchanged).",
            atol=1e-8, rtol=1e-6)
    if clip.correct is not True:
        print(clip.message)
        return clip
    return check_function(
        student, dp_sgd_step, _step_cases(True), what="your DP-SGD step (clip, sum, noise, average)",
        hint_text="The clipping is right; look at `noise`: it goes on the sum of the clipped rows, one draw per "
                  "entry, with standard deviation noise_multiplier times max_grad_norm (z is already N(0, 1)).",
        atol=1e-8, rtol=1e-6)


# --------------------------------------------------------------------------------------------------
# Predict first, then run: what a decaying schedule costs


#: The bins of the prediction "05.cost": the cheapest decaying schedule's epsilon over fixed noise's.
COST_RATIOS = {"a": (0.0, 2.0), "b": (2.0, 10.0), "c": (10.0, math.inf)}

register(
    Question(
        key="05.cost",
        prompt=("Fixed noise stays at σ = START for all T steps; the four decaying schedules start at START and "
                "end at END, so their average noise is well below START. How many times more ε does the "
                "cheapest decaying schedule spend than fixed noise at START?"),
        options={"a": "less than 2 times as much", "b": "2 to 10 times as much", "c": "more than 10 times as much"},
        explanation=("a step's privacy cost grows much faster than the noise falls (roughly like 1/σ², and "
                     "faster still once σ is below about 1, where subsampling stops helping), so the "
                     "low-noise end of a schedule costs far more than its high-noise start saves."),
    ),
    Question(
        key="05.why-end",
        prompt=("Compare the fixed noise multiplier that spends the same ε as the cyclic schedule with the "
                "schedule's start, mean and end. Where does it lie, and why?"),
        options={
            "a": "near the schedule's mean: ε grows in proportion to the average noise multiplier",
            "b": ("near the schedule's low end: each step's privacy cost grows fast as σ falls (roughly like "
                  "1/σ² in RDP, faster at small σ), so the few low-noise steps cost more than the many "
                  "high-noise steps save"),
            "c": ("near the schedule's low end: the accountant weights the late steps more, because by then "
                  "the model has learned the data"),
            "d": "near the schedule's start: the early, noisy steps dominate the cost",
        },
        answer="b",
        explanation=("the accountant sums a per-step cost that rises steeply as σ falls (about 1/σ² at large "
                     "σ, and much faster below σ ≈ 1, where subsampling stops diluting it), and the sum ignores "
                     "the steps' order. A fixed σ that spends the same total must therefore sit near the "
                     "schedule's expensive, low-noise end, not at its mean."),
        hints={
            "a": "Print the schedule's mean next to your fixed σ: are they close? ε is not linear in σ.",
            "c": ("The accountant never sees the model, only the list of (σ, q) pairs, and composing them is "
                  "a sum that ignores their order: the reversed schedule (END up to START) costs the same ε."),
            "d": ("Compare with section 3: fixed noise at the start value spent the least ε of all; the "
                  "schedules spent more, so their cost comes from somewhere else."),
        },
    ),
)


def observed_cost(epsilons: Mapping[str, float]) -> str:
    """The option of "05.cost" the run supports: ``epsilons`` maps schedule -> epsilon, "fixed" included.

    Raises:
        ValueError: without a "fixed" entry or without a decaying schedule.
    """
    if "fixed" not in epsilons or len(epsilons) < 2:
        raise ValueError("give the epsilon of 'fixed' and of at least one decaying schedule")
    ratio = min(v for k, v in epsilons.items() if k != "fixed") / epsilons["fixed"]
    return next(k for k, (lo, hi) in COST_RATIOS.items() if lo <= ratio < hi)


# --------------------------------------------------------------------------------------------------
# The exercise: spend the same budget differently


@functools.lru_cache(maxsize=16)
def budget_reference(T: int, q: float, delta: float, updates: int | None, start: float = 3.0,
                     end: float = 0.5) -> tuple[float, float]:
    """The exercise's reference: (PRV epsilon of the cyclic schedule, the fixed noise multiplier spending the same).

    Cached: the PRV accountant and its bisection take a few seconds.
    """
    multipliers = noise_schedule("cyclic", T, start, end, updates=updates)
    eps = epsilon(history_from_noise_multipliers(multipliers, q), delta, "prv")
    return eps, get_noise_multiplier(eps, T, q, delta, accountant="prv")


def check_budget(eps_cyclic_prv, noise_multiplier_fixed_prv, *, T: int, q: float, delta: float,
                 updates: int | None, start: float = 3.0, end: float = 0.5) -> Feedback:
    """Check the exercise "spend the same budget differently" (within 1 %); hints only, never the values."""
    if eps_cyclic_prv is None or noise_multiplier_fixed_prv is None:
        return unanswered("fill in eps_cyclic_prv and noise_multiplier_fixed_prv above, then run this cell again.")
    try:
        eps, sigma = float(eps_cyclic_prv), float(noise_multiplier_fixed_prv)
    except (TypeError, ValueError):
        return hint("both answers should be numbers (floats).")
    ref_eps, ref_sigma = budget_reference(T, q, delta, updates, start, end)
    if not math.isclose(eps, ref_eps, rel_tol=0.01):
        rdp = epsilon(history_from_noise_multipliers(noise_schedule("cyclic", T, start, end, updates=updates), q),
                      delta, "rdp")
        if math.isclose(eps, rdp, rel_tol=0.01):
            return hint("that is the RDP accountant's ε; the exercise asks for PRV (epsilon(..., accountant='prv')).")
        return hint("eps_cyclic_prv is off. Build the schedule with noise_schedule('cyclic', T, 3.0, 0.5, "
                    "updates=UPDATES), turn it into a history with history_from_noise_multipliers(..., q), and "
                    "ask epsilon(...) for the PRV accountant at δ = DELTA.")
    if not math.isclose(sigma, ref_sigma, rel_tol=0.01):
        return hint("eps_cyclic_prv is right; noise_multiplier_fixed_prv is off. get_noise_multiplier takes the "
                    "target ε, the number of steps T, the sample rate q and δ; did you ask it for the PRV "
                    "accountant too (accountant='prv')?")
    return correct("a fixed noise multiplier of that size spends the same PRV ε as the cyclic schedule over "
                   f"{T} steps. Now compare it with the schedule's start ({start:g}), mean and end ({end:g}), "
                   "and answer the question below.")
