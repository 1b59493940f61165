"""The course as a website (``make book``): the landing page in ``book/`` and the executed notebooks,
never re-run, built by Sphinx (myst-nb, sphinx-book-theme) into a static site that works offline."""
from __future__ import annotations

import json
import os
from pathlib import Path

from . import config
from .report import RESULTS_MIME

BOOK_DIR = config.ROOT / "book"
#: Where ``make book`` builds: the staged sources in ``src/``, the site in ``html/`` (ignored by git).
BUILD_DIR = BOOK_DIR / "_build"
#: Images the notebooks show from the web, and the site's own copies: the site asks no other host.
OFFLINE_IMAGES = {"https://colab.research.google.com/assets/colab-badge.svg": "_static/colab-badge.svg"}


def _write_if_changed(target: Path, data: bytes, like: Path) -> None:
    """Write ``data`` with the modification time of ``like``, only when it differs (Sphinx then re-reads
    only what changed)."""
    if not (target.is_file() and target.read_bytes() == data):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    stat = like.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _for_the_web(notebook: str) -> str:
    """A notebook's JSON as the site shows it: web images replaced by the site's copies, results tables
    without the copy kept for the README (``report.RESULTS_MIME``: the page shows the table itself), and
    code cells highlighted as IPython (``!pip``, ``%cd``), which the notebooks' plain ``python`` cannot lex."""
    nb = json.loads(notebook)
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            output.get("data", {}).pop(RESULTS_MIME, None)
        if cell["cell_type"] == "markdown":
            source = "".join(cell["source"])
            for url, local in OFFLINE_IMAGES.items():
                source = source.replace(url, f"../{local}")
            cell["source"] = source
    nb["metadata"].setdefault("language_info", {})["pygments_lexer"] = "ipython3"
    return json.dumps(nb, indent=1, ensure_ascii=False)


def stage_sources(src: str | Path, book: Path = BOOK_DIR, notebooks: Path = config.ROOT / "notebooks",
                  figures: Path = config.ROOT / "figures") -> list[Path]:
    """Copy the book's sources, the numbered notebooks (web images replaced by local copies) and the
    figures into ``src``, Sphinx's source folder; returns the notebooks staged, in order."""
    src = Path(src)
    for path in sorted(book.rglob("*")):
        if path.is_file() and "_build" not in path.relative_to(book).parts and "__pycache__" not in path.parts:
            _write_if_changed(src / path.relative_to(book), path.read_bytes(), path)
    for path in sorted(figures.glob("*.png")):
        _write_if_changed(src / "figures" / path.name, path.read_bytes(), path)
    staged = []
    for path in sorted(notebooks.glob("[0-9]*.ipynb")):
        _write_if_changed(src / "notebooks" / path.name, _for_the_web(path.read_text()).encode(), path)
        staged.append(src / "notebooks" / path.name)
    for old in set((src / "notebooks").glob("*.ipynb")) - set(staged):
        old.unlink()  # a notebook renamed or removed since the last build
    return staged


def build_book(out: str | Path = BUILD_DIR, warnings_are_errors: bool = True) -> Path:
    """Build the website under ``out`` (``src/``, ``html/``, ``doctrees/``); returns the folder of
    ``index.html``. Re-builds only what changed since the last build in ``out``."""
    from sphinx.cmd.build import build_main

    out = Path(out)
    stage_sources(out / "src")
    args = ["-b", "html", "-q", "-d", str(out / "doctrees"), str(out / "src"), str(out / "html")]
    if warnings_are_errors:
        args[:0] = ["-W", "--keep-going"]
    if build_main(args) != 0:
        raise RuntimeError(f"the book did not build (Sphinx's messages are above); sources staged in {out / 'src'}")
    return out / "html"

