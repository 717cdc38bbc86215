"""DP-SGD with fixed and dynamic privacy parameters: schedules, clipping rules, accounting, training, CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from gleak_edu import cli, data, fl, models
from gleak_edu.defenses import (
    DYNAMIC_CLIP_RANGE,
    SCHEDULES,
    AttackPlan,
    dp_shared_gradient,
    epsilon,
    get_noise_multiplier,
    history_from_noise_multipliers,
    noise_schedule,
    perturbed_gradient,
    schedule_epsilon,
    steps_per_epoch,
    train_dp,
)

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
    sig = noise_schedule(kind, 101, noise_multiplier=15.0, noise_multiplier_end=4.85)
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
    for noise_multiplier in (2.0, 1.5, 1.0):
        for _ in range(20):
            acc.step(noise_multiplier=noise_multiplier, sample_rate=0.05)
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
    assert history_from_noise_multipliers([2, 2, 1.5, 1.5, 1.5, 2], 0.1) == [(2.0, 0.1, 2), (1.5, 0.1, 3), (2.0, 0.1, 1)]


def test_get_noise_multiplier_spends_the_same_epsilon_as_a_schedule():
    target = schedule_epsilon("linear", 126, 3.0, 0.5, 0.016)
    matched = get_noise_multiplier(target, 126, 0.016)
    assert epsilon([(matched, 0.016, 126)], 1e-5) == pytest.approx(target, rel=1e-3)
    with pytest.raises(ValueError, match="not reachable"):
        get_noise_multiplier(1e-6, 126, 0.016)


@pytest.mark.filterwarnings("ignore:Optimal order")
@pytest.mark.parametrize("target,steps,q,accountant", [
    (1.0, 100, 0.01, "rdp"), (2.0, 126, 0.016, "rdp"), (8.0, 1000, 0.05, "rdp"), (3.0, 500, 0.02, "prv"),
])
def test_get_noise_multiplier_agrees_with_opacus(target, steps, q, accountant):
    from opacus.accountants.utils import get_noise_multiplier as opacus_get_noise_multiplier

    ours = get_noise_multiplier(target, steps, q, 1e-5, accountant=accountant)
    theirs = opacus_get_noise_multiplier(target_epsilon=target, target_delta=1e-5, sample_rate=q, steps=steps,
                                         accountant=accountant, epsilon_tolerance=0.001)
    assert ours == pytest.approx(theirs, rel=0.01)
    assert epsilon([(ours, q, steps)], 1e-5, accountant) <= target


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
    shared = perturbed_gradient(model, x, y, noise_multiplier=0.0, clipping="dynamic", scope="full")
    manual = {}
    for n in names:
        manual[n] = sum(
            g[n] * min(1.0, b / (math.sqrt(sum(float(g[m].norm()) ** 2 for m in names)) + 1e-6))
            for g, b in zip(per_example, bounds)
        ) / 4
        torch.testing.assert_close(shared[n], manual[n], rtol=1e-4, atol=1e-7)
    # the clamp: a huge input scale still gives bounds within [0.1, 32]
    run = train_dp(_mlp(), (x.repeat(16, 1, 1, 1), y.repeat(16)), (x, y), noise_multiplier=1.0,
                   clipping="dynamic", epochs=1, batch_size=16, lr=0.1)
    assert all(DYNAMIC_CLIP_RANGE[0] <= c <= DYNAMIC_CLIP_RANGE[1] for c in run.max_grad_norm_history)
    assert run.clipping == "dynamic" and math.isnan(run.max_grad_norm)
    # the named bounds can be changed: a tight clamp pins every bound
    run = train_dp(_mlp(), (x.repeat(16, 1, 1, 1), y.repeat(16)), (x, y), noise_multiplier=1.0,
                   clipping="dynamic", dynamic_clip_range=(0.05, 0.05), epochs=1, batch_size=16, lr=0.1)
    assert run.max_grad_norm_history == pytest.approx([0.05] * run.steps)
    with pytest.raises(ValueError, match="dynamic_clip_range"):
        perturbed_gradient(model, x, y, noise_multiplier=0.0, clipping="dynamic", dynamic_clip_range=(2.0, 1.0))


def test_per_layer_clipping_bounds_each_tensor(digits4):
    x, y = digits4
    model = _mlp()
    names = [n for n, _ in model.named_parameters()]
    bound = 0.02
    one = perturbed_gradient(model, x[:1], y[:1], noise_multiplier=0.0, max_grad_norm=bound, scope="full",
                             clipping="per_layer")
    for n in names:
        assert float(one[n].norm()) <= bound / math.sqrt(len(names)) * (1 + 1e-5)
    assert math.sqrt(sum(float(one[n].norm()) ** 2 for n in names)) <= bound * (1 + 1e-5)
    with pytest.raises(ValueError, match="clipping must be one of"):
        perturbed_gradient(model, x, y, noise_multiplier=0.0, scope="full", clipping="by_row")
    with pytest.raises(ValueError, match="'dynamic'"):
        perturbed_gradient(model, x, y, noise_multiplier=0.0, scope="full", clipping="adaptive")


def test_a_batchnorm_model_is_refused_with_the_fix(digits4):
    x, y = digits4
    bn = nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.BatchNorm1d(8), nn.Linear(8, 10))
    with pytest.raises(ValueError, match="GroupNorm"):
        train_dp(bn, (x, y), (x, y), noise_multiplier=1.0, epochs=1, batch_size=4)
    with pytest.raises(ValueError, match="GroupNorm"):
        dp_shared_gradient(bn, x[:1], y[:1], noise_multiplier=1.0, max_grad_norm=1.0)


# --- training and attacks along the way

@pytest.fixture(scope="module")
def mnist_small():
    from gleak_edu.training import split

    (x, y), (xt, yt) = split(data.mnist_subset(), 0.2, seed=0)
    return (x[:640], y[:640]), (xt[:300], yt[:300])


def test_train_dp_records_the_schedule_and_accounts_it(mnist_small):
    train, test = mnist_small
    schedule = noise_schedule("linear", 20, 2.0, 0.5)
    run = train_dp(_mlp(), train, test, noise_multiplier=schedule, epochs=2, batch_size=64, accountant="prv")
    assert run.steps == 20 and run.noise_multiplier_history == pytest.approx(schedule)
    assert run.method == "schedule" and (run.noise_multiplier_start, run.noise_multiplier_end) == (2.0, 0.5)
    assert run.epsilon == pytest.approx(
        epsilon(history_from_noise_multipliers(run.noise_multiplier_history, 0.1), 1e-5, "prv"), rel=1e-9)
    assert run.max_grad_norm_history == [1.0] * 20 and run.max_grad_norm == 1.0 and 0 <= run.test_accuracy <= 1
    fixed = train_dp(_mlp(), train, test, noise_multiplier=1.0, epochs=1)
    assert fixed.method == "fixed" and fixed.noise_multiplier_history == [1.0] * 10
    plain = train_dp(_mlp(), train, test, noise_multiplier=None, epochs=1)
    assert plain.method == "none" and plain.epsilon == math.inf and plain.noise_multiplier_history == [0.0] * 10
    assert all(math.isnan(c) for c in plain.max_grad_norm_history) and math.isnan(plain.max_grad_norm)


def test_without_dp_the_attack_succeeds_and_fixed_noise_stops_it(mnist_small):
    train, test = mnist_small
    plan = AttackPlan(steps=(0, 9), images=(test[0][:2], test[1][:2]), attacks=("ig",), iterations=200)
    common = dict(epochs=1, batch_size=64, attack_plan=plan)
    plain = train_dp(_mlp(), train, test, noise_multiplier=None, **common)
    assert plain.attack_success_rate == 1.0 and plain.mean_quality("ssim") > 0.9
    fixed = train_dp(_mlp(), train, test, noise_multiplier=1.0, **common)
    assert fixed.attack_success_rate == 0.0 and fixed.mean_quality("ssim") < 0.3
    assert [cp["step"] for cp in fixed.checkpoints] == [0, 9]
    assert all(cp["noise_multiplier"] == 1.0 and cp["max_grad_norm"] == 1.0 for cp in fixed.checkpoints)
    assert all(len(cp["ig"]["reconstructions"]) == 2 for cp in fixed.checkpoints)
    summary = fixed.summary()
    assert set(summary) >= {"test_accuracy", "epsilon", "attack_success_rate", "ssim", "psnr", "max_grad_norm"}
    # the rate comes with its count and 95 % Wilson interval: 0 of 2 checkpoints x 2 digits
    assert (summary["attack_successes"], summary["attack_n"]) == (0, 4) and summary["attack_success_low"] == 0
    assert summary["attack_success_high"] == pytest.approx(0.49, abs=0.005)
    assert plain.summary()["attack_success_low"] == pytest.approx(0.51, abs=0.005)
    assert str(plain.attack_success) == "4/4 = 100 % (95 % CI 51-100 %)"
    # the attacks do not disturb training: same weights with and without them
    a, b = _mlp(), _mlp()
    train_dp(a, train, test, noise_multiplier=1.0, epochs=1, batch_size=64)
    train_dp(b, train, test, noise_multiplier=1.0, **common)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_train_dp_tells_its_callback_every_step_and_each_checkpoint(mnist_small):
    train, test = mnist_small
    plan = AttackPlan(steps=(3,), images=(test[0][:1], test[1][:1]), attacks=("idlg", "ig"), iterations=20)
    schedule = noise_schedule("exponential", 10, 2.0, 0.5)
    states = []
    run = train_dp(_mlp(), train, test, noise_multiplier=schedule, epochs=1, attack_plan=plan,
                   callback=lambda s: states.append((s.step, s.noise_multiplier, s.max_grad_norm, s.checkpoint)))
    assert [s[0] for s in states] == list(range(10)) and [s[1] for s in states] == schedule
    assert all(s[2] == 1.0 for s in states)
    assert [s[0] for s in states if s[3] is not None] == [3] and states[3][3] is run.checkpoints[0]
    cp = run.checkpoints[0]
    assert cp["noise_multiplier"] == schedule[3] and set(cp) >= {"idlg", "ig"}
    assert all(v is None or isinstance(v, bool) for v in cp["idlg"]["label_correct"] + cp["ig"]["label_correct"])


def test_attack_plan_checks_itself():
    x, y = torch.zeros(2, 1, 28, 28), torch.tensor([0, 1])
    plan = AttackPlan(steps=[5, 0, 5], images=(x, y))
    assert plan.steps == (0, 5) and plan.attacks == ("idlg", "ig") and plan.iterations == 300 and plan.success_ssim == 0.6
    with pytest.raises(ValueError, match="images"):
        AttackPlan(steps=(0,))
    with pytest.raises(ValueError, match="attacks must be among"):
        AttackPlan(attacks=("grnn",))
    with pytest.raises(ValueError, match="unknown attack"):
        AttackPlan(attacks=("nope",))
    with pytest.raises(ValueError, match="whole numbers"):
        AttackPlan(steps=(-1,), images=(x, y))
    with pytest.raises(ValueError, match="iterations"):
        AttackPlan(iterations=0)
    with pytest.raises(ValueError, match="success_ssim"):
        AttackPlan(success_ssim=1.5)
    with pytest.raises(ValueError, match="same length"):
        AttackPlan(steps=(0,), images=(x, y[:1]))
    with pytest.raises(AttributeError):
        plan.iterations = 3  # frozen


def test_train_dp_bad_input(mnist_small):
    train, test = mnist_small
    with pytest.raises(ValueError, match="outside"):
        train_dp(_mlp(), train, test, epochs=1, attack_plan=AttackPlan(steps=(10,), images=(test[0][:1], test[1][:1])))
    with pytest.raises(ValueError, match="rdp' or 'prv"):
        train_dp(_mlp(), train, test, noise_multiplier=noise_schedule("linear", 10, 2.0, 0.5), accountant="gdp", epochs=1)
    with pytest.raises(ValueError, match="noise schedule has 5 values"):
        train_dp(_mlp(), train, test, noise_multiplier=[1.0] * 5, epochs=1)
    with pytest.raises(ValueError, match="noise_multiplier"):
        train_dp(_mlp(), train, test, noise_multiplier=-1.0, epochs=1)
    with pytest.raises(ValueError, match="max_grad_norm"):
        train_dp(_mlp(), train, test, max_grad_norm=0.0, epochs=1)
    with pytest.raises(ValueError, match="clipping must be one of"):
        train_dp(_mlp(), train, test, clipping="adaptive", epochs=1)
    assert set(SCHEDULES) == {"fixed", "linear", "staircase", "exponential", "cyclic"}
    assert steps_per_epoch(640, 64) == 10


# --- command line

def test_epsilon_command(capsys):
    assert cli.main(["epsilon", "--history", "2.0:0.05:20,1.5:0.05:20,1.0:0.05:20", "--delta", "1e-5"]) == 0
    rdp = float(capsys.readouterr().out)
    assert cli.main(["epsilon", "--history", "2.0:0.05:20,1.5:0.05:20,1.0:0.05:20", "--accountant", "prv"]) == 0
    prv = float(capsys.readouterr().out)
    assert rdp == pytest.approx(epsilon([(2.0, 0.05, 20), (1.5, 0.05, 20), (1.0, 0.05, 20)], 1e-5, "rdp"), rel=1e-12)
    assert round(rdp, 2) == 2.61 and round(prv, 2) == 2.13


@pytest.mark.parametrize("args,message", [
    (["--history", "2.0:0.05"], "is not NOISE_MULTIPLIER:SAMPLE_RATE:STEPS"),
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
    assert cli.main(["train", "--dp", "exponential", "--noise-multiplier", "2", "--noise-multiplier-end", "0.5",
                     "--epochs", "1", "--attack-steps", "0", "--images", "1", "--iterations", "50",
                     "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["dp"] == "exponential" and res["steps"] == 63 and len(res["noise_multiplier_history"]) == 63
    assert res["noise_multiplier_history"][0] == pytest.approx(2.0)
    assert res["noise_multiplier_history"][-1] == pytest.approx(0.5)
    assert res["epsilon"] == pytest.approx(epsilon([tuple(s) for s in res["history"]], 1e-5), rel=1e-9)
    assert [cp["step"] for cp in res["checkpoints"]] == [0] and "ig" in res["checkpoints"][0]
    assert 0 <= res["accuracy"] <= 1 and "attack success" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["--dp", "fixed", "--max-grad-norm", "-1"], "--max-grad-norm must be a finite number"),
    (["--dp", "fixed", "--clip", "1"], "--max-grad-norm"),
    (["--dp", "linear", "--noise-multiplier-end", "0"], "--noise-multiplier-end must be > 0"),
    (["--dp", "cyclic", "--noise-multiplier", "1", "--noise-multiplier-end", "2"], "must not exceed"),
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
    sig = noise_schedule("cyclic", 10, 2.0, 0.5, updates=4)
    assert run.noise_multiplier_history == pytest.approx(sig) and len(set(run.noise_multiplier_history)) == 4
    assert len(run.checkpoints) == 3
    assert panel.epsilons["rdp"] == pytest.approx(epsilon(history_from_noise_multipliers(sig, 0.1), 1e-5, "rdp"))
    assert "ε =" in panel.readout.value and "test accuracy" in panel.result.value
    again = panel.run("cyclic", 1.0, 3.0)  # an end above the start is capped for the cosine
    assert again.noise_multiplier_history[-1] == pytest.approx(1.0)
    curves = widgets.TrainingCurves(every=5)
    train_dp(_mlp(), train, test, noise_multiplier=1.0, epochs=1, callback=curves.step_callback("fixed"))
    assert len(curves.curves["fixed"]) == 10 and curves.image.value
    assert len(viz.metric_bars({"a": 1.0, "b": math.inf}, "eps").axes) == 1
    with pytest.raises(ValueError, match="updates"):
        noise_schedule("linear", 10, 2.0, 0.5, updates=1)
