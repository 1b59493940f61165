"""The course in a real browser: Playwright driving Debian's chromium on a closed network, against the
chat (Voilà serving notebook 08), JupyterLab (``make lab``) or the course's website (``make book``), each
served on 127.0.0.1. Used by ``tests/test_browser.py``, ``tests/test_lab.py``, ``tests/test_book.py`` and
``benchmarks/bench_chat.py``."""
from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

from . import config

ROOT = Path(__file__).resolve().parent.parent
#: Debian's chromium (``apt-get install chromium``); Playwright cannot download its own here.
CHROMIUM = config.chromium_path()
#: A closed network: no background traffic, sync, updates or first-run UI.
QUIET_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-default-apps", "--disable-domain-reliability", "--metrics-recording-only",
               "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication"]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def browser_problem() -> str | None:
    """Why the browser cannot run here (None when it can)."""
    if not CHROMIUM.is_file():
        return f"no chromium at {CHROMIUM} (apt-get install chromium, or set SHOPBOT_CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -r requirements.txt)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_answering(url: str, proc: subprocess.Popen, timeout_s: float, log: Path | None = None) -> None:
    """Return once ``url`` gives any HTTP answer (an error status too: the server is listening); raise
    ``RuntimeError`` with the end of ``log`` if ``proc`` exits first or ``timeout_s`` passes."""
    def tail() -> str:
        return f":\n{Path(log).read_text()[-3000:]}" if log is not None else ""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode}{tail()}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing answered on {url}{tail()}") from None
            time.sleep(0.5)


@contextlib.contextmanager
def serve_demo(artifacts: str | Path, data: str | Path | None, log: Path, timeout_s: float = 180,
               options: tuple[str, ...] = ()) -> Iterator[tuple[str, subprocess.Popen]]:
    """``make demo`` (the API and the chat page, ``shopbot_utils.demo``) over ``artifacts`` on free local
    ports; yields (the page's URL, the process). Stopped as Ctrl-C stops it (SIGINT)."""
    env = {**os.environ, "SHOPBOT_OFFLINE": "1"}
    if data is not None:
        env["SHOPBOT_DATA"] = str(data)
    port, api_port = _free_port(), _free_port()
    with Path(log).open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "shopbot_utils.demo", "--artifacts", str(artifacts),
                                 f"--port={port}", f"--api-port={api_port}", *options],
                                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    try:  # listening once the API has loaded (the page itself would take a kernel)
        wait_until_answering(url + "voila/static/does-not-exist", proc, timeout_s, log)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:  # the chats' kernels, then the API (which has 20 s to finish its requests), on a busy machine
                proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def launch(playwright, blocked: list[str], viewport=(1100, 1000)):
    """(browser, page): chromium with every request to another host aborted and recorded in ``blocked``."""
    def only_local(route):
        if route.request.url.startswith(("data:", "file:")) or urlparse(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=QUIET_FLAGS)
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    page.route("**/*", only_local)
    return browser, page


def open_page(playwright, url: str, blocked: list[str], viewport=(1100, 1000)):
    """(browser, page) on the chat at ``url`` (see ``launch``); returns once the greeting is drawn."""
    browser, page = launch(playwright, blocked, viewport)
    page.goto(url, timeout=120_000)
    page.get_by_text("Hi, I'm ShopBot").wait_for(timeout=180_000)
    return browser, page


def bot_rows(page) -> int:
    return page.locator(".shopbot-row-bot").count()


def wait_for_bot_turn(page, before: int, timeout_ms: int = 60_000) -> None:
    """Wait until a bot bubble beyond the first ``before`` is drawn and nothing is typing."""
    page.wait_for_function(f"document.querySelectorAll('.shopbot-row-bot').length > {before} && "
                           "!document.querySelector('.shopbot-typing-row')", timeout=timeout_ms)


def text_turn(page, text: str) -> float:
    """Type ``text``, press Enter, wait for the answer: seconds from Enter to the drawn answer."""
    box = page.locator("input[placeholder^='Ask a question']")
    before = bot_rows(page)
    box.fill(text)
    start = time.perf_counter()
    box.press("Enter")
    wait_for_bot_turn(page, before)
    return time.perf_counter() - start


def choose_file(page, path: str | Path) -> None:
    """Pick ``path`` with the photo button's file chooser (its input is not in the page until clicked)."""
    with page.expect_file_chooser() as chooser:
        page.locator("button.shopbot-photo").click()
    chooser.value.set_files(str(path))
    page.locator(".shopbot-preview").get_by_text(Path(path).name).wait_for()


def photo_turn(page, path: str | Path) -> float:
    """Send a photo: seconds from Send to the drawn answer."""
    choose_file(page, path)
    before = bot_rows(page)
    start = time.perf_counter()
    page.locator("button.shopbot-send").click()
    wait_for_bot_turn(page, before)
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- JupyterLab (make lab)
_LAB_URL = re.compile(r"http://127\.0\.0\.1:\d+/lab\?token=[0-9a-f]+")


class Terminal:
    """A command in a terminal of its own (a pseudo-terminal that is its controlling terminal), as a
    student runs ``make lab``: what it prints is copied to ``log``; ``press`` types keys, Ctrl-C included."""

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path = ROOT):
        import fcntl
        import pty
        import termios

        def own_terminal() -> None:  # in the child: a new session whose controlling terminal is the pty
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.log = Path(log)
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdin=slave, stdout=slave,
                                     stderr=slave, preexec_fn=own_terminal, close_fds=True)
        os.close(slave)
        self._reader = threading.Thread(target=self._copy_output, daemon=True)
        self._reader.start()

    def _copy_output(self) -> None:
        with self.log.open("wb") as out:
            while True:
                try:
                    data = os.read(self.master, 65536)
                except OSError:  # the terminal closed: everyone in it has exited
                    break
                if not data:
                    break
                out.write(data)
                out.flush()

    def text(self) -> str:
        """Everything printed so far."""
        return self.log.read_text(errors="replace") if self.log.is_file() else ""

    def press(self, keys: str) -> None:
        """Type ``keys`` ("\x03" is Ctrl-C: the terminal sends SIGINT to what runs in it)."""
        os.write(self.master, keys.encode())

    def wait_for(self, pattern: str | re.Pattern, timeout_s: float) -> re.Match:
        """The first match of ``pattern`` in what it printed, once it has printed it."""
        deadline = time.monotonic() + timeout_s
        while not (found := re.search(pattern, self.text())):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.5)  # the last lines
                raise RuntimeError(f"no {pattern!r} (exit {self.proc.poll()}):\n{self.text()[-3000:]}")
            time.sleep(0.3)
        return found

    def close(self, timeout_s: float = 30) -> None:
        """Kill whatever still runs in it (after a failed test) and close it."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout_s)
        self._reader.join(5)
        os.close(self.master)


@contextlib.contextmanager
def serve_lab(log: Path, env: dict[str, str] | None = None, timeout_s: float = 120) -> Iterator[tuple[str, Terminal]]:
    """``make lab`` in a terminal of its own on a free local port; yields (the lab URL with its token, as it
    printed it; the terminal). Whatever still runs at the end is killed."""
    # make test has built the environment: the test starts the server, never an install (-o: up to date)
    terminal = Terminal(["make", "--no-print-directory", "-o", ".venv/.installed", "lab", f"LAB_PORT={_free_port()}",
                         "LAB_FLAGS=--no-browser"], log, env)
    try:
        yield terminal.wait_for(_LAB_URL, timeout_s).group(0), terminal
    finally:
        terminal.close()


def stop_lab(terminal: Terminal, timeout_s: float = 30) -> int:
    """Stop ``make lab`` as its README says: Ctrl-C, then ``y`` at Jupyter's question; make's exit code."""
    terminal.press("\x03")
    terminal.wait_for(r"Shut down this Jupyter server \(y/\[n\]\)\?", 10)
    terminal.press("y\n")
    try:
        return terminal.proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"make lab did not stop within {timeout_s} s:\n{terminal.text()[-2000:]}") from None


# ----------------------------------------------------------------------------- the website (make book)
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serve_folder(folder: str | Path) -> Iterator[str]:
    """A static folder (the built book) over HTTP on a free local port, as a web host would; yields its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
