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


def analytic_recovery(
    model: nn.Module, shared: Mapping[str, torch.Tensor], *, input_shape: Sequence[int]
) -> torch.Tensor:
    """Recover a single input exactly from the gradient of a first linear layer with bias.

    Uses every row with a usable bias gradient (|dL/db_i| above 1e-3 of the
    largest) and averages their estimates ``dL/dW[i, :] / dL/db_i``, weighted by
    ``|dL/db_i|`` (larger bias gradients divide with less rounding error).

    Args:
        model: the victim; its first layer must be ``nn.Linear`` with a bias
            applied to the flattened input.
        shared: the shared gradient (name -> tensor) of one example.
        input_shape: ``(1, C, H, W)``.

    Returns:
        float32 ``[1, C, H, W]``: the input, not clamped (it equals the private
        image up to float32 rounding).

    Raises:
        ValueError: if the batch size is not 1, if the layer does not match the
            input size, or if no row of the bias gradient is non-zero.
        SharedGradientError: if ``shared`` does not match the model.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4 or shape[0] != 1:
        raise ValueError(
            f"analytic recovery works for batch size 1 (input_shape (1, C, H, W)), got {shape}: "
            "with a batch, each row mixes the examples"
        )
    check_shared(model, shared)
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
    return x.float().reshape(shape)
