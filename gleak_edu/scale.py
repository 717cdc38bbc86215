"""Independent experiment cells (the arena's, the PPP sweep's) computed in-process or as Ray tasks.

The course's grids are many independent cells (one defense, level and seed
each). :func:`run_cells` computes the missing ones and hands each result to a
``store`` callback as soon as it is done, so the disk cache
(:mod:`gleak_edu._cache`) stays the single source of truth: a rerun, or a
second machine pointed at the same cache folder, reuses every finished cell.

- ``workers=1`` and no cluster address: every cell in this process, one after
  the other (notebooks and tests; nothing to start).
- ``workers > 1``: a local Ray (``ray.init(num_cpus=workers)``), one task per
  cell, one CPU each (without Ray installed: a warning, and every cell in this process).
- ``address`` (or the ``RAY_ADDRESS`` environment variable): the Ray cluster
  at that address (``ray start --head`` on one machine, ``ray start
  --address=HEAD:6379`` on the others); its workers must have the same
  gleak_edu installed (``pip install -e .`` in the same path, or a shared
  environment).

Ray is the version Flower 1.42's ``flwr[simulation]`` pins (``ray==2.55.1``,
the ``scale`` extra), so the federation notebook shares it.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Sequence

__all__ = ["RAY_VERSION", "run_cells", "ray_address", "side_by_side"]

#: The Ray release Flower 1.42.0 pins for its simulation engine.
RAY_VERSION = "2.55.1"

# Local Ray's object store: the cells' inputs (a few MB of MNIST) and results are small; Ray's default
# (30 % of memory) would reserve gigabytes that Binder's 2 GB do not have.
_OBJECT_STORE_BYTES = 200 * 1024**2


def ray_address(address: str | None = None) -> str | None:
    """The Ray cluster to use: ``address``, else ``$RAY_ADDRESS``, else None (a local Ray or no Ray)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError(
            f"running cells on Ray needs ray=={RAY_VERSION}: pip install 'gleak-edu[scale]' "
            "(or use workers=1 and no address: every cell in this process)"
        ) from None
    return ray


def _start_ray(ray, workers: int, address: str | None) -> bool:
    """Connect to ``address`` or start a local Ray with ``workers`` CPUs; True if this call started it."""
    if ray.is_initialized():
        return False
    # quiet and offline: no usage report, and Ray 2.55's notice about a future default for CPU-only tasks is moot here
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    common = dict(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                  configure_logging=False)
    if address:
        ray.init(address=address, **common)
    else:
        ray.init(num_cpus=int(workers), object_store_memory=_OBJECT_STORE_BYTES, **common)
    return True


def run_cells(
    fn: Callable[..., dict],
    items: Sequence[tuple],
    store: Callable[[tuple, dict], None],
    *,
    workers: int = 1,
    address: str | None = None,
    shared: Any = None,
    progress: Any = None,
) -> str:
    """Compute ``fn(*item, shared)`` for every item and pass each result to ``store(item, result)``.

    Args:
        fn: a function importable where the cells run (a module-level one), called as ``fn(*item, shared)``;
            it must seed itself from its arguments, so a cell's numbers do not depend on where it runs.
        items: the cells' arguments, e.g. ``(defense, level, seed)``; computed in this order
            (put the slowest first so the workers finish together).
        store: called in this process, once per item, as soon as its result arrives (any order
            with Ray), e.g. to write the cache.
        workers: 1 computes in this process (unless a cluster address is given); more starts a
            local Ray with that many CPUs, one task per cell.
        address: a Ray cluster (``"ray://host:10001"`` or ``"host:6379"``); default ``$RAY_ADDRESS``.
        shared: one read-only input every cell needs (the data split), sent to Ray's object store
            once instead of with every task.
        progress: a tqdm bar (or None): advanced once per stored cell; with Ray its postfix says how
            many cells are running and how many wait.

    Returns:
        Where the cells ran: ``"in-process"``, ``"local Ray (N CPUs)"`` or ``"Ray cluster at ADDRESS"``.

    Raises:
        ValueError: for ``workers`` < 1.
        ImportError: when a cluster address is given and Ray is not installed (names the extra to
            install). With ``workers > 1`` and no Ray, a warning says so and the cells run in this process.
        Whatever a cell raised (with Ray: the original exception), after the cells that finished
        before it were stored; the other pending tasks are cancelled.
    """
    if isinstance(workers, bool) or int(workers) < 1:
        raise ValueError(f"workers must be at least 1, got {workers!r}")
    address = ray_address(address)
    items = list(items)
    if not items:
        return "in-process"
    if int(workers) == 1 and not address:
        for item in items:
            store(item, fn(*item, shared))
            if progress is not None:
                progress.update()
        return "in-process"
    try:
        ray = _import_ray()
    except ImportError as exc:
        if address:
            raise
        warnings.warn(f"{exc}; computing the {len(items)} cells in this process instead", stacklevel=2)
        return run_cells(fn, items, store, workers=1, shared=shared, progress=progress)
    started = _start_ray(ray, min(int(workers), len(items)), address)
    try:
        shared_ref = ray.put(shared)
        def cell(*args):  # a plain Python function for ray.remote, whatever fn is (a builtin, a partial)
            return fn(*args)

        task = ray.remote(num_cpus=1, max_retries=0)(cell)
        pending = {task.remote(*item, shared_ref): item for item in items}
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        if progress is not None:
            running = min(len(pending), cpus)
            progress.set_postfix_str(f"{running} running, {len(pending) - running} waiting", refresh=False)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            item = pending.pop(done[0])
            try:
                result = ray.get(done[0])
            except ray.exceptions.RayTaskError as exc:
                for ref in pending:
                    ray.cancel(ref, force=True)
                cause = exc.as_instanceof_cause()
                raise cause from None
            store(item, result)
            if progress is not None:
                running = min(len(pending), cpus)
                progress.set_postfix_str(f"{running} running, {len(pending) - running} waiting", refresh=False)
                progress.update()
        where = f"Ray cluster at {address}" if address else f"local Ray ({min(int(workers), len(items))} CPUs)"
    finally:
        if started:
            ray.shutdown()
    return where


def side_by_side(calls: Sequence[Callable[[], Any]], workers: int | None = None) -> list:
    """Run independent calls at the same time, one per CPU core, in threads; their results in order.

    For a notebook's independent attacks or trainings (two attacks of a race, the same attack on
    several images): PyTorch releases Python's lock while it computes, so on a 2-core CPU two calls
    take little more than the longer one. Each call runs with one intra-op thread (restored after).

    Give every call **its own model** (``copy.deepcopy(model)``): an attack changes its model's
    modes and flags while it runs (and restores them at the end), so two attacks must not share one.
    The numbers do not depend on ``workers``: each call is seeded by its own arguments.

    Args:
        calls: zero-argument callables, e.g. ``lambda: dlg(copy.deepcopy(victim), shared, ...)``.
        workers: threads (default: the CPUs this process may use, at most ``len(calls)``; 1 runs the
            calls one after the other in this thread).

    Returns:
        ``[call() for call in calls]``.

    Raises:
        ValueError: for ``workers`` < 1. The first exception a call raised, after every call ended.
    """
    from concurrent.futures import ThreadPoolExecutor

    import torch

    calls = list(calls)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = min(cpus, len(calls)) if workers is None else workers
    if isinstance(workers, bool) or int(workers) < 1:
        raise ValueError(f"workers must be at least 1, got {workers!r}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if int(workers) == 1 or len(calls) <= 1:
            return [call() for call in calls]
        with ThreadPoolExecutor(max_workers=int(workers)) as pool:
            futures = [pool.submit(call) for call in calls]
            return [f.result() for f in futures]
    finally:
        torch.set_num_threads(threads)
