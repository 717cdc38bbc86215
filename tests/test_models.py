"""Victim models (gleak_edu.models)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gleak_edu import models


@pytest.mark.parametrize("cls", [models.LeNetZhu, models.MLP])
@pytest.mark.parametrize("input_shape", [(3, 32, 32), (1, 25, 25)])
@pytest.mark.parametrize("activation", sorted(models.ACTIVATIONS))
def test_output_shape_and_dtype(cls, input_shape, activation):
    model = cls(input_shape=input_shape, num_classes=10, activation=activation)
    x = torch.rand((4, *input_shape), generator=torch.Generator().manual_seed(0))
    out = model(x)
    assert tuple(out.shape) == (4, 10)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert model.input_shape == input_shape and model.num_classes == 10


@pytest.mark.parametrize(
    "input_shape, expected",
    # Three 5x5 convolutions, stride 2, 2, 1, padding 2: side -> ceil(ceil(side / 2) / 2), 12 channels.
    [((3, 32, 32), 768), ((1, 28, 28), 12 * 7 * 7), ((1, 25, 25), 12 * 7 * 7), ((1, 8, 8), 12 * 2 * 2)],
)
def test_lenet_classifier_in_features(input_shape, expected):
    model = models.LeNetZhu(input_shape=input_shape, num_classes=100)
    assert model.classifier.in_features == expected
    # The formula agrees with what the convolutions really produce.
    feats = model.features(torch.zeros((1, *input_shape)))
    assert feats.flatten(1).shape[1] == expected


def test_lenet_32x32_is_the_papers_768():
    assert models.LeNetZhu((3, 32, 32), 100).classifier.in_features == 768


def test_parameter_names_are_stable():
    lenet = models.LeNetZhu()
    assert [n for n, _ in lenet.named_parameters()] == [
        "features.0.weight", "features.0.bias",
        "features.2.weight", "features.2.bias",
        "features.4.weight", "features.4.bias",
        "classifier.weight", "classifier.bias",
    ]
    mlp = models.MLP(hidden=(64, 32))
    assert [n for n, _ in mlp.named_parameters()] == [
        "features.0.weight", "features.0.bias",
        "features.2.weight", "features.2.bias",
        "classifier.weight", "classifier.bias",
    ]
    # The MLP's first layer is linear with a bias and sees the flattened image.
    assert mlp.features[0].in_features == 3 * 32 * 32 and mlp.features[0].bias is not None


def test_output_layer_is_the_last_linear():
    name, layer = models.output_layer(models.LeNetZhu())
    assert name == "classifier" and isinstance(layer, nn.Linear) and layer.out_features == 100
    name, layer = models.output_layer(models.MLP(num_classes=7))
    assert name == "classifier" and layer.out_features == 7
    with pytest.raises(ValueError):
        models.output_layer(nn.Sequential(nn.Conv2d(1, 1, 3), nn.Sigmoid()))


@pytest.mark.parametrize("name", ["lenet-zhu", "mlp"])
def test_uniform_init_bounds_and_reproducibility(name):
    m1 = models.build_model(name, seed=7)
    m2 = models.build_model(name, seed=7)
    m3 = models.build_model(name, seed=8)
    all1 = torch.cat([p.detach().flatten() for p in m1.parameters()])
    assert float(all1.min()) >= -0.5 and float(all1.max()) <= 0.5
    # The whole interval is used (not e.g. PyTorch's default fan-in bound).
    assert float(all1.min()) < -0.49 and float(all1.max()) > 0.49
    assert abs(float(all1.mean())) < 0.01
    for (n1, p1), (n2, p2), (_, p3) in zip(m1.named_parameters(), m2.named_parameters(), m3.named_parameters()):
        assert n1 == n2
        assert torch.equal(p1, p2), n1
        assert not torch.equal(p1, p3), n1


def test_uniform_init_bound_argument_and_global_rng_untouched():
    model = models.LeNetZhu()
    state = torch.get_rng_state()
    out = models.uniform_init_(model, bound=0.1, seed=3)
    assert out is model
    assert torch.equal(torch.get_rng_state(), state)  # seeded init uses its own generator
    for p in model.parameters():
        assert float(p.detach().abs().max()) <= 0.1


def test_same_seed_same_outputs():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    a = models.build_model("lenet-zhu", seed=5)(x)
    b = models.build_model("lenet-zhu", seed=5)(x)
    c = models.build_model("lenet-zhu", seed=6)(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("cls", [models.LeNetZhu, models.MLP])
def test_unknown_activation_is_value_error(cls):
    with pytest.raises(ValueError, match="swish"):
        cls(activation="swish")
    with pytest.raises(ValueError, match="swish"):
        models.build_model("lenet-zhu" if cls is models.LeNetZhu else "mlp", activation="swish")


def test_other_bad_arguments():
    with pytest.raises(ValueError, match="resnet"):
        models.build_model("resnet")
    with pytest.raises(ValueError):
        models.LeNetZhu(input_shape=(32, 32))
    with pytest.raises(ValueError):
        models.MLP(input_shape=(3, 0, 32))
    with pytest.raises(ValueError):
        models.LeNetZhu(num_classes=1)


def test_activation_is_really_used():
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats = {a: models.build_model("lenet-zhu", activation=a, seed=0).features(x) for a in models.ACTIVATIONS}
    assert float(feats["sigmoid"].min()) > 0 and float(feats["sigmoid"].max()) < 1
    assert float(feats["relu"].min()) == 0.0
    assert float(feats["tanh"].min()) < 0
