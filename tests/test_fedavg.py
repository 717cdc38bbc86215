"""FedAvg updates (gleak_edu.fl.client_update) and the unrolled attack on them (gleak_edu.attacks.fedavg_unrolled).

No Flower needed: these are the pieces the ClientApp and the curious server run.
"""

from __future__ import annotations

import pytest
import torch

from gleak_edu import fl, training
from gleak_edu import data as gdata
from gleak_edu.attacks import fedavg_label, fedavg_unrolled, inverting_gradients, unrolled_update
from gleak_edu.fl import SharedGradientError
from gleak_edu.models import MLP


@pytest.fixture(scope="module")
def digits():
    """Held-out MNIST digits (the test part of the course's split), float32 [N, 1, 28, 28], int64 [N]."""
    _, (x, y) = training.split(gdata.mnist_subset(), 0.2, seed=0)
    return x, y


def _mlp(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP((1, 28, 28), 10, (128, 128), "tanh")


def test_local_batches_walk_the_data_in_order_and_wrap():
    assert fl.local_batches(5, 2, 3) == [[0, 1], [2, 3], [4, 0]]
    assert fl.local_batches(5, 2, 2, start=4) == [[4, 0], [1, 2]]
    assert fl.local_batches(1, 1, 3) == [[0], [0], [0]]


@pytest.mark.parametrize("args, match", [
    ((4, 1, 0), "local_steps"), ((4, 0, 1), "local_batch"), ((0, 1, 1), "num_examples"),
    ((2, 3, 1), "larger than the client"), ((4, 1, 1, -1), "start"), ((4, 1.5, 1), "local_batch"),
])
def test_local_batches_refuse_bad_k_b_n(args, match):
    with pytest.raises(ValueError, match=match):
        fl.local_batches(*args)


def test_one_full_batch_step_is_fedsgd(digits):
    x, y = digits[0][:4], digits[1][:4]
    model = _mlp()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    update = fl.client_update(model, x, y, lr=0.05, local_steps=1, local_batch=4)
    grad = fl.client_gradient(model, x, y)
    for name in grad:
        torch.testing.assert_close(update[name], -0.05 * grad[name], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(dict(model.named_parameters())[name].detach(), before[name])  # untouched
    simple = fl.update_as_gradient(update, lr=0.05, local_steps=1)
    for name in grad:
        torch.testing.assert_close(simple[name], grad[name], rtol=1e-4, atol=1e-6)


def test_client_update_is_k_sgd_steps(digits):
    """The update equals K steps of torch.optim.SGD on the same batches."""
    x, y = digits[0][:6], digits[1][:6]
    model = _mlp(1)
    update = fl.client_update(model, x, y, lr=0.1, local_steps=4, local_batch=2, start=3)
    ref = _mlp(1)
    ref.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for idx in fl.local_batches(6, 2, 4, start=3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ref(x[idx]), y[idx]).backward()
        opt.step()
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(update[name], q.detach() - p.detach(), rtol=1e-4, atol=1e-6)
    # the attacker's differentiable replay gives the same update
    replay = unrolled_update(model, x, y, lr=0.1, steps=fl.local_batches(6, 2, 4, start=3), create_graph=False)
    for name, u in zip(update, replay):
        torch.testing.assert_close(u.detach(), update[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("lr", [0, -1.0, float("nan"), float("inf"), True])
def test_client_update_refuses_a_bad_step_size(digits, lr):
    with pytest.raises(ValueError, match="lr"):
        fl.client_update(_mlp(), digits[0][:2], digits[1][:2], lr=lr, local_steps=1, local_batch=1)


def test_the_bias_rule_reads_the_label_of_a_k_step_update(digits):
    model = _mlp(2)
    x, y = digits
    hits = sum(
        fedavg_label(model, fl.client_update(model, x[i:i + 1], y[i:i + 1], lr=0.1, local_steps=5, local_batch=1))
        == int(y[i]) for i in range(10)
    )
    assert hits == 10


def test_unrolled_with_k1_is_inverting_gradients_objective(digits):
    """K = 1: the unrolled update is -lr times the gradient, so both attacks see the same cosine."""
    x, y = digits[0][:1], digits[1][:1]
    model = _mlp(3)
    update = fl.client_update(model, x, y, lr=0.1, local_steps=1, local_batch=1)
    shared = fl.client_gradient(model, x, y)
    dummy = torch.rand((1, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    guess = unrolled_update(model, dummy, y, lr=0.1, steps=[[0]], create_graph=False)
    g = fl.client_gradient(model, dummy, y)
    flat = lambda ts: torch.cat([t.reshape(-1) for t in ts])  # noqa: E731
    cos_unrolled = torch.nn.functional.cosine_similarity(flat(t.detach() for t in guess), flat(update.values()), dim=0)
    cos_ig = torch.nn.functional.cosine_similarity(flat(g.values()), flat(shared.values()), dim=0)
    assert abs(float(cos_unrolled) - float(cos_ig)) < 1e-5


def test_k1_unrolled_and_inverting_gradients_both_rebuild_fedsgd_digits(digits):
    x, y = digits
    model = _mlp(4)
    unrolled, ig = [], []
    for i in range(5):
        xi, yi = x[10 + i:11 + i], y[10 + i:11 + i]
        update = fl.client_update(model, xi, yi, lr=0.1, local_steps=1, local_batch=1)
        r = fedavg_unrolled(model, update, input_shape=(1, 1, 28, 28), num_classes=10, lr=0.1, local_steps=1,
                            local_batch=1, iterations=200, seed=i, truth=(xi, yi))
        s = inverting_gradients(model, fl.update_as_gradient(update, lr=0.1, local_steps=1),
                                input_shape=(1, 1, 28, 28), num_classes=10, iterations=200, seed=i, truth=(xi, yi))
        assert r.labels.tolist() == yi.tolist() and r.attack == "FedAvg unrolled"
        unrolled.append(r.metrics["ssim_mean"])
        ig.append(s.metrics["ssim_mean"])
    assert sum(v >= 0.8 for v in unrolled) >= 4, unrolled
    assert sum(v >= 0.8 for v in ig) >= 4, ig


def test_unrolling_beats_the_one_gradient_reading_at_k5(digits):
    """Five local steps on one digit: the unrolled attack rebuilds it; reading the update as one gradient
    loses detail (Geiping et al. 2020, section 6). Rates over five digits, not one run."""
    x, y = digits
    model = _mlp(5)
    unrolled, simple = [], []
    for i in range(5):
        xi, yi = x[20 + i:21 + i], y[20 + i:21 + i]
        update = fl.client_update(model, xi, yi, lr=0.1, local_steps=5, local_batch=1)
        r = fedavg_unrolled(model, update, input_shape=(1, 1, 28, 28), num_classes=10, lr=0.1, local_steps=5,
                            local_batch=1, iterations=200, seed=i, truth=(xi, yi))
        s = inverting_gradients(model, fl.update_as_gradient(update, lr=0.1, local_steps=5),
                                input_shape=(1, 1, 28, 28), num_classes=10, iterations=200, seed=i, truth=(xi, yi))
        unrolled.append(r.metrics["ssim_mean"])
        simple.append(s.metrics["ssim_mean"])
    assert sum(v >= 0.9 for v in unrolled) >= 4, unrolled
    assert sum(unrolled) / 5 > sum(simple) / 5 + 0.05, (unrolled, simple)


def test_unrolled_attack_on_a_batch_with_given_labels(digits):
    x, y = digits[0][30:32], digits[1][30:32]
    model = _mlp(6)
    update = fl.client_update(model, x, y, lr=0.1, local_steps=2, local_batch=1)
    r = fedavg_unrolled(model, update, input_shape=(2, 1, 28, 28), num_classes=10, lr=0.1, local_steps=2,
                        local_batch=1, labels=y, iterations=200, truth=(x, y))
    assert r.reconstruction.shape == (2, 1, 28, 28)
    assert 0 <= float(r.reconstruction.min()) and float(r.reconstruction.max()) <= 1
    assert min(r.metrics["ssim"]) >= 0.9, r.metrics["ssim"]  # one digit per step, labels given


def test_unrolled_attack_refuses_bad_input(digits):
    x, y = digits[0][:2], digits[1][:2]
    model = _mlp()
    update = fl.client_update(model, x, y, lr=0.1, local_steps=1, local_batch=2)
    kw = dict(num_classes=10, lr=0.1, local_steps=1, local_batch=2, iterations=2)
    with pytest.raises(ValueError, match="give the labels"):
        fedavg_unrolled(model, update, input_shape=(2, 1, 28, 28), **kw)
    with pytest.raises(ValueError, match="local_steps"):
        fedavg_unrolled(model, update, input_shape=(2, 1, 28, 28), labels=y, **{**kw, "local_steps": 0})
    with pytest.raises(ValueError, match="lr"):
        fedavg_unrolled(model, update, input_shape=(2, 1, 28, 28), labels=y, **{**kw, "lr": -0.1})
    with pytest.raises(ValueError, match="labels must be"):
        fedavg_unrolled(model, update, input_shape=(2, 1, 28, 28), labels=torch.tensor([1, 12]), **kw)
    bad = dict(update)
    bad["classifier.bias"] = torch.zeros(3)
    with pytest.raises(SharedGradientError, match="shape"):
        fedavg_unrolled(model, bad, input_shape=(2, 1, 28, 28), labels=y, **kw)
    zero = {n: torch.zeros_like(u) for n, u in update.items()}
    with pytest.raises(ValueError, match="all zeros"):
        fedavg_unrolled(model, zero, input_shape=(2, 1, 28, 28), labels=y, **kw)
