"""Victim models of the course.

Every model takes float32 images ``[B, C, H, W]`` with pixels in [0, 1] and
returns logits ``[B, num_classes]`` (float32). Parameter names are stable
(``features.0.weight`` ... ``classifier.weight``) because the shared gradient is
keyed by them.

- :class:`LeNetZhu` is the victim of DLG (Zhu, Liu, Han, NeurIPS 2019) and iDLG
  (Zhao, Mopuri, Bilen, 2020): three 5x5 convolutions with sigmoid and one linear
  layer. ReLU and tanh are selectable to show the failure modes.
- :class:`MLP` is a fully connected network whose first layer is linear with a
  bias (the case where one row of its gradient gives the input back exactly).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "LeNetZhu", "LeNet5", "MLP", "TinyTransformer", "uniform_init_", "build_model", "output_layer"]

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}


def _activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}"
        ) from None


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(input_shape) != 3 or any(int(s) < 1 for s in input_shape):
        raise ValueError(
            f"input_shape must be (channels, height, width) with positive sizes, got {tuple(input_shape)}"
        )
    c, h, w = (int(s) for s in input_shape)
    return c, h, w


class _Victim(nn.Module):
    """What every course model records: ``input_shape`` (C, H, W), ``num_classes``, ``activation``."""

    def _setup(self, input_shape: Sequence[int], num_classes: int, activation: str) -> tuple[int, int, int]:
        c, h, w = _check_input_shape(input_shape)
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        _activation(activation)  # fail early on an unknown name
        self.input_shape = (c, h, w)
        self.num_classes = int(num_classes)
        self.activation = activation
        return c, h, w


class LeNetZhu(_Victim):
    """The LeNet variant of DLG (Zhu et al., 2019).

    Conv(C->12, k5, pad 2, stride 2) -> act -> Conv(12->12, k5, pad 2, stride 2)
    -> act -> Conv(12->12, k5, pad 2, stride 1) -> act -> flatten -> Linear(->
    num_classes). For 32x32 inputs the flattened size is 768, as in the paper.

    Args:
        input_shape: (channels, height, width) of one image, e.g. (3, 32, 32).
        num_classes: number of output classes (100 in the DLG paper, CIFAR-100).
        activation: ``"sigmoid"`` (the paper's; attacks work), ``"relu"`` or
            ``"tanh"`` (to show what breaks DLG).

    Input: float32 ``[B, C, H, W]`` in [0, 1]. Output: logits float32 ``[B, num_classes]``.

    Raises:
        ValueError: for an unknown activation or a malformed ``input_shape``.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 100,
        activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        c, h, w = self._setup(input_shape, num_classes, activation)
        self.features = nn.Sequential(
            nn.Conv2d(c, 12, kernel_size=5, padding=2, stride=2),
            _activation(activation),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=2),
            _activation(activation),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=1),
            _activation(activation),
        )
        h2, w2 = (h + 1) // 2, (w + 1) // 2
        h3, w3 = (h2 + 1) // 2, (w2 + 1) // 2
        self.classifier = nn.Linear(12 * h3 * w3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))

    def chain(self) -> list[nn.Module]:
        """The layers in forward order (with an ``nn.Flatten``): lets attacks compute gradients fast."""
        return [*self.features, nn.Flatten(), self.classifier]


class LeNet5(_Victim):
    """LeNet-5 (LeCun et al. 1998) with sigmoid activations, GRNN's victim (Ren, Deng, Xie, 2022).

    Conv(C->6, k5, pad 2) -> act -> AvgPool 2 -> Conv(6->16, k5) -> act -> AvgPool 2
    -> flatten -> Linear(->120) -> act -> Linear(120->84) -> act -> Linear(84->num_classes).
    For 32x32 inputs the flattened size is 16 * 6 * 6 = 576; for 28x28, 400.

    Args:
        input_shape: (channels, height, width), height and width at least 12.
        num_classes: number of classes.
        activation: ``"sigmoid"`` (GRNN's), ``"relu"`` or ``"tanh"``.

    Input: float32 ``[B, C, H, W]`` in [0, 1]. Output: logits float32 ``[B, num_classes]``.

    Raises:
        ValueError: for images smaller than 12x12, an unknown activation, or fewer than 2 classes.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 100,
        activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        c, h, w = self._setup(input_shape, num_classes, activation)
        if min(h, w) < 12:
            raise ValueError(f"LeNet-5 needs images of at least 12x12 pixels, got {h}x{w}")
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, kernel_size=5, padding=2),
            _activation(activation),
            nn.AvgPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            _activation(activation),
            nn.AvgPool2d(2),
        )
        h2, w2 = (h // 2 - 4) // 2, (w // 2 - 4) // 2
        self.hidden = nn.Sequential(
            nn.Linear(16 * h2 * w2, 120),
            _activation(activation),
            nn.Linear(120, 84),
            _activation(activation),
        )
        self.classifier = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.hidden(self.features(x).flatten(1)))

    def chain(self) -> list[nn.Module]:
        """The layers in forward order (with an ``nn.Flatten``): lets attacks compute gradients fast."""
        return [*self.features, nn.Flatten(), *self.hidden, self.classifier]


class MLP(_Victim):
    """A fully connected classifier: flatten -> [Linear -> act] x len(hidden) -> Linear.

    Args:
        input_shape: (channels, height, width) of one image.
        num_classes: number of output classes.
        hidden: widths of the hidden layers (default two layers of 256).
        activation: ``"sigmoid"``, ``"relu"`` or ``"tanh"``.

    Input: float32 ``[B, C, H, W]`` in [0, 1]. Output: logits float32 ``[B, num_classes]``.
    Parameters are named ``features.0.weight`` (first linear layer, with bias),
    ..., ``classifier.weight``.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 100,
        hidden: Sequence[int] = (256, 256),
        activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        c, h, w = self._setup(input_shape, num_classes, activation)
        layers: list[nn.Module] = []
        width = c * h * w
        for size in hidden:
            layers += [nn.Linear(width, int(size)), _activation(activation)]
            width = int(size)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x.flatten(1)))

    def chain(self) -> list[nn.Module]:
        """The layers in forward order (with an ``nn.Flatten``): lets attacks compute gradients fast."""
        return [nn.Flatten(), *self.features, self.classifier]


def uniform_init_(model: nn.Module, bound: float = 0.5, seed: int | None = None) -> nn.Module:
    """Re-initialise every parameter uniformly in [-bound, bound] (DLG's init), in place.

    Args:
        model: any module; all its parameters are overwritten.
        bound: half-width of the interval (0.5 in DLG and GRNN).
        seed: if given, the draw uses its own ``torch.Generator`` so the global
            RNG is untouched and the weights are reproducible.

    Returns the same model, for chaining.
    """
    gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand(p.shape, generator=gen) * (2 * bound) - bound)
    return model


MODELS = {"lenet-zhu": LeNetZhu, "lenet5": LeNet5, "mlp": MLP}

#: Bounds checked before a victim is allocated (the course's models are small; a typo such as
#: ``num_classes=10**12`` gets a clear error instead of reaching the allocator).
MAX_CLASSES = 10_000
MAX_SIDE = 512


def build_model(
    name: str,
    input_shape: Sequence[int] = (3, 32, 32),
    num_classes: int = 100,
    activation: str = "sigmoid",
    seed: int | None = 0,
    init: str = "uniform",
) -> nn.Module:
    """Build a course victim by name (``"lenet-zhu"``, ``"lenet5"`` or ``"mlp"``).

    ``init="uniform"`` (default): DLG's uniform(-0.5, 0.5) weights, drawn from
    ``seed``. ``init="pytorch"``: PyTorch's default initialisation (scaled by
    fan-in), drawn from ``seed``; Inverting Gradients and the PRECODE papers
    attack such models (uniform(-0.5, 0.5) saturates a wide MLP's sigmoids).
    The same seed gives the same model everywhere: notebook, CLI, tests, benchmark.

    Raises:
        ValueError: for an unknown model name, activation or init, ``num_classes``
            outside 2..MAX_CLASSES, an ``input_shape`` that is not (C, H, W)
            with C in 1..4 and sides in 1..MAX_SIDE, or a seed outside 0..2**32-1.
    """
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be a whole number in 2..{MAX_CLASSES}, got {num_classes!r}")
    shape = tuple(input_shape)
    if (
        len(shape) != 3 or any(isinstance(v, bool) or not isinstance(v, int) for v in shape)
        or not 1 <= shape[0] <= 4 or not all(1 <= v <= MAX_SIDE for v in shape[1:])
    ):
        raise ValueError(f"input_shape must be (C, H, W) with C in 1..4 and H, W in 1..{MAX_SIDE}, got {shape}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32):
        raise ValueError(f"seed must be a whole number in 0..2**32-1, got {seed!r}")
    if init not in ("uniform", "pytorch"):
        raise ValueError(f"init must be 'uniform' or 'pytorch', got {init!r}")
    if init == "pytorch":
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(int(seed))
            return cls(input_shape=input_shape, num_classes=num_classes, activation=activation)
    model = cls(input_shape=input_shape, num_classes=num_classes, activation=activation)
    return uniform_init_(model, 0.5, seed=seed)


def output_layer(model: nn.Module) -> tuple[str, nn.Linear]:
    """The last ``nn.Linear`` of a model (its classification layer), with its name.

    Raises:
        ValueError: if the model has no linear layer.
    """
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found = (name, module)
    if found is None:
        raise ValueError(
            "the model has no nn.Linear layer, so there is no output layer to read labels from"
        )
    return found


class TinyTransformer(nn.Module):
    """A tiny transformer classifier over word tokens: embeddings -> attention blocks -> mean pool -> head.

    ``h = E[x] + P[:L]`` (token embedding E ``[V, dim]``, learned position
    embedding P ``[max_len, dim]``), then ``blocks`` pre-norm blocks, each
    ``h = h + Attn(LN(h))`` (``heads``-head self-attention written out with
    ``Linear`` query, key, value and output projections) and
    ``h = h + MLP(LN(h))`` (dim -> 2 dim -> dim, tanh), then a final LayerNorm,
    the mean over positions and a linear head. Small enough to train and attack
    on a laptop (about 12,000 parameters at the defaults with the 80 Zen words).

    Args:
        vocab_size: V; num_classes: outputs of the head.
        max_len: longest sentence (positions); dim, heads, blocks: the sizes.

    Input: int64 tokens ``[B, L]`` with L <= max_len, or float32 ``embeddings``
    ``[B, L, dim]`` that replace ``E[x]`` (what an attacker optimises).
    Output: logits ``[B, num_classes]``. Parameters are named
    ``token_embedding.weight``, ``position_embedding.weight``, ``blocks.0.q.weight``, ...,
    ``head.weight``, ``head.bias``.

    Raises:
        ValueError: bad sizes, or an input longer than ``max_len`` or out of the vocabulary.
    """

    def __init__(self, vocab_size: int, num_classes: int, max_len: int = 16, dim: int = 32, heads: int = 2, blocks: int = 1) -> None:
        super().__init__()
        if min(vocab_size, num_classes, max_len, dim, heads, blocks) < 1 or dim % heads:
            raise ValueError("sizes must be positive and dim divisible by heads")
        self.vocab_size, self.num_classes, self.max_len, self.dim, self.heads = vocab_size, num_classes, max_len, dim, heads
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.position_embedding = nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList(_Block(dim, heads) for _ in range(blocks))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor | None = None, *, embeddings: torch.Tensor | None = None) -> torch.Tensor:
        if embeddings is None:
            if tokens is None or tokens.ndim != 2 or tokens.dtype != torch.int64:
                raise ValueError("tokens must be an int64 tensor [B, L] (or pass embeddings [B, L, dim])")
            if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
                raise ValueError(f"token ids must lie in 0..{self.vocab_size - 1}")
            embeddings = self.token_embedding(tokens)
        length = embeddings.shape[1]
        if not 1 <= length <= self.max_len:
            raise ValueError(f"sentences must have 1 to {self.max_len} tokens (the model's context), got {length}")
        h = embeddings + self.position_embedding.weight[:length]
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h).mean(dim=1))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.Tanh(), nn.Linear(2 * dim, dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, n, d = h.shape
        x = self.norm1(h)

        def split(t):
            return t.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // self.heads), dim=-1)
        h = h + self.out((att @ v).transpose(1, 2).reshape(b, n, d))
        return h + self.mlp(self.norm2(h))
