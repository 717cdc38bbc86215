"""The lecturer's figure bank: every figure of the executed notebooks as a PNG file, and the glossary's pictures.

Two jobs, one command (``python -m gleak_edu.figures``; ``make figures`` and
``make glossary-figures``):

1. **Figure bank** (default): reads the *saved outputs* of the executed
   notebooks (``--notebooks``, default ``notebooks/``; nothing is re-run, so it
   takes seconds) and writes into ``--out`` (default ``build/figures/``):

   - ``NN_<section-slug>_<k>.png`` for every saved image: each ``image/png`` of a
     ``display_data`` or ``execute_result`` output, and each PNG stored in the
     notebook's ipywidgets state (the live views and panels, which the saved
     notebook keeps as images), placed at the output that displays its widget.
     ``NN`` is the notebook's number (the digits its file name starts with, else
     its name), ``<section-slug>`` the nearest markdown heading above the output
     (lower case, ASCII, words joined by ``-``, at most 40 characters), and
     ``k`` counts the figures of that notebook and slug from 1;
   - ``index.md``: a table with each file, its notebook, section title, figure
     number in the notebook and where it came from (the code cell's index).

   Files listed in an earlier ``index.md`` of the same folder are removed first,
   so a figure that is gone from a notebook does not linger; nothing else there
   is touched.

2. **Glossary pictures** (``--glossary``): regenerates ``docs/img/psnr_levels.png``
   and ``docs/img/ssim_levels.png`` (``--img-dir``; noise seed ``--seed``, 0)
   through :mod:`gleak_edu.viz.quality` and prints each file's size and what
   each panel measures (the values ``docs/glossary.md`` quotes in its tables). These two
   small PNGs are committed on purpose (``docs/glossary.md`` shows them);
   ``tests/test_glossary_figures.py`` checks them.

Errors (the command prints one line, ``gleak_edu.figures: error: ...``, and exits
with status 2): a notebooks folder that does not exist or is not a folder
(``FileNotFoundError`` / ``NotADirectoryError`` from :func:`export_figures`), a
folder without ``*.ipynb`` files (``FileNotFoundError``), a file that is not a
notebook or an image output that is not valid base64 PNG (``ValueError``, naming
the file and cell), an output path that is a file (``NotADirectoryError``).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import json
import re
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from gleak_edu.viz import quality

__all__ = [
    "GLOSSARY_FILES",
    "NotebookFigure",
    "collect_figures",
    "export_figures",
    "main",
    "section_slug",
    "write_glossary_figures",
]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
INDEX = "index.md"
INDEX_MARKER = "<!-- gleak_edu.figures index -->"
SLUG_MAX = 40
#: The glossary's pictures: file name -> what it shows.
GLOSSARY_FILES = {
    "psnr_levels.png": "a photo and a digit at PSNR 30, 20 and 15 dB (Gaussian noise)",
    "ssim_levels.png": "a photo and a digit at SSIM 0.9, 0.6 and 0.3 (noise and blur)",
}


@dataclass(frozen=True)
class NotebookFigure:
    """One saved image of one notebook.

    Attributes:
        notebook: the notebook's file name.
        number: ``NN``, the notebook's number (or its name when it has none).
        section: the nearest markdown heading above the output, as plain text.
        slug: :func:`section_slug` of ``section``.
        k: the figure's count among the notebook's figures with this slug (from 1).
        figure: the figure's number in the notebook (from 1, in cell order).
        cell: index of the code cell whose output holds it (0-based, as in the .ipynb).
        source: ``"output"`` (an image/png output) or ``"widget"`` (a PNG in the widget state).
        png: the PNG bytes.
    """

    notebook: str
    number: str
    section: str
    slug: str
    k: int
    figure: int
    cell: int
    source: str
    png: bytes

    @property
    def filename(self) -> str:
        """``NN_<section-slug>_<k>.png``."""
        return f"{self.number}_{self.slug}_{self.k}.png"


def section_slug(title: str, max_len: int = SLUG_MAX) -> str:
    """A heading as a file-name part: ASCII, lower case, words joined by ``-``, at most ``max_len`` characters.

    ``"03 · PRECODE and its bypass"`` -> ``"03-precode-and-its-bypass"``; an empty result is ``"section"``.
    """
    text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return text[:max_len].rstrip("-") or "section"


def _plain_heading(text: str) -> str:
    """A markdown heading's text without its markup: links, emphasis, code ticks, HTML tags, closing #s."""
    text = re.sub(r"\s+#+\s*$", "", text.strip())
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"[*_`]+", "", text)
    return re.sub(r"\s+", " ", text).strip()


def _headings(markdown: str) -> list[str]:
    """The ATX headings (``#`` to ``######``) of one markdown cell, in order, outside code fences."""
    out, fence = [], None
    for line in markdown.splitlines():
        stripped = line.strip()
        m = re.match(r"(`{3,}|~{3,})", stripped)
        if m:
            if fence is None:
                fence = m.group(1)[0]
            elif stripped.startswith(fence * 3):
                fence = None
            continue
        if fence is None:
            h = re.match(r"^ {0,3}#{1,6}\s+(.+)$", line)
            if h:
                title = _plain_heading(h.group(1))
                if title:
                    out.append(title)
    return out


def _text(source) -> str:
    return "".join(source) if isinstance(source, list) else str(source or "")


def _png(data, where: str) -> bytes:
    try:
        raw = base64.b64decode(_text(data), validate=False)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{where}: the image/png output is not valid base64 ({exc})") from None
    if not raw.startswith(PNG_MAGIC):
        raise ValueError(f"{where}: the image/png output does not hold a PNG image")
    return raw


def _read_notebook(path: Path) -> dict:
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a notebook (it is not JSON: {exc})") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise ValueError(f"{path}: not a notebook (no list of cells)")
    return nb


def _widget_pngs(nb: dict, path: Path) -> tuple[dict[str, bytes], dict[str, list[str]]]:
    """(PNG bytes of every image model in the widget state, model id -> ids it references in order)."""
    state = ((nb.get("metadata") or {}).get("widgets") or {}).get(WIDGET_STATE, {}).get("state", {})
    images: dict[str, bytes] = {}
    refs: dict[str, list[str]] = {}
    if not isinstance(state, dict):
        return images, refs

    def walk(value, found: list[str]) -> None:
        if isinstance(value, str) and value.startswith("IPY_MODEL_"):
            found.append(value[len("IPY_MODEL_"):])
        elif isinstance(value, list):
            for v in value:
                walk(v, found)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v, found)

    for model_id, model in state.items():
        if not isinstance(model, dict):
            continue
        found: list[str] = []
        walk(model.get("state", {}), found)
        refs[model_id] = found
        if model.get("model_name") == "ImageModel":
            for buf in model.get("buffers") or []:
                if isinstance(buf, dict) and buf.get("path") == ["value"] and buf.get("encoding") == "base64":
                    try:
                        raw = base64.b64decode(buf.get("data", ""))
                    except (binascii.Error, ValueError) as exc:
                        raise ValueError(f"{path}: widget image {model_id} is not valid base64 ({exc})") from None
                    if raw.startswith(PNG_MAGIC):
                        images[model_id] = raw
    return images, refs


def collect_figures(path: str | Path) -> list[NotebookFigure]:
    """Every saved image of one executed notebook, in cell order, with its section.

    Args:
        path: an ``.ipynb`` file (read as JSON; nothing is executed).

    Returns:
        A list of :class:`NotebookFigure` (empty for a notebook without saved images).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a file that is not a notebook, or an image output that is not base64 PNG.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no notebook at {path}")
    nb = _read_notebook(path)
    m = re.match(r"\d+", path.stem)
    number = m.group(0) if m else section_slug(path.stem)
    widget_images, refs = _widget_pngs(nb, path)
    shown: set[str] = set()
    found: list[tuple[str, int, str, bytes]] = []  # (section, cell, source, png)
    section = ""
    for index, cell in enumerate(nb["cells"]):
        if not isinstance(cell, dict):
            continue
        if cell.get("cell_type") == "markdown":
            heads = _headings(_text(cell.get("source")))
            if heads:
                section = heads[-1]
            continue
        if cell.get("cell_type") != "code":
            continue
        for output in cell.get("outputs") or []:
            if not isinstance(output, dict) or output.get("output_type") not in ("display_data", "execute_result"):
                continue
            data = output.get("data") or {}
            if "image/png" in data:
                found.append((section, index, "output", _png(data["image/png"], f"{path.name}, cell {index}")))
            view = data.get(WIDGET_VIEW)
            if isinstance(view, dict) and view.get("model_id"):
                stack, seen = [str(view["model_id"])], set()
                while stack:  # depth first, children in their order: images in the order they are laid out
                    model_id = stack.pop()
                    if model_id in seen:
                        continue
                    seen.add(model_id)
                    if model_id in widget_images and model_id not in shown:
                        shown.add(model_id)
                        found.append((section, index, "widget", widget_images[model_id]))
                    stack.extend(reversed(refs.get(model_id, [])))
    for model_id, png in widget_images.items():  # stored, but no output displays it
        if model_id not in shown:
            found.append(("widgets not displayed by any output", -1, "widget", png))
    figures, counts = [], {}
    for number_in_nb, (title, index, source, png) in enumerate(found, start=1):
        slug = section_slug(title or path.stem)
        counts[slug] = counts.get(slug, 0) + 1
        figures.append(NotebookFigure(notebook=path.name, number=number, section=title or path.stem, slug=slug,
                                      k=counts[slug], figure=number_in_nb, cell=index, source=source, png=png))
    return figures


def _notebooks(folder: Path) -> list[Path]:
    if not folder.exists():
        raise FileNotFoundError(f"the notebooks folder {folder} does not exist (pass --notebooks DIR, "
                                f"the folder of the executed .ipynb files)")
    if not folder.is_dir():
        raise NotADirectoryError(f"--notebooks must be a folder of .ipynb files, but {folder} is a file")
    found = sorted(p for p in folder.glob("*.ipynb") if p.is_file())
    if not found:
        raise FileNotFoundError(f"no notebooks (*.ipynb) in {folder}")
    return found


def _previous_files(out: Path) -> list[Path]:
    """The PNGs an earlier run listed in ``out/index.md`` (only plain names inside ``out``)."""
    index = out / INDEX
    if not index.is_file():
        return []
    text = index.read_text(encoding="utf-8", errors="replace")
    if INDEX_MARKER not in text:
        return []
    names = re.findall(r"^\| \[([A-Za-z0-9._-]+\.png)\]\(", text, flags=re.M)
    return [out / n for n in names if "/" not in n and not n.startswith(".")]


def _cell_text(fig: NotebookFigure) -> str:
    if fig.cell < 0:
        return "widget state (not displayed)"
    return f"{'output' if fig.source == 'output' else 'widget image'} of code cell {fig.cell}"


def export_figures(notebooks: str | Path = "notebooks", out: str | Path = "build/figures") -> list[Path]:
    """Write every saved figure of the notebooks in ``notebooks`` to ``out``, with ``out/index.md``.

    Args:
        notebooks: a folder of executed ``.ipynb`` files (only its top level is read).
        out: the folder to write (created if needed).

    Returns:
        The PNG paths written, in notebook and figure order (``index.md`` is written beside them).

    Raises:
        FileNotFoundError: ``notebooks`` does not exist or holds no ``*.ipynb``.
        NotADirectoryError: ``notebooks`` or ``out`` is a file.
        ValueError: a file that is not a notebook, or an image output that is not base64 PNG.
    """
    folder, out = Path(notebooks), Path(out)
    paths = _notebooks(folder)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out must be a folder, but {out} is a file")
    per_notebook = [(p, collect_figures(p)) for p in paths]  # read everything before writing anything
    out.mkdir(parents=True, exist_ok=True)
    for old in _previous_files(out):
        if old.is_file():
            old.unlink()
    written: list[Path] = []
    rows = []
    for path, figs in per_notebook:
        for fig in figs:
            target = out / fig.filename
            target.write_bytes(fig.png)
            written.append(target)
            title = fig.section.replace("|", "\\|")
            rows.append(f"| [{fig.filename}]({fig.filename}) | {fig.notebook} | {title} | {fig.figure} | {_cell_text(fig)} |")
    lines = [
        "# Figure bank",
        "",
        INDEX_MARKER,
        f"Every figure saved in the executed notebooks of `{folder.as_posix()}/`, exported by "
        "`python -m gleak_edu.figures` (`make figures`) from the saved outputs; nothing was re-run. "
        "File names are `NN_<section>_<k>.png`: the notebook's number, the nearest markdown heading above "
        "the figure, and a count within that section. Images of widgets (live views, panels) are the last "
        "frame the saved notebook holds.",
        "",
        "| file | notebook | section | figure in notebook | from |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"{len(written)} figures from {len(per_notebook)} notebook{'s' if len(per_notebook) != 1 else ''}.",
        "",
    ]
    (out / INDEX).write_text("\n".join(lines), encoding="utf-8")
    return written


def _save_small_png(fig, path: Path) -> int:
    """Save a figure at its own dpi as an RGB PNG, compressed as far as zlib goes; returns the bytes written."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi="figure", metadata={"Software": None})
    out = io.BytesIO()
    Image.open(io.BytesIO(buf.getvalue())).convert("RGB").save(out, format="PNG", optimize=True)
    path.write_bytes(out.getvalue())
    return len(out.getvalue())


def write_glossary_figures(img_dir: str | Path = "docs/img", *, seed: int = 0, images=None) -> list[str]:
    """Regenerate the glossary's pictures (:data:`GLOSSARY_FILES`) in ``img_dir``; returns report lines.

    ``psnr_levels.png`` is :func:`gleak_edu.viz.quality.psnr_levels_figure` and
    ``ssim_levels.png`` :func:`gleak_edu.viz.quality.ssim_levels_figure` (rows
    :data:`gleak_edu.viz.quality.GLOSSARY_SSIM_ROWS`), both on ``images``
    (default :func:`gleak_edu.viz.quality.glossary_images`, which is what the
    glossary shows) with noise seed ``seed``. Each file is saved at the figure's
    own dpi as an RGB PNG, compressed losslessly. The report gives each file's
    size and, per panel, the degradation's strength and the measured PSNR and SSIM.

    Raises:
        NotADirectoryError: ``img_dir`` is a file.
    """
    img_dir = Path(img_dir)
    if img_dir.exists() and not img_dir.is_dir():
        raise NotADirectoryError(f"--img-dir must be a folder, but {img_dir} is a file")
    img_dir.mkdir(parents=True, exist_ok=True)
    import matplotlib.pyplot as plt  # only to close the figures; gleak_edu.viz picks the backend

    images = quality.glossary_images() if images is None else images
    report = []
    for name, make in (("psnr_levels.png", quality.psnr_levels_figure), ("ssim_levels.png", quality.ssim_levels_figure)):
        extra = {"rows": quality.GLOSSARY_SSIM_ROWS} if name == "ssim_levels.png" else {}
        fig = make(images, seed=seed, **extra)
        size = _save_small_png(fig, img_dir / name)
        plt.close(fig)
        report.append(f"{img_dir / name}: {size / 1024:.1f} KB")
    for d in quality.quality_levels(images, seed=seed):
        if d.measure == "psnr" or (d.name, d.kind) in quality.GLOSSARY_SSIM_ROWS:
            report.append(f"  {d.name:5s} {d.kind:5s} target {d.measure.upper()} {d.target:g}: strength {d.strength:.3f}, "
                          f"PSNR {d.psnr:.2f} dB, SSIM {d.ssim:.3f}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (0, or 2 after a one-line error)."""
    parser = argparse.ArgumentParser(
        prog="python -m gleak_edu.figures",
        description="Export every figure of the executed notebooks (from their saved outputs, nothing is re-run) "
                    "as build/figures/NN_<section>_<k>.png with an index.md; or, with --glossary, regenerate the "
                    "glossary's pictures docs/img/psnr_levels.png and docs/img/ssim_levels.png.",
    )
    parser.add_argument("--out", default="build/figures", help="folder for the figure bank (default: build/figures)")
    parser.add_argument("--notebooks", default="notebooks",
                        help="folder of executed .ipynb files to read (default: notebooks)")
    parser.add_argument("--glossary", action="store_true",
                        help="regenerate the glossary's pictures instead of the figure bank")
    parser.add_argument("--img-dir", default="docs/img", help="folder of the glossary's pictures (default: docs/img)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed of the glossary's pictures (default: 0)")
    args = parser.parse_args(argv)
    try:
        if args.glossary:
            for line in write_glossary_figures(args.img_dir, seed=args.seed):
                print(line)
            return 0
        written = export_figures(args.notebooks, args.out)
    except (OSError, ValueError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    counts: dict[str, int] = {}
    for p in written:
        counts[p.name.split("_")[0]] = counts.get(p.name.split("_")[0], 0) + 1
    for number, n in counts.items():
        print(f"notebook {number}: {n} figures")
    print(f"{len(written)} figures and {INDEX} written to {Path(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
