"""Benchmark: DLG time-to-30-dB and ms per evaluation, package vs. the plain original recipe.

Run from the repository root:

    python benchmarks/bench_dlg.py [--seeds 0 1 2 3 4] [--photo 0] [--json OUT]

For every seed the victim is built exactly as the package does it
(``build_model('lenet-zhu', (3, 32, 32), 100, 'sigmoid', seed=seed)``, one photo,
``client_gradient``), and three attacks run one after another in the same process:

1. ``ref``: the straightforward loop of the original DLG code (Zhu et al. 2019),
   written here independently of the package: separate leaf tensors for the dummy
   image and the dummy label logits, ``torch.optim.LBFGS([x, label], lr=1)`` with
   torch's defaults (max_iter 20, history 100, no line search), a closure that does
   forward, soft-label cross-entropy, ``autograd.grad(create_graph=True)``, the
   per-layer squared distance and ``dist.backward()``. Default torch thread count,
   no flush-denormal, plain ``nn.Conv2d``.
2. ``pkg``: ``gleak_edu.attacks.dlg`` with its defaults.
3. ``pkg0``: the same without retrying a failed run (the paper's single trajectory:
   ``retries=0``, or ``restarts=0`` where the package has no ``retries`` keyword).

Imported by ``bench_attacks.py`` (the suite), which reuses ``reference_dlg`` for DLG and iDLG.

All three start from the same random dummy (same generator, same draw), stop as
soon as the PSNR of the current estimate reaches 30 dB (or after 300 L-BFGS steps,
or on a NaN loss), and time only the attack's compute: PSNR and callbacks are
outside the clock. ms/evaluation = compute seconds / closure calls.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gleak_edu  # noqa: E402
import gleak_edu.attacks  # noqa: E402
import gleak_edu.data  # noqa: E402
import gleak_edu.fl  # noqa: E402
import gleak_edu.metrics  # noqa: E402
import gleak_edu.models  # noqa: E402

TARGET_DB = 30.0
ITERATIONS = 300
NUM_CLASSES = 100
SHAPE = (3, 32, 32)


def build_victim(seed: int, photo: int):
    model = gleak_edu.models.build_model("lenet-zhu", SHAPE, NUM_CLASSES, "sigmoid", seed=seed)
    x, y = gleak_edu.data.photos().batch(photo)
    shared = gleak_edu.fl.client_gradient(model, x, y)
    return model, x, y, shared


def weights_fingerprint(model: nn.Module) -> float:
    with torch.no_grad():
        return float(sum(p.double().abs().sum() for p in model.parameters()))


def check_plain(model: nn.Module) -> None:
    """The reference must see plain nn.Conv2d (no im2col patch left behind by the package)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and "_conv_forward" in m.__dict__:
            raise RuntimeError("a Conv2d still carries the package's patched _conv_forward")


# --------------------------------------------------------------------------
# The plain reference: the original DLG loop.
# --------------------------------------------------------------------------
def reference_dlg(model, shared, x_true, seed, threads, iterations=ITERATIONS, target_db=TARGET_DB, label=None):
    """The original DLG loop; with ``label`` (int64 ``[1]``) the original iDLG loop instead.

    iDLG (Zhao et al. 2020) differs only in what is optimised: the image alone, with
    ordinary cross-entropy on the given label, from an N(0, 1) draw of the image's
    size (the package draws the same).
    """
    torch.set_num_threads(threads)
    torch.set_flush_denormal(False)
    check_plain(model)
    threads_seen = torch.get_num_threads()

    origin_grad = [shared[n].detach() for n, p in model.named_parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]

    nx = x_true.numel()
    gen = torch.Generator().manual_seed(int(seed))
    if label is None:  # DLG: image and label logits
        z = torch.randn(nx + NUM_CLASSES, generator=gen)
        dummy_data = z[:nx].view(x_true.shape).clone().requires_grad_(True)
        dummy_label = z[nx:].view(1, NUM_CLASSES).clone().requires_grad_(True)
        optimizer = torch.optim.LBFGS([dummy_data, dummy_label], lr=1)
    else:  # iDLG: the image alone
        dummy_data = torch.randn(nx, generator=gen).view(x_true.shape).clone().requires_grad_(True)
        optimizer = torch.optim.LBFGS([dummy_data], lr=1)
    evals = 0

    def closure():
        nonlocal evals
        evals += 1
        optimizer.zero_grad()
        pred = model(dummy_data)
        if label is None:
            dummy_onehot_label = F.softmax(dummy_label, dim=-1)
            dummy_loss = torch.sum(-dummy_onehot_label * F.log_softmax(pred, dim=-1))
        else:
            dummy_loss = F.cross_entropy(pred, label)
        dummy_dy_dx = torch.autograd.grad(dummy_loss, model.parameters(), create_graph=True)
        grad_diff = 0
        for gx, gy in zip(dummy_dy_dx, origin_grad):
            grad_diff = grad_diff + ((gx - gy) ** 2).sum()
        grad_diff.backward()
        return grad_diff

    seconds = 0.0
    history = []
    reached_s = reached_e = reached_it = None
    stop_reason = f"ran all {iterations} steps"
    psnr = float("nan")
    loss = float("nan")
    it = 0
    for it in range(1, iterations + 1):
        t0 = time.perf_counter()
        loss_t = optimizer.step(closure)
        seconds += time.perf_counter() - t0
        # clock paused from here on
        loss = float(loss_t.detach())
        psnr = float(gleak_edu.metrics.psnr(dummy_data.detach(), x_true).mean())
        history.append({"iteration": it, "evaluations": evals, "seconds": seconds, "loss": loss, "psnr": psnr})
        if psnr >= target_db:
            reached_s, reached_e, reached_it = seconds, evals, it
            stop_reason = f"reached {target_db:g} dB at step {it}"
            break
        if not math.isfinite(loss) or not torch.isfinite(dummy_data).all():
            stop_reason = f"non-finite loss at step {it}"
            break
    # dist.backward() also accumulated into the model's .grad (as in the original code); drop it
    for p in params:
        p.grad = None
    return {
        "reached": reached_s is not None,
        "seconds_to": reached_s,
        "evaluations_to": reached_e,
        "iterations_to": reached_it,
        "seconds": seconds,
        "evaluations": evals,
        "iterations": it,
        "ms_per_eval": 1000.0 * seconds / max(evals, 1),
        "final_psnr": psnr,
        "final_loss": loss,
        "message": stop_reason,
        "threads": threads_seen,
        "restarts": 0,
        "history": history,
    }


# --------------------------------------------------------------------------
# The package.
# --------------------------------------------------------------------------
def package_dlg(model, shared, x, y, seed, restarts, iterations=ITERATIONS, target_db=TARGET_DB):
    threads_seen = []

    def stop_at_target(state):
        if not threads_seen:
            threads_seen.append(torch.get_num_threads())
        return state.psnr is not None and state.psnr >= target_db

    # restarts=0 is the plain recipe: no retries after a failed run (independent restarts are
    # options.restarts; this benchmark times one run)
    options = gleak_edu.attacks.AttackOptions(callback_every=1, **({"retries": 0} if restarts == 0 else {}))
    r = gleak_edu.attacks.dlg(
        model, shared, input_shape=x.shape, num_classes=NUM_CLASSES, iterations=iterations, seed=seed,
        truth=(x, y), callback=stop_at_target, options=options,
    )
    s_to, e_to = r.seconds_to(target_db), r.evaluations_to(target_db)
    it_to = next((h["iteration"] for h in r.history if h.get("psnr") is not None and h["psnr"] >= target_db), None)
    return {
        "reached": s_to is not None,
        "seconds_to": s_to,
        "evaluations_to": e_to,
        "iterations_to": it_to,
        "seconds": r.seconds,
        "evaluations": r.evaluations,
        "iterations": r.iterations,
        "ms_per_eval": 1000.0 * r.seconds / max(r.evaluations, 1),
        "final_psnr": (r.metrics or {}).get("psnr_mean"),
        "final_loss": r.loss,
        "message": r.message,
        "threads": threads_seen[0] if threads_seen else None,
        "restarts": r.restarts,
        "history": r.history,
    }


# --------------------------------------------------------------------------
def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def warm_up(photo: int, threads: int) -> None:
    """A few steps of each, untimed, so first-call overheads are not charged to seed 0."""
    model, x, y, shared = build_victim(0, photo)
    reference_dlg(model, shared, x, seed=12345, threads=threads, iterations=3, target_db=math.inf)
    package_dlg(model, shared, x, y, seed=12345, restarts=0, iterations=3, target_db=math.inf)
    torch.set_num_threads(threads)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--photo", type=int, default=0)
    ap.add_argument("--json", type=str, default=None, metavar="OUT")
    ap.add_argument("--no-warmup", action="store_true")
    ap.add_argument("--ref-threads", type=int, default=None,
                    help="threads for the reference (default: torch's default thread count, the plain setting)")
    args = ap.parse_args(argv)

    original_threads = torch.get_num_threads()
    ref_threads = args.ref_threads or original_threads
    machine = {
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "default_threads": original_threads,
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    photo_name = gleak_edu.data.photos().item_names[args.photo]
    print(f"DLG benchmark: photo {args.photo} ({photo_name}), LeNet-Zhu sigmoid, 100 classes, "
          f"stop at {TARGET_DB:g} dB or {ITERATIONS} L-BFGS steps")
    print(f"machine: processor={machine['processor']!r} cpu_count={machine['cpu_count']} "
          f"torch={machine['torch']} default threads={original_threads} platform={machine['platform']}")
    if machine["loadavg_start"] is not None:
        print("load average at start: " + " ".join(f"{v:.2f}" for v in machine["loadavg_start"]))
    sys.stdout.flush()

    if not args.no_warmup:
        warm_up(args.photo, ref_threads)

    variants = [("ref", None), ("pkg", None), ("pkg0", 0)]
    results = []
    for seed in args.seeds:
        model, x, y, shared = build_victim(seed, args.photo)
        fp = weights_fingerprint(model)
        row = {"seed": seed}
        for name, restarts in variants:
            if name == "ref":
                torch.set_num_threads(ref_threads)
                row[name] = reference_dlg(model, shared, x, seed, ref_threads)
            else:
                row[name] = package_dlg(model, shared, x, y, seed, restarts)
            if weights_fingerprint(model) != fp:
                raise RuntimeError(f"the model's weights changed during the {name} run")
            r = row[name]
            r["loadavg_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
            print(f"  seed {seed} {name:4s}: {'reached' if r['reached'] else 'MISSED '} "
                  f"t30={fmt(r['seconds_to'], '.2f')} s  e30={fmt(r['evaluations_to'], 'd')}  "
                  f"total {r['seconds']:.2f} s / {r['evaluations']} evals = {r['ms_per_eval']:.2f} ms/eval, "
                  f"threads={r['threads']}, restarts={r['restarts']}, psnr={fmt(r['final_psnr'], '.1f')}, load1={fmt(r['loadavg_after'], '.2f')}; {r['message']}")
            sys.stdout.flush()
        torch.set_num_threads(original_threads)
        for name in ("pkg", "pkg0"):
            row[f"time_ratio_{name}"] = ratio(row[name]["seconds_to"], row["ref"]["seconds_to"])
            row[f"ms_ratio_{name}"] = ratio(row[name]["ms_per_eval"], row["ref"]["ms_per_eval"])
        results.append(row)

    # ---- table --------------------------------------------------------------
    def cells(r):
        return (f"{'yes' if r['reached'] else 'NO':>3} {fmt(r['seconds_to'], '7.2f'):>7} "
                f"{fmt(r['evaluations_to'], '5d'):>5} {r['ms_per_eval']:6.2f}")

    head_side = f"{'30dB':>3} {'t30 s':>7} {'e30':>5} {'ms/ev':>6}"
    print()
    print(f"{'seed':>4} | {'reference (plain torch LBFGS)':^24} | {'package (defaults)':^24} | "
          f"{'package (no retry)':^24} | {'t30 ratio':^13} | {'ms/eval ratio':^13}")
    print(f"{'':>4} | {head_side} | {head_side} | {head_side} | {'pkg':>6} {'pkg0':>6} | {'pkg':>6} {'pkg0':>6}")
    print("-" * 128)
    for row in results:
        print(f"{row['seed']:>4} | {cells(row['ref'])} | {cells(row['pkg'])} | {cells(row['pkg0'])} | "
              f"{fmt(row['time_ratio_pkg'], '6.3f'):>6} {fmt(row['time_ratio_pkg0'], '6.3f'):>6} | "
              f"{fmt(row['ms_ratio_pkg'], '6.3f'):>6} {fmt(row['ms_ratio_pkg0'], '6.3f'):>6}")
    print("-" * 128)

    # ---- summary ------------------------------------------------------------
    n = len(results)
    summary = {"n_seeds": n}
    for name in ("ref", "pkg", "pkg0"):
        summary[f"reached_{name}"] = sum(r[name]["reached"] for r in results)
    for name in ("pkg", "pkg0"):
        tr = [r[f"time_ratio_{name}"] for r in results if r[f"time_ratio_{name}"] is not None]
        mr = [r[f"ms_ratio_{name}"] for r in results if r[f"ms_ratio_{name}"] is not None]
        summary[f"median_time_ratio_{name}"] = statistics.median(tr) if tr else None
        summary[f"time_ratio_seeds_{name}"] = len(tr)
        summary[f"median_ms_ratio_{name}"] = statistics.median(mr) if mr else None
    for name in ("ref", "pkg", "pkg0"):
        summary[f"median_ms_per_eval_{name}"] = statistics.median(r[name]["ms_per_eval"] for r in results)
    machine["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None

    print(f"reached {TARGET_DB:g} dB: reference {summary['reached_ref']}/{n}, "
          f"package {summary['reached_pkg']}/{n}, package without retry {summary['reached_pkg0']}/{n}")
    for name, label in (("pkg", "package (defaults)"), ("pkg0", "package (no retry)")):
        print(f"median time-to-{TARGET_DB:g}dB ratio {label}/reference: "
              f"{fmt(summary[f'median_time_ratio_{name}'], '.3f')} "
              f"(over {summary[f'time_ratio_seeds_{name}']} seed(s) where both reached {TARGET_DB:g} dB)")
        print(f"median ms/eval ratio {label}/reference: {fmt(summary[f'median_ms_ratio_{name}'], '.3f')} "
              f"(over {n} seed(s))")
    print(f"median ms/eval: reference {summary['median_ms_per_eval_ref']:.2f}, "
          f"package {summary['median_ms_per_eval_pkg']:.2f}, package without retry {summary['median_ms_per_eval_pkg0']:.2f}")
    tr = summary["median_time_ratio_pkg"]
    verdict = "n/a" if tr is None else ("PASS" if tr <= 0.5 else "FAIL") + (" (meets the 0.25x aim)" if tr is not None and tr <= 0.25 else "")
    print(f"target: package time-to-{TARGET_DB:g}dB <= 0.5x reference (aim 0.25x): {verdict}")
    print(f"machine: processor={machine['processor']!r}, cpu_count={machine['cpu_count']}, torch {machine['torch']}, "
          f"reference threads={ref_threads} (torch default {original_threads}), package threads={results[0]['pkg']['threads'] if results else '-'}")
    if machine["loadavg_end"] is not None:
        print("load average at end: " + " ".join(f"{v:.2f}" for v in machine["loadavg_end"]))

    if args.json:
        machine["reference_threads"] = ref_threads
        out = {"photo": args.photo, "photo_name": photo_name, "target_db": TARGET_DB, "iterations": ITERATIONS,
               "machine": machine, "summary": summary, "results": results}
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
