"""Privacy accounting for DP-SGD with a changing noise multiplier, by Opacus's accountants.

A *noise history* is a list of segments ``(noise_multiplier, sample_rate,
steps)``: ``[(2.0, 0.05, 20), (1.5, 0.05, 20)]`` means 20 steps at noise
multiplier sigma = 2 then 20 at sigma = 1.5, each step sampling a share q of the
data. The noise multiplier is relative to the clipping bound C
(``max_grad_norm``): each step adds noise of std sigma * C to the sum of the
clipped per-example gradients (Opacus's meaning). This is exactly how Opacus's
accountants record training (``accountant.history``), so a schedule that
changes sigma every step is accounted by giving them its history (Abadi et al.
2016; Mironov 2017 for RDP; Gopi, Lee, Wutschitz 2021 for PRV).

This module owns every epsilon of the package: :func:`epsilon` (a history),
:func:`epsilon_for_steps` (one constant segment), :func:`schedule_epsilon` (a
noise schedule), :func:`gaussian_epsilon` (one release of the Gaussian
mechanism) and the inverse, :func:`get_noise_multiplier` (Opacus's name).

What this module accepts, and why (every public epsilon function of the
package goes through :func:`check_delta` and :func:`check_history`, so the
rules are the same everywhere; the numbers were measured on Opacus 1.6.0):

- **delta**: 0 < delta < 0.1 (:data:`DELTA_LIMIT`). delta is the probability
  that the guarantee fails outright: a mechanism that publishes one random
  record in full with probability delta is (0, delta)-DP. A meaningful delta
  is far below 1/n for a dataset of n examples (1e-5 is usual); when n is
  known (``dataset_size``), delta >= 1/n gives a :class:`DeltaWarning`. From
  0.1 on no dataset of ten or more examples is protected, and the accountants'
  conversions turn negative (``gleak epsilon --delta 0.5`` reported -0.69), so
  such a delta is refused.
- **noise multiplier**: 0 (no noise: epsilon is ``inf``, exactly) or within
  :data:`NOISE_MULTIPLIER_RANGE` = [1e-6, 1e6]. Outside it Opacus's arithmetic breaks:
  RDP divides by sigma**2 (ZeroDivisionError at 1e-300), loops without end
  at 1e-160 (q < 1; inf at q = 1), overflows at 1e300 and fails its own
  log-subtraction at 1e8 (q = 0.01, 0.1, 0.99); it is sound from about 1e-152
  to 3e7, PRV's grid explodes long before (below), and GDP fails at both ends.
  Inside the range the ends carry no information anyway: at sigma 1e-6 one
  step already costs epsilon 5.5e11, and from about sigma 1e3 on epsilon sits
  on the RDP conversion's floor (0.103 at delta 1e-5).
- **sample rate** 0 < q <= 1; **steps** whole numbers >= 1, at most
  :data:`MAX_STEPS` (10**6) in all and :data:`MAX_SEGMENTS` (10,000) segments
  (Opacus's RDP accountant spends 10-300 ms on each segment; several seconds at
  exactly q = 0.5 with a large sigma). An empty history is 0 (nothing released).
- **PRV grid**: the PRV accountant discretises the privacy loss on a grid whose
  size grows with the steps and the epsilon, and keeps one grid per segment.
  Measured (one segment): 9.7e6 points 7 s and 0.6 GB, 1.3e7 points 14-20 s
  and 2.1 GB, 2.2e7 points 27 s and 3.6 GB; (many segments) 126 x 9.6e4
  points 21 s, 21 x 2.8e6 points 57 s, 630 x 2.3e5 points 190 s and 3 GB;
  100,000 steps at q = 0.5 and sigma 1 would need 3.2e9 points (26 GB per
  array), sigma 1e-3 for 10 steps 1.1e10 points (MemoryError: 84 GiB). So a
  history whose grid exceeds :data:`PRV_MAX_GRID` points, or whose points
  times segments exceed :data:`PRV_MAX_WORK`, is refused before anything is
  allocated (the grid's size is computed first, cheaply, as Opacus does); use
  ``"rdp"`` there.
  PRV also computes exp(t) on its grid, which overflows at t = 709.8: its
  epsilon saturates there, below the truth (sigma 0.025, q 0.01, one step:
  PRV 705 where the RDP bound is 941 and the Gaussian tail about 920; at sigma
  0.03 the two agree, 653 and 672). A PRV epsilon >= :data:`PRV_MAX_EPSILON`
  (700) is therefore refused, not reported.
- **GDP** (Opacus's GaussianAccountant) is a central-limit approximation: it
  fails (root finding) for sigma <= 0.3 at q >= 0.5, sigma <= 0.1 at any q,
  and large sigma (1e4 at q = 0.01, 1e5 at q = 0.5, 1e6 at q = 1). Its
  failures, and any other exception raised inside an Opacus accountant,
  become one ValueError line that names the accountant and the segment.
- **result**: epsilon is never negative (a negative value from a conversion is
  clamped to 0, which is valid: (epsilon, delta)-DP implies (epsilon', delta)-DP
  for every epsilon' >= epsilon); ``inf`` only when some segment has no noise;
  an ``inf`` or NaN from Opacus with every sigma > 0 is a numerical failure
  (PRV returns inf for some large epsilons), raised as ValueError, never returned.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Sequence

from gleak_edu.defenses.schedules import noise_schedule

__all__ = [
    "ACCOUNTANTS",
    "DELTA_LIMIT",
    "MAX_SEGMENTS",
    "MAX_STEPS",
    "PRV_MAX_GRID",
    "PRV_MAX_EPSILON",
    "PRV_MAX_WORK",
    "NOISE_MULTIPLIER_RANGE",
    "DeltaWarning",
    "check_delta",
    "check_history",
    "check_noise_multiplier",
    "epsilon",
    "epsilon_for_steps",
    "gaussian_epsilon",
    "get_noise_multiplier",
    "history_from_noise_multipliers",
    "schedule_epsilon",
]

ACCOUNTANTS = ("rdp", "prv", "gdp")
DELTA_LIMIT = 0.1
NOISE_MULTIPLIER_RANGE = (1e-6, 1e6)
MAX_STEPS = 1_000_000
MAX_SEGMENTS = 10_000
PRV_MAX_GRID = 10_000_000
PRV_MAX_WORK = 30_000_000
PRV_MAX_EPSILON = 700.0
# PRVAccountant.get_epsilon's defaults: the grid is sized for them
_PRV_EPS_ERROR = 0.01
_PRV_DELTA_ERROR = 1e-3  # times delta


class DeltaWarning(UserWarning):
    """delta is not far below 1 / dataset size: the guarantee may fail for a whole record."""


def history_from_noise_multipliers(noise_multipliers: Sequence[float],
                                   sample_rate: float) -> list[tuple[float, float, int]]:
    """Run-length encode a per-step noise multiplier list into Opacus history segments.

    ``[2, 2, 1.5], q`` -> ``[(2.0, q, 2), (1.5, q, 1)]``: segments ``(noise_multiplier,
    sample_rate, steps)``. An empty list gives an empty history. Nothing is
    checked here (:func:`check_history` and :func:`epsilon` do).

    Args:
        noise_multipliers: the noise multiplier sigma of each step (noise std = sigma * C).
        sample_rate: the share q of the data each step samples.
    """
    history: list[tuple[float, float, int]] = []
    for s in noise_multipliers:
        s = float(s)
        if history and history[-1][0] == s:
            history[-1] = (s, float(sample_rate), history[-1][2] + 1)
        else:
            history.append((s, float(sample_rate), 1))
    return history


def _real(value, name: str) -> float:
    if isinstance(value, (bool, str, bytes)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def _outside_stacklevel() -> int:
    """The stacklevel of the first caller outside gleak_edu, counted from the function that calls this one."""
    import os
    import sys

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    level, frame = 2, sys._getframe(2)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


def check_delta(delta: float, dataset_size: int | None = None) -> float:
    """Validate a target delta; returns it as a float.

    Rules (module docstring): 0 < delta < :data:`DELTA_LIMIT` (0.1), and, when
    ``dataset_size`` n is given, a :class:`DeltaWarning` if delta >= 1/n.

    Raises:
        ValueError: delta not a number, outside (0, 1), or >= 0.1; dataset_size not a whole number >= 1.
    """
    d = _real(delta, "delta")
    if not 0 < d < 1:
        raise ValueError(f"delta must lie strictly between 0 and 1, got {delta}")
    if d >= DELTA_LIMIT:
        raise ValueError(
            f"delta {d:g} gives no meaningful guarantee: delta is the probability that the guarantee fails "
            f"outright (a whole record may be published), so it must be far below 1/n for n examples "
            f"(typically 1e-5); this course refuses delta >= {DELTA_LIMIT:g}"
        )
    if dataset_size is not None:
        if isinstance(dataset_size, bool) or not isinstance(dataset_size, numbers.Integral) or dataset_size < 1:
            raise ValueError(f"dataset_size must be a whole number >= 1, got {dataset_size!r}")
        if d >= 1 / int(dataset_size):
            warnings.warn(
                f"delta {d:g} is not below 1/n = {1 / int(dataset_size):.3g} for n = {int(dataset_size)} examples: "
                f"the guarantee allows publishing a whole record; choose delta far below 1/n",
                DeltaWarning, stacklevel=_outside_stacklevel(),
            )
    return d


def check_noise_multiplier(noise_multiplier: float, name: str = "noise_multiplier") -> float:
    """Validate a noise multiplier: 0 (no noise) or within :data:`NOISE_MULTIPLIER_RANGE`; returns it as a float.

    The noise multiplier sigma is relative to the clipping bound C: noise std = sigma * C.

    Raises:
        ValueError: not a number, negative, non-finite, or outside [1e-6, 1e6] (where Opacus's arithmetic breaks).
    """
    s = _real(noise_multiplier, name)
    if not math.isfinite(s) or s < 0:
        raise ValueError(f"the {name} must be a finite number >= 0, got {noise_multiplier}")
    lo, hi = NOISE_MULTIPLIER_RANGE
    if s != 0 and not lo <= s <= hi:
        raise ValueError(
            f"the {name} {s:g} is outside [{lo:g}, {hi:g}], where the accountants are numerically sound "
            f"(below, epsilon is astronomically large; above, it no longer changes)"
        )
    return s


def _segment(seg, index: int) -> tuple[float, float, int]:
    try:
        if isinstance(seg, (str, bytes)) or len(seg) != 3:
            raise ValueError
        sigma, q, raw = seg
    except (TypeError, ValueError):
        raise ValueError(f"each history segment must be (noise_multiplier, sample_rate, steps), got {seg!r}") from None
    shown = repr(tuple(seg))
    where = f"bad segment {index} {shown if len(shown) <= 120 else shown[:117] + '...'}"
    try:
        sigma = check_noise_multiplier(sigma)
        q = _real(q, "the sample rate")
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if not 0 < q <= 1:
        raise ValueError(f"{where}: need 0 < sample_rate <= 1, got {q}")
    try:
        if isinstance(raw, numbers.Integral) and not isinstance(raw, bool):
            steps = int(raw)
        else:
            f = _real(raw, "steps")
            if not (math.isfinite(f) and f == int(f)):
                raise ValueError
            steps = int(f)
        if steps < 1:
            raise ValueError
    except ValueError:
        raise ValueError(f"{where}: steps must be a whole number >= 1") from None
    return sigma, q, steps


def _validate(history, delta, accountant, dataset_size) -> tuple[list[tuple[float, float, int]], float]:
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")
    delta = check_delta(delta, dataset_size)
    if isinstance(history, (str, bytes)):
        raise ValueError(f"history must be a list of (noise_multiplier, sample_rate, steps) segments, got {history!r}")
    try:
        count = len(history)  # checked before the history is copied
    except TypeError:
        count = 0
    if count <= MAX_SEGMENTS:
        try:
            history = list(history)
        except TypeError:
            raise ValueError(
                f"history must be a list of (noise_multiplier, sample_rate, steps) segments, got {history!r}"
            ) from None
        count = len(history)
    if count > MAX_SEGMENTS:
        raise ValueError(
            f"the history has {count:,} segments, more than {MAX_SEGMENTS:,} (each costs the accountant "
            f"10-300 ms): change the noise multiplier fewer times (noise_schedule(..., updates=k))"
        )
    segments = [_segment(seg, i) for i, seg in enumerate(history)]
    total = sum(n for _, _, n in segments)
    if total > MAX_STEPS:
        shown = f"{total:,}" if total < 10**15 else f"{float(total):.3g}" if total < 10**308 else "more than 1e308"
        raise ValueError(f"the history has {shown} steps in all, more than this course accounts ({MAX_STEPS:,})")
    if accountant == "gdp" and len({(s, q) for s, q, _ in segments}) > 1:
        raise ValueError(
            "the GDP accountant cannot compose a changing noise multiplier or sample rate "
            "(Opacus keeps one (noise_multiplier, sample_rate)); use accountant 'rdp' or 'prv'"
        )
    # adjacent segments with the same (noise multiplier, q) are one segment (as Opacus's own history keeps them):
    # exact, and a history written step by step costs one accountant call instead of thousands
    merged: list[tuple[float, float, int]] = []
    for s, q, n in segments:
        if merged and merged[-1][:2] == (s, q):
            merged[-1] = (s, q, merged[-1][2] + n)
        else:
            merged.append((s, q, n))
    return merged, delta


def _prv_domain(segments, delta: float):
    """The grid Opacus's PRV accountant would allocate for this history (an opacus Domain: size, t_max), computed as Opacus does."""
    from opacus.accountants import PRVAccountant
    from opacus.accountants.analysis.prv import PoissonSubsampledGaussianPRV

    prvs = [PoissonSubsampledGaussianPRV(q, s) for s, q, _ in segments]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the")
        return PRVAccountant()._get_domain(
            prvs=prvs, num_self_compositions=[n for _, _, n in segments], eps_error=_PRV_EPS_ERROR,
            delta_error=delta * _PRV_DELTA_ERROR,
        )


class _Refused(ValueError):
    """A check of ours, raised from inside an accountant call: passed on as it is."""


def _check_prv_grid(points: int, segments: int) -> None:
    if points > PRV_MAX_GRID or points * segments > PRV_MAX_WORK:
        raise _Refused(
            f"the PRV accountant would need a grid of {points:,} points for each of {segments} segment(s) "
            f"(limits: {PRV_MAX_GRID:,} points, {PRV_MAX_WORK:,} points x segments; beyond, it takes minutes "
            f"and gigabytes or fails for lack of memory); use accountant 'rdp' (a slightly looser upper bound), "
            f"or fewer steps or distinct noise multipliers"
        )


def _describe(accountant: str, segments, index: int | None) -> str:
    if accountant == "gdp":
        return f"the history {(segments[0][0], segments[0][1], sum(n for _, _, n in segments))}"
    if index is not None:
        return f"segment {index} {segments[index]}"
    return f"the composition of its {len(segments)} segments"


def _call(accountant: str, segments, delta: float) -> float:
    """Opacus's epsilon for a validated history with every noise multiplier > 0 (its exceptions pass through)."""
    from opacus.accountants import GaussianAccountant, PRVAccountant, RDPAccountant

    if accountant == "gdp":
        acc = GaussianAccountant()
        acc.history = [(segments[0][0], segments[0][1], sum(n for _, _, n in segments))]
    elif accountant == "rdp":
        acc = RDPAccountant()
        acc.history = list(segments)
    else:
        acc = PRVAccountant()
        acc.history = list(segments)
        opacus_domain = acc._get_domain

        def bounded_domain(**kwargs):
            domain = opacus_domain(**kwargs)
            _check_prv_grid(int(domain.size), len(segments))
            return domain

        acc._get_domain = bounded_domain  # the grid's size is known before Opacus allocates it
    with warnings.catch_warnings():
        # at the ends of the noise multiplier range the best RDP order is an end of Opacus's grid; the bound is still valid
        warnings.filterwarnings("ignore", message="Optimal order is the")
        # overflow in PRV's exp(t) etc.: the result is checked for being finite below
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        return float(acc.get_epsilon(delta))


_ADVICE = {
    "rdp": "check the segment's values",
    "prv": "use accountant 'rdp' (a slightly looser upper bound)",
    "gdp": "GDP is a central-limit approximation for many steps with moderate noise; use accountant 'rdp' or 'prv'",
}


def _failed(accountant: str, segments, delta: float, what: str, *, diagnose: bool = True) -> ValueError:
    """One line naming the accountant, the failing segment (found by trying each alone) and what went wrong."""
    index: int | None = 0 if len(segments) == 1 or accountant == "gdp" else None
    if index is None and diagnose:
        for i, seg in enumerate(segments):
            try:
                eps = _call(accountant, [seg], delta)
            except Exception:  # noqa: BLE001 - diagnosing which segment Opacus cannot handle
                index = i
                break
            if not math.isfinite(eps):
                index = i
                break
    return ValueError(
        f"the {accountant.upper()} accountant (Opacus) failed on {_describe(accountant, segments, index)} "
        f"at delta {delta:g}: {what}; {_ADVICE[accountant]}"
    )


def _exception_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:200]


def check_history(history: Sequence[tuple[float, float, int]], delta: float = 1e-5, accountant: str = "rdp", *,
                  dataset_size: int | None = None) -> list[tuple[float, float, int]]:
    """Everything :func:`epsilon` checks before it computes: call it before work whose end is accounted.

    Checks the accountant, delta (:func:`check_delta`), every segment, the
    bounds on steps and segments and, for ``"prv"``, the size of the grid
    Opacus would allocate (this costs about one RDP evaluation of the history);
    when that grid reaches t = 700, where PRV's exp overflows and its answer
    may saturate, or is too fine for long double at this delta, the PRV
    epsilon itself is computed, so that its failure is reported now.

    Returns:
        The segments as ``(float noise_multiplier, float sample_rate, int steps)``.

    Raises:
        ValueError: as :func:`epsilon` (failures inside Opacus's computation where they can be foreseen).
    """
    segments, delta = _validate(history, delta, accountant, dataset_size)
    if accountant == "prv" and segments and all(s > 0 for s, _, _ in segments):
        import numpy as np

        try:
            domain = _prv_domain(segments, delta)
        except Exception as exc:  # noqa: BLE001 - Opacus's own failure, reported in one line
            raise _failed(accountant, segments, delta, _exception_text(exc)) from None
        try:
            _check_prv_grid(int(domain.size), len(segments))
        except _Refused as exc:
            raise ValueError(str(exc)) from None
        # a grid reaching exp's overflow (t > 700), or one too fine for long double at this delta, may fail
        # inside the computation: then (only then) run it, so that such a failure is found now, not after the work
        if domain.t_max >= PRV_MAX_EPSILON or np.finfo(np.longdouble).eps * domain.size > delta * (1 - _PRV_DELTA_ERROR):
            epsilon(segments, delta, accountant)
    return segments


def epsilon(history: Sequence[tuple[float, float, int]], delta: float = 1e-5, accountant: str = "rdp", *,
            dataset_size: int | None = None) -> float:
    """Epsilon spent at ``delta`` by a DP-SGD noise history, from Opacus's accountant.

    Args:
        history: segments ``(noise_multiplier, sample_rate, steps)``: the noise
            multiplier sigma (noise std sigma * C, C the clipping bound),
            0 (no noise) or in [1e-6, 1e6]; 0 < q <= 1 the sample rate (Poisson
            sampling assumed); steps a whole number >= 1; at most 10**6 steps
            and 10,000 segments in all (module docstring).
        delta: target delta, 0 < delta < 0.1, and far below 1 / dataset size.
        accountant: ``"rdp"`` (Rényi DP, Mironov 2017), ``"prv"`` (privacy
            random variables, Gopi et al. 2021; tighter, but its grid is
            bounded, :data:`PRV_MAX_GRID`, and it cannot report epsilon >= 700)
            or ``"gdp"`` (Gaussian DP; only for one constant noise multiplier and q, and
            only moderate noise).
        dataset_size: the number of examples n, if known: delta >= 1/n gives a :class:`DeltaWarning`.

    Returns:
        epsilon >= 0: never negative (a negative value from the accountant's
        conversion, e.g. at a large delta, is clamped to 0, which is valid as
        (epsilon, delta)-DP implies (epsilon', delta)-DP for epsilon' >= epsilon);
        0 for an empty history (nothing released); ``inf`` exactly when some
        segment has noise multiplier 0 (no noise, no guarantee). Always finite otherwise.

    Raises:
        ValueError: for an unknown accountant, delta outside (0, 0.1), a
            malformed or out-of-range segment, too many steps or segments, a PRV
            grid beyond its bound, GDP with a changing noise multiplier or sample
            rate, and any failure inside Opacus's accountant (exception, inf or
            NaN), in one line naming the accountant and the segment.
    """
    segments, delta = _validate(history, delta, accountant, dataset_size)
    if not segments:
        return 0.0
    if any(s == 0 for s, _, _ in segments):
        return math.inf
    try:
        eps = _call(accountant, segments, delta)
    except _Refused as exc:
        raise ValueError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - Opacus's own failure (ZeroDivision, Overflow, Memory, root finding)
        raise _failed(accountant, segments, delta, _exception_text(exc)) from None
    if not math.isfinite(eps):
        raise _failed(accountant, segments, delta,
                      f"it returned epsilon {eps} although every noise multiplier is > 0 (a numerical failure)")
    if accountant == "prv" and eps >= PRV_MAX_EPSILON:
        raise _failed(accountant, segments, delta,
                      f"it returned epsilon {eps:.4g}, but its grid computes exp(epsilon), which overflows at 709.8, "
                      f"so from about {PRV_MAX_EPSILON:g} on its answer saturates below the true value", diagnose=False)
    return eps if eps > 0 else 0.0


def gaussian_epsilon(noise_multiplier: float, delta: float = 1e-5, *, dataset_size: int | None = None) -> float:
    """Epsilon of one release of the Gaussian mechanism with noise multiplier sigma (noise std sigma * sensitivity).

    The classical bound (Dwork & Roth, 2014, Theorem A.1): noise std
    ``sigma * Delta`` (Delta the L2 sensitivity, e.g. the clipping bound C of
    :func:`gleak_edu.defenses.clip_and_noise`) with
    ``sigma >= sqrt(2 ln(1.25 / delta)) / epsilon`` gives (epsilon, delta)-DP
    for epsilon < 1, so ``epsilon = sqrt(2 ln(1.25/delta)) / sigma``.
    For sigma small enough that this exceeds 1 the theorem does not apply: the
    value then carries no guarantee and understates the true epsilon by orders
    of magnitude (4.8e4 against about 5e7 at sigma = 1e-4, delta = 1e-5). Use
    ``epsilon_for_steps(sigma, 1.0, 1, delta)`` (Opacus RDP, valid at every
    epsilon) there, as notebook 06 does.

    The same checks as :func:`epsilon`: noise_multiplier 0 (``inf``, no noise)
    or in [1e-6, 1e6], 0 < delta < 0.1 (a :class:`DeltaWarning` when delta >= 1 /
    ``dataset_size``). The result is then finite and positive.

    Raises:
        ValueError: for noise_multiplier or delta outside those ranges.
    """
    delta = check_delta(delta, dataset_size)
    sigma = check_noise_multiplier(noise_multiplier)
    return math.inf if sigma == 0 else math.sqrt(2 * math.log(1.25 / delta)) / sigma


def _check_steps(steps) -> int:
    """steps: a whole number in 1..MAX_STEPS (checked before anything of that length is built)."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be a whole number from 1 to {MAX_STEPS:,}, got {steps!r}")
    return int(steps)


def epsilon_for_steps(noise_multiplier: float, sample_rate: float, steps: int, delta: float = 1e-5, *,
                      accountant: str = "rdp", dataset_size: int | None = None) -> float:
    """Epsilon at ``delta`` of ``steps`` DP-SGD steps with one noise multiplier and sample rate (Opacus).

    The history ``[(noise_multiplier, sample_rate, steps)]`` given to
    :func:`epsilon`: the noise multiplier sigma is relative to the clipping
    bound C (noise std sigma * C on the sum of the clipped per-example
    gradients), 0 (``inf``: no noise, no guarantee) or in [1e-6, 1e6];
    0 < sample_rate <= 1 (Poisson sampling); steps a whole number from 0
    (epsilon 0: nothing released; the other arguments are still checked) to
    10**6; 0 < delta < 0.1 (a :class:`DeltaWarning` when delta >= 1 /
    ``dataset_size``). The result is >= 0 and finite for sigma > 0.

    Args:
        accountant: ``"rdp"`` (default), ``"prv"`` or ``"gdp"`` (see :func:`epsilon`).

    Raises:
        ValueError: for any of those out of range, or a failure inside Opacus's accountant.
    """
    if not isinstance(steps, bool) and isinstance(steps, (int, float)) and steps == 0:
        # nothing released: epsilon 0; the other arguments are still checked
        check_history([(noise_multiplier, sample_rate, 1)], delta, accountant, dataset_size=dataset_size)
        return 0.0
    return epsilon([(noise_multiplier, sample_rate, steps)], delta, accountant, dataset_size=dataset_size)


def schedule_epsilon(kind: str, steps: int, noise_multiplier: float, noise_multiplier_end: float | None,
                     sample_rate: float, delta: float = 1e-5, *, accountant: str = "rdp", updates: int | None = None,
                     dataset_size: int | None = None) -> float:
    """Epsilon at ``delta`` of training along a noise schedule (Opacus's accountant over its history).

    The schedule is :func:`gleak_edu.defenses.noise_schedule`'s ``(kind, steps,
    noise_multiplier, noise_multiplier_end, updates=updates)``: noise multipliers
    sigma_t relative to the clipping bound C (noise std sigma_t * C), each step
    sampling a share ``sample_rate`` of the data. The checks and the result are
    :func:`epsilon`'s (epsilon >= 0, finite; 0 < delta < 0.1; multipliers in
    [1e-6, 1e6]; at most 10**6 steps, checked before the schedule is built).

    Raises:
        ValueError: as :func:`gleak_edu.defenses.noise_schedule` and :func:`epsilon`.
    """
    _check_steps(steps)
    check_delta(delta)
    multipliers = noise_schedule(kind, steps, noise_multiplier, noise_multiplier_end, updates=updates)
    return epsilon(history_from_noise_multipliers(multipliers, sample_rate), delta, accountant,
                   dataset_size=dataset_size)


def get_noise_multiplier(target_epsilon: float, steps: int, sample_rate: float, delta: float = 1e-5, *,
                         accountant: str = "rdp", low: float = 0.3, high: float = 50.0,
                         dataset_size: int | None = None) -> float:
    """The fixed noise multiplier whose ``steps`` steps at ``sample_rate`` spend ``target_epsilon`` at ``delta``.

    Opacus's :func:`opacus.accountants.utils.get_noise_multiplier`, with this
    module's checks: a bisection (in log sigma) on :func:`epsilon` over the
    bracket [low, high], to 1e-4 relative in sigma, at most 60 evaluations.
    Opacus's own stops at an absolute epsilon tolerance of 0.01 (10 % of a
    target of 0.1) and would bypass the accountant bounds of this module, so
    it is not called; the two agree within that tolerance. Used to compare a
    schedule with fixed noise at *equal final epsilon*.

    Args:
        target_epsilon: the epsilon to spend (a finite number > 0).
        steps: training steps (1..10**6); sample_rate: 0 < q <= 1.
        delta: 0 < delta < 0.1; accountant: ``"rdp"``, ``"prv"`` or ``"gdp"`` (see :func:`epsilon`).
        low, high: the bracket of noise multipliers searched, within [1e-6, 1e6] (:data:`NOISE_MULTIPLIER_RANGE`).

    Returns:
        The noise multiplier sigma (noise std sigma * C), the smallest found
        whose epsilon does not exceed the target, within 1e-4 relative.

    Raises:
        ValueError: a target that is not a finite number > 0, a bad bracket,
            bad steps, sample rate or delta (as :func:`epsilon`), or a target
            not reachable with a noise multiplier in [low, high].
    """
    try:
        target = float(target_epsilon)
    except (TypeError, ValueError):
        raise ValueError(f"target_epsilon must be a number, got {target_epsilon!r}") from None
    if isinstance(target_epsilon, bool) or not math.isfinite(target) or target <= 0:
        raise ValueError(f"target_epsilon must be a finite number > 0, got {target_epsilon!r}")
    low = check_noise_multiplier(low, "bracket's low noise_multiplier")
    high = check_noise_multiplier(high, "bracket's high noise_multiplier")
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high for the bracket, got low {low:g}, high {high:g}")
    _check_steps(steps)
    check_delta(delta, dataset_size)

    def eps(s: float) -> float:
        return epsilon([(s, sample_rate, steps)], delta, accountant)

    if not eps(high) <= target <= eps(low):
        raise ValueError(
            f"epsilon {target:g} is not reachable with a fixed noise_multiplier in [{low:g}, {high:g}]"
        )
    for _ in range(60):
        mid = math.sqrt(low * high)
        if eps(mid) > target:
            low = mid
        else:
            high = mid
        if high / low < 1 + 1e-4:
            break
    return high
