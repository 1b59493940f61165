"""Text search: a shopper's words -> understood constraints -> filtered, ranked catalogue products.

``parse_query("navy trainers for gents, not white")`` finds the article type (with the synonyms
shoppers use, British and American), colours (with shades), gender/age, usage and negations.
``TextSearch.search`` turns them into hard filters over the catalogue (relaxing one constraint at
a time when nothing passes, and saying which), then ranks what passes by fusing BM25 over the
product's name and attributes (``bm25s``) with the cosine of MiniLM embeddings of product names
(the encoder the intents already ship), by reciprocal-rank fusion. The name embeddings are built
once (``pipeline.build_text_search``) and saved with the encoder's hash.
"""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from . import __version__
from .artifacts import ArtifactError, atomic_folder, atomic_writer, read_meta, write_atomic

SEARCH_FORMAT = "shopbot-text-search"
SEARCH_FORMAT_VERSION = 1
#: The columns a search can filter on, in the order constraints are relaxed when nothing passes:
#: the occasion first, the article type last (a shopper asking for heels wants heels).
FIELDS = ("usage", "baseColour", "gender", "articleType")
#: Reciprocal-rank fusion constant (Cormack et al. 2009): score = sum over rankers of 1 / (K + rank).
RRF_K = 60
#: How deep each ranker's list goes into the fusion.
FUSION_DEPTH = 200
#: With no constraint understood and no word of the query in the catalogue, the name embeddings
#: alone decide; under this cosine their best match is noise ("zapatos negros", "asdf qwer").
MIN_DENSE_COSINE = 0.45
#: Queries are cut to this many characters (a pasted page is not a product search).
MAX_QUERY_CHARS = 500

# --------------------------------------------------------------------------- vocabulary
#: Words for each Fashion-37 article type (singular or plural both match, see ``_phrase``).
#: A word naming a family (shoes, bags) maps to several types.
TYPE_WORDS: dict[str, list[str]] = {
    "Backpacks": ["backpack", "rucksack", "school bag", "college bag", "laptop bag", "daypack"],
    "Belts": ["belt"],
    "Bra": ["bra", "brassiere", "sports bra"],
    "Briefs": ["brief", "underwear", "boxer", "trunk", "undies", "knicker", "panty", "panties"],
    "Caps": ["cap", "hat", "beanie", "snapback"],
    "Casual Shoes": ["casual shoe", "sneaker", "canvas shoe", "plimsoll", "slip on", "everyday shoe"],
    "Clutches": ["clutch", "evening bag"],
    "Deodorant": ["deodorant", "deo", "antiperspirant", "body spray"],
    "Dresses": ["dress", "gown", "frock", "maxi"],
    "Earrings": ["earring", "ear ring", "stud", "jhumka"],
    "Flats": ["flat", "ballerina", "ballet flat", "flat shoe", "mojari"],
    "Flip Flops": ["flip flop", "flipflop", "slipper", "slider", "chappal", "thong"],
    "Formal Shoes": ["formal shoe", "oxford", "brogue", "loafer", "derby", "dress shoe", "office shoe"],
    "Handbags": ["handbag", "hand bag", "purse", "tote", "shoulder bag", "sling bag", "satchel"],
    "Heels": ["heel", "high heel", "stiletto", "pump", "wedge"],
    "Jackets": ["jacket", "coat", "blazer", "windcheater", "bomber", "parka"],
    "Jeans": ["jean", "denim", "denim pant"],
    "Kurtas": ["kurta", "kurti"],
    "Lipstick": ["lipstick", "lip colour", "lip color", "lip stick"],
    "Nail Polish": ["nail polish", "nail varnish", "nail paint", "nail colour", "nail color", "nail enamel"],
    "Perfume and Body Mist": ["perfume", "body mist", "fragrance", "scent", "cologne", "eau de toilette",
                              "eau de parfum", "edt", "edp"],
    "Sandals": ["sandal", "sandle", "floater"],
    "Sarees": ["saree", "sari"],
    "Shirts": ["shirt", "button down", "button up"],
    "Shorts": ["shorts", "bermuda", "half pant", "short pant"],
    "Socks": ["sock", "stocking"],
    "Sports Shoes": ["sports shoe", "sport shoe", "running shoe", "trainer", "training shoe", "gym shoe",
                     "athletic shoe", "runner"],
    "Sunglasses": ["sunglass", "shades", "sunnies", "goggle", "sun glass"],
    "Sweaters": ["sweater", "jumper", "pullover", "cardigan"],
    "Sweatshirts": ["sweatshirt", "sweat shirt", "hoodie", "hoody"],
    "Ties": ["tie", "necktie", "neck tie"],
    "Tops": ["top", "blouse", "tunic", "camisole", "cami"],
    "Track Pants": ["track pant", "trackpant", "jogger", "trackie", "sweatpant", "track suit bottom"],
    "Trousers": ["trouser", "pant", "slack", "chino"],
    "Tshirts": ["t-shirt", "tshirt", "t shirt", "tee", "polo", "polo shirt", "jersey"],
    "Wallets": ["wallet", "billfold", "card holder", "money purse", "coin purse"],
    "Watches": ["watch", "wristwatch", "wrist watch", "timepiece"],
}
FAMILY_WORDS: dict[str, list[str]] = {
    "shoe": ["Casual Shoes", "Formal Shoes", "Sports Shoes", "Heels", "Flats"],
    "footwear": ["Casual Shoes", "Formal Shoes", "Sports Shoes", "Heels", "Flats", "Sandals", "Flip Flops"],
    "bag": ["Handbags", "Backpacks", "Clutches"],
    "jewellery": ["Earrings"], "jewelry": ["Earrings"],
    "makeup": ["Lipstick", "Nail Polish"], "make up": ["Lipstick", "Nail Polish"],
}
#: Colour words -> the catalogue's ``baseColour``. The catalogue's own names come first (a two-word name
#: must be there whole: "turquoise blue" read as "turquoise" then "blue" lets plain Blue through); shades
#: map to the colour the catalogue files them under.
COLOUR_WORDS: dict[str, list[str]] = {
    "Black": ["black", "jet black"], "White": ["white", "snow white"], "Blue": ["blue", "sky blue", "light blue"],
    "Brown": ["brown", "chocolate"], "Grey": ["grey", "gray", "ash grey", "ash gray"],
    "Red": ["red", "scarlet", "crimson"], "Green": ["green", "emerald", "bottle green"],
    "Navy Blue": ["navy blue", "navy", "dark blue"], "Pink": ["pink", "baby pink"],
    "Purple": ["purple", "violet", "plum"], "Silver": ["silver", "silvery"], "Yellow": ["yellow", "lemon"],
    "Beige": ["beige", "sand"], "Maroon": ["maroon", "wine", "dark red"], "Gold": ["gold", "golden"],
    "Orange": ["orange", "tangerine"], "Olive": ["olive", "olive green", "army green"],
    "Multi": ["multi", "multicolour", "multicolor", "multicoloured", "multicolored", "multi colour",
              "multi color", "colourful", "colorful"],
    "Cream": ["cream", "ivory"], "Charcoal": ["charcoal", "charcoal grey", "charcoal gray", "dark grey",
                                              "dark gray"],
    "Steel": ["steel"], "Peach": ["peach", "apricot"], "Off White": ["off white", "off-white", "offwhite"],
    "Lavender": ["lavender", "lilac"], "Khaki": ["khaki", "khakhi"], "Grey Melange": ["grey melange", "melange"],
    "Magenta": ["magenta", "fuchsia", "fuschia"], "Tan": ["tan", "camel"], "Teal": ["teal"],
    "Bronze": ["bronze"], "Mustard": ["mustard"], "Copper": ["copper"],
    "Turquoise Blue": ["turquoise blue", "turquoise"],
    "Rust": ["rust"], "Metallic": ["metallic"], "Burgundy": ["burgundy"], "Coffee Brown": ["coffee brown", "coffee"],
    "Mauve": ["mauve"], "Nude": ["nude"], "Sea Green": ["sea green"],
    "Mushroom Brown": ["mushroom brown", "mushroom"],
    "Rose": ["rose"], "Taupe": ["taupe"], "Lime Green": ["lime", "lime green"],
    "Fluorescent Green": ["fluorescent green", "fluorescent", "neon green"],
}
#: Gender and age words -> the ``gender`` values they allow. "kids" allows boys', girls' and kids'.
GENDER_WORDS: dict[tuple[str, ...], list[str]] = {
    ("Men",): ["men", "man", "male", "mens", "gents", "gent", "gentleman", "gentlemen", "guy", "him", "his",
               "husband", "boyfriend", "father", "dad"],
    ("Women",): ["women", "woman", "female", "womens", "ladies", "lady", "her", "wife", "girlfriend",
                 "mother", "mom", "mum"],
    ("Boys",): ["boy", "boys", "son"],
    ("Girls",): ["girl", "girls", "daughter"],
    ("Boys", "Girls", "Kids"): ["kid", "kids", "child", "children", "toddler"],
    ("Unisex",): ["unisex", "anyone"],
}
USAGE_WORDS: dict[str, list[str]] = {
    "Casual": ["casual", "everyday", "daily wear"], "Formal": ["formal", "office", "work wear", "business"],
    "Sports": ["sport", "sporty", "gym", "athletic", "workout"], "Ethnic": ["ethnic", "traditional", "festive"],
    "Party": ["party", "partywear", "party wear"], "Travel": ["travel"], "Smart Casual": ["smart casual"],
}
#: Words before a mention that negate it: "not black", "no white", "anything but red".
_NEGATION = re.compile(r"(?:\bnot|\bno|\bwithout|\bexcept|\bexcluding|\bother than|\banything but|\bbut not|"
                       r"\bnon)[\s-]+(?:in\s+|any\s+|a\s+|for\s+)?$")
#: Catalogue gender words in product names, most specific first (a "Boys" name often says "Kids" too).
_NAME_GENDER = [("Boys", re.compile(r"\bboys?\b", re.I)), ("Girls", re.compile(r"\bgirls?\b", re.I)),
                ("Kids", re.compile(r"\bkids\b", re.I)),
                ("Women", re.compile(r"\bwom[ae]n'?s?\b|\bfor her\b", re.I)),
                ("Men", re.compile(r"\bm[ae]n'?s?\b|\bfor him\b", re.I)), ("Unisex", re.compile(r"\bunisex\b", re.I))]


def _phrase(word: str) -> str:
    """A regex for one vocabulary word: spaces or hyphens between its parts, an optional plural."""
    body = r"[\s-]?".join(re.escape(part) for part in re.split(r"[\s-]+", word))
    return body + ("" if word.endswith("s") else r"(?:s|es)?")


def _vocabulary() -> list[tuple[str, str, tuple[str, ...]]]:
    """(phrase, field, values) for every word the parser knows."""
    entries = [(w, "articleType", (t,)) for t, words in TYPE_WORDS.items() for w in words]
    entries += [(w, "articleType", tuple(ts)) for w, ts in FAMILY_WORDS.items()]
    entries += [(w, "baseColour", (c,)) for c, words in COLOUR_WORDS.items() for w in words]
    entries += [(w, "gender", g) for g, words in GENDER_WORDS.items() for w in words]
    entries += [(w, "usage", (u,)) for u, words in USAGE_WORDS.items() for w in words]
    return entries


@lru_cache(maxsize=1)
def _matcher() -> tuple[re.Pattern, dict[str, tuple[str, tuple[str, ...]]]]:
    """One regex of every known phrase, longest first (so "navy blue" wins over "blue" and
    "sports shoes" over "sports"), and the phrase each alternative stands for."""
    entries = sorted(_vocabulary(), key=lambda e: -len(e[0]))
    names, lookup = [], {}
    for n, (word, field_, values) in enumerate(entries):
        names.append(f"(?P<w{n}>{_phrase(word)})")
        lookup[f"w{n}"] = (field_, values)
    return re.compile(r"(?<![\w'])(?:" + "|".join(names) + r")(?![\w])", re.I), lookup


@dataclass
class Query:
    """What a shopper asked for: allowed values per field (``include``), refused ones (``exclude``)."""

    text: str
    include: dict[str, list[str]] = field(default_factory=dict)
    exclude: dict[str, list[str]] = field(default_factory=dict)

    @property
    def fields(self) -> list[str]:
        """The constrained fields, in relaxation order."""
        return [f for f in FIELDS if f in self.include or f in self.exclude]

    def without(self, fields: Sequence[str]) -> "Query":
        """The same query with the constraints on ``fields`` dropped."""
        keep = lambda d: {k: v for k, v in d.items() if k not in fields}  # noqa: E731
        return Query(self.text, keep(self.include), keep(self.exclude))

    def then(self, later: "Query") -> "Query":
        """This query refined by a later message ("heels for women", then "in black"): the later
        message's constraints replace this one's on the fields it names; the others stay."""
        named = set(later.include) | set(later.exclude)
        keep = lambda d: {k: list(v) for k, v in d.items() if k not in named}  # noqa: E731
        return Query(f"{self.text} {later.text}".strip(), {**keep(self.include), **later.include},
                     {**keep(self.exclude), **later.exclude})

    def understood(self) -> dict:
        """``{field: [values]}`` and ``{"not " + field: [values]}``, for replies and the chat."""
        out = {k: list(v) for k, v in self.include.items()}
        out.update({f"not {k}": list(v) for k, v in self.exclude.items()})
        return out

    def describe(self) -> str:
        """The constraints in words: "Black Heels for Women, not Red"."""
        inc = self.include
        words = [" or ".join(inc["baseColour"])] if "baseColour" in inc else []
        words += [" or ".join(inc["usage"])] if "usage" in inc else []
        words.append(" or ".join(inc["articleType"]) if "articleType" in inc else "products")
        if "gender" in inc:
            words.append("for " + " or ".join(inc["gender"]))
        if self.exclude:
            words.append(", not " + ", ".join(v for values in self.exclude.values() for v in values))
        return " ".join(words).replace(" ,", ",")


def parse_query(text: str) -> Query:
    """Article types, colours, gender/age and usage named in ``text``, and those negated.

    >>> parse_query("navy trainers for gents, not white").include
    {'articleType': ['Sports Shoes'], 'baseColour': ['Navy Blue'], 'gender': ['Men']}
    """
    text = str(text)[:MAX_QUERY_CHARS]
    pattern, lookup = _matcher()
    include: dict[str, list[str]] = {}
    exclude: dict[str, list[str]] = {}
    for match in pattern.finditer(text.replace("’", "'")):
        field_, values = lookup[match.lastgroup]
        negated = _NEGATION.search(text[:match.start()].lower()) is not None
        target = exclude if negated else include
        target.setdefault(field_, [])
        target[field_] += [v for v in values if v not in target[field_]]
    # Two genders named ("for him or her") is no gender constraint; an excluded value is never included.
    if len(include.get("gender", [])) > 1 and not {"Boys", "Girls"} <= set(include["gender"]):
        del include["gender"]
    include = {f: kept for f, values in include.items()
               if (kept := [v for v in values if v not in exclude.get(f, [])])}
    return Query(text, include, exclude)


# --------------------------------------------------------------------------- the catalogue's attributes
def name_gender(names: pd.Series) -> pd.Series:
    """The gender a product name states (``Men``, ``Women``, ``Boys``, ``Girls``, ``Kids``,
    ``Unisex``), or '' when it names none: the shared catalogue has no gender column."""
    names = names.fillna("").astype(str)
    out = pd.Series("", index=names.index, dtype=object)
    for value, pattern in reversed(_NAME_GENDER):  # the most specific is written last
        out[names.str.contains(pattern)] = value
    return out


def with_gender(products: pd.DataFrame) -> pd.DataFrame:
    """``products`` with a ``gender`` column: Kaggle's own where it has one, else from the names."""
    out = products.copy()
    derived = name_gender(out["productDisplayName"])
    if "gender" in out:
        given = out["gender"].fillna("").astype(str).str.strip()
        out["gender"] = given.where(given != "", derived)
    else:
        out["gender"] = derived
    if "usage" not in out:
        out["usage"] = ""
    return out


# --------------------------------------------------------------------------- name embeddings
@lru_cache(maxsize=4)
def encoder_sha256(name: str = "minilm") -> str:
    """SHA-256 over the sentence encoder's weight files: which model made a set of name embeddings."""
    import hashlib

    from .sentence import model_files
    from .vision import file_sha256

    return hashlib.sha256(" ".join(file_sha256(p) for p in model_files(name)).encode()).hexdigest()


def ids_sha256(ids: np.ndarray) -> str:
    """SHA-256 of product ids in order: which catalogue a search artifact belongs to."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()


def build_name_embeddings(products: pd.DataFrame, encoder=None, batch_size: int = 256) -> np.ndarray:
    """Unit MiniLM embeddings of every product name (float32, one row per product, in order)."""
    from .sentence import SentenceEncoder

    encoder = encoder or SentenceEncoder("minilm")
    return _unit(encoder(products["productDisplayName"].fillna("").astype(str).tolist(), batch_size=batch_size))


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


# --------------------------------------------------------------------------- the search
@dataclass
class SearchResult:
    """What ``TextSearch.search`` found: catalogue positions best first with their fused scores,
    what was understood, which constraints were relaxed, and a sentence for the shopper."""

    positions: np.ndarray
    scores: np.ndarray
    query: Query
    relaxed: list[str] = field(default_factory=list)
    message: str = ""
    #: How many products passed the (possibly relaxed) filters.
    matched: int = 0


_TOKEN = re.compile(r"[a-z0-9]+")


@lru_cache(maxsize=2**16)  # bounded: every word a shopper ever typed would otherwise stay
def _stem(word: str) -> str:
    return _porter().stem(word)


@lru_cache(maxsize=1)
def _porter():
    from nltk.stem import PorterStemmer

    return PorterStemmer()


@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    # sklearn's English list: no NLTK data needed to search (NLTK's stemmer is code, not data).
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS) - {"top", "bottom"}


def tokens(text: str) -> list[str]:
    """Lower-case word stems without stop words: what BM25 indexes and looks up."""
    stop = _stopwords()
    return [_stem(w) for w in _TOKEN.findall(str(text).lower()) if w not in stop]


def document_text(products: pd.DataFrame) -> list[str]:
    """What BM25 indexes for each product: its name and its attributes."""
    cols = [c for c in ("productDisplayName", "articleType", "baseColour", "gender", "usage", "subCategory")
            if c in products]
    text = products[cols[0]].fillna("").astype(str)
    for c in cols[1:]:
        text = text + " " + products[c].fillna("").astype(str)
    return text.tolist()


class TextSearch:
    """Parse, filter (relaxing when empty) and rank catalogue products for a text query.

    ``products`` is one row per catalogue product (``articleType``, ``baseColour``,
    ``productDisplayName``, ``gender``/``usage`` when known), in the order of ``name_vectors``;
    results are positions in that order. Without ``name_vectors`` BM25 ranks alone.
    """

    def __init__(self, products: pd.DataFrame, name_vectors: np.ndarray | None = None, encoder=None, bm25=None):
        """``bm25``: a ``bm25s.BM25`` already built over ``document_text(products)`` (``load``);
        otherwise it is built here (a few seconds for the catalogue)."""
        import bm25s

        if name_vectors is not None and len(name_vectors) != len(products):
            raise ValueError(f"{len(name_vectors)} name embeddings for {len(products)} products")
        self.products = with_gender(products.reset_index(drop=True))
        self.ids = self.products["id"].to_numpy(np.int64) if "id" in self.products else np.arange(len(products))
        self.name_vectors = None if name_vectors is None else _unit(name_vectors)
        if encoder is None:
            from .sentence import SentenceEncoder

            encoder = SentenceEncoder("minilm")  # loads its weights only when first called
        self.encoder = encoder
        self._values = {f: self.products[f].fillna("").astype(str).to_numpy() for f in FIELDS}
        self._masks: dict[tuple[str, str], np.ndarray] = {}
        if bm25 is None:
            bm25 = bm25s.BM25()
            bm25.index([tokens(d) or ["_"] for d in document_text(self.products)], show_progress=False)
        self.bm25 = bm25
        self._vocab = set(self.bm25.vocab_dict)

    @classmethod
    def build(cls, products: pd.DataFrame, encoder=None) -> "TextSearch":
        """BM25 and the name embeddings over ``products`` (what ``make run`` saves)."""
        search = cls(products, encoder=encoder)
        search.name_vectors = build_name_embeddings(search.products, search.encoder)
        return search

    def save(self, folder: str | Path) -> Path:
        """Write ``search.json`` (format, encoder and its hash, the products' ids hash),
        ``name_embeddings.npz`` (float16, no pickle) and BM25's arrays (``bm25/``, no pickle)."""
        if self.name_vectors is None:
            raise ValueError("only a search with name embeddings is saved (build it with TextSearch.build)")
        folder = Path(folder)
        with atomic_writer(folder / "name_embeddings.npz") as f:
            np.savez(f, vectors=self.name_vectors.astype(np.float16))
        with atomic_folder(folder / "bm25") as tmp:
            self.bm25.save(str(tmp))
        meta = {"format": SEARCH_FORMAT, "format_version": SEARCH_FORMAT_VERSION, "package_version": __version__,
                "encoder": self.encoder.name, "encoder_sha256": encoder_sha256(self.encoder.name),
                "count": len(self), "ids_sha256": ids_sha256(self.ids), "dim": int(self.name_vectors.shape[1])}
        return write_atomic(folder / "search.json", json.dumps(meta, indent=1))

    @classmethod
    def load(cls, folder: str | Path, products: pd.DataFrame) -> "TextSearch":
        """Read what ``save`` wrote, for these ``products`` (same ids, same order). ``ArtifactError``
        if missing, damaged, from another format, for other products, or made by another encoder."""
        import bm25s

        from .sentence import SentenceEncoder

        folder = Path(folder)
        meta_path, data_path = folder / "search.json", folder / "name_embeddings.npz"
        rebuild = "rebuild it with shopbot_utils.pipeline.build_text_search (or `python -m shopbot_utils build`)"
        meta = read_meta(meta_path, data_path, SEARCH_FORMAT, SEARCH_FORMAT_VERSION,
                         f"no text search in {folder}: {rebuild}", rebuild)
        ids = products["id"].to_numpy(np.int64)
        if meta.get("count") != len(ids) or meta.get("ids_sha256") != ids_sha256(ids):
            raise ArtifactError(f"{meta_path} was built for other products ({meta.get('count')}) than the "
                                f"{len(ids)} in products.csv: {rebuild}")
        encoder = SentenceEncoder(meta.get("encoder", "minilm"))
        if meta.get("encoder_sha256") != encoder_sha256(encoder.name):
            raise ArtifactError(f"{meta_path}: its name embeddings were made by another {encoder.name} model than "
                                f"the one installed: {rebuild}")
        try:
            with np.load(data_path, allow_pickle=False) as saved:
                vectors = saved["vectors"].astype(np.float32)
            bm25 = bm25s.BM25.load(str(folder / "bm25"))
        except Exception as exc:  # noqa: BLE001 - damaged files: say which
            raise ArtifactError(f"{folder} is damaged ({type(exc).__name__}: {exc}): {rebuild}") from None
        if vectors.shape != (len(ids), meta.get("dim")) or bm25.scores["num_docs"] != len(ids):
            raise ArtifactError(f"{folder}: {vectors.shape} name embeddings, {bm25.scores['num_docs']} BM25 "
                                f"documents for {len(ids)} products: {rebuild}")
        return cls(products, vectors, encoder, bm25)

    def __len__(self) -> int:
        return len(self.products)

    def _value_mask(self, field_: str, value: str) -> np.ndarray:
        mask = self._masks.get((field_, value))
        if mask is None:
            mask = self._values[field_] == value
            if mask.any():  # only the catalogue's own values are kept (bounded); any other string is all-False
                self._masks[(field_, value)] = mask
        return mask

    def mask(self, query: Query | dict) -> np.ndarray:
        """Which products pass the query's constraints (``{field: value or [values]}`` works too)."""
        if not isinstance(query, Query):
            query = Query("", {k: [v] if isinstance(v, str) else list(v) for k, v in query.items()})
        unknown = (set(query.include) | set(query.exclude)) - set(FIELDS)
        if unknown:
            raise ValueError(f"cannot filter on {sorted(unknown)}; fields are {list(FIELDS)}")
        keep = np.ones(len(self), bool)
        for field_, values in query.include.items():
            keep &= np.logical_or.reduce([self._value_mask(field_, v) for v in values])
        for field_, values in query.exclude.items():
            for v in values:
                keep &= ~self._value_mask(field_, v)
        return keep

    def relaxed_mask(self, query: Query) -> tuple[np.ndarray, list[str]]:
        """The query's filter, or, when nothing passes, the first one that does with the fewest
        constraints dropped (in ``FIELDS`` order): ``(mask, dropped fields)``."""
        keep = self.mask(query)
        fields = query.fields
        for n in range(1, len(fields) + 1):
            if keep.any():
                break
            for dropped in itertools.combinations(fields, n):
                keep = self.mask(query.without(dropped))
                if keep.any():
                    return keep, list(dropped)
        return keep, []

    def bm25_scores(self, text: str, query: Query | None = None) -> np.ndarray:
        """BM25 score of every product for the words of ``text`` plus the catalogue's names of what
        was understood (so "trainers" also looks up "sports shoes")."""
        query = query or parse_query(text)
        words = tokens(text) + [t for values in query.include.values() for v in values for t in tokens(v)]
        words = [w for w in dict.fromkeys(words) if w in self._vocab]
        if not words:
            return np.zeros(len(self), np.float32)
        return np.asarray(self.bm25.get_scores(words), dtype=np.float32)

    def dense_scores(self, text: str, keep: np.ndarray | None = None) -> np.ndarray | None:
        """Cosine between the query's MiniLM embedding and every product name (None without them).
        With ``keep`` (a mask), only those products are scored (the others get -inf): a filter that
        lets a few hundred products through costs a few hundred dot products, not 40,000."""
        if self.name_vectors is None:
            return None
        query = _unit(self.encoder([text]))[0]
        if keep is None or keep.mean() > 0.5:
            return self.name_vectors @ query
        scores = np.full(len(self), -np.inf, np.float32)
        allowed = np.flatnonzero(keep)
        scores[allowed] = self.name_vectors[allowed] @ query
        return scores

    def search(self, text: object, k: int = 5, within: np.ndarray | None = None,
               query: Query | None = None) -> SearchResult:
        """The ``k`` best products for ``text``: understood constraints filter, BM25 and name
        embeddings rank (reciprocal-rank fusion). ``within``: a mask the results must also pass.
        ``query``: the constraints to use instead of ``parse_query(text)`` (a conversation's context)."""
        from .text import clean_text

        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive whole number, got {k!r}")
        text = clean_text(text)[:MAX_QUERY_CHARS]
        query = parse_query(text) if query is None else query
        empty = np.zeros(0, np.int64)
        if not _TOKEN.search(text.lower()):
            return SearchResult(empty, np.zeros(0), query, message="Tell me what you are looking for, "
                                "e.g. \"black heels for women\" or \"navy trainers\".")
        keep, relaxed = self.relaxed_mask(query)
        if within is not None:
            keep = keep & within
        bm25 = self.bm25_scores(text, query)
        dense = self.dense_scores(text, keep)  # an unfiltered search scores every name anyway
        if not query.fields and not (bm25 > 0).any() and (dense is None or dense.max() < MIN_DENSE_COSINE):
            return SearchResult(empty, np.zeros(0), query, message=f"I could not find products for "
                                f"\"{text[:60]}\". Try a product type and a colour, e.g. \"blue jeans for men\".")
        positions, scores = _fuse(keep, bm25, dense, k, pad=bool(query.fields))
        return SearchResult(positions, scores, query, relaxed, relaxation_message(query, relaxed),
                            int(keep.sum()))


def relaxation_message(query: Query, relaxed: Sequence[str], where: str = "in the catalogue") -> str:
    """What the reply says when constraints were dropped ("" when none was): "No Maroon Heels in
    the catalogue; here are Heels (any colour)."."""
    if not relaxed:
        return ""
    words = {"usage": "any occasion", "baseColour": "any colour", "gender": "anyone's", "articleType": "any type"}
    return (f"No {query.describe()} {where}; here are {query.without(relaxed).describe()}"
            f" ({', '.join(words[f] for f in relaxed)}).")


def _ranks(scores: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (into ``scores``) of the ``depth`` best, best first, and their ranks from 1."""
    depth = min(depth, len(scores))
    top = np.argpartition(-scores, depth - 1)[:depth]
    top = top[np.lexsort((top, -scores[top]))]  # ties: catalogue order
    return top, np.arange(1, len(top) + 1)


def _fuse(keep: np.ndarray, bm25: np.ndarray, dense: np.ndarray | None, k: int,
          pad: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Reciprocal-rank fusion of BM25 (products with a BM25 hit) and name cosine, among ``keep``.
    ``pad``: when fewer than ``k`` are ranked, fill up with the others that pass, in catalogue order
    (they all satisfy the constraints); otherwise return only ranked products."""
    allowed = np.flatnonzero(keep)
    if not len(allowed):
        return np.zeros(0, np.int64), np.zeros(0)
    fused = np.zeros(len(allowed))
    lexical = bm25[allowed]
    if (lexical > 0).any():
        top, rank = _ranks(np.where(lexical > 0, lexical, -np.inf), FUSION_DEPTH)
        hit = lexical[top] > 0
        fused[top[hit]] += 1.0 / (RRF_K + rank[hit])
    if dense is not None:
        top, rank = _ranks(dense[allowed], FUSION_DEPTH)
        fused[top] += 1.0 / (RRF_K + rank)
    best, _ = _ranks(fused, k)
    if not pad:
        best = best[fused[best] > 0]
    return allowed[best], fused[best]
