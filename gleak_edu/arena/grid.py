"""The arena's grid: its cells cached on disk, the missing ones computed in-process or as Ray tasks, and :func:`arena`.

One JSON file per (defense, level, seed) cell (:mod:`gleak_edu._cache`),
keyed by the SHA-256 of every setting that cell depends on (a change in the
pruning fraction leaves the other defenses' cells valid), a cell format
number, and the versions of gleak_edu (its source code too), torch and
opacus. A cached cell is used only when it validates against the cell's
schema (:func:`cell_schema`); any other file is recomputed and overwritten
with a warning that names it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from gleak_edu import data as gdata
from gleak_edu import training
from gleak_edu.scale import run_cells
from gleak_edu._cache import Array, Flag, ListOf, Null, Number, Record, Text, cell_key, finite, open_cache, versions
from gleak_edu.arena.cell import arena_cell
from gleak_edu.arena.results import ArenaResult, rows_of
from gleak_edu.arena.settings import (
    CLASSES,
    DEFENSE_SPECS,
    IMAGE,
    ArenaSettings,
    cells_of,
    possible_attacks,
)
from gleak_edu.attacks import ATTACKS as ATTACK_REGISTRY

__all__ = ["arena", "cell_schema", "cell_spec"]

# Bump when what a cell computes or holds changes without a version change (invalidates cached cells).
# 2: every defense trains through train_perturbed, attacks through the registry, attacked_sigma split into
#    attacked_noise_multiplier and attacked_noise_std, clip renamed max_grad_norm.
# 3: a cell's images are attacked in one vectorised run; each image's signal-to-noise ratio ("snr").
CELL_FORMAT = 3


def cell_spec(settings: ArenaSettings, defense: str, level: float, seed: int) -> dict:
    """Every setting the cell's numbers depend on (and nothing else: other defenses' knobs are left out)."""
    spec = dataclasses.asdict(settings)
    for name in ("noise_levels", "prune_fractions", "seeds", "success_ssim"):
        spec.pop(name)  # the grid, and a threshold applied when rows are built
    if not DEFENSE_SPECS[defense].bottleneck:
        spec.pop("bottleneck"), spec.pop("beta")
    if defense not in ("ppp", "dp_fixed", "dp_dynamic"):
        spec.pop("max_grad_norm")
    if defense != "dp_dynamic":
        for name in ("dynamic_end", "dynamic_schedule", "dynamic_updates"):
            spec.pop(name)
    if not DEFENSE_SPECS[defense].dp:
        spec.pop("delta")
    spec.update(kind="arena-cell", format=CELL_FORMAT, defense=defense, level=float(level), seed=int(seed),
                versions=versions())
    return spec


def cell_schema(settings: ArenaSettings, defense: str) -> Record:
    """What a cached cell of ``defense`` must hold to be used (see :func:`gleak_edu.arena.arena_cell`).

    accuracy in [0, 1]; epsilon null for the non-DP defenses, else >= 0, inf
    or null; diverged a bool; train_seconds finite >= 0; attacked_noise_multiplier
    finite >= 0 for the defenses with a noise multiplier, else null;
    attacked_noise_std finite >= 0, null for "dp_dynamic"; steps a whole
    number >= 0; truth ``images`` digits ``[1][28][28]`` in [0, 1]; labels
    ``images`` whole numbers in [0, 9]; snr ``images`` records of finite
    norms >= 0 (gradient_norm, signal_norm, noise_norm), snr >= 0 or null,
    cosine in [-1, 1] and entries a whole number >= 1; attacks exactly the attacks possible
    against ``defense``, each with one entry per image: ssim in [-1, 1] or
    null, psnr finite or null, seconds finite >= 0, errors strings,
    reconstructions ``[1][28][28]`` in [0, 1], and label_correct null for an
    attack that reads no label (the registry's ``recovers_labels``), else bools.
    Anything else is recomputed.
    """
    n = settings.images
    image = Array(IMAGE, 0.0, 1.0)

    def attack(name: str) -> Record:
        return Record({
            "ssim": ListOf(Number(-1.0, 1.0, null=True), n),
            "psnr": ListOf(Number(null=True), n),
            "label_correct": ListOf(Flag(), n) if ATTACK_REGISTRY[name].recovers_labels else Null(),
            "seconds": ListOf(Number(0.0), n),
            "errors": ListOf(Text(), n),
            "reconstructions": ListOf(image, n),
        })

    spec = DEFENSE_SPECS[defense]
    return Record({
        "accuracy": Number(0.0, 1.0),
        "epsilon": Number(0.0, null=True, inf=True) if spec.dp else Null(),
        "diverged": Flag(),
        "train_seconds": Number(0.0),
        "steps": Number(0, 2**53, integer=True),
        "attacked_noise_multiplier": Number(0.0) if spec.knob == "noise_multiplier" else Null(),
        "attacked_noise_std": Null() if defense == "dp_dynamic" else Number(0.0),
        "truth": ListOf(image, n),
        "labels": ListOf(Number(0, CLASSES - 1, integer=True), n),
        "snr": ListOf(Record({
            "gradient_norm": Number(0.0), "signal_norm": Number(0.0), "noise_norm": Number(0.0),
            "snr": Number(0.0, null=True), "cosine": Number(-1.0, 1.0), "entries": Number(1, 2**53, integer=True),
        }), n),
        "attacks": Record({a: attack(a) for a in possible_attacks(defense)}, exact=True),
    })


_DATA: dict = {}


def _data(settings: ArenaSettings):
    """The MNIST subset's (train, test) split, loaded once per process."""
    if settings.test_fraction not in _DATA:
        _DATA[settings.test_fraction] = training.split(gdata.mnist_subset(), settings.test_fraction, seed=0)
    return _DATA[settings.test_fraction]


def _cell_task(defense: str, level: float, seed: int, shared) -> dict:
    """One cell where :func:`gleak_edu.scale.run_cells` runs it; ``shared`` is ``(settings, (train, test))``."""
    settings, split_data = shared
    return arena_cell(settings, defense, level, seed, data=split_data)


def _store_by_cell(todo: list, store):
    """``store(item, cell)`` for :func:`run_cells`, which hands back the cell's (defense, level, seed) only."""
    by_cell = {item[0]: item for item in todo}
    return lambda where, cell: store(by_cell[where], cell)


def _slow_first(todo: list) -> list:
    """The slowest cells (Opacus training, PRECODE models) first, so the workers finish together."""
    slow = {d for d, s in DEFENSE_SPECS.items() if s.bottleneck or s.knob == "noise_multiplier"}
    return sorted(todo, key=lambda item: item[0][0] not in slow)


def arena(
    settings: ArenaSettings | None = None,
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = False,
    workers: int = 1,
    address: str | None = None,
    compute: bool = True,
    **overrides,
) -> ArenaResult:
    """Run (or load from the cache) the defense arena.

    Args:
        settings: the grid and recipe (default :class:`gleak_edu.arena.ArenaSettings`);
            ``overrides`` replace single fields, e.g. ``noise_levels=(0.1,), images=2``.
        cache_dir: where cells are cached (default ``$GLEAK_CACHE`` or ``~/.cache/gleak_edu``).
            A folder that cannot be used (a file in its place, not writable)
            gives one warning before any cell is computed, and the run goes on
            without writing the cache (see :func:`gleak_edu._cache.open_cache`).
        use_cache: False computes every cell (and still writes the cache).
        progress: a tqdm bar over the cells (those from the cache count as done at the start; its
            postfix says how many cells are running and waiting).
        workers: 1 computes missing cells in this process; more runs them as
            tasks of a local Ray with this many CPUs (:func:`gleak_edu.scale.run_cells`;
            each cell runs single-threaded and seeds itself, so the numbers are the
            same for any count; 2 on a 2-core CPU nearly halves a cold run).
        address: a Ray cluster to run the missing cells on (default ``$RAY_ADDRESS``;
            see :mod:`gleak_edu.scale`); the results are written to this process's cache.
        compute: False only loads: a cell missing from the cache raises
            LookupError instead of being computed (to load a grid that
            ``gleak arena`` computed, in seconds or not at all).

    Returns:
        :class:`gleak_edu.arena.ArenaResult` (cells, tidy rows, cache counts, the attacked images).

    Raises:
        ValueError: for invalid settings or overrides (see :class:`gleak_edu.arena.ArenaSettings`),
            or workers < 1.
        ImportError: when an address is given and Ray is not installed (workers > 1 without Ray: a warning,
            and the cells run in this process).
        LookupError: with ``compute=False``, when cells are missing from the cache.
    """
    from tqdm.auto import tqdm

    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(ArenaSettings)})
    if unknown:
        raise ValueError(f"unknown arena settings {unknown}; see ArenaSettings")
    settings = dataclasses.replace(settings or ArenaSettings(), **overrides)
    if int(workers) < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    cache = open_cache(cache_dir, "arena")  # an unusable folder: one warning now, before any cell is computed
    result = ArenaResult(settings)
    todo = []
    for defense, level, seed in cells_of(settings):
        spec = cell_spec(settings, defense, level, seed)
        key = cell_key(spec)
        cell = cache.read(key, cell_schema(settings, defense)) if use_cache else None
        if cell is None:
            todo.append(((defense, level, seed), key, spec))
        else:
            result.cells[(defense, level, seed)] = cell
            result.cached += 1
    if todo and not compute:
        raise LookupError(
            f"{len(todo)} of {len(todo) + result.cached} arena cells are not in the cache {cache.root}: compute them "
            "with `gleak arena --json arena.json` (same settings and cache folder) or arena(..., compute=True)"
        )
    bar = tqdm(total=len(todo) + result.cached, initial=result.cached, desc=f"arena cells ({result.cached} from cache)",
               disable=not progress or not todo, leave=False)

    def store(item, cell: dict) -> None:  # called from one thread at a time
        where, key, spec = item
        cell = finite(cell)
        cache.write(key, spec, cell)
        result.cells[where] = cell
        result.computed += 1  # the bar is advanced by run_cells

    try:
        run_cells(_cell_task, [item[0] for item in _slow_first(todo)], _store_by_cell(todo, store),
                  workers=int(workers), address=address, shared=(settings, _data(settings)) if todo else None,
                  progress=bar)
    finally:
        bar.close()
    cache.close()  # the size bound: least recently used cells of other runs evicted
    result.rows = rows_of(settings, result.cells)
    first = result.cells[cells_of(settings)[0]]
    result.test_images = torch.tensor(first["truth"], dtype=torch.float32)
    result.test_labels = torch.tensor(first["labels"], dtype=torch.int64)
    return result
