"""Smoke test of the benchmark suite (benchmarks/): every reference loop runs, starts where the package starts,
and returns what the tables need. Tiny budgets: seconds, not a benchmark."""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_attacks as ba  # noqa: E402
import bench_notebooks  # noqa: E402
import run_all  # noqa: E402

ITERATIVE = ["dlg", "idlg", "ig", "bypass", "grnn"]


@pytest.fixture(autouse=True)
def _session_photos(photo_set, monkeypatch):
    """The suite's photo loader returns the session's photo set (no 2-second reload)."""
    monkeypatch.setattr(ba, "_photo_set", lambda: (photo_set.images, photo_set.labels))


@pytest.fixture(scope="module")
def tiny_runs():
    """Two iterations of the reference and of the package for every iterative case (target out of reach)."""
    return {
        (case, variant): ba.run_case(case, variant, seed=1, iterations=2, target_db=math.inf)
        for case in ITERATIVE for variant in ("ref", "pkg")
    }


@pytest.mark.parametrize("case", ITERATIVE)
def test_reference_starts_where_the_package_starts(case, tiny_runs):
    ref, pkg = tiny_runs[(case, "ref")], tiny_runs[(case, "pkg")]
    for r in (ref, pkg):
        missing = [f for f in ba.FIELDS if f not in r]
        assert not missing, f"{case}: the run's dict lacks {missing}"
        assert r["evaluations"] >= 2 and r["seconds"] > 0 and r["evals_per_s"] > 0
        assert not r["reached"] and r["seconds_to"] is None and r["iterations"] == 2
        assert math.isfinite(r["final_psnr"])
    # same random start, same recipe: the first matching loss agrees to float32 rounding
    assert ref["initial_loss"] == pytest.approx(pkg["initial_loss"], rel=1e-4), (case, ref["initial_loss"], pkg["initial_loss"])
    # the reference runs plain torch with its own thread setting, not the package's
    assert ref["threads"] == ba.DEFAULT_THREADS


def test_same_trajectory_to_a_low_target():
    """Inverting Gradients reaches 15 dB after the same number of steps in both loops (a few steps)."""
    ref = ba.run_case("ig", "ref", seed=1, iterations=40, target_db=15.0)
    pkg = ba.run_case("ig", "pkg", seed=1, iterations=40, target_db=15.0)
    assert ref["reached"] and pkg["reached"]
    assert ref["evaluations_to"] == pkg["evaluations_to"] < 40
    assert 0 < ref["seconds_to"] <= ref["seconds"] and 0 < pkg["seconds_to"] <= pkg["seconds"]


def test_analytic_recovers_exactly_both_ways():
    for variant in ("ref", "pkg"):
        r = ba.run_case("analytic", variant, seed=1, iterations=5)
        assert not [f for f in ba.FIELDS if f not in r]
        assert r["reached"] and r["max_abs_error"] < 1e-4 and r["final_psnr"] > 60, r["message"]
        assert r["evals_per_s"] > 0


def test_summary_table_and_markdown(tiny_runs):
    runs = [{"case": c, "variant": v, "seed": 1, "result": ba.strip(r)} for (c, v), r in tiny_runs.items()]
    summary = ba.summarise(runs)
    assert list(summary) == ITERATIVE
    s = summary["dlg"]
    assert s["ref"]["n"] == s["pkg"]["n"] == 1 and s["time_ratio"] is None  # the target was out of reach
    assert s["evals_per_s_ratio"] > 0
    buf = io.StringIO()
    ba.print_table(summary, {}, file=buf)
    assert "Inverting Gradients" in buf.getvalue() and "GRNN" in buf.getvalue()
    results = {"machine": ba.machine(), "settings": {"seeds": [1], "photo": 0, "quick": True, "ref_threads": 1},
               "wall_s": 1.0, "summary": summary, "restarts": {}, "verdicts": ba.verdicts(summary, {})}
    md = run_all.markdown({"attacks": results})
    assert md.startswith("Machine: ") and sum(ln.startswith("| ") for ln in md.splitlines()) == 1 + len(ITERATIVE) and "PRECODE bypass" in md
    assert results["verdicts"][0].startswith("DLG time-to-inf-dB") and "n/a" in results["verdicts"][0]


def test_restarts_case_is_guarded():
    r = ba.run_case("restarts", "dlg-r8", seed=1, iterations=2)
    if r.get("skipped"):
        assert r["skipped"].startswith(ba.SKIPPED_RESTARTS)
    else:
        assert r["restarts"] == 8 and len(r["per_restart_loss"]) == 8
        assert r["wall_s"] > 0 and math.isfinite(r["best_psnr"])


def test_child_process_reports_peak_memory(photo_set, tmp_path):
    """The subprocess path (used for the memory figures) returns a result with the peak RSS."""
    import torch

    path = tmp_path / "photos.pt"
    torch.save({"images": photo_set.images, "labels": photo_set.labels}, path)
    env = dict(__import__("os").environ, **{ba.PHOTOS_ENV: str(path)})
    r = ba.run_in_child("analytic", "pkg", 1, 0, True, False, env, timeout=120)
    assert "error" not in r, r.get("error")
    assert r["reached"] and r["peak_rss_mb"] >= r["rss_baseline_mb"] > 50


def test_notebook_selection():
    books = bench_notebooks.select_notebooks(["01", "04"])
    assert [p.name[:2] for p in books] == ["01", "04"]
    with pytest.raises(SystemExit, match="no notebook matches"):
        bench_notebooks.select_notebooks(["99"])
