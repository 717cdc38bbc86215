"""Gaussian noise and gradient pruning (gleak_edu.defenses)."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch

from gleak_edu import defenses, widgets


def _random_shared(seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """Tensors of several shapes with no zeros and no ties in magnitude."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {"a.weight": (12, 3, 5, 5), "a.bias": (12,), "b.weight": (10, 7), "b.bias": (3,), "c": (1,)}
    return OrderedDict((n, torch.randn(s, generator=gen)) for n, s in shapes.items())


def _copy(shared):
    return OrderedDict((n, g.clone()) for n, g in shared.items())


# --------------------------------------------------------------------------- gaussian_noise


def test_noise_sigma_zero_is_an_equal_copy(model_and_shared):
    *_, shared = model_and_shared
    out = defenses.gaussian_noise(shared, 0.0, seed=0)
    assert isinstance(out, OrderedDict) and list(out) == list(shared)
    for n in shared:
        assert torch.equal(out[n], shared[n]), n
    # A copy: changing it does not change the client's gradient.
    first = next(iter(out))
    before = shared[first].clone()
    out[first].add_(1.0)
    assert torch.equal(shared[first], before)


def test_noise_std_matches_sigma_on_a_large_tensor():
    sigma = 0.03
    n = 1_000_000
    out = defenses.gaussian_noise({"w": torch.zeros(n)}, sigma, seed=0)["w"]
    # std of the sample std is sigma / sqrt(2n) ~ 0.07 % of sigma; allow 1 %.
    assert float(out.std()) == pytest.approx(sigma, rel=0.01)
    assert abs(float(out.mean())) < 5 * sigma / math.sqrt(n)
    # Gaussian: about 68.3 % of the draws lie within one sigma.
    assert float((out.abs() < sigma).float().mean()) == pytest.approx(0.6827, abs=0.005)


def test_noise_is_added_to_every_tensor(model_and_shared):
    *_, shared = model_and_shared
    sigma = 1e-2
    out = defenses.gaussian_noise(shared, sigma, seed=1)
    assert list(out) == list(shared)
    diffs = []
    for n, g in shared.items():
        assert out[n].shape == g.shape and out[n].dtype == g.dtype, n
        assert not torch.equal(out[n], g), n
        diffs.append((out[n] - g).flatten())
    d = torch.cat(diffs)
    assert float(d.std()) == pytest.approx(sigma, rel=0.02)


def test_noise_seeded_reproducible_and_input_untouched(model_and_shared):
    *_, shared = model_and_shared
    original = _copy(shared)
    a = defenses.gaussian_noise(shared, 0.1, seed=5)
    b = defenses.gaussian_noise(shared, 0.1, seed=5)
    c = defenses.gaussian_noise(shared, 0.1, seed=6)
    for n in shared:
        assert torch.equal(a[n], b[n]), n
        assert not torch.equal(a[n], c[n]), n
        assert torch.equal(shared[n], original[n]), n


def test_noise_seed_none_uses_the_global_rng():
    shared = {"w": torch.zeros(100)}
    torch.manual_seed(0)
    a = defenses.gaussian_noise(shared, 1.0, seed=None)["w"]
    torch.manual_seed(0)
    b = defenses.gaussian_noise(shared, 1.0, seed=None)["w"]
    assert torch.equal(a, b)


@pytest.mark.parametrize("sigma", [-0.1, -1e-12, float("nan"), float("inf")])
def test_noise_bad_sigma_is_value_error(sigma, model_and_shared):
    *_, shared = model_and_shared
    with pytest.raises(ValueError, match="sigma"):
        defenses.gaussian_noise(shared, sigma)


def test_noise_empty_shared_is_value_error():
    with pytest.raises(ValueError):
        defenses.gaussian_noise(OrderedDict(), 0.1)


def test_noise_slider_stops_are_ordered_and_start_at_zero():
    levels = widgets.NOISE_LEVELS
    assert levels[0] == 0.0
    assert list(levels) == sorted(levels) and len(set(levels)) == len(levels)
    assert levels[-1] == pytest.approx(0.1)  # DLG's largest variance 1e-2 -> sigma 0.1


# --------------------------------------------------------------------------- prune_gradients


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.2, 0.5, 0.75, 0.9, 0.999])
def test_prune_zeroes_the_smallest_fraction_per_tensor(fraction):
    shared = _random_shared()
    original = _copy(shared)
    out = defenses.prune_gradients(shared, fraction)
    assert list(out) == list(shared)
    for n, g in shared.items():
        assert torch.equal(g, original[n]), n  # input untouched
        p = out[n]
        assert p.shape == g.shape and p.dtype == g.dtype, n
        k = math.floor(fraction * g.numel())
        zeroed = p == 0
        assert int(zeroed.sum()) == k, n  # the input has no zeros, so every zero was pruned
        kept = ~zeroed
        # Kept entries are unchanged ...
        assert torch.equal(p[kept], g[kept]), n
        # ... and they are the largest in magnitude.
        if 0 < k < g.numel():
            assert float(g[kept].abs().min()) > float(g[zeroed].abs().max()), n


def test_prune_real_gradient(model_and_shared):
    model, _, _, shared = model_and_shared
    assert all(bool((g != 0).all()) for g in shared.values())  # precondition of the count below
    out = defenses.prune_gradients(shared, 0.3)
    for n, g in shared.items():
        k = math.floor(0.3 * g.numel())
        assert int((out[n] == 0).sum()) == k, n
        kept = out[n] != 0
        assert torch.equal(out[n][kept], g[kept]), n
        if k:
            assert float(g[kept].abs().min()) >= float(g[~kept].abs().max()), n


def test_prune_zero_fraction_is_an_equal_copy():
    shared = _random_shared()
    out = defenses.prune_gradients(shared, 0.0)
    for n in shared:
        assert torch.equal(out[n], shared[n])
        assert out[n].data_ptr() != shared[n].data_ptr()


def test_prune_non_contiguous_tensor():
    g = torch.randn(6, 8, generator=torch.Generator().manual_seed(2)).T  # non-contiguous view
    out = defenses.prune_gradients({"w": g}, 0.5)["w"]
    assert out.shape == g.shape
    assert int((out == 0).sum()) == 24
    kept = out != 0
    assert torch.equal(out[kept], g[kept])


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5, float("nan"), float("inf")])
def test_prune_bad_fraction_is_value_error(fraction):
    with pytest.raises(ValueError, match="fraction"):
        defenses.prune_gradients(_random_shared(), fraction)


def test_defenses_compose_like_the_panel(model_and_shared):
    *_, shared = model_and_shared
    out = defenses.prune_gradients(defenses.gaussian_noise(shared, 1e-3, seed=0), 0.5)
    for n, g in shared.items():
        assert out[n].shape == g.shape
        assert int((out[n] == 0).sum()) == math.floor(0.5 * g.numel())
