"""Benchmark the search indexes on the real embeddings, plus a scale run on synthetic vectors.

    python benchmarks/bench_index.py [--artifacts artifacts] [--datasketch-limit 0] [--scale 10000,100000,1000000]
                                     [--no-milvus] [--milvus-scale-max 300000]

Prints a table (ratios against exact search) and writes JSON (default
``<artifacts>/benchmarks/index.json``). One process, one thread, the same queries for every index.
Milvus runs as Milvus Lite embedded in this process, on a temporary folder (or at
``SHOPBOT_MILVUS_URI``): its times include the gRPC round trip a server would add.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import pandas as pd

from shopbot_utils import config
from shopbot_utils.bot import load_products
from shopbot_utils.data import load_split
from shopbot_utils.embed import load_embeddings
from shopbot_utils.index_bench import SETTINGS, measure, scale_run
from shopbot_utils.milvus import MilvusIndex, default_uri


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", type=Path, default=config.artifacts_dir())
    p.add_argument("--datasketch-limit", type=int, default=0, help="index at most this many products with datasketch (0: all)")
    p.add_argument("--latency-queries", type=int, default=300)
    p.add_argument("--scale", default="10000,30000,100000,300000,1000000", help="synthetic sizes ('' to skip)")
    p.add_argument("--faiss-scale-max", type=int, default=300_000, help="largest synthetic size faiss builds")
    p.add_argument("--no-milvus", action="store_true", help="leave Milvus out")
    p.add_argument("--milvus-scale-max", type=int, default=300_000, help="largest synthetic size Milvus builds")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    tmp = tempfile.TemporaryDirectory()
    uri = default_uri(tmp.name)  # SHOPBOT_MILVUS_URI when set, else Milvus Lite in a temporary folder
    milvus = [] if args.no_milvus else [("milvus", {"uri": uri, "collection": "bench", "ef_search": 64}),
                                         ("milvus", {"uri": uri, "collection": "bench", "index_type": "FLAT"})]
    out = args.out or args.artifacts / "benchmarks" / "index.json"
    ids, vectors = load_embeddings(args.artifacts)
    start = time.time()
    products = load_products(args.artifacts)
    real = measure(vectors, ids, load_split(args.artifacts), products, settings=SETTINGS + milvus,
                   latency_queries=args.latency_queries, datasketch_limit=args.datasketch_limit or None)
    exact = real[real["kind"] == "exact"].iloc[0]
    real["speedup_vs_exact"] = exact["p50_ms"] / real["p50_ms"]
    real["poster_vs_exact"] = real["poster_score"] - exact["poster_score"]
    pd.set_option("display.width", 200)
    cols = ["index", "n_indexed", "recall@5", "recall@10", "poster_score", "poster_vs_exact", "precision@5",
            "build_s", "structure_mb", "rss_growth_mb", "p50_ms", "p95_ms", "filtered_p50_ms", "filtered_p95_ms",
            "batch_ms_per_query", "speedup_vs_exact"]
    print(f"\nReal catalogue embeddings: {len(ids):,} x {vectors.shape[1]}, test-split queries, one thread")
    print(real[cols].round(4).to_string(index=False))
    updates = {} if args.no_milvus else live_updates(vectors, ids, products, uri)
    if updates:
        print("\nMilvus live updates (no rebuild): " + ", ".join(f"{k} {v:.1f}" for k, v in updates.items()))
    sizes = [int(s) for s in args.scale.split(",") if s]
    kinds = ("exact", "lsh", "faiss") + (() if args.no_milvus else ("milvus",))
    scale = scale_run(sizes, kinds, max_size={"faiss": args.faiss_scale_max, "milvus": args.milvus_scale_max},
                      params={"milvus": {"uri": uri, "collection": "scale"}}) if sizes else pd.DataFrame()
    if len(scale):
        print("\nScale run (synthetic clustered ReLU vectors, 512-d):")
        print(scale.round(4).to_string(index=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                                           "threads": 1}, "seconds": time.time() - start,
                               "real": real.to_dict("records"), "milvus_updates": updates,
                               "scale": scale.to_dict("records")}, indent=1, default=str))
    print(f"\nwrote {out}")
    return 0


def live_updates(vectors: np.ndarray, ids: np.ndarray, products: pd.DataFrame, uri: str, n: int = 1000) -> dict:
    """What the engine buys: add ``n`` products to a built index and delete them again, timed."""
    rng = np.random.default_rng(0)
    with MilvusIndex(vectors, ids, uri=uri, collection="updates", attributes=products) as index:
        new_ids = ids.max() + 1 + np.arange(n)
        new = vectors[rng.choice(len(ids), n)] + 0.01 * rng.standard_normal((n, vectors.shape[1])).astype(np.float32)
        start = time.perf_counter()
        index.add(new, new_ids)
        add_s = time.perf_counter() - start
        found = index.query(new[0], 1)[0].tolist() == [new_ids[0]]
        start = time.perf_counter()
        index.remove(new_ids)
        remove_s = time.perf_counter() - start
    return {"products": n, "add_ms_per_product": add_s * 1e3 / n, "remove_ms_per_product": remove_s * 1e3 / n,
            "added_found_first": float(found)}


if __name__ == "__main__":
    sys.exit(main())
