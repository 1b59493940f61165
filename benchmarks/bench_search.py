"""Benchmark text search, refinement and the class prior on the real catalogue, in one process.

    python benchmarks/bench_search.py [--artifacts artifacts] [--refine-cases 200] [--duplicates]

Text search: one query per attribute group (type x colour x gender, >= 5 products) in three
wordings, for the old parser's filter-and-first-rows, BM25 alone, MiniLM alone and the shipped ranker
(P@5, nDCG@10 with bootstrap intervals, zero-result and violation rates, p50/p95). Pages: the same
queries' first page of 8 cards, with listings kept apart and no filling and as shipped: the share
of pages with a product name twice, of short pages (fewer than 8 cards although the type has 8
items), of queries with words nothing filtered by; and the shopper's session of issue 28 with its
replies. ``--duplicates``: how many same-type, same-colour pairs each image cosine links (and how
many have byte-identical pictures or another brand): what ``DUPLICATE_COSINE`` was chosen from. Refinement:
"like this, but in <colour>" from catalogue anchors. Class prior: the strict poster score of
``similar`` with and without it. Prints tables and writes JSON (``<artifacts>/benchmarks/search.json``).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import pandas as pd

from shopbot_utils import ShopBot, config
from shopbot_utils.data import load_split
from shopbot_utils.duplicates import DUPLICATE_COSINE, choose_threshold
from shopbot_utils.index import one_blas_thread
from shopbot_utils.search_bench import (class_prior_report, page_report, refinement_cases, refinement_report,
                                        session_replies, text_search_report)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", type=Path, default=config.artifacts_dir())
    p.add_argument("--refine-cases", type=int, default=200)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--duplicates", action="store_true",
                   help="measure the image-duplicate threshold (reads every image)")
    args = p.parse_args(argv)
    out = args.out or args.artifacts / "benchmarks" / "search.json"
    start = time.time()
    bot = ShopBot.load(args.artifacts)
    split = load_split(args.artifacts)
    bot.text_search.search("warm up", 5)  # loads MiniLM once, outside the timings
    pd.set_option("display.width", 220)
    with one_blas_thread():
        text = text_search_report(bot.text_search, bot.classes, items=True)
    cols = ["wording", "half", "ranker", "queries", "p_at_5", "p_at_5_ci", "item_p_at_5", "ndcg_at_10",
            "zero_result_rate", "violation_rate", "p50_ms", "p95_ms"]
    show = text[cols].copy()
    show["p_at_5_ci"] = show["p_at_5_ci"].map(lambda ci: f"{ci[0]:.3f}-{ci[1]:.3f}")
    print(f"\nText search over {len(bot.text_search):,} products (one query per attribute group)")
    print(show.round(3).to_string(index=False))
    with one_blas_thread():
        pages = page_report(bot.text_search, bot.classes)
    print("\nFirst pages (8 cards): repeated names, short pages, words nothing filtered by")
    print(pages.round(3).to_string(index=False))
    replies = session_replies(bot.text_search)
    with pd.option_context("display.max_colwidth", 160):
        print(replies.to_string(index=False))
    threshold = duplicate_threshold(bot) if args.duplicates else pd.DataFrame()
    if args.duplicates:
        print("\nImage duplicates: same-type, same-colour pairs linked at each cosine")
        print(threshold.round(4).to_string(index=False))
        print(f"chosen (at most 2% of links not identical pictures): {choose_threshold(threshold)}; "
              f"shipped: duplicates.DUPLICATE_COSINE = {DUPLICATE_COSINE}")
    test_ids = split.loc[split["split"] == "test", "id"].to_numpy()
    cases = refinement_cases(bot.products, bot.classes, n=args.refine_cases, candidates=test_ids)
    refine = refinement_report(bot, cases)
    print(f"\nRefinement: \"like this, but in <colour>\", {len(cases)} test-split anchors")
    print(refine.round(3).to_string(index=False))
    prior = class_prior_report(bot, split)
    print("\nClass prior in similar(): strict poster score (test queries, train+valid index)")
    print(prior.round(4).to_string(index=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": {"python": sys.version.split()[0], "platform": platform.platform()},
                               "seconds": time.time() - start, "text_search": text.to_dict("records"),
                               "refinement": refine.to_dict("records"), "class_prior": prior.to_dict("records"),
                               "pages": pages.to_dict("records"), "session": replies.to_dict("records"),
                               "duplicate_threshold": threshold.to_dict("records")},
                              indent=1, default=str))
    print(f"\nwrote {out}")
    return 0


def duplicate_threshold(bot: ShopBot) -> pd.DataFrame:
    """``duplicates.threshold_report`` over the bot's catalogue (pictures hashed from the image files)."""
    import hashlib

    from shopbot_utils.data import load_catalogue
    from shopbot_utils.duplicates import threshold_report

    catalogue = load_catalogue()
    rows = bot.products.loc[bot.index.ids]
    keys = [hashlib.md5(catalogue.image_path(i).read_bytes()).hexdigest() for i in rows["id"]]
    return threshold_report(bot.index.vectors, rows["productDisplayName"], rows["articleType"], rows["baseColour"],
                            keys)


if __name__ == "__main__":
    sys.exit(main())
