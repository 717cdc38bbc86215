"""Several shared gradients attacked in one vectorised run (AttackSpec.run_many), the machinery the arena uses.

What must hold: the stacked matching terms equal the per-problem ones; PRECODE's bottleneck as a chain layer gives
autograd's gradients; gradient p's result does not depend on which other gradients share its run (up to float
rounding); errors name the problem.
"""

from __future__ import annotations

import pytest
import torch

from gleak_edu.attacks import ATTACKS, AttackOptions
from gleak_edu.attacks._chain import autograd_gradient_fn, chain_gradient_fn, matching_fn
from gleak_edu.fl import client_gradient
from gleak_edu.models import MLP
from gleak_edu.precode import add_precode

SHAPE = (1, 1, 28, 28)


def _model(precode: bool, seed: int = 0):
    torch.manual_seed(seed)
    m = MLP(input_shape=(1, 28, 28), num_classes=10, hidden=(32, 32), activation="tanh")
    if precode:
        add_precode(m, bottleneck=16, seed=seed)
    return m


def _problems(model, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = torch.rand(n, 1, 1, 28, 28, generator=g)
    ys = torch.randint(0, 10, (n,), generator=g)
    model.eval()
    shareds = [client_gradient(model, xs[i], ys[i : i + 1]) for i in range(n)]
    return xs, ys, shareds


@pytest.mark.parametrize("precode", [False, True])
def test_stacked_matching_terms_equal_each_problems_own(precode):
    model = _model(precode).eval()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    xs, ys, shareds = _problems(model, 3)
    stacked = matching_fn(model, [torch.stack([s[n] for s in shareds]) for n in names], problems=3)
    z = torch.randn(6, 1, 1, 28, 28)
    soft = torch.softmax(torch.randn(6, 1, 10), -1)
    sq, gg, gt = stacked(z, soft)
    for p in range(3):
        own = matching_fn(model, [shareds[p][n] for n in names])
        sq1, gg1, gt1 = own(z[2 * p : 2 * p + 2], soft[2 * p : 2 * p + 2])
        torch.testing.assert_close(sq[2 * p : 2 * p + 2], sq1, rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(gt[2 * p : 2 * p + 2], gt1, rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(gg[2 * p : 2 * p + 2], gg1, rtol=1e-5, atol=1e-9)
        assert float(stacked.target_sq_norm[p]) == pytest.approx(own.target_sq_norm, rel=1e-9)
    with pytest.raises(ValueError, match="split evenly"):
        stacked(z[:5], soft[:5])
    with pytest.raises(ValueError, match="leading dimension"):
        matching_fn(model, [torch.stack([s[n] for s in shareds]) for n in names], problems=4)


@pytest.mark.parametrize("training", [False, True])
def test_the_bottleneck_as_a_chain_layer_gives_autograds_gradients(training):
    model = _model(True).train(training)
    assert chain_gradient_fn(model) is None  # only where asked: single attacks keep their own path
    fast = chain_gradient_fn(model, bottleneck=True)
    assert fast is not None
    x, soft = torch.rand(3, 1, 28, 28), torch.softmax(torch.randn(3, 10), 1)
    torch.manual_seed(5)  # the same draw of eps in both (train mode)
    a = fast(x, soft)
    torch.manual_seed(5)
    b = autograd_gradient_fn(model)(x, soft)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v.detach(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("attack,precode", [("ig", False), ("bypass", True), ("idlg", False), ("grnn", False)])
def test_a_gradients_result_does_not_depend_on_its_companions(attack, precode):
    model = _model(precode)
    xs, ys, shareds = _problems(model, 3)
    spec = ATTACKS[attack]
    kw = dict(input_shape=SHAPE, num_classes=10, iterations=40)
    if attack == "idlg":
        kw["options"] = AttackOptions(restarts=2)
    truths = [(xs[i], ys[i : i + 1]) for i in range(3)]
    together = spec.run_many(model, shareds, seeds=[0, 1, 2], truths=truths, **kw)
    other = spec.run_many(model, [shareds[0], shareds[2]], seeds=[0, 2], truths=[truths[0], truths[2]], **kw)
    alone = spec.run(model, shareds[0], seed=0, truth=truths[0], **kw)
    for res in (together[0], other[0]):
        assert res.metrics["ssim_mean"] == pytest.approx(alone.metrics["ssim_mean"], abs=0.05)
        assert res.reconstruction.shape == SHAPE and 0 <= float(res.reconstruction.min())
    assert together[2].metrics["ssim_mean"] == pytest.approx(other[1].metrics["ssim_mean"], abs=0.05)
    if spec.recovers_labels:
        assert int(together[0].labels[0]) == int(alone.labels[0]) == int(other[0].labels[0])
        assert int(together[2].labels[0]) == int(other[1].labels[0])


def test_run_many_checks_its_arguments_and_reports_per_gradient_errors():
    model = _model(False)
    xs, ys, shareds = _problems(model, 2)
    spec = ATTACKS["idlg"]
    with pytest.raises(ValueError, match="one seed and one truth"):
        spec.run_many(model, shareds, seeds=[0], input_shape=SHAPE, num_classes=10)
    with pytest.raises(ValueError, match="no callback"):
        spec.run_many(model, shareds, seeds=[0, 1], input_shape=SHAPE, num_classes=10, callback=print)
    zero = {k: torch.zeros_like(v) for k, v in shareds[1].items()}  # no label to read from it
    out = spec.run_many(model, [shareds[0], zero], seeds=[0, 1], input_shape=SHAPE, num_classes=10, iterations=5)
    assert not isinstance(out[0], Exception)
    assert isinstance(out[1], ValueError) and "all zero" in str(out[1])


def test_dlg_many_runs_every_gradient_with_its_own_restarts():
    model = _model(False)
    xs, ys, shareds = _problems(model, 2)
    out = ATTACKS["dlg"].run_many(model, shareds, seeds=[0, 1], truths=[(xs[i], ys[i : i + 1]) for i in range(2)],
                                  input_shape=SHAPE, num_classes=10, iterations=20, options=AttackOptions(restarts=4))
    for res in out:
        assert res.restarts == 4 and len(res.per_restart) == 4
        assert res.loss is not None and res.loss >= 0
        assert "attacked together with 1 other" in res.message
