"""The workshop playground (widgets.Playground, served by `make app`), run headless."""

from __future__ import annotations

import io

import numpy as np
import pytest

from gleak_edu import widgets


@pytest.fixture(scope="module")
def playground():
    return widgets.Playground()


def test_default_run_rebuilds_the_photo(playground):
    result = playground.run()
    assert result.metrics["psnr_mean"] > 25 and "PSNR" in playground.status.value
    assert playground.view_box.children and playground.runs >= 1


def test_sliders_and_attacks(playground):
    """The noise slider says its unit (an absolute std); the attacks are the registry's, named as it names them."""
    from gleak_edu.attacks import ATTACKS

    assert playground.noise.description == "noise std (absolute)"
    assert list(playground.attack.options) == [(ATTACKS[k].name, k) for k in ("idlg", "dlg", "ig")]


def test_defense_and_attack_choices_change_the_run(playground):
    playground.attack.value = "ig"
    playground.defense.value = "noise"
    playground.noise.value = 1e-1
    playground.iterations.value = 60
    noisy = playground.run()
    assert noisy.attack == "IG" and noisy.metrics["ssim_mean"] < 0.3
    playground.attack.value, playground.defense.value, playground.iterations.value = "idlg", "none", 100


def test_uploads(playground):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype("uint8")).save(buf, format="PNG")
    playground.load_bytes(buf.getvalue(), "mine.png")
    assert tuple(playground.x.shape) == (1, 3, 32, 32) and "mine.png" in playground.status.value
    before = playground.x
    playground.load_bytes(b"not an image", "notes.txt")
    assert "not a readable image file" in playground.status.value and playground.x is before
    playground.image.value = 3
    assert float((playground.x - playground.photos.images[3:4]).abs().max()) == 0
