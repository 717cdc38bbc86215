"""A hostile probe of the ``gleak`` command line and of the attack/defense API.

Run from the repository root:

    python benchmarks/probe_hostile.py [--only SUBSTRING] [--json OUT] [--jobs N] [--keep]

Every case runs in its own subprocess, from its own temporary working folder,
with a timeout (a case over it is a *hang*) and an address-space limit
(``--mem-gb``, 12 by default, so a runaway allocation becomes an error instead of
an OOM kill of the machine):

- **cli** cases run ``python -m gleak_edu.cli ARGS`` (``MPLBACKEND=Agg``,
  ``GLEAK_CACHE`` pointing into the probe's temporary folder).
- **api** cases run a small Python snippet that calls the package. A snippet
  exits 2 with one line ``gleak-api: error: ...`` when the call raised a clean
  ``ValueError``/``TypeError`` (``SharedGradientError`` included) from
  gleak_edu's own code; an exception raised deep inside torch/PIL/opacus, or of
  another type, prints its traceback. A snippet whose call returned exits 0
  (for a bad input: the input was *accepted*, reported as a wrong exit code);
  a failed check of an ok result exits 3 (*wrong output*) or 4 (*result lost*).

Expected outcome per case:

- ``error``: exit 2, exactly one stderr line starting ``gleak: error:`` (or
  ``gleak-api: error:``), no traceback. A bad output path (``out_path``
  cases) must also be refused within ``--late-s`` seconds (3), before any
  work: slower is a *late refusal*.
- ``ok``: exit 0, no traceback, every ``--json``/``--png`` file written, and
  the case's own check of the output passes.
- ``either``: a clean ``error`` or a clean ``ok`` (for inputs where both a
  refusal and a correct answer are acceptable, e.g. a noise multiplier of 1e300).
- ``interrupt``: the process is started, left to get into the attack (its CPU
  time passes a threshold), then sent SIGINT (to its process group, as a
  terminal's Ctrl-C); expected exit 130, one stderr line, no traceback and,
  for an attack, the ``--json`` written with ``"interrupted": true`` (else
  *result lost*).

Outcome classes: clean, traceback, wrong exit code, hang, result lost, late
refusal, wrong output (a check of the output or of the one-line rule failed),
slow (an ok case over its time bound). The script prints a markdown table
(every case) and a summary; ``--json OUT`` writes the per-case records.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]

CLEAN, TRACEBACK, WRONG_EXIT, HANG, LOST, LATE, WRONG_OUTPUT, SLOW = (
    "clean", "traceback", "wrong exit code", "hang", "result lost", "late refusal", "wrong output", "slow",
)
ORDER = [CLEAN, TRACEBACK, WRONG_EXIT, HANG, LOST, LATE, WRONG_OUTPUT, SLOW]
SEVERITY = [CLEAN, SLOW, WRONG_OUTPUT, LATE, WRONG_EXIT, LOST, TRACEBACK, HANG]  # worst last (several tries of one case)


@dataclass
class Case:
    name: str
    kind: str  # "cli" or "api"
    expected: str  # "error", "ok", "either", "interrupt"
    args: list[str] | None = None  # cli: arguments after "gleak"; {F} = fixtures folder, {W} = the case's folder
    code: str | None = None  # api: the snippet (after PRELUDE); {F}, {W} substituted
    setup: Callable[[Path, Path], None] | None = None  # setup(F, W) before the run
    check: Callable[[Path, Path, dict], str | None] | None = None  # problem with an ok/interrupt result, or None
    check_on_error: bool = False  # also run check on a clean refusal (message wording, side effects)
    out_path: bool = False  # a bad output path: must be refused within --late-s
    late_s: float | None = None  # an error case slower than this is a late refusal
    max_s: float | None = None  # an ok case slower than this is slow
    timeout: float = 120.0
    interrupt_cpu: float = 10.0  # interrupt cases: SIGINT once the process used this much CPU...
    interrupt_wall: float = 60.0  # ...or this much wall time, whichever comes first
    interrupt_min_wall: float = 0.0  # ...but not before this
    double_interrupt: bool = False
    interrupt_delays: list[float] | None = None  # several tries, each interrupted after this many seconds
    json_required_on_interrupt: bool = True  # attack: the --json must hold "interrupted": true
    heavy: bool = False  # started first (long)
    note: str = ""


# --------------------------------------------------------------------------- fixtures


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_gray_png(path: Path, width: int, height: int) -> None:
    """An 8-bit grayscale PNG of zeros, written by hand in chunks: 10000x10000 is ~100 KB on disk."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    rows_per = max(1, 8_000_000 // len(row))
    block = row * rows_per
    parts, left = [], height
    while left > 0:
        n = min(left, rows_per)
        parts.append(comp.compress(block if n == rows_per else row * n))
        left -= n
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"".join(parts)) + _png_chunk(b"IEND", b""))


def make_fixtures(F: Path) -> None:
    import numpy as np
    from PIL import Image

    F.mkdir(parents=True, exist_ok=True)
    red = Image.new("RGB", (32, 32), (255, 0, 0))
    red.save(F / "red.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(F / "noise.jpg", quality=95)
    data = (F / "noise.jpg").read_bytes()
    (F / "truncated.jpg").write_bytes(data[: len(data) * 6 // 10])
    # 12 MP photo-like JPEG (smooth gradients)
    yy, xx = np.mgrid[0:3000, 0:4000]
    arr = np.stack([(xx * 255 // 3999), (yy * 255 // 2999), ((xx + yy) * 255 // 6998)], axis=-1).astype(np.uint8)
    Image.fromarray(arr).save(F / "photo12mp.jpg", quality=85)
    del arr, xx, yy
    write_gray_png(F / "bomb10k.png", 10_000, 10_000)
    write_gray_png(F / "bomb20k.png", 20_000, 20_000)
    # a header claiming width 0
    (F / "zero_width.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 16, 8, 0, 0, 0, 0))
        + _png_chunk(b"IDAT", zlib.compress(b"")) + _png_chunk(b"IEND", b"")
    )
    Image.new("CMYK", (64, 64), (0, 255, 255, 0)).save(F / "cmyk_red.jpg", quality=95)  # red in CMYK
    (F / "text.png").write_bytes(b"this is not an image, just text\n" * 4)
    (F / "empty.png").write_bytes(b"")
    frames = [Image.new("P", (32, 32), i) for i in (1, 2)]
    frames[0].save(F / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    grad16 = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    Image.fromarray(grad16).save(F / "gray16.png")  # mode I;16, values 0..65535
    pal = Image.new("P", (32, 32), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    pal.paste(1, (16, 0, 32, 32))  # right half: index 1 (red); left half: index 0, transparent
    pal.save(F / "pal_trans.png", transparency=0)
    Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(F / "rgba_transparent.png")
    Image.new("LA", (32, 32), (0, 0)).save(F / "la_transparent.png")
    rot = Image.new("RGB", (64, 32), (0, 0, 255))
    rot.paste((255, 0, 0), (0, 0, 32, 32))  # stored: left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: top red, bottom blue
    rot.save(F / "exif_rot.jpg", exif=exif.tobytes(), quality=95)
    Image.fromarray(np.full((32, 32), np.nan, dtype=np.float32), mode="F").save(F / "nan.tiff")
    Image.new("RGB", (1, 1), (10, 200, 30)).save(F / "one_pixel.png")
    Image.new("RGB", (20000, 1), (10, 200, 30)).save(F / "sliver.png")
    red.save(F / "png_named.jpg", format="PNG")  # a PNG with a .jpg name
    shutil.copy(F / "red.png", F / "my photo ü ✓.png")
    os.mkfifo(F / "fifo.png")
    (F / "imgdir").mkdir()
    (F / "afile").write_text("a regular file\n")


# --------------------------------------------------------------------------- checks


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def check_interrupted_json(json_name="out.json", png_name: str | None = "out.png"):
    def check(F, W, rec):
        out = _read_json(W / json_name)
        if out is None:
            return (LOST, f"no readable {json_name} after Ctrl-C")
        if out.get("interrupted") is not True:
            return (LOST, f'{json_name} has "interrupted": {out.get("interrupted")!r}')
        if png_name and not (W / png_name).is_file():
            return (LOST, f"no {png_name} after Ctrl-C")
        return None

    return check


def check_epsilon_stdout(F, W, rec):
    lines = [ln for ln in rec["stdout"].splitlines() if ln.strip()]
    if not lines:
        return (WRONG_OUTPUT, "printed nothing")
    text = lines[-1].strip()
    try:
        v = float(text)
    except ValueError:
        return (WRONG_OUTPUT, f"last stdout line is not a number: {text[:80]!r}")
    if v != v or v < 0:
        return (WRONG_OUTPUT, f"printed epsilon {text}")
    return None


def check_json_epsilon(name="out.json"):
    def check(F, W, rec):
        out = _read_json(W / name)
        if out is None:
            return (LOST, f"no readable {name}")
        eps = out.get("epsilon")
        if isinstance(eps, (int, float)) and eps < 0:
            return (WRONG_OUTPUT, f"reported epsilon {eps}")
        return None

    return check


def check_no_sibling(name: str):
    def check(F, W, rec):
        if (W / name).exists():
            return (WRONG_OUTPUT, f"wrote {name} although the command was refused")
        return None

    return check


def check_exact_png(name: str):
    def check(F, W, rec):
        if not (W / name).is_file():
            return (LOST, f"{name} not written at exactly that path")
        if (W / (name + ".png")).exists():
            return (WRONG_OUTPUT, f"wrote {name}.png instead of {name}")
        if (W / name).read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
            return (WRONG_OUTPUT, f"{name} is not a PNG")
        return None

    return check


def check_stderr_mentions(word: str, refuse: bool = False):
    def check(F, W, rec):
        hit = word.lower() in rec["stderr"].lower()
        if refuse and hit:
            return (WRONG_OUTPUT, f"the message says {word!r}")
        if not refuse and not hit:
            return (WRONG_OUTPUT, f"the message does not mention {word}")
        return None

    return check


def check_still_chardev(name: str):
    def check(F, W, rec):
        import stat

        p = W / name
        try:
            st = os.lstat(p)
        except OSError:
            return (WRONG_OUTPUT, f"{name} (a character device) was removed")
        if stat.S_ISREG(st.st_mode):
            return (WRONG_OUTPUT, f"{name} (a character device, as in /dev) was replaced by a regular file")
        return None

    return check


def check_sweep_output(corrupted: list[str] | None = None):
    """The sweep's JSON exists, its rows are in range, and no corrupted cell was used."""

    def check(F, W, rec):
        out = _read_json(W / "out.json")
        if out is None:
            return (LOST, "no readable out.json")
        for r in out.get("rows", []):
            acc = r.get("accuracy")
            if acc is not None and not 0 <= acc <= 1:
                return (WRONG_OUTPUT, f"row {r.get('defense')}/{r.get('attack')} has accuracy {acc}")
            ssim = r.get("ssim")
            if ssim is not None and not -1 <= ssim <= 1:
                return (WRONG_OUTPUT, f"row {r.get('defense')}/{r.get('attack')} has ssim {ssim}")
            eps = r.get("epsilon")
            if isinstance(eps, (int, float)) and eps < 0:
                return (WRONG_OUTPUT, f"row {r.get('defense')} has epsilon {eps}")
        if corrupted:
            cached = out.get("cells_cached")
            if cached:
                return (WRONG_OUTPUT, f"{cached} cell(s) taken from a corrupted cache")
            named = [c for c in corrupted if c in rec["stderr"]]
            if not named:
                rec["detail"] = "no warning names a corrupted file (did the keys still match? code edited meanwhile?)"
            elif len(named) < len(corrupted):
                rec["detail"] = f"warnings name {len(named)} of {len(corrupted)} corrupted files"
        return None

    return check


def check_orphan_removed(F, W, rec):
    res = check_sweep_output(None)(F, W, rec)
    if res:
        return res
    left = [p.name for p in (W / "cache").glob("*.tmp")]
    if "ppp-0123456789abcdef01234567.json.orphan1.tmp" in left:
        return (WRONG_OUTPUT, "an orphaned temporary (2 h old) was left in the cache")
    return None


# --------------------------------------------------------------------------- setups


def setup_file(name: str, text: str = "x\n"):
    def setup(F, W):
        (W / name).write_text(text)

    return setup


def setup_dir(name: str):
    def setup(F, W):
        (W / name).mkdir(parents=True, exist_ok=True)

    return setup


def setup_full_device(name: str):
    def setup(F, W):
        try:
            os.mknod(W / name, 0o666 | 0o020000, os.makedev(1, 7))  # a /dev/full of our own
        except (OSError, AttributeError):
            os.symlink("/dev/full", W / name)

    return setup


def setup_null_device(name: str):
    def setup(F, W):
        try:
            os.mknod(W / name, 0o666 | 0o020000, os.makedev(1, 3))  # a /dev/null of our own
        except (OSError, AttributeError):
            os.symlink("/dev/null", W / name)

    return setup


SWEEP_TINY = ["sweep", "ppp", "--noise-levels", "1", "--seeds", "0", "--images", "1", "--iterations", "5",
              "--epochs", "1", "--train-images", "64"]


def _env(root: Path) -> dict:
    env = dict(os.environ)
    env["MPLBACKEND"] = "Agg"
    env["GLEAK_CACHE"] = str(root / "default-cache")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("PYTHONWARNINGS", None)
    return env


def setup_corrupt_cache(variant: str):
    """Fill {W}/cache with a tiny sweep's 4 cells (a real run), then corrupt each one differently."""

    def setup(F, W):
        cache = W / "cache"
        subprocess.run([sys.executable, "-m", "gleak_edu.cli", *SWEEP_TINY, "--cache", str(cache), "--json", str(W / "seed.json")],
                       cwd=W, env=_env(W.parent.parent), capture_output=True, timeout=300)
        (W / "seed.json").unlink(missing_ok=True)
        cells = {}
        for p in sorted(cache.glob("ppp-*.json")):
            doc = json.loads(p.read_text())
            cells[doc["settings"]["defense"]] = (p, doc)
        if len(cells) != 4:
            raise RuntimeError(f"setup: expected 4 cells, found {sorted(cells)} in {cache}")
        names = []

        def write(defense, doc=None, raw=None):
            p = cells[defense][0]
            names.append(p.name)
            p.write_text(raw if raw is not None else json.dumps(doc))

        if variant == "values":
            d = cells["none"][1]; d["result"]["accuracy"] = 5.0; write("none", d)  # noqa: E702
            d = cells["precode"][1]; d["result"]["attacks"]["ig"]["ssim"] = []; write("precode", d)  # noqa: E702
            d = cells["full"][1]; d["result"]["accuracy"] = "high"; write("full", d)  # noqa: E702
            write("ppp", raw='{"key": "%s", "result": ' % cells["ppp"][1]["key"] + "[" * 100_000 + "]" * 100_000 + "}")
        else:
            d = cells["none"][1]; del d["result"]["attacks"]; write("none", d)  # noqa: E702
            p = cells["precode"][0]; p.unlink(); p.mkdir(); names.append(p.name)  # noqa: E702
            write("full", raw="{not json")
            d = cells["ppp"][1]; d["result"]["epsilon"] = -1.0; d["result"]["attacks"]["bypass"]["reconstructions"] = [[[[float("nan")]]]]  # noqa: E702
            write("ppp", d)
            orphan = cache / "ppp-0123456789abcdef01234567.json.orphan1.tmp"
            orphan.write_text("half a cell")
            old = time.time() - 7200
            os.utime(orphan, (old, old))
        (W / "corrupted.txt").write_text("\n".join(names))

    return setup


def check_corrupted(F, W, rec):
    names = (W / "corrupted.txt").read_text().split("\n") if (W / "corrupted.txt").exists() else []
    return check_sweep_output(names)(F, W, rec)


def check_corrupted_b(F, W, rec):
    res = check_corrupted(F, W, rec)
    if res:
        return res
    if (W / "cache" / "ppp-0123456789abcdef01234567.json.orphan1.tmp").exists():
        return (WRONG_OUTPUT, "an orphaned temporary (2 h old) was left in the cache")
    return None


# --------------------------------------------------------------------------- API snippets

PRELUDE = r'''
import math, sys, time, traceback
import warnings
import torch

def _raised_by_gleak(exc):
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and "gleak_edu" in frames[-1].filename.replace("\\", "/"), (frames[-1].filename if frames else "?")

def _clean_error(exc):
    ours, where = _raised_by_gleak(exc)
    msg = str(exc).strip()
    if not ours:
        traceback.print_exc()
        print(f"probe: {type(exc).__name__} raised deep inside {where}, not by gleak_edu's own checks", file=sys.stderr)
        sys.exit(1)
    if not msg:
        traceback.print_exc()
        print(f"probe: {type(exc).__name__} without a message", file=sys.stderr)
        sys.exit(1)
    print(f"gleak-api: error: {type(exc).__name__}: {msg.splitlines()[0]}", file=sys.stderr)
    sys.exit(2)

def expect_error(fn, types=(ValueError, TypeError)):
    """A bad input: a clean ValueError/TypeError from gleak_edu exits 2; a return exits 0 (accepted)."""
    try:
        value = fn()
    except types as exc:
        _clean_error(exc)
    print(f"probe: the call returned {type(value).__name__} {str(value)[:80]!r}: the bad input was accepted", file=sys.stderr)
    sys.exit(0)

def run_or_error(fn, types=(ValueError, TypeError)):
    """Either a result (returned) or a clean refusal (exit 2)."""
    try:
        return fn()
    except types as exc:
        _clean_error(exc)

def fail(msg):
    print(f"probe: check failed: {msg}", file=sys.stderr); sys.exit(3)

def lost(msg):
    print(f"probe: result lost: {msg}", file=sys.stderr); sys.exit(4)
'''

VICTIM = r'''
from gleak_edu import fl, models
from gleak_edu.attacks import AttackOptions, CallbackError, dlg, grnn, idlg, inverting_gradients, analytic_recovery
model = models.build_model("lenet-zhu", (3, 32, 32), 10, seed=0)
torch.manual_seed(0)
x = torch.rand(1, 3, 32, 32); y = torch.tensor([3])
shared = fl.client_gradient(model, x, y)
kw = dict(input_shape=(1, 3, 32, 32), num_classes=10, iterations=2)
'''

BN_MODEL = r'''
import torch.nn as nn
from gleak_edu import fl
from gleak_edu.attacks import AttackOptions, dlg, grnn, idlg, inverting_gradients
torch.manual_seed(0)
bn = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Sigmoid(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
bn.train()
xb = torch.rand(1, 3, 8, 8); yb = torch.tensor([2])
sb = fl.client_gradient(bn, xb, yb)
state0 = {k: v.clone() for k, v in bn.state_dict().items()}
modes0 = [m.training for m in bn.modules()]
def same_model():
    after = bn.state_dict()
    changed = [k for k in state0 if not torch.equal(state0[k], after[k])]
    if changed:
        fail(f"the attack changed the model: {changed[:3]} (num_batches_tracked {int(state0['1.num_batches_tracked'])} -> {int(after['1.num_batches_tracked'])})")
    if [m.training for m in bn.modules()] != modes0:
        fail("the attack changed the model's train/eval mode")
'''


def callback_case(attack: str, final_only: bool) -> str:
    cond = "state.done" if final_only else "True"
    call = {
        "dlg": "dlg(model, shared, callback=cb, options=AttackOptions(callback_every=1), **dict(kw, iterations=6))",
        "ig": "inverting_gradients(model, shared, callback=cb, options=AttackOptions(callback_every=1), **dict(kw, iterations=6))",
        "grnn": "grnn(model, shared, callback=cb, options=AttackOptions(callback_every=1), **dict(kw, iterations=6))",
    }[attack]
    return VICTIM + textwrap.dedent(f'''
        def cb(state):
            if {cond}:
                raise RuntimeError("boom from the live view")
        try:
            {call}
        except CallbackError as exc:
            r = exc.result
            if r is None or not torch.is_tensor(r.reconstruction) or not torch.isfinite(r.reconstruction).all():
                lost(f"CallbackError.result holds no finite reconstruction: {{r!r}}")
            if r.reconstruction.shape != (1, 3, 32, 32):
                lost(f"CallbackError.result.reconstruction has shape {{tuple(r.reconstruction.shape)}}")
            sys.exit(0)
        except RuntimeError as exc:
            lost(f"the callback's {{exc!r}} propagated as is; the best estimate is lost")
        fail("the attack finished and swallowed the callback's exception")
    ''')


# --------------------------------------------------------------------------- the cases


def build_cases() -> list[Case]:
    cases: list[Case] = []

    def cli(name, args, expected, **kw):
        cases.append(Case(name=name, kind="cli", expected=expected, args=list(args), **kw))

    def api(name, code, expected, **kw):
        cases.append(Case(name=name, kind="api", expected=expected, code=code, **kw))

    # ---- issue 14, point 1: output paths checked before the work
    base = {
        "train": ["train", "--dp", "fixed", "--epochs", "1", "--images", "1", "--iterations", "5", "--attack-steps", "0"],
        "attack": ["attack", "dlg", "--sample", "photos:0", "--iterations", "300"],
        "sweep": SWEEP_TINY + ["--cache", "{W}/cache"],
        "arena": ["arena", "--noise-levels", "1", "--prune-fractions", "0.5", "--images", "1", "--seeds", "0",
                  "--workers", "1", "--cache", "{W}/cache"],
    }
    for cmd, b in base.items():
        cli(f"#1 {cmd} --json a directory", b + ["--json", "{W}"], "error", out_path=True)
        cli(f"#1 {cmd} --json empty", b + ["--json", ""], "error", out_path=True)
        cli(f"#1 {cmd} --json under a file", b + ["--json", "{W}/afile/out.json"], "error", out_path=True,
            setup=setup_file("afile"))
        cli(f"#1 {cmd} --json under an unwritable parent", b + ["--json", "/proc/gleak-probe/out.json"], "error", out_path=True)
    for cmd in ("attack", "sweep", "arena"):
        cli(f"#9 {cmd} --png a directory", base[cmd] + ["--json", "{W}/out.json", "--png", "{W}/pngdir"], "error",
            out_path=True, setup=setup_dir("pngdir"), check=check_no_sibling("pngdir.png"), check_on_error=True)
    cli("#1 attack --png under a file", base["attack"] + ["--png", "{W}/afile/out.png"], "error", out_path=True,
        setup=setup_file("afile"))
    cli("#1 Ctrl-C during dlg (json + png written)",
        ["attack", "dlg", "--sample", "photos:0", "--iterations", "100000", "--json", "{W}/out.json", "--png", "{W}/out.png"],
        "interrupt", check=check_interrupted_json("out.json", "out.png"), heavy=True)

    # ---- point 2: decompression bombs, a 12 MP photo
    cli("#2 10000x10000 PNG of ~100 KB", ["attack", "analytic", "--image", "{F}/bomb10k.png", "--classes", "2"], "error",
        late_s=20.0, timeout=180)
    cli("#2 20000x20000 PNG", ["attack", "analytic", "--image", "{F}/bomb20k.png", "--classes", "2"], "error",
        late_s=20.0, timeout=180)
    cli("#2 12 MP JPEG, analytic", ["attack", "analytic", "--image", "{F}/photo12mp.jpg", "--classes", "2",
                                     "--json", "{W}/out.json"], "ok", max_s=25.0)
    api("#2 API load_image of a 12 MP JPEG under 3 s", textwrap.dedent('''
        from gleak_edu import data
        data.load_image("{F}/photo12mp.jpg")  # warm the imports
        t = time.perf_counter(); x = data.load_image("{F}/photo12mp.jpg", size=32); dt = time.perf_counter() - t
        if dt > 3: fail(f"load_image took {dt:.1f} s")
        if tuple(x.shape) != (1, 3, 32, 32): fail(f"shape {tuple(x.shape)}")
    '''), "ok")
    api("#2 API load_image of a 20000x20000 PNG refused under 3 s", textwrap.dedent('''
        from gleak_edu import data
        t = time.perf_counter()
        try:
            data.load_image("{F}/bomb20k.png")
        except (ValueError, TypeError) as exc:
            if time.perf_counter() - t > 3: fail(f"refused only after {time.perf_counter() - t:.1f} s")
            _clean_error(exc)
        print("probe: accepted", file=sys.stderr)
    '''), "error", timeout=180)

    # ---- point 3: CMYK
    cli("#3 CMYK JPEG via the CLI", ["attack", "analytic", "--image", "{F}/cmyk_red.jpg", "--classes", "2",
                                       "--json", "{W}/out.json", "--png", "{W}/out.png"], "ok")
    api("#3 API CMYK JPEG of a red square decodes red", textwrap.dedent('''
        from gleak_edu import data
        x = data.load_image("{F}/cmyk_red.jpg")
        r, g, b = (float(x[0, c].mean()) for c in range(3))
        if not (r > 0.8 and g < 0.25 and b < 0.25): fail(f"mean RGB ({r:.2f}, {g:.2f}, {b:.2f}), not red")
    '''), "ok")

    # ---- point 4: accounting
    cli("#4 epsilon --delta 0.5", ["epsilon", "--history", "5:0.01:10", "--delta", "0.5"], "error")
    cli("#4 train --delta 0.9", base["train"] + ["--delta", "0.9", "--json", "{W}/out.json"], "error",
        check=check_json_epsilon())
    cli("#4 epsilon noise multiplier 1e-300", ["epsilon", "--history", "1e-300:0.01:10"], "either", check=check_epsilon_stdout)
    cli("#4 epsilon noise multiplier 1e300", ["epsilon", "--history", "1e300:0.01:10"], "either", check=check_epsilon_stdout)
    cli("#4 epsilon PRV 100000 steps q 0.5", ["epsilon", "--history", "2:0.5:100000", "--accountant", "prv"], "either",
        check=check_epsilon_stdout, timeout=180, heavy=True)
    api("#4 API epsilon with delta 0.5", textwrap.dedent('''
        from gleak_edu.defenses import epsilon
        expect_error(lambda: epsilon([(5.0, 0.01, 10)], 0.5))
    '''), "error")

    # ---- point 5: caches
    cli("#5 sweep: cells with valid JSON and wrong values/types/nesting", SWEEP_TINY + ["--cache", "{W}/cache", "--json", "{W}/out.json"],
        "ok", setup=setup_corrupt_cache("values"), check=check_corrupted, heavy=True, timeout=240)
    cli("#5 sweep: cell missing a field, a folder as a cell, not JSON, NaN/negative values, orphan tmp",
        SWEEP_TINY + ["--cache", "{W}/cache", "--json", "{W}/out.json"], "ok",
        setup=setup_corrupt_cache("other"), check=check_corrupted_b, heavy=True, timeout=240)
    cli("#5 sweep: a file in place of the cache folder", SWEEP_TINY + ["--cache", "{W}/afile", "--json", "{W}/out.json"],
        "either", setup=setup_file("afile"), check=check_sweep_output(None), heavy=True, timeout=240)
    cli("#5 sweep: the cache folder under a file", SWEEP_TINY + ["--cache", "{W}/afile/cache", "--json", "{W}/out.json"],
        "either", setup=setup_file("afile"), check=check_sweep_output(None), heavy=True, timeout=240)
    cli("#5 sweep: an unwritable cache folder (/proc)", SWEEP_TINY + ["--cache", "/proc/gleak-probe-cache", "--json", "{W}/out.json"],
        "either", check=check_sweep_output(None), heavy=True, timeout=240)

    # ---- point 6: sizes
    cli("#6 --restarts 1000000000", ["attack", "dlg", "--sample", "photos:0", "--restarts", "1000000000"], "error")
    cli("#6 --classes 1000000000000", ["attack", "dlg", "--sample", "photos:0", "--classes", "1000000000000"], "error")
    cli("#6 --bottleneck 1000000000000", ["attack", "bypass", "--sample", "photos:0", "--precode", "--bottleneck", "1000000000000"], "error")
    cli("#6 --size 100000", ["attack", "dlg", "--image", "{F}/red.png", "--size", "100000"], "error")
    cli("#6 --size 1", ["attack", "dlg", "--image", "{F}/red.png", "--size", "1"], "error")

    # ---- point 7: the user's model (API)
    api("#7 API BatchNorm in train mode, restarts=2", BN_MODEL + textwrap.dedent('''
        expect_error(lambda: dlg(bn, sb, input_shape=(1, 3, 8, 8), num_classes=10, iterations=3, options=AttackOptions(restarts=2)))
    '''), "error")
    for attack, call in (("dlg", "dlg(bn, sb, input_shape=(1, 3, 8, 8), num_classes=10, iterations=20)"),
                         ("ig", "inverting_gradients(bn, sb, input_shape=(1, 3, 8, 8), num_classes=10, iterations=20)"),
                         ("grnn", "grnn(bn, sb, input_shape=(1, 3, 8, 8), num_classes=10, iterations=20)")):
        api(f"#7 API BatchNorm train mode: {attack} leaves the model as it was", BN_MODEL + textwrap.dedent(f'''
            run_or_error(lambda: {call})
            same_model()
        '''), "either")

    # ---- point 8: callbacks
    api("#8 API dlg callback raises (every call)", callback_case("dlg", False), "ok")
    api("#8 API dlg callback raises on the final call", callback_case("dlg", True), "ok")
    api("#8 API ig callback raises", callback_case("ig", False), "ok")
    api("#8 API grnn callback raises on the final call", callback_case("grnn", True), "ok")

    # ---- point 9
    tr = ["attack", "text", "--sentence", "beautiful is better than ugly", "--iterations", "5"]
    cli("#9 transformer --png", tr + ["--png", "{W}/out.png"], "error")
    cli("#9 text --restarts 2 (the text attack takes restarts now)", tr + ["--restarts", "2"], "ok")
    cli("#9 transformer --precode", tr + ["--precode"], "error")
    cli("#9 transformer --defense ppp", tr + ["--defense", "ppp"], "error")
    cli("#9 transformer --batch 2", tr + ["--batch", "2"], "error")
    cli("#9 transformer --classes 1", tr + ["--classes", "1"], "error")
    cli("#9 --seed 2**64 (blamed on --seed)", ["attack", "dlg", "--sample", "photos:0", "--seed", str(2**64)], "error",
        check=check_stderr_mentions("--seed"), check_on_error=True)
    cli("#9 --image DIR (not 'not found')", ["attack", "dlg", "--image", "{F}/imgdir"], "error",
        check=check_stderr_mentions("not found", refuse=True), check_on_error=True)
    for dtype in ("int64", "bool", "float16", "complex64"):
        api(f"#9 API dlg with {dtype} gradients", VICTIM + textwrap.dedent(f'''
            expect_error(lambda: dlg(model, {{k: v.to(torch.{dtype}) for k, v in shared.items()}}, **kw))
        '''), "error")
    api("#9 API dlg lr=nan", VICTIM + "expect_error(lambda: dlg(model, shared, lr=float('nan'), **kw))\n", "error")
    api("#9 API dlg lr=-1", VICTIM + "expect_error(lambda: dlg(model, shared, lr=-1.0, **kw))\n", "error")
    api("#9 API ig lr=nan", VICTIM + "expect_error(lambda: inverting_gradients(model, shared, lr=float('nan'), **kw))\n", "error")
    api("#9 API dlg fractional input_shape", VICTIM + "expect_error(lambda: dlg(model, shared, **dict(kw, input_shape=(1, 3, 32.5, 32))))\n", "error")
    api("#9 API grnn fractional input_shape", VICTIM + "expect_error(lambda: grnn(model, shared, **dict(kw, input_shape=(1.5, 3, 32, 32))))\n", "error")
    api("#9 API dlg with gradients of another model", VICTIM + textwrap.dedent('''
        other = models.build_model("lenet5", (3, 32, 32), 10, seed=0)
        expect_error(lambda: dlg(model, fl.client_gradient(other, x, y), **kw))
    '''), "error")
    api("#9 API dlg with NaN in the gradient", VICTIM + textwrap.dedent('''
        bad = {k: v.clone() for k, v in shared.items()}
        first = next(iter(bad)); bad[first].view(-1)[0] = float("nan")
        expect_error(lambda: dlg(model, bad, **kw))
    '''), "error")
    api("#4 API epsilon via gleak_edu.defenses.epsilon, delta 0.5, prv", textwrap.dedent('''
        from gleak_edu.defenses import epsilon
        expect_error(lambda: epsilon([(1.0, 0.1, 100)], 0.5, "prv"))
    '''), "error")

    # ---- our own: the CLI, odd numbers
    dl = ["attack", "dlg", "--sample", "photos:0", "--iterations", "2"]
    for flag, value in (("--noise-std", "nan"), ("--noise-std", "inf"), ("--noise-std", "1e309"), ("--noise-std", "0x10"), ("--noise-std", ""),
                        ("--noise-std", "-1e-9"), ("--prune", "1"), ("--prune", "nan"), ("--tv", "nan"), ("--tv", "-1"),
                        ("--label", "-1"), ("--label", "1000"), ("--label", "99999999999999999999999"),
                        ("--seed", "-1"), ("--seed", str(2**32)), ("--seed", "1.5"), ("--seed", "0x10"),
                        ("--iterations", "-5"), ("--iterations", "0"), ("--iterations", "1e3"), ("--iterations", "100001"),
                        ("--restarts", "0"), ("--retries", "-1"), ("--retries", "10001"), ("--classes", "1"),
                        ("--classes", "-3"), ("--classes", "99999999999999999999999999999"), ("--size", "257"),
                        ("--batch", "0"), ("--batch", "257")):
        cli(f"own: dlg {flag} {value!r}", dl + [flag, value], "error")
    cli("own: dlg --noise-std -0 (a valid zero)", dl + ["--noise-std", "-0", "--json", "{W}/out.json"], "ok")
    cli("own: dlg --prune 0.999999", dl + ["--prune", "0.999999", "--json", "{W}/out.json"], "either")
    cli("own: dlg --defense full --max-grad-norm 0", dl + ["--defense", "full", "--max-grad-norm", "0"], "error")
    cli("own: dlg --defense full --noise-multiplier inf", dl + ["--defense", "full", "--noise-multiplier", "inf"], "error")
    cli("own: dlg --defense ppp --noise-std 0.1", dl + ["--defense", "ppp", "--noise-std", "0.1"], "error")
    cli("own: bypass --precode --beta inf", ["attack", "bypass", "--sample", "photos:0", "--precode", "--beta", "inf", "--iterations", "2"], "error")
    cli("own: bypass --precode --beta nan", ["attack", "bypass", "--sample", "photos:0", "--precode", "--beta", "nan", "--iterations", "2"], "error")
    cli("own: bypass --precode --bottleneck 0", ["attack", "bypass", "--sample", "photos:0", "--precode", "--bottleneck", "0"], "error")
    cli("own: --sample photos:99", ["attack", "dlg", "--sample", "photos:99"], "error")
    cli("own: --sample photos:-1", ["attack", "dlg", "--sample", "photos:-1"], "error")
    cli("own: --sample nosuch:0", ["attack", "dlg", "--sample", "nosuch:0"], "error")
    cli("own: --sample photos:", ["attack", "dlg", "--sample", "photos:"], "error")
    cli("own: --sample ':'", ["attack", "dlg", "--sample", ":"], "error")
    cli("own: --sample photos (no index)", ["attack", "dlg", "--sample", "photos"], "error")
    cli("own: --sample photos:1.5", ["attack", "dlg", "--sample", "photos:1.5"], "error")
    cli("own: --sample photos:0,0 (duplicate index)", dl[:3] + ["photos:0,0", "--iterations", "2", "--json", "{W}/out.json"], "either")
    cli("own: --sample photos:0 --batch 14 (past the end)", ["attack", "dlg", "--sample", "photos:0", "--batch", "14"], "error")
    cli("own: --sample photos:12 --batch 2 (past the end)", ["attack", "dlg", "--sample", "photos:12", "--batch", "2"], "error")
    cli("own: --sample photos:0,1 --batch 2", ["attack", "dlg", "--sample", "photos:0,1", "--batch", "2"], "error")
    cli("own: --sample photos:0,1 --label 3", ["attack", "dlg", "--sample", "photos:0,1", "--label", "3"], "error")
    cli("own: idlg on a batch", ["attack", "idlg", "--sample", "photos:0,1"], "error")
    cli("own: analytic on a batch", ["attack", "analytic", "--sample", "photos:0,1"], "error")
    cli("own: analytic with --model lenet-zhu (no first linear layer)", ["attack", "analytic", "--sample", "photos:0", "--model", "lenet-zhu"], "error")
    cli("own: grnn --restarts 2", ["attack", "grnn", "--sample", "photos:0", "--restarts", "2"], "error")
    cli("own: --image and --sample together", ["attack", "dlg", "--image", "{F}/red.png", "--sample", "photos:0"], "error")
    cli("own: --sentence on an image attack", ["attack", "dlg", "--sentence", "beautiful"], "error")
    cli("own: attack with no image", ["attack", "dlg"], "error")
    cli("own: --image with --batch 2", ["attack", "dlg", "--image", "{F}/red.png", "--batch", "2"], "error")
    cli("own: --model lenet5 --size 8 (tiny input)", ["attack", "dlg", "--image", "{F}/red.png", "--model", "lenet5", "--size", "8",
                                                     "--iterations", "2", "--json", "{W}/out.json"], "either")
    cli("own: --size 7 (the smallest)", ["attack", "analytic", "--image", "{F}/red.png", "--size", "7", "--classes", "2",
                                         "--json", "{W}/out.json"], "ok")
    cli("own: dlg --restarts 64 --iterations 2", dl + ["--restarts", "64", "--json", "{W}/out.json"], "ok")
    cli("own: text with 17 words", ["attack", "text", "--sentence", " ".join(["better"] * 17)], "error")
    cli("own: text --sentence ''", ["attack", "text", "--sentence", ""], "error")
    cli("own: text --sentence whitespace only", ["attack", "text", "--sentence", " \t\n "], "error")
    cli("own: text unicode sentence", ["attack", "text", "--sentence", "Beautiful ïs bëtter 🙂 than ugly"], "error")
    cli("own: text RTL/zero-width text", ["attack", "text", "--sentence", "better\u200bthan \u202eugly", "--iterations", "5"],
        "either", note="a zero-width space read as a word break, a bidi override dropped: debatable")
    cli("own: text --label 19", tr + ["--label", "19"], "error")
    cli("own: text --noise-multiplier 0.1 --max-grad-norm 0", tr + ["--noise-multiplier", "0.1", "--max-grad-norm", "0"], "error")
    cli("own: text ok (5 iterations)", tr + ["--json", "{W}/out.json"], "ok")

    # ---- own: image files
    img = ["attack", "analytic", "--classes", "2", "--image"]
    cli("own: --image /dev/null", img + ["/dev/null"], "error")
    cli("own: --image a FIFO (must not hang)", img + ["{F}/fifo.png"], "error", timeout=60)
    cli("own: --image missing file", img + ["{F}/nope.png"], "error")
    cli("own: --image text saved as .png", img + ["{F}/text.png"], "error")
    cli("own: --image zero-byte file", img + ["{F}/empty.png"], "error")
    cli("own: --image truncated JPEG", img + ["{F}/truncated.jpg"], "error")
    cli("own: --image PNG header with width 0", img + ["{F}/zero_width.png"], "error")
    cli("own: --image float TIFF full of NaN", img + ["{F}/nan.tiff"], "error")
    cli("own: --image animated GIF", img + ["{F}/anim.gif", "--json", "{W}/out.json"], "ok")
    cli("own: --image 16-bit PNG", img + ["{F}/gray16.png", "--json", "{W}/out.json"], "ok")
    cli("own: --image palette PNG with transparency", img + ["{F}/pal_trans.png", "--json", "{W}/out.json"], "ok")
    cli("own: --image JPEG with EXIF rotation", img + ["{F}/exif_rot.jpg", "--json", "{W}/out.json"], "ok")
    cli("own: --image path with spaces and unicode", img + ["{F}/my photo ü ✓.png", "--json", "{W}/out.json"], "ok")
    cli("own: --image a PNG named .jpg", img + ["{F}/png_named.jpg", "--json", "{W}/out.json"], "ok")
    cli("own: --image 1x1 pixel", img + ["{F}/one_pixel.png", "--json", "{W}/out.json"], "either")
    cli("own: --image 20000x1 sliver", img + ["{F}/sliver.png", "--json", "{W}/out.json"], "either")
    api("own: API 16-bit PNG keeps its gradient", textwrap.dedent('''
        from gleak_edu import data
        x = data.load_image("{F}/gray16.png", size=32)
        lo, hi, mean = float(x.min()), float(x.max()), float(x.mean())
        if hi - lo < 0.8 or not 0.3 < mean < 0.7: fail(f"min {lo:.2f} max {hi:.2f} mean {mean:.2f}: not a 0..1 ramp")
    '''), "ok")
    api("own: API palette PNG: transparent half white, opaque half red", textwrap.dedent('''
        from gleak_edu import data
        x = data.load_image("{F}/pal_trans.png", size=32)
        left, right = x[0, :, :, :12].mean(dim=(1, 2)).tolist(), x[0, :, :, 20:].mean(dim=(1, 2)).tolist()
        if min(left) < 0.9: fail(f"transparent half has mean RGB {[round(v, 2) for v in left]}, not white")
        if not (right[0] > 0.8 and right[1] < 0.2 and right[2] < 0.2): fail(f"opaque half has mean RGB {[round(v, 2) for v in right]}, not red")
    '''), "ok")
    api("own: API RGBA and LA fully transparent decode white", textwrap.dedent('''
        from gleak_edu import data
        for name in ("rgba_transparent.png", "la_transparent.png"):
            x = data.load_image("{F}/" + name, size=32)
            if float(x.min()) < 0.9: fail(f"{name}: min {float(x.min()):.2f}, not white")
    '''), "ok")
    api("own: API EXIF rotation applied", textwrap.dedent('''
        from gleak_edu import data
        x = data.load_image("{F}/exif_rot.jpg", size=32)
        top, bottom = float(x[0, 0, :12].mean()), float(x[0, 0, 20:].mean())
        if not top > bottom + 0.5: fail(f"red channel top {top:.2f} vs bottom {bottom:.2f}: the EXIF rotation was ignored")
    '''), "ok")
    api("own: API load_image_bytes of a NaN TIFF", textwrap.dedent('''
        from gleak_edu import data
        expect_error(lambda: data.load_image_bytes(open("{F}/nan.tiff", "rb").read()))
    '''), "error")
    api("own: API load_image_bytes of text", textwrap.dedent('''
        from gleak_edu import data
        expect_error(lambda: data.load_image_bytes(b"not an image at all"))
    '''), "error")
    api("own: API load_image size 0", textwrap.dedent('''
        from gleak_edu import data
        expect_error(lambda: data.load_image("{F}/red.png", size=0))
    '''), "error")
    api("own: API load_image channels 5", textwrap.dedent('''
        from gleak_edu import data
        expect_error(lambda: data.load_image("{F}/red.png", channels=5))
    '''), "error")

    # ---- own: output paths
    an = ["attack", "analytic", "--sample", "photos:0"]
    cli("own: --json /dev/full-like device (writing fails)", an + ["--json", "{W}/full"], "error",
        setup=setup_full_device("full"), check=check_still_chardev("full"), check_on_error=True)
    cli("own: --json /dev/null-like device (discard the output)", an + ["--json", "{W}/null"], "either",
        setup=setup_null_device("null"), check=check_still_chardev("null"), check_on_error=True)
    cli("own: --json /proc/x.json (read-only place)", an + ["--json", "/proc/x.json"], "error", out_path=True)
    cli("own: --json /sys/x.json (read-only place)", an + ["--json", "/sys/x.json"], "error", out_path=True)
    cli("own: --json spaces only", an + ["--json", "   "], "error", out_path=True)
    cli("own: --json . (the current folder)", an + ["--json", "."], "error", out_path=True)
    cli("own: --json and --png the same file", an + ["--json", "{W}/same", "--png", "{W}/same"], "error", out_path=True)
    cli("own: --png out.jpg (not a PNG name)", an + ["--png", "{W}/out.jpg"], "error", out_path=True)
    cli("own: --png without suffix writes exactly that path", an + ["--png", "{W}/noext"], "ok", check=check_exact_png("noext"))
    cli("own: --json into missing folders", an + ["--json", "{W}/a/b/c/out.json"], "ok")
    cli("own: --json over an existing file", an + ["--json", "{W}/afile"], "ok", setup=setup_file("afile", "old\n"),
        check=lambda F, W, rec: None if _read_json(W / "afile") else (WRONG_OUTPUT, "afile not replaced by JSON"))
    cli("own: train --json under a file (no work first)", base["train"] + ["--json", "{W}/afile/x/out.json"], "error",
        out_path=True, setup=setup_file("afile"))

    # ---- own: train
    t = ["train", "--dp", "fixed", "--epochs", "1", "--images", "1", "--iterations", "5"]
    for flag, value in (("--delta", "0"), ("--delta", "1"), ("--delta", "nan"), ("--delta", "-1e-5"), ("--max-grad-norm", "nan"),
                        ("--max-grad-norm", "-1"), ("--max-grad-norm", "0"), ("--clipping", "dynamicx"), ("--noise-multiplier", "0"),
                        ("--attack-steps", "-1"), ("--attack-steps", "1000000"), ("--attack-steps", ","),
                        ("--lr", "inf"), ("--lr", "nan"), ("--epochs", "0"), ("--epochs", "1001"), ("--noise-updates", "0"),
                        ("--images", "0"), ("--images", "1001"), ("--seed", "-3")):
        cli(f"own: train {flag} {value!r}", t + [flag, value, "--json", "{W}/out.json"], "error")
    cli("own: train --dp linear --noise-multiplier-end 0", ["train", "--dp", "linear", "--noise-multiplier-end", "0", "--json", "{W}/out.json"], "error")
    cli("own: train --dp bogus", ["train", "--dp", "bogus", "--json", "{W}/out.json"], "error")
    cli("own: train without --json", ["train", "--dp", "none"], "error")

    # ---- own: epsilon
    for hist in ("", ",,,", "abc", "1:2:3", "1:0:3", "1:0.1:0", "1:0.1:1.5", "1:0.1:-5", "nan:0.1:10", "inf:0.1:10",
                 "-1:0.1:10", "1:0.1:10:5", "0x10:0.1:10", "1:nan:10", "1:0.1:99999999999999999999999"):
        cli(f"own: epsilon --history {hist!r}", ["epsilon", "--history", hist], "error" if hist != "1:0.1:99999999999999999999999" else "either",
            check=check_epsilon_stdout if hist == "1:0.1:99999999999999999999999" else None)
    for delta in ("0", "1", "nan", "-1e-5", "inf"):
        cli(f"own: epsilon --delta {delta}", ["epsilon", "--history", "2:0.01:100", "--delta", delta], "error")
    cli("own: epsilon noise multiplier 0 (no noise: inf)", ["epsilon", "--history", "0:0.01:10"], "either",
        check=lambda F, W, rec: None if rec["stdout"].strip().endswith("inf") else check_epsilon_stdout(F, W, rec))
    cli("own: epsilon gdp with a changing noise multiplier", ["epsilon", "--history", "1:0.01:10,2:0.01:10", "--accountant", "gdp"], "error")
    cli("own: epsilon 10000 segments", ["epsilon", "--history", "1:0.01:1," * 10000], "either", check=check_epsilon_stdout,
        timeout=60, note="one segment takes ~20 ms: 1000 segments ~24 s, 10000 ~4 min")
    cli("own: epsilon 1e12 steps (rdp)", ["epsilon", "--history", "1:0.01:1000000000000"], "either", check=check_epsilon_stdout)
    cli("own: epsilon noise multiplier 1e-5, q 1", ["epsilon", "--history", "1e-5:1:10"], "either", check=check_epsilon_stdout)
    cli("own: epsilon ok", ["epsilon", "--history", "2:0.01:100", "--delta", "1e-5"], "ok", check=check_epsilon_stdout)
    api("own: API epsilon noise multiplier 1e-300", textwrap.dedent('''
        from gleak_edu.defenses import epsilon
        v = run_or_error(lambda: epsilon([(1e-300, 0.01, 10)], 1e-5))
        if not (v >= 0): fail(f"epsilon {v}")
    '''), "either")
    api("own: API epsilon bool steps", textwrap.dedent('''
        from gleak_edu.defenses import epsilon
        expect_error(lambda: epsilon([(1.0, 0.01, True)], 1e-5))
    '''), "error")

    # ---- own: sweep / arena arguments
    sw = ["sweep", "ppp", "--json", "{W}/out.json", "--cache", "{W}/cache"]
    for flag, value in (("--noise-levels", "nan"), ("--noise-levels", "inf"), ("--noise-levels", "-1"),
                        ("--noise-levels", ",".join(["1"] * 101)), ("--seeds", "-1"), ("--seeds", "1.5"),
                        ("--max-grad-norm", "0"), ("--images", "0"), ("--train-images", "0"), ("--iterations", "0")):
        cli(f"own: sweep {flag} {value[:20]!r}", sw + [flag, value], "error")
    cli("own: sweep --noise-levels 0", SWEEP_TINY[:2] + ["--noise-levels", "0"] + SWEEP_TINY[4:] + ["--cache", "{W}/cache", "--json", "{W}/out.json"],
        "either", check=check_sweep_output(None), heavy=True, timeout=240)
    cli("own: sweep --cache and --no-cache", sw + ["--no-cache"], "error")
    ar = ["arena", "--json", "{W}/out.json", "--cache", "{W}/cache"]
    for flag, value in (("--prune-fractions", "1"), ("--prune-fractions", "-0.1"), ("--noise-levels", "0"),
                        ("--noise-levels", "inf"), ("--workers", "0"), ("--workers", "65"), ("--seeds", "4294967296")):
        cli(f"own: arena {flag} {value!r}", ar + [flag, value], "error")

    # ---- own: the command itself
    cli("own: no arguments", [], "error")
    cli("own: unknown command", ["frobnicate"], "error")
    cli("own: unknown attack", ["attack", "nosuch", "--sample", "photos:0"], "error")
    cli("own: unknown option", ["attack", "dlg", "--sample", "photos:0", "--bogus"], "error")
    cli("own: --help", ["--help"], "ok")

    # ---- own: more API
    api("own: API dlg iterations=0", VICTIM + "expect_error(lambda: dlg(model, shared, **dict(kw, iterations=0)))\n", "error")
    api("own: API dlg iterations=True", VICTIM + "expect_error(lambda: dlg(model, shared, **dict(kw, iterations=True)))\n", "error")
    api("own: API dlg iterations=2.5", VICTIM + "expect_error(lambda: dlg(model, shared, **dict(kw, iterations=2.5)))\n", "error")
    api("own: API dlg num_classes mismatch", VICTIM + "expect_error(lambda: dlg(model, shared, **dict(kw, num_classes=11)))\n", "error")
    api("own: API dlg shared as a list", VICTIM + "expect_error(lambda: dlg(model, list(shared.values()), **kw))\n", "error")
    api("own: API dlg shared missing a key", VICTIM + textwrap.dedent('''
        bad = dict(shared); bad.pop(next(iter(bad)))
        expect_error(lambda: dlg(model, bad, **kw))
    '''), "error")
    api("own: API dlg shared with an extra key", VICTIM + "expect_error(lambda: dlg(model, dict(shared, extra=torch.zeros(3)), **kw))\n", "error")
    api("own: API dlg shared tensor of the wrong shape", VICTIM + textwrap.dedent('''
        bad = dict(shared); k = next(iter(bad)); bad[k] = bad[k].flatten()
        expect_error(lambda: dlg(model, bad, **kw))
    '''), "error")
    api("own: API dlg restarts=10**9", VICTIM + "expect_error(lambda: dlg(model, shared, options=AttackOptions(restarts=10**9), **kw))\n", "error")
    api("own: API dlg restarts=0", VICTIM + "expect_error(lambda: dlg(model, shared, options=AttackOptions(restarts=0), **kw))\n", "error")
    api("own: API dlg input_shape batch 10**6", VICTIM + "expect_error(lambda: dlg(model, shared, **dict(kw, input_shape=(10**6, 3, 32, 32))))\n", "error")
    api("own: API dlg input_shape of another size", VICTIM + "expect_error(lambda: dlg(model, shared, **dict(kw, input_shape=(1, 3, 16, 16))))\n", "error")
    api("own: API dlg truth full of NaN", VICTIM + "expect_error(lambda: dlg(model, shared, truth=torch.full((1, 3, 32, 32), float('nan')), **kw))\n", "error")
    api("own: API ig tv_weight=-1", VICTIM + "expect_error(lambda: inverting_gradients(model, shared, tv_weight=-1.0, **kw))\n", "error")
    api("own: API analytic_recovery on a conv model", VICTIM + "expect_error(lambda: analytic_recovery(model, shared, input_shape=(1, 3, 32, 32)))\n", "error")
    api("own: API gaussian_noise noise_std nan", VICTIM + textwrap.dedent('''
        from gleak_edu.defenses import gaussian_noise
        expect_error(lambda: gaussian_noise(shared, float("nan")))
    '''), "error")
    api("own: API prune_gradients fraction 1", VICTIM + textwrap.dedent('''
        from gleak_edu.defenses import prune_gradients
        expect_error(lambda: prune_gradients(shared, 1.0))
    '''), "error")
    api("own: API clip_and_noise max_grad_norm -1", VICTIM + textwrap.dedent('''
        from gleak_edu.defenses import clip_and_noise
        expect_error(lambda: clip_and_noise(shared, 1.0, -1.0))
    '''), "error")
    api("own: API build_model num_classes 10**12", textwrap.dedent('''
        from gleak_edu import models
        expect_error(lambda: models.build_model("mlp", (3, 32, 32), 10**12))
    '''), "error")
    api("own: API client_gradient with pixels 255", textwrap.dedent('''
        from gleak_edu import fl, models
        m = models.build_model("lenet-zhu", (3, 32, 32), 10)
        expect_error(lambda: fl.client_gradient(m, torch.full((1, 3, 32, 32), 255.0), torch.tensor([1])))
    '''), "error")
    api("own: API dlg leaves a plain model unchanged (eval mode kept)", VICTIM + textwrap.dedent('''
        model.eval()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        dlg(model, shared, **dict(kw, iterations=5))
        if model.training: fail("dlg switched the model to train mode")
        if any(not torch.equal(before[k], v) for k, v in model.state_dict().items()): fail("dlg changed the weights")
    '''), "ok")

    api("own: API AttackInterrupted/CallbackError survive pickling (arena's process pool)", textwrap.dedent('''
        import pickle
        from gleak_edu.attacks import AttackInterrupted, AttackResult, CallbackError
        r = AttackResult("DLG", torch.zeros(1, 3, 8, 8), torch.zeros(1, dtype=torch.int64), 0.0, 1, 1, 0.0)
        for cls in (AttackInterrupted, CallbackError):
            try:
                back = pickle.loads(pickle.dumps(cls("stopped", r)))
            except Exception as exc:
                lost(f"{cls.__name__} cannot cross a process boundary: {type(exc).__name__}: {exc}")
            if not torch.equal(back.result.reconstruction, r.reconstruction):
                lost(f"{cls.__name__}.result lost in pickling")
    '''), "ok")

    # ---- Ctrl-C, more
    cli("own: Ctrl-C during ig --restarts 4", ["attack", "ig", "--sample", "photos:0", "--iterations", "100000", "--restarts", "4",
                                              "--json", "{W}/out.json"], "interrupt", check=check_interrupted_json("out.json", None), heavy=True)
    cli("own: Ctrl-C during grnn", ["attack", "grnn", "--sample", "photos:0", "--iterations", "100000", "--json", "{W}/out.json",
                                    "--png", "{W}/out.png"], "interrupt", check=check_interrupted_json("out.json", "out.png"), heavy=True)
    cli("own: Ctrl-C during text", ["attack", "text", "--sentence", "beautiful is better than ugly",
                                           "--iterations", "100000", "--json", "{W}/out.json"], "interrupt",
        check=check_interrupted_json("out.json", None), heavy=True)
    cli("own: Ctrl-C during train", ["train", "--dp", "fixed", "--epochs", "5", "--json", "{W}/out.json"], "interrupt",
        json_required_on_interrupt=False, heavy=True)
    cli("own: Ctrl-C during sweep", ["sweep", "ppp", "--noise-levels", "1", "--seeds", "0", "--images", "1", "--epochs", "1",
                                     "--train-images", "256", "--cache", "{W}/cache", "--json", "{W}/out.json"], "interrupt",
        json_required_on_interrupt=False, heavy=True)
    cli("own: Ctrl-C during arena (2 workers), 3 tries at 15, 20, 30 s", ["arena", "--noise-levels", "1", "--prune-fractions", "0.5", "--images", "1",
                                                "--seeds", "0", "--workers", "2", "--cache", "{W}/cache", "--json", "{W}/out.json"],
        "interrupt", json_required_on_interrupt=False, interrupt_delays=[15.0, 20.0, 30.0], heavy=True)
    cli("own: Ctrl-C while importing (1.5 s in)", ["attack", "dlg", "--sample", "photos:0", "--json", "{W}/out.json"], "interrupt",
        json_required_on_interrupt=False, interrupt_cpu=1e9, interrupt_wall=1.5)
    cli("own: Ctrl-C early, 20 tries at 0.25..1.2 s (imports)", ["attack", "dlg", "--sample", "photos:0", "--json", "{W}/out.json"],
        "interrupt", json_required_on_interrupt=False, interrupt_delays=[round(0.25 + 0.05 * k, 2) for k in range(20)])
    cli("own: Ctrl-C twice (0.2 s apart) during dlg", ["attack", "dlg", "--sample", "photos:0", "--iterations", "100000",
                                                       "--json", "{W}/out.json"], "interrupt", json_required_on_interrupt=False,
        double_interrupt=True, heavy=True)
    return cases


# --------------------------------------------------------------------------- running


def _subst(text: str, F: Path, W: Path) -> str:
    return text.replace("{F}", str(F)).replace("{W}", str(W))


LAUNCH = (
    "import os, resource, sys\n"
    "lim = int(sys.argv[1])\n"
    "if lim > 0: resource.setrlimit(resource.RLIMIT_AS, (lim, lim))\n"
    "os.execv(sys.executable, [sys.executable] + sys.argv[2:])\n"
)


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the case's own process group (start_new_session)
    except ProcessLookupError:
        pass


def run_case(i: int, case: Case, F: Path, root: Path, mem_bytes: int, late_s: float) -> dict:
    W = root / "cases" / f"{i:03d}"
    W.mkdir(parents=True, exist_ok=True)
    rec = {"index": i, "name": case.name, "kind": case.kind, "expected": case.expected, "note": case.note, "detail": ""}
    if case.kind == "cli":
        args = [_subst(a, F, W) for a in case.args]
        shown = ["gleak"] + args
        argv = ["-m", "gleak_edu.cli"] + args
    else:
        code = PRELUDE + _subst(textwrap.dedent(case.code), F, W)
        (W / "snippet.py").write_text(code)
        snippet = textwrap.dedent(case.code).replace(VICTIM, "<VICTIM>\n").replace(BN_MODEL, "<BN_MODEL>\n").strip()
        shown = None
        argv = [str(W / "snippet.py")]
    cmd_text = shlex.join(shown) if shown else "python: " + "; ".join(
        ln.strip() for ln in snippet.splitlines() if ln.strip() and not ln.strip().startswith("#"))
    rec["command"] = cmd_text if len(cmd_text) <= 400 else cmd_text[:380] + f" ... ({len(cmd_text)} chars)"
    if case.setup is not None:
        try:
            case.setup(F, W)
        except Exception as exc:  # noqa: BLE001
            rec.update(classification="setup failed", rc=None, seconds=0.0, stderr_first=f"setup: {exc!r}", stderr_last="",
                       stdout="", stderr="")
            return rec
    full = [sys.executable, "-c", LAUNCH, str(mem_bytes), *argv]
    env = _env(root)
    if not case.interrupt_delays:
        rec.update(_execute(case, full, W, env, F, late_s))
        return rec
    # several tries, each interrupted after its own delay: the case is as bad as its worst try
    tries = []
    for delay in case.interrupt_delays:
        one = dataclasses.replace(case, interrupt_cpu=1e9, interrupt_wall=delay, interrupt_min_wall=0.0)
        tries.append((delay, _execute(one, full, W, env, F, late_s)))
    worst_delay, worst = max(tries, key=lambda t: SEVERITY.index(t[1]["classification"]) if t[1]["classification"] in SEVERITY else 99)
    counts = {}
    for _, r in tries:
        counts[r["classification"]] = counts.get(r["classification"], 0) + 1
    summary = f"{len(tries)} tries at {case.interrupt_delays[0]:g}..{case.interrupt_delays[-1]:g} s: " + ", ".join(
        f"{n} {k}" for k, n in counts.items())
    bad = "; ".join(f"{d:g} s: {r['classification']} (exit {r['rc']}: {_tail(r)})" for d, r in tries if r["classification"] != CLEAN)
    rec.update(worst)
    rec["detail"] = summary + ("; " + bad if bad else "") + (f"; worst at {worst_delay:g} s: {worst['detail']}" if worst["detail"] else "")
    rec["seconds"] = round(sum(r["seconds"] for _, r in tries), 2)
    return rec


def _tail(r: dict) -> str:
    return (r.get("stderr_last") or "").strip()[:120]


def _execute(case: Case, full: list[str], W: Path, env: dict, F: Path, late_s: float) -> dict:
    """Run the case's process once; returns rc, timings, output and the classification."""
    rec = {"detail": ""}
    start = time.perf_counter()
    proc = subprocess.Popen(full, cwd=W, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    hung = False
    interrupted_at = None
    if case.expected == "interrupt":
        while proc.poll() is None:
            wall = time.perf_counter() - start
            if wall >= case.interrupt_min_wall and (_cpu_seconds(proc.pid) >= case.interrupt_cpu or wall >= case.interrupt_wall):
                break
            time.sleep(0.1 if case.interrupt_wall > 5 else 0.01)
        if proc.poll() is None:
            interrupted_at = time.perf_counter() - start
            try:
                os.killpg(proc.pid, signal.SIGINT)  # the case's own process group, as a terminal's Ctrl-C
                if case.double_interrupt:
                    time.sleep(0.2)
                    os.killpg(proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        else:
            rec["detail"] = "the process ended before it could be interrupted"
    try:
        out, err = proc.communicate(timeout=case.timeout if interrupted_at is None else 60.0)
    except subprocess.TimeoutExpired:
        hung = True
        _kill_group(proc)
        out, err = proc.communicate()
    seconds = time.perf_counter() - start
    out = out.decode("utf-8", "replace")
    err = err.decode("utf-8", "replace")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    rec.update(rc=proc.returncode, seconds=round(seconds, 2), stdout=out[-4000:], stderr=err[-8000:],
               stderr_first=lines[0] if lines else "", stderr_last=lines[-1] if lines else "", stderr_lines=len(lines),
               interrupted_at=None if interrupted_at is None else round(interrupted_at, 2))
    rec["classification"], extra = classify(case, rec, hung, F, W, late_s)
    if extra:
        rec["detail"] = (extra + ("; " + rec["detail"] if rec["detail"] else "")).strip()
    return rec


def _one_line(rec: dict, prefix: str) -> str | None:
    if rec["stderr_lines"] != 1:
        return f"{rec['stderr_lines']} stderr lines, not one"
    if not rec["stderr_first"].startswith(prefix):
        return f"the stderr line does not start with {prefix!r}"
    return None


def classify(case: Case, rec: dict, hung: bool, F: Path, W: Path, late_s: float) -> tuple[str, str]:
    rc, err = rec["rc"], rec["stderr"]
    prefix = "gleak: error:" if case.kind == "cli" else "gleak-api: error:"
    if hung:
        return HANG, f"killed after {case.timeout:.0f} s" if rec.get("interrupted_at") is None else "still running 60 s after SIGINT"
    if "Traceback (most recent call last)" in err:
        return TRACEBACK, ""
    if rc is not None and rc < 0 and not (case.expected == "interrupt" and rc == -signal.SIGINT):
        return WRONG_EXIT, f"killed by signal {-rc} ({signal.Signals(-rc).name})"

    def problem(res):
        if res is None:
            return None
        return res if isinstance(res, tuple) else (WRONG_OUTPUT, str(res))

    if case.expected == "interrupt":
        if rc == -signal.SIGINT:
            rec["detail"] = "it died by SIGINT after its message instead of exit(130) (a shell shows 130 all the same)"
        elif rc != 130:
            return WRONG_EXIT, f"exit {rc}, expected 130"
        if case.json_required_on_interrupt and case.check:
            res = problem(case.check(F, W, rec))
            if res:
                return res
        msg = _one_line(rec, "gleak: interrupted")
        return (WRONG_OUTPUT, msg) if msg else (CLEAN, "")

    ok_allowed = case.expected in ("ok", "either")
    err_allowed = case.expected in ("error", "either")
    if rc == 2 and err_allowed:
        msg = _one_line(rec, prefix)
        if msg:
            return WRONG_OUTPUT, msg
        limit = late_s if case.out_path else case.late_s
        if limit is not None and rec["seconds"] > limit:
            return LATE, f"refused after {rec['seconds']:.1f} s (limit {limit:g} s)"
        if case.check and case.check_on_error:  # message checks (e.g. names --seed), side effects
            res = problem(case.check(F, W, rec))
            if res:
                return res
        return CLEAN, ""
    if rc == 0 and ok_allowed:
        if case.kind == "cli":
            for flag in ("--json", "--png"):
                if flag in case.args:
                    path = Path(_subst(case.args[case.args.index(flag) + 1], F, W))
                    if not path.exists():
                        return LOST, f"{flag} {path.name} not written"
        if case.check:
            res = problem(case.check(F, W, rec))
            if res:
                return res
        if case.max_s is not None and rec["seconds"] > case.max_s:
            return SLOW, f"took {rec['seconds']:.1f} s (bound {case.max_s:g} s)"
        return CLEAN, ""
    if case.kind == "api" and rc == 3:
        return WRONG_OUTPUT, ""
    if case.kind == "api" and rc == 4:
        return LOST, ""
    if rc == 0 and case.expected == "error":
        extra = ""
        if case.check:  # e.g. the output it should not have written
            res = problem(case.check(F, W, rec))
            extra = f"; {res[1]}" if res else ""
        return WRONG_EXIT, "exit 0: the bad input was accepted" + extra
    return WRONG_EXIT, f"exit {rc}, expected {case.expected}"


# --------------------------------------------------------------------------- report


def _cell(text: str, width: int = 160) -> str:
    text = (text or "").replace("|", "\\|").replace("\n", " ").replace("`", "'")
    return text if len(text) <= width else text[: width - 3] + "..."


def report(records: list[dict], total_s: float) -> str:
    out = ["| # | case | kind | expected | result | rc | s | command | stderr (first line; last line for a traceback) | detail |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        msg = r.get("stderr_first", "")
        if r["classification"] == TRACEBACK:
            msg = f"{msg} ... {r.get('stderr_last', '')}"
        out.append(
            f"| {r['index']} | {_cell(r['name'], 90)} | {r['kind']} | {r['expected']} | **{r['classification']}** "
            f"| {r.get('rc')} | {r.get('seconds', 0):.1f} | `{_cell(r['command'], 200)}` | {_cell(msg, 220)} | {_cell(r.get('detail', ''), 160)} |"
        )
    counts = {k: sum(r["classification"] == k for r in records) for k in ORDER}
    other = len(records) - sum(counts.values())
    out += ["", "## Summary", "", "| cases tried | handled cleanly | tracebacks | wrong exit codes | hangs | results lost | late refusals | wrong output | slow |"
            + (" setup failed |" if other else ""),
            "|---|---|---|---|---|---|---|---|---|" + ("---|" if other else ""),
            f"| {len(records)} | {counts[CLEAN]} | {counts[TRACEBACK]} | {counts[WRONG_EXIT]} | {counts[HANG]} | {counts[LOST]} "
            f"| {counts[LATE]} | {counts[WRONG_OUTPUT]} | {counts[SLOW]} |" + (f" {other} |" if other else ""),
            "",
            f"cli cases: {sum(r['kind'] == 'cli' for r in records)}, api cases: {sum(r['kind'] == 'api' for r in records)}; "
            f"issue-14 cases: {sum(r['name'].startswith('#') for r in records)}, own: {sum(r['name'].startswith('own') for r in records)}; "
            f"wall time {total_s:.0f} s"]
    bad = [r for r in records if r["classification"] != CLEAN]
    if bad:
        out += ["", "## Not clean", ""]
        for r in bad:
            msg = r.get("stderr_last") if r["classification"] == TRACEBACK else r.get("stderr_first")
            if not msg and r.get("stdout", "").strip():
                msg = "stdout: " + r["stdout"].strip().splitlines()[-1]
            out.append(f"- [{r['classification']}] {r['name']}: `{_cell(r['command'], 300)}` -> {_cell(msg, 300)}"
                       + (f" ({_cell(r['detail'], 200)})" if r.get("detail") else ""))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", action="append", help="run only cases whose name contains this substring (repeatable)")
    p.add_argument("--json", type=Path, help="write the per-case records here")
    p.add_argument("--jobs", type=int, default=2, help="cases run at once (2)")
    p.add_argument("--mem-gb", type=float, default=12.0, help="address-space limit per case, GiB (12; 0: none)")
    p.add_argument("--late-s", type=float, default=3.0, help="a bad output path refused later than this is a late refusal (3 s)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (printed on stderr)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    args = p.parse_args(argv)

    cases = build_cases()
    if args.only:
        cases = [c for c in cases if any(s.lower() in c.name.lower() for s in args.only)]
    if args.list:
        for c in cases:
            print(f"{c.kind:3} {c.expected:9} {c.name}")
        return 0
    if not cases:
        print("probe: no case matches --only", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="gleak-probe-"))
    F = root / "fixtures"
    t0 = time.perf_counter()
    print(f"probe: {len(cases)} cases; making fixtures in {F}", file=sys.stderr)
    make_fixtures(F)
    mem = int(args.mem_gb * 2**30)
    order = sorted(range(len(cases)), key=lambda i: (not cases[i].heavy, i))
    records: list[dict | None] = [None] * len(cases)
    lock = threading.Lock()
    done = [0]

    def job(i):
        rec = run_case(i + 1, cases[i], F, root, mem, args.late_s)
        with lock:
            records[i] = rec
            done[0] += 1
            print(f"probe: [{done[0]}/{len(cases)}] {rec['classification']:15} {rec.get('seconds', 0):6.1f} s  {cases[i].name}",
                  file=sys.stderr, flush=True)

    try:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(job, order))
    finally:
        if args.keep:
            print(f"probe: kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    total = time.perf_counter() - t0
    recs = [r for r in records if r is not None]
    print(report(recs, total))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"total_seconds": round(total, 1), "cases": recs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
