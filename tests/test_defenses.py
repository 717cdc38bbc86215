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


def test_noise_std_zero_is_an_equal_copy(model_and_shared):
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


def test_noise_std_is_the_absolute_standard_deviation_on_a_large_tensor():
    std = 0.03
    n = 1_000_000
    out = defenses.gaussian_noise({"w": torch.zeros(n)}, noise_std=std, seed=0)["w"]
    # std of the sample std is std / sqrt(2n) ~ 0.07 % of std; allow 1 %.
    assert float(out.std()) == pytest.approx(std, rel=0.01)
    assert abs(float(out.mean())) < 5 * std / math.sqrt(n)
    # Gaussian: about 68.3 % of the draws lie within one std.
    assert float((out.abs() < std).float().mean()) == pytest.approx(0.6827, abs=0.005)


def test_noise_is_added_to_every_tensor(model_and_shared):
    *_, shared = model_and_shared
    std = 1e-2
    out = defenses.gaussian_noise(shared, std, seed=1)
    assert list(out) == list(shared)
    diffs = []
    for n, g in shared.items():
        assert out[n].shape == g.shape and out[n].dtype == g.dtype, n
        assert not torch.equal(out[n], g), n
        diffs.append((out[n] - g).flatten())
    d = torch.cat(diffs)
    assert float(d.std()) == pytest.approx(std, rel=0.02)


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


@pytest.mark.parametrize("std", [-0.1, -1e-12, float("nan"), float("inf")])
def test_noise_bad_std_is_value_error(std, model_and_shared):
    *_, shared = model_and_shared
    with pytest.raises(ValueError, match="noise_std"):
        defenses.gaussian_noise(shared, std)


def test_noise_empty_shared_is_value_error():
    with pytest.raises(ValueError):
        defenses.gaussian_noise(OrderedDict(), 0.1)


def test_noise_slider_stops_are_ordered_and_start_at_zero():
    levels = widgets.NOISE_LEVELS
    assert levels[0] == 0.0
    assert list(levels) == sorted(levels) and len(set(levels)) == len(levels)
    assert levels[-1] == pytest.approx(0.1)  # DLG's largest variance 1e-2 -> noise std 0.1


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


# --------------------------------------------------------------------------- clip_and_noise


def test_clip_and_noise_std_is_noise_multiplier_times_max_grad_norm():
    shared = {"w": torch.full((200_000,), 10.0)}  # norm far above C: clipped to exactly C
    clipped = defenses.clip_and_noise(shared, noise_multiplier=0.0, max_grad_norm=2.0)["w"]
    assert float(clipped.double().norm()) == pytest.approx(2.0, rel=1e-3)
    noisy = defenses.clip_and_noise(shared, noise_multiplier=3.0, max_grad_norm=2.0, seed=1)["w"]
    assert float((noisy - clipped).std()) == pytest.approx(6.0, rel=0.02)  # std = sigma * C
    with pytest.raises(ValueError, match="max_grad_norm"):
        defenses.clip_and_noise(shared, 1.0, max_grad_norm=0.0)
    with pytest.raises(ValueError, match="noise_multiplier"):
        defenses.clip_and_noise(shared, -1.0)


# --------------------------------------------------------------------------- the vocabulary: old names are gone


def _tiny():
    from gleak_edu import models

    torch.manual_seed(0)
    return models.MLP((1, 4, 4), 3, (5,), "tanh")


def _old_keyword_calls():
    """Calls with the keywords issue 15 renamed (sigma, clip, sigma_start, ...): each must be a TypeError."""
    from gleak_edu import training

    g = {"w": torch.ones(3)}
    x, y = torch.rand(2, 1, 4, 4), torch.tensor([0, 1])
    data = (x, y)
    return {
        "gaussian_noise(sigma)": lambda: defenses.gaussian_noise(g, sigma=0.1),
        "clip_and_noise(sigma)": lambda: defenses.clip_and_noise(g, sigma=1.0),
        "clip_and_noise(clip)": lambda: defenses.clip_and_noise(g, 1.0, clip=1.0),
        "perturbed_gradient(sigma, clip)": lambda: defenses.perturbed_gradient(_tiny(), x, y, sigma=1.0, clip=1.0),
        "perturbed_gradient(clip)": lambda: defenses.perturbed_gradient(_tiny(), x, y, noise_multiplier=1.0, clip=1.0),
        "ppp_gradient(sigma)": lambda: defenses.ppp_gradient(_tiny(), x, y, sigma=1.0, clip=1.0),
        "full_perturbation_gradient(sigma)": lambda: defenses.full_perturbation_gradient(_tiny(), x, y, sigma=1.0, clip=1.0),
        "dp_shared_gradient(sigma)": lambda: defenses.dp_shared_gradient(_tiny(), x[:1], y[:1], sigma=1.0, clip=1.0),
        "train_perturbed(sigma)": lambda: defenses.train_perturbed(_tiny(), data, data, sigma=1.0, clip=1.0),
        "train_perturbed(on_step)": lambda: defenses.train_perturbed(_tiny(), data, data, noise_multiplier=1.0, on_step=print),
        "train_perturbed(after_step)": lambda: defenses.train_perturbed(_tiny(), data, data, noise_multiplier=1.0, after_step=print),
        "train_dp(sigma_start)": lambda: defenses.train_dp(_tiny(), data, data, sigma_start=1.0),
        "train_dp(clip)": lambda: defenses.train_dp(_tiny(), data, data, clip="dynamic"),
        "train_dp(attack_steps)": lambda: defenses.train_dp(_tiny(), data, data, attack_steps=(0,)),
        "train_dp(after_step)": lambda: defenses.train_dp(_tiny(), data, data, after_step=print),
        "noise_schedule(sigma_start)": lambda: defenses.noise_schedule("linear", 10, sigma_start=1.0, sigma_end=0.5),
        "schedule_epsilon(sigma_start)": lambda: defenses.schedule_epsilon("fixed", 10, sigma_start=1.0, sigma_end=None, sample_rate=0.1),
        "gaussian_epsilon(sigma)": lambda: defenses.gaussian_epsilon(sigma=1.0),
        "check_noise_multiplier(sigma)": lambda: defenses.check_noise_multiplier(sigma=1.0),
        "noisy_sgd(sigma, clip)": lambda: training.noisy_sgd(_tiny(), x, y, sigma=1.0, clip=1.0),
    }


@pytest.mark.parametrize("name", list(_old_keyword_calls()))
def test_old_keywords_do_not_exist(name):
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        _old_keyword_calls()[name]()


@pytest.mark.parametrize("old", ["epsilon_spent", "match_fixed_sigma", "history_from_sigmas", "SIGMA_RANGE"])
def test_old_names_are_gone(old):
    from gleak_edu.defenses import accounting, dpsgd, ppp

    for module in (defenses, accounting, dpsgd, ppp):
        assert not hasattr(module, old), (module.__name__, old)


def test_no_sigma_or_clip_parameter_in_the_defenses_and_training():
    """Issue 15's vocabulary: noise_std / noise_multiplier / max_grad_norm, never sigma or clip; <= 8 positional."""
    import inspect

    from gleak_edu import precode, training
    from gleak_edu.defenses import accounting, dpsgd, perturbation, ppp, schedules

    for module in (accounting, dpsgd, perturbation, ppp, schedules, training, precode):
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ != module.__name__:
                continue
            params = inspect.signature(fn).parameters
            assert not any("sigma" in p or p == "clip" for p in params), (module.__name__, name, list(params))
            positional = [p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            assert len(positional) <= 8, (module.__name__, name, len(positional))
