"""What the arena gives back: :class:`ArenaResult`, its tidy rows, the matrix behind the heatmap, the text table."""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field

import numpy as np
import torch

from gleak_edu._cache import finite, number, versions
from gleak_edu.metrics import rate_brief, success_rate
from gleak_edu.arena.settings import (
    ATTACK_NAMES,
    ATTACKS,
    DEFENSE_LEVEL,
    DEFENSE_NAMES,
    DEFENSE_SPECS,
    DEFENSES,
    KNOB_UNITS,
    NOISY,
    ArenaSettings,
    _check_defense,
    cells_of,
    defense_label,
    impossible,
)

__all__ = ["ArenaResult", "rows_of"]

_KEYS = ("success_rate", "ssim", "psnr", "label_accuracy")


def _mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def _optional(v) -> float | None:
    return None if v is None else number(v)


def _median_snr(group: list[dict]) -> float | None:
    """The median signal-to-noise ratio over a row's images and seeds (None without noise, or for cells without one)."""
    values = [number(r["snr"]) for c in group for r in c.get("snr") or () if r["snr"] is not None]
    return statistics.median(values) if values else None


def rows_of(settings: ArenaSettings, cells: dict) -> list[dict]:
    """The tidy rows of :class:`ArenaResult` built from its cells ``{(defense, level, seed): cell}``.

    An attack that rebuilds no image without a defense gives no evidence about
    any defense: its rows with 0 successes are flagged ``no_evidence`` (a 0 there
    says nothing about the defense; a success still counts).
    """
    base = {seed: number(cells[("none", 0.0, seed)]["accuracy"]) for seed in settings.seeds}
    groups: list[tuple[str, float]] = []
    for defense, level, seed in cells_of(settings):
        if (defense, level) not in groups:
            groups.append((defense, level))
    rows = []
    for defense, level in groups:
        group = [cells[(defense, level, seed)] for seed in settings.seeds]
        accs = [number(c["accuracy"]) for c in group]
        eps = group[0]["epsilon"]
        common = {
            "defense": defense, "level": level, "knob": DEFENSE_LEVEL[defense],
            "accuracy": _mean(accs), "accuracy_cost": _mean([base[s] - a for s, a in zip(settings.seeds, accs)]),
            "epsilon": None if eps is None else number(eps),
            "attacked_noise_multiplier": _optional(group[0]["attacked_noise_multiplier"]),
            "attacked_noise_std": _optional(group[0]["attacked_noise_std"]),
            "diverged": any(bool(c["diverged"]) for c in group),
            "snr": _median_snr(group),
        }
        for attack in ATTACKS:
            reason = impossible(attack, defense)
            row = {**common, "attack": attack, "impossible": reason, "success_rate": None, "successes": None, "n": None,
                   "success_low": None, "success_high": None, "ssim": None, "psnr": None, "label_accuracy": None,
                   "seconds": None, "no_evidence": False}
            if reason is None:
                outs = [c["attacks"][attack] for c in group]
                ssims = [v for o in outs for v in o["ssim"]]
                labels = [v for o in outs if o["label_correct"] is not None for v in o["label_correct"]]
                row.update(
                    **success_rate([v is not None and v >= settings.success_ssim for v in ssims]).row_fields(),
                    ssim=_mean(ssims), psnr=_mean([v for o in outs for v in o["psnr"]]),
                    label_accuracy=_mean([float(bool(v)) for v in labels]) if labels else None,
                    seconds=_mean([v for o in outs for v in o["seconds"]]),
                )
            rows.append(row)
    baseline = {r["attack"]: r["successes"] for r in rows if r["defense"] == "none"}
    for r in rows:
        r["no_evidence"] = r["successes"] == 0 and baseline.get(r["attack"]) == 0
    return rows


@dataclass
class ArenaResult:
    """Output of :func:`gleak_edu.arena.arena`.

    Attributes:
        settings: the :class:`gleak_edu.arena.ArenaSettings` used.
        cells: ``{(defense, level, seed): cell dict}`` (see :func:`gleak_edu.arena.arena_cell`).
        rows: the tidy table, one row per (defense, level, attack), seeds pooled:
            ``defense``; ``level`` (the defense's own level, in the unit
            ``knob`` names: a noise std for "noise", a noise multiplier for
            "ppp", "dp_fixed" and "dp_dynamic" (its start), the pruned
            fraction for "pruning", 0.0 for "none" and "precode"); ``knob``
            ("noise_std", "noise_multiplier", "prune_fraction" or None:
            :data:`gleak_edu.arena.DEFENSE_LEVEL`); ``attack``; ``impossible``
            (the reason, or None); ``success_rate`` (share of attacked images,
            over seeds, with SSIM >= ``settings.success_ssim``, in [0, 1]);
            ``successes`` and ``n`` (its counts) and ``success_low``/``success_high``
            (its 95 % Wilson interval, :func:`gleak_edu.metrics.success_rate`);
            ``ssim`` (mean, in [-1, 1]); ``psnr`` (mean, dB);
            ``label_accuracy`` (share of labels right, in [0, 1]; None for an
            attack that reads no label, e.g. analytic); ``accuracy`` (mean
            test accuracy of the defense's model, in [0, 1]);
            ``accuracy_cost`` (accuracy of "none" minus this, same seeds:
            points in [0, 1], negative when the defense trained better);
            ``epsilon`` (DP defenses, at ``settings.delta``; None elsewhere);
            ``attacked_noise_multiplier`` (σ at the attacked step; None
            without one); ``attacked_noise_std`` (noise std per perturbed
            entry of the attacked gradient; None for "dp_dynamic", whose
            bound is per example); ``snr`` (the median over images and seeds of
            the shared gradient's signal-to-noise ratio, a ratio of L2 norms,
            :func:`gleak_edu.arena.gradient_snr`; None for a defense without
            noise); ``no_evidence`` (True when the attack rebuilt no image
            here *and* none without a defense: its 0 says nothing about the
            defense); ``seconds`` (mean attack time per image); ``diverged``.
            Impossible rows have None for every attack number.
        cached, computed: how many cells came from the cache / were computed.
        test_images: the attacked images ``[images, 1, 28, 28]`` float32 in [0, 1];
            test_labels: int64 ``[images]``.
    """

    settings: ArenaSettings
    cells: dict = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    cached: int = 0
    computed: int = 0
    test_images: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None

    @property
    def levels(self) -> tuple[float, ...]:
        """The noise slider's stops (each noisy defense reads them in its own unit, see ArenaSettings.noise_levels)."""
        return self.settings.noise_levels

    @staticmethod
    def _pick(value: float | None, grid: tuple[float, ...], what: str) -> float:
        """The grid's value equal to ``value`` (the first one for None); ValueError if it is not in the grid."""
        if value is None:
            return grid[0]
        for v in grid:
            if math.isclose(float(value), v, rel_tol=1e-9):
                return v
        raise ValueError(f"{what} {value} is not in this arena's grid {grid}")

    def _level(self, level: float | None) -> float:
        return self._pick(level, self.settings.noise_levels, "noise level")

    def _prune(self, fraction: float | None) -> float:
        return self._pick(fraction, self.settings.prune_fractions, "pruned fraction")

    def knob(self, defense: str, level: float | None = None, prune_fraction: float | None = None) -> float:
        """The level of ``defense``'s cells at the noise slider's stop ``level`` (pruning: its fraction;
        none/PRECODE: 0).

        Raises:
            ValueError: for an unknown defense, or a level or fraction not in the grid.
        """
        _check_defense(defense)
        if defense in NOISY:
            return self._level(level)
        return self._prune(prune_fraction) if DEFENSE_LEVEL[defense] == "prune_fraction" else 0.0

    def row(self, defense: str, attack: str, level: float | None = None, prune_fraction: float | None = None) -> dict:
        """The row of one (defense, attack) at the noise slider's stop ``level`` (default: the first)."""
        k = self.knob(defense, level, prune_fraction)
        for r in self.rows:
            if r["defense"] == defense and r["attack"] == attack and r["level"] == k:
                return r
        raise ValueError(f"no row for {defense!r}, {attack!r} at level {k}")

    def matrix(self, level: float | None = None, key: str = "success_rate", prune_fraction: float | None = None):
        """The heatmap's numbers at one stop of the noise slider.

        Args:
            level: a noise level of the grid (default: the first).
            key: ``"success_rate"``, ``"ssim"``, ``"psnr"`` or ``"label_accuracy"``.
            prune_fraction: which pruning cell (default: the first fraction).

        Returns:
            ``(values, reasons)``: float64 numpy array ``[len(ATTACKS), len(DEFENSES)]``
            (rows :data:`gleak_edu.arena.ATTACKS`, columns
            :data:`gleak_edu.arena.DEFENSES`; nan where impossible or
            undefined) and a nested list of the same shape with the
            impossibility reason or None.

        Raises:
            ValueError: for a level or fraction not in the grid, or an unknown key.
        """
        if key not in _KEYS:
            raise ValueError(f"key must be one of {_KEYS}, got {key!r}")
        values = np.full((len(ATTACKS), len(DEFENSES)), np.nan)
        reasons: list[list[str | None]] = [[None] * len(DEFENSES) for _ in ATTACKS]
        for j, d in enumerate(DEFENSES):
            for i, a in enumerate(ATTACKS):
                r = self.row(d, a, level, prune_fraction)
                reasons[i][j] = r["impossible"]
                if r[key] is not None:
                    values[i, j] = r[key]
        return values, reasons

    def defense_summary(self, level: float | None = None, prune_fraction: float | None = None) -> list[dict]:
        """Per defense at one stop of the noise slider: defense, level, knob (its unit), label (with the unit),
        accuracy, accuracy_cost, epsilon, attacked_noise_multiplier, attacked_noise_std, diverged, snr (median
        signal-to-noise ratio of the shared gradient; None without noise)."""
        out = []
        for d in DEFENSES:
            r = self.row(d, ATTACKS[0], level, prune_fraction)
            out.append({
                "defense": d, "level": r["level"], "knob": r["knob"], "label": defense_label(d, r["level"], self.settings),
                "accuracy": r["accuracy"], "accuracy_cost": r["accuracy_cost"], "epsilon": r["epsilon"],
                "attacked_noise_multiplier": r["attacked_noise_multiplier"], "attacked_noise_std": r["attacked_noise_std"],
                "diverged": r["diverged"], "snr": r.get("snr"),  # rows built before the SNR was measured have none
            })
        return out

    def reconstructions(self, defense: str, attack: str, level: float | None = None, *,
                        prune_fraction: float | None = None, seed: int | None = None) -> torch.Tensor:
        """One cell's reconstructions ``[images, 1, 28, 28]`` float32 in [0, 1] (default: the first seed).

        Raises:
            ValueError: for an impossible pair (with the reason) or a level not in the grid.
        """
        reason = impossible(attack, defense)
        if reason is not None:
            raise ValueError(f"{attack} against {defense} is not run: {reason}")
        seed = self.settings.seeds[0] if seed is None else int(seed)
        cell = self.cells[(defense, self.knob(defense, level, prune_fraction), seed)]
        return torch.tensor(cell["attacks"][attack]["reconstructions"], dtype=torch.float32)

    def _unit_legend(self) -> str:
        s = self.settings
        c = s.max_grad_norm
        same = (
            "with C = 1, noise, PPP (on the entries it perturbs) and DP fixed add the same noise std to one image's "
            "gradient at each level (σ·C = σ) and differ in clipping and scope"
            if c == 1 else
            f"with C = {c:g}, PPP and DP fixed add σ·{c:g} per entry, not the noise column's std"
        )
        return (
            f"level: {KNOB_UNITS['noise_std']} for noise; {KNOB_UNITS['noise_multiplier']}, C = {c:g}, for PPP and "
            f"DP fixed; DP dynamic's σ starts at the level and the attacked last step has {s.dynamic_end:g}x that, "
            f"times each example's dynamic bound; {same}"
        )

    def table(self, level: float | None = None) -> str:
        """The arena as text, one block per noise level (or only ``level``): each defense's level with its unit,
        success rate and mean SSIM per attack (rows) and defense (columns), then each defense's accuracy cost and epsilon."""
        levels = self.settings.noise_levels if level is None else (self._level(level),)
        width = 21
        blocks = []
        for lv in levels:
            summary = self.defense_summary(lv)
            head = f"{'noise level ' + format(lv, 'g'):22}" + "".join(f"{DEFENSE_NAMES[d]:>{width}}" for d in DEFENSES)
            lines = [head, "-" * len(head)]
            lines.append(f"{'level (unit)':22}" + "".join(f"{_short(s['defense'], s['level'], self.settings):>{width}}"
                                                         for s in summary))
            for a in ATTACKS:
                cells = []
                for d in DEFENSES:
                    r = self.row(d, a, lv)
                    cells.append("n/a" if r["impossible"] else f"no evidence {r['successes']}/{r['n']}"
                                 if r.get("no_evidence") else f"{rate_brief(r)} {r['ssim']:.2f}")
                lines.append(f"{ATTACK_NAMES[a]:22}" + "".join(f"{c:>{width}}" for c in cells))
            lines.append(f"{'accuracy':22}" + "".join(f"{s['accuracy']:>{width}.1%}" for s in summary))
            lines.append(f"{'accuracy cost (pts)':22}" + "".join(f"{100 * s['accuracy_cost']:>{width}.1f}" for s in summary))
            lines.append(f"{'signal/noise (median)':22}" + "".join(
                f"{'-' if s['snr'] is None else format(s['snr'], '.2g'):>{width}}" for s in summary))
            lines.append(f"{'epsilon':22}" + "".join(
                f"{'-' if s['epsilon'] is None else format(s['epsilon'], '.3g'):>{width}}" for s in summary))
            blocks.append("\n".join(lines))
        notes = self.impossible_notes()
        legend = (
            f"cells: successes/attacked images (SSIM >= {self.settings.success_ssim:g}), [95 % Wilson interval of the "
            f"success rate, in %], mean SSIM; \"no evidence\": the attack rebuilt no image without a defense "
            f"either, so its 0 says nothing about the defense; signal/noise: the shared gradient's norm over its "
            f"noise's, median over images and seeds; "
            f"pruning {self.settings.prune_fractions[0]:.0%}.\n{self._unit_legend()}"
        )
        return "\n\n".join(blocks) + "\n" + legend + "\n" + "\n".join(f"n/a: {k}: {v}" for k, v in notes.items())

    def impossible_notes(self) -> dict[str, str]:
        """``{"attack × defense, ...": reason}``: the impossible cells grouped by reason."""
        notes: dict[str, list[str]] = {}
        for a in ATTACKS:
            for d in DEFENSES:
                reason = impossible(a, d)
                if reason:
                    notes.setdefault(reason, []).append(f"{ATTACK_NAMES[a]} × {DEFENSE_NAMES[d]}")
        return {", ".join(v): k for k, v in notes.items()}

    def to_json(self) -> dict:
        """Settings, versions, the attacks, the defenses with the unit of each one's level (``defense_levels``),
        cache counts, the impossible pairs with reasons, and the rows, JSON-ready (inf written as "inf", nan as
        null; reconstructions are left out: they are in the cache files)."""
        return finite({
            "settings": dataclasses.asdict(self.settings), "versions": versions(),
            "attacks": list(ATTACKS), "defenses": list(DEFENSES),
            "defense_levels": {d: DEFENSE_SPECS[d].knob for d in DEFENSES},
            "impossible": [{"attack": a, "defense": d, "reason": impossible(a, d)}
                           for a in ATTACKS for d in DEFENSES if impossible(a, d)],
            "cells_computed": self.computed, "cells_cached": self.cached, "rows": self.rows,
        })


def _short(defense: str, level: float, settings: ArenaSettings) -> str:
    """The level in a table cell: "std 0.1", "σ 0.1", "σ 1→0.32", "90%", "-"."""
    knob = DEFENSE_LEVEL[defense]
    if knob == "noise_std":
        return f"std {level:g}"
    if defense == "dp_dynamic":
        return f"σ {level:g}→{level * settings.dynamic_end:.2g}"
    if knob == "noise_multiplier":
        return f"σ {level:g}"
    if knob == "prune_fraction":
        return f"{level:.0%}"
    return "-"
