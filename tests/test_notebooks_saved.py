"""The saved notebooks: executed in order from a fresh kernel, no errors (nbval needs this).

The notebooks themselves run under nbval in `make test`
(`pytest --nbval-lax --nbval-current-env notebooks/`).
"""

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert any(p.name.startswith("01_") for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_saved_in_order_without_errors(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: re-run from a fresh kernel (counts {counts})"
    for c in code:
        for out in c.get("outputs", []):
            assert out.output_type != "error", f"{path.name}: saved error output {out.get('ename')}: {out.get('evalue')}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_installs_package_when_missing(path):
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "import gleak_edu" in first.source and "%pip install" in first.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_checks_its_science(path):
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "course_checks(" in c.source]
    assert cells and all("check(" in c.source for c in cells), f"{path.name} has no course-checks cell with claims"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_cell_keeps_colabs_torch(path):
    """The install line must not pin or reinstall torch (Colab ships its own CUDA build)."""
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    install = [line for line in first.source.splitlines() if "%pip install" in line]
    assert install and all("torch" not in line and "--force-reinstall" not in line and "-U" not in line.split() for line in install)
