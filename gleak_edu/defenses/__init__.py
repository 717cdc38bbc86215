"""Defenses: they take a shared gradient and return a changed one.

- :func:`gaussian_noise` and :func:`prune_gradients`: the two classic baselines
  evaluated in DLG (Zhu et al., 2019).
- :class:`VariationalBottleneck`: PRECODE's module (Scheliga et al., WACV 2022).
"""

from gleak_edu.defenses.perturbation import gaussian_noise, prune_gradients
from gleak_edu.defenses.precode import (
    VariationalBottleneck,
    add_precode,
    deterministic_parameters,
    gradient_stochasticity,
    precode_loss,
)

__all__ = [
    "VariationalBottleneck",
    "add_precode",
    "deterministic_parameters",
    "gaussian_noise",
    "gradient_stochasticity",
    "precode_loss",
    "prune_gradients",
]
