"""Exact similarity search and the report's metrics: poster score, precision@k, F1, latency."""
from __future__ import annotations

import time
from collections import Counter
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

from .index import ExactIndex, l2_normalize  # noqa: F401 - re-exported: the search lives in .index


def match_scores(query_types: Sequence[str], query_subcats: Sequence[str],
                 result_types: np.ndarray, result_subcats: np.ndarray) -> np.ndarray:
    """Per-result credit (queries x k): 1 same articleType, 0.5 same subCategory only, else 0."""
    qt = np.asarray(query_types, dtype=object)[:, None]
    qs = np.asarray(query_subcats, dtype=object)[:, None]
    same_type = np.asarray(result_types, dtype=object) == qt
    same_sub = np.asarray(result_subcats, dtype=object) == qs
    return np.where(same_type, 1.0, np.where(same_sub, 0.5, 0.0))


def retrieval_metrics(index, queries: np.ndarray, query_ids: Sequence[int], products: pd.DataFrame,
                      k: int = 5, skip_self: bool = True) -> dict:
    """The poster's score and precision@k of ``index`` for query vectors.

    ``products`` is indexed by product id with ``articleType`` and ``subCategory``. A query's
    own id is never counted as a result (it is skipped, and the next result taken) unless
    ``skip_self=False``: the poster's protocol read literally, where the index holds the query.
    """
    found, _ = index.query_batch(queries, k + 1)
    query_ids = np.asarray(query_ids, dtype=np.int64)
    keep = found != query_ids[:, None] if skip_self else np.ones(found.shape, bool)
    results = np.array([row[mask][:k] for row, mask in zip(found, keep)])
    if results.shape[1] < k:
        raise ValueError(f"the index holds too few products for k={k}")
    q = products.loc[query_ids]
    r_types = products["articleType"].to_numpy(dtype=object)[products.index.get_indexer(results.ravel())]
    r_subs = products["subCategory"].to_numpy(dtype=object)[products.index.get_indexer(results.ravel())]
    credit = match_scores(q["articleType"], q["subCategory"], r_types.reshape(results.shape),
                          r_subs.reshape(results.shape))
    return {"poster_score": float(credit.mean()), f"precision_at_{k}": float((credit == 1.0).mean()),
            "queries": int(len(query_ids)), "k": k}


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str]) -> dict:
    """Accuracy and macro-F1 over the classes in ``y_true`` (a prediction outside them, such as a
    fallback answer, counts as a miss without adding a class of its own to the average)."""
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, labels=sorted(set(y_true)), average="macro")),
            "n": int(len(y_true))}


def confused_pairs(y_true: Sequence[str], y_pred: Sequence[str], subcategory: dict[str, str] | None = None,
                   top: int = 10) -> list[dict]:
    """The ``top`` pairs of classes mistaken for each other (either way round), most errors first:
    ``{"pair", "errors", "share" (of all errors), "cumulative_share", "same_subcategory"}``.
    ``same_subcategory`` (when ``subcategory`` maps each class to one) says whether the poster's
    score still gives those mistakes half credit."""
    y_true, y_pred = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    wrong = y_true != y_pred
    counts = Counter(tuple(sorted(p)) for p in zip(y_true[wrong], y_pred[wrong]))
    rows, total, seen = [], max(int(wrong.sum()), 1), 0
    for (a, b), n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]:
        seen += n
        row = {"pair": f"{a} / {b}", "errors": n, "share": n / total, "cumulative_share": seen / total}
        if subcategory is not None:
            row["same_subcategory"] = subcategory.get(a) is not None and subcategory.get(a) == subcategory.get(b)
        rows.append(row)
    return rows


def latency_ms(fn: Callable[[object], object], inputs: Sequence, warmup: int = 3) -> dict:
    """p50/p95/mean milliseconds of ``fn(x)`` over ``inputs`` (after ``warmup`` calls)."""
    if not inputs:
        raise ValueError("latency_ms needs at least one input")
    for x in list(inputs)[:warmup]:
        fn(x)
    times = []
    for x in inputs:
        start = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - start) * 1000)
    t = np.asarray(times)
    return {"p50_ms": float(np.percentile(t, 50)), "p95_ms": float(np.percentile(t, 95)),
            "mean_ms": float(t.mean()), "n": int(len(t))}


class ClassPriorIndex:
    """An index whose answers ``bot.with_class_prior`` re-orders, as ``ShopBot.similar`` does (for
    ``retrieval_metrics``): the ``pool`` nearest by cosine, then cosine + ``weight`` x log p(type)."""

    def __init__(self, bot, gallery, weight: float, pool: int):
        self.bot, self.gallery, self.weight, self.pool = bot, gallery, weight, pool

    def query_batch(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        ids, scores = self.gallery.query_batch(queries, max(self.pool, k) if self.weight else k)
        return self.bot.with_class_prior(queries, ids, scores, k, self.weight) if self.weight else (ids, scores)


def split_gallery(bot, split: pd.DataFrame, kind: str = "exact", **params):
    """The strict protocol's index: the bot's embeddings of the train+valid products only, in an
    index of ``kind`` (``exact`` by default; the bot's own kind and ``params`` to measure what it ships)."""
    from .index import build_index

    gallery_ids = split.loc[split["split"] != "test", "id"].to_numpy()
    vectors = bot.index.vectors[bot.positions(gallery_ids)]
    return ExactIndex(vectors, gallery_ids) if kind == "exact" else build_index(kind, vectors, gallery_ids, **params)


def split_retrieval_metrics(bot, split: pd.DataFrame, k: int = 5) -> dict:
    """The poster's protocol: test-split embeddings query an index of the train+valid ones."""
    test_ids = split.loc[split["split"] == "test", "id"].to_numpy()
    queries = bot.index.vectors[bot.positions(test_ids)]
    return retrieval_metrics(split_gallery(bot, split), queries, test_ids, split.set_index("id"), k=k)


def literal_retrieval_metrics(bot, split: pd.DataFrame | None = None, fraction: float = 0.2, k: int = 5,
                              seed: int = 42) -> dict:
    """The poster's protocol read literally: a random ``fraction`` of the whole dataset queries an
    exact index that holds all of it, the query included (its own image usually comes first and
    earns full credit). The dataset is Fashion-37 (the ``split``'s products, what the model was
    trained to tell apart; all embedded products when None). Generous by construction; the strict
    split protocol is the headline."""
    ids = np.asarray(bot.index.ids, dtype=np.int64)
    if split is not None:
        ids = np.intersect1d(ids, split["id"].to_numpy())
    vectors = bot.index.vectors[bot.positions(ids)]
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(ids), max(1, round(fraction * len(ids))), replace=False))
    m = retrieval_metrics(ExactIndex(vectors, ids), vectors[chosen], ids[chosen], bot.products, k=k, skip_self=False)
    return m | {"fraction": fraction, "index_size": int(len(ids)), "seed": seed}
