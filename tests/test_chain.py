"""The written-out chain gradients equal autograd's, to first and second order."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gleak_edu import models
from gleak_edu.attacks._chain import autograd_gradient_fn, chain_gradient_fn, gradient_fn

CASES = [
    ("lenet-zhu", (3, 32, 32)),
    ("lenet-zhu", (1, 25, 25)),
    ("lenet5", (3, 32, 32)),
    ("lenet5", (1, 28, 28)),
    ("mlp", (1, 8, 8)),
]


@pytest.mark.parametrize("name,shape", CASES)
@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh"])
@pytest.mark.parametrize("batch", [1, 3])
def test_chain_matches_autograd(name, shape, activation, batch):
    model = models.build_model(name, shape, 10, activation, seed=0)
    fast, slow = chain_gradient_fn(model), autograd_gradient_fn(model)
    assert fast is not None
    gen = torch.Generator().manual_seed(1)
    x = torch.rand((batch, *shape), generator=gen).requires_grad_()
    soft = torch.softmax(torch.randn(batch, 10, generator=gen), -1).requires_grad_()
    g_fast, g_slow = fast(x, soft), slow(x, soft)
    assert [g.shape for g in g_fast] == [p.shape for p in model.parameters()]
    for a, b in zip((g.detach() for g in g_fast), (g.detach() for g in g_slow)):  # compare at each tensor's scale (float32 sums differ in order)
        assert float((a - b).abs().max()) <= 1e-4 * float(b.abs().max()) + 1e-9
    # second order: what gradient matching differentiates
    target = [torch.randn(p.shape, generator=gen) * 0.01 for p in model.parameters()]
    d_fast = sum(((a - t) ** 2).sum() for a, t in zip(g_fast, target))
    d_slow = sum(((b - t) ** 2).sum() for b, t in zip(g_slow, target))
    gx_f, gs_f = torch.autograd.grad(d_fast, [x, soft])
    gx_s, gs_s = torch.autograd.grad(d_slow, [x, soft])
    scale = float(gx_s.abs().max()) + 1e-12
    assert float((gx_f - gx_s).abs().max()) <= 1e-3 * scale
    assert float((gs_f - gs_s).abs().max()) <= 1e-3 * (float(gs_s.abs().max()) + 1e-12)


def test_unsupported_model_falls_back_to_autograd():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, groups=1, dilation=2), nn.Flatten(), nn.Linear(4 * 28 * 28, 5))
    assert chain_gradient_fn(model) is None  # no chain() method
    model.chain = lambda: list(model)  # dilation is not supported by the chain
    assert chain_gradient_fn(model) is None
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    grads = gradient_fn(model)(x, torch.full((1, 5), 0.2))
    assert [g.shape for g in grads] == [p.shape for p in model.parameters()]
