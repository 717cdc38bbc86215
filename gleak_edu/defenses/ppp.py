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
"""

from __future__ import annotations

import math
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gleak_edu.defenses.precode import VariationalBottleneck, deterministic_parameters, precode_loss

__all__ = [
    "SCOPES",
    "PerturbedTrainResult",
    "epsilon_spent",
    "full_perturbation_gradient",
    "perturbation_scope",
    "perturbed_gradient",
    "ppp_gradient",
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


def _check_noise(sigma: float, clip: float) -> tuple[float, float]:
    sigma, clip = float(sigma), float(clip)
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"the noise multiplier sigma must be a finite number >= 0, got {sigma}")
    if not math.isfinite(clip) or clip <= 0:
        raise ValueError(f"the clipping bound C must be a finite number > 0, got {clip}")
    return sigma, clip


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

    def __init__(self, model, perturbed, sigma, clip, batch_size, seed, optimizer=None, lr=0.0):
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
            self.dp_opt = DPOptimizer(
                make(self.dp_params), noise_multiplier=sigma, max_grad_norm=clip,
                expected_batch_size=batch_size, loss_reduction="mean",
                generator=torch.Generator().manual_seed(int(seed)),
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
    sigma: float,
    clip: float,
    scope: str | Sequence[str] = "ppp",
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
        clip: clipping bound C on each example's gradient norm (> 0).
        scope: ``"ppp"``, ``"full"``, ``"none"`` or parameter names (:func:`perturbation_scope`).
        seed: seed of the noise (a private generator; the global RNG only drives PRECODE's sampling).

    Returns:
        OrderedDict name -> float32 tensor in ``named_parameters()`` order, like a shared gradient.

    Raises:
        ValueError: bad sigma/C, scope, batch, or a layer Opacus cannot handle (e.g. BatchNorm).
    """
    from gleak_edu.fl import check_batch

    check_batch(model, x, y)
    sigma, clip = _check_noise(sigma, clip)
    perturbed = perturbation_scope(model, scope)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    saved = {n: p.grad for n, p in model.named_parameters()}
    private = _Private(model, perturbed, sigma, clip, int(x.shape[0]), seed)
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


def epsilon_spent(sigma: float, sample_rate: float, steps: int, delta: float = 1e-5) -> float:
    """Epsilon at ``delta`` of ``steps`` DP-SGD steps with noise multiplier ``sigma`` and sample rate q (Opacus RDP).

    Returns ``inf`` for sigma 0 (no noise, no guarantee) and 0 for no steps.

    Raises:
        ValueError: for sigma < 0, q outside (0, 1], negative steps, or delta outside (0, 1).
    """
    from opacus.accountants import RDPAccountant

    if not sigma >= 0 or not 0 < sample_rate <= 1 or steps < 0 or not 0 < delta < 1:
        raise ValueError(
            f"need sigma >= 0, 0 < sample_rate <= 1, steps >= 0, 0 < delta < 1; got {sigma}, {sample_rate}, {steps}, {delta}"
        )
    if steps == 0:
        return 0.0
    if sigma == 0:
        return math.inf
    acc = RDPAccountant()
    acc.history = [(float(sigma), float(sample_rate), int(steps))]
    with warnings.catch_warnings():
        # at the ends of the sigma range the best RDP order is an end of Opacus's grid; the bound is still valid
        warnings.filterwarnings("ignore", message="Optimal order is the")
        return float(acc.get_epsilon(delta))


@dataclass
class PerturbedTrainResult:
    """Outcome of :func:`train_perturbed`.

    Attributes:
        test_accuracy: share of test images classified correctly, in [0, 1].
        train_loss: mean training loss per epoch (cross-entropy + PRECODE KL).
        seconds: wall time of the training loop.
        steps: optimizer steps taken.
        sample_rate: batch size / training-set size (q).
        epsilon: Opacus RDP epsilon at ``delta`` for the perturbed gradients
            (``inf`` without noise, ``nan`` when nothing is perturbed). For PPP
            this is not a guarantee for the model (module docstring).
        delta: the delta of ``epsilon``.
        perturbed: names of the clipped and noised parameters.
        diverged: the loss became non-finite; training stopped there and the
            model holds the weights of that epoch's start (the accuracy is theirs).
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


def train_perturbed(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    sigma: float,
    clip: float,
    scope: str | Sequence[str] = "ppp",
    epochs: int = 2,
    batch_size: int = 64,
    lr: float = 0.2,
    momentum: float = 0.0,
    delta: float = 1e-5,
    seed: int = 0,
    progress: bool = False,
) -> PerturbedTrainResult:
    """Train with Adam where the gradients in ``scope`` are DP-SGD-perturbed (PPP, full perturbation, or none).

    Each step draws a shuffled batch (fixed size, the last one smaller), computes
    per-example gradients (Opacus), clips and noises the ones in ``scope`` as
    :func:`perturbed_gradient` does, and updates with SGD: the perturbed
    parameters through Opacus's DPOptimizer, the others with a plain SGD of the
    same settings (Adam was tried and does not learn under this noise: it
    rescales noise-dominated coordinates to full-size steps). The loss adds
    PRECODE's KL term when the model has a bottleneck. A non-finite loss stops
    training (reported in ``diverged``) instead of raising. With
    ``scope="none"`` it is ordinary training with the same batches, so the
    four defenses of notebook 04 differ only in their perturbation. The
    accountant assumes Poisson sampling at rate q = batch_size / N; shuffled
    batches are the usual approximation of it (Opacus allows the same).

    Args:
        model: trained in place, in train mode.
        train, test: (images float32 ``[N, C, H, W]`` in [0, 1], labels int64 ``[N]``).
        sigma: noise multiplier (>= 0); clip: clipping bound C (> 0).
        scope: see :func:`perturbation_scope`.
        epochs, batch_size, lr, momentum: the schedule (SGD).
        delta: delta of the reported epsilon.
        seed: seed of the batch order, PRECODE's sampling and the noise.
        progress: tqdm bar over epochs.

    Returns:
        :class:`PerturbedTrainResult`.

    Raises:
        ValueError: bad schedule, sigma, C, scope, or a layer Opacus cannot handle.
    """
    from tqdm.auto import tqdm

    from gleak_edu.training import accuracy

    sigma, clip = _check_noise(sigma, clip)
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    x, y = train
    perturbed = perturbation_scope(model, scope)
    gen = torch.Generator().manual_seed(int(seed))
    private = _Private(model, perturbed, sigma, clip, batch_size, seed + 1, optimizer=lambda ps: torch.optim.SGD(ps, lr=lr, momentum=momentum))
    losses, steps, diverged = [], 0, False
    start = time.perf_counter()
    model.train()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            for _ in tqdm(range(epochs), desc="training", disable=not progress, leave=False):
                snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
                perm = torch.randperm(len(x), generator=gen)
                total = 0.0
                for i in range(0, len(x), batch_size):
                    idx = perm[i : i + batch_size]
                    private.zero_grad()
                    loss = F.cross_entropy(private.gsm(x[idx]), y[idx]) + precode_loss(model)
                    if not torch.isfinite(loss):
                        diverged = True
                        break
                    _backward(loss)
                    private.step()
                    total += float(loss.detach()) * len(idx)
                    steps += 1
                if diverged:
                    # keep the weights of the epoch's start rather than NaN ones
                    model.load_state_dict(snapshot)
                    break
                losses.append(total / len(x))
    finally:
        private.close()
    q = min(1.0, batch_size / len(x))
    eps = epsilon_spent(sigma, q, steps, delta) if perturbed else math.nan
    return PerturbedTrainResult(
        accuracy(model, *test), losses, time.perf_counter() - start, steps, q, eps, delta, perturbed, diverged
    )
