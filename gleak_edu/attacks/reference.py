"""DLG as the paper writes it: the plain algorithm, to read before the fast engine.

:func:`reference_dlg` is Deep Leakage from Gradients (Zhu, Liu, Han, NeurIPS
2019) in about fifteen lines: a dummy image and dummy label logits, the
gradient of the dummy loss taken with ``create_graph=True`` (so the distance to
the shared gradient can itself be differentiated: a double backward), and
``torch.optim.LBFGS``. No restarts, no retries, no vectorisation, no metrics.
:func:`gleak_edu.attacks.dlg` computes the same objective and follows the same
L-BFGS iterations (tests check they agree on the first ones from the same
start); it adds the engine (batched restarts, retries, a faster gradient
program, live views) that the course needs.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["reference_dlg"]


def reference_dlg(
    model: nn.Module,
    shared: Mapping[str, torch.Tensor],
    *,
    input_shape: Sequence[int],
    num_classes: int,
    iterations: int = 300,
    lr: float = 1.0,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Plain DLG: optimise a dummy batch and dummy label logits until their gradient matches ``shared``.

    The dummy image ``[B, C, H, W]`` and label logits ``[B, num_classes]`` start
    from N(0, 1), drawn from ``seed`` in the same order as :func:`gleak_edu.attacks.dlg`
    (one draw of ``B*C*H*W + B*num_classes`` numbers). The loss is
    ``sum over parameters ||dL(x', y')/dW - shared||^2`` with the soft-label
    cross-entropy; each of ``iterations`` L-BFGS steps (lr ``lr``, up to 20
    evaluations, no line search, as in the paper's code) evaluates it. After
    the first step the two implementations drift apart by float32 rounding,
    which L-BFGS amplifies (a few per cent after a few steps).

    Args:
        model: the victim, left untouched (no ``.grad`` is written).
        shared: the shared gradient, parameter name -> tensor (all trainable parameters).
        input_shape: ``(B, C, H, W)``; num_classes: classes of the output.
        iterations, lr, seed: as for :func:`gleak_edu.attacks.dlg`.

    Returns:
        ``(images, labels, losses)``: float32 ``[B, C, H, W]`` clamped to [0, 1],
        int64 ``[B]`` (argmax of the label logits), and per step the matching loss
        at the step's *start* (what ``torch.optim.LBFGS.step`` returns: ``losses[0]``
        is the loss of the random start, as in the first entry of ``dlg``'s history).

    Raises:
        KeyError: if ``shared`` lacks a parameter of the model (the fast
            :func:`~gleak_edu.attacks.dlg` checks its input thoroughly; this one stays plain).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    target = [shared[n].detach() for n, p in model.named_parameters() if p.requires_grad]
    b, c, h, w = (int(s) for s in input_shape)
    z = torch.randn(1, b * c * h * w + b * num_classes, generator=torch.Generator().manual_seed(int(seed)))[0]
    x = z[: b * c * h * w].view(b, c, h, w).clone().requires_grad_(True)
    y = z[b * c * h * w :].view(b, num_classes).clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x, y], lr=lr, max_iter=20)

    def closure() -> torch.Tensor:
        loss = torch.sum(-F.softmax(y, -1) * F.log_softmax(model(x), -1), dim=-1).mean()
        grads = torch.autograd.grad(loss, params, create_graph=True)  # keep the graph: differentiate again
        distance = sum(((g - t) ** 2).sum() for g, t in zip(grads, target))
        x.grad, y.grad = torch.autograd.grad(distance, [x, y])  # the double backward (the model's .grad untouched)
        return distance.detach()

    losses = []
    for _ in range(iterations):
        losses.append(float(opt.step(closure)))
    return x.detach().clamp(0, 1), y.detach().argmax(1), losses
