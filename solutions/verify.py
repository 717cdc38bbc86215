"""Run every notebook with its exercise solved (the code from this folder) and check that its check cell says "Correct".

    python solutions/verify.py [NOTEBOOK_NAME ...]

Each notebook is executed in memory (the students' notebooks on disk are not touched); the exercise cell
is the code cell that sets the exercise's answers to None right after the "Exercise" heading.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
NOTEBOOKS = HERE.parent / "notebooks"


def verify(name: str) -> bool:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    solution = (HERE / f"{name}.py").read_text()
    idx = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and "Exercise" in c.source.split("\n")[0])
    code = next(i for i in range(idx + 1, len(nb.cells)) if nb.cells[i].cell_type == "code" and "= None" in nb.cells[i].source)
    nb.cells[code].source = solution
    NotebookClient(nb, timeout=600, resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    check = nb.cells[code + 1]
    text = "".join(o.get("text", "") for o in check.get("outputs", []) if o.get("output_type") == "stream")
    ok = text.strip().startswith("Correct")
    print(f"{name}: {'ok' if ok else 'FAILED'} - {text.strip()[:160]}")
    return ok


if __name__ == "__main__":
    names = sys.argv[1:] or sorted(p.stem for p in HERE.glob("0*.py"))
    sys.exit(0 if all([verify(n) for n in names]) else 1)
