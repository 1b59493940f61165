"""Every notebook runs top to bottom with papermill at small parameters on the real catalogue."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9]*.ipynb"))
SMALL = {"per_class": 4, "epochs": 1, "scope": "split", "latency_queries": 5, "n_examples": 3,
         "datasketch_limit": 60, "scale_sizes": [500, 1000], "faiss_scale_max": 1000, "n_queries": 6,
         "isnet_sizes": [320], "min_group": 1, "max_queries": 15, "refine_cases": 10}


def test_every_notebook_has_a_parameters_cell_first():
    assert NOTEBOOKS
    for path in NOTEBOOKS:
        code = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), path.name


def test_notebooks_run_in_order(tmp_path, monkeypatch, catalogue_source):
    import papermill as pm

    artifacts, figures = tmp_path / "artifacts", tmp_path / "figures"
    monkeypatch.setenv("SHOPBOT_ARTIFACTS", str(artifacts))
    monkeypatch.setenv("SHOPBOT_FIGURES", str(figures))
    monkeypatch.setenv("SHOPBOT_DATA", str(catalogue_source))
    for path in NOTEBOOKS:
        params = {k: v for k, v in SMALL.items()
                  if f"{k} =" in nbformat.read(path, as_version=4).cells[1].source}
        pm.execute_notebook(str(path), str(tmp_path / path.name), parameters=params,
                            cwd=str(path.parent), progress_bar=False, kernel_name="python3")
    assert json.loads((artifacts / "index.json").read_text())["kind"] == "lsh"
    assert json.loads((artifacts / "search" / "search.json").read_text())["format"] == "shopbot-text-search"
    intent_metrics = json.loads((artifacts / "intents" / "metrics.json").read_text())
    assert 0 <= intent_metrics["shopbot"]["all"]["accuracy"] <= 1
    metrics = json.loads((artifacts / "metrics.json").read_text())
    assert 0 <= metrics["retrieval"]["poster_score"] <= 1
    assert metrics["classification"]["n"] == 37 * 1  # 20% of 4 per class
    expected = {"class_distribution", "sample_grid", "training_curves", "confusion_matrix", "top_losses",
                "similar_examples", "metrics_vs_baseline", "intent_threshold_tradeoff",
                "index_recall_latency", "index_scaling", "background_composites", "background_removal_examples",
                "search_examples", "text_search_rankers"}
    assert expected <= {p.stem for p in figures.glob("*.png")}
