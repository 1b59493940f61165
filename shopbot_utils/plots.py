"""Figures the notebooks show and save to ``figures/``."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib
import matplotlib.figure

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from . import config
from .data import Catalogue


def savefig(fig: matplotlib.figure.Figure, name: str, folder: str | Path | None = None) -> Path:
    """Save ``fig`` as ``<figures>/<name>.png`` (``SHOPBOT_FIGURES`` or ``figures/``)."""
    folder = Path(folder) if folder is not None else config.figures_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=72, bbox_inches="tight")
    return path


def class_distribution(split: pd.DataFrame) -> matplotlib.figure.Figure:
    """Products per article type, stacked by split."""
    counts = split.groupby(["articleType", "split"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=[c for c in ("train", "valid", "test") if c in counts])
    counts = counts.loc[counts.sum(axis=1).sort_values().index]
    fig, ax = plt.subplots(figsize=(8, 9))
    counts.plot.barh(stacked=True, ax=ax, width=0.8, color=["#4c72b0", "#dd8452", "#55a868"])
    ax.set_xlabel("products")
    ax.set_ylabel("")
    ax.set_title(f"Fashion-{len(counts)}: {int(counts.values.sum()):,} products, heavily imbalanced")
    ax.legend(title="split", loc="lower right")
    return fig


def _show_images(paths: Sequence[Path | Image.Image], titles: Sequence[str], cols: int,
                 size: float = 1.1, colors: Sequence[str] | None = None) -> matplotlib.figure.Figure:
    rows = max(1, int(np.ceil(len(paths) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * size * 1.45), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (ax, p, t) in enumerate(zip(axes.ravel(), paths, titles)):
        img = p if isinstance(p, Image.Image) else Image.open(p).convert("RGB")
        ax.imshow(img)
        ax.set_title(t, fontsize=7, color=colors[i] if colors else "black")
    fig.tight_layout()
    return fig


def sample_grid(catalogue: Catalogue, split: pd.DataFrame, seed: int = config.SEED) -> matplotlib.figure.Figure:
    """One random product of each class."""
    picks = split.groupby("articleType").sample(1, random_state=seed).sort_values("articleType")
    return _show_images([catalogue.image_path(i) for i in picks["id"]], picks["articleType"].tolist(), cols=10)


def training_curves(history) -> matplotlib.figure.Figure:
    """Training loss per batch and per epoch, validation loss and metrics per epoch, from a
    ``vision.TrainingHistory`` (or a fastai learner: its ``history``, else its recorder)."""
    from .vision import TrainingHistory

    if not isinstance(history, TrainingHistory):
        kept = getattr(history, "history", None)
        history = kept if isinstance(kept, TrainingHistory) else TrainingHistory.from_recorder(history.recorder)
    values = np.array(history.values, dtype=float).reshape(len(history.values), len(history.names))
    column = {name: values[:, i] for i, name in enumerate(history.names)}
    epochs = np.arange(1, len(values) + 1)
    per_epoch = max(1, len(history.losses) // max(1, len(values)))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    batches = (np.arange(len(history.losses)) + 1) / per_epoch
    ax1.plot(batches, history.losses, color="#4c72b0", alpha=0.45, lw=1, label="train loss (per batch)")
    if "train_loss" in column:
        ax1.plot(epochs, column["train_loss"], "s-", color="#4c72b0", label="train loss (end of epoch)")
    if "valid_loss" in column:
        ax1.plot(epochs, column["valid_loss"], "o-", color="#dd8452", label="valid loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss (label-smoothed cross-entropy)")
    ax1.set_xticks(epochs)
    ax1.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, fontsize=8, frameon=False)
    for name in (n for n in history.names if n not in ("train_loss", "valid_loss")):
        ax2.plot(epochs, column[name], "o-", label="valid " + {"f1_score": "macro-F1"}.get(name, name.replace("_", " ")))
    ax2.set_xlabel("epoch")
    ax2.set_xticks(epochs)
    ax2.set_ylim(0, 1)
    ax2.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def confusion_matrix(y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str]) -> matplotlib.figure.Figure:
    """Row-normalised confusion matrix in percent (recall on the diagonal; cells under 1% blank)."""
    from sklearn.metrics import confusion_matrix as _cm

    cm = _cm(y_true, y_pred, labels=list(classes), normalize="true") * 100
    n = len(classes)
    fig, ax = plt.subplots(figsize=(0.3 * n + 2, 0.3 * n + 1.5))
    ax.imshow(cm, cmap="Blues", vmin=0, vmax=100)
    ax.set_xticks(range(n), classes, rotation=90, fontsize=9)
    ax.set_yticks(range(n), classes, fontsize=9)
    for i, j in zip(*np.nonzero(cm >= 1)):
        ax.text(j, i, f"{cm[i, j]:.0f}", ha="center", va="center", fontsize=8,
                color="white" if cm[i, j] > 50 else "black")
    ax.set_xlabel("predicted", fontsize=10)
    ax.set_ylabel("actual", fontsize=10)
    ax.set_title("% of each actual type predicted as each type (validation; blank: under 1%)", fontsize=10)
    fig.tight_layout()
    return fig


def lr_finder(lrs: Sequence[float], losses: Sequence[float], chosen: float,
              suggested: float | None = None) -> matplotlib.figure.Figure:
    """fastai's learning-rate finder: loss against a rising learning rate, the chosen rate marked."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.plot(lrs, losses, color="#4c72b0", label="training loss (moving average)")
    ax.axvline(chosen, color="firebrick", ls="--", lw=1.5, label=f"chosen lr = {chosen:g}")
    if suggested is not None:
        at = int(np.argmin(np.abs(np.log(np.asarray(lrs)) - np.log(suggested))))
        ax.plot([suggested], [losses[at]], "o", color="#55a868", ms=8, label=f"fastai's valley = {suggested:.1e}")
    ax.set_xscale("log")
    ax.set_ylim(top=min(max(losses), 1.5 * losses[0]))  # the divergence at the end would squash the curve
    ax.set_xlabel("learning rate (log scale), one batch per step")
    ax.set_ylabel("loss")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def _box(ax, x: float, y: float, text: str, w: float, h: float, color: str, fontsize: float = 9,
         weight: str = "normal") -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.01,rounding_size=0.02",
                                facecolor=color, edgecolor="#333333", lw=1))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, fontweight=weight, wrap=True)


def _arrow(ax, start: tuple[float, float], end: tuple[float, float], text: str = "") -> None:
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="-|>", color="#333333", lw=1.3))
    if text:
        ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.035, text, ha="center", fontsize=8,
                color="#555555")


def pipeline_diagram() -> matplotlib.figure.Figure:
    """The course's pipeline as boxes: a photo and a message to products and replies (notebooks in brackets)."""
    fig, ax = plt.subplots(figsize=(12, 5.6))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    w, h, y1 = 0.135, 0.15, 0.84
    photo = [(0.07, "shopper's\nphoto", "#f2f2f2"), (0.235, "background\nremoval (05)", "#fde2c8"),
             (0.40, "CNN fine-tuned\non Fashion-37\n(02)", "#d6e4f5"), (0.565, "embedding:\n512 numbers\n(03)", "#d6e4f5"),
             (0.73, "index: nearest\nneighbours (04)", "#d6e4f5"), (0.915, "similar\nproducts", "#dff0d8")]
    for x, text, color in photo:
        _box(ax, x, y1, text, w, h, color, fontsize=10)
    for (x0, *_), (x1, *_) in zip(photo, photo[1:]):
        _arrow(ax, (x0 + w / 2, y1), (x1 - w / 2, y1))
    yc = 0.55
    _box(ax, 0.40, yc, "catalogue: images\n+ styles.csv (01)", 0.18, 0.12, "#f2f2f2", fontsize=10)
    _arrow(ax, (0.40, yc + 0.06), (0.40, y1 - h / 2))
    ax.text(0.407, (yc + y1) / 2 - 0.01, "trains", fontsize=9, color="#555555")
    _arrow(ax, (0.49, yc + 0.02), (0.73, y1 - h / 2))
    ax.text(0.62, yc + 0.03, "every catalogue image is\nembedded once and indexed", fontsize=9, color="#555555")
    ym, yi, ys = 0.19, 0.28, 0.09
    _box(ax, 0.07, ym, "shopper's\nmessage", w, h, "#f2f2f2", fontsize=10)
    _box(ax, 0.40, yi, "intent classifier: bag of words\n-> 3-layer network (06)", 0.27, 0.12, "#e8dff5", fontsize=10)
    _box(ax, 0.40, ys, "text search: BM25 +\nname embeddings (06b)", 0.27, 0.12, "#e8dff5", fontsize=10)
    _box(ax, 0.73, yi, "a reply: orders, returns,\npayment, greetings ...", 0.21, 0.12, "#dff0d8", fontsize=10)
    _box(ax, 0.73, ys, "matching products", 0.21, 0.12, "#dff0d8", fontsize=10)
    _arrow(ax, (0.07 + w / 2, ym + 0.03), (0.40 - 0.135, yi))
    _arrow(ax, (0.07 + w / 2, ym - 0.03), (0.40 - 0.135, ys))
    ax.text(0.25, 0.0, "when it asks for products", fontsize=9, color="#555555", ha="right")
    _arrow(ax, (0.40 + 0.135, yi), (0.73 - 0.105, yi))
    _arrow(ax, (0.40 + 0.135, ys), (0.73 - 0.105, ys))
    ax.text(0.93, 0.19, "07: how good\nis it?\n08: the chat\nputs both\ntogether", ha="center", va="center",
            fontsize=10, color="#333333")
    ax.set_title("ShopBot: a photo or a message in, products or a reply out (notebook numbers in brackets)",
                 fontsize=11)
    return fig


def _layer_label(module) -> str:
    """A short name for one layer of a fastai head, with its size."""
    name = type(module).__name__
    if name == "AdaptiveConcatPool2d":
        return "concat pool\nmax, mean\nper channel"
    if name == "Flatten":
        return "flatten"
    if name.startswith("BatchNorm"):
        return f"Batch-\nNorm\n{module.num_features}"
    if name == "Dropout":
        return f"dropout\np = {module.p:g}"
    if name == "Linear":
        return f"linear\n{module.in_features}\n\u2192 {module.out_features}"
    if name == "ReLU":
        return "ReLU\nmax(0, x)"
    return name


def head_diagram(model) -> matplotlib.figure.Figure:
    """A ``ShopNet``'s fastai head, one box per layer, the embedding (output of ``head[embed_cut - 1]``) marked."""
    layers, cut = list(model.head), model.embed_cut
    n = len(layers) + 2
    fig, ax = plt.subplots(figsize=(14, 2.9))
    ax.set_xlim(0, n)
    ax.set_ylim(0, 1)
    ax.axis("off")
    channels = layers[2].num_features // 2 if hasattr(layers[2], "num_features") else "C"
    labels = [f"body's\nfeature map\n{channels} x h x w"]
    labels += [_layer_label(m) for m in layers] + ["softmax\n\u2192 class\nprobabilities"]
    for i, text in enumerate(labels):
        color = "#f2f2f2" if i in (0, n - 1) else ("#d6e4f5" if i <= cut else "#fde2c8")
        _box(ax, i + 0.5, 0.55, text, 0.86, 0.5, color, fontsize=8.5)
        if i:
            _arrow(ax, (i - 0.07, 0.55), (i + 0.07, 0.55))
    ax.annotate("", xy=(cut + 1, 0.29), xytext=(cut + 1, 0.13),
                arrowprops=dict(arrowstyle="-|>", color="firebrick", lw=1.5))
    ax.text(cut + 1, 0.04, f"the embedding: {model.embed_dim} numbers", ha="center", fontsize=9, color="firebrick")
    ax.text((cut + 1) / 2 + 0.5, 0.9, "blue: computes the embedding", ha="center", fontsize=9, color="#2b5a8f")
    ax.text((cut + n) / 2 + 0.5, 0.9, "orange: one score per class", ha="center", fontsize=9, color="#a0522d")
    return fig


def top_losses(catalogue: Catalogue, frame: pd.DataFrame, probs: np.ndarray, classes: Sequence[str],
               n: int = 15) -> matplotlib.figure.Figure:
    """The ``n`` images the model got most wrong: predicted / actual / loss / probability."""
    target = np.array([list(classes).index(c) for c in frame["articleType"]])
    p_true = probs[np.arange(len(target)), target]
    loss = -np.log(np.clip(p_true, 1e-9, 1))
    worst = np.argsort(-loss)[:n]
    titles = [f"{classes[probs[i].argmax()]}\n/ {frame['articleType'].iloc[i]}\n{loss[i]:.2f} / {p_true[i]:.2f}"
              for i in worst]
    return _show_images([catalogue.image_path(frame["id"].iloc[i]) for i in worst], titles, cols=min(n, 8))


def similar_grid(queries: Sequence[Path | Image.Image], results: Sequence[Sequence], catalogue: Catalogue,
                 query_labels: Sequence[str] | None = None) -> matplotlib.figure.Figure:
    """Each query (left) beside its results; green titles share the query's article type."""
    k = max(len(r) for r in results)
    fig, axes = plt.subplots(len(queries), k + 1, figsize=((k + 1) * 1.2, len(queries) * 1.7), squeeze=False)
    for row, (q, found) in enumerate(zip(queries, results)):
        for ax in axes[row]:
            ax.axis("off")
        img = q if isinstance(q, Image.Image) else Image.open(q).convert("RGB")
        axes[row, 0].imshow(img)
        label = query_labels[row] if query_labels else "query"
        axes[row, 0].set_title(f"query\n{label}", fontsize=7, fontweight="bold")
        for col, product in enumerate(found, start=1):
            axes[row, col].imshow(Image.open(catalogue.image_path(product.id)).convert("RGB"))
            same = query_labels is not None and product.articleType == query_labels[row]
            axes[row, col].set_title(f"{product.articleType}\n{product.score:.2f}", fontsize=7,
                                     color="green" if same else "firebrick")
    fig.tight_layout()
    return fig


def embedding_projection(points: np.ndarray, labels: Sequence[str],
                         explained: Sequence[float] | None = None) -> matplotlib.figure.Figure:
    """2-D projections of embeddings (n, 2), one colour per article type, named at its median where room allows."""
    labels = np.asarray(labels, dtype=object)
    kinds, counts = np.unique(labels, return_counts=True)
    palette = [*plt.get_cmap("tab20").colors, *plt.get_cmap("tab20b").colors, *plt.get_cmap("Dark2").colors]
    colour = {kind: palette[i % len(palette)] for i, kind in enumerate(kinds)}
    fig, ax = plt.subplots(figsize=(10, 8))
    for kind in kinds:
        part = points[labels == kind]
        ax.scatter(part[:, 0], part[:, 1], s=7, color=colour[kind], alpha=0.6, edgecolors="none")
    low, high = points.min(axis=0), points.max(axis=0)
    ax.set_xlim(low[0] - 0.03 * (high[0] - low[0]), high[0] + 0.03 * (high[0] - low[0]))
    ax.set_ylim(low[1] - 0.03 * (high[1] - low[1]), high[1] + 0.03 * (high[1] - low[1]))
    renderer, placed, unlabelled = fig.canvas.get_renderer(), [], []
    for kind in kinds[np.argsort(-counts, kind="stable")]:  # the largest types get their labels first
        text = ax.annotate(kind, tuple(np.median(points[labels == kind], axis=0)), fontsize=8, ha="center",
                           va="center", bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": colour[kind],
                                              "alpha": 0.8})
        box = text.get_window_extent(renderer).expanded(1.1, 1.3)
        if any(box.overlaps(other) for other in placed):
            text.remove()  # no room: named in the key beside the plot instead
            unlabelled.append(kind)
        else:
            placed.append(box)
    if unlabelled:
        handles = [plt.Line2D([], [], ls="", marker="o", color=colour[kind], label=kind) for kind in sorted(unlabelled)]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False,
                  title="no room for a label:", title_fontsize=8)
    share = (lambda j: f" ({explained[j]:.0%} of the variance)") if explained is not None else (lambda j: "")
    ax.set_xlabel(f"first principal direction{share(0)}")
    ax.set_ylabel(f"second principal direction{share(1)}")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{len(points):,} embeddings of {len(kinds)} article types, on their two main directions")
    return fig


def metrics_vs_baseline(metrics: dict) -> matplotlib.figure.Figure:
    """Our test metrics (the poster score as the bot ships it) next to the frozen baseline and the targets."""
    names = ["accuracy", "macro_f1", "poster_score"]
    ours = [metrics["classification"]["accuracy"], metrics["classification"]["macro_f1"],
            metrics["retrieval_shipped"][-1]["poster_score"]]
    base = [metrics["frozen_baseline"][n] for n in names]
    x = np.arange(len(names))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.5), gridspec_kw={"width_ratios": [3, 1]})
    ax.bar(x - 0.2, base, 0.4, label="frozen ImageNet baseline", color="#bbbbbb")
    ax.bar(x + 0.2, ours, 0.4, label="fine-tuned (ours)", color="#4c72b0")
    for i, n in enumerate(names):
        ax.hlines(metrics["targets"][n], i - 0.45, i + 0.45, colors="firebrick", linestyles="--",
                  label="target" if i == 0 else None)
        ax.text(i + 0.2, ours[i] + 0.005, f"{ours[i]:.3f}", ha="center", fontsize=8)
        ax.text(i - 0.2, base[i] + 0.005, f"{base[i]:.3f}", ha="center", fontsize=8)
    ax.set_xticks(x, names)
    ax.set_ylim(max(0.0, np.floor(min(base + ours) * 10) / 10 - 0.1), 1.0)
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.12), ncol=3, fontsize=8, frameon=False)
    ax.set_title(f"test split ({metrics['classification']['n']:,} images)")
    lat = metrics["latency_similar"]
    ax2.bar(["p50", "p95"], [lat["p50_ms"], lat["p95_ms"]], color="#55a868")
    ax2.axhline(metrics["targets"]["p50_ms"], color="firebrick", linestyle="--")
    ax2.set_ylabel("ms per similar() call")
    ax2.set_title(f"latency, {lat['index_size']:,} products")
    fig.tight_layout()
    return fig


def threshold_tradeoff(curve: pd.DataFrame, chosen: float, max_fallback: float) -> matplotlib.figure.Figure:
    """Out-of-scope recall against in-scope fallback as the confidence threshold rises."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(curve["threshold"], curve["oos_recall"], label="out-of-scope caught (recall)")
    ax.plot(curve["threshold"], curve["worst_source_fallback"], label="in-scope fallback (worst source)")
    ax.plot(curve["threshold"], curve["in_scope_fallback"], ":", label="in-scope fallback (all)")
    ax.axvline(chosen, color="grey", ls="--", lw=1)
    ax.axhline(max_fallback, color="grey", ls=":", lw=1)
    ax.annotate(f"chosen {chosen:.2f}", (chosen, 0.65), xytext=(4, 0), textcoords="offset points")
    ax.set_xlabel("confidence threshold")
    ax.set_ylabel("rate (validation)")
    ax.set_ylim(0, 1.02)
    ax.set_title("Fallback threshold: catching out-of-scope costs in-scope answers", pad=34)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, fontsize=8, frameon=False)  # above the curves
    return fig


def fallback_confidence(conf_in: np.ndarray, conf_out: np.ndarray, threshold: float) -> matplotlib.figure.Figure:
    """Share of in-scope and of out-of-scope messages at each confidence, the fallback threshold marked."""
    bins = np.linspace(0, 1, 21)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for conf, label, colour in ((conf_in, "in-scope questions", "#4c72b0"), (conf_out, "out-of-scope questions", "#dd8452")):
        conf = np.clip(np.asarray(conf, dtype=float), 0, 1)
        ax.hist(conf, bins=bins, weights=np.full(len(conf), 1 / max(1, len(conf))), color=colour, alpha=0.55,
                edgecolor=colour, lw=1.2, label=f"{label} ({len(conf):,})")
    ax.axvline(threshold, color="firebrick", ls="--", lw=1.5)
    ax.text(threshold - 0.01, 0.93, "fall back", ha="right", color="firebrick", fontsize=9, transform=ax.get_xaxis_transform())
    ax.text(threshold + 0.01, 0.93, f"answer (threshold {threshold:.2f})", ha="left", color="firebrick", fontsize=9,
            transform=ax.get_xaxis_transform())
    ax.set_yscale("log")
    ax.set_ylim(top=4)  # room above the tallest bar for the labels
    ax.set_xlim(0, 1)
    ax.set_xlabel("confidence: the highest probability of an in-scope intent")
    ax.set_ylabel("share of the messages (log scale)")
    ax.set_title("Confidence of held-out messages: in scope or not", pad=22)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def recall_vs_latency(results: pd.DataFrame) -> matplotlib.figure.Figure:
    """Recall@10 against exact search vs p50 single-query time, one point per index setting."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = {"exact": "black", "lsh": "#4c72b0", "faiss": "#dd8452", "datasketch": "#55a868"}
    for kind, part in results.groupby("kind"):
        ax.scatter(part["p50_ms"], part["recall@10"], s=40, color=colours.get(kind), label=kind, zorder=3)
        for _, row in part.iterrows():
            ax.annotate(row["index"].removeprefix(f"{kind} "), (row["p50_ms"], row["recall@10"]), fontsize=7,
                        xytext=(4, -3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("ms per single query (p50, one thread, log scale)")
    ax.set_ylabel("recall@10 vs exact search")
    ax.set_title("Recall against latency on the catalogue embeddings")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right")
    return fig


def index_scaling(scale: pd.DataFrame) -> matplotlib.figure.Figure:
    """Build time and query time against catalogue size, log-log, one line per index kind."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for kind, part in scale.groupby("kind"):
        axes[0].plot(part["n"], part["build_s"], "o-", label=kind)
        axes[1].plot(part["n"], part["p50_ms"], "o-", label=kind)
    for ax, label in zip(axes, ["build time (s)", "ms per query (p50)"]):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("vectors indexed (synthetic, 512-d)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.suptitle("How the indexes scale (one thread)")
    return fig


def hyperplane_buckets(point_sets: Sequence[np.ndarray], normals: np.ndarray,
                       titles: Sequence[str]) -> matplotlib.figure.Figure:
    """2-D points coloured by their SimHash bucket, beside the random lines (hyperplanes) that cut them."""
    fig, axes = plt.subplots(1, len(point_sets), figsize=(4.6 * len(point_sets), 4.4), squeeze=False)
    cmap = plt.get_cmap("tab20")
    for ax, points, title in zip(axes[0], point_sets, titles):
        keys = (points @ normals > 0) @ (2 ** np.arange(normals.shape[1]))
        found, sizes = np.unique(keys, return_counts=True)
        colour = {key: cmap(i % 20) for i, key in enumerate(found)}
        ax.scatter(points[:, 0], points[:, 1], s=12, c=[colour[k] for k in keys], edgecolors="none")
        reach = 1.1 * np.abs(np.concatenate(point_sets)).max()
        for w in normals.T:  # the line through 0 orthogonal to w
            d = np.array([-w[1], w[0]]) / np.linalg.norm(w)
            ax.plot([-reach * d[0], reach * d[0]], [-reach * d[1], reach * d[1]], color="0.3", lw=1)
            ax.annotate("", xy=0.25 * reach * w / np.linalg.norm(w), xytext=(0, 0),
                        arrowprops={"arrowstyle": "->", "color": "0.3"})
        ax.set_xlim(-reach, reach)
        ax.set_ylim(-reach, reach)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{title}\n{len(found)} buckets used; the largest holds {sizes.max()} of {len(points)} points",
                     fontsize=9)
    fig.suptitle(f"{normals.shape[1]} random hyperplanes (lines through 0, arrows: their normals w); "
                 "colour = bucket key", fontsize=10)
    fig.tight_layout()
    return fig


def collision_probability(binned: pd.DataFrame, n_bits: int) -> matplotlib.figure.Figure:
    """SimHash's collision probability against the angle: theory (curves) and our embeddings (points).

    ``binned``: one row per angle bin with ``theta`` (radians, the pairs' mean), ``bit`` and
    ``bucket`` (measured rates of one equal sign bit and of an equal ``n_bits``-bit key) and ``pairs``."""
    theta = np.linspace(0, np.pi, 200)
    deg = np.degrees(theta)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(deg, 1 - theta / np.pi, color="#4c72b0", lw=1.5, label=r"one bit: $1 - \theta/\pi$")
    ax.plot(deg, (1 - theta / np.pi) ** n_bits, color="#dd8452", lw=1.5,
            label=rf"one bucket ({n_bits} bits): $(1 - \theta/\pi)^{{{n_bits}}}$")
    ax.scatter(np.degrees(binned["theta"]), binned["bit"], color="#4c72b0", s=28, zorder=3,
               edgecolors="black", linewidths=0.5, label="measured on our embeddings: same bit")
    ax.scatter(np.degrees(binned["theta"]), binned["bucket"], color="#dd8452", s=28, zorder=3, marker="s",
               edgecolors="black", linewidths=0.5, label="measured: same bucket")
    ax.set_xlim(0, 180)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xticks(range(0, 181, 30))
    ax.set_xlabel("angle between the two products' centred embeddings (degrees)")
    ax.set_ylabel("probability of a collision")
    ax.set_title(f"SimHash collisions: theory against {int(binned['pairs'].sum()):,} pairs of products")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    return fig


def background_grid(rows: Sequence[tuple], catalogue: Catalogue) -> matplotlib.figure.Figure:
    """One row per query: the photo, the mask, the cut-out on white, then the top results.

    ``rows``: ``(photo, mask array, cut-out image, true articleType, [Product, ...])``; green titles
    share the query's article type.
    """
    images, titles, colors = [], [], []
    for photo, mask, cutout, label, found in rows:
        images += [photo, Image.fromarray((np.asarray(mask) * 255).astype(np.uint8)).convert("RGB"), cutout]
        titles += [f"photo\n{label}", "mask", "cut-out"]
        colors += ["black"] * 3
        for p in found:
            images.append(catalogue.image_path(p.id))
            titles.append(f"{p.articleType}\n{p.score:.2f}")
            colors.append("green" if p.articleType == label else "firebrick")
    return _show_images(images, titles, cols=3 + max(len(r[4]) for r in rows), size=1.05, colors=colors)


def mask_threshold(photo: Image.Image, soft: np.ndarray, truth: np.ndarray,
                   threshold: float = 0.5) -> matplotlib.figure.Figure:
    """A soft alpha mask, its histogram, the binary mask at ``threshold`` and its overlap with the true mask."""
    pred = soft > threshold
    inter, union = (pred & truth).sum(), (pred | truth).sum()
    overlap = np.ones(soft.shape + (3,))
    overlap[pred & truth] = (0.33, 0.66, 0.41)  # both: the intersection
    overlap[pred & ~truth] = (0.84, 0.15, 0.16)  # predicted only
    overlap[~pred & truth] = (0.3, 0.45, 0.69)  # missed
    fig, axes = plt.subplots(1, 5, figsize=(13, 3.1), gridspec_kw={"width_ratios": [1, 1.15, 1.2, 1, 1]})
    axes[0].imshow(photo)
    axes[0].set_title("photo", fontsize=9)
    im = axes[1].imshow(soft, cmap="gray", vmin=0, vmax=1)
    axes[1].set_title("soft alpha mask (0..1)", fontsize=9)
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    axes[2].hist(soft.ravel(), bins=50, range=(0, 1), color="0.4", log=True)
    axes[2].axvline(threshold, color="firebrick", lw=1.5)
    axes[2].set_xlabel("alpha", fontsize=8)
    axes[2].set_ylabel("pixels (log)", fontsize=8)
    axes[2].tick_params(labelsize=8)
    axes[2].set_title(f"alpha values; threshold {threshold:g}", fontsize=9)
    axes[3].imshow(pred, cmap="gray")
    axes[3].set_title(f"alpha > {threshold:g}: A", fontsize=9)
    axes[4].imshow(overlap)
    axes[4].set_title(f"A vs true mask B: IoU {inter / max(union, 1):.3f}\n"
                      "green A∩B, red A only, blue B only", fontsize=9)
    for ax in axes[[0, 1, 3, 4]]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout(w_pad=0.5)
    return fig


def text_search_rankers(report: pd.DataFrame, half: str = "test") -> matplotlib.figure.Figure:
    """P@5 (with 95% bootstrap intervals) of each text ranker, for the catalogue's own wording and
    the kept-apart one (``search_bench.text_search_report``'s rows of one half)."""
    rows = report[(report["half"] == half) & report["wording"].isin(["catalogue", "kept_apart"])]
    rankers = list(dict.fromkeys(rows["ranker"]))
    fig, ax = plt.subplots(figsize=(8, 0.6 + 0.55 * len(rankers)))
    y = np.arange(len(rankers))
    for offset, (wording, colour) in zip((-0.2, 0.2), (("catalogue", "#bbbbbb"), ("kept_apart", "#4c72b0"))):
        part = rows[rows["wording"] == wording].set_index("ranker").reindex(rankers)
        lo, hi = zip(*[ci if isinstance(ci, (tuple, list)) else (np.nan, np.nan) for ci in part["p_at_5_ci"]])
        err = np.abs(np.array([part["p_at_5"] - np.array(lo), np.array(hi) - part["p_at_5"]]))
        ax.barh(y + offset, part["p_at_5"], 0.4, xerr=err, color=colour, capsize=2,
                label=f"{wording.replace('_', '-')} wording")
        for yi, value, top in zip(y + offset, part["p_at_5"], hi):  # the label right of the interval
            ax.text(min(np.nanmax([value, top]), 1) + 0.015, yi, f"{value:.2f}", va="center", fontsize=8)
    ax.set_yticks(y, rankers)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.12)
    ax.set_xlabel(f"P@5 ({half} half of the attribute groups; bars: 95% bootstrap interval)")
    ax.set_title("Text search: share of the top 5 that match every asked attribute", pad=24)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, fontsize=8, frameon=False)  # above the bars
    fig.tight_layout()
    return fig


def search_examples(queries: Sequence[str], results: Sequence[Sequence], catalogue: Catalogue) -> matplotlib.figure.Figure:
    """Each text query (left) beside its results: thumbnail, type, colour and gender."""
    k = max([len(r) for r in results] + [1])
    fig, axes = plt.subplots(len(queries), k + 1, figsize=((k + 1) * 1.25, len(queries) * 1.75), squeeze=False)
    for row, (text, found) in enumerate(zip(queries, results)):
        for ax in axes[row]:
            ax.axis("off")
        axes[row, 0].text(0.5, 0.5, f"\u201c{text}\u201d", ha="center", va="center", wrap=True, fontsize=8,
                          fontweight="bold", transform=axes[row, 0].transAxes)
        for col, product in enumerate(found, start=1):
            axes[row, col].imshow(Image.open(catalogue.image_path(product.id)).convert("RGB"))
            axes[row, col].set_title(f"{product.articleType}\n{product.baseColour} {product.gender}".strip(), fontsize=7)
    fig.tight_layout()
    return fig


def photo_turns(rows: Sequence[tuple], catalogue: Catalogue) -> matplotlib.figure.Figure:
    """A shopper's photo searches, one row each: the photo, what the bot embedded (its cut-out, or the
    photo itself), then the products it answered. ``rows``: ``(label, photo, embedded, [Product, ...], true type)``;
    green titles share the photo's article type."""
    images, titles, colors = [], [], []
    for label, photo, embedded, found, truth in rows:
        images += [photo, embedded]
        titles += [f"shopper's photo\n{truth}", label]
        colors += ["black", "black"]
        for p in found:
            images.append(catalogue.image_path(p.id))
            titles.append(f"{p.articleType}\n{p.score:.2f}")
            colors.append("green" if p.articleType == truth else "firebrick")
    return _show_images(images, titles, cols=2 + max(len(r[3]) for r in rows), size=1.3, colors=colors)
