"""The glossary, its pictures (gleak_edu.viz.quality) and the lecturer's figure bank (gleak_edu.figures)."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gleak_edu import figures, metrics
from gleak_edu.viz import palette, quality

ROOT = Path(__file__).resolve().parents[1]
GLOSSARY = ROOT / "docs" / "glossary.md"
IMG = ROOT / "docs" / "img"
MAX_PNG_BYTES = 60 * 1024

#: Every term the glossary must define, as its ``###`` headings spell them.
TERMS = [
    "FedSGD and FedAvg",
    "Update",
    "Secure aggregation",
    "Central, local and distributed DP; client-level and example-level",
    "Honest-but-curious and malicious server",
    "Shared gradient",
    "Gradient matching",
    "DLG (Deep Leakage from Gradients)",
    "iDLG",
    "Inverting Gradients (IG)",
    "GRNN",
    "PRECODE",
    "The PRECODE bypass",
    "PPP (PRECODE with partial perturbation)",
    "The analytic attack",
    "PSNR",
    "SSIM",
    "Attack success",
    "Label recovery",
    "Noise std and noise multiplier σ",
    "Clipping bound C",
    "DP-SGD",
    "(ε, δ)-differential privacy",
    "Accountant (RDP, PRV, GDP)",
    "Sample rate q",
    "Epsilon at delta",
    "The Gaussian mechanism",
]


@pytest.fixture(scope="module")
def glossary() -> str:
    return GLOSSARY.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def images():
    return quality.glossary_images()


@pytest.fixture(scope="module")
def levels(images):
    return quality.quality_levels(images)


# --------------------------------------------------------------------------- viz.quality


def test_quality_images_hit_their_targets(levels, images):
    psnr = [d for d in levels if d.measure == "psnr"]
    ssim = [d for d in levels if d.measure == "ssim"]
    assert {d.target for d in psnr} == set(quality.GLOSSARY_PSNR_DB) and {d.target for d in ssim} == set(quality.GLOSSARY_SSIM)
    assert {d.name for d in levels} == {"photo", "digit"} and {d.kind for d in ssim} == {"noise", "blur"}
    for d in psnr:
        assert abs(d.psnr - d.target) <= 0.5, (d.name, d.target, d.psnr)
    for d in ssim:
        assert abs(d.ssim - d.target) <= 0.03, (d.name, d.kind, d.target, d.ssim)
        assert d.ssim >= d.target  # a panel shown at "SSIM 0.60" really counts as a success
    for d in levels:  # the reported values are the metrics' own, on the returned image
        x = images[d.name]
        assert d.image.shape == x.shape and float(d.image.min()) >= 0 and float(d.image.max()) <= 1
        assert d.psnr == pytest.approx(float(metrics.psnr(d.image[None], x[None])[0]), abs=1e-9)
        assert d.ssim == pytest.approx(float(metrics.ssim(d.image[None], x[None])[0]), abs=1e-9)
        assert d.success == (d.ssim >= metrics.SUCCESS_SSIM)


def test_glossary_images_are_the_course_images(images):
    assert tuple(images["photo"].shape) == (3, 32, 32) and tuple(images["digit"].shape) == (1, 28, 28)


def test_degrade_is_seeded_and_refuses_bad_input(images):
    x = images["digit"]
    assert torch.equal(quality.degrade(x, "noise", 0.1, seed=3), quality.degrade(x, "noise", 0.1, seed=3))
    assert not torch.equal(quality.degrade(x, "noise", 0.1, seed=3), quality.degrade(x, "noise", 0.1, seed=4))
    assert torch.equal(quality.degrade(x, "blur", 0.0), x)
    with pytest.raises(ValueError, match="kind"):
        quality.degrade(x, "jpeg", 0.1)
    with pytest.raises(ValueError, match="strength"):
        quality.degrade(x, "noise", -1)
    with pytest.raises(ValueError, match="target_db"):
        quality.at_psnr(x, 0)
    with pytest.raises(ValueError, match="SSIM target"):
        quality.at_ssim(x, 1.0)
    with pytest.raises(ValueError, match="one image"):
        quality.at_psnr(torch.zeros(2, 1, 8, 8), 20)


def test_quality_figures_use_the_palette(images):
    import matplotlib.colors as mcolors
    import matplotlib.pyplot as plt

    for fig in (quality.psnr_levels_figure(images), quality.ssim_levels_figure(images, rows=[("digit", "blur")])):
        colours = {mcolors.to_hex(ax.title.get_color()) for ax in fig.axes if ax.title.get_text()}
        assert colours <= {mcolors.to_hex(palette.ROLE[k]) for k in ("leak", "reference", "truth")}
        assert any("private image" == ax.title.get_text() for ax in fig.axes)
        plt.close(fig)
    with pytest.raises(ValueError, match="no image named"):
        quality.ssim_levels_figure(images, rows=[("face", "noise")])


# --------------------------------------------------------------------------- the glossary and its pictures


@pytest.mark.parametrize("name", sorted(figures.GLOSSARY_FILES))
def test_shipped_pictures_exist_are_small_and_linked(name, glossary):
    from PIL import Image

    path = IMG / name
    assert path.is_file(), f"{path} is missing: run `make glossary-figures`"
    assert path.stat().st_size < MAX_PNG_BYTES, f"{name} is {path.stat().st_size} bytes, over 60 KB"
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] >= 300
    assert f"](img/{name})" in glossary


def test_regenerated_pictures_match_the_shipped_layout(tmp_path, images):
    from PIL import Image

    report = figures.write_glossary_figures(tmp_path, images=images)
    assert any("psnr_levels.png" in line for line in report) and any("SSIM 0.6" in line for line in report)
    for name in figures.GLOSSARY_FILES:
        new = tmp_path / name
        assert new.stat().st_size < MAX_PNG_BYTES
        with Image.open(new) as a, Image.open(IMG / name) as b:
            assert a.size == b.size, f"docs/img/{name} is stale (layout changed): run `make glossary-figures`"


def test_glossary_defines_every_term(glossary):
    headings = set(re.findall(r"^###\s+(.+?)\s*$", glossary, flags=re.M))
    missing = [t for t in TERMS if t not in headings]
    assert not missing, f"docs/glossary.md lacks headings for {missing}"
    ids = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', glossary))
    sections = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^## (.+)$", glossary, flags=re.M)}
    for anchor in re.findall(r"\]\(#([a-z0-9-]+)\)", glossary):
        assert anchor in ids | sections, f"the glossary links #{anchor}, which is not defined"


def test_glossary_states_the_one_success_threshold(glossary):
    section = glossary[glossary.index("### Attack success"):]
    section = section[: section.index("\n### ", 5)]
    m = re.search(r"SSIM ≥ (\d\.\d+)", section)
    assert m and float(m.group(1)) == metrics.SUCCESS_SSIM
    assert f"SUCCESS_SSIM = {metrics.SUCCESS_SSIM:g}" in section and "per image" in section
    assert "Label recovery is reported" in section
    # no other success threshold anywhere in the glossary
    assert set(float(v) for v in re.findall(r"SSIM ≥ (\d\.\d+)", glossary)) == {metrics.SUCCESS_SSIM}


def test_glossary_quotes_the_measured_values(glossary, levels):
    for d in levels:
        if d.measure == "psnr":
            row = f"| {d.name} | {d.target:g} dB | {d.strength:.3f} | {d.psnr:.2f} dB | {d.ssim:.2f} |"
        elif (d.name, d.kind) in quality.GLOSSARY_SSIM_ROWS:
            kind = "noise (std)" if d.kind == "noise" else "blur (kernel std, pixels)"
            row = f"| {d.name} | {kind} | {d.target:g} | {d.strength:.3f} | {d.ssim:.3f} | {d.psnr:.2f} dB |"
        else:
            continue
        assert row in glossary, f"docs/glossary.md should quote the regenerated values: {row}"


def test_glossary_formulas_and_papers(glossary):
    assert "10 · log10(1 / MSE)" in glossary and "σ · C" in glossary and "√(2 ln(1.25/δ))" in glossary
    for var in ("noise_std", "noise_multiplier", "max_grad_norm", "sample_rate"):
        assert f"`{var}`" in glossary
    for ref in ("1906.08935", "2001.02610", "2003.14053", "10.1145/3510032", "2208.04767", "1607.00133",
                "1702.07476", "2106.02848", "10.1109/TIFS.2017.2787987", "10.1109/TIP.2003.819861", "WACV2022"):
        assert ref in glossary, f"the glossary should link {ref}"


# --------------------------------------------------------------------------- the figure bank


def _png(colour=(213, 94, 0)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 3), colour).save(buf, format="PNG")
    return buf.getvalue()


def _notebook(path: Path, *, widget: bool = True) -> Path:
    b64 = base64.b64encode(_png()).decode()
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": ["# 01 · A tiny notebook\n", "\n", "text"]},
        {"cell_type": "markdown", "metadata": {}, "source": "```\n# not a heading\n```\n## The **first** section: `x`"},
        {"cell_type": "code", "metadata": {}, "execution_count": 1, "source": "show()",
         "outputs": [{"output_type": "display_data", "metadata": {}, "data": {"image/png": b64, "text/plain": "<Figure>"}},
                     {"output_type": "stream", "name": "stdout", "text": "hi\n"}]},
    ]
    meta = {}
    if widget:
        cells.append({"cell_type": "code", "metadata": {}, "execution_count": 2, "source": "panel",
                      "outputs": [{"output_type": "display_data", "metadata": {},
                                   "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "box1", "version_major": 2,
                                                                                        "version_minor": 0},
                                            "text/plain": "VBox()"}}]})
        image = {"model_name": "ImageModel", "state": {"format": "png", "layout": "IPY_MODEL_lay"},
                 "buffers": [{"data": base64.b64encode(_png((0, 114, 178))).decode(), "encoding": "base64", "path": ["value"]}]}
        meta = {"widgets": {"application/vnd.jupyter.widget-state+json": {"version_major": 2, "version_minor": 0, "state": {
            "box1": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_img1"]}},
            "img1": image, "lay": {"model_name": "LayoutModel", "state": {}}}}}}
    nb = {"cells": cells, "metadata": meta, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path


def test_bank_writes_named_files_and_an_index(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "01_tiny.ipynb")
    out = tmp_path / "bank"
    written = figures.export_figures(nbs, out)
    assert [p.name for p in written] == ["01_the-first-section-x_1.png", "01_the-first-section-x_2.png"]
    assert written[0].read_bytes() == _png() and written[1].read_bytes() == _png((0, 114, 178))
    index = (out / "index.md").read_text(encoding="utf-8")
    assert "| [01_the-first-section-x_1.png](01_the-first-section-x_1.png) | 01_tiny.ipynb | The first section: x | 1 |" in index
    assert "widget image of code cell 3" in index and "2 figures from 1 notebook." in index
    # a rerun after the figure is gone removes the old file, and only the files it wrote
    (out / "mine.txt").write_text("keep me")
    _notebook(nbs / "01_tiny.ipynb", widget=False)
    assert [p.name for p in figures.export_figures(nbs, out)] == ["01_the-first-section-x_1.png"]
    assert not (out / "01_the-first-section-x_2.png").exists() and (out / "mine.txt").exists()


def test_bank_section_slugs():
    assert figures.section_slug("03 · PRECODE and its bypass") == "03-precode-and-its-bypass"
    assert figures.section_slug("(ε, δ)") == "section"
    assert len(figures.section_slug("word " * 30)) <= figures.SLUG_MAX


def test_bank_refuses_a_missing_or_empty_notebooks_folder(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        figures.export_figures(tmp_path / "nope", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match=r"no notebooks \(\*\.ipynb\)"):
        figures.export_figures(tmp_path, tmp_path / "out")
    (tmp_path / "01_bad.ipynb").write_text("{not json")
    with pytest.raises(ValueError, match="01_bad.ipynb: not a notebook"):
        figures.export_figures(tmp_path, tmp_path / "out")
    with pytest.raises(SystemExit) as exc:
        figures.main(["--notebooks", str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error: the notebooks folder" in err and "does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_bank_help_runs():
    run = subprocess.run([sys.executable, "-m", "gleak_edu.figures", "--help"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "--glossary" in run.stdout and "--notebooks" in run.stdout and "--out" in run.stdout
