"""GRNN: Generative Regression Neural Network (Ren, Deng, Xie, ACM TIST 2022).

Instead of optimising pixels, GRNN trains a small generator, fed a fixed random
code z ~ N(0, I), until the gradient of its output matches the shared gradient.
The generator's structure is a prior for natural images, which is why GRNN keeps
working on batches where DLG's pixel search gets lost.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gleak_edu.attacks._chain import chain_gradient_fn, gradient_fn, vmap_gradient_fn
from gleak_edu.attacks._common import (
    AttackOptions,
    AttackResult,
    Callback,
    Recorder,
    check_hyper,
    check_input_shape,
    check_num_classes,
    check_truth,
    fast_attack_mode,
    keeps_model,
    options_of,
    params_and_target,
)

__all__ = ["GRNNGenerator", "grnn", "total_variation"]

_GLOBAL_RNG = threading.Lock()


class GRNNGenerator(nn.Module):
    """GRNN's two-branch generator.

    Image branch: ``ConvTranspose2d(z_dim -> 2*width, 4)`` to a 4x4 map, BN, GLU;
    then blocks of (nearest upsample x2 -> Conv3x3 -> BN -> GLU), halving the
    channels, until the map covers the image; Conv3x3 to the image channels and a
    sigmoid, so pixels lie in (0, 1). Sizes that are not 4 * 2^k are reached by
    bilinear resizing of the last map (e.g. 32 -> 25 for LFW faces).
    Label branch: ``Linear(z_dim -> num_classes)`` + softmax.

    Args:
        image_shape: (channels, height, width) of one image.
        num_classes: number of classes of the victim.
        z_dim: size of the random code (128 in the paper).
        width: channels of the 4x4 map (halved by every block, at least 16).

    Input: z float32 ``[B, z_dim]``. Output: images ``[B, C, H, W]`` in (0, 1)
    and label probabilities ``[B, num_classes]``.
    """

    def __init__(self, image_shape: Sequence[int], num_classes: int, z_dim: int = 128, width: int = 128) -> None:
        super().__init__()
        c, h, w = (int(s) for s in image_shape)
        self.image_shape = (c, h, w)
        side = max(h, w, 4)
        n_up = max(0, math.ceil(math.log2(side / 4)))
        self.stem = nn.Sequential(nn.ConvTranspose2d(z_dim, 2 * width, 4), nn.BatchNorm2d(2 * width), nn.GLU(dim=1))
        blocks: list[nn.Module] = []
        ch = width
        for _ in range(n_up):
            out = max(ch // 2, 16)
            blocks += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(ch, 2 * out, 3, padding=1),
                nn.BatchNorm2d(2 * out),
                nn.GLU(dim=1),
            ]
            ch = out
        self.blocks = nn.Sequential(*blocks)
        self.to_image = nn.Conv2d(ch, c, 3, padding=1)
        self.label = nn.Linear(z_dim, num_classes)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img = torch.sigmoid(self.to_image(self.blocks(self.stem(z[:, :, None, None]))))
        _, h, w = self.image_shape
        if img.shape[-2:] != (h, w):
            img = F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False)
        return img, F.softmax(self.label(z), dim=-1)


def total_variation(x: torch.Tensor, per_first: bool = False) -> torch.Tensor:
    """Anisotropic total variation: mean |x[..., i+1, :] - x[..., i, :]| + mean |x[..., j+1] - x[..., j]|.

    ``per_first``: one value per entry of the first dimension (shape ``[x.shape[0]]``),
    e.g. per restart of ``[R, B, C, H, W]``; otherwise a scalar over everything.
    """
    dh, dw = (x[..., 1:, :] - x[..., :-1, :]).abs(), (x[..., :, 1:] - x[..., :, :-1]).abs()
    if per_first:
        return dh.flatten(1).mean(1) + dw.flatten(1).mean(1)
    return dh.mean() + dw.mean()


def _checked(model, options, input_shape, iterations, lr, tv_weight, z_dim):
    """GRNN's argument checks: ``(options, (B, C, H, W), iterations)``; ValueError names the bad one."""
    options = options_of(options)
    if options.restarts != 1:
        raise ValueError(f"GRNN has no restarts (its generator is one run); got options.restarts={options.restarts}")
    shape = check_input_shape(input_shape, model)
    iterations = check_hyper(iterations, lr, tv_weight=tv_weight)
    if isinstance(z_dim, bool) or not isinstance(z_dim, int) or not 1 <= z_dim <= 4096:
        raise ValueError(f"z_dim must be a whole number in 1..4096, got {z_dim!r}")
    return options, shape, iterations


@keeps_model
def grnn(
    model: nn.Module,
    shared: Mapping[str, torch.Tensor],
    *,
    input_shape: Sequence[int],
    num_classes: int,
    iterations: int = 1500,
    lr: float = 1e-4,
    tv_weight: float = 1e-3,
    z_dim: int = 128,
    seed: int = 0,
    truth: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
    callback: Callback | None = None,
    options: AttackOptions | None = None,
) -> AttackResult:
    """GRNN (Ren, Deng, Xie, ACM TIST 2022): a generator learns to produce the private batch.

    The generator (:class:`GRNNGenerator`, initialised from ``seed``) maps a fixed
    code z ~ N(0, I) ``[B, z_dim]`` to images and soft labels. Its weights are
    trained with RMSprop (lr 1e-4, momentum 0.99) on the paper's loss

        ||g - g*||^2 + ||g - g*|| + tv_weight * TV(x_fake),

    where g is the victim's gradient of the soft-label cross-entropy on the fake
    batch and g* the shared gradient (all parameters). ``tv_weight`` is 1e-3 for
    LeNet in the paper (1e-6 for ResNet-18).

    Args:
        model: the victim (e.g. :class:`gleak_edu.models.LeNet5` with sigmoid).
        shared: the shared gradient, name -> tensor.
        input_shape: ``(B, C, H, W)`` of the private batch (B from 1 to a few dozen).
        num_classes: classes of the victim's output.
        iterations: generator updates. The paper uses 1,000; on the course's
            photos that ends at 24-26 dB while PSNR is still rising, so the
            course default is 1,500 (about 15 s on a 2-core CPU at batch 1).
        lr: RMSprop's step size (1e-4, the paper's).
        z_dim: size of the generator's fixed code z (128).
        seed: seed of the generator's weights and of z.
        truth: optional ``(images, labels)`` or images, only for the reported
            PSNR/SSIM/label accuracy (a batch is scored after pairing images by least MSE).
        callback: receives an :class:`AttackState` every ``options.callback_every``
            iterations (50) and at the end; returning True stops the attack.
        options: :class:`AttackOptions`; GRNN has no restarts (``restarts``
            must be 1; ``retries``, ``successive_halving`` and
            ``max_evals_per_step`` do not apply).

    Returns:
        :class:`AttackResult` with the lowest-loss generator output (pixels in
        [0, 1]) and the argmax of its soft labels. A non-finite loss stops the
        run; the result is then flagged ``diverged`` and keeps the best output.

    Raises:
        SharedGradientError: if ``shared`` does not match the model.
        ValueError: for a malformed ``input_shape`` or ``truth``, bad
            hyperparameters, or ``options.restarts`` > 1.
        CallbackError, AttackInterrupted: as for :func:`gleak_edu.attacks.dlg`.
    """
    options, (b, c, h, w), iterations = _checked(model, options, input_shape, iterations, lr, tv_weight, z_dim)
    callback_every, metrics_every = options.every(50, 50)
    truth, true_labels = check_truth(truth, (b, c, h, w))
    check_num_classes(model, num_classes)
    _, target = params_and_target(model, shared)
    param_grads = gradient_fn(model)
    # the generator's init draws from torch's global random state: seeded and restored, one run at a time
    # (two GRNN runs side by side in threads, gleak_edu.scale.side_by_side, must not interleave here)
    with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        gen_net = GRNNGenerator((c, h, w), num_classes, z_dim=z_dim)
        z = torch.randn(b, z_dim)
    gparams = list(gen_net.parameters())
    opt = torch.optim.RMSprop(gparams, lr=lr, momentum=0.99)
    rec = Recorder("GRNN", truth=truth, callback=callback, callback_every=callback_every, metrics_every=metrics_every,
                   progress=options.progress, iterations=iterations)

    message = f"ran all {iterations} iterations"
    diverged = False
    it = 0
    with fast_attack_mode(model, options.num_threads):
        rec.resume()
        with rec.interruptible():
            for it in range(1, iterations + 1):
                fake, soft = gen_net(z)
                grads = param_grads(fake, soft)
                sq = F.mse_loss(torch.cat([g.reshape(-1) for g in grads]), target, reduction="sum")
                objective = sq + sq.sqrt() + tv_weight * total_variation(fake)
                rec.evaluations += 1
                value = float(objective.detach())
                labels = soft.detach().argmax(1)
                if not math.isfinite(value):
                    rec.record(it, value, fake, labels, note="stopped (non-finite loss)")
                    diverged = True
                    message = f"the loss became non-finite at iteration {it}; kept the best output (loss {rec.best_loss:.3g})"
                    break
                rec.offer(value, fake, lambda: labels)
                ggrads = torch.autograd.grad(objective, gparams)
                for p, g in zip(gparams, ggrads):
                    p.grad = g
                opt.step()
                if rec.record(it, value, fake, labels):
                    message = f"stopped by the callback at iteration {it}"
                    break
        rec.close()
    message = rec.stop_note(it) or message
    if rec.best is None:  # no finite loss yet (or Ctrl-C before the first one): the generator's output
        with torch.no_grad():
            fake, soft = gen_net(z)
        rec.best = fake.detach().clone()
        rec.best_labels = soft.detach().argmax(1)
    return rec.finish(rec.result(it, diverged, message, true_labels))



@keeps_model
def _grnn_problems(
    model: nn.Module,
    shareds: Sequence[Mapping[str, torch.Tensor]],
    *,
    input_shape: Sequence[int],
    num_classes: int,
    iterations: int = 1500,
    lr: float = 1e-4,
    tv_weight: float = 1e-3,
    z_dim: int = 128,
    seeds: Sequence[int],
    truths: Sequence[object],
    options: AttackOptions | None = None,
) -> list[AttackResult]:
    """GRNN on P shared gradients at once: P generators (each initialised as :func:`grnn` with its seed) stacked
    and evaluated with ``torch.func.vmap``, the victim's gradients of all P fakes in one batched evaluation, one
    RMSprop over the stacked weights (elementwise, so each generator follows its own run). One result per
    gradient, as :func:`grnn` would give it (to float rounding). No callback; ``seconds`` is each one's share."""
    from torch.func import functional_call, stack_module_state, vmap

    options, (b, c, h, w), iterations = _checked(model, options, input_shape, iterations, lr, tv_weight, z_dim)
    P = len(shareds)
    if P < 1 or len(seeds) != P or len(truths) != P:
        raise ValueError("give one seed and one truth (or None) per shared gradient")
    checked = [check_truth(t, (b, c, h, w)) for t in truths]
    check_num_classes(model, num_classes)
    targets = torch.stack([params_and_target(model, shared)[1] for shared in shareds])  # [P, D]
    param_grads = chain_gradient_fn(model, bottleneck=True) or vmap_gradient_fn(model)
    nets, codes = [], []
    for seed in seeds:
        with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):  # as grnn() seeds each generator
            torch.manual_seed(int(seed))
            nets.append(GRNNGenerator((c, h, w), num_classes, z_dim=z_dim))
            codes.append(torch.randn(b, z_dim))
    params, buffers = stack_module_state(nets)  # [P, ...] leaves
    z = torch.stack(codes)  # [P, b, z_dim]

    def generate(pr, bf, code):
        return functional_call(nets[0], (pr, bf), (code,))

    many = vmap(generate, in_dims=(0, 0, 0))  # convolutions with per-generator weights become grouped ones

    gparams = list(params.values())
    opt = torch.optim.RMSprop(gparams, lr=lr, momentum=0.99, foreach=True)
    best_loss = torch.full((P,), math.inf, dtype=torch.float64)
    best = torch.zeros(P, b, c, h, w)
    best_labels = torch.zeros(P, b, dtype=torch.int64)
    diverged = torch.zeros(P, dtype=torch.bool)
    alive = torch.ones(P, dtype=torch.bool)
    evaluations, it = 0, 0
    start = time.perf_counter()
    with fast_attack_mode(model, options.num_threads):
        for it in range(1, iterations + 1):
            fake, soft = many(params, buffers, z)  # [P, b, c, h, w], [P, b, K]
            grads = param_grads(fake, soft)
            g = torch.cat([gr.reshape(P, -1) for gr in grads], 1)
            sq = (g - targets).pow(2).sum(1)
            tv = total_variation(fake, per_first=True)
            objective = sq + sq.sqrt() + tv_weight * tv
            evaluations += 1
            value = objective.detach().double()
            finite = torch.isfinite(value)
            newly = alive & ~finite
            diverged |= newly
            alive &= finite
            better = alive & (value < best_loss)
            if bool(better.any()):
                best_loss[better] = value[better]
                best[better] = fake.detach()[better]
                best_labels[better] = soft.detach().argmax(-1)[better]
            if not bool(alive.any()):
                break
            if bool(alive.all()):
                ggrads = torch.autograd.grad(objective.sum(), gparams)
            else:  # a diverged generator stops: its loss leaves the sum (its weights get no gradient)
                total = torch.where(alive, objective, torch.zeros_like(objective)).sum()
                ggrads = [torch.nan_to_num(g_) * alive.view(-1, *([1] * (g_.ndim - 1)))
                          for g_ in torch.autograd.grad(total, gparams)]
            for p_, g_ in zip(gparams, ggrads):
                p_.grad = g_
            opt.step()
    seconds = time.perf_counter() - start
    results = []
    for p_ in range(P):
        truth, true_labels = checked[p_]
        rec = Recorder("GRNN", truth=truth, callback=None, callback_every=50, metrics_every=50, progress=False,
                       iterations=iterations)
        if math.isfinite(float(best_loss[p_])):
            rec.best, rec.best_labels, rec.best_loss = best[p_].clone(), best_labels[p_].clone(), float(best_loss[p_])
        else:  # never a finite loss: the generator's first output
            with torch.no_grad():
                fake, soft = many(params, buffers, z)
            rec.best, rec.best_labels = fake[p_].detach().clone(), soft[p_].argmax(-1)
        rec.evaluations, rec.seconds = evaluations, seconds / P
        message = (f"the loss became non-finite; kept the best output (loss {rec.best_loss:.3g})" if diverged[p_]
                   else f"ran all {it} iterations")
        message += f"; attacked together with {P - 1} other gradient(s) (seconds are this one's share)" if P > 1 else ""
        results.append(rec.result(it, bool(diverged[p_]), message, true_labels))
    return results
