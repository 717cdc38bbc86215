"""Attacking a FedAvg update: unroll the client's K local SGD steps on dummy data and match the update.

A FedAvg client (McMahan et al., AISTATS 2017) sends ``w_K - w_0`` after K
local SGD steps of size eta on batches of its N examples. Read as one gradient
(``update / (-eta K)``, :func:`gleak_edu.fl.update_as_gradient`) it is only
exact for K = 1. The stronger attacker (Geiping et al., NeurIPS 2020,
section 6 "Federated averaging"; breaching's ``_grad_fn_multi_step``) repeats
the client's K steps on dummy images, differentiably, and matches the update
it would have produced with Inverting Gradients' cosine objective and TV prior.

What the attacker must know: eta and K (a server sent them), the model (the
global weights it sent), the local batch size and which examples went into
which step (:func:`gleak_edu.fl.local_batches`: the course's clients walk
through their data in order; a shuffling client leaves the attacker to guess),
and the labels (read off the output bias of the update for one image; given
for several).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import nn

from gleak_edu.attacks._common import (
    AttackOptions,
    AttackResult,
    Callback,
    Recorder,
    check_hyper,
    check_input_shape,
    check_num_classes,
    check_truth,
    keeps_model,
    options_of,
)
from gleak_edu.attacks.grnn import total_variation
from gleak_edu.fl import check_shared, local_batches, sgd_steps
from gleak_edu.models import output_layer

__all__ = ["fedavg_label", "fedavg_unrolled", "unrolled_update"]


def fedavg_label(model: nn.Module, update: Mapping[str, torch.Tensor]) -> int:
    """The label of a one-image FedAvg update: the largest entry of the output layer's bias update.

    Each local step moves the bias by ``-eta (softmax - onehot)``: up for the
    true class only, so after K steps on the same image the true class still
    has the only positive entry (exact for one image; for several images the
    classes present share the positive entries and this rule reads only one).

    Raises:
        ValueError: if the model's output layer has no bias.
    """
    name, layer = output_layer(model)
    if layer.bias is None:
        raise ValueError("the output layer has no bias: give the labels (the bias update is what this rule reads)")
    return int(update[f"{name}.bias"].argmax())


def unrolled_update(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, lr: float,
                    steps: Sequence[Sequence[int]], create_graph: bool = True) -> list[torch.Tensor]:
    """The update (w_K - w_0) K local SGD steps on (x, y) produce, differentiable in x
    (:func:`gleak_edu.fl.sgd_steps`, the same steps as the client's :func:`gleak_edu.fl.client_update`).

    Args:
        model: the global model (its weights are w_0; not changed).
        x: float32 ``[N, C, H, W]`` (dummy or real images; keeps its graph).
        y: int64 ``[N]``.
        lr: the local step size eta.
        steps: the examples of each step (:func:`gleak_edu.fl.local_batches`).
        create_graph: keep the graph of every step (needed to differentiate
            the result with respect to x).

    Returns:
        one tensor per trainable parameter, in ``named_parameters()`` order.
    """
    return sgd_steps(model, x, y, lr=lr, steps=steps, create_graph=create_graph)


@keeps_model
def fedavg_unrolled(
    model: nn.Module,
    update: Mapping[str, torch.Tensor],
    *,
    input_shape: Sequence[int],
    num_classes: int,
    lr: float,
    local_steps: int,
    local_batch: int,
    start: int = 0,
    labels: torch.Tensor | None = None,
    iterations: int = 300,
    step_size: float = 0.1,
    tv_weight: float = 1e-4,
    seed: int = 0,
    truth: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
    callback: Callback | None = None,
    options: AttackOptions | None = None,
) -> AttackResult:
    """The unrolled FedAvg attack (Geiping et al., NeurIPS 2020, section 6): match an update, not a gradient.

    The objective is ``1 - <u(x), u*> / (||u(x)|| ||u*||) + tv_weight * TV(x)``:
    u* is the client's update, u(x) the update the same K local SGD steps
    (step size ``lr``, batches of :func:`gleak_edu.fl.local_batches`) give
    on the dummy images x. As in :func:`gleak_edu.attacks.inverting_gradients`,
    x starts uniform in [0, 1] (from ``seed``), Adam (``step_size``) follows
    the sign of its gradient, the step size is divided by 10 at 3/8, 5/8 and
    7/8 of the run, and x is clamped to [0, 1]. With K = 1 and one batch this
    *is* Inverting Gradients on the update read as a gradient (the cosine
    ignores the factor -eta). Each evaluation costs K forward passes and K
    double backward passes.

    Args:
        model: the global model the client started from (``w_0``).
        update: the client's update ``w_K - w_0``, an OrderedDict name ->
            float32 tensor like a shared gradient (:func:`gleak_edu.fl.client_update`).
        input_shape: ``(N, C, H, W)``: the client's N examples.
        num_classes: the model's classes.
        lr: the client's local step size eta (the server sent it).
        local_steps: K >= 1; local_batch: B, 1 <= B <= N (the server sent them).
        start: index of the first example the client used (0 when the N
            dummy images are exactly the K*B the round touched, in order).
        labels: int64 ``[N]``; None for one image (read with :func:`fedavg_label`).
        iterations: Adam steps (300).
        step_size: Adam's step size (0.1, Inverting Gradients').
        tv_weight: the total variation prior's weight (1e-4, as the course's IG).
        seed: the dummy images' start.
        truth: the client's images ``[N, C, H, W]`` (or ``(images, labels)``),
            only for the reported PSNR/SSIM.
        callback: receives an :class:`AttackState` every 50 steps; a true
            return value stops the attack.
        options: :class:`AttackOptions`; ``restarts`` run one after another
            (each from its own start), the lowest final matching loss wins.

    Returns:
        :class:`AttackResult` with ``attack`` ``"FedAvg unrolled"``, pixels in [0, 1].

    Raises:
        ValueError: for several images without ``labels``, bad K/B/N
            (:func:`gleak_edu.fl.local_batches`), a non-positive ``lr``, or bad
            hyperparameters. SharedGradientError: if ``update`` does not match
            the model (names, shapes, finite values).
        CallbackError, AttackInterrupted: as for :func:`gleak_edu.attacks.dlg`.
    """
    options = options_of(options)
    callback_every, metrics_every = options.every(50, 100)
    n, c, h, w = check_input_shape(input_shape, model)
    check_num_classes(model, num_classes)
    iterations = check_hyper(iterations, step_size, tv_weight=tv_weight)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (0 < lr < math.inf):
        raise ValueError(f"lr (the client's local step size) must be a finite number > 0, got {lr!r}")
    steps = local_batches(n, local_batch, local_steps, start)
    check_shared(model, update)
    true_images, true_labels = check_truth(truth, (n, c, h, w))
    if labels is None:
        if n != 1:
            raise ValueError(f"give the labels of the client's {n} examples (labels=...): the bias rule reads one label")
        labels = torch.tensor([fedavg_label(model, update)], dtype=torch.int64)
    labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
    if labels.numel() != n or bool((labels < 0).any()) or bool((labels >= num_classes).any()):
        raise ValueError(f"labels must be {n} class indices in 0..{num_classes - 1}, got {labels.tolist()}")
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    target = [update[name].detach().float() for name in names]
    target_norm = math.sqrt(sum(float((t * t).sum()) for t in target))
    if target_norm == 0:
        raise ValueError("the update is all zeros: there is nothing to match (did the client train?)")
    rec = Recorder("FedAvg unrolled", truth=true_images, callback=callback, callback_every=callback_every,
                   metrics_every=metrics_every, progress=options.progress, iterations=iterations)
    milestones = [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    gen = torch.Generator().manual_seed(int(seed))
    per_restart = []
    it = 0
    message = f"{options.restarts} restart(s) of {iterations} steps"
    rec.resume()
    with rec.interruptible():
        for r in range(options.restarts):
            x = torch.rand((n, c, h, w), generator=gen).requires_grad_(True)
            opt = torch.optim.Adam([x], lr=step_size)
            last = math.inf
            for it in range(1, iterations + 1):
                guess = unrolled_update(model, x, labels, lr=float(lr), steps=steps)
                dot = sum((g * t).sum() for g, t in zip(guess, target))
                norm = torch.sqrt(sum((g * g).sum() for g in guess))
                cos = 1 - dot / (norm * target_norm + 1e-12)
                objective = cos + tv_weight * total_variation(x)
                (gx,) = torch.autograd.grad(objective, x)
                rec.evaluations += 1
                last = float(cos.detach())
                with torch.no_grad():
                    x.grad = gx.sign()
                    opt.param_groups[0]["lr"] = step_size * 0.1 ** sum(it > m for m in milestones)
                    opt.step()
                    x.clamp_(0, 1)
                if rec.record(it, last, x, labels):
                    message = f"stopped by the callback at iteration {it}"
                    break
            rec.offer(last, x.detach(), lambda: labels.clone())  # keep each run's final iterate, as IG
            per_restart.append({"restart": r, "loss": last})
            if rec.callback_error is not None or message.startswith("stopped"):
                break
    rec.close()
    if rec.best is None:  # interrupted before the first step ended: the random start
        rec.offer(math.inf, x.detach(), lambda: labels.clone())
    message = rec.stop_note(it) or message
    note = f"{message}; K={len(steps)} local steps of {len(steps[0])} example(s), lr={lr:g}; " \
           f"kept the lowest final matching loss ({rec.best_loss:.3g})"
    result = rec.result(it, False, note, true_labels)
    result.restarts = options.restarts
    result.per_restart = per_restart
    return rec.finish(result)
