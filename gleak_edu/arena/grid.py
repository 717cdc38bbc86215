"""The arena's grid: its cells cached on disk, computed in a pool of processes when missing, and :func:`arena`.

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
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from gleak_edu import data as gdata
from gleak_edu import training
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
CELL_FORMAT = 2


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
    ``images`` whole numbers in [0, 9]; attacks exactly the attacks possible
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
        "attacks": Record({a: attack(a) for a in possible_attacks(defense)}, exact=True),
    })


_DATA: dict = {}


def _data(settings: ArenaSettings):
    """The MNIST subset's (train, test) split, loaded once per process."""
    if settings.test_fraction not in _DATA:
        _DATA[settings.test_fraction] = training.split(gdata.mnist_subset(), settings.test_fraction, seed=0)
    return _DATA[settings.test_fraction]


def _set_data(test_fraction: float, split_data) -> None:
    """A worker's initializer: the parent's split, so workers do not load the MNIST subset again."""
    _DATA[test_fraction] = split_data


def _worker_cell(settings: ArenaSettings, defense: str, level: float, seed: int) -> dict:
    return arena_cell(settings, defense, level, seed, data=_data(settings))


def _run_parallel(settings: ArenaSettings, todo: list, store, workers: int) -> None:
    """Compute ``todo`` in this process and ``workers - 1`` spawned ones, slowest cells first.

    This process computes too (one process fewer to start and to hold in
    memory: about 0.5 GB, which matters under Binder's 2 GB); a feeder
    thread per worker process hands it the next cell and stores its result.
    """
    # the slowest cells (Opacus training, PRECODE models) first, so the processes finish together
    slow = {d for d, s in DEFENSE_SPECS.items() if s.bottleneck or s.knob == "noise_multiplier"}
    queue = sorted(todo, key=lambda item: item[0][0] not in slow)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def take():
        with lock:
            return queue.pop(0) if queue and not errors else None

    def done(item, cell) -> None:
        with lock:
            store(item, cell)

    def feed(pool) -> None:
        try:
            while (item := take()) is not None:
                done(item, pool.submit(_worker_cell, settings, *item[0]).result())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            with lock:
                errors.append(exc)

    ctx = multiprocessing.get_context("spawn")  # torch is not fork-safe once its thread pools exist
    with ProcessPoolExecutor(max_workers=workers - 1, mp_context=ctx, initializer=_set_data,
                             initargs=(settings.test_fraction, _data(settings))) as pool:
        feeders = [threading.Thread(target=feed, args=(pool,), daemon=True) for _ in range(workers - 1)]
        for t in feeders:
            t.start()
        try:
            while (item := take()) is not None:
                done(item, arena_cell(settings, *item[0], data=_data(settings)))
        except BaseException as exc:
            with lock:
                errors.append(exc)
        for t in feeders:
            t.join()
    if errors:
        raise errors[0]


def arena(
    settings: ArenaSettings | None = None,
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = False,
    workers: int = 1,
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
        progress: a tqdm bar over the cells.
        workers: compute missing cells in this many processes, this one
            included (each cell runs single-threaded, so the numbers are the
            same for any count; 2 on a 2-core CPU nearly halves a cold run).
        compute: False only loads: a cell missing from the cache raises
            LookupError instead of being computed (to load a grid that
            ``gleak arena`` computed, in seconds or not at all).

    Returns:
        :class:`gleak_edu.arena.ArenaResult` (cells, tidy rows, cache counts, the attacked images).

    Raises:
        ValueError: for invalid settings or overrides (see :class:`gleak_edu.arena.ArenaSettings`),
            or workers < 1.
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
    bar = tqdm(total=len(todo), desc="arena cells", disable=not progress or not todo, leave=False)

    def store(item, cell: dict) -> None:  # called from one thread at a time
        where, key, spec = item
        cell = finite(cell)
        cache.write(key, spec, cell)
        result.cells[where] = cell
        result.computed += 1
        bar.update()

    if int(workers) > 1 and len(todo) > 1:
        _run_parallel(settings, todo, store, min(int(workers), len(todo)))
    else:
        for item in todo:
            store(item, arena_cell(settings, *item[0], data=_data(settings)))
    bar.close()
    cache.close()  # the size bound: least recently used cells of other runs evicted
    result.rows = rows_of(settings, result.cells)
    first = result.cells[cells_of(settings)[0]]
    result.test_images = torch.tensor(first["truth"], dtype=torch.float32)
    result.test_labels = torch.tensor(first["labels"], dtype=torch.int64)
    return result
