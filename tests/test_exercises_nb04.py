"""Notebook 04's exercises, questions and figures (gleak_edu.exercises.nb04, gleak_edu.viz.ppp): fast, no training.

The checks' reference (a bypass run per defense) is replaced by a table of made-up SSIMs here, so
the tests exercise the checking logic in milliseconds; one smoke test runs the real reference for
a few iterations on an untrained model.
"""

from __future__ import annotations

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from gleak_edu import metrics, sweeps, viz  # noqa: E402
from gleak_edu.exercises import QUESTIONS  # noqa: E402
from gleak_edu.exercises import nb04 as ex  # noqa: E402
from gleak_edu.viz.palette import DEFENSE, ROLE  # noqa: E402

# ---------------------------------------------------------------------------- made-up reference SSIMs

FAKE = {  # (scope, layers) -> SSIM, standing in for the bypass runs
    (tuple(ex.ENCODER), tuple(ex.FIRST_LAYER)): 0.9391,
    (tuple(ex.ENCODER), tuple(ex.FIRST_LAYER + ex.SECOND_LAYER)): 0.9387,
    (tuple(ex.FIRST_LAYER), tuple(ex.SECOND_LAYER + ex.ENCODER)): 0.1513,
    ("ppp", None): 0.0404,
}


def _key(scope, layers):
    return (scope if isinstance(scope, str) else tuple(scope), tuple(layers) if layers is not None else None)


@pytest.fixture
def fake_reference(monkeypatch):
    calls = []

    def reference(model, x, y, scope, layers=None, *, seed=0, **kw):
        calls.append(_key(scope, layers))
        return FAKE[_key(scope, layers)]

    monkeypatch.setattr(ex, "attack_scope", reference)
    monkeypatch.setattr(ex, "_REFERENCE", {})
    return calls


MODEL, X, Y = torch.nn.Linear(2, 2), torch.zeros(1, 1, 28, 28), torch.tensor([3])


def _student_right(scope, layers=None):
    return FAKE[_key(scope, layers)]


def _student_off(scope, layers=None):
    return FAKE[_key(scope, layers)] + 0.2


def _student_blank(scope, layers=None):
    shared = ...  # noqa: F841 (the notebook's scaffold, unfilled)
    return ...


def _student_raises(scope, layers=None):
    raise KeyError("features.9.weight")


def _no_numbers(text: str) -> None:
    for value in FAKE.values():
        for fmt in ("{:.2f}", "{:.3f}", "{:.1f}"):
            assert fmt.format(value) not in text


# ---------------------------------------------------------------------------- part 1: the scaffolded function


def test_attack_scope_check_accepts_the_right_function(fake_reference, capsys):
    assert ex.check_attack_scope(_student_right, MODEL, X, Y).correct is True
    assert capsys.readouterr().out.startswith("Correct")


def test_attack_scope_check_rejects_a_wrong_function_without_the_value(fake_reference, capsys):
    assert ex.check_attack_scope(_student_off, MODEL, X, Y).correct is False
    out = capsys.readouterr().out
    assert out.startswith("Not quite")
    _no_numbers(out)


def test_attack_scope_check_blank_and_raising(fake_reference, capsys):
    assert ex.check_attack_scope(_student_blank, MODEL, X, Y).correct is None
    fb = ex.check_attack_scope(_student_raises, MODEL, X, Y)
    assert fb.correct is False and "KeyError" in fb.message
    assert ex.check_attack_scope(lambda s, l=None: "abc", MODEL, X, Y).correct is False


# ---------------------------------------------------------------------------- part 2: the three defenses


def test_scope_table_right_wrong_and_unanswered(fake_reference, capsys):
    right = (FAKE[_key(ex.ENCODER, ex.FIRST_LAYER + ex.SECOND_LAYER)],
             FAKE[_key(ex.FIRST_LAYER, ex.SECOND_LAYER + ex.ENCODER)], FAKE[("ppp", None)])
    assert ex.check_scope_table(*right, MODEL, X, Y).correct is True
    capsys.readouterr()
    fb = ex.check_scope_table(right[0], right[2], right[1], MODEL, X, Y)  # two swapped
    out = capsys.readouterr().out
    assert fb.correct is False and out.startswith("Not quite")
    assert "ssim_first_noised" in out and "ssim_ppp" in out and "ssim_encoder_noised" not in out
    _no_numbers(out)
    assert ex.check_scope_table(None, right[1], right[2], MODEL, X, Y).correct is None
    assert ex.check_scope_table(..., ..., ..., MODEL, X, Y).correct is None


def test_reference_is_computed_once_per_defense(fake_reference):
    ex.check_attack_scope(_student_right, MODEL, X, Y)
    ex.check_attack_scope(_student_right, MODEL, X, Y)
    assert len(fake_reference) == 1


def test_attack_scope_reference_runs_on_a_precode_model():
    settings = sweeps.PPPSweepSettings()
    model = sweeps.victim(settings, "ppp", seed=0).train()
    x, y = torch.rand(1, 1, 28, 28), torch.tensor([4])
    s = ex.attack_scope(model, x, y, ex.FIRST_LAYER, ex.SECOND_LAYER + ex.ENCODER, iterations=3)
    assert isinstance(s, float) and -1.0 <= s <= 1.0


# ---------------------------------------------------------------------------- questions


def test_every_question_is_notebook_04s():
    mine = [k for k in QUESTIONS if k.startswith("04.")]
    assert {"04.trend", "04.why-rise", "04.scope"} <= set(mine)
    assert QUESTIONS["04.trend"].answer is None  # a prediction: the run decides


@pytest.mark.parametrize("key", ["04.why-rise", "04.scope"])
def test_why_questions(key, capsys):
    q = QUESTIONS[key]
    assert ex.ask(key, q.answer).correct is True
    capsys.readouterr()
    for wrong in set(q.options) - {q.answer}:
        fb = ex.ask(key, wrong)
        out = capsys.readouterr().out
        assert fb.correct is False and out.startswith("Not quite")
        assert f"({q.answer})" not in out and q.options[q.answer] not in out
    assert ex.ask(key, None).correct is None


# ---------------------------------------------------------------------------- a made-up sweep (no training)


def fake_sweep(ppp_accuracy=(0.745, 0.740, 0.783), noise_levels=(0.03, 0.3, 3.0)) -> sweeps.SweepResult:
    settings = sweeps.PPPSweepSettings(noise_levels=noise_levels, seeds=(0,), images=2, iterations=3)
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(2, 1, 28, 28, generator=g)

    def attacked(quality: float) -> dict:
        recs = (quality * truth + (1 - quality) * torch.rand(2, 1, 28, 28, generator=g)).clamp(0, 1)
        return {"ssim": metrics.ssim(recs, truth).tolist(), "psnr": metrics.psnr(recs, truth).tolist(),
                "reconstructions": recs[:, :1].tolist()}

    def cell(acc: float, quality: float) -> dict:
        a = attacked(quality)
        return {"accuracy": acc, "epsilon": 1.0, "diverged": False, "train_seconds": 0.1, "steps": 126,
                "attacks": {"bypass": a, "ig": a}}

    cells = {("none", 0.0, 0): cell(0.88, 1.0), ("precode", 0.0, 0): cell(0.82, 0.95)}
    for s, acc_ppp in zip(settings.noise_levels, ppp_accuracy):
        q = 0.85 if s < 0.1 else 0.0
        cells[("full", s, 0)] = cell(0.70, q)
        cells[("ppp", s, 0)] = cell(acc_ppp, q)
    res = sweeps.SweepResult(settings, cells=cells, rows=sweeps._rows(settings, cells))
    res.test_images = truth
    return res


@pytest.mark.parametrize("accs, want", [((0.745, 0.740, 0.783), "c"), ((0.75, 0.76, 0.74), "b"),
                                        ((0.80, 0.78, 0.70), "a")])
def test_observed_trend_follows_the_sweep(accs, want, capsys):
    sweep = fake_sweep(accs)
    assert ex.observed_trend(sweep) == want
    ex.predict("04.trend", want)
    assert ex.reveal("04.trend", ex.observed_trend(sweep)).correct is True
    other = next(o for o in "abc" if o != want)
    ex.predict("04.trend", other)
    assert ex.reveal("04.trend", ex.observed_trend(sweep)).correct is False
    ex.predict("04.trend", None)


def test_observed_trend_needs_two_levels():
    with pytest.raises(ValueError):
        ex.observed_trend(fake_sweep((0.7,), noise_levels=(1.0,)))


# ---------------------------------------------------------------------------- figures


def test_tradeoff_pair_uses_defense_colours_and_distinct_markers():
    fig = viz.tradeoff_pair_figure(fake_sweep())
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    for ax in fig.axes:
        lines = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
        want = {"no defense": "none", "PRECODE alone": "precode", "full perturbation": "full", "PPP": "ppp"}
        assert set(lines) == set(want)
        for label, key in want.items():
            assert to_hex(lines[label].get_color()) == to_hex(DEFENSE[key])
        assert len({ln.get_marker() for ln in lines.values()}) == 4
        xs = {round(ln.get_xdata()[0], 3) for ln in ax.get_lines() if ln.get_label().startswith("_")}
        assert {0.3, metrics.SUCCESS_SSIM} <= xs  # the failed and the success lines
    matplotlib.pyplot.close(fig)


def test_sweep_reconstructions_grid_titles_each_image_with_its_ssim():
    sweep = fake_sweep()
    fig = viz.sweep_reconstructions_figure(sweep)
    assert isinstance(fig, Figure)
    titled = [ax for ax in fig.axes if ax.get_title().startswith("SSIM")]
    assert len(titled) == 2 * (2 + 2 * 3)  # 2 digits x (none, PRECODE, full and PPP at 3 levels)
    for ax in titled:
        s = float(ax.get_title().split()[1])
        want = ROLE["leak"] if s >= metrics.SUCCESS_SSIM else ROLE["truth"]
        assert to_hex(ax.title.get_color()) == to_hex(want)
    matplotlib.pyplot.close(fig)


def test_ssim_bands_show_one_example_per_band():
    fig = viz.ssim_bands_figure(fake_sweep())
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    heads = [ax.get_title() for ax in fig.axes[:3]]
    assert heads[0].startswith("failed") and heads[1].startswith("grey zone") and heads[2].startswith("success")
    assert to_hex(fig.axes[2].title.get_color()) == to_hex(ROLE["leak"])
    for ax, (low, high) in zip(fig.axes[3:], [(-1, 0.3), (0.3, 0.6), (0.6, 1.01)]):
        title = ax.get_title()
        if title:  # a band with an example: its SSIM lies in the band
            assert low <= float(title.split()[1].rstrip(",")) < high
    matplotlib.pyplot.close(fig)
    with pytest.raises(ValueError):
        viz.ssim_bands_figure(fake_sweep(), bands=(0.6, 0.3))


def test_ppp_diagram_says_the_output_bias_gives_the_label_away():
    fig = viz.ppp_figure()
    text = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "label" in text and "already hides" not in text
    matplotlib.pyplot.close(fig)
