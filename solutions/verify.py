"""Run every notebook with its exercises solved (the code from this folder) and check that each check says "Correct".

    python solutions/verify.py [NOTEBOOK_NAME ...]

Each notebook is executed in memory (the students' notebooks on disk are not touched). An exercise is a
code cell tagged ``exercise:NAME``; the solution file holds one section per exercise, each opened by a
line ``# %% exercise: NAME``. The section replaces the cell, and the next code cell (the exercise's
check) must print a line starting with "Correct". A solution section for a cell the notebook does not
have, or a tagged cell without a solution, fails the notebook.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
NOTEBOOKS = HERE.parent / "notebooks"
SECTION = re.compile(r"^# %% exercise: *([\w.-]+) *$", re.M)


def solution_sections(text: str) -> dict[str, str]:
    """``{exercise name: code}`` from a solution file (the text before the first marker is a shared preamble)."""
    parts = SECTION.split(text)
    preamble, rest = parts[0], parts[1:]
    return {name: (preamble + code).strip() + "\n" for name, code in zip(rest[::2], rest[1::2])}


def exercise_cells(nb) -> dict[str, int]:
    """``{exercise name: cell index}`` for the code cells tagged ``exercise:NAME``."""
    cells = {}
    for i, cell in enumerate(nb.cells):
        for tag in cell.get("metadata", {}).get("tags", []):
            if cell.cell_type == "code" and tag.startswith("exercise:"):
                cells[tag.split(":", 1)[1]] = i
    return cells


def verify(name: str) -> bool:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    sections = solution_sections((HERE / f"{name}.py").read_text())
    cells = exercise_cells(nb)
    if not cells or set(cells) != set(sections):
        print(f"{name}: FAILED - exercise cells {sorted(cells)} but solutions for {sorted(sections)}")
        return False
    for exercise, i in cells.items():
        nb.cells[i].source = sections[exercise]
    NotebookClient(nb, timeout=600, resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    ok = True
    for exercise, i in cells.items():
        check = next(c for c in nb.cells[i + 1:] if c.cell_type == "code")
        text = "".join(o.get("text", "") for o in check.get("outputs", []) if o.get("output_type") == "stream")
        good = any(line.startswith("Correct") for line in text.splitlines())
        ok &= good
        print(f"{name} [{exercise}]: {'ok' if good else 'FAILED'} - {text.strip()[:160]}")
    return ok


if __name__ == "__main__":
    names = sys.argv[1:] or sorted(p.stem for p in HERE.glob("0*.py"))
    sys.exit(0 if all([verify(n) for n in names]) else 1)
