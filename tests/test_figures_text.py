"""The text side's figures (notebooks 06 and 06b): no legend over the data, labels clear of the bars."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd

from shopbot_utils import plots


def _legend_above_axes(fig) -> bool:
    """Every legend of the figure lies above its axes' plotting area (none covers the data)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    out = []
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is not None:
            out.append(legend.get_window_extent(renderer).y0 >= ax.get_window_extent(renderer).y1 - 1)
    return bool(out) and all(out)


def _report() -> pd.DataFrame:
    rankers = ["old parser (filter, first rows)", "BM25 alone", "MiniLM alone", "ShopBot (filters + BM25/MiniLM fusion)"]
    rows = []
    for wording, values in (("catalogue", [0.87, 0.96, 0.61, 0.998]), ("kept_apart", [0.22, 0.36, 0.19, 0.85])):
        for ranker, p in zip(rankers, values):
            rows.append({"wording": wording, "half": "test", "ranker": ranker, "p_at_5": p,
                         "p_at_5_ci": (p - 0.04, min(1.0, p + 0.04))})
    return pd.DataFrame(rows)


def test_text_search_rankers_keeps_its_legend_off_the_bars_and_labels_right_of_the_intervals():
    report = _report()
    fig = plots.text_search_rankers(report)
    assert _legend_above_axes(fig)
    ax = fig.axes[0]
    labels = {round(t.get_position()[1], 2): t for t in ax.texts}
    for (_, row), y in zip(report.iterrows(), np.r_[np.arange(4) - 0.2, np.arange(4) + 0.2]):
        text = labels[round(y, 2)]
        assert text.get_text() == f"{row['p_at_5']:.2f}"
        assert text.get_position()[0] > row["p_at_5_ci"][1]  # right of the interval's end, not on it


def test_fallback_confidence_shows_both_shares_and_the_threshold():
    conf_in, conf_out = np.r_[np.ones(90), np.full(10, 0.3)], np.r_[np.zeros(8), np.full(2, 0.9)]
    fig = plots.fallback_confidence(conf_in, conf_out, threshold=0.45)
    ax = fig.axes[0]
    heights = [sum(p.get_height() for p in container) for container in ax.containers]
    assert np.allclose(heights, [1.0, 1.0])  # each group's bars are shares of that group
    assert [line.get_xdata()[0] for line in ax.get_lines()] == [0.45]
    assert _legend_above_axes(fig)
    assert "in-scope questions (100)" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_threshold_tradeoff_keeps_its_legend_off_the_curves():
    t = np.round(np.linspace(0, 0.99, 100), 2)
    curve = pd.DataFrame({"threshold": t, "in_scope_fallback": t ** 4, "worst_source_fallback": t ** 3, "oos_recall": 0.9 + 0.1 * t})
    assert _legend_above_axes(plots.threshold_tradeoff(curve, 0.4, 0.02))
