"""Text search: the parser, filters and relaxation, ranking, filtered vector search, save/load, bad input."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from shopbot_utils import index as index_module
from shopbot_utils.artifacts import ArtifactError
from shopbot_utils.index import INDEXES, ExactIndex, build_index
from shopbot_utils.search import COLOUR_WORDS, Query, TextSearch, name_gender, parse_query, with_gender


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
    ("a gift for him or her", {}),  # two genders named: no gender constraint
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


def _ids(search: TextSearch, result) -> list[int]:
    return search.products["id"].to_numpy()[result.positions].tolist()


def test_filters_are_hard_and_ranking_puts_the_best_words_first(tiny_search):
    result = tiny_search.search("black stiletto heels for women", k=5)
    assert _ids(tiny_search, result) == [1, 2]  # only black women's heels; "stiletto" ranks 1 first
    assert result.relaxed == [] and result.message == "" and result.matched == 2
    assert result.scores[0] > result.scores[1] > 0  # fused scores, not 1.0
    assert _ids(tiny_search, tiny_search.search("jeans, not black")) == [8]
    assert _ids(tiny_search, tiny_search.search("slacks")) == [7]  # a synonym finds the catalogue's word


def test_relaxation_drops_one_constraint_and_says_so(tiny_search):
    result = tiny_search.search("maroon heels", k=5)  # no maroon heels: heels in other colours
    assert result.relaxed == ["baseColour"] and set(_ids(tiny_search, result)) == {1, 2, 3}
    assert "No Maroon Heels" in result.message and "Heels" in result.message.split(";")[1]
    result = tiny_search.search("red heels for men")  # men's heels: none; red women's heels: yes
    assert result.relaxed == ["gender"] and _ids(tiny_search, result) == [3]
    result = tiny_search.search("party jeans")  # the occasion is dropped first
    assert result.relaxed == ["usage"] and set(_ids(tiny_search, result)) == {8, 9}


def test_ranking_without_constraints_uses_the_words(tiny_search):
    result = tiny_search.search("wedding silk", k=3)
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
    for text in ("black heels", "wedding silk", "navy trainers"):
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
    assert query.describe() == "Maroon Heels for Women, not Party"
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
