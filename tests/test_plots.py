"""The figures the notebooks save: every epoch on the training curves, a legible confusion matrix."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from torch import nn

from shopbot_utils import plots, vision


def _lines(fig) -> dict[str, np.ndarray]:
    """Each labelled line of a figure's axes: its x data."""
    return {line.get_label(): np.asarray(line.get_xdata()) for ax in fig.axes for line in ax.get_lines()
            if not line.get_label().startswith("_")}


def _tiny_learner(epochs: int = 3):
    """A fastai Learner on random tensors, fitted for ``epochs`` epochs."""
    import fastai.callback.schedule  # noqa: F401
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.losses import LabelSmoothingCrossEntropyFlat

    torch.manual_seed(0)
    x, y = torch.randn(96, 8), torch.randint(0, 3, (96,))
    data = list(zip(x, y))
    dls = DataLoaders.from_dsets(data[:64], data[64:], bs=16, device=torch.device("cpu"))
    learn = Learner(dls, nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)),
                    loss_func=LabelSmoothingCrossEntropyFlat(), metrics=vision._metrics())
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(epochs, 1e-2)
    return learn


def test_training_curves_show_every_epoch_and_the_training_loss():
    learn = _tiny_learner(epochs=3)
    history = vision.TrainingHistory.from_recorder(learn.recorder)
    learn.get_preds(ds_idx=1)  # what train_model does next: it empties the recorder
    lines = _lines(plots.training_curves(history))
    assert list(lines["valid loss"]) == [1, 2, 3]
    assert list(lines["train loss (end of epoch)"]) == [1, 2, 3]
    assert len(lines["train loss (per batch)"]) == len(history.losses) == 12  # 4 batches x 3 epochs
    assert lines["train loss (per batch)"][-1] == 3  # the last batch ends epoch 3
    assert list(lines["valid accuracy"]) == [1, 2, 3]
    assert history.table()["epoch"].tolist() == [1, 2, 3]


def test_an_emptied_recorder_is_an_error_not_a_one_point_figure():
    learn = _tiny_learner(epochs=3)
    learn.get_preds(ds_idx=1)
    with pytest.raises(ValueError, match="get_preds"):
        plots.training_curves(learn)


def test_cached_training_keeps_its_history_through_get_preds():
    """train_cached's learner, after the get_preds that train_model calls: still 3 epochs and the train loss."""
    from fastai.vision.learner import create_head

    model = vision.ShopNet(nn.Sequential(nn.Identity(), nn.Conv2d(4, 8, 1)), create_head(8, 3, lin_ftrs=[16]))
    rng = np.random.default_rng(0)
    features, labels = torch.randn(80, 4, 3, 3).half(), rng.integers(0, 3, 80)
    learn = vision.train_cached(model, 1, (features[:64], labels[:64]), (features[64:], labels[64:]),
                                epochs=3, batch_size=16)
    learn.get_preds(ds_idx=1)
    lines = _lines(plots.training_curves(learn))
    assert list(lines["valid loss"]) == [1, 2, 3] and len(lines["train loss (per batch)"]) == 12
    assert len(learn.history.seconds) == 3 and all(s > 0 for s in learn.history.seconds)


def test_confusion_matrix_is_normalised_and_readable():
    classes = [f"type {i}" for i in range(37)]
    truth = [c for c in classes for _ in range(10)]
    predicted = [c if i % 10 else classes[(classes.index(c) + 1) % 37] for i, c in enumerate(truth)]
    fig = plots.confusion_matrix(truth, predicted, classes)
    ax = fig.axes[0]
    values = {t.get_text() for t in ax.texts}
    assert values == {"90", "10"}  # percent of each actual type: 9 of 10 right, 1 mistaken
    assert min(t.get_fontsize() for t in ax.texts) >= 8
    assert min(t.get_fontsize() for t in ax.get_xticklabels() + ax.get_yticklabels()) >= 8
    assert fig.get_size_inches()[0] * 72 <= 1100  # about the width a notebook shows at 100%


def test_full_mode_keeps_the_history_of_its_unfrozen_epochs(catalogue):
    """fine_tune fits twice (head alone, then everything): the curves are the second fit's epochs."""
    from shopbot_utils.data import make_split

    split = make_split(catalogue.styles, n_classes=3, per_class=6)
    model = vision.create_model("efficientnet_lite0", n_classes=3)
    learn = vision.train_full(model, [catalogue.image_path(i) for i in split["id"]], split["articleType"].tolist(),
                              (split["split"] != "train").tolist(), sorted(split["articleType"].unique()),
                              epochs=2, batch_size=4, freeze_epochs=1)
    learn.get_preds(ds_idx=1)
    lines = _lines(plots.training_curves(learn))
    assert list(lines["valid loss"]) == [1, 2] and len(learn.history.seconds) == 2


def _legends_above_axes(fig) -> bool:
    """Every legend lies above its axes' plotting area (none covers the data)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    found = [ax.get_legend().get_window_extent(renderer).y0 >= ax.get_window_extent(renderer).y1 - 1
             for ax in fig.axes if ax.get_legend() is not None]
    return bool(found) and all(found)


def test_lr_finder_marks_the_chosen_rate_and_keeps_its_legend_off_the_curve():
    lrs = np.logspace(-7, 0, 50)
    losses = 3.7 - np.log10(lrs / 1e-7) * 0.2 + (lrs > 0.1) * 5.0
    fig = plots.lr_finder(lrs, losses, chosen=2e-3, suggested=5e-4)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert list(lines["chosen lr = 0.002"].get_xdata()) == [2e-3, 2e-3]
    assert _legends_above_axes(fig) and _legends_above_axes(
        plots.training_curves(vision.TrainingHistory(["train_loss", "valid_loss", "accuracy"], [[1.0, 0.9, 0.5]] * 2, [1.0] * 8)))


def test_embedding_projection_names_every_type_once_and_no_label_hides_another():
    rng = np.random.default_rng(0)
    centres = {"Tshirts": (0, 0), "Shirts": (5, 5), "Socks": (5.02, 5.02), "Ties": (5.04, 4.98)}  # three share a spot
    labels = [kind for kind in centres for _ in range(20)]
    points = np.array([centres[kind] for kind in labels]) + rng.normal(0, 0.05, (len(labels), 2))
    fig = plots.embedding_projection(points, labels, explained=[0.2, 0.1])
    ax = fig.axes[0]
    named = [t.get_text() for t in ax.texts]
    legend = ax.get_legend()
    keyed = [t.get_text() for t in legend.get_texts()] if legend else []
    assert sorted(named + keyed) == sorted(centres) and keyed  # each type once; the crowded ones in the key
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert legend.get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1  # beside the data, not on it
    assert min(t.get_fontsize() for t in [*ax.texts, *legend.get_texts()]) >= 8
    assert "20% of the variance" in ax.get_xlabel()
