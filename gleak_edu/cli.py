"""The ``gleak`` command: run the course's attacks from a shell.

    gleak attack {dlg,idlg} (--image PATH | --sample SET:INDEX) [--label N]
          [--model lenet-zhu|mlp] [--activation sigmoid|relu|tanh]
          [--classes N] [--seed N] [--iterations N]
          [--noise SIGMA] [--prune FRACTION] [--json OUT] [--png OUT]

Bad input exits with status 2 and one line on stderr saying what is wrong.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

__all__ = ["main"]


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
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


def _positive_int(name: str):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, got {text!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{name} must be at least 1, got {v}")
        return v

    return parse


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gleak", description="Gradient leakage attacks for teaching (gleak_edu).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    att = sub.add_parser("attack", help="reconstruct a private image from the gradient it produces")
    att.add_argument("attack", choices=["dlg", "idlg"], help="DLG (joint label) or iDLG (analytic label)")
    src = att.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", type=Path, help="a PNG/JPEG file, resized to the model's input")
    src.add_argument("--sample", help="an offline sample: SET:INDEX with SET in photos, lfw, digits, mnist")
    att.add_argument("--label", type=int, help="the private label (default: the sample's label, 0 for a file)")
    att.add_argument("--model", default="lenet-zhu", choices=["lenet-zhu", "mlp"])
    att.add_argument("--activation", default="sigmoid", choices=["sigmoid", "relu", "tanh"])
    att.add_argument("--classes", type=_positive_int("--classes"), default=100, help="output classes (100, as CIFAR-100)")
    att.add_argument("--seed", type=int, default=0, help="seed of the model weights and the dummy start")
    att.add_argument("--iterations", type=_positive_int("--iterations"), default=300, help="L-BFGS iterations (300)")
    att.add_argument("--restarts", type=int, default=10, help="restarts of a failed run within the budget (0: plain recipe)")
    att.add_argument("--noise", type=_nonneg_float("--noise"), default=0.0, help="Gaussian noise std on the shared gradient")
    att.add_argument("--prune", type=_nonneg_float("--prune"), default=0.0, help="fraction of gradient entries zeroed per layer, in [0, 1)")
    att.add_argument("--size", type=_positive_int("--size"), default=32, help="side of an --image after resizing (32)")
    att.add_argument("--json", type=Path, help="write the results as JSON here")
    att.add_argument("--png", type=Path, help="write original | reconstruction as a PNG here")
    return parser


def _load_victim(args):
    import torch

    from gleak_edu import data

    if args.image is not None:
        x = data.load_image(args.image, size=args.size, channels=3)
        label = 0 if args.label is None else args.label
        return x, label, str(args.image)
    image_set, idx = data.parse_sample(args.sample)
    if len(idx) != 1:
        raise UsageError(f"--sample {args.sample!r}: DLG and iDLG attack one image; give a single index")
    x, y = image_set.batch(idx)
    label = int(y[0]) if args.label is None else args.label
    return x, label, args.sample


def _run_attack(args) -> dict:
    import torch

    from gleak_edu import fl, models
    from gleak_edu.attacks import dlg, idlg
    from gleak_edu.defenses import gaussian_noise, prune_gradients

    if not 0 <= args.prune < 1:
        raise UsageError(f"--prune must lie in [0, 1), got {args.prune}")
    if args.restarts < 0:
        raise UsageError(f"--restarts must be >= 0, got {args.restarts}")
    if args.classes < 2:
        raise UsageError(f"--classes must be at least 2, got {args.classes}")
    x, label, source = _load_victim(args)
    if not 0 <= label < args.classes:
        raise UsageError(f"--label {label} is outside 0..{args.classes - 1} (set --classes or --label)")
    y = torch.tensor([label], dtype=torch.int64)
    model = models.build_model(args.model, tuple(x.shape[1:]), args.classes, args.activation, seed=args.seed)
    shared = fl.client_gradient(model, x, y)
    if args.noise > 0:
        shared = gaussian_noise(shared, args.noise, seed=args.seed)
    if args.prune > 0:
        shared = prune_gradients(shared, args.prune)
    attack = {"dlg": dlg, "idlg": idlg}[args.attack]
    result = attack(
        model, shared, input_shape=tuple(x.shape), num_classes=args.classes, iterations=args.iterations,
        seed=args.seed, truth=x, true_labels=y, restarts=args.restarts,
    )
    m = result.metrics
    out = {
        "attack": result.attack,
        "model": args.model,
        "activation": args.activation,
        "classes": args.classes,
        "source": source,
        "seed": args.seed,
        "noise": args.noise,
        "prune": args.prune,
        "psnr": m["psnr_mean"],
        "ssim": m["ssim_mean"],
        "mse": m["mse_mean"],
        "label_true": label,
        "label_pred": int(result.labels[0]),
        "label_correct": int(result.labels[0]) == label,
        "seconds": result.seconds,
        "evaluations": result.evaluations,
        "iterations": result.iterations,
        "restarts": result.restarts,
        "seconds_to_30db": result.seconds_to(30.0),
        "diverged": result.diverged,
        "message": result.message,
        "history": [
            {k: rec[k] for k in ("iteration", "evaluations", "seconds", "loss", "psnr")} for rec in result.history
        ],
    }
    if args.png is not None:
        from gleak_edu import viz

        fig = viz.compare_figure(x, result.reconstruction, title=f"{result.attack} on {source}")
        args.png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.png, dpi=120)
        import matplotlib.pyplot as plt

        plt.close(fig)
    return out


def _finite(obj):
    """JSON has no inf/NaN: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gleak`` console script. Returns the exit status."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "attack":
            out = _run_attack(args)
            summary = (
                f"{out['attack']}: PSNR {out['psnr']:.1f} dB, SSIM {out['ssim']:.3f}, "
                f"label {out['label_pred']} ({'right' if out['label_correct'] else 'wrong'}, true {out['label_true']}), "
                f"{out['iterations']} iterations, {out['evaluations']} evaluations, {out['seconds']:.1f} s"
            )
            print(summary)
            if args.json is not None:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(_finite(out), indent=1))
        return 0
    except (UsageError, FileNotFoundError, ValueError, IndexError, ImportError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        if isinstance(exc, IndexError):
            msg = msg.strip("'\"")
        print(f"gleak: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
