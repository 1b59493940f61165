"""``ShopBot``: the assistant's Python API over what ``make run`` wrote to the artifacts folder."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from . import config
from .artifacts import write_atomic
from .config import logger
from .data import ImageInput
from .embed import embed_images, load_embeddings
from .index import ExactIndex, Index, build_index, load_index, one_blas_thread
from .intents import IntentClassifier, Reply
from .duplicates import DuplicateGroups
from .search import Query, TextSearch, compose_reply, near_words, parse_query, with_gender
from .vision import ArtifactError, ModelInfo, ShopNet, load_model, predict_proba

PRODUCT_COLUMNS = ["id", "articleType", "subCategory", "baseColour", "productDisplayName", "gender", "usage"]
#: ``similar`` adds this much of log p(the query is of the product's type) to the cosine, p being the
#: trained head's own probabilities for the query's embedding: recommending within the predicted
#: class, softly (the poster's literature review). Measured on the test split (benchmarks/bench_search.py): strict poster score 0.9512 -> 0.9559.
CLASS_PRIOR = 0.02
#: How many nearest neighbours the class prior re-orders.
PRIOR_POOL = 50


@dataclass(frozen=True)
class Product:
    """One catalogue product. ``score``: for ``similar``, cosine similarity (plus the class prior);
    for ``search``, the fused reciprocal-rank score of BM25 and the name embeddings.
    ``duplicates``: how many other listings of the same item were collapsed into this card (their
    ids: ``duplicate_ids``). ``near_match``: "" when it has everything asked for, else what it lacks
    ("close colour", "any occasion"): a near match that fills a short page."""

    id: int
    articleType: str
    subCategory: str
    baseColour: str
    productDisplayName: str
    score: float
    gender: str = ""
    usage: str = ""
    duplicates: int = 0
    duplicate_ids: tuple[int, ...] = ()
    near_match: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


class Results(list):
    """A list of ``Product``s, best first, that also says what a search understood (``{field:
    [values]}``), which constraints it dropped because nothing matched them all (``relaxed``), a
    note for the shopper (``message``: empty when everything asked for was found as asked), the
    whole reply (``reply``: "Here are red dresses." and the note) and what nothing could be
    filtered by (``ignored``: ``{"price": ["under 50 dollars"]}``)."""

    def __init__(self, products=(), understood: dict | None = None, relaxed: list[str] | None = None,
                 message: str = "", query: Query | None = None, reply: str = "", ignored: dict | None = None):
        super().__init__(products)
        self.understood, self.relaxed, self.message = understood or {}, relaxed or [], message
        #: The parsed request itself (what a conversation refines next).
        self.query = query
        self.reply, self.ignored = reply or message, ignored or {}


def save_products(folder: str | Path, styles: pd.DataFrame, ids: np.ndarray) -> Path:
    """Write the product facts of ``ids`` to ``products.csv`` so the bot needs no raw data (gender from
    Kaggle's column where it has one, else from the product name)."""
    rows = with_gender(styles.set_index("id", drop=False).loc[ids])
    return write_atomic(Path(folder) / "products.csv", rows[PRODUCT_COLUMNS].to_csv(index=False))


def _checked_products(path: Path) -> pd.DataFrame:
    """``products.csv`` read as text with integer ids, or one ``ArtifactError`` saying what is wrong with it."""
    rebuild = "rebuild it with `make run` (or notebook 03)"
    try:
        rows = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ArtifactError(f"{path} is empty: {rebuild}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is not a CSV file pandas can read ({exc}): {rebuild}") from None
    problems = []
    missing = [c for c in PRODUCT_COLUMNS[:5] if c not in rows]  # gender and usage came later: optional
    if missing:
        problems.append(f"it is missing the column(s) {', '.join(missing)}")
    if "id" in rows:
        ids = pd.to_numeric(rows["id"].str.strip(), errors="coerce")
        bad = rows["id"][ids.isna() | (ids % 1 != 0)]
        if len(bad):
            problems.append(f"{len(bad)} rows have ids that are not whole numbers (e.g. {bad.iloc[0]!r})")
        repeated = ids[ids.duplicated(keep=False) & ids.notna()]
        if len(repeated):
            problems.append(f"{len(repeated)} rows share an id (e.g. {int(repeated.iloc[0])})")
    if problems:
        raise ArtifactError(f"{path} is not a valid products.csv: {'; '.join(problems)}: {rebuild}")
    rows["id"] = ids.astype(np.int64)
    return rows


def load_products(folder: str | Path) -> pd.DataFrame:
    """Read ``products.csv``, indexed by product id (files written before gender and usage get a
    gender from the names and an empty usage). ``ArtifactError`` with every problem found when a
    column is missing, an id is not a whole number or appears twice."""
    path = Path(folder) / "products.csv"
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: run `make run` (or notebook 03) first")
    rows = _checked_products(path)
    for column in ("gender", "usage"):
        if column in rows:
            rows[column] = rows[column].fillna("").astype(str)
    return with_gender(rows).set_index("id", drop=False).rename_axis(None)


def _products(rows: pd.DataFrame, scores, duplicates: Sequence[np.ndarray] | None = None,
              near: Sequence[str] | None = None) -> list[Product]:
    """``Product``s from rows of ``products.csv`` with their scores, the ids of the listings collapsed
    into each and what each near match lacks."""
    duplicates = duplicates if duplicates is not None else [()] * len(rows)
    near = near if near is not None else [""] * len(rows)
    return [Product(int(r.id), r.articleType, r.subCategory, r.baseColour, r.productDisplayName, float(s),
                    r.gender, r.usage, len(d), tuple(int(i) for i in d), n)
            for r, s, d, n in zip(rows[PRODUCT_COLUMNS].itertuples(index=False), scores, duplicates, near)]


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
                 folder: Path | None = None, norms: np.ndarray | None = None):
        """``norms``: the length of each indexed embedding before normalisation (the head's layers,
        used by the class prior, read raw embeddings); ``load`` passes them."""
        if index is not None and products is not None:
            missing = np.setdiff1d(index.ids, products.index.to_numpy())
            if len(missing):
                raise ArtifactError(f"{len(missing)} indexed ids have no product row (e.g. {missing[:3].tolist()})")
        self.model, self.info, self.index, self.products = model, info, index, products
        self.intents, self.folder = intents, folder
        self._indexes: dict[str, Index] = {index.kind: index} if index is not None else {}
        self._text_search: TextSearch | None = None
        self._duplicates: DuplicateGroups | None = None
        # Index position -> id and the products in index order: filters are masks over positions.
        self._position = None if index is None else pd.Series(np.arange(len(index.ids)), index=index.ids)
        self.norms = norms if norms is not None or index is None else np.ones(len(index.ids), np.float32)

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
            vision = dict(model=model, info=info, index=index, products=load_products(folder),
                          norms=np.linalg.norm(vectors, axis=1))
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

    def ask(self, text: object, k: int = 5, search: bool = True) -> Reply:
        """Answer a shopper's message: ``Reply(intent, confidence, text, understood, products)``.

        Unsure (or empty, or not English) -> intent ``out_of_scope`` with a helpful fallback. For
        ``product_search`` the reply says what was understood and, with a catalogue loaded, lists
        up to ``k`` matching products (``search=False``: none, for a caller that searches itself).
        """
        if self.intents is None:
            if self.folder is None or not (self.folder / "intents").is_dir():
                raise ArtifactError(f"no intent model in {self.folder}: run notebook 06 (or `make run`)")
            self.intents = IntentClassifier.load(self.folder / "intents")
        reply = self.intents.reply(text)
        if reply.intent == "product_search" and self.products is not None and search:
            found = self.search(text, k=k)
            reply.products, reply.understood = list(found), found.understood
            if found.reply:
                reply.text = found.reply  # what was understood ("Here are red dresses.") and what was not
        return reply

    # ---------------------------------------------------------------- text search
    @property
    def text_search(self) -> TextSearch:
        """The catalogue's text search (``artifacts/search``, built by ``pipeline.build_text_search``).
        Artifacts from before it have none: BM25 is then built over the products on first use."""
        if self._text_search is None:
            self._need_vision()
            products = self.products.loc[self.index.ids]
            if (self.folder is not None) and (self.folder / "search" / "search.json").is_file():
                self._text_search = TextSearch.load(self.folder / "search", products)
            else:
                logger.warning("no saved text search in %s: ranking with BM25 alone (pipeline.build_text_search builds it)",
                               self.folder)
                self._text_search = TextSearch(products)
            self._text_search.duplicates = self.duplicates
        return self._text_search

    @property
    def duplicates(self) -> DuplicateGroups:
        """Which indexed products are listings of one item (over the index's positions): the same
        normalised name, or the same type and colour and image cosine >= ``duplicates.DUPLICATE_COSINE``."""
        if self._duplicates is None:
            self._need_vision()
            rows = self.products.loc[self.index.ids]
            kinds = (rows["articleType"].astype(str) + "/" + rows["baseColour"].astype(str)).to_numpy()
            self._duplicates = DuplicateGroups.build(rows["productDisplayName"], self.index.vectors, kinds)
        return self._duplicates

    def search(self, text: object, k: int = 5, query: Query | None = None, collapse: bool = True,
               fill: bool = True) -> Results:
        """Catalogue products for a shopper's words, best first: ``search("black heels for women")``.

        What was understood filters (type, colour, gender, usage, "not ..."); when nothing passes, the
        closest relaxation that some products pass is shown and ``.relaxed``/``.message`` say which.
        BM25 over the names and attributes and MiniLM name embeddings rank what passes (reciprocal-rank
        fusion; ``score``). ``query``: constraints to use instead of parsing ``text`` (e.g.
        ``Query.then``'s refinement). ``collapse``: one card per item (``Product.duplicates``).
        ``fill``: a short page is filled with near matches (``Product.near_match``).
        """
        found = self.text_search.search(text, k, query=query, collapse=collapse, fill=fill)
        ids = self.index.ids
        rows = self.products.loc[ids[found.positions]]
        duplicates = [ids[d] for d in found.duplicates] if found.duplicates else None
        return Results(_products(rows, found.scores, duplicates, found.near or None), found.query.understood(),
                       found.relaxed, found.message, found.query, found.reply, found.ignored)

    def lookup(self, ids: Sequence[int]) -> list[Product]:
        """The catalogue's ``Product``s for ``ids`` (score 0), in that order: e.g. the listings a card
        collapsed (``Product.duplicate_ids``)."""
        self._need_vision()
        self.positions(ids)  # a KeyError for ids that are not in the catalogue
        return _products(self.products.loc[list(ids)], np.zeros(len(ids)))

    def where_mask(self, where: dict | Query | np.ndarray | None) -> np.ndarray | None:
        """A boolean mask over the index's positions from ``{field: value or [values]}`` (fields
        ``articleType``, ``baseColour``, ``gender``, ``usage``), a parsed ``Query``, or a mask."""
        if where is None or isinstance(where, np.ndarray):
            return where
        return self.text_search.mask(where)

    def classify(self, image: ImageInput, top: int | None = None,
                 remove_background: bool | str = "auto") -> list[tuple[str, float]]:
        """``[(articleType, probability), ...]`` best first (all classes, or the ``top`` best);
        ``remove_background`` as in ``similar``."""
        self._need_vision()
        image = self.cut_out(image, remove_background).query()
        probs = predict_proba(self.model, [image], tuple(self.info.image_size))[0]
        order = np.argsort(-probs)[:top]
        return [(self.info.classes[i], float(probs[i])) for i in order]

    def embed(self, image: ImageInput) -> np.ndarray:
        """The image's embedding (the penultimate FC layer's output)."""
        self._need_vision()
        return embed_images(self.model, [image], tuple(self.info.image_size))[0]

    def get_index(self, index: str | Index | None = None) -> Index:
        """The bot's index (``None``), an index given by kind (``'exact'``, ``'lsh'``, ``'faiss'``,
        ``'datasketch'``, ``'milvus'``: built once with default settings over the same embeddings), or ``index``."""
        self._need_vision()
        if index is None:
            return self.index
        if isinstance(index, Index):
            return index
        if index not in self._indexes:
            params = {}
            if index == "milvus":
                from .milvus import catalogue_params

                params = catalogue_params(self.folder, self.products)
            self._indexes[index] = build_index(index, self.index.vectors, self.index.ids, **params)
        return self._indexes[index]

    def close(self) -> None:
        """Release what the indexes hold outside this process (a Milvus connection, Milvus Lite's
        embedded server and its folder's lock). The bot's in-process search keeps working."""
        for index in self._indexes.values():
            index.close()
        self._indexes = {k: v for k, v in self._indexes.items() if not getattr(v, "filters_in_engine", False)}

    def __enter__(self) -> "ShopBot":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def anchor_vector(self, anchor: ImageInput | int, remove_background: bool | str = "auto") -> np.ndarray:
        """The embedding of a photo, or of catalogue product ``anchor`` (an id: its saved embedding)."""
        self._need_vision()
        if _is_product_id(anchor):
            if anchor not in self._position.index:
                raise ValueError(f"no product with id {anchor} in the catalogue")
            return self.stored_embeddings([anchor])[0]
        return self.embed(self.cut_out(anchor, remove_background).query())

    def positions(self, ids: Sequence[int]) -> np.ndarray:
        """Where products ``ids`` are in the index (rows of ``index.vectors``); KeyError for unknown ids."""
        return self._position.loc[np.asarray(ids, dtype=np.int64)].to_numpy()

    def stored_embeddings(self, ids: Sequence[int]) -> np.ndarray:
        """The saved (raw) embeddings of catalogue products."""
        pos = self.positions(ids)
        return self.index.vectors[pos] * self.norms[pos, None]

    @staticmethod
    def cut_out(image: ImageInput, remove_background: bool | str = "auto"):
        """What happens to a photo before it is embedded (see ``similar``): a ``background.Cutout``
        whose ``query()`` is the image embedded and whose ``removed``/``note`` say whether the
        background was removed."""
        from .background import remove_background as cut

        return cut(image, remove_background)

    def type_log_proba(self, vectors: np.ndarray) -> np.ndarray:
        """log p(type) for embeddings (n, dim) -> (n, classes), from the trained head's own last layers."""
        with torch.inference_mode():
            logits = self.model.head[self.model.embed_cut:](torch.from_numpy(np.atleast_2d(vectors).astype(np.float32)))
            return torch.log_softmax(logits.float(), dim=1).numpy()

    def with_class_prior(self, vectors: np.ndarray, ids: np.ndarray, scores: np.ndarray, k: int,
                         weight: float = CLASS_PRIOR) -> tuple[np.ndarray, np.ndarray]:
        """Re-order each row of neighbours (ids, cosines: (n, pool)) by cosine + ``weight`` x log p(the
        query is of the neighbour's type); the ``k`` best of each row. Types the model does not know
        get the query's least likely class."""
        log_p = self.type_log_proba(vectors)
        label = {c: i for i, c in enumerate(self.info.classes)}
        types = self.products["articleType"].loc[ids.ravel()].map(label).to_numpy(dtype=float).reshape(ids.shape)
        prior = np.take_along_axis(log_p, np.nan_to_num(types, nan=0).astype(np.int64), axis=1)
        prior = np.where(np.isnan(types), log_p.min(1, keepdims=True), prior)
        adjusted = scores + weight * prior
        order = np.argsort(-adjusted, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(ids, order, axis=1), np.take_along_axis(adjusted, order, axis=1)

    def similar(self, image: ImageInput | int, k: int = 5, index: str | Index | None = None,
                remove_background: bool | str = "auto", where: dict | Query | np.ndarray | None = None,
                class_prior: float = CLASS_PRIOR, collapse: bool = True) -> list[Product]:
        """The ``k`` catalogue products most similar to ``image``, best first.

        ``image``: a photo (path, bytes, PIL) or a catalogue product id ("more like this": that
        product itself is left out). ``index``: see ``get_index``. ``remove_background``: what to do
        with a photo's background before embedding it. ``"auto"`` (the default) keeps a photo that
        already looks like a catalogue packshot (its border mostly white) and cuts the product out of
        any other; ``True`` always cuts it out (ISNet, else GrabCut); ``False`` or ``"none"`` never
        does; ``"isnet"``, ``"grabcut"`` or ``"modnet"`` always cut out with that backend. A cut-out
        is put on white like the catalogue and cropped to the product; ``cut_out`` shows what was done.
        Measured on 300 test products (``benchmarks/bench_background.py``): auto cut every pasted-background
        photo out, scoring exactly as always (poster score 0.817; never 0.422); of their catalogue photos it
        cut out 5, scoring 0.927 (never 0.934, always 0.885) in 0.02 s a photo instead of always's 1.17.
        ``where``: only products with these attributes (``{"baseColour": "Black"}``; see ``where_mask``),
        searched inside the index. ``class_prior``: weight of log p(query's type = product's type).
        ``collapse``: one card per item (``duplicates``): the other listings of an item are counted
        in its ``Product.duplicates`` (their ids: ``duplicate_ids``; ``lookup`` turns them into products).
        """
        self._need_vision()
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive whole number, got {k!r}")
        vector = self.anchor_vector(image, remove_background)
        engine = self.get_index(index)
        # A vector database filters on its own attributes: no mask over the catalogue is built for it.
        in_engine = (getattr(engine, "filters_in_engine", False) and isinstance(where, (dict, Query))
                     and not _is_product_id(image))
        mask = None if in_engine else self.where_mask(where)
        if _is_product_id(image):  # "more like this" never answers with the product itself
            mask = (np.ones(len(self.index.ids), bool) if mask is None else mask.copy())
            mask[self._position[image]] = False
        return self._nearest(vector, k, engine, mask, where if in_engine else None, class_prior, collapse)

    def _nearest(self, vector: np.ndarray, k: int, engine: Index, mask: np.ndarray | None, where: dict | Query | None,
                 class_prior: float, collapse: bool) -> list[Product]:
        """``similar`` once the query's embedding and the filter are known (``where``: filtered by the
        engine itself, else ``mask``)."""
        pool = max(PRIOR_POOL, k) if class_prior else k
        if collapse:
            pool = max(pool, 2 * k)
        while True:
            with one_blas_thread():  # after torch's threads: see one_blas_thread
                if where is not None:
                    from .milvus import expression

                    ids, scores = engine.query(vector, pool, expr=expression(where))
                else:
                    ids, scores = engine.query(vector, pool, where=mask)
            if class_prior and len(ids):
                ids, scores = (a[0] for a in self.with_class_prior(vector[None], ids[None], scores[None], len(ids),
                                                                     class_prior))
            if not collapse:
                return _products(self.products.loc[ids[:k]], scores[:k])
            positions = self.positions(ids)
            heads = self.duplicates.first(positions, k)
            if len(heads) >= k or len(ids) < pool:
                break
            pool *= 4  # the best ones were mostly listings of the same few items: look further
        if len(heads) < k:  # fewer items than cards: their other listings follow, best first
            heads = np.concatenate([heads, positions[~np.isin(positions, heads)][:k - len(heads)]])
        rank = {p: i for i, p in enumerate(positions.tolist())}
        keep = np.array([rank[p] for p in heads.tolist()], dtype=np.int64)
        first = np.zeros(len(keep), bool)  # the first card of each item carries its count
        first[np.unique(self.duplicates.labels[positions[keep]], return_index=True)[1]] = True
        others = [self.duplicates.others(p, mask) if f else np.zeros(0, np.int64)
                  for p, f in zip(positions[keep], first)]
        others = [o[~np.isin(o, heads)] for o in others]
        return _products(self.products.loc[ids[keep]], scores[keep], [self.index.ids[o] for o in others])

    def refine(self, anchor: ImageInput | int, text: str, k: int = 5, index: str | Index | None = None,
               remove_background: bool | str = "auto", query: Query | None = None) -> Results:
        """"Like this, but in black": products that look like ``anchor`` (a photo or a product id) and
        have what ``text`` asks for. The anchor's article type is kept unless ``text`` names another;
        when nothing has it all, constraints are dropped one at a time (``.relaxed``, ``.message``).
        ``remove_background``: for a photo, as in ``similar``."""
        self._need_vision()
        query = parse_query(text) if query is None else query
        if not _is_product_id(anchor):
            anchor = self.cut_out(anchor, remove_background).query()
        if "articleType" not in query.include:
            if _is_product_id(anchor):
                self.anchor_vector(anchor)  # a clear error for an unknown id
                kind = self.products.loc[int(anchor), "articleType"]
            else:
                kind = self.classify(anchor, top=1, remove_background=False)[0][0]
            query = Query(query.text, {"articleType": [kind], **query.include}, query.exclude, query.ignored)
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive whole number, got {k!r}")
        mask, asked, relaxed, looser = self.text_search.first_tier(query)
        vector, engine = self.anchor_vector(anchor, remove_background=False), self.get_index(index)
        own = self.positions([anchor]) if _is_product_id(anchor) else []
        products: list[Product] = []
        shown = np.zeros(len(mask), bool)
        for tier, dropped in [(None, [])] + looser:  # what matches, then near matches, closest first
            more = (mask if tier is None else self.text_search.mask(tier)) & ~shown
            shown |= more
            more[own] = False  # never the anchor itself
            for position in self.positions([p.id for p in products]):
                more[self.duplicates.members(position)] = False  # an item already on the page
            if more.any():  # the type is filtered: no class prior
                extra = self._nearest(vector, k - len(products), engine, more, None, 0.0, True)
                products += [replace(p, near_match=near_words(dropped)) for p in extra]
            if len(products) >= k:
                break
        ignored = self.text_search.unused(query.text, query)
        message, reply = compose_reply(query, asked, relaxed, [p.near_match for p in products], ignored, "like this",
                                       intro=f"Here are {asked.describe()} like this.")
        return Results(products, query.understood(), relaxed, message, query, reply, ignored)


def _is_product_id(anchor: object) -> bool:
    return isinstance(anchor, (int, np.integer)) and not isinstance(anchor, bool)
