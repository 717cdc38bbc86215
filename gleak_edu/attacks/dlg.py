"""DLG and iDLG: reconstruct a private batch from one shared gradient.

- DLG, "Deep Leakage from Gradients" (Zhu, Liu, Han, NeurIPS 2019): optimise a
  dummy image and dummy label logits jointly so that their gradient matches the
  shared one (squared L2 distance summed over layers), with L-BFGS.
- iDLG, "improved DLG" (Zhao, Mopuri, Bilen, 2020): read the label off the
  output layer's gradient analytically, then optimise the image only.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gleak_edu.attacks._chain import gradient_fn
from gleak_edu.attacks._common import AttackResult, Callback, Recorder, check_input_shape, check_num_classes, fast_attack_mode
from gleak_edu.attacks._lbfgs import LBFGS
from gleak_edu.fl import check_shared
from gleak_edu.models import output_layer

__all__ = ["dlg", "idlg", "idlg_label"]


def idlg_label(model: nn.Module, shared: Mapping[str, torch.Tensor]) -> int:
    """The true label of a single image, read from the output layer's gradient (iDLG).

    With cross-entropy on a one-hot label, batch size 1 and non-negative inputs to
    the output layer (after a sigmoid or ReLU), row c of dL/dW_out equals
    ``(softmax_c - onehot_c) * h``. Only the true class has ``softmax_c - 1 < 0``,
    so its row is the only one with a negative sum: the label is
    ``argmin_c sum_j dL/dW_out[c, j]``.

    Args:
        model: the victim; its last ``nn.Linear`` is the output layer.
        shared: the shared gradient (name -> tensor) of one image.

    Returns:
        The class index (int).

    Raises:
        SharedGradientError: if ``shared`` does not match the model.
        ValueError: if the model has no linear output layer, or its gradient is
            all zero (a saturated softmax leaks nothing).
    """
    check_shared(model, shared)
    name, _ = output_layer(model)
    g = shared[f"{name}.weight" if name else "weight"]
    if not bool(g.any()):
        raise ValueError(
            "the output layer's gradient is all zero (the model already predicts the label with "
            "probability 1), so no label can be read from it"
        )
    return int(g.sum(dim=1).argmin())


def _params_and_target(model: nn.Module, shared: Mapping[str, torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
    check_shared(model, shared)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    target = torch.cat([shared[n].detach().reshape(-1).float() for n, _ in named])
    return [p for _, p in named], target


def _run(
    attack: str,
    model: nn.Module,
    shared: Mapping[str, torch.Tensor],
    input_shape: Sequence[int],
    num_classes: int,
    fixed_labels: torch.Tensor | None,
    iterations: int,
    lr: float,
    max_evals_per_step: int,
    seed: int,
    truth: torch.Tensor | None,
    true_labels: torch.Tensor | None,
    callback: Callback | None,
    callback_every: int,
    metrics_every: int,
    progress: bool,
    num_threads: int | None,
    restarts: int,
) -> AttackResult:
    b, c, h, w = check_input_shape(input_shape, model)
    if restarts < 0:
        raise ValueError(f"restarts must be >= 0, got {restarts}")
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    if truth is not None and tuple(truth.shape) != (b, c, h, w):
        raise ValueError(f"truth has shape {tuple(truth.shape)}, but input_shape is {(b, c, h, w)}")
    check_num_classes(model, num_classes)
    _, target = _params_and_target(model, shared)
    k = int(num_classes)
    nx = b * c * h * w
    gen = torch.Generator().manual_seed(int(seed))
    joint = fixed_labels is None
    z = torch.randn(nx + (b * k if joint else 0), generator=gen)

    rec = Recorder(attack, truth, callback, callback_every, metrics_every, progress, iterations)

    def labels_of(zz: torch.Tensor) -> torch.Tensor:
        if joint:
            return zz[nx:].view(b, k).argmax(1)
        return fixed_labels.clone()

    param_grads = gradient_fn(model)  # a fast chain program for the course's models, else autograd
    one_hot = None if joint else F.one_hot(fixed_labels, k).to(torch.float32)

    def fn(zz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zz = zz.detach().requires_grad_(True)
        soft = F.softmax(zz[nx:].view(b, k), dim=-1) if joint else one_hot
        grads = param_grads(zz[:nx].view(b, c, h, w), soft)
        dist = F.mse_loss(torch.cat([g.reshape(-1) for g in grads]), target, reduction="sum")
        (gz,) = torch.autograd.grad(dist, zz)
        rec.evaluations += 1
        dv = float(dist.detach())
        if dv == dv and dv != float("inf"):
            rec.offer(dv, zz[:nx].view(b, c, h, w), lambda: labels_of(zz.detach()))
        return dist.detach(), gz

    message = f"ran all {iterations} iterations"
    diverged = False
    restarts_used = 0
    scale = float(target.pow(2).sum()) or 1.0
    it = 0
    with fast_attack_mode(model, num_threads):
        opt = LBFGS(z, lr=lr, max_iter=max_evals_per_step)
        run_start_loss = None
        run_steps = 0
        rec.resume()
        for it in range(1, iterations + 1):
            info = opt.step(fn)
            last = float(info.loss)
            run_steps += 1
            if run_start_loss is None:
                run_start_loss = last
            finite = bool(torch.isfinite(z).all()) and last == last and abs(last) != float("inf")
            # DLG's known failure modes: the loss explodes (L-BFGS with lr 1 and no
            # line search overshoots), or the sigmoids saturate and the run freezes
            # far from zero loss. The attacker sees both in the matching loss alone.
            exploded = finite and last > 10 * run_start_loss
            stuck = info.converged and info.evaluations <= 2 and last > 1e-4 * scale
            stalled = run_steps == 50 and last > 0.01 * run_start_loss
            estimate = z[:nx].view(b, c, h, w)
            if not finite or exploded or stuck or stalled:
                why = (
                    "non-finite loss" if not finite
                    else "exploding loss" if exploded
                    else "frozen run" if stuck
                    else "stalled run"
                )
                can_restart = restarts_used < restarts and it < iterations
                note = f"restart {restarts_used + 1} ({why})" if can_restart else f"stopped ({why})"
                rec.record(it, last, estimate, labels_of(z), note=note)
                if can_restart:
                    restarts_used += 1
                    z.copy_(torch.randn(z.shape, generator=gen))
                    opt = LBFGS(z, lr=lr, max_iter=max_evals_per_step)
                    run_start_loss = None
                    run_steps = 0
                    continue
                diverged = not finite or exploded
                message = f"{why} at iteration {it} and no restarts left; kept the best estimate (loss {rec.best_loss:.3g})"
                break
            if rec.record(it, last, estimate, labels_of(z)):
                message = f"stopped by the callback at iteration {it}"
                break
            if info.converged and info.evaluations <= 2:
                message = f"converged at iteration {it} (gradient or loss change below tolerance)"
                break
        rec.close()
    if rec.best is None:  # not even the first evaluation was finite
        rec.best = z[:nx].view(b, c, h, w).detach().clone()
        rec.best_labels = labels_of(z)
        diverged = True
        message = "the very first evaluation was non-finite; returned the random start"
    if restarts_used:
        message += f"; {restarts_used} restart(s)"
    return rec.result(it, diverged, message, true_labels, restarts_used)


def dlg(
    model: nn.Module,
    shared: Mapping[str, torch.Tensor],
    *,
    input_shape: Sequence[int],
    num_classes: int,
    iterations: int = 300,
    lr: float = 1.0,
    max_evals_per_step: int = 20,
    seed: int = 0,
    truth: torch.Tensor | None = None,
    true_labels: torch.Tensor | None = None,
    callback: Callback | None = None,
    callback_every: int = 10,
    metrics_every: int = 10,
    progress: bool = False,
    num_threads: int | None = 1,
    restarts: int = 10,
) -> AttackResult:
    """Deep Leakage from Gradients (Zhu, Liu, Han, NeurIPS 2019).

    A dummy image ``[B, C, H, W]`` and dummy label logits ``[B, num_classes]``
    start from N(0, 1) (drawn from ``seed``). The dummy loss is the soft-label
    cross-entropy ``mean_b sum_c -softmax(label_logits)_c log softmax(model(x))_c``;
    the objective is ``sum over parameters ||grad_dummy - grad_shared||^2``,
    minimised with L-BFGS (lr 1, up to ``max_evals_per_step`` evaluations per
    iteration). Each evaluation is a forward pass plus a double backward.

    Args:
        model: the victim model (weights as the server knows them).
        shared: the shared gradient, name -> tensor, as from :func:`gleak_edu.fl.client_gradient`.
        input_shape: ``(B, C, H, W)`` of the private batch.
        num_classes: number of classes of the model's output.
        iterations: L-BFGS iterations (300 in the paper).
        lr: L-BFGS step length.
        max_evals_per_step: L-BFGS ``max_iter`` (20).
        seed: seed of the dummy initialisation.
        truth: optional true images ``[B, C, H, W]`` in [0, 1]; only used to
            record PSNR/SSIM in the history, never by the attack itself.
        true_labels: optional int64 ``[B]`` for the label accuracy metric.
        callback: called with an :class:`AttackState` every ``callback_every``
            iterations and once at the end; returning True stops the attack.
        metrics_every: SSIM is recorded every this many iterations (PSNR every one).
        progress: show a tqdm progress bar.
        num_threads: intra-op threads during the attack (1 is fastest for the
            course's small models on a 2-core CPU); None leaves it unchanged.
        restarts: how many times a failed run may start again from a fresh
            random dummy, within the same ``iterations`` budget. A run counts
            as failed when its loss becomes non-finite, explodes above 10x its
            starting value, or freezes (L-BFGS cannot move) above 1e-4 x
            ||grad_shared||^2, or still sits above 1 % of its starting loss
            after 50 iterations. These are DLG's known failure modes; the attacker
            sees them in the matching loss alone, never in the truth. The
            paper does not restart: with 0 a failed run ends at once (keeping
            its best estimate) instead of spending the rest of the budget.

    Returns:
        :class:`AttackResult`; ``reconstruction`` is the lowest-loss estimate,
        clamped to [0, 1], and ``labels`` the argmax of its label logits.
        A run whose loss becomes NaN/inf stops and is flagged ``diverged``.

    Raises:
        SharedGradientError: if ``shared`` does not match the model (names,
            shapes) or contains NaN/inf.
        ValueError: for a malformed ``input_shape`` or ``iterations < 1``.
    """
    return _run(
        "DLG", model, shared, input_shape, num_classes, None, iterations, lr, max_evals_per_step,
        seed, truth, true_labels, callback, callback_every, metrics_every, progress, num_threads,
        restarts,
    )


def idlg(
    model: nn.Module,
    shared: Mapping[str, torch.Tensor],
    *,
    input_shape: Sequence[int],
    num_classes: int,
    iterations: int = 300,
    lr: float = 1.0,
    max_evals_per_step: int = 20,
    seed: int = 0,
    truth: torch.Tensor | None = None,
    true_labels: torch.Tensor | None = None,
    callback: Callback | None = None,
    callback_every: int = 10,
    metrics_every: int = 10,
    progress: bool = False,
    num_threads: int | None = 1,
    restarts: int = 10,
) -> AttackResult:
    """improved DLG (Zhao, Mopuri, Bilen, 2020): analytic label, then the image alone.

    The label comes from :func:`idlg_label`; the dummy image (N(0, 1) from
    ``seed``) is then optimised with ordinary cross-entropy on that label and
    the same gradient distance and L-BFGS as :func:`dlg`. Arguments and result
    as for :func:`dlg`.

    Raises:
        ValueError: if the batch size in ``input_shape`` is not 1 (the label rule
            needs a single image; use :func:`dlg` for batches).
        SharedGradientError: if ``shared`` does not match the model.
    """
    b = check_input_shape(input_shape, model)[0]
    if b != 1:
        raise ValueError(
            f"iDLG's analytic label rule needs batch size 1, but input_shape has batch size {b}; use dlg for batches"
        )
    label = torch.tensor([idlg_label(model, shared)], dtype=torch.int64)
    return _run(
        "iDLG", model, shared, input_shape, num_classes, label, iterations, lr, max_evals_per_step,
        seed, truth, true_labels, callback, callback_every, metrics_every, progress, num_threads,
        restarts,
    )
