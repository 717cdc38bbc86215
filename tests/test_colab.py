"""Colab and Binder as they really are (gleak_edu.colab, binder/): the course's requirements accept Colab's
runtime, the install cells keep it unchanged, the widgets get what Colab's front end needs, Binder's
configuration renders. The install itself into a Colab-like venv is ``make test-colab`` (tests/colab_env.py)."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from gleak_edu import colab

ROOT = Path(__file__).resolve().parents[1]
PINS = ROOT / "binder" / "colab-constraints.txt"

FREEZE = """\
# a comment
IPython==7.34.0
ipywidgets==7.7.1
google-colab @ file:///colabtools/dist/google_colab-1.0.0.tar.gz
jupyter_kernel_gateway @ git+https://github.com/googlecolab/kernel_gateway@b134e99
torch @ https://download.pytorch.org/whl/cpu/torch-2.11.0%2Bcpu-cp313-cp313-manylinux_2_28_x86_64.whl
scikit_learn==1.6.1

-e git+https://example.org/x.git#egg=x
"""


def test_a_freeze_becomes_constraints_pip_accepts():
    pins = colab.constraints_from_freeze(FREEZE)
    assert pins == {"ipython": "7.34.0", "ipywidgets": "7.7.1", "torch": "2.11.0+cpu", "scikit-learn": "1.6.1"}
    assert [line.split()[0] for line, _ in pins.skipped] == ["google-colab", "jupyter_kernel_gateway", "-e"]
    with pytest.raises(ValueError, match="pinned twice"):
        colab.constraints_from_freeze("numpy==2.1.3\nNumPy==2.0.0\n")
    with pytest.raises(ValueError, match="no 'name==version' line"):
        colab.constraints_from_freeze("# nothing\n\n")


def test_the_command_writes_a_dated_file_that_reads_back(tmp_path, capsys):
    freeze, out = tmp_path / "pip-freeze.txt", tmp_path / "c.txt"
    freeze.write_text(FREEZE)
    assert colab.main([str(freeze), "--date", "2026-08-19", "--out", str(out)]) == 0
    text = out.read_text()
    assert "# state of: 2026-08-19" in text and f"# source: {colab.FREEZE_URL}" in text
    assert "# skipped: google-colab @" in text
    assert colab.read_constraints(out) == colab.constraints_from_freeze(FREEZE)
    assert colab.main([str(freeze), "--date", "August", "--out", str(out)]) == 2
    assert colab.main([str(tmp_path / "missing.txt"), "--date", "2026-08-19", "--out", str(out)]) == 2
    assert "error:" in capsys.readouterr().err


def test_the_shipped_pins_are_colabs_and_dated():
    head = [line for line in PINS.read_text().splitlines() if line.startswith("#")]
    assert any(re.fullmatch(r"# state of: \d{4}-\d{2}-\d{2}", line) for line in head)
    assert any(line.startswith("# source: https://github.com/googlecolab/backend-info/") for line in head)
    assert any(line.startswith("# made by: python -m gleak_edu.colab") for line in head)
    pins = colab.read_constraints(PINS)
    assert len(pins) > 500
    assert pins["ipython"] == "7.34.0" and pins["ipywidgets"] == "7.7.1" and pins["notebook"] == "6.5.7"
    assert pins["torch"].endswith("+cpu")


def _project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_every_requirement_accepts_colabs_version():
    """What pip would otherwise upgrade inside the running runtime: each dependency's range contains Colab's pin."""
    pins = colab.read_constraints(PINS)
    project = _project()
    checked = []
    for line in project["dependencies"]:
        req = Requirement(line)
        name = colab.normalize(req.name)
        if name in pins:
            assert req.specifier.contains(pins[name], prereleases=True), f"{line} refuses Colab's {name} {pins[name]}"
            checked.append(name)
    assert {"torch", "ipython", "ipywidgets", "numpy", "matplotlib", "scipy", "scikit-image", "tqdm"} <= set(checked)


def test_supported_pythons_are_stated():
    project = _project()
    assert project["requires-python"] == ">=3.11"
    versions = {c.rsplit(":: ", 1)[1] for c in project["classifiers"] if c.startswith("Programming Language :: Python :: 3.")}
    assert versions == {"3.11", "3.12", "3.13"}  # 3.13 is Colab's; Flower (the fl extra) needs 3.11


# Modules removed from the standard library in Python 3.12 and 3.13 (PEP 594, PEP 632, distutils, imp).
REMOVED = {"distutils", "imp", "asynchat", "asyncore", "smtpd", "aifc", "audioop", "cgi", "cgitb", "chunk", "crypt",
           "imghdr", "mailcap", "msilib", "nis", "nntplib", "ossaudiodev", "pipes", "sndhdr", "spwd", "sunau",
           "telnetlib", "uu", "xdrlib", "lib2to3"}


def test_no_module_python_3_13_removed_is_imported():
    used = []
    for path in sorted((ROOT / "gleak_edu").rglob("*.py")) + sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            used += [(path.name, n) for n in names if n.split(".")[0] in REMOVED]
    assert not used, used


@pytest.fixture
def fake_colab(monkeypatch):
    """A ``google.colab`` module whose ``output.enable_custom_widget_manager`` records its calls."""
    calls = []
    output = types.SimpleNamespace(enable_custom_widget_manager=lambda: calls.append("enabled"))
    google = types.ModuleType("google")
    module = types.ModuleType("google.colab")
    module.output = output
    google.colab = module
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", module)
    return calls


def test_outside_colab_widgets_need_nothing(capsys, monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    assert not colab.in_colab()
    assert colab.prepare_widgets() == "" and capsys.readouterr().out == ""


@pytest.mark.parametrize("version, enabled", [("7.7.1", False), ("8.1.9", True)])
def test_on_colab_the_custom_widget_manager_only_for_ipywidgets_8(fake_colab, monkeypatch, capsys, version, enabled):
    import ipywidgets

    monkeypatch.setattr(ipywidgets, "__version__", version)
    line = colab.prepare_widgets()
    assert fake_colab == (["enabled"] if enabled else [])
    assert capsys.readouterr().out.strip() == line and version in line and "\n" not in line
    assert ("custom widget manager, now enabled" in line) == enabled


def _first_code_cell(path: Path) -> str:
    nb = json.loads(path.read_text())
    return next("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_each_install_cell_keeps_the_runtime_and_prepares_the_widgets(path):
    cell = _first_code_cell(path)
    assert '"pip", "list", "--format=freeze"' in cell  # the running runtime's own pins ...
    installs = [line.strip() for line in cell.splitlines() if line.strip().startswith("%pip install")]
    assert len(installs) == 1 and installs[0].startswith("%pip install --quiet -c {pins} ")  # ... as constraints
    assert "from gleak_edu.colab import prepare_widgets\nprepare_widgets()" in cell
    if "[fl]" in installs[0]:  # Flower's five, and only those, are left free to move
        moves = re.search(r"moves = \(([^)]*)\)", cell).group(1)
        assert tuple(m.strip().strip('"').rstrip("=") for m in moves.split(",")) == colab.FLOWER_MOVES


def test_the_install_cell_pins_what_pip_list_reports(tmp_path):
    """The cell's recipe, run here: the pins file it writes holds this environment, and pip reads it as constraints
    that change nothing (a dry run of installing the course's own requirements under it)."""
    pins = tmp_path / "runtime-pins.txt"
    with open(pins, "w") as f:
        subprocess.run([sys.executable, "-m", "pip", "list", "--format=freeze"], stdout=f, check=True)
    parsed = colab.read_constraints(pins)
    import ipywidgets

    assert parsed["ipywidgets"] == ipywidgets.__version__
    dry = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "-c", str(pins),
                          "ipywidgets", "ipython", "--quiet", "--disable-pip-version-check"],
                         capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert "Would install" not in dry.stdout


@pytest.mark.skipif(shutil.which("jupyter-repo2docker") is None and not (Path(sys.executable).parent /
                    "jupyter-repo2docker").exists(), reason="jupyter-repo2docker is not installed (the test extra)")
def test_binder_configuration_renders_with_repo2docker(tmp_path):
    """repo2docker --no-build (no Docker needed): the conda buildpack is picked, and its Dockerfile creates the
    environment from binder/environment.yml and runs binder/postBuild."""
    exe = shutil.which("jupyter-repo2docker") or str(Path(sys.executable).parent / "jupyter-repo2docker")
    repo = tmp_path / "repo"  # only what Binder reads: a copy keeps the venv and build/ out of the detection
    shutil.copytree(ROOT / "binder", repo / "binder")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, repo / name)
    done = subprocess.run([exe, "--no-build", "--no-run", "--debug", str(repo)], capture_output=True, text=True,
                          timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-2000:]
    assert "buildpacks/conda" in out or "conda" in out.lower()
    assert 'env update -p ${NB_PYTHON_PREFIX} --file "binder/environment.yml"' in out
    assert "RUN ./binder/postBuild" in out
    assert "src/binder/environment.yml" in out
