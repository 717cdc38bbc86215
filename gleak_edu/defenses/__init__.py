"""Defenses: they take a shared gradient and return a changed one, or train so that it leaks less.

Two units of noise, two names, everywhere: ``noise_std`` is an absolute
standard deviation added to each shared entry (:func:`gaussian_noise`, DLG's
defense); ``noise_multiplier`` sigma is relative to the clipping bound C,
``max_grad_norm`` (noise std = sigma * C; Opacus's meaning: :func:`clip_and_noise`,
:func:`perturbed_gradient`, :func:`train_perturbed`, :func:`train_dp`, the accountant).

- :func:`gaussian_noise` and :func:`prune_gradients`: the two classic baselines
  evaluated in DLG (Zhu et al., 2019).
- :class:`VariationalBottleneck`: PRECODE's module (Scheliga et al., WACV 2022).
- PPP (PRECODE with partial perturbation) and full perturbation, on one shared
  gradient (:func:`perturbed_gradient`) and in training (:func:`train_perturbed`),
  with Opacus (Scheliga et al., arXiv 2208.04767).
- DP-SGD with fixed or scheduled noise and fixed or dynamic clipping
  (:func:`train_dp` with an :class:`AttackPlan`, :func:`noise_schedule`; Wei & Liu).
- Every epsilon comes from :mod:`gleak_edu.defenses.accounting` (Opacus's
  accountants): :func:`epsilon` of a noise history, :func:`epsilon_for_steps`,
  :func:`schedule_epsilon`, :func:`gaussian_epsilon`, and the inverse
  :func:`get_noise_multiplier`.
"""

from gleak_edu.defenses.accounting import (
    NOISE_MULTIPLIER_RANGE,
    DeltaWarning,
    check_delta,
    check_history,
    check_noise_multiplier,
    epsilon,
    epsilon_for_steps,
    gaussian_epsilon,
    get_noise_multiplier,
    history_from_noise_multipliers,
    schedule_epsilon,
)
from gleak_edu.defenses.dpsgd import CHECKPOINT_ATTACKS, AttackPlan, DPRun, dp_shared_gradient, train_dp
from gleak_edu.defenses.perturbation import clip_and_noise, gaussian_noise, prune_gradients
from gleak_edu.defenses.ppp import (
    CLIPPINGS,
    DYNAMIC_CLIP_RANGE,
    SCOPES,
    GradientTransform,
    PerturbedTrainResult,
    check_clipping,
    full_perturbation_gradient,
    perturbation_scope,
    perturbed_gradient,
    ppp_gradient,
    steps_per_epoch,
    train_perturbed,
)
from gleak_edu.defenses.schedules import SCHEDULES, noise_schedule
from gleak_edu.precode import (
    VariationalBottleneck,
    add_precode,
    deterministic_parameters,
    gradient_stochasticity,
    precode_loss,
)

__all__ = [
    "CHECKPOINT_ATTACKS",
    "CLIPPINGS",
    "DYNAMIC_CLIP_RANGE",
    "NOISE_MULTIPLIER_RANGE",
    "SCHEDULES",
    "SCOPES",
    "AttackPlan",
    "DPRun",
    "DeltaWarning",
    "GradientTransform",
    "PerturbedTrainResult",
    "VariationalBottleneck",
    "add_precode",
    "check_clipping",
    "check_delta",
    "check_history",
    "check_noise_multiplier",
    "clip_and_noise",
    "deterministic_parameters",
    "dp_shared_gradient",
    "epsilon",
    "epsilon_for_steps",
    "full_perturbation_gradient",
    "gaussian_epsilon",
    "gaussian_noise",
    "get_noise_multiplier",
    "gradient_stochasticity",
    "history_from_noise_multipliers",
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
