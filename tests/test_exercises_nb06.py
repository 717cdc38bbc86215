"""Notebook 06's exercise checks, questions and figures (fast: a few seconds)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F
from matplotlib.colors import to_rgb

from gleak_edu import fl, models, text, viz
from gleak_edu.defenses import epsilon_for_steps, gaussian_epsilon
from gleak_edu.exercises import QUESTIONS
from gleak_edu.exercises import nb06 as ex
from gleak_edu.viz.palette import ROLE


@pytest.fixture(scope="module")
def setup():
    vocab, lines = text.zen_vocabulary(), text.zen_lines()
    torch.manual_seed(0)
    model = models.TinyTransformer(len(vocab), num_classes=len(lines))
    return model, vocab


def _candidates(shared):
    tok = shared["token_embedding.weight"]
    return tok, torch.nonzero(tok.norm(dim=1)).flatten()


def euclid(shared, length, vocab):
    tok, c = _candidates(shared)
    return [vocab.words[int(c[k])] for k in torch.cdist(shared["position_embedding.weight"][:length], tok[c]).argmin(1)]


def cosine_ids(shared, length, vocab):  # token ids, not words: accepted too
    tok, c = _candidates(shared)
    pos = F.normalize(shared["position_embedding.weight"][:length], dim=1)
    return torch.tensor([int(c[k]) for k in (pos @ F.normalize(tok[c], dim=1).t()).argmax(1)])


def farthest(shared, length, vocab):  # argmax of a distance: wrong
    tok, c = _candidates(shared)
    return [vocab.words[int(c[k])] for k in torch.cdist(shared["position_embedding.weight"][:length], tok[c]).argmax(1)]


def _truths(vocab):
    return [" ".join(vocab.split(s)) for s, _ in ex.SENTENCES]


@pytest.mark.parametrize("rule", [euclid, cosine_ids], ids=["euclidean", "cosine-ids"])
def test_order_check_accepts_any_sensible_rule(setup, rule, capsys):
    model, vocab = setup
    fb = ex.check_order_from_rows(rule, model, vocab)
    assert fb.correct is True
    assert capsys.readouterr().out.startswith("Correct")


@pytest.mark.parametrize("wrong", [
    farthest,
    lambda shared, length, vocab: list(reversed(euclid(shared, length, vocab))),
    lambda shared, length, vocab: euclid(shared, length, vocab)[:-1],
    lambda shared, length, vocab: vocab.words[:length],
    lambda shared, length, vocab: "not a list",
    lambda shared, length, vocab: 1 / 0,
], ids=["farthest", "reversed", "short", "not-leaked", "string", "raises"])
def test_order_check_rejects_without_revealing(setup, wrong, capsys):
    model, vocab = setup
    fb = ex.check_order_from_rows(wrong, model, vocab)
    out = capsys.readouterr().out
    assert fb.correct is False and out.startswith("Not quite")
    for truth in _truths(vocab):
        assert truth not in out
    assert "errors should never" not in out


@pytest.mark.parametrize("blank", [None, lambda shared, length, vocab: ..., lambda shared, length, vocab: None])
def test_order_check_unanswered(setup, blank):
    model, vocab = setup
    assert ex.check_order_from_rows(blank, model, vocab).correct is None


def test_order_check_not_implemented(setup):
    model, vocab = setup

    def todo(shared, length, vocab):
        raise NotImplementedError

    assert ex.check_order_from_rows(todo, model, vocab).correct is None


def test_sentences_have_distinct_words_and_repeated_has_a_repeat():
    vocab = text.zen_vocabulary()
    for sentence, label in ex.SENTENCES:
        words = vocab.split(sentence)
        assert len(set(words)) == len(words) and 0 <= label < 19
    words = vocab.split(ex.REPEATED[0])
    assert len(set(words)) < len(words)


def test_what_survives():
    levels = [0.0, 1e-3, 1e-2, 1e-1]
    order = dict(zip(levels, [1.0, 0.9, 0.1, 0.0]))
    words = dict(zip(levels, [1.0, 1.0, 0.8, 0.0]))
    assert ex.what_survives(order, words) == "a"
    assert ex.what_survives(words, order) == "b"
    assert ex.what_survives(order, order) == "c"


def test_questions_registered_with_prefix_and_checked(capsys):
    keys = [k for k in QUESTIONS if k.startswith("06.")]
    assert {"06.survives", "06.flat", "06.step", "06.repeat"} <= set(keys)
    assert QUESTIONS["06.survives"].answer is None  # a prediction
    for key in ("06.flat", "06.step", "06.repeat"):
        q = QUESTIONS[key]
        assert ex.ask(key, q.answer).correct is True
        for letter in q.options:
            if letter != q.answer:
                fb = ex.ask(key, letter)
                assert fb.correct is False and letter in q.hints
                assert q.options[q.answer] not in fb.message
        assert ex.ask(key, None).correct is None
    capsys.readouterr()


def test_predict_then_reveal(capsys):
    ex.predict("06.survives", "b")
    assert ex.reveal("06.survives", "a").correct is False
    ex.predict("06.survives", "a")
    assert ex.reveal("06.survives", "a").correct is True
    ex.predict("06.survives", None)
    assert ex.reveal("06.survives", "a").correct is None
    capsys.readouterr()


# ---------------------------------------------------------------------------------------------- epsilon


def _analytic_gaussian_epsilon(sigma: float, delta: float) -> float:
    """Balle & Wang 2018 (Theorem 8): the exact epsilon of one Gaussian release, sensitivity 1, std sigma."""
    from scipy.optimize import brentq
    from scipy.special import log_ndtr

    def excess(eps):  # log delta(eps) - log delta, delta(eps) = Phi(1/2s - eps s) - e^eps Phi(-1/2s - eps s)
        a, b = log_ndtr(1 / (2 * sigma) - eps * sigma), eps + log_ndtr(-1 / (2 * sigma) - eps * sigma)
        return (a + math.log1p(-math.exp(b - a)) if b < a else -math.inf) - math.log(delta)

    hi = 1.0
    while excess(hi) > 0:
        hi *= 2
    return brentq(excess, 0.0, hi, rtol=1e-10)


@pytest.mark.parametrize("sigma", [1e-3, 1e-2, 0.1, 1.0, 5.0])
def test_rdp_per_release_is_a_valid_and_close_bound(sigma):
    """The notebook's per-release epsilon (RDP, q = 1, one step) is >= the exact one and within 12 % of it."""
    exact = _analytic_gaussian_epsilon(sigma, 1e-5)
    rdp = epsilon_for_steps(sigma, 1.0, 1, 1e-5)
    assert exact <= rdp <= 1.12 * exact


def test_classical_formula_understates_outside_its_range():
    for sigma in (1e-3, 1e-2, 0.1):
        assert gaussian_epsilon(sigma, 1e-5) < _analytic_gaussian_epsilon(sigma, 1e-5)


# ---------------------------------------------------------------------------------------------- figures


def _palette_blue_shade(rgb) -> bool:
    """A mix of ROLE['protected'] with white (as noise_level_colors makes them)."""
    base = to_rgb(ROLE["protected"])
    ts = [(1 - c) / (1 - b) for c, b in zip(rgb, base) if b < 1]
    return all(abs(t - ts[0]) < 1e-6 for t in ts) and 0 < ts[0] <= 1 + 1e-9


def _line_colors(fig):
    return [to_rgb(line.get_color()) for ax in fig.axes for line in ax.get_lines()]


def test_embedding_rows_figure(setup):
    model, vocab = setup
    tokens = vocab.encode("errors should never pass silently")
    shared = fl.client_text_gradient(model, tokens, torch.tensor([9]))
    fig = viz.embedding_rows_figure(shared, vocab.words)
    assert isinstance(fig, matplotlib.figure.Figure)
    bars = [p for ax in fig.axes for p in ax.patches]
    assert len(bars) == 5 + 5 and all(to_rgb(p.get_facecolor()) == to_rgb(ROLE["leak"]) for p in bars)
    assert set(_line_colors(fig)) <= {to_rgb(ROLE["reference"])}
    labels = {t.get_text() for t in fig.axes[0].texts}
    assert labels == set(vocab.split("errors should never pass silently"))
    plt.close(fig)
    with pytest.raises(ValueError):
        viz.embedding_rows_figure(shared, vocab.words[:-1])


def test_text_noise_figure():
    levels = [0.0, 1e-3, 1e-2, 1.0]
    order = dict(zip(levels, [1.0, 0.6, 0.05, 0.0]))
    recall = dict(zip(levels, [1.0, 0.9, 0.1, 0.05]))
    eps = {s: epsilon_for_steps(s, 1.0, 1, 1e-5) for s in levels}
    fig = viz.text_noise_figure(order, recall, chance=1 / 80, epsilons=eps, delta=1e-5)
    assert isinstance(fig, matplotlib.figure.Figure)
    allowed = {to_rgb(ROLE["leak"]), to_rgb(ROLE["reference"])}
    assert set(_line_colors(fig)) <= allowed
    top = fig.axes[0].child_axes  # the secondary (epsilon) axis
    assert top and "∞" in [t.get_text() for t in top[0].get_xticklabels()]
    plt.close(fig)
    with pytest.raises(ValueError):
        viz.text_noise_figure({0.0: 1.0}, {0.0: 1.0}, chance=0.1)


def test_noisy_sgd_figure_and_colors():
    curve = [(0, 3.0), (10, 2.0), (20, 1.0)]
    curves = {(0.0, 0.5): curve, (1.0, 0.5): curve, (4.0, 0.5): curve, (4.0, 0.02): curve}
    fig = viz.noisy_sgd_figure(curves, epsilons={k: 1.0 for k in curves})
    assert isinstance(fig, matplotlib.figure.Figure)
    colors = _line_colors(fig)
    assert to_rgb(ROLE["reference"]) in colors
    assert all(c == to_rgb(ROLE["reference"]) or _palette_blue_shade(c) for c in colors)
    styles = [line.get_linestyle() for line in fig.axes[0].get_lines()]
    assert styles.count("--") == 1  # the one run at the other step size
    plt.close(fig)
    shades = viz.noise_level_colors([0.0, 0.5, 1.0, 4.0])
    assert shades[0.0] == to_rgb(ROLE["reference"]) and shades[4.0] == pytest.approx(to_rgb(ROLE["protected"]))
    assert all(_palette_blue_shade(shades[s]) for s in (0.5, 1.0, 4.0))
    with pytest.raises(ValueError):
        viz.noisy_sgd_figure({})
