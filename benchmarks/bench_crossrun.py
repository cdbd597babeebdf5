"""Lookup time and peak memory of the cross-run answered index as its history grows.

    python benchmarks/bench_crossrun.py                            # 8 nights x 200k rows
    python benchmarks/bench_crossrun.py --nights 4 --rows-per-night 50000 --queries 2000

Builds a history of N nights x M answered rows (synthetic unit vectors in topic clusters, short
ticket texts with a unique order number each), written twice: as the index writes it today
(`AnsweredIndex.add`: memory-mapped shards, IVF lists for large ones) and as the first format
did (one `part-*.npz` per night). Then it looks the same queries up in both, each in a fresh
child process so peak RSS (VmHWM) is that search's own: the new index, and the naive way (the
first code: load every shard, one flat faiss index over all of it). Queries: a third are near
copies (cosine --min-cos to 0.98) of history rows with the same text (should be found), a third the
same with another order number (the guards must veto them: a hit there is a wrong hit), a
third unrelated. Recall is the share of the naive (exact) hits the new index also returns.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODEL = "bench/model"


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _text(n: int) -> str:
    return f"Hi, order #{n} arrived broken, please send a replacement kettle."


def build(
    work: Path, nights: int, rows: int, queries: int, dim: int, seed: int, min_cos: float
) -> dict:
    """Write both histories and the queries; return the time each way took to write."""
    from batchopt.dedup.crossrun import AnsweredIndex

    rng = np.random.default_rng(seed)
    centres = _unit(rng.normal(size=(2000, dim)))
    total = nights * rows
    planted = queries - queries // 3
    sources = np.sort(rng.choice(total, planted, replace=False))
    q_vectors = np.empty((queries, dim), np.float32)
    q_vectors[planted:] = _unit(rng.normal(size=(queries - planted, dim)))
    index = AnsweredIndex(work / "new", MODEL)
    naive = work / "naive"
    naive.mkdir(parents=True)
    spent = {"new": 0.0, "naive": 0.0}
    for night in range(nights):
        first = night * rows
        owner = rng.integers(len(centres), size=rows)
        vectors = _unit(centres[owner] + rng.normal(size=(rows, dim)) / np.sqrt(dim))
        ids = [f"row{first + i}" for i in range(rows)]
        keys = [f"key{first + i}" for i in range(rows)]
        texts = [_text(first + i) for i in range(rows)]
        mine = np.flatnonzero((sources >= first) & (sources < first + rows))
        base = vectors[sources[mine] - first]
        cos = rng.uniform(min_cos, 0.98, size=(len(mine), 1)).astype(np.float32)
        other = rng.normal(size=base.shape).astype(np.float32)
        other = _unit(other - (other * base).sum(1, keepdims=True) * base)
        q_vectors[mine] = _unit(cos * base + np.sqrt(1 - cos**2) * other)
        start = time.perf_counter()
        index.add(ids, f"night{night}", keys, texts, vectors)
        spent["new"] += time.perf_counter() - start
        start = time.perf_counter()
        naive_add(naive, f"night{night}", ids, keys, texts, vectors)
        spent["naive"] += time.perf_counter() - start
        print(f"  night {night + 1}/{nights} written", file=sys.stderr, flush=True)
    q_texts = [_text(int(s) + (i % 2)) for i, s in enumerate(sources.tolist())]  # odd: vetoed
    q_texts += [_text(total + 10 + i) for i in range(queries - planted)]
    np.save(work / "queries.npy", q_vectors)
    (work / "queries.json").write_text(json.dumps(q_texts))
    return spent


# ---- The naive way: the first code, kept here only for comparison ----------------------------


def naive_add(folder: Path, run_id: str, ids: list[str], keys: list[str], texts: list[str],
              vectors: np.ndarray) -> None:  # fmt: skip
    """The first `AnsweredIndex.add`: one npz per run, fsynced, renamed into place."""
    tmp = folder / f".part-{run_id}.npz"
    with open(tmp, "wb") as handle:
        np.savez(
            handle,
            vectors=vectors,
            row_id=np.array(ids, dtype=str),
            run_id=np.array([run_id] * len(ids), dtype=str),
            request_key=np.array(keys, dtype=str),
            text=np.array(texts, dtype=str),
        )
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, folder / f"part-{run_id}-00000000.npz")


def naive_lookup(folder: Path, texts: list[str], vectors: np.ndarray, threshold: float, guards,
                 k: int) -> list[str | None]:  # fmt: skip
    """The first `AnsweredIndex.lookup`: every shard loaded, one flat index over all of it."""
    import faiss

    from batchopt.dedup.guards import extract, veto

    parts, meta = [], {"row_id": [], "text": []}
    for shard in sorted(folder.glob("part-*.npz")):
        with np.load(shard, allow_pickle=False) as data:
            parts.append(data["vectors"].astype(np.float32, copy=False))
            for name in meta:
                meta[name].extend(str(v) for v in data[name])
    history = np.vstack(parts)
    del parts
    index = faiss.IndexFlatIP(history.shape[1])
    index.add(history)
    sims, ids = index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
    found: list[str | None] = [None] * len(texts)
    for row, text in enumerate(texts):
        for sim, j in zip(sims[row], ids[row], strict=True):
            if j < 0 or sim < threshold:
                break
            if veto(extract(text, guards), extract(meta["text"][j], guards), guards) is None:
                found[row] = meta["row_id"][j]
                break
    return found


# ---- One search in a child process ------------------------------------------------------------


def _status(field: str) -> int:
    """A /proc/self/status figure in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    return -1


def child(work: Path, which: str, threshold: float, k: int) -> None:
    import faiss  # noqa: F401  (imported by both ways before the baseline is read)

    from batchopt.dedup.crossrun import AnsweredIndex
    from batchopt.dedup.guards import GuardConfig

    vectors = np.load(work / "queries.npy")
    texts = json.loads((work / "queries.json").read_text())
    guards = GuardConfig()
    baseline = _status("VmRSS")
    start = time.perf_counter()
    if which == "new":
        index = AnsweredIndex(work / "new", MODEL)
        hits = [None if h is None else h.row_id
                for h in index.lookup(texts, vectors, threshold, guards, k)]  # fmt: skip
    else:
        hits = naive_lookup(work / "naive", texts, vectors, threshold, guards, k)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_mb": _status("VmHWM"), "baseline_mb": baseline,
                      "hits": hits}))  # fmt: skip


def run_child(work: Path, which: str, args: argparse.Namespace) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", which, "--workdir", str(work),
         "--threshold", str(args.threshold), "--k", str(args.k)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def wrong(texts: list[str], hits: list[str | None]) -> int:
    """Hits on a row with another order number: the guards should have vetoed them."""
    number = re.compile(r"#(\d+)")
    return sum(
        h is not None and int(h[3:]) != int(number.search(t).group(1))  # type: ignore[union-attr]
        for t, h in zip(texts, hits, strict=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=8)
    parser.add_argument("--rows-per-night", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--min-cos", type=float, default=0.85, help="planted copies: min cosine")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, help="default: a temp folder, removed at the end")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive search")
    parser.add_argument("--child", choices=["new", "naive"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.workdir, args.child, args.threshold, args.k)
        return
    from batchopt.dedup import crossrun_ivf as ivf

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_crossrun-"))
    try:
        total = args.nights * args.rows_per_night
        print(f"history: {args.nights} nights x {args.rows_per_night:,} rows = {total:,} vectors"
              f" x {args.dim} ({total * args.dim * 4 / 2**30:.2f} GiB), {args.queries:,} queries,"
              f" threshold {args.threshold}, k {args.k}; IVF for shards >= {ivf.IVF_MIN_ROWS:,}"
              f" rows, nprobe {ivf.NPROBE}")  # fmt: skip
        spent = build(
            work, args.nights, args.rows_per_night, args.queries, args.dim, args.seed,
            args.min_cos,
        )  # fmt: skip
        print(f"write all nights: new {spent['new']:.1f} s (lists assigned, quantizer trained"
              f" once), naive {spent['naive']:.1f} s")  # fmt: skip
        texts = json.loads((work / "queries.json").read_text())
        results = {w: run_child(work, w, args) for w in ["new", "naive"][: 1 if args.no_naive
                                                                          else 2]}  # fmt: skip
        print(f"{'':8}{'lookup s':>10}{'peak RSS MB':>13}{'(baseline)':>12}{'hits':>7}{'wrong':>7}")
        for name, r in results.items():
            print(
                f"{name:8}{r['seconds']:>10.2f}{r['peak_mb']:>13,}{r['baseline_mb']:>12,}"
                f"{sum(h is not None for h in r['hits']):>7}{wrong(texts, r['hits']):>7}"
            )
        if "naive" in results:
            new, naive = results["new"], results["naive"]
            exact = [i for i, h in enumerate(naive["hits"]) if h is not None]
            same = sum(new["hits"][i] == naive["hits"][i] for i in exact)
            extra = sum(h is not None and naive["hits"][i] is None
                        for i, h in enumerate(new["hits"]))  # fmt: skip
            print(f"new/naive: lookup time {new['seconds'] / naive['seconds']:.3f}, peak RSS"
                  f" {new['peak_mb'] / naive['peak_mb']:.3f}; recall of the naive hits"
                  f" {same / max(1, len(exact)):.4f} ({same}/{len(exact)}), hits naive lacks"
                  f" {extra}")  # fmt: skip
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
