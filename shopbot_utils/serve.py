"""The HTTP API: one process holds the models and answers every shopper (``python -m shopbot_utils serve``).

``create_app(bot)`` is a FastAPI app over one ``ShopBot``: ``/ask``, ``/search``, ``/similar`` (a
multipart photo; background removal auto, on or off as the chat's switch), ``/refine``,
``/products/{id}`` and its ``/similar`` ("more like this"), ``/thumbnail`` and ``/image``,
``/products?ids=`` (the listings a card collapsed), ``/products.csv``, ``/cutout`` and ``/health``;
OpenAPI docs at ``/docs``. It is what the chat's kernels call (``client.ShopBotClient``) and what a
shop's own site calls.

Safe by default: bad input gets a JSON error with the chat's own words (``{"error": ...}``); a body
over its limit is refused from its ``Content-Length`` before it is read (and counted when it has
none); a ``Host`` header that is not this machine's gets 403 (DNS rebinding); with a ``token`` every
call but ``/health`` needs ``Authorization: Bearer <token>``; at most ``concurrency`` model calls run
at once and ``queue`` wait, the next get 503 "busy" with ``Retry-After``.

Stateless: a request carries everything its answer needs (the chat's context lives in the chat),
so N replicas behind any load balancer answer alike (``docs/serving.md``).
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import io
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

from fastapi import FastAPI, File, Form, UploadFile
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from . import __version__
from .chat import (CHAT_ISNET_SIZE, MAX_MESSAGE_CHARS, MAX_UPLOAD_BYTES, Thumbnails, decode_upload,
                   text_problem, upload_too_large)
from .config import logger

#: What binds by default, and the names a browser on this machine uses for it (the Host check).
LOCAL_HOST = "127.0.0.1"
LOCAL_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
DEFAULT_PORT = 8765
#: A JSON request (a message, its parsed query) is small; a photo request is one upload and a few fields.
MAX_JSON_BYTES = 64 * 1024
MAX_PHOTO_REQUEST_BYTES = MAX_UPLOAD_BYTES + MAX_JSON_BYTES
PHOTO_PATHS = ("/similar", "/refine", "/cutout")
#: Model calls at once (the CPU's cores do the work) and how many more may wait before "busy".
CONCURRENCY = 2
QUEUE = 32
RETRY_AFTER_S = 60
BUSY = "ShopBot is busy right now: please try again in a minute."
#: Products an answer may hold (the chat shows up to 48).
MAX_K = 100


class Refusal(HTTPException):
    """An answer that is an error: HTTP ``status`` and the message the shopper (or the shop) reads.
    (An ``HTTPException``, so that FastAPI passes one raised while it reads a body through.)"""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(status, message, headers)
        self.status, self.message = status, message


def error_response(status: int, message: str, headers: dict | None = None):
    """``{"error": message}`` with ``status``."""
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def too_large_message(size: int, limit: int, photo: bool) -> str:
    """The chat's words for a photo over the limit; for any other body, its size and the limit."""
    if photo:
        return upload_too_large(size)
    return f"That request is {size:,} bytes; this endpoint takes up to {limit:,}."


# ---------------------------------------------------------------------------------------- ASGI guards
def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def host_name(host_header: str) -> str:
    """The name in a ``Host`` header, without its port (``[::1]:80`` -> ``::1``), lower case."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    """Pure-ASGI gate in front of the API: the Host check (403), the token (401) and the body limits
    (413, from ``Content-Length`` before a byte of the body is read, else counted as it arrives)."""

    def __init__(self, app, allowed_hosts=LOCAL_NAMES, token: str | None = None):
        self.app = app
        self.allowed = {host_name(h) for h in allowed_hosts}
        self.any_host = "*" in allowed_hosts
        self.token = token or None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = _headers(scope)
        host = host_name(headers.get("host", ""))
        if not self.any_host and host not in self.allowed:
            return await _reply(scope, receive, send, error_response(
                403, f"Host {host or '(none)'!r} is not served here (allowed: {', '.join(sorted(self.allowed))})."))
        path = scope.get("path", "")
        if self.token and path != "/health":
            given = headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                return await _reply(scope, receive, send, error_response(
                    401, "This ShopBot API needs a token: send 'Authorization: Bearer <token>'.",
                    {"WWW-Authenticate": "Bearer"}))
        photo = path in PHOTO_PATHS
        limit = MAX_PHOTO_REQUEST_BYTES if photo else MAX_JSON_BYTES
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await _reply(scope, receive, send,
                                error_response(413, too_large_message(int(length), limit, photo), {"Connection": "close"}))
        if length is not None and not length.isdigit():
            return await _reply(scope, receive, send, error_response(400, "Content-Length must be a whole number."))
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise Refusal(413, too_large_message(seen, limit, photo), {"Connection": "close"})
            return message

        return await self.app(scope, counted, send)


async def _reply(scope, receive, send, response):
    await response(scope, receive, send)


# ---------------------------------------------------------------------------------------- the busy gate
class Gate:
    """At most ``concurrency`` model calls at once, ``queue`` more waiting; past that ``Refusal(503)``."""

    def __init__(self, concurrency: int = CONCURRENCY, queue: int = QUEUE):
        if concurrency < 1 or queue < 0:
            raise ValueError(f"concurrency must be >= 1 and queue >= 0, got {concurrency}, {queue}")
        self.concurrency, self.queue = concurrency, queue
        self.running = self.waiting = 0
        self._semaphore: asyncio.Semaphore | None = None

    async def run(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` in a worker thread once a slot is free (the event loop keeps serving meanwhile)."""
        from starlette.concurrency import run_in_threadpool

        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.concurrency)
        if self.running >= self.concurrency and self.waiting >= self.queue:
            raise Refusal(503, BUSY, {"Retry-After": str(RETRY_AFTER_S)})
        self.waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            return await run_in_threadpool(fn)
        finally:
            self.running -= 1
            self._semaphore.release()


# ---------------------------------------------------------------------------------------- JSON shapes
def product_json(product) -> dict:
    """A ``Product`` as JSON (its fields)."""
    return product.as_dict()


def query_json(query) -> dict | None:
    return None if query is None else {"text": query.text, "include": query.include, "exclude": query.exclude}


def results_json(found) -> dict:
    """``Results`` (or a plain list of products) as JSON."""
    return {"products": [product_json(p) for p in found], "understood": getattr(found, "understood", {}),
            "relaxed": getattr(found, "relaxed", []), "message": getattr(found, "message", ""),
            "query": query_json(getattr(found, "query", None)), "reply": getattr(found, "reply", ""),
            "ignored": getattr(found, "ignored", {})}


def parse_query_json(value: Any):
    """A ``Query`` from ``{"text", "include", "exclude"}`` (None passes through); ValueError when malformed."""
    from .search import FIELDS, Query

    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"query is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError("query must be an object {text, include, exclude}")
    parts = {}
    for name in ("include", "exclude"):
        part = value.get(name) or {}
        if not isinstance(part, dict) or any(k not in FIELDS for k in part) or not all(
                isinstance(v, list) and all(isinstance(x, str) for x in v) for v in part.values()):
            raise ValueError(f"query.{name} must map fields {list(FIELDS)} to lists of values")
        parts[name] = {k: list(v) for k, v in part.items()}
    return Query(str(value.get("text", ""))[:MAX_MESSAGE_CHARS], parts["include"], parts["exclude"])


# ---------------------------------------------------------------------------------------- the app
class AskBody(BaseModel):
    """``POST /ask``."""

    text: str = Field(description="The shopper's message", max_length=100_000)
    k: int = Field(5, description="Products listed for a product search")
    search: bool = Field(True, description="False: no products (for a caller that searches itself)")


class SearchBody(BaseModel):
    """``POST /search``."""

    text: str = Field(description="The shopper's words", max_length=100_000)
    k: int = Field(8, description="How many products")
    query: dict | None = Field(None, description="Constraints to use instead of parsing text: "
                               "{text, include: {field: [values]}, exclude: {...}}")


@dataclass
class Settings:
    """How ``serve`` runs: where it listens, which ``Host`` names it answers, its token, its gate."""

    host: str = LOCAL_HOST
    port: int = DEFAULT_PORT
    allowed_hosts: tuple[str, ...] = LOCAL_NAMES
    token: str | None = None
    behind_proxy: bool = False
    concurrency: int = CONCURRENCY
    queue: int = QUEUE
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        """Refuse a network bind without a token or a reverse proxy that authenticates (ValueError)."""
        if self.host in ("127.0.0.1", "localhost", "::1"):
            return
        if not (self.token or self.behind_proxy):
            raise ValueError(f"serving on {self.host} opens ShopBot to the network: give a token (--token or "
                             "SHOPBOT_API_TOKEN) or put it behind a reverse proxy that authenticates (--behind-proxy)")
        if {host_name(h) for h in self.allowed_hosts} <= {host_name(h) for h in LOCAL_NAMES}:
            raise ValueError("serving to the network needs the name clients reach it by: --allowed-host NAME "
                             "(the Host check refuses every other name)")


@functools.lru_cache(maxsize=1)
def _cutout_backend():
    """The chat's background remover: ISNet at ``CHAT_ISNET_SIZE`` (GrabCut without its model), one per process."""
    from .background import best_backend

    return best_backend(size=CHAT_ISNET_SIZE)


#: What the ``remove_background`` field takes besides a backend's name: the chat's switch (``chat.SWITCH``).
REMOVE_BACKGROUND = ("auto", "on", "off")
REMOVE_HELP = ("auto (default): cut the product out unless the photo already looks like a catalogue photo; "
               "on: always; off: never (the chat's switch)")


def _remove_background_option(value: str | None):
    """The ``remove_background`` form field -> what ``ShopBot.similar`` takes: ``auto`` (the default: cut out
    only a photo that is not a packshot, ``background.AutoBackend``), ``on`` (always) or ``off`` (never),
    as the chat's switch, with the chat's remover; true/false for on/off; or a backend's name."""
    from .background import BACKENDS, AutoBackend

    text = (value or "auto").strip().lower()
    if text in ("0", "false", "no", "off", "none"):
        return False
    if text == "auto":
        return AutoBackend(_cutout_backend())
    if text in ("1", "true", "yes", "on"):
        return _cutout_backend()
    if text in BACKENDS:
        return text
    raise ValueError(f"remove_background must be one of {list(REMOVE_BACKGROUND)} (or true, false, a backend "
                     f"among {list(BACKENDS)}), got {value!r}")


def create_app(bot, catalogue=None, settings: Settings | None = None, example_id: int | None = None):
    """The API over ``bot`` (a loaded ``ShopBot``), wrapped in its ``Guard``; ``catalogue``: product
    images for thumbnails and ``/image`` (default: found like the chat finds it)."""
    from .chat import _example_id, _find_catalogue

    settings = settings or Settings()
    catalogue = catalogue if catalogue is not None else _find_catalogue()
    thumbnails = Thumbnails(catalogue.image_path if catalogue is not None else None,
                            (bot.folder / "thumbnails") if bot.folder is not None else None)
    example = example_id if example_id is not None else _example_id(bot)
    gate = Gate(settings.concurrency, settings.queue)
    started = time.time()
    csv_cache: dict[str, bytes] = {}
    csv_lock = threading.Lock()

    app = FastAPI(title="ShopBot API", version=__version__, description=(
        "ShopBot's answers over HTTP: questions, text search, photo search, refinements, products and "
        "their thumbnails. Errors are JSON `{\"error\": message}` with the chat's own words."))

    @app.exception_handler(Refusal)
    async def _api_error(request, exc: Refusal):
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request, exc: HTTPException):  # unknown paths, wrong methods, unreadable bodies
        return error_response(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return error_response(422, f"{where or 'request'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(Exception)
    async def _failed(request, exc: Exception):  # the log has the traceback; the caller the chat's apology
        logger.exception("the API failed to answer %s", request.url.path)
        return error_response(500, f"Sorry, something went wrong on my side ({type(exc).__name__}). Please try again.")

    async def model(fn: Callable[[], Any]) -> Any:
        """Run a model call through the gate; the bot's ValueErrors are the caller's 400."""
        from .data import ImageError

        def call():
            try:
                return fn()
            except (ImageError, ValueError, KeyError) as exc:
                message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
                raise Refusal(400, f"Sorry, I could not do that: {message}") from None
        return await gate.run(call)

    def check_text(text: str, allow_empty: bool = False) -> str:
        problem = text_problem(text, has_photo=allow_empty)
        if problem:
            raise Refusal(400, problem)
        return text

    def check_k(k: int) -> int:
        if not 1 <= k <= MAX_K:
            raise Refusal(400, f"k must be between 1 and {MAX_K}, got {k}")
        return k

    def known(product_id: int) -> int:
        if bot.products is None or product_id not in bot.products.index:
            raise Refusal(404, f"There is no product {product_id} in the catalogue any more.")
        return product_id

    async def read_photo(photo: UploadFile):
        data = await photo.read(MAX_UPLOAD_BYTES + 1)
        image, problem = decode_upload(data)
        if problem:
            raise Refusal(413 if len(data) > MAX_UPLOAD_BYTES else 400, problem)
        return image

    @app.get("/health", summary="Liveness and what this replica serves")
    async def health():
        return {"status": "ok", "version": __version__, "products": 0 if bot.products is None else len(bot.products),
                "index": getattr(bot.index, "kind", None), "example_id": example,
                "uptime_s": round(time.time() - started, 1),
                "limits": {"message_chars": MAX_MESSAGE_CHARS, "upload_bytes": MAX_UPLOAD_BYTES, "max_k": MAX_K},
                "load": {"running": gate.running, "waiting": gate.waiting, "concurrency": gate.concurrency,
                         "queue": gate.queue}}

    @app.post("/ask", summary="Answer a shopper's message: intent, confidence, text (and products)")
    async def ask(body: AskBody):
        text = check_text(body.text)
        k = check_k(body.k)
        reply = await model(lambda: bot.ask(text, k=k, search=body.search))
        out = asdict(reply)
        out["products"] = [product_json(p) for p in reply.products]
        return out

    @app.post("/search", summary="Catalogue products for a shopper's words")
    async def search(body: SearchBody):
        text = check_text(body.text, allow_empty=body.query is not None)
        k = check_k(body.k)
        try:
            query = parse_query_json(body.query)
        except ValueError as exc:
            raise Refusal(400, str(exc)) from None
        return results_json(await model(lambda: bot.search(text, k, query=query)))

    def photo_options(k: int, remove_background: str, query_json: str):
        """(the background switch, the parsed query) of a photo call, or a 400 saying what was wrong."""
        check_k(k)
        try:
            return _remove_background_option(remove_background), parse_query_json(query_json)
        except ValueError as exc:
            raise Refusal(400, str(exc)) from None

    @app.post("/similar", summary="Products that look like a photo (multipart)")
    async def similar(photo: UploadFile = File(description="JPEG, PNG, WebP... up to 20 MB"),
                      k: int = Form(8), remove_background: str = Form("auto", description=REMOVE_HELP),
                      where: str = Form("")):
        remove, constraint = photo_options(k, remove_background, where)
        image = await read_photo(photo)
        return {"products": [product_json(p) for p in await model(
            lambda: bot.similar(image, k, remove_background=remove, where=constraint))]}

    @app.post("/refine", summary="Like this photo or product, but with what the text asks for (multipart)")
    async def refine(text: str = Form(""), photo: UploadFile | None = File(None), product_id: int | None = Form(None),
                     k: int = Form(8), remove_background: str = Form("auto", description=REMOVE_HELP),
                     query: str = Form("")):
        remove, parsed = photo_options(k, remove_background, query)
        check_text(text, allow_empty=parsed is not None)
        if (photo is None) == (product_id is None):
            raise Refusal(400, "Send either a photo or a product_id to refine.")
        anchor = known(product_id) if product_id is not None else await read_photo(photo)
        return results_json(await model(lambda: bot.refine(anchor, text, k, remove_background=remove, query=parsed)))

    @app.post("/cutout", summary="The photo's background-removal mask at the photo's size: PNG (8-bit), "
                                 "or with format=npy the float32 mask as NumPy's .npy (what the chat's cut-out uses)")
    async def cutout(photo: UploadFile = File(description="JPEG, PNG, WebP... up to 20 MB"), format: str = "png"):
        import numpy as np
        from PIL import Image

        if format not in ("png", "npy"):
            raise Refusal(400, f"format must be png or npy, got {format[:40]!r}")
        image = await read_photo(photo)
        backend = _cutout_backend()
        mask = await model(lambda: backend.mask(image))
        buffer = io.BytesIO()
        if format == "npy":
            np.save(buffer, np.asarray(mask, np.float32), allow_pickle=False)
        else:
            Image.fromarray((mask.clip(0, 1) * 255).round().astype("uint8"), "L").save(buffer, "PNG")
        return Response(buffer.getvalue(), media_type="application/x-npy" if format == "npy" else "image/png",
                        headers={"X-Background-Backend": backend.name})

    @app.get("/products", summary="Products by id (ids=1,2,3), in that order: e.g. the listings a card "
                                  "collapsed (its duplicate_ids)")
    async def lookup(ids: str = ""):
        try:
            wanted = [int(i) for i in ids.split(",") if i.strip()]
        except ValueError:
            raise Refusal(400, "ids must be product ids separated by commas") from None
        if not wanted or len(wanted) > MAX_K:
            raise Refusal(400, f"ids must name 1 to {MAX_K} products")
        for product_id in wanted:
            known(product_id)
        return {"products": [product_json(p) for p in await model(lambda: bot.lookup(wanted))]}

    @app.get("/products.csv", summary="Every product's facts as CSV (for a client's names and chips)")
    async def products_csv():
        with csv_lock:
            if "csv" not in csv_cache:
                from .bot import PRODUCT_COLUMNS

                csv_cache["csv"] = bot.products[PRODUCT_COLUMNS].to_csv(index=False).encode()
        return Response(csv_cache["csv"], media_type="text/csv")

    @app.get("/products/{product_id}", summary="One product's facts")
    async def product(product_id: int):
        from .bot import _products

        known(product_id)
        return product_json(_products(bot.products.loc[[product_id]], [0.0])[0])

    @app.get("/products/{product_id}/similar", summary="More like this: products that look like this one")
    async def more_like_this(product_id: int, k: int = 8):
        check_k(k)
        known(product_id)
        return {"products": [product_json(p) for p in await model(lambda: bot.similar(product_id, k))]}

    @app.get("/products/{product_id}/thumbnail", summary="The product's thumbnail (JPEG, 160 px)")
    async def thumbnail(product_id: int):
        from starlette.concurrency import run_in_threadpool

        known(product_id)
        data = await run_in_threadpool(thumbnails, product_id)
        if data is None:
            raise Refusal(404, f"There is no picture of product {product_id}.")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/products/{product_id}/image", summary="The product's catalogue photo")
    async def image(product_id: int):
        known(product_id)
        try:
            data = catalogue.image_path(product_id).read_bytes() if catalogue is not None else None
        except (KeyError, OSError):
            data = None
        if not data:
            raise Refusal(404, f"There is no picture of product {product_id}.")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400"})

    app.state.gate, app.state.bot, app.state.thumbnails = gate, bot, thumbnails
    guarded = Guard(app, settings.allowed_hosts, settings.token)
    guarded.api = app
    return guarded


@contextlib.contextmanager
def running(app, host: str = LOCAL_HOST, port: int = 0, timeout_s: float = 30.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread of this process (tests, benchmarks); yields its URL."""
    import socket

    import uvicorn

    if port == 0:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="shopbot-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the API did not start on {host}:{port}")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)


def warm_up(bot) -> float:
    """Load every model a first request would wait for; seconds."""
    from PIL import Image

    start = time.perf_counter()
    bot.ask("hello")
    bot.search("shoes", 1)
    if bot.model is not None:
        bot.similar(Image.new("RGB", (64, 64), "white"), 1)
    try:
        _cutout_backend()
    except Exception as exc:  # noqa: BLE001 - no background model only costs cut-outs
        logger.warning("background removal is not ready: %s", exc)
    return time.perf_counter() - start


def serve(artifacts=None, settings: Settings | None = None, log_level: str = "info") -> None:
    """Load the bot once, warm it up and serve the API with uvicorn until Ctrl-C."""
    import uvicorn

    from .bot import ShopBot

    settings = settings or Settings()
    settings.check()
    bot = ShopBot.load(artifacts)
    logger.info("models warmed up in %.1f s", warm_up(bot))
    app = create_app(bot, settings=settings)
    where = f"http://{settings.host}:{settings.port}"
    logger.info("ShopBot API on %s (docs at %s/docs)", where, where)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level,
                proxy_headers=settings.behind_proxy, forwarded_allow_ips="127.0.0.1" if settings.behind_proxy else None,
                timeout_keep_alive=30, limit_concurrency=settings.extra.get("limit_concurrency", 512))
