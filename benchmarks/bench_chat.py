"""The chat's turn times in a real browser, on what `make run` built, and the README's picture.

    python benchmarks/bench_chat.py [--artifacts artifacts] [--turns 10] [--screenshot figures/chat_demo.png]

`make demo`'s page (the API and the chat, ``shopbot_utils.demo``) on 127.0.0.1; Debian's chromium (driven by Playwright, other hosts aborted)
times each turn from Enter (or Send) to the drawn answer: text questions, text searches and photos of
test-split products with background removal on (ISNet at the chat's size). The same numbers for the
conversation alone (no browser, same process as Voilà's kernel would be) show what the page adds.
Prints a table and writes JSON (``<artifacts>/benchmarks/chat.json``).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from shopbot_utils import ShopBot, config
from shopbot_utils.background_bench import make_composites
from shopbot_utils.browser import browser_problem, open_page, photo_turn, serve_demo, text_turn
from shopbot_utils.chat import Conversation
from shopbot_utils.data import load_catalogue, load_split

QUESTIONS = ["How much is shipping?", "Track my order", "Can I return these shoes?", "How do I pay?",
             "Do you ship abroad?", "I want to cancel my order", "Where is my refund?", "Is there a discount?",
             "How do I change my address?", "Can I talk to a person?"]
SEARCHES = ["black heels for women", "navy trainers for men", "grey slacks", "ladies jumper not black",
            "formal shirt for men", "brown wallet", "gold watch for women", "blue jeans for men",
            "white tshirt for boys", "red kurta for women"]


def _stats(name: str, where: str, seconds: list[float]) -> dict:
    return {"turn": name, "measured in": where, "n": len(seconds), "p50_s": float(np.median(seconds)),
            "p95_s": float(np.percentile(seconds, 95)), "max_s": float(np.max(seconds))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", type=Path, default=config.artifacts_dir())
    p.add_argument("--data", default=None, help="the catalogue (default: SHOPBOT_DATA, cache)")
    p.add_argument("--turns", type=int, default=10, help="turns of each kind")
    p.add_argument("--screenshot", type=Path, default=None, help="save a demo conversation here (PNG)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    problem = browser_problem()
    if problem:
        print(f"cannot run the browser: {problem}", file=sys.stderr)
        return 2
    out = args.out or args.artifacts / "benchmarks" / "chat.json"
    catalogue = load_catalogue(args.data)
    split = load_split(args.artifacts)
    test = split[split["split"] == "test"].sample(args.turns, random_state=config.SEED)
    work = Path(tempfile.mkdtemp(prefix="bench_chat_"))
    photos = []
    for pid in test["id"]:
        photos.append(work / f"photo_{pid}.jpg")
        photos[-1].write_bytes(catalogue.image_path(int(pid)).read_bytes())

    rows = []
    chat = Conversation(ShopBot.load(args.artifacts), catalogue=catalogue, feedback_log=work / "feedback.jsonl")
    chat.warm_up()
    for name, run in [("question", lambda i: chat.send(QUESTIONS[i % len(QUESTIONS)])),
                      ("text search", lambda i: chat.send(SEARCHES[i % len(SEARCHES)])),
                      ("photo, background removed", lambda i: chat.send(photo=photos[i].read_bytes()))]:
        seconds = []
        for i in range(args.turns):
            start = time.perf_counter()
            run(i)
            seconds.append(time.perf_counter() - start)
        rows.append(_stats(name, "Conversation (no browser)", seconds))
    del chat

    from playwright.sync_api import sync_playwright

    blocked: list[str] = []
    with serve_demo(args.artifacts, args.data or config.data_source(), work / "demo.log") as (url, _), \
            sync_playwright() as pw:
        browser, page = open_page(pw, url, blocked, viewport=(1100, 1700))
        page.wait_for_timeout(3000)  # the warm-up cell after the app
        text_turn(page, "hello")
        rows.append(_stats("question", "browser", [text_turn(page, QUESTIONS[i % len(QUESTIONS)]) for i in range(args.turns)]))
        rows.append(_stats("text search", "browser", [text_turn(page, SEARCHES[i % len(SEARCHES)]) for i in range(args.turns)]))
        rows.append(_stats("photo, background removed", "browser", [photo_turn(page, photos[i]) for i in range(args.turns)]))
        if args.screenshot:
            page.get_by_role("button", name="New chat").click()
            page.wait_for_function("document.querySelectorAll('.shopbot-row-shopper').length === 0")
            text_turn(page, "How much is shipping?")
            # a photo from the wild: a test-split shoe on a real background, which Auto cuts out
            shoe = int(split[(split["split"] == "test") & (split["articleType"] == "Casual Shoes")]["id"].iloc[3])
            demo = work / "my_shoe.jpg"
            make_composites({shoe: catalogue.image_path(shoe)}, size=512)[0].image.save(demo, quality=92)
            photo_turn(page, demo)
            # the whole conversation in one picture: let the history grow instead of scrolling
            page.evaluate("document.querySelector('.shopbot-app').style.height = 'auto';"
                          "document.querySelector('.shopbot-scroll').style.height = 'auto'")
            args.screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.locator(".shopbot-app").screenshot(path=str(args.screenshot))
            print(f"wrote {args.screenshot}")
        browser.close()
    table = pd.DataFrame(rows)
    print("\nChat turn times (targets: text < 0.3 s, photo < 1.5 s, in the browser)")
    print(table.round(3).to_string(index=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": {"python": sys.version.split()[0], "platform": platform.platform()},
                               "turns": rows, "blocked_hosts": sorted({u.split("/")[2] for u in blocked})}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
