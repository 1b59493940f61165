"""``make demo`` (``python -m shopbot_utils.demo``): the API and the chat page (Voilà over ``app/chat.ipynb``) in
one command, local and bounded. This process imports no model (the API does, once); neither do the chats' kernels.

``run`` starts ``serve`` (the one process that loads the models), waits for it, then serves the chat
page with Voilà, and stops both on Ctrl-C. Voilà runs here with what the default leaves open closed:

- kernels are pre-started and the page pre-rendered (``pool``), so a visit does not wait for one;
- a kernel idle for ``idle_s`` is culled, even with its page open (the page says so) or never opened
  (a plain GET), and its conversation with it; pre-started kernels waiting in the pool are kept;
- at most ``max_chats`` chats at once: the next visitor gets "busy, try again in a minute" (503);
- the ``Host`` check is on (jupyter_server's: 403 for a name that is not this machine's) and a
  websocket message may be ``WEBSOCKET_MAX_BYTES``, above the upload limit, so that every too-large
  upload reaches the chat and gets its message;
- 127.0.0.1 only, unless ``host`` is given with a ``token`` (or ``behind_proxy``) and ``allowed_hosts``.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from . import config
from .chat import MAX_UPLOAD_BYTES
from .config import logger

APP_NOTEBOOK = config.ROOT / "app" / "chat.ipynb"
DEFAULT_PORT = 8866
#: Seconds without a message before a chat's kernel is culled, and how often that is checked.
IDLE_S = 600
CULL_INTERVAL_S = 30
#: Chats at once (a kernel each, about 120 MB; the models are in the API, once).
MAX_CHATS = 24
#: Kernels pre-started with the page rendered in them.
POOL = 2
WEBSOCKET_MAX_BYTES = MAX_UPLOAD_BYTES + 8 * 2**20
BUSY_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>ShopBot is busy</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><meta http-equiv="refresh" content="60">
<style>body{font:16px system-ui,sans-serif;display:flex;min-height:90vh;align-items:center;justify-content:center;
text-align:center;padding:24px}</style></head><body><div><h1>ShopBot is busy</h1>
<p>Every chat is taken right now: please try again in a minute (this page retries by itself).</p></div></body></html>"""


@lru_cache(maxsize=1)
def _voila_classes():
    """The Voilà and kernel-manager subclasses (imported only by the serving process, never by a kernel)."""
    from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
    from traitlets import Int
    from voila.app import Voila
    from voila.tornado.handler import TornadoVoilaHandler

    class ChatKernelManager(AsyncMappingKernelManager):
        """Culls idle chats but never a pre-started kernel waiting in Voilà's pool."""

        async def cull_kernel_if_idle(self, kernel_id):
            if kernel_id in pooled_kernels(self):
                return
            return await super().cull_kernel_if_idle(kernel_id)

    class CappedVoilaHandler(TornadoVoilaHandler):
        """The page, unless ``max_chats`` chats are open: then "busy, try again in a minute" (503)."""

        async def get(self, path=None):
            cap = self.settings.get("shopbot_max_chats", 0)
            if cap and chats_in_use(self.kernel_manager) >= cap:
                self.set_status(503)
                self.set_header("Retry-After", "60")
                self.set_header("Cache-Control", "no-store")
                self.finish(BUSY_PAGE)
                return
            return await super().get(path)

    class ShopBotVoila(Voila):
        """Voilà with the chat page's settings: the cap, the Host check, the websocket limit."""

        max_chats = Int(MAX_CHATS, config=True, help="chats at once; the next visitor is told to come back")
        public_names = Int(0, config=True, help="1: answer any Host name (behind a proxy that checks it)")

        def init_settings(self):
            settings = super().init_settings()
            names = config.demo_hosts()
            settings.update(shopbot_max_chats=self.max_chats, websocket_max_message_size=WEBSOCKET_MAX_BYTES,
                            allow_remote_access=bool(self.public_names),
                            local_hostnames=["localhost", *names])
            return settings

        def init_handlers(self):
            return [(h[0], CappedVoilaHandler, *h[2:]) if len(h) > 1 and h[1] is TornadoVoilaHandler else h
                    for h in super().init_handlers()]

    return ShopBotVoila, ChatKernelManager


def pooled_kernels(manager) -> set[str]:
    """Ids of the pre-started kernels still waiting in Voilà's pool."""
    ids = set()
    for pool in getattr(manager, "_pools", {}).values():
        for task in pool:
            if task.done() and not task.cancelled() and task.exception() is None:
                ids.add(task.result().get("kernel_id"))
    return ids


def chats_in_use(manager) -> int:
    """Kernels serving a visitor: all of them, started or starting, but the pool's (each pool slot holds
    one). A kernel still starting is only in the manager's pending kernels: without them, a pool slot
    refilling after a visit would be subtracted from the visitors' kernels and let one more in."""
    slots = sum(len(pool) for pool in getattr(manager, "_pools", {}).values())
    kernels = set(manager.list_kernel_ids()) | set(getattr(manager, "_pending_kernels", {}))
    return max(0, len(kernels) - slots)


def __getattr__(name: str):
    """``ChatKernelManager`` by import string (Voilà's ``multi_kernel_manager_class``)."""
    if name in ("ChatKernelManager", "ShopBotVoila"):
        voila, manager = _voila_classes()
        globals().update(ShopBotVoila=voila, ChatKernelManager=manager)
        return globals()[name]
    raise AttributeError(f"module 'shopbot_utils.demo' has no attribute {name!r}")


def voila_argv(port: int = DEFAULT_PORT, host: str = "127.0.0.1", idle_s: float = IDLE_S, pool: int = POOL,
               max_chats: int = MAX_CHATS, token: str | None = None, any_host: bool = False,
               cull_interval_s: float = CULL_INTERVAL_S, notebook: Path = APP_NOTEBOOK) -> list[str]:
    """Voilà's command line for the chat page."""
    argv = [str(notebook), "--no-browser", f"--port={port}", f"--Voila.ip={host}", "--Voila.port_retries=0",
            f"--ShopBotVoila.max_chats={max_chats}", f"--ShopBotVoila.public_names={int(any_host)}",
            "--VoilaConfiguration.multi_kernel_manager_class=shopbot_utils.demo.ChatKernelManager",
            f"--MappingKernelManager.cull_idle_timeout={int(idle_s)}",
            f"--MappingKernelManager.cull_interval={max(1, int(cull_interval_s))}",
            "--MappingKernelManager.cull_connected=True", "--VoilaConfiguration.show_tracebacks=False"]
    if pool > 0:
        argv += ["--preheat_kernel=True", f"--pool_size={pool}", "--VoilaKernelManager.fill_delay=0"]
    if token:
        argv.append(f"--token={token}")
    return argv


def check_network(host: str, token: str | None, behind_proxy: bool, allowed_hosts: list[str]) -> None:
    """Refuse to serve a network without a token (or a proxy that authenticates) and the names it answers."""
    if host in ("127.0.0.1", "localhost", "::1"):
        return
    if not (token or behind_proxy):
        raise ValueError(f"serving the chat on {host} opens it to the network: give --token (or SHOPBOT_DEMO_TOKEN) "
                         "or put it behind a reverse proxy that authenticates (--behind-proxy)")
    if not allowed_hosts:
        raise ValueError("serving to the network needs the names visitors use: --allowed-host NAME ('*': any)")


def run(artifacts: str | Path | None = None, port: int = DEFAULT_PORT, api_port: int = 8765,
        host: str = "127.0.0.1", token: str | None = None, allowed_hosts: list[str] | None = None,
        behind_proxy: bool = False, idle_s: float = IDLE_S, max_chats: int = MAX_CHATS, pool: int = POOL,
        cull_interval_s: float = CULL_INTERVAL_S, api_url: str | None = None) -> int:
    """Start the API (unless ``api_url`` names a running one), wait for its models, serve the chat page
    until Ctrl-C, then stop both."""
    from .client import ShopBotClient

    allowed_hosts = list(allowed_hosts or [])
    check_network(host, token, behind_proxy, allowed_hosts)
    api = None
    if api_url is None:
        api_url = f"http://127.0.0.1:{api_port}"
        command = [sys.executable, "-m", "shopbot_utils"] + (["--artifacts", str(artifacts)] if artifacts else [])
        api = subprocess.Popen(command + ["serve", "--port", str(api_port)])
    try:
        logger.info("waiting for the API at %s (it loads the models first) ...", api_url)
        ShopBotClient(api_url).wait(timeout_s=600)
        # What the chat's kernels (children of this process) read through config.
        os.environ.update({"SHOPBOT_API_URL": api_url, "SHOPBOT_CHAT_IDLE_S": str(int(idle_s)),
                           "SHOPBOT_DEMO_HOSTS": ",".join(h for h in allowed_hosts if h != "*")})
        if artifacts:
            os.environ["SHOPBOT_ARTIFACTS"] = str(Path(artifacts).resolve())
        shown = host if host not in ("0.0.0.0", "::") else "127.0.0.1"
        print(f"ShopBot chat: open http://{shown}:{port}/ in a browser (API docs: {api_url}/docs). Ctrl-C stops both.",
              flush=True)
        voila, _ = _voila_classes()
        voila.launch_instance(voila_argv(port, host, idle_s, pool, max_chats, token, "*" in allowed_hosts,
                                         cull_interval_s))
        return 0
    finally:
        if api is not None:
            api.terminate()
            try:
                api.wait(20)
            except subprocess.TimeoutExpired:
                api.kill()


def main(argv: list[str] | None = None) -> int:
    """``python -m shopbot_utils.demo``: see ``run``."""
    p = argparse.ArgumentParser(prog="python -m shopbot_utils.demo",
                                description="The API and the chat page together (make demo); Ctrl-C stops both.")
    p.add_argument("--artifacts", default=None, help="artifacts folder (default: SHOPBOT_ARTIFACTS or ./artifacts)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"the chat page's port (default {DEFAULT_PORT})")
    p.add_argument("--api-port", type=int, default=8765, help="the API's port, on 127.0.0.1 (default 8765)")
    p.add_argument("--api-url", default=None, help="use the API running there instead of starting one "
                   "(its token: SHOPBOT_API_TOKEN)")
    p.add_argument("--host", default="127.0.0.1", help="address the page binds (default 127.0.0.1: this machine only)")
    p.add_argument("--token", default=None, help="the page's token (default SHOPBOT_DEMO_TOKEN); needed beyond "
                   "this machine unless --behind-proxy")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a Host name the page answers besides localhost (repeat; '*' for any)")
    p.add_argument("--behind-proxy", action="store_true", help="a reverse proxy in front authenticates visitors")
    p.add_argument("--idle", type=float, default=IDLE_S, help=f"seconds before an idle chat is closed (default {IDLE_S})")
    p.add_argument("--max-chats", type=int, default=MAX_CHATS,
                   help=f"chats at once; the next visitor is told to come back (default {MAX_CHATS})")
    p.add_argument("--pool", type=int, default=POOL, help=f"kernels pre-started with the page rendered (default {POOL})")
    p.add_argument("--cull-interval", type=float, default=CULL_INTERVAL_S, help=argparse.SUPPRESS)  # tests
    args = p.parse_args(argv)
    config.setup_logging()
    # Ctrl-C stops it even when started where SIGINT is ignored (a shell's background job passes that on)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return run(args.artifacts, args.port, args.api_port, args.host, args.token or config.demo_token(),
                   args.allowed_host, args.behind_proxy, args.idle, args.max_chats, args.pool, args.cull_interval,
                   args.api_url)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
