"""PRECODE: a variational bottleneck before the output layer (Scheliga, Maeder, Seeland, WACV 2022).

A model-level module, below the attacks and the defenses (both use it: the
bypass reads which layers are deterministic, training adds the KL term), so
the layers import only downward; :mod:`gleak_edu.defenses` re-exports it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gleak_edu.fl import client_gradient

__all__ = ["VariationalBottleneck", "add_precode", "deterministic_parameters", "gradient_stochasticity", "precode_loss"]


class VariationalBottleneck(nn.Module):
    """PRECODE's variational bottleneck (VB), inserted directly before a model's output layer.

    For a feature vector h (flattened, size d): ``[mu, s] = encoder(h)`` with
    ``encoder = Linear(d, 2K)``; ``sigma = softplus(s)``; in training
    ``z = mu + sigma * eps`` with eps ~ N(0, I), at inference ``z = mu``
    (deterministic); the output is ``decoder(z)`` with ``decoder = Linear(K, d)``,
    reshaped like h. The sampling makes the gradients of the decoder and of
    every later layer random, which is what stops gradient-matching attacks
    (and what the bypass of arXiv 2208.04767 exploits: the layers before it stay
    deterministic).

    The KL term ``KL(N(mu, sigma^2) || N(0, I)) = -1/2 sum_k (1 + 2 log sigma_k
    - mu_k^2 - sigma_k^2)``, averaged over the batch and converted to bits
    (divided by ln 2), is kept in :attr:`kl_bits` after every forward pass;
    :meth:`loss` returns ``beta * kl_bits``, to be added to the cross-entropy.

    Args:
        in_features: d, the size of the flattened features.
        bottleneck: K (256 in the paper).
        beta: weight of the KL term (1e-3 in the paper).

    Input: float32 ``[B, ...]`` with ``prod(...) == in_features``; output: the same shape.

    Raises:
        ValueError: for non-positive sizes, a negative beta, or an input whose
            feature size is not ``in_features``.
    """

    def __init__(self, in_features: int, bottleneck: int = 256, beta: float = 1e-3) -> None:
        super().__init__()
        if in_features < 1 or bottleneck < 1:
            raise ValueError(f"in_features and bottleneck must be positive, got {in_features} and {bottleneck}")
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.in_features, self.bottleneck, self.beta = int(in_features), int(bottleneck), float(beta)
        self.encoder = nn.Linear(self.in_features, 2 * self.bottleneck)
        self.decoder = nn.Linear(self.bottleneck, self.in_features)
        self.kl_bits = torch.zeros(())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        flat = h.reshape(h.shape[0], -1)
        if flat.shape[1] != self.in_features:
            raise ValueError(
                f"the bottleneck expects {self.in_features} features per example, got {flat.shape[1]} "
                f"(input shape {tuple(h.shape)})"
            )
        mu, s = self.encoder(flat).chunk(2, dim=1)
        sigma = F.softplus(s)
        z = mu + sigma * torch.randn_like(sigma) if self.training else mu
        kl = -0.5 * (1 + 2 * torch.log(sigma) - mu.pow(2) - sigma.pow(2)).sum(1).mean()
        self.kl_bits = kl / math.log(2)
        return self.decoder(z).reshape(h.shape)

    def loss(self) -> torch.Tensor:
        """``beta * KL`` in bits of the last forward pass (a scalar tensor with grad)."""
        return self.beta * self.kl_bits

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, bottleneck={self.bottleneck}, beta={self.beta:g}"


#: The largest bottleneck size K accepted (PRECODE uses 256; checked before anything is allocated).
MAX_BOTTLENECK = 16_384


def add_precode(model: nn.Module, bottleneck: int = 256, beta: float = 1e-3, seed: int | None = 0) -> nn.Module:
    """Insert a :class:`VariationalBottleneck` directly before the model's output layer, in place.

    Works for the course's models (``model.classifier`` is the output
    ``nn.Linear``): ``classifier`` becomes ``Sequential(bottleneck, linear)``, so
    the parameters are named ``classifier.0.encoder.*``, ``classifier.0.decoder.*``
    and ``classifier.1.*``. The bottleneck's weights (PyTorch's default
    initialisation) are drawn from ``seed`` (None: the global RNG). Returns the model.

    Raises:
        ValueError: if the model has no ``classifier`` linear layer, already has a
            bottleneck, ``bottleneck`` is not in 1..MAX_BOTTLENECK or ``beta`` is
            not a finite number >= 0.
    """
    if isinstance(bottleneck, bool) or not isinstance(bottleneck, int) or not 1 <= bottleneck <= MAX_BOTTLENECK:
        raise ValueError(f"bottleneck must be a whole number in 1..{MAX_BOTTLENECK} (PRECODE uses 256), got {bottleneck!r}")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a finite number >= 0 (PRECODE uses 1e-3), got {beta!r}")
    head = getattr(model, "classifier", None)
    if any(isinstance(m, VariationalBottleneck) for m in model.modules()):
        raise ValueError("the model already has a PRECODE bottleneck")
    if not isinstance(head, nn.Linear):
        raise ValueError("add_precode needs a model whose output layer is the nn.Linear attribute `classifier`")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(int(seed))
        vb = VariationalBottleneck(head.in_features, bottleneck, beta)
    model.classifier = nn.Sequential(vb, head)
    return model


def precode_loss(model: nn.Module) -> torch.Tensor:
    """Sum of ``beta * KL`` (bits) of every bottleneck after the last forward pass (0 without PRECODE)."""
    terms = [m.loss() for m in model.modules() if isinstance(m, VariationalBottleneck)]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def deterministic_parameters(model: nn.Module, example: torch.Tensor | None = None) -> list[str]:
    """Names of the parameters whose gradients do not depend on PRECODE's sampling.

    Traces one forward pass (hooks record the order in which layers run) and
    keeps the parameters of every layer that runs before the first
    :class:`VariationalBottleneck`, plus that bottleneck's encoder. Its decoder
    and every layer after it see the sampled z, so their gradients are random:
    the PRECODE bypass (arXiv 2208.04767) matches only the names returned here.
    Without a bottleneck, every parameter is returned. The global random
    state is left as it was.

    Args:
        model: the victim.
        example: an input batch for the trace (default zeros of ``model.input_shape``).

    Raises:
        ValueError: if no example is given and the model has no ``input_shape``.
    """
    if example is None:
        shape = getattr(model, "input_shape", None)
        if shape is None:
            raise ValueError("pass an example input: the model has no input_shape attribute")
        example = torch.zeros((1, *shape))
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, _inp: order.append(mod))
        for m in model.modules()
        if any(True for _ in m.parameters(recurse=False)) or isinstance(m, VariationalBottleneck)
    ]
    try:
        # the trace samples PRECODE's z: keep it off the caller's random stream
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            model(example)
    finally:
        for hk in hooks:
            hk.remove()
    names = {id(p): n for n, p in model.named_parameters()}
    keep: list[str] = []
    for mod in order:
        if isinstance(mod, VariationalBottleneck):
            keep += [names[id(p)] for p in mod.encoder.parameters()]
            return keep
        keep += [names[id(p)] for p in mod.parameters(recurse=False) if p.requires_grad]
    return [n for n, p in model.named_parameters() if p.requires_grad]


def gradient_stochasticity(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """Per parameter, the cosine similarity between two gradient computations on the same (x, y).

    Both computations run in train mode (so PRECODE samples z twice). A value
    near 1 means the gradient is deterministic, near 0 that it is dominated by
    the sampling. Returns ``{parameter name: cosine}`` in ``named_parameters()``
    order; the model's mode is restored.
    """
    was_training = model.training
    model.train()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            g1 = client_gradient(model, x, y)
            g2 = client_gradient(model, x, y)
    finally:
        model.train(was_training)
    out = {}
    for name in g1:
        a, b = g1[name].reshape(-1), g2[name].reshape(-1)
        denom = float(a.norm() * b.norm())
        out[name] = float(a @ b) / denom if denom > 0 else 1.0
    return out
