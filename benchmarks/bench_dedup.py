"""Speed and memory of the whole semantic dedup step (exact + embed + index + guarded clusters).

    python benchmarks/bench_dedup.py                       # 10k and 100k rows, both backends
    python benchmarks/bench_dedup.py --sizes 1000000 --backends model2vec --no-naive

For each size and backend, in a fresh child process (so peak RSS is that run's own): rows/s of
the whole step with the time of each stage, peak RSS, and, on the same rows, the naive way:
the same embeddings compared all-pairs with numpy (blocked matrix products, greedy grouping at the
same threshold, no guards), as a ratio. The rows are short ticket-like texts that the script
generates: about a third are exact copies, near copies or light rewordings of others, and many
differ from another row only in an order number, amount or product.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time

PRODUCTS = [
    "PulseBand 2",
    "Summit Shell jacket",
    "HearthTemp thermostat",
    "AeroBrew kettle",
    "Nimbus router",
    "TrailMax boots",
    "Lumen desk lamp",
    "Orbit earbuds",
]
ASKS = [
    (
        "I want a refund for order #{o}",
        "please refund my money for order #{o}",
        "how do I get my money back for order #{o}",
    ),
    ("order #{o} has not arrived yet", "my parcel #{o} is late", "where is my order #{o}"),
    (
        "I was charged ${a} twice",
        "you billed me ${a} two times",
        "double charge of ${a} on my card",
    ),
    ("my {p} stopped working", "the {p} is broken", "{p} does not turn on anymore"),
    ("cancel my order #{o}", "please cancel order #{o}", "I no longer want order #{o}"),
    (
        "change the address on order #{o}",
        "update my delivery address for #{o}",
        "ship order #{o} to a new address",
    ),
    ("the {p} does not fit", "the {p} fits badly, can I swap it", "wrong size on my {p}"),
    ("I cannot log in to my account", "login fails with my password", "locked out of my account"),
]
OPENERS = ["", "Hi, ", "Hello team, ", "Good morning, "]
CLOSERS = ["", " Thanks.", " Thank you!", " Please help."]


def make_rows(n: int, seed: int = 7) -> tuple[list[str], list[str]]:
    """`n` short texts and ids; duplicates and rewordings make about a third of them."""
    rng = random.Random(seed)
    texts: list[str] = []
    for _ in range(n):
        if texts and rng.random() < 0.12:
            texts.append(rng.choice(texts))  # exact copy
            continue
        if texts and rng.random() < 0.2:
            base = rng.choice(texts)  # light rewording of an earlier row, same facts
            texts.append(rng.choice(OPENERS[1:]) + base.split(", ", 1)[-1])
            continue
        ask = rng.choice(ASKS)
        filled = rng.choice(ask).format(
            o=rng.randint(10_000, 10_000 + n // 3),
            a=rng.choice([20, 200, 35, 350, 99]),
            p=rng.choice(PRODUCTS),
        )
        texts.append(rng.choice(OPENERS) + filled + rng.choice(CLOSERS))
    return [f"r{i:08d}" for i in range(n)], texts


def naive_groups(vectors, threshold: float, block: int = 2048) -> int:  # type: ignore[no-untyped-def]
    """All-pairs cosine in numpy, greedy grouping in input order; returns the group count."""
    import numpy as np

    n = vectors.shape[0]
    leader = np.full(n, -1, dtype=np.int64)
    for start in range(0, n, block):
        sims = vectors[start : start + block] @ vectors.T
        for offset in range(sims.shape[0]):
            i = start + offset
            if leader[i] != -1:
                continue
            leader[i] = i
            close = np.nonzero(sims[offset, i + 1 :] >= threshold)[0] + i + 1
            free = close[leader[close] == -1]
            leader[free] = i
    return int(np.unique(leader).size)


def one(size: int, backend: str, threshold: float, naive: bool) -> dict[str, object]:
    import polars as pl

    from batchopt.dedup.exact import exact_groups
    from batchopt.dedup.guards import GuardConfig
    from batchopt.dedup.index import index_kind
    from batchopt.dedup.semantic import semantic_groups
    from batchopt.services.embed import default_model2vec_path, distill_model2vec, load_embedder

    if backend == "model2vec" and not default_model2vec_path().exists():
        distill_model2vec()
    ids, texts = make_rows(size)
    frame = pl.DataFrame({"id": ids, "text": texts})
    embedder = load_embedder(backend)
    embedder.embed(["warm up"])
    timings: dict[str, float] = {}
    started = time.perf_counter()
    frame = exact_groups(frame, "id", "text")
    timings["exact"] = time.perf_counter() - started
    t = time.perf_counter()
    reps = frame.filter(pl.col("dedup") == "none")["text"].to_list()
    vectors = embedder.embed(reps)
    timings["embed"] = time.perf_counter() - t
    t = time.perf_counter()
    grouped = semantic_groups(
        frame,
        vectors,
        id_column="id",
        text_column="text",
        threshold=threshold,
        guards=GuardConfig(),
    )
    timings["index+guards+cluster"] = time.perf_counter() - t
    total = time.perf_counter() - started
    counts = dict(grouped["dedup"].value_counts().iter_rows())
    result: dict[str, object] = {
        "rows": size,
        "backend": backend,
        "index": index_kind(len(reps)),
        "seconds": total,
        "rows_per_s": size / total,
        "stages": timings,
        "exact": counts.get("exact", 0),
        "semantic": counts.get("semantic", 0),
        "vetoed": int(grouped["veto_guard"].is_not_null().sum()),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if naive:
        t = time.perf_counter()
        all_vectors = embedder.embed(texts)
        groups = naive_groups(all_vectors, threshold)
        naive_s = time.perf_counter() - t
        result.update(naive_seconds=naive_s, naive_rows_per_s=size / naive_s, naive_groups=groups)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--backends", nargs="+", default=["model2vec", "sentence-transformers"])
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--no-naive", action="store_true")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.backends[0], args.threshold, not args.no_naive)))
        return
    for backend in args.backends:
        for size in args.sizes:
            cmd = [
                sys.executable,
                __file__,
                "--one",
                str(size),
                "--backends",
                backend,
                "--threshold",
                str(args.threshold),
            ] + (["--no-naive"] if args.no_naive else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            stages = " · ".join(f"{k} {v:.2f}s" for k, v in r["stages"].items())
            print(
                f"{backend:22s} rows={size:>9,} index={r['index']:5s} "
                f"{r['rows_per_s']:>9,.0f} rows/s ({r['seconds']:.1f} s: {stages}) "
                f"peak RSS {r['peak_rss_mb']:,.0f} MB; merged exact {r['exact']:,}, "
                f"semantic {r['semantic']:,}, vetoed {r['vetoed']:,}"
            )
            if "naive_seconds" in r:
                print(
                    f"{'':22s} naive all-pairs numpy: {r['naive_rows_per_s']:>9,.0f} rows/s "
                    f"({r['naive_seconds']:.1f} s) → batchopt/naive = "
                    f"{r['rows_per_s'] / r['naive_rows_per_s']:.2f}x"
                )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
