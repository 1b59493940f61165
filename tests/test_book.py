"""The course as a website (``make book``): built from the committed notebooks into a temporary folder,
it asks nothing of the web, and in a real browser (Debian's chromium driven by Playwright, every request to
another host aborted) every page of its table of contents draws its headings, images and equations.

Screenshots go to ``SHOPBOT_SCREENSHOTS`` (default: the test's temporary folder). Without chromium the
browser test skips with a message, except where ``SHOPBOT_REQUIRE_BROWSER=1`` (CI), where it fails."""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import pytest

from shopbot_utils.book import OFFLINE_IMAGES, _for_the_web, build_book
from shopbot_utils.browser import LOCAL_HOSTS, launch, serve_folder
from conftest import need_browser

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    start = time.perf_counter()
    html = build_book(tmp_path_factory.mktemp("book"))  # warnings are errors
    print(f"book built in {time.perf_counter() - start:.0f} s")
    return html


def _plain(text: str) -> str:
    """``text`` with the site's typographic quotes back to plain ones."""
    return text.translate(str.maketrans("\u2018\u2019\u201c\u201d", "''\"\""))


def _headings(markdown: str) -> list[str]:
    """The text of a Markdown source's level 1-3 headings (what the page must show)."""
    return [re.sub(r"^#+\s*", "", line).replace("`", "").strip()  # inline code shows without its backticks
            for line in markdown.splitlines() if re.match(r"#{1,3} ", line)]


def _pages() -> list[tuple[str, list[str], int]]:
    """(page, its headings, how many figures its outputs hold) for the landing page and every notebook."""
    pages = [("index.html", _headings((ROOT / "book" / "index.md").read_text()), 1)]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        headings = [h for c in nb.cells if c.cell_type == "markdown" for h in _headings(c.source)]
        figures = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        pages.append((f"notebooks/{path.stem}.html", headings, figures))
    return pages


def test_notebooks_reach_the_site_without_web_images():
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    assert any(url in nb.cells[0].source for url in OFFLINE_IMAGES)  # the Colab badge
    web = json.loads(_for_the_web(NOTEBOOKS[0].read_text()))
    assert not any(url in "".join(c["source"]) for c in web["cells"] for url in OFFLINE_IMAGES)
    assert "../_static/colab-badge.svg" in "".join(web["cells"][0]["source"])
    assert "colab.research.google.com/github/" in "".join(web["cells"][0]["source"])  # the link stays
    assert ["".join(c["source"]) for c in web["cells"][1:]] == [c.source for c in nb.cells[1:]]
    assert web["metadata"]["language_info"]["pygments_lexer"] == "ipython3"  # `!pip`, `%cd` highlighted
    assert (ROOT / "book" / "_static" / "colab-badge.svg").is_file()


def test_the_site_loads_nothing_from_the_web(book):
    pages = sorted(book.rglob("*.html"))
    assert {p.relative_to(book).as_posix() for p in pages} >= {page for page, _, _ in _pages()}
    for page in pages:
        html = page.read_text()
        remote = re.findall(r"<(?:script|link|img|iframe|source)\b[^>]*\b(?:src|href)=\"((?:https?:)?//[^\"]+)\"", html)
        assert not remote, (page.name, remote[:3])
    index = (book / "index.html").read_text()
    assert "_static/mathjax/tex-chtml.js" in index and (book / "_static" / "mathjax" / "tex-chtml.js").is_file()
    # the notebooks are shown as committed, not re-run: 01's stored output (the catalogue report) is there
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    stored = next(o.text for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "stream")
    assert stored.splitlines()[0].strip() in (book / "notebooks" / f"{NOTEBOOKS[0].stem}.html").read_text()


def test_the_book_in_a_real_browser(book, tmp_path_factory):
    need_browser()
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("SHOPBOT_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    blocked: list[str] = []
    failed: list[str] = []
    errors: list[str] = []
    expected = _pages()
    start = time.perf_counter()
    with serve_folder(book) as url, sync_playwright() as p:
        browser, page = launch(p, blocked, viewport=(1300, 1000))
        page.on("requestfailed", lambda r: failed.append(f"{r.url} {r.failure}")
                if urlparse(r.url).hostname in LOCAL_HOSTS else None)
        page.on("response", lambda r: failed.append(f"{r.url} {r.status}") if r.status >= 400 else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url, timeout=60_000)

        # the table of contents: the landing page, then notebooks 01-08 in order, titled by their first heading
        toc = page.locator(".bd-sidebar-primary nav.bd-links a.reference.internal")
        titles = [_plain(t.strip()) for t in toc.all_inner_texts()]
        assert titles == [headings[0] for _, headings, _ in expected], titles
        hrefs = [urlparse(page.evaluate("a => a.href", toc.nth(i).element_handle())).path.lstrip("/")
                 for i in range(1, toc.count())]
        assert hrefs == [name for name, _, _ in expected[1:]]

        for i, (name, headings, n_figures) in enumerate(expected):
            if i:  # walk the table of contents: click the next entry in the sidebar
                toc.nth(i).click()
                page.wait_for_url(url + name, timeout=30_000)
            page.wait_for_load_state("load")
            article = page.locator("article.bd-article")
            shown = [_plain(h) for h in article.locator("h1, h2, h3").all_inner_texts()]
            assert shown[0].strip() == headings[0], name
            for heading in headings:
                assert any(heading in h for h in shown), (name, heading, shown)
            # every image drawn (figures saved in the outputs, the chat screenshot, the Colab badge)
            images = article.locator("img")
            assert images.count() >= n_figures, name
            for j in range(images.count()):
                images.nth(j).scroll_into_view_if_needed()
                ok = page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                                            arg=images.nth(j).element_handle(), timeout=15_000)
                assert ok, (name, images.nth(j).get_attribute("src"))
            # every equation typeset by the site's own MathJax, without an error
            maths = article.locator(".math")
            if maths.count():
                page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise"
                                       " && document.querySelectorAll('article .math mjx-container').length"
                                       f" >= {maths.count()}", timeout=30_000)
                assert article.locator("mjx-merror").count() == 0, name
            if name == "index.html":
                assert maths.count() >= 3  # a, b and the cosine
                page.screenshot(path=str(shots / "book_index.png"), full_page=True)
                article.locator("div.math").first.screenshot(path=str(shots / "book_equation.png"))
            if i == 2:
                page.evaluate("window.scrollTo(0, 0)")
                page.screenshot(path=str(shots / "book_notebook.png"))

        # opened from the disk (file://), no server: the landing page still draws its picture and equations
        page.goto((book / "index.html").as_uri())
        page.wait_for_function("[...document.querySelectorAll('article img')].every(i => i.complete && i.naturalWidth > 0)"
                               " && document.querySelectorAll('article .math mjx-container').length >= 3",
                               timeout=30_000)
        assert page.locator("article mjx-merror").count() == 0
        browser.close()
    print(f"book browser walk: {time.perf_counter() - start:.0f} s for {len(expected)} pages")
    assert not failed, failed[:5]
    assert not blocked, blocked[:5]
    assert not errors, errors[:5]
