"""Measuring text search and refinement (``benchmarks/bench_search.py``).

No hand labels exist, so queries come from the catalogue's attribute groups (article type x colour x
gender with at least ``MIN_GROUP`` products), worded three ways: the catalogue's own words, the
parser's synonyms (circular: reported, never counted as success), and the kept-apart word list in
``benchmarks/search_wordings.json`` (written before the parser, frozen). Groups are split into a dev
half (for tuning) and a test half (for reporting). Relevance is graded like Amazon's Shopping Queries
benchmark: 1 when every asked attribute matches, 0.1 when the type matches but a colour or gender
does not, else 0.
"""
from __future__ import annotations

import json
import re
import time
import zlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from . import config
from .duplicates import normalise_name
from .search import COLOUR_WORDS, GENDER_WORDS, TYPE_WORDS, TextSearch

MIN_GROUP = 5
#: Cards on the chat's first page (``chat.PAGE``): what the page metrics look at.
PAGE = 8
#: A shopper's session from issue 28, as typed: words a filter cannot use, colours the catalogue names
#: otherwise, occasions, short pages and duplicate-heavy pages (what ``page_report`` prints replies for).
SESSION_QUERIES = ["show me black formal shoes for men", "brown formal shoes for men", "off-white shirt",
                   "party clutch in gold", "women's black sandals", "gifts for my dad under 50 dollars",
                   "burgundy heels", "summer outfit for a beach holiday", "do you have red dresses?",
                   "cotton kurta for women size m", "nike running shoes under 3000"]
WORDINGS_FILE = config.ROOT / "benchmarks" / "search_wordings.json"
ATTRS = ("articleType", "baseColour", "gender")

#: Words shoppers use for the Fashion-37 article types (singular; plurals are matched too).
_LEGACY_TYPES = {
    "Backpacks": ["backpack", "rucksack", "school bag"], "Belts": ["belt"], "Bra": ["bra"],
    "Briefs": ["brief", "underwear", "boxer"], "Caps": ["cap", "hat"], "Casual Shoes": ["casual shoe", "sneaker"],
    "Clutches": ["clutch"], "Deodorant": ["deodorant", "deo"], "Dresses": ["dress", "gown"],
    "Earrings": ["earring"], "Flats": ["flat", "ballerina"], "Flip Flops": ["flip flop", "flip-flop", "slipper"],
    "Formal Shoes": ["formal shoe", "oxford", "loafer", "derby"], "Handbags": ["handbag", "bag", "purse", "tote"],
    "Heels": ["heel", "stiletto", "pump"], "Jackets": ["jacket", "coat", "blazer"], "Jeans": ["jean", "denim"],
    "Kurtas": ["kurta", "kurti"], "Lipstick": ["lipstick"], "Nail Polish": ["nail polish", "nail paint"],
    "Perfume and Body Mist": ["perfume", "body mist", "fragrance", "scent"], "Sandals": ["sandal"],
    "Sarees": ["saree", "sari"], "Shirts": ["shirt"], "Shorts": ["short"], "Socks": ["sock"],
    "Sports Shoes": ["sports shoe", "sport shoe", "running shoe", "trainer", "shoes for running"],
    "Sunglasses": ["sunglass", "shades"], "Sweaters": ["sweater", "jumper", "pullover", "cardigan"],
    "Sweatshirts": ["sweatshirt", "hoodie"], "Ties": ["tie"], "Tops": ["top", "blouse"],
    "Track Pants": ["track pant", "jogger", "trackpant"], "Trousers": ["trouser", "pant", "chino"],
    "Tshirts": ["t-shirt", "tshirt", "t shirt", "tee"], "Wallets": ["wallet"], "Watches": ["watch"],
}
_LEGACY_COLOURS = ["navy blue", "black", "white", "blue", "brown", "grey", "red", "green", "pink", "silver",
           "purple", "yellow", "beige", "gold", "maroon", "orange", "olive", "cream", "charcoal",
           "peach", "off white", "khaki", "magenta", "teal", "turquoise blue", "tan", "lavender",
           "mustard", "copper", "rust", "burgundy", "multi"]
_LEGACY_GENDERS = {"Men": ["men", "man", "male", "boy", "gents", "mens", "guy", "him"],
           "Women": ["women", "woman", "female", "girl", "ladies", "lady", "womens", "her"]}


def _legacy_pattern(words: Sequence[str]) -> re.Pattern:
    alternatives = sorted((re.escape(w).replace(r"\ ", r"[\s-]?") for w in words), key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(alternatives) + r")(?:s|es)?\b")


_LEGACY_TYPE_RE = {t: _legacy_pattern(w) for t, w in _LEGACY_TYPES.items()}
_LEGACY_COLOUR_RE = {c: _legacy_pattern([c]) for c in _LEGACY_COLOURS}
_LEGACY_GENDER_RE = {g: _legacy_pattern(w) for g, w in _LEGACY_GENDERS.items()}


def legacy_understand(text: str) -> dict:
    """The parser ``ask`` used before text search (kept as the benchmark's baseline, the "old parser")."""
    text = text.lower().replace("'s", "").replace("’s", "")
    found = {}
    spans = {t: [m.span() for m in p.finditer(text)] for t, p in _LEGACY_TYPE_RE.items()}
    # A match inside a longer one is not a mention: "shirt" in "t-shirts", "bag" in "school bag".
    inside = lambda a, b: a != b and b[0] <= a[0] and a[1] <= b[1]  # noqa: E731
    others = [span for found_spans in spans.values() for span in found_spans]
    types = [t for t, found_spans in spans.items()
             if any(not any(inside(a, b) for b in others) for a in found_spans)]
    if types:
        found["articleType"] = types
    colours = [c.title() for c, p in _LEGACY_COLOUR_RE.items() if p.search(text)]
    colours = [c for c in colours if not any(c != o and c.lower() in o.lower() for o in colours)]
    if colours:
        found["baseColour"] = colours
    genders = [g for g, p in _LEGACY_GENDER_RE.items() if p.search(text)]
    if len(genders) == 1:
        found["gender"] = genders[0]
    return found


def legacy_first_rows(products: pd.DataFrame, text: str, k: int = 5) -> np.ndarray:
    """The ranker before text search: the old parser's filters, then the first ``k`` rows (positions)."""
    understood = legacy_understand(text)
    keep = np.ones(len(products), bool)
    for column in ("articleType", "baseColour"):
        if column in understood:
            keep &= products[column].isin(understood[column]).to_numpy()
    if "gender" in understood:
        keep &= products["productDisplayName"].str.contains(rf"\b{understood['gender']}\b", na=False).to_numpy()
    return np.flatnonzero(keep)[:k]


# --------------------------------------------------------------------------- queries
def query_groups(products: pd.DataFrame, classes: Sequence[str], min_size: int = MIN_GROUP,
                 wordings: dict | None = None) -> pd.DataFrame:
    """Attribute groups (type x colour x gender, ``min_size`` products or more) that every wording
    can name, with ``half`` = dev or test (by a hash of the group, so stable across runs)."""
    wordings = wordings or load_wordings()
    counts = products[products["articleType"].isin(classes) & (products["gender"] != "")] \
        .groupby(list(ATTRS)).size().rename("size").reset_index()
    counts = counts[(counts["size"] >= min_size) & counts["baseColour"].isin(wordings["baseColour"])
                    & counts["gender"].isin(wordings["gender"]) & counts["articleType"].isin(wordings["articleType"])]
    key = counts[list(ATTRS)].astype(str).agg("/".join, axis=1)
    counts["half"] = np.where(key.map(lambda s: zlib.crc32(s.encode()) % 2 == 0), "dev", "test")
    return counts.reset_index(drop=True)


def load_wordings(path: str | Path = WORDINGS_FILE) -> dict:
    """The kept-apart word list (types, colours, genders, templates)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


_PARSER_GENDER = {values[0]: words for values, words in GENDER_WORDS.items() if len(values) == 1}


def word_queries(groups: pd.DataFrame, wording: str, seed: int = config.SEED,
                 wordings: dict | None = None) -> list[str]:
    """One query per group in ``wording``: ``catalogue`` ("navy blue casual shoes for men"),
    ``synonyms`` (the parser's own words other than the catalogue's) or ``kept_apart``."""
    wordings = wordings or load_wordings()
    out = []
    for row in groups.itertuples(index=False):
        rng = np.random.default_rng([seed, zlib.crc32(f"{row.articleType}/{row.baseColour}/{row.gender}".encode())])
        pick = lambda words: words[rng.integers(len(words))]  # noqa: E731
        if wording == "catalogue":
            out.append(f"{row.baseColour} {row.articleType} for {row.gender}".lower())
        elif wording == "synonyms":
            own = lambda words, name: [w for w in words if w != name.lower()] or words  # noqa: E731
            out.append(f"{pick(own(COLOUR_WORDS[row.baseColour], row.baseColour))} "
                       f"{pick(own(TYPE_WORDS[row.articleType], row.articleType))} for "
                       f"{pick(own(_PARSER_GENDER[row.gender], row.gender))}")
        elif wording == "kept_apart":
            template = pick(wordings["templates"])
            out.append(template.format(colour=pick(wordings["baseColour"][row.baseColour]),
                                       type=pick(wordings["articleType"][row.articleType]),
                                       gender=pick(wordings["gender"][row.gender])))
        else:
            raise ValueError(f"unknown wording {wording!r}")
    return out


# --------------------------------------------------------------------------- metrics
def gains(products: pd.DataFrame, positions: np.ndarray, group) -> np.ndarray:
    """Graded relevance of the products at ``positions`` for a group: 1, 0.1 or 0."""
    rows = products.iloc[np.asarray(positions, dtype=np.int64)]
    same_type = (rows["articleType"] == group.articleType).to_numpy()
    exact = same_type & (rows["baseColour"] == group.baseColour).to_numpy() & (rows["gender"] == group.gender).to_numpy()
    return np.where(exact, 1.0, np.where(same_type, 0.1, 0.0))


def ndcg(found: np.ndarray, n_exact: int, n_type: int, k: int = 10) -> float:
    """nDCG@k of graded gains ``found`` (best first) against the ideal list (``n_exact`` gains of 1,
    then ``n_type`` of 0.1)."""
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.concatenate([np.ones(min(n_exact, k)), np.full(max(0, min(n_type, k - n_exact)), 0.1)])
    found = np.asarray(found[:k], dtype=float)
    return float((found * discount[:len(found)]).sum() / (ideal * discount[:len(ideal)]).sum())


def bootstrap_ci(values: np.ndarray, n: int = 1000, seed: int = config.SEED) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean."""
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n, len(values)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def evaluate_ranker(rank: Callable[[str], np.ndarray], products: pd.DataFrame, groups: pd.DataFrame,
                    queries: Sequence[str], items: np.ndarray | None = None) -> dict:
    """P@5 and nDCG@10 (with bootstrap intervals), the zero-result rate and the share of top-5 results
    that break an asked constraint, for ``rank(query) -> positions best first``. With ``items`` (an
    item label per product, ``DuplicateGroups.labels``): ``item_p_at_5``, the distinct exact-match
    items in the top 5 over the most there can be (5, or fewer when the group has fewer items): a
    page of one item listed five times scores 1/5 there, 1.0 in P@5."""
    type_counts = products["articleType"].value_counts()
    attrs = {a: products[a].to_numpy() for a in ATTRS}
    p5, item_p5, nd, zero, broken, times = [], [], [], [], [], []
    for group, text in zip(groups.itertuples(index=False), queries):
        start = time.perf_counter()
        found = np.asarray(rank(text), dtype=np.int64)[:10]
        times.append(time.perf_counter() - start)
        g = gains(products, found, group)
        p5.append(float((g[:5] == 1.0).sum()) / 5)
        if items is not None:
            exact = (attrs["articleType"] == group.articleType) & (attrs["baseColour"] == group.baseColour) \
                & (attrs["gender"] == group.gender)
            best = min(5, len(np.unique(items[exact])))
            item_p5.append(len(np.unique(items[found[:5][g[:5] == 1.0]])) / best)
        nd.append(ndcg(g, int(group.size), int(type_counts.get(group.articleType, 0)) - int(group.size)))
        zero.append(len(found) == 0)
        broken.extend((g[:5] < 1.0).tolist())
    return {"queries": len(queries), "p_at_5": float(np.mean(p5)), "p_at_5_ci": bootstrap_ci(p5),
            "ndcg_at_10": float(np.mean(nd)), "ndcg_at_10_ci": bootstrap_ci(nd),
            "zero_result_rate": float(np.mean(zero)), "violation_rate": float(np.mean(broken)) if broken else 0.0,
            "p50_ms": float(np.percentile(times, 50) * 1e3), "p95_ms": float(np.percentile(times, 95) * 1e3),
            **({"item_p_at_5": float(np.mean(item_p5))} if items is not None else {})}


def rankers(search: TextSearch, k: int = 10, apart: bool = False) -> dict[str, Callable[[str], np.ndarray]]:
    """The old parser's filter-and-first-rows, BM25 alone, MiniLM alone and the shipped ranker (the
    pages ``ShopBot.search`` shows: one card per item, short pages filled). ``apart``: also the
    shipped ranker with listings kept apart and no filling (the ranking alone)."""
    def top(scores: np.ndarray) -> np.ndarray:
        best = np.argsort(-scores, kind="stable")[:k]
        return best[scores[best] > -np.inf]

    out = {"old parser (filter, first rows)": lambda t: legacy_first_rows(search.products, t, k),
           "BM25 alone": lambda t: (lambda s: top(np.where(s > 0, s, -np.inf)))(search.bm25_scores(t))}
    if search.name_vectors is not None:
        out["MiniLM alone"] = lambda t: top(search.dense_scores(t))
    if apart:
        out["ShopBot, listings apart (no collapse, no fill)"] = lambda t: search.search(t, k).positions
    out["ShopBot (filters + BM25/MiniLM fusion)"] = lambda t: search.search(t, k, collapse=True,
                                                                         fill=True).positions
    return out


def text_search_report(search: TextSearch, classes: Sequence[str], halves: Sequence[str] = ("dev", "test"),
                       min_size: int = MIN_GROUP, max_queries: int | None = None, items: bool = False) -> pd.DataFrame:
    """Every ranker on every wording and half of the groups: one row each (none when no group has
    ``min_size`` products). ``max_queries``: the first groups of each half only (quick runs).
    ``items``: also the ranking with listings kept apart, and P@5 over distinct items (``item_p_at_5``)."""
    groups = query_groups(search.products, classes, min_size)
    rows = []
    for wording in ("catalogue", "synonyms", "kept_apart"):
        for half in halves:
            part = groups[groups["half"] == half].reset_index(drop=True).head(max_queries)
            if part.empty:
                continue
            queries = word_queries(part, wording)
            for name, rank in rankers(search, apart=items).items():
                rows.append({"wording": wording, "half": half, "ranker": name,
                             **evaluate_ranker(rank, search.products, part, queries,
                                               search.duplicates.labels if items else None)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- what a page looks like
def page_metrics(search: TextSearch, queries: Sequence[str], k: int = PAGE, collapse: bool = True,
                 fill: bool = True) -> dict:
    """For the first page (``k`` cards) of each query: the share of pages on which a product name
    appears twice (``duplicate_share``), with fewer than ``k`` cards although the asked type has ``k``
    items (``short_page_rate``), with words nothing filtered by (``ignored_words_rate``), and p50/p95."""
    names = search.products["productDisplayName"].to_numpy()
    types = search.products["articleType"].to_numpy()
    items = pd.Series(search.duplicates.labels).groupby(types).nunique()
    repeated, short, ignored, sizes, times = [], [], [], [], []
    for text in queries:
        start = time.perf_counter()
        result = search.search(text, k, collapse=collapse, fill=fill)
        times.append(time.perf_counter() - start)
        page = normalise_name(names[result.positions])
        repeated.append(len(set(page)) < len(page))
        asked = result.query.include.get("articleType")
        available = int(items.loc[[t for t in asked if t in items.index]].sum()) if asked else len(search)
        short.append(len(page) < min(k, available))
        ignored.append(bool(result.ignored))
        sizes.append(len(page))
    return {"queries": len(queries), "duplicate_share": float(np.mean(repeated)),
            "short_page_rate": float(np.mean(short)), "ignored_words_rate": float(np.mean(ignored)), "mean_cards": float(np.mean(sizes)),
            "p50_ms": float(np.percentile(times, 50) * 1e3), "p95_ms": float(np.percentile(times, 95) * 1e3)}


def page_report(search: TextSearch, classes: Sequence[str], halves: Sequence[str] = ("dev", "test"),
                k: int = PAGE, min_size: int = MIN_GROUP, max_queries: int | None = None) -> pd.DataFrame:
    """``page_metrics`` for every wording and half of the benchmark's groups and for the shopper's
    session (``SESSION_QUERIES``), with listings kept apart and no filling (as before issue 28) and as
    shipped (one card per item, short pages filled)."""
    groups = query_groups(search.products, classes, min_size)
    sets = [(wording, half, word_queries(part, wording))
            for wording in ("catalogue", "synonyms", "kept_apart") for half in halves
            if not (part := groups[groups["half"] == half].reset_index(drop=True).head(max_queries)).empty]
    sets.append(("session", "-", SESSION_QUERIES))
    rows = []
    for wording, half, queries in sets:
        for setting, collapse, fill in (("listings apart, no fill", False, False), ("ShopBot", True, True)):
            rows.append({"wording": wording, "half": half, "setting": setting,
                         **page_metrics(search, queries, k, collapse, fill)})
    return pd.DataFrame(rows)


def session_replies(search: TextSearch, k: int = PAGE) -> pd.DataFrame:
    """What the shopper's session (``SESSION_QUERIES``) gets: cards, near matches, collapsed listings, reply."""
    rows = []
    for text in SESSION_QUERIES:
        result = search.search(text, k, collapse=True, fill=True)
        rows.append({"query": text, "cards": len(result.positions), "near": sum(bool(n) for n in result.near),
                     "collapsed": sum(len(d) for d in result.duplicates), "reply": result.reply})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- refinement
def refinement_cases(products: pd.DataFrame, classes: Sequence[str], n: int = 200, seed: int = config.SEED,
                     candidates: np.ndarray | None = None, min_size: int = MIN_GROUP) -> pd.DataFrame:
    """(anchor id, asked colour) pairs: anchors drawn from ``candidates`` (ids; default every product of
    the classes), each asking for another colour that at least ``min_size`` products of its type have."""
    rng = np.random.default_rng(seed)
    pool = products[products["articleType"].isin(classes)]
    if candidates is not None:
        pool = pool[pool["id"].isin(candidates)]
    colours = products.groupby(["articleType", "baseColour"]).size()
    rows = []
    for i in rng.permutation(len(pool)):
        anchor = pool.iloc[i]
        options = [c for (t, c), size in colours.loc[[anchor.articleType]].items()
                   if size >= min_size and c != anchor.baseColour and c in COLOUR_WORDS]
        if options:
            rows.append({"id": int(anchor.id), "articleType": anchor.articleType, "from": anchor.baseColour,
                         "colour": options[rng.integers(len(options))]})
        if len(rows) == n:
            break
    return pd.DataFrame(rows, columns=["id", "articleType", "from", "colour"])


def refinement_report(bot, cases: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """For each way of answering "like this, but in <colour>": how often the top 5 are all of that
    colour, the share of results in it, of the anchor's type, their mean image cosine to the anchor,
    and the time per query."""
    products = bot.products
    if cases.empty:
        return pd.DataFrame()

    def first_rows(case) -> list[int]:
        rows = products[(products["articleType"] == case.articleType) & (products["baseColour"] == case.colour)]
        return rows["id"].head(k).tolist()

    methods = {"ShopBot refine (filter, then image rank)": lambda c: [p.id for p in bot.refine(c.id, f"in {c.colour}", k)],
               "image neighbours only": lambda c: [p.id for p in bot.similar(c.id, k)],
               "catalogue order (type + colour)": first_rows}
    out = []
    for name, method in methods.items():
        all_colour, colour_share, type_share, cosine, times = [], [], [], [], []
        for case in cases.itertuples(index=False):
            start = time.perf_counter()
            ids = method(case)
            times.append(time.perf_counter() - start)
            rows = products.loc[ids]
            in_colour = (rows["baseColour"] == case.colour).to_numpy()
            all_colour.append(bool(len(ids) == k and in_colour.all()))
            colour_share.append(in_colour.mean() if len(ids) else 0.0)
            type_share.append((rows["articleType"] == case.articleType).mean() if len(ids) else 0.0)
            anchor = bot.index.vectors[bot.positions([case.id])[0]]
            cosine.append(float((bot.index.vectors[bot.positions(ids)] @ anchor).mean()) if ids else 0.0)
        out.append({"method": name, "cases": len(cases), "top5_all_asked_colour": float(np.mean(all_colour)),
                    "asked_colour_share": float(np.mean(colour_share)), "same_type_share": float(np.mean(type_share)),
                    "mean_image_cosine": float(np.mean(cosine)), "p50_ms": float(np.percentile(times, 50) * 1e3),
                    "p95_ms": float(np.percentile(times, 95) * 1e3)})
    return pd.DataFrame(out)


# --------------------------------------------------------------------------- the class prior
def class_prior_report(bot, split: pd.DataFrame, weights: Sequence[float] = (0.0, 0.01, 0.02, 0.05)) -> pd.DataFrame:
    """The strict poster score (test queries against train+valid, the query never in the index) when
    ``similar`` adds ``weight * log p(query's type = product's type)`` to the cosine."""
    from .bot import PRIOR_POOL
    from .evaluate import ClassPriorIndex, retrieval_metrics, split_gallery

    gallery = split_gallery(bot, split)
    test_ids = split.loc[split["split"] == "test", "id"].to_numpy()
    queries = bot.stored_embeddings(test_ids)
    facts = split.set_index("id")
    return pd.DataFrame([{"class_prior": w, **retrieval_metrics(ClassPriorIndex(bot, gallery, w, PRIOR_POOL),
                                                                 queries, test_ids, facts)} for w in weights])
