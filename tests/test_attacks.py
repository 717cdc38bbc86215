"""DLG and iDLG (gleak_edu.attacks): the science, the failure handling, the hot path."""

from __future__ import annotations

from gleak_edu.attacks import AttackOptions

import math

import numpy as np
import pytest
import torch

from gleak_edu import attacks, defenses, fl, metrics, models, widgets
from gleak_edu.attacks import AttackResult, AttackState
from gleak_edu.attacks._common import fast_attack_mode

NUM_CLASSES = 100
HISTORY_KEYS = {"iteration", "evaluations", "seconds", "loss", "psnr"}


# --------------------------------------------------------------------------- iDLG's label rule


def _random_label_cases(photo_set, activation, n=50, rng_seed=2020):
    """(model, label, shared) for n random (photo, model seed, label) draws at batch size 1."""
    rng = np.random.default_rng(rng_seed)
    for _ in range(n):
        idx = int(rng.integers(len(photo_set)))
        seed = int(rng.integers(0, 2**31 - 1))
        label = int(rng.integers(0, NUM_CLASSES))
        x, _ = photo_set.batch(idx)
        model = models.build_model("lenet-zhu", num_classes=NUM_CLASSES, activation=activation, seed=seed)
        yield model, label, fl.client_gradient(model, x, torch.tensor([label]))


def test_idlg_label_rule_sigmoid_50_of_50(photo_set):
    """Batch size 1, sigmoid before the output layer (inputs in (0, 1)): always the right label."""
    correct = 0
    for model, label, shared in _random_label_cases(photo_set, "sigmoid"):
        got = attacks.idlg_label(model, shared)
        assert isinstance(got, int) and 0 <= got < NUM_CLASSES
        correct += got == label
    assert correct == 50


def test_idlg_label_rule_relu_50_cases(photo_set):
    """ReLU (inputs >= 0): right whenever the gradient carries the label at all.

    With ReLU and DLG's uniform(-0.5, 0.5) init the logits are large; when the
    model already gives the true class probability 1.0 in float32, the whole
    output-layer gradient is exactly zero and no rule can read a label from it.
    Those degenerate draws are counted, not excused: everything else must be right.
    """
    correct = degenerate = 0
    for model, label, shared in _random_label_cases(photo_set, "relu"):
        if bool((shared["classifier.weight"] == 0).all()) and bool((shared["classifier.bias"] == 0).all()):
            with pytest.raises(ValueError, match="all zero"):
                attacks.idlg_label(model, shared)
            degenerate += 1
            continue
        got = attacks.idlg_label(model, shared)
        assert isinstance(got, int) and got == label
        correct += 1
    assert correct + degenerate == 50
    assert degenerate <= 2  # rare: the random label must also be the saturated prediction


def test_idlg_label_rule_tanh_runs(photo_set):
    # tanh: the output layer's inputs can be negative, so the sign argument
    # behind the rule does not hold and nothing is promised - only that it answers.
    for model, _, shared in _random_label_cases(photo_set, "tanh", n=10):
        got = attacks.idlg_label(model, shared)
        assert isinstance(got, int) and 0 <= got < NUM_CLASSES


def test_saturated_relu_model_shares_a_zero_gradient(photo_set):
    """The degenerate case above, made on purpose: label = the model's confident prediction."""
    x, _ = photo_set.batch(0)
    for seed in range(200):
        model = models.build_model("lenet-zhu", num_classes=NUM_CLASSES, activation="relu", seed=seed)
        with torch.no_grad():
            probs = torch.softmax(model(x), 1)[0]
        if float(probs.max()) == 1.0 and int((probs == 0).sum()) == NUM_CLASSES - 1:
            break
    else:
        pytest.skip("no saturated ReLU model among 200 seeds")
    shared = fl.client_gradient(model, x, probs.argmax()[None])
    assert all(bool((g == 0).all()) for g in shared.values())  # nothing leaks; nothing to read
    with pytest.raises(ValueError, match="all zero"):
        attacks.idlg_label(model, shared)


def test_idlg_label_is_the_only_negative_row(model_and_shared):
    """The science behind the rule: row c of dL/dW_out is (softmax_c - onehot_c) h with h > 0."""
    model, _, y, shared = model_and_shared
    row_sums = shared["classifier.weight"].sum(1)
    assert int((row_sums < 0).sum()) == 1
    assert int(row_sums.argmin()) == int(y) == attacks.idlg_label(model, shared)


def test_idlg_label_mlp(photo_set):
    x, _ = photo_set.batch(4)
    model = models.build_model("mlp", num_classes=NUM_CLASSES, seed=3)
    for label in (0, 17, 99):
        shared = fl.client_gradient(model, x, torch.tensor([label]))
        assert attacks.idlg_label(model, shared) == label


# --------------------------------------------------------------------------- full attacks


def _check_result(result: AttackResult, x: torch.Tensor) -> None:
    assert isinstance(result, AttackResult)
    rec = result.reconstruction
    assert rec.shape == x.shape and rec.dtype == torch.float32
    assert torch.isfinite(rec).all() and float(rec.min()) >= 0 and float(rec.max()) <= 1
    assert result.labels.dtype == torch.int64 and tuple(result.labels.shape) == (x.shape[0],)


def _check_history(result: AttackResult) -> None:
    hist = result.history
    assert len(hist) == result.iterations >= 1
    for rec in hist:
        assert HISTORY_KEYS <= set(rec), rec
    its = [r["iteration"] for r in hist]
    assert its == list(range(1, len(hist) + 1))
    evals = [r["evaluations"] for r in hist]
    assert all(b > a for a, b in zip(evals, evals[1:])), "evaluations must increase every step"
    assert evals[-1] <= result.evaluations
    secs = [r["seconds"] for r in hist]
    assert all(b >= a for a, b in zip(secs, secs[1:])) and secs[0] >= 0
    assert secs[-1] <= result.seconds + 1e-9
    # The recorded loss is the current iterate's; the result keeps the lowest ever evaluated.
    losses = [r["loss"] for r in hist]
    assert result.loss <= min(losses)
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_dlg_reaches_30db_and_the_label(dlg_photo0):
    x, y, result = dlg_photo0
    _check_result(result, x)
    assert result.attack == "DLG"
    assert not result.diverged
    assert result.metrics["psnr_mean"] >= 30, result
    assert torch.equal(result.labels, y)
    assert result.metrics["label_accuracy"] == 1.0
    # The reported metrics describe the returned reconstruction.
    assert result.metrics["psnr_mean"] == pytest.approx(float(metrics.psnr(result.reconstruction, x).mean()))
    assert result.metrics["ssim_mean"] == pytest.approx(float(metrics.ssim(result.reconstruction, x).mean()))
    assert result.metrics["ssim_mean"] > 0.9
    assert result.metrics["mse_mean"] == pytest.approx(10 ** (-result.metrics["psnr_mean"] / 10), rel=1e-6)


@pytest.mark.slow
def test_dlg_history_and_timing(dlg_photo0):
    x, y, result = dlg_photo0
    _check_history(result)
    t30 = result.seconds_to(30)
    assert t30 is not None and 0 < t30 <= result.seconds
    e30 = result.evaluations_to(30)
    assert e30 is not None and 0 < e30 <= result.evaluations
    first = next(r for r in result.history if r["psnr"] >= 30)
    assert (first["seconds"], first["evaluations"]) == (t30, e30)
    assert result.seconds_to(result.metrics["psnr_mean"] + 1) is None or any(
        r["psnr"] > result.metrics["psnr_mean"] for r in result.history
    )
    assert result.seconds_to(1000) is None and result.evaluations_to(1000) is None
    # The attack starts from noise: the first records are far from the photo.
    assert result.history[0]["psnr"] < 20
    assert "DLG" in repr(result) and "psnr" in repr(result)


@pytest.mark.slow
def test_idlg_reaches_30db_with_the_analytic_label(idlg_photo1):
    x, y, result = idlg_photo1
    _check_result(result, x)
    assert result.attack == "iDLG"
    assert not result.diverged
    assert result.metrics["psnr_mean"] >= 30, result
    assert torch.equal(result.labels, y)
    _check_history(result)
    assert result.seconds_to(30) is not None


@pytest.mark.slow
def test_noise_at_the_sliders_top_end_stops_dlg(model_and_shared):
    model, x, y, shared = model_and_shared
    sigma = widgets.NOISE_LEVELS[-1]
    noisy = defenses.gaussian_noise(shared, sigma, seed=0)
    result = attacks.dlg(
        model, noisy, input_shape=tuple(x.shape), num_classes=NUM_CLASSES, truth=(x, y), seed=1,
        iterations=100,
    )
    _check_result(result, x)
    assert result.metrics["psnr_mean"] < 15, result
    assert result.seconds_to(30) is None


def test_attack_without_truth_has_no_metrics(model_and_shared):
    model, x, _, shared = model_and_shared
    result = attacks.dlg(model, shared, input_shape=tuple(x.shape), num_classes=NUM_CLASSES, iterations=2)
    _check_result(result, x)
    assert result.metrics == {}
    assert all("psnr" not in r for r in result.history)
    assert result.seconds_to(0) is None


def test_attacks_are_deterministic_by_seed(model_and_shared):
    model, x, y, shared = model_and_shared
    kw = dict(input_shape=tuple(x.shape), num_classes=NUM_CLASSES, iterations=3, truth=x)
    a = attacks.dlg(model, shared, seed=4, **kw)
    b = attacks.dlg(model, shared, seed=4, **kw)
    c = attacks.dlg(model, shared, seed=5, **kw)
    assert torch.equal(a.reconstruction, b.reconstruction) and a.loss == b.loss
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]
    assert not torch.equal(a.reconstruction, c.reconstruction)
    # The attack does not change the model it attacks.
    fresh = models.build_model("lenet-zhu", seed=1)
    for (n, p), q in zip(model.named_parameters(), fresh.parameters()):
        assert torch.equal(p, q), n
        assert p.grad is None


# --------------------------------------------------------------------------- input errors


def test_idlg_batch_size_2_is_value_error(photo_set):
    x, y = photo_set.batch([0, 1])
    model = models.build_model("lenet-zhu", seed=1)
    shared = fl.client_gradient(model, x, y)
    with pytest.raises(ValueError, match="batch size"):
        attacks.idlg(model, shared, input_shape=tuple(x.shape), num_classes=NUM_CLASSES)


@pytest.mark.parametrize(
    "input_shape",
    [(1, 1, 32, 32), (1, 3, 28, 28), (3, 32, 32), (0, 3, 32, 32), (1, 3, 32, 32, 1)],
    ids=str,
)
@pytest.mark.parametrize("attack", ["dlg", "idlg"])
def test_input_shape_not_fitting_the_model_is_value_error(attack, input_shape, model_and_shared):
    model, _, _, shared = model_and_shared
    with pytest.raises(ValueError, match="input_shape"):
        getattr(attacks, attack)(model, shared, input_shape=input_shape, num_classes=NUM_CLASSES, iterations=1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"iterations": 0},
        {"options": AttackOptions(restarts=0)},
        {"options": AttackOptions(retries=-1)},
        {"options": AttackOptions(callback_every=0), "callback": lambda s: None},
        {"options": AttackOptions(metrics_every=0)},
        {"truth": torch.zeros(2, 3, 32, 32)},
    ],
    ids=["iterations-0", "restarts-0", "retries-negative", "callback_every-0", "metrics_every-0", "truth-shape"],
)
def test_other_bad_attack_arguments_are_value_errors(kwargs, model_and_shared):
    model, x, _, shared = model_and_shared
    with pytest.raises(ValueError):
        attacks.dlg(model, shared, input_shape=tuple(x.shape), num_classes=NUM_CLASSES, **{"iterations": 2, **kwargs})


def test_idlg_num_classes_too_small_is_value_error(model_and_shared):
    model, x, _, _ = model_and_shared
    shared = fl.client_gradient(model, x, torch.tensor([42]))
    with pytest.raises(ValueError, match="num_classes"):
        attacks.idlg(model, shared, input_shape=tuple(x.shape), num_classes=42, iterations=1)


# --------------------------------------------------------------------------- divergence and callbacks


@pytest.mark.parametrize("retries", [0, 10])
def test_overflowing_gradient_distance_does_not_raise(retries, model_and_shared):
    """A shared gradient of 1e30 makes ||grad - shared||^2 overflow to inf in float32."""
    model, x, y, shared = model_and_shared
    huge = type(shared)((n, torch.full_like(g, 1e30)) for n, g in shared.items())
    fl.check_shared(model, huge)  # finite, so it is accepted ...
    result = attacks.dlg(
        model, huge, input_shape=tuple(x.shape), num_classes=NUM_CLASSES, iterations=20, truth=(x, y),
        options=AttackOptions(retries=retries),
    )
    # ... and the attack reports the failure instead of raising or returning NaN.
    _check_result(result, x)
    assert result.diverged
    assert "non-finite" in result.message
    assert result.iterations <= 20
    assert math.isfinite(result.metrics["psnr_mean"])
    assert result.retries == min(retries, 19)


class _Exp(torch.nn.Module):
    def forward(self, x):
        return torch.exp(x)


def _exp_model_case():
    """A tiny model with an exponential layer: DLG's first evaluation is finite, an lr-10 step overflows it."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), _Exp(), torch.nn.Linear(8, 4))
    x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([2])
    return model, x, y, fl.client_gradient(model, x, y)


def test_loss_blowing_up_after_a_finite_start_keeps_the_best_estimate():
    model, x, y, shared = _exp_model_case()
    result = attacks.dlg(
        model, shared, input_shape=(1, 1, 4, 4), num_classes=4, iterations=30, truth=(x, y), lr=10,
        options=AttackOptions(retries=0),
    )
    _check_result(result, x)
    assert result.diverged
    assert "non-finite" in result.message
    assert result.iterations < 30
    assert math.isfinite(result.loss)
    assert result.history and result.loss <= min(r["loss"] for r in result.history)
    assert math.isfinite(result.metrics["psnr_mean"])


def test_history_has_one_record_per_iteration_when_a_run_fails():
    model, x, y, shared = _exp_model_case()
    result = attacks.dlg(
        model, shared, input_shape=(1, 1, 4, 4), num_classes=4, iterations=30, truth=x, lr=10, options=AttackOptions(retries=0),
    )
    assert result.diverged
    assert len(result.history) == result.iterations


def test_callback_returning_true_stops_the_attack(model_and_shared):
    model, x, y, shared = model_and_shared
    states: list[AttackState] = []

    def stop_now(state):
        states.append(state)
        return True

    result = attacks.dlg(
        model, shared, input_shape=tuple(x.shape), num_classes=NUM_CLASSES, iterations=50, truth=x,
        callback=stop_now, options=AttackOptions(callback_every=1),
    )
    assert result.iterations == 1
    assert "callback" in result.message
    assert not result.diverged
    assert len(result.history) == 1
    assert len(states) == 2  # the stopping call and the final one
    assert states[0].done is False and states[-1].done is True


def test_callback_receives_attack_states(model_and_shared):
    model, x, y, shared = model_and_shared
    states: list[AttackState] = []
    result = attacks.idlg(
        model, shared, input_shape=tuple(x.shape), num_classes=NUM_CLASSES, iterations=6, truth=(x, y),
        callback=states.append, options=AttackOptions(callback_every=2),
    )
    assert all(isinstance(s, AttackState) for s in states)
    assert [s.iteration for s in states] == [2, 4, 6, result.iterations]
    assert [s.done for s in states] == [False, False, False, True]
    for s in states:
        assert s.attack == "iDLG"
        assert tuple(s.estimate.shape) == tuple(x.shape)
        assert float(s.estimate.min()) >= 0 and float(s.estimate.max()) <= 1
        assert tuple(s.labels.shape) == (1,) and torch.equal(s.labels, y)  # iDLG's analytic label
        assert s.psnr is not None and math.isfinite(s.psnr)
        assert s.evaluations >= s.iteration
    evals = [s.evaluations for s in states]
    assert evals == sorted(evals)
    _check_history(result)
    assert all(isinstance(r["psnr"], float) and math.isfinite(r["psnr"]) for r in result.history)
    final = states[-1]
    assert torch.equal(final.estimate, result.reconstruction)
    assert final.psnr == pytest.approx(result.metrics["psnr_mean"])
    # The states are snapshots: later steps do not change an earlier estimate.
    assert not torch.equal(states[0].estimate, final.estimate)


def test_history_has_ssim_at_the_end(model_and_shared):
    model, x, _, shared = model_and_shared
    result = attacks.dlg(
        model, shared, input_shape=tuple(x.shape), num_classes=NUM_CLASSES, iterations=3, truth=x, options=AttackOptions(metrics_every=10),
    )
    assert "ssim" in result.history[-1]


def test_history_has_ssim_every_metrics_every(model_and_shared):
    model, x, _, shared = model_and_shared
    result = attacks.dlg(
        model, shared, input_shape=tuple(x.shape), num_classes=NUM_CLASSES, iterations=4, truth=x, options=AttackOptions(metrics_every=2),
    )
    assert len(result.history) >= 2
    for r in result.history:
        assert ("ssim" in r) == (r["iteration"] % 2 == 0), r


# --------------------------------------------------------------------------- the hot path


def test_fast_attack_mode_same_values_and_restores(model_and_shared):
    model, x, y, shared = model_and_shared
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 3
    batch = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ref = model(batch)
    suite_threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the suite runs with 1; make the restore observable
    try:
        with fast_attack_mode(model, num_threads=1):
            assert torch.get_num_threads() == 1
            assert all("_conv_forward" in c.__dict__ for c in convs)  # really patched
            fast = model(batch)
            fast_shared = fl.client_gradient(model, x, y)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(suite_threads)
    assert torch.allclose(fast, ref, atol=1e-5, rtol=0)
    for n, g in shared.items():
        assert torch.allclose(fast_shared[n], g, atol=1e-5, rtol=1e-4), n
    assert all("_conv_forward" not in c.__dict__ for c in convs)
    assert torch.equal(model(batch), ref)


def test_fast_attack_mode_restores_after_an_exception(model_and_shared):
    model, *_ = model_and_shared
    old_threads = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"):
        with fast_attack_mode(model, num_threads=1):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == old_threads
    assert all("_conv_forward" not in m.__dict__ for m in model.modules())


def test_fast_attack_mode_num_threads_none_leaves_threads(model_and_shared):
    model, *_ = model_and_shared
    old_threads = torch.get_num_threads()
    with fast_attack_mode(model, num_threads=None):
        assert torch.get_num_threads() == old_threads
    assert torch.get_num_threads() == old_threads


def test_fast_attack_mode_second_order_gradients_match(model_and_shared):
    """The attack differentiates through the gradient: the double backward must agree too."""
    model, x, y, _ = model_and_shared
    params = list(model.parameters())

    def grad_of_grad_norm():
        z = x.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(z), y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        (gz,) = torch.autograd.grad(sum(g.pow(2).sum() for g in grads), z)
        return gz

    ref = grad_of_grad_norm()
    with fast_attack_mode(model):
        fast = grad_of_grad_norm()
    assert torch.allclose(fast, ref, atol=1e-5 * float(ref.abs().max()), rtol=1e-4)


def test_attack_inside_fast_attack_mode(model_and_shared):
    model, x, _, shared = model_and_shared
    with fast_attack_mode(model):
        attacks.dlg(model, shared, input_shape=tuple(x.shape), num_classes=NUM_CLASSES, iterations=1)
    assert all("_conv_forward" not in m.__dict__ for m in model.modules())
