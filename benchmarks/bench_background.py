"""Benchmark background removal on pasted-background queries (known masks), and auto's per-photo check.

    python benchmarks/bench_background.py [--artifacts artifacts] [--queries 300] [--sizes 512,768,1024]

For each backend: mask IoU, seconds per image (p50/p95), and the poster's score / precision@5 of
similar() on those queries, next to clean catalogue queries. Then ``remove_background="auto"``: how
often its check decides right on the clean catalogue photos and on the pasted composites (both error
rates), the time it saves, and the poster score of similar() with never / always / auto on both sets;
and the check alone (no model needed) on every test-split product and a composite of each.
Prints tables, writes JSON (default ``<artifacts>/benchmarks/background.json``). One process, the
same queries for every backend.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from shopbot_utils import ShopBot, config
from shopbot_utils.background import PACKSHOT_BORDER, GrabCutBackend, IsnetBackend, NoBackend, get_backend
from shopbot_utils.background_bench import (backend_label, check_split, cut_out_all, decision_errors, make_composites,
                                            mask_quality, policy_runs, policy_scores, retrieval_gain)
from shopbot_utils.data import load_catalogue, load_split


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", type=Path, default=config.artifacts_dir())
    p.add_argument("--data", default=None, help="the catalogue (default: SHOPBOT_DATA, cache, download)")
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--sizes", default="512,768,1024", help="ISNet working sizes")
    p.add_argument("--check-split", action=argparse.BooleanOptionalAction, default=True,
                   help="also run auto's check alone on the whole test split (default: yes)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    out = args.out or args.artifacts / "benchmarks" / "background.json"
    catalogue, split, bot = load_catalogue(args.data), load_split(args.artifacts), ShopBot.load(args.artifacts)
    whole_test = split[split["split"] == "test"]
    test = whole_test.sample(min(args.queries, len(whole_test)), random_state=config.SEED)
    composites = make_composites({int(i): catalogue.image_path(i) for i in test["id"]})
    backends = {f"isnet {s}": IsnetBackend(size=int(s)) for s in args.sizes.split(",") if s}
    backends |= {"grabcut": GrabCutBackend(), "none": NoBackend()}
    auto = get_backend("auto")
    start = time.time()
    cutouts = cut_out_all(composites, backends)
    quality = mask_quality(composites, cutouts)
    masks = quality.groupby("backend", sort=False).agg(
        mask_iou=("iou", "mean"), median_iou=("iou", "median"), seconds_p50=("seconds", "median"),
        seconds_p95=("seconds", lambda s: s.quantile(0.95))).reset_index()
    gain = retrieval_gain(bot, split, composites, cutouts, catalogue)
    runs = policy_runs(catalogue, composites, auto.remover, cutouts)
    decisions = decision_errors(runs)
    scores = policy_scores(bot, split, [c.product_id for c in composites], runs)
    whole, removed_types = None, {}
    if args.check_split:
        checks = check_split(catalogue, whole_test["id"].astype(int).tolist())
        whole = decision_errors(checks)
        types = split.set_index("id")["articleType"]
        removed_types = types.loc[[c.product_id for c in checks["clean catalogue photo"]
                                   if not c.packshot]].value_counts().to_dict()
    pd.set_option("display.width", 200)
    print(f"\n{len(composites)} pasted-background queries; auto = the packshot check, "
          f"then {backend_label(auto.remover)}")
    print(masks.round(3).to_string(index=False))
    print()
    print(gain.round(4).to_string(index=False))
    print(f"\nauto's check (a packshot: at least {PACKSHOT_BORDER:.0%} of the border near-white)")
    print(decisions.round(4).to_string(index=False))
    print("\nsimilar() with the background removed never / always / auto (seconds: per photo, on the background)")
    print(scores.round(4).to_string(index=False))
    if whole is not None:
        print("\nthe check alone on the whole test split (each product's catalogue photo and a composite of it)")
        print(whole.round(4).to_string(index=False))
        print("catalogue photos it would cut out, by type:", ", ".join(f"{k} {v}" for k, v in list(removed_types.items())[:8]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"queries": len(composites), "seconds": time.time() - start,
                               "auto": {"backend": auto.remover.name, "size": getattr(auto.remover, "size", None),
                                        "packshot_border": PACKSHOT_BORDER},
                               "masks": masks.to_dict("records"), "retrieval": gain.to_dict("records"),
                               "auto_decisions": decisions.to_dict("records"),
                               "auto_policies": scores.to_dict("records"),
                               "auto_check_test_split": None if whole is None else whole.to_dict("records"),
                               "auto_check_removed_types": removed_types}, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
