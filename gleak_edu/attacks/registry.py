"""The one list of the course's attacks: what each needs, recovers and costs by default.

Every consumer (the ``gleak`` command, the arena, the widgets, the figures,
DP-SGD's checkpoint attacks) looks attacks up here instead of keeping its own
copy of names and defaults. A spec's defaults are read off the function's
signature, so they cannot drift from it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from gleak_edu.attacks._common import AttackResult
from gleak_edu.attacks.analytic import analytic_recovery
from gleak_edu.attacks.dlg import _dlg_many, _idlg_many, dlg, idlg
from gleak_edu.attacks.grnn import _grnn_problems, grnn
from gleak_edu.attacks.inverting import _bypass_many, _inverting_many, inverting_gradients, precode_bypass
from gleak_edu.attacks.text import text_recovery

__all__ = ["ATTACKS", "IMAGE_ATTACKS", "AttackSpec", "attack_spec"]


@dataclass(frozen=True)
class AttackSpec:
    """One attack of the course.

    Attributes:
        key: the short name used by the command, the arena and the widgets ("dlg", "ig", ...).
        name: the name shown to students ("DLG", "Inverting Gradients", ...).
        function: the attack; it returns an :class:`AttackResult`.
        paper: where it comes from.
        modality: "image" or "text".
        needs_bottleneck: needs PRECODE's variational bottleneck in the model (the bypass).
        needs_first_linear: needs a first fully connected layer with a bias (analytic recovery).
        recovers_labels: the result's ``labels`` are recovered (False: None, analytic).
        takes_restarts: accepts ``AttackOptions(restarts > 1)``.
        max_batch: the largest batch it handles (None: any up to the engine's bound).
        many: the attack on several shared gradients in one vectorised run
            (:meth:`run_many`), or None (one after the other).
    """

    key: str
    name: str
    function: Callable[..., AttackResult]
    paper: str
    modality: str = "image"
    needs_bottleneck: bool = False
    needs_first_linear: bool = False
    recovers_labels: bool = True
    takes_restarts: bool = True
    max_batch: int | None = None
    many: Callable[..., list[AttackResult]] | None = None

    @property
    def defaults(self) -> dict[str, Any]:
        """The function's keyword defaults (``iterations``, ``lr``, ``tv_weight``...), from its signature."""
        sig = inspect.signature(self.function)
        return {n: p.default for n, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}

    @property
    def default_iterations(self) -> int | None:
        """The attack's default budget (None for analytic recovery, which does not iterate)."""
        return self.defaults.get("iterations")

    def run(self, model, shared, **kwargs: Any) -> AttackResult:
        """Call the attack: ``spec.run(model, shared, input_shape=..., num_classes=..., ...)``."""
        return self.function(model, shared, **kwargs)

    def run_many(self, model, shareds, *, seeds, truths=None, **kwargs: Any) -> list[AttackResult | ValueError]:
        """The attack on P independent shared gradients (e.g. one per test image) of the same model.

        Where the attack has a vectorised form (:attr:`many`: DLG, iDLG,
        Inverting Gradients, the bypass, GRNN), all P run together: one
        evaluation computes every gradient's matching loss (P x restarts rows,
        the machinery of batched restarts), each row following its own run, so
        gradient p's result is the one ``run(model, shareds[p], seed=seeds[p])``
        gives, to float rounding (and PRECODE's random draws, which are taken in
        another order). On a small model P gradients then cost little more than
        one. Otherwise they run one after the other. A callback is not accepted
        (it follows one run).

        Args:
            model: the victim; shareds: P gradients (name -> tensor) of single images or batches of
                ``input_shape``; seeds: P seeds; truths: P truths (as ``truth`` of the attack) or None;
            kwargs: the attack's other keywords (``input_shape``, ``num_classes``, ``iterations``, ``options``...).

        Returns:
            P entries in order: an :class:`AttackResult`, or the ValueError that stopped the attack on that
            gradient (e.g. iDLG's label rule on an all-zero output gradient, or bad arguments).

        Raises:
            ValueError: when the seeds or truths do not number one per gradient, or a callback is given.
        """
        shareds = list(shareds)
        truths = [None] * len(shareds) if truths is None else list(truths)
        if len(seeds) != len(shareds) or len(truths) != len(shareds):
            raise ValueError(f"give one seed and one truth per shared gradient ({len(shareds)}), "
                             f"got {len(seeds)} and {len(truths)}")
        if "callback" in kwargs:
            raise ValueError("run_many takes no callback: run the attack on one gradient to follow it")
        if self.many is not None and len(shareds) > 1:
            try:
                return list(self.many(model, shareds, seeds=list(seeds), truths=truths, **kwargs))
            except ValueError:
                pass  # one gradient the attack cannot read (a label rule): each on its own, to say which
        out: list[AttackResult | ValueError] = []
        for shared, seed, truth in zip(shareds, seeds, truths):
            extra = {"seed": seed} if "seed" in self.defaults else {}
            try:
                out.append(self.function(model, shared, truth=truth, **extra, **kwargs))
            except ValueError as exc:
                out.append(exc)
        return out


_SPECS = (
    AttackSpec("dlg", "DLG", dlg, "Zhu, Liu, Han: Deep Leakage from Gradients (NeurIPS 2019)", many=_dlg_many),
    AttackSpec("idlg", "iDLG", idlg, "Zhao, Mopuri, Bilen: iDLG (arXiv 2001.02610, 2020)", max_batch=1,
               many=_idlg_many),
    AttackSpec("ig", "Inverting Gradients", inverting_gradients,
               "Geiping, Bauermeister, Droege, Moeller: Inverting Gradients (NeurIPS 2020)", many=_inverting_many),
    AttackSpec("grnn", "GRNN", grnn, "Ren, Deng, Xie: GRNN (ACM TIST 2022)", takes_restarts=False,
               many=_grnn_problems),
    AttackSpec("bypass", "PRECODE bypass", precode_bypass,
               "Scheliga, Mäder, Seeland: Dropout is not all you need (arXiv 2208.04767)",
               needs_bottleneck=True, max_batch=1, many=_bypass_many),
    AttackSpec("analytic", "analytic (1st layer)", analytic_recovery,
               "Phong et al.: Privacy-preserving deep learning via additively homomorphic encryption (2017)",
               needs_first_linear=True, recovers_labels=False, takes_restarts=False, max_batch=1),
    AttackSpec("text", "text", text_recovery,
               "gradient matching over embeddings, as in Li, Song, Wang, Yang (arXiv 2311.13624)",
               modality="text", max_batch=1),
)

#: Every attack, by key, in the course's order.
ATTACKS: dict[str, AttackSpec] = {s.key: s for s in _SPECS}
#: The keys of the image attacks (the arena's rows).
IMAGE_ATTACKS: tuple[str, ...] = tuple(s.key for s in _SPECS if s.modality == "image")


def attack_spec(key: str) -> AttackSpec:
    """The :class:`AttackSpec` of ``key``.

    Raises:
        ValueError: for an unknown key, naming the known ones.
    """
    try:
        return ATTACKS[key]
    except (KeyError, TypeError):
        raise ValueError(f"unknown attack {key!r}; the attacks are {', '.join(ATTACKS)}") from None
