"""Benchmark the search indexes on the real embeddings, plus a scale run on synthetic vectors.

    python benchmarks/bench_index.py [--artifacts artifacts] [--datasketch-limit 0] [--scale 10000,100000,1000000]

Prints a table (ratios against exact search) and writes JSON (default
``<artifacts>/benchmarks/index.json``). One process, one thread, the same queries for every index.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import pandas as pd

from shopbot_utils import config
from shopbot_utils.bot import load_products
from shopbot_utils.data import load_split
from shopbot_utils.embed import load_embeddings
from shopbot_utils.index_bench import measure, scale_run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", type=Path, default=config.artifacts_dir())
    p.add_argument("--datasketch-limit", type=int, default=0, help="index at most this many products with datasketch (0: all)")
    p.add_argument("--latency-queries", type=int, default=300)
    p.add_argument("--scale", default="10000,30000,100000,300000,1000000", help="synthetic sizes ('' to skip)")
    p.add_argument("--faiss-scale-max", type=int, default=300_000, help="largest synthetic size faiss builds")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    out = args.out or args.artifacts / "benchmarks" / "index.json"
    ids, vectors = load_embeddings(args.artifacts)
    start = time.time()
    real = measure(vectors, ids, load_split(args.artifacts), load_products(args.artifacts),
                   latency_queries=args.latency_queries, datasketch_limit=args.datasketch_limit or None)
    exact = real[real["kind"] == "exact"].iloc[0]
    real["speedup_vs_exact"] = exact["p50_ms"] / real["p50_ms"]
    real["poster_vs_exact"] = real["poster_score"] - exact["poster_score"]
    pd.set_option("display.width", 200)
    cols = ["index", "n_indexed", "recall@5", "recall@10", "poster_score", "poster_vs_exact", "precision@5",
            "build_s", "structure_mb", "p50_ms", "p95_ms", "batch_ms_per_query", "speedup_vs_exact"]
    print(f"\nReal catalogue embeddings: {len(ids):,} x {vectors.shape[1]}, test-split queries, one thread")
    print(real[cols].round(4).to_string(index=False))
    sizes = [int(s) for s in args.scale.split(",") if s]
    scale = scale_run(sizes, max_size={"faiss": args.faiss_scale_max}) if sizes else pd.DataFrame()
    if len(scale):
        print("\nScale run (synthetic clustered ReLU vectors, 512-d):")
        print(scale.round(4).to_string(index=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                                           "threads": 1}, "seconds": time.time() - start,
                               "real": real.to_dict("records"), "scale": scale.to_dict("records")}, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
