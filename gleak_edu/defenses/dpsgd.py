"""DP-SGD with fixed and dynamic privacy parameters (Wei & Liu, "Gradient Leakage Attack Resilient Deep Learning").

DP-SGD (Abadi et al., 2016): clip each example's gradient to the clipping
bound C (``max_grad_norm``), add Gaussian noise of std sigma * C (sigma: the
noise multiplier, ``noise_multiplier``) to their sum, average, step; an
accountant turns the noise history into (epsilon, delta). Wei & Liu argue that
a *fixed* sigma and C cost accuracy and still leak, and propose *dynamic*
parameters: sigma decaying over training along a schedule, and clipping bounds
that follow the gradient norms.

- :func:`gleak_edu.defenses.noise_schedule`: fixed, linear, staircase,
  exponential, cyclic; pass its list as ``noise_multiplier``.
- Dynamic clipping: ``clipping="dynamic"`` in :func:`train_dp` (and in
  :func:`gleak_edu.defenses.perturbed_gradient`): each example's bound is its
  largest per-tensor gradient norm, clamped to ``dynamic_clip_range`` (0.1, 32);
  the noise uses the batch mean of the bounds. The bound then depends on the
  data, so the epsilon reported for it is the accountant's value for sigma,
  not a formal guarantee (the paper's rule; say so when you report it).
- :func:`train_dp`: training on Opacus through
  :func:`gleak_edu.defenses.train_perturbed` (per-example gradients,
  clipping, noise; the noise multiplier is set at every step, and the
  accountant composes the recorded history), attacking, after the steps an
  :class:`AttackPlan` names, the gradient one client would share then: one
  example's clipped and noised gradient. The attacks come from the registry
  :data:`gleak_edu.attacks.ATTACKS`.

The paper's four metrics were not defined precisely enough to reproduce;
:class:`DPRun` reports this course's versions: test accuracy, epsilon at a
stated delta, attack success rate (share of attacked images with SSIM >=
0.6, best of the attacks) and reconstruction quality (PSNR/SSIM).
"""

from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from gleak_edu import metrics
from gleak_edu.attacks import ATTACKS, AttackOptions, AttackResult, attack_spec
from gleak_edu.defenses.accounting import ACCOUNTANTS, MAX_STEPS, check_delta, check_history, epsilon, history_from_noise_multipliers
from gleak_edu.defenses.ppp import (
    DYNAMIC_CLIP_RANGE,
    _check_max_grad_norm,
    _schedule,
    check_clipping,
    perturbed_gradient,
    steps_per_epoch,
    train_perturbed,
)
from gleak_edu.fl import client_gradient
from gleak_edu.models import output_layer
from gleak_edu.training import TrainCallback, TrainState

__all__ = ["CHECKPOINT_ATTACKS", "AttackPlan", "DPRun", "dp_shared_gradient", "train_dp"]

#: The registry keys train_dp can attack its checkpoints with (one image, labels recovered or inferred).
CHECKPOINT_ATTACKS = ("idlg", "ig")


def dp_shared_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, noise_multiplier: float,
                       max_grad_norm: float = 1.0, clipping: str = "flat",
                       dynamic_clip_range: tuple[float, float] = DYNAMIC_CLIP_RANGE, seed: int = 0):
    """What a DP-SGD client shares for one example: its clipped gradient plus N(0, (sigma C)^2) noise.

    ``x`` is one image float32 ``[1, C, H, W]`` in [0, 1], ``y`` its label
    int64 ``[1]``; sigma = ``noise_multiplier`` (>= 0) and C = ``max_grad_norm``
    (> 0), so the noise std per entry is noise_multiplier * max_grad_norm. See
    :func:`gleak_edu.defenses.perturbed_gradient` (scope "full") for
    ``clipping`` and ``dynamic_clip_range``.

    Returns:
        OrderedDict name -> float32 tensor, like a shared gradient.

    Raises:
        ValueError: for a batch of more than one image, and as perturbed_gradient.
    """
    if x.shape[0] != 1:
        raise ValueError(f"a per-example shared gradient is of one image; got a batch of {x.shape[0]}")
    return perturbed_gradient(model, x, y, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
                              scope="full", clipping=clipping, dynamic_clip_range=dynamic_clip_range, seed=seed)


@dataclass(frozen=True, eq=False)
class AttackPlan:
    """When and how :func:`train_dp` attacks the gradient a client shares during training.

    After each step in ``steps`` (0-based), the shared gradient of every image
    in ``images`` (one image at a time, computed on the model as that step left
    it, with that step's noise multiplier and clipping rule) is attacked with
    every attack in ``attacks``.

    Attributes:
        steps: the steps after which to attack (whole numbers >= 0; kept sorted, without repeats).
        images: ``(images float32 [M, C, H, W] in [0, 1], labels int64 [M])``; needed when ``steps`` is not empty.
        attacks: keys of :data:`gleak_edu.attacks.ATTACKS` among :data:`CHECKPOINT_ATTACKS`:
            ``"idlg"`` (iDLG, L-BFGS on the gradient distance; DLG when the
            output gradient is all zero) and ``"ig"`` (Inverting Gradients,
            cosine; scale-invariant, so clipping alone does not stop it).
        iterations: L-BFGS iterations (iDLG) and Adam steps (IG), >= 1.
        success_ssim: an image counts as leaked at a checkpoint when the best attack
            reaches this SSIM, in (0, 1].

    Raises:
        ValueError: for steps that are not whole numbers >= 0, steps without images,
            images and labels of different lengths, an unknown or unsupported attack,
            no attack, iterations < 1, or success_ssim outside (0, 1].
    """

    steps: Sequence[int] = ()
    images: tuple[torch.Tensor, torch.Tensor] | None = None
    attacks: Sequence[str] = CHECKPOINT_ATTACKS
    iterations: int = 300
    success_ssim: float = metrics.SUCCESS_SSIM

    def __post_init__(self) -> None:
        steps = list(self.steps)
        if any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0 for s in steps):
            raise ValueError(f"attack plan steps must be whole numbers >= 0, got {steps}")
        object.__setattr__(self, "steps", tuple(sorted({int(s) for s in steps})))
        if isinstance(self.attacks, str):
            raise ValueError(f"attacks must be a sequence of attack keys, e.g. ('ig',), got {self.attacks!r}")
        attacks = tuple(self.attacks)
        for a in attacks:
            attack_spec(a)  # an unknown key: ValueError naming the registry's keys
        unsupported = [a for a in attacks if a not in CHECKPOINT_ATTACKS]
        if unsupported or not attacks:
            raise ValueError(f"attacks must be among {', '.join(map(repr, CHECKPOINT_ATTACKS))} (at least one), got {list(attacks)}")
        object.__setattr__(self, "attacks", attacks)
        if self.steps and self.images is None:
            raise ValueError("give the attack plan images (images, labels) to attack at its steps")
        if self.images is not None:
            xs, ys = self.images
            if len(xs) != len(ys) or len(xs) < 1:
                raise ValueError(f"attack plan images and labels must have the same length >= 1, got {len(xs)} and {len(ys)}")
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, numbers.Integral) or self.iterations < 1:
            raise ValueError(f"iterations must be a whole number >= 1, got {self.iterations!r}")
        if not 0 < float(self.success_ssim) <= 1:
            raise ValueError(f"success_ssim must lie in (0, 1], got {self.success_ssim}")


@dataclass(kw_only=True)
class DPRun:
    """One DP-SGD training run with its attacks, and the four metrics.

    Attributes:
        method: ``"none"`` (no DP), ``"fixed"`` (one noise multiplier) or ``"schedule"`` (one per step).
        clipping: ``"flat"``, ``"per_layer"`` or ``"dynamic"``.
        max_grad_norm: the fixed clipping bound C (nan for "none" and for dynamic clipping,
            whose per-step bounds are in ``max_grad_norm_history``).
        noise_multiplier_start, noise_multiplier_end: the first and last step's noise multiplier
            sigma (noise std sigma * C; 0 for "none").
        test_accuracy: in [0, 1]. epsilon: at ``delta`` (inf for "none"), by ``accountant``.
        noise_multiplier_history, max_grad_norm_history: per step (the bound applied; nan without DP).
        train_loss (per epoch), step_loss (per step), steps, sample_rate, seconds, diverged: of the training.
        checkpoints: one dict per attacked step: ``step``, ``noise_multiplier``,
            ``max_grad_norm`` (the bound applied at that step, nan without DP),
            and per attack key ("idlg", "ig") lists over the attacked images:
            ``ssim``, ``psnr`` (dB), ``label_correct`` (None when the attack
            recovers no label), and ``reconstructions`` ``[images][C][H][W]``.
        success_ssim: an image counts as leaked at a checkpoint when the best
            attack reaches this SSIM.
    """

    method: str
    clipping: str
    max_grad_norm: float
    noise_multiplier_start: float
    noise_multiplier_end: float
    test_accuracy: float
    epsilon: float
    delta: float
    accountant: str
    noise_multiplier_history: list[float] = field(default_factory=list)
    max_grad_norm_history: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    step_loss: list[float] = field(default_factory=list)
    steps: int = 0
    sample_rate: float = 0.0
    seconds: float = 0.0
    diverged: bool = False
    checkpoints: list[dict] = field(default_factory=list)
    success_ssim: float = metrics.SUCCESS_SSIM

    def best_ssim(self) -> list[list[float]]:
        """Per checkpoint, per image: the best SSIM over the attacks."""
        out = []
        for cp in self.checkpoints:
            attacks = [cp[a]["ssim"] for a in CHECKPOINT_ATTACKS if a in cp]
            out.append([max(vals) for vals in zip(*attacks)])
        return out

    @property
    def attack_success(self) -> metrics.Rate:
        """The (checkpoint, image) pairs where the best attack reaches ``success_ssim``, as a
        :class:`gleak_edu.metrics.Rate` with its 95 % Wilson interval (n = 0 without checkpoints)."""
        flat = [v for row in self.best_ssim() for v in row]
        return metrics.success_rate([v >= self.success_ssim for v in flat])

    @property
    def attack_success_rate(self) -> float:
        """Share of (checkpoint, image) pairs where the best attack reaches ``success_ssim`` (nan without checkpoints)."""
        rate = self.attack_success
        return rate.rate if rate.n else math.nan

    def mean_quality(self, key: str = "ssim") -> float:
        """Mean over checkpoints and images of the best attack's ``key`` (ssim or psnr); nan without checkpoints."""
        vals = []
        for cp in self.checkpoints:
            attacks = [a for a in CHECKPOINT_ATTACKS if a in cp]
            for i in range(len(cp[attacks[0]]["ssim"])):
                best = max(attacks, key=lambda a: cp[a]["ssim"][i])
                vals.append(cp[best][key][i])
        return sum(vals) / len(vals) if vals else math.nan

    def summary(self) -> dict:
        """The four metrics: test_accuracy, epsilon, attack_success_rate (with ``attack_successes`` of
        ``attack_n`` pairs and its 95 % Wilson interval ``attack_success_low``/``attack_success_high``, None
        without checkpoints), ssim and psnr of the best attack."""
        rate = self.attack_success
        return {
            "method": self.method, "clipping": self.clipping, "max_grad_norm": self.max_grad_norm,
            "test_accuracy": self.test_accuracy, "epsilon": self.epsilon, "delta": self.delta,
            "attack_success_rate": self.attack_success_rate, "attack_successes": rate.successes, "attack_n": rate.n,
            "attack_success_low": rate.low if rate.n else None, "attack_success_high": rate.high if rate.n else None,
            "ssim": self.mean_quality("ssim"), "psnr": self.mean_quality("psnr"),
        }


def _run_attack(key: str, net: nn.Module, shared, x: torch.Tensor, y: torch.Tensor, *, num_classes: int,
                iterations: int, seed: int) -> AttackResult:
    """One registry attack on one image's shared gradient (the truth given only for its metrics)."""
    common = dict(input_shape=tuple(x.shape), num_classes=num_classes, iterations=iterations, seed=seed, truth=(x, y))
    if key == "idlg":
        try:
            return ATTACKS["idlg"].run(net, shared, options=AttackOptions(retries=0), **common)
        except ValueError:  # an all-zero output gradient: no label to read; DLG guesses it
            return ATTACKS["dlg"].run(net, shared, options=AttackOptions(retries=0), **common)
    return ATTACKS[key].run(net, shared, **common)


def train_dp(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    noise_multiplier: float | Sequence[float] | None = 1.0,
    max_grad_norm: float = 1.0,
    clipping: str = "flat",
    dynamic_clip_range: tuple[float, float] = DYNAMIC_CLIP_RANGE,
    epochs: int = 2,
    batch_size: int = 64,
    lr: float = 0.2,
    delta: float = 1e-5,
    accountant: str = "rdp",
    attack_plan: AttackPlan | None = None,
    seed: int = 0,
    callback: TrainCallback | None = None,
) -> DPRun:
    """DP-SGD training with a fixed or scheduled noise multiplier and a fixed or dynamic clipping bound, attacked along the way.

    Training is :func:`gleak_edu.defenses.train_perturbed` with scope "full"
    (Abadi et al., 2016; Wei & Liu's dynamic parameters through the schedule
    and ``clipping="dynamic"``); the attacks of ``attack_plan`` run after
    their steps on a copy of the model, with the random state restored, so
    training is the same with or without them.

    Args:
        model: trained in place (every parameter is perturbed; no BatchNorm).
        train, test: (images float32 ``[N, C, H, W]`` in [0, 1], labels int64 ``[N]``).
        noise_multiplier: sigma, relative to C (noise std = noise_multiplier * max_grad_norm):
            a number >= 0 (fixed), one per step (a schedule from
            :func:`gleak_edu.defenses.noise_schedule`, of length
            ``epochs * steps_per_epoch(N, batch_size)``), or None: no DP at all
            (plain SGD on the same batches, epsilon inf). Values in [1e-6, 1e6] or 0.
        max_grad_norm: the clipping bound C on each example's gradient (> 0; not used by "dynamic").
        clipping: ``"flat"``, ``"per_layer"`` or ``"dynamic"`` (Wei & Liu; see
            :func:`gleak_edu.defenses.perturbed_gradient`); dynamic_clip_range: its ``(low, high)`` clamp.
        epochs, batch_size, lr: the SGD schedule.
        delta, accountant: of the reported epsilon (``"rdp"`` or ``"prv"``); 0 < delta < 0.1, and a
            :class:`gleak_edu.defenses.DeltaWarning` when delta >= 1 / len(train). Both, and the
            planned noise history (multipliers in [1e-6, 1e6], at most 10**6 steps, the PRV grid's bound),
            are checked before training starts, so a run is never lost to its final accounting.
        attack_plan: the checkpoint attacks (:class:`AttackPlan`); None: no attack.
        seed: seed of everything (batches, noise, attacks).
        callback: called with a :class:`gleak_edu.training.TrainState` after every step; after a
            step of the attack plan its ``checkpoint`` holds that checkpoint's dict (see :class:`DPRun`).

    Returns:
        :class:`DPRun`.

    Raises:
        ValueError: bad noise multipliers, max_grad_norm or clipping, attack steps past the end, a bad
            delta, accountant or noise history (see :func:`gleak_edu.defenses.epsilon`), a model Opacus
            cannot handle; all before training.
    """
    if accountant not in ACCOUNTANTS[:2]:
        raise ValueError(f"accountant must be 'rdp' or 'prv' (a schedule changes the noise multiplier), got {accountant!r}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    # everything the final accounting needs is checked before any training, so no run is lost to it
    check_delta(delta, dataset_size=len(train[0]) or None)
    bound = _check_max_grad_norm(max_grad_norm)
    check_clipping(clipping, dynamic_clip_range)
    total = epochs * steps_per_epoch(len(train[0]), batch_size)
    plan = attack_plan if attack_plan is not None else AttackPlan()
    bad = [s for s in plan.steps if not s < total]
    if bad:
        raise ValueError(f"attack steps {bad} lie outside 0..{total - 1} (training takes {total} steps)")
    dp = noise_multiplier is not None
    sample_rate = min(1.0, batch_size / len(train[0]))
    if dp:
        if total > MAX_STEPS:
            raise ValueError(f"training would take {total:,} steps, more than this course accounts ({MAX_STEPS:,})")
        sigmas = _schedule(noise_multiplier, total)
        check_history(history_from_noise_multipliers(sigmas, sample_rate), delta, accountant)
        method = "fixed" if len(set(sigmas)) == 1 else "schedule"
    else:
        sigmas, method = [0.0] * total, "none"
    num_classes = getattr(model, "num_classes", None) or output_layer(model)[1].out_features
    checkpoints: list[dict] = []
    shadow = copy.deepcopy(model) if plan.steps else None  # attacked instead of the model Opacus wraps

    def checkpoint(state: TrainState) -> dict:
        shadow.load_state_dict(state.model.state_dict())
        shadow.train()
        xs, ys = plan.images
        cp: dict = {"step": state.step, "noise_multiplier": state.noise_multiplier,
                    "max_grad_norm": math.nan if state.max_grad_norm is None else state.max_grad_norm}
        for a in plan.attacks:
            cp[a] = {"ssim": [], "psnr": [], "label_correct": [], "reconstructions": []}
        for i in range(len(xs)):
            x, y = xs[i : i + 1], ys[i : i + 1]
            noise_seed = seed * 1000 + state.step * 10 + i
            torch.manual_seed(noise_seed)  # PRECODE's sampling, if any (the random state is restored after the callback)
            if dp:
                shared = dp_shared_gradient(shadow, x, y, noise_multiplier=state.noise_multiplier, max_grad_norm=bound,
                                            clipping=clipping, dynamic_clip_range=dynamic_clip_range, seed=noise_seed)
            else:
                shared = client_gradient(shadow, x, y)
            for a in plan.attacks:
                res = _run_attack(a, shadow, shared, x, y, num_classes=num_classes, iterations=plan.iterations, seed=i)
                cp[a]["ssim"].append(float(metrics.ssim(res.reconstruction, x)[0]))
                cp[a]["psnr"].append(float(metrics.psnr(res.reconstruction, x)[0]))
                cp[a]["label_correct"].append(None if res.labels is None else bool(int(res.labels[0]) == int(y[0])))
                cp[a]["reconstructions"].append(res.reconstruction[0].tolist())
        return cp

    def on_step(state: TrainState) -> None:
        if state.step in plan.steps:
            state.checkpoint = checkpoint(state)
            checkpoints.append(state.checkpoint)
        if callback is not None:
            callback(state)

    result = train_perturbed(
        model, train, test, noise_multiplier=sigmas, max_grad_norm=bound, scope="full" if dp else "none",
        clipping=clipping, dynamic_clip_range=dynamic_clip_range, epochs=epochs, batch_size=batch_size, lr=lr,
        delta=delta, seed=seed, callback=on_step if (plan.steps or callback is not None) else None,
    )
    eps = epsilon(result.history, delta, accountant) if dp else math.inf
    return DPRun(
        method=method, clipping=clipping,
        max_grad_norm=bound if dp and clipping != "dynamic" else math.nan,
        noise_multiplier_start=sigmas[0], noise_multiplier_end=sigmas[-1], test_accuracy=result.test_accuracy,
        epsilon=eps, delta=delta, accountant=accountant,
        noise_multiplier_history=result.noise_multiplier_history, max_grad_norm_history=result.max_grad_norm_history,
        train_loss=result.train_loss, step_loss=result.step_loss, steps=result.steps, sample_rate=result.sample_rate,
        seconds=result.seconds, diverged=result.diverged, checkpoints=checkpoints, success_ssim=plan.success_ssim,
    )
