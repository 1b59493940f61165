"""Near-duplicate listings: names, pictures, collapsing a ranked list, and the threshold's measurement."""
from __future__ import annotations

import numpy as np
import pytest

from shopbot_utils.duplicates import (DuplicateGroups, choose_threshold, normalise_name, repeated_name_share,
                                      threshold_report)


def test_names_are_normalised_before_they_are_compared():
    assert normalise_name(["Provogue Men Formal  Black Formal-Shoes!", None, "  NIKE men tee "]).tolist() == \
        ["provogue men formal black formal shoes", "", "nike men tee"]


def _unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_groups_link_same_names_and_same_pictures_of_one_kind():
    names = ["Provogue Men Black Formal Shoes", "provogue men black formal shoes", "Bata Men Black Shoes",
             "Red Tape Men Black Shoes", "Puma Men Black Shoes", "", ""]
    vectors = _unit([[1, 0, 0], [0, 1, 0], [1, 0.01, 0], [1, 0.01, 0], [0, 0, 1], [0, 0, 1], [0, 0, 1]])
    kinds = ["Formal Shoes/Black", "Formal Shoes/Black", "Formal Shoes/Black", "Formal Shoes/Brown",
             "Formal Shoes/Black", "Formal Shoes/Black", "Formal Shoes/Black"]
    by_name = DuplicateGroups.build(names)
    assert by_name.labels.tolist() == [0, 0, 1, 2, 3, 4, 5]  # products without a name are never alike by name
    both = DuplicateGroups.build(names, vectors, kinds, threshold=0.99)
    # 2 looks like 0 (same kind): one item with 1; 3 looks alike too but is another colour; 4, 5, 6 share a picture
    assert both.labels.tolist() == [0, 0, 0, 1, 2, 2, 2]
    assert both.members(1).tolist() == [0, 1, 2]
    assert both.others(0).tolist() == [1, 2]
    allowed = np.array([True, False, True, True, True, True, True])
    assert both.others(0, allowed).tolist() == [2]
    loose = DuplicateGroups.build(names, vectors, kinds, threshold=0.0)
    assert loose.labels[3] != loose.labels[0]  # other kinds are never compared, whatever the threshold
    with pytest.raises(ValueError, match="one vector and one kind"):
        DuplicateGroups.build(names, vectors[:3], kinds)


def test_first_keeps_the_best_ranked_listing_of_each_item():
    groups = DuplicateGroups(np.array([0, 0, 1, 0, 2, 3]))
    assert groups.first(np.array([3, 0, 2, 1, 4, 5]), k=3).tolist() == [3, 2, 4]
    assert groups.first(np.array([3, 0, 2, 1, 4, 5]), k=10).tolist() == [3, 2, 4, 5]
    assert groups.first(np.array([3, 0, 2, 1, 4, 5]), k=2, seen=np.array([0])).tolist() == [2, 4]
    assert groups.first(np.zeros(0, np.int64), k=3).tolist() == []


def test_repeated_name_share():
    pages = [["Nike Tee", "nike tee", "Puma Cap"], ["A", "B"], ["A"], []]
    assert repeated_name_share(pages) == 0.25
    assert repeated_name_share([]) == 0.0


def test_threshold_report_counts_identical_pictures_and_other_brands():
    vectors = _unit([[1, 0], [1, 0.001], [1, 0.3], [0, 1], [0.05, 1]])
    names = ["Nike Tee", "Nike Tee", "Puma Tee", "Nike Cap", "Adidas Cap"]
    report = threshold_report(vectors, names, ["T", "T", "T", "C", "C"], ["Red"] * 5,
                              image_keys=["a", "a", "b", "c", "d"], thresholds=(0.9, 0.999))
    loose, strict = report.to_dict("records")
    assert loose["pairs_linked"] == 4 and loose["identical_picture"] == 1 and loose["other_brand"] == 3
    assert strict["pairs_linked"] == 1 and strict["identical_recall"] == 1.0 and strict["other_brand_share"] == 0.0
    assert loose["other_picture_share"] == 0.75 and strict["other_picture_share"] == 0.0
    assert choose_threshold(report) == 0.999 and choose_threshold(report, max_other_pictures=0.8) == 0.9
