"""Text search: the parser, filters and relaxation, ranking, filtered vector search, save/load, bad input."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from shopbot_utils import index as index_module
from shopbot_utils.artifacts import ArtifactError
from shopbot_utils.index import INDEXES, ExactIndex, build_index
from shopbot_utils.duplicates import DuplicateGroups
from shopbot_utils.search import (COLOUR_SHADES, COLOUR_WORDS, OCCASION_TYPES, OCCASION_WORDS, TYPE_NEIGHBOURS,
                                  TYPE_WORDS, Query, TextSearch, name_gender, parse_query, ranking_text, with_gender)


@pytest.mark.parametrize("text, expected", [
    ("black heels for women", {"baseColour": ["Black"], "articleType": ["Heels"], "gender": ["Women"]}),
    # British and American words for the same thing
    ("trainers for men", {"articleType": ["Sports Shoes"], "gender": ["Men"]}),
    ("running shoes for men", {"articleType": ["Sports Shoes"], "gender": ["Men"]}),
    ("trousers", {"articleType": ["Trousers"]}), ("pants", {"articleType": ["Trousers"]}),
    ("slacks", {"articleType": ["Trousers"]}),
    ("jumper", {"articleType": ["Sweaters"]}), ("sweater", {"articleType": ["Sweaters"]}),
    ("flip-flops", {"articleType": ["Flip Flops"]}), ("flip flops", {"articleType": ["Flip Flops"]}),
    ("nail varnish", {"articleType": ["Nail Polish"]}), ("nail polish", {"articleType": ["Nail Polish"]}),
    ("grey t-shirt", {"baseColour": ["Grey"], "articleType": ["Tshirts"]}),
    ("gray tee", {"baseColour": ["Grey"], "articleType": ["Tshirts"]}),
    ("sneakers", {"articleType": ["Casual Shoes"]}),
    # shades and multi-word colours: the longest name wins
    ("navy trainers for gents", {"baseColour": ["Navy Blue"], "articleType": ["Sports Shoes"], "gender": ["Men"]}),
    ("navy blue shirt", {"baseColour": ["Navy Blue"], "articleType": ["Shirts"]}),
    ("off white kurta for ladies", {"baseColour": ["Off White"], "articleType": ["Kurtas"], "gender": ["Women"]}),
    ("maroon saree", {"baseColour": ["Maroon"], "articleType": ["Sarees"]}),
    ("wine coloured dress", {"baseColour": ["Maroon"], "articleType": ["Dresses"]}),
    # age, usage, families of types
    ("t-shirts for boys", {"articleType": ["Tshirts"], "gender": ["Boys"]}),
    ("shoes for kids", {"articleType": ["Casual Shoes", "Formal Shoes", "Sports Shoes", "Heels", "Flats"],
                        "gender": ["Boys", "Girls", "Kids"]}),
    ("unisex backpack", {"gender": ["Unisex"], "articleType": ["Backpacks"]}),
    ("formal shoes", {"articleType": ["Formal Shoes"]}),  # the type, not the usage "formal"
    ("formal shirt", {"usage": ["Formal"], "articleType": ["Shirts"]}),
    ("sports ones", {"usage": ["Sports"]}),
    ("women's watches", {"gender": ["Women"], "articleType": ["Watches"]}),
    # words inside other words are not mentions
    ("shortlist a laptop", {}), ("something nice", {}),
    ("something for him or her", {}),  # two genders named: no gender constraint
])
def test_parser_understands_phrasings(text, expected):
    assert parse_query(text).include == expected


@pytest.mark.parametrize("text, include, exclude", [
    ("jeans, not black", {"articleType": ["Jeans"]}, {"baseColour": ["Black"]}),
    ("heels but not red", {"articleType": ["Heels"]}, {"baseColour": ["Red"]}),
    ("any shirt except white", {"articleType": ["Shirts"]}, {"baseColour": ["White"]}),
    ("a watch without a black strap", {"articleType": ["Watches"]}, {"baseColour": ["Black"]}),
    ("like this but in black", {"baseColour": ["Black"]}, {}),  # "but" alone does not negate
    # "not" negates the next mention only
    ("blue or black but not navy jeans", {"baseColour": ["Blue", "Black"], "articleType": ["Jeans"]},
     {"baseColour": ["Navy Blue"]}),
])
def test_parser_negations(text, include, exclude):
    query = parse_query(text)
    assert query.include == include and query.exclude == exclude


def test_name_gender_and_the_kaggle_column():
    names = pd.Series(["Nike Men Blue Shirt", "Catwalk Women Black Heels", "Gini and Jony Boys Red T-Shirt",
                       "Levis Kids Boy's Polo", "Doodle Kids Girls Top", "Puma Unisex Red Backpack",
                       "Scullers For Her Beige Trousers", "Rockport Men's Brown Shoe", "FNF Purple Sari", None])
    assert name_gender(names).tolist() == ["Men", "Women", "Boys", "Boys", "Girls", "Unisex", "Women", "Men", "", ""]
    kaggle = pd.DataFrame({"productDisplayName": ["FNF Purple Sari", "Nike Men Shirt"], "gender": ["Women", ""]})
    assert with_gender(kaggle)["gender"].tolist() == ["Women", "Men"]  # the column first, else the name


# --------------------------------------------------------------------------- a hand-built catalogue
def tiny_catalogue() -> pd.DataFrame:
    rows = [  # id, type, colour, gender, usage, name
        (1, "Heels", "Black", "Women", "Party", "Catwalk Women Black Stiletto Heels"),
        (2, "Heels", "Black", "Women", "Casual", "Bata Women Black Heels"),
        (3, "Heels", "Red", "Women", "Party", "Catwalk Women Red Heels"),
        (4, "Sports Shoes", "Navy Blue", "Men", "Sports", "Nike Men Navy Blue Running Shoes"),
        (5, "Sports Shoes", "White", "Men", "Sports", "Adidas Men White Running Shoes"),
        (6, "Casual Shoes", "White", "Men", "Casual", "Converse Men White Canvas Sneakers"),
        (7, "Trousers", "Grey", "Men", "Formal", "Arrow Men Grey Formal Trousers"),
        (8, "Jeans", "Blue", "Men", "Casual", "Levis Men Blue Slim Fit Jeans"),
        (9, "Jeans", "Black", "Women", "Casual", "Levis Women Black Skinny Jeans"),
        (10, "Tshirts", "Red", "Boys", "Casual", "Gini and Jony Boys Red Polo T-shirt"),
        (11, "Sarees", "Maroon", "", "Ethnic", "FNF Maroon Silk Wedding Sari"),
        (12, "Watches", "Black", "Men", "Casual", "Fastrack Men Black Dial Watch"),
    ]
    frame = pd.DataFrame(rows, columns=["id", "articleType", "baseColour", "gender", "usage", "productDisplayName"])
    frame["subCategory"] = "x"
    return frame


@pytest.fixture(scope="module")
def tiny_search() -> TextSearch:
    return TextSearch.build(tiny_catalogue())


def _page(search: TextSearch, text: str, k: int = 5, **flags):
    """A page as ``ShopBot.search`` shows it: one card per item, a short page filled."""
    return search.search(text, k, **{"collapse": True, "fill": True, **flags})


def _ids(search: TextSearch, result) -> list[int]:
    return search.products["id"].to_numpy()[result.positions].tolist()


def test_filters_are_hard_and_ranking_puts_the_best_words_first(tiny_search):
    result = tiny_search.search("black stiletto heels for women", k=5, fill=False)
    assert _ids(tiny_search, result) == [1, 2]  # only black women's heels; "stiletto" ranks 1 first
    assert result.relaxed == [] and result.message == "" and result.matched == 2
    assert result.scores[0] > result.scores[1] > 0  # fused scores, not 1.0
    assert _ids(tiny_search, tiny_search.search("jeans, not black", fill=False)) == [8]
    filled = _page(tiny_search, "jeans, not black")  # a page filled with a close type, never with black jeans
    assert _ids(tiny_search, filled) == [8, 7] and filled.near == ["", "similar type"]
    assert _ids(tiny_search, tiny_search.search("slacks", fill=False)) == [7]  # a synonym finds the catalogue's word


def test_relaxation_drops_one_constraint_and_says_so(tiny_search):
    result = tiny_search.search("maroon heels", k=5, fill=False)  # no maroon heels: a close shade (red) first
    assert result.relaxed == ["shades"] and _ids(tiny_search, result) == [3]
    assert result.message == "No maroon heels in the catalogue; here are red heels (close colours)."
    result = _page(tiny_search, "maroon heels", k=5)  # then heels in any colour, marked as near matches
    assert _ids(tiny_search, result)[0] == 3 and set(_ids(tiny_search, result)) == {1, 2, 3}
    assert result.near == ["", "any colour", "any colour"]
    result = tiny_search.search("red heels for men", fill=False)  # men's heels: none; red women's heels: yes
    assert result.relaxed == ["gender"] and _ids(tiny_search, result) == [3]
    result = tiny_search.search("party jeans", fill=False)  # the occasion is dropped first
    assert result.relaxed == ["usage"] and set(_ids(tiny_search, result)) == {8, 9}
    result = _page(tiny_search, "wine coloured saree")  # no constraint to drop: the type is never dropped to fill
    assert _ids(tiny_search, result) == [11] and result.near == [""]


def test_ranking_without_constraints_uses_the_words(tiny_search):
    result = tiny_search.search("pure silk", k=3)
    assert _ids(tiny_search, result)[0] == 11
    assert result.query.fields == []


@pytest.mark.parametrize("text", ["", "   ", "🙂🙂🙂", "x" * 10_000, "zapatos negros para mujer por favor",
                                  "\x00\xff\xfe binary \x01", b"\x89PNG\r\n\x1a\n\x00\x00", None, 12345])
def test_bad_text_gets_a_clear_reply_and_no_exception(tiny_search, text):
    result = tiny_search.search(text, k=5)
    assert isinstance(result.positions, np.ndarray)
    if len(result.positions) == 0:
        assert result.message  # says what to type instead


def test_gibberish_and_foreign_text_find_nothing_rather_than_noise(tiny_search):
    for text in ("asdfgh qwerty", "zapatos negros para mujer", "🙂"):
        result = tiny_search.search(text)
        assert len(result.positions) == 0 and result.message


def test_bad_k_and_unknown_fields_are_refused(tiny_search):
    with pytest.raises(ValueError, match="k must be"):
        tiny_search.search("heels", k=0)
    with pytest.raises(ValueError, match="cannot filter on"):
        tiny_search.mask({"size": "XL"})


def test_save_load_round_trip_and_mismatches_refused(tiny_search, tmp_path):
    tiny_search.save(tmp_path / "search")
    loaded = TextSearch.load(tmp_path / "search", tiny_catalogue())
    for text in ("black heels", "pure silk", "navy trainers"):
        a, b = tiny_search.search(text), loaded.search(text)
        assert a.positions.tolist() == b.positions.tolist()
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-3)
    with pytest.raises(ArtifactError, match="other products"):
        TextSearch.load(tmp_path / "search", tiny_catalogue().iloc[::-1])
    meta_path = tmp_path / "search" / "search.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "encoder_sha256": "0" * 64}))
    with pytest.raises(ArtifactError, match="another minilm model"):
        TextSearch.load(tmp_path / "search", tiny_catalogue())
    meta_path.write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ArtifactError, match="v99"):
        TextSearch.load(tmp_path / "search", tiny_catalogue())
    meta_path.write_text(json.dumps(meta))
    (tmp_path / "search" / "name_embeddings.npz").write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match="damaged"):
        TextSearch.load(tmp_path / "search", tiny_catalogue())
    with pytest.raises(ArtifactError, match="no text search"):
        TextSearch.load(tmp_path / "nowhere", tiny_catalogue())


# --------------------------------------------------------------------------- filtered vector search
def _clustered(n=6000, dim=32, clusters=30, seed=0):
    """Tight clusters (like our fine-tuned embeddings), non-negative like ReLU outputs."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)) * 3
    labels = rng.integers(0, clusters, n)
    vectors = np.maximum(centres[labels] + 0.3 * rng.standard_normal((n, dim)), 0).astype(np.float32)
    return vectors, np.arange(n) + 1000, rng


@pytest.mark.parametrize("kind", sorted(INDEXES))
@pytest.mark.parametrize("share", [0.6, 0.02])
def test_filtered_search_matches_exact_filtered_search(kind, share, monkeypatch):
    """Both paths: through the index's structure (60% let through) and exact over a small filter (2%:
    through faiss's HNSW selector such a filter kept only 0.93 of the exact top 5, hence FILTER_EXACT_BELOW)."""
    n = 1500 if kind == "datasketch" else 6000
    vectors, ids, rng = _clustered(n)
    where = rng.random(n) < share
    queries = vectors[rng.choice(n, 30, replace=False)] + 0.05
    if share > 0.5:
        monkeypatch.setattr(index_module, "FILTER_EXACT_BELOW", 50)  # the structure's path for 3,600 let through
    expected, _ = ExactIndex(vectors, ids).query_batch(queries, 5, where=where)
    found, scores = build_index(kind, vectors, ids).query_batch(queries, 5, where=where)
    assert np.isin(found, ids[where]).all()
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    same = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(found, expected)])
    assert same >= (0.97 if kind != "exact" else 1.0), same


def test_filtered_search_edge_cases():
    vectors, ids, _ = _clustered(300)
    for kind in ("exact", "lsh", "faiss"):
        index = build_index(kind, vectors, ids)
        none = np.zeros(300, bool)
        found, scores = index.query(vectors[0], 5, where=none)
        assert found.shape == (0,) and scores.shape == (0,)
        two = none.copy()
        two[[3, 7]] = True
        assert sorted(index.query(vectors[0], 5, where=two)[0].tolist()) == [ids[3], ids[7]]
        with pytest.raises(ValueError, match="boolean mask"):
            index.query(vectors[0], 5, where=np.ones(10, bool))


def test_query_dataclass_describes_and_drops():
    query = Query("x", {"articleType": ["Heels"], "baseColour": ["Maroon"], "gender": ["Women"]},
                  {"usage": ["Party"]})
    assert query.describe() == "maroon heels for women, not party"
    assert query.without(["baseColour"]).include == {"articleType": ["Heels"], "gender": ["Women"]}
    assert query.fields == ["usage", "baseColour", "gender", "articleType"]


def test_dense_scores_inside_a_filter_are_the_full_scores_there(tiny_search):
    keep = np.zeros(len(tiny_search), bool)
    keep[::3] = True
    full = tiny_search.dense_scores("black stiletto heels")
    part = tiny_search.dense_scores("black stiletto heels", keep)
    assert np.allclose(part[keep], full[keep], atol=1e-6) and np.isneginf(part[~keep]).all()


@pytest.mark.parametrize("colour", list(COLOUR_WORDS))
def test_a_colour_named_as_the_catalogue_names_it_is_that_colour_alone(colour):
    """"turquoise blue" read as "turquoise" then "blue" let plain Blue products through."""
    assert parse_query(f"{colour.lower()} kurtas").include == {"baseColour": [colour], "articleType": ["Kurtas"]}


def test_caches_are_bounded(tiny_search):
    from shopbot_utils import search

    assert search._stem.cache_info().maxsize is not None
    for i in range(search._stem.cache_info().maxsize + 100):
        search.tokens(f"word{i}x")
    assert search._stem.cache_info().currsize <= search._stem.cache_info().maxsize
    for i in range(500):
        assert not tiny_search.mask({"baseColour": f"colour {i}"}).any()
    tiny_search.mask({"baseColour": "Black"})
    assert len(tiny_search._masks) <= sum(len(set(v)) for v in tiny_search._values.values())


# --------------------------------------------------------------------------- duplicates, full pages, honest replies
def shop_catalogue() -> pd.DataFrame:
    """Near-duplicate listings, a short page to fill, and shades to fill it with."""
    rows = [  # id, type, colour, gender, usage, name
        (101, "Formal Shoes", "Black", "Men", "Formal", "Provogue Men Formal Black Formal Shoes"),
        (102, "Formal Shoes", "Black", "Men", "Formal", "Provogue Men Formal Black Formal Shoes"),
        (103, "Formal Shoes", "Black", "Men", "Formal", "Provogue Men Formal Black Formal Shoes"),
        (104, "Formal Shoes", "Black", "Men", "Formal", "provogue men formal black formal-shoes"),
        (105, "Formal Shoes", "Black", "Men", "Formal", "Red Tape Men Black Formal Shoes"),
        (106, "Formal Shoes", "Black", "Men", "Formal", "Bata Men Black Formal Shoes"),
        (107, "Formal Shoes", "Brown", "Men", "Formal", "Provogue Men Brown Formal Shoes"),
        (108, "Formal Shoes", "Brown", "Men", "Formal", "Provogue Men Brown Formal Shoes"),
        (111, "Shirts", "Off White", "Men", "Casual", "Arrow Men Off White Shirt"),
        (112, "Shirts", "Cream", "Men", "Casual", "Peter England Men Cream Shirt"),
        (113, "Shirts", "White", "Men", "Formal", "Van Heusen Men White Shirt"),
        (114, "Shirts", "Blue", "Men", "Casual", "Allen Solly Men Blue Shirt"),
        (116, "Clutches", "Gold", "Women", "Party", "Lavie Women Gold Party Clutch"),
        (117, "Clutches", "Yellow", "Women", "Casual", "Baggit Women Yellow Clutch"),
        (118, "Clutches", "Bronze", "Women", "Casual", "Hidesign Women Bronze Clutch"),
        (119, "Clutches", "Black", "Women", "Casual", "Baggit Women Black Clutch"),
        (121, "Heels", "Maroon", "Women", "Casual", "Catwalk Women Maroon Heels"),
        (122, "Heels", "Black", "Women", "Casual", "Catwalk Women Black Heels"),
        (123, "Dresses", "Red", "Women", "Casual", "Mango Women Red Dress"),
        (124, "Watches", "Black", "Men", "Casual", "Titan Men Black Watch"),
        (125, "Wallets", "Brown", "Men", "Casual", "Provogue Men Brown Wallet"),
        (126, "Shorts", "Blue", "Men", "Casual", "Nike Men Blue Shorts"),
        (127, "Flip Flops", "Black", "Men", "Casual", "Puma Men Black Flip Flops"),
        (128, "Sunglasses", "Black", "Unisex", "Casual", "Fastrack Unisex Black Sunglasses"),
        (131, "Sandals", "Brown", "Women", "Casual", "Catwalk Women Brown Sandals"),
        (132, "Sandals", "Black", "Men", "Casual", "Woodland Men Black Sandals"),
        (133, "Flats", "Black", "Women", "Casual", "Bata Women Black Flats"),
        (134, "Shorts", "Blue", "Men", "Casual", "Nike Men Blue Beach Shorts"),
        (135, "Shorts", "Black", "Men", "Casual", "Puma Men Black Beach Holiday Shorts"),
    ]
    frame = pd.DataFrame(rows, columns=["id", "articleType", "baseColour", "gender", "usage", "productDisplayName"])
    frame["subCategory"] = "x"
    return frame


@pytest.fixture(scope="module")
def shop() -> TextSearch:
    return TextSearch.build(shop_catalogue())


def _names(search: TextSearch, result) -> list[str]:
    return search.products["productDisplayName"].to_numpy()[result.positions].tolist()


def test_near_duplicates_collapse_into_one_card(shop):
    result = _page(shop, "show me black formal shoes for men", k=3)
    ids = _ids(shop, result)
    assert len(ids) == 3 and {105, 106} < set(ids)
    assert len({n.lower().replace("-", " ") for n in _names(shop, result)}) == 3  # no name twice on the page
    card = [i for i in ids if 101 <= i <= 104][0]
    assert sorted(shop.ids[result.duplicates[ids.index(card)]].tolist()) == sorted({101, 102, 103, 104} - {card})
    assert [len(d) for i, d in zip(ids, result.duplicates) if i != card] == [0, 0]
    apart = _page(shop, "show me black formal shoes for men", k=3, collapse=False)
    assert len(set(_names(shop, apart))) < 3  # what the shopper saw before: the same shoe again and again
    ranking = shop.search("show me black formal shoes for men", k=3)  # TextSearch alone: the ranking, apart
    assert _ids(shop, ranking) == _ids(shop, apart) and not any(len(d) for d in ranking.duplicates)


def test_an_items_other_listings_come_before_near_matches(shop):
    result = _page(shop, "black formal shoes for men", k=5)  # 3 items, 6 listings: all 5 cards are black shoes
    ids = _ids(shop, result)
    assert len({n.lower().replace("-", " ") for n in _names(shop, result)[:3]}) == 3  # one card per item first
    assert set(ids[3:]) < {101, 102, 103, 104} and result.near == [""] * 5
    head = next(i for i in ids[:3] if i in (101, 102, 103, 104))
    assert shop.ids[result.duplicates[ids.index(head)]].tolist() == sorted({101, 102, 103, 104} - set(ids))
    assert all(len(d) == 0 for d in result.duplicates[3:])  # not counted twice


def test_collapse_counts_only_listings_that_pass_the_filters(shop):
    shop.duplicates = DuplicateGroups(np.where(shop.ids == 108, shop.duplicates.labels[shop.ids.tolist().index(101)],
                                               shop.duplicates.labels))  # 108 (brown) shows the same item
    try:
        result = _page(shop, "black formal shoes for men", k=3)
        assert all(108 not in shop.ids[d] for d in result.duplicates)  # brown is not what was asked for
    finally:
        shop._duplicates = None
    with pytest.raises(ValueError, match="duplicate groups for 2 products"):
        shop.duplicates = DuplicateGroups(np.array([0, 1]))


@pytest.mark.parametrize("text, k, expected, near", [
    # close shades first (Off White -> Cream, White), then any colour
    ("off-white shirt", 4, [{111}, {112, 113}, {112, 113}, {114}], ["", "close colour", "close colour", "any colour"]),
    # the occasion first (gold clutches for any occasion: none), then gold's shades, then any colour (a
    # handbag, the close type, would come after those)
    ("party clutch in gold", 4, [{116}, {117, 118}, {117, 118}, {119}],
     ["", "close colour, any occasion", "close colour, any occasion", "any occasion, any colour"]),
])
def test_short_pages_are_filled_with_near_matches_closest_first(shop, text, k, expected, near):
    result = _page(shop, text, k=k)
    ids = _ids(shop, result)
    assert len(set(ids)) == k and all(i in allowed for i, allowed in zip(ids, expected)) and result.near == near
    assert result.matched == 1 and result.relaxed == []
    assert "Only 1 matches everything you asked; the other 3 are near matches" in result.message
    assert result.reply.startswith("Here are ")
    assert set(_ids(shop, _page(shop, text, k=k, fill=False))) == expected[0]


@pytest.mark.parametrize("kind", ["Formal Shoes", "Shirts", "Clutches", "Heels"])
def test_never_fewer_than_k_cards_when_k_items_of_the_type_exist(shop, kind):
    items = shop.products[shop.products["articleType"] == kind]["productDisplayName"].str.lower().str.replace("-", " ")
    k = items.nunique()
    for colour in ("maroon", "green", "black", "white"):
        result = _page(shop, f"{colour} {kind.lower()} for women for the office", k=k)
        assert len(result.positions) == k, (colour, kind, _ids(shop, result))
        # the type is never dropped, only widened to its close types
        assert set(shop.products["articleType"].to_numpy()[result.positions]) <= {kind, *TYPE_NEIGHBOURS.get(kind, [])}


def test_a_close_type_in_the_asked_colour_comes_before_another_gender(shop):
    result = _page(shop, "women's black sandals", k=3)
    assert result.relaxed == ["baseColour"] and _ids(shop, result) == [131, 133, 132]
    assert result.near == ["", "similar type", "anyone's"]
    assert result.reply == ("No black sandals for women in the catalogue; here are sandals for women (any colour). "
                            "The other 2 are near matches (similar type, anyone's).")


def test_a_colour_the_type_lacks_gives_its_closest_shade_and_says_so(shop):
    result = _page(shop, "burgundy heels", k=1)
    assert _ids(shop, result) == [121] and result.relaxed == ["shades"]
    assert result.reply == "No burgundy heels in the catalogue; here are maroon heels (close colours)."


def test_words_nothing_filters_by_are_named_in_the_reply(shop):
    result = _page(shop, "gifts for my dad under 50 dollars", k=2)
    assert result.query.include == {"gender": ["Men"], "articleType": OCCASION_TYPES["a gift"]}
    assert result.ignored == {"price": ["under 50 dollars"]}
    assert set(_ids(shop, result)) == {124, 125}  # a watch and a wallet for men
    assert "I can't filter by price: this catalogue has no prices." in result.reply
    assert result.reply.startswith("Here are watches, wallets")
    brand = _page(shop, "provogue formal shoes in size 9", k=2)
    assert brand.ignored == {"size": ["size 9"], "brand": ["provogue"]}
    assert "I can't filter by size (the catalogue lists no sizes) or brand (names with provogue come first)." \
        in brand.reply
    assert _page(shop, "black formal shoes for men", k=2).ignored == {}
    swim = _page(shop, "swimwear for women", k=2)
    assert "Nothing in this catalogue is for swimming." in swim.message


@pytest.mark.parametrize("text, reply", [
    ("do you have red dresses?", "Here are red dresses."),
    ("black formal shoes for men", "Here are black formal shoes for men."),
    ("shorts for a beach holiday", "Here are shorts."),
    ("summer outfit for a beach holiday",
     "Here are shorts, t-shirts, flip-flops or sunglasses for summer, the beach and a holiday."),
])
def test_replies_name_the_understood_type_colour_and_gender(shop, text, reply):
    assert _page(shop, text, k=1, fill=False).reply == reply


def test_an_occasions_types_take_turns_on_the_page(shop):
    result = _page(shop, "summer outfit for a beach holiday", k=3)  # the shorts' names say "beach" and "holiday"
    assert sorted(shop.products["articleType"].to_numpy()[result.positions]) == ["Flip Flops", "Shorts", "Sunglasses"]
    assert _ids(shop, result)[0] == 135  # the best of the first type comes first
    named = _page(shop, "beach shorts", k=3)  # a named type is not spread
    assert set(shop.products["articleType"].to_numpy()[named.positions]) == {"Shorts"}


def test_price_and_size_words_are_not_ranked_on():
    query = parse_query("gifts for my dad under 50 dollars in size 9")
    assert ranking_text(query.text, query).split() == ["gifts", "for", "my", "dad", "in"]
    assert ranking_text("under 50 dollars", parse_query("under 50 dollars")) == "under 50 dollars"  # nothing else left


@pytest.mark.parametrize("text, expected", [
    ("summer outfit for a beach holiday", {"articleType": ["Shorts", "Tshirts", "Flip Flops", "Sunglasses"]}),
    ("something for a wedding", {"articleType": OCCASION_TYPES["a wedding"]}),
    ("winter wear for men", {"articleType": OCCASION_TYPES["winter"], "gender": ["Men"]}),
    ("beach sandals", {"articleType": ["Sandals"]}),  # a named type wins over the occasion
    ("swimwear", {}),  # an occasion the catalogue has nothing for
])
def test_occasions_stand_for_types(text, expected):
    assert parse_query(text).include == expected


def test_close_types_are_catalogue_types():
    assert set(TYPE_NEIGHBOURS) <= set(TYPE_WORDS)
    assert all(set(close) <= set(TYPE_WORDS) - {kind} for kind, close in TYPE_NEIGHBOURS.items())


def test_the_occasion_table_names_catalogue_types_and_every_occasion_is_worded():
    assert set(OCCASION_TYPES) == set(OCCASION_WORDS)
    for occasion, types in OCCASION_TYPES.items():
        assert set(types) <= set(TYPE_WORDS), occasion
        for word in OCCASION_WORDS[occasion]:
            query = parse_query(word)
            assert query.include.get("articleType", []) == types, word
            assert query.occasions == ([occasion] if types else []) and \
                query.ignored == ({} if types else {"occasion": [occasion]})


@pytest.mark.parametrize("text, colour", [
    ("burgundy heels", "Burgundy"), ("wine dress", "Maroon"), ("oxblood loafers", "Maroon"), ("crimson top", "Red"),
    ("ivory kurta", "Cream"), ("beige trousers", "Beige"), ("khaki shorts", "Khaki"), ("mustard tshirt", "Mustard"),
    ("skin colour bra", "Skin"), ("aqua top", "Turquoise Blue"), ("ecru shirt", "Off White"),
])
def test_colour_synonyms_reach_the_catalogues_colours(text, colour):
    assert parse_query(text).include["baseColour"] == [colour]


def test_colour_words_and_shades_cover_the_catalogues_own_colour_list(catalogue):
    colours = set(catalogue.styles["baseColour"].dropna().astype(str)) - {"", "nan"}
    assert colours <= set(COLOUR_WORDS), sorted(colours - set(COLOUR_WORDS))
    assert set(COLOUR_WORDS) <= colours, sorted(set(COLOUR_WORDS) - colours)
    named = {x for c, shades in COLOUR_SHADES.items() for x in [c, *shades]}
    assert named <= colours and colours - {"Multi"} <= set(COLOUR_SHADES)


@pytest.mark.parametrize("text, kind, phrase", [
    ("gifts for my dad under 50 dollars", "price", "under 50 dollars"), ("cheap sneakers", "price", "cheap"),
    ("shoes below ₹2000", "price", "below ₹2000"), ("tshirt size xl", "size", "size xl"),
    ("plus size dress", "size", "plus size"), ("leather belt", "material", "leather"),
    ("cotton kurta for women", "material", "cotton"),
])
def test_the_parser_reports_what_it_cannot_filter_by(text, kind, phrase):
    assert phrase in parse_query(text).ignored[kind]


@pytest.mark.parametrize("text", ["black heels for women", "navy trainers for gents", "tees for my son",
                                  "sky blue shirt", "formal shoes for men", "jeans, not black"])
def test_plain_requests_report_nothing_ignored(text):
    assert parse_query(text).ignored == {}


def test_page_metrics_measure_repeats_short_pages_and_ignored_words(shop):
    from shopbot_utils.search_bench import page_metrics

    queries = ["black formal shoes for men", "off-white shirt", "cheap red dress"]
    before = page_metrics(shop, queries, k=3, collapse=False, fill=False)
    after = page_metrics(shop, queries, k=3)
    # before: the shoes repeat a name; the shirts (4 items) and the dress (1 item: a full page) show 1 card.
    # After: 3 shoe items fill 3 cards (a 4th card would repeat one: a listing comes before a near match)
    assert before["duplicate_share"] == pytest.approx(1 / 3) and before["short_page_rate"] == pytest.approx(1 / 3)
    assert after["duplicate_share"] == 0 and after["short_page_rate"] == 0
    assert after["mean_cards"] > before["mean_cards"]
    assert before["ignored_words_rate"] == after["ignored_words_rate"] == pytest.approx(1 / 3)  # "cheap"
