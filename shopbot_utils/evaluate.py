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
                      k: int = 5) -> dict:
    """The poster's score and precision@k of ``index`` for query vectors.

    ``products`` is indexed by product id with ``articleType`` and ``subCategory``. A query's
    own id is never counted as a result (it is skipped, and the next result taken).
    """
    found, _ = index.query_batch(queries, k + 1)
    query_ids = np.asarray(query_ids, dtype=np.int64)
    keep = found != query_ids[:, None]
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
