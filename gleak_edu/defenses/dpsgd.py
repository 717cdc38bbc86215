"""DP-SGD with fixed and dynamic privacy parameters (Wei & Liu, "Gradient Leakage Attack Resilient Deep Learning").

DP-SGD (Abadi et al., 2016): clip each example's gradient to the clipping
bound C, add Gaussian noise of std sigma * C (sigma: the noise multiplier),
average, step; an accountant turns the noise history into (epsilon, delta).
Wei & Liu argue that a *fixed* sigma and C cost accuracy and still leak, and
propose *dynamic* parameters: sigma decaying over training along a schedule,
and clipping bounds that follow the gradient norms.

- :func:`noise_schedule`: fixed, linear, staircase, exponential, cyclic.
- Dynamic clipping: ``clip="dynamic"`` in :func:`train_dp` (and in
  :func:`gleak_edu.defenses.perturbed_gradient`): each example's bound is its
  largest per-tensor gradient norm, clamped to [0.1, 32]; the noise uses the
  batch mean of the bounds. The bound then depends on the data, so the
  epsilon reported for it is the accountant's value for sigma, not a formal
  guarantee (the paper's rule; say so when you report it).
- :func:`train_dp`: training on Opacus (per-example gradients, clipping, noise;
  the noise multiplier is set at every step, and the accountant composes the
  recorded history), attacking at chosen steps the gradient one client would
  share then: one example's clipped and noised gradient.

The paper's four metrics were not defined precisely enough to reproduce;
:class:`DPRun` reports this course's versions: test accuracy, epsilon at a
stated delta, attack success rate (share of attacked images with SSIM >=
0.6, best of the attacks) and reconstruction quality (PSNR/SSIM).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

__all__ = [
    "SCHEDULES",
    "DPRun",
    "dp_shared_gradient",
    "match_fixed_sigma",
    "noise_schedule",
    "schedule_epsilon",
    "train_dp",
]

SCHEDULES = ("fixed", "linear", "staircase", "exponential", "cyclic")


def noise_schedule(kind: str, steps: int, sigma_start: float, sigma_end: float | None = None, *, stairs: int = 10,
                   updates: int | None = None) -> list[float]:
    """The noise multiplier of each of ``steps`` training steps.

    With progress p = t / (steps - 1) (0 at the first step, 1 at the last),
    every schedule starts at ``sigma_start`` and ends at ``sigma_end``
    (Wei & Liu's forms, written for any start and end; theirs run 15 -> 4.85).
    With ``updates`` = k, sigma changes only k times over training (held
    for steps/k steps, p = floor(t k / steps) / (k - 1)), as Opacus's noise
    schedulers do when stepped per epoch; it also makes accounting fast (each
    distinct sigma costs Opacus's RDP accountant about 30 ms, PRV more).

    - ``fixed``: sigma_start throughout (``sigma_end`` ignored).
    - ``linear``: start + (end - start) p.
    - ``staircase``: ``stairs`` equal flat stairs from start down to end
      (stair k of 0..stairs-1 at start + (end - start) k / (stairs - 1)).
      The paper's version steps by (start - end)/10 every T/10 steps and
      reaches the end value only after the last step.
    - ``exponential``: start (end / start)^p, i.e. the paper's
      exp(1.58 + 1.13 (T - t)/T) for 15 -> 4.85.
    - ``cyclic``: start cos(a p) with a = arccos(end / start) (the paper's
      15 cos(1.24 t/T): a decaying quarter cosine; needs end <= start).

    Args:
        kind: one of :data:`SCHEDULES`.
        steps: number of training steps (>= 1).
        sigma_start, sigma_end: noise multipliers (> 0; end defaults to start).
        stairs: the staircase's number of stairs.
        updates: how many times sigma is updated (None: every step; >= 2). Not used by the staircase.

    Returns:
        ``steps`` floats.

    Raises:
        ValueError: unknown kind, steps < 1, non-positive sigmas, or a cyclic
            schedule whose end exceeds its start.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    start = float(sigma_start)
    end = start if sigma_end is None or kind == "fixed" else float(sigma_end)
    if not (math.isfinite(start) and start > 0 and math.isfinite(end) and end > 0):
        raise ValueError(f"noise multipliers must be finite and > 0, got start {sigma_start}, end {sigma_end}")
    if kind == "cyclic" and end > start:
        raise ValueError("the cyclic (cosine) schedule decays: sigma_end must not exceed sigma_start")
    if stairs < 2:
        raise ValueError(f"stairs must be at least 2, got {stairs}")
    if updates is not None and updates < 2:
        raise ValueError(f"updates must be at least 2 (or None for every step), got {updates}")
    out = []
    for t in range(steps):
        if updates is not None and kind != "staircase" and steps > 1:
            p = min(1.0, math.floor(t * min(updates, steps) / steps) / (min(updates, steps) - 1))
        else:
            p = t / (steps - 1) if steps > 1 else 1.0
        if kind == "fixed":
            v = start
        elif kind == "linear":
            v = start + (end - start) * p
        elif kind == "staircase":
            k = min(int(p * stairs), stairs - 1)
            v = start + (end - start) * k / (stairs - 1)
        elif kind == "exponential":
            v = start * (end / start) ** p
        else:
            v = start * math.cos(math.acos(end / start) * p)
        out.append(float(v))
    return out


def schedule_epsilon(kind: str, steps: int, sigma_start: float, sigma_end: float | None, sample_rate: float,
                     delta: float = 1e-5, accountant: str = "rdp", updates: int | None = None, *,
                     dataset_size: int | None = None) -> float:
    """Epsilon at ``delta`` of training along a schedule (Opacus accountant over its history).

    The checks and the result are :func:`gleak_edu.defenses.epsilon`'s
    (epsilon >= 0, finite; 0 < delta < 0.1; sigmas in [1e-6, 1e6]; at most
    10**6 steps, checked before the schedule is built).

    Raises:
        ValueError: as :func:`noise_schedule` and :func:`gleak_edu.defenses.epsilon`.
    """
    from gleak_edu.defenses.accounting import check_delta, epsilon, history_from_sigmas

    _check_steps(steps)
    check_delta(delta)
    sigmas = noise_schedule(kind, steps, sigma_start, sigma_end, updates=updates)
    return epsilon(history_from_sigmas(sigmas, sample_rate), delta, accountant, dataset_size=dataset_size)


def _check_steps(steps) -> int:
    """steps: a whole number in 1..MAX_STEPS (checked before anything of that length is built)."""
    from gleak_edu.defenses.accounting import MAX_STEPS

    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be a whole number from 1 to {MAX_STEPS:,}, got {steps!r}")
    return int(steps)


def match_fixed_sigma(target_epsilon: float, steps: int, sample_rate: float, delta: float = 1e-5,
                      accountant: str = "rdp", *, low: float = 0.3, high: float = 50.0,
                      dataset_size: int | None = None) -> float:
    """The fixed noise multiplier whose ``steps`` steps spend ``target_epsilon`` (bisection on the accountant).

    Used to compare a schedule with fixed noise at *equal final epsilon*.
    Returns a sigma within 1e-4 relative. The bracket [low, high] must lie
    within the accountable range [1e-6, 1e6] (:data:`gleak_edu.defenses.accounting.SIGMA_RANGE`);
    at most 60 bisection steps are taken, whatever the target.

    Raises:
        ValueError: a target that is not a finite number > 0, a bad bracket,
            bad steps, sample rate or delta (as :func:`gleak_edu.defenses.epsilon`),
            or a target not reachable with sigma in [low, high].
    """
    from gleak_edu.defenses.accounting import check_delta, check_noise_multiplier, epsilon

    try:
        target = float(target_epsilon)
    except (TypeError, ValueError):
        raise ValueError(f"target_epsilon must be a number, got {target_epsilon!r}") from None
    if isinstance(target_epsilon, bool) or not math.isfinite(target) or target <= 0:
        raise ValueError(f"target_epsilon must be a finite number > 0, got {target_epsilon!r}")
    low = check_noise_multiplier(low, "bracket's low noise multiplier")
    high = check_noise_multiplier(high, "bracket's high noise multiplier")
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high for the bracket, got low {low:g}, high {high:g}")
    _check_steps(steps)
    check_delta(delta, dataset_size)

    def eps(s: float) -> float:
        return epsilon([(s, sample_rate, steps)], delta, accountant)

    if not eps(high) <= target <= eps(low):
        raise ValueError(f"epsilon {target:g} is not reachable with a fixed sigma in [{low:g}, {high:g}]")
    for _ in range(60):
        mid = math.sqrt(low * high)
        if eps(mid) > target:
            low = mid
        else:
            high = mid
        if high / low < 1 + 1e-4:
            break
    return high


def dp_shared_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, sigma: float, clip: float | str,
                       clipping: str = "flat", seed: int = 0):
    """What a DP-SGD client shares for one example: its clipped gradient plus N(0, (sigma C)^2) noise.

    ``x`` is one image ``[1, C, H, W]``; see :func:`gleak_edu.defenses.perturbed_gradient` (scope "full").

    Raises:
        ValueError: for a batch of more than one image, and as perturbed_gradient.
    """
    from gleak_edu.defenses.ppp import perturbed_gradient

    if x.shape[0] != 1:
        raise ValueError(f"a per-example shared gradient is of one image; got a batch of {x.shape[0]}")
    return perturbed_gradient(model, x, y, sigma=sigma, clip=clip, scope="full", clipping=clipping, seed=seed)


@dataclass
class DPRun:
    """One DP-SGD training run with its attacks, and the four metrics.

    Attributes:
        method: "none", "fixed" or a schedule name; clip: the bound or "dynamic"; clipping: flat / per_layer.
        sigma_start, sigma_end: the schedule's ends (0 for "none").
        test_accuracy: in [0, 1]. epsilon: at ``delta`` (inf for "none"), by ``accountant``.
        noise_history, clip_history: per step. steps, sample_rate, seconds, diverged: of the training.
        checkpoints: one dict per attacked step: ``step``, ``sigma``, and per
            attack ("idlg", "ig") lists ``ssim``, ``psnr`` (dB), ``label_correct``
            over the attacked images, and ``reconstructions`` ``[images][C][H][W]``.
        success_ssim: an image counts as leaked at a checkpoint when the best
            attack reaches this SSIM.
    """

    method: str
    clip: float | str
    clipping: str
    sigma_start: float
    sigma_end: float
    test_accuracy: float
    epsilon: float
    delta: float
    accountant: str
    noise_history: list[float] = field(default_factory=list)
    clip_history: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    step_loss: list[float] = field(default_factory=list)
    steps: int = 0
    sample_rate: float = 0.0
    seconds: float = 0.0
    diverged: bool = False
    checkpoints: list[dict] = field(default_factory=list)
    success_ssim: float = 0.6

    def best_ssim(self) -> list[list[float]]:
        """Per checkpoint, per image: the best SSIM over the attacks."""
        out = []
        for cp in self.checkpoints:
            attacks = [cp[a]["ssim"] for a in ("idlg", "ig") if a in cp]
            out.append([max(vals) for vals in zip(*attacks)])
        return out

    @property
    def attack_success_rate(self) -> float:
        """Share of (checkpoint, image) pairs where the best attack reaches ``success_ssim`` (nan without checkpoints)."""
        flat = [v for row in self.best_ssim() for v in row]
        return sum(v >= self.success_ssim for v in flat) / len(flat) if flat else math.nan

    def mean_quality(self, key: str = "ssim") -> float:
        """Mean over checkpoints and images of the best attack's ``key`` (ssim or psnr)."""
        vals = []
        for cp in self.checkpoints:
            attacks = [a for a in ("idlg", "ig") if a in cp]
            for i in range(len(cp[attacks[0]]["ssim"])):
                best = max(attacks, key=lambda a: cp[a]["ssim"][i])
                vals.append(cp[best][key][i])
        return sum(vals) / len(vals) if vals else math.nan

    def summary(self) -> dict:
        """The four metrics: test_accuracy, epsilon, attack_success_rate, ssim and psnr of the best attack."""
        return {
            "method": self.method, "clip": self.clip, "test_accuracy": self.test_accuracy, "epsilon": self.epsilon,
            "delta": self.delta, "attack_success_rate": self.attack_success_rate,
            "ssim": self.mean_quality("ssim"), "psnr": self.mean_quality("psnr"),
        }


def train_dp(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    method: str = "fixed",
    sigma_start: float = 1.0,
    sigma_end: float | None = None,
    noise_updates: int | None = None,
    clip: float | str = 1.0,
    clipping: str = "flat",
    epochs: int = 2,
    batch_size: int = 64,
    lr: float = 0.2,
    delta: float = 1e-5,
    accountant: str = "rdp",
    attack_steps: Sequence[int] = (),
    attack_images: tuple[torch.Tensor, torch.Tensor] | None = None,
    attacks: Sequence[str] = ("idlg", "ig"),
    attack_iterations: int = 300,
    success_ssim: float = 0.6,
    seed: int = 0,
    progress: bool = False,
    callback=None,
    after_step=None,
) -> DPRun:
    """DP-SGD training with a fixed or scheduled noise multiplier and a fixed or dynamic clipping bound, attacked along the way.

    Args:
        model: trained in place (every parameter is perturbed; no BatchNorm).
        train, test: (images float32 ``[N, C, H, W]`` in [0, 1], labels int64 ``[N]``).
        method: ``"none"`` (plain SGD, same batches) or one of :data:`SCHEDULES`.
        sigma_start, sigma_end: the schedule's noise multipliers (> 0).
        noise_updates: how many times sigma changes over training (None: every step; see :func:`noise_schedule`).
        clip: clipping bound C (> 0) or ``"dynamic"``; clipping: ``"flat"`` or ``"per_layer"``.
        epochs, batch_size, lr: the SGD schedule.
        delta, accountant: of the reported epsilon (``"rdp"`` or ``"prv"``); 0 < delta < 0.1, and a
            :class:`gleak_edu.defenses.accounting.DeltaWarning` when delta >= 1 / len(train). Both, and the
            planned noise history (sigmas in [1e-6, 1e6], at most 10**6 steps, the PRV grid's bound), are
            checked before training starts, so a run is never lost to its final accounting.
        attack_steps: steps (0-based) at which the shared gradient of each
            attack image is attacked, computed with that step's sigma and clip
            rule on the model as it is then.
        attack_images: (images ``[M, C, H, W]``, labels ``[M]``) attacked one at a time.
        attacks: any of ``"idlg"`` (iDLG, L-BFGS on the gradient distance) and
            ``"ig"`` (Inverting Gradients, cosine; scale-invariant, so clipping alone does not stop it).
        attack_iterations: L-BFGS iterations (iDLG) and Adam steps (IG).
        success_ssim: success threshold for the attack success rate.
        seed: seed of everything (batches, noise, attacks).
        callback: called as ``callback(checkpoint_dict)`` after each checkpoint (live views).
        after_step: called as ``after_step(step, sigma_t, loss)`` after every step (live curves).

    Returns:
        :class:`DPRun`.

    Raises:
        ValueError: unknown method or attack, bad sigmas/clip, attack steps past the end, a bad delta,
            accountant or noise history (see :func:`gleak_edu.defenses.epsilon`); all before training.
    """
    from gleak_edu import metrics
    from gleak_edu.attacks import dlg, idlg, inverting_gradients
    from gleak_edu.defenses.accounting import ACCOUNTANTS, MAX_STEPS, check_delta, check_history, history_from_sigmas
    from gleak_edu.defenses.ppp import steps_per_epoch, train_perturbed
    from gleak_edu.fl import client_gradient

    if method not in ("none", *SCHEDULES):
        raise ValueError(f"method must be 'none' or one of {SCHEDULES}, got {method!r}")
    unknown = [a for a in attacks if a not in ("idlg", "ig")]
    if unknown:
        raise ValueError(f"attacks must be among 'idlg' and 'ig', got {unknown}")
    # everything the final accounting needs is checked before any training, so no run is lost to it
    if accountant not in ACCOUNTANTS[:2]:
        raise ValueError(f"accountant must be 'rdp' or 'prv' (a schedule changes sigma), got {accountant!r}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    check_delta(delta, dataset_size=len(train[0]) or None)
    total = epochs * steps_per_epoch(len(train[0]), batch_size)
    if method != "none" and total > MAX_STEPS:
        raise ValueError(f"training would take {total:,} steps, more than this course accounts ({MAX_STEPS:,})")
    bad = [s for s in attack_steps if not 0 <= int(s) < total]
    if bad:
        raise ValueError(f"attack steps {bad} lie outside 0..{total - 1} (training takes {total} steps)")
    if attack_steps and attack_images is None:
        raise ValueError("give attack_images to attack at attack_steps")
    if method == "none":
        sigmas, scope, start, end = 0.0, "none", 0.0, 0.0
    else:
        sigmas = noise_schedule(method, total, sigma_start, sigma_end, updates=noise_updates)
        scope, start, end = "full", sigmas[0], sigmas[-1]
        check_history(history_from_sigmas(sigmas, min(1.0, batch_size / len(train[0]))), delta, accountant)
    num_classes = getattr(model, "num_classes", None)
    checkpoints: list[dict] = []
    wanted = {int(s) for s in attack_steps}

    def on_step(step: int, sigma_t: float, net: nn.Module) -> None:
        xs, ys = attack_images
        cp = {"step": step, "sigma": sigma_t}
        for a in attacks:
            cp[a] = {"ssim": [], "psnr": [], "label_correct": [], "reconstructions": []}
        for i in range(len(xs)):
            x, y = xs[i : i + 1], ys[i : i + 1]
            torch.manual_seed(seed * 1000 + step * 10 + i)
            if method == "none":
                shared = client_gradient(net, x, y)
            else:
                shared = dp_shared_gradient(net, x, y, sigma=sigma_t, clip=clip, clipping=clipping, seed=seed * 1000 + step * 10 + i)
            common = dict(input_shape=tuple(x.shape), num_classes=num_classes, iterations=attack_iterations,
                          seed=i, truth=x, true_labels=y)
            for a in attacks:
                if a == "idlg":
                    try:
                        res = idlg(net, shared, retries=0, **common)
                    except ValueError:  # an all-zero output gradient: no label to read; DLG guesses it
                        res = dlg(net, shared, retries=0, **common)
                else:
                    res = inverting_gradients(net, shared, **common)
                cp[a]["ssim"].append(float(metrics.ssim(res.reconstruction, x)[0]))
                cp[a]["psnr"].append(float(metrics.psnr(res.reconstruction, x)[0]))
                cp[a]["label_correct"].append(bool(int(res.labels[0]) == int(y[0])))
                cp[a]["reconstructions"].append(res.reconstruction[0].tolist())
        checkpoints.append(cp)
        if callback is not None:
            callback(cp)

    result = train_perturbed(
        model, train, test, sigma=sigmas, clip=clip if method != "none" else 1.0, scope=scope, clipping=clipping,
        epochs=epochs, batch_size=batch_size, lr=lr, delta=delta, accountant=accountant, seed=seed,
        on_step=on_step if wanted else None, on_steps=wanted, after_step=after_step, progress=progress,
    )
    eps = result.epsilon if method != "none" else math.inf
    return DPRun(
        method, clip if method != "none" else math.nan, clipping, start, end, result.test_accuracy, eps, delta, accountant,
        result.noise_history, result.clip_history, result.train_loss, result.step_loss, result.steps,
        result.sample_rate, result.seconds, result.diverged, checkpoints, success_ssim,
    )
