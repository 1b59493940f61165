"""``ShopBot``: the assistant's Python API over what ``make run`` wrote to the artifacts folder."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import config
from .data import ImageInput, read_id_csv
from .embed import embed_images, load_embeddings
from .index import ExactIndex, Index, build_index, load_index, one_blas_thread
from .intents import IntentClassifier, Reply
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


def _products(rows: pd.DataFrame, scores) -> list[Product]:
    """``Product``s from rows of ``products.csv`` with their scores."""
    return [Product(int(r.id), r.articleType, r.subCategory, r.baseColour, r.productDisplayName, float(s))
            for r, s in zip(rows.itertuples(index=False), scores)]


class ShopBot:
    """The shopping assistant: answer questions, classify a product photo, find similar products.

    >>> bot = ShopBot.load("artifacts")                     # doctest: +SKIP
    >>> bot.similar("shoe.jpg", k=5)[0].articleType          # doctest: +SKIP
    'Casual Shoes'
    >>> bot.ask("where is my order?").intent                 # doctest: +SKIP
    'track_order'

    The vision part (model, index, products) and the text part (intent classifier) load
    independently: a bot with only one of them raises ``ArtifactError`` when the other is used.
    """

    def __init__(self, model: ShopNet | None = None, info: ModelInfo | None = None, index: Index | None = None,
                 products: pd.DataFrame | None = None, intents: IntentClassifier | None = None,
                 folder: Path | None = None):
        if index is not None and products is not None:
            missing = np.setdiff1d(index.ids, products.index.to_numpy())
            if len(missing):
                raise ArtifactError(f"{len(missing)} indexed ids have no product row (e.g. {missing[:3].tolist()})")
        self.model, self.info, self.index, self.products = model, info, index, products
        self.intents, self.folder = intents, folder
        self._indexes: dict[str, Index] = {index.kind: index} if index is not None else {}

    @classmethod
    def load(cls, folder: str | Path | None = None) -> "ShopBot":
        """Load what ``make run`` wrote (default ``artifacts/``): the vision model with its embeddings
        and products (notebooks 02-03) and/or the intent classifier (notebook 06)."""
        folder = Path(folder) if folder is not None else config.artifacts_dir()
        if not folder.is_dir():
            raise ArtifactError(f"{folder} does not exist: run `make run` first or pass the artifacts folder")
        has_vision, has_text = (folder / "model.json").is_file(), (folder / "intents").is_dir()
        if not has_text or has_vision:
            model, info, digest = load_model(folder)  # its error names what to run
            ids, vectors = load_embeddings(folder, model_sha256=digest)
            # The index notebook 04 chose and saved; exact search until it has run.
            index = load_index(folder, vectors, ids) if (folder / "index.json").is_file() else ExactIndex(vectors, ids)
            vision = dict(model=model, info=info, index=index, products=load_products(folder))
        else:
            vision = {}
        # The intent model loads on the first ask(): a photo search needs neither it nor NLTK's data.
        return cls(**vision, folder=folder)

    def _need_vision(self) -> None:
        if self.model is None:
            raise ArtifactError(f"no trained vision model in {self.folder}: run notebooks 02-03 (or `make run`)")

    @property
    def classes(self) -> list[str]:
        """The article types the model knows."""
        self._need_vision()
        return list(self.info.classes)

    def ask(self, text: object) -> Reply:
        """Answer a shopper's message: ``Reply(intent, confidence, text, understood, products)``.

        Unsure (or empty, or not English) -> intent ``out_of_scope`` with a helpful fallback. For
        ``product_search`` the reply says what was understood and, with a catalogue loaded, lists
        up to 5 matching products.
        """
        if self.intents is None:
            if self.folder is None or not (self.folder / "intents").is_dir():
                raise ArtifactError(f"no intent model in {self.folder}: run notebook 06 (or `make run`)")
            self.intents = IntentClassifier.load(self.folder / "intents")
        reply = self.intents.reply(text)
        if reply.understood and self.products is not None:
            reply.products = self._matching_products(reply.understood)
        return reply

    def _matching_products(self, understood: dict, k: int = 5) -> list[Product]:
        rows = self.products
        for column in ("articleType", "baseColour"):
            if column in understood:
                rows = rows[rows[column].isin(understood[column])]
        if "gender" in understood:  # products.csv has no gender column; the names say it
            rows = rows[rows["productDisplayName"].str.contains(rf"\b{understood['gender']}\b", na=False)]
        return _products(rows.head(k), np.ones(min(k, len(rows))))

    def classify(self, image: ImageInput, top: int | None = None) -> list[tuple[str, float]]:
        """``[(articleType, probability), ...]`` best first (all classes, or the ``top`` best)."""
        self._need_vision()
        probs = predict_proba(self.model, [image], tuple(self.info.image_size))[0]
        order = np.argsort(-probs)[:top]
        return [(self.info.classes[i], float(probs[i])) for i in order]

    def embed(self, image: ImageInput) -> np.ndarray:
        """The image's embedding (the penultimate FC layer's output)."""
        self._need_vision()
        return embed_images(self.model, [image], tuple(self.info.image_size))[0]

    def get_index(self, index: str | Index | None = None) -> Index:
        """The bot's index (``None``), an index given by kind (``'exact'``, ``'lsh'``, ``'faiss'``,
        ``'datasketch'``: built once with default settings over the same embeddings), or ``index``."""
        self._need_vision()
        if index is None:
            return self.index
        if isinstance(index, Index):
            return index
        if index not in self._indexes:
            self._indexes[index] = build_index(index, self.index.vectors, self.index.ids)
        return self._indexes[index]

    def similar(self, image: ImageInput, k: int = 5, index: str | Index | None = None,
                remove_background: bool | str = False) -> list[Product]:
        """The ``k`` catalogue products most similar to ``image``, best first.

        ``index``: see ``get_index``. ``remove_background``: for shoppers' photos, ``True`` (the
        ``auto`` backend) or a backend name (``isnet``, ``modnet``, ``grabcut``, ``none``): the
        product is cut out, put on white like the catalogue and cropped before embedding.
        """
        self._need_vision()
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive whole number, got {k!r}")
        if remove_background:
            from .background import prepare_query

            image = prepare_query(image, "auto" if remove_background is True else remove_background)
        vector = self.embed(image)
        with one_blas_thread():  # after torch's threads: see one_blas_thread
            ids, scores = self.get_index(index).query(vector, k)
        return _products(self.products.loc[ids], scores)
