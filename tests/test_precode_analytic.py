"""PRECODE's variational bottleneck, and analytic input recovery from a first linear layer."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gleak_edu import fl, models
from gleak_edu.attacks import analytic_recovery
from gleak_edu.defenses import VariationalBottleneck


def test_bottleneck_shapes_and_deterministic_inference():
    torch.manual_seed(0)
    vb = VariationalBottleneck(12 * 8 * 8, bottleneck=16)
    h = torch.randn(3, 12, 8, 8)
    out = vb(h)
    assert out.shape == h.shape and out.dtype == torch.float32
    assert vb.encoder.out_features == 32 and vb.decoder.in_features == 16
    assert not torch.equal(vb(h), vb(h)), "training mode samples z"
    vb.eval()
    torch.testing.assert_close(vb(h), vb(h), rtol=0, atol=0)  # inference uses mu
    mu = vb.encoder(h.flatten(1)).chunk(2, dim=1)[0]
    torch.testing.assert_close(vb(h), vb.decoder(mu).reshape(h.shape))


def test_kl_in_bits_on_a_known_case():
    k = 8
    vb = VariationalBottleneck(4, bottleneck=k, beta=1e-3)
    s_for_sigma1 = math.log(math.e - 1)  # softplus(s) = 1
    with torch.no_grad():
        vb.encoder.weight.zero_()
        vb.encoder.bias[:k] = 1.0  # mu = 1
        vb.encoder.bias[k:] = s_for_sigma1  # sigma = 1
    vb(torch.randn(5, 4))
    # per dimension: -1/2 (1 + 2 log 1 - 1 - 1) = 1/2 nat
    assert vb.kl_bits.item() == pytest.approx(k * 0.5 / math.log(2), rel=1e-5)
    assert vb.loss().item() == pytest.approx(1e-3 * k * 0.5 / math.log(2), rel=1e-5)
    with torch.no_grad():
        vb.encoder.bias[:k] = 0.0  # mu = 0, sigma = 1: the prior itself
    vb(torch.randn(5, 4))
    assert abs(vb.kl_bits.item()) < 1e-5


def test_bottleneck_bad_input():
    with pytest.raises(ValueError, match="positive"):
        VariationalBottleneck(0)
    with pytest.raises(ValueError, match="beta"):
        VariationalBottleneck(4, beta=-1)
    with pytest.raises(ValueError, match="expects 4 features"):
        VariationalBottleneck(4)(torch.randn(2, 5))


def _mlp_with_bottleneck(seed: int) -> nn.Module:
    model = models.build_model("mlp", (3, 32, 32), 100, seed=seed)
    model.classifier = nn.Sequential(VariationalBottleneck(256, bottleneck=64), model.classifier)
    return model


@pytest.mark.parametrize("precode", [False, True])
def test_analytic_recovery_is_exact(photo_set, precode):
    for i, seed in ((0, 0), (3, 1), (7, 2)):
        x, y = photo_set.batch(i)
        model = _mlp_with_bottleneck(seed) if precode else models.build_model("mlp", (3, 32, 32), 100, seed=seed)
        torch.manual_seed(seed)
        shared = fl.client_gradient(model, x, y)
        res = analytic_recovery(model, shared, input_shape=x.shape)
        rec = res.reconstruction
        assert rec.shape == x.shape and res.labels is None  # the analytic attack recovers no label
        assert float((rec - x).abs().max()) <= 1e-4


def test_analytic_recovery_bad_input(photo_set):
    x, y = photo_set.batch([0, 1])
    mlp = models.build_model("mlp", (3, 32, 32), 100, seed=0)
    with pytest.raises(ValueError, match="batch size 1"):
        analytic_recovery(mlp, fl.client_gradient(mlp, x, y), input_shape=x.shape)
    x1, y1 = photo_set.batch(0)
    lenet = models.build_model("lenet-zhu", seed=0)
    with pytest.raises(ValueError, match="convolution"):
        analytic_recovery(lenet, fl.client_gradient(lenet, x1, y1), input_shape=x1.shape)
    zero = {k: torch.zeros_like(v) for k, v in fl.client_gradient(mlp, x1, y1).items()}
    with pytest.raises(ValueError, match="all zero"):
        analytic_recovery(mlp, zero, input_shape=x1.shape)
