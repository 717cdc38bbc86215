"""A Colab-like environment: Colab's pinned packages in a fresh venv, the course installed on top of them.

    python tests/colab_env.py build VENV   # the venv, Colab's pins, then the course under them; fails if a pin moved
    python tests/colab_env.py check VENV [--timed]   # in that venv: the widget and panel tests, notebook 01 (nbval)

``make test`` builds it in the background while the unit tests run, then checks it
(``make test-colab`` does both alone). The pins are ``binder/colab-constraints.txt``
(Colab's published ``pip-freeze.txt``; see ``gleak_edu.colab``).

What cannot be Colab's here, and is said in the output:

* Python: Colab runs 3.13, this machine 3.11; the pins are applied to 3.11 (those
  without a 3.11 build would fail the install, and none of the installed ones does).
* torch: Colab's ``torch 2.11.0+cpu`` is a cp313 wheel on PyTorch's own index; the
  stand-in is the CPU build ``torch==2.13.0`` this machine has (the course needs >= 2.6).

Steps of ``build``: a fresh venv; ``torch==2.13.0``; Colab's versions of the packages
the course and a notebook kernel use (:data:`RUNTIME`, installed under the pins: the
"runtime"); a snapshot; the course (``pip install -e .`` under the same pins, plus nbval
for the check); a second snapshot. It fails if any package of the first snapshot changed
version, if any installed package differs from its pin, or if ``pip check`` complains.
The summary goes to ``VENV/colab-report.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gleak_edu.colab import FLOWER_MOVES, constraints_from_freeze, normalize, read_constraints  # noqa: E402

PINS = ROOT / "binder" / "colab-constraints.txt"
TORCH = "torch==2.13.0"  # the stand-in for Colab's torch 2.11.0+cpu (a cp313 wheel on download.pytorch.org)
NOT_HERE = {"torch", "torchvision", "torchaudio", "torchcodec", "torchao", "torchdata", "torchtune", "torchsummary"}
#: Colab's packages the course and a notebook kernel use: installed first at Colab's versions (the runtime).
RUNTIME = ["pip", "ipython", "ipywidgets", "ipykernel", "notebook", "jupyter-client", "jupyter-core", "nbclient", "nbformat",
           "traitlets", "widgetsnbextension", "jupyterlab-widgets", "matplotlib", "matplotlib-inline", "numpy",
           "scipy", "scikit-image", "scikit-learn", "mlxtend", "tqdm", "pillow", "pytest"]
#: Not in Colab, needed only to run the check (nbval executes notebook 01 as CI does).
CHECK_TOOLS = ["nbval"]
WIDGET_TESTS = ["tests/test_widgets_viz.py"]  # every live view and panel, headless
NOTEBOOK = "notebooks/01_dlg_idlg.ipynb"
NOTEBOOK_LIMIT_S = 180.0


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("$ " + " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run(cmd, check=True, **kw)


def _installed(py: Path) -> dict[str, str]:
    """``{normalized name: version}`` of what the venv holds (its pip list read as a freeze)."""
    out = subprocess.run([str(py), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
                         capture_output=True, text=True, check=True).stdout
    return dict(constraints_from_freeze(out))


def _write_pins(path: Path, pins: dict[str, str], leave_out=()) -> Path:
    """Write ``pins`` less the names in ``leave_out`` as a pip constraints file; returns ``path``."""
    path.write_text("".join(f"{n}=={v}\n" for n, v in sorted(pins.items()) if n not in leave_out))
    return path


_NEEDS_NEWER_PYTHON = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) depends on Python>=")


def _uv_under_pins(py: Path, constraints: Path, pins: dict[str, str], dropped: dict[str, str], *args: str) -> None:
    """Install ``args`` under ``pins`` (written to ``constraints``). A pin whose release needs a newer Python than
    this machine's (Colab runs 3.13) is dropped, recorded in ``dropped`` and the install retried."""
    for _ in range(30):
        _write_pins(constraints, pins, dropped)
        # uv (Flower depends on it, so it is in the course's venv) resolves as pip does, several times faster
        cmd = [sys.executable, "-m", "uv", "pip", "install", "--quiet", "--python", str(py), "-c", str(constraints), *args]
        print("$ " + " ".join(cmd), flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode == 0:
            return
        found = [normalize(m.group(1)) for m in _NEEDS_NEWER_PYTHON.finditer(done.stderr)]
        found = [n for n in found if n in pins and n not in dropped]
        if not found:
            raise SystemExit(f"the install under Colab's pins failed:\n{done.stderr}")
        for n in found:
            dropped[n] = f"{pins[n]} needs a newer Python than {sys.version.split()[0]}"
            print(f"  pin dropped: {n}=={pins[n]} (needs a newer Python than this machine's)", flush=True)
    raise SystemExit("too many pins dropped; is this Python far older than Colab's?")


def _stand_in_requirements(py: Path, pins: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The torch stand-in's requirements (installed with the runtime, at Colab's versions where Colab pins them), and
    Colab's pins those requirements exclude (Colab's torch 2.11 accepts them; the stand-in does not)."""
    from packaging.requirements import Requirement

    reqs = subprocess.run([str(py), "-c", "from importlib.metadata import requires; print('\\n'.join(requires('torch')))"],
                          capture_output=True, text=True, check=True).stdout.splitlines()
    names, out = [], {}
    for line in reqs:
        req = Requirement(line)
        name = normalize(req.name)
        if req.marker is not None:
            continue
        names.append(name)
        if name in pins and not req.specifier.contains(pins[name], prereleases=True):
            out[name] = f"the torch stand-in ({TORCH}) needs {req.name}{req.specifier}"
    return names, out


def _flower_under_pins(py: Path, venv: Path, pins: dict[str, str], dropped: dict[str, str]) -> dict[str, str]:
    """Dry runs of installing the ``fl`` extra (Flower, notebook 08) under Colab's pins, and under them less
    :data:`gleak_edu.colab.FLOWER_MOVES` (what notebook 08's install cell does)."""
    out = {}
    cases = [("all_pins", ()), ("without_moves", FLOWER_MOVES)]
    cases += [(f"without_moves_but_{m}", tuple(x for x in FLOWER_MOVES if x != m)) for m in FLOWER_MOVES]
    for key, leave_out in cases:
        path = _write_pins(venv / f"colab-constraints-{key}.txt", pins, {*dropped, *leave_out})
        done = subprocess.run([sys.executable, "-m", "uv", "pip", "install", "--dry-run", "--python", str(py), "-c",
                               str(path), "-e", f"{ROOT}[fl]"], capture_output=True, text=True)
        out[key] = "resolves" if done.returncode == 0 else "no solution: " + " ".join(done.stderr.split())[-300:]
    return out


def build(venv: Path) -> dict:
    """Build the Colab-like venv; returns the report (also written to ``venv/colab-report.json``).

    Raises:
        SystemExit: if a pinned package moved, an installed package differs from its pin, or ``pip check`` fails.
    """
    start = time.monotonic()
    pins = read_constraints(PINS)
    if venv.exists():
        shutil.rmtree(venv)
    _run([sys.executable, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    # no bytecode compiled in this venv (--no-compile here, uv's default below): its few processes (pytest, one
    # kernel) compile what they import in a few seconds, where compiling every package costs about two minutes of
    # CPU beside the unit tests (make's venv is compiled: its processes are many)
    _run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile", TORCH])
    constraints = venv / "colab-constraints-here.txt"  # Colab's pins, less those that cannot install here
    missing = [n for n in RUNTIME if normalize(n) not in pins]
    if missing:
        raise SystemExit(f"{PINS.name} has no pin for {missing}: refresh it (python -m gleak_edu.colab --help)")
    dropped = {n: "torch family: Colab's torch is a cp313 wheel on PyTorch's index; torch==2.13.0 (CPU) stands in "
                  "and its companions are left out" for n in NOT_HERE if n in pins}
    torch_needs, conflicts = _stand_in_requirements(py, pins)
    dropped.update(conflicts)
    pins = {**pins, "torch": _installed(py)["torch"]}  # the stand-in stays what it is
    dropped.pop("torch", None)
    _uv_under_pins(py, constraints, pins, dropped, *RUNTIME, *torch_needs)
    runtime = _installed(py)
    _uv_under_pins(py, constraints, pins, dropped, "-e", str(ROOT), *CHECK_TOOLS)
    after = _installed(py)
    flower = _flower_under_pins(py, venv, pins, dropped)
    changed = {n: [v, after.get(n)] for n, v in runtime.items() if after.get(n) != v}
    off_pin = {n: [pins[n], v] for n, v in after.items() if n in pins and n not in dropped and pins[n] != v}
    check = subprocess.run([str(py), "-m", "pip", "check"], capture_output=True, text=True)
    report = {
        "pins": str(PINS.relative_to(ROOT)), "python": sys.version.split()[0], "colab_python": "3.13",
        "torch_stand_in": TORCH, "runtime_packages": len(runtime), "pins_not_installable_here": dropped,
        "runtime_pinned": sorted(n for n in runtime if n in pins),
        "added_by_the_course": sorted(set(after) - set(runtime)),
        "colab_pinned_changed": changed, "installed_off_pin": off_pin,
        "pip_check": check.stdout.strip() or check.stderr.strip(), "pip_check_ok": check.returncode == 0,
        "versions": {n: after.get(n) for n in ("ipython", "ipywidgets", "notebook", "ipykernel", "numpy", "torch")},
        "flower_extra": flower, "build_seconds": round(time.monotonic() - start, 1),
    }
    (venv / "colab-report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("runtime_packages", "colab_pinned_changed", "installed_off_pin",
                                              "pip_check", "versions", "build_seconds")}, indent=1))
    print(f"added by the course ({len(report['added_by_the_course'])}): {', '.join(report['added_by_the_course'])}")
    print("Colab pins not installable here: " + "; ".join(f"{n}=={pins[n]} ({why})" for n, why in sorted(dropped.items())))
    print(f"the fl extra (notebook 08) under Colab's pins: {flower['all_pins'][:120]}; without "
          f"{', '.join(FLOWER_MOVES)}: {flower['without_moves'][:120]}; each of them needed: "
          + ", ".join(f"{k.rsplit('_', 1)[1]} {'yes' if v != 'resolves' else 'NO'}" for k, v in flower.items()
                      if k.startswith("without_moves_but_")))
    not_needed = [k.rsplit("_", 1)[1] for k, v in flower.items() if k.startswith("without_moves_but_") and v == "resolves"]
    if flower["without_moves"] != "resolves" or flower["all_pins"] == "resolves" or not_needed:
        raise SystemExit("notebook 08's install cell no longer matches Colab's pins: update gleak_edu.colab.FLOWER_MOVES")
    if changed or off_pin or not report["pip_check_ok"]:
        raise SystemExit("the course's install changed Colab's packages or left them inconsistent (see above)")
    print(f"Colab-like venv ready in {report['build_seconds']:.0f} s: 0 of Colab's {len(report['runtime_pinned'])} "
          f"pinned runtime packages changed, pip check clean (Python {report['python']} here, torch stand-in {TORCH})")
    return report


def _status_file(venv: Path) -> Path:
    return venv.with_name(venv.name + ".status")


def _wait_for_build(venv: Path, seconds: float = 1800) -> None:
    """Wait (bounded) for a build running in the background to end; raise if it failed or never ends."""
    status, deadline = _status_file(venv), time.monotonic() + seconds
    while not status.is_file():
        if time.monotonic() > deadline:
            raise SystemExit(f"the Colab-like venv's build did not finish within {seconds:.0f} s")
        time.sleep(2)
    text = status.read_text().strip()
    if text != "ok":
        raise SystemExit(f"the Colab-like venv's build failed: {text} (its log: build/colab-build.log)")


def check(venv: Path, timed: bool = False) -> None:
    """Run the widget and panel tests and notebook 01 (nbval) inside the Colab-like venv.

    Waits for a build of ``venv`` running in the background (``make test`` starts one) to finish first. With
    ``timed`` (``make test-colab``, on a quiet machine), notebook 01 must also finish within
    :data:`NOTEBOOK_LIMIT_S`; under ``make test`` it shares the CPU with other notebooks, so its time is only
    reported."""
    _wait_for_build(venv)
    py = venv / "bin" / "python"
    report_path = venv / "colab-report.json"
    if not report_path.is_file():
        raise SystemExit(f"{venv} was not built (or its build failed): python tests/colab_env.py build {venv}")
    report = json.loads(report_path.read_text())
    for name, want in (("ipywidgets", "7.7.1"), ("ipython", "7.34.0")):
        assert report["versions"][name] == want, f"{name} {report['versions'][name]} in the venv, Colab has {want}"
    env = {**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1", "MPLBACKEND": "Agg"}  # ipykernel 6.17's debugpy note
    _run([str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", *WIDGET_TESTS], cwd=ROOT, env=env)
    start = time.monotonic()
    _run([str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env", NOTEBOOK],
         cwd=ROOT, env=env)
    seconds = time.monotonic() - start
    print(f"notebook 01 under nbval with Colab's IPython {report['versions']['ipython']} and ipywidgets "
          f"{report['versions']['ipywidgets']}: {seconds:.0f} s" + (f" (limit {NOTEBOOK_LIMIT_S:.0f} s)" if timed else
                                                                    " (beside other work: not timed; make test-colab times it)"))
    if timed and seconds > NOTEBOOK_LIMIT_S:
        raise SystemExit(f"notebook 01 took {seconds:.0f} s in the Colab-like venv, over {NOTEBOOK_LIMIT_S:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=["build", "check"])
    parser.add_argument("venv", type=Path)
    parser.add_argument("--timed", action="store_true", help=f"check: notebook 01 within {NOTEBOOK_LIMIT_S:.0f} s")
    args = parser.parse_args(argv)
    venv = args.venv if args.venv.is_absolute() else ROOT / args.venv
    if args.step == "check":
        check(venv, timed=args.timed)
        return 0
    status = _status_file(venv)
    status.unlink(missing_ok=True)
    try:
        build(venv)
    except BaseException as exc:  # the status file tells a waiting `check` the build is over, either way
        status.write_text(f"failed: {exc.__class__.__name__}: {exc}\n")
        raise
    status.write_text("ok\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
