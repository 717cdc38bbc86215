"""The ``gleak`` command: run the course's attacks from a shell.

    gleak attack text --sentence TEXT [--noise-multiplier S] [--max-grad-norm C] [--seed N] [--json OUT]
    gleak attack {dlg,idlg,ig,bypass,grnn,analytic} (--image PATH | --sample SET:INDEX[,INDEX...])
          [--label N] [--model lenet-zhu|lenet5|mlp] [--activation sigmoid|relu|tanh]
          [--classes N] [--seed N] [--iterations N] [--batch N] [--tv W]
          [--precode [--beta B] [--bottleneck K]] [--restarts R] [--no-halving] [--retries N]
          [--noise-std STD] [--prune FRACTION]
          [--defense none|full|ppp [--noise-multiplier S] [--max-grad-norm C]]
          [--json OUT] [--png OUT]
    gleak train --dp none|fixed|linear|staircase|exponential|cyclic [--max-grad-norm C]
          [--clipping flat|per_layer|dynamic] [--noise-multiplier S --noise-multiplier-end E] [--noise-updates K]
          [--epochs N] [--delta D] [--accountant rdp|prv] [--attack-steps N,N,...] [--images N] [--iterations N]
          [--seed N] --json OUT
    gleak epsilon --history "NOISE_MULTIPLIER:SAMPLE_RATE:STEPS,..." [--delta D] [--accountant rdp|prv|gdp]
    gleak sweep ppp [--noise-levels S,S,...] [--seeds N,N,...] [--images N] [--iterations N]
          [--epochs N] [--max-grad-norm C] [--train-images N] [--workers N] [--address RAY] [--cache DIR | --no-cache] --json OUT [--png OUT]
    gleak arena [--noise-levels S,S,...] [--prune-fractions P,P,...] [--images N] [--seeds N,N,...]
          [--max-grad-norm C] [--workers N] [--address RAY] [--cache DIR | --no-cache] --json OUT [--png OUT]
    gleak cache info|clear [--cache DIR] [--experiment arena|ppp] [--json OUT]

Two noise units, two flags: ``--noise-std`` is the absolute standard deviation of the
Gaussian noise added to each entry of the shared gradient (image attacks); ``--noise-multiplier``
is sigma relative to the clipping bound ``--max-grad-norm`` C (noise std = sigma * C; the
``--defense full|ppp`` perturbations, the text attack and DP-SGD training). The attacks and
their defaults come from the registry :data:`gleak_edu.attacks.ATTACKS`.

Bad input exits with status 2 and one line on stderr saying what is wrong, before any
computation starts (output paths included); a renamed flag (``--noise``, ``--sigma``,
``--sigma-start``, ``--sigma-end``, ``--clip``) is refused that way, naming its new flag.
Ctrl-C exits with status 130 and one line; an interrupted attack first writes what it has
(best estimate, history, flagged ``"interrupted": true``) to its --json/--png paths.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
from pathlib import Path

__all__ = ["main"]


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


# The attack registry's keys, in its order. A static copy: the parser must not import torch (the
# registry lives in gleak_edu.attacks), so bad input is refused fast; tests/test_cli.py checks that
# it equals tuple(gleak_edu.attacks.ATTACKS). Dispatch and defaults come from the registry itself.
ATTACK_CHOICES: tuple[str, ...] = ("dlg", "idlg", "ig", "grnn", "bypass", "analytic", "text")

# Flags that were renamed (issue 15: one name per noise unit), refused with their new names.
RENAMED_FLAGS: dict[str, str] = {
    "--noise": "use --noise-std (absolute std on the shared gradient, image attacks) or --noise-multiplier "
    "(relative to --max-grad-norm: --defense full|ppp, the text attack)",
    "--sigma": "use --noise-multiplier (relative to --max-grad-norm)",
    "--sigma-start": "use --noise-multiplier (the schedule's start, relative to --max-grad-norm)",
    "--sigma-end": "use --noise-multiplier-end (the schedule's end, relative to --max-grad-norm)",
    "--clip": "use --max-grad-norm (a number > 0; dynamic clipping is --clipping dynamic)",
}
RENAMED_ATTACKS: dict[str, str] = {"transformer": "text"}
# A renamed --defense choice: "noise" was full perturbation (clipping + noise multiplier), which
# students confused with the arena's "noise" defense (an absolute noise std, no clipping).
RENAMED_DEFENSES: dict[str, str] = {"noise": "full"}


def _refuse_renamed(argv: list[str]) -> None:
    """Refuse a renamed flag (or attack name) with one line naming the new one (UsageError), before parsing."""
    for token in argv:
        if token == "--":
            break
        flag = token.split("=", 1)[0]
        if flag in RENAMED_FLAGS:
            raise UsageError(f"{flag} was renamed: {RENAMED_FLAGS[flag]}")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        for old, new in RENAMED_ATTACKS.items():
            if "invalid choice" in message and repr(old) in message:
                raise UsageError(f"the {old} attack was renamed: use gleak attack {new} (the registry's key)")
        for old, new in RENAMED_DEFENSES.items():
            if "--defense" in message and "invalid choice" in message and repr(old) in message:
                raise UsageError(f"--defense {old} was renamed: use --defense {new} (full perturbation: each example's "
                                 "gradient clipped to --max-grad-norm C, noise of std sigma*C); for absolute noise "
                                 "on the shared gradient use --noise-std")
        raise UsageError(message)


def _nonneg_float(name: str):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not math.isfinite(v) or v < 0:
            raise argparse.ArgumentTypeError(f"{name} must be a finite number >= 0, got {text}")
        return v

    return parse


def _positive_float(name: str):
    """A finite number > 0 (a clipping bound: --max-grad-norm)."""
    nonneg = _nonneg_float(name)

    def parse(text: str) -> float:
        v = nonneg(text)
        if v <= 0:
            raise argparse.ArgumentTypeError(f"{name} must be a finite number > 0, got {text}")
        return v

    return parse


def _positive_int(name: str, high: int = 1_000_000):
    """A whole number in 1..high (sizes are bounded before anything is allocated)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, got {text!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{name} must be at least 1, got {v}")
        if v > high:
            raise argparse.ArgumentTypeError(f"{name} must be at most {high:,}, got {v:,}")
        return v

    return parse


def _out_path(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("the path is empty")
    return Path(text)


def _seed(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed must be a whole number, got {text!r}") from None
    if not 0 <= v < 2**32:
        raise argparse.ArgumentTypeError(f"--seed must lie in 0..{2**32 - 1}, got {v}")
    return v


def _check_output(path: Path | None, flag: str, png: bool = False) -> None:
    """Refuse an output path that cannot be written, before any work starts (UsageError).

    The path must be non-empty, not a directory, and creatable: its missing parent
    folders are created now and a file is opened there (and removed again if it
    did not exist), so an unwritable or read-only place fails here, not after the run.
    """
    if path is None:
        return
    if not str(path).strip():
        raise UsageError(f"{flag}: the path is empty")
    if png and path.suffix.lower() not in ("", ".png"):
        raise UsageError(f"{flag} writes a PNG image: give a path ending in .png, not {path.suffix!r}")
    if path.is_dir():
        raise UsageError(f"{flag} {path}: that is a directory; give a file path, e.g. {path / ('out.png' if png else 'out.json')}")
    if path.exists() and not path.is_file():
        raise UsageError(f"{flag} {path}: that is not a regular file (a device, pipe or socket); give a file path")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{flag} {path}: {parent} is a file, not a directory")
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        with open(path, "ab"):
            pass
        if not existed:
            path.unlink()
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot write there ({exc.strerror or exc.__class__.__name__})") from None


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gleak", description="Gradient leakage attacks for teaching (gleak_edu).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    att = sub.add_parser("attack", help="reconstruct a private image from the gradient it produces")
    att.add_argument(
        "attack", choices=ATTACK_CHOICES,
        help="the registry's key (gleak_edu.attacks.ATTACKS): DLG, iDLG, Inverting Gradients, the PRECODE bypass, GRNN, "
        "analytic recovery (first linear layer), or text recovery from a tiny transformer's gradient",
    )
    src = att.add_mutually_exclusive_group()
    src.add_argument("--image", type=Path, help="a PNG/JPEG file, resized to the model's input")
    src.add_argument("--sample", help="offline samples: SET:INDEX or SET:I,J,... with SET in photos, lfw, digits, mnist")
    src.add_argument("--sentence", help="text: the private sentence (words of the Zen of Python, at most 16)")
    att.add_argument("--label", type=int, help="the private label (default: the sample's label, 0 for a file)")
    att.add_argument("--model", choices=["lenet-zhu", "lenet5", "mlp"], help="victim (default: lenet-zhu; lenet5 for grnn; mlp for ig, bypass, analytic)")
    att.add_argument("--precode", action="store_true", help="insert PRECODE's variational bottleneck before the output layer")
    att.add_argument("--beta", type=_nonneg_float("--beta"), default=1e-3, help="PRECODE's KL weight (1e-3)")
    att.add_argument("--bottleneck", type=_positive_int("--bottleneck", 16_384), default=256, help="PRECODE's bottleneck size K (256; at most 16,384)")
    att.add_argument("--tv", type=_nonneg_float("--tv"), help="total-variation weight of ig and bypass (default: the attack's own)")
    att.add_argument("--batch", type=_positive_int("--batch", 256), help="batch size: this many images from the --sample index on (at most 256)")
    att.add_argument("--activation", default="sigmoid", choices=["sigmoid", "relu", "tanh"])
    att.add_argument("--classes", type=_positive_int("--classes", 10_000), help="output classes (100, as CIFAR-100; 19 for text; at most 10,000)")
    att.add_argument("--seed", type=_seed, default=0, help="seed of the model weights and the dummy start (0..2**32-1)")
    att.add_argument("--iterations", type=_positive_int("--iterations", 100_000), help="the attack's iterations: L-BFGS steps (dlg, idlg), Adam steps (ig, bypass, text), generator updates (grnn); "
        "default: the attack's own budget")
    att.add_argument(
        "--restarts", type=_positive_int("--restarts", 64),
        help="independent restarts run at once, vectorised (the attacks that take restarts); the best by matching loss "
        "is kept (default: AttackOptions', 1)",
    )
    att.add_argument(
        "--no-halving", action="store_true",
        help="run every restart to the end (default: successive halving keeps the better half at 1/16, 1/8, 1/4 of the budget)",
    )
    att.add_argument("--retries", type=int, help="dlg/idlg: fresh starts after a failed run, within the budget "
                     "(0: plain recipe; at most 10,000; default: AttackOptions', 10)")
    att.add_argument("--noise-std", type=_nonneg_float("--noise-std"), default=0.0,
                     help="image attacks: absolute std of the Gaussian noise added to each shared gradient entry (0)")
    att.add_argument("--prune", type=_nonneg_float("--prune"), default=0.0, help="fraction of gradient entries zeroed per layer, in [0, 1)")
    att.add_argument("--size", type=_positive_int("--size", 256), default=32, help="side of an --image after resizing (32; 7 to 256)")
    att.add_argument(
        "--defense", choices=["none", "full", "ppp"], default="none",
        help="per-example clipping + Gaussian noise of std sigma*C on every gradient (full perturbation) or, with PRECODE, "
        "only on the deterministic ones (ppp; implies --precode)",
    )
    att.add_argument("--noise-multiplier", type=_nonneg_float("--noise-multiplier"),
                     help="noise multiplier sigma, relative to --max-grad-norm (noise std = sigma * C): of --defense full|ppp "
                     "(1.0) and of the text attack (0: no noise)")
    att.add_argument("--max-grad-norm", type=_positive_float("--max-grad-norm"), default=1.0,
                     help="clipping bound C of --defense and of the text attack's noise (1.0)")
    att.add_argument("--json", type=_out_path, help="write the results as JSON here")
    att.add_argument("--png", type=_out_path, help="write original | reconstruction as a PNG here")

    tr = sub.add_parser("train", help="DP-SGD training on the MNIST subset, attacked along the way")
    tr.add_argument("--dp", required=True, choices=["none", "fixed", "linear", "staircase", "exponential", "cyclic"],
                    help="no DP, fixed noise, or a noise schedule from --noise-multiplier to --noise-multiplier-end")
    tr.add_argument("--max-grad-norm", type=_positive_float("--max-grad-norm"), default=1.0,
                    help="per-example clipping bound C (1.0; a number > 0)")
    tr.add_argument("--clipping", choices=["flat", "per_layer", "dynamic"], default="flat",
                    help="one norm per example (flat), one per parameter tensor (per_layer), or dynamic (Wei & Liu: "
                    "each example's bound is its largest per-layer norm, clamped to the library's dynamic_clip_range)")
    tr.add_argument("--noise-multiplier", type=_nonneg_float("--noise-multiplier"), default=3.0,
                    help="noise multiplier sigma at the first step, relative to --max-grad-norm (3.0; the fixed value for --dp fixed)")
    tr.add_argument("--noise-multiplier-end", type=_nonneg_float("--noise-multiplier-end"), default=0.5,
                    help="noise multiplier at the last step of a schedule (0.5)")
    tr.add_argument("--noise-updates", type=_positive_int("--noise-updates"),
                    help="change the noise multiplier only this many times over training (default: every step)")
    tr.add_argument("--epochs", type=_positive_int("--epochs", 1000), default=2, help="training epochs (2; at most 1,000)")
    tr.add_argument("--delta", type=_nonneg_float("--delta"), default=1e-5, help="delta of the reported epsilon (1e-5)")
    tr.add_argument("--accountant", choices=["rdp", "prv"], default="rdp", help="Opacus accountant (rdp)")
    tr.add_argument("--attack-steps", type=_int_list("--attack-steps"), help="steps at which shared gradients are attacked (default: first, middle, last)")
    tr.add_argument("--images", type=_positive_int("--images", 1000), default=2, help="test images attacked at each of those steps (2; at most the 1,000 test images)")
    tr.add_argument("--iterations", type=_positive_int("--iterations", 100_000), default=300, help="attack iterations (300)")
    tr.add_argument("--lr", type=_nonneg_float("--lr"), default=0.2, help="SGD learning rate (0.2)")
    tr.add_argument("--seed", type=_seed, default=0, help="seed of the model, the batches, the noise and the attacks")
    tr.add_argument("--json", type=_out_path, required=True, help="write accuracy, epsilon, the noise history and the attacks here")

    ep = sub.add_parser("epsilon", help="epsilon of a DP-SGD noise history (Opacus accountant)")
    ep.add_argument("--history", required=True, help='segments NOISE_MULTIPLIER:SAMPLE_RATE:STEPS separated by commas, e.g. "2.0:0.05:20,1.5:0.05:20"')
    ep.add_argument("--delta", type=_nonneg_float("--delta"), default=1e-5, help="target delta (1e-5)")
    ep.add_argument("--accountant", choices=["rdp", "prv", "gdp"], default="rdp", help="Opacus accountant (rdp; gdp only for one constant noise multiplier)")

    sw = sub.add_parser("sweep", help="privacy-accuracy trade-off sweeps (cached)")
    sw.add_argument("sweep", choices=["ppp"], help="ppp: no defense, full perturbation, PRECODE, PPP over a noise grid")
    sw.add_argument("--noise-levels", type=_float_list("--noise-levels"), help="noise multipliers sigma (relative to --max-grad-norm), e.g. 0.1,1,3 (default 0.01,0.03,0.1,0.3,1,3)")
    sw.add_argument("--seeds", type=_int_list("--seeds"), help="training seeds, e.g. 0,1,2 (default)")
    sw.add_argument("--images", type=_positive_int("--images", 1000), help="test images attacked per model (3)")
    sw.add_argument("--iterations", type=_positive_int("--iterations", 100_000), help="attack steps per image (500)")
    sw.add_argument("--epochs", type=_positive_int("--epochs", 1000), help="training epochs (2)")
    sw.add_argument("--max-grad-norm", type=_positive_float("--max-grad-norm"), help="per-example clipping bound C (1.0)")
    sw.add_argument("--train-images", type=_positive_int("--train-images", 4000), help="use only this many training images (all 4,000)")
    sw.add_argument("--workers", type=_positive_int("--workers", 64), default=1,
                    help="CPUs of a local Ray computing missing cells (1: in this process, no Ray; "
                    "the numbers do not depend on it)")
    sw.add_argument("--address", help="run missing cells on the Ray cluster at this address (default $RAY_ADDRESS)")
    cache = sw.add_mutually_exclusive_group()
    cache.add_argument("--cache", type=_out_path, help="cache folder (default $GLEAK_CACHE or ~/.cache/gleak_edu)")
    cache.add_argument("--no-cache", action="store_true", help="recompute every cell (the cache is still written)")
    sw.add_argument("--json", type=_out_path, required=True, help="write the trade-off table as JSON here")
    sw.add_argument("--png", type=_out_path, help="write the trade-off curves as a PNG here")

    ar = sub.add_parser("arena", help="every attack against every defense on the same images (cached)")
    ar.add_argument("--noise-levels", type=_float_list("--noise-levels"),
                    help="the noise slider's stops (> 0), each noisy defense reading them in its unit: a noise std (absolute) "
                    "for noise, a noise multiplier sigma (std = sigma * C) for ppp and dp, e.g. 0.1,1 (default 0.01,0.1,1)")
    ar.add_argument("--prune-fractions", type=_float_list("--prune-fractions"),
                    help="fractions of each gradient tensor zeroed by pruning, in [0, 1) (default 0.9)")
    ar.add_argument("--images", type=_positive_int("--images", 1000), help="test images attacked per model (10)")
    ar.add_argument("--seeds", type=_int_list("--seeds"), help="training seeds, e.g. 0,1 (default 0,1,2)")
    ar.add_argument("--max-grad-norm", type=_positive_float("--max-grad-norm"),
                    help="clipping bound C of the clipped defenses (1.0)")
    ar.add_argument("--workers", type=_positive_int("--workers", 64), default=2,
                    help="CPUs of a local Ray computing missing cells (2; 1: in this process, no Ray; "
                    "the numbers do not depend on it)")
    ar.add_argument("--address", help="run missing cells on the Ray cluster at this address, e.g. 10.0.0.5:6379 "
                    "(default $RAY_ADDRESS; the cache of this machine keeps the results)")
    ar_cache = ar.add_mutually_exclusive_group()
    ar_cache.add_argument("--cache", type=_out_path, help="cache folder (default $GLEAK_CACHE or ~/.cache/gleak_edu)")
    ar_cache.add_argument("--no-cache", action="store_true", help="recompute every cell (the cache is still written)")
    ar.add_argument("--json", type=_out_path, required=True, help="write the arena's tidy rows as JSON here")
    ar.add_argument("--png", type=_out_path, help="write the heatmaps (one per noise level) as a PNG here")
    fe = sub.add_parser("fl", help="a federation on Flower (simulation engine) with a curious server that attacks the updates")
    fe.add_argument("--clients", type=_positive_int("--clients", 10_000), default=4, help="SuperNodes (4)")
    fe.add_argument("--sampled", type=_positive_int("--sampled", 10_000), help="clients sampled per round (default: all)")
    fe.add_argument("--rounds", type=_positive_int("--rounds", 10_000), default=1, help="federated rounds (1)")
    fe.add_argument("--examples", type=_positive_int("--examples", 4000), default=8, help="MNIST digits per client (8)")
    fe.add_argument("--local-steps", type=_positive_int("--local-steps", 10_000), default=1,
                    help="local SGD steps K per round (1: FedSGD with one batch)")
    fe.add_argument("--local-batch", type=_positive_int("--local-batch", 4000), default=1, help="digits per local step B (1)")
    fe.add_argument("--lr", type=_positive_float("--lr"), default=0.1, help="local SGD step size the server sends (0.1)")
    fe.add_argument("--partition", choices=["iid", "label"], default="iid",
                    help="iid: a random share of the digits; label: client i holds digits of class i mod 10 only")
    fe.add_argument("--dp", choices=["none", "server", "local", "dpsgd"], default="none",
                    help="server: Flower's server-side wrapper (clip each update, noise the average); local: Flower's "
                    "LocalDpMod on each client; dpsgd: Opacus DP-SGD local steps")
    fe.add_argument("--clipping-norm", type=_positive_float("--clipping-norm"), default=1.0,
                    help="clipping bound C: per update (server, local), per example (dpsgd) (1.0)")
    fe.add_argument("--noise-multiplier", type=_nonneg_float("--noise-multiplier"), default=0.0,
                    help="noise multiplier sigma of server and dpsgd, relative to C (noise std = sigma * C) (0)")
    fe.add_argument("--epsilon", type=_positive_float("--epsilon"), default=1.0, help="LocalDpMod's epsilon per round (1.0)")
    fe.add_argument("--delta", type=_positive_float("--delta"), default=1e-5, help="delta of every epsilon (1e-5)")
    fe.add_argument("--secagg", action="store_true",
                    help="Flower's secure aggregation (SecAgg+): the server gets only the sum of the updates; it is "
                    "attacked as one batch of all the clients' digits, labels given (needs --local-steps 1, every "
                    "client in every round, --dp none)")
    fe.add_argument("--attack", choices=["unrolled", "simple", "none"], default="unrolled",
                    help="the curious server's attack on every update: unrolled (replay the K local steps), simple "
                    "(Inverting Gradients on update / (-lr K)), none")
    fe.add_argument("--attack-rounds", type=_int_list("--attack-rounds"), help="rounds whose updates are attacked (default: all)")
    fe.add_argument("--iterations", type=_positive_int("--iterations", 100_000), default=300, help="attack steps per update (300)")
    fe.add_argument("--seed", type=_seed, default=0, help="seed of the model, the IID partition and the DP noise (0)")
    fe.add_argument("--workers", type=_positive_int("--workers", 64), default=2, help="CPUs of the simulation's Ray (2)")
    fe.add_argument("--json", type=_out_path, required=True, help="write the accuracy per round, epsilon and every attack's SSIM/PSNR here")
    fe.add_argument("--png", type=_out_path, help="write the clients' digits above the server's reconstructions as a PNG here")

    ca = sub.add_parser("cache", help="the cache of sweep and arena cells: what it holds, or clear it")
    ca.add_argument("action", choices=["info", "clear"], help="info: files, size, bound; clear: remove the cached cells")
    ca.add_argument("--cache", type=_out_path, help="cache folder (default $GLEAK_CACHE or ~/.cache/gleak_edu)")
    ca.add_argument("--experiment", choices=["arena", "ppp"], help="clear only this experiment's cells")
    ca.add_argument("--json", type=_out_path, help="info: write the numbers as JSON here")
    return parser


def _float_list(name: str):
    one = _nonneg_float(name)

    def parse(text: str) -> tuple[float, ...]:
        parts = [p for p in text.split(",") if p.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"{name} needs at least one number")
        if len(parts) > 100:
            raise argparse.ArgumentTypeError(f"{name} takes at most 100 numbers, got {len(parts)}")
        return tuple(one(p) for p in parts)

    return parse


def _int_list(name: str):
    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(p) for p in text.split(",") if p.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be whole numbers separated by commas, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"{name} needs at least one number")
        if len(values) > 100:
            raise argparse.ArgumentTypeError(f"{name} takes at most 100 numbers, got {len(values)}")
        if min(values) < 0 or max(values) >= 2**32:
            raise argparse.ArgumentTypeError(f"{name} must lie in 0..{2**32 - 1}")
        return values

    return parse


def _load_victim(args):
    import torch

    from gleak_edu import data

    if args.image is not None:
        if not data.MIN_IMAGE_SIDE <= args.size:
            raise UsageError(f"--size must be at least {data.MIN_IMAGE_SIDE} (SSIM's 7x7 window), got {args.size}")
        if args.batch not in (None, 1):
            raise UsageError("--batch needs --sample; an --image is one image")
        x = data.load_image(args.image, size=args.size, channels=3)
        label = 0 if args.label is None else args.label
        return x, torch.tensor([label], dtype=torch.int64), str(args.image), None, None
    image_set, idx = data.parse_sample(args.sample)
    if args.batch is not None:
        if len(idx) != 1:
            raise UsageError("give either --batch with one start index, or a list of indices, not both")
        if idx[0] + args.batch > len(image_set):
            raise UsageError(
                f"--batch {args.batch} from index {idx[0]} runs past the {image_set.name!r} set, which has {len(image_set)} images"
            )
        idx = list(range(idx[0], idx[0] + args.batch))
    x, y = image_set.batch(idx)
    if args.label is not None:
        if len(idx) != 1:
            raise UsageError("--label sets the label of a single image; leave it out for a batch")
        y = torch.tensor([args.label], dtype=torch.int64)
    return x, y, args.sample, image_set, idx


def _options(args):
    """The engine flags (--restarts, --no-halving, --retries) as an AttackOptions; unset ones keep its defaults."""
    from gleak_edu.attacks import AttackOptions

    given = {"restarts": args.restarts, "retries": args.retries, "successive_halving": False if args.no_halving else None}
    return AttackOptions(**{k: v for k, v in given.items() if v is not None})


def _check_restarts(args, spec, registry) -> None:
    """--restarts > 1 only for an attack whose registry entry takes restarts (UsageError before any work)."""
    if args.restarts is not None and args.restarts > 1 and not spec.takes_restarts:
        takers = ", ".join(k for k, s in registry.items() if s.takes_restarts)
        raise UsageError(f"--restarts is for {takers}; {spec.key} runs once")


def _run_text_attack(args) -> dict:
    import torch

    from gleak_edu import fl, models, text
    from gleak_edu.attacks import ATTACKS, AttackInterrupted
    from gleak_edu.defenses import check_noise_multiplier, clip_and_noise, gaussian_epsilon

    spec = ATTACKS[args.attack]
    if args.sentence is None:
        raise UsageError(f"the {spec.key} attack needs --sentence TEXT")
    ignored = [
        flag for flag, used in (
            ("--image", args.image is not None), ("--sample", args.sample is not None), ("--png", args.png is not None),
            ("--precode", args.precode), ("--defense", args.defense != "none"), ("--batch", args.batch is not None),
            ("--model", args.model is not None), ("--prune", args.prune > 0), ("--tv", args.tv is not None),
            ("--size", args.size != 32), ("--activation", args.activation != "sigmoid"), ("--noise-std", args.noise_std > 0),
            ("--retries", args.retries is not None),
        ) if used
    ]
    if ignored:
        raise UsageError(
            f"{ignored[0]} does not apply to the {spec.key} attack (it takes --sentence, --label, --classes, "
            "--noise-multiplier, --max-grad-norm, --iterations, --restarts, --seed, --json)"
        )
    _check_restarts(args, spec, ATTACKS)
    noise_multiplier = 0.0 if args.noise_multiplier is None else args.noise_multiplier
    if noise_multiplier > 0:
        check_noise_multiplier(noise_multiplier, "--noise-multiplier")
    classes = 19 if args.classes is None else args.classes  # default: which of the 19 aphorisms
    if classes < 2:
        raise UsageError(f"--classes must be at least 2, got {classes}")
    vocab = text.zen_vocabulary()
    tokens = vocab.encode(args.sentence)  # ValueError names the words outside the vocabulary
    label = 0 if args.label is None else args.label
    if not 0 <= label < classes:
        raise UsageError(f"--label must lie in 0..{classes - 1}")
    options = _options(args)
    torch.manual_seed(args.seed)
    model = models.TinyTransformer(len(vocab), classes)
    shared = fl.client_text_gradient(model, tokens, torch.tensor([label]))
    if noise_multiplier > 0:
        shared = clip_and_noise(shared, noise_multiplier, args.max_grad_norm, seed=args.seed)
    knobs = {} if args.iterations is None else {"iterations": args.iterations}
    interrupted = False
    try:
        result = spec.run(model, shared, vocab=vocab, seed=args.seed, truth=(tokens, label), options=options, **knobs)
    except AttackInterrupted as exc:
        result, interrupted = exc.result, True
    m = result.metrics
    delta = 1e-5
    noisy = noise_multiplier > 0
    return {
        "attack": spec.key, "model": f"TinyTransformer (vocabulary {len(vocab)} words, {classes} classes)",
        "seed": args.seed, "sentence_true": vocab.decode(tokens), "sentence_recovered": result.sentence,
        "words_recovered": result.words, "token_set_recovered": [vocab.words[t] for t in result.token_set],
        "length_recovered": result.length, "set_recall": m["set_recall"], "set_precision": m["set_precision"],
        "order_accuracy": m["order_accuracy"], "label_true": label, "label_pred": result.label,
        "label_correct": m.get("label_correct"), "noise_multiplier": noise_multiplier,
        "max_grad_norm": args.max_grad_norm if noisy else None,
        "epsilon": gaussian_epsilon(noise_multiplier, delta) if noisy else None,
        "delta": delta if noisy else None,
        "epsilon_note": "one release of the Gaussian mechanism, sqrt(2 ln(1.25/delta)) / noise_multiplier "
        "(Dwork & Roth; valid below 1)" if noisy else None,
        "matching_loss": result.loss, "iterations": result.iterations, "restarts": result.restarts,
        "seconds": result.seconds, "interrupted": interrupted,
    }


# The CLI's victim for each image attack (a choice of this command, not an attack default):
# GRNN's paper attacks LeNet-5; the inverting attacks attack PyTorch-initialised MLPs.
_VICTIM = {"grnn": "lenet5", "ig": "mlp", "bypass": "mlp", "analytic": "mlp"}
_PYTORCH_INIT = ("ig", "bypass", "analytic")


@dataclasses.dataclass(kw_only=True)
class _AttackRun:
    """One image attack: what was attacked, how, and its AttackResult (for the JSON record)."""

    result: object
    model_name: str
    source: str
    x: object
    y: object
    image_set: object = None
    idx: list | None = None
    layers_matched: list = dataclasses.field(default_factory=list)
    noise_multiplier: float | None = None
    interrupted: bool = False


def _run_attack(args) -> dict:
    import torch

    from gleak_edu import fl, models
    from gleak_edu.attacks import ATTACKS, AttackInterrupted, first_linear_layer
    from gleak_edu.defenses import add_precode, deterministic_parameters, gaussian_noise, perturbed_gradient, prune_gradients

    spec = ATTACKS[args.attack]
    if args.sentence is not None:
        raise UsageError("--sentence is for the text attack; image attacks take --image or --sample")
    if args.image is None and args.sample is None:
        raise UsageError("give the private image: --image PATH or --sample SET:INDEX")
    if not 0 <= args.prune < 1:
        raise UsageError(f"--prune must lie in [0, 1), got {args.prune}")
    if args.retries is not None and not 0 <= args.retries <= 10_000:
        raise UsageError(f"--retries must lie in 0..10,000, got {args.retries}")
    if args.classes is None:
        args.classes = 100
    _check_restarts(args, spec, ATTACKS)
    if args.tv is not None and "tv_weight" not in spec.defaults:
        takers = ", ".join(k for k, s in ATTACKS.items() if "tv_weight" in s.defaults)
        raise UsageError(f"--tv is for {takers}; {spec.key} has no total-variation term")
    if args.classes < 2:
        raise UsageError(f"--classes must be at least 2, got {args.classes}")
    noise_multiplier = None
    if args.defense == "none":
        if args.noise_multiplier is not None:
            raise UsageError("--noise-multiplier is relative to --max-grad-norm and needs --defense full|ppp; "
                             "for absolute noise on the shared gradient use --noise-std")
    else:
        if args.noise_std > 0:
            raise UsageError("--noise-std adds absolute-std noise; with --defense use --noise-multiplier "
                             "(relative to --max-grad-norm), not both")
        noise_multiplier = 1.0 if args.noise_multiplier is None else args.noise_multiplier
    if args.defense == "ppp":
        args.precode = True  # PPP is PRECODE with partial perturbation
    if spec.needs_bottleneck and not args.precode:
        raise UsageError(f"the {spec.name} needs PRECODE's bottleneck: add --precode (or --defense ppp); without one "
                         "every layer is deterministic and the bypass would be Inverting Gradients (ig)")
    options = _options(args)
    x, y, source, image_set, idx = _load_victim(args)
    if int(y.min()) < 0 or int(y.max()) >= args.classes:
        raise UsageError(f"label(s) {y.tolist()} outside 0..{args.classes - 1} (set --classes or --label)")
    if spec.max_batch is not None and x.shape[0] > spec.max_batch:
        takers = ", ".join(k for k, s in ATTACKS.items() if s.modality == "image" and s.max_batch is None)
        limit = "works on a single image" if spec.max_batch == 1 else f"takes at most {spec.max_batch} images"
        raise UsageError(f"{spec.name} {limit}; use {takers} for a batch")
    model_name = args.model or _VICTIM.get(spec.key, "lenet-zhu")
    try:
        model = models.build_model(
            model_name, tuple(x.shape[1:]), args.classes, args.activation, seed=args.seed,
            init="pytorch" if spec.key in _PYTORCH_INIT else "uniform",
        )
        if args.precode:
            add_precode(model, args.bottleneck, args.beta)
        if spec.needs_first_linear:
            first_linear_layer(model)
    except ValueError as exc:
        raise UsageError(f"--model {model_name}: {exc}") from None
    torch.manual_seed(args.seed)  # PRECODE's sample in the victim's step
    if args.defense == "none":
        shared = fl.client_gradient(model, x, y)
    else:
        scope = args.defense  # "full" or "ppp": perturbed_gradient's scopes
        shared = perturbed_gradient(model, x, y, noise_multiplier=noise_multiplier, max_grad_norm=args.max_grad_norm,
                                    scope=scope, seed=args.seed)
    if args.noise_std > 0:
        shared = gaussian_noise(shared, args.noise_std, seed=args.seed)
    if args.prune > 0:
        shared = prune_gradients(shared, args.prune)
    layers_matched = [n for n, p in model.named_parameters() if p.requires_grad]
    if spec.key == "bypass":
        layers_matched = deterministic_parameters(model)
    elif spec.key == "analytic":
        layers_matched = [n for n in layers_matched if n.startswith("features.0.")]
    knobs = {"iterations": args.iterations, "tv_weight": args.tv}
    if x.shape[0] > 1:  # one image: the attack reads the label; a batch: labels assumed known where it takes them
        knobs["labels"] = y
    knobs = {k: v for k, v in knobs.items() if v is not None and k in spec.defaults}
    interrupted = False
    try:
        result = spec.run(model, shared, input_shape=tuple(x.shape), num_classes=args.classes, truth=(x, y),
                          options=options, **({"seed": args.seed} if "seed" in spec.defaults else {}), **knobs)
    except AttackInterrupted as exc:  # Ctrl-C: report and write what the attack had
        result, interrupted = exc.result, True
    run = _AttackRun(result=result, model_name=model_name, source=source, x=x, y=y, image_set=image_set, idx=idx,
                     layers_matched=layers_matched, noise_multiplier=noise_multiplier, interrupted=interrupted)
    return _attack_output(args, run)


def _attack_output(args, run: _AttackRun) -> dict:
    """The JSON record of an image attack (also for an interrupted one: its best estimate so far).

    Fields the attack does not produce are null, never filled from the truth: analytic recovery
    reads no label, so its ``label_pred``, ``label_correct`` and ``label_accuracy`` are null.
    """
    from gleak_edu import metrics

    result, x, y = run.result, run.x, run.y
    single = x.shape[0] == 1
    m = result.metrics
    order = m["order"]
    if result.labels is None:
        label_pred = None
    else:
        labels_pred = result.labels if single else result.labels[order]
        label_pred = int(labels_pred[0]) if single else labels_pred.tolist()
    label_accuracy = m.get("label_accuracy")
    defended = args.defense != "none"
    out = {
        "attack": result.attack,
        "model": run.model_name,
        "activation": args.activation,
        "classes": args.classes,
        "source": run.source,
        "seed": args.seed,
        "noise_std": args.noise_std,
        "prune": args.prune,
        "batch": int(x.shape[0]),
        "psnr": m["psnr_mean"],
        "ssim": m["ssim_mean"],
        "mse": m["mse_mean"],
        "psnr_per_image": m["psnr"],
        "ssim_per_image": m["ssim"],
        "label_true": int(y[0]) if single else y.tolist(),
        "label_pred": label_pred,
        "label_correct": None if label_accuracy is None else bool(label_accuracy == 1.0),
        "label_accuracy": label_accuracy,
        "seconds": result.seconds,
        "evaluations": result.evaluations,
        "iterations": result.iterations,
        "restarts": result.restarts,
        "successive_halving": not args.no_halving if result.restarts > 1 else None,
        "per_restart": result.per_restart,
        "retries": result.retries,
        "seconds_to_30db": result.seconds_to(30.0),
        "diverged": result.diverged,
        "message": result.message,
        "history": [
            {k: rec.get(k) for k in ("iteration", "evaluations", "seconds", "loss", "psnr")} for rec in result.history
        ],
        "precode": args.precode,
        "defense": args.defense,
        "noise_multiplier": run.noise_multiplier if defended else None,
        "max_grad_norm": args.max_grad_norm if defended else None,
        "layers_matched": run.layers_matched,
        "interrupted": run.interrupted,
    }
    if args.attack == "analytic":  # exact recovery: how far from exact
        out["max_abs_error"] = m.get("max_abs_error", float((result.reconstruction[order] - x).abs().max()))
    if run.image_set is not None and run.image_set.name == "lfw":
        ranks = metrics.reid_ranks(result.reconstruction[order], run.image_set.images, run.idx)
        out["reid_ranks"] = ranks.tolist()
        out["reid_top1"] = metrics.rank1_accuracy(ranks)
    if args.png is not None:
        from gleak_edu import viz

        title = f"{result.attack} on {run.source}" + (" (interrupted)" if run.interrupted else "")
        _save_figure(viz.compare_figure(x, result.reconstruction[order], title=title), args.png)
    return out


def _run_sweep(args) -> dict:
    from gleak_edu import sweeps

    overrides = {
        name: value
        for name, value in (
            ("noise_levels", args.noise_levels), ("seeds", args.seeds), ("images", args.images),
            ("iterations", args.iterations), ("epochs", args.epochs), ("max_grad_norm", args.max_grad_norm),
            ("train_images", args.train_images),
        )
        if value is not None
    }
    from gleak_edu.defenses import check_noise_multiplier

    for level in overrides.get("noise_levels", ()):
        check_noise_multiplier(level, "--noise-levels value")
    result = sweeps.ppp_sweep(cache_dir=args.cache, use_cache=not args.no_cache, progress=sys.stderr.isatty(),
                              workers=args.workers, address=args.address, **overrides)
    print(result.table())
    claims = sweeps.claim_check(result)
    for c in claims:
        print(
            f"noise multiplier {c['noise_multiplier']:g}: PPP bypass SSIM {c['ppp_bypass_ssim']:.3f}, accuracy lost: full "
            f"{100 * c['full_loss']:.1f} pts vs PPP {100 * c['ppp_loss']:.1f} pts (x{c['loss_ratio']:.2f}) -> "
            + ("claim holds" if c["holds"] else "claim does not hold")
        )
    print(f"{result.computed} cells computed, {result.cached} from the cache")
    out = result.to_json()
    out["claim"] = sweeps._finite(claims)
    out["cells_computed"], out["cells_cached"] = result.computed, result.cached
    if args.png is not None:
        from gleak_edu import viz

        _save_figure(viz.tradeoff_figure(result), args.png)
    return out


def _run_fl(args) -> dict:
    """``gleak fl``: run the federation, attack the chosen rounds' updates, summarise."""
    import torch

    from gleak_edu import flower, metrics

    if args.png is not None and args.attack == "none":
        raise UsageError("--png draws the server's reconstructions: give --attack unrolled or simple")
    if args.png is not None and args.secagg:
        raise UsageError("--png draws one reconstruction per update; with --secagg the server has none (drop --png)")

    try:
        settings = flower.FederationSettings(
            clients=args.clients, sampled=args.sampled, rounds=args.rounds, examples=args.examples,
            local_steps=args.local_steps, local_batch=args.local_batch, lr=args.lr, partition=args.partition,
            seed=args.seed, dp=args.dp, clipping_norm=args.clipping_norm, noise_multiplier=args.noise_multiplier,
            epsilon=args.epsilon, delta=args.delta)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    rounds = set(args.attack_rounds or range(1, settings.rounds + 1))
    bad = sorted(r for r in rounds if not 1 <= r <= settings.rounds)
    if bad:
        raise UsageError(f"--attack-rounds: round(s) {bad} outside 1..{settings.rounds}")
    if args.secagg:
        if settings.local_steps != 1 or settings.per_round != settings.clients or settings.dp != "none" or settings.clients < 2:
            raise UsageError("--secagg needs --local-steps 1, every client in every round (no --sampled), "
                             "--dp none and at least 2 clients")
        return _run_fl_secagg(args, settings, rounds)
    fed = flower.run_federation(settings, num_cpus=args.workers)
    attacks, truth, recon, titles, ssims = [], [], [], [], []
    if args.attack != "none":
        for obs in sorted(fed.observations, key=lambda o: (o.round, o.partition_id)):
            if obs.round not in rounds:
                continue
            res = flower.attack_observation(settings, obs, attack=args.attack, iterations=args.iterations)
            attacks.append({"round": obs.round, "client": obs.partition_id, "node_id": obs.node_id,
                            "digits": len(res.metrics["ssim"]), "ssim": res.metrics["ssim"], "psnr": res.metrics["psnr"],
                            "ssim_mean": res.metrics["ssim_mean"], "psnr_mean": res.metrics["psnr_mean"],
                            "label_accuracy": res.metrics.get("label_accuracy"), "seconds": res.seconds})
            truth.append(flower.observed_examples(settings, obs)[0])
            recon.append(res.reconstruction[torch.as_tensor(res.metrics["order"])])
            titles.append(f"round {obs.round} · client {obs.partition_id}")
            ssims.append(res.metrics["ssim_mean"])
    digits = [v for a in attacks for v in a["ssim"]]
    rate = metrics.success_rate([v >= metrics.SUCCESS_SSIM for v in digits]) if digits else None
    out = {"settings": settings.as_run_config(), "flwr": flower.FLOWER_VERSION, "accuracy": fed.accuracy,
           "epsilon": fed.epsilon, "epsilon_note": fed.epsilon_note, "seconds": fed.seconds,
           "clients_per_second": settings.rounds * settings.per_round / fed.seconds, "attack": args.attack,
           "attacks": attacks, "success": None if rate is None else {"rule": f"SSIM >= {metrics.SUCCESS_SSIM}",
                                                                        **rate.row_fields()}}
    print(f"federation: {settings.clients} clients, {settings.per_round} per round, {settings.rounds} round(s), "
          f"K={settings.local_steps}, B={settings.local_batch}, dp={settings.dp}: test accuracy "
          f"{fed.accuracy[0]:.1%} -> {fed.accuracy[-1]:.1%} in {fed.seconds:.1f} s"
          + ("" if fed.epsilon is None else f"; epsilon {fed.epsilon:.3g} at delta {settings.delta:g} ({fed.epsilon_note})"))
    if rate is not None:
        print(f"curious server ({args.attack}): {rate} of {len(attacks)} update(s)' digits rebuilt (SSIM >= 0.6)")
    if args.png is not None and truth:
        from gleak_edu import viz

        fig = viz.federation_grid(truth, recon, titles, columns=min(settings.per_round, 8), ssims=ssims)
        fig.savefig(args.png, dpi=90)
    return out


def _run_fl_secagg(args, settings, rounds) -> dict:
    """``gleak fl --secagg``: Flower's SecAgg+; the server attacks the sum it unmasks, round by round."""
    from gleak_edu import flower, metrics

    result = flower.run_secagg(settings, num_cpus=args.workers)
    attacks = []
    if args.attack != "none":
        for r in sorted(rounds):
            res = flower.attack_secagg(result, r, iterations=args.iterations)
            attacks.append({"round": r, "clients": result.clients[r - 1], "digits": len(res.metrics["ssim"]),
                            "ssim": res.metrics["ssim"], "psnr": res.metrics["psnr"], "ssim_mean": res.metrics["ssim_mean"],
                            "seconds": res.seconds})
    digits = [v for a in attacks for v in a["ssim"]]
    rate = metrics.success_rate([v >= metrics.SUCCESS_SSIM for v in digits]) if digits else None
    print(f"secure aggregation (SecAgg+): {settings.clients} clients, {settings.rounds} round(s) in {result.seconds:.1f} s; "
          "the server saw only the sums" + ("" if rate is None else
                                           f"; attacked as one batch (labels given): {rate} of the digits rebuilt"))
    return {"settings": settings.as_run_config(), "flwr": flower.FLOWER_VERSION, "secagg": True,
            "seconds": result.seconds, "attack": "inverting gradients on the sum (labels given)" if attacks else "none",
            "attacks": attacks, "success": None if rate is None else {"rule": f"SSIM >= {metrics.SUCCESS_SSIM}",
                                                                        **rate.row_fields()}}


def _run_arena(args) -> dict:
    from gleak_edu import arena

    if args.noise_levels is not None and min(args.noise_levels) <= 0:
        raise UsageError("--noise-levels must be > 0 (the 'none' defense is the noise-free column)")
    if args.prune_fractions is not None and max(args.prune_fractions) >= 1:
        raise UsageError(f"--prune-fractions must lie in [0, 1), got {max(args.prune_fractions):g}")
    overrides = {
        name: value
        for name, value in (("noise_levels", args.noise_levels), ("prune_fractions", args.prune_fractions),
                            ("images", args.images), ("seeds", args.seeds), ("max_grad_norm", args.max_grad_norm))
        if value is not None
    }
    result = arena.arena(cache_dir=args.cache, use_cache=not args.no_cache, progress=sys.stderr.isatty(),
                         workers=args.workers, address=args.address, **overrides)
    print(result.table())
    print(f"{result.computed} cells computed, {result.cached} from the cache")
    if args.png is not None:
        from gleak_edu import viz

        _save_figure(viz.arena_heatmap(result, all_levels=True), args.png)
    return result.to_json()


def _check_delta(delta: float) -> None:
    """--delta in (0, 1) and below the course's limit (gleak_edu.defenses.check_delta), before any work."""
    from gleak_edu.defenses.accounting import check_delta

    if not 0 < delta < 1:
        raise UsageError(f"--delta must lie strictly between 0 and 1, got {delta}")
    try:
        check_delta(delta)
    except ValueError as exc:
        raise UsageError(f"--delta: {exc}") from None


def _parse_history(text: str) -> list[tuple[float, float, int]]:
    segments = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        fields = part.split(":")
        try:
            if len(fields) != 3:
                raise ValueError
            segments.append((float(fields[0]), float(fields[1]), int(fields[2])))
        except ValueError:
            raise UsageError(f"--history: segment {part!r} is not NOISE_MULTIPLIER:SAMPLE_RATE:STEPS (e.g. 2.0:0.05:20)") from None
    if not segments:
        raise UsageError("--history needs at least one segment NOISE_MULTIPLIER:SAMPLE_RATE:STEPS")
    return segments


def _run_epsilon(args) -> float:
    from gleak_edu.defenses import epsilon

    _check_delta(args.delta)
    return epsilon(_parse_history(args.history), args.delta, args.accountant)


def _run_train(args) -> dict:
    import torch

    from gleak_edu import data, models, training
    from gleak_edu.attacks import ATTACKS
    from gleak_edu.defenses import AttackPlan, history_from_noise_multipliers, noise_schedule, steps_per_epoch, train_dp

    if args.dp != "none" and args.noise_multiplier <= 0:
        raise UsageError("--noise-multiplier must be > 0 with DP")
    if args.dp not in ("none", "fixed") and args.noise_multiplier_end <= 0:
        raise UsageError("--noise-multiplier-end must be > 0 for a schedule")
    _check_delta(args.delta)  # before the data is loaded; train_dp warns if delta >= 1/n
    train, test = training.split(data.mnist_subset(), 0.2, seed=0)
    total = args.epochs * steps_per_epoch(len(train[0]), 64)
    steps = args.attack_steps if args.attack_steps is not None else (0, total // 2, total - 1)
    torch.manual_seed(args.seed)
    model = models.MLP((1, 28, 28), 10, (128, 128), "tanh")
    if args.dp == "none":
        noise = None  # plain SGD on the same batches
    elif args.dp == "fixed":
        noise = args.noise_multiplier
    else:
        noise = noise_schedule(args.dp, total, args.noise_multiplier, args.noise_multiplier_end, updates=args.noise_updates)
    plan = AttackPlan(steps=steps, images=(test[0][: args.images], test[1][: args.images]), iterations=args.iterations)
    run = train_dp(
        model, train, test, noise_multiplier=noise, max_grad_norm=args.max_grad_norm, clipping=args.clipping,
        epochs=args.epochs, lr=args.lr, delta=args.delta, accountant=args.accountant, attack_plan=plan, seed=args.seed,
    )
    summary = run.summary()
    attackers = " and ".join(ATTACKS[a].name for a in plan.attacks)
    print(
        f"{args.dp}: test accuracy {run.test_accuracy:.1%}, epsilon {run.epsilon:.3g} at delta {args.delta:g} ({args.accountant}), "
        f"attack success {run.attack_success} (best of {attackers}, SSIM >= {run.success_ssim}), "
        f"mean SSIM {summary['ssim']:.3f}, {run.steps} steps, {run.seconds:.1f} s"
    )
    checkpoints = [
        {"step": cp["step"], "noise_multiplier": cp["noise_multiplier"], "max_grad_norm": cp["max_grad_norm"],
         **{a: {k: v for k, v in cp[a].items() if k != "reconstructions"} for a in plan.attacks if a in cp}}
        for cp in run.checkpoints
    ]
    return {
        "dp": args.dp, "max_grad_norm": run.max_grad_norm, "clipping": run.clipping,
        "noise_multiplier": run.noise_multiplier_start, "noise_multiplier_end": run.noise_multiplier_end,
        "epochs": args.epochs, "steps": run.steps, "sample_rate": run.sample_rate,
        "model": "mlp 784-128-128-10 tanh", "data": "mnist subset (4000 train / 1000 test)", "seed": args.seed,
        "accuracy": run.test_accuracy, "epsilon": run.epsilon, "delta": args.delta, "accountant": args.accountant,
        "noise_multiplier_history": run.noise_multiplier_history, "max_grad_norm_history": run.max_grad_norm_history,
        "history": [list(seg) for seg in history_from_noise_multipliers(run.noise_multiplier_history, run.sample_rate)],
        **{k: summary[k] for k in ("attack_success_rate", "attack_successes", "attack_n", "attack_success_low",
                                   "attack_success_high", "ssim", "psnr")},
        "success_rule": f"best of {attackers} reaches SSIM >= {run.success_ssim}",
        "checkpoints": checkpoints, "diverged": run.diverged, "seconds": run.seconds,
    }


def _write_json(path: Path, out: dict) -> None:
    """Write ``out`` as JSON (inf/NaN as null), atomically: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_finite(out), indent=1)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_figure(fig, path: Path) -> None:
    """Save ``fig`` as a PNG at exactly ``path`` (no suffix is added)."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=120, format="png")
    finally:
        plt.close(fig)


def _finite(obj):
    """JSON has no inf/NaN: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _run_cache(args) -> dict:
    from gleak_edu._cache import cache_info, clear_cache

    if args.action == "clear":
        if args.json is not None:
            raise UsageError("--json is for gleak cache info")
        try:
            removed = clear_cache(args.cache, experiment=args.experiment)
        except NotADirectoryError as exc:
            raise UsageError(str(exc)) from None
        where = cache_info(args.cache)["path"]
        print(f"removed {removed.files} files ({removed.bytes / 2**20:.1f} MB) from {where}")
        return {}
    if args.experiment is not None:
        raise UsageError("--experiment is for gleak cache clear")
    info = cache_info(args.cache)
    bound = " / ".join(
        part for part in (
            f"{info['max_bytes'] / 2**20:.0f} MB" if info.get("max_bytes") else "",
            f"{info['max_files']:,} files" if info.get("max_files") else "",
        ) if part
    ) or "none"
    print(f"{info['path']}: {info['files']} cells, {info['bytes'] / 2**20:.1f} MB ({info['status']}); "
          f"bound {bound} ($GLEAK_CACHE_MAX_MB, $GLEAK_CACHE_MAX_FILES)")
    return info


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each: ``gleak: warning: ...``."""
    print(f"gleak: warning: {str(message).strip().splitlines()[0]}", file=sys.stderr if file is None else file)


def _load_libraries() -> None:
    """Import torch, numpy and the package with Ctrl-C held back: an interrupt that lands inside a
    C extension's import leaves it half-loaded (RecursionError, aborts, or a swallowed Ctrl-C).
    A Ctrl-C pressed meanwhile is delivered right after, as a clean KeyboardInterrupt (exit 130)."""
    import signal

    try:
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    except (AttributeError, OSError, ValueError):  # no POSIX signal masks (Windows) or not the main thread
        held = None
    try:
        import gleak_edu.attacks  # noqa: F401  (torch, numpy)
        import gleak_edu.data  # noqa: F401  (PIL, scikit-image)
        import gleak_edu.defenses  # noqa: F401  (opacus)
    finally:
        if held is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _outputs(args) -> list[tuple[Path | None, str, bool]]:
    """(path, flag, is_png) of every output file the command will write."""
    return [(getattr(args, "json", None), "--json", False), (getattr(args, "png", None), "--png", True)]


def _attack_summary(out: dict) -> str:
    if "sentence_recovered" in out:
        return (
            f"{out['attack']}: recovered \"{out['sentence_recovered']}\" (true \"{out['sentence_true']}\"): "
            f"word set recall {out['set_recall']:.0%}, precision {out['set_precision']:.0%}, "
            f"in order {out['order_accuracy']:.0%}" + (f", epsilon {out['epsilon']:.3g} per release" if out["epsilon"] else "")
        )
    return (
        f"{out['attack']}: PSNR {out['psnr']:.1f} dB, SSIM {out['ssim']:.3f}, "
        + (f"label not recovered by this attack (true {out['label_true']}), " if out["label_correct"] is None else
           f"label {out['label_pred']} ({'right' if out['label_correct'] else 'wrong'}, true {out['label_true']}), ")
        + f"{out['iterations']} iterations, {out['evaluations']} evaluations, {out['seconds']:.1f} s"
        + (f", re-identified (rank 1) {out['reid_top1']:.0%}" if "reid_top1" in out else "")
        + (f", best of {out['restarts']} restarts" if out["restarts"] > 1 else "")
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gleak`` console script. Returns the exit status.

    0: done; 2: bad input (one line on stderr, checked before any work, output
    paths included); 130: Ctrl-C (one line; an attack first writes its best
    estimate so far, flagged ``"interrupted": true``).
    """
    import warnings

    parser = _build_parser()
    args = None
    shown, warnings.showwarning = warnings.showwarning, _show_warning  # restored below (main may run in-process)
    try:
        _refuse_renamed(sys.argv[1:] if argv is None else list(argv))
        args = parser.parse_args(argv)
        outputs = _outputs(args)
        for path, flag, png in outputs:
            _check_output(path, flag, png)
        paths = [p.absolute() for p, _, _ in outputs if p is not None]
        if len(paths) == 2 and paths[0] == paths[1]:
            raise UsageError("--json and --png name the same file; give two paths")
        if args.command != "cache":
            _load_libraries()
        if args.command == "attack":
            out = _run_text_attack(args) if args.attack == "text" else _run_attack(args)
            print(_attack_summary(out))
            if args.json is not None:
                _write_json(args.json, out)
            if out["interrupted"]:
                written = " and ".join(str(p) for p, _, _ in outputs if p is not None)
                print("gleak: interrupted (Ctrl-C); the best estimate so far" + (f" is in {written}" if written else " is above"),
                      file=sys.stderr)
                return 130
        elif args.command == "epsilon":
            print(repr(_run_epsilon(args)))
        elif args.command == "train":
            out = _run_train(args)
            _write_json(args.json, out)
        elif args.command == "sweep":
            out = _run_sweep(args)
            _write_json(args.json, out)
        elif args.command == "arena":
            out = _run_arena(args)
            _write_json(args.json, out)
        elif args.command == "fl":
            out = _run_fl(args)
            _write_json(args.json, out)
        elif args.command == "cache":
            out = _run_cache(args)
            if args.json is not None:
                _write_json(args.json, out)
        return 0
    except KeyboardInterrupt:
        print("gleak: interrupted (Ctrl-C); finished cells stay in the cache" if getattr(args, "command", "") in ("sweep", "arena")
              else "gleak: interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    except (UsageError, FileNotFoundError, IsADirectoryError, ValueError, IndexError, ImportError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        if isinstance(exc, IndexError):
            msg = msg.strip("'\"")
        print(f"gleak: error: {msg}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
