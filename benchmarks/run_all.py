"""Run the benchmark suite and write benchmarks/results.json and a markdown table.

Run from the repository root:

    python benchmarks/run_all.py [--quick] [--seeds 0 1 2 3 4] [--cases ...] [--ref-threads N] [--in-process]
                                 [--notebooks [--only 01 04] | --notebooks-only [--only ...]]
                                 [--json benchmarks/results.json] [--markdown OUT]

``make bench`` runs the attacks and the batched-restarts case (bench_attacks.py);
``make bench-notebooks`` the notebook costs (bench_notebooks.py, slow). Each run
replaces only the sections it ran in the JSON file (``attacks``, ``notebooks``), so
running both fills one file, and the markdown is written from everything in it: the
machine, the attack table with the ratios package/reference, the batched restarts,
the checks against the targets, and the notebook costs. That markdown is what the
README's Performance section shows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_attacks  # noqa: E402
import bench_notebooks  # noqa: E402

DEFAULT_JSON = HERE / "results.json"


def _f(v, spec=".2f", none="–"):
    return none if v is None else format(v, spec)


def _machine_line(m: dict) -> str:
    load = lambda v: " / ".join(f"{x:.2f}" for x in v) if v else "n/a"  # noqa: E731
    return (f"{m['cpu']} ({m['machine']}), {m['cpu_count']} CPUs ({m['cpus_usable']} usable), "
            f"{m['mem_total_gb']} GB RAM; Python {m['python']}, torch {m['torch']} "
            f"(default intra-op threads {m['torch_default_threads']}); {m['platform']}; "
            f"load average (1/5/15 min) {load(m.get('loadavg'))} at the start, {load(m.get('loadavg_end'))} at the end; "
            f"{m['date']}")


def markdown(results: dict) -> str:
    """The README's tables from a results dict (sections ``attacks`` and/or ``notebooks``)."""
    out: list[str] = []
    att = results.get("attacks")
    if att:
        st = att["settings"]
        out.append(f"Machine: {_machine_line(att['machine'])}.")
        out.append("")
        out.append(f"Attacks (`make bench`{', --quick' if st['quick'] else ''}): photo {st['photo']}, seeds "
                   f"{', '.join(map(str, st['seeds']))}; reference threads {st.get('ref_threads')}, package threads as "
                   f"the package sets them; medians over seeds; suite wall time {att['wall_s'] / 60:.1f} min.")
        out.append("")
        out.append("| attack | victim | target | reference: reached | s to target | eval/s | peak MB | "
                   "gleak_edu: reached | s to target | eval/s | peak MB | time ratio | eval/s ratio | memory ratio |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for key, s in att["summary"].items():
            c = s["case"]
            tspec = ".2e" if key == "analytic" else ".2f"
            cells = []
            for side in ("ref", "pkg"):
                d = s[side]
                cells += [f"{d['reached']}/{d['n']}", _f(d["median_seconds_to"], tspec),
                          _f(d["median_evals_per_s"], ".0f"), _f(d["median_peak_rss_mb"], ".0f")]
            tr = _f(s["time_ratio"], ".3g") + (f" ({s['time_ratio_seeds']} seed{'s' if s['time_ratio_seeds'] > 1 else ''})" if s["time_ratio"] is not None else "")
            target = "exact (1e-4)" if c["target_db"] is None else f"{c['target_db']:g} dB"
            out.append(f"| {c['name']} | {c['victim']} | {target} | " + " | ".join(cells)
                       + f" | {tr} | {_f(s['evals_per_s_ratio'], '.3g')} | {_f(s['peak_rss_ratio'], '.2f')} |")
        out.append("")
        out.append("s to target: compute seconds until the first estimate at the target (analytic: one recovery), "
                   "over the runs that reached it; eval/s: gradient-matching evaluations (forward + double "
                   "backward) per second (analytic: recoveries per second); peak MB: max RSS of the run's own "
                   "process (Python, torch and the victim included); ratios: package / reference, median of the "
                   "per-seed ratios (time: over the seeds where both reached the target).")
        rs = att.get("restarts") or {}
        if rs:
            lo, hi = bench_attacks.RESTART_COUNTS
            out.append("")
            out.append(f"| batched restarts | budget | wall, {lo} restart | wall, {hi} restarts | ratio {hi}/{lo} "
                       f"(target ≤ {bench_attacks.RESTARTS_TARGET:g}) | best PSNR, {lo} / {hi} | peak MB, {lo} / {hi} |")
            out.append("|---|---|---|---|---|---|---|")
            for attack, r in rs.items():
                name = {"dlg": "DLG (LeNet-Zhu)", "ig": "Inverting Gradients (MLP)"}.get(attack, attack)
                if r.get("skipped"):
                    out.append(f"| {name} | – | – | – | {r['skipped']} | – | – |")
                    continue
                out.append(
                    f"| {name} | {r['budget']} iterations | {_f(r[f'median_wall_s_r{lo}'])} s | "
                    f"{_f(r[f'median_wall_s_r{hi}'])} s | {_f(r['median_wall_ratio'])} "
                    f"({'pass' if r['pass'] else 'FAIL'}) | {_f(r[f'median_best_psnr_r{lo}'], '.1f')} / "
                    f"{_f(r[f'median_best_psnr_r{hi}'], '.1f')} dB | {_f(r[f'median_peak_rss_mb_r{lo}'], '.0f')} / "
                    f"{_f(r[f'median_peak_rss_mb_r{hi}'], '.0f')} |")
        if att.get("verdicts"):
            out.append("")
            out += [f"- {v}" for v in att["verdicts"]]
    nbs = results.get("notebooks")
    if nbs:
        out.append("")
        if not att:
            out.append(f"Machine: {_machine_line(nbs['machine'])}.")
            out.append("")
        out.append("Notebooks (`make bench-notebooks`: `nbconvert --execute` on a copy, empty cache):")
        out.append("")
        out.append("| notebook | wall time | max RSS (largest process) | client + kernel peak RSS | status |")
        out.append("|---|---|---|---|---|")
        for r in nbs["notebooks"]:
            out.append(f"| {r['notebook']} | {r['wall_s']:.0f} s | {_f(r['max_rss_mb'], '.0f')} MB | "
                       f"{_f(r['peak_tree_rss_mb'], '.0f')} MB | {r['status']} |")
        if nbs.get("machine") and att and nbs["machine"].get("date") != att["machine"].get("date"):
            out.append("")
            out.append(f"(notebooks measured {nbs['machine']['date']}, load average "
                       + " / ".join(f"{x:.2f}" for x in nbs["machine"].get("loadavg") or []) + ")")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one seed, short budgets (smoke test)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None)
    ap.add_argument("--cases", nargs="+", choices=bench_attacks.ALL_CASES, default=None)
    ap.add_argument("--photo", type=int, default=0)
    ap.add_argument("--ref-threads", type=int, default=None)
    ap.add_argument("--in-process", action="store_true", help="attacks without subprocesses (no memory figures)")
    ap.add_argument("--notebooks", action="store_true", help="also run the notebooks (slow)")
    ap.add_argument("--notebooks-only", action="store_true", help="only the notebooks")
    ap.add_argument("--only", nargs="+", default=None, metavar="NN", help="notebooks to run (e.g. 01 04)")
    ap.add_argument("--json", default=str(DEFAULT_JSON), metavar="OUT")
    ap.add_argument("--markdown", default=None, metavar="OUT")
    ap.add_argument("--fresh", action="store_true", help="do not keep the other sections of an existing JSON file")
    args = ap.parse_args(argv)

    path = Path(args.json)
    results: dict = {}
    if path.exists() and not args.fresh:
        try:
            results = json.loads(path.read_text())
        except (OSError, ValueError):
            results = {}
    t0 = time.perf_counter()
    status = 0
    if not args.notebooks_only:
        seeds = args.seeds or ([1] if args.quick else [0, 1, 2, 3, 4])
        cases = args.cases or bench_attacks.ALL_CASES
        att = bench_attacks.run_suite(seeds, cases, args.photo, args.quick, args.in_process, True, args.ref_threads)
        bench_attacks.print_report(att)
        results["attacks"] = att
    if args.notebooks or args.notebooks_only:
        m = bench_attacks.machine()
        print(f"\nnotebook benchmark: machine {bench_attacks.describe_machine(m)}")
        rows = bench_notebooks.run_all(args.only)
        bench_notebooks.print_table(rows)
        m["loadavg_end"] = bench_attacks.machine()["loadavg"]
        results["notebooks"] = {"machine": m, "notebooks": rows}
        status = 0 if all(r["status"] == "ok" for r in rows) else 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=float))
    print(f"\nwrote {path} ({time.perf_counter() - t0:.0f} s)")
    md = markdown(results)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(md)
        print(f"wrote {args.markdown}")
    else:
        print()
        print(md)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
