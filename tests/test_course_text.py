"""The course's text agrees with itself: headers, times, cross-references, quoted numbers, exercises, checks.

Reads the saved notebooks, README.md and docs/instructor.md (nothing is executed). It catches the easy
contradictions a lecturer would find first: a run time that differs between a notebook, the README and
the instructor guide; a reference to a notebook that does not exist; a number the README quotes that the
notebook's own output does not show; a check cell that prints its answer; a science-check cell a student
would take for their own mistake.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
NUMBERS = [p.name[:2] for p in NOTEBOOKS]
README = (ROOT / "README.md").read_text(encoding="utf-8")
GUIDE = (ROOT / "docs" / "instructor.md").read_text(encoding="utf-8")
TIME = re.compile(r"\*\*Time:\*\* study about (\d+) min; compute about ([\d.]+) min on a 2-core CPU")
STALE = ["REFERENCE's suggestion", "not available", "REFERENCE.md", "gives it 1,500", "since notebook 05"]

sys.path.insert(0, str(ROOT / "solutions"))
import verify  # noqa: E402  (solutions/verify.py: how exercise cells and solution sections are found)


def _nb(path):
    return nbformat.read(path, as_version=4)


def _markdown(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def _outputs(nb) -> str:
    text = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            text.append(o.get("text", "") if o.get("output_type") == "stream" else o.get("data", {}).get("text/plain", ""))
    return "\n".join(text)


def _times(path) -> tuple[int, float]:
    m = TIME.search(_nb(path).cells[0].source)
    assert m, f"{path.name}: the header has no '**Time:** study about N min; compute about M min on a 2-core CPU' line"
    return int(m.group(1)), float(m.group(2))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_header_has_goals_prerequisites_threat_model_time_and_glossary(path):
    head = _nb(path).cells[0].source
    for part in ("**Learning goals.**", "**Prerequisites.**", "**Threat model.**", "../docs/glossary.md"):
        assert part in head, f"{path.name}: the header lacks {part}"
    study, compute = _times(path)
    assert 15 <= study <= 120 and 0 < compute <= 3, f"{path.name}: study {study} min, compute {compute} min"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_ends_with_takeaways_and_linked_references(path):
    md = _markdown(_nb(path))
    assert "## Takeaways" in md and "## References" in md, f"{path.name}: needs ## Takeaways and ## References"
    refs = md[md.index("## References"):]
    assert md.index("## Takeaways") < md.index("## References")
    assert len(re.findall(r"https?://", refs)) >= 2, f"{path.name}: the references need links"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_run_and_study_times_agree_with_readme_and_guide(path):
    study, compute = _times(path)
    n = path.name[:2]
    for name, text in (("README.md", README), ("docs/instructor.md", GUIDE)):
        row = next((line for line in text.splitlines() if line.startswith("|") and f"{n} ·" in line), None)
        assert row, f"{name} has no table row for notebook {n}"
        assert re.search(rf"\b{study} min study\b", row) and re.search(rf"about {compute:g} min\b", row), (
            f"{name}, notebook {n}: the row must say '{study} min study' and 'about {compute:g} min' "
            f"as the notebook's header does: {row[-80:]}")


def test_every_cross_reference_names_a_notebook_that_exists():
    texts = {p.name: _markdown(_nb(p)) for p in NOTEBOOKS}
    texts.update({"README.md": README, "docs/instructor.md": GUIDE})
    for name, text in texts.items():
        for ref in re.findall(r"[Nn]otebooks? (\d\d)\b", text):
            assert ref in NUMBERS, f"{name} refers to notebook {ref}, which does not exist"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_stale_phrases(path):
    md = _markdown(_nb(path))
    for phrase in STALE:
        assert phrase not in md, f"{path.name}: stale phrase {phrase!r}"


@pytest.mark.parametrize("path", NOTEBOOKS + [ROOT / "app" / "playground.ipynb"], ids=lambda p: p.name)
def test_markdown_has_no_control_characters(path):
    r"""A tab or backspace in a cell is an unescaped backslash written by a script (``"\\text"`` typed as
    ``"\text"`` in a Python string): the formula renders as ``extstd``."""
    for i, cell in enumerate(_nb(path).cells):
        bad = sorted({repr(ch) for ch in cell.source if ord(ch) < 32 and ch != "\n"})
        assert not bad, f"{path.name} cell {i}: control characters {bad} (an unescaped backslash?)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_course_checks_are_one_collapsed_tagged_cell(path):
    nb = _nb(path)
    cells = [c for c in nb.cells if "course-checks" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{path.name}: expected one cell tagged course-checks, found {len(cells)}"
    cell = cells[0]
    assert cell.cell_type == "code" and "course_checks(" in cell.source
    assert cell.metadata.get("jupyter", {}).get("source_hidden") is True, f"{path.name}: collapse the checks"
    assert not any(line.lstrip().startswith("assert ") for c in nb.cells if c.cell_type == "code"
                   for line in c.source.splitlines()), f"{path.name}: a bare assert outside the course checks"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exercises_are_tagged_and_every_one_has_a_solution(path):
    nb = _nb(path)
    cells = verify.exercise_cells(nb)
    sections = verify.solution_sections((ROOT / "solutions" / f"{path.stem}.py").read_text(encoding="utf-8"))
    assert cells and set(cells) == set(sections), f"{path.name}: exercise cells {sorted(cells)}, solutions {sorted(sections)}"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert f"exercises import nb{path.name[:2]}" in code, f"{path.name}: checks come from gleak_edu.exercises.nb{path.name[:2]}"
    assert "ex.predict(" in code and "ex.reveal(" in code, f"{path.name}: needs a predict-first question"
    assert "ex.ask(" in code, f"{path.name}: needs a checked why question"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_checks_never_print_the_expected_value(path):
    out = _outputs(_nb(path))
    for phrase in ("expected about", "(expected", "the answer is", "Not quite (expected"):
        assert phrase not in out, f"{path.name}: a check output gives the answer away ({phrase!r})"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_figures_come_from_viz(path):
    for c in _nb(path).cells:
        if c.cell_type != "code":
            continue
        for bad in ("plt.subplots", ".imshow(", "ax.plot(", "ax.bar(", "plt.figure(", "twinx(", "secondary_xaxis"):
            assert bad not in c.source, f"{path.name}: hand-rolled plotting ({bad}) belongs in gleak_edu.viz"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_models_module_is_not_shadowed(path):
    for c in _nb(path).cells:
        if c.cell_type == "code":
            assert not re.search(r"^\s*(models|metrics|data|viz|widgets|fl)\s*=", c.source, re.M), (
                f"{path.name}: a variable shadows a gleak_edu module")


def test_glossary_exists_and_every_notebook_links_it():
    assert (ROOT / "docs" / "glossary.md").is_file()
    assert "docs/glossary.md" in README and "glossary.md" in GUIDE


def test_readme_and_last_notebook_say_what_the_course_does_not_cover():
    last = _markdown(_nb(NOTEBOOKS[-1]))
    for text, name in ((README, "README.md"), (last, NOTEBOOKS[-1].name)):
        assert "does not cover" in text, f"{name}: needs the 'what this course does not cover' box"
        for topic in ("FedAvg", "secure aggregation", "malicious", "BatchNorm"):
            assert topic.lower() in text[text.index("does not cover"):].lower(), f"{name}: the box should name {topic}"
