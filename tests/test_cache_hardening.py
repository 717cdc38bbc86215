"""The experiment cache trusts nothing: schemas, unusable folders, temporaries, clearing, the size bound.

Every cell is computed by a fake (monkeypatched) function that returns a valid
cell instantly and counts its calls, so these tests take seconds: they test
the cache, not the science (tests/test_arena.py and tests/test_sweeps.py run
real cells).
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings

import pytest
import torch

from gleak_edu import _cache, arena, sweeps
from gleak_edu.arena import grid
from gleak_edu.attacks import ATTACKS as REGISTRY

IMG = [[[0.5] * 28 for _ in range(28)]]
ARENA = dict(noise_levels=(0.5,), seeds=(0,), images=2)
N_ARENA = 7  # none, noise, pruning, PRECODE, PPP, DP fixed, DP dynamic at one level
SWEEP = dict(noise_levels=(0.5,), seeds=(0,), images=2)
N_SWEEP = 4  # none, PRECODE, full, PPP


def fake_arena_cell(settings, defense, level, seed, data=None):
    n = settings.images
    attacks = {a: {"ssim": [0.7] * n, "psnr": [20.0] * n,
                   "label_correct": [True] * n if REGISTRY[a].recovers_labels else None,
                   "seconds": [0.1] * n, "errors": [""] * n, "reconstructions": [IMG] * n}
               for a in arena.possible_attacks(defense)}
    multiplier = arena.DEFENSE_LEVEL[defense] == "noise_multiplier"
    return {"accuracy": 0.9, "epsilon": 2.0 if defense in ("dp_fixed", "dp_dynamic") else None, "diverged": False,
            "train_seconds": 1.0, "steps": 5, "attacked_noise_multiplier": float(level) if multiplier else None,
            "attacked_noise_std": arena.attacked_noise_std(settings, defense, level),
            "truth": [IMG] * n, "labels": [3] * n, "attacks": attacks,
            "snr": [{"gradient_norm": 2.0, "signal_norm": 1.0, "noise_norm": 0.5 if defense in arena.NOISY else 0.0,
                     "snr": 2.0 if defense in arena.NOISY else None, "cosine": 1.0, "entries": 100}] * n}


def fake_sweep_cell(settings, defense, noise_multiplier, seed, data=None):
    n = settings.images
    attack = {"ssim": [0.7] * n, "psnr": [20.0] * n, "reconstructions": [IMG] * n}
    return {"accuracy": 0.9, "epsilon": None if defense in ("none", "precode") else 3.0, "diverged": False,
            "train_seconds": 1.0, "steps": 5, "attacks": {"bypass": dict(attack), "ig": dict(attack)}}


@pytest.fixture
def fake(monkeypatch):
    """Fake cell computations for both experiments; ``calls`` lists every computed cell, in order."""
    calls: list = []

    def arena_cell(*args, **kwargs):
        calls.append(("arena",) + args[1:4])
        return fake_arena_cell(*args, **kwargs)

    def sweep_cell(*args, **kwargs):
        calls.append(("ppp",) + args[1:4])
        return fake_sweep_cell(*args, **kwargs)

    # fixed versions: a key that does not change when someone edits the package while the tests run
    fixed = {"gleak_edu": "test", "code": "0" * 16, "torch": "x", "opacus": "y"}
    monkeypatch.setattr(grid, "versions", lambda: fixed)
    monkeypatch.setattr(sweeps, "_versions", lambda: fixed)
    monkeypatch.setattr(grid, "arena_cell", arena_cell)
    monkeypatch.setattr(grid, "_data", lambda settings: None)
    monkeypatch.setattr(sweeps, "sweep_cell", sweep_cell)
    import gleak_edu.data
    import gleak_edu.training

    x = torch.zeros(4, 1, 28, 28)
    y = torch.zeros(4, dtype=torch.int64)
    monkeypatch.setattr(gleak_edu.data, "mnist_subset", lambda: None)
    monkeypatch.setattr(gleak_edu.training, "split", lambda *a, **k: ((x, y), (x, y)))
    for name in ("GLEAK_CACHE_MAX_MB", "GLEAK_CACHE_MAX_FILES"):
        monkeypatch.delenv(name, raising=False)
    return calls


def run(experiment: str, cache_dir, **kw):
    if experiment == "arena":
        return arena.arena(cache_dir=cache_dir, **{**ARENA, **kw})
    return sweeps.ppp_sweep(cache_dir=cache_dir, **{**SWEEP, **kw})


def cell_path(experiment: str, root, defense: str):
    """The file of the first cell of ``defense`` (level of the grid, seed 0)."""
    if experiment == "arena":
        settings = arena.ArenaSettings(**ARENA)
        level = 0.5 if defense in arena.NOISY else 0.9 if defense == "pruning" else 0.0
        return root / f"arena-{_cache.cell_key(grid.cell_spec(settings, defense, level, 0))[:24]}.json"
    key, _ = sweeps._cell_key(sweeps.PPPSweepSettings(**SWEEP), defense, 0.5 if defense in ("full", "ppp") else 0.0, 0)
    return root / f"ppp-{key[:24]}.json"


N = {"arena": N_ARENA, "ppp": N_SWEEP}
DEFENSE = {"arena": "dp_fixed", "ppp": "ppp"}  # the cell that gets damaged


def test_valid_cells_are_reused(fake, tmp_path):
    for exp in ("arena", "ppp"):
        first = run(exp, tmp_path)
        assert first.computed == N[exp]
        again = run(exp, tmp_path)
        assert again.cached == N[exp] and again.computed == 0
    assert len(fake) == N_ARENA + N_SWEEP
    umask = os.umask(0)
    os.umask(umask)
    for p in tmp_path.iterdir():  # readable by others as any file is (a cache is copied to lab machines)
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask


# --------------------------------------------------------------------------- schema: wrong values


def _set_ssim(value):
    def damage(result, exp):
        result["attacks"]["ig"]["ssim"] = value
    return damage


WRONG_VALUES = {
    "accuracy 5.0": lambda r, exp: r.update(accuracy=5.0),
    "ssim []": _set_ssim([]),
    "ssim 1.5": _set_ssim([1.5, 0.2]),
    "accuracy -0.1": lambda r, exp: r.update(accuracy=-0.1),
    "epsilon negative": lambda r, exp: r.update(epsilon=-1.0),
    "steps fractional": lambda r, exp: r.update(steps=2.5),
    "psnr inf": lambda r, exp: r["attacks"]["ig"].update(psnr=["inf", 20.0]),
    "reconstruction out of [0, 1]": lambda r, exp: r["attacks"]["ig"].update(reconstructions=[[[[2.0] * 28] * 28]] * 2),
    "reconstruction ragged": lambda r, exp: r["attacks"]["ig"].update(reconstructions=[[[[0.5] * 27] * 28]] * 2),
    "an extra attack": lambda r, exp: r["attacks"].update(extra=r["attacks"]["ig"]),
}
ARENA_WRONG_VALUES = {  # the arena's own fields (the damaged cell is DP fixed's)
    "attacked_noise_multiplier null": lambda r: r.update(attacked_noise_multiplier=None),
    "snr negative": lambda r: r.update(snr=[{**r["snr"][0], "snr": -1.0}] + r["snr"][1:]),
    "snr missing": lambda r: r.pop("snr"),
    "attacked_noise_multiplier negative": lambda r: r.update(attacked_noise_multiplier=-0.5),
    "attacked_noise_std null": lambda r: r.update(attacked_noise_std=None),
    "the old attacked_sigma": lambda r: r.update(attacked_sigma=r.pop("attacked_noise_multiplier")),
}


@pytest.mark.parametrize("exp", ["arena", "ppp"])
@pytest.mark.parametrize("damage", list(WRONG_VALUES))
def test_a_cell_with_wrong_values_is_recomputed_and_rewritten(fake, tmp_path, exp, damage):
    first = run(exp, tmp_path)
    path = cell_path(exp, tmp_path, DEFENSE[exp])
    content = json.loads(path.read_text())
    WRONG_VALUES[damage](content["result"], exp)
    path.write_text(json.dumps(content))  # valid JSON, the right key
    fake.clear()
    with pytest.warns(UserWarning, match=re.escape(str(path)) + ".*recomputing"):
        result = run(exp, tmp_path)
    assert result.computed == 1 and result.cached == N[exp] - 1 and len(fake) == 1
    assert result.rows == first.rows  # the table is right, not built from the damaged file
    rewritten = json.loads(path.read_text())["result"]
    assert rewritten["accuracy"] == 0.9 and rewritten["attacks"]["ig"]["ssim"] == [0.7, 0.7]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert run(exp, tmp_path).cached == N[exp]  # repaired: no warning the next time


@pytest.mark.parametrize("damage", list(ARENA_WRONG_VALUES))
def test_an_arena_cell_with_wrong_noise_fields_is_recomputed(fake, tmp_path, damage):
    first = run("arena", tmp_path)
    path = cell_path("arena", tmp_path, "dp_fixed")
    content = json.loads(path.read_text())
    ARENA_WRONG_VALUES[damage](content["result"])
    path.write_text(json.dumps(content))
    fake.clear()
    with pytest.warns(UserWarning, match=re.escape(str(path)) + ".*recomputing"):
        result = run("arena", tmp_path)
    assert result.computed == 1 and len(fake) == 1 and result.rows == first.rows
    assert json.loads(path.read_text())["result"]["attacked_noise_multiplier"] == 0.5


def test_an_old_format_cell_is_recomputed(fake, tmp_path, monkeypatch):
    """Cells of the previous format (attacked_sigma, clip) sit under other keys: never read, all recomputed."""
    current = grid.CELL_FORMAT
    monkeypatch.setattr(grid, "CELL_FORMAT", current - 1)
    run("arena", tmp_path)
    monkeypatch.setattr(grid, "CELL_FORMAT", current)
    fake.clear()
    result = run("arena", tmp_path)
    assert result.computed == N_ARENA and result.cached == 0 and len(fake) == N_ARENA


def test_arena_cell_fields_depend_on_the_defense(fake, tmp_path):
    """epsilon only for DP; label_correct null for analytic and bools elsewhere; labels are digits."""
    run("arena", tmp_path)
    for defense, change in [
        ("none", {"epsilon": 1.0}),
        ("pruning", {"labels": [3, 10]}),
        ("dp_fixed", {"epsilon": "inf"}),  # allowed: a DP epsilon may be infinite
        ("noise", {"attacked_noise_multiplier": 0.5}),  # an absolute noise std has no multiplier
        ("dp_dynamic", {"attacked_noise_std": 0.2}),  # its std is per example: null
    ]:
        path = cell_path("arena", tmp_path, defense)
        content = json.loads(path.read_text())
        content["result"].update(change)
        path.write_text(json.dumps(content))
    path = cell_path("arena", tmp_path, "precode")
    content = json.loads(path.read_text())
    content["result"]["attacks"]["analytic"]["label_correct"] = [True, True]
    path.write_text(json.dumps(content))
    fake.clear()
    with pytest.warns(UserWarning, match="recomputing"):
        result = run("arena", tmp_path)
    assert sorted(c[1] for c in fake) == ["dp_dynamic", "noise", "none", "precode", "pruning"]  # not the infinite epsilon
    assert result.computed == 5 and result.cached == N_ARENA - 5


# --------------------------------------------------------------------------- schema: wrong types, malformed files

DEEP = "[" * 200_000 + "]" * 200_000


WRONG_TYPES = {
    "string where number": lambda c: json.dumps({**c, "result": {**c["result"], "accuracy": "0.9"}}),
    "bool where number": lambda c: json.dumps({**c, "result": {**c["result"], "accuracy": True}}),
    "list where dict": lambda c: json.dumps({**c, "result": {**c["result"], "attacks": []}}),
    "dict where list": lambda c: json.dumps({**c, "result": {**c["result"], "attacks": {
        **c["result"]["attacks"], "ig": {**c["result"]["attacks"]["ig"], "ssim": {"a": 1}}}}}),
    "number where dict": lambda c: json.dumps({**c, "result": {**c["result"], "attacks": {"ig": 3}}}),
    "result is a list": lambda c: json.dumps({**c, "result": [1, 2]}),
    "result is null": lambda c: json.dumps({**c, "result": None}),
    "no result": lambda c: json.dumps({"key": c["key"]}),
    "key is a list": lambda c: json.dumps({**c, "key": [c["key"]]}),
    "top level is a list": lambda c: json.dumps([c]),
    "top level is a number": lambda c: "3",
    "deeply nested list": lambda c: '{"key": "%s", "result": {"accuracy": %s}}' % (c["key"], DEEP),
    "deeply nested file": lambda c: DEEP,
    "huge number": lambda c: json.dumps(c).replace('"accuracy": 0.9', '"accuracy": 1e999'),
    "huge integer": lambda c: json.dumps(c).replace('"steps": 5', '"steps": ' + "9" * 5000),
    "big integer": lambda c: json.dumps(c).replace('"steps": 5', '"steps": ' + "9" * 4000),
    "NaN token": lambda c: json.dumps(c).replace('"accuracy": 0.9', '"accuracy": NaN'),
    "not UTF-8": lambda c: b"\xff\xfe\x00garbage",
    "empty": lambda c: "",
}


@pytest.mark.parametrize("exp", ["arena", "ppp"])
@pytest.mark.parametrize("damage", list(WRONG_TYPES))
def test_a_cell_of_wrong_types_is_recomputed_without_a_traceback(fake, tmp_path, exp, damage):
    first = run(exp, tmp_path)
    path = cell_path(exp, tmp_path, DEFENSE[exp])
    text = WRONG_TYPES[damage](json.loads(path.read_text()))
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    fake.clear()
    with pytest.warns(UserWarning, match=re.escape(str(path)) + ".*recomputing"):
        result = run(exp, tmp_path)
    assert result.computed == 1 and len(fake) == 1 and result.rows == first.rows
    assert json.loads(path.read_text())["result"]["accuracy"] == 0.9


@pytest.mark.parametrize("exp", ["arena", "ppp"])
@pytest.mark.parametrize("kind", ["directory", "fifo", "dangling link"])
def test_a_cell_that_is_not_a_file_is_recomputed(fake, tmp_path, exp, kind):
    first = run(exp, tmp_path)
    path = cell_path(exp, tmp_path, DEFENSE[exp])
    path.unlink()
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)  # opening it would block forever
    else:
        path.symlink_to(tmp_path / "nowhere")
    fake.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run(exp, tmp_path)
    assert result.computed == 1 and result.rows == first.rows
    if kind != "dangling link":  # a dangling link is a missing file (quiet); the rename replaces the link
        assert any(str(path) in str(w.message) for w in caught)
    if kind == "directory":  # the write cannot replace a folder: one warning, the result is kept
        assert any("cannot write" in str(w.message) for w in caught)
    assert not list(tmp_path.glob("*.tmp"))


# --------------------------------------------------------------------------- an unusable folder


@pytest.mark.parametrize("exp", ["arena", "ppp"])
@pytest.mark.parametrize("where", ["a file in its place", "a path under a file"])
def test_an_unusable_cache_folder_is_found_before_any_cell_is_computed(fake, tmp_path, exp, where, monkeypatch):
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    cache_dir = blocker if where == "a file in its place" else blocker / "sub" / "dir"
    module, name = (grid, "arena_cell") if exp == "arena" else (sweeps, "sweep_cell")
    compute = getattr(module, name)  # the fixture's fake, which counts
    warned_before_call = []

    def counting(*args, **kwargs):
        warned_before_call.append(len(caught))
        return compute(*args, **kwargs)

    monkeypatch.setattr(module, name, counting)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run(exp, cache_dir)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages  # warned once
    assert str(cache_dir) in messages[0] and "without a cache" in messages[0]
    assert warned_before_call[0] == 1  # the warning came before the first cell was computed
    assert result.computed == N[exp] == len(warned_before_call) == len(fake)  # every cell computed once, none lost
    assert len(result.rows) > 0
    assert blocker.read_text() == "not a folder"  # left alone


def test_an_empty_cache_path_is_not_the_current_folder(fake, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="empty path: running without a cache"):
        assert run("ppp", "").computed == N_SWEEP
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_cannot_be_written_is_read_not_written(fake, tmp_path, monkeypatch):
    """A read-only copy (a lab share): its cells are used, nothing is written, one warning."""
    run("arena", tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    def read_only(*args, **kwargs):  # what creating a file in a read-only folder does (root ignores chmod)
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(_cache.tempfile, "mkstemp", read_only)
    cell_path("arena", tmp_path, "none").unlink()
    del before[cell_path("arena", tmp_path, "none").name]
    fake.clear()
    with pytest.warns(UserWarning, match="is not writable \\(Read-only file system\\): reading the cells it has, writing none"):
        result = run("arena", tmp_path)
    assert result.cached == N_ARENA - 1 and result.computed == 1
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before  # not written, not even touched


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_detected(fake, tmp_path):
    run("ppp", tmp_path)
    os.chmod(tmp_path, 0o555)
    try:
        with pytest.warns(UserWarning, match="not writable"):
            result = run("ppp", tmp_path, noise_levels=(0.7,))
        assert result.computed == 2 and result.cached == 2
    finally:
        os.chmod(tmp_path, 0o755)


def test_a_failed_write_keeps_the_results_and_leaves_no_temporary(fake, tmp_path, monkeypatch):
    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_cache.os, "replace", full_disk)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run("arena", tmp_path)
    assert result.computed == N_ARENA and len(result.rows) == N_ARENA * len(arena.ATTACKS)
    assert [str(w.message) for w in caught if "cannot write" in str(w.message)][0].count("No space") == 1
    assert len(caught) == 1  # warned once, then the run stops writing
    assert list(tmp_path.iterdir()) == []  # no cell, no temporary


def test_an_interrupted_write_removes_its_temporary(tmp_path, monkeypatch):
    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(_cache.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _cache.write_cell(tmp_path / "arena-0123456789abcdef01234567.json", "k", {}, {"a": 1})
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- temporaries


def test_orphaned_temporaries_are_removed_at_start(fake, tmp_path):
    hexkey = "0123456789abcdef01234567"
    old = [f"arena-{hexkey}.json.x1y2z3.tmp", f"ppp-{hexkey}.tmp4242", ".gleak-probe-abc123.tmp"]
    fresh = f"arena-{hexkey}.json.fresh1.tmp"  # maybe another process's write in progress: kept
    foreign = ["notes.tmp", f"other-{hexkey}.tmp1", "arena-keep.txt"]  # not the cache's: kept
    two_hours_ago = time.time() - 7200
    for name in old + foreign:
        (tmp_path / name).write_text("x")
        os.utime(tmp_path / name, (two_hours_ago, two_hours_ago))
    (tmp_path / fresh).write_text("x")
    run("ppp", tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert not names & set(old)
    assert {fresh, *foreign} <= names
    assert _cache.remove_orphans(tmp_path, max_age_s=0) == (1, 1)  # the fresh one, when asked


# --------------------------------------------------------------------------- clearing and measuring


def test_clear_cache_removes_the_cache_files_and_counts_them(fake, tmp_path, monkeypatch):
    run("arena", tmp_path)
    run("ppp", tmp_path)
    (tmp_path / "my_notes.txt").write_text("keep me")
    (tmp_path / "ppp-0123456789abcdef01234567.json.q.tmp").write_text("tmp")
    info = _cache.cache_info(tmp_path)
    assert info["path"] == str(tmp_path) and info["status"] == "ok"
    assert info["files"] == N_ARENA + N_SWEEP and info["temporaries"] == 1
    assert info["experiments"]["arena"]["files"] == N_ARENA and info["experiments"]["ppp"]["files"] == N_SWEEP
    ppp_bytes = sum(p.stat().st_size for p in tmp_path.glob("ppp-*"))
    arena_bytes = sum(p.stat().st_size for p in tmp_path.glob("arena-*"))
    assert info["bytes"] == ppp_bytes - 3 + arena_bytes
    removed = _cache.clear_cache(tmp_path, experiment="ppp")
    assert removed == (N_SWEEP + 1, ppp_bytes) and removed.files == N_SWEEP + 1 and removed.bytes == ppp_bytes
    assert _cache.cache_info(tmp_path)["experiments"]["ppp"] == {"files": 0, "bytes": 0}
    assert _cache.clear_cache(tmp_path) == (N_ARENA, arena_bytes)
    assert _cache.clear_cache(tmp_path) == (0, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_notes.txt"]
    assert _cache.cache_info(tmp_path)["files"] == 0
    # the default folder is $GLEAK_CACHE's
    monkeypatch.setenv("GLEAK_CACHE", str(tmp_path))
    assert _cache.cache_info()["path"] == str(tmp_path)
    # bad calls: one clear error each, nothing raised for a missing folder
    with pytest.raises(ValueError, match="experiment"):
        _cache.clear_cache(tmp_path, experiment="sweep")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        _cache.clear_cache(tmp_path / "my_notes.txt")
    assert _cache.clear_cache(tmp_path / "missing") == (0, 0)
    assert _cache.cache_info(tmp_path / "missing")["status"] == "missing"
    assert _cache.cache_info(tmp_path / "my_notes.txt")["status"] == "is a file, not a folder"
    assert not (tmp_path / "missing").exists()  # info and clear create nothing


# --------------------------------------------------------------------------- the size bound


def test_the_size_bound_evicts_the_least_recently_used_cells(fake, tmp_path, monkeypatch):
    run("arena", tmp_path)
    arena_files = sorted(tmp_path.glob("arena-*.json"))
    long_ago = time.time() - 86400
    for i, p in enumerate(arena_files):
        os.utime(p, (long_ago + i, long_ago + i))
    run("arena", tmp_path, noise_levels=(0.3,))  # reads (touches) the 3 cells without noise, computes 4
    touched = {p for p in arena_files if p.stat().st_mtime > long_ago + 3600}
    assert len(touched) == 3
    monkeypatch.setenv("GLEAK_CACHE_MAX_FILES", str(N_ARENA + 1 + N_SWEEP))
    fake.clear()
    result = run("ppp", tmp_path)  # 4 new cells: 3 older ones must go
    assert result.computed == N_SWEEP
    left = set(tmp_path.glob("*.json"))
    assert len(left) == N_ARENA + 1 + N_SWEEP
    assert set(tmp_path.glob("ppp-*.json")) <= left  # this run's cells are never evicted by it
    assert touched <= left  # recently read cells survive
    assert len(set(arena_files) - left) == 3  # the 3 least recently used went
    # a byte bound works the same way; 0 keeps only the running experiment's own cells
    monkeypatch.setenv("GLEAK_CACHE_MAX_MB", "0")
    run("ppp", tmp_path)
    assert {p.name for p in tmp_path.glob("*.json")} == {p.name for p in tmp_path.glob("ppp-*.json")}
    assert len(list(tmp_path.glob("ppp-*.json"))) == N_SWEEP


def test_cache_limits_come_from_the_environment(monkeypatch):
    monkeypatch.delenv("GLEAK_CACHE_MAX_MB", raising=False)
    monkeypatch.delenv("GLEAK_CACHE_MAX_FILES", raising=False)
    assert _cache.cache_limits() == (_cache.DEFAULT_MAX_MB * 2**20, _cache.DEFAULT_MAX_FILES)
    monkeypatch.setenv("GLEAK_CACHE_MAX_MB", "1.5")
    monkeypatch.setenv("GLEAK_CACHE_MAX_FILES", "none")
    assert _cache.cache_limits() == (1.5 * 2**20, float("inf"))
    monkeypatch.setenv("GLEAK_CACHE_MAX_MB", "lots")
    with pytest.warns(UserWarning, match="GLEAK_CACHE_MAX_MB"):
        assert _cache.cache_limits()[0] == _cache.DEFAULT_MAX_MB * 2**20


def test_enforce_limits_directly(tmp_path):
    now = time.time()
    for i in range(5):
        p = tmp_path / f"ppp-{i:024x}.json"
        p.write_text("x" * 100)
        os.utime(p, (now - 100 + i, now - 100 + i))
    assert _cache.enforce_limits(tmp_path, max_bytes=250, max_files=10, keep=[tmp_path / f"ppp-{0:024x}.json"]) == (3, 300)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"ppp-{i:024x}.json" for i in (0, 4)]


# --------------------------------------------------------------------------- the validator itself


def test_schema_messages_say_where_and_why():
    schema = _cache.Record({"a": _cache.ListOf(_cache.Number(0, 1), 2), "b": _cache.Array((2, 2), 0, 1)})
    for bad, where in [
        ({"a": [0.5, 2], "b": [[0, 0], [0, 0]]}, r"result\.a\[1\] is 2, not in \[0, 1\]"),
        ({"a": [0.5], "b": [[0, 0], [0, 0]]}, r"result\.a has 1 items, not 2"),
        ({"a": [0.5, 0.5], "b": [[0, 0], [0, float("nan")]]}, r"result\.b\[1\]\[1\] is nan"),
        ({"a": [0.5, 0.5], "b": [[0, 0], "xx"]}, r"result\.b\[1\] is 'xx', not a list of 2"),
        ({"b": 1}, r"result lacks a"),
    ]:
        with pytest.raises(_cache.CellError, match=where):
            schema.check(bad, "result")
    schema.check({"a": [0, 1.0], "b": [[0, 1], [0.5, 0.25]]}, "result")


def test_validation_of_a_default_size_cell_is_fast():
    settings = arena.ArenaSettings()
    cell = _cache.finite(fake_arena_cell(settings, "dp_fixed", 1.0, 0))
    schema = grid.cell_schema(settings, "dp_fixed")
    start = time.perf_counter()
    for _ in range(15):  # a full default grid
        schema.check(cell, "result")
    assert time.perf_counter() - start < 0.5


def _mutations(value, rng, path=()):
    """Every (path, replacement) of a seeded sample of the cell's nodes."""
    nodes = []

    def walk(v, p):
        nodes.append(p)
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, p + (k,))
        elif isinstance(v, list) and len(p) < 4:  # not into every pixel
            for i, x in enumerate(v[:2]):
                walk(x, p + (i,))

    walk(value, path)
    junk = [None, True, 0, -1, 1.5, 1e308, -1e308, 10**30, "", "inf", "nan", "x" * 50, [], [0.5], [[1, 2]], {}, {"a": 1}]
    return [(nodes[rng.randrange(len(nodes))], junk[rng.randrange(len(junk))]) for _ in range(150)]


@pytest.mark.parametrize("exp", ["arena", "ppp"])
def test_random_damage_never_raises_and_accepted_cells_build_the_table(tmp_path, exp):
    """A seeded fuzz: replace one node of a valid cell by junk; reading never raises, and whatever the
    schema accepts is something the table, the rows and the reconstructions can use."""
    import random

    rng = random.Random(0)
    if exp == "arena":
        settings = arena.ArenaSettings(**ARENA)
        defense, level = "dp_fixed", 0.5
        schema = grid.cell_schema(settings, defense)
        valid = _cache.finite(fake_arena_cell(settings, defense, level, 0))
    else:
        settings = sweeps.PPPSweepSettings(**SWEEP)
        schema = sweeps._cell_schema(settings)
        valid = _cache.finite(fake_sweep_cell(settings, "ppp", 0.5, 0))
    path = tmp_path / "cell.json"
    accepted = 0
    for where, junk in _mutations(valid, rng):
        cell = json.loads(json.dumps(valid))
        if not where:
            cell = junk
        else:
            parent = cell
            for k in where[:-1]:
                parent = parent[k]
            parent[where[-1]] = junk
        path.write_text(json.dumps({"key": "k", "result": cell}))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = _cache.read_cell(path, "k", schema)
        if got is None:
            continue
        accepted += 1
        if exp == "arena":
            cells = {c: fake_arena_cell(settings, *c) for c in arena.cells_of(settings)}
            cells[(defense, level, 0)] = got
            res = arena.ArenaResult(settings, cells=cells, rows=arena.results.rows_of(settings, cells))
            res.table(), res.matrix(), res.defense_summary(), json.dumps(res.to_json())
            res.reconstructions(defense, "ig", level)
        else:
            cells = {(d, s, 0): fake_sweep_cell(settings, d, s, 0)
                     for d, s in [("none", 0.0), ("precode", 0.0), ("full", 0.5), ("ppp", 0.5)]}
            cells[("ppp", 0.5, 0)] = got
            res = sweeps.SweepResult(settings, cells=cells, rows=sweeps._rows(settings, cells))
            res.table(), sweeps.claim_check(res), json.dumps(res.to_json())
            res.reconstructions("ppp", 0.5)
    assert accepted > 0  # some junk is valid (e.g. a null SSIM), and is handled
