"""After nbval has re-run the golden notebooks (collected just before this file, in order), what
their run wrote: the checks the papermill run of every notebook used to make."""
from __future__ import annotations

import json

import pytest

from conftest import _golden_work


def test_the_golden_run_built_every_artifact_and_figure():
    if not _golden_work:
        pytest.fail("the golden notebooks did not run in this session: run `pytest tests/golden` (nbval is in addopts)")
    artifacts, figures = _golden_work[0] / "artifacts", _golden_work[0] / "figures"
    assert json.loads((artifacts / "index.json").read_text())["kind"] == "lsh"
    assert json.loads((artifacts / "search" / "search.json").read_text())["format"] == "shopbot-text-search"
    intent_metrics = json.loads((artifacts / "intents" / "metrics.json").read_text())
    assert 0 <= intent_metrics["shopbot"]["all"]["accuracy"] <= 1
    metrics = json.loads((artifacts / "metrics.json").read_text())
    assert 0 <= metrics["retrieval"]["poster_score"] <= 1 and 0 <= metrics["retrieval_literal"]["poster_score"] <= 1
    assert metrics["classification"]["n"] == 37 * 1  # 20% of 4 per class
    assert metrics["retrieval_literal"]["queries"] == round(0.2 * metrics["retrieval_literal"]["index_size"])
    expected = {"class_distribution", "sample_grid", "training_curves", "confusion_matrix", "top_losses",
                "similar_examples", "metrics_vs_baseline", "intent_threshold_tradeoff",
                "index_recall_latency", "index_scaling", "background_composites", "background_removal_examples",
                "search_examples", "text_search_rankers"}
    assert expected <= {p.stem for p in figures.glob("*.png")}
