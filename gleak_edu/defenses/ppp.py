"""PPP: PRECODE with Partial Perturbation, and full perturbation as its comparison (Scheliga et al., arXiv 2208.04767).

Both defenses are DP-SGD's perturbation (Abadi et al., 2016): every
example's gradient is clipped to L2 norm at most ``max_grad_norm`` (the
clipping bound C), the clipped gradients are summed, Gaussian noise
``N(0, (sigma C)^2)`` is added to each entry, and the sum is divided by the
batch size. sigma is ``noise_multiplier``, relative to C (Opacus's meaning:
noise std = noise_multiplier * max_grad_norm), not the absolute standard
deviation ``noise_std`` of :func:`gleak_edu.defenses.gaussian_noise`.

- **Full perturbation** applies it to every parameter's gradient.
- **PPP** applies it only to the deterministic gradients of a PRECODE model,
  the ones the bypass matches (every layer before the bottleneck, and its
  encoder: :func:`gleak_edu.defenses.deterministic_parameters`). The
  bottleneck's decoder and the later layers keep their ordinary, unclipped,
  noise-free gradient: PRECODE's sampling randomises their weight gradients
  (the bypass skips them), though not their bias gradients: the output
  layer's bias gradient still gives a single image's label away (notebook 04).

Opacus does the per-example work: :class:`opacus.GradSampleModule` computes
per-example gradients and :class:`opacus.optimizers.DPOptimizer` clips, noises
and scales them. PPP needs its own step only in one place, said here once:
Opacus perturbs every parameter its optimizer holds, so PPP gives Opacus an
optimizer over the deterministic parameters only and updates the others with a
second, plain optimizer. The clipping norm is taken over the perturbed
parameters only (for PPP: the deterministic ones).

Clipping (``clipping``): ``"flat"`` (one bound C on each example's whole
gradient, Opacus's default), ``"per_layer"`` (each of the P tensors to
C / sqrt(P), Opacus's convention) or ``"dynamic"`` (Wei & Liu: each example's
bound is its largest per-tensor gradient norm, clamped to
``dynamic_clip_range`` = :data:`DYNAMIC_CLIP_RANGE` (0.1, 32); the noise uses
the batch mean of those bounds; ``max_grad_norm`` is then not used).

Privacy accounting (:func:`gleak_edu.defenses.epsilon_for_steps`, and
:attr:`PerturbedTrainResult.epsilon`) is Opacus's RDP accountant. For full
perturbation it is DP-SGD's (epsilon, delta) guarantee for the whole training
run. For PPP it covers only the perturbed gradients: the decoder's and output
layer's gradients are released without noise, and PRECODE's sampling is not a
differential-privacy mechanism, so PPP as a whole has no epsilon. The noise
settings are the course's own choices, made for a CPU-minute budget, and are
in :mod:`gleak_edu.sweeps`.

The same loop serves DP-SGD (:func:`gleak_edu.defenses.train_dp`) and the
defense arena's plain defenses: :func:`train_perturbed` takes a per-step noise
schedule, per-layer and dynamic clipping, and with ``scope="none"`` it is
ordinary SGD on the same batches, whose mean gradient a ``gradient_transform``
may change (noise, pruning) before each step.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gleak_edu.defenses.accounting import check_history, epsilon, history_from_noise_multipliers
from gleak_edu.fl import check_batch
from gleak_edu.precode import VariationalBottleneck, deterministic_parameters, precode_loss
from gleak_edu.training import TrainCallback, TrainState, _notify, accuracy

__all__ = [
    "CLIPPINGS",
    "DYNAMIC_CLIP_RANGE",
    "SCOPES",
    "GradientTransform",
    "PerturbedTrainResult",
    "check_clipping",
    "full_perturbation_gradient",
    "perturbation_scope",
    "perturbed_gradient",
    "ppp_gradient",
    "steps_per_epoch",
    "train_perturbed",
]

SCOPES = ("none", "full", "ppp")
#: The clipping rules: one bound per example, one per tensor, or Wei & Liu's dynamic per-example bound.
CLIPPINGS = ("flat", "per_layer", "dynamic")
#: The dynamic clipping rule's (low, high) clamp on each example's bound (Wei & Liu).
DYNAMIC_CLIP_RANGE = (0.1, 32.0)

#: ``gradient_transform(grads, batch_size, step) -> grads``: changes a step's mean gradient
#: (an OrderedDict name -> tensor of the trainable parameters) before the optimizer uses it.
GradientTransform = Callable[["OrderedDict[str, torch.Tensor]", int, int], Mapping[str, torch.Tensor]]


def perturbation_scope(model: nn.Module, scope: str | Sequence[str]) -> list[str]:
    """Names of the parameters a defense clips and noises.

    Args:
        model: the victim (for ``"ppp"``, a PRECODE model: see :func:`gleak_edu.defenses.add_precode`).
        scope: ``"none"`` (no parameter), ``"full"`` (every trainable parameter),
            ``"ppp"`` (the deterministic parameters of a PRECODE model), or an
            explicit list of parameter names.

    Returns:
        Parameter names in ``named_parameters()`` order.

    Raises:
        ValueError: for an unknown scope or name, or ``"ppp"`` on a model
            without a PRECODE bottleneck (PPP perturbs the gradients PRECODE
            leaves deterministic; use ``"full"`` for a plain model).
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if isinstance(scope, str):
        if scope == "none":
            return []
        if scope == "full":
            return names
        if scope == "ppp":
            if not any(isinstance(m, VariationalBottleneck) for m in model.modules()):
                raise ValueError(
                    "PPP needs a PRECODE model (add_precode(model) first): it perturbs only the gradients the "
                    "bottleneck leaves deterministic; for a plain model use scope 'full'"
                )
            keep = set(deterministic_parameters(model))
            return [n for n in names if n in keep]
        raise ValueError(f"scope must be one of {SCOPES} or a list of parameter names, got {scope!r}")
    chosen = list(scope)
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise ValueError(f"scope names parameters the model does not have: {unknown[:3]}")
    return [n for n in names if n in set(chosen)]


def _check_max_grad_norm(max_grad_norm) -> float:
    if isinstance(max_grad_norm, (bool, str)):
        raise ValueError(f"max_grad_norm (the clipping bound C) must be a finite number > 0, got {max_grad_norm!r}")
    bound = float(max_grad_norm)
    if not math.isfinite(bound) or bound <= 0:
        raise ValueError(f"max_grad_norm (the clipping bound C) must be a finite number > 0, got {max_grad_norm}")
    return bound


def _check_multiplier(noise_multiplier) -> float:
    sigma = float(noise_multiplier)
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(
            f"noise_multiplier (the noise multiplier, noise std = noise_multiplier * max_grad_norm) "
            f"must be a finite number >= 0, got {sigma}"
        )
    return sigma


def check_clipping(clipping: str, dynamic_clip_range: tuple[float, float] = DYNAMIC_CLIP_RANGE) -> tuple[float, float]:
    """Validate a clipping rule and the dynamic rule's bounds; returns the bounds as ``(low, high)`` floats.

    Raises:
        ValueError: ``clipping`` not one of :data:`CLIPPINGS`, or ``dynamic_clip_range``
            not two finite numbers with 0 < low <= high.
    """
    if clipping not in CLIPPINGS:
        raise ValueError(f"clipping must be one of {CLIPPINGS}, got {clipping!r}")
    try:
        low, high = (float(v) for v in dynamic_clip_range)
    except (TypeError, ValueError):
        raise ValueError(f"dynamic_clip_range must be two numbers (low, high), got {dynamic_clip_range!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
        raise ValueError(f"dynamic_clip_range must satisfy 0 < low <= high (finite), got {dynamic_clip_range!r}")
    return low, high


def _clip_rule_optimizer():
    """Opacus's DPOptimizer with per-layer clipping and the dynamic bound (built lazily: Opacus imports slowly)."""
    from opacus.optimizers import DPOptimizer
    from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

    class ClipRuleDPOptimizer(DPOptimizer):
        """DPOptimizer whose clipping is per layer, or flat with Wei & Liu's per-example dynamic bound.

        Opacus clips every example to one bound per step; Wei & Liu's dynamic
        rule gives each example its own (its largest per-layer norm, clamped
        to ``dynamic_clip_range``), so this step replaces Opacus's
        ``clip_and_accumulate``; the noise (``add_noise``, std noise_multiplier
        times ``max_grad_norm``), scaling and the optimizer step stay Opacus's.
        With the dynamic bound, ``max_grad_norm`` is set each step to the
        batch mean of the examples' bounds, as the paper's noise uses it.

        Per-layer clipping follows Opacus's convention, not the paper's: each of
        the P parameter tensors is clipped to C / sqrt(P), so a whole example's
        gradient stays within C and sigma remains the noise multiplier the
        accountant needs (clipping every layer to C, as the paper does, has
        sensitivity C sqrt(P)).
        """

        def __init__(self, optimizer, *, max_grad_norm, clipping, dynamic_clip_range, **kwargs):
            self.clipping, self.dynamic_clip_range = clipping, dynamic_clip_range
            super().__init__(optimizer, max_grad_norm=max_grad_norm, **kwargs)
            self.fixed_bound = max_grad_norm

        def clip_and_accumulate(self):
            samples = self.grad_samples
            if len(samples[0]) == 0:
                return super().clip_and_accumulate()
            norms = torch.stack([g.reshape(len(g), -1).norm(2, dim=-1) for g in samples], dim=1)  # [B, P]
            if self.clipping == "dynamic":
                bound = norms.max(dim=1).values.clamp(*self.dynamic_clip_range)
                self.max_grad_norm = float(bound.mean())
                factors = (bound / (norms.norm(2, dim=1) + 1e-6)).clamp(max=1.0)[:, None].expand_as(norms)
            else:  # per layer
                bound = torch.full((norms.shape[0],), float(self.fixed_bound))
                factors = (bound[:, None] / math.sqrt(norms.shape[1]) / (norms + 1e-6)).clamp(max=1.0)
            for j, p in enumerate(self.params):
                _check_processed_flag(p.grad_sample)
                grad = torch.einsum("i,i...", factors[:, j].to(p.dtype), self._get_flat_grad_sample(p).to(p.dtype))
                p.summed_grad = grad if p.summed_grad is None else p.summed_grad + grad
                _mark_as_processed(p.grad_sample)

    return ClipRuleDPOptimizer


def _backward(loss: torch.Tensor) -> None:
    """``loss.backward()`` without the warning Opacus's hooks raise when the input needs no gradient (harmless here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        loss.backward()


class _Private:
    """A model wrapped for per-example gradients, with Opacus's DPOptimizer over the perturbed parameters.

    ``step()`` after ``backward()`` leaves in ``p.grad``: for perturbed
    parameters, the clipped + noised mean (Opacus); for the others, the
    ordinary mean gradient. Call :meth:`close` to give the model back unwrapped.
    """

    def __init__(self, model, perturbed, *, noise_multiplier, max_grad_norm, clipping, dynamic_clip_range,
                 batch_size, seed, optimizer=None):
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer
        from opacus.validators import ModuleValidator

        errors = ModuleValidator.validate(model, strict=False)
        if errors:
            raise ValueError(
                f"Opacus cannot compute per-example gradients for this model: {errors[0]} "
                "(replace BatchNorm with GroupNorm, e.g. opacus.validators.ModuleValidator.fix(model))"
            )
        self.model = model
        params = dict(model.named_parameters())
        self.dp_params = [params[n] for n in perturbed]
        chosen = set(perturbed)
        self.plain_params = [p for n, p in model.named_parameters() if p.requires_grad and n not in chosen]
        make = optimizer or (lambda ps: torch.optim.SGD(ps, lr=0.0))
        self.gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean")
        self.dp_opt = None
        if self.dp_params:
            common = dict(
                noise_multiplier=noise_multiplier, expected_batch_size=batch_size, loss_reduction="mean",
                generator=torch.Generator().manual_seed(int(seed)),
            )
            if clipping == "flat":
                self.dp_opt = DPOptimizer(make(self.dp_params), max_grad_norm=max_grad_norm, **common)
            else:
                self.dp_opt = _clip_rule_optimizer()(
                    make(self.dp_params), max_grad_norm=max_grad_norm, clipping=clipping,
                    dynamic_clip_range=dynamic_clip_range, **common,
                )
        self.plain_opt = make(self.plain_params) if self.plain_params else None

    def zero_grad(self):
        self.gsm.zero_grad(set_to_none=True)
        if self.dp_opt is not None:
            self.dp_opt.zero_grad(set_to_none=True)

    def perturb(self) -> None:
        """Clip, noise and scale the perturbed parameters' gradients in place (no update)."""
        if self.dp_opt is not None:
            self.dp_opt.pre_step()

    def step(self) -> None:
        if self.dp_opt is not None:
            self.dp_opt.step()
        if self.plain_opt is not None:
            self.plain_opt.step()

    def close(self) -> None:
        self.zero_grad()
        self.gsm._close()


def perturbed_gradient(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    noise_multiplier: float,
    max_grad_norm: float = 1.0,
    scope: str | Sequence[str] = "ppp",
    clipping: str = "flat",
    dynamic_clip_range: tuple[float, float] = DYNAMIC_CLIP_RANGE,
    seed: int = 0,
) -> "OrderedDict[str, torch.Tensor]":
    """The gradient a FedSGD client shares on (x, y), clipped per example and noised on ``scope`` (DP-SGD's step).

    For the parameters in ``scope``: ``(sum_i clip_C(g_i) + N(0, (sigma C)^2 I)) / B``,
    where ``clip_C(g) = g * min(1, C / ||g||)``, ``||g||`` is example i's
    gradient norm over the parameters in scope (Opacus), C = ``max_grad_norm``
    and sigma = ``noise_multiplier`` (so the noise std on the mean is
    sigma * C / B). For the other parameters: the ordinary mean gradient, bit
    for bit what :func:`gleak_edu.fl.client_gradient` returns from the same
    random state (PRECODE's sample comes from the global RNG, as there; the loss
    is the same mean cross-entropy). The model is used in its current mode and is not changed.

    Args:
        model: the victim.
        x: private images float32 ``[B, C, H, W]`` in [0, 1]; y: labels int64 ``[B]``.
        noise_multiplier: sigma (>= 0; 0 = clipping only), relative to C: noise std = noise_multiplier * max_grad_norm.
        max_grad_norm: the clipping bound C on each example's gradient norm (> 0; not used by ``"dynamic"``).
        scope: ``"ppp"``, ``"full"``, ``"none"`` or parameter names (:func:`perturbation_scope`).
        clipping: ``"flat"`` (one norm over the scope), ``"per_layer"`` (each
            tensor to C / sqrt(P), P tensors in scope, Opacus's convention) or
            ``"dynamic"`` (each example's bound is its largest per-tensor norm,
            clamped to ``dynamic_clip_range``; the noise uses the batch mean of
            those bounds: Wei & Liu's rule).
        dynamic_clip_range: ``(low, high)`` clamp of the dynamic bound (:data:`DYNAMIC_CLIP_RANGE`).
        seed: seed of the noise (a private generator; the global RNG only drives PRECODE's sampling).

    Returns:
        OrderedDict name -> float32 tensor in ``named_parameters()`` order, like a shared gradient.

    Raises:
        ValueError: bad noise_multiplier, max_grad_norm, clipping, scope, batch, or a layer Opacus
            cannot handle (e.g. BatchNorm).
    """
    check_batch(model, x, y)
    sigma = _check_multiplier(noise_multiplier)
    bound = _check_max_grad_norm(max_grad_norm)
    low_high = check_clipping(clipping, dynamic_clip_range)
    perturbed = perturbation_scope(model, scope)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    saved = {n: p.grad for n, p in model.named_parameters()}
    private = _Private(model, perturbed, noise_multiplier=sigma, max_grad_norm=bound, clipping=clipping,
                       dynamic_clip_range=low_high, batch_size=int(x.shape[0]), seed=seed)
    try:
        private.zero_grad()
        _backward(F.cross_entropy(private.gsm(x), y))
        private.perturb()
        params = dict(model.named_parameters())
        out = OrderedDict((n, params[n].grad.detach().clone()) for n in names)
    finally:
        private.close()
        for n, p in model.named_parameters():
            p.grad = saved[n]
    return out


def ppp_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, noise_multiplier: float,
                 max_grad_norm: float = 1.0, seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """PPP's shared gradient: :func:`perturbed_gradient` with ``scope="ppp"`` (PRECODE models only; noise std sigma * C)."""
    return perturbed_gradient(model, x, y, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
                              scope="ppp", seed=seed)


def full_perturbation_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, noise_multiplier: float,
                               max_grad_norm: float = 1.0, seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """Full perturbation's shared gradient: :func:`perturbed_gradient` with ``scope="full"`` (noise std sigma * C)."""
    return perturbed_gradient(model, x, y, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
                              scope="full", seed=seed)


@dataclass(kw_only=True)
class PerturbedTrainResult:
    """Outcome of :func:`train_perturbed`.

    Attributes:
        test_accuracy: share of test images classified correctly, in [0, 1].
        train_loss: mean training loss per epoch (cross-entropy + PRECODE KL).
        seconds: wall time of the training loop.
        steps: optimizer steps taken.
        sample_rate: batch size / training-set size (q).
        delta: the delta of :attr:`epsilon`.
        perturbed: names of the clipped and noised parameters.
        diverged: the loss became non-finite; training stopped there and the
            model holds the weights of that epoch's start (the accuracy is theirs).
        noise_multiplier_history: the noise multiplier of every step taken (0 when nothing is perturbed).
        max_grad_norm_history: the clipping bound C of every step (for dynamic clipping, the batch
            mean of the examples' bounds; nan when nothing is perturbed).
        step_loss: the training loss of every step.
        epsilon: (property) epsilon at ``delta`` for the perturbed gradients
            from the noise history, by Opacus's RDP accountant, computed on
            first access; ``inf`` without noise, ``nan`` when nothing is
            perturbed. For PPP this is not a guarantee for the model (module
            docstring); with dynamic clipping it is not a formal guarantee either
            (the bound depends on the data). For another accountant:
            ``gleak_edu.defenses.epsilon(result.history, delta, "prv")``.
    """

    test_accuracy: float
    train_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0
    sample_rate: float = 0.0
    delta: float = 1e-5
    perturbed: list[str] = field(default_factory=list)
    diverged: bool = False
    noise_multiplier_history: list[float] = field(default_factory=list)
    max_grad_norm_history: list[float] = field(default_factory=list)
    step_loss: list[float] = field(default_factory=list)

    @property
    def history(self) -> list[tuple[float, float, int]]:
        """The noise history as Opacus accountant segments ``(noise_multiplier, sample_rate, steps)``."""
        return history_from_noise_multipliers(self.noise_multiplier_history, self.sample_rate)

    @functools.cached_property
    def epsilon(self) -> float:
        """Epsilon at ``delta`` (RDP) of the perturbed gradients; nan when nothing is perturbed, inf without noise."""
        return epsilon(self.history, self.delta, "rdp") if self.perturbed else math.nan


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps in one epoch of ``n`` examples in batches of ``batch_size`` (the last one smaller)."""
    return math.ceil(n / batch_size)


def _schedule(noise_multiplier, total: int) -> list[float]:
    """One noise multiplier per step from a number or a per-step sequence (checked)."""
    if isinstance(noise_multiplier, (int, float)) and not isinstance(noise_multiplier, bool):
        values = [float(noise_multiplier)] * total
    else:
        try:
            values = [float(v) for v in noise_multiplier]
        except TypeError:
            raise ValueError(
                f"noise_multiplier must be a number >= 0 or one per step, got {noise_multiplier!r}"
            ) from None
        if len(values) != total:
            raise ValueError(f"the noise schedule has {len(values)} values but training takes {total} steps")
    for v in set(values):
        _check_multiplier(v)
    return values


def _apply_transform(transform: GradientTransform, named, batch: int, step: int) -> None:
    grads = OrderedDict((n, p.grad) for n, p in named)
    out = transform(grads, batch, step)
    for n, p in named:
        try:
            g = out[n]
        except (KeyError, TypeError):
            raise ValueError(f"gradient_transform must return a gradient for every parameter; {n!r} is missing") from None
        if g is None:  # a parameter the batch did not reach
            p.grad = None
            continue
        if tuple(g.shape) != tuple(p.shape):
            raise ValueError(f"gradient_transform changed the shape of {n!r}: {tuple(g.shape)} != {tuple(p.shape)}")
        p.grad = g.to(p.dtype)


def train_perturbed(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    noise_multiplier: float | Sequence[float],
    max_grad_norm: float = 1.0,
    scope: str | Sequence[str] = "ppp",
    clipping: str = "flat",
    dynamic_clip_range: tuple[float, float] = DYNAMIC_CLIP_RANGE,
    epochs: int = 2,
    batch_size: int = 64,
    lr: float = 0.2,
    delta: float = 1e-5,
    seed: int = 0,
    gradient_transform: GradientTransform | None = None,
    callback: TrainCallback | None = None,
) -> PerturbedTrainResult:
    """Train with SGD where the gradients in ``scope`` are DP-SGD-perturbed (PPP, full perturbation, DP-SGD, or none).

    Each step draws a shuffled batch (fixed size, the last one smaller), computes
    per-example gradients (Opacus), clips each example's gradient on the scope
    to ``max_grad_norm`` C and adds noise of std ``noise_multiplier * C`` to
    their sum, as :func:`perturbed_gradient` does (Abadi et al., 2016), and
    updates with plain SGD: the perturbed parameters through Opacus's
    DPOptimizer, the others with a plain SGD of the same settings (Adam was
    tried and does not learn under this noise: it rescales noise-dominated
    coordinates to full-size steps). The loss adds PRECODE's KL term
    (:func:`gleak_edu.defenses.precode_loss`) when the model has a bottleneck.
    A non-finite loss stops training (reported in ``diverged``, the model
    keeps the weights of that epoch's start) instead of raising. With
    ``scope="none"`` it is ordinary SGD on the same batches, without Opacus
    (so any model, BatchNorm included), and ``gradient_transform`` may change
    each step's mean gradient (the arena's noise and pruning defenses). The
    accountant assumes Poisson sampling at rate q = batch_size / N; shuffled
    batches are the usual approximation of it (Opacus allows the same).

    Args:
        model: trained in place, in train mode.
        train, test: (images float32 ``[N, C, H, W]`` in [0, 1], labels int64 ``[N]``).
        noise_multiplier: sigma (>= 0), relative to C (noise std = noise_multiplier *
            max_grad_norm), or one per step (a schedule, e.g. from
            :func:`gleak_edu.defenses.noise_schedule`; its length must be
            ``epochs * steps_per_epoch(N, batch_size)``). Not used with scope "none".
        max_grad_norm: the clipping bound C on each example's gradient norm (> 0).
        scope: see :func:`perturbation_scope`.
        clipping: ``"flat"``, ``"per_layer"`` or ``"dynamic"`` (see :func:`perturbed_gradient`);
            dynamic_clip_range: the dynamic bound's ``(low, high)`` clamp.
        epochs, batch_size, lr: the schedule (SGD without momentum).
        delta: of :attr:`PerturbedTrainResult.epsilon` (0 < delta < 0.1).
        seed: seed of the batch order, PRECODE's sampling and the noise.
        gradient_transform: scope ``"none"`` only: ``f(grads, batch_size, step) -> grads``, called
            before every optimizer step with the batch's mean gradient (an OrderedDict
            name -> tensor of the trainable parameters, ``named_parameters()`` order),
            the batch's size and the 0-based step; the optimizer uses what it returns
            (same names and shapes).
        callback: called with a :class:`gleak_edu.training.TrainState` after every step
            (the step's noise multiplier, the bound applied, the batch loss); it runs with
            Opacus's hooks off and the random state restored afterwards, so it does not change training.

    Returns:
        :class:`PerturbedTrainResult`.

    Raises:
        ValueError: bad schedule, noise_multiplier, max_grad_norm, scope, clipping, delta,
            a noise history the accountant refuses, ``gradient_transform`` with a scope
            other than "none" (or returning other names or shapes), or a layer Opacus cannot handle.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    x, y = train
    total = epochs * steps_per_epoch(len(x), batch_size)
    sigmas = _schedule(noise_multiplier, total)
    bound = _check_max_grad_norm(max_grad_norm)
    low_high = check_clipping(clipping, dynamic_clip_range)
    perturbed = perturbation_scope(model, scope)
    if gradient_transform is not None and perturbed:
        raise ValueError("gradient_transform is only allowed with scope 'none' (no DP-SGD perturbation)")
    sample_rate = min(1.0, batch_size / len(x))
    if perturbed:
        # the final accounting's checks, before any training: no run is lost to them
        check_history(history_from_noise_multipliers(sigmas, sample_rate), delta, "rdp")
    else:
        sigmas = [0.0] * total
        check_history([], delta, "rdp")
    gen = torch.Generator().manual_seed(int(seed))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if perturbed:
        private = _Private(
            model, perturbed, noise_multiplier=sigmas[0], max_grad_norm=bound, clipping=clipping,
            dynamic_clip_range=low_high, batch_size=batch_size, seed=seed + 1,
            optimizer=lambda ps: torch.optim.SGD(ps, lr=lr),
        )
        forward, plain_opt = private.gsm, None
    else:
        private, forward = None, model
        plain_opt = torch.optim.SGD([p for _, p in named], lr=lr)
    result = PerturbedTrainResult(test_accuracy=math.nan, delta=delta, perturbed=perturbed, sample_rate=sample_rate)
    start = time.perf_counter()
    model.train()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            for epoch in range(epochs):
                snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
                perm = torch.randperm(len(x), generator=gen)
                running = 0.0
                for i in range(0, len(x), batch_size):
                    step = result.steps
                    idx = perm[i : i + batch_size]
                    if private is not None:
                        private.zero_grad()
                    else:
                        plain_opt.zero_grad(set_to_none=True)
                    loss = F.cross_entropy(forward(x[idx]), y[idx]) + precode_loss(model)
                    if not torch.isfinite(loss):
                        result.diverged = True
                        break
                    if private is not None:
                        _backward(loss)
                        if private.dp_opt is not None:
                            private.dp_opt.noise_multiplier = sigmas[step]
                        private.step()
                        applied = private.dp_opt.max_grad_norm if private.dp_opt is not None else None
                    else:
                        loss.backward()
                        if gradient_transform is not None:
                            _apply_transform(gradient_transform, named, len(idx), step)
                        plain_opt.step()
                        applied = None
                    value = float(loss.detach())
                    result.noise_multiplier_history.append(sigmas[step])
                    result.max_grad_norm_history.append(math.nan if applied is None else float(applied))
                    result.step_loss.append(value)
                    running += value * len(idx)
                    result.steps += 1
                    if callback is not None:
                        state = TrainState(step=step, epoch=epoch, loss=value, noise_multiplier=sigmas[step],
                                           max_grad_norm=None if applied is None else float(applied), model=model)
                        if private is not None:
                            private.gsm.disable_hooks()
                        try:
                            _notify(callback, state)
                        finally:
                            if private is not None:
                                private.gsm.enable_hooks()
                if result.diverged:
                    # keep the weights of the epoch's start rather than NaN ones
                    model.load_state_dict(snapshot)
                    break
                result.train_loss.append(running / len(x))
    finally:
        if private is not None:
            private.close()
        else:
            plain_opt.zero_grad(set_to_none=True)
    result.seconds = time.perf_counter() - start
    result.test_accuracy = accuracy(model, *test)
    return result
