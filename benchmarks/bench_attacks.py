"""Benchmark suite: every attack of the package against a plain reference loop of the same recipe.

Run from the repository root:

    python benchmarks/bench_attacks.py [--seeds 0 1 2 3 4] [--cases dlg idlg ig bypass grnn analytic restarts]
                                       [--photo 0] [--quick] [--in-process] [--json OUT]

For every seed and attack the victim is built as the package builds it (the CLI's
choices: ``build_model(..., seed=seed)``, one photo, ``client_gradient``), and two
attacks run one after the other, each in its own subprocess (so that its peak
memory can be read: ``VmHWM`` at the end of the child):

``ref``
    a straightforward loop of the paper's recipe written here in plain torch,
    independently of the package's hot path: ``torch.autograd.grad(create_graph=True)``
    for the victim's gradient, ``.backward()`` for the attack's, torch's optimisers,
    plain ``nn.Conv2d``, torch's default thread count, no flush-denormal.
``pkg``
    the package's attack with its defaults.

Both start from the same random point (same generator, same draw; the tests check
that the first matching loss agrees), stop when the PSNR of the current estimate
reaches the case's target (or at the end of the budget; the PRECODE bypass always
runs its whole budget), and only compute is timed: PSNR, SSIM and callbacks are
outside the clock. Evaluations are gradient-matching evaluations (one forward pass
plus a double backward); the time to the target is the compute time at the first
iteration whose estimate reaches it.

The cases (victim; target; reference recipe):

=========  ==========================================  ==========  ==================================================
case       victim                                      target      reference
=========  ==========================================  ==========  ==================================================
dlg        LeNet-Zhu, sigmoid, uniform init, 100 cl.   30 dB PSNR  benchmarks/bench_dlg.py's original DLG loop
idlg       the same                                    30 dB PSNR  the same loop, image only, label from the gradient
ig         MLP 3072-256-256-100 sigmoid, torch init    35 dB PSNR  Inverting Gradients (inversefed's loop): cosine
                                                                   distance + TV 1e-4, Adam lr 0.1 on the sign of
                                                                   the gradient, box clamp, step /10 at 3/8, 5/8, 7/8
bypass     the MLP with PRECODE (bottleneck 256)       22 dB PSNR  the same on the deterministic layers only, TV 1e-3,
                                                                   attacker in eval mode, 400 steps (not stopped)
grnn       LeNet-5, sigmoid, uniform init, 100 cl.     22 dB PSNR  GRNN's loop: GRNNGenerator (same init), RMSprop
                                                                   lr 1e-4 momentum 0.99, ||dg||^2 + ||dg|| + 1e-3 TV
analytic   the MLP                                     exact       x = dW[i] / db[i] for the row with the largest |db|
=========  ==========================================  ==========  ==================================================

IG's 35 dB is reached just after the first step-size drop (about 380 of 1,000 steps); the
bypass plateaus near 24 dB, so its target is 22 dB and its evaluations/s come from the
whole 400-step run. ``analytic`` times one recovery (median of many) and counts a
recovery within 1e-4 of the image as reaching the target.

The ``restarts`` case times the package's batched restarts: DLG (50 L-BFGS iterations)
and IG (200 steps) with ``restarts=1`` and ``restarts=8``, no PSNR stop, no truth given
(wall time of the call; PSNR of the returned reconstruction is computed afterwards),
and prints the wall-time ratio 8/1 (target <= 2.0). Until the package's attacks return
``AttackResult.per_restart`` it prints "skipped: batched restarts not available".

``--quick`` (one seed, seed 1, unless ``--seeds`` is given): shorter budgets and lower
targets (IG 30 dB, GRNN 15 dB, bypass 100 steps, restarts 10 / 20 iterations) for
development and CI smoke; its ratios are indicative only.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import bench_dlg  # noqa: E402  (the original DLG/iDLG reference loop)

import gleak_edu.attacks  # noqa: E402
import gleak_edu.data  # noqa: E402
import gleak_edu.defenses  # noqa: E402
import gleak_edu.fl  # noqa: E402
import gleak_edu.metrics  # noqa: E402
import gleak_edu.models  # noqa: E402

# torch's default, read before anything here or in the package changes it: the reference's setting
DEFAULT_THREADS = torch.get_num_threads()
NUM_CLASSES = 100
SHAPE = (3, 32, 32)
RESULT_MARK = "BENCH_RESULT "
PHOTOS_ENV = "GLEAK_BENCH_PHOTOS"


@dataclasses.dataclass(frozen=True)
class Case:
    name: str  # printed name
    victim: str  # printed victim description
    target_db: float | None  # PSNR target (None: analytic, exact recovery)
    iterations: int  # budget (analytic: repetitions)
    stop_at_target: bool = True


CASES = {
    "dlg": Case("DLG", "LeNet-Zhu sigmoid, 100 classes, uniform init", 30.0, 300),
    "idlg": Case("iDLG", "LeNet-Zhu sigmoid, 100 classes, uniform init", 30.0, 300),
    "ig": Case("Inverting Gradients", "MLP 256-256 sigmoid, torch init", 35.0, 1000),
    "bypass": Case("PRECODE bypass", "MLP 256-256 sigmoid + PRECODE", 22.0, 400, stop_at_target=False),
    "grnn": Case("GRNN", "LeNet-5 sigmoid, 100 classes, uniform init", 22.0, 1500),
    "analytic": Case("analytic", "MLP 256-256 sigmoid, torch init", None, 200),
}
QUICK = {
    "ig": Case("Inverting Gradients", "MLP 256-256 sigmoid, torch init", 30.0, 1000),
    "bypass": Case("PRECODE bypass", "MLP 256-256 sigmoid + PRECODE", 22.0, 100, stop_at_target=False),
    "grnn": Case("GRNN", "LeNet-5 sigmoid, 100 classes, uniform init", 15.0, 1500),
    "analytic": Case("analytic", "MLP 256-256 sigmoid, torch init", None, 50),
}
# restarts case: attack -> (iterations, quick iterations)
RESTARTS = {"dlg": (50, 10), "ig": (200, 20)}
RESTART_COUNTS = (1, 8)
RESTARTS_TARGET = 2.0
DLG_TARGET_RATIO = 0.25
ATTACK_CASES = ["dlg", "idlg", "ig", "bypass", "grnn", "analytic"]
ALL_CASES = ATTACK_CASES + ["restarts"]
# what a row of the table needs from every run
FIELDS = (
    "reached", "seconds_to", "evaluations_to", "seconds", "wall_s", "evaluations", "iterations",
    "evals_per_s", "ms_per_eval", "final_psnr", "initial_loss", "threads",
)


def case_settings(case: str, quick: bool) -> Case:
    return QUICK.get(case, CASES[case]) if quick else CASES[case]


# --------------------------------------------------------------------------
# Machine and memory
# --------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine() -> dict:
    """The machine the numbers come from: CPU, cores, memory, torch, threads, load."""
    return {
        "cpu": _cpu_model(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "mem_total_gb": _mem_total_gb(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_default_threads": DEFAULT_THREADS,
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def describe_machine(m: dict) -> str:
    load = " ".join(f"{v:.2f}" for v in m["loadavg"]) if m.get("loadavg") else "n/a"
    return (f"{m['cpu']} ({m['machine']}), {m['cpu_count']} CPUs ({m['cpus_usable']} usable), "
            f"{m['mem_total_gb']} GB RAM, Python {m['python']}, torch {m['torch']} "
            f"(default threads {m['torch_default_threads']}), load average {load}")


def rss_mb(field: str = "VmRSS") -> float | None:
    """This process's resident memory (``VmRSS``) or its peak (``VmHWM``), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    if field == "VmHWM":
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KB on Linux
    return None


# --------------------------------------------------------------------------
# Victims, built as the package builds them (the CLI's choices)
# --------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _photo_set() -> tuple[torch.Tensor, torch.Tensor]:
    cached = os.environ.get(PHOTOS_ENV)
    if cached and Path(cached).exists():  # the parent's gleak_edu.data.photos(), saved once (2 s per load)
        d = torch.load(cached)
        return d["images"], d["labels"]
    s = gleak_edu.data.photos()
    return s.images, s.labels


def photo(index: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = _photo_set()
    return images[index : index + 1].clone(), labels[index : index + 1].clone()


def build_victim(case: str, seed: int, photo_index: int = 0) -> dict:
    """The model, the private photo and label, and the shared gradient for ``case``."""
    x, y = photo(photo_index)
    if case in ("dlg", "idlg"):
        model = gleak_edu.models.build_model("lenet-zhu", SHAPE, NUM_CLASSES, "sigmoid", seed=seed)
    elif case == "grnn":
        model = gleak_edu.models.build_model("lenet5", SHAPE, NUM_CLASSES, "sigmoid", seed=seed)
    elif case in ("ig", "analytic", "bypass"):
        model = gleak_edu.models.build_model("mlp", SHAPE, NUM_CLASSES, "sigmoid", seed=seed, init="pytorch")
        if case == "bypass":
            gleak_edu.defenses.add_precode(model)  # bottleneck 256, beta 1e-3, its weights from seed 0
            model.train()
    else:
        raise ValueError(f"unknown case {case!r}")
    torch.manual_seed(seed)  # PRECODE's sample in the victim's step (as the CLI does)
    shared = gleak_edu.fl.client_gradient(model, x, y)
    return {"model": model, "x": x, "y": y, "shared": shared}


def weights_fingerprint(model: nn.Module) -> float:
    with torch.no_grad():
        return float(sum(p.double().abs().sum() for p in model.parameters()))


# --------------------------------------------------------------------------
# Plain reference loops (written independently of gleak_edu.attacks)
# --------------------------------------------------------------------------
def _plain(model: nn.Module, threads: int | None) -> int:
    torch.set_num_threads(threads or DEFAULT_THREADS)
    torch.set_flush_denormal(False)
    bench_dlg.check_plain(model)
    return torch.get_num_threads()


def _tv(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation, mean absolute differences along height and width."""
    dh = x[:, :, 1:, :] - x[:, :, :-1, :]
    dw = x[:, :, :, 1:] - x[:, :, :, :-1]
    return torch.mean(torch.abs(dh)) + torch.mean(torch.abs(dw))


def _output_bias_label(model: nn.Module, shared) -> torch.Tensor:
    """The label of one image: the only negative entry of the output layer's bias gradient."""
    last_bias = [n for n, p in model.named_parameters() if p.requires_grad and n.endswith("bias")][-1]
    return shared[last_bias].argmin().view(1)


def _result(history, seconds, evals, it, target_db, threads, message, psnr, loss) -> dict:
    hit = next((h for h in history if target_db is not None and h["psnr"] >= target_db), None)
    return {
        "reached": hit is not None,
        "seconds_to": hit["seconds"] if hit else None,
        "evaluations_to": hit["evaluations"] if hit else None,
        "iterations_to": hit["iteration"] if hit else None,
        "seconds": seconds,
        "evaluations": evals,
        "iterations": it,
        "evals_per_s": evals / seconds if seconds > 0 else None,
        "ms_per_eval": 1000.0 * seconds / max(evals, 1),
        "final_psnr": psnr,
        "final_loss": loss,
        "initial_loss": history[0]["loss"] if history else None,
        "message": message,
        "threads": threads,
        "history": history,
    }


def reference_inverting(model, shared, x_true, seed, iterations, target_db, *, tv_weight=1e-4, layers=None,
                        stop_at_target=True, threads=None) -> dict:
    """Inverting Gradients' loop (Geiping et al. 2020, as in their inversefed code), in plain torch.

    Dummy uniform in [0, 1] (``torch.rand`` from a generator seeded with ``seed``),
    objective ``1 - <g, g*> / (||g|| ||g*||)`` over the matched parameters plus
    ``tv_weight * TV(x)``, ``objective.backward()``, the sign of x's gradient, Adam
    (lr 0.1), step size /10 at int(3/8, 5/8, 7/8 of the budget), clamp to [0, 1].
    ``layers``: names of the matched parameters (default all). The recorded loss is the
    cosine distance at the start of the step; PSNR is that of the estimate after it.
    """
    threads_seen = _plain(model, threads)
    named = dict(model.named_parameters())
    layers = list(layers) if layers is not None else [n for n, p in model.named_parameters() if p.requires_grad]
    matched = [named[n] for n in layers]
    target = [shared[n].detach() for n in layers]
    target_norm = torch.sqrt(sum((t * t).sum() for t in target))
    label = _output_bias_label(model, shared)

    gen = torch.Generator().manual_seed(int(seed))
    x = torch.rand(x_true.shape, generator=gen).requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=0.1)
    milestones = [int(iterations * 3 / 8), int(iterations * 5 / 8), int(iterations * 7 / 8)]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)

    seconds, history, message = 0.0, [], f"ran all {iterations} steps"
    psnr = loss = float("nan")
    it = 0
    for it in range(1, iterations + 1):
        t0 = time.perf_counter()
        optimizer.zero_grad()
        model.zero_grad()
        pred = model(x)
        dummy_loss = F.cross_entropy(pred, label)
        grads = torch.autograd.grad(dummy_loss, matched, create_graph=True)
        dot = 0
        norm2 = 0
        for g, t in zip(grads, target):
            dot = dot + (g * t).sum()
            norm2 = norm2 + (g * g).sum()
        cosine = 1 - dot / (torch.sqrt(norm2) * target_norm)
        objective = cosine + tv_weight * _tv(x)
        objective.backward()
        x.grad.sign_()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            x.clamp_(0, 1)
        seconds += time.perf_counter() - t0
        loss = float(cosine.detach())
        psnr = float(gleak_edu.metrics.psnr(x.detach(), x_true).mean())
        history.append({"iteration": it, "evaluations": it, "seconds": seconds, "loss": loss, "psnr": psnr})
        if stop_at_target and target_db is not None and psnr >= target_db:
            message = f"reached {target_db:g} dB at step {it}"
            break
    model.zero_grad(set_to_none=True)
    return _result(history, seconds, it, it, target_db, threads_seen, message, psnr, loss)


def reference_bypass(model, shared, x_true, seed, iterations, target_db, *, stop_at_target=False, threads=None) -> dict:
    """The PRECODE bypass: the IG loop on the layers that run before the bottleneck and its encoder.

    As the package does, the attacker runs the model in eval mode (the bottleneck's mean)
    and uses TV 1e-3. The matched names follow ``add_precode``'s naming: everything but
    ``classifier.0.decoder.*`` and ``classifier.1.*`` (the layers after the sampling).
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    layers = [n for n in names if not (n.startswith("classifier.0.decoder.") or n.startswith("classifier.1."))]
    was_training = model.training
    model.eval()
    try:
        return reference_inverting(model, shared, x_true, seed, iterations, target_db, tv_weight=1e-3, layers=layers,
                                   stop_at_target=stop_at_target, threads=threads)
    finally:
        model.train(was_training)


def reference_grnn(model, shared, x_true, seed, iterations, target_db, *, tv_weight=1e-3, stop_at_target=True,
                   threads=None) -> dict:
    """GRNN's loop (Ren, Deng, Xie 2022) in plain torch.

    The generator is ``gleak_edu.attacks.GRNNGenerator`` built after ``torch.manual_seed(seed)``
    with z ~ N(0, I) drawn right after it (the package's init). Per step: fake images and
    soft labels, the victim's soft-label cross-entropy, ``autograd.grad(create_graph=True)``,
    ``d = sum ||g - g*||^2``, loss ``d + sqrt(d) + tv_weight * TV(fake)``, ``loss.backward()``,
    RMSprop (lr 1e-4, momentum 0.99). The recorded loss and PSNR are those of the
    generator's output at the start of the step.
    """
    threads_seen = _plain(model, threads)
    b, c, h, w = x_true.shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        generator = gleak_edu.attacks.GRNNGenerator((c, h, w), NUM_CLASSES, z_dim=128)
        z = torch.randn(b, 128)
    params = [p for p in model.parameters() if p.requires_grad]
    origin = [shared[n].detach() for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.RMSprop(generator.parameters(), lr=1e-4, momentum=0.99)

    seconds, history, message = 0.0, [], f"ran all {iterations} steps"
    psnr = loss = float("nan")
    it = 0
    for it in range(1, iterations + 1):
        t0 = time.perf_counter()
        optimizer.zero_grad()
        fake, soft = generator(z)
        pred = model(fake)
        dummy_loss = torch.mean(torch.sum(-soft * F.log_softmax(pred, dim=-1), dim=-1))
        dy_dx = torch.autograd.grad(dummy_loss, params, create_graph=True)
        grad_diff = 0
        for gx, gy in zip(dy_dx, origin):
            grad_diff = grad_diff + ((gx - gy) ** 2).sum()
        total = grad_diff + torch.sqrt(grad_diff) + tv_weight * _tv(fake)
        total.backward()
        optimizer.step()
        seconds += time.perf_counter() - t0
        loss = float(total.detach())
        psnr = float(gleak_edu.metrics.psnr(fake.detach(), x_true).mean())
        history.append({"iteration": it, "evaluations": it, "seconds": seconds, "loss": loss, "psnr": psnr})
        if not math.isfinite(loss):
            message = f"non-finite loss at step {it}"
            break
        if stop_at_target and target_db is not None and psnr >= target_db:
            message = f"reached {target_db:g} dB at step {it}"
            break
    for p in params:  # loss.backward() also accumulated into the victim's .grad; drop it
        p.grad = None
    return _result(history, seconds, it, it, target_db, threads_seen, message, psnr, loss)


def reference_analytic_once(shared, shape) -> torch.Tensor:
    """Phong et al.'s formula: x = dL/dW[i, :] / dL/db[i] for the row with the largest |dL/db[i]|."""
    gw, gb = shared["features.0.weight"], shared["features.0.bias"]
    i = torch.argmax(torch.abs(gb))
    return (gw[i] / gb[i]).reshape(shape)


def _timed_repeats(fn, repeats: int) -> tuple[torch.Tensor, float, float]:
    """(last output, median seconds per call, total seconds) over ``repeats`` calls."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times), sum(times)


def _analytic_result(out, x, per_call, total, repeats, threads, initial_loss) -> dict:
    err = float((out - x).abs().max())
    return {
        "reached": err < 1e-4,
        "seconds_to": per_call,
        "evaluations_to": 1,
        "iterations_to": 1,
        "seconds": total,
        "evaluations": repeats,
        "iterations": repeats,
        "evals_per_s": 1.0 / per_call if per_call > 0 else None,
        "ms_per_eval": 1000.0 * per_call,
        "final_psnr": float(gleak_edu.metrics.psnr(out, x).mean()),
        "final_loss": err,
        "initial_loss": initial_loss,
        "max_abs_error": err,
        "message": f"median of {repeats} recoveries; max |x - x_true| = {err:.2e}",
        "threads": threads,
        "history": [],
    }


# --------------------------------------------------------------------------
# The package
# --------------------------------------------------------------------------
def package_attack(case: str, v: dict, seed: int, settings: Case, **extra) -> dict:
    """The package's attack with its defaults, stopped at the target by a callback when the case says so."""
    model, shared, x, y = v["model"], v["shared"], v["x"], v["y"]
    target = settings.target_db
    threads_seen: list[int] = []

    def stop_at_target(state):
        if not threads_seen:
            threads_seen.append(torch.get_num_threads())
        return settings.stop_at_target and state.psnr is not None and state.psnr >= target

    fn = {
        "dlg": gleak_edu.attacks.dlg,
        "idlg": gleak_edu.attacks.idlg,
        "ig": gleak_edu.attacks.inverting_gradients,
        "bypass": gleak_edu.attacks.precode_bypass,
        "grnn": gleak_edu.attacks.grnn,
    }[case]
    t0 = time.perf_counter()
    r = fn(model, shared, input_shape=tuple(x.shape), num_classes=NUM_CLASSES, iterations=settings.iterations, seed=seed,
           truth=(x, y), callback=stop_at_target, options=gleak_edu.attacks.AttackOptions(callback_every=1),
           **extra)
    wall = time.perf_counter() - t0
    out = _result(r.history, r.seconds, r.evaluations, r.iterations, target, threads_seen[0] if threads_seen else None,
                  r.message, (r.metrics or {}).get("psnr_mean"), r.loss)
    out["final_psnr_last"] = r.history[-1].get("psnr") if r.history else None
    out["restarts"] = r.restarts
    out["wall_s"] = wall
    return out


def _package_analytic(v: dict, repeats: int) -> dict:
    shape = tuple(v["x"].shape)
    fn = functools.partial(gleak_edu.attacks.analytic_recovery, v["model"], v["shared"], input_shape=shape)
    t0 = time.perf_counter()
    out, per_call, total = _timed_repeats(fn, repeats)
    res = _analytic_result(out.reconstruction, v["x"], per_call, total, repeats, torch.get_num_threads(), None)
    res["wall_s"] = time.perf_counter() - t0
    return res


def _reference_analytic(v: dict, repeats: int, threads: int | None) -> dict:
    threads_seen = _plain(v["model"], threads)
    shape = tuple(v["x"].shape)
    t0 = time.perf_counter()
    out, per_call, total = _timed_repeats(lambda: reference_analytic_once(v["shared"], shape), repeats)
    res = _analytic_result(out, v["x"], per_call, total, repeats, threads_seen, None)
    res["wall_s"] = time.perf_counter() - t0
    return res


# --------------------------------------------------------------------------
# One run: (case, variant, seed)
# --------------------------------------------------------------------------
def batched_restarts_available() -> bool:
    """True once AttackResult carries ``per_restart`` (the batched-restarts API).

    ``dlg`` and ``inverting_gradients`` already take ``restarts`` (sequential restarts on
    failure / best of several runs), so the keyword alone says nothing; the result field does.
    """
    cls = gleak_edu.attacks.AttackResult
    return "per_restart" in {f.name for f in dataclasses.fields(cls)} or hasattr(cls, "per_restart")


SKIPPED_RESTARTS = "skipped: batched restarts not available"


def run_restarts(attack: str, restarts: int, seed: int, photo_index: int, iterations: int, halving: bool = True) -> dict:
    """The package's ``attack`` ("dlg" or "ig") with ``restarts`` batched restarts for a fixed budget.

    ``halving=False`` runs every restart to the end (``successive_halving=False``).
    """
    if not batched_restarts_available():
        return {"skipped": SKIPPED_RESTARTS}
    v = build_victim(attack, seed, photo_index)
    fn = {"dlg": gleak_edu.attacks.dlg, "ig": gleak_edu.attacks.inverting_gradients}[attack]
    kwargs = dict(input_shape=tuple(v["x"].shape), num_classes=NUM_CLASSES, iterations=iterations, seed=seed)
    try:
        t0 = time.perf_counter()
        options = gleak_edu.attacks.AttackOptions(restarts=restarts, successive_halving=halving if restarts > 1 else True)
        r = fn(v["model"], v["shared"], options=options, **kwargs)
        wall = time.perf_counter() - t0
    except TypeError as exc:  # an API in between
        return {"skipped": f"{SKIPPED_RESTARTS} ({exc})"}
    per = getattr(r, "per_restart", None)
    if per is None or len(per) != restarts or r.restarts != restarts:
        return {"skipped": f"{SKIPPED_RESTARTS} (restarts={r.restarts}, per_restart has "
                           f"{None if per is None else len(per)} entries for {restarts})"}
    return {
        "skipped": None,
        "restarts": r.restarts,
        "budget": iterations,
        "wall_s": wall,
        "seconds": r.seconds,
        "evaluations": r.evaluations,
        "iterations": r.iterations,
        "per_restart_loss": [p.get("loss") for p in per],
        "per_restart_psnr": [p.get("psnr") for p in per],
        "best_loss": r.loss,
        "best_psnr": float(gleak_edu.metrics.psnr(r.reconstruction, v["x"]).mean()),
        "threads": torch.get_num_threads(),
        "message": r.message,
    }


def variants(case: str) -> list[str]:
    if case == "restarts":
        return [f"{a}-r{k}" for a in RESTARTS for k in RESTART_COUNTS] + [f"{a}-r{RESTART_COUNTS[1]}full" for a in RESTARTS]
    return ["ref", "pkg"]


def run_case(case: str, variant: str, seed: int, photo_index: int = 0, *, quick: bool = False,
             iterations: int | None = None, target_db: float | None = None, threads: int | None = None) -> dict:
    """One timed run in this process. ``iterations``/``target_db`` override the case's (tests)."""
    if case == "restarts":
        attack, k = variant.split("-r")
        its = iterations or RESTARTS[attack][1 if quick else 0]
        full = k.endswith("full")  # every restart to the end: no successive halving
        return run_restarts(attack, int(k.removesuffix("full")), seed, photo_index, its, halving=not full)
    settings = case_settings(case, quick)
    if iterations is not None:
        settings = dataclasses.replace(settings, iterations=iterations)
    if target_db is not None:
        settings = dataclasses.replace(settings, target_db=target_db)
    v = build_victim(case, seed, photo_index)
    fp = weights_fingerprint(v["model"])
    model, shared, x = v["model"], v["shared"], v["x"]
    its, target = settings.iterations, settings.target_db
    if variant == "pkg":
        if case == "analytic":
            out = _package_analytic(v, its)
        else:
            out = package_attack(case, v, seed, settings)
    elif variant == "ref":
        t0 = time.perf_counter()
        if case == "dlg":
            out = bench_dlg.reference_dlg(model, shared, x, seed, threads or DEFAULT_THREADS, its, target)
        elif case == "idlg":
            label = torch.argmin(torch.sum(shared["classifier.weight"], dim=-1)).view(1)  # iDLG's rule
            out = bench_dlg.reference_dlg(model, shared, x, seed, threads or DEFAULT_THREADS, its, target, label=label)
        elif case == "ig":
            out = reference_inverting(model, shared, x, seed, its, target, stop_at_target=settings.stop_at_target,
                                      threads=threads)
        elif case == "bypass":
            out = reference_bypass(model, shared, x, seed, its, target, stop_at_target=settings.stop_at_target,
                                   threads=threads)
        elif case == "grnn":
            out = reference_grnn(model, shared, x, seed, its, target, stop_at_target=settings.stop_at_target,
                                 threads=threads)
        elif case == "analytic":
            out = _reference_analytic(v, its, threads)
        else:
            raise ValueError(case)
        out.setdefault("wall_s", time.perf_counter() - t0)
        if case in ("dlg", "idlg"):  # bench_dlg's dict: add what the table needs
            out["evals_per_s"] = out["evaluations"] / out["seconds"] if out["seconds"] > 0 else None
            out["initial_loss"] = out["history"][0]["loss"] if out["history"] else None
        torch.set_num_threads(DEFAULT_THREADS)
    else:
        raise ValueError(f"unknown variant {variant!r}")
    if weights_fingerprint(model) != fp:
        raise RuntimeError(f"the victim's weights changed during the {case}/{variant} run")
    out["target_db"] = target
    out["budget"] = its
    return out


def warm_up(case: str, variant: str, photo_index: int, quick: bool, ref_threads: int | None = None) -> None:
    """A few untimed steps of the same variant (another dummy seed), so first-call costs are not timed."""
    if case == "restarts":
        attack, k = variant.split("-r")
        if batched_restarts_available():
            run_restarts(attack, int(k.removesuffix("full")), 12345, photo_index, 2, halving=not k.endswith("full"))
        return
    run_case(case, variant, 12345, photo_index, quick=quick, iterations=3 if case != "analytic" else 20,
             target_db=math.inf if case != "analytic" else None, threads=ref_threads)


def child_main(case: str, variant: str, seed: int, photo_index: int, quick: bool, warmup: bool,
               ref_threads: int | None = None) -> dict:
    """What a subprocess runs: warm-up, one timed run, then its peak memory."""
    build_victim(case if case != "restarts" else variant.split("-r")[0], seed, photo_index)
    baseline = rss_mb("VmRSS")
    if warmup:
        warm_up(case, variant, photo_index, quick, ref_threads)
    out = run_case(case, variant, seed, photo_index, quick=quick, threads=ref_threads)
    out["rss_baseline_mb"] = baseline
    out["peak_rss_mb"] = rss_mb("VmHWM")
    return out


def run_in_child(case: str, variant: str, seed: int, photo_index: int, quick: bool, warmup: bool, env: dict,
                 ref_threads: int | None = None, timeout: float = 900.0) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", case, variant, str(seed),
           "--photo", str(photo_index)] + (["--quick"] if quick else []) + ([] if warmup else ["--no-warmup"])
    if ref_threads:
        cmd += ["--ref-threads", str(ref_threads)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    return {"error": f"exit status {p.returncode}: {p.stderr.strip()[-800:]}"}


# --------------------------------------------------------------------------
# Summary and printing
# --------------------------------------------------------------------------
def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def fmt(v, spec=".2f", none="-"):
    return none if v is None else format(v, spec)


def summarise(runs: list[dict]) -> dict:
    """Per case: medians over seeds for each variant, and the paired ratios package/reference."""
    by_case: dict[str, dict] = {}
    for case in ATTACK_CASES:
        rows = [r for r in runs if r["case"] == case]
        if not rows:
            continue
        seeds = sorted({r["seed"] for r in rows})
        pairs = []
        for s in seeds:
            ref = next((r["result"] for r in rows if r["seed"] == s and r["variant"] == "ref"), None)
            pkg = next((r["result"] for r in rows if r["seed"] == s and r["variant"] == "pkg"), None)
            if ref and pkg and "error" not in ref and "error" not in pkg:
                pairs.append((s, ref, pkg))
        side = {}
        for name, idx in (("ref", 1), ("pkg", 2)):
            res = [p[idx] for p in pairs]
            spent = sum(r["seconds"] for r in res)
            hits = sum(bool(r["reached"]) for r in res)
            side[name] = {
                "reached": hits,
                "n": len(res),
                "median_seconds_to": _median([r["seconds_to"] for r in res]),
                "median_evals_per_s": _median([r["evals_per_s"] for r in res]),
                "median_ms_per_eval": _median([r["ms_per_eval"] for r in res]),
                "median_final_psnr": _median([r["final_psnr"] for r in res]),
                "median_peak_rss_mb": _median([r.get("peak_rss_mb") for r in res]),
                "median_rss_baseline_mb": _median([r.get("rss_baseline_mb") for r in res]),
                "median_peak_increase_mb": _median([r["peak_rss_mb"] - r["rss_baseline_mb"] for r in res
                                                    if r.get("peak_rss_mb") is not None and r.get("rss_baseline_mb") is not None]),
                "seconds_per_success": spent / hits if hits else None,
                "threads": res[0]["threads"] if res else None,
            }
        time_ratios = [_ratio(p[2]["seconds_to"], p[1]["seconds_to"]) for p in pairs]
        both = [t for t in time_ratios if t is not None]
        c = dataclasses.asdict(CASES[case])
        c.update(target_db=pairs[0][1].get("target_db") if pairs else None, budget=pairs[0][1].get("budget") if pairs else None)
        by_case[case] = {
            "case": c,
            "seeds": [p[0] for p in pairs],
            "errors": [f"seed {r['seed']} {r['variant']}: {r['result']['error']}" for r in rows if "error" in r["result"]],
            "ref": side["ref"],
            "pkg": side["pkg"],
            "time_ratio": _median(both),
            "time_ratio_seeds": len(both),
            "evals_per_s_ratio": _median([_ratio(p[2]["evals_per_s"], p[1]["evals_per_s"]) for p in pairs]),
            "peak_rss_ratio": _ratio(side["pkg"]["median_peak_rss_mb"], side["ref"]["median_peak_rss_mb"]),
            "per_seed": [{"seed": p[0], "time_ratio": _ratio(p[2]["seconds_to"], p[1]["seconds_to"]),
                          "evals_per_s_ratio": _ratio(p[2]["evals_per_s"], p[1]["evals_per_s"])} for p in pairs],
        }
    return by_case


def summarise_restarts(runs: list[dict]) -> dict:
    out = {}
    for attack in RESTARTS:
        rows = [r for r in runs if r["case"] == "restarts" and r["variant"].startswith(attack + "-r")]
        if not rows:
            continue
        skipped = next((r["result"]["skipped"] for r in rows if r["result"].get("skipped")), None)
        errors = [f"seed {r['seed']} {r['variant']}: {r['result']['error']}" for r in rows if "error" in r["result"]]
        if skipped or errors:
            out[attack] = {"skipped": skipped or "errors", "errors": errors}
            continue
        seeds = sorted({r["seed"] for r in rows})
        get = {(r["seed"], r["variant"]): r["result"] for r in rows}
        lo, hi = RESTART_COUNTS
        per_seed = []
        for s in seeds:
            a, b = get.get((s, f"{attack}-r{lo}")), get.get((s, f"{attack}-r{hi}"))
            full = get.get((s, f"{attack}-r{hi}full"))
            if a and b:
                per_seed.append({
                    "seed": s,
                    "wall_ratio": _ratio(b["wall_s"], a["wall_s"]),
                    "wall_ratio_no_halving": _ratio(full["wall_s"], a["wall_s"]) if full else None,
                    "best_psnr_no_halving": full["best_psnr"] if full else None,
                    "compute_ratio": _ratio(b["seconds"], a["seconds"]),
                    f"wall_s_r{lo}": a["wall_s"], f"wall_s_r{hi}": b["wall_s"],
                    f"evaluations_r{lo}": a["evaluations"], f"evaluations_r{hi}": b["evaluations"],
                    f"iterations_r{lo}": a["iterations"], f"iterations_r{hi}": b["iterations"],
                    f"best_psnr_r{lo}": a["best_psnr"], f"best_psnr_r{hi}": b["best_psnr"],
                    f"peak_rss_mb_r{lo}": a.get("peak_rss_mb"), f"peak_rss_mb_r{hi}": b.get("peak_rss_mb"),
                })
        ratio = _median([p["wall_ratio"] for p in per_seed])
        out[attack] = {
            "skipped": None,
            "budget": rows[0]["result"].get("budget"),
            "per_seed": per_seed,
            "median_wall_ratio": ratio,
            "median_compute_ratio": _median([p["compute_ratio"] for p in per_seed]),
            "median_wall_ratio_no_halving": _median([p["wall_ratio_no_halving"] for p in per_seed if p["wall_ratio_no_halving"]]),
            "median_best_psnr_no_halving": _median([p["best_psnr_no_halving"] for p in per_seed if p["best_psnr_no_halving"]]),
            f"median_wall_s_r{lo}": _median([p[f"wall_s_r{lo}"] for p in per_seed]),
            f"median_wall_s_r{hi}": _median([p[f"wall_s_r{hi}"] for p in per_seed]),
            f"median_best_psnr_r{lo}": _median([p[f"best_psnr_r{lo}"] for p in per_seed]),
            f"median_best_psnr_r{hi}": _median([p[f"best_psnr_r{hi}"] for p in per_seed]),
            f"median_peak_rss_mb_r{lo}": _median([p[f"peak_rss_mb_r{lo}"] for p in per_seed]),
            f"median_peak_rss_mb_r{hi}": _median([p[f"peak_rss_mb_r{hi}"] for p in per_seed]),
            "target": RESTARTS_TARGET,
            "pass": None if ratio is None else ratio <= RESTARTS_TARGET,
        }
    return out


def target_label(case: dict) -> str:
    return "exact (1e-4)" if case["target_db"] is None else f"{case['target_db']:g} dB"


def print_table(summary: dict, restarts: dict, file=sys.stdout) -> None:
    p = functools.partial(print, file=file)
    if summary:
        _print_attacks(summary, p)
    if restarts:
        _print_restarts(restarts, p)


def _print_attacks(summary: dict, p) -> None:
    head = f"{'hit':>5} {'t-target s':>10} {'eval/s':>8} {'peak MB (+)':>11}"
    p()
    p(f"{'attack':<20} {'target':<12} | {'reference (plain torch)':^37} | {'gleak_edu':^37} | "
      f"{'ratios package/reference':^30}")
    p(f"{'':<20} {'':<12} | {head} | {head} | {'t-target':>12} {'eval/s':>8} {'peak MB':>8}")
    p("-" * 145)
    for key, s in summary.items():
        c = s["case"]
        cells = []
        for side in ("ref", "pkg"):
            d = s[side]
            t_spec = ".2e" if key == "analytic" else ".2f"
            mem = fmt(d["median_peak_rss_mb"], ".0f")
            if d.get("median_peak_increase_mb") is not None:
                mem += f" (+{d['median_peak_increase_mb']:.0f})"
            cells.append(f"{d['reached']:>2}/{d['n']:<2} {fmt(d['median_seconds_to'], t_spec):>10} "
                         f"{fmt(d['median_evals_per_s'], '.0f'):>8} {mem:>11}")
        tr = fmt(s["time_ratio"], ".3g") + (f" ({s['time_ratio_seeds']})" if s["time_ratio"] is not None else "")
        p(f"{c['name']:<20} {target_label(c):<12} | {cells[0]} | {cells[1]} | {tr:>12} "
          f"{fmt(s['evals_per_s_ratio'], '.3g'):>8} {fmt(s['peak_rss_ratio'], '.2f'):>8}")
        for e in s["errors"]:
            p(f"    ERROR {e}")
    p("-" * 145)
    p("hit: runs that reached the target / runs; t-target: median compute seconds to the target (analytic: per "
      "recovery) over the runs that reached it; eval/s: median gradient-matching evaluations per second "
      "(analytic: recoveries per second); peak MB: median max RSS of the run's process (in brackets: its increase "
      "over the process's RSS once the victim was built, before warm-up and attack).")
    p("ratios: median over seeds of package/reference (t-target: over the seeds where both reached the target, "
      "count in brackets; lower is better; eval/s: higher is better).")


def _print_restarts(restarts: dict, p) -> None:
    if restarts:
        lo, hi = RESTART_COUNTS
        p()
        p(f"batched restarts: wall time of restarts={hi} / restarts={lo}, same fixed budget, no PSNR stop "
          f"(target <= {RESTARTS_TARGET:g})")
        for attack, r in restarts.items():
            if r.get("skipped"):
                p(f"  {attack:<4}: {r['skipped']}" + "".join(f"\n    ERROR {e}" for e in r.get("errors", [])))
                continue
            p(f"  {attack:<4}: {r['budget']}-iteration budget, seeds {[q['seed'] for q in r['per_seed']]}: "
              f"wall {fmt(r[f'median_wall_s_r{lo}'])} s -> {fmt(r[f'median_wall_s_r{hi}'])} s, ratio "
              f"{fmt(r['median_wall_ratio'], '.2f')} (compute clock {fmt(r['median_compute_ratio'], '.2f')}), best PSNR "
              f"{fmt(r[f'median_best_psnr_r{lo}'], '.1f')} -> {fmt(r[f'median_best_psnr_r{hi}'], '.1f')} dB, peak "
              f"{fmt(r[f'median_peak_rss_mb_r{lo}'], '.0f')} -> {fmt(r[f'median_peak_rss_mb_r{hi}'], '.0f')} MB: "
              f"{'PASS' if r['pass'] else 'FAIL'}")
            p(f"        without successive halving (all {hi} to the end): ratio "
              f"{fmt(r.get('median_wall_ratio_no_halving'), '.2f')}, best PSNR {fmt(r.get('median_best_psnr_no_halving'), '.1f')} dB")


def verdicts(summary: dict, restarts: dict) -> list[str]:
    out = []
    d = summary.get("dlg")
    if d:
        tr, target = d["time_ratio"], d["case"]["target_db"]
        v = f"n/a (no seed where both reached {target:g} dB)" if tr is None else ("PASS" if tr <= DLG_TARGET_RATIO else "FAIL")
        out.append(f"DLG time-to-{target:g}-dB package/reference: {fmt(tr, '.3f')} over "
                   f"{d['time_ratio_seeds']} seed(s) (target <= {DLG_TARGET_RATIO:g}): {v}; evaluations/s ratio "
                   f"{fmt(d['evals_per_s_ratio'], '.2f')}; reached: reference {d['ref']['reached']}/{d['ref']['n']}, "
                   f"package {d['pkg']['reached']}/{d['pkg']['n']}; compute seconds per success: reference "
                   f"{fmt(d['ref']['seconds_per_success'])}, package {fmt(d['pkg']['seconds_per_success'])}")
    for attack, r in restarts.items():
        if r.get("skipped"):
            out.append(f"{attack} 8 restarts / 1 restart: {r['skipped']}")
        else:
            out.append(f"{attack} 8 restarts / 1 restart wall time: {fmt(r['median_wall_ratio'], '.2f')} "
                       f"(target <= {RESTARTS_TARGET:g}): {'PASS' if r['pass'] else 'FAIL'}")
    return out


def strip(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "history"}


def run_suite(seeds, cases, photo_index=0, quick=False, in_process=False, warmup=True, ref_threads=None,
              log=print) -> dict:
    """Run the cases for every seed (reference and package interleaved) and return the results dict."""
    m = machine()
    log(f"attack benchmark{' (--quick)' if quick else ''}: photo {photo_index}, seeds {list(seeds)}, cases {list(cases)}")
    log(f"machine: {describe_machine(m)}")
    if "restarts" in cases and not batched_restarts_available():
        log(f"restarts: {SKIPPED_RESTARTS} (AttackResult has no per_restart)")
    env = dict(os.environ)
    tmp = tempfile.TemporaryDirectory(prefix="gleak_bench_")
    if not in_process:
        s = gleak_edu.data.photos()
        path = Path(tmp.name) / "photos.pt"
        torch.save({"images": s.images, "labels": s.labels}, path)
        env[PHOTOS_ENV] = str(path)
    runs = []
    t_start = time.perf_counter()
    try:
        for seed in seeds:
            for case in cases:
                for variant in variants(case):
                    if case == "restarts" and not batched_restarts_available():
                        res = {"skipped": SKIPPED_RESTARTS}
                    elif in_process:
                        if warmup:
                            warm_up(case, variant, photo_index, quick, ref_threads)
                        try:
                            res = strip(run_case(case, variant, seed, photo_index, quick=quick, threads=ref_threads))
                        except Exception as exc:  # keep going; the table shows it
                            res = {"error": repr(exc)}
                    else:
                        res = run_in_child(case, variant, seed, photo_index, quick, warmup, env, ref_threads)
                    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
                    res["load1_after"] = load1
                    runs.append({"case": case, "variant": variant, "seed": seed, "result": res})
                    log(_run_line(case, variant, seed, res))
    finally:
        tmp.cleanup()
    m["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    summary = summarise(runs)
    restarts = summarise_restarts(runs)
    return {
        "machine": m,
        "settings": {"seeds": list(seeds), "cases": list(cases), "photo": photo_index, "quick": quick,
                     "in_process": in_process, "warmup": warmup, "ref_threads": ref_threads or DEFAULT_THREADS,
                     "memory": "max RSS (VmHWM) of the run's own subprocess" if not in_process else "not measured (--in-process)"},
        "wall_s": time.perf_counter() - t_start,
        "summary": summary,
        "restarts": restarts,
        "verdicts": verdicts(summary, restarts) + (
            ["--quick: one seed, short budgets and lower targets; fixed costs weigh more, so these ratios are "
             "indicative only (the targets are judged on the full run)"] if quick else []),
        "runs": runs,
    }


def _run_line(case, variant, seed, r) -> str:
    if r.get("error"):
        return f"  seed {seed} {case:<8} {variant:<7}: ERROR {r['error']}"
    if r.get("skipped"):
        return f"  seed {seed} {case:<8} {variant:<7}: {r['skipped']}"
    if case == "restarts":
        return (f"  seed {seed} {case:<8} {variant:<7}: wall {r['wall_s']:.2f} s (compute {r['seconds']:.2f} s), "
                f"{r['iterations']} iterations, {r['evaluations']} evals, best psnr {r['best_psnr']:.1f}, "
                f"per-restart loss {['%.3g' % v for v in r['per_restart_loss'] if v is not None]}, "
                f"peak {fmt(r.get('peak_rss_mb'), '.0f')} MB")
    return (f"  seed {seed} {case:<8} {variant:<7}: {'reached' if r['reached'] else 'MISSED '} "
            f"t={fmt(r['seconds_to'], '.3g')} s  e={fmt(r['evaluations_to'], 'd')}  total {r['seconds']:.2f} s / "
            f"{r['evaluations']} evals = {fmt(r['evals_per_s'], '.0f')} eval/s, psnr={fmt(r['final_psnr'], '.1f')}, "
            f"threads={r['threads']}, peak={fmt(r.get('peak_rss_mb'), '.0f')} MB, load1={fmt(r.get('load1_after'))}; "
            f"{r['message']}")


def print_report(results: dict) -> None:
    print_table(results["summary"], results["restarts"])
    print()
    for v in results["verdicts"]:
        print(v)
    m = results["machine"]
    print(f"machine: {describe_machine(m)}; load average at end "
          + (" ".join(f"{v:.2f}" for v in m["loadavg_end"]) if m.get("loadavg_end") else "n/a"))
    print(f"suite wall time: {results['wall_s']:.0f} s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 3 4 (--quick: 1)")
    ap.add_argument("--cases", nargs="+", choices=ALL_CASES, default=None, help="default: all")
    ap.add_argument("--photo", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="one seed, short budgets, low targets (smoke test)")
    ap.add_argument("--in-process", action="store_true", help="no subprocesses (faster; no memory figures)")
    ap.add_argument("--no-warmup", action="store_true")
    ap.add_argument("--ref-threads", type=int, default=None,
                    help="threads for the reference loops (default: torch's default, the plain setting; 1 is "
                         "kinder to a busy machine, where 2-thread calls slow down many times)")
    ap.add_argument("--json", default=None, metavar="OUT")
    ap.add_argument("--child", nargs=3, metavar=("CASE", "VARIANT", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        case, variant, seed = args.child
        out = child_main(case, variant, int(seed), args.photo, args.quick, not args.no_warmup, args.ref_threads)
        print(RESULT_MARK + json.dumps(strip(out), default=float))
        return 0

    seeds = args.seeds or ([1] if args.quick else [0, 1, 2, 3, 4])
    cases = args.cases or ALL_CASES
    results = run_suite(seeds, cases, args.photo, args.quick, args.in_process, not args.no_warmup, args.ref_threads)
    print_report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
