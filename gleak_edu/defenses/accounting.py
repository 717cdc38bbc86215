"""Privacy accounting for DP-SGD with a changing noise multiplier, by Opacus's accountants.

A *noise history* is a list of segments ``(noise multiplier sigma, sample
rate q, steps)``: ``[(2.0, 0.05, 20), (1.5, 0.05, 20)]`` means 20 steps at
sigma 2 then 20 at sigma 1.5, each step sampling a share q of the data. This is
exactly how Opacus's accountants record training (``accountant.history``), so
a schedule that changes sigma every step is accounted by giving them its
history (Abadi et al. 2016; Mironov 2017 for RDP; Gopi, Lee, Wutschitz 2021 for PRV).
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

__all__ = ["ACCOUNTANTS", "epsilon", "gaussian_epsilon", "history_from_sigmas"]

ACCOUNTANTS = ("rdp", "prv", "gdp")


def history_from_sigmas(sigmas: Sequence[float], sample_rate: float) -> list[tuple[float, float, int]]:
    """Run-length encode a per-step noise multiplier list into Opacus history segments.

    ``[2, 2, 1.5] , q`` -> ``[(2.0, q, 2), (1.5, q, 1)]``. An empty list gives an empty history.
    """
    history: list[tuple[float, float, int]] = []
    for s in sigmas:
        s = float(s)
        if history and history[-1][0] == s:
            history[-1] = (s, float(sample_rate), history[-1][2] + 1)
        else:
            history.append((s, float(sample_rate), 1))
    return history


def epsilon(history: Sequence[tuple[float, float, int]], delta: float = 1e-5, accountant: str = "rdp") -> float:
    """Epsilon spent at ``delta`` by a DP-SGD noise history, from Opacus's accountant.

    Args:
        history: segments ``(sigma, q, steps)`` with sigma > 0 (noise
            multiplier), 0 < q <= 1 (sample rate, Poisson sampling assumed)
            and steps >= 1.
        delta: target delta, in (0, 1) (typically below 1 / dataset size).
        accountant: ``"rdp"`` (Rényi DP, Mironov 2017), ``"prv"`` (privacy
            random variables, Gopi et al. 2021; tighter) or ``"gdp"`` (Gaussian
            DP; only for one constant sigma and q).

    Returns:
        epsilon (>= 0); 0 for an empty history; inf when some segment has sigma 0.

    Raises:
        ValueError: for an unknown accountant, a malformed segment, delta
            outside (0, 1), or GDP with a changing noise multiplier or sample
            rate (Opacus's GDP accountant cannot compose those: use rdp or prv).
    """
    from opacus.accountants import GaussianAccountant, PRVAccountant, RDPAccountant

    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie strictly between 0 and 1, got {delta}")
    segments = []
    for seg in history:
        try:
            sigma, q, steps = float(seg[0]), float(seg[1]), int(seg[2])
        except (TypeError, ValueError, IndexError):
            raise ValueError(f"each history segment must be (sigma, sample_rate, steps), got {seg!r}") from None
        if not (math.isfinite(sigma) and sigma >= 0) or not 0 < q <= 1 or steps < 1 or steps != seg[2]:
            raise ValueError(f"bad segment {tuple(seg)}: need sigma >= 0, 0 < sample_rate <= 1, steps a whole number >= 1")
        segments.append((sigma, q, steps))
    if not segments:
        return 0.0
    if any(s == 0 for s, _, _ in segments):
        return math.inf
    if accountant == "gdp":
        if len({(s, q) for s, q, _ in segments}) > 1:
            raise ValueError(
                "the GDP accountant cannot compose a changing noise multiplier or sample rate "
                "(Opacus keeps one (sigma, q)); use accountant 'rdp' or 'prv'"
            )
        acc = GaussianAccountant()
        acc.history = [(segments[0][0], segments[0][1], sum(n for _, _, n in segments))]
    else:
        acc = RDPAccountant() if accountant == "rdp" else PRVAccountant()
        acc.history = list(segments)
    with warnings.catch_warnings():
        # at the ends of the sigma range the best RDP order is an end of Opacus's grid; the bound is still valid
        warnings.filterwarnings("ignore", message="Optimal order is the")
        return float(acc.get_epsilon(delta))


def gaussian_epsilon(sigma: float, delta: float = 1e-5) -> float:
    """Epsilon of one release of the Gaussian mechanism with noise multiplier sigma (noise std sigma * sensitivity).

    The classical bound (Dwork & Roth, 2014, Theorem A.1): noise std
    ``sigma * Delta`` with ``sigma >= sqrt(2 ln(1.25 / delta)) / epsilon`` gives
    (epsilon, delta)-DP for epsilon < 1, so ``epsilon = sqrt(2 ln(1.25/delta)) / sigma``.
    For sigma small enough that this exceeds 1 the theorem does not apply and
    the value is only indicative (use :func:`epsilon`, an accountant, there).

    Raises:
        ValueError: for sigma < 0 or delta outside (0, 1).
    """
    if not sigma >= 0 or not 0 < delta < 1:
        raise ValueError(f"need sigma >= 0 and 0 < delta < 1, got {sigma} and {delta}")
    return math.inf if sigma == 0 else math.sqrt(2 * math.log(1.25 / delta)) / sigma
