"""One colour, one meaning, across the whole course (colour-blind safe).

The colours are Okabe & Ito's palette (2008) and Paul Tol's muted palette,
both designed to stay distinguishable under the common colour-vision
deficiencies; no figure of the course pairs red with green. Every figure
takes its colours from here, so a colour means the same thing in every
notebook:

* :data:`ROLE` -- what a mark *is*: ``leak`` (vermillion: what reaches the
  attacker, an attack that works), ``protected`` (blue: what a defense
  perturbs or hides), ``truth`` (black: the private value, the true class),
  ``reference`` (grey: no defense, chance, a baseline), ``threshold``
  (dark grey, dashed: a line the course draws to decide success).
* :data:`DEFENSE` -- one colour per defense (arena keys, plus ``full`` for
  full perturbation); ``none`` is the reference grey.
* :data:`SCHEDULE` -- one colour per DP noise schedule (notebook 05); the
  fixed schedule shares DP fixed's colour.
* :data:`SEQUENTIAL` -- the colour map for attack success (white to
  vermillion: the more it leaks, the redder).
"""

from __future__ import annotations

__all__ = ["DEFENSE", "ROLE", "SCHEDULE", "SEQUENTIAL", "defense_color"]

ROLE = {
    "leak": "#D55E00",       # vermillion: leaks to the attacker / attack succeeds
    "protected": "#0072B2",  # blue: perturbed or hidden by a defense
    "truth": "#000000",      # black: the private value (true image, true class)
    "reference": "#8C8C8C",  # grey: no defense, chance level, a baseline
    "threshold": "#555555",  # dark grey (dashed): the course's success line
}

DEFENSE = {
    "none": ROLE["reference"],
    "noise": "#56B4E9",       # sky blue
    "pruning": "#E69F00",     # orange
    "precode": "#CC79A7",     # reddish purple
    "ppp": "#009E73",         # bluish green
    "full": "#997700",        # ochre (full perturbation, notebook 04)
    "dp_fixed": "#332288",    # indigo
    "dp_dynamic": "#882255",  # wine
}

SCHEDULE = {
    "fixed": DEFENSE["dp_fixed"],
    "linear": "#44AA99",       # teal
    "staircase": "#999933",    # olive
    "exponential": "#AA4499",  # purple
    "cyclic": "#88CCEE",       # cyan
}

#: Matplotlib colour map for attack success rates in [0, 1] (white -> vermillion).
SEQUENTIAL = "Oranges"


def defense_color(name: str) -> str:
    """The colour of a defense (an arena key such as ``"dp_fixed"``, or ``"full"``).

    Raises:
        KeyError: for a name the course has no colour for, listing the known ones.
    """
    key = name.lower().replace("-", "_").replace(" ", "_")
    if key not in DEFENSE:
        raise KeyError(f"no course colour for defense {name!r}; known: {', '.join(DEFENSE)}")
    return DEFENSE[key]
