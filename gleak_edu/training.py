"""Short, seeded training runs on the offline sets (for the accuracy side of each defense), and the one training callback type.

Every training loop of the package (:func:`train_classifier`, :func:`noisy_sgd`,
:func:`gleak_edu.defenses.train_perturbed`, :func:`gleak_edu.defenses.train_dp`)
takes ``callback``: a function called after every optimizer step with a
:class:`TrainState`. The callback runs with the global random state saved and
restored around it, and the model is put back in train mode afterwards, so a
callback that evaluates the model (or attacks it) does not change the training.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from gleak_edu.data import ImageSet
from gleak_edu.precode import precode_loss

__all__ = ["TrainResult", "TrainState", "split", "train_classifier", "accuracy", "noisy_sgd"]


@dataclass(kw_only=True)
class TrainState:
    """What a training loop tells its ``callback`` after each optimizer step.

    Attributes:
        step: the step just taken, 0-based, counted over the whole run.
        epoch: the epoch it belongs to, 0-based (for :func:`noisy_sgd`, which
            samples with replacement: ``step * batch_size // N``).
        loss: the training loss of that step's batch (cross-entropy plus any PRECODE KL term), a float.
        noise_multiplier: sigma of the step's Gaussian noise, relative to the
            clipping bound (noise std = noise_multiplier * max_grad_norm); 0 without noise.
        max_grad_norm: the clipping bound C applied at this step (for dynamic
            clipping, the batch mean of the examples' bounds); None without clipping.
        model: the live model (do not keep it: it keeps training; its mode is restored after the callback).
            Forward passes in the callback are safe: Opacus's per-example hooks
            are off while it runs.
        checkpoint: :func:`gleak_edu.defenses.train_dp` only: the attack checkpoint
            finished at this step (a dict, see :class:`gleak_edu.defenses.DPRun`), else None.
    """

    step: int
    epoch: int
    loss: float
    noise_multiplier: float
    max_grad_norm: float | None
    model: nn.Module
    checkpoint: dict | None = None


#: A training callback: called with a :class:`TrainState` after every step; its return value is ignored.
TrainCallback = Callable[[TrainState], Any]


def _notify(callback: TrainCallback | None, state: TrainState) -> None:
    """Call ``callback(state)`` without letting it change the training: random state kept, the model's mode restored."""
    if callback is None:
        return
    was_training = state.model.training
    with torch.random.fork_rng(devices=[]):
        callback(state)
    state.model.train(was_training)


@dataclass
class TrainResult:
    """Outcome of :func:`train_classifier`.

    Attributes:
        test_accuracy: share of test images classified correctly, in [0, 1].
        train_loss: mean training loss (cross-entropy plus any PRECODE KL term) per epoch.
        seconds: wall time of the training loop.
    """

    test_accuracy: float
    train_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0


def split(images: ImageSet, test_fraction: float = 0.2, seed: int = 0) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """A seeded random split into ((x_train, y_train), (x_test, y_test)).

    Raises:
        ValueError: if ``test_fraction`` is not strictly between 0 and 1.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(int(seed)))
    n_test = max(1, int(round(test_fraction * len(images))))
    test, train = perm[:n_test], perm[n_test:]
    return (images.images[train], images.labels[train]), (images.images[test], images.labels[test])


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Test accuracy in [0, 1], with the model in eval mode (PRECODE uses its mean), mode restored."""
    was_training = model.training
    model.eval()
    try:
        correct = sum(int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum()) for i in range(0, len(x), batch_size))
    finally:
        model.train(was_training)
    return correct / len(x)


def train_classifier(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    callback: TrainCallback | None = None,
) -> TrainResult:
    """Train with Adam on cross-entropy (+ PRECODE's ``beta * KL`` if the model has a bottleneck).

    Args:
        model: any classifier; trained in place, in train mode.
        train, test: (images float32 ``[N, C, H, W]`` in [0, 1], labels int64 ``[N]``).
        epochs, batch_size, lr: the schedule (a short one: this is a teaching run).
        seed: seed of the batch order and of PRECODE's samples (the global RNG
            is left as it was).
        progress: show a tqdm bar over epochs.
        callback: called with a :class:`TrainState` after every step
            (noise_multiplier 0, max_grad_norm None: no DP here).

    Returns:
        :class:`TrainResult` with the test accuracy after training.

    Raises:
        ValueError: for non-positive epochs or batch size.
    """
    from tqdm.auto import tqdm

    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    x, y = train
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses: list[float] = []
    start = time.perf_counter()
    model.train()
    step = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for epoch in tqdm(range(epochs), desc="training", disable=not progress, leave=False):
            perm = torch.randperm(len(x), generator=gen)
            total, count = 0.0, 0
            for i in range(0, len(x), batch_size):
                idx = perm[i : i + batch_size]
                opt.zero_grad()
                loss = F.cross_entropy(model(x[idx]), y[idx]) + precode_loss(model)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                count += len(idx)
                _notify(callback, TrainState(step=step, epoch=epoch, loss=float(loss.detach()), noise_multiplier=0.0,
                                             max_grad_norm=None, model=model))
                step += 1
            losses.append(total / count)
    return TrainResult(accuracy(model, *test), losses, time.perf_counter() - start)


def noisy_sgd(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    noise_multiplier: float,
    max_grad_norm: float = 1.0,
    steps: int = 300,
    lr: float = 0.1,
    batch_size: int = 16,
    seed: int = 0,
    eval_every: int = 10,
    callback: TrainCallback | None = None,
) -> list[tuple[int, float]]:
    """DP-SGD written out in a few lines, for any model; returns the training-loss curve.

    Each step (Abadi et al., 2016, Algorithm 1): draw a minibatch of B
    examples (uniformly, with replacement), compute every example's gradient
    g_i (one backward pass per example, so it works for any model, e.g. the
    tiny transformer, whose position table Opacus cannot handle), clip each to
    L2 norm at most C = ``max_grad_norm`` (``g_i * min(1, C / ||g_i||)``), sum,
    add N(0, (sigma C)^2) per coordinate (sigma = ``noise_multiplier``), divide
    by B and step, ``w -= lr * g``. The noise on the mean thus has std
    sigma C / B per coordinate, variance V = d (sigma C / B)^2 over d
    parameters: the setting of the standard bound for L-smooth losses,
    (1/T) sum E||grad f||^2 <= 2 (f0 - f*) / (lr T) + lr L V (plus the bias
    clipping adds). The loss adds PRECODE's KL term when the model has a bottleneck.

    Args:
        model: trained in place, in its current mode; inputs: anything the
            model takes (e.g. tokens int64 ``[N, L]``); labels: int64 ``[N]``.
        noise_multiplier: sigma (>= 0), relative to C: noise std = noise_multiplier * max_grad_norm.
        max_grad_norm: C, the bound on each example's gradient norm (> 0).
        steps, lr, batch_size: the schedule; seed: of the batches and the noise.
        eval_every: the full training loss is recorded every this many steps.
        callback: called with a :class:`TrainState` after every step.

    Returns:
        ``[(step, mean training loss over all inputs)]``, from step 0 (before training).

    Raises:
        ValueError: for noise_multiplier < 0, max_grad_norm <= 0, or non-positive steps, lr, batch size or eval_every.
    """
    sigma, bound = float(noise_multiplier), float(max_grad_norm)
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"noise_multiplier must be a finite number >= 0 (noise std = noise_multiplier * C), got {noise_multiplier}")
    if not (math.isfinite(bound) and bound > 0):
        raise ValueError(f"max_grad_norm (the per-example clipping bound C) must be a finite number > 0, got {max_grad_norm}")
    if steps < 1 or not lr > 0 or batch_size < 1 or eval_every < 1:
        raise ValueError(f"need steps >= 1, lr > 0, batch_size >= 1 and eval_every >= 1, got {steps}, {lr}, {batch_size}, {eval_every}")
    gen = torch.Generator().manual_seed(int(seed))
    params = [p for p in model.parameters() if p.requires_grad]
    n = len(labels)
    b = min(int(batch_size), n)

    @torch.no_grad()
    def full_loss() -> float:
        return float(F.cross_entropy(model(inputs), labels))

    curve = [(0, full_loss())]
    for step in range(steps):
        idx = torch.randint(n, (b,), generator=gen)
        summed = [torch.zeros_like(p) for p in params]
        batch_loss = 0.0
        for i in idx.tolist():
            loss = F.cross_entropy(model(inputs[i : i + 1]), labels[i : i + 1]) + precode_loss(model)
            grads = torch.autograd.grad(loss, params)
            norm = float(torch.sqrt(sum(g.pow(2).sum() for g in grads)))
            factor = min(1.0, bound / (norm + 1e-6))  # Opacus's clipping factor
            for s, g in zip(summed, grads):
                s.add_(g, alpha=factor)
            batch_loss += float(loss.detach())
        with torch.no_grad():
            for p, s in zip(params, summed):
                noise = torch.randn(s.shape, generator=gen, dtype=s.dtype) * (sigma * bound)
                p -= lr * (s + noise) / b
        _notify(callback, TrainState(step=step, epoch=step * b // n, loss=batch_loss / b, noise_multiplier=sigma,
                                     max_grad_norm=bound, model=model))
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            curve.append((step + 1, full_loss()))
    return curve
