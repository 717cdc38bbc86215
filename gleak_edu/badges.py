"""Binder and Colab badges for the README and every notebook, from the one repository URL in pyproject.toml.

    python -m gleak_edu.badges          # rewrite the badge lines in README.md and notebooks/*.ipynb
    python -m gleak_edu.badges --check  # exit 1 if any is missing or stale (the tests run this)

The badges sit on one line that starts with ``<!-- badges -->``: the README's
third line, and the first line of each notebook's first (markdown) cell's
second paragraph. Binder opens the notebook in JupyterLab on the ``main``
branch; Colab opens it from GitHub.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

__all__ = ["MARK", "badge_line", "repository_url", "sync"]

MARK = "<!-- badges -->"
BINDER = "https://mybinder.org/badge_logo.svg"
COLAB = "https://colab.research.google.com/assets/colab-badge.svg"


def repository_url(root: Path) -> str:
    """The ``Repository`` URL of ``[project.urls]`` in ``root/pyproject.toml`` (a GitHub URL).

    Raises:
        ValueError: if it is missing or not ``https://github.com/OWNER/NAME``.
    """
    text = (root / "pyproject.toml").read_text()
    m = re.search(r'^Repository\s*=\s*"([^"]+)"', text, flags=re.M)
    if not m or not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", m.group(1)):
        raise ValueError("pyproject.toml needs [project.urls] Repository = \"https://github.com/OWNER/NAME\"")
    return m.group(1)


def badge_line(url: str, notebook: str | None = None) -> str:
    """The badge line: Binder (JupyterLab, on ``notebook`` if given) and, for a notebook, Colab."""
    slug = url.removeprefix("https://github.com/")
    binder = f"https://mybinder.org/v2/gh/{slug}/main" + (f"?labpath=notebooks%2F{notebook}" if notebook else "?urlpath=lab")
    line = f"{MARK} [![Binder]({BINDER})]({binder})"
    if notebook:
        line += f" [![Open In Colab]({COLAB})](https://colab.research.google.com/github/{slug}/blob/main/notebooks/{notebook})"
    return line


def _with_badges(text: str, line: str, after_first_line: bool) -> str:
    lines = text.split("\n")
    lines = [ln for ln in lines if not ln.startswith(MARK)]
    if after_first_line:
        # title, blank line, badges, blank line, the rest
        rest = lines[1:]
        while rest and not rest[0].strip():
            rest = rest[1:]
        return "\n".join([lines[0], "", line, "", *rest])
    return "\n".join([line, *lines])


def sync(root: Path, check: bool = False) -> list[str]:
    """Write (or, with ``check``, only compare) the badges; returns the files that were (or would be) changed."""
    import nbformat

    url = repository_url(root)
    changed = []
    readme = root / "README.md"
    new = _with_badges(readme.read_text(), badge_line(url), True)
    if new != readme.read_text():
        changed.append(str(readme.relative_to(root)))
        if not check:
            readme.write_text(new)
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        first = nb.cells[0]
        if first.cell_type != "markdown":
            raise ValueError(f"{path.name}: the first cell must be the markdown title cell")
        new = _with_badges(first.source, badge_line(url, path.name), True)
        if new != first.source:
            changed.append(str(path.relative_to(root)))
            if not check:
                first.source = new
                nbformat.write(nb, path)
    return changed


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - thin wrapper
    argv = sys.argv[1:] if argv is None else argv
    root = Path.cwd()
    changed = sync(root, check="--check" in argv)
    if "--check" in argv:
        if changed:
            print("badges missing or stale in: " + ", ".join(changed) + " (run python -m gleak_edu.badges)")
            return 1
        return 0
    print("updated: " + (", ".join(changed) or "nothing"))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
