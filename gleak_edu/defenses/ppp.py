"""PPP: PRECODE with Partial Perturbation, and full perturbation as its comparison (Scheliga et al., arXiv 2208.04767).

Both defenses are DP-SGD's perturbation (Abadi et al., 2016): every
example's gradient is clipped to L2 norm at most ``clip`` (the clipping bound
C), the clipped gradients are summed, Gaussian noise ``N(0, (sigma C)^2)`` is
added to each entry, and the sum is divided by the batch size. ``sigma`` is the
*noise multiplier* (relative to C, Opacus's convention), not the absolute
standard deviation of :func:`gleak_edu.defenses.gaussian_noise`.

- **Full perturbation** applies it to every parameter's gradient.
- **PPP** applies it only to the deterministic gradients of a PRECODE model,
  the ones the bypass matches (every layer before the bottleneck, and its
  encoder: :func:`gleak_edu.defenses.deterministic_parameters`). The
  bottleneck's decoder and the later layers keep their ordinary, unclipped,
  noise-free gradient: PRECODE's sampling already makes them useless to an
  attacker.

Opacus does the per-example work: :class:`opacus.GradSampleModule` computes
per-example gradients and :class:`opacus.optimizers.DPOptimizer` clips, noises
and scales them. PPP needs its own step only in one place, said here once:
Opacus perturbs every parameter its optimizer holds, so PPP gives Opacus an
optimizer over the deterministic parameters only and updates the others with a
second, plain optimizer. The clipping norm is taken over the perturbed
parameters only (for PPP: the deterministic ones).

Privacy accounting (:func:`epsilon_spent`) is Opacus's RDP accountant. For
full perturbation it is DP-SGD's (epsilon, delta) guarantee for the whole
training run. For PPP it covers only the perturbed gradients: the decoder's and
output layer's gradients are released without noise, and PRECODE's sampling is
not a differential-privacy mechanism, so PPP as a whole has no epsilon. The
paper's exact noise settings were not available; the course's choices are in
:mod:`gleak_edu.sweeps`.

The same machinery serves DP-SGD (:mod:`gleak_edu.defenses.dpsgd`):
:func:`train_perturbed` takes a per-step noise schedule, per-layer clipping
and Wei & Liu's dynamic clipping bound.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Collection, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gleak_edu.precode import VariationalBottleneck, deterministic_parameters, precode_loss

__all__ = [
    "CLIPPINGS",
    "DYNAMIC_CLIP_RANGE",
    "SCOPES",
    "PerturbedTrainResult",
    "epsilon_spent",
    "full_perturbation_gradient",
    "perturbation_scope",
    "perturbed_gradient",
    "ppp_gradient",
    "steps_per_epoch",
    "train_perturbed",
]

SCOPES = ("none", "full", "ppp")


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


def _check_noise(sigma: float, clip) -> tuple[float, float | str]:
    sigma = float(sigma)
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"the noise multiplier sigma must be a finite number >= 0, got {sigma}")
    if isinstance(clip, str):
        if clip != "dynamic":
            raise ValueError(f"the clipping bound C must be a number > 0 or 'dynamic', got {clip!r}")
        return sigma, clip
    clip = float(clip)
    if not math.isfinite(clip) or clip <= 0:
        raise ValueError(f"the clipping bound C must be a finite number > 0 (or 'dynamic'), got {clip}")
    return sigma, clip


def _check_clipping(clipping: str) -> str:
    if clipping not in CLIPPINGS:
        raise ValueError(f"clipping must be one of {CLIPPINGS}, got {clipping!r}")
    return clipping


# The dynamic clipping rule of Wei & Liu: each example's bound is its largest per-layer norm, clamped.
DYNAMIC_CLIP_RANGE = (0.1, 32.0)
CLIPPINGS = ("flat", "per_layer")


def _clip_rule_optimizer():
    """Opacus's DPOptimizer with per-layer clipping and the dynamic bound (built lazily: Opacus imports slowly)."""
    from opacus.optimizers import DPOptimizer
    from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

    class ClipRuleDPOptimizer(DPOptimizer):
        """DPOptimizer whose clipping is flat or per layer, with a fixed or a per-example dynamic bound.

        Opacus clips every example to one bound per step; Wei & Liu's dynamic
        rule gives each example its own (its largest per-layer norm, clamped
        to :data:`DYNAMIC_CLIP_RANGE`), so this step replaces Opacus's
        ``clip_and_accumulate``; the noise (``add_noise``, std sigma times
        ``max_grad_norm``), scaling and the optimizer step stay Opacus's. With
        a dynamic bound, ``max_grad_norm`` is set each step to the batch mean
        of the examples' bounds, as the paper's noise uses it.

        Per-layer clipping follows Opacus's convention, not the paper's: each of
        the P parameter tensors is clipped to C / sqrt(P), so a whole example's
        gradient stays within C and sigma remains the noise multiplier the
        accountant needs (clipping every layer to C, as the paper does, has
        sensitivity C sqrt(P)).
        """

        def __init__(self, optimizer, *, clip, clipping, **kwargs):
            self.clip_rule, self.clipping = clip, clipping
            super().__init__(optimizer, max_grad_norm=1.0 if clip == "dynamic" else clip, **kwargs)

        def clip_and_accumulate(self):
            samples = self.grad_samples
            if len(samples[0]) == 0:
                return super().clip_and_accumulate()
            norms = torch.stack([g.reshape(len(g), -1).norm(2, dim=-1) for g in samples], dim=1)  # [B, P]
            if self.clip_rule == "dynamic":
                bound = norms.max(dim=1).values.clamp(*DYNAMIC_CLIP_RANGE)
                self.max_grad_norm = float(bound.mean())
            else:
                bound = torch.full((norms.shape[0],), float(self.clip_rule))
            if self.clipping == "flat":
                factors = (bound / (norms.norm(2, dim=1) + 1e-6)).clamp(max=1.0)[:, None].expand_as(norms)
            else:
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

    def __init__(self, model, perturbed, sigma, clip, batch_size, seed, optimizer=None, lr=0.0, clipping="flat"):
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
        make = optimizer or (lambda ps: torch.optim.SGD(ps, lr=lr))
        self.gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean")
        self.dp_opt = None
        if self.dp_params:
            common = dict(
                noise_multiplier=sigma, expected_batch_size=batch_size, loss_reduction="mean",
                generator=torch.Generator().manual_seed(int(seed)),
            )
            if clipping == "flat" and clip != "dynamic":
                self.dp_opt = DPOptimizer(make(self.dp_params), max_grad_norm=clip, **common)
            else:
                self.dp_opt = _clip_rule_optimizer()(make(self.dp_params), clip=clip, clipping=clipping, **common)
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
    sigma: float,
    clip: float | str,
    scope: str | Sequence[str] = "ppp",
    clipping: str = "flat",
    seed: int = 0,
) -> "OrderedDict[str, torch.Tensor]":
    """The gradient a FedSGD client shares on (x, y), clipped per example and noised on ``scope``.

    For the parameters in ``scope``: ``(sum_i clip_C(g_i) + N(0, (sigma C)^2 I)) / B``,
    where ``clip_C(g) = g * min(1, C / ||g||)`` and ``||g||`` is example i's
    gradient norm over the parameters in scope (Opacus). For the other
    parameters: the ordinary mean gradient, bit for bit what
    :func:`gleak_edu.fl.client_gradient` returns from the same random state
    (PRECODE's sample comes from the global RNG, as there; the loss is the same
    mean cross-entropy). The model is used in its current mode and is not changed.

    Args:
        model: the victim.
        x: private images float32 ``[B, C, H, W]`` in [0, 1]; y: labels int64 ``[B]``.
        sigma: noise multiplier (>= 0; 0 = clipping only).
        clip: clipping bound C on each example's gradient norm (> 0), or
            ``"dynamic"``: each example's bound is its largest per-tensor norm,
            clamped to :data:`DYNAMIC_CLIP_RANGE`, and the noise uses the
            batch mean of those bounds (Wei & Liu's rule).
        scope: ``"ppp"``, ``"full"``, ``"none"`` or parameter names (:func:`perturbation_scope`).
        clipping: ``"flat"`` (one norm over the scope) or ``"per_layer"``
            (each tensor to C / sqrt(P), P tensors in scope, Opacus's convention).
        seed: seed of the noise (a private generator; the global RNG only drives PRECODE's sampling).

    Returns:
        OrderedDict name -> float32 tensor in ``named_parameters()`` order, like a shared gradient.

    Raises:
        ValueError: bad sigma/C, scope, batch, or a layer Opacus cannot handle (e.g. BatchNorm).
    """
    from gleak_edu.fl import check_batch

    check_batch(model, x, y)
    sigma, clip = _check_noise(sigma, clip)
    _check_clipping(clipping)
    perturbed = perturbation_scope(model, scope)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    saved = {n: p.grad for n, p in model.named_parameters()}
    private = _Private(model, perturbed, sigma, clip, int(x.shape[0]), seed, clipping=clipping)
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


def ppp_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, sigma: float, clip: float, seed: int = 0):
    """PPP's shared gradient: :func:`perturbed_gradient` with ``scope="ppp"`` (PRECODE models only)."""
    return perturbed_gradient(model, x, y, sigma=sigma, clip=clip, scope="ppp", seed=seed)


def full_perturbation_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, sigma: float, clip: float, seed: int = 0):
    """Full perturbation's shared gradient: :func:`perturbed_gradient` with ``scope="full"``."""
    return perturbed_gradient(model, x, y, sigma=sigma, clip=clip, scope="full", seed=seed)


def epsilon_spent(sigma: float, sample_rate: float, steps: int, delta: float = 1e-5, *,
                  dataset_size: int | None = None) -> float:
    """Epsilon at ``delta`` of ``steps`` DP-SGD steps with noise multiplier ``sigma`` and sample rate q (Opacus RDP).

    The checks and the result are :func:`gleak_edu.defenses.epsilon`'s: sigma 0
    (``inf``: no noise, no guarantee) or in [1e-6, 1e6], 0 < q <= 1, steps a
    whole number from 0 (epsilon 0: nothing released) to 10**6, 0 < delta < 0.1
    (a :class:`gleak_edu.defenses.accounting.DeltaWarning` when delta >= 1 /
    ``dataset_size``); the result is >= 0 and finite for sigma > 0.

    Raises:
        ValueError: for any of those out of range, or a failure inside Opacus's accountant.
    """
    from gleak_edu.defenses.accounting import check_history, epsilon

    if not isinstance(steps, bool) and isinstance(steps, (int, float)) and steps == 0:
        # nothing released: epsilon 0; the other arguments are still checked
        check_history([(sigma, sample_rate, 1)], delta, "rdp", dataset_size=dataset_size)
        return 0.0
    return epsilon([(sigma, sample_rate, steps)], delta, "rdp", dataset_size=dataset_size)


@dataclass
class PerturbedTrainResult:
    """Outcome of :func:`train_perturbed`.

    Attributes:
        test_accuracy: share of test images classified correctly, in [0, 1].
        train_loss: mean training loss per epoch (cross-entropy + PRECODE KL).
        seconds: wall time of the training loop.
        steps: optimizer steps taken.
        sample_rate: batch size / training-set size (q).
        epsilon: epsilon at ``delta`` for the perturbed gradients from the
            noise history (Opacus, ``accountant``); ``inf`` without noise,
            ``nan`` when nothing is perturbed. For PPP this is not a guarantee
            for the model (module docstring); with a dynamic clipping bound it
            is not a formal guarantee either (the bound depends on the data).
        delta: the delta of ``epsilon``; accountant: ``"rdp"`` or ``"prv"``.
        perturbed: names of the clipped and noised parameters.
        diverged: the loss became non-finite; training stopped there and the
            model holds the weights of that epoch's start (the accuracy is theirs).
        noise_history: the noise multiplier of every step taken.
        clip_history: the clipping bound of every step (for a dynamic bound, the batch mean).
        step_loss: the training loss of every step.
    """

    test_accuracy: float
    train_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0
    sample_rate: float = 0.0
    epsilon: float = math.nan
    delta: float = 1e-5
    perturbed: list[str] = field(default_factory=list)
    diverged: bool = False
    noise_history: list[float] = field(default_factory=list)
    clip_history: list[float] = field(default_factory=list)
    step_loss: list[float] = field(default_factory=list)
    accountant: str = "rdp"

    @property
    def history(self) -> list[tuple[float, float, int]]:
        """The noise history as Opacus accountant segments ``(sigma, q, steps)``."""
        from gleak_edu.defenses.accounting import history_from_sigmas

        return history_from_sigmas(self.noise_history, self.sample_rate)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps in one epoch of ``n`` examples in batches of ``batch_size`` (the last one smaller)."""
    return math.ceil(n / batch_size)


def train_perturbed(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    sigma: float | Sequence[float],
    clip: float | str,
    scope: str | Sequence[str] = "ppp",
    clipping: str = "flat",
    epochs: int = 2,
    batch_size: int = 64,
    lr: float = 0.2,
    momentum: float = 0.0,
    delta: float = 1e-5,
    accountant: str = "rdp",
    seed: int = 0,
    on_step: Callable[[int, float, nn.Module], None] | None = None,
    on_steps: Collection[int] | None = None,
    after_step: Callable[[int, float, float], None] | None = None,
    progress: bool = False,
) -> PerturbedTrainResult:
    """Train with SGD where the gradients in ``scope`` are DP-SGD-perturbed (PPP, full perturbation, DP-SGD, or none).

    Each step draws a shuffled batch (fixed size, the last one smaller), computes
    per-example gradients (Opacus), clips and noises the ones in ``scope`` as
    :func:`perturbed_gradient` does, and updates with SGD: the perturbed
    parameters through Opacus's DPOptimizer, the others with a plain SGD of the
    same settings (Adam was tried and does not learn under this noise: it
    rescales noise-dominated coordinates to full-size steps). The loss adds
    PRECODE's KL term when the model has a bottleneck. A non-finite loss stops
    training (reported in ``diverged``) instead of raising. With
    ``scope="none"`` it is ordinary training with the same batches. The
    accountant assumes Poisson sampling at rate q = batch_size / N; shuffled
    batches are the usual approximation of it (Opacus allows the same).

    Args:
        model: trained in place, in train mode.
        train, test: (images float32 ``[N, C, H, W]`` in [0, 1], labels int64 ``[N]``).
        sigma: noise multiplier (>= 0), or one per step (a schedule, e.g. from
            :func:`gleak_edu.defenses.noise_schedule`; its length must be
            ``epochs * steps_per_epoch(N, batch_size)``).
        clip: clipping bound C (> 0) or ``"dynamic"`` (see :func:`perturbed_gradient`).
        scope: see :func:`perturbation_scope`; clipping: ``"flat"`` or ``"per_layer"``.
        epochs, batch_size, lr, momentum: the schedule (SGD).
        delta, accountant: of the reported epsilon (``"rdp"`` or ``"prv"``).
        seed: seed of the batch order, PRECODE's sampling and the noise.
        on_step: called as ``on_step(step, sigma_t, snapshot)`` before every
            step (0-based) with a copy of the model as it is then (train
            mode), e.g. to attack what it would share; the random state is
            restored afterwards, so training is the same with or without it.
        on_steps: the steps at which ``on_step`` is called (None: every step);
            the snapshot is only copied at those.
        after_step: called as ``after_step(step, sigma_t, loss)`` after every
            step (live training curves).
        progress: tqdm bar over epochs.

    Returns:
        :class:`PerturbedTrainResult`.

    Raises:
        ValueError: bad schedule, sigma, C, scope, clipping, accountant, or a
            layer Opacus cannot handle.
    """
    from tqdm.auto import tqdm

    from gleak_edu.defenses.accounting import ACCOUNTANTS, check_history, epsilon, history_from_sigmas
    from gleak_edu.training import accuracy

    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    x, y = train
    total = epochs * steps_per_epoch(len(x), batch_size)
    if isinstance(sigma, (int, float)):
        sigmas = [float(sigma)] * total
    else:
        sigmas = [float(v) for v in sigma]
        if len(sigmas) != total:
            raise ValueError(f"the noise schedule has {len(sigmas)} values but training takes {total} steps")
    clip = _check_noise(0.0, clip)[1]
    for v in set(sigmas):
        _check_noise(v, clip)
    _check_clipping(clipping)
    if accountant not in ACCOUNTANTS[:2]:
        raise ValueError(f"accountant must be 'rdp' or 'prv' (a schedule changes sigma), got {accountant!r}")
    # the final accounting's checks, before any training: no run is lost to them
    check_history(history_from_sigmas(sigmas, min(1.0, batch_size / len(x))), delta, accountant)
    perturbed = perturbation_scope(model, scope)
    gen = torch.Generator().manual_seed(int(seed))
    # on_step sees an unwrapped copy: Opacus's hooks on the model must not see its forward passes
    shadow = copy.deepcopy(model) if on_step is not None else None
    private = _Private(
        model, perturbed, sigmas[0], clip, batch_size, seed + 1,
        optimizer=lambda ps: torch.optim.SGD(ps, lr=lr, momentum=momentum), clipping=clipping,
    )
    result = PerturbedTrainResult(math.nan, delta=delta, perturbed=perturbed, accountant=accountant)
    start = time.perf_counter()
    model.train()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            for _ in tqdm(range(epochs), desc="training", disable=not progress, leave=False):
                snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
                perm = torch.randperm(len(x), generator=gen)
                running = 0.0
                for i in range(0, len(x), batch_size):
                    step = result.steps
                    if on_step is not None and (on_steps is None or step in on_steps):
                        shadow.load_state_dict(model.state_dict())
                        shadow.train()
                        with torch.random.fork_rng(devices=[]):
                            on_step(step, sigmas[step], shadow)
                    idx = perm[i : i + batch_size]
                    private.zero_grad()
                    loss = F.cross_entropy(private.gsm(x[idx]), y[idx]) + precode_loss(model)
                    if not torch.isfinite(loss):
                        result.diverged = True
                        break
                    _backward(loss)
                    if private.dp_opt is not None:
                        private.dp_opt.noise_multiplier = sigmas[step]
                    private.step()
                    result.noise_history.append(sigmas[step])
                    result.clip_history.append(private.dp_opt.max_grad_norm if private.dp_opt is not None else math.nan)
                    result.step_loss.append(float(loss.detach()))
                    running += float(loss.detach()) * len(idx)
                    result.steps += 1
                    if after_step is not None:
                        after_step(step, sigmas[step], result.step_loss[-1])
                if result.diverged:
                    # keep the weights of the epoch's start rather than NaN ones
                    model.load_state_dict(snapshot)
                    break
                result.train_loss.append(running / len(x))
    finally:
        private.close()
    result.seconds = time.perf_counter() - start
    result.sample_rate = min(1.0, batch_size / len(x))
    result.epsilon = epsilon(result.history, delta, accountant) if perturbed else math.nan
    result.test_accuracy = accuracy(model, *test)
    return result
