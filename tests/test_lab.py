"""JupyterLab as students open it: ``make lab`` as root and as a normal user, on 127.0.0.1, with the
project's kernel; and in a real browser (Debian's chromium driven by Playwright, every request to another
host aborted), one notebook opened from the file browser, its headings and figures drawn, its first cells
run on the project's kernel, and the server stopped as Ctrl-C stops it.

Screenshots go to ``SHOPBOT_SCREENSHOTS`` (default: the test's temporary folder). Without chromium the
browser test skips with a message, except where ``SHOPBOT_REQUIRE_BROWSER=1`` (CI), where it fails."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import pytest

from shopbot_utils.browser import launch, serve_lab, stop_lab
from shopbot_utils.report import GOLDEN_DIR, KERNELSPEC
from conftest import need_browser

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "01_data.ipynb"
# The notebooks' "Open in Colab" badge is the only thing the lab asks of another host (aborted; it is a link).
KNOWN_EXTERNAL = {"colab.research.google.com"}


def _dry_run(*args: str) -> str:
    return subprocess.run(["make", "-n", "--no-print-directory", "-o", ".venv/.installed", *args], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("uid, allow_root", [("0", True), ("1000", False)])
def test_make_lab_allows_root_only_for_root(uid, allow_root):
    command = _dry_run("lab", f"USER_UID={uid}").splitlines()[-1]
    assert command.startswith(".venv/bin/jupyter lab ")
    assert ("--allow-root" in command) is allow_root
    assert "--ServerApp.ip=127.0.0.1" in command and "--ServerApp.root_dir=notebooks" in command


def test_make_lab_knows_who_runs_it():
    assert ("--allow-root" in _dry_run("lab").splitlines()[-1]) is (os.geteuid() == 0)


def test_one_kernel_name_everywhere():
    """make env registers the kernel that the notebooks name and that papermill and golden runs use."""
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"^KERNEL := {KERNELSPEC['name']}$", makefile, re.M)
    assert re.search(rf"^KERNEL_DISPLAY := {re.escape(KERNELSPEC['display_name'])}$", makefile, re.M)
    assert "ipykernel install --sys-prefix --name $(KERNEL) --display-name \"$(KERNEL_DISPLAY)\"" in makefile
    assert "papermill --progress-bar --log-output -k $(KERNEL)" in makefile
    assert "$(KERNEL_SPEC)" in makefile.split("\nenv:")[1].splitlines()[0]  # make env registers it


@pytest.mark.parametrize("folder", ["notebooks", "golden"])
def test_committed_notebooks_name_the_project_kernel(folder):
    paths = sorted((ROOT / "notebooks" if folder == "notebooks" else GOLDEN_DIR).glob("[0-9]*.ipynb"))
    assert paths
    wrong = {p.name: nbformat.read(p, as_version=4).metadata.get("kernelspec") for p in paths}
    wrong = {k: v for k, v in wrong.items() if v != KERNELSPEC}
    assert not wrong, f"kernelspec should be {KERNELSPEC}: {wrong}"


# ----------------------------------------------------------------------------- in a real browser
@pytest.fixture()
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("SHOPBOT_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _headings(path: Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    return [re.sub(r"^#+\s*", "", line).strip() for c in nb.cells if c.cell_type == "markdown"
            for line in c.source.splitlines() if re.match(r"#{1,3} ", line)]


def _api(url: str, path: str) -> object:
    parsed = urlparse(url)
    token = parsed.query.split("token=")[1]
    req = urllib.request.Request(f"{parsed.scheme}://{parsed.netloc}{path}", headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=10) as answer:
        return json.loads(answer.read())


def test_jupyterlab_in_a_real_browser(tmp_path, shots):
    need_browser()
    from playwright.sync_api import expect, sync_playwright

    # This user's Jupyter state (settings, workspaces, runtime files, user kernels) stays out of the test:
    # the kernel it finds is the one `make env` registered in the venv.
    env = {name: str(tmp_path / name.lower()) for name in
           ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR",
            "JUPYTERLAB_WORKSPACES_DIR")}
    env["PYTHONPATH"] = str(ROOT)  # the kernel imports this checkout's shopbot_utils
    log = tmp_path / "lab.log"
    blocked: list[str] = []
    code = [c for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code"]
    first_cells = 3  # parameters, the Colab cell (a no-op here), the imports
    assert "parameters" in code[0].metadata.get("tags", []) and "import " in code[2].source

    start = time.perf_counter()
    with serve_lab(log, env) as (url, terminal):
        port = urlparse(url).port
        printed = terminal.text()
        assert "JupyterLab on notebooks/ with the kernel \"ShopBot (.venv)\"" in printed and "Ctrl-C" in printed
        with sync_playwright() as p:
            browser, page = launch(p, blocked, viewport=(1400, 1000))
            page.goto(url, timeout=120_000)

            # the file browser shows notebooks/ (not the repository); open 01 from it
            listing = page.locator(".jp-DirListing-content .jp-DirListing-itemName")
            listing.filter(has_text=NOTEBOOK.name).wait_for(timeout=120_000)
            names = set(listing.all_inner_texts())
            assert {p.name for p in (ROOT / "notebooks").glob("[0-9]*.ipynb")} <= names and "Makefile" not in names
            listing.filter(has_text=NOTEBOOK.name).dblclick()
            panel = page.locator(".jp-NotebookPanel:visible")
            panel.locator(".jp-Notebook").wait_for(timeout=60_000)

            # the kernel shown is the project's, and it is idle
            expect(panel.locator(".jp-Toolbar-kernelName")).to_have_text(KERNELSPEC["display_name"], timeout=60_000)
            panel.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=120_000)

            # its headings and its saved figures are drawn
            for heading in _headings(NOTEBOOK):
                h = panel.locator(".jp-RenderedMarkdown").locator("h1, h2, h3").filter(has_text=heading).first
                h.scroll_into_view_if_needed(timeout=30_000)
                assert h.is_visible(), heading
            figures = panel.locator(".jp-RenderedImage img")
            assert figures.count() == sum("image/png" in o.get("data", {}) for c in code for o in c.outputs) > 0
            for i in range(figures.count()):
                figures.nth(i).scroll_into_view_if_needed()
                page.wait_for_function("img => img.complete && img.naturalWidth > 300", arg=figures.nth(i).element_handle(),
                                       timeout=30_000)
            figures.first.scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "lab_notebook.png"))

            # run the parameters, Colab and import cells, one Shift+Enter each, on the project's kernel
            cells = panel.locator(".jp-Notebook .jp-CodeCell")
            cells.first.scroll_into_view_if_needed()
            cells.first.locator(".jp-InputArea-editor").click()
            for _ in range(first_cells):
                page.keyboard.press("Shift+Enter")
            for i in range(first_cells):
                cells.nth(i).locator(".jp-InputPrompt").filter(has_text=f"[{i + 1}]").wait_for(timeout=180_000)
            panel.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=60_000)
            assert panel.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']").count() == 0
            sessions = _api(url, "/api/sessions")
            assert [s["kernel"]["name"] for s in sessions] == [KERNELSPEC["name"]]
            assert sessions[0]["path"] == NOTEBOOK.name and sessions[0]["kernel"]["execution_state"] == "idle"
            kernel_id = sessions[0]["kernel"]["id"]
            cells.first.scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "lab_cells_run.png"))
            browser.close()

        # Ctrl-C, then y: the server stops and shuts its kernel down
        stop_lab(terminal)
        out = terminal.text()
    took = time.perf_counter() - start
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=5)
    assert "Shutdown confirmed" in out and "Shutting down 1 kernel" in out, out[-2000:]
    assert f"Kernel shutdown: {kernel_id}" in out, out[-2000:]
    assert "Running as root is not recommended" not in out
    assert {urlparse(u).hostname for u in blocked} <= KNOWN_EXTERNAL, blocked[:5]
    print(f"make lab browser test: {took:.0f} s")
