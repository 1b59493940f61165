"""Exact search, the poster's score and the metric helpers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shopbot_utils.evaluate import (ExactIndex, classification_metrics, confused_pairs, l2_normalize,
                                    latency_ms, match_scores, retrieval_metrics)


def test_exact_index_matches_brute_force():
    rng = np.random.default_rng(0)
    base, queries = rng.normal(size=(500, 32)), rng.normal(size=(20, 32))
    index = ExactIndex(base, ids=np.arange(1000, 1500))
    ids, scores = index.query_batch(queries, k=7)
    sims = l2_normalize(queries) @ l2_normalize(base).T
    expected = np.argsort(-sims, axis=1)[:, :7] + 1000
    assert np.array_equal(ids, expected)
    assert np.all(np.diff(scores, axis=1) <= 1e-7)
    one_ids, one_scores = index.query(queries[3], k=7)
    assert np.array_equal(one_ids, ids[3]) and np.allclose(one_scores, scores[3])


def test_exact_index_edge_cases():
    index = ExactIndex(np.eye(3), ids=[5, 6, 7])
    ids, _ = index.query(np.array([1.0, 0.2, 0.0]), k=10)
    assert ids.tolist() == [5, 6, 7]
    with pytest.raises(ValueError, match="k must be"):
        index.query(np.ones(3), k=0)
    with pytest.raises(ValueError, match="dimensions"):
        index.query(np.ones(4))
    with pytest.raises(ValueError, match="one row per id"):
        ExactIndex(np.eye(3), ids=[1, 2])


def test_match_scores_by_hand():
    credit = match_scores(["Shirts", "Heels"], ["Topwear", "Shoes"],
                          np.array([["Shirts", "Tshirts", "Heels"], ["Flats", "Heels", "Watches"]]),
                          np.array([["Topwear", "Topwear", "Shoes"], ["Shoes", "Shoes", "Watches"]]))
    assert credit.tolist() == [[1, 0.5, 0], [0.5, 1, 0]]


def test_retrieval_metrics_never_counts_the_query_itself():
    products = pd.DataFrame({"articleType": ["A", "A", "B", "B"], "subCategory": ["x", "x", "x", "y"]},
                            index=[1, 2, 3, 4])
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=float)
    index = ExactIndex(vectors, ids=[1, 2, 3, 4])
    m = retrieval_metrics(index, vectors[[0, 3]], [1, 4], products, k=1)
    # query 1 -> 2 (same type: 1); query 4 -> 3 (same type: 1). Without skipping itself both are trivial too,
    # so check k=2: query 1 -> [2, 4] = 1 + 0 ; query 4 -> [3, 2] = 1 + 0.
    assert m["poster_score"] == 1.0
    m2 = retrieval_metrics(index, vectors[[0, 3]], [1, 4], products, k=2)
    assert m2["poster_score"] == pytest.approx((1 + 0 + 1 + 0) / 4)
    assert m2["precision_at_2"] == pytest.approx(0.5)


def test_classification_metrics_and_latency():
    m = classification_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"])
    assert m["accuracy"] == 0.75 and m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    lat = latency_ms(lambda x: sum(range(x)), [1000] * 10)
    assert 0 < lat["p50_ms"] <= lat["p95_ms"] and lat["n"] == 10
    with pytest.raises(ValueError):
        latency_ms(lambda x: x, [])


def test_confused_pairs_count_both_directions_most_first():
    true = ["Heels", "Flats", "Heels", "Tops", "Tshirts", "Watches", "Heels", "Tops"]
    pred = ["Flats", "Heels", "Flats", "Tshirts", "Tshirts", "Heels", "Heels", "Tops"]
    sub = {"Heels": "Shoes", "Flats": "Shoes", "Tops": "Topwear", "Tshirts": "Topwear", "Watches": "Watches"}
    rows = confused_pairs(true, pred, sub)
    assert [(r["pair"], r["errors"]) for r in rows] == [("Flats / Heels", 3), ("Heels / Watches", 1),
                                                        ("Tops / Tshirts", 1)]  # ties by name
    assert [r["same_subcategory"] for r in rows] == [True, False, True]
    assert rows[0]["share"] == pytest.approx(0.6) and rows[-1]["cumulative_share"] == pytest.approx(1.0)
    assert confused_pairs(true, pred, top=1) == [{"pair": "Flats / Heels", "errors": 3, "share": 0.6,
                                                  "cumulative_share": 0.6}]
    assert confused_pairs(["a", "b"], ["a", "b"]) == []
