"""Notebook 01's exercises, questions and figures (gleak_edu.exercises.nb01, gleak_edu.viz.dlg): fast, no attack runs."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from gleak_edu import data, fl, models, viz  # noqa: E402
from gleak_edu.exercises import QUESTIONS  # noqa: E402
from gleak_edu.exercises import nb01 as ex  # noqa: E402
from gleak_edu.viz.palette import ROLE  # noqa: E402


@pytest.fixture(scope="module")
def victim():
    torch.manual_seed(0)
    x, y = data.photos().batch(0)
    model = models.build_model("lenet-zhu", (3, 32, 32), 100, seed=1)
    return model, fl.client_gradient(model, x, y), y


def _solution_matching_loss(model, dummy_x, dummy_label, shared):
    loss = torch.sum(-dummy_label * torch.log_softmax(model(dummy_x), dim=-1))
    grads = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
    targets = [shared[n] for n, _ in model.named_parameters()]
    return sum(((g - t) ** 2).sum() for g, t in zip(grads, targets))


def _norm_not_squared(model, dummy_x, dummy_label, shared):
    loss = torch.sum(-dummy_label * torch.log_softmax(model(dummy_x), dim=-1))
    grads = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
    return sum((g - shared[n]).norm() for g, (n, _) in zip(grads, model.named_parameters()))


def test_matching_loss_scaffold_accepts_the_solution_and_rejects_a_norm(capsys):
    assert ex.check_matching_loss(_solution_matching_loss).correct is True
    assert ex.check_matching_loss(_norm_not_squared).correct is False
    assert ex.check_matching_loss(lambda *args: ...).correct is None
    out = capsys.readouterr().out
    assert "sum(((g - t) ** 2)" not in out  # the hint never writes the line


def test_label_rule_scaffold_accepts_the_solution_and_rejects_argmax():
    assert ex.check_label_rule(lambda m, s: int(s["classifier.weight"].sum(dim=1).argmin())).correct is True
    assert ex.check_label_rule(lambda m, s: s["classifier.weight"].sum(dim=1).argmin()).correct is True  # a tensor is fine
    assert ex.check_label_rule(lambda m, s: int(s["classifier.weight"].sum(dim=1).argmax())).correct is False
    assert ex.check_label_rule(lambda m, s: int(s["classifier.weight"].sum(dim=0).argmin())).correct is False
    assert ex.check_label_rule(lambda m, s: ...).correct is None


def test_reference_matching_loss_equals_the_plain_formula(victim):
    model, shared, _ = victim
    gen = torch.Generator().manual_seed(3)
    dx = torch.randn((1, 3, 32, 32), generator=gen)
    dl = torch.softmax(torch.randn((1, 100), generator=gen), -1)
    want = float(_solution_matching_loss(model, dx, dl, shared).detach())
    assert float(ex.reference_matching_loss(model, dx, dl, shared)) == pytest.approx(want, rel=1e-4)


def test_label_noise_check_right_wrong_unanswered_and_never_the_value(victim, capsys):
    model, shared, y = victim
    wrong = ex.label_errors(model, shared, y.item())
    truth = next(c for c in ex.CANDIDATES if wrong[c] >= 10)
    assert ex.check_label_noise(truth, model, shared, y).correct is True
    assert ex.check_label_noise(None, model, shared, y).correct is None
    capsys.readouterr()
    for bad in [c for c in ex.CANDIDATES if c != truth] + [5.0, "x"]:
        fb = ex.check_label_noise(bad, model, shared, y)
        assert fb.correct is False
        out = capsys.readouterr().out
        assert f"{truth:g}" not in out and f"{truth}" not in out, out  # a hint, never the expected value
        assert f"{wrong[truth]}" not in out.replace("20", "")  # not even the count at the answer


def test_questions_are_registered_with_the_notebook_prefix():
    mine = [k for k in QUESTIONS if k.startswith("01.")]
    assert {"01.relu", "01.noise", "01.label-noise"} <= set(mine)
    assert QUESTIONS["01.relu"].answer is None and QUESTIONS["01.noise"].answer is None  # predictions
    q = QUESTIONS["01.label-noise"]
    assert q.answer == "a" and set(q.hints) == set(q.options) - {"a"}
    for key in ("01.relu", "01.noise"):  # the observed option comes from ssim_band, so the letters must match
        assert set(QUESTIONS[key].options) == {"a", "b", "c"}


def test_why_question_gives_hints_and_the_explanation(capsys):
    assert ex.ask("01.label-noise", "a").correct is True
    assert ex.ask("01.label-noise", "d").correct is False
    assert ex.ask("01.label-noise", None).correct is None


@pytest.mark.parametrize("ssim, band", [(0.95, "a"), (0.6, "a"), (0.59, "b"), (0.3, "b"), (0.29, "c"), (-0.1, "c")])
def test_ssim_band(ssim, band):
    assert ex.ssim_band(ssim) == band


def test_prediction_then_reveal(capsys):
    ex.predict("01.noise", "b")
    assert ex.reveal("01.noise", ex.ssim_band(0.45)).correct is True
    ex.predict("01.relu", "a")
    assert ex.reveal("01.relu", ex.ssim_band(0.05)).correct is False


def _colors(fig):
    found = set()
    for ax in fig.axes:
        for p in ax.patches:
            found.add(to_hex(p.get_facecolor()).lower())
        for line in ax.get_lines():
            found.add(to_hex(line.get_color()).lower())
    return found


def test_label_rowsum_figure_marks_the_true_class_in_black(victim):
    model, shared, y = victim
    fig = viz.label_rowsum_figure(shared["classifier.weight"], true_label=y.item())
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    bars = fig.axes[0].patches
    assert to_hex(bars[y.item()].get_facecolor()).lower() == ROLE["truth"].lower()
    palette = {c.lower() for c in ROLE.values()}
    assert {to_hex(b.get_facecolor()).lower() for b in bars} <= palette
    with pytest.raises(ValueError):
        viz.label_rowsum_figure(torch.zeros(3))
    plt.close("all")


def test_matching_loss_figure_uses_palette_colours():
    fig = viz.matching_loss_figure({"reference_dlg (plain)": [576.0, 95.0, 43.0], "dlg (the engine)": [576.0, 92.0, 40.0]})
    assert isinstance(fig, Figure)
    assert _colors(fig) <= {c.lower() for c in ROLE.values()}
    plt.close("all")
