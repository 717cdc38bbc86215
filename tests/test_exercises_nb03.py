"""Notebook 03's exercises, questions, figures and its knob panel (fast: attacks of a few steps only)."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from gleak_edu import exercises, fl, models, viz, widgets  # noqa: E402
from gleak_edu.defenses import add_precode, deterministic_parameters, gradient_stochasticity  # noqa: E402
from gleak_edu.exercises import nb03 as ex  # noqa: E402
from gleak_edu.viz.palette import DEFENSE, ROLE  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(scope="module")
def photo(photo_set):
    return photo_set.batch(2)


def small_mlp():
    torch.manual_seed(0)
    return models.MLP(input_shape=(1, 8, 8), num_classes=10, hidden=(16, 16))


@pytest.fixture(scope="module")
def small_precode():
    """A small PRECODE MLP on 8x8 grey images, one image and its label."""
    net = small_mlp()
    add_precode(net, bottleneck=8, seed=0)
    gen = torch.Generator().manual_seed(0)
    return net, torch.rand(1, 1, 8, 8, generator=gen), torch.tensor([3])


def fake_result(ssim: float, side: int = 8, channels: int = 1):
    gen = torch.Generator().manual_seed(int(1000 * ssim) % 97)
    return SimpleNamespace(reconstruction=torch.rand(1, channels, side, side, generator=gen),
                           metrics={"ssim_mean": ssim, "psnr_mean": 20.0})


def knob_runs():
    cos = {"features.0.weight": 0.8, "features.0.bias": 0.8, "classifier.0.encoder.weight": 0.7,
           "classifier.0.encoder.bias": 0.7, "classifier.0.decoder.weight": 0.1, "classifier.0.decoder.bias": 0.999,
           "classifier.1.weight": 0.1, "classifier.1.bias": 0.999}
    return {b: {"accuracy": 0.9 - b / 10, "cosines": cos, "ig": fake_result(0.3 - b / 10), "bypass": fake_result(0.8)}
            for b in (1e-3, 1e-1, 1.0)}


KEEP = ["features.0.weight", "features.0.bias", "classifier.0.encoder.weight", "classifier.0.encoder.bias"]


def _colours(fig) -> set[str]:
    out = set()
    for ax in fig.axes:
        for line in ax.get_lines():
            out.add(to_hex(line.get_color()).upper())
        for patch in ax.patches:
            out.add(to_hex(patch.get_facecolor()).upper())
    return out


# --------------------------------------------------------------------------------------------------
# questions


def test_question_keys_and_kinds():
    mine = {k: q for k, q in exercises.QUESTIONS.items() if k.startswith("03.")}
    assert set(mine) == {"03.which_change", "03.why_bypass", "03.why_width"}
    assert mine["03.which_change"].answer is None  # a prediction
    for key in ("03.why_bypass", "03.why_width"):
        q = mine[key]
        assert q.answer is not None and set(q.hints) == set(q.options) - {q.answer}


@pytest.mark.parametrize("key", ["03.why_bypass", "03.why_width"])
def test_why_questions(key, capsys):
    q = exercises.QUESTIONS[key]
    assert ex.ask(key, q.answer).correct is True
    for wrong in set(q.options) - {q.answer}:
        fb = ex.ask(key, wrong)
        assert fb.correct is False
        assert f"({q.answer})" not in fb.message and q.options[q.answer] not in fb.message
    assert ex.ask(key, None).correct is None


def test_prediction_and_reveal(capsys):
    cos = {"a.weight": 0.8, "b.weight": 0.1, "b.bias": 0.999}
    assert ex.which_changed(cos, ["a.weight"]) == "c"
    assert ex.which_changed({"a.weight": 0.995, "b.weight": 0.1}, ["a.weight"]) == "b"
    assert ex.which_changed({"a.weight": 1.0, "b.weight": 0.9999}, ["a.weight"]) == "a"
    assert ex.predict("03.which_change", None).correct is None
    ex.predict("03.which_change", "b")
    assert ex.reveal("03.which_change", "c").correct is False
    ex.predict("03.which_change", "c")
    assert ex.reveal("03.which_change", "c").correct is True


# --------------------------------------------------------------------------------------------------
# direction against value


def test_row_cosines_direction_survives_before_the_sample(small_precode):
    net, x, y = small_precode
    net.train()
    rows = ex.row_cosines(net, x, y)
    keep = deterministic_parameters(net)
    assert set(rows) == {n for n, p in net.named_parameters() if p.ndim == 2}
    assert all(rows[n] > 0.9999 for n in rows if n in keep)
    assert rows["classifier.0.decoder.weight"] < 0.99  # rows ∝ z: they follow the sample
    cos = gradient_stochasticity(net, x, y)
    assert min(cos[n] for n in keep) < 0.999  # ... while the values change
    assert net.training


def test_scale_and_direction(small_precode):
    net = small_mlp()
    _, x, y = small_precode
    out = ex.scale_and_direction(net, x, y)
    assert 0 < out["confidence"] < 1 and out["norm"] > 0 and out["first_rows"] > 0.9999
    with pytest.raises(ValueError, match="one image"):
        ex.scale_and_direction(net, torch.cat([x, x]), torch.cat([y, y]))


# --------------------------------------------------------------------------------------------------
# the bottleneck-width exercise


def test_check_victim(photo, capsys):
    x, y = photo

    def right(width):
        net = models.build_model("mlp", (3, 32, 32), 100, seed=0, init="pytorch")
        add_precode(net, bottleneck=width, seed=0)
        torch.manual_seed(0)
        return net, fl.client_gradient(net, x, y)

    def no_seed(width):
        net = models.build_model("mlp", (3, 32, 32), 100, seed=0, init="pytorch")
        add_precode(net, bottleneck=width, seed=0)
        torch.manual_seed(123)
        return net, fl.client_gradient(net, x, y)

    def wrong_width(width):
        return right(256)

    def scaffold(width):
        net = models.build_model("mlp", (3, 32, 32), 100, seed=0, init="pytorch")
        ...
        shared = ...
        return net, shared

    assert ex.check_victim(right, x, y).correct is True
    assert ex.check_victim(no_seed, x, y).correct is False
    assert ex.check_victim(wrong_width, x, y).correct is False
    assert ex.check_victim(scaffold, x, y).correct is None
    assert ex.check_victim(lambda w: 1 / 0, x, y).correct is False


def test_check_widths_never_prints_the_values(photo, monkeypatch, capsys):
    x, y = photo
    ref = {16: 0.873, 1024: 0.912}
    monkeypatch.setattr(ex, "width_runs", lambda *a, **k: dict(ref))
    assert ex.check_widths(dict(ref), x, y).correct is True
    fb = ex.check_widths({16: 0.2, 1024: 0.912}, x, y)
    assert fb.correct is False
    text = capsys.readouterr().out
    assert "0.873" not in text and "0.87" not in text and "0.912" not in text and "0.91" not in text
    assert ex.check_widths(None, x, y).correct is None
    assert ex.check_widths({16: 0.5}, x, y).correct is None
    assert ex.check_widths({16: 25.0, 1024: 26.0}, x, y).correct is False  # a PSNR, not an SSIM


def test_check_widths_recomputes_the_reference(capsys):
    x, y = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(1)), torch.tensor([7])  # small: fast
    got = ex.width_runs(x, y, iterations=3)
    assert set(got) == set(ex.WIDTHS)
    assert ex.check_widths(got, x, y, iterations=3).correct is True


# --------------------------------------------------------------------------------------------------
# figures and the knob panel


def test_precode_and_stochasticity_figures():
    cos = knob_runs()[1.0]["cosines"]
    rows = {"features.0.weight": 1.0, "classifier.0.encoder.weight": 1.0, "classifier.0.decoder.weight": 0.2,
            "classifier.1.weight": 0.3}
    for fig in (viz.precode_figure(), viz.stochasticity_figure(cos, KEEP, rows), viz.stochasticity_figure(cos)):
        assert isinstance(fig, Figure)
    colours = _colours(viz.stochasticity_figure(cos, KEEP, rows))
    assert {ROLE["leak"].upper(), ROLE["protected"].upper()} <= colours
    plt.close("all")


def test_knob_figures():
    runs = knob_runs()
    original = torch.rand(1, 1, 8, 8)
    fig = viz.precode_knob_figure(runs, original, plain_accuracy=0.95, deterministic=KEEP)
    assert isinstance(fig, Figure)
    colours = _colours(fig)
    assert {DEFENSE["precode"].upper(), ROLE["leak"].upper(), ROLE["reference"].upper(), ROLE["protected"].upper()} <= colours
    view = viz.precode_knob_view(runs, 0.1, original, plain_accuracy=0.95)
    assert isinstance(view, Figure) and "0.1" in view._suptitle.get_text()
    with pytest.raises(KeyError, match="was not run"):
        viz.precode_knob_view(runs, 0.5, original)
    with pytest.raises(ValueError, match="lacks"):
        viz.precode_knob_figure({1.0: {"accuracy": 0.9}}, original)
    plt.close("all")


def test_knob_panel_redraws_without_recomputing():
    runs = knob_runs()
    panel = widgets.PrecodeKnobPanel(runs, torch.rand(1, 1, 8, 8), plain_accuracy=0.95, deterministic=KEEP)
    assert panel.renders == 1 and panel.last_beta == 1e-3 and panel.image.value and panel.bars.value
    assert "β" in panel.slider.description
    panel.render(1.0)
    assert panel.renders == 2 and panel.last_beta == 1.0
    with pytest.raises(ValueError, match="empty"):
        widgets.PrecodeKnobPanel({}, torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="lacks"):
        widgets.PrecodeKnobPanel({1.0: {"accuracy": 0.9}}, torch.rand(1, 1, 8, 8))
    plt.close("all")
