"""``ShopBotClient``: the HTTP API (``serve``) with ``ShopBot``'s methods, for a chat that loads no model.

A ``Conversation`` over a client works as over a ``ShopBot``: the chat's kernel holds the
conversation and the widgets (about what ipywidgets costs), the API process holds the models. Only
the standard library talks HTTP here (one kept-alive connection), and nothing imports torch.

>>> client = ShopBotClient("http://127.0.0.1:8765")                   # doctest: +SKIP
>>> chat = Conversation(client, **client.conversation_kwargs())         # doctest: +SKIP
"""
from __future__ import annotations

import http.client
import io
import json
import sys
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from . import config
from .artifacts import write_atomic
from .search import Query

#: Seconds a call waits for the API (a photo turn on a busy 2-core machine takes a few).
TIMEOUT_S = 60.0
#: Thumbnails kept per client (5 KB each).
THUMBNAIL_CACHE = 512
#: A photo is sent to the API no larger than this (ISNet works at 512 px, the CNN at 224).
SEND_PX = 1024
UNREACHABLE = "ShopBot's server cannot be reached right now: please try again in a minute."


class ApiError(ValueError):
    """The API answered with an error; ``str()`` is its message (the chat's words), ``status`` its HTTP code.
    A ``ValueError``, so that a ``Conversation`` shows it to the shopper as it shows its own checks."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class RemoteProduct(SimpleNamespace):
    """A product as the API sent it: the attributes of ``bot.Product`` (whatever fields the server has;
    ``duplicate_ids`` a tuple, as there)."""

    def __init__(self, **fields):
        if isinstance(fields.get("duplicate_ids"), list):
            fields["duplicate_ids"] = tuple(fields["duplicate_ids"])
        super().__init__(**fields)

    def as_dict(self) -> dict:
        return dict(vars(self))


class RemoteResults(list):
    """``bot.Results`` as the API sent them: products plus ``understood``, ``relaxed``, ``message``,
    ``query`` (a ``Query``), ``reply``, ``ignored`` and any other field the server adds."""

    def __init__(self, payload: dict):
        super().__init__(RemoteProduct(**p) for p in payload.get("products", []))
        for key, value in payload.items():
            if key != "products":
                setattr(self, key, value)
        self.understood = payload.get("understood") or {}
        self.relaxed = payload.get("relaxed") or []
        self.message = payload.get("message") or ""
        self.reply = payload.get("reply") or self.message
        self.ignored = payload.get("ignored") or {}
        q = payload.get("query")
        self.query = Query(q.get("text", ""), q.get("include") or {}, q.get("exclude") or {}) if q else None


class RemoteCatalogue:
    """What a ``Conversation`` asks of a catalogue (``image_path``), served by the API: the photo is
    fetched once into a temporary folder (the example photo chip reads it)."""

    def __init__(self, client: "ShopBotClient"):
        self.client = client
        self._folder = tempfile.TemporaryDirectory(prefix="shopbot-client-")

    def image_path(self, product_id: int) -> Path:
        path = Path(self._folder.name) / f"{int(product_id)}.jpg"
        if not path.is_file():
            write_atomic(path, self.client._call("GET", f"/products/{int(product_id)}/image", raw=True))
        return path


class RemoteBackground:
    """A background-removal backend (``background.Backend``) that asks the API for the mask: the chat
    cuts out with the server's ISNet and loads no model itself. ``name`` is the server's remover once
    it has answered (a cut-out's note names it, as in-process)."""

    name = "api"

    def __init__(self, client: "ShopBotClient"):
        self.client = client

    def mask(self, image: Image.Image) -> np.ndarray:
        """Foreground alpha (H, W) in 0..1, as the server's remover computes it: the photo goes losslessly,
        at most ``SEND_PX`` wide (the mask of a larger one comes back scaled)."""
        small = _reduced(image)
        data, headers = self.client._call("POST", "/cutout?format=npy", files={"photo": _upload(small)}, raw=True,
                                          with_headers=True)
        self.name = headers.get("x-background-backend") or self.name
        mask = np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32)
        if mask.shape != (image.height, image.width):
            scaled = Image.fromarray(mask, "F").resize(image.size, Image.BILINEAR)
            mask = np.asarray(scaled, np.float32).clip(0, 1)
        return mask


class ShopBotClient:
    """The API at ``url`` (default ``SHOPBOT_API_URL``) with ``ShopBot``'s methods: ``ask``, ``search``,
    ``similar``, ``refine``, ``products``, ``folder``; plus ``product``, ``thumbnail``, ``health``.
    ``token``: the API's bearer token, when it has one (default ``SHOPBOT_API_TOKEN``). Errors the API
    answers with raise ``ApiError`` carrying its message; an unreachable API raises ``ApiError(503)``."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = TIMEOUT_S):
        url = url or config.api_url()
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"the API's URL must be http(s)://host:port, got {url!r}")
        self.url, self.timeout = url.rstrip("/"), float(timeout)
        self._host, self._port, self._https = parsed.hostname, parsed.port, parsed.scheme == "https"
        self._base = parsed.path.rstrip("/")
        self.token = token if token is not None else config.api_token()
        self.folder = None  # nothing of the bot is on this side
        self._lock = threading.Lock()  # one connection, one request at a time
        self._connection: http.client.HTTPConnection | None = None
        self._products = None
        self._thumbs: OrderedDict[int, bytes | None] = OrderedDict()
        self._catalogue: RemoteCatalogue | None = None

    # ------------------------------------------------------------------ ShopBot's methods
    def ask(self, text: object, k: int = 5, search: bool = True):
        """As ``ShopBot.ask``: a reply with ``intent``, ``confidence``, ``text``, ``understood``, ``products``."""
        payload = self._call("POST", "/ask", body={"text": str(text), "k": int(k), "search": bool(search)})
        payload["products"] = [RemoteProduct(**p) for p in payload.get("products", [])]
        return SimpleNamespace(**payload)

    def search(self, text: object, k: int = 5, query: Query | None = None) -> RemoteResults:
        """As ``ShopBot.search``."""
        body = {"text": str(text), "k": int(k), "query": _query_json(query)}
        return RemoteResults(self._call("POST", "/search", body=body))

    def similar(self, image, k: int = 5, remove_background: bool | str = "auto", where=None) -> list[RemoteProduct]:
        """As ``ShopBot.similar``: a photo (path, bytes, PIL) or a product id ("more like this");
        ``remove_background`` auto, on/True or off/False with the server's remover (the chat's)."""
        if _is_product_id(image):
            if where is not None:
                raise ValueError("the API filters photo searches only: use refine for a product with constraints")
            payload = self._call("GET", f"/products/{int(image)}/similar?k={int(k)}")
        else:
            fields = {"k": str(int(k)), "remove_background": _remove_option(remove_background)}
            if where is not None:
                fields["where"] = json.dumps(_query_json(where if isinstance(where, Query) else
                                                         Query("", {f: [v] if isinstance(v, str) else list(v)
                                                                    for f, v in where.items()})))
            payload = self._call("POST", "/similar", fields=fields, files={"photo": _upload(image)})
        return [RemoteProduct(**p) for p in payload["products"]]

    def refine(self, anchor, text: str, k: int = 5, remove_background: bool | str = "auto",
               query: Query | None = None) -> RemoteResults:
        """As ``ShopBot.refine``: like ``anchor`` (a photo or a product id), with what ``text`` asks for."""
        fields = {"text": str(text), "k": str(int(k)), "remove_background": _remove_option(remove_background)}
        if query is not None:
            fields["query"] = json.dumps(_query_json(query))
        if _is_product_id(anchor):
            fields["product_id"] = str(int(anchor))
            return RemoteResults(self._call("POST", "/refine", fields=fields, files={}))
        return RemoteResults(self._call("POST", "/refine", fields=fields, files={"photo": _upload(anchor)}))

    def lookup(self, ids) -> list[RemoteProduct]:
        """As ``ShopBot.lookup``: the products ``ids`` (e.g. a card's ``duplicate_ids``), in that order."""
        ids = [int(i) for i in ids]
        if not ids:
            return []
        return [RemoteProduct(**p) for p in self._call("GET", "/products?ids=" + ",".join(map(str, ids)))["products"]]

    @staticmethod
    def cut_out(image, remove_background: bool | str = "auto"):
        """As ``ShopBot.cut_out`` (a ``background.Cutout``), here: the chat passes its backend, whose masks
        come from the API (``RemoteBackground``); nothing here loads a model unless asked by name."""
        from .background import remove_background as cut

        return cut(image, remove_background)

    @property
    def products(self):
        """The catalogue's product facts, indexed by id (fetched once: the chat's names and chips)."""
        if self._products is None:
            import pandas as pd

            table = pd.read_csv(io.BytesIO(self._call("GET", "/products.csv", raw=True)), keep_default_na=False)
            for column in ("articleType", "subCategory", "baseColour", "gender", "usage"):
                table[column] = table[column].astype(str).map(sys.intern)  # one string per value, not per row
            self._products = table.set_index("id", drop=False).rename_axis(None)
        return self._products

    # ------------------------------------------------------------------ what the chat needs besides
    def product(self, product_id: int) -> RemoteProduct:
        """One product's facts."""
        return RemoteProduct(**self._call("GET", f"/products/{int(product_id)}"))

    def thumbnail(self, product_id: int) -> bytes | None:
        """The product's thumbnail (JPEG), or None when it has no picture; cached."""
        product_id = int(product_id)
        if product_id in self._thumbs:
            self._thumbs.move_to_end(product_id)
            return self._thumbs[product_id]
        try:
            data = self._call("GET", f"/products/{product_id}/thumbnail", raw=True)
        except ApiError as exc:
            if exc.status != 404:
                raise
            data = None
        self._thumbs[product_id] = data
        while len(self._thumbs) > THUMBNAIL_CACHE:
            self._thumbs.popitem(last=False)
        return data

    def health(self) -> dict:
        """The API's ``/health``: status, products, index, example product, limits, load."""
        return self._call("GET", "/health")

    def conversation_kwargs(self) -> dict:
        """What a ``Conversation`` over this client takes: thumbnails, the example photo and the cut-outs
        from the API."""
        if self._catalogue is None:
            self._catalogue = RemoteCatalogue(self)
        return {"thumbnails": self.thumbnail, "catalogue": self._catalogue, "background": RemoteBackground(self),
                "example_id": self.health().get("example_id")}

    def wait(self, timeout_s: float = 120.0) -> dict:
        """Wait until the API answers ``/health`` (it loads its models first); its answer."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self.health()
            except ApiError as exc:
                if exc.status != 503 or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def __enter__(self) -> "ShopBotClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ HTTP
    def _call(self, method: str, path: str, body: dict | None = None, fields: dict | None = None,
              files: dict | None = None, raw: bool = False, with_headers: bool = False) -> Any:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif files is not None:
            data, headers["Content-Type"] = _multipart(fields or {}, files)
        with self._lock:
            for attempt in (0, 1):  # a kept-alive connection the server closed is opened again once
                try:
                    connection = self._connect()
                    connection.request(method, self._base + path, body=data, headers=headers)
                    response = connection.getresponse()
                    payload = response.read()
                    break
                except (ConnectionError, http.client.HTTPException, OSError) as exc:
                    self._connection = None
                    if attempt or isinstance(exc, TimeoutError):
                        raise ApiError(503, UNREACHABLE) from exc
            if response.getheader("Connection", "").lower() == "close":
                self._connection = None
        if response.status >= 400:
            try:
                message = json.loads(payload)["error"]
            except (ValueError, KeyError, TypeError):
                message = f"ShopBot's server answered {response.status} {response.reason}."
            raise ApiError(response.status, message)
        answer = payload if raw else json.loads(payload)
        return (answer, {k.lower(): v for k, v in response.getheaders()}) if with_headers else answer

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._connection = kind(self._host, self._port, timeout=self.timeout)
        return self._connection


# ---------------------------------------------------------------------------------------- helpers
def _is_product_id(anchor: object) -> bool:
    return isinstance(anchor, (int, np.integer)) and not isinstance(anchor, bool)


def _query_json(query: Query | None) -> dict | None:
    return None if query is None else {"text": query.text, "include": query.include, "exclude": query.exclude}


def _remove_option(value: bool | str | None) -> str:
    """The API's ``remove_background`` field: auto, on, off (True/False/None as the chat's switch) or a name."""
    if isinstance(value, str):
        return value
    if value is None or value is False:
        return "off"
    if value is True:
        return "on"
    raise ValueError("over the API, remove_background is 'auto', True, False or a backend's name")


def _reduced(image: Image.Image, px: int = SEND_PX) -> Image.Image:
    if max(image.size) <= px:
        return image
    small = image.copy()
    small.thumbnail((px, px))
    return small


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "PNG", compress_level=1)  # fast; the server sees the very pixels
    return buffer.getvalue()


def _upload(image) -> tuple[str, bytes, str]:
    """(file name, bytes, type) of a photo: bytes and files as they are, a PIL image (a chat's cut-out) as
    PNG at most ``SEND_PX``, lossless so that the API embeds what an in-process bot would."""
    if isinstance(image, Image.Image):
        return "photo.png", _png(_reduced(image)), "image/png"
    if isinstance(image, (bytes, bytearray, memoryview)):
        return "photo", bytes(image), "application/octet-stream"
    path = Path(image)
    return path.name, path.read_bytes(), "application/octet-stream"


def _multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body and its content type."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
                     + str(value).encode() + b"\r\n")
    for name, (filename, data, kind) in files.items():
        safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{safe}"\r\n'
                     f"Content-Type: {kind}\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
