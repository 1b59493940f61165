"""Serving under load, on what `make run` built: the API alone, then many chat pages at once.

    flock /tmp/shopbot-heavy.lock python benchmarks/bench_serve.py [--artifacts artifacts] [--chats 20 35 50]

(a) The API (``python -m shopbot_utils serve``, its own process) under 1, 8 and 32 concurrent clients on
    loopback (httpx, bounded loops): requests/s and p50/p95 of ``ask``, ``search`` and ``similar`` (a
    catalogue photo, no background removal), and the server's RSS.
(b) ``make demo`` (the API + Voilà's chat page) with N chat pages open at once in Debian's chromium (one
    browser, a context per visitor): every page sends a text turn every few seconds and now and then a
    photo (background removal on). Per turn kind p50/p95, errors (a turn not answered, or answered with
    an error bubble), the first paint of the pages, and the memory of every serving process (RSS, and
    PSS, which counts shared libraries once). The largest N that meets the targets (20 chats within
    6 GB, text p95 <= 1 s, photo p95 <= 3 s, no errors) is reported.
(c) 100 plain GETs of the page (no JavaScript): how many got a chat and how many "busy", and the kernels
    left once the idle timeout has passed (the pre-started pool aside).
(baseline) What one visitor's kernel held before (notebook 08's setup: the whole bot, warmed up, then
    three photo turns), beside a chat kernel now.

Prints a table and writes JSON (``<out>``, default ``<artifacts>/benchmarks/serve.json``, else a temp folder
when the artifacts are read-only).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from shopbot_utils import config
from shopbot_utils.browser import CHROMIUM, QUIET_FLAGS, _free_port, browser_problem, wait_until_answering
from shopbot_utils.data import load_catalogue, load_split

QUESTIONS = ["How much is shipping?", "Track my order", "Can I return these shoes?", "How do I pay?",
             "Do you ship abroad?", "Where is my refund?", "Is there a discount?", "Can I talk to a person?"]
SEARCHES = ["black heels for women", "navy trainers for men", "grey slacks", "formal shirt for men", "brown wallet",
            "gold watch for women", "blue jeans for men", "white tshirt for boys", "red kurta for women", "handbags"]
TARGETS = {"total_gb": 6.0, "text_p95_s": 1.0, "photo_p95_s": 3.0}


def _pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def _cpu(root: int) -> dict:
    """CPU seconds so far of the serving processes (API, Voilà, kernels) and of the test's chromium."""
    out = {"api": 0.0, "voila": 0.0, "kernels": 0.0, "chromium": 0.0}
    procs = [psutil.Process(root)] + psutil.Process(root).children(recursive=True)
    procs += [p for p in psutil.process_iter(["name"]) if "chrom" in (p.info["name"] or "")]
    for p in procs:
        try:
            times, cmd = p.cpu_times(), " ".join(p.cmdline())
        except psutil.Error:
            continue
        part = ("chromium" if "chrom" in p.name() else "kernels" if "ipykernel" in cmd
                else "api" if " serve" in cmd else "voila")
        out[part] += times.user + times.system
    return out


def _memory(root: int) -> dict:
    """RSS and PSS (MB) of a process tree, split into the API, Voilà and the kernels."""
    out = {"api": [0.0, 0.0], "voila": [0.0, 0.0], "kernels": [0.0, 0.0], "n_kernels": 0}
    for p in [psutil.Process(root)] + psutil.Process(root).children(recursive=True):
        try:
            info, cmd = p.memory_full_info(), " ".join(p.cmdline())
        except psutil.Error:
            continue
        part = "kernels" if "ipykernel" in cmd else "api" if " serve" in cmd else "voila"
        out[part][0] += info.rss / 2**20
        out[part][1] += info.pss / 2**20
        out["n_kernels"] += part == "kernels"
    out["total_rss_mb"] = sum(v[0] for k, v in out.items() if isinstance(v, list))
    out["total_pss_mb"] = sum(v[1] for k, v in out.items() if isinstance(v, list))
    return out


# ----------------------------------------------------------------------------------- (a) the API
def bench_api(artifacts: Path, photos: list[bytes], levels=(1, 8, 32), per_level: int = 48) -> tuple[list, dict]:
    import httpx

    port = _free_port()
    log = open(Path(tempfile.gettempdir()) / f"bench_serve_api_{port}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "shopbot_utils", "--artifacts", str(artifacts), "serve",
                             "--port", str(port), "--queue", "64"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    rows, memory = [], {}
    try:
        wait_until_answering(url + "/health", proc, 600)
        memory["api_idle_rss_mb"] = psutil.Process(proc.pid).memory_info().rss / 2**20

        def request(kind: str, i: int):
            if kind == "ask":
                return "POST", "/ask", {"json": {"text": QUESTIONS[i % len(QUESTIONS)]}}
            if kind == "search":
                return "POST", "/search", {"json": {"text": SEARCHES[i % len(SEARCHES)], "k": 8}}
            return "POST", "/similar", {"files": {"photo": ("p.jpg", photos[i % len(photos)], "image/jpeg")},
                                         "data": {"k": "8", "remove_background": "off"}}

        async def level(kind: str, clients: int) -> dict:
            latencies, errors = [], 0
            jobs = list(range(max(per_level, 2 * clients)))

            async def worker(client):
                nonlocal errors
                while jobs:
                    i = jobs.pop()
                    method, path, kwargs = request(kind, i)
                    start = time.perf_counter()
                    response = await client.request(method, url + path, **kwargs)
                    latencies.append(time.perf_counter() - start)
                    errors += response.status_code != 200
            n = len(jobs)
            limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
            async with httpx.AsyncClient(timeout=120, limits=limits) as client:
                start = time.perf_counter()
                await asyncio.gather(*(worker(client) for _ in range(clients)))
                wall = time.perf_counter() - start
            return {"endpoint": kind, "clients": clients, "requests": n, "errors": errors,
                    "req_per_s": n / wall, "p50_ms": 1000 * _pct(latencies, 50), "p95_ms": 1000 * _pct(latencies, 95),
                    "server_rss_mb": psutil.Process(proc.pid).memory_info().rss / 2**20}

        for clients in levels:
            for kind in ("ask", "search", "similar"):
                rows.append(asyncio.run(level(kind, clients)))
                print(f"  api {kind:8s} x{clients:<3d} {rows[-1]['req_per_s']:7.1f} req/s  "
                      f"p50 {rows[-1]['p50_ms']:7.1f} ms  p95 {rows[-1]['p95_ms']:7.1f} ms", flush=True)
        memory["api_after_rss_mb"] = psutil.Process(proc.pid).memory_info().rss / 2**20
    finally:
        proc.terminate()
        proc.wait(30)
    return rows, memory


# ----------------------------------------------------------------------------------- (b) the chat pages
async def chat_level(url: str, demo_pid: int, n: int, seconds: float, photo_paths: list[Path], seed: int,
                     pause: tuple[float, float] = (4.0, 8.0)) -> dict:
    from playwright.async_api import async_playwright

    rng = random.Random(seed)
    turns: dict[str, list[float]] = {"text": [], "photo": []}
    errors: list[str] = []
    first_paint, greeting = [], []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=QUIET_FLAGS)

        async def open_one(i: int):
            context = await browser.new_context(viewport={"width": 390, "height": 844} if i % 2 else
                                                {"width": 1100, "height": 900})
            page = await context.new_page()
            await page.route("**/*", lambda route: route.continue_() if "127.0.0.1" in route.request.url
                             or route.request.url.startswith("data:") else route.abort())
            start = time.perf_counter()
            await page.goto(url, timeout=180_000)
            await page.get_by_text("Hi, I'm ShopBot").wait_for(timeout=180_000)
            greeting.append(time.perf_counter() - start)
            paint = await page.evaluate("(performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime")
            if paint:
                first_paint.append(paint / 1000)
            return context, page

        opened = []
        for i in range(n):  # visitors arrive one after another, as they would (a burst shares 2 cores)
            try:
                opened.append(await open_one(i))
            except Exception as exc:  # noqa: BLE001 - a page that did not open is an error, the run goes on
                errors.append(f"open: {type(exc).__name__}: {str(exc)[:120]}")
        memory_open = _memory(demo_pid)
        cpu_before, wall = _cpu(demo_pid), time.perf_counter()

        async def visitor(i: int, page):
            await asyncio.sleep(rng.uniform(0, 3))
            end = time.monotonic() + seconds
            k = 0
            while time.monotonic() < end:
                kind = "photo" if k % 5 == 4 else "text"
                try:
                    before = await page.locator(".shopbot-row-bot").count()
                    if kind == "photo":
                        async with page.expect_file_chooser() as chooser:
                            await page.locator("button.shopbot-photo").click()
                        await (await chooser.value).set_files(str(photo_paths[(i + k) % len(photo_paths)]))
                        await page.locator(".shopbot-preview").wait_for(timeout=30_000)
                        start = time.perf_counter()
                        await page.locator("button.shopbot-send").click()
                    else:
                        box = page.locator("input[placeholder^='Ask a question']")
                        await box.fill(rng.choice(QUESTIONS + SEARCHES))
                        start = time.perf_counter()
                        await box.press("Enter")
                    await page.wait_for_function(
                        f"document.querySelectorAll('.shopbot-row-bot').length > {before} && "
                        "!document.querySelector('.shopbot-typing-row')", timeout=60_000, polling=50)
                    # (polled every 50 ms: the default, every animation frame in 20 pages, would take the
                    # cores the server needs)
                    turns[kind].append(time.perf_counter() - start)
                    if await page.locator(".shopbot-row-bot").last.locator(".shopbot-bubble-error").count():
                        errors.append(f"{kind}: " + (await page.locator(".shopbot-row-bot").last.inner_text())[:120])
                except Exception as exc:  # noqa: BLE001
                    errors.append(f"{kind}: {type(exc).__name__}: {str(exc)[:120]}")
                k += 1
                await asyncio.sleep(rng.uniform(*pause))

        await asyncio.gather(*(visitor(i, page) for i, (_, page) in enumerate(opened)))
        cpu_after, wall = _cpu(demo_pid), time.perf_counter() - wall
        memory_busy = _memory(demo_pid)
        for context, _ in opened:
            await context.close()
        await browser.close()
    text, photo = turns["text"], turns["photo"]
    return {"chats": n, "opened": len(opened), "text_turns": len(text), "photo_turns": len(photo),
            "text_p50_s": _pct(text, 50), "text_p95_s": _pct(text, 95),
            "photo_p50_s": _pct(photo, 50), "photo_p95_s": _pct(photo, 95),
            "first_paint_p50_s": _pct(first_paint, 50), "first_paint_max_s": max(first_paint, default=float("nan")),
            "greeting_p50_s": _pct(greeting, 50), "greeting_p95_s": _pct(greeting, 95),
            "errors": len(errors), "error_examples": errors[:5], "seconds": wall,
            "cpu_share": {k: (cpu_after[k] - cpu_before[k]) / wall for k in cpu_after},  # cores busy on average
            "memory_open": memory_open, "memory_busy": memory_busy,
            "total_rss_gb": memory_busy["total_rss_mb"] / 1024, "total_pss_gb": memory_busy["total_pss_mb"] / 1024}


def meets(row: dict) -> bool:
    return (row["errors"] == 0 and row["opened"] == row["chats"] and row["total_rss_gb"] <= TARGETS["total_gb"]
            and row["text_p95_s"] <= TARGETS["text_p95_s"] and row["photo_p95_s"] <= TARGETS["photo_p95_s"])


def plain_gets(url: str, demo_pid: int, n: int, idle_s: float) -> dict:
    codes = []
    for _ in range(n):
        try:
            with urllib.request.urlopen(url, timeout=120) as response:
                codes.append(response.status)
        except urllib.error.HTTPError as exc:
            codes.append(exc.code)
    after_gets = _memory(demo_pid)["n_kernels"]
    time.sleep(idle_s + 15)
    left = _memory(demo_pid)["n_kernels"]
    return {"gets": n, "got_a_chat": codes.count(200), "busy_503": codes.count(503),
            "kernels_after_gets": after_gets, "kernels_after_idle_timeout": left}


BASELINE = """
import json, sys, time, psutil
from shopbot_utils import ShopBot
from shopbot_utils.chat import Conversation
from shopbot_utils.data import load_catalogue
from shopbot_utils.widgets import ChatApp
start = time.perf_counter()
bot = ShopBot.load(sys.argv[1])
app = ChatApp(Conversation(bot, catalogue=load_catalogue(), feedback_log=sys.argv[2]))
app.conversation.warm_up()
loaded = time.perf_counter() - start
m1 = psutil.Process().memory_full_info()
for path in sys.argv[3:]:
    app.conversation.send(photo=open(path, "rb").read(), remove_background=True)
m2 = psutil.Process().memory_full_info()
print(json.dumps({"load_s": loaded, "rss_mb": m1.rss / 2**20, "pss_mb": m1.pss / 2**20,
                  "rss_after_photos_mb": m2.rss / 2**20, "pss_after_photos_mb": m2.pss / 2**20}))
"""


def baseline_notebook_08(artifacts: Path, photos: list[Path]) -> dict:
    """What one visitor's kernel held before: notebook 08's setup (the bot loaded, the app, its warm-up),
    then three photo turns, in a fresh process. (Voilà over notebook 08 itself no longer renders: its
    ../figures image is outside Voilà's root.)"""
    done = subprocess.run([sys.executable, "-c", BASELINE, str(artifacts), str(artifacts / "feedback.jsonl"),
                           *map(str, photos[:3])], capture_output=True, text=True, timeout=900)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", type=Path, default=config.artifacts_dir())
    p.add_argument("--data", default=None, help="the catalogue (default: SHOPBOT_DATA, cache)")
    p.add_argument("--chats", type=int, nargs="+", default=[20, 35, 50], help="chat pages at once, one run each; "
                   "stops at the first level that misses the targets")
    p.add_argument("--seconds", type=float, default=60, help="how long each level's visitors chat")
    p.add_argument("--idle", type=float, default=45, help="the demo's idle timeout (plain GETs part)")
    p.add_argument("--pause", type=float, nargs=2, default=[4.0, 8.0], help="seconds between a visitor's turns")
    p.add_argument("--skip", nargs="*", default=[], choices=["api", "chats", "gets", "baseline"])
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if browser_problem() and {"chats", "gets", "baseline"} - set(args.skip):
        print(f"cannot run the browser: {browser_problem()}", file=sys.stderr)
        return 2
    out = args.out or args.artifacts / "benchmarks" / "serve.json"
    if not os.access(args.artifacts, os.W_OK):
        out = args.out or Path(tempfile.gettempdir()) / "bench_serve.json"
    # A writable folder beside read-only artifacts (thumbnails and feedback are written there).
    work = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    artifacts = work / "artifacts"
    artifacts.mkdir()
    for item in args.artifacts.iterdir():
        if item.name not in ("thumbnails", "feedback.jsonl", "benchmarks"):
            (artifacts / item.name).symlink_to(item.resolve())
    catalogue = load_catalogue(args.data)
    split = load_split(args.artifacts)
    test = split[split["split"] == "test"].sample(12, random_state=config.SEED)
    photo_paths = [catalogue.image_path(int(i)) for i in test["id"]]
    photos = [path.read_bytes() for path in photo_paths]
    report: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "load_1min_at_start": os.getloadavg()[0]}, "targets": TARGETS}

    if "api" not in args.skip:
        print("(a) the API", flush=True)
        report["api"], report["api_memory"] = bench_api(artifacts, photos)

    def demo(idle: float, max_chats: int):
        log = work / f"demo_{int(idle)}.log"
        port, api_port = _free_port(), _free_port()
        env = {**os.environ, "SHOPBOT_OFFLINE": "1"}
        with log.open("w") as handle:
            proc = subprocess.Popen([sys.executable, "-m", "shopbot_utils.demo", "--artifacts", str(artifacts),
                                     f"--port={port}", f"--api-port={api_port}", f"--max-chats={max_chats}",
                                     f"--idle={idle}", "--cull-interval=5", "--pool=2"],
                                    stdout=handle, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}/"
        wait_until_answering(url + "voila/static/none", proc, 600)
        time.sleep(15)  # the pool fills
        return proc, url

    def stop(proc):
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()

    if "chats" not in args.skip:
        proc, url = demo(600, max(args.chats) + 5)  # the default idle timeout: no chat is culled mid-level
        try:
            report["demo_idle_memory"] = _memory(proc.pid)
            report["chats"] = []
            for n in args.chats:
                print(f"(b) {n} chat pages for {args.seconds:.0f} s, a turn every {args.pause[0]:.0f}-{args.pause[1]:.0f} s",
                      flush=True)
                row = asyncio.run(chat_level(url, proc.pid, n, args.seconds, photo_paths, seed=n, pause=tuple(args.pause)))
                row["meets_targets"] = meets(row)
                report["chats"].append(row)
                print(f"  text p95 {row['text_p95_s']:.2f} s, photo p95 {row['photo_p95_s']:.2f} s, errors "
                      f"{row['errors']}, total RSS {row['total_rss_gb']:.2f} GB (PSS {row['total_pss_gb']:.2f}), "
                      f"cores busy {json.dumps({k: round(v, 2) for k, v in row['cpu_share'].items()})}", flush=True)
                if not row["meets_targets"]:
                    break
        finally:
            stop(proc)
    if "gets" not in args.skip:
        print(f"(c) 100 plain GETs, idle timeout {args.idle:.0f} s", flush=True)
        proc, url = demo(args.idle, 24)  # make demo's cap
        try:
            report["plain_gets"] = plain_gets(url, proc.pid, 100, args.idle)
        finally:
            stop(proc)

    if "baseline" not in args.skip:
        print("(baseline) notebook 08, its kernel loading the bot", flush=True)
        report["baseline_notebook_08"] = baseline_notebook_08(artifacts, photo_paths)
    shutil.rmtree(work, ignore_errors=True)

    _print(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=float))
    print(f"wrote {out}")
    return 0


def _print(report: dict) -> None:
    pd.set_option("display.width", 200)
    if report.get("api"):
        table = pd.DataFrame(report["api"])
        print("\n(a) the API on loopback\n" + table.round(1).to_string(index=False))
    if report.get("chats"):
        cols = ["chats", "opened", "text_turns", "photo_turns", "text_p50_s", "text_p95_s", "photo_p50_s", "photo_p95_s",
                "first_paint_p50_s", "greeting_p50_s", "greeting_p95_s", "errors", "total_rss_gb", "total_pss_gb",
                "meets_targets"]
        print("\n(b) chat pages at once\n" + pd.DataFrame(report["chats"])[cols].round(2).to_string(index=False))
        ok = [r["chats"] for r in report["chats"] if r["meets_targets"]]
        print(f"largest number of concurrent chats meeting the targets: {max(ok) if ok else 'none measured'}")
        idle, busy = report["demo_idle_memory"], report["chats"][0]["memory_busy"]
        n = report["chats"][0]["opened"] or 1
        print(f"per visitor now: {(busy['total_rss_mb'] - idle['total_rss_mb']) / n:.0f} MB RSS, "
              f"{(busy['total_pss_mb'] - idle['total_pss_mb']) / n:.0f} MB PSS (the API: {busy['api'][0]:.0f} MB RSS, once)")
    if report.get("plain_gets"):
        print("\n(c) plain GETs: " + json.dumps(report["plain_gets"]))
    if report.get("baseline_notebook_08"):
        print("\n(baseline) one visitor's kernel before (the bot in it): " + json.dumps(
            {k: round(v, 1) for k, v in report["baseline_notebook_08"].items()}))


if __name__ == "__main__":
    sys.exit(main())
