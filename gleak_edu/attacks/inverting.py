"""Inverting Gradients (Geiping, Bauermeister, Droege, Moeller, NeurIPS 2020), with layer selection.

The objective compares directions, not magnitudes:
``1 - <g, g*> / (||g|| ||g*||)`` over the selected parameters, plus a total
variation prior. Selecting only some parameters is what the PRECODE bypass
needs (Scheliga et al., arXiv 2208.04767): match the deterministic gradients,
leave out the bottleneck's decoder and every layer after it.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gleak_edu.attacks._chain import matching_fn
from gleak_edu.attacks._common import (
    AttackOptions,
    AttackResult,
    Callback,
    Recorder,
    RestartBook,
    check_input_shape,
    check_hyper,
    check_num_classes,
    check_restarts,
    check_problems,
    fast_attack_mode,
    halving_points,
    keeps_model,
    options_of,
    problem_recorder,
    shared_run_note,
)
from gleak_edu.attacks.dlg import idlg_label
from gleak_edu.attacks.grnn import total_variation
from gleak_edu.models import output_layer
from gleak_edu.precode import deterministic_parameters

__all__ = ["inverting_gradients", "precode_bypass"]


def _label_from_output_gradient(model: nn.Module, shared: Mapping[str, torch.Tensor]) -> int:
    """The single label from the output layer: the only negative entry of dL/db (softmax_c - onehot_c).

    The bias form needs no sign assumption on the layer's input, so it also
    holds behind PRECODE's decoder, whose outputs can be negative (where iDLG's
    weight-row rule can fail). Without a bias, iDLG's rule is used.
    """
    name, layer = output_layer(model)
    if layer.bias is None:
        return idlg_label(model, shared)
    return int(shared[f"{name}.bias"].argmin())


@keeps_model
def inverting_gradients(
    model: nn.Module,
    shared: Mapping[str, torch.Tensor],
    *,
    input_shape: Sequence[int],
    num_classes: int,
    labels: torch.Tensor | None = None,
    iterations: int = 1000,
    lr: float = 0.1,
    tv_weight: float = 1e-4,
    seed: int = 0,
    truth: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
    callback: Callback | None = None,
    options: AttackOptions | None = None,
) -> AttackResult:
    """Inverting Gradients (Geiping et al., NeurIPS 2020): cosine gradient matching with a TV prior.

    The objective is ``1 - <g, g*> / (||g|| ||g*||) + tv_weight * TV(x)``: g is
    the gradient of the cross-entropy of the dummy batch x on ``labels``, g*
    the shared gradient, both over every parameter. The dummy batch starts
    uniform in [0, 1] (from ``seed``) and is updated by Adam (lr 0.1) on the
    *sign* of its gradient, clamped to [0, 1] after every step (the box
    constraint), with the step size divided by 10 at 3/8, 5/8 and 7/8 of the
    run. The model is used in whatever mode it is in (PRECODE attacks use
    train mode, as the victim does; each restart draws its own bottleneck
    samples). To match only some layers, use :func:`precode_bypass` with ``layers``.

    Args:
        model, shared, input_shape, num_classes: as for :func:`gleak_edu.attacks.dlg`.
        labels: int64 ``[B]``; if None and B is 1, read from the output layer's
            bias gradient (its only negative entry), else with iDLG's rule.
        iterations: Adam steps per restart (1,000).
        lr: Adam's step size (0.1, the paper's).
        tv_weight: weight of the total variation (1e-4 suits 32x32 images; the
            paper's 0.2 is far too strong at this size).
        seed, truth, callback: as for :func:`gleak_edu.attacks.dlg` (the
            callback every 50 steps by default, SSIM every 100).
        options: :class:`AttackOptions`. ``restarts`` run together (one
            vectorised gradient computation for all of them per step; Adam is
            elementwise, so each follows exactly its own run), the lowest
            final matching loss wins (``result.per_restart`` reports each);
            ``successive_halving`` as for DLG; ``num_threads`` "auto": 1 where
            the chain program computes the gradients (the course's small
            models), torch's own setting otherwise (PRECODE models go through
            autograd, whose double backward gains from a second thread).

    Returns:
        :class:`AttackResult` (``attack`` is ``"IG"``), pixels in [0, 1];
        ``labels`` are the labels used (given or read off the gradient).

    Raises:
        ValueError: for a batch without ``labels``, or bad hyperparameters.
        SharedGradientError: if ``shared`` does not match the model.
        CallbackError, AttackInterrupted: as for :func:`gleak_edu.attacks.dlg`.
    """
    return _inverting(
        "IG", model, shared, input_shape=input_shape, num_classes=num_classes, labels=labels, layers=None,
        iterations=iterations, lr=lr, tv_weight=tv_weight, seed=seed, truth=truth, callback=callback, options=options,
    )


def _inverting(
    attack: str,
    model: nn.Module,
    shared: Mapping[str, torch.Tensor],
    *,
    input_shape: Sequence[int],
    num_classes: int,
    labels: torch.Tensor | None,
    layers: Sequence[str] | None,
    iterations: int,
    lr: float,
    tv_weight: float,
    seed: int,
    truth: object,
    callback: Callback | None,
    options: AttackOptions | None,
) -> AttackResult:
    """Inverting Gradients' engine on one shared gradient, matching the parameters named in ``layers`` (None: all)."""
    return _inverting_problems(
        attack, model, [shared], input_shape=input_shape, num_classes=num_classes,
        labels=None if labels is None else [labels], layers=layers, iterations=iterations, lr=lr,
        tv_weight=tv_weight, seeds=[seed], truths=[truth], callback=callback, options=options,
    )[0]


def _inverting_problems(
    attack: str,
    model: nn.Module,
    shareds: Sequence[Mapping[str, torch.Tensor]],
    *,
    input_shape: Sequence[int],
    num_classes: int,
    labels: Sequence[torch.Tensor] | None,
    layers: Sequence[str] | None,
    iterations: int,
    lr: float,
    tv_weight: float,
    seeds: Sequence[int],
    truths: Sequence[object],
    callback: Callback | None,
    options: AttackOptions | None,
) -> list[AttackResult]:
    """Inverting Gradients' engine: P independent problems (shared gradients) with R restarts each, all in one
    vectorised evaluation per step (rows problem by problem; Adam is elementwise, so every row follows its own
    run); one result per problem."""
    options = options_of(options)
    callback_every, metrics_every = options.every(50, 100)
    restarts = options.restarts
    b, c, h, w = check_input_shape(input_shape, model)
    check_num_classes(model, num_classes)
    restarts = check_restarts(restarts)[0]
    iterations = check_hyper(iterations, lr, tv_weight=tv_weight)
    P = len(shareds)
    if labels is not None and len(labels) != P:
        raise ValueError(f"give one label tensor per shared gradient ({P}), got {len(labels)}")
    checked = check_problems(model, shareds, seeds, truths, callback, restarts * P, (b, c, h, w))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    selected = list(names) if layers is None else list(layers)
    unknown = [n for n in selected if n not in names]
    if unknown or not selected:
        raise ValueError(f"layers must name parameters of the model; unknown: {unknown[:3] or 'none selected'}")
    if labels is None:
        if b != 1:
            raise ValueError("give the labels for a batch (the analytic label rule reads a single label)")
        labels = [torch.tensor([_label_from_output_gradient(model, shared)], dtype=torch.int64) for shared in shareds]
    labels = [torch.as_tensor(lab, dtype=torch.int64).reshape(-1) for lab in labels]
    if any(lab.numel() != b for lab in labels):
        raise ValueError(f"labels must have {b} entries, got {[lab.numel() for lab in labels]}")

    R = restarts
    single = P == 1
    # restart r's start is the r-th draw of the old sequential runs; problem p draws from its own seed
    x = torch.cat([torch.rand((R, b, c, h, w), generator=torch.Generator().manual_seed(int(seed))) for seed in seeds])
    rec = Recorder(attack, truth=checked[0][0] if single else None, callback=callback, callback_every=callback_every,
                   metrics_every=metrics_every, progress=options.progress, iterations=iterations)
    milestones = [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    halve_at = halving_points(R, iterations) if options.successive_halving else []
    if single:
        terms = matching_fn(model, [shareds[0][n] if n in selected else None for n in names])
        target_norm: float | torch.Tensor = math.sqrt(terms.target_sq_norm)
    else:
        terms = matching_fn(model, [torch.stack([s[n] for s in shareds]) if n in selected else None for n in names],
                            problems=P)
        target_norm = terms.target_sq_norm.sqrt()
    soft = torch.stack([F.one_hot(lab, num_classes).to(torch.float32) for lab in labels])  # [P, b, K]
    book = RestartBook(P * R)
    ids = torch.arange(P * R)  # restart r of problem p is row p * R + r
    it = 0
    message = f"{R} restart(s) of {iterations} steps"
    with fast_attack_mode(model, options.num_threads):
        x.requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        rec.resume()
        with rec.interruptible():
            for it in range(1, iterations + 1):
                n = x.shape[0]
                _, gg, gt = terms(x, soft.repeat_interleave(n // P, 0))
                norm = target_norm if single else target_norm.repeat_interleave(n // P)
                cos = 1 - gt / (gg.sqrt() * norm + 1e-12)
                tv = total_variation(x, per_first=True)
                objective = cos.float() + tv_weight * tv
                (gx,) = torch.autograd.grad(objective.sum(), x)
                rec.evaluations += 1
                value = cos.detach()
                with torch.no_grad():
                    x.grad = gx.sign()
                    opt.param_groups[0]["lr"] = lr * 0.1 ** sum(it > m_ for m_ in milestones)
                    opt.step()
                    x.clamp_(0, 1)
                book.current(value, x.detach().reshape(n, -1), ids)  # IG keeps each run's final iterate
                show = int(value.argmin())
                if rec.record(it, float(value[show]), x[show], labels[int(ids[show]) // R]):
                    message = f"stopped by the callback at iteration {it}"
                    break
                if it in halve_at and n > P:  # successive halving: keep the better half of each problem's rows
                    rows = book.halve(ids, P, it)
                    ids = ids[rows]
                    state = opt.state[x]
                    x = x.detach()[rows].clone().requires_grad_(True)
                    new_opt = torch.optim.Adam([x], lr=lr)
                    new_opt.state[x] = {
                        "step": state["step"], "exp_avg": state["exp_avg"][rows].clone(), "exp_avg_sq": state["exp_avg_sq"][rows].clone(),
                    }
                    opt = new_opt
        rec.close()
    message = rec.stop_note(it) or message
    if book.best_row() is None:  # interrupted before the first step ended: the random start
        book.current(torch.full((len(ids),), math.inf), x.detach().reshape(len(ids), -1), ids)
    results = []
    for p_ in range(P):
        truth, true_labels = checked[p_]
        out = problem_recorder(rec, truth, P)
        part = book.part(slice(p_ * R, (p_ + 1) * R))
        best = int(part.best_loss.argmin())  # every loss inf: the first restart
        out.best = part.best_z[best].view(b, c, h, w).clone()
        out.best_labels, out.best_loss = labels[p_].clone(), float(part.best_loss[best])
        note = message + f"; kept the lowest final matching loss ({out.best_loss:.3g})" + (f": restart {best}" if R > 1 else "")
        result = out.result(it, False, note + shared_run_note(P), true_labels)
        result.restarts = R
        result.per_restart = part.report(truth, lambda zz: zz.view(b, c, h, w))
        for row in result.per_restart:
            row.pop("retries"), row.pop("diverged")
        results.append(out.finish(result))
    return results


@keeps_model
def precode_bypass(
    model: nn.Module,
    shared: Mapping[str, torch.Tensor],
    *,
    input_shape: Sequence[int],
    num_classes: int,
    layers: Sequence[str] | None = None,
    iterations: int = 1000,
    lr: float = 0.1,
    tv_weight: float = 1e-3,
    seed: int = 0,
    truth: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
    callback: Callback | None = None,
    options: AttackOptions | None = None,
) -> AttackResult:
    """The PRECODE bypass (Scheliga et al., arXiv 2208.04767): Inverting Gradients on the deterministic layers only.

    The matched parameters come from the model's structure
    (:func:`gleak_edu.defenses.deterministic_parameters`: every layer that runs
    before the bottleneck, plus its encoder); the decoder and all later layers
    are left out. The attacker computes its own gradients with the bottleneck's
    mean (the model in eval mode, restored afterwards), while the victim's
    shared gradient was sampled in train mode: a course choice, measured better
    than sampling on the attacker's side too (mean SSIM 0.87 against 0.75 on
    photos 0-2, untrained MLP, 1,000 steps). The label is read off the output
    layer's bias gradient (batch size 1).

    Args:
        layers: names of the parameters whose gradients are matched (default:
            :func:`gleak_edu.defenses.deterministic_parameters`); any other
            selection turns this into Inverting Gradients on those layers.
        Others: as for :func:`inverting_gradients` (TV weight 1e-3 here).

    Returns:
        :class:`AttackResult` with ``attack`` ``"bypass"``.

    Raises:
        ValueError: for unknown ``layers`` names, a batch (the label rule reads
            one label), or bad hyperparameters. SharedGradientError: if
            ``shared`` does not match the model.
    """
    layers = list(layers) if layers is not None else deterministic_parameters(model)
    model.eval()  # the mode is restored by @keeps_model
    return _inverting(
        "bypass", model, shared, input_shape=input_shape, num_classes=num_classes, labels=None, layers=layers,
        iterations=iterations, lr=lr, tv_weight=tv_weight, seed=seed, truth=truth, callback=callback, options=options,
    )


@keeps_model
def _inverting_many(model: nn.Module, shareds: Sequence[Mapping[str, torch.Tensor]], *, input_shape: Sequence[int],
                    num_classes: int, seeds: Sequence[int], truths: Sequence[object], iterations: int = 1000,
                    lr: float = 0.1, tv_weight: float = 1e-4, options: AttackOptions | None = None) -> list[AttackResult]:
    """:func:`inverting_gradients` on P shared gradients at once (labels read off each gradient)."""
    return _inverting_problems("IG", model, shareds, input_shape=input_shape, num_classes=num_classes, labels=None,
                               layers=None, iterations=iterations, lr=lr, tv_weight=tv_weight, seeds=seeds,
                               truths=truths, callback=None, options=options)


@keeps_model
def _bypass_many(model: nn.Module, shareds: Sequence[Mapping[str, torch.Tensor]], *, input_shape: Sequence[int],
                 num_classes: int, seeds: Sequence[int], truths: Sequence[object], iterations: int = 1000,
                 lr: float = 0.1, tv_weight: float = 1e-3, options: AttackOptions | None = None) -> list[AttackResult]:
    """:func:`precode_bypass` (its default layers) on P shared gradients at once."""
    layers = deterministic_parameters(model)
    model.eval()  # the mode is restored by @keeps_model
    return _inverting_problems("bypass", model, shareds, input_shape=input_shape, num_classes=num_classes,
                               labels=None, layers=layers, iterations=iterations, lr=lr, tv_weight=tv_weight,
                               seeds=seeds, truths=truths, callback=None, options=options)
