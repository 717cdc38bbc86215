"""What a federated-learning client shares (FedSGD gradients, FedAvg updates), and checks on it.

A *shared gradient* is an ordered mapping ``parameter name -> gradient tensor``
(float32, same shape as the parameter), in ``model.named_parameters()`` order,
exactly as a FedSGD client sends it after one local step on its private batch.
Attacks and defenses take and return this mapping.

A FedAvg client sends an *update* instead: its weights after K local SGD steps
minus the global weights it received (McMahan et al., AISTATS 2017), the same
mapping of names to tensors. :func:`client_update` computes it;
:func:`local_batches` is the order in which a client visits its examples
(what an attacker who unrolls the K steps must know or guess);
:func:`update_as_gradient` is the simple attacker's reading of an update as
one gradient.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Mapping

import torch
from torch import nn
import torch.nn.functional as F

__all__ = [
    "SharedGradient",
    "SharedGradientError",
    "check_batch",
    "check_shared",
    "client_gradient",
    "client_text_gradient",
    "client_update",
    "local_batches",
    "sgd_steps",
    "update_as_gradient",
]

SharedGradient = "OrderedDict[str, torch.Tensor]"


class SharedGradientError(ValueError):
    """A shared gradient that does not fit the model (names, shapes, values)."""


def check_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int | None = None) -> None:
    """Check a private batch: x float ``[B, C, H, W]`` in [0, 1], y int64 ``[B]``.

    Raises:
        TypeError: if x is not a floating tensor or y not an integer tensor.
        ValueError: for wrong dimensions, mismatched batch sizes, pixels outside
            [0, 1], non-finite pixels, or labels outside ``0 .. num_classes - 1``.
    """
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise TypeError("x must be a float tensor of images [B, C, H, W] with pixels in [0, 1]")
    if x.ndim != 4:
        raise ValueError(f"x must have shape [B, C, H, W]; got {tuple(x.shape)} (add a batch dimension with x[None])")
    if not torch.is_tensor(y) or y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError("y must be an int64 tensor of class indices [B]")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must have shape [B] = [{x.shape[0]}]; got {tuple(y.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf pixels")
    if float(x.min()) < 0.0 or float(x.max()) > 1.0:
        raise ValueError(
            f"pixels must lie in [0, 1]; got min {float(x.min()):.3g}, max {float(x.max()):.3g} "
            "(divide 8-bit images by 255)"
        )
    shape = getattr(model, "input_shape", None)
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"the model expects images of shape {tuple(shape)}, got {tuple(x.shape[1:])}")
    k = num_classes if num_classes is not None else getattr(model, "num_classes", None)
    if k is not None and (int(y.min()) < 0 or int(y.max()) >= k):
        raise ValueError(f"labels must lie in 0..{k - 1}; got {y.tolist()}")


def client_gradient(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> "OrderedDict[str, torch.Tensor]":
    """The gradient a FedSGD client shares after one local step on (x, y).

    Args:
        model: the global model (the client and the server both know its weights).
        x: private images, float32 ``[B, C, H, W]`` in [0, 1].
        y: private labels, int64 ``[B]``.
        loss_fn: ``loss_fn(logits, y) -> scalar``; default mean cross-entropy.

    Returns:
        OrderedDict ``name -> float32 tensor`` (detached), one entry per
        parameter that requires grad, in ``named_parameters()`` order.

    Raises:
        TypeError, ValueError: for a malformed batch (see :func:`check_batch`).
    """
    check_batch(model, x, y)
    loss_fn = loss_fn or F.cross_entropy
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    loss = loss_fn(model(x), y)
    grads = torch.autograd.grad(loss, params)
    return OrderedDict((n, g.detach().clone()) for n, g in zip(names, grads))


def local_batches(num_examples: int, local_batch: int, local_steps: int, start: int = 0) -> list[list[int]]:
    """The examples each of a FedAvg client's K local steps uses: in order, wrapping around its data.

    Step k (0-based) takes examples ``(start + k * B + j) mod N`` for ``j < B``: with
    ``B = N`` every step sees the whole local set (full-batch local GD); with
    ``B < N`` the client walks through its set, one epoch every ``N / B``
    steps. A real client usually shuffles; the course's clients do not, so a
    server that unrolls the steps knows which examples went into which step
    (state that assumption when you report an attack).

    Args:
        num_examples: N >= 1, the client's local examples.
        local_batch: B, 1 <= B <= N.
        local_steps: K >= 1, the local SGD steps per round.
        start: where in its data the client resumes (a client that keeps
            walking through its set across rounds starts round r at
            ``(r - 1) * K * B``), >= 0.

    Returns:
        K lists of B example indices.

    Raises:
        ValueError: for N, B or K below 1, B > N, or a negative start.
    """
    for name, v in (("num_examples", num_examples), ("local_batch", local_batch), ("local_steps", local_steps)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"start must be an integer >= 0, got {start!r}")
    if local_batch > num_examples:
        raise ValueError(f"local_batch ({local_batch}) is larger than the client's {num_examples} example(s); "
                         "use a local batch of at most the client's data size")
    return [[(start + k * local_batch + j) % num_examples for j in range(local_batch)] for k in range(local_steps)]


def client_update(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    local_steps: int,
    local_batch: int,
    start: int = 0,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> "OrderedDict[str, torch.Tensor]":
    """The update a FedAvg client sends: its weights after K local SGD steps minus the global weights.

    Plain SGD (no momentum, no weight decay) with step size ``lr`` on the mean
    cross-entropy of each local batch, batches from :func:`local_batches`. With
    ``local_steps=1`` and ``local_batch=len(x)`` the update is exactly
    ``-lr * client_gradient(model, x, y)`` (FedSGD).

    Args:
        model: the global model; it is not changed (the steps run on a copy).
        x: the client's images, float32 ``[N, C, H, W]`` in [0, 1].
        y: its labels, int64 ``[N]``.
        lr: the local step size (> 0, finite), set by the server.
        local_steps: K >= 1; local_batch: B, 1 <= B <= N.
        start: the first example's index (:func:`local_batches`).
        loss_fn: ``loss_fn(logits, y) -> scalar``; default mean cross-entropy.

    Returns:
        OrderedDict ``name -> float32 tensor`` (w_K - w_0), one entry per
        trainable parameter, in ``named_parameters()`` order.

    Raises:
        TypeError, ValueError: for a malformed batch (:func:`check_batch`), a
            non-positive or non-finite ``lr``, or bad K/B (:func:`local_batches`).
    """
    check_batch(model, x, y)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (lr > 0 and lr < float("inf")):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    steps = local_batches(int(x.shape[0]), local_batch, local_steps, start)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    deltas = sgd_steps(model, x, y, lr=lr, steps=steps, loss_fn=loss_fn, create_graph=False)
    return OrderedDict((n, d.detach().clone()) for n, d in zip(names, deltas))


def sgd_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, lr: float, steps, loss_fn=None,
              create_graph: bool = False) -> list[torch.Tensor]:
    """K plain SGD steps from the model's weights, on ``x[steps[k]]`` at step k; returns ``w_K - w_0`` per
    trainable parameter (``named_parameters()`` order). The model is not changed (the steps run on its
    weights through ``torch.func.functional_call``). ``create_graph=True`` keeps every step's graph, so the
    result can be differentiated with respect to x (the unrolled FedAvg attack); no checks here (callers check).
    """
    loss_fn = loss_fn or F.cross_entropy
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    buffers = dict(model.named_buffers())
    w0 = [p.detach() for p in params]
    weights = [w.clone().requires_grad_(True) for w in w0]
    for idx in steps:
        idx = list(idx)
        logits = torch.func.functional_call(model, {**buffers, **dict(zip(names, weights))}, (x[idx],))
        grads = torch.autograd.grad(loss_fn(logits, y[idx]), weights, create_graph=create_graph)
        weights = [w - lr * g for w, g in zip(weights, grads)]
        if not create_graph:
            weights = [w.detach().requires_grad_(True) for w in weights]
    return [w - w_ for w, w_ in zip(weights, w0)]


def update_as_gradient(update: Mapping[str, torch.Tensor], *, lr: float, local_steps: int) -> "OrderedDict[str, torch.Tensor]":
    """Read a FedAvg update as one gradient: ``update / (-lr * K)``, the simple attacker's approximation.

    Exact for K = 1 (FedSGD); for K > 1 it is the mean of the K local gradients,
    each taken at a different point of the client's trajectory, which the
    attack then treats as one gradient at the global weights (Geiping et al.,
    NeurIPS 2020, section 6).

    Raises:
        ValueError: for a non-positive ``lr`` or ``local_steps``.
    """
    if not (isinstance(lr, (int, float)) and lr > 0) or not (isinstance(local_steps, int) and local_steps >= 1):
        raise ValueError(f"lr must be > 0 and local_steps an integer >= 1, got {lr!r} and {local_steps!r}")
    scale = -1.0 / (float(lr) * local_steps)
    return OrderedDict((n, u * scale) for n, u in update.items())


def client_text_gradient(model: nn.Module, tokens: torch.Tensor, label: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
    """The gradient a client shares after one step on one sentence (a :class:`~gleak_edu.models.TinyTransformer`).

    Args:
        tokens: int64 ``[L]`` or ``[1, L]`` token ids; label: int64 ``[1]`` (or an int) class.

    Returns:
        OrderedDict name -> float32 tensor (mean cross-entropy), in ``named_parameters()`` order.

    Raises:
        ValueError: for an empty sentence, one longer than the model's context, ids outside the vocabulary.
    """
    tokens = torch.as_tensor(tokens, dtype=torch.int64)
    tokens = tokens[None] if tokens.ndim == 1 else tokens
    if tokens.ndim != 2 or tokens.shape[0] != 1 or tokens.shape[1] == 0:
        raise ValueError(f"give one non-empty sentence of token ids [L]; got shape {tuple(tokens.shape)}")
    label = torch.as_tensor(label, dtype=torch.int64).reshape(1)
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    grads = torch.autograd.grad(F.cross_entropy(model(tokens), label), params)
    return OrderedDict((n, g.detach().clone()) for n, g in zip(names, grads))


def check_shared(model: nn.Module, shared: Mapping[str, torch.Tensor]) -> None:
    """Check that ``shared`` is a gradient of ``model``: same names, order, shapes, float32/float64, finite.

    Raises:
        SharedGradientError: naming the first missing, unexpected or misshapen
            parameter, the first of another dtype (int, bool, half, complex),
            or the first parameter with NaN/inf entries.
    """
    if not isinstance(shared, Mapping):
        raise SharedGradientError(
            f"shared must be a mapping parameter name -> gradient tensor, got {type(shared).__name__}"
        )
    expected = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    names = list(shared.keys())
    for i, (name, param) in enumerate(expected):
        if name not in shared:
            raise SharedGradientError(
                f"the shared gradient has no entry for model parameter {name!r} "
                f"(it has {names[:4]}{'...' if len(names) > 4 else ''}); was it computed on another model?"
            )
        g = shared[name]
        if not torch.is_tensor(g):
            raise SharedGradientError(f"shared[{name!r}] is a {type(g).__name__}, not a tensor")
        if g.dtype not in (torch.float32, torch.float64):
            raise SharedGradientError(
                f"shared[{name!r}] has dtype {g.dtype}; a shared gradient is a float32 or float64 tensor "
                "(convert with {name: g.float() for name, g in shared.items()})"
            )
        if tuple(g.shape) != tuple(param.shape):
            raise SharedGradientError(
                f"shared[{name!r}] has shape {tuple(g.shape)} but the model parameter has shape "
                f"{tuple(param.shape)}; was it computed on another model or input size?"
            )
        if not torch.isfinite(g).all():
            raise SharedGradientError(
                f"shared[{name!r}] contains NaN or inf values; a gradient must be finite "
                "(check the defense's parameters)"
            )
    extra = [n for n in names if n not in dict(expected)]
    if extra:
        raise SharedGradientError(
            f"the shared gradient has entry {extra[0]!r}, which is not a trainable parameter of the model"
        )
