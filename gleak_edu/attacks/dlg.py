"""DLG and iDLG: reconstruct a private batch from one shared gradient.

- DLG, "Deep Leakage from Gradients" (Zhu, Liu, Han, NeurIPS 2019): optimise a
  dummy image and dummy label logits jointly so that their gradient matches the
  shared one (squared L2 distance summed over layers), with L-BFGS.
- iDLG, "improved DLG" (Zhao, Mopuri, Bilen, 2020): read the label off the
  output layer's gradient analytically, then optimise the image only.
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
    check_num_classes,
    check_hyper,
    check_restarts,
    check_problems,
    fast_attack_mode,
    halving_points,
    keeps_model,
    options_of,
    problem_recorder,
    shared_run_note,
)
from gleak_edu.attacks._lbfgs import batched_lbfgs
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


def _run(
    attack: str,
    model: nn.Module,
    shared: Mapping[str, torch.Tensor],
    *,
    input_shape: Sequence[int],
    num_classes: int,
    fixed_labels: torch.Tensor | None,
    iterations: int,
    lr: float,
    seed: int,
    truth: object,
    callback: Callback | None,
    options: AttackOptions | None,
) -> AttackResult:
    """DLG's engine (and iDLG's, with ``fixed_labels``) on one shared gradient."""
    return _run_problems(
        attack, model, [shared], input_shape=input_shape, num_classes=num_classes,
        fixed_labels=None if fixed_labels is None else [fixed_labels], iterations=iterations, lr=lr, seeds=[seed],
        truths=[truth], callback=callback, options=options,
    )[0]


def _run_problems(
    attack: str,
    model: nn.Module,
    shareds: Sequence[Mapping[str, torch.Tensor]],
    *,
    input_shape: Sequence[int],
    num_classes: int,
    fixed_labels: Sequence[torch.Tensor] | None,
    iterations: int,
    lr: float,
    seeds: Sequence[int],
    truths: Sequence[object],
    callback: Callback | None,
    options: AttackOptions | None,
) -> list[AttackResult]:
    """DLG's engine: P independent problems (shared gradients), each with batched restarts, retries and
    successive halving, all in one vectorised evaluation; one result per problem.

    Rows come problem by problem (R restarts each, the same count for every problem after each halving), so
    problem p with seed s runs exactly the rows the single attack with seed s would run.
    """
    options = options_of(options)
    callback_every, metrics_every = options.every(10, 10)
    restarts, retries, max_evals_per_step = options.restarts, options.retries, options.max_evals_per_step
    b, c, h, w = check_input_shape(input_shape, model)
    restarts, retries = check_restarts(restarts, retries)
    iterations = check_hyper(iterations, lr)
    if isinstance(max_evals_per_step, bool) or not isinstance(max_evals_per_step, int) or not 1 <= max_evals_per_step <= 1000:
        raise ValueError(f"max_evals_per_step must be a whole number in 1..1000, got {max_evals_per_step!r}")
    P = len(shareds)
    if fixed_labels is not None and len(fixed_labels) != P:
        raise ValueError(f"give one label per shared gradient ({P}), got {len(fixed_labels)}")
    checked = check_problems(model, shareds, seeds, truths, callback, restarts * P, (b, c, h, w))
    check_num_classes(model, num_classes)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    k = int(num_classes)
    nx = b * c * h * w
    R = restarts
    gens = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    joint = fixed_labels is None
    nz = nx + (b * k if joint else 0)
    z = torch.cat([torch.randn(R, nz, generator=gen) for gen in gens])  # row p*R is problem p's single-restart draw

    single = P == 1
    rec = Recorder(attack, truth=checked[0][0] if single else None, callback=callback, callback_every=callback_every,
                   metrics_every=metrics_every, progress=options.progress, iterations=iterations)
    if single:  # all restarts in one vectorised evaluation
        terms = matching_fn(model, [shareds[0][n] for n in names])
    else:  # and every problem's too
        terms = matching_fn(model, [torch.stack([s[n] for s in shareds]) for n in names], problems=P)
    one_hot = None if joint else torch.stack([F.one_hot(lab, k).to(torch.float32) for lab in fixed_labels])  # [P, b, k]
    book = RestartBook(P * R)
    ids = torch.arange(P * R)  # the rows still running (restart r of problem p is p * R + r), in row order
    halve_at = halving_points(R, iterations) if options.successive_halving else []

    def labels_of(zz: torch.Tensor, problem: int) -> torch.Tensor:
        if joint:
            return zz[nx:].view(b, k).argmax(1)
        return fixed_labels[problem].clone()

    def fn(zz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = zz.shape[0]
        zz = zz.detach().requires_grad_(True)
        soft = F.softmax(zz[:, nx:].view(n, b, k), dim=-1) if joint else one_hot.repeat_interleave(n // P, 0)
        dist = terms(zz[:, :nx].view(n, b, c, h, w), soft)[0]
        (gz,) = torch.autograd.grad(dist.sum(), zz)
        rec.evaluations += 1
        book.offer(dist, zz, ids)
        return dist.detach(), gz

    message = f"ran all {iterations} iterations"
    if single:
        scale: float | torch.Tensor = float(terms.target_sq_norm) or 1.0
    else:  # per problem, repeated for its rows where used
        norms = terms.target_sq_norm
        scale = torch.where(norms > 0, norms, torch.ones_like(norms))
    # per running row: the loss its current run started from, steps in the run, finished (frozen)
    run_start = torch.full((P * R,), math.nan, dtype=torch.float64)
    run_steps = torch.zeros(P * R, dtype=torch.long)
    finished = torch.zeros(P * R, dtype=torch.bool)
    it = 0
    with fast_attack_mode(model, options.num_threads):
        # the history's vectors in float32 (as torch's L-BFGS keeps them), its Gram matrices
        # in float64: half the memory traffic of the two history products of every evaluation
        opt = batched_lbfgs(z, lr=lr, max_iter=max_evals_per_step, history_dtype=torch.float32)
        rec.resume()
        with rec.interruptible():
            for it in range(1, iterations + 1):
                z = opt.x
                live = ~finished
                info = opt.step(fn, rows=live)
                last = info.loss
                run_steps += live.long()
                run_start = torch.where(live & torch.isnan(run_start), last, run_start)
                finite = torch.isfinite(z).all(1) & torch.isfinite(last)
                # DLG's known failure modes: the loss explodes (L-BFGS with lr 1 and no
                # line search overshoots), or the sigmoids saturate and the run freezes
                # far from zero loss. The attacker sees both in the matching loss alone.
                exploded = finite & (last > 10 * run_start)
                row_scale = scale if single else scale.repeat_interleave(len(ids) // P)
                frozen = info.converged & (info.evaluations <= 2) & (last > 1e-4 * row_scale)
                stalled = (run_steps == 50) & (last > 0.01 * run_start)
                failed = live & (~finite | exploded | frozen | stalled)
                notes = []
                for row in torch.nonzero(failed).flatten().tolist():
                    r = int(ids[row])
                    why = (
                        "non-finite loss" if not finite[row] else "exploding loss" if exploded[row]
                        else "frozen run" if frozen[row] else "stalled run"
                    )
                    who = f"restart {r % R}: " if R > 1 else ""
                    if book.retries[r] < retries and it < iterations:
                        book.retries[r] += 1
                        notes.append(f"{who}retry {int(book.retries[r])} ({why})")
                        z[row] = torch.randn(z.shape[1], generator=gens[r // R])
                        opt.reset(torch.arange(len(ids)) == row)
                        run_start[row] = math.nan
                        run_steps[row] = 0
                    else:
                        notes.append(f"{who}stopped ({why})")
                        finished[row] = True
                        book.diverged[r] = (not finite[row]) or bool(exploded[row])
                        book.stop_reason([r], f"{why} at iteration {it}, no retries left")
                done = live & ~failed & info.converged & (info.evaluations <= 2)
                for row in torch.nonzero(done).flatten().tolist():
                    book.stop_reason([int(ids[row])], f"converged at iteration {it}")
                finished |= done
                cur = torch.where(finished & ~done, torch.full_like(last, math.inf), torch.nan_to_num(last, nan=math.inf))
                show = int(cur.argmin())
                if rec.record(it, float(last[show]), z[show, :nx].view(b, c, h, w), labels_of(z[show], int(ids[show]) // R),
                              note="; ".join(notes) or None):
                    message = f"stopped by the callback at iteration {it}"
                    break
                if bool(finished.all()):
                    if single:
                        message = "; ".join(sorted({book.reasons[int(r)] for r in ids}))
                    break
                if it in halve_at and len(ids) > P:  # successive halving: keep the better half of each problem's rows
                    rows = book.halve(ids, P, it)
                    ids = ids[rows]
                    opt.keep(rows)
                    run_start, run_steps, finished = run_start[rows], run_steps[rows], finished[rows]
        rec.close()
    stop_note = rec.stop_note(it)
    results = []
    for p_ in range(P):
        block = slice(p_ * R, (p_ + 1) * R)
        truth, true_labels = checked[p_]
        out = problem_recorder(rec, truth, P)
        part = book.part(block)
        part.diverged = part.diverged.clone()
        note = message if single or not bool(finished.all()) else "; ".join(sorted(set(part.reasons)))
        note = stop_note or note
        if part.best_z is None or not bool(part._seen.any()):  # not even the first evaluation was finite
            best = 0
            start = opt.x[p_ * (len(ids) // P)]
            out.best, out.best_labels = start[:nx].view(b, c, h, w).detach().clone(), labels_of(start, p_)
            note = "the very first evaluation was non-finite; returned the random start"
            part.diverged[:] = True
        else:
            best = int(part.best_loss.argmin())
            out.best = part.best_z[best, :nx].view(b, c, h, w).clone()
            out.best_labels = labels_of(part.best_z[best], p_)
            out.best_loss = float(part.best_loss[best])
        used = int(part.retries.sum())
        if used:
            note += f"; {used} retr{'y' if used == 1 else 'ies'}"
        if R > 1:
            note += f"; best of {R} restarts: restart {best}"
        result = out.result(it, bool(part.diverged[best]), note + shared_run_note(P), true_labels, used)
        result.restarts = R
        result.per_restart = part.report(truth, lambda zz: zz[:nx].view(b, c, h, w))
        results.append(out.finish(result))
    return results


@keeps_model
def dlg(
    model: nn.Module,
    shared: Mapping[str, torch.Tensor],
    *,
    input_shape: Sequence[int],
    num_classes: int,
    iterations: int = 300,
    lr: float = 1.0,
    seed: int = 0,
    truth: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
    callback: Callback | None = None,
    options: AttackOptions | None = None,
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
        lr: L-BFGS step length (1).
        seed: seed of the dummy initialisation.
        truth: optional, only for the reported metrics, never used by the
            attack: the private batch as ``(images, labels)`` (float32
            ``[B, C, H, W]`` in [0, 1], int64 ``[B]``) or the images alone.
            PSNR (every iteration) and SSIM go into the history; the final
            metrics include ``label_accuracy`` when labels are given.
        callback: called with an :class:`AttackState` every
            ``options.callback_every`` iterations (10) and once at the end;
            returning True stops the attack.
        options: engine settings (:class:`AttackOptions`):

            - ``restarts``: independent runs from different random dummies
              (rows of one draw from ``seed``; restart 0 is the single run's
              start), computed together: one vectorised evaluation gives every
              restart's matching loss and gradient (the chain program's batched
              matmuls, or ``torch.func.vmap``), and a batched L-BFGS keeps one
              history per restart. The result is the restart with the lowest
              matching loss; ``per_restart`` reports each one.
            - ``successive_halving``: with several restarts, keep only the
              better half after 1/2^(H+1), ..., 1/8, 1/4 of the iterations
              (:func:`halving_points`): 8 restarts cost about 1.75 single runs.
            - ``retries`` (10): how many times a failed run may start again from
              a fresh random dummy, within the same budget (per restart). A run
              counts as failed when its loss becomes non-finite, explodes above
              10x its starting value, freezes (L-BFGS cannot move) above 1e-4 x
              ||grad_shared||^2, or still sits above 1 % of its starting loss
              after 50 iterations: DLG's known failure modes, seen in the
              matching loss alone, never in the truth. The paper does not retry
              (0): a failed run then ends at once, keeping its best estimate.
            - ``max_evals_per_step``: L-BFGS ``max_iter`` (20).
            - ``num_threads``, ``progress``, ``callback_every``, ``metrics_every``.

    Returns:
        :class:`AttackResult`; ``reconstruction`` is the lowest-loss estimate
        over all restarts, clamped to [0, 1], and ``labels`` the argmax of its
        label logits; ``evaluations`` counts vectorised evaluations (each
        covers every restart). A run whose loss becomes NaN/inf with no retry
        left stops; the result is flagged ``diverged`` if the chosen restart did.

    Raises:
        SharedGradientError: if ``shared`` does not match the model (names,
            shapes) or contains NaN/inf.
        ValueError: for a malformed ``input_shape`` or ``truth``, ``iterations``
            outside 1..MAX_ITERATIONS, ``lr`` not finite and > 0, ``restarts``
            outside 1..MAX_RESTARTS, ``retries < 0``, or batched restarts on a
            model with BatchNorm in train mode.
        TypeError: if ``options`` is not an :class:`AttackOptions`.
        CallbackError: if the callback raised; the attack stopped there and
            ``exc.result`` holds its best estimate.
        AttackInterrupted: on Ctrl-C; ``exc.result`` holds the best estimate.

    The model is left exactly as it was (parameters, buffers such as
    BatchNorm's running statistics, train/eval mode).
    """
    return _run(
        "DLG", model, shared, input_shape=input_shape, num_classes=num_classes, fixed_labels=None,
        iterations=iterations, lr=lr, seed=seed, truth=truth, callback=callback, options=options,
    )


@keeps_model
def idlg(
    model: nn.Module,
    shared: Mapping[str, torch.Tensor],
    *,
    input_shape: Sequence[int],
    num_classes: int,
    iterations: int = 300,
    lr: float = 1.0,
    seed: int = 0,
    truth: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
    callback: Callback | None = None,
    options: AttackOptions | None = None,
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
        "iDLG", model, shared, input_shape=input_shape, num_classes=num_classes, fixed_labels=label,
        iterations=iterations, lr=lr, seed=seed, truth=truth, callback=callback, options=options,
    )


@keeps_model
def _dlg_many(model: nn.Module, shareds: Sequence[Mapping[str, torch.Tensor]], *, input_shape: Sequence[int],
              num_classes: int, seeds: Sequence[int], truths: Sequence[object], iterations: int = 300, lr: float = 1.0,
              options: AttackOptions | None = None) -> list[AttackResult]:
    """:func:`dlg` on P shared gradients at once (one vectorised evaluation; see ``AttackSpec.run_many``)."""
    return _run_problems("DLG", model, shareds, input_shape=input_shape, num_classes=num_classes, fixed_labels=None,
                         iterations=iterations, lr=lr, seeds=seeds, truths=truths, callback=None, options=options)


@keeps_model
def _idlg_many(model: nn.Module, shareds: Sequence[Mapping[str, torch.Tensor]], *, input_shape: Sequence[int],
               num_classes: int, seeds: Sequence[int], truths: Sequence[object], iterations: int = 300, lr: float = 1.0,
               options: AttackOptions | None = None) -> list[AttackResult]:
    """:func:`idlg` on P shared gradients at once (each its own label from :func:`idlg_label`)."""
    b = check_input_shape(input_shape, model)[0]
    if b != 1:
        raise ValueError(
            f"iDLG's analytic label rule needs batch size 1, but input_shape has batch size {b}; use dlg for batches"
        )
    labels = [torch.tensor([idlg_label(model, shared)], dtype=torch.int64) for shared in shareds]
    return _run_problems("iDLG", model, shareds, input_shape=input_shape, num_classes=num_classes, fixed_labels=labels,
                         iterations=iterations, lr=lr, seeds=seeds, truths=truths, callback=None, options=options)
