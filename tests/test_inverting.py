"""Inverting Gradients, PRECODE, and the bypass that matches only the deterministic layers."""

from __future__ import annotations

import pytest
import torch

from gleak_edu import data, fl, models
from gleak_edu.attacks import inverting_gradients, precode_bypass
from gleak_edu.defenses import VariationalBottleneck, add_precode, deterministic_parameters, precode_loss

PHOTOS = (0, 1, 2)


def _victim(i: int, precode: bool):
    model = models.build_model("mlp", (3, 32, 32), 100, seed=i, init="pytorch")
    if precode:
        add_precode(model)
    x, y = data.photos().batch(i)
    torch.manual_seed(100 + i)  # the victim's bottleneck sample
    return model, x, y, fl.client_gradient(model, x, y)


def test_deterministic_parameters_follow_the_structure():
    model = add_precode(models.build_model("mlp", (3, 32, 32), 100, seed=0, init="pytorch"))
    names = deterministic_parameters(model)
    assert names == [
        "features.0.weight", "features.0.bias", "features.2.weight", "features.2.bias",
        "classifier.0.encoder.weight", "classifier.0.encoder.bias",
    ]
    stochastic = [n for n, _ in model.named_parameters() if n not in names]
    assert stochastic == ["classifier.0.decoder.weight", "classifier.0.decoder.bias", "classifier.1.weight", "classifier.1.bias"]
    plain = models.build_model("lenet-zhu", seed=0)
    assert deterministic_parameters(plain) == [n for n, _ in plain.named_parameters()]


def test_add_precode_and_its_loss():
    model = models.build_model("lenet-zhu", seed=0, init="pytorch")
    assert float(precode_loss(model)) == 0.0
    add_precode(model, bottleneck=32, beta=1e-2)
    assert isinstance(model.classifier[0], VariationalBottleneck)
    out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 100)
    assert precode_loss(model).item() == pytest.approx(1e-2 * model.classifier[0].kl_bits.item())
    with pytest.raises(ValueError, match="already"):
        add_precode(model)


@pytest.mark.slow
def test_inverting_gradients_plain_vs_precode():
    plain = [
        inverting_gradients(m, s, input_shape=x.shape, num_classes=100, iterations=300, truth=(x, y), seed=i)
        for i in PHOTOS for m, x, y, s in [_victim(i, False)]
    ]
    defended = [
        inverting_gradients(m, s, input_shape=x.shape, num_classes=100, iterations=300, truth=(x, y), seed=i)
        for i in PHOTOS for m, x, y, s in [_victim(i, True)]
    ]
    ssim_plain = sum(r.metrics["ssim_mean"] for r in plain) / 3
    ssim_precode = sum(r.metrics["ssim_mean"] for r in defended) / 3
    assert ssim_plain >= 0.9, [r.metrics["ssim_mean"] for r in plain]
    assert ssim_precode <= 0.2, [r.metrics["ssim_mean"] for r in defended]
    assert all(r.metrics["label_accuracy"] == 1.0 for r in plain)


@pytest.mark.slow
def test_bypass_restores_the_reconstruction():
    results = []
    for i in PHOTOS:
        model, x, y, shared = _victim(i, True)
        model.train()
        results.append(precode_bypass(model, shared, input_shape=x.shape, num_classes=100, truth=(x, y), seed=i))
        assert model.training  # the attack restores the mode
    ssims = [r.metrics["ssim_mean"] for r in results]
    assert sum(ssims) / 3 >= 0.8, ssims
    assert all(r.attack == "bypass" for r in results)


def test_inverting_gradients_bad_input():
    model, x, y, shared = _victim(0, False)
    with pytest.raises(ValueError, match="unknown"):
        precode_bypass(model, shared, input_shape=x.shape, num_classes=100, layers=["nope.weight"], iterations=1)
    with pytest.raises(TypeError, match="layers"):  # matching a subset of layers is the bypass's job
        inverting_gradients(model, shared, input_shape=x.shape, num_classes=100, layers=None, iterations=1)
    with pytest.raises(ValueError, match="labels"):
        inverting_gradients(model, shared, input_shape=(2, 3, 32, 32), num_classes=100, iterations=1)
    with pytest.raises(ValueError, match="init"):
        models.build_model("mlp", init="xavier")
