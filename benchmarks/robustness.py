"""Do the course's attacks work on photos they were never tuned on? Success rates with 95 % intervals.

Run from the repository root (about 25 minutes on a 2-core CPU; ``--jobs 2`` splits the pairs over two
processes):

    python benchmarks/robustness.py [--pairs 20] [--attacks dlg grnn bypass] [--jobs 2]
                                    [--json benchmarks/robustness.json] [--markdown build/robustness.md]

Each (photo, seed) pair is held-out photo i (:func:`gleak_edu.data.heldout_photos`: crops of
matplotlib's and scikit-image's sample images that no notebook uses) with label i % 100 and seed i,
which seeds the victim's weights, the attack's random start and PRECODE's sample. Every attack runs
with its defaults, batch 1, on the victim of its notebook:

- DLG (notebook 01): LeNet-Zhu, sigmoid, uniform(-0.5, 0.5) weights, 100 classes; success is
  PSNR >= 30 dB with the right label (its retries included).
- GRNN (notebook 02): the same LeNet; success is PSNR >= 25 dB with the right label. ``--victim lenet5``
  attacks the GRNN paper's LeNet-5 instead.
- The PRECODE bypass (notebook 03): the MLP with PyTorch's initialisation and a PRECODE bottleneck;
  success is SSIM >= 0.8.

The markdown is the table the README shows: per attack, the success rate with its Wilson interval
(:func:`gleak_edu.metrics.success_rate`), the median and worst PSNR/SSIM, and seconds per attack.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
CRITERIA = {
    "dlg": ("PSNR >= 30 dB and the right label", lambda r: r["psnr"] >= 30 and r["label"]),
    "grnn": ("PSNR >= 25 dB and the right label", lambda r: r["psnr"] >= 25 and r["label"]),
    "bypass": ("SSIM >= 0.8", lambda r: r["ssim"] >= 0.8),
}
NAMES = {"dlg": "DLG", "grnn": "GRNN", "bypass": "PRECODE bypass"}


def run_pair(attack: str, i: int, n: int, victim_name: str) -> dict:
    """One attack on held-out pair i, with its defaults; returns its scores."""
    import torch

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    from gleak_edu import data, fl, models
    from gleak_edu.attacks import dlg, grnn, precode_bypass
    from gleak_edu.defenses import add_precode

    x, _ = data.heldout_photos(n).batch(i)
    y = torch.tensor([i % 100])
    if attack == "bypass":
        net = models.build_model("mlp", (3, 32, 32), 100, seed=i, init="pytorch")
        add_precode(net, seed=i)
        torch.manual_seed(1000 + i)  # the client's bottleneck sample
    else:
        net = models.build_model(victim_name, (3, 32, 32), num_classes=100, seed=i)
    shared = fl.client_gradient(net, x, y)
    fn = {"dlg": dlg, "grnn": grnn, "bypass": precode_bypass}[attack]
    start = time.perf_counter()
    r = fn(net, shared, input_shape=tuple(x.shape), num_classes=100, seed=i, truth=(x, y))
    return {"attack": attack, "pair": i, "psnr": float(r.metrics["psnr_mean"]), "ssim": float(r.metrics["ssim_mean"]),
            "label": bool(int(r.labels.reshape(-1)[0]) == i % 100), "seconds": time.perf_counter() - start,
            "evaluations": int(r.evaluations), "retries": int(getattr(r, "retries", 0) or 0), "message": r.message}


def summarise(rows: list[dict]) -> dict:
    from gleak_edu.metrics import success_rate

    out = {}
    for attack in CRITERIA:
        rs = [r for r in rows if r["attack"] == attack]
        if not rs:
            continue
        rule, ok = CRITERIA[attack]
        rate = success_rate([ok(r) for r in rs])
        out[attack] = {"criterion": rule, **rate.as_dict(), "text": str(rate),
                       "psnr_median": statistics.median(r["psnr"] for r in rs), "psnr_min": min(r["psnr"] for r in rs),
                       "ssim_median": statistics.median(r["ssim"] for r in rs), "ssim_min": min(r["ssim"] for r in rs),
                       "labels": sum(r["label"] for r in rs), "seconds_median": statistics.median(r["seconds"] for r in rs),
                       "failed_pairs": [r["pair"] for r in rs if not ok(r)]}
    return out


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [f"{s['pairs']} held-out (photo, seed) pairs (`python benchmarks/robustness.py`; victim {s['victim']} for "
             "DLG and GRNN, PRECODE MLP for the bypass; batch 1, each attack's defaults):", "",
             "| attack | success | rate (95 % Wilson interval) | median PSNR (worst) | median SSIM (worst) | labels right | s per attack |",
             "|---|---|---|---|---|---|---|"]
    for attack, m in result["summary"].items():
        lines.append(f"| {NAMES[attack]} | {m['criterion']} | {m['text']} | {m['psnr_median']:.1f} dB ({m['psnr_min']:.1f}) | "
                     f"{m['ssim_median']:.3f} ({m['ssim_min']:.3f}) | {m['labels']}/{m['n']} | {m['seconds_median']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--attacks", nargs="+", choices=sorted(CRITERIA), default=["dlg", "grnn", "bypass"])
    ap.add_argument("--victim", default="lenet-zhu", choices=["lenet-zhu", "lenet5"])
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--json", type=Path, default=HERE / "robustness.json")
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args(argv)
    work = [(a, i, args.pairs, args.victim) for a in args.attacks for i in range(args.pairs)]
    start = time.time()
    rows = []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for row in pool.map(run_pair, *zip(*work)):
            rows.append(row)
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items() if k != "message"}),
                  flush=True)
    result = {"settings": {"pairs": args.pairs, "victim": args.victim, "attacks": args.attacks},
              "wall_s": time.time() - start, "rows": rows, "summary": summarise(rows)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    text = markdown(result)
    print(text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
