"""DP-SGD with fixed and dynamic privacy parameters: schedules, clipping rules, accounting, training, CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from gleak_edu import cli, data, fl, models
from gleak_edu.defenses import (
    SCHEDULES,
    dp_shared_gradient,
    epsilon,
    history_from_sigmas,
    match_fixed_sigma,
    noise_schedule,
    perturbed_gradient,
    schedule_epsilon,
    train_dp,
)
from gleak_edu.defenses.ppp import DYNAMIC_CLIP_RANGE

pytestmark = pytest.mark.filterwarnings("ignore:GDP accounting is experimental")


# --- schedules: start, middle, end

@pytest.mark.parametrize("kind,middle", [
    ("fixed", 15.0),
    ("linear", 15 - 10.15 / 2),
    ("staircase", 15 - 10.15 * 5 / 9),  # stair 5 of 0..9 at the midpoint
    ("exponential", math.sqrt(15 * 4.85)),  # geometric mean
    ("cyclic", 15 * math.cos(math.acos(4.85 / 15) / 2)),
])
def test_schedule_start_middle_end(kind, middle):
    sig = noise_schedule(kind, 101, 15.0, 4.85)
    assert len(sig) == 101
    assert sig[0] == pytest.approx(15.0)
    assert sig[50] == pytest.approx(middle, rel=1e-9)
    assert sig[-1] == pytest.approx(15.0 if kind == "fixed" else 4.85, rel=1e-9)
    assert all(a >= b - 1e-12 for a, b in zip(sig, sig[1:]))  # every schedule decays (or stays)


def test_schedules_match_the_papers_formulas():
    """Wei & Liu's 15 -> 4.85 forms, written with t/T: ours use t/(T-1) so that the last step is the end."""
    steps = 1001
    for t in (0, 250, 1000):
        p = t / (steps - 1)
        assert noise_schedule("exponential", steps, math.exp(2.71), math.exp(1.58))[t] == pytest.approx(math.exp(1.58 + 1.13 * (1 - p)))
        assert noise_schedule("cyclic", steps, 15.0, 15 * math.cos(1.24))[t] == pytest.approx(15 * math.cos(1.24 * p))
    stairs = noise_schedule("staircase", 1000, 3.0, 1.2)
    assert len(set(stairs)) == 10 and stairs[99] == 3.0 and stairs[100] == pytest.approx(2.8)


def test_schedule_errors():
    with pytest.raises(ValueError, match="schedule must be one of"):
        noise_schedule("cosine", 10, 1.0, 0.5)
    with pytest.raises(ValueError, match="steps"):
        noise_schedule("linear", 0, 1.0, 0.5)
    with pytest.raises(ValueError, match="> 0"):
        noise_schedule("linear", 10, 1.0, 0.0)
    with pytest.raises(ValueError, match="must not exceed"):
        noise_schedule("cyclic", 10, 1.0, 2.0)


# --- accounting against Opacus's own accountants

@pytest.mark.parametrize("accountant,expected", [("rdp", 2.61), ("prv", 2.13)])
def test_epsilon_of_the_reference_history_matches_opacus(accountant, expected):
    from opacus.accountants import PRVAccountant, RDPAccountant

    acc = {"rdp": RDPAccountant, "prv": PRVAccountant}[accountant]()
    for sigma in (2.0, 1.5, 1.0):
        for _ in range(20):
            acc.step(noise_multiplier=sigma, sample_rate=0.05)
    ours = epsilon([(2.0, 0.05, 20), (1.5, 0.05, 20), (1.0, 0.05, 20)], 1e-5, accountant)
    assert ours == pytest.approx(acc.get_epsilon(1e-5), rel=1e-6)
    assert ours == pytest.approx(expected, abs=0.005)


def test_paper_examples_fixed_and_staircase():
    """REFERENCE: q = 0.01, T = 10,000, delta 1e-5 (RDP): fixed 4.85 -> 0.83, fixed 15 -> 0.24."""
    assert epsilon([(4.85, 0.01, 10_000)], 1e-5) == pytest.approx(0.83, abs=0.01)
    assert schedule_epsilon("fixed", 10_000, 15.0, None, 0.01) == pytest.approx(0.24, abs=0.01)
    # our staircase reaches 4.85 for its last tenth (the paper's never does: 0.42 there)
    assert 0.42 < schedule_epsilon("staircase", 10_000, 15.0, 4.85, 0.01) < 0.5


def test_epsilon_errors_and_gdp():
    with pytest.raises(ValueError, match="GDP accountant cannot compose a changing"):
        epsilon([(2.0, 0.05, 20), (1.5, 0.05, 20)], 1e-5, "gdp")
    assert epsilon([(2.0, 0.05, 20)], 1e-5, "gdp") > 0
    with pytest.raises(ValueError, match="accountant must be one of"):
        epsilon([(2.0, 0.05, 20)], 1e-5, "moments")
    with pytest.raises(ValueError, match="bad segment"):
        epsilon([(2.0, 1.5, 20)], 1e-5)
    with pytest.raises(ValueError, match="bad segment"):
        epsilon([(2.0, 0.05, 2.5)], 1e-5)
    with pytest.raises(ValueError, match="delta"):
        epsilon([(2.0, 0.05, 20)], 0.0)
    assert epsilon([], 1e-5) == 0.0 and epsilon([(0.0, 0.1, 3)], 1e-5) == math.inf
    assert history_from_sigmas([2, 2, 1.5, 1.5, 1.5, 2], 0.1) == [(2.0, 0.1, 2), (1.5, 0.1, 3), (2.0, 0.1, 1)]


def test_matched_fixed_sigma_spends_the_same_epsilon():
    target = schedule_epsilon("linear", 126, 3.0, 0.5, 0.016)
    sigma = match_fixed_sigma(target, 126, 0.016)
    assert epsilon([(sigma, 0.016, 126)], 1e-5) == pytest.approx(target, rel=1e-3)
    with pytest.raises(ValueError, match="not reachable"):
        match_fixed_sigma(1e-6, 126, 0.016)


# --- clipping rules

@pytest.fixture(scope="module")
def digits4():
    mn = data.mnist_subset()
    idx = [0, 600, 1200, 1800]
    return mn.images[idx], mn.labels[idx]


def _mlp(seed=0):
    torch.manual_seed(seed)
    return models.MLP((1, 28, 28), 10, (32, 32), "tanh")


def test_dynamic_clipping_bound_is_the_largest_layer_norm_within_its_clamp(digits4):
    x, y = digits4
    model = _mlp()
    names = [n for n, _ in model.named_parameters()]
    per_example = [fl.client_gradient(model, x[i : i + 1], y[i : i + 1]) for i in range(4)]
    bounds = [min(max(max(float(g[n].norm()) for n in names), DYNAMIC_CLIP_RANGE[0]), DYNAMIC_CLIP_RANGE[1]) for g in per_example]
    shared = perturbed_gradient(model, x, y, sigma=0.0, clip="dynamic", scope="full")
    manual = {}
    for n in names:
        manual[n] = sum(
            g[n] * min(1.0, b / (math.sqrt(sum(float(g[m].norm()) ** 2 for m in names)) + 1e-6))
            for g, b in zip(per_example, bounds)
        ) / 4
        torch.testing.assert_close(shared[n], manual[n], rtol=1e-4, atol=1e-7)
    # the clamp: a huge input scale still gives bounds within [0.1, 32]
    run = train_dp(_mlp(), (x.repeat(16, 1, 1, 1), y.repeat(16)), (x, y), method="fixed", sigma_start=1.0,
                   clip="dynamic", epochs=1, batch_size=16, lr=0.1)
    assert all(DYNAMIC_CLIP_RANGE[0] <= c <= DYNAMIC_CLIP_RANGE[1] for c in run.clip_history)


def test_per_layer_clipping_bounds_each_tensor(digits4):
    x, y = digits4
    model = _mlp()
    names = [n for n, _ in model.named_parameters()]
    clip = 0.02
    one = perturbed_gradient(model, x[:1], y[:1], sigma=0.0, clip=clip, scope="full", clipping="per_layer")
    for n in names:
        assert float(one[n].norm()) <= clip / math.sqrt(len(names)) * (1 + 1e-5)
    assert math.sqrt(sum(float(one[n].norm()) ** 2 for n in names)) <= clip * (1 + 1e-5)
    with pytest.raises(ValueError, match="clipping must be one of"):
        perturbed_gradient(model, x, y, sigma=0.0, clip=1.0, scope="full", clipping="by_row")
    with pytest.raises(ValueError, match="'dynamic'"):
        perturbed_gradient(model, x, y, sigma=0.0, clip="adaptive", scope="full")


def test_a_batchnorm_model_is_refused_with_the_fix(digits4):
    x, y = digits4
    bn = nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.BatchNorm1d(8), nn.Linear(8, 10))
    with pytest.raises(ValueError, match="GroupNorm"):
        train_dp(bn, (x, y), (x, y), method="fixed", epochs=1, batch_size=4)
    with pytest.raises(ValueError, match="GroupNorm"):
        dp_shared_gradient(bn, x[:1], y[:1], sigma=1.0, clip=1.0)


# --- training and attacks along the way

@pytest.fixture(scope="module")
def mnist_small():
    from gleak_edu.training import split

    (x, y), (xt, yt) = split(data.mnist_subset(), 0.2, seed=0)
    return (x[:640], y[:640]), (xt[:300], yt[:300])


def test_train_dp_records_the_schedule_and_accounts_it(mnist_small):
    train, test = mnist_small
    run = train_dp(_mlp(), train, test, method="linear", sigma_start=2.0, sigma_end=0.5, epochs=2, batch_size=64,
                   accountant="prv")
    assert run.steps == 20 and run.noise_history == pytest.approx(noise_schedule("linear", 20, 2.0, 0.5))
    assert run.epsilon == pytest.approx(epsilon(history_from_sigmas(run.noise_history, 0.1), 1e-5, "prv"), rel=1e-9)
    assert run.clip_history == [1.0] * 20 and 0 <= run.test_accuracy <= 1


def test_without_dp_the_attack_succeeds_and_fixed_noise_stops_it(mnist_small):
    train, test = mnist_small
    images = (test[0][:2], test[1][:2])
    common = dict(epochs=1, batch_size=64, attack_steps=(0, 9), attack_images=images, attacks=("ig",), attack_iterations=200)
    plain = train_dp(_mlp(), train, test, method="none", **common)
    assert plain.attack_success_rate == 1.0 and plain.mean_quality("ssim") > 0.9
    fixed = train_dp(_mlp(), train, test, method="fixed", sigma_start=1.0, **common)
    assert fixed.attack_success_rate == 0.0 and fixed.mean_quality("ssim") < 0.3
    assert [cp["step"] for cp in fixed.checkpoints] == [0, 9] and all(cp["sigma"] == 1.0 for cp in fixed.checkpoints)
    summary = fixed.summary()
    assert set(summary) >= {"test_accuracy", "epsilon", "attack_success_rate", "ssim", "psnr"}
    # the attacks do not disturb training: same weights with and without them
    a, b = _mlp(), _mlp()
    train_dp(a, train, test, method="fixed", sigma_start=1.0, epochs=1, batch_size=64)
    train_dp(b, train, test, method="fixed", sigma_start=1.0, **common)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_train_dp_bad_input(mnist_small):
    train, test = mnist_small
    with pytest.raises(ValueError, match="method must be"):
        train_dp(_mlp(), train, test, method="adaptive")
    with pytest.raises(ValueError, match="outside"):
        train_dp(_mlp(), train, test, method="fixed", epochs=1, attack_steps=(10,), attack_images=(test[0][:1], test[1][:1]))
    with pytest.raises(ValueError, match="attack_images"):
        train_dp(_mlp(), train, test, method="fixed", epochs=1, attack_steps=(0,))
    with pytest.raises(ValueError, match="attacks must be"):
        train_dp(_mlp(), train, test, method="fixed", attacks=("grnn",))
    with pytest.raises(ValueError, match="rdp' or 'prv"):
        train_dp(_mlp(), train, test, method="linear", accountant="gdp", epochs=1)
    assert set(SCHEDULES) == {"fixed", "linear", "staircase", "exponential", "cyclic"}


# --- command line

def test_epsilon_command(capsys):
    assert cli.main(["epsilon", "--history", "2.0:0.05:20,1.5:0.05:20,1.0:0.05:20", "--delta", "1e-5"]) == 0
    rdp = float(capsys.readouterr().out)
    assert cli.main(["epsilon", "--history", "2.0:0.05:20,1.5:0.05:20,1.0:0.05:20", "--accountant", "prv"]) == 0
    prv = float(capsys.readouterr().out)
    assert rdp == pytest.approx(epsilon([(2.0, 0.05, 20), (1.5, 0.05, 20), (1.0, 0.05, 20)], 1e-5, "rdp"), rel=1e-12)
    assert round(rdp, 2) == 2.61 and round(prv, 2) == 2.13


@pytest.mark.parametrize("args,message", [
    (["--history", "2.0:0.05"], "is not SIGMA:SAMPLE_RATE:STEPS"),
    (["--history", "2.0:0.05:20,1.0:0.05:20", "--accountant", "gdp"], "GDP accountant cannot compose"),
    (["--history", ""], "at least one segment"),
    (["--history", "2.0:0.05:20", "--delta", "2"], "--delta must lie"),
])
def test_epsilon_command_bad_input(args, message, capsys):
    assert cli.main(["epsilon", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_train_command(tmp_path, capsys):
    out = tmp_path / "t.json"
    assert cli.main(["train", "--dp", "exponential", "--sigma-start", "2", "--sigma-end", "0.5", "--epochs", "1",
                     "--attack-steps", "0", "--images", "1", "--iterations", "50", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["dp"] == "exponential" and res["steps"] == 63 and len(res["noise_history"]) == 63
    assert res["noise_history"][0] == pytest.approx(2.0) and res["noise_history"][-1] == pytest.approx(0.5)
    assert res["epsilon"] == pytest.approx(epsilon([tuple(s) for s in res["history"]], 1e-5), rel=1e-9)
    assert [cp["step"] for cp in res["checkpoints"]] == [0] and "ig" in res["checkpoints"][0]
    assert 0 <= res["accuracy"] <= 1 and "attack success" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["--dp", "fixed", "--clip", "-1"], "--clip must be a number > 0 or 'dynamic'"),
    (["--dp", "fixed", "--clip", "auto"], "--clip must be a number > 0 or 'dynamic'"),
    (["--dp", "linear", "--sigma-end", "0"], "--sigma-end must be > 0"),
    (["--dp", "cyclic", "--sigma-start", "1", "--sigma-end", "2"], "must not exceed"),
    (["--dp", "fixed", "--attack-steps", "999"], "outside"),
])
def test_train_command_bad_input(args, message, tmp_path, capsys):
    assert cli.main(["train", *args, "--epochs", "1", "--json", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


# --- the notebook's views

def test_schedule_panel_and_training_curves_run_headless(mnist_small):
    from gleak_edu import viz, widgets

    train, test = mnist_small
    x, y = test[0][:1], test[1][:1]
    panel = widgets.DPSchedulePanel(_mlp, train, test, x, y, epochs=1, iterations=30, start=2.0, end=0.5,
                                    schedule="cyclic", noise_updates=4)
    run = panel.last  # the handler ran once when built
    assert run.method == "cyclic" and len(set(run.noise_history)) == 4 and len(run.checkpoints) == 3
    sig = noise_schedule("cyclic", 10, 2.0, 0.5, updates=4)
    assert panel.epsilons["rdp"] == pytest.approx(epsilon(history_from_sigmas(sig, 0.1), 1e-5, "rdp"))
    assert "ε =" in panel.readout.value and "test accuracy" in panel.result.value
    again = panel.run("cyclic", 1.0, 3.0)  # an end above the start is capped for the cosine
    assert again.noise_history[-1] == pytest.approx(1.0)
    curves = widgets.TrainingCurves(every=5)
    train_dp(_mlp(), train, test, method="fixed", epochs=1, after_step=curves.step_callback("fixed"))
    assert len(curves.curves["fixed"]) == 10 and curves.image.value
    assert len(viz.metric_bars({"a": 1.0, "b": math.inf}, "eps").axes) == 1
    with pytest.raises(ValueError, match="updates"):
        noise_schedule("linear", 10, 2.0, 0.5, updates=1)
