"""``ShopBot``: the assistant's Python API over what ``make run`` wrote to the artifacts folder."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import config
from .data import ImageInput, read_id_csv
from .embed import embed_images, load_embeddings
from .evaluate import ExactIndex
from .vision import ArtifactError, ModelInfo, ShopNet, load_model, predict_proba

PRODUCT_COLUMNS = ["id", "articleType", "subCategory", "baseColour", "productDisplayName"]


@dataclass(frozen=True)
class Product:
    """One catalogue product returned by ``ShopBot.similar`` (``score`` is cosine similarity)."""

    id: int
    articleType: str
    subCategory: str
    baseColour: str
    productDisplayName: str
    score: float

    def as_dict(self) -> dict:
        return asdict(self)


def save_products(folder: str | Path, styles: pd.DataFrame, ids: np.ndarray) -> Path:
    """Write the product facts of ``ids`` to ``products.csv`` so the bot needs no raw data."""
    path = Path(folder) / "products.csv"
    styles.set_index("id", drop=False).loc[ids, PRODUCT_COLUMNS].to_csv(path, index=False)
    return path


def load_products(folder: str | Path) -> pd.DataFrame:
    """Read ``products.csv``, indexed by product id."""
    path = Path(folder) / "products.csv"
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: run `make run` (or notebook 03) first")
    return read_id_csv(path).set_index("id", drop=False).rename_axis(None)


class ShopBot:
    """The shopping assistant: classify a product photo and find similar catalogue products.

    >>> bot = ShopBot.load("artifacts")                     # doctest: +SKIP
    >>> bot.similar("shoe.jpg", k=5)[0].articleType          # doctest: +SKIP
    'Casual Shoes'
    """

    def __init__(self, model: ShopNet, info: ModelInfo, index: ExactIndex, products: pd.DataFrame):
        missing = np.setdiff1d(index.ids, products.index.to_numpy())
        if len(missing):
            raise ArtifactError(f"{len(missing)} indexed ids have no product row (e.g. {missing[:3].tolist()})")
        self.model, self.info, self.index, self.products = model, info, index, products

    @classmethod
    def load(cls, folder: str | Path | None = None) -> "ShopBot":
        """Load the model, embeddings and products that ``make run`` wrote (default ``artifacts/``)."""
        folder = Path(folder) if folder is not None else config.artifacts_dir()
        if not folder.is_dir():
            raise ArtifactError(f"{folder} does not exist: run `make run` first or pass the artifacts folder")
        model, info, digest = load_model(folder)
        ids, vectors = load_embeddings(folder, model_sha256=digest)
        return cls(model, info, ExactIndex(vectors, ids), load_products(folder))

    @property
    def classes(self) -> list[str]:
        """The article types the model knows."""
        return list(self.info.classes)

    def classify(self, image: ImageInput, top: int | None = None) -> list[tuple[str, float]]:
        """``[(articleType, probability), ...]`` best first (all classes, or the ``top`` best)."""
        probs = predict_proba(self.model, [image], tuple(self.info.image_size))[0]
        order = np.argsort(-probs)[:top]
        return [(self.info.classes[i], float(probs[i])) for i in order]

    def embed(self, image: ImageInput) -> np.ndarray:
        """The image's embedding (the penultimate FC layer's output)."""
        return embed_images(self.model, [image], tuple(self.info.image_size))[0]

    def similar(self, image: ImageInput, k: int = 5) -> list[Product]:
        """The ``k`` catalogue products most similar to ``image``, best first."""
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive whole number, got {k!r}")
        ids, scores = self.index.query(self.embed(image), k)
        rows = self.products.loc[ids]
        return [Product(int(r.id), r.articleType, r.subCategory, r.baseColour, r.productDisplayName,
                        float(s)) for r, s in zip(rows.itertuples(index=False), scores)]
