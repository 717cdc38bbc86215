"""The disk cache shared by the course's cached experiments (:mod:`gleak_edu.sweeps`, :mod:`gleak_edu.arena`).

One JSON file per cell of an experiment grid. A cell's key is the SHA-256 of
a JSON description of everything the cell's numbers depend on (its settings,
its position in the grid, the versions of gleak_edu, torch and opacus, and a
fingerprint of gleak_edu's source code);
the file stores the key next to the result. Reading checks the key and the
result's fields (a validator per experiment): a file that is missing returns
None quietly, one that cannot be read, whose key or fields do not match,
returns None with a warning, and the caller recomputes and overwrites it
(never trusted). Writes are atomic: a temporary file, then a rename, so an
interrupted run leaves no half-written cell behind.

Nothing here imports a heavy package: a warm run reads its cells in well
under a second.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from pathlib import Path
from typing import Callable

__all__ = ["cell_key", "code_fingerprint", "default_cache_dir", "finite", "number", "read_cell", "versions", "write_cell"]


def default_cache_dir() -> Path:
    """``$GLEAK_CACHE`` if set, else ``~/.cache/gleak_edu``."""
    env = os.environ.get("GLEAK_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "gleak_edu"


def _package_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:  # pragma: no cover - not installed as a distribution
        module = __import__(name)
        return str(getattr(module, "__version__", "unknown"))


def code_fingerprint() -> str:
    """SHA-256 (first 16 hex digits) of every source file of the installed gleak_edu package.

    Part of every cell's key: an edited attack or defense invalidates the
    cached numbers it produced, even when the version number did not change.
    """
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def versions() -> dict:
    """What invalidates cached numbers besides the settings: gleak_edu's version and source code, torch, opacus.

    torch without its build tag; read from the installed distributions'
    metadata, so opacus (slow to import) is not imported.
    """
    import gleak_edu

    return {
        "gleak_edu": gleak_edu.__version__,
        "code": code_fingerprint(),
        "torch": _package_version("torch").split("+")[0],
        "opacus": _package_version("opacus"),
    }


def finite(obj):
    """``obj`` made JSON-safe: nan becomes None, +/-inf the strings "inf"/"-inf" (recursively through dicts, lists, tuples)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def number(v) -> float:
    """The inverse of :func:`finite` for one number: None -> nan, "inf" -> inf, else float(v)."""
    if v is None:
        return math.nan
    return float(v)  # float("inf") parses the "inf" strings written by finite()


def cell_key(spec: dict) -> str:
    """SHA-256 (hex) of ``spec`` written as sorted JSON: equal specs, equal keys."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def read_cell(path: Path, key: str, validate: Callable[[dict], None], *, stacklevel: int = 3) -> dict | None:
    """The cached result in ``path`` if it is this cell's, else None.

    Args:
        path: the cell's file.
        key: the cell's key (:func:`cell_key`); the file must carry the same.
        validate: called with the stored result; raises ValueError, KeyError
            or TypeError when fields are missing or malformed.
        stacklevel: of the warning (points at the caller's caller by default).

    Returns:
        The stored result dict, or None when the file is missing (quietly),
        unreadable, of another key, or rejected by ``validate`` (with a
        ``UserWarning`` saying it will be recomputed).
    """
    if not path.exists():
        return None
    try:
        content = json.loads(path.read_text())
        if content.get("key") != key:
            raise ValueError("key mismatch")
        result = content["result"]
        validate(result)
        return result
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError, OSError) as exc:
        warnings.warn(f"cache file {path} is unreadable or stale ({exc}); recomputing it", stacklevel=stacklevel)
        return None


def write_cell(path: Path, key: str, spec: dict, result: dict) -> None:
    """Write ``{"key", "settings": spec, "result"}`` to ``path`` atomically (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"key": key, "settings": spec, "result": finite(result)}))
    os.replace(tmp, path)
