"""``make demo`` bounded: real HTTP on 127.0.0.1 to the API and the chat page started together. Plain GETs
(no JavaScript, as a crawler or a closed tab) take kernels that the idle timeout culls; past the cap a
visitor is told to come back; a foreign Host gets 403; Ctrl-C (SIGINT) stops the API and every kernel.
The chats' kernels load no model (their memory is measured against the API's)."""
from __future__ import annotations

import time
import urllib.error
import urllib.request

import psutil
import pytest

from shopbot_utils.browser import serve_demo
from shopbot_utils.demo import BUSY_PAGE, chats_in_use, check_network, voila_argv


def get(url: str, host: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def kernels(proc) -> list[psutil.Process]:
    return [p for p in psutil.Process(proc.pid).children(recursive=True) if "ipykernel_launcher" in " ".join(p.cmdline())]


def wait_until(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_idle_chats_are_culled_the_cap_says_busy_and_ctrl_c_stops_everything(chat_artifacts, catalogue_source,
                                                                              tmp_path):
    options = ("--idle=6", "--cull-interval=1", "--max-chats=2", "--pool=1")
    with serve_demo(chat_artifacts, catalogue_source, tmp_path / "demo.log", options=options) as (url, proc):
        wait_until(lambda: len(kernels(proc)) == 1, 90, "the pool's kernel")
        status, page = get(url, host="evil.example")
        assert status == 403  # DNS rebinding: the page answers this machine's names only
        for _ in range(2):  # two visitors without JavaScript: each takes a kernel that nobody closes
            status, page = get(url)
            assert status == 200 and "shopbot" in page.lower()
        status, page = get(url)
        assert status == 503 and page == BUSY_PAGE  # the third waits for a minute
        api = [p for p in psutil.Process(proc.pid).children() if "serve" in p.cmdline()]
        assert len(api) == 1
        wait_until(lambda: len(kernels(proc)) >= 3, 60, "the pool refilled")
        rss = {p.pid: p.memory_info().rss for p in kernels(proc)}
        assert max(rss.values()) < api[0].memory_info().rss / 4  # the models are in the API, not in the chats
        # Idle past the timeout: the two visitors' kernels are culled, the pre-started one is kept.
        wait_until(lambda: len(kernels(proc)) == 1, 60, "the idle kernels to be culled")
        assert get(url)[0] == 200  # room again
        children = psutil.Process(proc.pid).children(recursive=True)
    # Ctrl-C: the page, the API and every kernel are gone.
    assert proc.returncode is not None
    gone, alive = psutil.wait_procs(children, timeout=20)
    assert not alive, [p.cmdline() for p in alive]
    assert "Culling" in (tmp_path / "demo.log").read_text()


def test_a_network_bind_needs_a_token_and_names():
    check_network("127.0.0.1", None, False, [])
    with pytest.raises(ValueError, match="--token"):
        check_network("0.0.0.0", None, False, ["shop.example"])
    with pytest.raises(ValueError, match="--allowed-host"):
        check_network("0.0.0.0", "t", False, [])
    check_network("0.0.0.0", None, True, ["shop.example"])
    argv = voila_argv(port=9, idle_s=60, pool=0, max_chats=5, token="t")
    assert "--MappingKernelManager.cull_idle_timeout=60" in argv and "--token=t" in argv
    assert not any(a.startswith("--preheat") for a in argv)


def test_a_pool_kernel_still_starting_is_not_taken_from_the_visitors():
    """Two visitors' kernels and the pool refilling after the second visit: its kernel is still starting
    (only in the manager's pending kernels), so the cap of 2 is reached, not 1 chat short of it."""
    class Manager:
        _pools = {"chat.ipynb": ["the refill task"]}
        _pending_kernels = {"k3": "starting"}

        def list_kernel_ids(self):
            return ["k1", "k2"]

    assert chats_in_use(Manager()) == 2
    Manager._pending_kernels = {}
    Manager.list_kernel_ids = lambda self: ["k1", "k2", "k3"]  # the refill has started: the same count
    assert chats_in_use(Manager()) == 2
