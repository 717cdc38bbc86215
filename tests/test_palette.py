"""One colour, one meaning: the course's palette is colour-blind safe and never reuses a colour for two meanings."""

from __future__ import annotations

from gleak_edu.viz import palette

OKABE_ITO = {"#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"}
TOL_MUTED = {"#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255", "#AA4499"}
GREYS = {"#8C8C8C", "#555555"}
SAFE = OKABE_ITO | TOL_MUTED | GREYS | {"#997700"}  # Tol's high-contrast dark yellow


def test_every_colour_comes_from_a_colour_blind_safe_palette():
    for table in (palette.ROLE, palette.DEFENSE, palette.SCHEDULE):
        for name, colour in table.items():
            assert colour.upper() in SAFE, f"{name}: {colour} is not from a colour-blind-safe palette"


def test_a_colour_means_one_thing():
    meanings = {}
    for table, kind in ((palette.ROLE, "role"), (palette.DEFENSE, "defense")):
        for name, colour in table.items():
            meanings.setdefault(colour.upper(), set()).add(f"{kind}:{name}")
    shared = {c: m for c, m in meanings.items() if len(m) > 1}
    # the only deliberate sharing: "no defense" is drawn as the reference
    assert shared == {palette.ROLE["reference"].upper(): {"role:reference", "defense:none"}}
    assert palette.SCHEDULE["fixed"] == palette.DEFENSE["dp_fixed"]
    others = [c for k, c in palette.SCHEDULE.items() if k != "fixed"]
    assert len(set(others)) == len(others) and not set(others) & set(meanings)


def test_leak_is_vermillion_and_never_a_defense():
    assert palette.ROLE["leak"] == "#D55E00"
    assert palette.ROLE["leak"] not in palette.DEFENSE.values()


def test_defense_color_names_every_arena_defense():
    from gleak_edu import arena

    for d in arena.DEFENSES:
        assert palette.defense_color(d) == palette.DEFENSE[d]
    assert palette.defense_color("DP-fixed") == palette.DEFENSE["dp_fixed"]
    try:
        palette.defense_color("homomorphic")
    except KeyError as e:
        assert "known:" in str(e)
    else:
        raise AssertionError("an unknown defense must be refused")
