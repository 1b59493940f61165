"""The pipeline's stages as functions: what the notebooks call, and what ``build`` chains."""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import config
from .bot import ShopBot, load_products, save_products
from .config import logger
from .data import Catalogue, load_catalogue, load_split, make_split, save_split
from .embed import embed_files, load_embeddings, save_embeddings
from .index import DEFAULT_INDEX, Index, build_index, save_index
from .search import TextSearch, build_name_embeddings, ids_sha256
from .evaluate import (classification_metrics, confused_pairs, latency_ms, literal_retrieval_metrics,
                       split_retrieval_metrics)
from .vision import (BACKBONES, DEFAULT_IMAGE_SIZE, ModelInfo, ShopNet, create_model, load_model,
                     predict_proba, run_prefix, save_model, train_cached, train_full)

#: Measured on the shared catalogue with a frozen ImageNet EfficientNet-Lite0 (224 px) and a
#: logistic-regression head on an 80/20 split (figures given in the foundation issue).
BASELINE = {"accuracy": 0.868, "macro_f1": 0.822, "poster_score": 0.891}
TARGETS = {"accuracy": 0.92, "macro_f1": 0.88, "poster_score": 0.9685, "p50_ms": 40.0}


def prepare_data(artifacts: str | Path, source: str | Path | None = None, per_class: int | None = None,
                 seed: int = config.SEED) -> tuple[Catalogue, pd.DataFrame]:
    """Load the catalogue, make the Fashion-37 split and save it with the artifacts."""
    catalogue = load_catalogue(source)
    split = make_split(catalogue.styles, per_class=per_class, seed=seed)
    save_split(split, artifacts)
    return catalogue, split


@dataclass
class TrainResult:
    """A trained model and what the notebook shows about it."""

    model: ShopNet
    info: ModelInfo
    learner: object
    valid: pd.DataFrame
    valid_probs: np.ndarray


def resolve_mode(mode: str) -> str:
    """``auto`` means full fine-tuning on a GPU, cached-feature training on a CPU."""
    if mode not in {"auto", "cpu", "full"}:
        raise ValueError(f"mode must be 'auto', 'cpu' or 'full', got {mode!r}")
    if mode == "auto":
        return "full" if torch.cuda.is_available() else "cpu"
    return mode


def train_model(artifacts: str | Path, catalogue: Catalogue, split: pd.DataFrame,
                backbone: str = "efficientnet_lite0", mode: str = "auto", epochs: int = 5,
                lr: float = 2e-3, batch_size: int = 64, image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
                seed: int = config.SEED) -> TrainResult:
    """Fine-tune ``backbone`` on the split's train part and save the model to ``artifacts``."""
    config.seed_everything(seed)
    mode = resolve_mode(mode)
    classes = sorted(split["articleType"].unique())
    label = {c: i for i, c in enumerate(classes)}
    model = create_model(backbone, len(classes))
    train = split[split["split"] == "train"].reset_index(drop=True)
    valid = split[split["split"] == "valid"].reset_index(drop=True)
    paths = lambda df: [catalogue.image_path(i) for i in df["id"]]  # noqa: E731
    if mode == "cpu":
        cut = BACKBONES[backbone].cut
        feats = [run_prefix(model, cut, paths(df), image_size, desc=f"frozen features ({name})")
                 for name, df in (("train", train), ("valid", valid))]
        learner = train_cached(model, cut, (feats[0], train["articleType"].map(label).to_numpy()),
                               (feats[1], valid["articleType"].map(label).to_numpy()),
                               epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    else:
        both = pd.concat([train, valid], ignore_index=True)
        learner = train_full(model, paths(both), both["articleType"].tolist(),
                             (both["split"] == "valid").tolist(), classes, image_size,
                             epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    probs, _ = learner.get_preds(ds_idx=1)
    info = ModelInfo(backbone=backbone, classes=classes, image_size=tuple(image_size),
                     training={"mode": mode, "epochs": epochs, "lr": lr, "batch_size": batch_size,
                               "seed": seed, "train_images": len(train), "valid_images": len(valid)})
    save_model(model, info, artifacts)
    return TrainResult(model.eval(), info, learner, valid, probs.float().numpy())


def embed_catalogue(artifacts: str | Path, catalogue: Catalogue, scope: str = "catalogue",
                    batch_size: int = 16) -> dict:
    """Embed every catalogue image (``scope='catalogue'``) or only the split's (``'split'``)."""
    model, info, digest = load_model(artifacts)
    if scope == "catalogue":
        ids = catalogue.styles["id"].to_numpy()
    elif scope == "split":
        ids = load_split(artifacts)["id"].to_numpy()
    else:
        raise ValueError(f"scope must be 'catalogue' or 'split', got {scope!r}")
    ids, vectors, skipped = embed_files(model, ids, [catalogue.image_path(i) for i in ids],
                                        tuple(info.image_size), batch_size)
    save_embeddings(artifacts, ids, vectors, digest)
    save_products(artifacts, catalogue.styles, ids)
    for stale in (Path(artifacts) / "index.json", Path(artifacts) / "index.npz"):
        if stale.exists():  # built from the old embeddings: notebook 04 builds it again
            stale.unlink()
            logger.info("removed %s (it indexed the previous embeddings)", stale)
    search_meta = Path(artifacts) / "search" / "search.json"
    if search_meta.is_file() and json.loads(search_meta.read_text()).get("ids_sha256") != ids_sha256(ids):
        shutil.rmtree(search_meta.parent)  # for other products: build_text_search builds it again
        logger.info("removed %s (it searched the previous products)", search_meta.parent)
    if skipped:
        logger.warning("%d images could not be embedded (missing or unreadable): %s", len(skipped), skipped[:10])
    return {"embedded": int(len(ids)), "skipped": skipped, "dim": int(vectors.shape[1])}


def index_catalogue(artifacts: str | Path, kind: str = DEFAULT_INDEX, **params) -> Index:
    """Build the search index over the saved embeddings and save it as the bot's index
    (``ShopBot.load`` checks that those embeddings belong to the saved model)."""
    ids, vectors = load_embeddings(artifacts)
    if kind == "milvus":
        from .milvus import catalogue_params

        params = {**catalogue_params(artifacts, load_products(artifacts)), **params}
    index = build_index(kind, vectors, ids, **params)
    save_index(index, artifacts)
    return index


def build_text_search(artifacts: str | Path) -> dict:
    """BM25 and the MiniLM name embeddings over ``products.csv``, saved to ``artifacts/search``
    (what ``ShopBot.search`` loads); returns the build times."""
    artifacts = Path(artifacts)
    products = load_products(artifacts)
    ids, _ = load_embeddings(artifacts)
    start = time.perf_counter()
    search = TextSearch(products.loc[ids])
    bm25_s = time.perf_counter() - start
    search.name_vectors = build_name_embeddings(search.products, search.encoder)
    names_s = time.perf_counter() - start - bm25_s
    search.save(artifacts / "search")
    return {"products": len(search), "bm25_s": bm25_s, "name_embeddings_s": names_s,
            "names_per_s": len(search) / names_s}


def evaluate_artifacts(artifacts: str | Path, catalogue: Catalogue, k: int = 5,
                       latency_queries: int = 100) -> dict:
    """The report's metrics on the test split; written to ``artifacts/metrics.json``.

    Retrieval: test images query an index of the train+valid images (strict, the headline);
    ``retrieval_literal`` is the poster's protocol read literally (20% of Fashion-37 queries an
    index that holds it). Classification: the
    model's prediction for each test image. Latency: one image's embedding + search over the
    whole catalogue index, as ``ShopBot.similar`` does it.
    """
    bot = ShopBot.load(artifacts)
    split = load_split(artifacts)
    test = split[split["split"] == "test"]
    metrics: dict = {"retrieval": split_retrieval_metrics(bot, split, k=k),
                     "retrieval_literal": literal_retrieval_metrics(bot, split, k=k)}
    paths = [catalogue.image_path(i) for i in test["id"]]
    probs = predict_proba(bot.model, paths, tuple(bot.info.image_size))
    predicted = [bot.classes[i] for i in probs.argmax(1)]
    metrics["classification"] = classification_metrics(test["articleType"].tolist(), predicted)
    subcategory = dict(zip(split["articleType"], split["subCategory"]))
    metrics["classification"]["confused_pairs"] = confused_pairs(test["articleType"].tolist(), predicted, subcategory)
    rng = np.random.default_rng(config.SEED)
    sample = [paths[i] for i in rng.choice(len(paths), min(latency_queries, len(paths)), replace=False)]
    # the search's own latency: catalogue photos need no background removal (auto would check each one)
    metrics["latency_similar"] = latency_ms(lambda p: bot.similar(p, k=k, remove_background=False), sample)
    metrics["latency_similar"]["index_size"] = len(bot.index)
    metrics["latency_similar"]["index"] = {"kind": bot.index.kind, **bot.index.params}
    metrics["baseline_reference"] = BASELINE
    metrics["targets"] = TARGETS
    metrics["model"] = {"backbone": bot.info.backbone, **bot.info.training}
    metrics["torch_threads"] = torch.get_num_threads()
    (Path(artifacts) / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def build(artifacts: str | Path | None = None, source: str | Path | None = None,
          per_class: int | None = None, backbone: str = "efficientnet_lite0", mode: str = "auto",
          epochs: int = 5, scope: str = "catalogue") -> dict:
    """The whole pipeline without notebooks: data, training, embeddings, evaluation."""
    artifacts = Path(artifacts) if artifacts is not None else config.artifacts_dir()
    catalogue, split = prepare_data(artifacts, source, per_class)
    train_model(artifacts, catalogue, split, backbone=backbone, mode=mode, epochs=epochs)
    embed_catalogue(artifacts, catalogue, scope=scope)
    index_catalogue(artifacts)
    build_text_search(artifacts)
    return evaluate_artifacts(artifacts, catalogue)
