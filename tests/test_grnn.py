"""GRNN (Ren, Deng, Xie 2022): generator shapes, the attack's science, re-identification, bad input."""

from __future__ import annotations

from gleak_edu.attacks import AttackOptions

import pytest
import torch

from gleak_edu import attacks, data, fl, metrics, models
from gleak_edu.attacks import GRNNGenerator, grnn


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 25, 25), (1, 28, 28), (1, 8, 8)])
@pytest.mark.parametrize("batch", [1, 4, 16])
def test_generator_shapes_and_ranges(shape, batch):
    gen = GRNNGenerator(shape, num_classes=10)
    z = torch.randn(batch, 128, generator=torch.Generator().manual_seed(0))
    img, soft = gen(z)
    assert img.shape == (batch, *shape) and img.dtype == torch.float32
    assert float(img.detach().min()) >= 0 and float(img.detach().max()) <= 1
    assert soft.shape == (batch, 10)
    torch.testing.assert_close(soft.sum(1), torch.ones(batch))


def test_total_variation_of_flat_and_striped_images():
    flat = torch.full((1, 1, 4, 4), 0.3)
    assert float(attacks.total_variation(flat)) == 0.0
    stripes = torch.zeros(1, 1, 4, 4)
    stripes[..., ::2] = 1.0  # columns alternate: horizontal differences of 1, vertical 0
    assert float(attacks.total_variation(stripes)) == pytest.approx(1.0)


@pytest.mark.slow
def test_grnn_batch1_photo_reaches_25db_and_the_label():
    x, y = data.photos().batch(0)
    model = models.build_model("lenet5", (3, 32, 32), 100, seed=0)
    shared = fl.client_gradient(model, x, y)
    result = grnn(model, shared, input_shape=x.shape, num_classes=100, truth=(x, y), seed=0)
    assert result.attack == "GRNN" and not result.diverged
    assert result.metrics["psnr_mean"] >= 25, result
    assert result.labels.tolist() == y.tolist()
    assert result.reconstruction.shape == x.shape
    assert len(result.history) == result.iterations == 1500


@pytest.mark.slow
def test_grnn_survives_a_batch_where_dlg_fails():
    """Batch 4, same budget of gradient evaluations: DLG below 15 dB, GRNN above 20 dB."""
    x, y = data.photos().batch([0, 1, 2, 3])
    budget = 1000
    lenet5 = models.build_model("lenet5", (3, 32, 32), 100, seed=0)
    g = grnn(lenet5, fl.client_gradient(lenet5, x, y), input_shape=x.shape, num_classes=100,
             iterations=budget, truth=(x, y), seed=0)
    d = attacks.dlg(lenet5, fl.client_gradient(lenet5, x, y), input_shape=x.shape, num_classes=100,
                    iterations=budget // 20, truth=(x, y), seed=0)
    assert d.evaluations <= budget
    assert d.metrics["psnr_mean"] < 15, d
    assert g.metrics["psnr_mean"] > 20, g
    assert g.metrics["label_accuracy"] == 1.0


def test_reidentification_on_a_tiny_gallery():
    faces = data.lfw_faces().images[:6]
    noisy = (faces[[2, 4]] + 0.05 * torch.randn(2, 1, 25, 25, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    for sim in ("ssim", "mse"):
        ranks = metrics.reid_ranks(noisy, faces, [2, 4], similarity=sim)
        assert ranks.tolist() == [1, 1]
        assert metrics.rank1_accuracy(ranks) == 1.0
        wrong = metrics.reid_ranks(noisy, faces, [3, 5], similarity=sim)  # the true faces are 2 and 4
        assert all(r > 1 for r in wrong.tolist())
        assert metrics.rank1_accuracy(wrong) == 0.0
    with pytest.raises(ValueError, match="gallery index"):
        metrics.reid_ranks(noisy, faces, [2, 6])
    with pytest.raises(ValueError, match="similarity"):
        metrics.reid_ranks(noisy, faces, [2, 4], similarity="cosine")


def test_grnn_bad_input():
    x, y = data.photos().batch(0)
    model = models.build_model("lenet5", (3, 32, 32), 100, seed=0)
    shared = fl.client_gradient(model, x, y)
    with pytest.raises(ValueError, match="num_classes=10 does not match"):
        grnn(model, shared, input_shape=x.shape, num_classes=10, iterations=1)
    with pytest.raises(ValueError, match="input_shape"):
        grnn(model, shared, input_shape=(1, 1, 25, 25), num_classes=100, iterations=1)
    with pytest.raises(fl.SharedGradientError, match="classifier.weight"):
        bad = dict(shared)
        bad["classifier.weight"] = bad["classifier.weight"][:5]
        grnn(model, bad, input_shape=x.shape, num_classes=100, iterations=1)
    with pytest.raises(IndexError, match="outside"):
        data.photos().batch(list(range(10, 15)))  # a batch larger than what is left of the set


def test_grnn_callback_and_stop():
    x, y = data.photos().batch(0)
    model = models.build_model("lenet5", (3, 32, 32), 100, seed=0)
    shared = fl.client_gradient(model, x, y)
    states = []
    result = grnn(model, shared, input_shape=x.shape, num_classes=100, iterations=50, truth=x, seed=0,
                  callback=lambda s: states.append(s) or s.iteration >= 20, options=AttackOptions(callback_every=10))
    assert result.iterations == 20 and "callback" in result.message
    assert [s.iteration for s in states] == [10, 20, 20] and states[-1].done
    assert all(s.estimate.shape == x.shape and s.psnr is not None for s in states)
