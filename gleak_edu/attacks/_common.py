"""What every attack shares: the result type, the live-view state, the engine options, the hot-path setup."""

from __future__ import annotations

import contextlib
import functools
import math
import operator
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gleak_edu import metrics
from gleak_edu.attacks._chain import chain_gradient_fn
from gleak_edu.fl import check_shared
from gleak_edu.models import output_layer

__all__ = [
    "AttackInterrupted", "AttackOptions", "AttackResult", "AttackState", "Callback", "CallbackError", "MAX_BATCH", "MAX_ITERATIONS",
    "MAX_RESTARTS", "fast_attack_mode", "check_hyper", "check_input_shape", "check_num_classes", "check_restarts",
    "halving_points", "keeps_model", "options_of", "params_and_target", "Recorder", "RestartBook", "check_truth", "split_truth",
]

#: Upper bounds checked before anything is allocated (a typo such as ``restarts=10**9`` gets a
#: clear error instead of reaching the allocator). Restarts are batched: memory grows with R.
MAX_RESTARTS = 64
MAX_ITERATIONS = 1_000_000
MAX_BATCH = 256


@dataclass
class AttackState:
    """A snapshot handed to the callback every ``callback_every`` iterations.

    Attributes:
        attack: the attack's name (``"DLG"``, ``"iDLG"``).
        iteration: optimiser steps done (1-based).
        evaluations: gradient-matching evaluations (closure calls) so far.
        seconds: attack compute time so far (callbacks and metrics excluded).
        loss: the current gradient-matching loss (None for an attack without one: analytic).
        estimate: current reconstruction, float32 ``[B, C, H, W]`` clamped to [0, 1]
            (text: the token ids, int64 ``[1, L]``).
        labels: current label estimate, int64 ``[B]`` (None for an attack that recovers no label).
        psnr: mean PSNR in dB against the truth, if the truth was given.
        done: True for the final call.
    """

    attack: str
    iteration: int
    evaluations: int
    seconds: float
    loss: float | None
    estimate: torch.Tensor
    labels: torch.Tensor | None
    psnr: float | None = None
    done: bool = False


Callback = Callable[[AttackState], Any]


@dataclass(frozen=True)
class AttackOptions:
    """Engine settings shared by every attack: how it runs, not what it computes.

    The attack's own knobs (iterations, lr, tv_weight, seed) are its
    parameters; these are the settings of the machinery around it. ``None``
    means the attack's own default.

    Attributes:
        restarts: independent runs from different random starts, computed
            together (one vectorised evaluation per step for all of them); the
            one with the lowest matching loss is returned (1..MAX_RESTARTS).
            Attacks whose registry entry has ``takes_restarts=False`` (GRNN,
            analytic) refuse more than 1.
        retries: DLG and iDLG only: fresh starts after a failed run, within the
            same iteration budget (0 is the paper's recipe; default 10).
        successive_halving: with several restarts, keep the better half (by
            matching loss so far) at the points of :func:`halving_points`;
            False runs every restart to the end.
        num_threads: intra-op threads during the attack (an int); ``"auto"``
            (default) uses 1 where the chain program computes the gradients
            (the course's small models, fastest on a 2-core CPU) and torch's
            own setting otherwise; None leaves torch's setting alone.
        progress: show a tqdm progress bar.
        callback_every: call the callback every this many iterations (and at
            the end); None: the attack's default (DLG/iDLG 10, others 50).
        metrics_every: add SSIM to the history every this many iterations
            (PSNR is recorded every iteration when the truth is given); None:
            the attack's default (DLG/iDLG 10, GRNN 50, IG 100).
        max_evals_per_step: DLG and iDLG only: L-BFGS evaluations per
            iteration (torch's ``max_iter``, 20).

    Raises:
        ValueError: (when an attack starts) for values outside these ranges.
    """

    restarts: int = 1
    retries: int = 10
    successive_halving: bool = True
    num_threads: int | str | None = "auto"
    progress: bool = False
    callback_every: int | None = None
    metrics_every: int | None = None
    max_evals_per_step: int = 20

    def every(self, callback_default: int, metrics_default: int) -> tuple[int, int]:
        """``(callback_every, metrics_every)``, the attack's defaults filling in None; validated (>= 1)."""
        out = []
        for name, value, default in (("callback_every", self.callback_every, callback_default),
                                     ("metrics_every", self.metrics_every, metrics_default)):
            out.append(default if value is None else _whole(value, name, 1, MAX_ITERATIONS, "iterations between calls"))
        return out[0], out[1]


def options_of(options: "AttackOptions | None") -> AttackOptions:
    """``options`` or the defaults; anything else is refused with a message."""
    if options is None:
        return AttackOptions()
    if not isinstance(options, AttackOptions):
        raise TypeError(f"options must be an AttackOptions (gleak_edu.attacks.AttackOptions), got {type(options).__name__}")
    if not isinstance(options.successive_halving, bool) or not isinstance(options.progress, bool):
        raise ValueError("AttackOptions.successive_halving and .progress must be True or False")
    if options.num_threads not in (None, "auto"):
        _whole(options.num_threads, "num_threads", 1, 1024, "intra-op threads")
    return options


def check_truth(truth: Any, shape: Sequence[int]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """:func:`split_truth`, then check the images have ``shape`` and there is one label per image.

    Raises:
        ValueError: for a wrong shape or label count.
    """
    images, labels = split_truth(truth)
    if images is not None and tuple(images.shape) != tuple(shape):
        raise ValueError(f"truth has shape {tuple(images.shape)}, but input_shape is {tuple(shape)}")
    if labels is not None and labels.numel() != shape[0]:
        raise ValueError(f"truth has {labels.numel()} labels for a batch of {shape[0]}")
    return images, labels


def split_truth(truth: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The private batch given for the metrics: ``(images, labels)``, or images alone.

    Returns ``(images or None, labels int64 [B] or None)``.

    Raises:
        ValueError: for anything else (e.g. a pair whose first item is not a tensor).
    """
    if truth is None:
        return None, None
    if torch.is_tensor(truth):
        return truth, None
    if isinstance(truth, (tuple, list)) and len(truth) == 2:
        images, labels = truth
        if images is not None and not torch.is_tensor(images):
            raise ValueError(f"truth must be (images, labels) with images a tensor, got {type(images).__name__}")
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
        return images, labels
    raise ValueError(
        "truth must be the private batch as (images, labels) or the images alone (a tensor [B, C, H, W] in [0, 1]); "
        f"got {type(truth).__name__}"
    )


@dataclass
class AttackResult:
    """What an attack returns.

    Attributes:
        attack: ``"DLG"``, ``"iDLG"``, ``"IG"``, ``"bypass"``, ``"GRNN"``, ``"analytic"``, ``"text"``.
        reconstruction: float32 ``[B, C, H, W]`` in [0, 1], the estimate with the
            lowest gradient-matching loss seen (not necessarily the last one).
        labels: int64 ``[B]``, the recovered labels; None when the attack
            recovers no label (analytic recovery). Never filled from the truth.
        loss: the lowest gradient-matching loss reached; None for an attack
            without an objective (analytic recovery).
        iterations: optimiser steps run.
        evaluations: closure evaluations (forward + double backward) run.
        seconds: compute time of the attack loop, callbacks and metrics excluded.
        history: one dict per step, describing the current iterate (not the
            best one): ``iteration``, ``evaluations``, ``seconds``, ``loss``, and
            ``psnr`` (dB, mean over the batch) when the truth was given; ``ssim`` is added every ``metrics_every`` steps and at the end;
            ``note`` marks retries. With several restarts, each entry describes
            the restart with the lowest current loss.
        restarts: how many independent restarts ran (vectorised, at once);
            the result is the one with the lowest matching loss.
        retries: how many times a failed run started again from a fresh dummy
            (DLG and iDLG; summed over restarts).
        per_restart: one dict per restart: ``restart`` (index), ``loss`` (its
            lowest matching loss), ``psnr`` and ``ssim`` of its best estimate
            (dB; when the truth was given), and for DLG/iDLG ``retries``,
            ``ended`` (why it stopped) and ``diverged``.
        diverged: True if the last run's loss became NaN/inf or exploded with no
            restart left; the reconstruction is the best estimate before it.
        message: a human-readable note on how the run ended.
        metrics: final ``psnr``, ``ssim``, ``mse`` (per image lists, in the
            truth's order, and their means), ``order`` (``reconstruction[order]``
            lines up with the truth: a batch comes back in any order) and
            ``label_accuracy`` (order-invariant; None when the attack
            recovers no label) when the truth's labels were given.
        interrupted: True if the run was stopped by Ctrl-C (KeyboardInterrupt);
            such a result travels in :class:`AttackInterrupted`.
        error: the callback's exception (``"TypeError: ..."``) if the callback
            raised; such a result travels in :class:`CallbackError`.
    """

    attack: str
    reconstruction: torch.Tensor
    labels: torch.Tensor | None
    loss: float | None
    iterations: int
    evaluations: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    diverged: bool = False
    message: str = ""
    metrics: dict = field(default_factory=dict)
    restarts: int = 1
    retries: int = 0
    per_restart: list[dict] = field(default_factory=list)
    interrupted: bool = False
    error: str | None = None

    def seconds_to(self, psnr_db: float) -> float | None:
        """Compute seconds until the mean PSNR first reached ``psnr_db`` (None if never)."""
        for rec in self.history:
            if rec.get("psnr") is not None and rec["psnr"] >= psnr_db:
                return rec["seconds"]
        return None

    def evaluations_to(self, psnr_db: float) -> int | None:
        """Evaluations until the mean PSNR first reached ``psnr_db`` (None if never)."""
        for rec in self.history:
            if rec.get("psnr") is not None and rec["psnr"] >= psnr_db:
                return rec["evaluations"]
        return None

    def __repr__(self) -> str:
        m = ""
        if self.metrics.get("psnr_mean") is not None:
            m = f", psnr={self.metrics['psnr_mean']:.1f} dB, ssim={self.metrics['ssim_mean']:.3f}"
        labels = None if self.labels is None else self.labels.tolist()
        loss = "None" if self.loss is None else f"{self.loss:.3g}"
        return (
            f"{type(self).__name__}({self.attack}, labels={labels}, loss={loss}, "
            f"iterations={self.iterations}, evaluations={self.evaluations}, "
            f"seconds={self.seconds:.2f}{m}{', DIVERGED' if self.diverged else ''})"
        )


class CallbackError(RuntimeError):
    """The attack's callback raised. The attack stopped there and kept its best estimate.

    Attributes:
        result: the :class:`AttackResult` up to that point (``result.error``
            names the callback's exception, which is also ``__cause__``).
    """

    def __init__(self, message: str, result: AttackResult) -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self):  # picklable with its result (e.g. across worker processes)
        return (type(self), (str(self), self.result))


class AttackInterrupted(KeyboardInterrupt):
    """Ctrl-C (KeyboardInterrupt) during an attack. Subclasses KeyboardInterrupt, so code that
    does not know about it still stops as it would on Ctrl-C.

    Attributes:
        result: the :class:`AttackResult` with the best estimate so far
            (``result.interrupted`` is True).
    """

    def __init__(self, message: str, result: AttackResult) -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self):  # picklable with its result (e.g. across worker processes)
        return (type(self), (str(self), self.result))


def params_and_target(model: nn.Module, shared: Mapping[str, torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The model's trainable parameters and the shared gradient flattened in their order (float32 ``[P]``).

    Raises:
        SharedGradientError: if ``shared`` does not match the model.
    """
    check_shared(model, shared)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    target = torch.cat([shared[n].detach().reshape(-1).float() for n, _ in named])
    return [p for _, p in named], target


def _whole(value: Any, name: str, low: int, high: int, what: str) -> int:
    """An integer in [low, high] (bools, fractions, NaN and strings refused with a message)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and isinstance(value, float):
        ok = math.isfinite(value) and value == int(value)
    if not ok:
        raise ValueError(f"{name} must be a whole number ({what}), got {value!r}")
    v = int(value)
    if not low <= v <= high:
        raise ValueError(f"{name} must lie in {low}..{high} ({what}), got {v}")
    return v


def check_restarts(restarts: int, retries: int = 0) -> tuple[int, int]:
    """Validate the number of independent restarts (1..MAX_RESTARTS) and of retries after a failure (>= 0)."""
    restarts = _whole(restarts, "restarts", 1, MAX_RESTARTS, "independent runs at once, batched: memory grows with it")
    retries = _whole(retries, "retries", 0, 10_000, "fresh starts after a failed run")
    return restarts, retries


def check_hyper(iterations: Any, lr: Any, **weights: Any) -> int:
    """Validate an attack's budget and step size before anything runs.

    ``iterations`` must be a whole number in 1..MAX_ITERATIONS, ``lr`` a finite
    number > 0, and each keyword (a weight such as ``tv_weight``) a finite
    number >= 0. Returns ``iterations`` as an int.

    Raises:
        ValueError: naming the first bad value.
    """
    iterations = _whole(iterations, "iterations", 1, MAX_ITERATIONS, "optimiser steps")
    for name, value, low_ok in (("lr", lr, False), *((k, v, True) for k, v in weights.items())):
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not math.isfinite(v) or v < 0 or (v == 0 and not low_ok):
            raise ValueError(f"{name} must be a finite number {'>= 0' if low_ok else '> 0'}, got {value!r}")
    return iterations


def _batchnorm_in_train_mode(model: nn.Module) -> list[str]:
    return [
        n for n, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
    ]


def check_batchnorm(model: nn.Module, restarts: int) -> None:
    """Batched restarts cannot run a BatchNorm layer in train mode (its running statistics would be
    updated inside ``torch.func.vmap``).

    Raises:
        ValueError: naming the layer and the two ways out.
    """
    bn = _batchnorm_in_train_mode(model)
    if bn and restarts > 1:
        raise ValueError(
            f"the model's BatchNorm layer {bn[0]!r} is in train mode, which batched restarts cannot run "
            "(each evaluation would update its running statistics); use restarts=1, or call model.eval() "
            "first if the client computed its gradient in eval mode"
        )


def keeps_model(fn: Callable) -> Callable:
    """Decorator for an attack ``fn(model, ...)``: the model comes back exactly as it went in.

    Parameters and buffers (e.g. a BatchNorm's running statistics, which every
    forward pass in train mode updates), each module's train/eval mode, each
    parameter's ``requires_grad`` and ``.grad`` are restored when the attack
    returns or raises (Ctrl-C included).
    """

    @functools.wraps(fn)
    def wrapper(model: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        tensors = dict(model.state_dict(keep_vars=True))
        saved = {k: v.detach().clone() for k, v in tensors.items()}
        modes = [(m, m.training) for m in model.modules()]
        flags = [(p, p.requires_grad, None if p.grad is None else p.grad.detach().clone()) for p in model.parameters()]
        try:
            return fn(model, *args, **kwargs)
        finally:
            with torch.no_grad():
                for k, v in tensors.items():
                    if v.shape == saved[k].shape and not torch.equal(v, saved[k]):
                        v.copy_(saved[k])
            for m, mode in modes:
                m.training = mode
            for p, flag, grad in flags:
                p.requires_grad_(flag)
                p.grad = grad

    return wrapper


class RestartBook:
    """Per-restart bookkeeping of a vectorised attack: each restart's best loss and iterate, retries, how it ended."""

    def __init__(self, restarts: int) -> None:
        self.R = restarts
        self.best_loss = torch.full((restarts,), math.inf, dtype=torch.float64)
        self.best_z: torch.Tensor | None = None
        self.retries = torch.zeros(restarts, dtype=torch.long)
        self.reasons = ["ran every iteration"] * restarts
        self.diverged = torch.zeros(restarts, dtype=torch.bool)

    def offer(self, loss: torch.Tensor, z: torch.Tensor, ids: torch.Tensor | None = None) -> None:
        """Keep each restart's iterate ``z [R', n]`` where its ``loss [R']`` is its lowest so far (finite only).

        ``ids`` (int64 ``[R']``) names the restarts of the rows when some were dropped.
        """
        loss = loss.detach().double()
        if ids is None:
            ids = torch.arange(loss.shape[0])
        if self.best_z is None:
            self.best_z = torch.zeros(self.R, z.shape[1], dtype=z.dtype)
            self._seen = torch.zeros(self.R, dtype=torch.bool)
        better = torch.isfinite(loss) & (loss < self.best_loss[ids])
        if not bool(better.any()):
            return
        rows = ids[better]
        self.best_loss[rows] = loss[better]
        self.best_z[rows] = z.detach()[better]
        self._seen[rows] = True

    def current(self, loss: torch.Tensor, z: torch.Tensor, ids: torch.Tensor) -> None:
        """Record each restart's current loss and iterate as its result (attacks that keep the final iterate, not the best)."""
        if self.best_z is None:
            self.best_z = torch.zeros(self.R, z.shape[1], dtype=z.dtype)
            self._seen = torch.zeros(self.R, dtype=torch.bool)
        loss = loss.detach().double()
        self.best_loss[ids] = torch.where(torch.isfinite(loss), loss, torch.full_like(loss, math.inf))
        self.best_z[ids] = z.detach()
        self._seen[ids] = True

    def ranking(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids`` sorted by best loss so far, lowest first (never-finite restarts last)."""
        return ids[torch.argsort(self.best_loss[ids], stable=True)]

    def part(self, rows: slice) -> "RestartBook":
        """The bookkeeping of the restarts in ``rows`` (one problem's block) as a book of its own (views)."""
        out = RestartBook(rows.stop - rows.start)
        out.best_loss, out.retries = self.best_loss[rows], self.retries[rows]
        out.reasons, out.diverged = self.reasons[rows], self.diverged[rows]
        if self.best_z is not None:
            out.best_z, out._seen = self.best_z[rows], self._seen[rows]
        return out

    def halve(self, ids: torch.Tensor, problems: int, iteration: int) -> torch.Tensor:
        """Successive halving on rows ``ids`` (restart ids, problem by problem, the same count for each of
        ``problems``): keep the better half of each problem's rows; returns the row indices kept (int64, per
        problem best first), the dropped restarts' reason recorded."""
        per = len(ids) // problems
        kept_rows: list[int] = []
        for p in range(problems):
            order = self.ranking(ids[p * per:(p + 1) * per])
            kept = order[: math.ceil(per / 2)]
            self.stop_reason(order[len(kept):].tolist(), f"dropped at iteration {iteration} (successive halving)")
            kept_rows += [int(torch.nonzero(ids == r)[0]) for r in kept.tolist()]
        return torch.tensor(kept_rows)

    def stop_reason(self, ids: Sequence[int], reason: str) -> None:
        for r in ids:
            self.reasons[int(r)] = reason

    def best_row(self) -> int | None:
        """The restart with the lowest loss, or None if no evaluation was finite."""
        if self.best_z is None or not bool(self._seen.any()):
            return None
        return int(self.best_loss.argmin())

    def report(self, truth: torch.Tensor | None, image_of: Callable) -> list[dict]:
        """One dict per restart: restart, loss, psnr/ssim (dB / [-1, 1], against the truth), retries, ended, diverged."""
        out = []
        for r in range(self.R):
            row: dict[str, Any] = {
                "restart": r, "loss": float(self.best_loss[r]), "retries": int(self.retries[r]),
                "ended": self.reasons[r], "diverged": bool(self.diverged[r]),
            }
            if truth is not None and self.best_z is not None and math.isfinite(row["loss"]):
                est = image_of(self.best_z[r]).detach().clamp(0, 1)
                if est.shape[0] > 1:
                    est = est[metrics.match_order(est, truth)]
                row["psnr"] = float(metrics.psnr(est, truth).mean())
                row["ssim"] = float(metrics.ssim(est, truth).mean())
            out.append(row)
        return out


def check_problems(model: nn.Module, shareds: Sequence[Mapping[str, torch.Tensor]], seeds: Sequence[int],
                   truths: Sequence[Any], callback: Callback | None, rows: int,
                   shape: Sequence[int]) -> list[tuple[torch.Tensor | None, torch.Tensor | None]]:
    """The checks of an engine attacking P shared gradients at once (``rows`` = P x restarts rows).

    Returns each problem's ``(truth images, truth labels)`` (:func:`check_truth`).

    Raises:
        ValueError: no gradient, seeds or truths not one per gradient, a callback with more than one gradient,
            batched rows on a model with BatchNorm in train mode, a malformed truth.
        SharedGradientError: a gradient that does not match the model.
    """
    P = len(shareds)
    if P < 1 or len(seeds) != P or len(truths) != P:
        raise ValueError(f"give one seed and one truth (or None) per shared gradient ({P}), got {len(seeds)} and "
                         f"{len(truths)}")
    if P > 1 and callback is not None:
        raise ValueError("a callback follows one attack: attack one shared gradient at a time to use it")
    check_batchnorm(model, rows)
    checked = [check_truth(t, shape) for t in truths]
    for shared in shareds:
        check_shared(model, shared)
    return checked


def problem_recorder(rec: "Recorder", truth: torch.Tensor | None, problems: int) -> "Recorder":
    """The recorder that builds one problem's result: ``rec`` itself for a single problem; otherwise a fresh
    one for ``truth`` holding the shared run's evaluation count and its share (1/P) of the clock."""
    if problems == 1:
        return rec
    out = Recorder(rec.attack, truth=truth, callback=None, callback_every=rec.callback_every,
                   metrics_every=rec.metrics_every, progress=False, iterations=1)
    out.evaluations, out.seconds = rec.evaluations, rec.seconds / problems
    return out


def shared_run_note(problems: int) -> str:
    """What a result's message adds when its gradient was attacked together with others ("" for one)."""
    return "" if problems == 1 else (
        f"; attacked together with {problems - 1} other gradient(s) (seconds are this one's share)")


def halving_points(restarts: int, iterations: int) -> list[int]:
    """Iterations after which successive halving keeps the better half of the restarts still running.

    ``H = ceil(log2 R)`` halvings, after ``T/2^(H+1), ..., T/8, T/4`` of the
    budget T (successive halving on a fixed budget, Karnin et al. 2013;
    Jamieson & Talwalkar 2016): 8 restarts run 8 -> 4 -> 2 -> 1 after T/16,
    T/8 and T/4, about 1.75 single runs of iterations, done as batched
    evaluations. Bad starts show early (DLG's explode or stall within a few
    iterations), so the first cut comes early. Empty for one restart.
    """
    if restarts <= 1:
        return []
    h = math.ceil(math.log2(restarts))
    points = sorted({max(1, math.ceil(iterations / 2**j)) for j in range(2, h + 2)})
    return [p for p in points if p < iterations]


def _is_whole(value: Any) -> bool:
    """An integer (Python, numpy, a 0-d integer tensor) or an integer-valued float; never a bool."""
    if isinstance(value, bool):
        return False
    try:
        operator.index(value)
        return True
    except TypeError:
        return isinstance(value, float) and math.isfinite(value) and value.is_integer()


def check_input_shape(input_shape: Sequence[int], model: nn.Module) -> tuple[int, int, int, int]:
    """Validate ``input_shape`` = (B, C, H, W) against the model's expected image shape."""
    try:
        given = tuple(input_shape)
    except TypeError:
        raise ValueError(f"input_shape must be (B, C, H, W), got {input_shape!r}") from None
    whole = all(_is_whole(s) for s in given)
    if len(given) != 4 or not whole or any(s < 1 for s in given):
        raise ValueError(f"input_shape must be (B, C, H, W) with positive whole sizes, got {given}")
    shape = tuple(int(s) for s in given)
    if shape[0] > MAX_BATCH:
        raise ValueError(f"the batch size {shape[0]} is above {MAX_BATCH}, the most these attacks handle")
    expected = getattr(model, "input_shape", None)
    if expected is not None and tuple(shape[1:]) != tuple(expected):
        raise ValueError(f"input_shape {shape} does not fit the model, which takes images of shape {tuple(expected)}")
    return shape  # type: ignore[return-value]


def check_num_classes(model: nn.Module, num_classes: int) -> int:
    """``num_classes`` must equal the output size of the model's last linear layer."""
    _, layer = output_layer(model)
    if int(num_classes) != layer.out_features:
        raise ValueError(
            f"num_classes={num_classes} does not match the model, whose output layer has "
            f"{layer.out_features} classes"
        )
    return int(num_classes)


def _unfold_conv(conv: nn.Conv2d) -> Callable:
    """Conv2d as im2col + matmul: same values, much cheaper double backward on a CPU."""
    k, s, p = conv.kernel_size, conv.stride, conv.padding

    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, _, h, w = x.shape
        ho = (h + 2 * p[0] - k[0]) // s[0] + 1
        wo = (w + 2 * p[1] - k[1]) // s[1] + 1
        cols = F.unfold(x, k, padding=p, stride=s)
        out = weight.reshape(weight.shape[0], -1) @ cols
        if bias is not None:
            out = out + bias[:, None]
        return out.reshape(b, weight.shape[0], ho, wo)

    return forward


_FAST_DEPTH = 0


@contextlib.contextmanager
def fast_attack_mode(model: nn.Module, num_threads: int | str | None = 1) -> Iterator[None]:
    """Hot-path settings for an attack loop, undone on exit.

    - flush denormal floats to zero (late iterations near zero loss otherwise
      slow down many times);
    - run plain 2-D convolutions as im2col + matmul (identical values; their
      double backward is 2-3x cheaper than the convolution kernels' on a CPU);
    - use ``num_threads`` intra-op threads (1 is fastest for the course's tiny
      models on a 2-core CPU; None leaves the setting alone; "auto": 1 for a
      model the chain program handles, torch's setting for any other, whose
      double backward through autograd gains from more threads).
    """
    old_threads = torch.get_num_threads()
    patched = []
    for m in model.modules():
        if (
            type(m) is nn.Conv2d
            and "_conv_forward" not in m.__dict__  # already patched by an outer fast_attack_mode
            and m.groups == 1
            and m.padding_mode == "zeros"
            and m.dilation == (1, 1)
            and not isinstance(m.padding, str)
        ):
            m._conv_forward = _unfold_conv(m)  # instance attribute shadows the method
            patched.append(m)
    global _FAST_DEPTH
    _FAST_DEPTH += 1
    torch.set_flush_denormal(True)
    if num_threads == "auto":
        num_threads = 1 if chain_gradient_fn(model) is not None else None
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    try:
        yield
    finally:
        for m in patched:
            del m._conv_forward
        _FAST_DEPTH -= 1
        if _FAST_DEPTH == 0:  # torch has no getter: restore its default, off
            torch.set_flush_denormal(False)
        torch.set_num_threads(old_threads)


class Recorder:
    """Keeps the clock (pausing it for callbacks and metrics), history and best estimate."""

    def __init__(
        self,
        attack: str,
        *,
        truth: torch.Tensor | None,
        callback: Callback | None,
        callback_every: int,
        metrics_every: int,
        progress: bool,
        iterations: int,
    ) -> None:
        if callback_every < 1 or metrics_every < 1:
            raise ValueError("callback_every and metrics_every must be at least 1")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable (it receives an AttackState), got {type(callback).__name__}")
        self.attack = attack
        if truth is not None and (not torch.is_tensor(truth) or not bool(torch.isfinite(truth).all())):
            raise ValueError("truth must be a finite tensor of images in [0, 1] (it is only used for the reported metrics)")
        self.truth = truth.detach().float() if truth is not None else None
        self.callback = callback
        self.callback_every = int(callback_every)
        self.metrics_every = int(metrics_every)
        self.history: list[dict] = []
        self.seconds = 0.0
        self.evaluations = 0
        self.best_loss = math.inf
        self.best: torch.Tensor | None = None
        self.best_labels: torch.Tensor | None = None
        self._t0 = time.perf_counter()
        self.callback_error: BaseException | None = None
        self.interrupted = False
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=iterations, desc=attack, leave=False)

    def _matched(self, est: torch.Tensor) -> torch.Tensor:
        """A batch comes back in any order: pair it with the truth before scoring."""
        if est.shape[0] == 1:
            return est
        return est[metrics.match_order(est, self.truth)]

    def pause(self) -> None:
        self.seconds += time.perf_counter() - self._t0

    def resume(self) -> None:
        self._t0 = time.perf_counter()

    def offer(self, loss: float, estimate: torch.Tensor, labels: Callable[[], torch.Tensor]) -> None:
        """Keep ``estimate`` if its loss is the lowest so far (cheap: one small copy)."""
        if loss < self.best_loss:
            self.best_loss = loss
            self.best = estimate.detach().clone()
            self.best_labels = labels()

    def record(
        self, iteration: int, loss: float, estimate: torch.Tensor, labels: torch.Tensor, final: bool = False, note: str | None = None
    ) -> bool:
        """Log one step; call the callback when due. Returns True if the callback asked to stop."""
        self.pause()
        rec: dict[str, Any] = {
            "iteration": iteration,
            "evaluations": self.evaluations,
            "seconds": self.seconds,
            "loss": loss,
        }
        if note:
            rec["note"] = note
        est = estimate.detach().clamp(0, 1)
        self._last_estimate = est
        psnr = None
        if self.truth is not None:
            matched = self._matched(est)
            psnr = float(metrics.psnr(matched, self.truth).mean())
            rec["psnr"] = psnr
            if final or iteration % self.metrics_every == 0:
                rec["ssim"] = float(metrics.ssim(matched, self.truth).mean())
        self.history.append(rec)
        stop = False
        if self.callback is not None and (final or iteration % self.callback_every == 0):
            state = AttackState(
                self.attack, iteration, self.evaluations, self.seconds, loss, est.clone(),
                None if labels is None else labels.clone(), psnr, final,
            )
            stop = self._call(state)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.2e}", **({"psnr": f"{psnr:.1f}"} if psnr is not None else {}))
        self.resume()
        return stop

    def _call(self, state: AttackState) -> bool:
        """Call the callback; an exception stops the attack (kept for :meth:`finish`), it never loses the estimate."""
        try:
            return bool(self.callback(state))
        except Exception as exc:  # re-raised by finish() as CallbackError, with the best estimate
            self.callback_error = exc
            return True

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """Wrap the attack loop: Ctrl-C ends the loop (the attack then builds its result as usual,
        and :meth:`finish` raises :class:`AttackInterrupted` carrying it)."""
        try:
            yield
        except KeyboardInterrupt:
            self.interrupted = True

    def stop_note(self, iteration: int) -> str | None:
        """Why the loop stopped early, if the callback or Ctrl-C stopped it."""
        if self.interrupted:
            return f"interrupted (Ctrl-C) at iteration {iteration}"
        if self.callback_error is not None:
            return f"stopped at iteration {iteration}: the callback raised {self.callback_error.__class__.__name__}"
        return None

    def finish(self, result: AttackResult) -> AttackResult:
        """Return ``result``, or raise it inside :class:`AttackInterrupted` / :class:`CallbackError`."""
        if self.interrupted:
            result.interrupted = True
            raise AttackInterrupted(f"{self.attack} interrupted (Ctrl-C) after {result.iterations} iterations; "
                                    "the best estimate so far is in .result", result)
        if self.callback_error is not None:
            exc = self.callback_error
            result.error = f"{exc.__class__.__name__}: {exc}"
            raise CallbackError(
                f"the callback raised {result.error} at iteration {result.iterations}; {self.attack} stopped there "
                "and kept its best estimate (in .result)", result,
            ) from exc
        return result

    def close(self) -> None:
        """Stop the clock, add SSIM to the last history entry, close the progress bar."""
        self.pause()
        if self.truth is not None and self.history and "ssim" not in self.history[-1]:
            self.history[-1]["ssim"] = float(metrics.ssim(self._matched(self._last_estimate), self.truth).mean())
        if self.bar is not None:
            self.bar.close()

    def result(
        self, iterations: int, diverged: bool, message: str, true_labels: torch.Tensor | None, retries: int = 0
    ) -> AttackResult:
        """The AttackResult of the best estimate (clamped to [0, 1]), with final metrics; tells the callback it is done."""
        recon = self.best.clamp(0, 1)
        labels = self.best_labels
        loss = None if self.best_loss is None else float(self.best_loss)
        result = AttackResult(
            attack=self.attack, reconstruction=recon, labels=labels, loss=loss, iterations=iterations,
            evaluations=self.evaluations, seconds=self.seconds, history=self.history, diverged=diverged,
            message=message, retries=retries,
        )
        result.metrics = self.final_metrics(recon, labels, true_labels)
        if self.callback is not None and self.callback_error is None and not self.interrupted:
            psnr = result.metrics.get("psnr_mean")
            self._call(AttackState(
                self.attack, iterations, self.evaluations, self.seconds, loss, recon.clone(),
                None if labels is None else labels.clone(), psnr, True,
            ))
        return result

    def final_metrics(self, reconstruction: torch.Tensor, labels: torch.Tensor | None, true_labels: torch.Tensor | None) -> dict:
        """Final PSNR/SSIM/MSE (per image, in the truth's order, and means) and label accuracy
        (None when the attack recovered no label); empty without a truth."""
        if self.truth is None:
            return {"label_accuracy": None} if true_labels is not None and labels is None else (
                {"label_accuracy": metrics.label_accuracy(labels, true_labels)} if true_labels is not None else {})
        order = metrics.match_order(reconstruction, self.truth) if reconstruction.shape[0] > 1 else torch.zeros(1, dtype=torch.int64)
        matched = reconstruction[order]
        p = metrics.psnr(matched, self.truth)
        s = metrics.ssim(matched, self.truth)
        e = metrics.mse(matched, self.truth)
        out = {
            "order": order.tolist(),
            "psnr": p.tolist(),
            "ssim": s.tolist(),
            "mse": e.tolist(),
            "psnr_mean": float(p.mean()),
            "ssim_mean": float(s.mean()),
            "mse_mean": float(e.mean()),
        }
        if true_labels is not None:
            out["label_accuracy"] = None if labels is None else metrics.label_accuracy(labels, true_labels)
        return out
