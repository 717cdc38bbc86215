"""Text recovery from one shared transformer gradient (the setting of Li, Song, Wang, Yang, arXiv 2311.13624).

Two standard facts make a transformer's gradient give its sentence away:

1. **The words.** The token-embedding gradient ``dL/dE`` is non-zero only in
   the rows of tokens that occur (row v is the sum of ``dL/dh_j`` over the
   positions j holding v). Its non-zero rows are the sentence's set of words,
   and the non-zero rows of the position-embedding gradient give its length.
2. **The order.** DLG-style gradient matching over continuous embeddings: each
   position's input is a soft mixture ``softmax(z_j) @ E[S]`` of the recovered
   words' embeddings; the mixtures are optimised (Adam) so that the model's
   gradient on them matches the shared one, every parameter included; each
   position is then decoded to its nearest word (the mixture's largest weight).

The start of the optimisation uses the identity behind fact 1: the
position-embedding gradient row j *is* ``dL/dh_j``, so it coincides with the
token-embedding row of the word at position j (when that word occurs once).
The logits start at ``30 * cos(row_j of dL/dP, row_v of dL/dE)``; the
estimate kept is the decoded sentence (from the start or after matching) with
the lowest matching loss. From random starts (``start="random"``, 2 x 200
steps) the same matching put 97.5 % of the words of ten random 1-12-word
sentences in place; from the similarity start, 100 % (notebook 06, tests).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from gleak_edu.attacks._common import (
    AttackInterrupted,
    AttackOptions,
    AttackResult,
    AttackState,
    CallbackError,
    check_hyper,
    check_restarts,
    keeps_model,
    options_of,
    split_truth,
)
from gleak_edu.fl import check_shared

__all__ = ["TextAttackResult", "TextState", "recovered_token_set", "text_metrics", "text_recovery"]

_TOKEN, _POSITION = "token_embedding.weight", "position_embedding.weight"


@dataclass
class TextState(AttackState):
    """What a live view gets during :func:`text_recovery`: an :class:`AttackState` whose ``estimate``
    is the decoded token ids (int64 ``[1, L]``), ``labels`` the class read off the head (``[1]``),
    plus ``words``, the decoded sentence as words."""

    words: list[str] = field(default_factory=list)


@dataclass
class TextAttackResult(AttackResult):
    """Outcome of :func:`text_recovery`: an :class:`AttackResult` with the sentence's own fields.

    Attributes:
        reconstruction: the recovered token ids, int64 ``[1, L]``.
        labels: int64 ``[1]``, the class read off the head's bias gradient (its only negative entry).
        loss: the matching loss of the kept estimate (0 = identical gradients).
        tokens: recovered token ids in order (list); words, sentence: the same as text.
        token_set: the ids read off the token-embedding gradient (sorted).
        length: the sentence length read off the position-embedding gradient.
        start: "similarity" or "random".
        metrics: with a truth given: set_recall, set_precision (in [0, 1]),
            order_accuracy (share of the true positions holding the right word);
            with its label: label_correct and label_accuracy.
        history: ``{"iteration", "evaluations", "seconds", "loss"}`` every ``callback_every`` steps.
        Others as for :class:`AttackResult` (interrupted, error, restarts...).
    """

    tokens: list[int] = field(default_factory=list)
    words: list[str] = field(default_factory=list)
    sentence: str = ""
    token_set: list[int] = field(default_factory=list)
    length: int = 0
    start: str = "similarity"

    @property
    def label(self) -> int:
        """The class read off the head's bias gradient."""
        return int(self.labels[0])

    def __repr__(self) -> str:
        m = "".join(f", {k}={self.metrics[k]:.2f}" for k in ("set_recall", "order_accuracy") if k in self.metrics)
        return (f"TextAttackResult({self.sentence!r}, label={self.label}, loss={self.loss:.3g}, "
                f"iterations={self.iterations}, seconds={self.seconds:.2f}{m})")


def recovered_token_set(model: nn.Module, shared: Mapping[str, torch.Tensor]) -> tuple[list[int], int]:
    """The token ids whose embedding-gradient rows stand out, and the sentence length.

    Without noise the rows of absent tokens and the position rows past the end
    are exactly zero. With noise every row has a noise norm; the median token
    row (most words are absent) estimates it and rows above 1.5 times it count.
    Returns ``(sorted ids, length)``; with nothing above the floor, the
    ``length`` strongest rows.
    """
    rows = shared[_TOKEN].detach().norm(dim=1)
    pos = shared[_POSITION].detach().norm(dim=1)
    floor = float(rows.median())
    threshold = 1.5 * floor if floor > 0 else 0.0  # without noise, absent rows are exactly zero
    length = min(max(int((pos > threshold).sum()), 1), model.max_len)
    chosen = torch.nonzero(rows > threshold).flatten()
    if len(chosen) == 0:
        chosen = rows.topk(min(length, len(rows))).indices
    return sorted(int(i) for i in chosen), length


def text_metrics(recovered: list[int], truth: list[int], token_set: list[int] | None = None) -> dict:
    """Token-set recall and precision (of ``token_set``, default the recovered tokens), and in-order
    accuracy (share of the true positions holding the right token)."""
    rec, true = set(recovered if token_set is None else token_set), set(truth)
    hits = sum(1 for j, t in enumerate(truth) if j < len(recovered) and recovered[j] == t)
    return {
        "set_recall": len(rec & true) / len(true) if true else math.nan,
        "set_precision": len(rec & true) / len(rec) if rec else 0.0,
        "order_accuracy": hits / len(truth) if truth else math.nan,
    }


@keeps_model
def text_recovery(
    model: nn.Module,
    shared: Mapping[str, torch.Tensor],
    vocab,
    *,
    iterations: int = 200,
    lr: float = 0.05,
    start: str = "similarity",
    seed: int = 0,
    truth: torch.Tensor | tuple[torch.Tensor, int] | None = None,
    callback: Callable[[TextState], None] | None = None,
    options: AttackOptions | None = None,
    stop_when_exact: bool = False,
) -> TextAttackResult:
    """Recover a sentence (words, then order) from one shared gradient of a :class:`~gleak_edu.models.TinyTransformer`.

    Args:
        model: the victim (its weights are what the server sent the client).
        shared: its gradient on one sentence (name -> tensor), e.g. from
            :func:`gleak_edu.fl.client_text_gradient`.
        vocab: the :class:`gleak_edu.text.Vocabulary` (to write the words).
        iterations: Adam steps of the order matching per restart (200; 0: the similarity start alone).
        lr: Adam's step size (0.05).
        start: ``"similarity"`` (see the module docstring) or ``"random"``.
        seed: seed of the random starts.
        truth: optional, only for the metrics: ``(token ids [L], label)`` or the token ids alone.
        callback: called with a :class:`TextState` every ``options.callback_every`` steps (10) and at the end.
        options: :class:`AttackOptions`: ``restarts`` independent runs (the lowest
            final loss is kept; random starts differ, similarity starts get a
            small random perturbation after the first), ``callback_every``.
        stop_when_exact: skip the matching when the similarity start, decoded to
            words, already reproduces the shared gradient exactly (matching loss
            at most 1e-12, as on a gradient shared without noise): no step can
            improve on it. For many attacks in a row; off by default, so a live
            view shows the matching.

    Returns:
        :class:`TextAttackResult`.

    Raises:
        ValueError: if the model has no token/position embeddings, ``shared``
            does not match it, or bad hyperparameters.
        CallbackError: if the callback raised (``exc.result`` holds the best
            estimate up to then). AttackInterrupted: on Ctrl-C (the same).

    The model is left as it was (parameters, their ``.grad``, buffers, mode).
    """
    if not hasattr(model, "token_embedding") or not hasattr(model, "position_embedding"):
        raise ValueError("text_recovery needs a model with token_embedding and position_embedding (TinyTransformer)")
    check_shared(model, shared)
    if start not in ("similarity", "random"):
        raise ValueError(f"start must be 'similarity' or 'random', got {start!r}")
    options = options_of(options)
    restarts = check_restarts(options.restarts)[0]
    callback_every = options.every(10, 10)[0]
    if iterations != 0:
        iterations = check_hyper(iterations, lr)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable (it receives a TextState), got {type(callback).__name__}")
    true_tokens, true_labels = split_truth(truth)
    t0 = time.perf_counter()
    token_set, length = recovered_token_set(model, shared)
    S = torch.tensor(token_set, dtype=torch.int64)
    label = int(shared["head.bias"].argmin())
    y = torch.tensor([label])
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    targets = [shared[n].detach() for n in names]
    targets[names.index(_TOKEN)] = targets[names.index(_TOKEN)][S]
    scale = [float(t.pow(2).sum()) + 1e-12 for t in targets]
    emb = model.token_embedding.weight.detach()[S]

    counter = [0]  # matching-loss evaluations

    def matching_loss(weights: torch.Tensor, create_graph: bool) -> torch.Tensor:
        counter[0] += 1
        x = (weights @ emb)[None]
        if not x.requires_grad:  # a hard (one-hot) evaluation: x is a leaf
            x.requires_grad_(True)
        out = model(embeddings=x)
        loss = F.cross_entropy(out, y)
        grads = torch.autograd.grad(loss, [*params, x], create_graph=create_graph, allow_unused=True)
        gs = []
        for i, name in enumerate(names):
            g = weights.t() @ grads[-1][0] if name == _TOKEN else grads[i]
            gs.append(torch.zeros_like(targets[i]) if g is None else g)
        # the best common scale: a clipped gradient is the true one times an unknown factor
        num = sum((g * t).sum() / sc for g, t, sc in zip(gs, targets, scale))
        den = sum(g.pow(2).sum() / sc for g, sc in zip(gs, scale)) + 1e-12
        alpha = num / den
        return sum((alpha * g - t).pow(2).sum() / sc for g, t, sc in zip(gs, targets, scale))

    def hard(z: torch.Tensor) -> torch.Tensor:
        return F.one_hot(z.argmax(1), len(token_set)).float()

    def state(it: int, loss: float, z: torch.Tensor, done: bool = False) -> TextState:
        ids = [int(S[k]) for k in z.detach().argmax(1)]
        return TextState(
            attack="text", iteration=it, evaluations=counter[0], seconds=time.perf_counter() - t0, loss=loss,
            estimate=torch.tensor([ids], dtype=torch.int64), labels=y.clone(), done=done,
            words=[vocab.words[t] for t in ids],
        )

    pos_rows = F.normalize(shared[_POSITION].detach()[:length], dim=1)
    tok_rows = F.normalize(shared[_TOKEN].detach()[S], dim=1)
    similarity = pos_rows @ tok_rows.t()  # [length, |S|]
    gen = torch.Generator().manual_seed(int(seed))
    best_loss, best_z, history, it_total = math.inf, None, [], 0
    failure: list[BaseException] = []  # the callback's exception, if it raised
    interrupted = False

    def call(st: TextState) -> None:
        try:
            callback(st)
        except Exception as exc:  # kept; re-raised below with the best estimate
            failure.append(exc)

    def score(z: torch.Tensor) -> None:
        nonlocal best_loss, best_z
        value = float(matching_loss(hard(z), False).detach())
        if value < best_loss:
            best_loss, best_z = value, z.detach().clone()

    try:  # the restarts of the order matching; Ctrl-C keeps the best so far
        for r in range(restarts):
            noise = torch.randn(similarity.shape, generator=gen)
            z0 = 30.0 * similarity + (0.5 * noise if r else 0.0) if start == "similarity" else 0.1 * noise
            if start == "similarity":
                score(z0)
                if stop_when_exact and best_loss <= 1e-12:
                    break  # the start is an exact match: nothing left to optimise
            z = z0.clone().requires_grad_(True)
            opt = torch.optim.Adam([z], lr=lr)
            for it in range(1, iterations + 1):
                loss = matching_loss(torch.softmax(z, dim=1), True)
                (gz,) = torch.autograd.grad(loss, [z])  # not loss.backward(): the model's .grad stays untouched
                z.grad = gz
                opt.step()
                it_total += 1
                if it % callback_every == 0 or it == iterations:
                    value = float(loss.detach())
                    history.append({"iteration": it_total, "evaluations": counter[0],
                                    "seconds": time.perf_counter() - t0, "loss": value})
                    if callback is not None:
                        call(state(it_total, value, z))
                        if failure:
                            break
            score(z.detach())
            if failure:
                break
    except KeyboardInterrupt:
        interrupted = True
    if best_z is None:  # Ctrl-C before anything was scored: the similarity start
        best_z = 30.0 * similarity
    tokens = [int(S[k]) for k in best_z.argmax(1)]
    words = [vocab.words[t] for t in tokens]
    seconds = time.perf_counter() - t0
    result = TextAttackResult(
        attack="text", reconstruction=torch.tensor([tokens], dtype=torch.int64), labels=y.clone(), loss=best_loss,
        iterations=it_total, evaluations=counter[0], seconds=seconds, history=history, interrupted=interrupted,
        restarts=restarts, tokens=tokens, words=words, sentence=" ".join(words), token_set=token_set, length=length,
        start=start, message=(f"the {start} start matches the shared gradient exactly (loss {best_loss:.2g}): no matching needed"
                              if it_total == 0 and iterations and stop_when_exact and best_loss <= 1e-12 else
                              f"{restarts} restart(s) of {iterations} steps from the {start} start; kept the lowest loss"),
    )
    if true_tokens is not None:
        result.metrics = text_metrics(tokens, [int(t) for t in true_tokens.reshape(-1)], token_set)
    if true_labels is not None:
        result.metrics["label_correct"] = label == int(true_labels[0])
        result.metrics["label_accuracy"] = float(label == int(true_labels[0]))
    if interrupted:
        raise AttackInterrupted(f"text recovery interrupted (Ctrl-C) after {it_total} steps; the best estimate is in .result", result)
    if callback is not None and not failure:
        call(state(it_total, best_loss, best_z, done=True))
    if failure:
        result.error = f"{failure[0].__class__.__name__}: {failure[0]}"
        raise CallbackError(
            f"the callback raised {result.error}; text recovery stopped there and kept its best estimate (in .result)", result
        ) from failure[0]
    return result
