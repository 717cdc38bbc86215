"""The arena's vocabulary and recipe: its attacks and defenses, the unit of each defense's level, the settings.

Attacks come from the registry (:data:`gleak_edu.attacks.ATTACKS`): the arena
runs every image attack (:data:`gleak_edu.attacks.IMAGE_ATTACKS`) and takes
their display names, what they need and whether they read labels from there.
Defenses are the arena's own (:data:`DEFENSE_SPECS`): each one declares what
its level means (:attr:`DefenseSpec.knob`), so no number in a cell, a row or a
label is read in the wrong unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gleak_edu import metrics
from gleak_edu.attacks import ATTACKS as ATTACK_REGISTRY
from gleak_edu.attacks import IMAGE_ATTACKS
from gleak_edu.defenses import SCHEDULES, check_delta, check_noise_multiplier

__all__ = [
    "ATTACKS",
    "ATTACK_NAMES",
    "DEFENSES",
    "DEFENSE_LEVEL",
    "DEFENSE_NAMES",
    "DEFENSE_SPECS",
    "KNOB_UNITS",
    "NOISY",
    "ArenaSettings",
    "DefenseSpec",
    "cells_of",
    "defense_label",
    "impossible",
    "possible_attacks",
]

IMAGE = (1, 28, 28)  # the victim's input: one MNIST digit
CLASSES = 10

# ---------------------------------------------------------------------------- attacks (from the registry)

ATTACKS: tuple[str, ...] = tuple(IMAGE_ATTACKS)  # the arena's rows: every image attack of the registry
ATTACK_NAMES: dict[str, str] = {a: ATTACK_REGISTRY[a].name for a in ATTACKS}

# ---------------------------------------------------------------------------- defenses

# What a defense's level is, in the package's vocabulary, and how a label spells it out.
KNOB_UNITS = {
    "noise_std": "noise std (absolute)",
    "noise_multiplier": "noise multiplier σ (std = σ·C)",
    "prune_fraction": "pruned fraction",
}


@dataclass(frozen=True)
class DefenseSpec:
    """One defense of the arena (a column of its text table and of its heatmap figure).

    Attributes:
        key: the defense's key in :data:`DEFENSES`.
        name: display name.
        knob: what the cell's level is: ``"noise_std"`` (the absolute standard
            deviation of the Gaussian noise on each shared entry),
            ``"noise_multiplier"`` (σ, relative to the clipping bound C: the
            noise std is σ·C), ``"prune_fraction"`` (the share of each
            gradient tensor's entries zeroed), or None (no level: computed
            once, shown at every noise level). See :data:`KNOB_UNITS`.
        bottleneck: the victim has PRECODE's bottleneck.
        dp: DP-SGD: the cell reports an epsilon.
    """

    key: str
    name: str
    knob: str | None
    bottleneck: bool = False
    dp: bool = False

    @property
    def noisy(self) -> bool:
        """The level is on the arena's noise slider (a noise std or a noise multiplier)."""
        return self.knob in ("noise_std", "noise_multiplier")


DEFENSE_SPECS: dict[str, DefenseSpec] = {
    d.key: d
    for d in (
        DefenseSpec("none", "none", None),
        DefenseSpec("noise", "noise", "noise_std"),
        DefenseSpec("pruning", "pruning", "prune_fraction"),
        DefenseSpec("precode", "PRECODE", None, bottleneck=True),
        DefenseSpec("ppp", "PPP", "noise_multiplier", bottleneck=True),
        DefenseSpec("dp_fixed", "DP fixed", "noise_multiplier", dp=True),
        DefenseSpec("dp_dynamic", "DP dynamic", "noise_multiplier", dp=True),
    )
}
DEFENSES: tuple[str, ...] = tuple(DEFENSE_SPECS)
DEFENSE_NAMES: dict[str, str] = {d: s.name for d, s in DEFENSE_SPECS.items()}
DEFENSE_LEVEL: dict[str, str | None] = {d: s.knob for d, s in DEFENSE_SPECS.items()}  # the unit of each level
NOISY: tuple[str, ...] = tuple(d for d, s in DEFENSE_SPECS.items() if s.noisy)  # defenses on the noise slider

# Where the arena departs from an attack's default budget (the registry's), and why: ArenaSettings says.
_BUDGETS = {"dlg": "dlg_iterations", "idlg": "dlg_iterations", "ig": "ig_iterations", "bypass": "ig_iterations",
            "grnn": "grnn_iterations"}
_RESTARTS = {"dlg": "dlg_restarts", "idlg": "dlg_restarts"}


def _check_attack(attack: str) -> None:
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {ATTACKS}, got {attack!r}")


def _check_defense(defense: str) -> None:
    if defense not in DEFENSES:
        raise ValueError(f"defense must be one of {DEFENSES}, got {defense!r}")


def impossible(attack: str, defense: str) -> str | None:
    """Why ``attack`` cannot be run against ``defense``, or None when it can.

    Decided from what the registry says the attack needs
    (:class:`gleak_edu.attacks.AttackSpec`) and the arena's victim (an MLP
    whose first layer is linear with a bias, attacked on one image at a time):

    - An attack that needs PRECODE's bottleneck (the bypass) against a model
      without one: there is no bottleneck to bypass. Every gradient of such a
      model is deterministic, so the bypass would match all layers, which *is*
      Inverting Gradients (the Inverting Gradients row).
    - Analytic recovery works against every defense here: PRECODE's
      bottleneck sits before the output layer, after the first linear layer,
      whose gradient stays exact; clipping (DP, PPP) scales weight and bias
      gradients by the same factor, which cancels in their ratio. Noise
      degrades it and pruning barely does (the surviving rows suffice):
      measured, not excluded.
    - DLG, iDLG, Inverting Gradients and GRNN match whatever gradient is
      shared: possible everywhere (against PRECODE they run on the sampled
      gradients and mostly fail, which is PRECODE's point). iDLG's label rule
      assumes non-negative activations before the output layer; on tanh it
      can read a wrong label, which shows up in its numbers, not as n/a.

    Raises:
        ValueError: for an unknown attack or defense.
    """
    _check_attack(attack)
    _check_defense(defense)
    if ATTACK_REGISTRY[attack].needs_bottleneck and not DEFENSE_SPECS[defense].bottleneck:
        return (
            "no PRECODE bottleneck to bypass: every gradient of this model is deterministic, so the bypass "
            "would match all layers, which is Inverting Gradients (the Inverting Gradients row)"
        )
    return None


def possible_attacks(defense: str) -> tuple[str, ...]:
    """The attacks that run against ``defense`` (:func:`impossible` is None), in :data:`ATTACKS` order."""
    return tuple(a for a in ATTACKS if impossible(a, defense) is None)


@dataclass(frozen=True)
class ArenaSettings:
    """Settings of the arena; every one is this course's choice (no paper compared all of these on one victim).

    Attributes:
        noise_levels: the noise slider's stops (> 0). Each noisy defense
            reads a stop in the unit of its level (:data:`DEFENSE_LEVEL`):
            "noise" as its noise std (absolute, per shared entry, no
            clipping); "ppp" and "dp_fixed" as the noise multiplier σ (noise
            std σ·C, C = ``max_grad_norm``); "dp_dynamic" as where its
            multiplier schedule starts. Only with C = 1 (the default) does one
            stop put the same noise std on one image's shared gradient in
            "noise", "ppp" (on the entries it perturbs) and "dp_fixed",
            because then σ·C = σ: those columns then differ only in clipping
            and in where the noise goes. "dp_dynamic" is never at that std:
            its bound is each example's own and its attacked step is the
            schedule's end. 0.01 barely matters, 0.1 is where notebooks 01 and
            04 saw attacks fade, 1.0 is a typical DP-SGD noise multiplier.
        prune_fractions: shares of each gradient tensor's entries zeroed by
            "pruning" (in [0, 1)), its own knob. 0.9: DLG's paper saw its attack
            (on an untrained sigmoid LeNet) fail from about 20 % pruned, but a
            cosine attack keeps the direction of the largest entries, so the
            course shows a severe setting.
        seeds: training seeds (model init, batches, noise); each seed's
            model is attacked. Three: a cell's verdict should not rest on one
            trained model.
        images: test images attacked per model (the first ones of the test
            split, the same for every cell, each attacked alone; a cell's
            images share one vectorised run). 10 images x 3 seeds = 30
            attacked digits per cell: a 95 % Wilson interval of at most about
            ±17 points, where 3 digits left one from 1 % to 90 %.
        epochs, batch_size, lr: the short SGD schedule of the PPP sweep
            (no momentum; 2 epochs of 4,000 images, 126 steps).
        train_images: train on only the first this-many training images
            (None: all 4,000; smaller for quick tests).
        max_grad_norm: the clipping bound C (> 0) of "ppp" and "dp_fixed"
            (each example's gradient norm, Opacus's meaning). 1: their noise
            multiplier then equals their noise std (see ``noise_levels``).
            "dp_dynamic" clips with Wei & Liu's dynamic bound instead
            (``clipping="dynamic"``, each example's largest per-layer norm
            clamped to the default ``dynamic_clip_range`` (0.1, 32)).
        hidden, activation: the victim MLP (784-128-128-10, tanh: bounded
            activations keep noisy training stable, Papernot et al. 2021).
        bottleneck, beta: PRECODE's K and KL weight (the paper's 256, 1e-3).
        dynamic_end: "dp_dynamic" ends its noise-multiplier schedule at this
            share of its start (Wei & Liu's 15 -> 4.85 is 0.32).
        dynamic_schedule: its shape, one of
            :data:`gleak_edu.defenses.SCHEDULES` except "fixed" (exponential:
            the paper's exp form).
        dynamic_updates: the noise multiplier changes this many times over
            training (as an epoch-stepped scheduler would; keeps the
            accountant fast).
        dlg_iterations: L-BFGS iterations of DLG and iDLG, with their default
            retries (100, a third of the paper's and the registry's 300 steps:
            on this model the runs that converge do so within about 70
            iterations (measured on the first six test digits), and the
            failing ones would spend the rest).
        dlg_restarts: independent restarts of DLG and iDLG
            (``AttackOptions(restarts=...)``: batched, with successive
            halving; the lowest matching loss wins). On the trained tanh MLP
            a single DLG start rebuilt 0 of the first six test digits and 4
            restarts 3 of 6, for 1.7x the time; Inverting Gradients and the
            bypass (uniform starts, Adam) succeeded from every single start
            there, so they run once.
        ig_iterations: Adam steps of Inverting Gradients and the bypass (300
            from one start, where the paper runs 4,800 to 24,000 on ImageNet-
            and CIFAR-size networks and the registry's default is 1,000:
            enough on this MLP, see notebook 04).
        grnn_iterations: generator updates of GRNN, with the paper's
            optimiser settings (300 instead of the paper's 1,000 and the
            registry's 1,500: about 3.3 s per image, where the paper's budget
            would more than double the arena's time). Where GRNN rebuilds no
            image without a defense its row is "no evidence" (``no_evidence``
            in the rows), not a defense's success. Analytic recovery has no
            budget.
        success_ssim: an attack succeeds on an image when SSIM >= this (0.6).
        delta: delta of the reported epsilon.
        test_fraction: share of the 5,000 MNIST images held out for testing.

    Raises:
        ValueError: for an empty or non-positive noise axis, a pruning fraction
            outside [0, 1), no seeds, non-positive counts, an unknown
            schedule, a non-positive max_grad_norm or lr, or a threshold
            outside (0, 1].
    """

    noise_levels: tuple[float, ...] = (0.01, 0.1, 1.0)
    prune_fractions: tuple[float, ...] = (0.9,)
    seeds: tuple[int, ...] = (0, 1, 2)
    images: int = 10
    epochs: int = 2
    batch_size: int = 64
    lr: float = 0.2
    train_images: int | None = None
    max_grad_norm: float = 1.0
    hidden: tuple[int, ...] = (128, 128)
    activation: str = "tanh"
    bottleneck: int = 256
    beta: float = 1e-3
    dynamic_end: float = 0.32
    dynamic_schedule: str = "exponential"
    dynamic_updates: int = 10
    dlg_iterations: int = 100
    dlg_restarts: int = 4
    ig_iterations: int = 300
    grnn_iterations: int = 300
    success_ssim: float = metrics.SUCCESS_SSIM
    delta: float = 1e-5
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        def floats(name: str) -> tuple[float, ...]:
            try:
                return tuple(float(v) for v in getattr(self, name))
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a sequence of numbers, got {getattr(self, name)!r}") from None

        levels = floats("noise_levels")
        if not levels or any(not math.isfinite(v) or v <= 0 for v in levels):
            raise ValueError(
                f"noise_levels must be finite numbers > 0 (the 'none' defense is the noise-free column), got {self.noise_levels}"
            )
        if len(set(levels)) != len(levels):
            raise ValueError(f"noise_levels must not repeat a value, got {self.noise_levels}")
        prunes = floats("prune_fractions")
        if not prunes or any(not 0 <= v < 1 for v in prunes) or len(set(prunes)) != len(prunes):
            raise ValueError(f"prune_fractions must be distinct fractions in [0, 1), got {self.prune_fractions}")
        object.__setattr__(self, "noise_levels", levels)
        object.__setattr__(self, "prune_fractions", prunes)
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must name at least one training seed, each once, got {self.seeds}")
        for name in ("images", "epochs", "batch_size", "bottleneck", "dlg_iterations", "dlg_restarts", "ig_iterations",
                     "grnn_iterations"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.train_images is not None and self.train_images < 1:
            raise ValueError(f"train_images must be at least 1 (or None for all), got {self.train_images}")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ValueError(f"max_grad_norm (the clipping bound C) must be a finite number > 0, got {self.max_grad_norm}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if not 0 < self.dynamic_end <= 1:
            raise ValueError(f"dynamic_end (the schedule's end as a share of its start) must lie in (0, 1], got {self.dynamic_end}")
        if self.dynamic_schedule not in SCHEDULES or self.dynamic_schedule == "fixed":
            raise ValueError(f"dynamic_schedule must be one of {SCHEDULES[1:]}, got {self.dynamic_schedule!r}")
        if self.dynamic_updates < 2:
            raise ValueError(f"dynamic_updates must be at least 2, got {self.dynamic_updates}")
        if not 0 < self.success_ssim <= 1:
            raise ValueError(f"success_ssim must lie in (0, 1], got {self.success_ssim}")
        check_delta(self.delta)
        for level in self.noise_levels:  # the multiplier columns' range (the accountant's), for every stop
            check_noise_multiplier(level, "noise level")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {self.test_fraction}")
        if self.activation not in ("sigmoid", "relu", "tanh"):
            raise ValueError(f"activation must be sigmoid, relu or tanh, got {self.activation!r}")

    def iterations(self, attack: str) -> int | None:
        """The budget the arena gives ``attack`` (its iterations), or None: the registry's default (or no budget)."""
        _check_attack(attack)
        name = _BUDGETS.get(attack)
        return None if name is None else int(getattr(self, name))

    def restarts(self, attack: str) -> int:
        """How many independent starts ``attack`` gets (1 unless the arena says otherwise: DLG and iDLG)."""
        _check_attack(attack)
        name = _RESTARTS.get(attack)
        return 1 if name is None else int(getattr(self, name))


def defense_label(defense: str, level: float, settings: ArenaSettings | None = None) -> str:
    """A short label for a defense at its level, with the level's unit.

    Examples: ``"noise std=0.1"`` (absolute std), ``"PPP σ=0.1 (×C)"`` and
    ``"DP fixed σ=0.1 (×C)"`` (noise multiplier: std σ·C),
    ``"DP dynamic σ 1→0.32 (×dyn. C)"`` (the multiplier schedule, times each
    example's dynamic bound), ``"pruning 90%"``, ``"PRECODE"``.

    Raises:
        ValueError: for an unknown defense.
    """
    _check_defense(defense)
    settings = settings or ArenaSettings()
    knob = DEFENSE_LEVEL[defense]
    name = DEFENSE_NAMES[defense]
    if knob == "prune_fraction":
        return f"{name} {level:.0%}"
    if knob == "noise_std":
        return f"{name} std={level:g}"
    if defense == "dp_dynamic":
        return f"{name} σ {level:g}→{level * settings.dynamic_end:.2g} (×dyn. C)"
    if knob == "noise_multiplier":
        return f"{name} σ={level:g} (×C)"
    return name


def cells_of(settings: ArenaSettings) -> list[tuple[str, float, int]]:
    """The grid's cells ``(defense, level, seed)``.

    ``level`` is in the unit of the defense's level (:data:`DEFENSE_LEVEL`):
    a stop of ``settings.noise_levels`` for the noisy defenses (a noise std
    for "noise", a noise multiplier for "ppp", "dp_fixed" and, at its start,
    "dp_dynamic"), the pruned fraction for "pruning", and 0.0 for "none" and
    "precode" (computed once, shown at every noise level).
    """
    out = []
    for defense in DEFENSES:
        knob = DEFENSE_LEVEL[defense]
        levels = settings.noise_levels if defense in NOISY else settings.prune_fractions if knob == "prune_fraction" else (0.0,)
        out += [(defense, float(level), seed) for level in levels for seed in settings.seeds]
    return out
