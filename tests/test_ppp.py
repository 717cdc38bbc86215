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
    epsilon_spent,
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
    ppp = ppp_gradient(model, x, y, sigma=0.5, clip=1.0, seed=3)
    scope = set(perturbation_scope(model, "ppp"))
    assert list(ppp) == list(clean)
    for name in clean:
        if name in scope:
            assert not torch.allclose(ppp[name], clean[name]), name
        else:
            assert torch.equal(ppp[name], clean[name]), name
    # full perturbation changes every gradient
    torch.manual_seed(7)
    full = full_perturbation_gradient(model, x, y, sigma=0.5, clip=1.0, seed=3)
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
    clip = 0.05
    names = [n for n, _ in model.named_parameters()]
    per_example = [fl.client_gradient(model, x[i : i + 1], y[i : i + 1]) for i in range(3)]
    norms = [_norm(g, names) for g in per_example]
    assert min(norms) > clip  # every example is really clipped
    shared = perturbed_gradient(model, x, y, sigma=0.0, clip=clip, scope="full")
    manual = {n: sum(g[n] * min(1.0, clip / (nrm + 1e-6)) for g, nrm in zip(per_example, norms)) / 3 for n in names}
    for n in names:
        torch.testing.assert_close(shared[n], manual[n], rtol=1e-4, atol=1e-7)
    assert _norm(shared, names) <= clip + 1e-6
    # one example: the whole perturbed part has norm exactly C
    one = perturbed_gradient(model, x[:1], y[:1], sigma=0.0, clip=clip, scope="full")
    assert _norm(one, names) == pytest.approx(clip, rel=1e-4)


def test_ppp_clips_over_the_deterministic_part_only(digits3):
    x, y = digits3
    model = _mlp()
    scope = perturbation_scope(model, "ppp")
    torch.manual_seed(1)
    one = ppp_gradient(model, x[:1], y[:1], sigma=0.0, clip=0.01)
    assert _norm(one, scope) == pytest.approx(0.01, rel=1e-4)


def test_noise_has_the_stated_scale_and_is_seeded(digits3):
    x, y = digits3
    model = _mlp(precode=False, hidden=(64, 64))
    names = [n for n, _ in model.named_parameters()]
    clean = perturbed_gradient(model, x, y, sigma=0.0, clip=1.0, scope="full")
    noisy = perturbed_gradient(model, x, y, sigma=2.0, clip=1.0, scope="full", seed=5)
    diff = torch.cat([(noisy[n] - clean[n]).reshape(-1) for n in names])
    # std of the noise on the batch mean: sigma * C / B
    assert float(diff.std()) == pytest.approx(2.0 * 1.0 / 3, rel=0.02)
    assert abs(float(diff.mean())) < 0.01
    same = perturbed_gradient(model, x, y, sigma=2.0, clip=1.0, scope="full", seed=5)
    other = perturbed_gradient(model, x, y, sigma=2.0, clip=1.0, scope="full", seed=6)
    assert all(torch.equal(same[n], noisy[n]) for n in names)
    assert not torch.equal(other[names[0]], noisy[names[0]])


def test_perturbed_gradient_bad_input(digits3):
    x, y = digits3
    model = _mlp()
    with pytest.raises(ValueError, match="noise multiplier"):
        ppp_gradient(model, x, y, sigma=-1, clip=1.0)
    with pytest.raises(ValueError, match="clipping bound"):
        ppp_gradient(model, x, y, sigma=1, clip=0.0)
    with pytest.raises(ValueError, match="clipping bound"):
        ppp_gradient(model, x, y, sigma=1, clip=float("nan"))
    with pytest.raises(ValueError, match="pixels must lie"):
        ppp_gradient(model, x * 3, y, sigma=1, clip=1.0)
    bn = nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.BatchNorm1d(8), nn.Linear(8, 10))
    with pytest.raises(ValueError, match="GroupNorm"):
        perturbed_gradient(bn, x, y, sigma=1, clip=1.0, scope="full")


@pytest.mark.filterwarnings("ignore:Optimal order")
def test_epsilon_matches_opacus_and_decreases_with_noise():
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    for _ in range(100):  # step by step, as Opacus records it
        acc.step(noise_multiplier=1.1, sample_rate=0.016)
    assert epsilon_spent(1.1, 0.016, 100, 1e-5) == pytest.approx(acc.get_epsilon(1e-5), rel=1e-6)
    eps = [epsilon_spent(s, 0.016, 126) for s in (0.5, 1.0, 2.0, 4.0)]
    assert eps == sorted(eps, reverse=True)
    assert epsilon_spent(0.0, 0.1, 10) == math.inf
    assert epsilon_spent(1.0, 0.1, 0) == 0.0
    with pytest.raises(ValueError):
        epsilon_spent(1.0, 0.0, 10)


@pytest.fixture(scope="module")
def mnist_small():
    from gleak_edu.training import split

    (x, y), (xt, yt) = split(data.mnist_subset(), 0.2, seed=0)  # the set is sorted by label: shuffle
    return (x[:600], y[:600]), (xt[:400], yt[:400])


def test_training_learns_and_reports_steps_and_epsilon(mnist_small):
    train, test = mnist_small
    plain = train_perturbed(_mlp(precode=False), train, test, sigma=0.0, clip=1.0, scope="none", epochs=3, batch_size=50)
    assert plain.test_accuracy > 0.6
    assert plain.steps == 3 * 12 and plain.perturbed == [] and math.isnan(plain.epsilon)
    model = _mlp()
    ppp = train_perturbed(model, train, test, sigma=1.0, clip=1.0, scope="ppp", epochs=3, batch_size=50, seed=1)
    assert ppp.perturbed == perturbation_scope(model, "ppp")
    assert ppp.epsilon == pytest.approx(epsilon_spent(1.0, 50 / 600, 36, 1e-5), rel=1e-9)
    assert ppp.train_loss[-1] < ppp.train_loss[0] and not ppp.diverged
    assert all(p.grad is None for p in model.parameters())
    # seeded: the same run gives the same weights
    again = _mlp()
    train_perturbed(again, train, test, sigma=1.0, clip=1.0, scope="ppp", epochs=3, batch_size=50, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_a_diverging_training_stops_and_keeps_finite_weights(mnist_small):
    train, test = mnist_small
    model = _mlp()
    result = train_perturbed(model, train, test, sigma=0.0, clip=1.0, scope="none", epochs=2, batch_size=50, lr=1e6)
    assert result.diverged
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert 0.0 <= result.test_accuracy <= 1.0


# --- the command line: gleak attack ... --defense {none,noise,ppp} --sigma S --clip C

@pytest.fixture
def mnist_cached(monkeypatch):
    """Load the MNIST subset once for the CLI tests."""
    mn = data.mnist_subset()
    monkeypatch.setitem(data.OFFLINE_SETS, "mnist", lambda: mn)
    return mn


@pytest.mark.parametrize("defense,expect", [
    ("none", lambda r: r["ssim"] >= 0.8 and r["sigma"] is None),
    ("noise", lambda r: r["ssim"] <= 0.3 and r["precode"] is False),
    ("ppp", lambda r: r["ssim"] <= 0.3 and r["precode"] is True and not any("decoder" in n for n in r["layers_matched"])),
])
def test_bypass_command_with_a_defense(defense, expect, tmp_path, mnist_cached):
    from gleak_edu import cli

    out = tmp_path / "r.json"
    args = ["attack", "bypass", "--sample", "mnist:0", "--classes", "10", "--iterations", "300", "--json", str(out)]
    extra = ["--precode"] if defense == "none" else ["--defense", defense, "--sigma", "1", "--clip", "1"]
    assert cli.main(args + extra) == 0
    res = json.loads(out.read_text())
    assert res["defense"] == defense
    assert expect(res), {k: res[k] for k in ("ssim", "defense", "sigma", "precode")}
    if defense != "none":
        assert res["sigma"] == 1.0 and res["clip"] == 1.0


@pytest.mark.parametrize("extra,message", [
    (["--defense", "ppp", "--noise", "0.1"], "not both"),
    (["--defense", "noise", "--clip", "0"], "--clip must be > 0"),
    (["--defense", "dp"], "invalid choice"),
    (["--defense", "ppp", "--sigma", "-1"], "--sigma must be a finite number >= 0"),
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
