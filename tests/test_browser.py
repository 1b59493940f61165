"""The chat in a real browser: Voilà serves notebook 08 on 127.0.0.1 over the small test artifacts and
Playwright drives Debian's chromium (``/usr/bin/chromium``, or ``SHOPBOT_CHROMIUM``). Every request to
another host is aborted. Screenshots and the measured turn times go to ``SHOPBOT_SCREENSHOTS`` (default:
the test's temporary folder).

Without chromium the test skips with a message, except where ``SHOPBOT_REQUIRE_BROWSER=1`` (``.ci/run``
sets it, so CI never skips it)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "08_chat_demo.ipynb"
CHROMIUM = Path(os.environ.get("SHOPBOT_CHROMIUM", "/usr/bin/chromium"))
# A closed network: no background traffic, sync, updates or first-run UI.
QUIET_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-default-apps", "--disable-domain-reliability", "--metrics-recording-only",
               "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication"]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def _need_browser():
    problem = None
    if not CHROMIUM.is_file():
        problem = f"no chromium at {CHROMIUM} (apt-get install chromium, or set SHOPBOT_CHROMIUM)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "playwright is not installed (pip install -r requirements.txt)"
    if problem and os.environ.get("SHOPBOT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"the browser test must run here (SHOPBOT_REQUIRE_BROWSER=1), but {problem}")
    if problem:
        pytest.skip(f"browser test skipped: {problem}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def voila(chat_artifacts, catalogue_source, tmp_path_factory):
    _need_browser()
    log = tmp_path_factory.mktemp("voila") / "voila.log"
    port = _free_port()
    env = {**os.environ, "SHOPBOT_ARTIFACTS": str(chat_artifacts), "SHOPBOT_DATA": str(catalogue_source),
           "SHOPBOT_OFFLINE": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "voila", str(NOTEBOOK), "--no-browser", f"--port={port}",
                                 "--Voila.ip=127.0.0.1"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(120):
            if proc.poll() is not None:
                pytest.fail(f"voila exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:  # listening: any HTTP answer will do (the page itself would start a kernel)
                urllib.request.urlopen(url + "voila/static/does-not-exist", timeout=2)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"voila did not answer on {url}:\n{log.read_text()[-3000:]}")
        yield url, log
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("SHOPBOT_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _bot_rows(page) -> int:
    return page.locator(".shopbot-row-bot").count()


def _wait_for_bot_turn(page, before: int, timeout_ms: int = 60_000) -> float:
    """Wait until a bot bubble beyond the first ``before`` is drawn; the time it took (s)."""
    start = time.perf_counter()
    page.wait_for_function(f"document.querySelectorAll('.shopbot-row-bot').length > {before} && "
                           "!document.querySelector('.shopbot-typing-row')", timeout=timeout_ms)
    return time.perf_counter() - start


def test_chat_in_a_real_browser(voila, shots, chat_artifacts, catalogue):
    from playwright.sync_api import sync_playwright

    url, log = voila
    blocked: list[str] = []

    def only_local(route):
        request_url = route.request.url
        if request_url.startswith("data:") or urlparse(request_url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            blocked.append(request_url)
            route.abort()

    products = __import__("pandas").read_csv(chat_artifacts / "products.csv")
    shoe = int(products.loc[products["articleType"] == "Casual Shoes", "id"].iloc[0])
    photo = shots / "shopper_photo.jpg"
    photo.write_bytes(catalogue.image_path(shoe).read_bytes())
    not_image = shots / "notes.txt"
    not_image.write_text("this is not a photo")
    timings: dict[str, list[float]] = {"text_turn_s": [], "photo_turn_s": []}

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=QUIET_FLAGS)
        page = browser.new_page(viewport={"width": 1100, "height": 1000})
        page.route("**/*", only_local)
        page.goto(url, timeout=120_000)
        page.get_by_text("Hi, I'm ShopBot").wait_for(timeout=180_000)
        box = page.locator("input[placeholder^='Ask a question']")
        page.screenshot(path=str(shots / "chat_empty.png"))

        # text turns: Enter sends, the box is cleared and focused again
        for question in ["How much is shipping?", "Track my order", "Can I return shoes?", "casual shoes for men",
                         "How do I pay?"]:
            before = _bot_rows(page)
            box.fill(question)
            start = time.perf_counter()
            box.press("Enter")
            _wait_for_bot_turn(page, before)
            timings["text_turn_s"].append(time.perf_counter() - start)
            assert box.input_value() == ""
        assert page.locator(".shopbot-row-shopper").filter(has_text="How much is shipping?").count() == 1
        page.wait_for_function("document.activeElement && document.activeElement.placeholder "
                               "&& document.activeElement.placeholder.startsWith('Ask a question')", timeout=5000)

        # a photo through the file chooser, with its preview chip, then Send
        for _ in range(3):
            with page.expect_file_chooser() as chooser:
                page.locator("button.shopbot-photo").click()
            chooser.value.set_files(str(photo))
            page.locator(".shopbot-preview").get_by_text("shopper_photo.jpg").wait_for()
            before = _bot_rows(page)
            start = time.perf_counter()
            page.locator("button.shopbot-send").click()
            _wait_for_bot_turn(page, before)
            timings["photo_turn_s"].append(time.perf_counter() - start)
        last_bot = page.locator(".shopbot-row-bot").last
        assert 0 < last_bot.locator(".shopbot-card").count() <= 8
        assert last_bot.locator("img[alt='your photo with the background removed']").count() == 1
        assert page.locator(".shopbot-row-shopper img[alt='your photo shopper_photo.jpg']").count() >= 1
        page.locator(".shopbot-app").screenshot(path=str(shots / "chat_photo.png"))

        # "More like this" on the first card, then a quick reply
        before = _bot_rows(page)
        last_bot.locator(".shopbot-card").first.get_by_role("button", name="More like this").click()
        _wait_for_bot_turn(page, before)
        chip = page.locator(".shopbot-chips button").filter(has_not_text="Start over").first
        chip_label = chip.inner_text().strip()
        before = _bot_rows(page)
        chip.click()
        _wait_for_bot_turn(page, before)
        assert chip_label in page.locator(".shopbot-row-shopper").last.inner_text()
        assert page.locator(".shopbot-chips").count() == 1  # only under the newest turn

        # a file that is not a photo: an error message in the chat, and the chat goes on
        with page.expect_file_chooser() as chooser:
            page.locator("button.shopbot-photo").click()
        chooser.value.set_files(str(not_image))
        before = _bot_rows(page)
        page.locator("button.shopbot-send").click()
        _wait_for_bot_turn(page, before)
        assert "not an image" in page.locator(".shopbot-row-bot").last.inner_text()

        # markup typed into the box is shown as text and never runs
        attack = "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\">"
        before = _bot_rows(page)
        box.fill(attack)
        box.press("Enter")
        _wait_for_bot_turn(page, before)
        assert page.evaluate("window.__pwned === undefined")
        assert attack in page.locator(".shopbot-row-shopper").last.inner_text()
        page.locator(".shopbot-app").screenshot(path=str(shots / "chat_errors.png"))

        # thumbs down is logged; "New chat" clears
        page.locator(".shopbot-row-bot").last.locator("button.shopbot-thumb").filter(has_text="Not helpful").click()
        page.get_by_text("not helpful.").wait_for()
        page.get_by_role("button", name="New chat").click()
        page.wait_for_function("document.querySelectorAll('.shopbot-row-shopper').length === 0")
        browser.close()

    feedback = (chat_artifacts / "feedback.jsonl").read_text().splitlines()
    assert json.loads(feedback[-1])["verdict"] == "down"
    # What the page asks of other hosts (all aborted, and it works without them): the notebook's "Open in
    # Colab" badge, and a FontAwesome 5 stylesheet the page links from jsdelivr (the icons shown come from
    # the FontAwesome that ships with ipywidgets). Anything else would be a new dependency on the network.
    assert {urlparse(u).hostname for u in blocked} <= {"colab.research.google.com", "cdn.jsdelivr.net"}, blocked[:5]
    report = {k: {"p50": float(np.median(v)), "max": float(np.max(v)), "n": len(v)} for k, v in timings.items()}
    (shots / "browser_timings.json").write_text(json.dumps(report, indent=1))
    print("browser turn times:", report)
