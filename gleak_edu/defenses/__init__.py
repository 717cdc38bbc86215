"""Defenses: they take a shared gradient and return a changed one.

- :func:`gaussian_noise` and :func:`prune_gradients`: the two classic baselines
  evaluated in DLG (Zhu et al., 2019).
- :class:`VariationalBottleneck`: PRECODE's module (Scheliga et al., WACV 2022).
- PPP (PRECODE with partial perturbation) and full perturbation, on one shared
  gradient (:func:`perturbed_gradient`) and in training (:func:`train_perturbed`),
  with Opacus (Scheliga et al., arXiv 2208.04767).
- DP-SGD with fixed or scheduled noise and fixed or dynamic clipping
  (:func:`train_dp`, :func:`noise_schedule`; Wei & Liu), accounted by Opacus
  (:func:`epsilon` over a noise history).
"""

from gleak_edu.defenses.accounting import (
    DeltaWarning,
    check_delta,
    check_history,
    check_noise_multiplier,
    epsilon,
    gaussian_epsilon,
    history_from_sigmas,
)
from gleak_edu.defenses.dpsgd import (
    SCHEDULES,
    DPRun,
    dp_shared_gradient,
    match_fixed_sigma,
    noise_schedule,
    schedule_epsilon,
    train_dp,
)
from gleak_edu.defenses.perturbation import clip_and_noise, gaussian_noise, prune_gradients
from gleak_edu.precode import (
    VariationalBottleneck,
    add_precode,
    deterministic_parameters,
    gradient_stochasticity,
    precode_loss,
)
from gleak_edu.defenses.ppp import (
    PerturbedTrainResult,
    epsilon_spent,
    steps_per_epoch,
    full_perturbation_gradient,
    perturbation_scope,
    perturbed_gradient,
    ppp_gradient,
    train_perturbed,
)

__all__ = [
    "SCHEDULES",
    "DeltaWarning",
    "check_delta",
    "check_history",
    "check_noise_multiplier",
    "DPRun",
    "PerturbedTrainResult",
    "VariationalBottleneck",
    "add_precode",
    "clip_and_noise",
    "deterministic_parameters",
    "dp_shared_gradient",
    "epsilon",
    "epsilon_spent",
    "full_perturbation_gradient",
    "gaussian_epsilon",
    "gaussian_noise",
    "gradient_stochasticity",
    "history_from_sigmas",
    "match_fixed_sigma",
    "noise_schedule",
    "perturbation_scope",
    "perturbed_gradient",
    "ppp_gradient",
    "precode_loss",
    "prune_gradients",
    "schedule_epsilon",
    "steps_per_epoch",
    "train_dp",
    "train_perturbed",
]
