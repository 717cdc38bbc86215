"""The leak inside a real federated-learning engine: Flower 1.42 (``flwr[simulation]``, the ``fl`` extra).

A federation here is Flower's Message API: a ``ClientApp`` per SuperNode
trains the course's victim (the arena's MLP on MNIST digits) on its own
partition and replies with its new weights; a ``ServerApp`` runs a strategy.
:class:`CuriousServer` is Flower's ``FedAvg`` that also keeps every update
it is handed (the client's weights minus the global weights it sent) and what
it sent with them: an honest-but-curious server, which follows the protocol
and looks. :func:`attack_observation` hands a recorded update to the course's
attacks (:func:`gleak_edu.attacks.fedavg_unrolled`, or Inverting Gradients on
the update read as one gradient).

:func:`run_federation` runs the apps in Flower's simulation engine (Ray, in
this process); :func:`run_deployment` runs the same apps on Flower's
deployment engine (a SuperLink and SuperNodes as processes, ``flwr run``
on the Flower App :func:`write_app` writes: settings in its run config).

What travels beyond FedAvg's protocol, for teaching only: each client's
reply carries its ``partition-id`` in its metrics so that the notebook can
show the true images beside the reconstruction (a real server knows the node
that sent a reply, not the person behind it); the server removes it before
aggregating.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from gleak_edu import fl, training
from gleak_edu import data as gdata
from gleak_edu.attacks import fedavg_unrolled, inverting_gradients
from gleak_edu.defenses import epsilon_for_steps, perturbed_gradient
from gleak_edu.models import MLP

__all__ = [
    "FLOWER_VERSION",
    "CuriousServer",
    "FederationResult",
    "FederationSettings",
    "Observation",
    "attack_observation",
    "attack_secagg",
    "attack_sum",
    "client_app",
    "client_data",
    "dpsgd_update",
    "dpsgd_uses",
    "federation_epsilon",
    "local_dp_mod",
    "local_dp_noise_multiplier",
    "local_dp_update",
    "load_observations",
    "run_deployment",
    "run_secagg",
    "secagg_quantization",
    "SecAggResult",
    "save_observations",
    "write_app",
    "global_model",
    "observed_examples",
    "run_federation",
    "server_app",
]

#: The Flower release the course is written against (it pins ray 2.55.1, as :mod:`gleak_edu.scale`).
FLOWER_VERSION = "1.42.0"

PARTITIONS = ("iid", "label")
DP_MODES = ("none", "server", "local", "dpsgd")
_TEST_FRACTION = 0.2  # the arena's split of the 5,000-digit MNIST subset


def _import_flwr():
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # offline: no usage events
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # CPU only: Ray 2.55's notice is moot
    try:
        import flwr
    except ImportError:
        raise ImportError(
            f"federations need Flower: pip install 'gleak-edu[fl]' (flwr[simulation]=={FLOWER_VERSION})"
        ) from None
    return flwr


def _whole(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


@dataclass(frozen=True)
class FederationSettings:
    """One federation: who takes part, what each client holds, the local training the server asks for.

    Attributes:
        clients: SuperNodes (clients), each with its own partition (>= 1).
        sampled: clients the server asks to train each round (None: all);
            at most ``clients``.
        rounds: federated rounds (>= 1).
        examples: MNIST digits per client (N >= 1); clients never share one.
        local_steps: K, local SGD steps per round (>= 1); K = 1 with one batch is FedSGD.
        local_batch: B, examples per local step (1 <= B <= N); the client
            walks through its digits in order (:func:`gleak_edu.fl.local_batches`),
            resuming each round where it stopped.
        lr: the local SGD step size the server sends (> 0).
        partition: ``"iid"`` (a seeded random share of the training digits)
            or ``"label"`` (client i holds digits of class i mod 10 only).
        seed: the global model's initialisation and the IID partition.
        dp: where the noise goes:
            ``"none"``;
            ``"server"``: Flower's ``DifferentialPrivacyServerSideFixedClipping``
            wraps the strategy: each update clipped to ``clipping_norm`` on the
            server, Gaussian noise of std σ·C on their sum (σ·C / sampled on
            the average). The server itself still sees every update;
            ``"local"``: Flower's ``LocalDpMod`` on each client (local DP): the
            update is clipped to C and every weight gets Gaussian noise of std
            ``C * sqrt(2 ln(1.25 / delta)) / epsilon`` before it leaves (the
            mod's sensitivity set to C);
            ``"dpsgd"``: each local step is DP-SGD (Opacus per-example
            gradients clipped to C, noise std σ·C on their sum,
            :func:`gleak_edu.defenses.perturbed_gradient`).
        clipping_norm: C (> 0): per client update for "server" and "local",
            per example for "dpsgd".
        noise_multiplier: σ (>= 0) for "server" and "dpsgd" (noise std σ·C).
        epsilon: the per-round epsilon of ``"local"`` (> 0; Flower's classical
            Gaussian mechanism, a guarantee only below 1).
        delta: delta of every reported epsilon (0 < delta < 0.1).
        hidden, activation: the victim MLP (the arena's: 128-128, tanh).

    Raises:
        ValueError: naming the first bad field (K = 0, more sampled clients
            than exist, more digits asked for than the training split holds,
            an unknown partition or DP mode...).
    """

    clients: int = 4
    sampled: int | None = None
    rounds: int = 1
    examples: int = 8
    local_steps: int = 1
    local_batch: int = 1
    lr: float = 0.1
    partition: str = "iid"
    seed: int = 0
    dp: str = "none"
    clipping_norm: float = 1.0
    noise_multiplier: float = 0.0
    epsilon: float = 1.0
    delta: float = 1e-5
    hidden: tuple[int, ...] = (128, 128)
    activation: str = "tanh"

    def __post_init__(self) -> None:
        _whole("clients", self.clients, 1)
        if self.sampled is not None:
            _whole("sampled", self.sampled, 1)
            if self.sampled > self.clients:
                raise ValueError(f"sampled ({self.sampled}) is more than the {self.clients} clients that exist; "
                                 f"sample at most {self.clients} per round")
        _whole("rounds", self.rounds, 1)
        _whole("examples", self.examples, 1)
        _whole("local_steps", self.local_steps, 1)
        _whole("local_batch", self.local_batch, 1)
        _whole("seed", self.seed, 0)
        if self.local_batch > self.examples:
            raise ValueError(f"local_batch ({self.local_batch}) is larger than a client's {self.examples} digit(s)")
        if self.partition not in PARTITIONS:
            raise ValueError(f"partition must be one of {PARTITIONS}, got {self.partition!r}")
        if self.dp not in DP_MODES:
            raise ValueError(f"dp must be one of {DP_MODES}, got {self.dp!r}")
        for name in ("lr", "clipping_norm", "epsilon"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < v < math.inf):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        v = self.noise_multiplier
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 <= v < math.inf):
            raise ValueError(f"noise_multiplier must be a finite number >= 0, got {v!r}")
        v = self.delta
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < v < 0.1):
            raise ValueError(f"delta must lie strictly between 0 and 0.1, got {v!r}")
        available = _train_size()
        if self.partition == "iid" and self.clients * self.examples > available:
            raise ValueError(f"{self.clients} clients x {self.examples} digits need {self.clients * self.examples} "
                             f"training digits; the split holds {available}: fewer clients or digits per client")
        if self.partition == "label":
            per_class = _class_counts()
            for c in range(min(self.clients, 10)):
                holders = len(range(c, self.clients, 10))
                if holders * self.examples > per_class[c]:
                    raise ValueError(f"partition 'label' leaves a client of class {c} without enough digits "
                                     f"({holders} client(s) x {self.examples} > {per_class[c]}): fewer digits per client")

    @property
    def per_round(self) -> int:
        """Clients that train in each round."""
        return self.clients if self.sampled is None else self.sampled

    def train_config(self) -> dict:
        """What the server sends with the global weights each round (a Flower ConfigRecord's items)."""
        return {"lr": float(self.lr), "local-steps": int(self.local_steps), "local-batch": int(self.local_batch)}

    def as_run_config(self) -> dict:
        """The settings as flat ``key -> int | float | str`` (a Flower run config, a JSON record)."""
        out = asdict(self)
        out["sampled"] = -1 if self.sampled is None else self.sampled
        out["hidden"] = ",".join(str(h) for h in self.hidden)
        return out

    @classmethod
    def from_run_config(cls, config: Mapping[str, Any]) -> "FederationSettings":
        """The inverse of :meth:`as_run_config` (unknown keys are ignored, missing ones take the defaults)."""
        kw = {k: config[k] for k in cls.__dataclass_fields__ if k in config}
        if "sampled" in kw:
            kw["sampled"] = None if int(kw["sampled"]) < 0 else int(kw["sampled"])
        if "hidden" in kw and isinstance(kw["hidden"], str):
            kw["hidden"] = tuple(int(h) for h in kw["hidden"].split(",") if h)
        return cls(**kw)


@functools.lru_cache(maxsize=1)
def _split():
    return training.split(gdata.mnist_subset(), _TEST_FRACTION, seed=0)


def _train_size() -> int:
    return int(_split()[0][1].numel())


@functools.lru_cache(maxsize=1)
def _class_counts() -> list[int]:
    y = _split()[0][1]
    return [int((y == c).sum()) for c in range(10)]


def client_data(settings: FederationSettings, partition_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The digits client ``partition_id`` holds: float32 ``[N, 1, 28, 28]`` in [0, 1] and int64 ``[N]``.

    Drawn from the training part of the MNIST subset (the server's test
    digits are never a client's). IID: a seeded permutation, client i takes
    the i-th block of N; by label: client i takes the (i // 10)-th block of N
    digits of class i mod 10.

    Raises:
        ValueError: for a partition id outside ``0 .. clients - 1``.
    """
    if isinstance(partition_id, bool) or not isinstance(partition_id, int) or not 0 <= partition_id < settings.clients:
        raise ValueError(f"partition_id must be in 0..{settings.clients - 1}, got {partition_id!r}")
    (x, y), _ = _split()
    n = settings.examples
    if settings.partition == "iid":
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(settings.seed))
        idx = order[partition_id * n:(partition_id + 1) * n]
    else:
        of_class = torch.nonzero(y == partition_id % 10).reshape(-1)
        block = partition_id // 10
        idx = of_class[block * n:(block + 1) * n]
    return x[idx].clone(), y[idx].clone()


def global_model(settings: FederationSettings) -> torch.nn.Module:
    """The federation's model before round 1: an MLP ``[B, 1, 28, 28] -> [B, 10]`` (PyTorch init from ``settings.seed``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        return MLP((1, 28, 28), 10, settings.hidden, settings.activation)


def _test_accuracy(model: torch.nn.Module) -> float:
    _, (x, y) = _split()
    return training.accuracy(model, x, y)


def round_start(settings: FederationSettings, server_round: int) -> int:
    """Where a client resumes in its data in round ``server_round`` (1-based): ``(r - 1) K B mod N``."""
    return ((server_round - 1) * settings.local_steps * settings.local_batch) % settings.examples


# ---------------------------------------------------------------------------- the apps

def _seed_of(seed: int, server_round: int, partition_id: int) -> int:
    """One seed per (federation seed, round, client): the client's DP noise."""
    return (int(seed) * 1_000_003 + int(server_round) * 10_007 + int(partition_id)) % (2**31)


def dpsgd_update(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, lr: float, local_steps: int,
                 local_batch: int, noise_multiplier: float, clipping_norm: float, start: int = 0,
                 seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """A client's FedAvg update when each of its K local steps is a DP-SGD step (Abadi et al., CCS 2016).

    Step k: ``w <- w - lr * (sum_i clip_C(g_i) + N(0, (σ C)^2)) / B`` over the
    step's B examples (:func:`gleak_edu.fl.local_batches`), per-example
    gradients and clipping from Opacus (:func:`gleak_edu.defenses.perturbed_gradient`,
    scope "full"); step k's noise comes from ``seed + k``.

    Args:
        model: the global model (not changed).
        x: float32 ``[N, C, H, W]`` in [0, 1]; y: int64 ``[N]``.
        lr, local_steps, local_batch, start: as for :func:`gleak_edu.fl.client_update`.
        noise_multiplier: σ >= 0; clipping_norm: C > 0 (per example).

    Returns:
        OrderedDict name -> float32 tensor (w_K - w_0).

    Raises:
        ValueError: as :func:`gleak_edu.fl.client_update` and :func:`gleak_edu.defenses.perturbed_gradient`.
    """
    import copy

    fl.check_batch(model, x, y)
    steps = fl.local_batches(int(x.shape[0]), local_batch, local_steps, start)
    work = copy.deepcopy(model)
    with torch.no_grad():
        before = OrderedDict((n, p.detach().clone()) for n, p in work.named_parameters() if p.requires_grad)
    for k, idx in enumerate(steps):
        grad = perturbed_gradient(work, x[idx], y[idx], noise_multiplier=noise_multiplier,
                                  max_grad_norm=clipping_norm, scope="full", seed=int(seed) + k)
        with torch.no_grad():
            for n, p in work.named_parameters():
                if n in grad:
                    p -= lr * grad[n]
    return OrderedDict((n, (p.detach() - before[n]).clone()) for n, p in work.named_parameters() if n in before)


def _train_handler(settings: FederationSettings | None):
    """The ClientApp's train function (``settings`` None: read them from the run config)."""

    def train(msg, context):
        import numpy as np
        from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

        torch.set_num_threads(1)  # one CPU per client (Ray's client_resources)
        s = settings if settings is not None else FederationSettings.from_run_config(context.run_config)
        pid = int(context.node_config.get("partition-id", 0))
        config = msg.content["config"]
        lr, k, b = float(config["lr"]), int(config["local-steps"]), int(config["local-batch"])
        rnd = int(config.get("server-round", 1))
        model = global_model(s)
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        x, y = client_data(s, pid)
        start = ((rnd - 1) * k * b) % len(y)
        seed = _seed_of(s.seed, rnd, pid)
        if s.dp == "dpsgd":
            update = dpsgd_update(model, x, y, lr=lr, local_steps=k, local_batch=b, start=start, seed=seed,
                                  noise_multiplier=s.noise_multiplier, clipping_norm=s.clipping_norm)
        else:
            update = fl.client_update(model, x, y, lr=lr, local_steps=k, local_batch=b, start=start)
        np.random.seed(seed)  # Flower's LocalDpMod draws its noise from numpy's global generator, after this returns
        state = OrderedDict((n, p.detach() + update[n]) for n, p in model.named_parameters())
        reply = RecordDict({
            "arrays": ArrayRecord(state),
            "metrics": MetricRecord({"num-examples": len(y), "partition-id": pid}),
        })
        return Message(content=reply, reply_to=msg)

    return train


def client_app(settings: FederationSettings | None = None):
    """A Flower ``ClientApp`` whose train handler runs K local SGD steps (:func:`gleak_edu.fl.client_update`).

    Each SuperNode's ``partition-id`` (node config) picks its digits
    (:func:`client_data`); lr, K and B come from the server's config. The
    reply holds the new weights ("arrays") and "num-examples" (plus the
    teaching-only "partition-id"). ``settings`` None: read from the run config.
    """
    _import_flwr()
    from flwr.clientapp import ClientApp

    if settings is not None and settings.dp == "local":
        app = ClientApp(mods=[local_dp_mod(settings)])
        app.train()(_train_handler(settings))
        return app
    app = ClientApp()
    handler = _train_handler(settings)
    if settings is not None:
        app.train()(handler)
        return app

    def train(msg, context):  # settings from the run config (`flwr run`): the LocalDpMod is applied here
        s = FederationSettings.from_run_config(context.run_config)
        if s.dp == "local":
            return local_dp_mod(s)(msg, context, handler)
        return handler(msg, context)

    app.train()(train)
    return app


def local_dp_mod(settings: FederationSettings):
    """Flower's ``LocalDpMod`` for ``settings``: clip each update to C, add noise of std
    ``C * sqrt(2 ln(1.25 / delta)) / epsilon`` to every weight (sensitivity C)."""
    _import_flwr()
    from flwr.clientapp.mod import LocalDpMod

    return LocalDpMod(clipping_norm=float(settings.clipping_norm), sensitivity=float(settings.clipping_norm),
                      epsilon=float(settings.epsilon), delta=float(settings.delta))


def local_dp_update(settings: FederationSettings, global_state: Mapping[str, torch.Tensor],
                    update: Mapping[str, torch.Tensor], *, seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """What Flower's ``LocalDpMod`` makes of one client update, run here in-process (no engine, no Ray).

    The mod receives a train message holding ``global_state``, lets the
    client reply with ``global_state + update``, clips that update to
    ``settings.clipping_norm`` and adds Gaussian noise of std
    ``C * sqrt(2 ln(1.25 / delta)) / epsilon`` (``settings.epsilon`` per
    round) to every weight; the result is the reply minus the global state.
    The noise comes from numpy's global generator, seeded here with ``seed``.

    Returns:
        OrderedDict name -> float32 tensor, the noised update the server receives.
    """
    import numpy as np

    _import_flwr()
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.app.metadata import Metadata

    state = OrderedDict((n, torch.as_tensor(v).detach().float().clone()) for n, v in global_state.items())
    meta = Metadata(run_id=0, message_id="in-process", src_node_id=0, dst_node_id=1, reply_to_message_id="",
                    group_id="", created_at=time.time(), ttl=3600.0, message_type="train")
    msg = Message(metadata=meta, content=RecordDict({"arrays": ArrayRecord(state), "config": ConfigRecord({})}))

    def reply(message, context):
        new = OrderedDict((n, state[n] + update[n].detach().float()) for n in state)
        return Message(content=RecordDict({"arrays": ArrayRecord(new), "metrics": MetricRecord({"num-examples": 1})}),
                       reply_to=message)

    context = Context(run_id=0, node_id=1, node_config={}, state=RecordDict(), run_config={})
    np.random.seed(int(seed) % 2**32)
    logger = logging.getLogger("flwr")
    level = logger.level
    logger.setLevel(logging.ERROR)  # the mod logs every clip and noise draw at INFO
    try:
        out = local_dp_mod(settings)(msg, context, reply)
    finally:
        logger.setLevel(level)
    if out.has_error():
        raise RuntimeError(f"Flower's LocalDpMod refused the update: {out.error.reason}")
    got = out.content["arrays"].to_torch_state_dict()
    return OrderedDict((n, got[n].float() - state[n]) for n in state)


def local_dp_noise_multiplier(settings: FederationSettings) -> float:
    """σ of Flower's LocalDpMod relative to its sensitivity C: ``sqrt(2 ln(1.25 / delta)) / epsilon``."""
    return math.sqrt(2 * math.log(1.25 / settings.delta)) / settings.epsilon


def dpsgd_uses(settings: FederationSettings) -> int:
    """How many local DP-SGD steps use the digit used most often: ``ceil(K R B / N)`` (the clients walk
    through their digits in order, so every step a digit is not in releases nothing about it)."""
    s = settings
    return math.ceil(s.local_steps * s.rounds * s.local_batch / s.examples)


def federation_epsilon(settings: FederationSettings) -> tuple[float | None, str]:
    """The epsilon (at ``settings.delta``) a federation's ``dp`` mode gives after ``settings.rounds`` rounds, and what it protects.

    Every value is Opacus's RDP accountant (valid at any epsilon) for the
    Gaussian noise the mode adds, with the adjacency of the course's DP-SGD:
    one record (a client's data, or one example) present or absent, so the
    sensitivity is the clipping bound C (replacing a record instead would make
    it 2C).

    - "none": None.
    - "server": client-level central DP of the released global models
      (noise multiplier σ, sampling rate sampled/clients as if Poisson-sampled,
      one release per round). It protects a client against whoever sees the
      global models, *not* against the server, which saw every update before the noise.
    - "local": client-level local DP: each update is a Gaussian mechanism with
      noise multiplier ``local_dp_noise_multiplier`` (Flower's LocalDpMod with
      sensitivity C); R releases composed (sampling rate 1). Against the server too.
    - "dpsgd": example-level DP of one client's digits against the server: the
      digit used most often (:func:`dpsgd_uses`) is in that many DP-SGD steps of
      noise multiplier σ; no amplification by sampling, since the clients walk
      through their digits in order instead of sampling them.
    """
    s = settings
    if s.dp == "none":
        return None, "no DP"
    if s.dp == "server":
        return (epsilon_for_steps(s.noise_multiplier, s.per_round / s.clients, s.rounds, s.delta),
                f"client-level central DP: against whoever sees the global models, not the server; {s.rounds} round(s)")
    if s.dp == "local":
        return (epsilon_for_steps(local_dp_noise_multiplier(s), 1.0, s.rounds, s.delta),
                f"client-level local DP, against the server too; {s.rounds} round(s) of LocalDpMod composed")
    uses = dpsgd_uses(s)
    return (epsilon_for_steps(s.noise_multiplier, 1.0, uses, s.delta),
            f"example-level, against the server too; each digit in at most {uses} DP-SGD step(s), no sampling")


@dataclass
class Observation:
    """One update a curious server saw.

    Attributes:
        round: the server round (1-based).
        node_id: the SuperNode that sent it (Flower's id).
        partition_id: whose digits (teaching only: lets the notebook show the truth).
        update: OrderedDict name -> float32 tensor, the client's weights minus the global weights sent.
        global_state: the global weights the server sent that round (state dict).
        config: what the server sent with them (``lr``, ``local-steps``, ``local-batch``, ``server-round``).
        num_examples: the client's reported dataset size.
    """

    round: int
    node_id: int
    partition_id: int | None
    update: "OrderedDict[str, torch.Tensor]"
    global_state: dict
    config: dict
    num_examples: int


def _curious_class():
    _import_flwr()
    from flwr.serverapp.strategy import FedAvg

    class _CuriousServer(FedAvg):
        """Flower's FedAvg that also keeps every update it is handed (see :class:`CuriousServer`)."""

        def __init__(self, *args, on_update=None, noise_seed: int | None = None, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.observations: list[Observation] = []
            self.on_update = on_update
            self.callback_error: BaseException | None = None
            self.noise_seed = noise_seed
            self._sent: dict[int, tuple[dict, dict]] = {}

        def configure_train(self, server_round, arrays, config, grid):
            messages = super().configure_train(server_round, arrays, config, grid)
            state = {k: v.detach().clone() for k, v in arrays.to_torch_state_dict().items()}
            self._sent[server_round] = (state, dict(config.items()))
            return messages

        def aggregate_train(self, server_round, replies):
            replies = list(replies)
            state, config = self._sent.get(server_round, ({}, {}))
            for msg in replies:
                if msg.has_error():
                    continue
                metrics = msg.content["metrics"]
                pid = metrics.pop("partition-id", None)
                new = msg.content["arrays"].to_torch_state_dict()
                update = OrderedDict((n, (new[n].float() - state[n].float()).clone()) for n in state)
                obs = Observation(
                    round=int(server_round), node_id=int(msg.metadata.src_node_id),
                    partition_id=None if pid is None else int(pid), update=update, global_state=state,
                    config=config, num_examples=int(metrics.get("num-examples", 0)),
                )
                self.observations.append(obs)
                if self.on_update is not None and self.callback_error is None:
                    try:
                        self.on_update(obs)
                    except Exception as exc:  # kept, re-raised by run_federation after Flower has finished cleanly
                        self.callback_error = exc
            if self.noise_seed is not None:  # Flower's server-side DP wrapper noises the average with numpy's global generator
                import numpy as np

                np.random.seed(_seed_of(self.noise_seed, server_round, 999_983))
            return super().aggregate_train(server_round, replies)

    return _CuriousServer


def CuriousServer(*args, **kwargs):  # noqa: N802 (a class factory: Flower is imported on first use)
    """Flower's ``FedAvg`` strategy that keeps every update it is handed, an honest-but-curious server.

    Takes FedAvg's arguments, plus ``on_update`` (called with each
    :class:`Observation` as it arrives, in the server's thread: a live view;
    an exception there is kept in ``callback_error`` and stops further calls)
    and ``noise_seed`` (seeds numpy's global generator each round, from which
    Flower's server-side DP wrapper draws its noise). ``strategy.observations``
    is a list of :class:`Observation`, one per valid reply, in arrival order:
    the update is the reply's weights minus the global weights
    ``configure_train`` sent that round. Wrapped in Flower's ``DifferentialPrivacyServerSideFixedClipping``
    it is handed the *clipped* updates (the wrapper clips each reply, then
    calls this strategy, then noises the average): clipping rescales an
    update, so the direction the attacks match is unchanged.
    """
    return _curious_class()(*args, **kwargs)


@dataclass
class FederationResult:
    """What :func:`run_federation` returns.

    Attributes:
        settings: the federation's settings.
        observations: every update the curious server saw (:class:`Observation`).
        accuracy: test accuracy of the global model (in [0, 1]) before round 1 and after each round (``rounds + 1`` values).
        seconds: wall-clock seconds of the simulation (Ray's start included).
        final_state: the global model's weights after the last round.
        epsilon: epsilon at ``settings.delta`` after the rounds (None without DP), and
        epsilon_note: what it protects (:func:`federation_epsilon`).
    """

    settings: FederationSettings
    observations: list[Observation] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0
    final_state: dict | None = None
    epsilon: float | None = None
    epsilon_note: str = ""

    def model(self) -> torch.nn.Module:
        """The federation's final global model."""
        model = global_model(self.settings)
        if self.final_state is not None:
            model.load_state_dict(self.final_state)
        return model


def _strategy(settings: FederationSettings, on_update=None):
    curious = CuriousServer(
        fraction_train=settings.per_round / settings.clients, min_train_nodes=settings.per_round,
        min_available_nodes=settings.clients, fraction_evaluate=0.0, on_update=on_update, noise_seed=settings.seed,
    )
    if settings.dp == "server":
        from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

        return curious, DifferentialPrivacyServerSideFixedClipping(
            curious, noise_multiplier=float(settings.noise_multiplier), clipping_norm=float(settings.clipping_norm),
            num_sampled_clients=settings.per_round,
        )
    return curious, curious


def server_app(settings: FederationSettings | None = None, *, sink: dict | None = None, on_update=None):
    """A Flower ``ServerApp`` running a :class:`CuriousServer` (inside Flower's server-side DP wrapper for
    ``dp="server"``) for ``settings.rounds`` rounds, with the test accuracy after every round.

    ``sink`` (a dict) receives ``"curious"`` (the strategy, with its observations), ``"accuracy"`` and
    ``"result"`` (Flower's Result); ``on_update`` is the curious server's live hook (:func:`CuriousServer`).
    ``settings`` None: read from the run config.
    """
    _import_flwr()
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
    from flwr.serverapp import ServerApp

    app = ServerApp()
    out = sink if sink is not None else {}

    @app.main()
    def main(grid, context) -> None:
        s = settings if settings is not None else FederationSettings.from_run_config(context.run_config)
        curious, strategy = _strategy(s, on_update)
        out["curious"], out["accuracy"] = curious, []
        model = global_model(s)

        def evaluate(server_round: int, arrays) -> Any:
            model.load_state_dict(arrays.to_torch_state_dict())
            acc = _test_accuracy(model)
            out["accuracy"].append(acc)
            return MetricRecord({"accuracy": acc})

        out["result"] = strategy.start(
            grid=grid, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=s.rounds,
            train_config=ConfigRecord(s.train_config()), evaluate_fn=evaluate,
        )
        record_dir = (context.run_config or {}).get("record-dir") if settings is None else None
        if record_dir:  # `flwr run`: this process ends with the run, so what the server saw goes to disk
            final = {k: v.detach().clone() for k, v in out["result"].arrays.to_torch_state_dict().items()}
            save_observations(record_dir, curious.observations, accuracy=out["accuracy"], final_state=final)

    return app


def run_federation(settings: FederationSettings, *, num_cpus: int = 2, verbose: bool = False,
                   on_update=None) -> FederationResult:
    """Run a federation in Flower's simulation engine (Ray, started and stopped here) and return what the server saw.

    Args:
        settings: the federation (:class:`FederationSettings`).
        num_cpus: CPUs Ray may use (one client trains per CPU at a time).
        verbose: keep Flower's INFO log (default: errors only).
        on_update: called with each :class:`Observation` as the server receives it (a live view).

    Returns:
        :class:`FederationResult`.

    Raises:
        ImportError: without Flower (the ``fl`` extra).
        RuntimeError: if the simulation ended without a result (a client failed: its error is in Flower's log),
            or ``on_update`` raised (the original exception is its cause). A simulation that fails before any
            client has trained (Ray timing out while it starts on a loaded machine) is started once more.
    """
    _whole("num_cpus", num_cpus, 1)
    _import_flwr()
    from flwr.simulation import run_simulation

    sink: dict = {}
    backend = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": int(num_cpus), "num_gpus": 0, "object_store_memory": 200 * 1024**2,
                      "include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": verbose},
    }
    logger = logging.getLogger("flwr")
    level = logger.level
    if not verbose:  # Flower's deprecation notice for run_simulation and its INFO log are noise here
        logger.setLevel(logging.ERROR)
    start = time.perf_counter()
    try:
        import warnings

        for attempt in (1, 2):
            sink.clear()
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*deprecated.*")
                    run_simulation(server_app=server_app(settings, sink=sink, on_update=on_update),
                                   client_app=client_app(settings), num_supernodes=settings.clients,
                                   backend_config=backend, verbose_logging=verbose)
                break
            except RuntimeError:
                # Ray's node can time out while starting on a loaded machine, before any client ran:
                # start the simulation once more; anything later (or twice) is a real failure
                started = "curious" in sink and sink["curious"].observations
                if attempt == 2 or started:
                    raise
                warnings.warn("Flower's simulation engine failed to start (Ray); trying once more", RuntimeWarning,
                              stacklevel=2)
                time.sleep(5)
    finally:
        logger.setLevel(level)
    seconds = time.perf_counter() - start
    if "result" not in sink:
        raise RuntimeError("the federation ended without a result: a client or the server failed "
                           "(rerun with verbose=True to see Flower's log)")
    curious = sink["curious"]
    if curious.callback_error is not None:
        err = curious.callback_error
        raise RuntimeError(f"on_update raised {err.__class__.__name__}: {err} (the federation finished; "
                           "fix the callback and rerun)") from err
    expected = settings.rounds * settings.per_round
    if len(curious.observations) != expected:
        raise RuntimeError(f"the server saw {len(curious.observations)} updates, expected {expected} "
                           "(a client failed: rerun with verbose=True to see Flower's log)")
    final = {k: v.detach().clone() for k, v in sink["result"].arrays.to_torch_state_dict().items()}
    eps, note = federation_epsilon(settings)
    return FederationResult(settings=settings, observations=list(curious.observations),
                            accuracy=list(sink["accuracy"]), seconds=seconds, final_state=final,
                            epsilon=eps, epsilon_note=note)


def save_observations(folder, observations, *, accuracy=(), final_state=None) -> Path:
    """Write what a curious server saw to ``folder/observations.pt`` (torch.save), for a server that runs in
    another process (``flwr run``). Returns the file's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "observations.pt"
    torch.save({"observations": [vars(o) for o in observations], "accuracy": list(accuracy),
                "final_state": final_state}, path)
    return path


def load_observations(folder) -> tuple[list[Observation], list[float], dict | None]:
    """Read :func:`save_observations`' file: ``(observations, accuracy per round, final global state)``.

    Raises:
        FileNotFoundError: if the folder holds no ``observations.pt`` (the run did not finish).
    """
    path = Path(folder) / "observations.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no recorded observations (did the run finish? see the SuperLink's log)")
    data = torch.load(path, weights_only=False)
    return [Observation(**o) for o in data["observations"]], list(data["accuracy"]), data["final_state"]


APP_NAME = "gleak-curious-fl"


def write_app(folder, settings: FederationSettings, *, record_dir=None) -> Path:
    """Write a Flower App directory for ``flwr run``: ``gleak_app.py`` (``clientapp = client_app()``,
    ``serverapp = server_app()``: settings from the run config) and a ``pyproject.toml`` naming them, whose
    run config holds ``settings`` (and ``record-dir``, where the server saves what it saw).

    Returns:
        the folder (``flwr run FOLDER CONNECTION``; override settings with ``--run-config "rounds=3"``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = dict(settings.as_run_config(), **{"record-dir": str(record_dir or folder / "records")})

    def toml(v):
        return f'"{v}"' if isinstance(v, str) else repr(float(v)) if isinstance(v, float) else str(v)

    lines = [
        "[project]", f'name = "{APP_NAME}"', 'version = "1.0.0"',
        'description = "gleak_edu: a curious server inside Flower (notebook 08)"', 'license = "MIT"',
        f'dependencies = ["flwr[simulation]=={FLOWER_VERSION}", "gleak-edu"]', "",
        "[tool.flwr.app]", 'publisher = "gleak-edu"', "",
        "[tool.flwr.app.components]", 'serverapp = "gleak_app:serverapp"', 'clientapp = "gleak_app:clientapp"', "",
        "[tool.flwr.app.config]", *(f'{k} = {toml(v)}' for k, v in config.items()), "",
    ]
    (folder / "pyproject.toml").write_text("\n".join(lines))
    (folder / "gleak_app.py").write_text(
        '"""The Flower App of gleak_edu\'s notebook 08 (written by gleak_edu.flower.write_app): the course\'s\n'
        'ClientApp and curious ServerApp, their settings read from the run config."""\n\n'
        "from gleak_edu.flower import client_app, server_app\n\n"
        "clientapp = client_app()\nserverapp = server_app()\n")
    return folder


def _wait(condition, seconds: float, what: str, logs=()) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    tails = "".join(f"\n--- {p}:\n" + "".join(Path(p).read_text(errors="replace").splitlines(True)[-15:])
                    for p in logs if Path(p).is_file())
    raise TimeoutError(f"{what} not ready after {seconds:.0f} s{tails}")


def run_deployment(settings: FederationSettings, folder, *, port: int = 9093, timeout: float = 300.0,
                   verbose: bool = False) -> FederationResult:
    """The same apps on Flower's deployment engine: a SuperLink and one SuperNode per client, each its own
    process on 127.0.0.1 (insecure mode), then ``flwr run``; always stops them again.

    Ports: the SuperLink serves Flower 1.42's Fleet, Control and ServerAppIo APIs over HTTP on ``port``;
    SuperNode i listens on ``port + 1 + i``. Runtime dependency installation is off (offline). Every
    process has its own ``FLWR_HOME`` under ``folder``; their logs are ``folder/logs/*.log``.

    Args:
        settings: the federation (``clients`` SuperNodes are started: keep it small).
        folder: a working folder (the app, Flower's homes, logs, the server's records).
        timeout: seconds for the run itself (start-up waits are bounded separately: 60 s each).

    Returns:
        :class:`FederationResult` read back from the server's records (``seconds``: the whole deployment).

    Raises:
        TimeoutError: a process did not come up, or the run did not end in time (with the logs' tails).
        RuntimeError: the run ended but not as ``finished:completed``.
    """
    import json
    import shutil
    import subprocess
    import sys
    import urllib.request

    _import_flwr()
    folder = Path(folder).resolve()
    logs = folder / "logs"
    for sub in ("logs", "records", "home"):
        shutil.rmtree(folder / sub, ignore_errors=True)
    logs.mkdir(parents=True)
    app = write_app(folder / "app", settings, record_dir=folder / "records")
    bin_dir = str(Path(sys.executable).parent)  # flower-superexec, flwr-serverapp, flwr-clientapp: spawned by name
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""), FLWR_TELEMETRY_ENABLED="0",
               FLWR_DISABLE_UPDATE_CHECK="1", RAY_USAGE_STATS_ENABLED="0")

    def home(name: str) -> dict:
        h = folder / "home" / name
        h.mkdir(parents=True, exist_ok=True)
        return dict(env, FLWR_HOME=str(h))

    cli_home = home("cli")
    (Path(cli_home["FLWR_HOME"]) / "config.toml").write_text(
        f'[superlink]\ndefault = "local-deployment"\n\n[superlink.local-deployment]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n')
    procs: list = []
    flwr = [sys.executable, "-m", "flwr.cli.app"] if shutil.which("flwr", path=env["PATH"]) is None else [
        shutil.which("flwr", path=env["PATH"])]
    start = time.perf_counter()
    try:
        link_log = logs / "superlink.log"
        procs.append(subprocess.Popen(
            [str(Path(bin_dir) / "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(port),
             "--disable-runtime-dependency-installation"],
            stdout=open(link_log, "w"), stderr=subprocess.STDOUT, env=home("superlink"), start_new_session=True))

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False

        _wait(healthy, 60, "the SuperLink", [link_log])
        node_logs = []
        for i in range(settings.clients):
            log = logs / f"supernode{i}.log"
            node_logs.append(log)
            procs.append(subprocess.Popen(
                [str(Path(bin_dir) / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}",
                 "--host", "127.0.0.1", "--port", str(port + 1 + i),
                 "--node-config", f"partition-id={i} num-partitions={settings.clients}"],
                stdout=open(log, "w"), stderr=subprocess.STDOUT, env=home(f"supernode{i}"), start_new_session=True))
        _wait(lambda: all("SuperNode ID" in p.read_text(errors="replace") for p in node_logs if p.is_file())
              and all(p.is_file() for p in node_logs), 60, "the SuperNodes", node_logs)
        run_log = logs / "flwr_run.log"
        submitted = subprocess.run([*flwr, "run", str(app), "local-deployment", "--format", "json"],
                                   capture_output=True, text=True, env=cli_home, timeout=120)
        run_log.write_text(submitted.stdout + submitted.stderr)
        try:
            run_id = json.loads(submitted.stdout)["run-id"]
        except (ValueError, KeyError):
            raise RuntimeError(f"flwr run did not submit the app: {(submitted.stdout + submitted.stderr)[-800:]}") from None
        status = {"value": ""}

        def finished() -> bool:
            out = subprocess.run([*flwr, "ls", "local-deployment", "--run-id", str(run_id), "--format", "json"],
                                 capture_output=True, text=True, env=cli_home, timeout=60)
            try:
                status["value"] = json.loads(out.stdout)["runs"][0]["status"]
            except (ValueError, KeyError, IndexError):
                return False
            return status["value"].startswith("finished")

        _wait(finished, timeout, f"run {run_id}", [link_log, *node_logs])
        if status["value"] != "finished:completed":
            raise RuntimeError(f"run {run_id} ended {status['value']!r}; see {link_log}")
    finally:
        import signal

        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except OSError:
                pass
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
                p.wait(timeout=10)
    observations, accuracy, final = load_observations(folder / "records")
    eps, note = federation_epsilon(settings)
    if verbose:
        print(f"deployment: {len(observations)} updates recorded in {time.perf_counter() - start:.1f} s")
    return FederationResult(settings=settings, observations=observations, accuracy=accuracy,
                            seconds=time.perf_counter() - start, final_state=final, epsilon=eps, epsilon_note=note)


# ---------------------------------------------------------------------------- secure aggregation (SecAgg+)

@dataclass
class SecAggResult:
    """What a server running Flower's SecAgg+ gets in each round: the sum of the clients' updates, never one.

    Attributes:
        settings: the federation.
        sums: per round, OrderedDict name -> float32 tensor: the sum of the sampled clients' updates
            (``clients`` x (the unmasked mean of their weights - the global weights)).
        global_states: per round, the global weights the server sent.
        clients: per round, how many clients the sum is over.
        seconds: wall-clock seconds of the simulation (Ray's start included).
    """

    settings: FederationSettings
    sums: list = field(default_factory=list)
    global_states: list = field(default_factory=list)
    clients: list = field(default_factory=list)
    seconds: float = 0.0


def secagg_quantization(clients: int) -> int:
    """SecAgg+'s quantization range for ``clients``: the largest power of 2 with ``clients * Q < 2**32`` (the
    modulus), at most ``2**28`` (quantization step 2C/Q on each weight)."""
    q = 2**28
    while clients * q >= 2**32:
        q //= 2
    return q


def run_secagg(settings: FederationSettings, *, num_cpus: int = 2, clipping_range: float = 8.0,
               verbose: bool = False) -> SecAggResult:
    """Run the federation with Flower's secure aggregation (SecAgg+, Bell et al. 2020) on the simulation engine.

    SecAgg+ lives in Flower 1.42's legacy stack: each client is a ``NumPyClient``
    behind ``secaggplus_mod`` (it masks its weights, quantized), the server runs
    ``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))`` with the legacy
    ``FedAvg``, whose ``aggregate_fit`` receives only the unmasked *mean* of the
    clients' weights (every result holds the same aggregate). The server here
    records it, and the sum of the updates, ``clients`` x (mean - global), is
    what an honest-but-curious server can attack. Each client trains as in
    :func:`client_app` (K SGD steps on its digits) and reports one example, so
    the mean is unweighted. Quantization: weights clipped to
    ``+-clipping_range`` and mapped onto ``secagg_quantization(clients)`` levels
    (an error of about ``2 * clipping_range / Q`` per weight).

    Raises:
        ValueError: for fewer than 2 clients per round (SecAgg+ needs 2), DP or a
            non-positive clipping range.
        RuntimeError: if the protocol halted (Flower logs why) and no aggregate came back.
    """
    import warnings

    _whole("num_cpus", num_cpus, 1)
    if settings.per_round < 2:
        raise ValueError(f"secure aggregation needs at least 2 clients per round, got {settings.per_round}")
    if settings.dp != "none":
        raise ValueError("run_secagg runs without DP (dp='none'): its point is the sum alone")
    if not (isinstance(clipping_range, (int, float)) and 0 < clipping_range < math.inf):
        raise ValueError(f"clipping_range must be a finite number > 0, got {clipping_range!r}")
    _import_flwr()
    import numpy as np
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg as LegacyFedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.simulation import run_simulation

    names = [n for n, _ in global_model(settings).named_parameters()]

    class _Client(NumPyClient):
        def __init__(self, partition_id: int) -> None:
            self.partition_id = partition_id

        def fit(self, parameters, config):
            torch.set_num_threads(1)
            model = global_model(settings)
            model.load_state_dict(OrderedDict((n, torch.from_numpy(np.asarray(p, dtype=np.float32)))
                                              for n, p in zip(names, parameters)))
            x, y = client_data(settings, self.partition_id)
            rnd = int(config.get("server-round", 1))
            k, b = settings.local_steps, settings.local_batch
            update = fl.client_update(model, x, y, lr=settings.lr, local_steps=k, local_batch=b,
                                      start=((rnd - 1) * k * b) % len(y))
            return [np.asarray(p, dtype=np.float64) + update[n].double().numpy() for n, p in zip(names, parameters)], 1, {}

    def client_fn(context):
        return _Client(int(context.node_config.get("partition-id", 0))).to_client()

    record: dict = {"sums": [], "states": [], "clients": []}

    class _Recorder(LegacyFedAvg):
        def configure_fit(self, server_round, parameters, client_manager):
            record["sent"] = [np.asarray(p, dtype=np.float64) for p in parameters_to_ndarrays(parameters)]
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round, results, failures):
            if results:
                mean = parameters_to_ndarrays(results[0][1].parameters)  # every result holds the same aggregate
                n = len(results)
                record["sums"].append(OrderedDict(
                    (name, torch.from_numpy(n * (np.asarray(m, dtype=np.float64) - s)).float())
                    for name, m, s in zip(names, mean, record["sent"])))
                record["states"].append(OrderedDict((name, torch.from_numpy(s).float()) for name, s in zip(names, record["sent"])))
                record["clients"].append(n)
            return super().aggregate_fit(server_round, results, failures)

    init = [p.detach().double().numpy() for p in global_model(settings).parameters()]
    server = ServerApp()

    @server.main()
    def main(grid, context) -> None:
        strategy = _Recorder(fraction_fit=settings.per_round / settings.clients, min_fit_clients=settings.per_round,
                             min_available_clients=settings.clients, fraction_evaluate=0.0,
                             initial_parameters=ndarrays_to_parameters(init),
                             on_fit_config_fn=lambda server_round: {"server-round": server_round})
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=settings.rounds), strategy=strategy)
        workflow = SecAggPlusWorkflow(num_shares=1.0, reconstruction_threshold=0.7, max_weight=1.0,
                                      clipping_range=float(clipping_range),
                                      quantization_range=secagg_quantization(settings.per_round), modulus_range=2**32)
        DefaultWorkflow(fit_workflow=workflow)(grid, legacy)

    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"num_cpus": int(num_cpus), "num_gpus": 0, "object_store_memory": 200 * 1024**2,
                             "include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": verbose}}
    logger = logging.getLogger("flwr")
    level = logger.level
    if not verbose:
        logger.setLevel(logging.ERROR)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*deprecated.*")
            run_simulation(server_app=server, client_app=ClientApp(client_fn=client_fn, mods=[secaggplus_mod]),
                           num_supernodes=settings.clients, backend_config=backend, verbose_logging=verbose)
    finally:
        logger.setLevel(level)
    if len(record["sums"]) != settings.rounds:
        raise RuntimeError(f"secure aggregation returned {len(record['sums'])} of {settings.rounds} aggregates: the "
                           "protocol halted (rerun with verbose=True to see Flower's log)")
    return SecAggResult(settings=settings, sums=record["sums"], global_states=record["states"],
                        clients=record["clients"], seconds=time.perf_counter() - start)


def attack_secagg(result: SecAggResult, server_round: int = 1, *, iterations: int = 300, seed: int = 0, **kwargs):
    """The curious server's attack on what SecAgg+ gave it in ``server_round``: the sum of every client's FedSGD
    update, read as the mean gradient of all their digits of that round (one batch of N x B), with the labels
    *given* (an attacker who knows them), scored against those digits.

    Raises:
        ValueError: for K > 1 (a sum of multi-step updates is not one batch's gradient), a round that was not
            run, or a federation that sampled only some clients (the truth would be unknown).
    """
    s = result.settings
    if s.local_steps != 1:
        raise ValueError("attack_secagg reads a sum of FedSGD updates (local_steps=1)")
    if s.per_round != s.clients:
        raise ValueError("attack_secagg needs every client in every round (sampled=None): the truth is their digits")
    if not 1 <= server_round <= len(result.sums):
        raise ValueError(f"server_round must be in 1..{len(result.sums)}, got {server_round}")
    xs, ys = [], []
    for pid in range(s.clients):
        x, y = client_data(s, pid)
        idx = fl.local_batches(len(y), s.local_batch, 1, round_start(s, server_round))[0]
        xs.append(x[idx])
        ys.append(y[idx])
    return attack_sum(s, result.sums[server_round - 1], result.global_states[server_round - 1], torch.cat(xs),
                      torch.cat(ys), iterations=iterations, seed=seed, **kwargs)


def attack_sum(settings: FederationSettings, total: Mapping[str, torch.Tensor], global_state: Mapping[str, torch.Tensor],
               x: torch.Tensor, y: torch.Tensor, *, iterations: int = 300, seed: int = 0, **kwargs):
    """Inverting Gradients on a sum of one-step (FedSGD) updates of several clients, read as the mean gradient
    of all their digits (the sum of N updates of B digits is ``-lr N`` times the mean over the N B digits),
    with the labels ``y`` given, scored against the digits ``x`` ``[M, 1, 28, 28]``.

    ``settings`` gives the model and lr; ``total`` is the summed update, ``global_state`` the weights sent.
    """
    model = global_model(settings)
    model.load_state_dict(global_state)
    clients = int(y.numel()) // settings.local_batch
    shared = fl.update_as_gradient(total, lr=settings.lr * clients, local_steps=1)
    return inverting_gradients(model, shared, input_shape=tuple(x.shape), num_classes=10, labels=y,
                               iterations=iterations, seed=seed, truth=(x, y), **kwargs)


# ---------------------------------------------------------------------------- the server's attack

def observed_examples(settings: FederationSettings, obs: Observation) -> tuple[torch.Tensor, torch.Tensor]:
    """The digits the client of ``obs`` trained on that round (the truth, for scoring).

    With ``K * B <= N`` the ``K * B`` digits the round's local steps touched,
    in the order the client used them; otherwise (several local epochs) all
    N of its digits, in its own order.

    Raises:
        ValueError: if the observation carries no partition id.
    """
    if obs.partition_id is None:
        raise ValueError("this observation has no partition id: its truth is unknown")
    x, y = client_data(settings, obs.partition_id)
    k, b = int(obs.config["local-steps"]), int(obs.config["local-batch"])
    if k * b > len(y):
        return x, y
    steps = fl.local_batches(len(y), b, k, round_start(settings, obs.round))
    seen = [i for idx in steps for i in idx]
    return x[seen], y[seen]


def attack_observation(settings: FederationSettings, obs: Observation, *, attack: str = "unrolled",
                       iterations: int = 300, seed: int = 0, labels: torch.Tensor | None = None, **kwargs):
    """The curious server's attack on one recorded update, scored against the digits the client used.

    The server rebuilds the global model it sent, reads lr, K and B off the
    config it sent, and reconstructs the ``min(K B, N)`` digits the round
    touched (:func:`observed_examples`), in the client's order.

    Args:
        attack: ``"unrolled"`` (:func:`gleak_edu.attacks.fedavg_unrolled`: the K
            steps repeated on dummy digits) or ``"simple"`` (Inverting
            Gradients on ``update / (-lr K)``, :func:`gleak_edu.fl.update_as_gradient`).
        iterations: Adam steps (300).
        seed: the dummy digits' start.
        labels: int64 ``[M]``; None: read off the update for one digit, and for
            several the true labels are *given* (an attacker who knows them, as
            in breaching's FedAvg example; say so when you report it).
        kwargs: passed to the attack (``tv_weight``, ``options``, ``callback``...).

    Returns:
        :class:`gleak_edu.attacks.AttackResult` with the truth's PSNR/SSIM in ``metrics``.

    Raises:
        ValueError: for an unknown attack.
    """
    if attack not in ("unrolled", "simple"):
        raise ValueError(f"attack must be 'unrolled' or 'simple', got {attack!r}")
    x, y = observed_examples(settings, obs)
    m = len(y)
    if labels is None and m > 1:
        labels = y
    model = global_model(settings)
    model.load_state_dict(obs.global_state)
    lr, k, b = float(obs.config["lr"]), int(obs.config["local-steps"]), int(obs.config["local-batch"])
    shape = (m, *x.shape[1:])
    if attack == "simple":
        shared = fl.update_as_gradient(obs.update, lr=lr, local_steps=k)
        return inverting_gradients(model, shared, input_shape=shape, num_classes=10, labels=labels,
                                   iterations=iterations, seed=seed, truth=(x, y), **kwargs)
    # the dummy digits are the m touched ones in order: with K B <= N each is used once, from 0
    start = 0 if k * b <= settings.examples else round_start(settings, obs.round)
    return fedavg_unrolled(model, obs.update, input_shape=shape, num_classes=10, lr=lr, local_steps=k,
                           local_batch=b, start=start, labels=labels, iterations=iterations, seed=seed,
                           truth=(x, y), **kwargs)
