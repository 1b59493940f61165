"""Near-duplicate listings: which catalogue products are one item listed several times (the same
name, or the same picture), and a ranked list collapsed to one card per item ("+3 similar listings").

The catalogue holds many such listings ("Provogue Men Formal Black Formal Shoes" four times, each
with its own id); a page of them wastes the shopper's screen. ``DuplicateGroups.build`` links two
products when their names are the same once normalised, or when they have the same article type
and colour and their image embeddings' cosine reaches ``DUPLICATE_COSINE``; the groups are the
connected components of those links.

>>> groups = DuplicateGroups.build(["Nike Men Black Tee", "nike men  black tee!", "Puma Red Cap"])
>>> groups.labels.tolist()
[0, 0, 1]
>>> groups.first(np.array([1, 0, 2]), k=2).tolist()
[1, 2]
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import pandas as pd

#: Products of the same type and colour whose image embeddings reach this cosine are one item: the
#: lowest cosine at which at most 2% of the linked pairs are not byte-identical pictures
#: (``choose_threshold``). Measured on the 39,679 products (``benchmarks/bench_search.py --duplicates``):
#: all 693 same-type, same-colour pairs with identical pictures are above 0.9999 and 12 other pairs
#: (705 links); at 0.999, 110 of 803 links are other pictures (a lipstick range in other shades); at
#: 0.99, 41,269 links, 81% between brands. Same-name listings are usually other designs (the six
#: "Provogue Men Formal Black Formal Shoes" are six shoes): they are collapsed as similar listings.
DUPLICATE_COSINE = 0.9999
_NOT_WORD = re.compile(r"[^a-z0-9]+")


def normalise_name(names: Sequence[str] | pd.Series) -> np.ndarray:
    """Product names lower-cased, punctuation and repeated spaces dropped ('' for a missing name)."""
    names = pd.Series(names, dtype=object).fillna("").astype(str).str.lower()
    return names.str.replace(_NOT_WORD, " ", regex=True).str.strip().to_numpy(dtype=object)


def image_pairs(vectors: np.ndarray, kinds: Sequence[str], threshold: float,
                block: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, cosine)`` for every pair ``i < j`` of the same kind with cosine >= ``threshold``
    (``vectors``: unit rows). Only products of one kind are compared: 40k x 40k would take minutes."""
    codes = pd.factorize(pd.Series(kinds, dtype=object).fillna(""))[0]
    out_i, out_j, out_s = [], [], []
    for code in np.unique(codes):
        members = np.flatnonzero(codes == code)
        if len(members) < 2:
            continue
        own = vectors[members]
        for start in range(0, len(members), block):
            sims = own[start:start + block] @ own.T
            rows, cols = np.nonzero(sims >= threshold)
            later = cols > rows + start
            rows, cols = rows[later], cols[later]
            out_i.append(members[rows + start])
            out_j.append(members[cols])
            out_s.append(sims[rows, cols])
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s).astype(np.float32)


class DuplicateGroups:
    """A group label per product (positions ``0..n-1``); products sharing a label are one item.

    ``first(ranked, k)`` keeps the best-ranked product of each group; ``others(position, allowed)``
    lists the rest of its group (what "+N similar listings" counts)."""

    def __init__(self, labels: np.ndarray):
        self.labels = np.asarray(labels, dtype=np.int64)
        order = np.argsort(self.labels, kind="stable")
        self._order = order
        self._starts = np.searchsorted(self.labels[order], np.arange(self.labels.max(initial=-1) + 2))

    @classmethod
    def build(cls, names: Sequence[str] | pd.Series, vectors: np.ndarray | None = None,
              kinds: Sequence[str] | None = None, threshold: float = DUPLICATE_COSINE) -> "DuplicateGroups":
        """Groups from names (same normalised name) and, with unit image ``vectors`` and ``kinds``
        (e.g. "type/colour" per product), image cosine >= ``threshold`` within a kind."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        keys = normalise_name(names)
        n = len(keys)
        if vectors is not None and (kinds is None or len(vectors) != n or len(kinds) != n):
            raise ValueError(f"image duplicates need one vector and one kind per product ({n} names)")
        codes = pd.factorize(pd.Series(keys))[0]
        first = pd.Series(np.arange(n)).groupby(codes).transform("min").to_numpy()
        named = keys != ""  # products without a name are never the same by name
        rows, cols = [np.arange(n)[named]], [first[named]]
        if vectors is not None:
            i, j, _ = image_pairs(np.asarray(vectors, dtype=np.float32), kinds, threshold)
            rows.append(i)
            cols.append(j)
        rows, cols = np.concatenate(rows), np.concatenate(cols)
        graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n, n))
        _, labels = connected_components(graph, directed=False)
        # labels in order of first appearance (stable across runs and readable in tests)
        return cls(pd.factorize(labels)[0])

    def __len__(self) -> int:
        return len(self.labels)

    def members(self, position: int) -> np.ndarray:
        """Every product of ``position``'s group (itself included), in catalogue order."""
        label = self.labels[position]
        return self._order[self._starts[label]:self._starts[label + 1]]

    def others(self, position: int, allowed: np.ndarray | None = None) -> np.ndarray:
        """The other products of ``position``'s group that ``allowed`` (a mask) lets through."""
        members = self.members(position)
        members = members[members != position]
        return members if allowed is None else members[allowed[members]]

    def first(self, ranked: np.ndarray, k: int, seen: np.ndarray | None = None) -> np.ndarray:
        """The first ``k`` products of ``ranked`` (positions, best first) whose group is neither an
        earlier one's nor in ``seen`` (group labels already shown)."""
        ranked = np.asarray(ranked, dtype=np.int64)
        labels = self.labels[ranked]
        _, first = np.unique(labels, return_index=True)
        first.sort()
        if seen is not None and len(seen):
            first = first[~np.isin(labels[first], seen)]
        return ranked[first[:k]]


def repeated_name_share(pages: Sequence[Sequence[str]]) -> float:
    """The share of pages (lists of product names) on which a normalised name appears twice."""
    pages = [normalise_name(list(page)) for page in pages]
    return float(np.mean([len(set(page)) < len(page) for page in pages])) if pages else 0.0


def threshold_report(vectors: np.ndarray, names: Sequence[str], types: Sequence[str], colours: Sequence[str],
                     image_keys: Sequence[str],
                     thresholds: Sequence[float] = (0.98, 0.99, 0.995, 0.997, 0.999, 0.9995, 0.9999)) -> pd.DataFrame:
    """How many same-type, same-colour pairs each cosine threshold links, how many of them have
    byte-identical pictures (``image_keys``: the same item) and how many are between brands (the
    first word of the names differs: other products, or one product relisted under a sister brand).
    ``choose_threshold`` picks from it."""
    kinds = pd.Series(types, dtype=object).astype(str) + "/" + pd.Series(colours, dtype=object).astype(str)
    i, j, sims = image_pairs(np.asarray(vectors, dtype=np.float32), kinds.to_numpy(), min(thresholds))
    brand = pd.Series(names, dtype=object).fillna("").astype(str).str.lower().str.split().str[0].fillna("").to_numpy()
    keys = np.asarray(image_keys, dtype=object)
    same_name = normalise_name(names)
    identical = keys[i] == keys[j]
    other_brand = brand[i] != brand[j]
    named_alike = same_name[i] == same_name[j]
    all_identical = _identical_pairs(keys, kinds.to_numpy())
    rows = []
    for t in thresholds:
        hit = sims >= t
        links = int(hit.sum())
        rows.append({"cosine": t, "pairs_linked": links, "same_name": int((hit & named_alike).sum()),
                     "identical_picture": int((hit & identical).sum()),
                     "other_picture_share": float((hit & ~identical).sum() / max(links, 1)),
                     "identical_recall": float((hit & identical).sum() / max(all_identical, 1)),
                     "other_brand": int((hit & other_brand).sum()),
                     "other_brand_share": float((hit & other_brand).sum() / max(links, 1))})
    return pd.DataFrame(rows)


def choose_threshold(report: pd.DataFrame, max_other_pictures: float = 0.02) -> float:
    """The lowest cosine of ``threshold_report`` at which at most ``max_other_pictures`` of the linked
    pairs are not identical pictures (the highest one tried when none is)."""
    ok = report[report["other_picture_share"] <= max_other_pictures]
    return float(ok["cosine"].min() if len(ok) else report["cosine"].max())


def _identical_pairs(keys: np.ndarray, kinds: np.ndarray) -> int:
    """How many same-kind pairs have byte-identical pictures."""
    sizes = pd.Series(1, index=pd.MultiIndex.from_arrays([kinds, keys])).groupby(level=[0, 1]).size()
    return int((sizes * (sizes - 1) // 2).sum())
