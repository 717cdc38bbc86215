"""pyproject.toml, environment.yml and binder/environment.yml agree on the dependencies and their pins."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names of the PyPI packages
CONDA_NAME = {"torch": "pytorch"}
_SPEC = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(\[[^\]]*\])?\s*([<>=!~]=?\s*[0-9][^\s#,]*)?")


def _pyproject_deps() -> dict[str, str]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {}
    for spec in meta["dependencies"]:
        name, _, version = _SPEC.match(spec).groups()
        deps[CONDA_NAME.get(name.lower(), name.lower())] = (version or "").replace(" ", "")
    return deps


def _conda_deps(path: Path) -> dict[str, str]:
    deps = {}
    in_deps = False
    for line in path.read_text().splitlines():
        if line.startswith("dependencies:"):
            in_deps = True
            continue
        m = re.match(r"^  - ([^\s#]+)", line)
        if not in_deps or not m or m.group(1) == "pip":
            continue
        spec = m.group(1)
        bracket = re.match(r"^([A-Za-z0-9_.\-]+)\[version='([^']+)'", spec)
        if bracket:
            deps[bracket.group(1).lower()] = bracket.group(2)
            continue
        name, _, version = _SPEC.match(spec).groups()
        version = (version or "").replace(" ", "")
        if version.startswith("=") and not version.startswith("=="):
            version = "=" + version  # conda's exact pin "=1.6.0" is pip's "==1.6.0"
        deps[name.lower()] = version
    return deps


@pytest.mark.parametrize("env_file", ["environment.yml", "binder/environment.yml"])
def test_conda_environments_match_pyproject(env_file):
    pyproject = _pyproject_deps()
    conda = _conda_deps(ROOT / env_file)
    missing = sorted(set(pyproject) - set(conda))
    assert not missing, f"{env_file} lacks {missing} (pyproject.toml needs them)"
    for name, version in pyproject.items():
        assert conda[name] == version, f"{env_file}: {name} {conda[name]!r} but pyproject.toml says {version!r}"


def test_the_pins_are_pins():
    deps = _pyproject_deps()
    assert deps["opacus"] == "==1.6.0"  # accounting changed between Opacus 1.5 and 1.6
    assert deps["pytorch"].startswith(">=")


def test_binder_post_build_installs_the_package_and_fails_on_error():
    post = (ROOT / "binder" / "postBuild").read_text()
    assert "set -euo pipefail" in post and "pip install" in post and "import gleak_edu" in post


def test_flower_is_pinned_once_and_installed_everywhere():
    """The ``fl`` extra's Flower pin is what Binder's postBuild installs and what make and conda ask for."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (pin,) = extras["fl"]
    assert pin == "flwr[simulation]==1.42.0" and extras["scale"] == ["ray==2.55.1"]  # the Ray Flower pins
    assert f'"{pin}"' in (ROOT / "binder" / "postBuild").read_text()
    assert ",fl]" in (ROOT / "Makefile").read_text() and ",fl]" in (ROOT / "environment.yml").read_text()


def test_readme_and_notebooks_carry_badges_from_the_one_repository_url(tmp_path):
    import shutil

    from gleak_edu import badges

    assert badges.sync(ROOT, check=True) == [], "run `python -m gleak_edu.badges`"
    url = badges.repository_url(ROOT)
    # another repository URL in pyproject.toml makes every badge stale, and sync rewrites them
    copy = tmp_path / "repo"  # only what sync reads and writes (not build/, where make test builds a venv meanwhile)
    (copy / "notebooks").mkdir(parents=True)
    for path in [ROOT / "pyproject.toml", ROOT / "README.md", *(ROOT / "notebooks").glob("*.ipynb")]:
        shutil.copy2(path, copy / path.relative_to(ROOT))
    pyproject = copy / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(url, "https://github.com/someone/fork"))
    stale = badges.sync(copy, check=True)
    assert "README.md" in stale and len(stale) == 1 + len(list((ROOT / "notebooks").glob("*.ipynb")))
    badges.sync(copy)
    assert badges.sync(copy, check=True) == []
    assert "gh/someone/fork/main" in (copy / "README.md").read_text()
