"""Notebook 07's exercises, questions and figures (fast: no training, no attack)."""

from __future__ import annotations

import random

import matplotlib
import pytest

matplotlib.use("Agg")

from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from gleak_edu import arena, metrics, viz  # noqa: E402
from gleak_edu.exercises import QUESTIONS  # noqa: E402
from gleak_edu.exercises import nb07 as ex  # noqa: E402
from gleak_edu.viz import palette  # noqa: E402


def fake_result(levels=(0.01, 1.0), images=3, seed=0, rates=None):
    """An ArenaResult with made-up rows (no training): ``rates`` overrides {(defense, attack, level): rate}."""
    settings = arena.ArenaSettings(noise_levels=levels, images=images)
    rnd = random.Random(seed)
    rows = []
    for d, lv, _ in arena.cells_of(settings):
        for a in arena.ATTACKS:
            reason = arena.impossible(a, d)
            r = {"defense": d, "level": lv, "knob": arena.DEFENSE_LEVEL[d], "accuracy": 0.8,
                 "accuracy_cost": {"none": 0.0, "dp_dynamic": -0.006, "noise": -0.001}.get(d, rnd.uniform(0.02, 0.2)),
                 "epsilon": 1.5 if arena.DEFENSE_SPECS[d].dp else None, "attacked_noise_multiplier": None,
                 "attacked_noise_std": None, "diverged": False, "attack": a, "impossible": reason}
            if reason:
                r.update(success_rate=None, successes=None, n=None, success_low=None, success_high=None, ssim=None,
                         psnr=None, label_accuracy=None, seconds=None)
            else:
                rate = 0.0 if a == "grnn" else rnd.choice([0.0, 1 / 3, 2 / 3, 1.0])
                if rates and (d, a, lv) in rates:
                    rate = rates[(d, a, lv)]
                ci = metrics.success_rate(successes=round(rate * images), n=images)
                r.update(success_rate=rate, successes=ci.successes, n=ci.n, success_low=ci.low, success_high=ci.high,
                         ssim=rnd.uniform(0, 1), psnr=20.0, label_accuracy=None, seconds=1.0)
            rows.append(r)
    return arena.ArenaResult(settings, rows=rows)


def reference_ranking(result, level):
    """An independent implementation of the exercise (as the solution file writes it)."""
    worst = {}
    for d in arena.DEFENSES:
        worst[d] = max(result.row(d, a, level)["success_rate"] for a in arena.ATTACKS
                       if arena.impossible(a, d) is None)
    safe = {d for d, v in worst.items() if v == 0}
    costs = {s["defense"]: s["accuracy_cost"] for s in result.defense_summary(level)}
    return worst, safe, min(safe, key=costs.get)


def quiet_result():
    """Every noisy defense stops every attack at level 1 (so 'safe' is not empty)."""
    rates = {(d, a, 1.0): 0.0 for d in arena.NOISY for a in arena.ATTACKS}
    return fake_result(rates=rates)


# ----------------------------------------------------------------------------- the ranking exercise

def test_ranking_right_answer_is_correct(capsys):
    result = quiet_result()
    worst, safe, cheapest = reference_ranking(result, 1.0)
    fb = ex.check_ranking(result, worst, safe, cheapest, 1.0)
    assert fb.correct is True
    assert capsys.readouterr().out.startswith("Correct")


def test_ranking_unanswered_is_none():
    result = quiet_result()
    assert ex.check_ranking(result, None, None, None).correct is None
    assert ex.check_ranking(result, {d: ... for d in arena.DEFENSES}, ..., ...).correct is None


@pytest.mark.parametrize("which", ["worst", "safe", "cheapest", "shape"])
def test_ranking_wrong_answer_gets_a_hint_not_the_value(which, capsys):
    result = quiet_result()
    worst, safe, cheapest = reference_ranking(result, 1.0)
    if which == "worst":
        worst = dict(worst, dp_fixed=0.5)
    elif which == "safe":
        safe = set(safe) - {"noise"}
    elif which == "cheapest":
        cheapest = "dp_fixed"
    else:
        worst = list(worst.values())
    ref_worst, ref_safe, ref_cheapest = reference_ranking(result, 1.0)
    fb = ex.check_ranking(result, worst, safe, cheapest, 1.0)
    out = capsys.readouterr().out
    assert fb.correct is False and out.startswith("Not quite")
    for secret in (str(ref_worst), str(sorted(ref_safe)), str(ref_safe), ref_cheapest, arena.DEFENSE_NAMES[ref_cheapest]):
        assert secret not in out


# ----------------------------------------------------------------------------- questions

def test_questions_are_registered_under_07():
    mine = [k for k in QUESTIONS if k.startswith("07.")]
    assert set(mine) >= {"07.level", "07.snr"}
    assert all(q.key.startswith("07.") for q in (ex.LEVEL_QUESTION, ex.SNR_QUESTION))
    assert ex.LEVEL_QUESTION.answer is None and ex.SNR_QUESTION.answer is not None


def test_why_question_checks_and_hints(capsys):
    q = ex.SNR_QUESTION
    assert ex.ask("07.snr", q.answer).correct is True
    right_text = q.options[q.answer]
    for letter in q.options:
        if letter == q.answer:
            continue
        capsys.readouterr()
        fb = ex.ask("07.snr", letter)
        out = capsys.readouterr().out
        assert fb.correct is False and out.startswith("Not quite") and right_text not in out
    assert ex.ask("07.snr", None).correct is None


def test_level_prediction_is_revealed_from_the_run(capsys):
    split = fake_result(rates={("noise", "ig", 0.01): 0.0, ("ppp", "ig", 0.01): 0.0, ("dp_fixed", "ig", 0.01): 1.0,
                                ("dp_dynamic", "ig", 0.01): 1 / 3})
    assert ex.observed_level_question(split) == "b"
    none_stop = fake_result(rates={(d, "ig", 0.01): 1 / 3 for d in arena.NOISY})
    assert ex.observed_level_question(none_stop) == "c"
    all_stop = fake_result(rates={(d, "ig", 0.01): 0.0 for d in arena.NOISY})
    assert ex.observed_level_question(all_stop) == "a"
    assert ex.predict("07.level", None).correct is None
    ex.predict("07.level", "a")
    assert ex.reveal("07.level", ex.observed_level_question(split)).correct is False
    ex.predict("07.level", "b")
    assert ex.reveal("07.level", ex.observed_level_question(split)).correct is True


def test_folded_attacks_are_the_all_zero_ones():
    result = fake_result()  # GRNN is 0 % everywhere in the fake rows
    assert "grnn" in ex.folded_attacks(result)
    assert all(max(r["success_rate"] for r in result.rows if r["attack"] == a and r["success_rate"] is not None) == 0
               for a in ex.folded_attacks(result))


# ----------------------------------------------------------------------------- figures

def _colours(fig):
    out = set()
    for ax in fig.axes:
        for coll in ax.collections:
            for arr in (coll.get_facecolors(), coll.get_edgecolors()):
                out |= {to_hex(c) for c in arr if c[3] > 0}
        for patch in ax.patches:
            out.add(to_hex(patch.get_facecolor()))
    return {c.lower() for c in out}


def fake_snr_rows():
    rows = []
    for d in arena.DEFENSES:
        for i in range(3):
            noisy = d in arena.NOISY
            rows.append({"defense": d, "level": 0.01, "seed": 0, "image": i, "label": arena.defense_label(d, 0.01),
                         "gradient_norm": 0.2 + i, "signal_norm": min(0.2 + i, 1.0), "noise_norm": 3.4 if noisy else 0.0,
                         "snr": (min(0.2 + i, 1.0) / 3.4) if noisy else None, "entries": 100,
                         "ssim": None if d == "none" and i == 2 else 0.3 * i})
    return rows


def test_snr_figure_uses_the_palette():
    import matplotlib.pyplot as plt

    fig = viz.arena_snr_figure(fake_snr_rows(), level=0.01)
    assert isinstance(fig, Figure)
    allowed = {c.lower() for c in palette.ROLE.values()} | {"#ffffff", "#000000"}
    assert _colours(fig) <= allowed
    assert {palette.ROLE["leak"].lower(), palette.ROLE["protected"].lower()} <= _colours(fig)
    plt.close(fig)
    with pytest.raises(ValueError):
        viz.arena_snr_figure([], level=0.01)


def test_snr_scatter_uses_defense_colours():
    import matplotlib.pyplot as plt

    fig = viz.snr_scatter(fake_snr_rows())
    assert isinstance(fig, Figure)
    assert {palette.DEFENSE[d].lower() for d in arena.NOISY} <= _colours(fig)
    plt.close(fig)


def test_heatmap_has_attacks_as_rows_and_folds_zero_rows():
    import matplotlib.pyplot as plt

    result = fake_result()
    fig = viz.arena_heatmap(result, 0.01)
    heat = fig.axes[0]
    assert [t.get_text() for t in heat.get_yticklabels()] == [arena.ATTACK_NAMES[a] for a in arena.ATTACKS]
    heads = [t.get_text() for t in heat.get_xticklabels()]
    assert [h.split("\n")[0] for h in heads] == [arena.DEFENSE_NAMES[d] for d in arena.DEFENSES]
    assert "std=0.01" in heads[arena.DEFENSES.index("noise")]
    plt.close(fig)
    fig = viz.arena_heatmap(result, all_levels=True, fold_zero=True)
    rows = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert arena.ATTACK_NAMES["grnn"] not in rows and len(fig.axes) == 2 * len(result.levels)
    assert any("not shown: GRNN" in t.get_text() for t in fig.texts)
    costs = fig.axes[1]
    assert {to_hex(p.get_facecolor()) for p in costs.patches} <= {palette.ROLE["reference"].lower(),
                                                                  palette.ROLE["protected"].lower()}
    plt.close(fig)
