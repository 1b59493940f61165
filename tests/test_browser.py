"""The chat in a real browser: ``make demo`` (the API and Voilà's chat page, app/chat.ipynb) serves the small
test artifacts on 127.0.0.1 and Playwright drives Debian's chromium (``/usr/bin/chromium``, or ``SHOPBOT_CHROMIUM``). Every request to
another host is aborted. Screenshots and the measured turn times go to ``SHOPBOT_SCREENSHOTS`` (default:
the test's temporary folder).

Without chromium the test skips with a message, except where ``SHOPBOT_REQUIRE_BROWSER=1`` (``.ci/run``
sets it, so CI never skips it)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest

from shopbot_utils.browser import (bot_rows, choose_file, open_page, photo_turn, serve_demo,
                                   text_turn, wait_for_bot_turn)
from shopbot_utils.chat import MAX_UPLOAD_BYTES
from conftest import need_browser

# What the page asks of other hosts (all aborted; it works without them): the notebook's "Open in Colab"
# badge, and a FontAwesome 5 stylesheet the page links from jsdelivr (the icons shown come from the
# FontAwesome that ships with ipywidgets). Any other host would be a new dependency on the network.
KNOWN_EXTERNAL = {"colab.research.google.com", "cdn.jsdelivr.net"}


@pytest.fixture(scope="module")
def voila(chat_artifacts, catalogue_source, tmp_path_factory):
    need_browser()
    with serve_demo(chat_artifacts, catalogue_source, tmp_path_factory.mktemp("voila") / "demo.log",
                    options=("--pool=1",)) as (url, _):
        yield url


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("SHOPBOT_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_chat_in_a_real_browser(voila, shots, chat_artifacts, catalogue):
    from playwright.sync_api import sync_playwright

    products = pd.read_csv(chat_artifacts / "products.csv")
    shoe = int(products.loc[products["articleType"] == "Casual Shoes", "id"].iloc[0])
    photo = shots / "shopper_photo.jpg"
    photo.write_bytes(catalogue.image_path(shoe).read_bytes())
    not_image = shots / "notes.txt"
    not_image.write_text("this is not a photo")
    timings: dict[str, list[float]] = {"text_turn_s": [], "photo_turn_s": [], "photo_turn_auto_s": []}
    blocked: list[str] = []

    with sync_playwright() as p:
        browser, page = open_page(p, voila, blocked)
        box = page.locator("input[placeholder^='Ask a question']")
        page.screenshot(path=str(shots / "chat_empty.png"))

        # text turns: Enter sends, the box is cleared and focused again
        for question in ["How much is shipping?", "Track my order", "Can I return shoes?", "casual shoes for men",
                         "How do I pay?"]:
            timings["text_turn_s"].append(text_turn(page, question))
            assert box.input_value() == ""
        assert page.locator(".shopbot-row-shopper").filter(has_text="How much is shipping?").count() == 1
        page.wait_for_function("document.activeElement && document.activeElement.placeholder "
                               "&& document.activeElement.placeholder.startsWith('Ask a question')", timeout=5000)

        # a photo through the file chooser, with its preview chip, then Send. The switch's default
        # (Auto) searches a catalogue packshot as it is and says so; On cuts every photo out.
        timings["photo_turn_auto_s"].append(photo_turn(page, photo))
        assert "Background kept: the photo already looks like a catalogue photo" in bot_text(page)
        cut_out = "img[alt='your photo with the background removed']"
        assert page.locator(".shopbot-row-bot").last.locator(cut_out).count() == 0
        page.locator(".shopbot-background-switch").get_by_role("button", name="On", exact=True).click()
        for _ in range(3):
            timings["photo_turn_s"].append(photo_turn(page, photo))
        last_bot = page.locator(".shopbot-row-bot").last
        assert 0 < last_bot.locator(".shopbot-card").count() <= 8
        assert last_bot.locator("img[alt='your photo with the background removed']").count() == 1
        assert "Background removed with " in bot_text(page)
        assert page.locator(".shopbot-row-shopper img[alt='your photo shopper_photo.jpg']").count() >= 1
        page.locator(".shopbot-app").screenshot(path=str(shots / "chat_photo.png"))

        # "More like this" on the first card, then a quick reply
        before = bot_rows(page)
        last_bot.locator(".shopbot-card").first.get_by_role("button", name="More like this").click()
        wait_for_bot_turn(page, before)
        chip = page.locator(".shopbot-chips button").filter(has_not_text="Start over").first
        chip_label = chip.inner_text().strip()
        before = bot_rows(page)
        chip.click()
        wait_for_bot_turn(page, before)
        assert chip_label in page.locator(".shopbot-row-shopper").last.inner_text()
        assert page.locator(".shopbot-chips").count() == 1  # only under the newest turn

        # a file that is not a photo: an error message in the chat, and the chat goes on
        choose_file(page, not_image)
        before = bot_rows(page)
        page.locator("button.shopbot-send").click()
        wait_for_bot_turn(page, before)
        assert "not an image" in page.locator(".shopbot-row-bot").last.inner_text()

        # uploads over tornado's default websocket limit (10 MiB): a 15 MB phone photo is searched; a 50 MB
        # file gets the chat's message (only its first 20 MB + 1 byte travel) and the chat goes on
        big = shots / "phone_photo_15mb.jpg"
        big.write_bytes(_phone_photo(catalogue.image_path(shoe), 15 * 10**6))
        timings["photo_15mb_turn_s"] = [photo_turn(page, big)]
        assert page.locator(".shopbot-row-bot").last.locator(".shopbot-card").count() > 0
        huge = shots / "huge_50mb.jpg"
        huge.write_bytes(_phone_photo(catalogue.image_path(shoe), 50 * 10**6))
        choose_file(page, huge)
        before = bot_rows(page)
        page.locator("button.shopbot-send").click()
        wait_for_bot_turn(page, before)
        assert f"I take photos up to {MAX_UPLOAD_BYTES // 2**20} MB" in page.locator(".shopbot-row-bot").last.inner_text()
        text_turn(page, "How much is shipping?")  # the connection survived

        # markup typed into the box is shown as text and never runs
        attack = "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\">"
        text_turn(page, attack)
        assert page.evaluate("window.__pwned === undefined")
        assert attack in page.locator(".shopbot-row-shopper").last.inner_text()
        page.locator(".shopbot-app").screenshot(path=str(shots / "chat_errors.png"))

        # thumbs down is logged; "New chat" clears
        page.locator(".shopbot-row-bot").last.locator("button.shopbot-thumb").filter(has_text="Not helpful").click()
        page.get_by_text("not helpful.").wait_for()
        page.get_by_role("button", name="New chat").click()
        page.wait_for_function("document.querySelectorAll('.shopbot-row-shopper').length === 0")

        # a phone: the composer and both photo buttons in view, the camera one asking for the camera
        phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        small = phone.new_page()
        small.goto(voila, timeout=120_000)
        small.get_by_text("Hi, I'm ShopBot").wait_for(timeout=180_000)
        text_turn(small, "casual shoes for men")
        for selector in ["input[placeholder^='Ask a question']", "button.shopbot-send", "button.shopbot-photo",
                         "button.shopbot-camera"]:
            box = small.locator(selector).bounding_box()
            assert box and 0 <= box["y"] and box["y"] + box["height"] <= 844 and box["x"] + box["width"] <= 390, selector
        with small.expect_file_chooser() as chooser:
            small.locator("button.shopbot-camera").click()
        assert chooser.value.element.get_attribute("capture") == "environment"
        small.screenshot(path=str(shots / "chat_phone.png"))
        phone.close()
        browser.close()

    feedback = (chat_artifacts / "feedback.jsonl").read_text().splitlines()
    assert json.loads(feedback[-1])["verdict"] == "down"
    assert {urlparse(u).hostname for u in blocked} <= KNOWN_EXTERNAL, blocked[:5]
    report = {k: {"p50": float(np.median(v)), "max": float(np.max(v)), "n": len(v)} for k, v in timings.items()}
    (shots / "browser_timings.json").write_text(json.dumps(report, indent=1))
    print("browser turn times:", report)


def bot_text(page) -> str:
    """The text of the newest bot turn."""
    return page.locator(".shopbot-row-bot").last.inner_text()


def _phone_photo(source, size: int) -> bytes:
    """A 12 MP JPEG of ``source`` padded to ``size`` bytes (JPEG readers stop at the end-of-image marker)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.open(source).convert("RGB").resize((3024, 4032)).save(buffer, "JPEG", quality=95)
    data = buffer.getvalue()
    return data + b"\0" * max(0, size - len(data))
