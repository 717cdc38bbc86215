"""PRECODE: a variational bottleneck before the output layer (Scheliga, Maeder, Seeland, WACV 2022)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VariationalBottleneck"]


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
