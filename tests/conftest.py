"""Shared fixtures for the gleak_edu test suite.

Everything is seeded; the expensive objects (the photo set, the two full
reference attacks) are built once per session and shared read-only.
"""

from __future__ import annotations

import os
import sys

# Headless figures everywhere, including the CLI subprocesses (they inherit it).
os.environ["MPLBACKEND"] = "Agg"

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from gleak_edu import attacks, data, fl, models  # noqa: E402

NUM_CLASSES = 100  # the DLG paper's CIFAR-100 head

# The course's models are tiny: one intra-op thread is fastest on a 2-core CPU
# (the attacks use one anyway, see fast_attack_mode), and it keeps the suite
# fast when another process competes for the cores (OpenMP's 2-thread calls
# then slow down a hundredfold).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def photo_set() -> data.ImageSet:
    """``gleak_edu.data.photos()``: 13 RGB photos [13, 3, 32, 32], label i for photo i."""
    return data.photos()


@pytest.fixture(scope="session")
def photo0(photo_set):
    """Photo 0 and its label, ``[1, 3, 32, 32]`` and ``[1]``."""
    return photo_set.batch(0)


def lenet(seed: int = 1, activation: str = "sigmoid", input_shape=(3, 32, 32), num_classes: int = NUM_CLASSES):
    """The course's DLG victim with DLG's uniform init drawn from ``seed``."""
    return models.build_model("lenet-zhu", input_shape, num_classes, activation, seed=seed)


@pytest.fixture(scope="session")
def make_lenet():
    """Factory ``make_lenet(seed=1, activation="sigmoid", input_shape=(3, 32, 32), num_classes=100)``."""
    return lenet


@pytest.fixture
def model_and_shared(photo0):
    """A fresh LeNet-Zhu (seed 1), photo 0, its label and its shared gradient (per test: mutable)."""
    x, y = photo0
    model = lenet(seed=1)
    return model, x, y, fl.client_gradient(model, x, y)


@pytest.fixture(scope="session")
def dlg_photo0(photo_set):
    """Full DLG run on photo 0 against the seed-1 LeNet-Zhu (the issue's reference case)."""
    x, y = photo_set.batch(0)
    model = lenet(seed=1)
    shared = fl.client_gradient(model, x, y)
    result = attacks.dlg(
        model, shared, input_shape=tuple(x.shape), num_classes=NUM_CLASSES, truth=(x, y), seed=1
    )
    return x, y, result


@pytest.fixture(scope="session")
def idlg_photo1(photo_set):
    """Full iDLG run on photo 1 against the seed-1 LeNet-Zhu."""
    x, y = photo_set.batch(1)
    model = lenet(seed=1)
    shared = fl.client_gradient(model, x, y)
    result = attacks.idlg(
        model, shared, input_shape=tuple(x.shape), num_classes=NUM_CLASSES, truth=(x, y), seed=1
    )
    return x, y, result


@pytest.fixture(autouse=True)
def _close_figures():
    """No figure survives a test (the CLI's --png and viz tests create some)."""
    yield
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None and plt.get_fignums():  # close("all") always runs gc.collect, 0.2 s here: only when needed
        plt.close("all")

