"""Notebook 02's exercises, questions and figures (fast: no full attack runs)."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from gleak_edu import exercises, models, viz  # noqa: E402
from gleak_edu.attacks import total_variation  # noqa: E402
from gleak_edu.exercises import nb02 as ex  # noqa: E402
from gleak_edu.viz import grnn as grnn_viz  # noqa: E402
from gleak_edu.viz.palette import ROLE  # noqa: E402


def fake_result(ssim, attack="GRNN", b=None, labels=1.0, evaluations=800, retries=0, side=8, channels=3):
    b = len(ssim) if b is None else b
    gen = torch.Generator().manual_seed(len(ssim))
    return SimpleNamespace(
        attack=attack,
        reconstruction=torch.rand(b, channels, side, side, generator=gen),
        metrics={"ssim": list(ssim), "ssim_mean": sum(ssim) / len(ssim), "psnr": [20.0] * b, "psnr_mean": 20.0,
                 "label_accuracy": labels, "order": torch.arange(b)},
        evaluations=evaluations,
        retries=retries,
        seconds=1.0,
    )


# --------------------------------------------------------------------------------------------------
# questions


def test_every_question_key_starts_with_02():
    import importlib

    before = set(exercises.QUESTIONS)
    importlib.reload(ex)  # re-registers the same questions (allowed: equal questions)
    mine = {k for k in exercises.QUESTIONS if k.startswith("02.")}
    assert {"02.race", "02.why_generator"} <= mine
    assert set(exercises.QUESTIONS) == before
    assert all(k.startswith("02.") for k in mine)


def test_race_is_a_prediction_and_why_is_checked():
    assert exercises.QUESTIONS["02.race"].answer is None
    why = exercises.QUESTIONS["02.why_generator"]
    assert why.answer is not None and set(why.hints) == set(why.options) - {why.answer}


def test_why_question(capsys):
    q = exercises.QUESTIONS["02.why_generator"]
    assert ex.ask("02.why_generator", q.answer).correct is True
    wrong = next(k for k in q.options if k != q.answer)
    fb = ex.ask("02.why_generator", wrong)
    assert fb.correct is False
    assert f"({q.answer})" not in fb.message and q.options[q.answer] not in fb.message
    assert ex.ask("02.why_generator", None).correct is None


def test_race_outcome_and_reveal(capsys):
    good, bad = fake_result([0.8, 0.7, 0.65, 0.9]), fake_result([0.1, 0.05, 0.0, 0.2], attack="DLG")
    assert ex.race_outcome({4: bad}, {4: good}) == "b"
    assert ex.race_outcome({4: good}, {4: good}) == "a"
    assert ex.race_outcome({4: good}, {4: bad}) == "c"
    assert ex.race_outcome({4: bad}, {4: bad}) == "d"
    assert ex.race_outcome({1: good, 4: bad}, {1: good, 4: good}, batch=1) == "a"
    with pytest.raises(KeyError):
        ex.race_outcome({4: bad}, {2: good}, batch=4)
    ex.predict("02.race", "b")
    assert ex.reveal("02.race", "b").correct is True
    ex.predict("02.race", "a")
    assert ex.reveal("02.race", "b").correct is False
    assert ex.predict("02.race", None).correct is None


def test_successes_counts_the_course_threshold():
    assert ex.successes(fake_result([0.6, 0.59, 0.99])) == 2


# --------------------------------------------------------------------------------------------------
# scaffold: GRNN's objective


def reference_body(fake_grads, true_grads, fake_images, tv_weight):
    sq = sum(((f - t) ** 2).sum() for f, t in zip(fake_grads, true_grads))
    return sq + sq.sqrt() + tv_weight * total_variation(fake_images)


def test_grnn_loss_accepts_the_reference_and_an_equivalent(capsys):
    assert ex.check_grnn_loss(ex.grnn_loss).correct is True
    assert ex.check_grnn_loss(reference_body).correct is True


@pytest.mark.parametrize("wrong", [
    lambda f, t, x, tv: sum(((a - b) ** 2).sum() for a, b in zip(f, t)) + tv * total_variation(x),  # no norm term
    lambda f, t, x, tv: sum(((a - b) ** 2).sum() + ((a - b) ** 2).sum().sqrt() for a, b in zip(f, t)) + tv * total_variation(x),  # per-layer norms
    lambda f, t, x, tv: (lambda sq: sq + sq + tv * total_variation(x))(sum(((a - b) ** 2).sum() for a, b in zip(f, t))),  # norm squared
    lambda f, t, x, tv: (lambda sq: sq + sq.sqrt())(sum(((a - b) ** 2).sum() for a, b in zip(f, t))),  # no TV
])
def test_grnn_loss_rejects_wrong_ones(wrong, capsys):
    fb = ex.check_grnn_loss(wrong)
    assert fb.correct is False
    assert "sq.sqrt()" not in fb.message and "sq + sq.sqrt()" not in fb.message


def test_grnn_loss_unanswered(capsys):
    def blank(fake_grads, true_grads, fake_images, tv_weight):
        sq = ...  # noqa: F841
        return ...

    assert ex.check_grnn_loss(blank).correct is None


# --------------------------------------------------------------------------------------------------
# the TV exercise (the reference runs GRNN: patch it with a fast fake)


@pytest.fixture
def fake_tv(monkeypatch):
    """GRNN replaced by a table: SSIM falls below 0.3 (shows nothing) from weight 10 on."""
    table = {0.0: 0.9, 1e-3: 0.9, 1e-1: 0.85, 1.0: 0.4, 10.0: 0.1}

    def fake_grnn(model, shared, *, tv_weight, **kwargs):
        return SimpleNamespace(metrics={"ssim_mean": table[tv_weight]})

    monkeypatch.setattr(ex, "grnn", fake_grnn)
    victim = models.build_model("lenet-zhu", (3, 8, 8), num_classes=10, seed=0)
    x, y = torch.rand(1, 3, 8, 8), torch.tensor([3])
    return victim, x, y


def test_tv_breaking_point(fake_tv):
    assert ex.tv_breaking_point(*fake_tv) == 10.0
    assert ex.tv_breaking_point(*fake_tv, threshold=0.6) == 1.0
    assert ex.tv_breaking_point(*fake_tv, candidates=(0.0, 1e-3)) is None


def test_check_tv(fake_tv, capsys):
    assert ex.check_tv(10.0, *fake_tv).correct is True
    assert ex.check_tv(10, *fake_tv).correct is True
    assert ex.check_tv(None, *fake_tv).correct is None
    for wrong in (0.0, 1e-3, 1e-1, 1.0, 5.0, "abc"):
        fb = ex.check_tv(wrong, *fake_tv)
        assert fb.correct is False
        assert "10" not in fb.message.replace("[0.0, 0.001, 0.1, 1.0, 10.0]", "")


# --------------------------------------------------------------------------------------------------
# figures


def _colors(fig):
    out = set()
    for ax in fig.axes:
        for line in ax.get_lines():
            out.add(matplotlib.colors.to_hex(line.get_color()).upper())
        for coll in ax.collections:
            for c in coll.get_facecolors():
                out.add(matplotlib.colors.to_hex(c[:3]).upper())
        for text in [ax.title, *ax.texts]:
            out.add(matplotlib.colors.to_hex(text.get_color()).upper())
    return out


def test_race_figure_and_table():
    runs = {"DLG": {1: fake_result([0.9], "DLG"), 4: fake_result([0.1, 0.0, 0.05, 0.2], "DLG", retries=2)},
            "GRNN": {1: fake_result([0.95]), 4: fake_result([0.8, 0.7, 0.65, 0.9])}}
    fig = viz.race_figure(runs)
    assert isinstance(fig, matplotlib.figure.Figure)
    colors = _colors(fig)
    assert ROLE["leak"].upper() in colors and ROLE["reference"].upper() in colors
    table = viz.race_table(runs, budgets={"DLG": 4000, "GRNN": 800})
    assert "4/4 [51-100]" in table and "0/4 [0-49]" in table and "/ 4000" in table  # counts with the Wilson interval
    matplotlib.pyplot.close("all")


def test_race_images_titles_success_in_colour():
    x = torch.rand(2, 3, 8, 8)
    fig = viz.race_images(x, {"GRNN": fake_result([0.9, 0.2]), "DLG": fake_result([0.1, 0.7], "DLG")}, caption="c")
    assert isinstance(fig, matplotlib.figure.Figure)
    titles = {ax.get_title(): matplotlib.colors.to_hex(ax.title.get_color()).upper() for ax in fig.axes}
    assert titles["GRNN: SSIM 0.90"] == ROLE["leak"].upper()
    assert titles["GRNN: SSIM 0.20"] == ROLE["truth"].upper()
    assert titles["DLG: SSIM 0.70"] == ROLE["reference"].upper()
    matplotlib.pyplot.close("all")


def test_gallery_neighbours_and_reid_figure():
    gen = torch.Generator().manual_seed(0)
    gallery = torch.rand(6, 1, 12, 12, generator=gen)
    rec = gallery[[2, 4]] + 0.01 * torch.randn(2, 1, 12, 12, generator=gen)
    idx, score = grnn_viz.gallery_neighbours(rec.clamp(0, 1), gallery)
    assert idx[:, 0].tolist() == [2, 4] and idx.shape == (2, 2) and bool((score[:, 0] >= score[:, 1]).all())
    fig = viz.reid_figure(gallery, [2, 4], rec.clamp(0, 1), caption="LFW")
    assert isinstance(fig, matplotlib.figure.Figure)
    assert ROLE["leak"].upper() in _colors(fig)
    with pytest.raises(ValueError):
        viz.reid_figure(gallery, [2], rec)
    matplotlib.pyplot.close("all")


def test_tv_figure():
    x = torch.rand(1, 3, 8, 8)
    runs = {0.0: fake_result([0.9], b=1), 10.0: fake_result([0.2], b=1)}
    fig = viz.tv_figure(x, runs)
    assert isinstance(fig, matplotlib.figure.Figure)
    colors = _colors(fig)
    assert ROLE["leak"].upper() in colors and ROLE["truth"].upper() in colors
    matplotlib.pyplot.close("all")


def test_figures_in_viz_all():
    for name in ("race_figure", "race_images", "race_table", "reid_figure", "tv_figure", "gallery_neighbours"):
        assert name in viz.__all__ and name in grnn_viz.__all__
