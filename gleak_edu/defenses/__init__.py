"""Defenses: they take a shared gradient and return a changed one.

- :func:`gaussian_noise` and :func:`prune_gradients`: the two classic baselines
  evaluated in DLG (Zhu et al., 2019).
"""

from gleak_edu.defenses.perturbation import gaussian_noise, prune_gradients

__all__ = ["gaussian_noise", "prune_gradients"]
