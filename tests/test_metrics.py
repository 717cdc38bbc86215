"""Reconstruction and label metrics (gleak_edu.metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gleak_edu import metrics


def _rand(shape, seed=0, low=0.0, high=1.0):
    gen = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(shape, generator=gen)


def test_psnr_identical_is_the_cap(photo_set):
    x = photo_set.images[:4]
    p = metrics.psnr(x, x)
    assert p.dtype == torch.float64 and tuple(p.shape) == (4,)
    assert torch.allclose(p, torch.full((4,), metrics.PSNR_CAP_DB, dtype=torch.float64))
    assert metrics.PSNR_CAP_DB == 100.0


def test_psnr_matches_the_formula():
    x = _rand((3, 3, 32, 32), low=0.05, high=0.85)  # x + 0.1 stays inside [0, 1]
    y = x + 0.1
    y[1] += 0.05 * _rand((3, 32, 32), seed=1)  # a second image with a different error
    expected = [10 * math.log10(1.0 / float(np.mean((a - b) ** 2))) for a, b in zip(x.double().numpy(), y.double().numpy())]
    assert metrics.psnr(x, y).tolist() == pytest.approx(expected, abs=1e-4)
    assert metrics.psnr(x, y)[0] == pytest.approx(20.0, abs=1e-3)  # MSE 0.01
    # Symmetric, and per image (not pooled over the batch).
    assert torch.allclose(metrics.psnr(y, x), metrics.psnr(x, y))
    assert float(metrics.psnr(x, y)[1]) < float(metrics.psnr(x, y)[0])


def test_mse_and_psnr_clamp_to_the_unit_range():
    x = _rand((1, 1, 8, 8), seed=2)
    far = x + 5.0  # clamped to all ones
    assert torch.allclose(metrics.mse(x, far), metrics.mse(x, torch.ones_like(x)))
    assert torch.allclose(metrics.psnr(x, far), metrics.psnr(x, torch.ones_like(x)))


def test_metrics_accept_a_single_chw_image():
    x = _rand((3, 16, 16), seed=3)
    assert tuple(metrics.psnr(x, x).shape) == (1,)
    assert tuple(metrics.ssim(x, x).shape) == (1,)


def test_metrics_shape_mismatch_is_value_error():
    with pytest.raises(ValueError):
        metrics.psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(ValueError):
        metrics.ssim(torch.zeros(2, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_ssim_identical_is_one_and_inverse_is_low(photo_set):
    x = photo_set.images
    same = metrics.ssim(x, x)
    assert same.dtype == torch.float64 and tuple(same.shape) == (len(x),)
    assert torch.allclose(same, torch.ones_like(same), atol=1e-6)
    inv = metrics.ssim(x, 1 - x)
    assert bool((inv < 0.1).all())
    assert float(inv.mean()) < 0
    assert bool((inv >= -1).all())


def test_ssim_orders_degradations(photo_set):
    x = photo_set.images[:3]
    gen = torch.Generator().manual_seed(0)
    mild = (x + 0.02 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    strong = (x + 0.2 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    assert bool((metrics.ssim(x, mild) > metrics.ssim(x, strong)).all())
    assert bool((metrics.psnr(x, mild) > metrics.psnr(x, strong)).all())


@pytest.mark.parametrize("side", [8, 25, 28])
def test_ssim_small_grayscale_images(side):
    x = _rand((2, 1, side, side), seed=side)
    s = metrics.ssim(x, x)
    assert torch.allclose(s, torch.ones(2, dtype=torch.float64), atol=1e-6)
    s2 = metrics.ssim(x, _rand((2, 1, side, side), seed=side + 1))
    assert bool((s2 < 0.5).all())


def test_label_accuracy_is_order_invariant():
    assert metrics.label_accuracy([1, 2], [2, 1]) == 1.0
    assert metrics.label_accuracy([1, 1], [1, 2]) == 0.5
    assert metrics.label_accuracy(torch.tensor([3]), torch.tensor([3])) == 1.0
    assert metrics.label_accuracy(torch.tensor([4]), torch.tensor([3])) == 0.0
    # Multiset overlap: duplicates count as often as they occur in the truth.
    assert metrics.label_accuracy([5, 5, 5, 1], [5, 5, 2, 1]) == 0.75
    with pytest.raises(ValueError):
        metrics.label_accuracy([], [])


def test_match_order_recovers_a_permutation(photo_set):
    truth = photo_set.images[:6]
    gen = torch.Generator().manual_seed(3)
    perm = torch.randperm(6, generator=gen)
    assert not torch.equal(perm, torch.arange(6))
    recon = (truth[perm] + 0.03 * torch.randn(truth.shape, generator=gen)).clamp(0, 1)
    order = metrics.match_order(recon, truth)
    assert order.dtype == torch.int64
    assert torch.equal(order, torch.argsort(perm))  # recon[order][i] is the noisy truth[i]
    assert torch.equal(truth[perm][order], truth)
    # Already in order: the identity.
    assert torch.equal(metrics.match_order(truth, truth), torch.arange(6))
