"""The package's layers import only downward, with no import tucked inside a function to dodge a cycle.

Reads the source (nothing is imported or run). Function-level imports count:
the check walks every ``import`` node of every module. The one allowed
exception is the command line (``gleak_edu.cli``), whose imports inside
functions keep a refusal of bad input fast (torch is loaded only when needed).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gleak_edu"

#: Lower layers first. A module may import its own layer's modules (without a cycle) and any lower layer.
LAYERS = [
    ["_cache", "metrics", "text", "badges", "colab", "scale"],
    ["data", "models"],
    ["fl", "precode", "training"],
    ["attacks"],
    ["defenses"],
    ["sweeps", "arena", "flower"],
    ["viz"],
    ["widgets"],
    ["exercises", "figures"],
    ["cli", "__main__"],
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}
LAZY_OK = {"cli"}  # imports inside functions keep `gleak` fast to refuse bad input


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield path, parts


def _imports(path: Path, parts: list[str]):
    """(top-level unit imported, line, inside a function?) for every gleak_edu import of the module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    base = ["gleak_edu", *parts] if is_pkg else ["gleak_edu", *parts[:-1]]

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            names = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    anchor = base[: len(base) - child.level + 1]
                    mod = ".".join(anchor + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                names = [mod] if child.module or not child.level else [f"{mod}.{a.name}" for a in child.names]
                if mod == "gleak_edu":
                    names = [f"gleak_edu.{a.name}" for a in child.names]
            for name in names:
                bits = name.split(".")
                if bits[0] == "gleak_edu" and len(bits) > 1:
                    yield bits[1], child.lineno, in_function
            yield from visit(child, inside)

    yield from visit(tree, False)


def _unit(parts: list[str]) -> str:
    return parts[0] if parts else "__init__"


def test_every_module_has_a_layer():
    units = {_unit(parts) for _, parts in _modules()} - {"__init__"}
    assert units <= set(LEVEL), f"modules without a layer in tests/test_layers.py: {sorted(units - set(LEVEL))}"


def test_imports_only_go_down_the_layers():
    wrong = []
    for path, parts in _modules():
        unit = _unit(parts)
        if unit == "__init__":
            continue  # the package's lazy __init__ (module __getattr__) names every submodule
        for target, line, _ in _imports(path, parts):
            if target != unit and target in LEVEL and LEVEL[target] > LEVEL[unit]:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {unit} (layer {LEVEL[unit]}) imports {target} (layer {LEVEL[target]})")
    assert not wrong, "imports that go up or sideways:\n" + "\n".join(wrong)


def test_no_gleak_edu_import_inside_a_function():
    hidden = []
    for path, parts in _modules():
        if _unit(parts) in LAZY_OK or path.name == "__init__.py" and not parts:
            continue
        for target, line, in_function in _imports(path, parts):
            if in_function:
                hidden.append(f"{path.relative_to(ROOT)}:{line}: imports gleak_edu.{target} inside a function")
    assert not hidden, "move these imports to the module's top:\n" + "\n".join(hidden)


def test_the_shared_cycle_tool_finds_no_cycle():
    tool = ROOT.parent / "shared" / "tools" / "import_cycles.py"
    if not tool.exists():
        pytest.skip("../shared/tools/import_cycles.py is not beside the repository")
    run = subprocess.run([sys.executable, str(tool), str(PACKAGE)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_no_function_takes_more_than_eight_positional_parameters():
    many = []
    for path, _ in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                positional = node.args.posonlyargs + node.args.args
                count = len([a for a in positional if a.arg not in ("self", "cls")])
                if count > 8:
                    name = getattr(node, "name", "<lambda>")
                    many.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name} takes {count} positional parameters")
    assert not many, "use keyword-only parameters (*):\n" + "\n".join(many)
