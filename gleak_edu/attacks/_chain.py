"""Parameter gradients of a layer chain as plain differentiable tensor operations.

Gradient matching needs d/dx of a distance between parameter gradients: a
double backward. Through autograd (``autograd.grad(..., create_graph=True)``
then a second backward) every backward node of the model becomes a recorded
node again, about 900 small operator calls per evaluation for LeNet-Zhu. For a
chain of layers (conv, linear, average pooling, flatten, sigmoid/tanh/ReLU) the
backward pass can be written out directly: the forward stores what backward
needs (im2col columns, activations), and the parameter gradients are a handful
of matmuls. Autograd then differentiates only these few operations (about 1.3x
faster per evaluation than autograd's double backward on a 2-core CPU). The values equal autograd's to float32
rounding; the tests check it layer by layer.

Models opt in with a ``chain()`` method returning their layers in forward order
(see :mod:`gleak_edu.models`); anything else falls back to autograd.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["chain_gradient_fn", "autograd_gradient_fn", "gradient_fn"]

_ACTS = (nn.Sigmoid, nn.Tanh, nn.ReLU)


def _supported(layer: nn.Module) -> bool:
    if isinstance(layer, nn.Conv2d):
        return (
            type(layer) is nn.Conv2d and layer.groups == 1 and layer.padding_mode == "zeros"
            and layer.dilation == (1, 1) and not isinstance(layer.padding, str)
        )
    if isinstance(layer, nn.AvgPool2d):
        k, s = layer.kernel_size, layer.stride
        return k == s and isinstance(k, int) and layer.padding == 0 and not layer.ceil_mode
    return type(layer) in (nn.Linear, nn.Flatten, nn.Sigmoid, nn.Tanh, nn.ReLU)


def chain_gradient_fn(model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], list[torch.Tensor]] | None:
    """``f(x, soft_labels) -> [grad of each parameter]`` for a chain model, or None if unsupported.

    The loss is the soft-label cross-entropy averaged over the batch,
    ``mean_b sum_c -soft[b, c] log softmax(model(x))[b, c]`` (with one-hot
    ``soft`` this is ordinary cross-entropy). Gradients come in
    ``model.parameters()`` order and stay differentiable with respect to x and
    soft. Returns None if the model has no ``chain()`` or a layer is not
    supported, or if its parameters are not exactly the chain's.
    """
    layers = model.chain() if hasattr(model, "chain") else None
    if not layers or not all(_supported(layer) for layer in layers):
        return None
    chain_params = [p for layer in layers for p in layer.parameters(recurse=False)]
    model_params = [p for p in model.parameters() if p.requires_grad]
    if len(chain_params) != len(model_params) or any(a is not b for a, b in zip(chain_params, model_params)):
        return None
    index = {id(p): i for i, p in enumerate(model_params)}
    n_params = len(model_params)

    # Compile the chain once: per layer a forward step (returning what its
    # backward needs) and a backward step. Weights are detached here: attacks
    # differentiate with respect to the input and the labels, never the weights
    # (they share storage, so in-place weight updates are seen).
    forward_steps: list[Callable] = []
    backward_steps: list[Callable] = []
    for pos, layer in enumerate(layers):
        first = pos == 0
        if isinstance(layer, nn.Conv2d):
            k, st, pd, o = layer.kernel_size, layer.stride, layer.padding, layer.out_channels
            w2 = layer.weight.detach().reshape(o, -1)
            w2t = w2.t().contiguous()
            bias = layer.bias.detach()[:, None] if layer.bias is not None else None
            iw, ib = index[id(layer.weight)], index.get(id(layer.bias)) if layer.bias is not None else None
            wshape = layer.weight.shape

            def fwd(h, k=k, st=st, pd=pd, o=o, w2=w2, bias=bias):
                bsz, _, hh, ww = h.shape
                ho = (hh + 2 * pd[0] - k[0]) // st[0] + 1
                wo = (ww + 2 * pd[1] - k[1]) // st[1] + 1
                col = F.unfold(h, k, padding=pd, stride=st)  # [B, C*k*k, L]
                if bias is None:
                    a = w2 @ col
                elif bsz == 1:  # one fused op on the hot path of single-image attacks
                    a = torch.addmm(bias, w2, col[0])[None]
                else:
                    a = torch.baddbmm(bias.expand(bsz, -1, -1), w2.expand(bsz, -1, -1), col)
                return a.reshape(bsz, o, ho, wo), (col, (hh, ww))

            def bwd(d, saved, out, k=k, st=st, pd=pd, o=o, w2t=w2t, iw=iw, ib=ib, wshape=wshape, first=first):
                col, size = saved
                bsz = d.shape[0]
                da = d.reshape(bsz, o, -1)  # [B, O, L]
                if bsz == 1:
                    out[iw] = (da[0] @ col[0].t()).reshape(wshape)
                else:
                    out[iw] = (da @ col.transpose(1, 2)).sum(0).reshape(wshape)
                if ib is not None:
                    out[ib] = da.sum((0, 2))
                if first:
                    return None
                return F.fold(w2t @ da, size, k, padding=pd, stride=st)

        elif isinstance(layer, nn.Linear):
            wt = layer.weight.detach()
            bias = layer.bias.detach() if layer.bias is not None else None
            iw, ib = index[id(layer.weight)], index.get(id(layer.bias)) if layer.bias is not None else None

            def fwd(h, wt=wt, bias=bias):
                return F.linear(h, wt, bias), h

            def bwd(d, hin, out, wt=wt, iw=iw, ib=ib, first=first):
                out[iw] = d.t() @ hin
                if ib is not None:
                    out[ib] = d.sum(0)
                return None if first else d @ wt

        elif isinstance(layer, nn.AvgPool2d):
            kk = layer.kernel_size

            def fwd(h, kk=kk):
                return F.avg_pool2d(h, kk), h.shape

            def bwd(d, shape, out, kk=kk):
                up = d.repeat_interleave(kk, dim=-2).repeat_interleave(kk, dim=-1) / (kk * kk)
                if tuple(up.shape) != tuple(shape):  # the pooling floored odd sizes
                    up = F.pad(up, (0, shape[-1] - up.shape[-1], 0, shape[-2] - up.shape[-2]))
                return up

        elif isinstance(layer, nn.Flatten):

            def fwd(h):
                return h.flatten(1), h.shape

            def bwd(d, shape, out):
                return d.reshape(shape)

        elif isinstance(layer, nn.Sigmoid):

            def fwd(h):
                s = torch.sigmoid(h)
                return s, s

            def bwd(d, s, out):
                return d * (s - s * s)

        elif isinstance(layer, nn.Tanh):

            def fwd(h):
                t = torch.tanh(h)
                return t, t

            def bwd(d, t, out):
                return d * (1 - t * t)

        else:  # ReLU

            def fwd(h):
                return torch.relu(h), h > 0

            def bwd(d, mask, out):
                return d * mask

        forward_steps.append(fwd)
        backward_steps.append(bwd)
    backward_steps.reverse()

    def grads(x: torch.Tensor, soft: torch.Tensor) -> list[torch.Tensor]:
        h = x
        saved = []
        for fwd in forward_steps:
            h, keep = fwd(h)
            saved.append(keep)
        out: list = [None] * n_params
        d = (torch.softmax(h, dim=-1) * soft.sum(-1, keepdim=True) - soft) / x.shape[0]  # dL/dlogits
        for bwd, keep in zip(backward_steps, reversed(saved)):
            d = bwd(d, keep, out)
        return out

    return grads


def autograd_gradient_fn(model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], list[torch.Tensor]]:
    """The same function through autograd (any model): ``create_graph=True`` double backward."""
    params = [p for p in model.parameters() if p.requires_grad]

    def grads(x: torch.Tensor, soft: torch.Tensor) -> list[torch.Tensor]:
        out = model(x)
        loss = torch.sum(-soft * F.log_softmax(out, dim=-1)) / x.shape[0]
        return list(torch.autograd.grad(loss, params, create_graph=True))

    return grads


def gradient_fn(model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], list[torch.Tensor]]:
    """The chain fast path when the model supports it, autograd otherwise."""
    return chain_gradient_fn(model) or autograd_gradient_fn(model)
