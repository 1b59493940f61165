"""Nearest-neighbour indexes over the catalogue embeddings, one interface for all of them.

``exact`` (numpy, the reference), ``lsh`` (random-hyperplane SimHash, several tables, multi-probe,
exact re-ranking), ``faiss`` (HNSW, the industry reference) and ``datasketch`` (its HNSW).
Every index is built from ``(vectors, ids)``, answers ``query(vector, k)`` and
``query_batch(vectors, k)`` with ``(ids, cosine scores)`` best first, takes ``where=`` (a boolean
mask over its positions) for filtered search, and is saved with
``save_index`` as ``index.json`` + ``index.npz`` (no pickle). ``load_index`` checks the format
version and that the index was built from the embeddings it is given.
"""
from __future__ import annotations

import hashlib
import io
import json
from contextlib import AbstractContextManager
from functools import lru_cache
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from . import __version__, config
from .artifacts import ArtifactError, read_meta, write_atomic

#: A filter that lets fewer products than this through is searched exactly over them, whatever the
#: index (as vector databases do): a hash or graph walk would mostly visit products it must discard,
#: and 2,000 dot products cost about 0.1 ms.
FILTER_EXACT_BELOW = 2000
INDEX_FORMAT = "shopbot-index"
INDEX_FORMAT_VERSION = 1


class IndexArtifactError(ArtifactError):
    """A saved index is missing, damaged, from another version, or built from other embeddings."""


@lru_cache(maxsize=1)
def _thread_pools():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # finds the loaded BLAS libraries once (ms); each limit then costs ~10 us


def one_blas_thread() -> AbstractContextManager:
    """A context in which numpy's BLAS computes in the calling thread only: for one query at a time.

    Between torch's calls (the CNN, the sentence encoder) and numpy's BLAS, each with a pool of
    threads as large as the machine, the two pools took turns spinning on the same cores:
    ``ShopBot.similar`` took 16.6 ms p50 / 103 ms p95 instead of 8.9 / 10.2 ms (2 cores)."""
    return _thread_pools().limit(limits=1, user_api="blas")


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest scores of each row, best first."""
    k = min(k, scores.shape[1])
    if k == 0:
        return np.zeros((scores.shape[0], 0), dtype=np.int64)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def fingerprint(vectors: np.ndarray, ids: np.ndarray) -> str:
    """SHA-256 of the ids and normalised vectors: which embeddings an index was built from."""
    h = hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    return h.hexdigest()


def check_mask(where: np.ndarray, n: int) -> np.ndarray:
    """``where`` as a boolean mask over ``n`` index positions, or a ``ValueError`` saying what it is."""
    where = np.asarray(where)
    if where.dtype != bool or where.shape != (n,):
        raise ValueError(f"where must be a boolean mask of {n} positions, got {where.dtype} {where.shape}")
    return where


def exact_within(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, allowed: np.ndarray | None,
                 k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, scores)`` of the exact top-k of normalised ``queries`` among the ``allowed`` rows of
    ``vectors`` (None: all)."""
    if k == 0:
        return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32)
    scores = queries @ (vectors if allowed is None else vectors[allowed]).T
    top = _top_k(scores, k)
    return ids[top if allowed is None else allowed[top]], np.take_along_axis(scores, top, axis=1)


class Index:
    """Base class: holds the normalised vectors and ids; subclasses add their structure."""

    kind: ClassVar[str] = ""

    def __init__(self, vectors: np.ndarray, ids: Sequence[int]):
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise ValueError(f"need a 2-D array with one row per id, got {vectors.shape} for {len(ids)} ids")
        if not len(vectors):
            raise ValueError("an index needs at least one vector")
        self.vectors = l2_normalize(vectors)
        self.ids = np.asarray(ids, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def params(self) -> dict:
        """The build parameters (saved in ``index.json``)."""
        return {}

    def arrays(self) -> dict[str, np.ndarray]:
        """The structure to save beside the embeddings (they are saved once, in embeddings.npz)."""
        return {}

    def nbytes(self) -> float:
        """Memory of the index structure in bytes, beyond the normalised vectors every index keeps."""
        return float(sum(a.nbytes for a in self.arrays().values()))

    @classmethod
    def restore(cls, vectors: np.ndarray, ids: Sequence[int], params: dict, arrays: dict) -> "Index":
        """The index ``load_index`` rebuilds from its saved parameters and arrays."""
        return cls(vectors, ids, **params, **arrays)

    def close(self) -> None:
        """Release what the index holds outside this process (nothing for in-process indexes)."""

    def _check(self, queries: np.ndarray, k: int) -> np.ndarray:
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive whole number, got {k!r}")
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"query has {queries.shape[1]} dimensions, the index {self.vectors.shape[1]}")
        return l2_normalize(queries)

    def query(self, vector: np.ndarray, k: int = 5, where: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, cosine scores)`` of the ``k`` nearest products to one vector, best first; with
        ``where`` (a boolean mask over the index's positions) only among the products it lets through."""
        ids, scores = self.query_batch(np.asarray(vector)[None, :], k, where)
        return ids[0], scores[0]

    def query_batch(self, queries: np.ndarray, k: int = 5,
                    where: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, scores)``, each (n_queries, min(k, len or products let through)), best first."""
        queries = self._check(queries, k)
        if where is not None:
            where = self._where(where)
            allowed = np.flatnonzero(where)
            k = min(k, len(allowed))
            if k == 0 or len(allowed) < FILTER_EXACT_BELOW:
                return self._exact_within(queries, allowed, k)
            rows = [self._search_where(q, k, where, allowed) for q in queries]
        else:
            k = min(k, len(self))
            rows = [self._search(q, k) for q in queries]
        if not rows:
            return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        return self.ids[np.stack([r[0] for r in rows])], np.stack([r[1] for r in rows])

    def _where(self, where: np.ndarray) -> np.ndarray:
        return check_mask(where, len(self))

    def _exact_within(self, queries: np.ndarray, allowed: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k among the ``allowed`` positions (None: all), for every query."""
        return exact_within(queries, self.vectors, self.ids, allowed, k)

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions and scores of the top ``k`` for one normalised query."""
        raise NotImplementedError

    def _search_where(self, q: np.ndarray, k: int, where: np.ndarray,
                      allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k`` among ``where`` for one query (at least ``k`` are allowed). By default the
        structure is asked for ever more neighbours, keeping those allowed (post-filtering), and the
        search turns exact over ``allowed`` once it would visit a fifth of the index."""
        want = 4 * k
        while want < len(self) // 5:
            pos, scores = self._search(q, want)
            keep = where[pos]
            if keep.sum() >= k:
                return pos[keep][:k], scores[keep][:k]
            want *= 4
        return self._rerank(q, allowed, k)

    def _rerank(self, q: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k among ``candidates`` (positions); all rows when there are fewer than ``k``."""
        if len(candidates) < k:
            candidates = np.arange(len(self))
        scores = self.vectors[candidates] @ q
        top = _top_k(scores[None, :], k)[0]
        return candidates[top], scores[top]


class ExactIndex(Index):
    """Exact cosine top-k with numpy: the baseline every other index is judged against.

    >>> index = ExactIndex(np.eye(3), ids=[10, 11, 12])
    >>> index.query(np.array([0.9, 0.1, 0.0]), k=2)[0].tolist()
    [10, 11]
    """

    kind = "exact"

    def query_batch(self, queries: np.ndarray, k: int = 5,
                    where: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        queries = self._check(queries, k)
        if where is None:
            return self._exact_within(queries, None, min(k, len(self)))
        allowed = np.flatnonzero(self._where(where))
        return self._exact_within(queries, allowed, min(k, len(allowed)))


class LSHIndex(Index):
    """Random-hyperplane (SimHash) LSH for cosine similarity, with exact re-ranking.

    ``tables`` hash tables of ``bits`` hyperplanes each. A query visits its own bucket in every
    table plus, with multi-probe, the ``probes`` buckets one bit away on its least certain bits
    (the hyperplanes it is closest to). Products found in the most of those buckets are the
    likeliest neighbours: at most ``max_candidates`` of them, by collision count, are re-ranked
    exactly (0 = all). Our fine-tuned embeddings form 37 tight clusters, so plain bucket unions
    hold thousands of products; counting collisions is what makes LSH fast here. Vectors are
    centred on the catalogue mean before hashing: they are ReLU outputs, all in one orthant.
    """

    kind = "lsh"

    def __init__(self, vectors: np.ndarray, ids: Sequence[int], bits: int = 20, tables: int = 16,
                 probes: int = 2, max_candidates: int = 1000, seed: int = config.SEED, planes: np.ndarray | None = None,
                 mean: np.ndarray | None = None, keys: np.ndarray | None = None, order: np.ndarray | None = None):
        super().__init__(vectors, ids)
        if not 1 <= bits <= 32 or tables < 1 or not 0 <= probes <= bits:
            raise ValueError(f"need 1 <= bits <= 32, tables >= 1, 0 <= probes <= bits; got {bits}, {tables}, {probes}")
        self.bits, self.tables, self.probes, self.seed = int(bits), int(tables), int(probes), int(seed)
        self.max_candidates = int(max_candidates)
        dim = self.vectors.shape[1]
        rng = np.random.default_rng(seed)
        self.planes = planes if planes is not None else \
            rng.standard_normal((dim, tables * bits)).astype(np.float32)
        self.mean = mean if mean is not None else self.vectors.mean(0)
        self._pow2 = (1 << np.arange(bits, dtype=np.uint64))
        self._table_key = np.arange(tables, dtype=np.uint64) << np.uint64(bits)
        if keys is None or order is None:
            codes = self._codes(self._project(self.vectors))  # (n, tables)
            keys = (codes + self._table_key).T.ravel()  # table-major: one sorted array for all tables
            order = np.argsort(keys, kind="stable")
            keys, order = keys[order], (order % len(self)).astype(np.int32)
        self.keys, self.order = keys, order

    def _project(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) @ self.planes).reshape(len(x), self.tables, self.bits)

    def _codes(self, projections: np.ndarray) -> np.ndarray:
        return ((projections > 0).astype(np.uint64) * self._pow2).sum(-1, dtype=np.uint64)

    @property
    def params(self) -> dict:
        return {"bits": self.bits, "tables": self.tables, "probes": self.probes,
                "max_candidates": self.max_candidates, "seed": self.seed}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"planes": self.planes, "mean": self.mean, "keys": self.keys, "order": self.order}

    def probe_keys(self, q: np.ndarray) -> np.ndarray:
        """The bucket keys one query visits: (tables, 1 + probes)."""
        proj = self._project(q[None, :])[0]  # (tables, bits)
        code = self._codes(proj)  # (tables,)
        flips = self._pow2[np.argsort(np.abs(proj), axis=1)[:, :self.probes]]  # least certain bits
        codes = np.concatenate([code[:, None], code[:, None] ^ flips], axis=1)
        return codes + self._table_key[:, None]

    def candidates(self, q: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
        """Positions of the products in the visited buckets: each once, only those ``where`` lets
        through, at most ``max_candidates`` of them (those found in the most buckets)."""
        keys = self.probe_keys(q).ravel()
        lo = np.searchsorted(self.keys, keys, "left")
        hi = np.searchsorted(self.keys, keys, "right")
        lengths = hi - lo
        if not lengths.sum():
            return np.zeros(0, np.int64)
        # All positions lo..hi-1 of every bucket, without a Python loop.
        starts = np.repeat(lo - np.cumsum(lengths) + lengths, lengths)
        found, counts = np.unique(self.order[starts + np.arange(lengths.sum())], return_counts=True)
        if where is not None:
            keep = where[found]
            found, counts = found[keep], counts[keep]
        if 0 < self.max_candidates < len(found):
            found = found[np.argpartition(-counts, self.max_candidates - 1)[:self.max_candidates]]
        return found.astype(np.int64)

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._rerank(q, self.candidates(q), k)

    def _search_where(self, q: np.ndarray, k: int, where: np.ndarray,
                      allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found = self.candidates(q, where)  # filtered before the candidate cap
        return self._rerank(q, found if len(found) >= k else allowed, k)


class FaissIndex(Index):
    """faiss ``IndexHNSWFlat`` on inner product (= cosine on normalised vectors)."""

    kind = "faiss"

    def __init__(self, vectors: np.ndarray, ids: Sequence[int], m: int = 32, ef_construction: int = 80,
                 ef_search: int = 64, serialized: np.ndarray | None = None):
        import faiss

        super().__init__(vectors, ids)
        self.m, self.ef_construction, self.ef_search = int(m), int(ef_construction), int(ef_search)
        if serialized is not None:
            self.faiss = faiss.deserialize_index(serialized)
        else:
            self.faiss = faiss.IndexHNSWFlat(self.vectors.shape[1], self.m, faiss.METRIC_INNER_PRODUCT)
            self.faiss.hnsw.efConstruction = self.ef_construction
            self.faiss.add(self.vectors)
        self.faiss.hnsw.efSearch = self.ef_search

    @property
    def params(self) -> dict:
        return {"m": self.m, "ef_construction": self.ef_construction, "ef_search": self.ef_search}

    def arrays(self) -> dict[str, np.ndarray]:
        import faiss

        return {"serialized": faiss.serialize_index(self.faiss)}

    def query_batch(self, queries: np.ndarray, k: int = 5,
                    where: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if where is not None:
            return super().query_batch(queries, k, where)
        queries = self._check(queries, k)
        k = min(k, len(self))
        self.faiss.hnsw.efSearch = max(self.ef_search, k)
        scores, pos = self.faiss.search(queries, k)
        missing = (pos < 0).any(axis=1)
        for row in np.flatnonzero(missing):  # HNSW found fewer than k: rare, answer exactly
            pos[row], scores[row] = self._rerank(queries[row], np.zeros(0, np.int64), k)
        return self.ids[pos], scores

    def _search_where(self, q: np.ndarray, k: int, where: np.ndarray,
                      allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """HNSW that only returns allowed products (faiss's bitmap ID selector)."""
        import faiss

        bitmap = np.packbits(where, bitorder="little")
        params = faiss.SearchParametersHNSW(sel=faiss.IDSelectorBitmap(len(self), faiss.swig_ptr(bitmap)),
                                            efSearch=max(self.ef_search, k))
        scores, pos = self.faiss.search(q[None, :], k, params=params)
        if (pos < 0).any():  # the walk found fewer than k allowed: answer exactly
            return self._rerank(q, allowed, k)
        return pos[0], scores[0]


class DatasketchIndex(Index):
    """datasketch's ``HNSW`` with cosine distance (pure Python: slow to build, honest to measure).

    datasketch's LSH classes (MinHash, LSH Forest) estimate Jaccard similarity between *sets*;
    our embeddings are float vectors compared by cosine, so its HNSW graph is what fits. Its graph
    lives in Python dictionaries with no array form: ``save_index`` stores the parameters and
    ``load_index`` rebuilds the graph, seeded, so the loaded index is the same.
    """

    kind = "datasketch"

    def __init__(self, vectors: np.ndarray, ids: Sequence[int], m: int = 16, ef_construction: int = 64,
                 ef_search: int = 64, seed: int = config.SEED):
        from datasketch import HNSW

        super().__init__(vectors, ids)
        self.m, self.ef_construction, self.ef_search, self.seed = int(m), int(ef_construction), int(ef_search), int(seed)
        self.graph = HNSW(distance_func=lambda a, b: 1.0 - float(np.dot(a, b)), m=self.m,
                          ef_construction=self.ef_construction, seed=self.seed)
        for pos, vector in enumerate(self.vectors):
            self.graph.insert(pos, vector)

    @property
    def params(self) -> dict:
        return {"m": self.m, "ef_construction": self.ef_construction, "ef_search": self.ef_search, "seed": self.seed}

    def nbytes(self) -> float:
        """Not measured: the graph is Python dictionaries, not arrays."""
        return float("nan")

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        found = self.graph.query(q, k=k, ef=max(self.ef_search, k))
        pos = np.array([p for p, _ in found], dtype=np.int64)
        if len(pos) < k:
            return self._rerank(q, np.zeros(0, np.int64), k)
        return pos, np.array([1.0 - d for _, d in found], dtype=np.float32)


INDEXES: dict[str, type[Index]] = {c.kind: c for c in (ExactIndex, LSHIndex, FaissIndex, DatasketchIndex)}
#: Indexes that live in a vector database (``shopbot_utils.milvus``): imported when first used.
ENGINE_KINDS = ("milvus",)


def index_class(kind: str) -> type[Index]:
    """The class of an index kind: one of ``INDEXES`` or ``ENGINE_KINDS``."""
    if kind in INDEXES:
        return INDEXES[kind]
    if kind == "milvus":
        from .milvus import MilvusIndex

        return MilvusIndex
    raise ValueError(f"unknown index {kind!r}; choose one of {sorted(INDEXES) + list(ENGINE_KINDS)}")
#: The index ``ShopBot`` uses unless told otherwise (chosen in notebook 04 from measurements).
DEFAULT_INDEX = "lsh"


def build_index(kind: str, vectors: np.ndarray, ids: Sequence[int], **params) -> Index:
    """Build an index of ``kind`` (one of ``INDEXES`` or ``ENGINE_KINDS``) with its parameters."""
    return index_class(kind)(vectors, ids, **params)


def save_index(index: Index, folder: str | Path, name: str = "index") -> Path:
    """Write ``<name>.json`` (kind, parameters, versions, embeddings fingerprint) and ``<name>.npz``."""
    folder = Path(folder)
    buffer = io.BytesIO()
    np.savez(buffer, **index.arrays())
    write_atomic(folder / f"{name}.npz", buffer.getvalue())
    meta = {"format": INDEX_FORMAT, "format_version": INDEX_FORMAT_VERSION, "package_version": __version__,
            "kind": index.kind, "params": index.params, "count": len(index), "dim": int(index.vectors.shape[1]),
            "embeddings_sha256": fingerprint(index.vectors, index.ids)}
    return write_atomic(folder / f"{name}.json", json.dumps(meta, indent=1))


def load_index(folder: str | Path, vectors: np.ndarray, ids: Sequence[int], name: str = "index") -> Index:
    """Load a saved index for these embeddings; ``IndexArtifactError`` if it is missing, from another
    format version, or was built from other embeddings (rebuild it with notebook 04)."""
    folder = Path(folder)
    meta_path, arrays_path = folder / f"{name}.json", folder / f"{name}.npz"
    meta = read_meta(meta_path, arrays_path, INDEX_FORMAT, INDEX_FORMAT_VERSION,
                     f"no saved index {name!r} in {folder}: run notebook 04 (or `make run`)",
                     "rebuild it with notebook 04", error=IndexArtifactError)
    vectors, ids = l2_normalize(vectors), np.asarray(ids, dtype=np.int64)
    if meta.get("count") != len(ids) or meta.get("embeddings_sha256") != fingerprint(vectors, ids):
        raise IndexArtifactError(f"{meta_path} was built from other embeddings ({meta.get('count')} vectors) than the "
                          f"{len(ids)} given: rebuild it with notebook 04")
    try:
        cls = index_class(meta.get("kind"))
    except ValueError:
        raise IndexArtifactError(f"{meta_path}: unknown index kind {meta.get('kind')!r}") from None
    try:
        with np.load(arrays_path, allow_pickle=False) as saved:
            arrays = {k: saved[k] for k in saved.files}
        return cls.restore(vectors, ids, meta["params"], arrays)
    except IndexArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 - damaged arrays: say which file
        raise IndexArtifactError(f"{arrays_path} does not match {meta_path}: {exc}") from None
