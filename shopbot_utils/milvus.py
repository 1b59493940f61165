"""ShopBot's index in a vector database: Milvus, through ``pymilvus``.

For a shop that outgrows one process: several app servers querying one catalogue, live
additions and deletions, filters on product attributes evaluated by the engine. By default it is
Milvus Lite, embedded in this process (PyPI ``milvus-lite``, a local folder such as
``artifacts/milvus.db``, no server to run, works offline); ``SHOPBOT_MILVUS_URI`` (or ``uri=``)
points the same code at a Milvus server or cluster (``http://host:19530``).

The collection holds one row per product: ``id`` (the catalogue id), ``vector`` (the normalised
embedding, inner product = cosine) and the attributes text search filters on (``FIELDS``:
usage, colour, gender, type), so that ``query(..., expr=...)`` is a filtered vector search
inside the engine. Saving an index records the URI, the collection and the embeddings' hash;
loading attaches to the collection and refuses one that holds other embeddings.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from . import config
from .index import (FILTER_EXACT_BELOW, Index, IndexArtifactError, check_mask, exact_within, fingerprint,
                    l2_normalize)
from .search import FIELDS, Query

URI_ENV = "SHOPBOT_MILVUS_URI"
DEFAULT_COLLECTION = "shopbot_products"
#: Rows per insert call (a 512-d float row is 2 KB: 5,000 rows keep a gRPC message near 10 MB).
INSERT_BATCH = 5000
#: Longest attribute value stored (the catalogue's longest is 20 characters).
MAX_VALUE_LENGTH = 64
#: Seconds pymilvus waits for a server before ``MilvusUnavailableError``.
CONNECT_TIMEOUT = 10.0
#: Every search sees the writes acknowledged before it (see ``MilvusIndex._create``).
CONSISTENCY = "Strong"
#: The collection property that says which embeddings it holds (``index.fingerprint``).
FINGERPRINT_PROPERTY = "shopbot.embeddings_sha256"


#: Open MilvusIndex objects per embedded folder: its server stops when the last one closes.
_embedded_users: dict[str, int] = {}
_embedded_lock = threading.Lock()


class MilvusUnavailableError(IndexArtifactError):
    """The Milvus server cannot be reached (or pymilvus is not installed)."""


def default_uri(folder: str | Path | None = None) -> str:
    """``SHOPBOT_MILVUS_URI``, else Milvus Lite's folder ``milvus.db`` in ``folder`` (default: the artifacts)."""
    if os.environ.get(URI_ENV):
        return os.environ[URI_ENV]
    return str(Path(folder or config.artifacts_dir()) / "milvus.db")


def catalogue_params(folder: str | Path | None, products: pd.DataFrame) -> dict:
    """What a catalogue's milvus index is built with: Milvus Lite beside the artifacts in ``folder``
    (or ``SHOPBOT_MILVUS_URI``) and the products' attributes, so that the engine can filter on them."""
    return {"uri": default_uri(folder), "attributes": products}


def is_embedded(uri: str) -> bool:
    """Milvus Lite's local folder (a path ending in ``.db``), not a server."""
    return uri.endswith(".db") and "://" not in uri


def _quote(value: str) -> str:
    return json.dumps(str(value))  # Milvus string literals take JSON's escapes


def expression(where: Query | dict) -> str:
    """A Milvus boolean expression for a text-search constraint set: ``{field: value or [values]}`` or
    a parsed ``Query`` (its ``include`` and ``exclude``). Empty string: no constraint.

    >>> expression({"baseColour": ["Black", "Navy Blue"], "gender": "Men"})
    'baseColour in ["Black", "Navy Blue"] and gender in ["Men"]'
    """
    if not isinstance(where, Query):
        where = Query("", {k: [v] if isinstance(v, str) else list(v) for k, v in where.items()})
    unknown = (set(where.include) | set(where.exclude)) - set(FIELDS)
    if unknown:
        raise ValueError(f"cannot filter on {sorted(unknown)}; fields are {list(FIELDS)}")
    parts = [f"{f} in [{', '.join(map(_quote, v))}]" for f, v in where.include.items() if v]
    parts += [f"{f} not in [{', '.join(map(_quote, v))}]" for f, v in where.exclude.items() if v]
    return " and ".join(parts)


def _error_text(exc: Exception) -> str:
    return getattr(exc, "message", None) or str(exc)


class MilvusIndex(Index):
    """Milvus (Lite by default) as a ShopBot index: HNSW or FLAT on inner product.

    ``attributes``: a table indexed by product id with the ``FIELDS`` columns (the product table);
    without it the collection stores empty attributes and only id filters run in the engine.
    The vectors are also kept here (as by every index): the bot's class prior and filters index
    them by position. ``close()`` (or ``with``) disconnects and, for Milvus Lite, stops the
    embedded server and releases its folder.
    """

    kind = "milvus"
    filters_in_engine = True

    def __init__(self, vectors: np.ndarray, ids: Sequence[int], uri: str | None = None,
                 collection: str = DEFAULT_COLLECTION, index_type: str = "HNSW", m: int = 32,
                 ef_construction: int = 80, ef_search: int = 64, attributes: pd.DataFrame | None = None,
                 attach: str | None = None, timeout: float = CONNECT_TIMEOUT):
        """``attach``: the fingerprint of the embeddings an existing collection must hold (``load_index``
        passes it); None builds the collection, replacing one of the same name."""
        super().__init__(vectors, ids)
        if index_type not in ("HNSW", "FLAT"):
            raise ValueError(f"index_type must be 'HNSW' or 'FLAT', got {index_type!r}")
        self.uri = uri or default_uri()
        self.collection, self.index_type = collection, index_type
        self.m, self.ef_construction, self.ef_search = int(m), int(ef_construction), int(ef_search)
        self._lock = threading.Lock()  # add/remove replace the local arrays that masks refer to
        self.client = self._connect(timeout)
        if attach:
            self._attach(attach)
        else:
            self._create(attributes)

    # ------------------------------------------------------------------ connection and collection
    def _connect(self, timeout: float):
        try:
            from pymilvus import MilvusClient
        except ImportError as exc:  # pragma: no cover - pymilvus is a dependency
            raise MilvusUnavailableError("the milvus index needs pymilvus: pip install 'pymilvus[milvus_lite]'") from exc
        if is_embedded(self.uri):
            Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            client = MilvusClient(uri=self.uri, timeout=timeout)
            if is_embedded(self.uri):
                with _embedded_lock:
                    key = os.path.abspath(self.uri)
                    _embedded_users[key] = _embedded_users.get(key, 0) + 1
            return client
        except Exception as exc:  # noqa: BLE001 - pymilvus raises several types for "no server"
            hint = ("start one (see the README: Milvus's docker compose) or unset " + URI_ENV
                    if not is_embedded(self.uri) else "check that the folder is writable and not open in another process")
            raise MilvusUnavailableError(f"cannot reach Milvus at {self.uri}: {_error_text(exc)}; {hint}") from None

    def _stamp(self) -> None:
        """Record in the collection which embeddings it holds (checked when an index attaches)."""
        self.client.alter_collection_properties(
            self.collection, properties={FINGERPRINT_PROPERTY: fingerprint(self.vectors, self.ids)})

    def _create(self, attributes: pd.DataFrame | None) -> None:
        from pymilvus import DataType, MilvusClient

        dim = self.vectors.shape[1]
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        for name in FIELDS:
            schema.add_field(name, DataType.VARCHAR, max_length=MAX_VALUE_LENGTH)
        params = self.client.prepare_index_params()
        build = {"M": self.m, "efConstruction": self.ef_construction} if self.index_type == "HNSW" else {}
        params.add_index(field_name="vector", index_type=self.index_type, metric_type="IP", params=build)
        if self.client.has_collection(self.collection):
            self.client.drop_collection(self.collection)
        # Strong: a search sees every insert, upsert and delete acknowledged before it (a server's default,
        # Bounded, may answer from a snapshot a few seconds old; Milvus Lite hides the difference).
        self.client.create_collection(self.collection, schema=schema, index_params=params,
                                      consistency_level=CONSISTENCY)
        self._insert(self.vectors, self.ids, attributes)
        self.client.flush(self.collection)
        self._stamp()

    def _rows(self, vectors: np.ndarray, ids: np.ndarray, attributes: pd.DataFrame | None) -> list[dict]:
        values = {}
        for name in FIELDS:
            if attributes is not None and name in attributes:
                column = attributes[name].reindex(ids)
                values[name] = column.fillna("").astype(str).str.slice(0, MAX_VALUE_LENGTH).to_numpy()
            else:
                values[name] = np.full(len(ids), "", dtype=object)
        return [{"id": int(i), "vector": v, **{n: values[n][j] for n in FIELDS}}
                for j, (i, v) in enumerate(zip(ids, vectors))]

    def _insert(self, vectors: np.ndarray, ids: np.ndarray, attributes: pd.DataFrame | None) -> None:
        for start in range(0, len(ids), INSERT_BATCH):
            end = start + INSERT_BATCH
            self.client.insert(self.collection, self._rows(vectors[start:end], ids[start:end], attributes))

    def _attach(self, expected: str) -> None:
        """Use an existing collection: it must hold these embeddings (its description says which)."""
        if not self.client.has_collection(self.collection):
            raise IndexArtifactError(f"Milvus at {self.uri} has no collection {self.collection!r}: "
                                     "rebuild the index (notebook 04 or index_catalogue(..., 'milvus'))")
        info = self.client.describe_collection(self.collection)
        dims = [f.get("params", {}).get("dim") for f in info.get("fields", []) if f.get("name") == "vector"]
        if not dims or int(dims[0]) != self.vectors.shape[1]:
            raise IndexArtifactError(f"collection {self.collection!r} at {self.uri} holds {dims[0] if dims else '?'}-d "
                                     f"vectors, the embeddings are {self.vectors.shape[1]}-d: rebuild the index")
        if (info.get("properties") or {}).get(FINGERPRINT_PROPERTY) != expected:
            raise IndexArtifactError(f"collection {self.collection!r} at {self.uri} was built from other embeddings "
                                     "(or changed since it was saved): rebuild the index")
        self.client.load_collection(self.collection)  # a restarted server holds it released

    @classmethod
    def restore(cls, vectors: np.ndarray, ids: Sequence[int], params: dict, arrays: dict) -> "MilvusIndex":
        return cls(vectors, ids, **params, attach=fingerprint(np.asarray(vectors, np.float32), np.asarray(ids, np.int64)))

    @property
    def params(self) -> dict:
        return {"uri": self.uri, "collection": self.collection, "index_type": self.index_type, "m": self.m,
                "ef_construction": self.ef_construction, "ef_search": self.ef_search}

    def nbytes(self) -> float:
        """Not comparable: the engine keeps its own copy, segments and index (see the benchmark's memory column)."""
        return float("nan")

    # ------------------------------------------------------------------ search
    def query(self, vector: np.ndarray, k: int = 5, where: np.ndarray | None = None,
              expr: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        ids, scores = self.query_batch(np.asarray(vector)[None, :], k, where, expr)
        return ids[0], scores[0]

    def query_batch(self, queries: np.ndarray, k: int = 5, where: np.ndarray | None = None,
                    expr: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """As every index; ``expr`` is a Milvus filter (see ``expression``) run inside the engine. A
        ``where`` mask that lets fewer than ``FILTER_EXACT_BELOW`` products through is searched
        exactly here (as the other indexes do); a wider one becomes an id filter in the engine."""
        queries = self._check(queries, k)
        if where is not None:
            with self._lock:  # the ids and vectors that this mask's positions refer to
                ids, vectors = self.ids, self.vectors
            where = check_mask(where, len(ids))
            allowed = np.flatnonzero(where)
            if len(allowed) < FILTER_EXACT_BELOW:
                return exact_within(queries, vectors, ids, allowed, min(k, len(allowed)))
            refused = ids[~where]
            id_filter = (f"id in {ids[allowed].tolist()}" if len(allowed) < len(refused)
                         else f"id not in {refused.tolist()}" if len(refused) else "")
            expr = " and ".join(e for e in (expr, id_filter) if e)
        return self._engine_search(queries, k, expr or "")

    def _engine_search(self, queries: np.ndarray, k: int, expr: str) -> tuple[np.ndarray, np.ndarray]:
        if not len(queries):
            return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        try:
            found = self.client.search(self.collection, data=list(queries), limit=int(k), filter=expr,
                                       output_fields=["id"],
                                       search_params={"metric_type": "IP", "params": {"ef": max(self.ef_search, k)}})
        except Exception as exc:  # noqa: BLE001 - say what is wrong in ShopBot's words
            text = _error_text(exc)
            if "not found" in text.lower() or "not exist" in text.lower():
                raise IndexArtifactError(f"collection {self.collection!r} no longer exists at {self.uri}: "
                                         "rebuild the index (notebook 04 or index_catalogue(..., 'milvus'))") from None
            if "filter" in text.lower() or "parse" in text.lower():
                raise ValueError(f"Milvus cannot filter on {expr!r}: {text}") from None
            raise MilvusUnavailableError(f"Milvus at {self.uri} failed to search: {text}") from None
        width = min((len(hits) for hits in found), default=0)
        ids = np.array([[h["id"] for h in hits[:width]] for hits in found], dtype=np.int64).reshape(len(found), width)
        scores = np.array([[h["distance"] for h in hits[:width]] for hits in found],
                          dtype=np.float32).reshape(len(found), width)
        return ids, scores

    # ------------------------------------------------------------------ live updates
    def add(self, vectors: np.ndarray, ids: Sequence[int], attributes: pd.DataFrame | None = None) -> None:
        """Insert (or replace) products without a rebuild: searchable on the next query."""
        vectors, ids = l2_normalize(np.atleast_2d(vectors)), np.asarray(ids, dtype=np.int64)
        if vectors.shape != (len(ids), self.vectors.shape[1]):
            raise ValueError(f"need one {self.vectors.shape[1]}-d vector per id, got {vectors.shape} for {len(ids)} ids")
        with self._lock:
            self.client.upsert(self.collection, self._rows(vectors, ids, attributes))
            keep = ~np.isin(self.ids, ids)
            self.vectors = np.concatenate([self.vectors[keep], vectors])
            self.ids = np.concatenate([self.ids[keep], ids])
            self._stamp()

    def remove(self, ids: Sequence[int]) -> int:
        """Delete products without a rebuild; returns how many of ``ids`` were in the index."""
        ids = np.asarray(ids, dtype=np.int64)
        with self._lock:
            present = np.isin(self.ids, ids)
            if present.any():
                self.client.delete(self.collection, ids=self.ids[present].tolist())
                self.vectors, self.ids = self.vectors[~present], self.ids[~present]
                self._stamp()
            return int(present.sum())

    # ------------------------------------------------------------------ lifetime
    def drop(self) -> None:
        """Delete the collection from the engine (the index is unusable afterwards)."""
        if self.client.has_collection(self.collection):
            self.client.drop_collection(self.collection)

    def close(self) -> None:
        """Disconnect; for Milvus Lite also stop its embedded server and release its folder."""
        client, self.client = getattr(self, "client", None), None
        if client is None:
            return
        client.close()
        if is_embedded(self.uri):
            from milvus_lite.server_manager import server_manager_instance

            key = os.path.abspath(self.uri)
            with _embedded_lock:
                _embedded_users[key] = _embedded_users.get(key, 1) - 1
                last = _embedded_users[key] <= 0
                if last:
                    del _embedded_users[key]
            if last:
                server_manager_instance.release_server(key)

    def __enter__(self) -> "MilvusIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
