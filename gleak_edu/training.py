"""Short, seeded training runs on the offline sets (for the accuracy side of each defense)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from gleak_edu.data import ImageSet
from gleak_edu.precode import precode_loss

__all__ = ["TrainResult", "split", "train_classifier", "accuracy", "noisy_sgd"]


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
) -> TrainResult:
    """Train with Adam on cross-entropy (+ PRECODE's ``beta * KL`` if the model has a bottleneck).

    Args:
        model: any classifier; trained in place, in train mode.
        train, test: (images float32 ``[N, C, H, W]`` in [0, 1], labels int64 ``[N]``).
        epochs, batch_size, lr: the schedule (a short one: this is a teaching run).
        seed: seed of the batch order and of PRECODE's samples (the global RNG
            is left as it was).
        progress: show a tqdm bar over epochs.

    Returns:
        :class:`TrainResult` with the test accuracy after training.

    Raises:
        ValueError: for non-positive epochs or batch size.
    """
    import time


    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    x, y = train
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    start = time.perf_counter()
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        losses = _epochs(model, opt, x, y, gen, epochs, batch_size, progress)
    return TrainResult(accuracy(model, *test), losses, time.perf_counter() - start)


def _epochs(model, opt, x, y, gen, epochs, batch_size, progress) -> list[float]:
    from tqdm.auto import tqdm

    losses = []
    for _ in tqdm(range(epochs), desc="training", disable=not progress, leave=False):
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
        losses.append(total / count)
    return losses


def noisy_sgd(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    sigma: float,
    clip: float = 1.0,
    steps: int = 300,
    lr: float = 0.1,
    batch_size: int = 16,
    seed: int = 0,
    eval_every: int = 10,
) -> list[tuple[int, float]]:
    """SGD whose every step uses a clipped, Gaussian-noised minibatch gradient; returns the training-loss curve.

    Each step: the mean cross-entropy gradient of a random minibatch, clipped
    to L2 norm C over all parameters, plus N(0, (sigma C / B)^2) per
    coordinate (the noise DP-SGD puts on a batch mean), then ``w -= lr * g``.
    The noise is unbiased with variance V = d (sigma C / B)^2 for d
    parameters: the setting of the standard bound for L-smooth losses,
    (1/T) sum E||grad f||^2 <= 2 (f0 - f*) / (lr T) + lr L V.

    Args:
        model: trained in place; inputs: anything the model takes (e.g. tokens
            ``[N, L]``); labels: int64 ``[N]``.
        sigma: noise multiplier (>= 0); clip: C (> 0).
        steps, lr, batch_size: the schedule; seed: of the batches and the noise.
        eval_every: the full training loss is recorded every this many steps.

    Returns:
        ``[(step, mean training loss over all inputs)]``, from step 0.

    Raises:
        ValueError: for sigma < 0, C <= 0, or non-positive steps, lr, batch size.
    """
    if not sigma >= 0 or not clip > 0 or steps < 1 or not lr > 0 or batch_size < 1:
        raise ValueError("need sigma >= 0, clip > 0, steps >= 1, lr > 0 and batch_size >= 1")
    gen = torch.Generator().manual_seed(int(seed))
    params = [p for p in model.parameters() if p.requires_grad]

    @torch.no_grad()
    def full_loss() -> float:
        return float(F.cross_entropy(model(inputs), labels))

    curve = [(0, full_loss())]
    for step in range(1, steps + 1):
        idx = torch.randint(len(labels), (min(batch_size, len(labels)),), generator=gen)
        grads = torch.autograd.grad(F.cross_entropy(model(inputs[idx]), labels[idx]), params)
        norm = float(torch.sqrt(sum(g.pow(2).sum() for g in grads)))
        factor = min(1.0, clip / (norm + 1e-12))
        with torch.no_grad():
            for p, g in zip(params, grads):
                noise = torch.randn(g.shape, generator=gen) * (sigma * clip / len(idx))
                p -= lr * (g * factor + noise)
        if step % eval_every == 0 or step == steps:
            curve.append((step, full_loss()))
    return curve
