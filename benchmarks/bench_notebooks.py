"""Benchmark: the cost of running each course notebook from a cold start.

Run from the repository root:

    python benchmarks/bench_notebooks.py [--only 01 04] [--timeout 1800] [--json OUT]

Each notebook in ``notebooks/`` is copied into a fresh temporary folder and executed
there by ``python -m nbconvert --execute --to notebook`` in a subprocess (the files in
``notebooks/`` are never touched; the executed copy is thrown away), with an empty
cache (``GLEAK_CACHE`` set to an empty temporary folder, so notebook 04 computes its
sweep). Recorded per notebook:

- ``wall_s``: wall time of the whole run (kernel start, every cell, writing the copy);
- ``max_rss_mb``: the largest maximum resident set size among the processes of the run
  (nbconvert's client or the kernel), from ``/usr/bin/time -v`` where it exists, else
  from ``resource.getrusage(RUSAGE_CHILDREN)`` (only meaningful when it grows);
- ``peak_tree_rss_mb``: the peak of the summed RSS of client + kernel, sampled every
  0.2 s with psutil (when installed);
- ``cache_mb``: what the run wrote into the cache folder;
- ``status``: ``ok`` or the error's last lines.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
TIME_BIN = "/usr/bin/time"


def select_notebooks(only: list[str] | None = None, folder: Path = NOTEBOOKS) -> list[Path]:
    """The notebooks in ``folder``, sorted; ``only`` keeps those whose name starts with (or contains) one of its items."""
    books = sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))
    if only:
        keep = [p for p in books if any(p.name.startswith(o) or o in p.stem for o in only)]
        missing = [o for o in only if not any(p.name.startswith(o) or o in p.stem for p in books)]
        if missing:
            raise SystemExit(f"no notebook matches {missing} in {folder} (have {[p.name for p in books]})")
        return keep
    return books


def _tree_rss_sampler(pid: int, skip_root: bool, stop: threading.Event, out: dict) -> None:
    """Peak of the summed RSS of ``pid``'s process tree (without ``pid`` itself if ``skip_root``)."""
    try:
        import psutil
    except ImportError:
        return
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return
    peak = 0
    while not stop.is_set():
        try:
            procs = ([] if skip_root else [root]) + root.children(recursive=True)
        except psutil.Error:
            break
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        peak = max(peak, total)
        stop.wait(0.2)
    out["peak_tree_rss_mb"] = peak / 2**20 if peak else None


def _error_line(stderr: str) -> str:
    """The exception line of a failed run (ANSI colours and /usr/bin/time's report removed)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", stderr.split("\tCommand being timed:")[0])
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("Command exited")]
    errors = [ln for ln in lines if re.match(r"^[A-Za-z_.]*(Error|Exception|Interrupt)\b", ln)]
    return (errors[-1] if errors else " | ".join(lines[-3:]))[-400:]


def _folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def run_notebook(path: Path, timeout: float = 1800.0) -> dict:
    """Execute one notebook in a temporary folder with an empty cache; return its costs."""
    with tempfile.TemporaryDirectory(prefix="gleak_nb_") as tmp:
        tmp = Path(tmp)
        work, cache = tmp / "work", tmp / "cache"
        work.mkdir()
        cache.mkdir()
        copy = work / path.name
        shutil.copy2(path, copy)
        env = dict(os.environ)
        env["GLEAK_CACHE"] = str(cache)
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")  # the kernel's "python"
        cmd = [sys.executable, "-m", "nbconvert", "--execute", "--to", "notebook", "--output-dir", str(tmp / "out"),
               f"--ExecutePreprocessor.timeout={int(timeout)}", "--ExecutePreprocessor.kernel_name=python3", str(copy)]
        use_time = Path(TIME_BIN).exists() and os.access(TIME_BIN, os.X_OK)
        if use_time:
            cmd = [TIME_BIN, "-v"] + cmd
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        sampled: dict = {}
        stop = threading.Event()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        sampler = threading.Thread(target=_tree_rss_sampler, args=(proc.pid, use_time, stop, sampled), daemon=True)
        sampler.start()
        try:
            _, err = proc.communicate(timeout=timeout + 120)
            timed_out = False
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            timed_out = True
        wall = time.perf_counter() - t0
        stop.set()
        sampler.join(timeout=5)
        after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        max_rss_mb, source = None, None
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err or "")
        if m:
            max_rss_mb, source = int(m.group(1)) / 1024.0, "/usr/bin/time -v"
        elif after > before:
            max_rss_mb, source = after / 1024.0, "getrusage(RUSAGE_CHILDREN)"
        if timed_out:
            status = f"timed out after {timeout + 120:.0f} s"
        elif proc.returncode != 0:
            status = "failed: " + _error_line(err or "")
        else:
            status = "ok"
        return {
            "notebook": path.name,
            "wall_s": wall,
            "max_rss_mb": max_rss_mb,
            "max_rss_source": source,
            "peak_tree_rss_mb": sampled.get("peak_tree_rss_mb"),
            "cache_mb": _folder_mb(cache),
            "status": status,
        }


def run_all(only=None, timeout: float = 1800.0, log=print) -> list[dict]:
    out = []
    for path in select_notebooks(only):
        log(f"  running {path.name} ...")
        r = run_notebook(path, timeout)
        out.append(r)
        log(f"  {r['notebook']}: {r['wall_s']:.0f} s, max RSS {_mb(r['max_rss_mb'])} (largest process), "
            f"client + kernel peak {_mb(r['peak_tree_rss_mb'])}, cache {r['cache_mb']:.1f} MB: {r['status']}")
    return out


def _mb(v) -> str:
    return "-" if v is None else f"{v:.0f} MB"


def print_table(rows: list[dict]) -> None:
    print()
    print(f"{'notebook':<36} {'wall s':>7} {'max RSS MB':>10} {'client+kernel MB':>16} {'cache MB':>8}  status")
    print("-" * 90)
    for r in rows:
        print(f"{r['notebook']:<36} {r['wall_s']:>7.0f} {_mb(r['max_rss_mb']).replace(' MB', ''):>10} "
              f"{_mb(r['peak_tree_rss_mb']).replace(' MB', ''):>16} {r['cache_mb']:>8.1f}  {r['status']}")
    print("-" * 90)
    print(f"total {sum(r['wall_s'] for r in rows):.0f} s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", default=None, metavar="NN", help="notebooks to run, by number or name (e.g. 01 04)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="per-cell timeout in seconds")
    ap.add_argument("--json", default=None, metavar="OUT")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_attacks import describe_machine, machine

    m = machine()
    print(f"notebook benchmark: {len(select_notebooks(args.only))} notebook(s), empty cache, nbconvert --execute")
    print(f"machine: {describe_machine(m)}")
    rows = run_all(args.only, args.timeout)
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": m, "notebooks": rows}, indent=1))
        print(f"wrote {args.json}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
