"""PPP and full perturbation (gleak_edu.defenses.ppp): which gradients, clipping, noise, training, accounting."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from gleak_edu import data, fl, models
from gleak_edu.defenses import (
    add_precode,
    deterministic_parameters,
    epsilon_for_steps,
    full_perturbation_gradient,
    perturbation_scope,
    perturbed_gradient,
    ppp_gradient,
    train_perturbed,
)


def _mlp(precode: bool = True, seed: int = 0, hidden=(32, 32)):
    """A small tanh MLP for 28x28 digits (PyTorch's init from ``seed``), with PRECODE (K = 16) by default."""
    torch.manual_seed(seed)
    model = models.MLP((1, 28, 28), 10, hidden, "tanh")
    if precode:
        add_precode(model, 16, 1e-3, seed=seed)
    return model


@pytest.fixture(scope="module")
def digits3():
    mn = data.mnist_subset()
    return mn.images[:3], mn.labels[:3]


def _norm(g, names):
    return float(torch.cat([g[n].reshape(-1) for n in names]).norm())


def test_ppp_scope_is_exactly_the_deterministic_parameters():
    model = _mlp()
    scope = perturbation_scope(model, "ppp")
    assert scope == deterministic_parameters(model)
    assert scope == [
        "features.0.weight", "features.0.bias", "features.2.weight", "features.2.bias",
        "classifier.0.encoder.weight", "classifier.0.encoder.bias",
    ]
    assert perturbation_scope(model, "full") == [n for n, _ in model.named_parameters()]
    assert perturbation_scope(model, "none") == []
    # a conv victim: every conv layer plus the encoder
    lenet = models.build_model("lenet-zhu", (3, 32, 32), 10, "sigmoid", seed=0)
    add_precode(lenet, 16)
    conv_scope = perturbation_scope(lenet, "ppp")
    assert all(n.startswith("features.") or ".encoder." in n for n in conv_scope)
    assert not any(".decoder." in n or n.startswith("classifier.1") for n in conv_scope)


def test_scope_errors():
    with pytest.raises(ValueError, match="PPP needs a PRECODE model"):
        perturbation_scope(_mlp(precode=False), "ppp")
    with pytest.raises(ValueError, match="scope must be one of"):
        perturbation_scope(_mlp(), "some")
    with pytest.raises(ValueError, match="does not have"):
        perturbation_scope(_mlp(), ["features.0.weight", "nope"])
    assert perturbation_scope(_mlp(), ["classifier.1.bias", "features.0.bias"]) == ["features.0.bias", "classifier.1.bias"]


def test_ppp_perturbs_the_deterministic_gradients_and_leaves_the_others_bit_identical(digits3):
    x, y = digits3
    model = _mlp()
    torch.manual_seed(7)
    clean = fl.client_gradient(model, x, y)
    torch.manual_seed(7)
    ppp = ppp_gradient(model, x, y, noise_multiplier=0.5, max_grad_norm=1.0, seed=3)
    scope = set(perturbation_scope(model, "ppp"))
    assert list(ppp) == list(clean)
    for name in clean:
        if name in scope:
            assert not torch.allclose(ppp[name], clean[name]), name
        else:
            assert torch.equal(ppp[name], clean[name]), name
    # full perturbation changes every gradient
    torch.manual_seed(7)
    full = full_perturbation_gradient(model, x, y, noise_multiplier=0.5, max_grad_norm=1.0, seed=3)
    assert all(not torch.allclose(full[n], clean[n]) for n in clean)
    # the model is left as it was: no hooks, no stale grads, same weights
    assert all(p.grad is None for p in model.parameters())
    assert not model._forward_hooks and not any(m._forward_hooks for m in model.modules())
    torch.manual_seed(7)
    again = fl.client_gradient(model, x, y)
    assert all(torch.equal(again[n], clean[n]) for n in clean)


def test_clipping_bounds_each_example_and_matches_a_manual_computation(digits3):
    x, y = digits3
    model = _mlp(precode=False)
    bound = 0.05
    names = [n for n, _ in model.named_parameters()]
    per_example = [fl.client_gradient(model, x[i : i + 1], y[i : i + 1]) for i in range(3)]
    norms = [_norm(g, names) for g in per_example]
    assert min(norms) > bound  # every example is really clipped
    shared = perturbed_gradient(model, x, y, noise_multiplier=0.0, max_grad_norm=bound, scope="full")
    manual = {n: sum(g[n] * min(1.0, bound / (nrm + 1e-6)) for g, nrm in zip(per_example, norms)) / 3 for n in names}
    for n in names:
        torch.testing.assert_close(shared[n], manual[n], rtol=1e-4, atol=1e-7)
    assert _norm(shared, names) <= bound + 1e-6
    # one example: the whole perturbed part has norm exactly C
    one = perturbed_gradient(model, x[:1], y[:1], noise_multiplier=0.0, max_grad_norm=bound, scope="full")
    assert _norm(one, names) == pytest.approx(bound, rel=1e-4)


def test_ppp_clips_over_the_deterministic_part_only(digits3):
    x, y = digits3
    model = _mlp()
    scope = perturbation_scope(model, "ppp")
    torch.manual_seed(1)
    one = ppp_gradient(model, x[:1], y[:1], noise_multiplier=0.0, max_grad_norm=0.01)
    assert _norm(one, scope) == pytest.approx(0.01, rel=1e-4)


def test_noise_has_the_stated_scale_and_is_seeded(digits3):
    x, y = digits3
    model = _mlp(precode=False, hidden=(64, 64))
    names = [n for n, _ in model.named_parameters()]
    clean = perturbed_gradient(model, x, y, noise_multiplier=0.0, max_grad_norm=0.5, scope="full")
    noisy = perturbed_gradient(model, x, y, noise_multiplier=2.0, max_grad_norm=0.5, scope="full", seed=5)
    diff = torch.cat([(noisy[n] - clean[n]).reshape(-1) for n in names])
    # std of the noise on the batch mean: noise_multiplier * max_grad_norm / B
    assert float(diff.std()) == pytest.approx(2.0 * 0.5 / 3, rel=0.02)
    assert abs(float(diff.mean())) < 0.01
    same = perturbed_gradient(model, x, y, noise_multiplier=2.0, max_grad_norm=0.5, scope="full", seed=5)
    other = perturbed_gradient(model, x, y, noise_multiplier=2.0, max_grad_norm=0.5, scope="full", seed=6)
    assert all(torch.equal(same[n], noisy[n]) for n in names)
    assert not torch.equal(other[names[0]], noisy[names[0]])


def test_perturbed_gradient_bad_input(digits3):
    x, y = digits3
    model = _mlp()
    with pytest.raises(ValueError, match="noise_multiplier"):
        ppp_gradient(model, x, y, noise_multiplier=-1, max_grad_norm=1.0)
    with pytest.raises(ValueError, match="max_grad_norm"):
        ppp_gradient(model, x, y, noise_multiplier=1, max_grad_norm=0.0)
    with pytest.raises(ValueError, match="max_grad_norm"):
        ppp_gradient(model, x, y, noise_multiplier=1, max_grad_norm=float("nan"))
    with pytest.raises(ValueError, match="max_grad_norm"):
        perturbed_gradient(model, x, y, noise_multiplier=1, max_grad_norm="dynamic")  # dynamic is a clipping rule
    with pytest.raises(ValueError, match="pixels must lie"):
        ppp_gradient(model, x * 3, y, noise_multiplier=1, max_grad_norm=1.0)
    bn = nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.BatchNorm1d(8), nn.Linear(8, 10))
    with pytest.raises(ValueError, match="GroupNorm"):
        perturbed_gradient(bn, x, y, noise_multiplier=1, max_grad_norm=1.0, scope="full")


@pytest.mark.filterwarnings("ignore:Optimal order")
def test_epsilon_matches_opacus_and_decreases_with_noise():
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    for _ in range(100):  # step by step, as Opacus records it
        acc.step(noise_multiplier=1.1, sample_rate=0.016)
    assert epsilon_for_steps(1.1, 0.016, 100, 1e-5) == pytest.approx(acc.get_epsilon(1e-5), rel=1e-6)
    eps = [epsilon_for_steps(s, 0.016, 126) for s in (0.5, 1.0, 2.0, 4.0)]
    assert eps == sorted(eps, reverse=True)
    assert epsilon_for_steps(0.0, 0.1, 10) == math.inf
    assert epsilon_for_steps(1.0, 0.1, 0) == 0.0
    assert epsilon_for_steps(1.1, 0.016, 100, accountant="prv") < epsilon_for_steps(1.1, 0.016, 100)  # PRV is tighter
    with pytest.raises(ValueError):
        epsilon_for_steps(1.0, 0.0, 10)


@pytest.fixture(scope="module")
def mnist_small():
    from gleak_edu.training import split

    (x, y), (xt, yt) = split(data.mnist_subset(), 0.2, seed=0)  # the set is sorted by label: shuffle
    return (x[:600], y[:600]), (xt[:400], yt[:400])


def test_training_learns_and_reports_steps_and_epsilon(mnist_small):
    train, test = mnist_small
    plain = train_perturbed(_mlp(precode=False), train, test, noise_multiplier=0.0, scope="none", epochs=3, batch_size=50)
    assert plain.test_accuracy > 0.6
    assert plain.steps == 3 * 12 and plain.perturbed == [] and math.isnan(plain.epsilon)
    model = _mlp()
    ppp = train_perturbed(model, train, test, noise_multiplier=1.0, max_grad_norm=1.0, scope="ppp", epochs=3,
                          batch_size=50, seed=1)
    assert ppp.perturbed == perturbation_scope(model, "ppp")
    assert ppp.epsilon == pytest.approx(epsilon_for_steps(1.0, 50 / 600, 36, 1e-5), rel=1e-9)
    assert ppp.noise_multiplier_history == [1.0] * 36 and ppp.max_grad_norm_history == [1.0] * 36
    assert ppp.train_loss[-1] < ppp.train_loss[0] and not ppp.diverged
    assert all(p.grad is None for p in model.parameters())
    # seeded: the same run gives the same weights
    again = _mlp()
    train_perturbed(again, train, test, noise_multiplier=1.0, max_grad_norm=1.0, scope="ppp", epochs=3, batch_size=50, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_a_diverging_training_stops_and_keeps_finite_weights(mnist_small):
    train, test = mnist_small
    model = _mlp()
    result = train_perturbed(model, train, test, noise_multiplier=0.0, scope="none", epochs=2, batch_size=50, lr=1e6)
    assert result.diverged
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert 0.0 <= result.test_accuracy <= 1.0
    # the same through DP-SGD: stopped, finite weights (those of the epoch's start)
    model = _mlp(precode=False)
    result = train_perturbed(model, train, test, noise_multiplier=1.0, scope="full", epochs=2, batch_size=50, lr=1e38)
    assert result.diverged and result.steps < 24
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_gradient_transform_is_applied_to_each_steps_mean_gradient(mnist_small):
    """Zeroing every gradient leaves the weights unchanged; the transform sees the batch mean, the batch size, the step."""
    train, test = mnist_small
    model = _mlp()  # PRECODE: the KL term is part of the loss, the weights still must not move
    before = [p.detach().clone() for p in model.parameters()]
    calls = []

    def zero(grads, batch_size, step):
        calls.append((list(grads), batch_size, step))
        return {n: torch.zeros_like(g) for n, g in grads.items()}

    res = train_perturbed(model, train, test, noise_multiplier=0.0, scope="none", epochs=2, batch_size=256,
                          gradient_transform=zero)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # 600 examples in batches of 256: 256, 256, 88 per epoch
    assert [(b, t) for _, b, t in calls] == [(256, 0), (256, 1), (88, 2), (256, 3), (256, 4), (88, 5)]
    assert all(names == [n for n, _ in model.named_parameters()] for names, _, _ in calls)
    assert res.steps == 6 and res.noise_multiplier_history == [0.0] * 6 and math.isnan(res.epsilon)
    # the identity transform is plain SGD: the same weights as without a transform
    a, b = _mlp(seed=3), _mlp(seed=3)
    train_perturbed(a, train, test, noise_multiplier=0.0, scope="none", epochs=1, batch_size=100, seed=2)
    train_perturbed(b, train, test, noise_multiplier=0.0, scope="none", epochs=1, batch_size=100, seed=2,
                    gradient_transform=lambda g, batch_size, step: g)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    # a transform that halves the gradient moves the weights less
    c = _mlp(seed=3)
    train_perturbed(c, train, test, noise_multiplier=0.0, scope="none", epochs=1, batch_size=100, seed=2,
                    gradient_transform=lambda g, batch_size, step: {n: v / 2 for n, v in g.items()})
    start = [p.detach() for p in _mlp(seed=3).parameters()]

    def moved(m):
        return sum(float((p.detach() - q).norm()) for p, q in zip(m.parameters(), start))

    assert 0 < moved(c) < moved(a)


def test_gradient_transform_bad_use(mnist_small):
    train, test = mnist_small
    with pytest.raises(ValueError, match="only allowed with scope 'none'"):
        train_perturbed(_mlp(), train, test, noise_multiplier=1.0, scope="ppp", gradient_transform=lambda g, b, t: g)
    with pytest.raises(ValueError, match="missing"):
        train_perturbed(_mlp(), train, test, noise_multiplier=0.0, scope="none", epochs=1,
                        gradient_transform=lambda g, b, t: {})
    with pytest.raises(ValueError, match="shape"):
        train_perturbed(_mlp(), train, test, noise_multiplier=0.0, scope="none", epochs=1,
                        gradient_transform=lambda g, b, t: {n: v.reshape(-1) for n, v in g.items()})


def test_train_state_callback_once_per_step_with_the_steps_noise_multiplier(mnist_small):
    from gleak_edu.defenses import noise_schedule
    from gleak_edu.training import TrainState

    train, test = mnist_small
    schedule = noise_schedule("linear", 24, 2.0, 0.5)  # 2 epochs of 12 steps
    states = []
    res = train_perturbed(_mlp(precode=False), train, test, noise_multiplier=schedule, max_grad_norm=0.7,
                          scope="full", epochs=2, batch_size=50, callback=states.append)
    assert all(isinstance(s, TrainState) for s in states)
    assert [s.step for s in states] == list(range(24)) and [s.epoch for s in states] == [0] * 12 + [1] * 12
    assert [s.noise_multiplier for s in states] == schedule == res.noise_multiplier_history
    assert all(s.max_grad_norm == 0.7 for s in states) and all(s.checkpoint is None for s in states)
    assert [s.loss for s in states] == res.step_loss and all(math.isfinite(s.loss) for s in states)
    # without noise or clipping (scope "none"): multiplier 0, no bound
    states = []
    train_perturbed(_mlp(precode=False), train, test, noise_multiplier=0.0, scope="none", epochs=1, batch_size=50,
                    callback=states.append)
    assert len(states) == 12 and all(s.noise_multiplier == 0.0 and s.max_grad_norm is None for s in states)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_a_callback_that_uses_the_model_and_the_rng_does_not_change_training(mnist_small):
    train, test = mnist_small
    seen = []

    def busy(state):
        state.model.eval()
        with torch.no_grad():
            seen.append(float(state.model(train[0][:5]).sum()))  # a forward pass through Opacus's wrapped model
        torch.rand(100)  # and draws from the global RNG
        loss = state.model(train[0][:3]).sum()
        loss.backward()  # and even a backward pass

    a, b = _mlp(), _mlp()
    train_perturbed(a, train, test, noise_multiplier=1.0, scope="ppp", epochs=1, batch_size=50, seed=4)
    train_perturbed(b, train, test, noise_multiplier=1.0, scope="ppp", epochs=1, batch_size=50, seed=4, callback=busy)
    assert len(seen) == 12 and all(math.isfinite(v) for v in seen)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert all(p.grad is None for p in b.parameters()) and b.training


def test_train_classifier_and_noisy_sgd_call_back_every_step(mnist_small):
    from gleak_edu import models, text, training

    train, test = mnist_small
    states = []
    training.train_classifier(_mlp(precode=False), train, test, epochs=2, batch_size=200, progress=False,
                              callback=states.append)
    assert [(s.step, s.epoch) for s in states] == [(0, 0), (1, 0), (2, 0), (3, 1), (4, 1), (5, 1)]
    assert all(s.noise_multiplier == 0.0 and s.max_grad_norm is None for s in states)
    vocab = text.zen_vocabulary()
    x, y = text.zen_fragments(4)
    torch.manual_seed(0)
    net = models.TinyTransformer(len(vocab), 19)
    states = []
    curve = training.noisy_sgd(net, x, y, noise_multiplier=0.5, max_grad_norm=1.0, steps=12, batch_size=8,
                               eval_every=5, callback=states.append)
    assert [s.step for s in states] == list(range(12)) and [c[0] for c in curve] == [0, 5, 10, 12]
    assert all(s.noise_multiplier == 0.5 and s.max_grad_norm == 1.0 for s in states)


def test_noisy_sgd_clips_each_example():
    """max_grad_norm is the per-example bound: with a tiny bound and no noise every step moves the weights by
    at most lr * C (the mean of vectors of norm <= C)."""
    from gleak_edu import models, text, training

    vocab = text.zen_vocabulary()
    x, y = text.zen_fragments(4)
    torch.manual_seed(0)
    net = models.TinyTransformer(len(vocab), 19)
    moves = []
    last = [torch.cat([p.detach().reshape(-1) for p in net.parameters()])]

    def record(state):
        now = torch.cat([p.detach().reshape(-1) for p in state.model.parameters()])
        moves.append(float((now - last[0]).norm()))
        last[0] = now

    training.noisy_sgd(net, x, y, noise_multiplier=0.0, max_grad_norm=1e-3, steps=5, lr=0.5, batch_size=4,
                       callback=record)
    assert len(moves) == 5 and all(0 < m <= 0.5 * 1e-3 * (1 + 1e-4) for m in moves)
    with pytest.raises(ValueError, match="noise_multiplier"):
        training.noisy_sgd(net, x, y, noise_multiplier=-1.0)
    with pytest.raises(ValueError, match="max_grad_norm"):
        training.noisy_sgd(net, x, y, noise_multiplier=1.0, max_grad_norm=0.0)


# --- the command line: gleak attack ... --defense {none,noise,ppp} --noise-multiplier S --max-grad-norm C

@pytest.fixture
def mnist_cached(monkeypatch):
    """Load the MNIST subset once for the CLI tests."""
    mn = data.mnist_subset()
    monkeypatch.setitem(data.OFFLINE_SETS, "mnist", lambda: mn)
    return mn


@pytest.mark.parametrize("attack,defense,expect", [
    ("bypass", "none", lambda r: r["ssim"] >= 0.8 and r["noise_multiplier"] is None),
    # full perturbation has no bottleneck: the bypass would match every layer, which is Inverting Gradients
    ("ig", "full", lambda r: r["ssim"] <= 0.3 and r["precode"] is False),
    ("bypass", "ppp", lambda r: r["ssim"] <= 0.3 and r["precode"] is True and not any("decoder" in n for n in r["layers_matched"])),
])
def test_bypass_command_with_a_defense(attack, defense, expect, tmp_path, mnist_cached):
    from gleak_edu import cli

    out = tmp_path / "r.json"
    args = ["attack", attack, "--sample", "mnist:0", "--classes", "10", "--iterations", "300", "--json", str(out)]
    extra = ["--precode"] if defense == "none" else ["--defense", defense, "--noise-multiplier", "1", "--max-grad-norm", "1"]
    assert cli.main(args + extra) == 0
    res = json.loads(out.read_text())
    assert res["defense"] == defense
    assert expect(res), {k: res[k] for k in ("ssim", "defense", "noise_multiplier", "precode")}
    if defense != "none":
        assert res["noise_multiplier"] == 1.0 and res["max_grad_norm"] == 1.0


@pytest.mark.parametrize("extra,message", [
    (["--defense", "ppp", "--noise-std", "0.1"], "not both"),
    (["--defense", "full", "--max-grad-norm", "0"], "--max-grad-norm must be a finite number > 0"),
    (["--defense", "dp"], "invalid choice"),
    (["--defense", "ppp", "--noise-multiplier", "-1"], "--noise-multiplier must be a finite number >= 0"),
    (["--defense", "ppp", "--sigma", "1"], "--noise-multiplier"),
    (["--defense", "ppp", "--clip", "1"], "--max-grad-norm"),
])
def test_defense_options_bad_input(extra, message, capsys, mnist_cached):
    from gleak_edu import cli

    assert cli.main(["attack", "bypass", "--sample", "mnist:0", "--classes", "10", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gleak: error:") and message in err[0]


# --- the notebook's views

def test_ppp_panel_runs_headless_and_noise_stops_both_attacks(mnist_cached):
    from gleak_edu import sweeps, viz, widgets

    settings = sweeps.PPPSweepSettings()
    plain, pre = sweeps.victim(settings, "none"), sweeps.victim(settings, "precode")
    x, y = mnist_cached.batch(0)
    panel = widgets.PPPPanel(plain, pre, x, y, iterations=200, noise_levels=(0.0, 1.0))
    full0, ppp0 = panel.results[0.0]  # the handler ran once when built
    assert full0.metrics["ssim_mean"] >= 0.6 and ppp0.metrics["ssim_mean"] >= 0.6
    assert ppp0.attack == "bypass" and full0.attack == "IG"
    full1, ppp1 = panel.run(1.0)
    assert full1.metrics["ssim_mean"] <= 0.3 and ppp1.metrics["ssim_mean"] <= 0.3
    assert "SSIM" in panel.summary.value and panel.full_view.updates > 0 and panel.ppp_view.updates > 0
    with pytest.raises(ValueError, match="PRECODE"):
        widgets.PPPPanel(plain, plain, x, y)
    with pytest.raises(ValueError, match="one image"):
        widgets.PPPPanel(plain, pre, *mnist_cached.batch([0, 1]))
    assert len(viz.ppp_figure().axes) == 1
