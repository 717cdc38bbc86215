"""gleak_edu: learn gradient leakage in federated learning, hands on.

Modules: :mod:`~gleak_edu.data` (offline real images), :mod:`~gleak_edu.models`
(victims), :mod:`~gleak_edu.fl` (what a client shares), :mod:`~gleak_edu.attacks`
(DLG, iDLG, GRNN, Inverting Gradients, the PRECODE bypass, analytic recovery),
:mod:`~gleak_edu.defenses` (noise, pruning, PRECODE, PPP), :mod:`~gleak_edu.metrics`
(MSE, PSNR, SSIM, label accuracy), :mod:`~gleak_edu.training` (short seeded runs),
:mod:`~gleak_edu.sweeps` (the cached PPP trade-off), :mod:`~gleak_edu.arena` (every attack
against every defense, cached), :mod:`~gleak_edu.viz` (figures) and
:mod:`~gleak_edu.widgets` (live views, sliders); :mod:`~gleak_edu.flower` (federations on Flower,
a curious server; the ``fl`` extra).
"""

__version__ = "0.1.0"

import importlib

__all__ = ["attacks", "data", "defenses", "fl", "metrics", "models", "__version__"]


def __getattr__(name: str):
    """Import the submodules on first use (``gleak_edu.attacks``...): the ``gleak`` command
    then answers bad input in a fraction of a second, before torch is loaded."""
    if name in __all__[:-1]:
        return importlib.import_module(f"gleak_edu.{name}")
    raise AttributeError(f"module 'gleak_edu' has no attribute {name!r}")
