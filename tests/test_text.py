"""Gradient leakage in transformers: vocabulary, model, the token-set argument, order recovery, noise, epsilon, noisy SGD, CLI."""

from __future__ import annotations

from gleak_edu.attacks import AttackOptions

import json
import math
import random

import pytest
import torch

from gleak_edu import cli, fl, models, text, training
from gleak_edu.attacks import recovered_token_set, text_metrics, text_recovery
from gleak_edu.defenses import clip_and_noise, epsilon, gaussian_epsilon


@pytest.fixture(scope="module")
def vocab():
    return text.zen_vocabulary()


@pytest.fixture(scope="module")
def model(vocab):
    torch.manual_seed(0)
    return models.TinyTransformer(len(vocab), 19)


def _random_sentence(rng, vocab, n):
    return [rng.choice(vocab.words) for _ in range(n)]


def test_vocabulary_from_the_zen_of_python(vocab, capsys):
    lines = text.zen_lines()
    assert len(lines) == 19 and lines[0] == "Beautiful is better than ugly."
    assert capsys.readouterr().out == ""  # `import this` prints; we do not
    assert len(vocab) == 80 and list(vocab.words) == sorted(set(vocab.words))
    ids = vocab.encode("Now is better than never.")
    assert vocab.decode(ids) == "now is better than never"
    with pytest.raises(ValueError, match="words not in the vocabulary: apples, bananas"):
        vocab.encode("bananas are better than apples")
    with pytest.raises(ValueError, match="no words"):
        vocab.encode("  ... ")
    x, y = text.zen_fragments(4)
    assert x.shape == (80, 4) and int(y.max()) == 18


def test_model_shapes_and_errors(model, vocab):
    tokens = vocab.encode("simple is better than complex")[None]
    assert model(tokens).shape == (1, 19)
    emb = model.token_embedding(tokens)
    torch.testing.assert_close(model(embeddings=emb), model(tokens))
    with pytest.raises(ValueError, match="1 to 16 tokens"):
        model(torch.zeros((1, 17), dtype=torch.int64))
    with pytest.raises(ValueError, match="token ids must lie"):
        model(torch.tensor([[80]]))
    with pytest.raises(ValueError, match="int64"):
        model(torch.zeros((1, 3)))


@pytest.mark.parametrize("seed", range(5))
def test_token_set_and_length_from_the_embedding_gradients(model, vocab, seed):
    rng = random.Random(seed)
    words = _random_sentence(rng, vocab, rng.randint(1, 16))  # repeats allowed
    tokens = vocab.encode(" ".join(words))
    shared = fl.client_text_gradient(model, tokens, torch.tensor([seed]))
    token_set, length = recovered_token_set(model, shared)
    assert token_set == sorted(set(tokens.tolist()))
    assert length == len(tokens)
    # the identity behind it: a word's row is the sum of its positions' rows
    pos = shared["position_embedding.weight"]
    for v in set(tokens.tolist()):
        places = [j for j, t in enumerate(tokens.tolist()) if t == v]
        torch.testing.assert_close(shared["token_embedding.weight"][v], pos[places].sum(0), rtol=1e-5, atol=1e-7)


def test_order_recovery_reaches_90_percent_on_sentences_up_to_12_words(model, vocab):
    rng = random.Random(1)
    accs = []
    for i in range(8):
        tokens = vocab.encode(" ".join(_random_sentence(rng, vocab, rng.randint(1, 12))))
        shared = fl.client_text_gradient(model, tokens, torch.tensor([i]))
        r = text_recovery(model, shared, vocab, truth=(tokens, i))
        assert r.metrics["set_recall"] == 1.0 and r.metrics["set_precision"] == 1.0
        assert r.metrics["label_correct"] and r.length == len(tokens)
        accs.append(r.metrics["order_accuracy"])
    assert sum(accs) / len(accs) >= 0.9, accs


def test_order_recovery_survives_clipping_and_reports_live(model, vocab):
    tokens = vocab.encode("errors should never pass silently unless explicitly silenced")
    shared = clip_and_noise(fl.client_text_gradient(model, tokens, torch.tensor([9])), noise_multiplier=0.0, max_grad_norm=0.01)
    seen = []
    r = text_recovery(model, shared, vocab, truth=tokens, iterations=40, callback=seen.append, options=AttackOptions(callback_every=10))
    assert r.metrics["order_accuracy"] == 1.0
    assert len(seen) == 5 and seen[-1].done and seen[-1].words == r.words


def test_large_noise_takes_the_attack_to_chance(model, vocab):
    accs = []
    for i, line in enumerate(text.zen_lines()[:3]):
        tokens = vocab.encode(line)
        shared = clip_and_noise(fl.client_text_gradient(model, tokens, torch.tensor([i])), noise_multiplier=1.0, max_grad_norm=1.0, seed=i)
        accs.append(text_recovery(model, shared, vocab, truth=tokens, iterations=50).metrics["order_accuracy"])
    assert sum(accs) / len(accs) <= 0.2


def test_text_metrics():
    m = text_metrics([1, 2, 3], [1, 3, 2, 4], token_set=[1, 2, 3, 5])
    assert m["set_recall"] == 0.75 and m["set_precision"] == 0.75 and m["order_accuracy"] == 0.25


def test_clip_and_noise_and_the_gaussian_mechanism():
    g = {"a": torch.full((100,), 1.0), "b": torch.full((300,), 1.0)}  # norm 20
    clipped = clip_and_noise(g, noise_multiplier=0.0, max_grad_norm=2.0)
    norm = math.sqrt(sum(float(t.pow(2).sum()) for t in clipped.values()))
    assert norm == pytest.approx(2.0, rel=1e-6)
    noisy = clip_and_noise(g, noise_multiplier=3.0, max_grad_norm=2.0, seed=1)
    diff = torch.cat([(noisy[k] - clipped[k]) for k in g])
    assert float(diff.std()) == pytest.approx(6.0, rel=0.1)
    with pytest.raises(ValueError, match="clipping bound"):
        clip_and_noise(g, noise_multiplier=1.0, max_grad_norm=0.0)
    # the closed form: sqrt(2 ln(1.25 / delta)) / noise_multiplier
    for noise_multiplier, delta in ((5.0, 1e-5), (10.0, 1e-6)):
        expected = math.sqrt(2 * math.log(1.25 / delta)) / noise_multiplier
        assert gaussian_epsilon(noise_multiplier, delta) == pytest.approx(expected, rel=1e-12)
    assert gaussian_epsilon(0.0) == math.inf
    # composing releases costs more than one, and RDP accounting of one full-batch release is below the classical bound
    assert epsilon([(5.0, 1.0, 100)], 1e-5) > epsilon([(5.0, 1.0, 1)], 1e-5)
    assert epsilon([(5.0, 1.0, 1)], 1e-5) < gaussian_epsilon(5.0, 1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_noisy_sgd_still_halves_the_loss(vocab, seed):
    x, y = text.zen_fragments(4)
    torch.manual_seed(seed)
    net = models.TinyTransformer(len(vocab), 19)
    curve = training.noisy_sgd(net, x, y, noise_multiplier=0.5, max_grad_norm=1.0, steps=300, lr=0.5, batch_size=16,
                               seed=seed)
    assert curve[-1][1] <= 0.5 * curve[0][1]
    with pytest.raises(ValueError):
        training.noisy_sgd(net, x, y, noise_multiplier=-1.0)


def test_text_recovery_bad_input(model, vocab):
    tokens = vocab.encode("now is better than never")
    shared = fl.client_text_gradient(model, tokens, torch.tensor([0]))
    with pytest.raises(ValueError, match="token_embedding"):
        text_recovery(models.MLP((1, 8, 8), 10), shared, vocab)
    with pytest.raises(ValueError, match="start"):
        text_recovery(model, shared, vocab, start="zeros")
    bad = dict(shared)
    bad["head.bias"] = torch.full_like(bad["head.bias"], float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        text_recovery(model, bad, vocab)
    with pytest.raises(ValueError, match="non-empty sentence"):
        fl.client_text_gradient(model, torch.zeros((0,), dtype=torch.int64), torch.tensor([0]))


def test_text_command(tmp_path, capsys):
    out = tmp_path / "t.json"
    assert cli.main(["attack", "text", "--sentence", "Now is better than never.", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["sentence_recovered"] == "now is better than never" and res["order_accuracy"] == 1.0
    assert res["set_recall"] == 1.0 and res["set_precision"] == 1.0 and res["epsilon"] is None
    assert cli.main(["attack", "text", "--sentence", "Now is better than never.", "--noise-multiplier", "5", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["epsilon"] == pytest.approx(gaussian_epsilon(5.0, 1e-5)) and res["order_accuracy"] <= 0.4
    assert "in order" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["--sentence", "bananas are better"], "words not in the vocabulary: bananas"),
    (["--sentence", "..."], "no words"),
    (["--sentence", " ".join(["now"] * 17)], "1 to 16 tokens"),
    ([], "needs --sentence"),
])
def test_text_command_bad_input(args, message, capsys):
    assert cli.main(["attack", "text", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_text_panels_run_headless(model, vocab):
    from gleak_edu import widgets

    panel = widgets.TextNoisePanel(model, vocab, "now is better than never", 0, iterations=40, noise_levels=(0.0, 1.0))
    assert panel.results[0.0].metrics["order_accuracy"] == 1.0
    noisy = panel.run(1.0)
    assert noisy.metrics["order_accuracy"] <= 0.4 and "per release" in panel.summary.value
    assert panel.view.updates > 0


def test_stop_when_exact_skips_the_matching_only_where_the_start_is_exact(model, vocab):
    rng = random.Random(5)
    words = _random_sentence(rng, vocab, 7)
    toks = vocab.encode(" ".join(words))
    g = fl.client_text_gradient(model, toks, torch.tensor([2]))
    full = text_recovery(model, g, vocab, truth=(toks, 2))
    quick = text_recovery(model, g, vocab, truth=(toks, 2), stop_when_exact=True)
    assert quick.tokens == full.tokens and quick.metrics == full.metrics
    if full.loss <= 1e-12:  # the similarity start decoded exactly: no step was taken
        assert quick.iterations == 0 and "exactly" in quick.message and full.iterations == 200
    noisy = clip_and_noise(g, 0.1, 1.0, seed=0)  # noise: no exact start, the matching runs in full
    assert text_recovery(model, noisy, vocab, stop_when_exact=True).iterations == 200
