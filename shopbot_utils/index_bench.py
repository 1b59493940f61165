"""Measuring the indexes: recall against exact search, the poster's score, build time, memory,
latency; and a scale run on synthetic vectors shaped like ours. Used by notebook 04 and
``benchmarks/bench_index.py`` (one process, one thread, the same queries for every index)."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from . import config
from .evaluate import retrieval_metrics
from .index import ExactIndex, Index, build_index, l2_normalize

#: Settings compared by default: the LSH grid around our default, and the reference indexes.
SETTINGS: list[tuple[str, dict]] = [
    ("exact", {}),
    ("lsh", {"bits": 16, "tables": 8, "probes": 1, "max_candidates": 0}),
    ("lsh", {"bits": 20, "tables": 8, "probes": 2, "max_candidates": 0}),
    ("lsh", {"bits": 20, "tables": 16, "probes": 2, "max_candidates": 500}),
    ("lsh", {}),  # the default: 20 bits x 16 tables, 2 probes, 1000 candidates
    ("lsh", {"bits": 16, "tables": 32, "probes": 1, "max_candidates": 600}),
    ("lsh", {"bits": 24, "tables": 24, "probes": 3, "max_candidates": 2000}),
    ("faiss", {"ef_search": 16}),
    ("faiss", {"ef_search": 64}),
    ("datasketch", {"ef_search": 32}),
]


@contextmanager
def one_thread() -> Iterator[None]:
    """numpy/BLAS and faiss on one thread, so that per-query times compare like for like."""
    from threadpoolctl import threadpool_limits

    try:
        import faiss

        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
    except ImportError:  # faiss is optional for exact/lsh
        faiss = None
    with threadpool_limits(1):
        try:
            yield
        finally:
            if faiss is not None:
                faiss.omp_set_num_threads(before)


def recall_at(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean share of the exact top-``k`` that the index returned in its top ``k``."""
    hits = [len(np.intersect1d(f[:k], t[:k])) for f, t in zip(found, truth)]
    return float(np.mean(hits) / k)


def without_self(found: np.ndarray, query_ids: Sequence[int], k: int) -> list[np.ndarray]:
    """Each row of ``found`` (ids, best first) without the query's own id, its first ``k``: a query
    that the index holds finds itself first, a free hit that says nothing about its neighbours."""
    return [row[row != own][:k] for row, own in zip(found, query_ids)]


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def single_query_ms(index: Index, queries: np.ndarray, k: int = 5, warmup: int = 5) -> np.ndarray:
    """Milliseconds of ``index.query`` for each query row (after ``warmup`` calls)."""
    for q in queries[:warmup]:
        index.query(q, k)
    times = np.empty(len(queries))
    for i, q in enumerate(queries):
        start = time.perf_counter()
        index.query(q, k)
        times[i] = time.perf_counter() - start
    return times * 1e3


def describe(kind: str, params: dict) -> str:
    """A short label: ``lsh 20b x16t p2 c1000``."""
    if kind == "lsh":
        from .index import LSHIndex
        import inspect

        defaults = {n: p.default for n, p in inspect.signature(LSHIndex.__init__).parameters.items()}
        p = {**{k: defaults[k] for k in ("bits", "tables", "probes", "max_candidates")}, **params}
        cand = f" c{p['max_candidates']}" if p["max_candidates"] else " all"
        return f"lsh {p['bits']}b x{p['tables']}t p{p['probes']}{cand}"
    if kind in {"faiss", "datasketch"}:
        return f"{kind} hnsw ef{params.get('ef_search', 64)}"
    if kind == "milvus":
        return f"milvus lite {params.get('index_type', 'HNSW').lower()} ef{params.get('ef_search', 64)}"
    return kind


def rss_mb() -> float:
    """This process's resident memory (MB): what an index costs beyond its arrays (Milvus Lite's engine)."""
    import psutil

    return psutil.Process().memory_info().rss / 1e6


def filtered_query_ms(index: Index, queries: np.ndarray, masks: Sequence[np.ndarray], k: int = 5,
                      expressions: Sequence[str] | None = None, warmup: int = 3) -> np.ndarray:
    """Milliseconds of one filtered query each: ``where=mask``, or for an engine that filters
    itself (``filters_in_engine``) the matching Milvus ``expressions``."""
    engine = getattr(index, "filters_in_engine", False) and expressions is not None

    def one(i):
        if engine:
            return index.query(queries[i], k, expr=expressions[i])
        return index.query(queries[i], k, where=masks[i])

    for i in range(min(warmup, len(queries))):
        one(i)
    times = np.empty(len(queries))
    for i in range(len(queries)):
        start = time.perf_counter()
        one(i)
        times[i] = time.perf_counter() - start
    return times * 1e3


def measure(vectors: np.ndarray, ids: np.ndarray, split: pd.DataFrame, products: pd.DataFrame,
            settings: Sequence[tuple[str, dict]] = SETTINGS, latency_queries: int = 300,
            datasketch_limit: int | None = None, k: int = 5, seed: int = config.SEED,
            progress: bool = True) -> pd.DataFrame:
    """Every index setting on the real embeddings, the same queries for all.

    Recall@5/@10 and latency: the test-split embeddings query an index of the whole catalogue
    (as ``ShopBot.similar`` does); recall is against exact search, the query's own product left out
    of both answers (it is always its own first result). Poster score / precision@5:
    the strict protocol (test images query an index of train+valid only). ``datasketch_limit`` caps how many
    products datasketch indexes (its pure-Python build is slow): its rows then use a random
    subset of the catalogue and say so in ``n_indexed``.
    """
    tqdm = config.progress_bar()

    vectors, ids = l2_normalize(vectors), np.asarray(ids, dtype=np.int64)
    pos = pd.Series(np.arange(len(ids)), index=ids)
    test_ids = split.loc[split["split"] == "test", "id"].to_numpy()
    gallery_ids = split.loc[split["split"] != "test", "id"].to_numpy()
    queries = vectors[pos.loc[test_ids].to_numpy()]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(queries), min(latency_queries, len(queries)), replace=False)
    timing_queries = queries[chosen]
    # Filtered queries: "this type only", each query's own article type (a mask here, an expression
    # for an engine that filters on its attributes).
    types = products["articleType"].reindex(ids).to_numpy(dtype=object)
    query_types = products["articleType"].reindex(test_ids[chosen]).to_numpy(dtype=object)
    filter_masks = [types == t for t in query_types]
    filter_exprs = [f'articleType in ["{t}"]' for t in query_types]
    rows = []
    with one_thread():
        for kind, params in tqdm(settings, desc="indexes", disable=not progress):
            sub = np.arange(len(ids))
            if kind == "datasketch" and datasketch_limit and datasketch_limit < len(ids):
                sub = np.sort(rng.choice(len(ids), datasketch_limit, replace=False))
            exact = ExactIndex(vectors[sub], ids[sub])
            truth = without_self(exact.query_batch(queries, 11)[0], test_ids, 10)
            extra = {"attributes": products} if kind == "milvus" else {}
            before = rss_mb()
            index, build_s = _timed(build_index, kind, vectors[sub], ids[sub], **params, **extra)
            rss_growth = rss_mb() - before
            (found, _), batch_s = _timed(index.query_batch, queries, 11)
            found = without_self(found, test_ids, 10)
            times = single_query_ms(index, timing_queries, k)
            filtered = (filtered_query_ms(index, timing_queries, filter_masks, k, filter_exprs)
                        if len(sub) == len(ids) else np.full(1, np.nan))
            index.close()
            in_gallery = np.intersect1d(gallery_ids, ids[sub])
            gallery = build_index(kind, vectors[pos.loc[in_gallery].to_numpy()], in_gallery, **params, **extra)
            quality = retrieval_metrics(gallery, queries, test_ids, products, k=k)
            gallery.close()
            rows.append({"index": describe(kind, params), "kind": kind, "params": params,
                         "n_indexed": len(sub), "recall@5": recall_at(found, truth, 5),
                         "recall@10": recall_at(found, truth, 10), "poster_score": quality["poster_score"],
                         f"precision@{k}": quality[f"precision_at_{k}"], "build_s": build_s,
                         "structure_mb": index.nbytes() / 1e6, "p50_ms": float(np.percentile(times, 50)),
                         "p95_ms": float(np.percentile(times, 95)),
                         "batch_ms_per_query": batch_s * 1e3 / len(queries),
                         "filtered_p50_ms": float(np.percentile(filtered, 50)),
                         "filtered_p95_ms": float(np.percentile(filtered, 95)), "rss_growth_mb": rss_growth})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- scale run
def synthetic_embeddings(n: int, dim: int = 512, clusters: int = 37, intrinsic: int = 8, spread: float = 0.5,
                         noise: float = 0.05, seed: int = config.SEED) -> np.ndarray:
    """Vectors shaped like our embeddings: ReLU outputs around ``clusters`` class centres with
    imbalanced (Zipf-like) class sizes; within a class, products vary along a few
    (``intrinsic``) directions plus a little noise, as fine-tuned embeddings do (ours keep 95%
    of their variance in ~37 dimensions), and about half the entries are exactly zero."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    bases = rng.standard_normal((clusters, intrinsic, dim)).astype(np.float32) / np.sqrt(intrinsic)
    weights = 1.0 / np.arange(1, clusters + 1) ** 0.8
    labels = rng.choice(clusters, n, p=weights / weights.sum())
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 50_000):  # in chunks: 1M x 512 temporaries would double the memory
        part = labels[start:start + 50_000]
        coef = rng.standard_normal((len(part), 1, intrinsic), dtype=np.float32)
        varied = centres[part] + spread * (coef @ bases[part])[:, 0]
        out[start:start + len(part)] = np.maximum(varied + noise * rng.standard_normal((len(part), dim), dtype=np.float32), 0)
    return out


def scale_run(sizes: Sequence[int], kinds: Sequence[str] = ("exact", "lsh", "faiss"), queries: int = 200,
              max_size: dict[str, int] | None = None, dim: int = 512, seed: int = config.SEED,
              progress: bool = True, params: dict[str, dict] | None = None) -> pd.DataFrame:
    """Build time, p50 query time and recall@5 (vs exact) of each index kind (default settings)
    as the catalogue grows. ``max_size`` skips a kind above a size (e.g. faiss's slow big builds)."""
    tqdm = config.progress_bar()

    max_size = max_size or {}
    rows = []
    with one_thread():
        for n in tqdm(sizes, desc="scale", disable=not progress):
            data = synthetic_embeddings(n + queries, dim, seed=seed)
            base, q = data[:n], l2_normalize(data[n:])
            ids = np.arange(n)
            truth = None
            for kind in kinds:
                if n > max_size.get(kind, n):
                    continue
                before = rss_mb()
                index, build_s = _timed(build_index, kind, base, ids, **(params or {}).get(kind, {}))
                rss_growth = rss_mb() - before
                times = single_query_ms(index, q, 5)
                found, _ = index.query_batch(q, 5)
                index.close()
                if kind == "exact":
                    truth = found
                rows.append({"n": n, "kind": kind, "build_s": build_s, "p50_ms": float(np.median(times)),
                             "recall@5": recall_at(found, truth, 5) if truth is not None else np.nan,
                             "structure_mb": index.nbytes() / 1e6, "rss_growth_mb": rss_growth})
                del index
            del data, base
    return pd.DataFrame(rows)
