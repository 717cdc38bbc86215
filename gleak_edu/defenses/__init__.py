"""Defenses: they take a shared gradient and return a changed one.

- :func:`gaussian_noise` and :func:`prune_gradients`: the two classic baselines
  evaluated in DLG (Zhu et al., 2019).
- :class:`VariationalBottleneck`: PRECODE's module (Scheliga et al., WACV 2022).
- PPP (PRECODE with partial perturbation) and full perturbation, on one shared
  gradient (:func:`perturbed_gradient`) and in training (:func:`train_perturbed`),
  with Opacus (Scheliga et al., arXiv 2208.04767).
"""

from gleak_edu.defenses.perturbation import gaussian_noise, prune_gradients
from gleak_edu.defenses.precode import (
    VariationalBottleneck,
    add_precode,
    deterministic_parameters,
    gradient_stochasticity,
    precode_loss,
)
from gleak_edu.defenses.ppp import (
    PerturbedTrainResult,
    epsilon_spent,
    full_perturbation_gradient,
    perturbation_scope,
    perturbed_gradient,
    ppp_gradient,
    train_perturbed,
)

__all__ = [
    "PerturbedTrainResult",
    "VariationalBottleneck",
    "add_precode",
    "deterministic_parameters",
    "epsilon_spent",
    "full_perturbation_gradient",
    "gaussian_noise",
    "gradient_stochasticity",
    "perturbation_scope",
    "perturbed_gradient",
    "ppp_gradient",
    "precode_loss",
    "prune_gradients",
    "train_perturbed",
]
