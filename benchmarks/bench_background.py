"""Benchmark background removal on pasted-background queries (known masks).

    python benchmarks/bench_background.py [--artifacts artifacts] [--queries 300] [--sizes 512,768,1024]

For each backend: mask IoU, seconds per image (p50/p95), and the poster's score / precision@5 of
similar() on those queries, next to clean catalogue queries. Prints a table, writes JSON (default
``<artifacts>/benchmarks/background.json``). One process, the same queries for every backend.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from shopbot_utils import ShopBot, config
from shopbot_utils.background import GrabCutBackend, IsnetBackend, NoBackend, get_backend
from shopbot_utils.background_bench import cut_out_all, make_composites, mask_quality, retrieval_gain
from shopbot_utils.data import load_catalogue, load_split


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", type=Path, default=config.artifacts_dir())
    p.add_argument("--data", default=None, help="the catalogue (default: SHOPBOT_DATA, cache, download)")
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--sizes", default="512,768,1024", help="ISNet working sizes")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    out = args.out or args.artifacts / "benchmarks" / "background.json"
    catalogue, split, bot = load_catalogue(args.data), load_split(args.artifacts), ShopBot.load(args.artifacts)
    test = split[split["split"] == "test"].sample(args.queries, random_state=config.SEED)
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
    pd.set_option("display.width", 200)
    print(f"\n{len(composites)} pasted-background queries; auto = {auto.name} {getattr(auto, 'size', '')}")
    print(masks.round(3).to_string(index=False))
    print()
    print(gain.round(4).to_string(index=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"queries": len(composites), "seconds": time.time() - start,
                               "auto": {"backend": auto.name, "size": getattr(auto, "size", None)},
                               "masks": masks.to_dict("records"), "retrieval": gain.to_dict("records")}, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
