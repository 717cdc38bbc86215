"""Exercises, questions and checks of notebook 07 (the defense arena), and the full grid it reads.

The notebook imports this module as ``ex``; the core helpers are re-exported.

**The full grid.** The notebook runs a small arena itself (one digit) and draws
its conclusions from the full one: the command's grid (``gleak arena`` at its
defaults: 3 noise levels x 10 test digits x 3 training seeds, 45 trained
models), shipped as a JSON file, ``notebooks/results/arena_full.json``
(:data:`FULL_GRID_FILE`), that :func:`load_full_grid` reads in well under a
second. One command regenerates it (:data:`FULL_GRID_COMMAND`; two local Ray
workers; about half an hour from an empty cache on a quiet 2-core CPU, seconds
when ``gleak arena`` has already filled the cache)::

    python -m gleak_edu.exercises.nb07 notebooks/results/arena_full.json

The file holds, under ``"arena"``, exactly what ``gleak arena --json`` writes
(settings, versions, the tidy rows), and beside it what the notebook shows
that the command's JSON leaves out: every cell's per-digit SSIM, PSNR and
reconstructions (the first seed's, 8-bit, compressed), the attacked digits, every digit's
signal-to-noise record as the cell measured it
(:func:`gleak_edu.arena.gradient_snr`) and how often iDLG's label rule reads
the label on the undefended model (:func:`label_rules`, on the first seed's
model trained once more, its test accuracy recorded as a check).
"""

from __future__ import annotations

import base64
import json
import math
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gleak_edu import arena
from gleak_edu import data as gdata
from gleak_edu import training
from gleak_edu._cache import finite, number
from gleak_edu.arena.cell import _train
from gleak_edu.attacks import idlg_label
from gleak_edu.exercises import (
    Feedback,
    Question,
    ask,
    check_function,
    correct,
    course_checks,
    hint,
    predict,
    register,
    reveal,
    unanswered,
)
from gleak_edu.fl import client_gradient
from gleak_edu.metrics import success_rate
from gleak_edu.sweeps import victim

__all__ = [
    "FULL_GRID_COMMAND",
    "FULL_GRID_FILE",
    "FORMAT",
    "Feedback",
    "FullGrid",
    "ask",
    "check_function",
    "check_ranking",
    "course_checks",
    "folded_attacks",
    "label_rules",
    "load_full_grid",
    "markdown_table",
    "observed_level_question",
    "predict",
    "record_full_grid",
    "reveal",
    "snr_rows",
    "write_full_grid",
]

FORMAT = 2  # bump when the file's layout changes (2: 10 images x 3 seeds, SNR from the cells)
FULL_GRID_FILE = "notebooks/results/arena_full.json"  # relative to the repository root
FULL_GRID_COMMAND = "python -m gleak_edu.exercises.nb07 notebooks/results/arena_full.json"
_REPO = Path(__file__).resolve().parents[2]
_NUMERIC = ("accuracy", "accuracy_cost", "epsilon", "attacked_noise_multiplier", "attacked_noise_std",
            "success_rate", "ssim", "psnr", "label_accuracy", "seconds", "snr")


# --------------------------------------------------------------------------------------------------
# The full grid: recording it (one command) and loading it


def _threads1(fn, *args, **kwargs):
    """Call ``fn`` single-threaded, as every arena cell trains (the same sums in the same order)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def label_rules(model, test, digits: int = 200) -> dict:
    """How often two rules read a digit's label from its gradient on ``model`` (first ``digits`` test digits).

    iDLG's rule (:func:`gleak_edu.attacks.idlg_label`: the output-weight row with
    the negative sum; it assumes non-negative activations) and the bias rule
    (the smallest entry of the output bias gradient, softmax - onehot: no
    assumption). Returns ``{"digits", "weight_row_rule", "bias_rule"}`` (counts).
    """
    model.train()
    weight = bias = 0
    for i in range(digits):
        x, y = test[0][i : i + 1], test[1][i : i + 1]
        shared = client_gradient(model, x, y)
        weight += int(idlg_label(model, shared) == int(y))
        last = [n for n in shared if n.endswith("bias")][-1]
        bias += int(int(shared[last].argmin()) == int(y))
    return {"digits": digits, "weight_row_rule": weight, "bias_rule": bias}


def _pack(images) -> str:
    """float images in [0, 1] -> base64 of zlib-compressed uint8 (what the file stores)."""
    arr = np.clip(np.rint(np.asarray(images, dtype=np.float64) * 255), 0, 255).astype(np.uint8)
    return base64.b64encode(zlib.compress(arr.tobytes(), 9)).decode("ascii")


def _unpack(text: str, shape) -> torch.Tensor:
    arr = np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=np.uint8).reshape(shape)
    return torch.tensor(arr.astype(np.float32) / 255.0)


def record_full_grid(settings: arena.ArenaSettings | None = None, *, workers: int = 2, cache_dir=None,
                     label_digits: int = 200, progress: bool = True) -> dict:
    """Run the full arena (from the cache when ``gleak arena`` ran it already) and everything the notebook adds.

    Args:
        settings: the arena's settings (default :class:`gleak_edu.arena.ArenaSettings`, the command's).
        workers, cache_dir: as :func:`gleak_edu.arena.arena`.
        label_digits: test digits for :func:`label_rules`.
        progress: print what is being done.

    Returns:
        The JSON-ready record :func:`write_full_grid` writes and :func:`load_full_grid` reads.
    """
    settings = settings or arena.ArenaSettings()
    say = print if progress else (lambda *a, **k: None)
    start = time.perf_counter()
    say("running the arena (the cells gleak arena computed are read from its cache)...")
    result = arena.arena(settings, workers=workers, cache_dir=cache_dir, progress=progress)
    arena_seconds = time.perf_counter() - start
    cells = []
    for (defense, level, seed), cell in result.cells.items():
        attacks = cell["attacks"]
        cells.append({
            "defense": defense, "level": level, "seed": seed,
            "ssim": {a: out["ssim"] for a, out in attacks.items()},
            "psnr": {a: out["psnr"] for a, out in attacks.items()},
            "label_correct": {a: out["label_correct"] for a, out in attacks.items()},
            "errors": {a: out["errors"] for a, out in attacks.items()},
            # the first seed's reconstructions only (what the heatmap panel and the figures show): a compact file
            "reconstructions": ({a: _pack(out["reconstructions"]) for a, out in attacks.items()}
                                if seed == settings.seeds[0] else None),
        })
    snr = [{"defense": defense, "level": level, "seed": seed, "image": i, "accuracy": cell["accuracy"],
            "attacked_noise_multiplier": cell["attacked_noise_multiplier"], **row}
           for (defense, level, seed), cell in result.cells.items() for i, row in enumerate(cell["snr"])]
    say("training the undefended model once more for the label rules...")
    train, test = training.split(gdata.mnist_subset(), settings.test_fraction, seed=0)
    if settings.train_images is not None:
        train = (train[0][: settings.train_images], train[1][: settings.train_images])
    model = victim(settings, "none", settings.seeds[0])
    summary, _ = _threads1(_train, settings, "none", 0.0, settings.seeds[0], model, train, test)
    labels = {**_threads1(label_rules, model, test, label_digits), "accuracy": summary["accuracy"]}
    return finite({
        "format": FORMAT,
        "command": FULL_GRID_COMMAND,
        "made": {"arena_seconds": round(arena_seconds, 1), "seconds": round(time.perf_counter() - start, 1),
                 "cells_computed": result.computed, "cells_cached": result.cached},
        "arena": result.to_json(),
        "images": {"truth": _pack(result.test_images), "labels": result.test_labels.tolist()},
        "cells": cells,
        "snr": snr,
        "label_rules": labels,
    })


def write_full_grid(path: str | Path = FULL_GRID_FILE, **kwargs) -> Path:
    """Record the full grid (:func:`record_full_grid`) and write it as JSON to ``path``; returns the path."""
    path = Path(path)
    record = record_full_grid(**kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, separators=(",", ":")) + "\n")
    return path


@dataclass
class FullGrid:
    """The full arena, loaded from the shipped file (:func:`load_full_grid`).

    Attributes:
        result: a :class:`gleak_edu.arena.ArenaResult` with the rows (every
            seed), the first seed's cells with their reconstructions
            (``result.reconstructions(...)`` at the default seed) and the
            attacked digits: everything ``viz.arena_heatmap``,
            ``widgets.ArenaPanel`` and ``result.row(...)`` read (not the
            per-cell training details).
        snr: one dict per (defense, level, seed, image): see :func:`gleak_edu.arena.gradient_snr`,
            plus the cell's ``accuracy`` and ``attacked_noise_multiplier``.
        per_image: ``{(defense, level, seed): {"ssim": {attack: [...]}, "psnr": ..., "label_correct": ...}}``.
        label_rules: :func:`label_rules` on the undefended model of the first seed, with that model's
            ``accuracy`` (equal to the grid's cell when the training is reproduced).
        record: the file's other fields (``format``, ``command``, ``made``, ``arena`` as ``gleak arena --json`` writes it).
        path: where it was read from.
    """

    result: arena.ArenaResult
    snr: list[dict]
    per_image: dict
    label_rules: dict
    record: dict = field(repr=False)
    path: Path | None = None

    @property
    def n(self) -> int:
        """Attacked digits per cell (images x seeds): the n behind every success rate."""
        s = self.result.settings
        return s.images * len(s.seeds)


def _find(path) -> Path:
    if path is not None:
        return Path(path)
    for candidate in (Path("results/arena_full.json"), Path(FULL_GRID_FILE), _REPO / FULL_GRID_FILE):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"the full grid's file {FULL_GRID_FILE} is missing; make it with `{FULL_GRID_COMMAND}`")


def load_full_grid(path: str | Path | None = None) -> FullGrid:
    """Read the shipped full grid (default: ``results/arena_full.json`` next to the notebooks).

    Raises:
        FileNotFoundError: no file (the message gives the command that makes it).
        ValueError: a file of another format.
    """
    path = _find(path)
    record = json.loads(path.read_text())
    if record.get("format") != FORMAT:
        raise ValueError(f"{path}: format {record.get('format')!r}, expected {FORMAT}; regenerate it with "
                         f"`{FULL_GRID_COMMAND}`")
    grid = record["arena"]
    settings = arena.ArenaSettings(**grid["settings"])
    rows = []
    for r in grid["rows"]:
        r = dict(r)
        for k in _NUMERIC:
            if isinstance(r.get(k), str):
                r[k] = number(r[k])
        if "successes" not in r:  # a grid written before rows carried their counts and interval
            n = settings.images * len(settings.seeds)
            if r["success_rate"] is None:  # an impossible pairing
                r.update(successes=None, n=None, success_low=None, success_high=None)
            else:
                r.update(success_rate(successes=round(r["success_rate"] * n), n=n).row_fields())
        rows.append(r)
    shape = (settings.images, 1, 28, 28)
    cells, per_image = {}, {}
    for c in record["cells"]:
        key = (c["defense"], float(c["level"]), int(c["seed"]))
        if c["reconstructions"] is not None:
            cells[key] = {"attacks": {a: {"reconstructions": _unpack(text, shape).tolist()}
                                      for a, text in c["reconstructions"].items()}}
        per_image[key] = {k: c[k] for k in ("ssim", "psnr", "label_correct", "errors")}
    result = arena.ArenaResult(settings, cells=cells, rows=rows, cached=grid["cells_cached"],
                               computed=grid["cells_computed"],
                               test_images=_unpack(record["images"]["truth"], shape),
                               test_labels=torch.tensor(record["images"]["labels"], dtype=torch.int64))
    snr = [{k: (number(v) if k in ("snr",) and v is not None else v) for k, v in s.items()} for s in record["snr"]]
    return FullGrid(result=result, snr=snr, per_image=per_image, label_rules=record["label_rules"], record=record,
                    path=path)


def snr_rows(full: FullGrid, level: float, attack: str = "ig", *, all_seeds: bool = False) -> list[dict]:
    """Per defense at one noise level (pruning at its first fraction), per digit: the SNR record and ``attack``'s SSIM.

    Args:
        full: the loaded full grid.
        level: a noise level of the grid.
        attack: whose SSIM to attach (its registry key).
        all_seeds: every training seed's digits (default: the first seed's only, one marker per digit).

    Returns one dict per (defense, seed, digit) in :data:`gleak_edu.arena.DEFENSES` order, with the keys of
    :func:`gleak_edu.arena.gradient_snr`, ``defense``, ``level``, ``seed``, ``image``, ``label`` (the defense at
    its level, in its unit) and ``ssim`` (``attack``'s SSIM on that digit, None where it cannot run).
    """
    out = []
    s = full.result.settings
    seeds = s.seeds if all_seeds else s.seeds[:1]
    for d in arena.DEFENSES:
        k = full.result.knob(d, level)
        for r in full.snr:
            if r["defense"] == d and math.isclose(r["level"], k) and r["seed"] in seeds:
                ssims = full.per_image[(d, k, r["seed"])]["ssim"].get(attack)
                out.append({**r, "label": arena.defense_label(d, k, s),
                            "ssim": None if ssims is None else ssims[r["image"]]})
    return out


def markdown_table(result, level: float) -> str:
    """The arena at one noise level as a Markdown table (the README's): attacks as rows, defenses as columns.

    A cell reads ``successes/n (low-high %)`` (the 95 % Wilson interval of the success rate), "no evidence
    (0/n)" where the attack rebuilt no image here and none without a defense either, or "n/a"; then one row
    each for the accuracy cost (points), the median signal-to-noise ratio of the shared gradient and epsilon.
    """
    defenses = arena.DEFENSES
    summary = result.defense_summary(level)
    head = ["attack"] + [arena.defense_label(s["defense"], s["level"], result.settings) for s in summary]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a in arena.ATTACKS:
        cells = []
        for d in defenses:
            r = result.row(d, a, level)
            if r["impossible"]:
                cells.append("n/a")
            elif r.get("no_evidence"):
                cells.append(f"no evidence ({r['successes']}/{r['n']})")
            else:
                cells.append(f"{r['successes']}/{r['n']} ({100 * r['success_low']:.0f}-{100 * r['success_high']:.0f} %)")
        lines.append(f"| {arena.ATTACK_NAMES[a]} | " + " | ".join(cells) + " |")
    lines.append("| accuracy cost (points) | " + " | ".join(f"{100 * s['accuracy_cost']:.1f}" for s in summary) + " |")
    lines.append("| signal/noise (median) | " + " | ".join(
        "-" if s["snr"] is None else f"{s['snr']:.2g}" for s in summary) + " |")
    lines.append(f"| epsilon (δ = {result.settings.delta:g}) | " + " | ".join(
        "" if s["epsilon"] is None else f"{s['epsilon']:.3g}" for s in summary) + " |")
    return "\n".join(lines)


def folded_attacks(result) -> list[str]:
    """The attacks with 0 % success in every cell of ``result`` at every level (the heatmap folds them into a note)."""
    out = []
    for a in arena.ATTACKS:
        rates = [r["success_rate"] for r in result.rows if r["attack"] == a and r["success_rate"] is not None]
        if rates and max(rates) == 0:
            out.append(a)
    return out


# --------------------------------------------------------------------------------------------------
# Questions


LEVEL_QUESTION = Question(
    key="07.level",
    prompt=("At the smallest noise level, 0.01, the four noisy defenses add the same noise std (0.01) to one "
            "digit's gradient: noise (no clipping), PPP and DP fixed (σ = 0.01 with C = 1), DP dynamic (starts at "
            "σ = 0.01). Against Inverting Gradients, what will the arena show?"),
    options={
        "a": "all four stop it: the same noise std gives the same protection",
        "b": "some stop it and some do not: the same number is not the same protection",
        "c": "none of them stops it: 0.01 is too little noise for any of them",
    },
    explanation=("the noise competes with the digit's gradient on the model each defense trained, after clipping. "
                 "Those gradients differ from defense to defense (a less trained model has larger gradients), so "
                 "the same noise std leaves a different signal-to-noise ratio in each column (section 5 measures it)."),
)

SNR_QUESTION = Question(
    key="07.snr",
    prompt=("DP fixed at σ = 0.01 is the noise defense's std 0.01 *plus* clipping to C = 1, yet Inverting "
            "Gradients gets through it more often than through the noise alone. Why?"),
    options={
        "a": "clipping makes a gradient easier to invert",
        "b": ("DP fixed's model is less trained, so the digit's gradient on it is larger; even clipped to C = 1 it "
              "stands higher above the same noise (a larger signal-to-noise ratio) than the small gradient of "
              "the well-trained noise model"),
        "c": "DP fixed adds less noise than the noise defense at the same level",
        "d": "the DP accountant's ε makes the shared gradient less noisy",
    },
    answer="b",
    explanation=("the attack sees signal plus noise. The noise is the same (std 0.01 per entry); the signal is the "
                 "digit's gradient on each defense's own model: larger on DP fixed's less trained model, and "
                 "clipping to C = 1 shrinks it less than the gap between the models. Clipping costs the attacker "
                 "nothing (Inverting Gradients matches directions), and at a larger σ the same noise buries it."),
    hints={
        "a": ("clipping multiplies the whole gradient by one factor: its direction, which Inverting Gradients "
              "matches, does not change. Compare the signal norms in the figure instead."),
        "c": "the level legend says what each defense adds: with C = 1 it is the same std. Look at the signal, not the noise.",
        "d": "ε is computed by the accountant after the fact; it changes nothing in what the client sends.",
    },
)

register(LEVEL_QUESTION, SNR_QUESTION)


def observed_level_question(result, level: float | None = None, attack: str = "ig") -> str:
    """The option of question "07.level" that ``result`` supports at ``level`` (default: its smallest).

    "a" when ``attack`` fails on every digit against every noisy defense there, "c" when it succeeds on
    at least one digit against each of them, "b" otherwise.
    """
    level = min(result.levels) if level is None else level
    stopped = [result.row(d, attack, level)["success_rate"] == 0 for d in arena.NOISY]
    if all(stopped):
        return "a"
    if not any(stopped):
        return "c"
    return "b"


# --------------------------------------------------------------------------------------------------
# Exercise: rank the defenses by their worst case


def _reference_ranking(result, level: float):
    worst = {d: max(result.row(d, a, level)["success_rate"] for a in arena.possible_attacks(d)) for d in arena.DEFENSES}
    safe = {d for d, v in worst.items() if v == 0}
    costs = {s["defense"]: s["accuracy_cost"] for s in result.defense_summary(level)}
    cheapest = min(safe, key=costs.get) if safe else None
    return worst, safe, cheapest


def check_ranking(result, worst_case, safe, cheapest_safe, level: float = 1.0) -> Feedback:
    """Check the ranking exercise on ``result`` at ``level``: hints only, never the expected values.

    ``worst_case``: ``{defense: highest success rate of any attack that can run against it}``;
    ``safe``: the defenses whose worst case is 0; ``cheapest_safe``: the one of them with the smallest
    accuracy cost.
    """
    answers = (worst_case, safe, cheapest_safe)
    if any(v is None or v is Ellipsis for v in answers) or (
            isinstance(worst_case, dict) and any(v is Ellipsis for v in worst_case.values())):
        return unanswered("fill in worst_case, safe and cheapest_safe above (replace every `...`), then run this "
                          "cell again.")
    worst, ref_safe, ref_cheapest = _reference_ranking(result, level)
    if not isinstance(worst_case, dict) or set(worst_case) != set(arena.DEFENSES):
        return hint("worst_case should be a dict with one entry per defense, keyed like arena.DEFENSES.")
    wrong = [d for d in arena.DEFENSES if not _same_rate(worst_case[d], worst[d])]
    if wrong:
        impossible = [d for d in wrong if any(arena.impossible(a, d) for a in arena.ATTACKS)]
        extra = (" Skip the pairs that cannot be played (arena.impossible(attack, defense) is not None)."
                 if impossible else "")
        return hint(f"the worst case of {arena.DEFENSE_NAMES[wrong[0]]} is off: take the largest success rate over "
                    f"every attack against it at noise level {level:g} (result.row(defense, attack, {level:g})).{extra}")
    if set(safe) != ref_safe:
        return hint("safe should hold exactly the defenses whose worst case is 0 (no attack succeeds on any digit).")
    if cheapest_safe != ref_cheapest:
        return hint("among the safe defenses, pick the one with the smallest accuracy_cost "
                    f"(result.defense_summary({level:g}) lists it per defense; a negative cost is smaller than 0).")
    return correct(f"{len(ref_safe)} defenses stop every attack of the arena at noise level {level:g}, and you found "
                   "the cheapest. Now the question that matters: would you deploy it? Look at its ε and at section 6.")


def _same_rate(got, want) -> bool:
    try:
        return math.isclose(float(got), float(want), abs_tol=1e-9)
    except (TypeError, ValueError):
        return False


if __name__ == "__main__":  # python -m gleak_edu.exercises.nb07 [PATH]: (re)make the shipped full grid
    target = write_full_grid(sys.argv[1] if len(sys.argv) > 1 else _REPO / FULL_GRID_FILE)
    print(f"wrote {target} ({target.stat().st_size / 1024:.0f} KB)")
