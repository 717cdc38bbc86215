"""The disk cache shared by the course's cached experiments (:mod:`gleak_edu.sweeps`, :mod:`gleak_edu.arena`).

One JSON file per cell of an experiment grid, named ``<experiment>-<24 hex>.json``
(:data:`EXPERIMENTS`: "arena", "ppp"). A cell's key is the SHA-256 of a JSON
description of everything the cell's numbers depend on (its settings, its
position in the grid, the versions of gleak_edu, torch and opacus, and a
fingerprint of gleak_edu's source code); the file stores the key next to the
result.

Nothing in the folder is trusted:

- **Schema.** A cell is used only when its key matches and its result
  validates against the experiment's schema (types, ranges, list lengths;
  built from the pieces below: :class:`Number`, :class:`Flag`, :class:`Null`, :class:`Text`,
  :class:`ListOf`, :class:`Record`, :class:`Array`, next to each experiment's
  cell). Anything else (unreadable, not JSON, nested too deeply, not a regular
  file, larger than :data:`MAX_CELL_BYTES`, another key, a value out of range)
  is reported with a ``UserWarning`` naming the file and recomputed, and the
  file is overwritten. No content, however malformed, raises.
- **An unusable folder is found at start** (:func:`open_cache`), before any
  cell is computed: a file in place of the folder, a path under a regular
  file, a folder that cannot be created or written. The run then warns once
  and goes on without writing the cache (it still reads the cells of a folder
  it can read but not write, e.g. a read-only copy on a lab share); every
  result is computed and returned as usual. A write that fails later (disk
  full) warns once and stops writing; the run's results are kept.
- **Atomic writes.** A temporary file in the same folder, then a rename; a
  failed write removes its temporary. Temporaries older than
  :data:`TMP_MAX_AGE_S` (one hour: no write takes that long) are orphans of a
  killed process and are removed when a run opens the folder.
- **A size bound.** After a run, the least recently used cells (by
  modification time; a cell read from the cache is touched) are removed until
  the folder holds at most ``$GLEAK_CACHE_MAX_MB`` megabytes (default
  :data:`DEFAULT_MAX_MB`) and ``$GLEAK_CACHE_MAX_FILES`` cells (default
  :data:`DEFAULT_MAX_FILES`); ``none`` lifts a bound. The run's own cells are
  never evicted by that run, so a folder exceeds the bound by at most one
  run's cells. :func:`clear_cache` empties it, :func:`cache_info` measures it.

Only files named like the cache's own (cells and temporaries of
:data:`EXPERIMENTS`) are ever read, counted or removed: a ``--cache`` folder
that holds other files keeps them.

Nothing here imports a heavy package: a warm run reads its cells in well
under a second.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import stat
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

__all__ = [
    "DEFAULT_MAX_FILES",
    "DEFAULT_MAX_MB",
    "EXPERIMENTS",
    "MAX_CELL_BYTES",
    "TMP_MAX_AGE_S",
    "Array",
    "CellError",
    "CellStore",
    "Flag",
    "ListOf",
    "Null",
    "Number",
    "Record",
    "Removed",
    "Text",
    "cache_info",
    "cache_limits",
    "cell_key",
    "clear_cache",
    "code_fingerprint",
    "default_cache_dir",
    "enforce_limits",
    "finite",
    "number",
    "open_cache",
    "read_cell",
    "remove_orphans",
    "versions",
    "write_cell",
]

EXPERIMENTS = ("arena", "ppp")  # the file-name prefixes of the cached experiments
MAX_CELL_BYTES = 256 * 2**20  # a larger file is not parsed (a cell at the default settings is about 0.1 MB)
TMP_MAX_AGE_S = 3600.0  # a temporary older than this is an orphan of a killed write
DEFAULT_MAX_MB = 512.0  # thousands of default cells; all the course's default grids together are about 60
DEFAULT_MAX_FILES = 20_000

_CELL_RE = re.compile(r"^(?P<experiment>%s)-[0-9a-f]{24}\.json$" % "|".join(EXPERIMENTS))
# temporaries: this module's "<cell>.json.<random>.tmp", the older "<cell stem>.tmp<pid>", and the write probe
_TMP_RE = re.compile(
    r"^(?:(?P<experiment>%s)-[0-9a-f]{24}(?:\.json\.[A-Za-z0-9_]+\.tmp|\.tmp\d+)|\.gleak-probe-[A-Za-z0-9_]+\.tmp)$"
    % "|".join(EXPERIMENTS)
)


def default_cache_dir() -> Path:
    """``$GLEAK_CACHE`` if set, else ``~/.cache/gleak_edu`` (a folder in the temporary directory when there is no home)."""
    env = os.environ.get("GLEAK_CACHE")
    if env:
        return Path(env).expanduser()
    try:
        return Path.home() / ".cache" / "gleak_edu"
    except RuntimeError:  # no HOME and no password entry (some containers)
        return Path(tempfile.gettempdir()) / "gleak_edu-cache"


def _package_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:  # pragma: no cover - not installed as a distribution
        module = __import__(name)
        return str(getattr(module, "__version__", "unknown"))


#: Top-level parts of the package that draw, explain or parse but compute no cached number.
PRESENTATION = frozenset({"viz", "widgets.py", "exercises", "figures.py", "cli.py", "badges.py", "__main__.py"})


def code_fingerprint() -> str:
    """SHA-256 (first 16 hex digits) of every source file of gleak_edu that computes a cached number.

    Part of every cell's key: an edited attack or defense invalidates the
    cached numbers it produced, even when the version number did not change.
    The presentation layers (:data:`PRESENTATION`: figures, widgets, exercises,
    the command line) compute no cached number and are left out, so editing
    a figure or an exercise keeps the cache.
    """
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).parts[0] in PRESENTATION:
            continue
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


# --------------------------------------------------------------------------- schemas


class CellError(ValueError):
    """A cached result that does not match its schema (the message says where and why)."""


def _show(v: Any) -> str:
    """A short description of a value for an error message (never the repr of a container: it may be huge or deep)."""
    if isinstance(v, (dict, list)):
        return f"a {'dict' if isinstance(v, dict) else 'list'} of {len(v)}"
    if isinstance(v, str):
        return repr(v[:20] + "..." if len(v) > 20 else v)
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10**12:
        return "a huge integer"
    return repr(v)


class Number:
    """A number in [lo, hi] (bools are not numbers).

    Args:
        lo, hi: the closed range.
        null: None (how :func:`finite` writes nan) is allowed too.
        inf: an infinite bound may be reached: float inf and the strings
            "inf"/"-inf" that :func:`finite` writes are allowed where the range
            is unbounded on that side. Without it the number must be finite.
        integer: a whole number (JSON integer), not a float.
    """

    def __init__(self, lo: float = -math.inf, hi: float = math.inf, *, null: bool = False, inf: bool = False,
                 integer: bool = False) -> None:
        self.lo, self.hi, self.null, self.inf, self.integer = lo, hi, null, inf, integer

    def check(self, v: Any, where: str) -> None:
        if v is None:
            if self.null:
                return
            raise CellError(f"{where} is null")
        if isinstance(v, str) and self.inf and v in ("inf", "-inf"):
            v = math.inf if v == "inf" else -math.inf
        t = type(v)
        if self.integer:
            if t is not int:
                raise CellError(f"{where} is {_show(v)}, not a whole number")
        elif t is not float and t is not int:
            raise CellError(f"{where} is {_show(v)}, not a number")
        if t is float and not (math.isfinite(v) or (self.inf and not math.isnan(v))):
            raise CellError(f"{where} is {v}, not a finite number")
        if not self.lo <= v <= self.hi:
            raise CellError(f"{where} is {_show(v)}, not in [{self.lo:g}, {self.hi:g}]")


class Null:
    """None (JSON null) only: a field the cell leaves empty by design."""

    def check(self, v: Any, where: str) -> None:
        if v is not None:
            raise CellError(f"{where} is {_show(v)}, not null")


class Flag:
    """true or false (or None with ``null``)."""

    def __init__(self, *, null: bool = False) -> None:
        self.null = null

    def check(self, v: Any, where: str) -> None:
        if type(v) is not bool and not (v is None and self.null):
            raise CellError(f"{where} is {_show(v)}, not true or false")


class Text:
    """A string of at most ``max_chars`` characters."""

    def __init__(self, max_chars: int = 10_000) -> None:
        self.max_chars = max_chars

    def check(self, v: Any, where: str) -> None:
        if not isinstance(v, str):
            raise CellError(f"{where} is {_show(v)}, not a string")
        if len(v) > self.max_chars:
            raise CellError(f"{where} is a string of {len(v)} characters, more than {self.max_chars}")


class ListOf:
    """A list (of ``length`` items when given), each matching ``item`` (None with ``null``)."""

    def __init__(self, item, length: int | None = None, *, null: bool = False) -> None:
        self.item, self.length, self.null = item, length, null

    def check(self, v: Any, where: str) -> None:
        if v is None and self.null:
            return
        if not isinstance(v, list):
            raise CellError(f"{where} is {_show(v)}, not a list")
        if self.length is not None and len(v) != self.length:
            raise CellError(f"{where} has {len(v)} items, not {self.length}")
        for i, x in enumerate(v):
            self.item.check(x, f"{where}[{i}]")


class Record:
    """A dict with these fields, each matching its schema; other fields are ignored unless ``exact``."""

    def __init__(self, fields: dict, *, exact: bool = False, null: bool = False) -> None:
        self.fields, self.exact, self.null = fields, exact, null

    def check(self, v: Any, where: str) -> None:
        if v is None and self.null:
            return
        if not isinstance(v, dict):
            raise CellError(f"{where} is {_show(v)}, not a dict")
        missing = [k for k in self.fields if k not in v]
        if missing:
            raise CellError(f"{where} lacks {', '.join(missing)}")
        if self.exact and len(v) != len(self.fields):
            extra = sorted(k for k in v if k not in self.fields)[:5]
            raise CellError(f"{where} has unexpected fields {', '.join(map(repr, extra))}")
        for k, schema in self.fields.items():
            schema.check(v[k], f"{where}.{k}")


class Array:
    """Nested lists of exactly ``shape`` holding numbers in [lo, hi] (an image ``[C][H][W]``, a batch of them)."""

    def __init__(self, shape: Iterable[int], lo: float = -math.inf, hi: float = math.inf) -> None:
        self.shape, self.lo, self.hi = tuple(int(s) for s in shape), lo, hi

    def check(self, v: Any, where: str) -> None:
        self._check(v, 0, where)

    def _check(self, v: Any, dim: int, where: str) -> None:
        n = self.shape[dim]
        if not isinstance(v, list) or len(v) != n:
            what = f"a list of {len(v)}" if isinstance(v, list) else _show(v)
            raise CellError(f"{where} is {what}, not a list of {n} (shape {list(self.shape)})")
        if dim + 1 < len(self.shape):
            for i, x in enumerate(v):
                self._check(x, dim + 1, f"{where}[{i}]")
            return
        lo, hi = self.lo, self.hi
        for i, x in enumerate(v):
            t = type(x)
            if (t is not float and t is not int) or not lo <= x <= hi:  # nan fails the comparison
                raise CellError(f"{where}[{i}] is {_show(x)}, not a number in [{lo:g}, {hi:g}]")


def _validator(validate) -> Callable[[Any], None]:
    """A schema (anything with ``check(value, where)``) or a callable raising on a bad result, as a callable."""
    if hasattr(validate, "check"):
        return lambda result: validate.check(result, "result")
    return validate


# --------------------------------------------------------------------------- one cell


def read_cell(path: Path, key: str, validate, *, stacklevel: int = 3) -> dict | None:
    """The cached result in ``path`` if it is this cell's and valid, else None. Never raises for the file's content.

    Args:
        path: the cell's file.
        key: the cell's key (:func:`cell_key`); the file must carry the same.
        validate: the result's schema (e.g. a :class:`Record`), or a callable
            that raises (any ``Exception``) when the result is malformed.
        stacklevel: of the warning (points at the caller's caller by default).

    Returns:
        The stored result dict, or None when the file is missing (quietly), or
        when it is not a regular file, too large, unreadable, not JSON, of
        another key, or rejected by ``validate`` (with a ``UserWarning`` that
        names the file and says it will be recomputed).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:  # e.g. a path under a regular file, permission denied
        warnings.warn(f"cache file {path} cannot be read ({exc.strerror or exc}); recomputing it", stacklevel=stacklevel)
        return None
    try:
        if not stat.S_ISREG(st.st_mode):
            raise CellError("not a regular file")
        if st.st_size > MAX_CELL_BYTES:
            raise CellError(f"{st.st_size} bytes, more than {MAX_CELL_BYTES}")
        content = json.loads(Path(path).read_bytes())
        if not isinstance(content, dict):
            raise CellError(f"the file holds {_show(content)}, not a dict")
        if content.get("key") != key:
            raise CellError("key mismatch: another cell's file, or written by other settings")
        if "result" not in content:
            raise CellError("no result")
        result = content["result"]
        if not isinstance(result, dict):
            raise CellError(f"result is {_show(result)}, not a dict")
        _validator(validate)(result)
    except RecursionError:
        warnings.warn(f"cache file {path} is invalid (nested too deeply); recomputing it", stacklevel=stacklevel)
        return None
    except MemoryError:
        warnings.warn(f"cache file {path} is invalid (too large to read); recomputing it", stacklevel=stacklevel)
        return None
    except Exception as exc:  # noqa: BLE001 - no cache content may crash the run: warn, recompute
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        if isinstance(exc, UnicodeDecodeError):
            reason = "not UTF-8 text"
        elif isinstance(exc, json.JSONDecodeError):
            reason = f"not JSON: {exc.msg} at line {exc.lineno}"
        warnings.warn(f"cache file {path} is invalid ({reason}); recomputing it", stacklevel=stacklevel)
        return None
    return result


def write_cell(path: Path, key: str, spec: dict, result: dict) -> None:
    """Write ``{"key", "settings": spec, "result"}`` to ``path`` atomically (a temporary file, then a rename).

    The temporary (``<file>.<random>.tmp`` in the same folder) is removed when
    anything fails, and the error re-raised (OSError for the file system).
    """
    path = Path(path)
    text = json.dumps({"key": key, "settings": spec, "result": finite(result)})  # before any file exists
    path.parent.mkdir(parents=True, exist_ok=True)
    # not tempfile.mkstemp: its files are private (0600), and a cache folder is copied to lab machines
    tmp = path.parent / f"{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for any file
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# --------------------------------------------------------------------------- the folder


def _matching(root: Path, pattern: re.Pattern, keep: Callable[[re.Match, os.stat_result], bool]) -> list[tuple[Path, os.stat_result]]:
    """The entries of ``root`` whose name matches ``pattern`` and that ``keep`` accepts, with their stats; [] when unreadable."""
    out = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return out
    for e in entries:
        m = pattern.match(e.name)
        if m is None:
            continue
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if keep(m, st):
            out.append((Path(e.path), st))
    return out


def _cells(root: Path, experiment: str | None = None) -> list[tuple[Path, os.stat_result]]:
    """The cache's cell files in ``root`` (of one experiment, or all) with their stats; [] when unreadable."""
    return _matching(root, _CELL_RE, lambda m, st: (experiment is None or m["experiment"] == experiment)
                     and (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)))


def _temporaries(root: Path, experiment: str | None = None) -> list[tuple[Path, os.stat_result]]:
    """The temporaries of interrupted writes in ``root`` (of one experiment, or all), folders excluded."""
    return _matching(root, _TMP_RE, lambda m, st: (experiment is None or m["experiment"] in (None, experiment))
                     and not stat.S_ISDIR(st.st_mode))


def _check_experiment(experiment: str | None) -> None:
    if experiment is not None and experiment not in EXPERIMENTS:
        raise ValueError(f"experiment must be one of {EXPERIMENTS} (or None for all), got {experiment!r}")


def _inspect(root: Path, *, create: bool) -> tuple[bool, bool, str]:
    """(readable, writable, why not) of a cache folder; creates it (and its parents) when ``create``.

    Writability is probed by creating and removing a file, which is what
    counts (permissions, read-only mounts, and root's exemption from modes).
    """
    try:
        st = os.stat(root)
    except FileNotFoundError:
        if not create:
            return False, False, "does not exist"
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if isinstance(exc, (NotADirectoryError, FileExistsError)):
                return False, False, "cannot be created: a regular file is in the way"
            return False, False, f"cannot be created ({exc.strerror or exc})"
        st = os.stat(root)
    except NotADirectoryError:
        return False, False, "is under a regular file, not a folder"
    except OSError as exc:
        return False, False, f"cannot be reached ({exc.strerror or exc})"
    if not stat.S_ISDIR(st.st_mode):
        return False, False, "is a file, not a folder"
    try:
        os.scandir(root).close()
        readable = True
    except OSError:
        readable = False
    try:
        fd, probe = tempfile.mkstemp(dir=root, prefix=".gleak-probe-", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return readable, False, f"is not writable ({exc.strerror or exc})"
    if not readable:
        return False, True, "is not readable"
    return True, True, ""


def cache_limits() -> tuple[float, float]:
    """The automatic bound: ``(max_bytes, max_files)`` from ``$GLEAK_CACHE_MAX_MB`` and ``$GLEAK_CACHE_MAX_FILES``.

    Defaults :data:`DEFAULT_MAX_MB` MB (2**20 bytes) and :data:`DEFAULT_MAX_FILES`
    cells; ``none`` (or ``inf``) lifts a bound; a value that is not a number
    >= 0 is ignored with a warning.
    """
    out = []
    for name, default, scale in (("GLEAK_CACHE_MAX_MB", DEFAULT_MAX_MB, 2**20), ("GLEAK_CACHE_MAX_FILES", DEFAULT_MAX_FILES, 1)):
        raw = os.environ.get(name, "").strip()
        value = float(default)
        if raw.lower() in ("none", "inf", "unlimited"):
            value = math.inf
        elif raw:
            try:
                value = float(raw)
                if math.isnan(value) or value < 0:
                    raise ValueError
            except ValueError:
                warnings.warn(f"${name}={raw!r} is not a number >= 0 (or 'none'); using {default:g}", stacklevel=3)
                value = float(default)
        out.append(value * scale)
    return out[0], out[1]


class Removed(NamedTuple):
    """What a clean-up removed: ``files`` and their total ``bytes``."""

    files: int
    bytes: int


def _remove(items: Iterable[tuple[Path, os.stat_result]]) -> Removed:
    files = size = 0
    for path, st in items:
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError:
            continue
        files += 1
        size += st.st_size
    return Removed(files, size)


def remove_orphans(cache_dir: str | Path | None = None, max_age_s: float = TMP_MAX_AGE_S) -> Removed:
    """Remove the cache's temporary files older than ``max_age_s`` seconds (orphans of killed writes)."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    now = time.time()
    return _remove((p, st) for p, st in _temporaries(root) if now - st.st_mtime > max_age_s)


def enforce_limits(cache_dir: str | Path | None = None, max_bytes: float | None = None, max_files: float | None = None,
                   keep: Iterable[str | Path] = ()) -> Removed:
    """Remove the least recently used cells until the folder is within the bound.

    Args:
        cache_dir: the folder (default :func:`default_cache_dir`).
        max_bytes, max_files: the bound (default :func:`cache_limits`, the environment's).
        keep: cells never removed (a run's own).

    Returns:
        :class:`Removed`: how many cells and bytes were evicted. Cells are
        ordered by modification time (a read touches its cell), oldest first.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if max_bytes is None or max_files is None:
        env_bytes, env_files = cache_limits()
        max_bytes = env_bytes if max_bytes is None else max_bytes
        max_files = env_files if max_files is None else max_files
    cells = _cells(root)
    total, count = sum(st.st_size for _, st in cells), len(cells)
    if total <= max_bytes and count <= max_files:
        return Removed(0, 0)
    protected = {os.path.abspath(p) for p in keep}
    evict = []
    for path, st in sorted(cells, key=lambda c: (c[1].st_mtime, c[0].name)):
        if total <= max_bytes and count <= max_files:
            break
        if os.path.abspath(path) in protected:
            continue
        evict.append((path, st))
        total -= st.st_size
        count -= 1
    return _remove(evict)


def clear_cache(cache_dir: str | Path | None = None, experiment: str | None = None) -> Removed:
    """Remove the cached cells (and temporaries) of one experiment or all.

    Only the cache's own files are touched (``arena-*.json``, ``ppp-*.json``
    and their temporaries); other files in the folder, and the folder itself,
    stay.

    Args:
        cache_dir: the folder (default ``$GLEAK_CACHE`` or ``~/.cache/gleak_edu``).
        experiment: one of :data:`EXPERIMENTS` ("arena", "ppp"), or None for all.

    Returns:
        :class:`Removed` ``(files, bytes)``: what was removed (0, 0 for a
        folder that does not exist). Files that could not be removed are
        left and not counted.

    Raises:
        ValueError: for an unknown experiment.
        NotADirectoryError: when the path exists and is not a folder.
    """
    _check_experiment(experiment)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"cache folder {root} is not a folder")
    if not root.exists():
        return Removed(0, 0)
    cells = _remove(_cells(root, experiment))
    tmps = _remove(_temporaries(root, experiment))
    return Removed(cells.files + tmps.files, cells.bytes + tmps.bytes)


def cache_info(cache_dir: str | Path | None = None) -> dict:
    """What the cache folder holds; creates nothing.

    Args:
        cache_dir: the folder (default ``$GLEAK_CACHE`` or ``~/.cache/gleak_edu``).

    Returns:
        dict: ``path`` (str), ``status`` ("ok", "missing", "read-only", or why
        it is unusable, e.g. "is a file, not a folder"), ``files`` and
        ``bytes`` (cells of every experiment), ``experiments``
        (``{name: {"files", "bytes"}}`` for each of :data:`EXPERIMENTS`),
        ``temporaries`` (count of temporary files), ``max_bytes`` and
        ``max_files`` (the automatic bound, None when lifted), ``oldest`` and
        ``newest`` (modification times of cells, Unix seconds, None when empty).
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    readable, writable, why = _inspect(root, create=False)
    if why == "does not exist":
        status = "missing"
    elif readable and not writable:
        status = "read-only"
    else:
        status = why or "ok"
    cells = _cells(root) if readable else []
    per = {name: {"files": 0, "bytes": 0} for name in EXPERIMENTS}
    for path, st in cells:
        e = per[_CELL_RE.match(path.name)["experiment"]]
        e["files"] += 1
        e["bytes"] += st.st_size
    max_bytes, max_files = cache_limits()
    times = [st.st_mtime for _, st in cells]
    return {
        "path": str(root), "status": status,
        "files": len(cells), "bytes": sum(st.st_size for _, st in cells), "experiments": per,
        "temporaries": len(_temporaries(root)) if readable else 0,
        "max_bytes": None if math.isinf(max_bytes) else int(max_bytes),
        "max_files": None if math.isinf(max_files) else int(max_files),
        "oldest": min(times) if times else None, "newest": max(times) if times else None,
    }


class CellStore:
    """One run's view of a cache folder (made by :func:`open_cache`): read, write, then :meth:`close`.

    Attributes:
        root: the folder.
        experiment: the file-name prefix of this run's cells.
        readable, writable: what the run may do with the folder (both False
            when it is unusable; the run then computes every cell).
    """

    def __init__(self, root: Path, experiment: str, readable: bool, writable: bool) -> None:
        _check_experiment(experiment)
        self.root, self.experiment = root, experiment
        self.readable, self.writable = readable, writable
        self._used: set[str] = set()

    def path(self, key: str) -> Path:
        """The file of the cell with this key."""
        return self.root / f"{self.experiment}-{key[:24]}.json"

    def read(self, key: str, validate, *, stacklevel: int = 3) -> dict | None:
        """The valid cached result of this cell, or None (see :func:`read_cell`); touches the file (LRU)."""
        path = self.path(key)
        self._used.add(os.path.abspath(path))
        if not self.readable:
            return None
        result = read_cell(path, key, validate, stacklevel=stacklevel + 1)
        if result is not None and self.writable:
            try:
                os.utime(path)
            except OSError:
                pass
        return result

    def write(self, key: str, spec: dict, result: dict, *, stacklevel: int = 3) -> bool:
        """Store a computed cell; False when the cache is not written (unusable, or a failed write: warned once)."""
        path = self.path(key)
        self._used.add(os.path.abspath(path))
        if not self.writable:
            return False
        try:
            write_cell(path, key, spec, result)
        except OSError as exc:
            self.writable = False
            warnings.warn(
                f"cannot write the cache file {path} ({exc.strerror or exc}); this run's remaining cells are "
                "computed but not cached", stacklevel=stacklevel,
            )
            return False
        return True

    def close(self) -> Removed:
        """Apply the size bound (:func:`enforce_limits`), sparing this run's cells; never raises."""
        if not self.writable:
            return Removed(0, 0)
        try:
            return enforce_limits(self.root, keep=self._used)
        except OSError:  # pragma: no cover - the folder vanished under us
            return Removed(0, 0)


def open_cache(cache_dir: str | Path | None, experiment: str, *, stacklevel: int = 3) -> CellStore:
    """Open a cache folder for one run, before any cell is computed.

    Creates the folder if needed and removes orphaned temporaries. A folder
    that cannot be used (a file in its place, a path under a regular file,
    not creatable, not writable) gives one ``UserWarning`` naming it, and a
    store that does not write (and reads only a readable folder): the run
    computes what it cannot load and returns it as usual.

    Args:
        cache_dir: the folder (None: :func:`default_cache_dir`).
        experiment: one of :data:`EXPERIMENTS`.
        stacklevel: of the warning.

    Raises:
        ValueError: for an unknown experiment.
    """
    _check_experiment(experiment)
    if isinstance(cache_dir, str) and not cache_dir.strip():
        warnings.warn("the cache folder is an empty path: running without a cache (results are computed and "
                      "returned, not saved)", stacklevel=stacklevel)
        return CellStore(Path(), experiment, readable=False, writable=False)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    readable, writable, why = _inspect(root, create=True)
    if not writable:
        what = "reading the cells it has, writing none" if readable else "running without a cache"
        warnings.warn(
            f"cache folder {root} {why}: {what} (results are computed and returned, not saved); "
            "choose another with cache_dir= / --cache DIR or $GLEAK_CACHE", stacklevel=stacklevel,
        )
    else:
        remove_orphans(root)
    return CellStore(root, experiment, readable, writable)
