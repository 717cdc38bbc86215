"""Noise-multiplier schedules for DP-SGD (Wei & Liu, "Gradient Leakage Attack Resilient Deep Learning").

A schedule is a plain list: the noise multiplier sigma of every training step
(the noise std of that step is sigma * C, C the clipping bound
``max_grad_norm``). :func:`gleak_edu.defenses.train_perturbed` and
:func:`gleak_edu.defenses.train_dp` take such a list as their
``noise_multiplier``; :func:`gleak_edu.defenses.schedule_epsilon` accounts one.
This module is below the accountant and the training loops, so both can use it.
"""

from __future__ import annotations

import math

__all__ = ["SCHEDULES", "noise_schedule"]

SCHEDULES = ("fixed", "linear", "staircase", "exponential", "cyclic")


def noise_schedule(kind: str, steps: int, noise_multiplier: float, noise_multiplier_end: float | None = None, *,
                   stairs: int = 10, updates: int | None = None) -> list[float]:
    """The noise multiplier of each of ``steps`` training steps (Wei & Liu's dynamic noise).

    With progress p = t / (steps - 1) (0 at the first step, 1 at the last),
    every schedule starts at ``noise_multiplier`` and ends at
    ``noise_multiplier_end`` (Wei & Liu's forms, written for any start and end;
    theirs run 15 -> 4.85). With ``updates`` = k, the multiplier changes only
    k times over training (held for steps/k steps, p = floor(t k / steps) /
    (k - 1)), as Opacus's noise schedulers do when stepped per epoch; it also
    makes accounting fast (each distinct value costs Opacus's RDP accountant
    about 30 ms, PRV more).

    - ``fixed``: the start value throughout (``noise_multiplier_end`` ignored).
    - ``linear``: start + (end - start) p.
    - ``staircase``: ``stairs`` equal flat stairs from start down to end
      (stair k of 0..stairs-1 at start + (end - start) k / (stairs - 1)).
      The paper's version steps by (start - end)/10 every T/10 steps and
      reaches the end value only after the last step.
    - ``exponential``: start (end / start)^p, i.e. the paper's
      exp(1.58 + 1.13 (T - t)/T) for 15 -> 4.85.
    - ``cyclic``: start cos(a p) with a = arccos(end / start) (the paper's
      15 cos(1.24 t/T): a decaying quarter cosine; needs end <= start).

    Args:
        kind: one of :data:`SCHEDULES`.
        steps: number of training steps (>= 1).
        noise_multiplier: the first step's noise multiplier sigma (> 0; noise std = sigma * C).
        noise_multiplier_end: the last step's (> 0; defaults to the start).
        stairs: the staircase's number of stairs (>= 2).
        updates: how many times the multiplier is updated (None: every step; >= 2). Not used by the staircase.

    Returns:
        ``steps`` floats, the noise multiplier of each step.

    Raises:
        ValueError: unknown kind, steps < 1, non-positive or non-finite multipliers, stairs < 2,
            updates < 2, or a cyclic schedule whose end exceeds its start.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    start = float(noise_multiplier)
    end = start if noise_multiplier_end is None or kind == "fixed" else float(noise_multiplier_end)
    if not (math.isfinite(start) and start > 0 and math.isfinite(end) and end > 0):
        raise ValueError(
            f"noise multipliers must be finite and > 0, got noise_multiplier {noise_multiplier}, "
            f"noise_multiplier_end {noise_multiplier_end}"
        )
    if kind == "cyclic" and end > start:
        raise ValueError("the cyclic (cosine) schedule decays: noise_multiplier_end must not exceed noise_multiplier")
    if stairs < 2:
        raise ValueError(f"stairs must be at least 2, got {stairs}")
    if updates is not None and updates < 2:
        raise ValueError(f"updates must be at least 2 (or None for every step), got {updates}")
    out = []
    for t in range(steps):
        if updates is not None and kind != "staircase" and steps > 1:
            p = min(1.0, math.floor(t * min(updates, steps) / steps) / (min(updates, steps) - 1))
        else:
            p = t / (steps - 1) if steps > 1 else 1.0
        if kind == "fixed":
            v = start
        elif kind == "linear":
            v = start + (end - start) * p
        elif kind == "staircase":
            k = min(int(p * stairs), stairs - 1)
            v = start + (end - start) * k / (stairs - 1)
        elif kind == "exponential":
            v = start * (end / start) ** p
        else:
            v = start * math.cos(math.acos(end / start) * p)
        out.append(float(v))
    return out
