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
from .duplicates import DuplicateGroups

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
#: map to the colour the catalogue files them under. Every colour of the catalogue has an entry (a test
#: checks it against the catalogue's own list).
COLOUR_WORDS: dict[str, list[str]] = {
    "Black": ["black", "jet black", "ebony", "onyx"], "White": ["white", "snow white", "optic white"],
    "Blue": ["blue", "sky blue", "light blue", "royal blue", "cobalt", "sapphire", "indigo", "powder blue",
             "azure", "denim blue"],
    "Brown": ["brown", "chocolate", "chestnut", "walnut", "cognac"],
    "Grey": ["grey", "gray", "ash grey", "ash gray", "slate", "slate grey", "slate gray", "smoke grey"],
    "Red": ["red", "scarlet", "crimson", "cherry", "cherry red", "ruby", "blood red"],
    "Green": ["green", "emerald", "bottle green", "forest green", "dark green", "jade", "mint", "mint green"],
    "Navy Blue": ["navy blue", "navy", "dark blue", "midnight blue"], "Pink": ["pink", "baby pink", "blush"],
    "Purple": ["purple", "violet", "plum", "aubergine", "eggplant", "amethyst"],
    "Silver": ["silver", "silvery", "platinum", "chrome"], "Yellow": ["yellow", "lemon", "canary"],
    "Beige": ["beige", "sand", "oatmeal", "biscuit", "fawn"],
    "Maroon": ["maroon", "wine", "dark red", "oxblood", "claret", "bordeaux"], "Gold": ["gold", "golden"],
    "Orange": ["orange", "tangerine", "saffron", "amber"],
    "Olive": ["olive", "olive green", "army green", "military green"],
    "Multi": ["multi", "multicolour", "multicolor", "multicoloured", "multicolored", "multi colour",
              "multi color", "colourful", "colorful"],
    "Cream": ["cream", "ivory", "vanilla", "eggshell"], "Charcoal": ["charcoal", "charcoal grey", "charcoal gray",
                                                                    "dark grey", "dark gray"],
    "Steel": ["steel", "gunmetal"], "Peach": ["peach", "apricot", "coral", "salmon"],
    "Off White": ["off white", "off-white", "offwhite", "ecru"],
    "Lavender": ["lavender", "lilac", "periwinkle"], "Khaki": ["khaki", "khakhi"],
    "Grey Melange": ["grey melange", "melange", "heather grey", "heather gray", "marl"],
    "Magenta": ["magenta", "fuchsia", "fuschia"], "Tan": ["tan", "camel", "caramel"], "Teal": ["teal", "peacock blue"],
    "Bronze": ["bronze"], "Mustard": ["mustard", "ochre"], "Copper": ["copper"],
    "Turquoise Blue": ["turquoise blue", "turquoise", "aqua", "aquamarine", "cyan"],
    "Rust": ["rust", "terracotta", "brick red", "burnt orange"], "Metallic": ["metallic"], "Burgundy": ["burgundy"],
    "Coffee Brown": ["coffee brown", "coffee", "mocha", "espresso", "dark brown"],
    "Mauve": ["mauve"], "Nude": ["nude"], "Sea Green": ["sea green"], "Mushroom Brown": ["mushroom brown", "mushroom"],
    "Rose": ["rose"], "Taupe": ["taupe"], "Lime Green": ["lime", "lime green", "chartreuse"],
    "Fluorescent Green": ["fluorescent green", "fluorescent", "neon green"],
    "Skin": ["skin", "skin colour", "skin color", "flesh"],
}
#: The catalogue's colours closest to each of its colours, closest first: a short page is filled with
#: these shades before the colour is dropped (no Burgundy heels: Maroon ones; Off White: Cream, White).
COLOUR_SHADES: dict[str, list[str]] = {
    "Black": ["Charcoal", "Navy Blue"], "White": ["Off White", "Cream"], "Off White": ["Cream", "White", "Beige"],
    "Cream": ["Off White", "Beige", "White"], "Beige": ["Cream", "Nude", "Khaki", "Tan"],
    "Blue": ["Navy Blue", "Turquoise Blue", "Teal"], "Navy Blue": ["Blue", "Charcoal"],
    "Brown": ["Coffee Brown", "Tan", "Mushroom Brown", "Taupe"], "Coffee Brown": ["Brown", "Mushroom Brown"],
    "Mushroom Brown": ["Taupe", "Brown"], "Tan": ["Brown", "Khaki", "Beige"], "Taupe": ["Mushroom Brown", "Beige"],
    "Grey": ["Grey Melange", "Charcoal", "Steel"], "Grey Melange": ["Grey", "Charcoal"], "Charcoal": ["Grey", "Black"],
    "Silver": ["Steel", "Metallic", "Grey"], "Steel": ["Silver", "Metallic", "Grey"],
    "Metallic": ["Silver", "Steel", "Gold", "Bronze"],
    "Red": ["Maroon", "Burgundy", "Rust"], "Maroon": ["Burgundy", "Red", "Rust"], "Burgundy": ["Maroon", "Red"],
    "Rust": ["Copper", "Orange", "Maroon"], "Green": ["Olive", "Sea Green", "Lime Green"], "Olive": ["Khaki", "Green"],
    "Sea Green": ["Green", "Teal", "Turquoise Blue"], "Lime Green": ["Fluorescent Green", "Green"],
    "Fluorescent Green": ["Lime Green", "Green"], "Teal": ["Turquoise Blue", "Sea Green", "Blue"],
    "Turquoise Blue": ["Teal", "Blue", "Sea Green"], "Pink": ["Rose", "Peach", "Magenta", "Mauve"],
    "Rose": ["Pink", "Mauve", "Peach"], "Magenta": ["Pink", "Purple"], "Purple": ["Lavender", "Magenta", "Mauve"],
    "Lavender": ["Purple", "Mauve"], "Mauve": ["Lavender", "Rose", "Pink"], "Peach": ["Pink", "Orange", "Nude"],
    "Nude": ["Skin", "Beige", "Peach"], "Skin": ["Nude", "Beige"], "Orange": ["Rust", "Peach", "Mustard"],
    "Yellow": ["Mustard", "Gold"], "Mustard": ["Yellow", "Gold", "Khaki"], "Gold": ["Yellow", "Bronze", "Copper"],
    "Bronze": ["Copper", "Gold"], "Copper": ["Bronze", "Rust", "Gold"], "Khaki": ["Olive", "Beige", "Tan"],
}
#: The types closest to each type, closest first: a short page is filled with these (same colour and
#: gender) before the gender is dropped ("women's black sandals": black flats for women).
TYPE_NEIGHBOURS: dict[str, list[str]] = {
    "Sandals": ["Flats", "Flip Flops"], "Flats": ["Sandals", "Heels"], "Heels": ["Flats", "Sandals"],
    "Flip Flops": ["Sandals"], "Casual Shoes": ["Sports Shoes", "Formal Shoes"], "Sports Shoes": ["Casual Shoes"],
    "Formal Shoes": ["Casual Shoes"], "Shirts": ["Tshirts"], "Tshirts": ["Shirts", "Tops"],
    "Tops": ["Tshirts", "Kurtas"], "Kurtas": ["Tops"], "Dresses": ["Tops"], "Sarees": ["Kurtas"],
    "Sweaters": ["Sweatshirts", "Jackets"], "Sweatshirts": ["Sweaters", "Jackets"],
    "Jackets": ["Sweatshirts", "Sweaters"],
    "Jeans": ["Trousers"], "Trousers": ["Jeans", "Track Pants"], "Track Pants": ["Trousers", "Shorts"],
    "Shorts": ["Track Pants"], "Handbags": ["Clutches", "Backpacks"], "Clutches": ["Handbags"],
    "Backpacks": ["Handbags"], "Wallets": ["Clutches"], "Perfume and Body Mist": ["Deodorant"],
    "Deodorant": ["Perfume and Body Mist"], "Lipstick": ["Nail Polish"], "Nail Polish": ["Lipstick"],
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
#: Occasions and seasons -> the article types the catalogue has for them, most typical first; they
#: stand for the type when no type is named ("summer outfit for a beach holiday"). An occasion with
#: no types is one the catalogue cannot serve: the reply says so.
OCCASION_TYPES: dict[str, list[str]] = {
    "the beach": ["Shorts", "Flip Flops", "Sunglasses", "Tshirts", "Caps"],
    "summer": ["Shorts", "Tshirts", "Flip Flops", "Sunglasses", "Sandals", "Dresses", "Caps"],
    "a holiday": ["Shorts", "Tshirts", "Sunglasses", "Flip Flops", "Backpacks"],
    "winter": ["Jackets", "Sweaters", "Sweatshirts"],
    "the rain": ["Jackets", "Flip Flops"],
    "a wedding": ["Sarees", "Kurtas", "Heels", "Earrings", "Clutches"],
    "a festival": ["Kurtas", "Sarees", "Earrings"],
    "an interview": ["Shirts", "Trousers", "Formal Shoes", "Ties"],
    "a date night": ["Dresses", "Heels", "Clutches", "Perfume and Body Mist"],
    "a gift": ["Watches", "Wallets", "Perfume and Body Mist", "Belts", "Sunglasses"],
    "hiking": ["Sports Shoes", "Backpacks", "Track Pants", "Caps"],
    "swimming": [],
}
OCCASION_WORDS: dict[str, list[str]] = {
    "the beach": ["beach", "seaside", "pool party"], "summer": ["summer", "summery", "hot weather"],
    "a holiday": ["holiday", "vacation", "trip"], "winter": ["winter", "cold weather", "snow", "chilly"],
    "the rain": ["rain", "rainy", "monsoon"], "a wedding": ["wedding", "bridal", "reception", "sangeet", "mehendi"],
    "a festival": ["festival", "diwali", "eid", "puja", "navratri"], "an interview": ["interview", "job interview"],
    "a date night": ["date night", "date"], "a gift": ["gift", "present", "birthday present"],
    "hiking": ["hiking", "hike", "trek", "trekking", "camping"],
    "swimming": ["swimming", "swimwear", "swimsuit", "swim suit", "bikini", "swimming costume"],
}
#: What shoppers ask for that the catalogue has no column for (regexes, matched outside the words
#: understood above) -> what the reply says about it. Brands are found by ``TextSearch``.
UNUSED_PATTERNS: dict[str, list[str]] = {
    "price": [r"\b(?:under|below|less than|cheaper than|over|above|more than|up ?to|within|around|about|max(?:imum)?)"
              r"\s*(?:rs\.?|inr|usd|\$|€|£|₹)?\s*\d[\d,.]*"
              r"\s*(?:k\b|dollars?|bucks|rupees?|rs\b|inr|usd|euros?|pounds?)?",
              r"[$€£₹]\s*\d[\d,.]*", r"\b\d[\d,.]*\s*(?:dollars?|bucks|rupees?|rs|inr|usd|euros?|pounds?)\b",
              r"\b(?:cheap(?:er|est)?|affordable|budget|inexpensive|expensive|pricey|luxury|low[\s-]cost|price[sd]?|"
              r"pricing|costs?|discount(?:s|ed)?|on sale|deals?|offers?)\b"],
    "size": [r"\bsize\s*(?:\d+(?:\.5)?|[a-z]{1,4}\b)?", r"\b(?:xxs|xs|xl|xxl|xxxl|[2-5]xl)\b",
             r"\b(?:small|medium|large|petite|plus[\s-]size|big and tall)\b", r"\b(?:uk|us|eu)\s?\d{1,2}\b",
             r"\bwaist\s*\d+", r"\b\d{2,3}\s*(?:inch(?:es)?|cm)\b"],
    "material": [r"\b(?:cotton|linen|silk|silky|wool|woollen|woolen|leather|faux leather|suede|polyester|nylon|satin|"
                 r"velvet|chiffon|georgette|cashmere|rayon|viscose|lycra|spandex|khadi|crepe|corduroy|fleece|rubber|"
                 r"canvas|mesh|chambray)\b"],
}
UNUSED_REPLIES: dict[str, str] = {
    "price": "price: this catalogue has no prices", "size": "size: the catalogue lists no sizes",
    "material": "material: names that mention {words} come first", "brand": "brand: names with {words} come first",
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
    return body + (r"(?:es)?" if word.endswith("s") else r"(?:s|es)?")


def _vocabulary() -> list[tuple[str, str, tuple[str, ...]]]:
    """(phrase, field, values) for every word the parser knows."""
    entries = [(w, "articleType", (t,)) for t, words in TYPE_WORDS.items() for w in words]
    entries += [(w, "articleType", tuple(ts)) for w, ts in FAMILY_WORDS.items()]
    entries += [(w, "baseColour", (c,)) for c, words in COLOUR_WORDS.items() for w in words]
    entries += [(w, "gender", g) for g, words in GENDER_WORDS.items() for w in words]
    entries += [(w, "usage", (u,)) for u, words in USAGE_WORDS.items() for w in words]
    entries += [(w, "occasion", (o,)) for o, words in OCCASION_WORDS.items() for w in words]
    return entries


@lru_cache(maxsize=1)
def _vocabulary_words() -> frozenset[str]:
    """Every single word of the parser's vocabulary (lower case)."""
    return frozenset(w for phrase, _, _ in _vocabulary() for w in re.split(r"[\s-]+", phrase.lower()))


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


#: How replies name the article types in a sentence ("Here are red dresses."): lower case, except these.
TYPE_NAMES = {"Tshirts": "t-shirts", "Bra": "bras", "Lipstick": "lipsticks", "Deodorant": "deodorants",
              "Nail Polish": "nail polishes", "Perfume and Body Mist": "perfumes and body mists",
              "Flip Flops": "flip-flops"}
#: How replies name the gender values ("for men"; unisex products are "for anyone").
GENDER_NAMES = {"Unisex": "anyone"}


def join_words(words: Sequence[str], last: str = "or") -> str:
    """"a", "a or b", "a, b or c"."""
    words = list(words)
    return f"{', '.join(words[:-1])} {last} {words[-1]}" if len(words) > 1 else "".join(words)


@dataclass
class Query:
    """What a shopper asked for: allowed values per field (``include``), refused ones (``exclude``),
    the words nothing could be filtered by (``ignored``: ``{"price": ["under 50 dollars"]}``) and the
    occasions that stood for the article types (``occasions``: ``["beach"]``)."""

    text: str
    include: dict[str, list[str]] = field(default_factory=dict)
    exclude: dict[str, list[str]] = field(default_factory=dict)
    ignored: dict[str, list[str]] = field(default_factory=dict)
    occasions: list[str] = field(default_factory=list)

    @property
    def fields(self) -> list[str]:
        """The constrained fields, in relaxation order."""
        return [f for f in FIELDS if f in self.include or f in self.exclude]

    def without(self, fields: Sequence[str]) -> "Query":
        """The same query with the constraints on ``fields`` dropped."""
        keep = lambda d: {k: v for k, v in d.items() if k not in fields}  # noqa: E731
        return Query(self.text, keep(self.include), keep(self.exclude), self.ignored, self.occasions)

    def loosen(self, fields: Sequence[str]) -> "Query":
        """The same query asking for nothing on ``fields`` (what it refuses, "not black", stays refused)."""
        return Query(self.text, {k: v for k, v in self.include.items() if k not in fields}, self.exclude,
                     self.ignored, self.occasions)

    def shades(self) -> "Query | None":
        """The same query asking for the close shades of its colours instead (``COLOUR_SHADES``), or
        None when it names no colour that has any."""
        asked = self.include.get("baseColour", [])
        refused = set(asked) | set(self.exclude.get("baseColour", []))
        close = list(dict.fromkeys(s for c in asked for s in COLOUR_SHADES.get(c, []) if s not in refused))
        if not close:
            return None
        return Query(self.text, {**self.include, "baseColour": close}, self.exclude, self.ignored, self.occasions)

    def close_types(self) -> "Query | None":
        """The same query asking for the types close to its types instead (``TYPE_NEIGHBOURS``: no
        black sandals, black flats), or None when its types have none."""
        asked = self.include.get("articleType", [])
        refused = set(asked) | set(self.exclude.get("articleType", []))
        close = list(dict.fromkeys(t for a in asked for t in TYPE_NEIGHBOURS.get(a, []) if t not in refused))
        if not close:
            return None
        return Query(self.text, {**self.include, "articleType": close}, self.exclude, self.ignored)

    def then(self, later: "Query") -> "Query":
        """This query refined by a later message ("heels for women", then "in black"): the later
        message's constraints replace this one's on the fields it names; the others stay."""
        named = set(later.include) | set(later.exclude)
        keep = lambda d: {k: list(v) for k, v in d.items() if k not in named}  # noqa: E731
        occasions = later.occasions if "articleType" in named else self.occasions
        return Query(f"{self.text} {later.text}".strip(), {**keep(self.include), **later.include},
                     {**keep(self.exclude), **later.exclude}, later.ignored, occasions)

    def understood(self) -> dict:
        """``{field: [values]}`` and ``{"not " + field: [values]}``, for replies and the chat."""
        out = {k: list(v) for k, v in self.include.items()}
        out.update({f"not {k}": list(v) for k, v in self.exclude.items()})
        return out

    def describe(self) -> str:
        """The constraints in words, as a reply says them: "black heels for women, not red"."""
        inc = self.include
        words = [join_words([c.lower() for c in inc["baseColour"]])] if "baseColour" in inc else []
        words += [join_words([u.lower() for u in inc["usage"]])] if "usage" in inc else []
        types = [TYPE_NAMES.get(t, t.lower()) for t in inc.get("articleType", [])]
        words.append(join_words(types) if types else "products")
        if "gender" in inc:
            words.append("for " + join_words([GENDER_NAMES.get(g, g.lower()) for g in inc["gender"]]))
        if self.occasions and types:
            words.append(("for " if "gender" not in inc else ", for ") + join_words(self.occasions, "and"))
        if self.exclude:
            refused = [TYPE_NAMES.get(v, v.lower()) if f == "articleType" else GENDER_NAMES.get(v, v.lower())
                       for f, values in self.exclude.items() for v in values]
            words.append(", not " + join_words(refused))
        return " ".join(words).replace(" ,", ",")


def parse_query(text: str) -> Query:
    """Article types, colours, gender/age and usage named in ``text``, those negated, occasions that
    stand for types when none is named, and what the catalogue cannot filter by (price, size...).

    >>> parse_query("navy trainers for gents, not white").include
    {'articleType': ['Sports Shoes'], 'baseColour': ['Navy Blue'], 'gender': ['Men']}
    >>> parse_query("gifts for my dad under 50 dollars").ignored
    {'price': ['under 50 dollars']}
    """
    text = str(text)[:MAX_QUERY_CHARS]
    pattern, lookup = _matcher()
    include: dict[str, list[str]] = {}
    exclude: dict[str, list[str]] = {}
    occasions: list[str] = []
    unmatched = text.replace("’", "'")
    for match in pattern.finditer(text.replace("’", "'")):
        field_, values = lookup[match.lastgroup]
        unmatched = unmatched[:match.start()] + " " * (match.end() - match.start()) + unmatched[match.end():]
        negated = _NEGATION.search(text[:match.start()].lower()) is not None
        if field_ == "occasion":
            if not negated and values[0] not in occasions:
                occasions.append(values[0])
            continue
        target = exclude if negated else include
        target.setdefault(field_, [])
        target[field_] += [v for v in values if v not in target[field_]]
    # Two genders named ("for him or her") is no gender constraint; an excluded value is never included.
    if len(include.get("gender", [])) > 1 and not {"Boys", "Girls"} <= set(include["gender"]):
        del include["gender"]
    ignored = _unused_words(unmatched)
    served = [o for o in occasions if OCCASION_TYPES[o]]
    if [o for o in occasions if not OCCASION_TYPES[o]]:
        ignored["occasion"] = [o for o in occasions if not OCCASION_TYPES[o]]
    if "articleType" not in include and served:
        include["articleType"] = _occasion_types(served)
    else:
        served = []  # a named type wins: the occasion only words the search
    include = {f: kept for f, values in include.items()
               if (kept := [v for v in values if v not in exclude.get(f, [])])}
    return Query(text, include, exclude, ignored, served if "articleType" in include else [])


def _occasion_types(occasions: Sequence[str]) -> list[str]:
    """The types every occasion has ("summer beach holiday": shorts, flip-flops...), else all of theirs."""
    lists = [OCCASION_TYPES[o] for o in occasions]
    common = [t for t in lists[0] if all(t in other for other in lists[1:])]
    return common or list(dict.fromkeys(t for types in lists for t in types))


@lru_cache(maxsize=1)
def _unused_patterns() -> dict[str, re.Pattern]:
    return {kind: re.compile("|".join(f"(?:{p})" for p in patterns), re.I)
            for kind, patterns in UNUSED_PATTERNS.items()}


def _unused_words(text: str) -> dict[str, list[str]]:
    """``{kind: [phrases]}`` for the price, size and material words in ``text`` (the words the parser
    understood already blanked out)."""
    found = {}
    for kind, pattern in _unused_patterns().items():
        phrases = list(dict.fromkeys(m.group(0).strip().lower() for m in pattern.finditer(text) if m.group(0).strip()))
        if phrases:
            found[kind] = phrases
    return found


def unused_note(ignored: dict[str, list[str]]) -> str:
    """What a reply says about the words nothing was filtered by: "I can't filter by price: this
    catalogue has no prices." ("" when there are none)."""
    parts = [(kind, UNUSED_REPLIES[kind].split(": ", 1)[1].format(words=join_words(words, "or")))
             for kind, words in ignored.items() if kind in UNUSED_REPLIES]
    notes = []
    if len(parts) == 1:
        notes.append(f"I can't filter by {parts[0][0]}: {parts[0][1]}.")
    elif parts:
        notes.append("I can't filter by " + join_words([f"{k} ({why})" for k, why in parts]) + ".")
    if ignored.get("occasion"):
        notes.append(f"Nothing in this catalogue is for {join_words(ignored['occasion'])}.")
    return " ".join(notes)


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
    #: Per card: the positions of the other listings of the same item that pass its filters
    #: (collapsed into it: "+3 similar listings").
    duplicates: list[np.ndarray] = field(default_factory=list)
    #: Per card: "" when it has everything asked for (after ``relaxed``), else what it lacks
    #: ("close colour", "any occasion"): a near match that fills a short page.
    near: list[str] = field(default_factory=list)
    #: What nothing could be filtered by (``Query.ignored`` plus brands named): ``{"price": [...]}``.
    ignored: dict[str, list[str]] = field(default_factory=dict)
    #: The whole sentence for the shopper: what is shown ("Here are red dresses."), then ``message``.
    reply: str = ""


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
        self._duplicates: DuplicateGroups | None = None
        self._brands: frozenset[str] | None = None

    @property
    def duplicates(self) -> DuplicateGroups:
        """Which products are listings of one item (by name here; ``ShopBot`` sets groups that also
        compare the pictures)."""
        if self._duplicates is None:
            self._duplicates = DuplicateGroups.build(self.products["productDisplayName"])
        return self._duplicates

    @duplicates.setter
    def duplicates(self, groups: DuplicateGroups) -> None:
        if len(groups) != len(self):
            raise ValueError(f"duplicate groups for {len(groups)} products, the search has {len(self)}")
        self._duplicates = groups

    @property
    def brands(self) -> frozenset[str]:
        """The catalogue's brands as shoppers type them: the first word of product names (3 or more
        products), other than words the parser knows."""
        if self._brands is None:
            first = self.products["productDisplayName"].fillna("").astype(str).str.lower().str.extract(r"^([a-z]+)")[0]
            counts = first.dropna().value_counts()
            known = _vocabulary_words() | _stopwords()
            self._brands = frozenset(w for w, n in counts.items() if n >= 3 and len(w) > 2 and w not in known)
        return self._brands

    def unused(self, text: str, query: Query) -> dict[str, list[str]]:
        """What ``text`` asks for that nothing filters by: the parser's (price, size...) and brands."""
        named = [w for w in dict.fromkeys(_TOKEN.findall(str(text).lower())) if w in self.brands]
        return {**query.ignored, "brand": named} if named else dict(query.ignored)

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
        """The query's filter, or, when nothing passes, the closest relaxation that some products pass
        (``relaxations``; failing those, any constraints dropped, the fewest first, in ``FIELDS``
        order): ``(mask, what was relaxed)``."""
        keep, _, relaxed, _ = self.first_tier(query)
        return keep, relaxed

    def first_tier(self, query: Query) -> tuple[np.ndarray, Query, list[str], list[tuple[Query, list[str]]]]:
        """``(mask, what it asks, what was relaxed, the looser queries left)``: the products that match
        ``query`` (or its closest relaxation that some products pass), and the relaxations after it,
        closest first, whose products are near matches (those that keep the type it names)."""
        candidates = [(query, [])] + (relaxations(query) if "articleType" in query.include else [])
        for n, (asked, relaxed) in enumerate(candidates):
            keep = self.mask(asked)
            if keep.any():
                if "shades" in relaxed:  # say only the shades it has ("maroon heels", not "burgundy or ...")
                    have = set(self._values["baseColour"][keep])
                    asked = Query(asked.text, {**asked.include, "baseColour": [c for c in asked.include["baseColour"]
                                                                               if c in have]},
                                  asked.exclude, asked.ignored, asked.occasions)
                return keep, asked, relaxed, candidates[n + 1:]
        fields = query.fields
        for n in range(1, len(fields) + 1):
            for dropped in itertools.combinations(fields, n):
                keep = self.mask(query.without(dropped))
                if keep.any():
                    return keep, query.without(dropped), list(dropped), []
        return keep, query, [], []

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
        return self._dense(self._query_vector(text), keep)

    def _query_vector(self, text: str) -> np.ndarray | None:
        return None if self.name_vectors is None else _unit(self.encoder([text]))[0]

    def _dense(self, query: np.ndarray | None, keep: np.ndarray | None) -> np.ndarray | None:
        if query is None:
            return None
        if keep is None or keep.mean() > 0.5:
            return self.name_vectors @ query
        scores = np.full(len(self), -np.inf, np.float32)
        allowed = np.flatnonzero(keep)
        scores[allowed] = self.name_vectors[allowed] @ query
        return scores

    def search(self, text: object, k: int = 5, within: np.ndarray | None = None,
               query: Query | None = None, collapse: bool = False, fill: bool = False) -> SearchResult:
        """The ``k`` best products for ``text``: understood constraints filter, BM25 and name
        embeddings rank (reciprocal-rank fusion). ``within``: a mask the results must also pass.
        ``query``: the constraints to use instead of ``parse_query(text)`` (a conversation's context).
        ``collapse``: one card per item (``duplicates``; the others are counted in ``.duplicates``).
        ``fill``: when fewer than ``k`` match, fill the page with near matches (``relaxations``,
        closest first; ``.near`` says what each lacks), so a type with ``k`` products fills it.
        Both are off here (the ranking itself, as notebook 06b rebuilds it); ``ShopBot.search``, the
        assistant's pages, turns them on."""
        from .text import clean_text

        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive whole number, got {k!r}")
        text = clean_text(text)[:MAX_QUERY_CHARS]
        query = parse_query(text) if query is None else query
        empty = np.zeros(0, np.int64)
        if not _TOKEN.search(text.lower()):
            return SearchResult(empty, np.zeros(0), query, message="Tell me what you are looking for, "
                                "e.g. \"black heels for women\" or \"navy trainers\".")
        keep, asked, relaxed, looser = self.first_tier(query)
        if within is not None:
            keep = keep & within
        words = ranking_text(text, query)  # "under 50 dollars" must not find "50 ml" perfumes
        bm25 = self.bm25_scores(words, query)
        vector = self._query_vector(words)
        dense = self._dense(vector, keep)  # an unfiltered search scores every name anyway
        if not query.fields and not (bm25 > 0).any() and (dense is None or dense.max() < MIN_DENSE_COSINE):
            return SearchResult(empty, np.zeros(0), query, message=f"I could not find products for "
                                f"\"{text[:60]}\". Try a product type and a colour, e.g. \"blue jeans for men\".")
        # an occasion's types take turns on the page (shorts, flip-flops, sunglasses...), best of each first
        spread = len(asked.occasions) > 0 and len(asked.include.get("articleType", [])) > 1
        positions, scores = self._page(keep, bm25, dense, k, bool(query.fields), collapse, spread=spread)
        tiers = [(keep, "")] * len(positions)
        shown = keep.copy()
        for looser_query, dropped in (looser if fill else []):
            if len(positions) >= k:
                break
            more = self.mask(looser_query) & ~shown
            if within is not None:
                more &= within
            if not more.any():
                continue
            seen = self.duplicates.labels[positions] if collapse else None
            extra, extra_scores = self._page(more, bm25, self._dense(vector, more), k - len(positions), True,
                                             collapse, seen)
            shown |= more
            positions, scores = np.concatenate([positions, extra]), np.concatenate([scores, extra_scores])
            tiers += [(shown.copy(), near_words(dropped))] * len(extra)
        duplicates = [_off_page(self.duplicates.others(p, allowed), positions) if head else empty
                      for p, head, (allowed, _) in zip(positions, self._heads(positions, collapse), tiers)]
        near = [words for _, words in tiers]
        ignored = self.unused(text, query)
        message, reply = compose_reply(query, asked, relaxed, near, ignored, text=text)
        return SearchResult(positions, scores, query, relaxed, message, int(keep.sum()), duplicates, near, ignored,
                            reply)

    def _heads(self, positions: np.ndarray, collapse: bool = True) -> np.ndarray:
        """Which cards are the first of their item on the page (they carry its count of listings)."""
        if not collapse:
            return np.zeros(len(positions), bool)
        heads = np.zeros(len(positions), bool)
        heads[np.unique(self.duplicates.labels[positions], return_index=True)[1]] = True
        return heads

    def _page(self, keep: np.ndarray, bm25: np.ndarray, dense: np.ndarray | None, k: int, pad: bool,
              collapse: bool, seen: np.ndarray | None = None, spread: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best of ``keep`` by fused rank (``_fused``), one per item when ``collapse`` (and
        none of the items ``seen``): positions and fused scores. When ``keep`` has fewer than ``k``
        items, their other listings follow, best first: a listing that has what was asked beats a
        near match. ``spread``: the article types take turns (the best of each, then the second...)."""
        allowed = np.flatnonzero(keep)
        if not len(allowed):
            return np.zeros(0, np.int64), np.zeros(0)
        fused = _fused(allowed, bm25, dense)
        depth = len(allowed) if spread else min(len(allowed), max(4 * k, 40) if collapse else k)
        while True:
            best, _ = _ranks(fused, depth)
            if not pad:
                best = best[fused[best] > 0]
            if spread:  # round robin over the types, each in its own rank order
                kinds = pd.Series(self._values["articleType"][allowed[best]])
                best = best[np.argsort(kinds.groupby(kinds).cumcount().to_numpy(), kind="stable")]
            picked = self.duplicates.first(allowed[best], k, seen) if collapse else allowed[best[:k]]
            if len(picked) >= k or depth >= len(allowed):
                break
            depth = min(len(allowed), depth * 4)
        if len(picked) < k and collapse:
            ranked = allowed[best]
            rest = ranked[~np.isin(ranked, picked)]
            if seen is not None and len(seen):
                rest = rest[~np.isin(self.duplicates.labels[rest], seen)]
            picked = np.concatenate([picked, rest[:k - len(picked)]])
        return picked, fused[np.searchsorted(allowed, picked)]


#: What a near match lacks, by what was relaxed to find it.
NEAR_WORDS = {"shades": "close colour", "usage": "any occasion", "baseColour": "any colour", "types": "similar type",
              "gender": "anyone's", "articleType": "any type"}
#: What a short page relaxes to fill up, closest first (``relaxations``).
RELAX_STEPS = ("shades", "usage", "baseColour", "types", "gender")


def near_words(relaxed: Sequence[str]) -> str:
    """"close colour", "any occasion, any colour": what a near match found by ``relaxed`` lacks."""
    return ", ".join(NEAR_WORDS[r] for r in relaxed)


def relaxations(query: Query) -> list[tuple[Query, list[str]]]:
    """Looser versions of ``query`` that keep what it refuses ("not black"), closest first, each with
    what it relaxed: one of ``RELAX_STEPS`` at a time in that order (the colour's close shades, the
    occasion, the colour, the type's close types, the gender), then two at a time... A type is never
    dropped, only widened to its ``TYPE_NEIGHBOURS``."""
    applies = {"shades": query.shades() is not None, "types": query.close_types() is not None}
    steps = [s for s in RELAX_STEPS if applies.get(s, s in query.include)]
    out = []
    for n in range(1, len(steps) + 1):
        for chosen in itertools.combinations(steps, n):
            if "shades" in chosen and "baseColour" in chosen:
                continue
            loose = query.loosen([s for s in chosen if s in FIELDS])
            if "shades" in chosen:
                loose = loose.shades()
            if "types" in chosen:
                loose = loose.close_types()
            if loose is not None and loose.include:
                out.append((loose, list(chosen)))
    return out


def near_note(near: Sequence[str], relaxed: bool = False) -> str:
    """"Only 2 match everything you asked; the other 6 are near matches (close colour)." ("" when
    every card matches). ``relaxed``: the matches themselves were found by relaxing the request (the
    reply has said so), so only the near matches are counted."""
    lacking = list(dict.fromkeys(w for words in near if words for w in words.split(", ")))
    if not lacking:
        return ""
    matches = sum(1 for words in near if not words)
    others = len(near) - matches
    are = f"{'is a near match' if others == 1 else 'are near matches'} ({', '.join(lacking)})."
    if not matches:
        return f"These are near matches ({', '.join(lacking)})."
    if relaxed:
        return f"The other {others} {are}"
    return f"Only {matches} {'matches' if matches == 1 else 'match'} everything you asked; the other {others} {are}"


def compose_reply(query: Query, asked: Query, relaxed: Sequence[str], near: Sequence[str],
                  ignored: dict[str, list[str]], where: str = "in the catalogue", text: str = "",
                  intro: str = "") -> tuple[str, str]:
    """``(message, reply)`` for a page: ``message`` says what was relaxed, which cards are near
    matches and what nothing filters by ("" when all is as asked); ``reply`` starts with what is
    shown ("Here are red dresses.", or ``intro``) and goes on with ``message``."""
    relaxation = relaxation_message(query, relaxed, where, asked)
    notes = [n for n in (near_note(near, bool(relaxed)), unused_note(ignored)) if n]
    if not intro:
        intro = (f"Here are {asked.describe()}." if asked.fields
                 else f"Here is what I found for \"{text[:60]}\"." if text else "Here is what I found.")
    return " ".join([relaxation, *notes]).strip(), " ".join([relaxation or intro, *notes])


def _off_page(others: np.ndarray, page: np.ndarray) -> np.ndarray:
    """The listings of a card's item that are not cards of their own on the page."""
    return others[~np.isin(others, page)]


def ranking_text(text: str, query: Query) -> str:
    """``text`` without the price and size phrases nothing filters by (what BM25 and MiniLM rank on);
    ``text`` itself when nothing else is left."""
    kept = text
    for kind in ("price", "size"):
        for phrase in query.ignored.get(kind, []):
            kept = re.sub(re.escape(phrase), " ", kept, flags=re.I)
    return kept if _TOKEN.search(kept.lower()) else text


def relaxation_message(query: Query, relaxed: Sequence[str], where: str = "in the catalogue",
                       found: Query | None = None) -> str:
    """What the reply says when constraints were relaxed ("" when none was): "No maroon heels in the
    catalogue; here are heels (any colour)." ``found``: what was asked instead (default: ``query``
    without the relaxed fields)."""
    if not relaxed:
        return ""
    found = found if found is not None else query.without([r for r in relaxed if r in FIELDS])
    words = {**NEAR_WORDS, "shades": "close colours", "types": "similar types"}
    return f"No {query.describe()} {where}; here are {found.describe()} ({', '.join(words[f] for f in relaxed)})."


def _ranks(scores: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (into ``scores``) of the ``depth`` best, best first, and their ranks from 1."""
    depth = min(depth, len(scores))
    top = np.argpartition(-scores, depth - 1)[:depth]
    top = top[np.lexsort((top, -scores[top]))]  # ties: catalogue order
    return top, np.arange(1, len(top) + 1)


def _fused(allowed: np.ndarray, bm25: np.ndarray, dense: np.ndarray | None) -> np.ndarray:
    """Reciprocal-rank fusion of BM25 (products with a BM25 hit) and name cosine, for the products
    at ``allowed``: one score each (0 for those in neither list's top ``FUSION_DEPTH``)."""
    fused = np.zeros(len(allowed))
    lexical = bm25[allowed]
    if (lexical > 0).any():
        top, rank = _ranks(np.where(lexical > 0, lexical, -np.inf), FUSION_DEPTH)
        hit = lexical[top] > 0
        fused[top[hit]] += 1.0 / (RRF_K + rank[hit])
    if dense is not None:
        top, rank = _ranks(dense[allowed], FUSION_DEPTH)
        fused[top] += 1.0 / (RRF_K + rank)
    return fused
