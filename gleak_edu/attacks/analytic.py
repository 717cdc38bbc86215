"""Analytic input recovery from a first fully connected layer with a bias.

For y = W x + b and batch size 1, dL/dW[i, :] = dL/dy_i * x and dL/db_i = dL/dy_i,
so x = dL/dW[i, :] / dL/db[i] for any row i with a non-zero bias gradient
(Phong et al. 2017; used against PRECODE in Scheliga et al., arXiv 2208.04767,
because the first layer sits before the bottleneck and its gradient stays exact).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from gleak_edu.attacks._common import (
    AttackOptions,
    AttackResult,
    Callback,
    Recorder,
    check_num_classes,
    check_truth,
    keeps_model,
    options_of,
)
from gleak_edu.fl import check_shared

__all__ = ["analytic_recovery", "first_linear_layer"]


def first_linear_layer(model: nn.Module) -> tuple[str, nn.Linear]:
    """The first ``nn.Linear`` in ``model.named_modules()`` order, with its name.

    Raises:
        ValueError: if the model has no linear layer, if a convolution comes
            before it (the input does not reach it directly), or if it has no bias.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            raise ValueError(
                f"the first weight layer {name!r} is a convolution: analytic recovery needs a model whose "
                "first layer is fully connected (use the MLP)"
            )
        if isinstance(module, nn.Linear):
            if module.bias is None:
                raise ValueError(f"the first linear layer {name!r} has no bias: the analytic route needs one")
            return name, module
    raise ValueError("the model has no linear layer before its output: analytic recovery needs one")


@keeps_model
def analytic_recovery(
    model: nn.Module,
    shared: Mapping[str, torch.Tensor],
    *,
    input_shape: Sequence[int],
    num_classes: int | None = None,
    truth: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
    callback: Callback | None = None,
    options: AttackOptions | None = None,
) -> AttackResult:
    """Recover a single input exactly from the gradient of a first linear layer with bias (Phong et al. 2017).

    Uses every row with a usable bias gradient (|dL/db_i| above 1e-3 of the
    largest) and averages their estimates ``dL/dW[i, :] / dL/db_i``, weighted by
    ``|dL/db_i|`` (larger bias gradients divide with less rounding error).
    One closed-form step: no optimisation, no loss, and no label (the first
    layer's gradient carries the input, not the class).

    Args:
        model: the victim; its first layer must be ``nn.Linear`` with a bias
            applied to the flattened input.
        shared: the shared gradient (name -> tensor) of one example.
        input_shape: ``(1, C, H, W)``.
        num_classes: optional; checked against the model's output layer when given.
        truth: optional ``(images, labels)`` or images, only for the metrics.
        callback: called once, with the final :class:`AttackState` (``done``).
        options: :class:`AttackOptions`; ``restarts`` must be 1 (nothing is random).

    Returns:
        :class:`AttackResult` (``attack`` ``"analytic"``): ``reconstruction``
        float32 ``[1, C, H, W]`` clamped to [0, 1] (without a defense it equals
        the private image up to float32 rounding); ``labels`` None and
        ``loss`` None (the attack recovers no label and minimises nothing);
        ``metrics["label_accuracy"]`` None when the truth's labels are given;
        ``iterations`` and ``evaluations`` 1; one history entry.

    Raises:
        ValueError: if the batch size is not 1, if the layer does not match the
            input size, if no row of the bias gradient is non-zero, or
            ``options.restarts`` > 1.
        SharedGradientError: if ``shared`` does not match the model.
        CallbackError: if the callback raised (``exc.result`` holds the result).
    """
    options = options_of(options)
    if options.restarts != 1:
        raise ValueError(f"analytic recovery has no restarts (it is one closed-form step); got options.restarts={options.restarts}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable (it receives an AttackState), got {type(callback).__name__}")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4 or shape[0] != 1:
        raise ValueError(
            f"analytic recovery works for batch size 1 (input_shape (1, C, H, W)), got {shape}: "
            "with a batch, each row mixes the examples"
        )
    images, true_labels = check_truth(truth, shape)
    check_shared(model, shared)
    if num_classes is not None:
        check_num_classes(model, num_classes)
    rec = Recorder("analytic", truth=images, callback=None, callback_every=1, metrics_every=1,
                   progress=False, iterations=1)
    x = recover_input(model, shared, shape)
    rec.evaluations = 1
    recon = x.clamp(0, 1)
    rec.record(1, None, recon, None, final=True)
    rec.close()
    rec.callback = callback
    rec.best, rec.best_labels, rec.best_loss = recon, None, None
    message = "closed form: each usable row of the first layer's weight gradient divided by its bias gradient"
    return rec.finish(rec.result(1, not bool(torch.isfinite(x).all()), message, true_labels))


def recover_input(model: nn.Module, shared: Mapping[str, torch.Tensor], shape: Sequence[int]) -> torch.Tensor:
    """The closed form behind :func:`analytic_recovery`: float32 ``shape``, not clamped.

    Raises:
        ValueError: if the first linear layer does not take the image's pixels
            or its bias gradient is all zero.
    """
    name, layer = first_linear_layer(model)
    n = shape[1] * shape[2] * shape[3]
    if layer.in_features != n:
        raise ValueError(f"the first linear layer {name!r} takes {layer.in_features} inputs, but the image has {n} pixels")
    gw = shared[f"{name}.weight"].double()
    gb = shared[f"{name}.bias"].double()
    mag = gb.abs()
    if float(mag.max()) == 0.0:
        raise ValueError("the first layer's bias gradient is all zero: no row carries the input")
    rows = mag > 1e-3 * mag.max()
    weights = mag[rows]
    estimates = gw[rows] / gb[rows, None]
    x = (weights[:, None] * estimates).sum(0) / weights.sum()
    return x.float().reshape(tuple(shape))
