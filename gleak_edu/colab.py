"""Colab as it really is: its runtime's package pins, and the widget manager its front end needs.

Colab's runtime ships its own IPython (7.34), ipywidgets (7.7) and notebook (6.5)
and its own CPU torch; its front end speaks the ipywidgets 7 protocol, and its
``google-colab`` package pins IPython. Upgrading any of them inside a running
runtime breaks the sliders or needs a restart. So the course installs itself
*around* what Colab ships:

* every notebook's first cell writes the running runtime's ``pip list`` as pip
  constraints and installs gleak_edu under them (nothing Colab ships changes,
  no restart), then calls :func:`prepare_widgets`;
* the repository keeps Colab's published pins (``binder/colab-constraints.txt``,
  made by :func:`constraints_from_freeze` from ``pip-freeze.txt`` of the public
  ``googlecolab/backend-info`` repository, with its source and date in the
  header), and ``make test-colab`` installs the package into a venv holding
  those pins and checks that nothing pinned moved.

Refresh the pins (a download, then one command)::

    curl -sSLO https://raw.githubusercontent.com/googlecolab/backend-info/main/pip-freeze.txt
    python -m gleak_edu.colab pip-freeze.txt --date YYYY-MM-DD --out binder/colab-constraints.txt

This module imports nothing from the rest of the package (it runs first).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from urllib.parse import unquote

__all__ = ["FREEZE_URL", "FLOWER_MOVES", "Constraints", "normalize", "constraints_from_freeze", "read_constraints", "write_constraints",
           "in_colab", "prepare_widgets", "main"]

FREEZE_URL = "https://raw.githubusercontent.com/googlecolab/backend-info/main/pip-freeze.txt"

#: Colab's packages that Flower 1.42 (the ``fl`` extra, notebook 08) needs other releases of (packaging < 26,
#: fastapi 0.138, starlette 1.3, uvicorn 0.49, typer < 0.21, and newer certifi, requests and rich): notebook 08's
#: first cell leaves them out of the runtime's pins, so they alone move (``make test-colab`` checks, against
#: ``binder/colab-constraints.txt``, that the extra resolves without them and that each one is needed).
FLOWER_MOVES = ("certifi", "fastapi", "packaging", "requests", "rich", "starlette", "typer", "uvicorn")

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;#]+)\s*$")
_URL = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*@\s*(\S+)\s*$")


def normalize(name: str) -> str:
    """A distribution name as pip compares it (PEP 503): lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


class Constraints(dict):
    """``{normalized name: version}`` of a runtime's pins, with the lines that could not become a pin.

    Attributes:
        skipped: ``[(line, reason)]``: direct references that name no version
            (a git commit, a local sdist) and lines that are not a pin.
    """

    def __init__(self, pins=(), skipped=()):
        super().__init__(pins)
        self.skipped: list[tuple[str, str]] = list(skipped)


def constraints_from_freeze(text: str) -> Constraints:
    """Turn ``pip freeze`` output into pip constraints ``name==version``.

    pip refuses links as constraints, so a direct reference to a wheel
    (``torch @ https://.../torch-2.11.0%2Bcpu-cp313-...whl``) becomes the version in
    the wheel's file name (``torch==2.11.0+cpu``); references that name no
    version (``google-colab @ file:///...tar.gz``, ``pkg @ git+https://...@<commit>``)
    are listed in :attr:`Constraints.skipped` with the reason.

    Args:
        text: the freeze output (``pip freeze`` or ``pip list --format=freeze``).

    Returns:
        :class:`Constraints`, keyed by normalized name (see :func:`normalize`).

    Raises:
        ValueError: if one name is pinned to two different versions, or nothing is pinned at all.
    """
    pins: dict[str, str] = {}
    skipped: list[tuple[str, str]] = []

    def add(name: str, version: str, line: str) -> None:
        key = normalize(name)
        if key in pins and pins[key] != version:
            raise ValueError(f"{name} is pinned twice ({pins[key]} and {version}) in the freeze: line {line!r}")
        pins[key] = version

    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _PIN.match(line)
        if m:
            add(m.group(1), m.group(3), line)
            continue
        m = _URL.match(line)
        if m:
            name, url = m.group(1), m.group(3)
            filename = unquote(url.split("#")[0].rstrip("/").rsplit("/", 1)[-1])
            wheel = re.match(r"^([A-Za-z0-9_.]+)-([^-]+)-.*\.whl$", filename)
            if wheel and normalize(wheel.group(1)) == normalize(name):
                add(name, wheel.group(2), line)
            else:
                skipped.append((line, "a direct reference without a version pip can constrain"))
            continue
        skipped.append((line, "not a pin (name==version or name @ url)"))
    if not pins:
        raise ValueError("no 'name==version' line in the freeze: is it pip-freeze output?")
    return Constraints(pins, skipped)


def read_constraints(path: str | os.PathLike) -> Constraints:
    """Read a constraints file written by :func:`write_constraints` (or any ``name==version`` list).

    Raises:
        FileNotFoundError: if ``path`` does not exist; ValueError: as :func:`constraints_from_freeze`.
    """
    return constraints_from_freeze(Path(path).read_text())


def write_constraints(pins: Constraints, path: str | os.PathLike, *, source: str, date: str) -> Path:
    """Write ``pins`` as a pip constraints file, sorted, under a header naming ``source`` and ``date``.

    The header also lists what :func:`constraints_from_freeze` skipped, so a reader sees every line of the
    freeze accounted for. Returns the path written.
    """
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", date):
        raise ValueError(f"date must be YYYY-MM-DD (the freeze's state), got {date!r}")
    lines = [
        "# Colab's runtime as pip constraints: nothing Colab ships may change when the course installs.",
        f"# source: {source}",
        f"# state of: {date}",
        "# made by: python -m gleak_edu.colab pip-freeze.txt --date YYYY-MM-DD --out binder/colab-constraints.txt",
    ]
    lines += [f"# skipped: {line}  ({why})" for line, why in pins.skipped]
    lines += [f"{name}=={version}" for name, version in sorted(pins.items())]
    out = Path(path)
    out.write_text("\n".join(lines) + "\n")
    return out


def in_colab() -> bool:
    """True inside a Google Colab runtime (its kernel has imported ``google.colab``, or Colab's env var is set)."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def prepare_widgets(*, quiet: bool = False) -> str:
    """Make the course's sliders and live views render where the notebook runs; returns (and prints) one line.

    On Colab, ipywidgets 7 (the runtime's own 7.7.1) renders with Colab's built-in
    support, and nothing is done; ipywidgets 8 (installed by hand) needs Colab's
    custom widget manager, which is enabled (``google.colab.output.enable_custom_widget_manager``).
    Anywhere else (Jupyter, VS Code, Binder, nbval) nothing is needed and an empty line is returned,
    nothing printed.

    Args:
        quiet: do not print the line.
    """
    if not in_colab():
        return ""
    try:
        import ipywidgets
    except ImportError:
        msg = "Colab: ipywidgets is not installed, so sliders fall back to printed lines"
    else:
        version = ipywidgets.__version__
        if int(version.split(".")[0]) >= 8:
            from google.colab import output  # type: ignore[import-not-found]

            output.enable_custom_widget_manager()
            msg = f"Colab: ipywidgets {version} needs Colab's custom widget manager, now enabled"
        else:
            msg = f"Colab: ipywidgets {version} renders with Colab's built-in widget support (nothing to enable)"
    if not quiet:
        print(msg)
    return msg


def main(argv: list[str] | None = None) -> int:
    """``python -m gleak_edu.colab FREEZE --date YYYY-MM-DD --out FILE``: write Colab's pins as constraints."""
    parser = argparse.ArgumentParser(prog="python -m gleak_edu.colab", description=main.__doc__)
    parser.add_argument("freeze", help=f"a pip-freeze.txt (Colab's: {FREEZE_URL})")
    parser.add_argument("--date", required=True, help="the freeze's state, YYYY-MM-DD (its commit date)")
    parser.add_argument("--source", default=FREEZE_URL, help="where the freeze came from (written in the header)")
    parser.add_argument("--out", default="binder/colab-constraints.txt")
    args = parser.parse_args(argv)
    try:
        pins = constraints_from_freeze(Path(args.freeze).read_text())
        out = write_constraints(pins, args.out, source=args.source, date=args.date)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{out}: {len(pins)} pins, {len(pins.skipped)} lines skipped")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
