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
(see :mod:`gleak_edu.models`; ``nn.Sequential`` entries are expanded, so a
PRECODE head ``Sequential(bottleneck, linear)`` works); anything else falls back
to autograd. PRECODE's variational bottleneck is a chain layer too where asked
(``chain_gradient_fn(model, bottleneck=True)``, as :func:`matching_fn` does for
several problems): in train mode it draws fresh noise eps ~ N(0, I) for every
row of every evaluation (as the model itself does), in eval mode it passes its mean.

:func:`matching_fn` also matches several problems at once (one shared gradient
per image, "stacked" targets): the arena attacks its images in one vectorised
evaluation, as batched restarts do.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gleak_edu.precode import VariationalBottleneck

__all__ = ["chain_gradient_fn", "autograd_gradient_fn", "gradient_fn", "batched_gradient_fn", "vmap_gradient_fn", "matching_fn"]

_ACTS = (nn.Sigmoid, nn.Tanh, nn.ReLU)


def _supported(layer: nn.Module, bottleneck: bool = False) -> bool:
    if type(layer) is VariationalBottleneck:
        return bottleneck
    if isinstance(layer, nn.Conv2d):
        return (
            type(layer) is nn.Conv2d and layer.groups == 1 and layer.padding_mode == "zeros"
            and layer.dilation == (1, 1) and not isinstance(layer.padding, str)
        )
    if isinstance(layer, nn.AvgPool2d):
        k, s = layer.kernel_size, layer.stride
        return k == s and isinstance(k, int) and layer.padding == 0 and not layer.ceil_mode
    return type(layer) in (nn.Linear, nn.Flatten, nn.Sigmoid, nn.Tanh, nn.ReLU)


def _expanded(layers) -> list[nn.Module]:
    """The chain's layers with every ``nn.Sequential`` replaced by its children (recursively)."""
    out: list[nn.Module] = []
    for layer in layers:
        out += _expanded(list(layer)) if type(layer) is nn.Sequential else [layer]
    return out


def _own_parameters(layer: nn.Module) -> list[nn.Parameter]:
    """The parameters a chain layer's step computes gradients for (the bottleneck's encoder's and decoder's)."""
    if type(layer) is VariationalBottleneck:
        return [layer.encoder.weight, layer.encoder.bias, layer.decoder.weight, layer.decoder.bias]
    return list(layer.parameters(recurse=False))


def _linear_grads(d: torch.Tensor, hin: torch.Tensor, out: list, groups: int, fuse: bool, iw: int, ib: int | None) -> None:
    """A linear layer's weight and bias gradients from dL/d(output) ``d [N, O]`` and its input ``hin [N, I]``."""
    if groups:
        dg = d.reshape(groups, -1, d.shape[-1])  # [G, B, O]
        hg = hin.reshape(groups, -1, hin.shape[-1])  # [G, B, I]
        if fuse and dg.shape[1] < min(dg.shape[2], hg.shape[2]):
            out[iw] = _Outer(dg, hg)  # the [G, O, I] product is never formed
        else:
            out[iw] = torch.bmm(dg.transpose(1, 2), hg)
        if ib is not None:
            out[ib] = dg.sum(1)
    else:
        out[iw] = d.t() @ hin
        if ib is not None:
            out[ib] = d.sum(0)


class _Outer:
    """A linear layer's per-group weight gradient ``d^T h`` kept as its factors: d ``[G, B, O]``, h ``[G, B, I]``."""

    __slots__ = ("d", "h")

    def __init__(self, d: torch.Tensor, h: torch.Tensor) -> None:
        self.d, self.h = d, h

    def dense(self) -> torch.Tensor:
        return torch.bmm(self.d.transpose(1, 2), self.h)


def chain_gradient_fn(model: nn.Module, bottleneck: bool = False) -> Callable[[torch.Tensor, torch.Tensor], list[torch.Tensor]] | None:
    """``f(x, soft_labels) -> [grad of each parameter]`` for a chain model, or None if unsupported.

    The loss is the soft-label cross-entropy averaged over the batch,
    ``mean_b sum_c -soft[b, c] log softmax(model(x))[b, c]`` (with one-hot
    ``soft`` this is ordinary cross-entropy). Gradients come in
    ``model.parameters()`` order and stay differentiable with respect to x and
    soft. Returns None if the model has no ``chain()`` or a layer is not
    supported, or if its parameters are not exactly the chain's.

    ``bottleneck``: also compile PRECODE's variational bottleneck (used when
    several problems are matched at once, :func:`matching_fn` with
    ``problems``). Off by default, so a single attack on a PRECODE model keeps
    drawing its samples exactly as before (through autograd or vmap).
    """
    layers = model.chain() if hasattr(model, "chain") else None
    if not layers:
        return None
    layers = _expanded(layers)
    if not all(_supported(layer, bottleneck) for layer in layers):
        return None
    chain_params = [p for layer in layers for p in _own_parameters(layer)]
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

            def bwd(d, saved, out, groups, fuse=False, *, k=k, st=st, pd=pd, o=o, w2t=w2t, iw=iw, ib=ib, wshape=wshape, first=first):
                col, size = saved
                bsz = d.shape[0]
                da = d.reshape(bsz, o, -1)  # [N, O, L]
                if groups:  # N = groups * B: one gradient per group (restart)
                    per = torch.bmm(da, col.transpose(1, 2))  # [N, O, CKK]
                    if bsz != groups:
                        per = per.reshape(groups, bsz // groups, *per.shape[1:]).sum(1)
                    out[iw] = per.reshape(groups, *wshape)
                    if ib is not None:
                        out[ib] = da.reshape(groups, bsz // groups, o, -1).sum((1, 3))
                elif bsz == 1:
                    out[iw] = (da[0] @ col[0].t()).reshape(wshape)
                else:
                    out[iw] = (da @ col.transpose(1, 2)).sum(0).reshape(wshape)
                if ib is not None and not groups:
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

            def bwd(d, hin, out, groups, fuse=False, *, wt=wt, iw=iw, ib=ib, first=first):
                _linear_grads(d, hin, out, groups, fuse, iw, ib)
                return None if first else d @ wt

        elif type(layer) is VariationalBottleneck:
            # [mu, s] = encoder(h), sigma = softplus(s), z = mu + sigma * eps (train) or mu (eval), out = decoder(z)
            vb = layer
            we, be = vb.encoder.weight.detach(), vb.encoder.bias.detach()
            wd, bd = vb.decoder.weight.detach(), vb.decoder.bias.detach()
            iwe, ibe = index[id(vb.encoder.weight)], index[id(vb.encoder.bias)]
            iwd, ibd = index[id(vb.decoder.weight)], index[id(vb.decoder.bias)]

            def fwd(h, vb=vb, we=we, be=be, wd=wd, bd=bd):
                mu, s = F.linear(h, we, be).chunk(2, dim=1)
                if vb.training:  # the mode at call time, as the model's own forward reads it
                    eps = torch.randn_like(mu)
                    z = mu + F.softplus(s) * eps
                else:
                    eps, z = None, mu
                return F.linear(z, wd, bd), (h, z, s, eps)

            def bwd(d, saved, out, groups, fuse=False, *, we=we, wd=wd, iwe=iwe, ibe=ibe, iwd=iwd, ibd=ibd, first=first):
                h, z, s, eps = saved
                _linear_grads(d, z, out, groups, fuse, iwd, ibd)
                dz = d @ wd
                ds = torch.zeros_like(dz) if eps is None else dz * eps * torch.sigmoid(s)  # softplus' = sigmoid
                da = torch.cat([dz, ds], dim=1)
                _linear_grads(da, h, out, groups, fuse, iwe, ibe)
                return None if first else da @ we

        elif isinstance(layer, nn.AvgPool2d):
            kk = layer.kernel_size

            def fwd(h, kk=kk):
                return F.avg_pool2d(h, kk), h.shape

            def bwd(d, shape, out, groups, fuse=False, kk=kk):
                up = d.repeat_interleave(kk, dim=-2).repeat_interleave(kk, dim=-1) / (kk * kk)
                if tuple(up.shape) != tuple(shape):  # the pooling floored odd sizes
                    up = F.pad(up, (0, shape[-1] - up.shape[-1], 0, shape[-2] - up.shape[-2]))
                return up

        elif isinstance(layer, nn.Flatten):

            def fwd(h):
                return h.flatten(1), h.shape

            def bwd(d, shape, out, groups, fuse=False):
                return d.reshape(shape)

        elif isinstance(layer, nn.Sigmoid):

            def fwd(h):
                s = torch.sigmoid(h)
                return s, s

            def bwd(d, s, out, groups, fuse=False):
                return d * (s - s * s)

        elif isinstance(layer, nn.Tanh):

            def fwd(h):
                t = torch.tanh(h)
                return t, t

            def bwd(d, t, out, groups, fuse=False):
                return d * (1 - t * t)

        else:  # ReLU

            def fwd(h):
                return torch.relu(h), h > 0

            def bwd(d, mask, out, groups, fuse=False):
                return d * mask

        forward_steps.append(fwd)
        backward_steps.append(bwd)
    backward_steps.reverse()

    def grads(x: torch.Tensor, soft: torch.Tensor, fuse: bool = False) -> list:
        groups = 0
        if x.ndim == 5:  # [R, B, C, H, W]: R independent batches (restarts), one gradient each
            groups, per = x.shape[0], x.shape[1]
            x, soft = x.reshape(-1, *x.shape[2:]), soft.reshape(-1, soft.shape[-1])
        else:
            per = x.shape[0]
        h = x
        saved = []
        for fwd in forward_steps:
            h, keep = fwd(h)
            saved.append(keep)
        out: list = [None] * n_params
        d = (torch.softmax(h, dim=-1) * soft.sum(-1, keepdim=True) - soft) / per  # dL/dlogits
        for bwd, keep in zip(backward_steps, reversed(saved)):
            d = bwd(d, keep, out, groups, fuse)
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


def vmap_gradient_fn(model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], list[torch.Tensor]]:
    """R independent parameter gradients at once, for any model: ``torch.func.vmap`` over ``torch.func.grad``.

    ``f(x [R, B, C, H, W], soft [R, B, K]) -> [grad of each parameter, shape [R, *param.shape]]``,
    each the soft-label cross-entropy gradient of one group (restart), averaged
    over its B images, differentiable with respect to x and soft (the outer
    autograd sees through torch.func). Random layers (PRECODE's sampling in
    train mode) draw different noise per group. Weights are read detached,
    sharing storage with the model.
    """
    from torch.func import functional_call, grad, vmap

    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())

    def loss(pr: dict, x: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, ({**pr, **frozen}, buffers), (x,))
        return torch.sum(-soft * F.log_softmax(out, dim=-1)) / x.shape[0]

    per_group = vmap(grad(loss), in_dims=(None, 0, 0), randomness="different")

    def grads(x: torch.Tensor, soft: torch.Tensor) -> list[torch.Tensor]:
        if x.ndim != 5:
            raise ValueError(f"expected x of shape [R, B, C, H, W], got {tuple(x.shape)}")
        # a layer that keeps a tensor of its last forward pass (PRECODE's KL) would keep
        # a torch.func-wrapped one: put the plain attributes back afterwards
        kept = [(m, k, v) for m in model.modules() for k, v in vars(m).items() if isinstance(v, torch.Tensor)]
        try:
            out = per_group(params, x, soft)
        finally:
            for m, k, v in kept:
                m.__dict__[k] = v
        return [out[n] for n in names]

    return grads


def batched_gradient_fn(model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], list[torch.Tensor]]:
    """``f(x [R, B, C, H, W], soft [R, B, K]) -> [R, *param.shape] per parameter``: R restarts' gradients in one call.

    The chain program computes all groups with batched matmuls (``bmm``) where
    the model lists its layers; any other model goes through
    :func:`vmap_gradient_fn`. Group r's gradients equal those of
    ``gradient_fn(model)(x[r], soft[r])`` to float32 rounding (tested).
    """
    return chain_gradient_fn(model) or vmap_gradient_fn(model)


def matching_fn(
    model: nn.Module, target: "list[torch.Tensor | None]", problems: int | None = None
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The gradient-matching terms of R restarts at once, without forming the largest gradients.

    ``target`` holds the shared gradient of each trainable parameter (in
    ``model.parameters()`` order), or None for a parameter left out of the
    match (the PRECODE bypass's layer selection). The returned function maps
    ``x [R, B, C, H, W]`` and soft labels ``[R, B, K]`` to three float64
    tensors ``[R]``: the squared distance ``||g - g*||^2``, ``||g||^2`` and
    ``<g, g*>`` over the selected parameters, g being each restart's gradient
    of the soft-label cross-entropy averaged over its B images. DLG and GRNN
    use the first, Inverting Gradients' cosine the other two.

    ``problems``: P independent problems at once (one shared gradient per
    image, as the arena attacks its images): each target tensor then has a
    leading dimension P (``[P, *param.shape]``), and the R rows of ``x`` come
    problem by problem, the same number R / P for each (rows ``p * R/P`` to
    ``(p + 1) * R/P - 1`` are matched against problem p). The returned
    function's ``target_sq_norm`` is then a float64 tensor ``[P]``, not a float.

    A linear layer's weight gradient is ``d^T h`` (d: dL/d(output), h: its
    input). For it the chain program never forms the ``[O, I]`` matrix per
    restart: ``||d^T h||^2 = sum((d d^T) * (h h^T))`` and
    ``<d^T h, T> = sum(d * (h T^T))``, in float64 (the expanded squared
    distance cancels large terms). For LeNet-Zhu's classifier that is 76,800
    of its 85,000 gradient entries. Other parameters are compared directly.
    Models without a ``chain()`` go through :func:`vmap_gradient_fn`.

    Raises:
        ValueError: no parameter selected, or stacked targets whose leading
            dimension is not ``problems``; when called, a row count that is
            not a multiple of ``problems``.
    """
    fast = chain_gradient_fn(model, bottleneck=problems is not None)
    if fast is not None:
        def program(x: torch.Tensor, soft: torch.Tensor) -> list:
            return fast(x, soft, fuse=True)
    else:  # one restart: autograd's double backward of the selected parameters only (cheaper than vmap's)
        many = vmap_gradient_fn(model)
        params = [p for p in model.parameters() if p.requires_grad]
        chosen = [i for i, t in enumerate(target) if t is not None]

        def program(x: torch.Tensor, soft: torch.Tensor) -> list:
            if x.shape[0] != 1:
                return many(x, soft)
            out = model(x[0])
            loss = torch.sum(-soft[0] * F.log_softmax(out, dim=-1)) / x.shape[1]
            grads = torch.autograd.grad(loss, [params[i] for i in chosen], create_graph=True)
            parts: list = [None] * len(params)
            for i, g in zip(chosen, grads):
                parts[i] = g[None]
            return parts
    pick = [i for i, t in enumerate(target) if t is not None]
    if not pick:
        raise ValueError("no parameter selected for matching")
    P = None if problems is None else int(problems)
    lead = 1 if P is not None else 0  # the problems' dimension, when stacked
    if P is not None and any(target[i].ndim < 1 or target[i].shape[0] != P for i in pick):
        raise ValueError(f"stacked targets must have a leading dimension of {P} problems")
    t64 = {i: target[i].detach().double() for i in pick}
    tt = {i: (t64[i].pow(2).flatten(lead).sum(-1) if P is not None else float(t64[i].pow(2).sum())) for i in pick}
    layout: dict = {}

    def terms(x: torch.Tensor, soft: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        parts = program(x, soft)
        if not layout:  # which parameters come as factors (fixed per model and batch size)
            layout["outer"] = [i for i in pick if isinstance(parts[i], _Outer)]
            layout["dense"] = [i for i in pick if not isinstance(parts[i], _Outer)]
            dense_t = [target[i].detach().float().flatten(lead) for i in layout["dense"]]
            layout["t"] = torch.cat(dense_t, -1) if dense_t else None
            layout["tt_outer"] = sum(tt[i] for i in layout["outer"])
        r = x.shape[0]
        if P is not None and r % P:
            raise ValueError(f"{r} rows cannot be split evenly between {P} problems")
        per = 1 if P is None else r // P  # rows per problem
        if layout["t"] is not None:  # every directly compared gradient as one flat vector per restart
            g = torch.cat([parts[i].reshape(r, -1) for i in layout["dense"]], 1)
            t = layout["t"]
            if P is None:
                sq = (g - t).pow(2).sum(1).double()
                gt = (g @ t).double()
            else:
                gp = g.view(P, per, -1)
                sq = (gp - t[:, None]).pow(2).sum(-1).reshape(r).double()
                gt = (gp * t[:, None]).sum(-1).reshape(r).double()
            gg = g.pow(2).sum(1).double()
        else:
            sq = gg = gt = torch.zeros(r, dtype=torch.float64)
        for i in layout["outer"]:
            part, t = parts[i], t64[i]
            d, h = part.d.double(), part.h.double()
            if d.shape[1] == 1:  # one image per restart: a rank-one gradient
                d1, h1 = d[:, 0], h[:, 0]
                g2 = d1.pow(2).sum(1) * h1.pow(2).sum(1)
                if P is None:
                    gtv = ((d1 @ t) * h1).sum(1)
                else:  # [P, per, O] x [P, O, I]
                    gtv = (torch.bmm(d1.view(P, per, -1), t) * h1.view(P, per, -1)).sum(-1).reshape(r)
            else:
                g2 = (torch.bmm(d, d.transpose(1, 2)) * torch.bmm(h, h.transpose(1, 2))).sum((1, 2))
                if P is None:
                    gtv = (d * (h @ t.t())).sum((1, 2))
                else:
                    tr = t.repeat_interleave(per, 0)  # [R, O, I]
                    gtv = (d * torch.bmm(h, tr.transpose(1, 2))).sum((1, 2))
            sq = sq + (g2 - 2 * gtv)
            gg = gg + g2
            gt = gt + gtv
        tt_outer = layout["tt_outer"]
        if P is not None and torch.is_tensor(tt_outer):
            tt_outer = tt_outer.repeat_interleave(per)
        return sq + tt_outer, gg, gt

    terms.target_sq_norm = sum(tt.values())  # type: ignore[attr-defined]
    return terms
