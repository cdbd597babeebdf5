"""Search of one cross-run shard: exact below `IVF_MIN_ROWS` rows, an inverted file above.

The coarse quantizer (spherical k-means centroids) is trained once, on the first shard of at
least `IVF_MIN_ROWS` rows, and kept in the folder as `quantizer.npy`; every later large shard is
assigned to the same lists when it is added and stored list by list. So a lookup finds each
query's `NPROBE` nearest lists once and reads, in every shard, only those lists: contiguous
slices of the memory-mapped vectors, compared with the queries that probe them in one matrix
product per list (as `index.py` does within a run; faiss's IndexIVFFlat scans one query at a
time). Every pair found is an exact inner product, so precision is unchanged; only pairs whose
vectors fall in lists the query did not probe are missed.

Measured (benchmarks/bench_crossrun.py, 2 shared cores, synthetic clustered 384-d vectors,
2,000 queries, planted copies at cosine 0.85-0.98): 8 nights x 200k rows (781 lists), lookup
3.3 s and 352 MB peak RSS against 76 s and 5.1 GB for one flat index over everything, recall
1.0 of the exact hits; copies at 0.75-0.98, threshold 0.75: recall 0.994. At 360k rows (468
lists) recall was 0.969 / 0.987 / 0.993 / 0.999 with nprobe 4 / 8 / 16 / 32.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from batchopt.dedup.index import _above, _concat, _one_blas_thread, _parallel, _top, kmeans
from batchopt.services.mapped import drop_pages

IVF_MIN_ROWS = 100_000  # a shard this large is stored list by list and searched by IVF
ROWS_PER_LIST = 256  # mean rows per list in the shard the quantizer is trained on
MAX_LISTS = 4096
TRAIN_PER_LIST = 32  # k-means training sample per list
NPROBE = 16  # lists each query reads in every IVF shard
QUERY_BLOCK = 1024  # queries per matrix product
ROW_BLOCK = 16_384  # shard rows per matrix product in a flat search
QUANTIZER = "quantizer.npy"
SEED = 1234

Triples = tuple[np.ndarray, np.ndarray, np.ndarray]  # query ids, shard rows, similarities


@dataclass(frozen=True)
class Quantizer:
    centroids: np.ndarray  # (lists, dim), unit rows
    id: str  # digest of the centroids: a shard records the quantizer its lists came from


@dataclass(frozen=True)
class Probes:
    """Queries grouped by the lists they probe: askers[ask_start[j]:ask_start[j+1]] probe j."""

    ask_start: np.ndarray
    askers: np.ndarray


def load_quantizer(folder: Path) -> Quantizer | None:
    try:
        centroids = np.load(folder / QUANTIZER, allow_pickle=False)
    except (OSError, ValueError):
        return None
    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    return Quantizer(centroids, _digest(centroids))


def quantizer_for(folder: Path, vectors: np.ndarray) -> Quantizer:
    """The folder's quantizer; trained on a sample of `vectors` if there is none yet."""
    found = load_quantizer(folder)
    if found is not None:
        return found
    n_lists = max(1, min(MAX_LISTS, len(vectors) // ROWS_PER_LIST))
    rng = np.random.default_rng(SEED)
    pick = np.sort(rng.choice(len(vectors), min(len(vectors), n_lists * TRAIN_PER_LIST), False))
    with _one_blas_thread():
        centroids = np.ascontiguousarray(kmeans(vectors[pick], n_lists), dtype=np.float32)
    fd, tmp = tempfile.mkstemp(prefix=".quantizer-", suffix=".npy", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, centroids)
            handle.flush()
            os.fsync(handle.fileno())
        # link, not replace: a quantizer other shards were assigned with is never overwritten
        os.link(tmp, folder / QUANTIZER)
    except FileExistsError:
        pass  # another process trained one first: use that one
    finally:
        Path(tmp).unlink(missing_ok=True)
    return load_quantizer(folder) or Quantizer(centroids, _digest(centroids))


def _digest(centroids: np.ndarray) -> str:
    return hashlib.blake2b(centroids.tobytes(), digest_size=8).hexdigest()


def assign(centroids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, list_start): `vectors[order]` is stored list by list, list j being rows
    list_start[j] to list_start[j+1] of it."""
    home = probe(centroids, vectors, 1)[:, 0]
    order = np.argsort(home, kind="stable")
    return order, np.searchsorted(home[order], np.arange(len(centroids) + 1)).astype(np.int64)


def probe(centroids: np.ndarray, queries: np.ndarray, nprobe: int) -> np.ndarray:
    """The `nprobe` nearest lists of every query, nearest first."""
    nprobe = min(nprobe, len(centroids))
    out = np.empty((len(queries), nprobe), np.int64)
    block = 8 * QUERY_BLOCK

    def run(start: int) -> None:
        out[start : start + block] = _top(queries[start : start + block] @ centroids.T, nprobe)

    with _one_blas_thread():
        _parallel(run, range(0, len(queries), block))
    return out


def invert(probes: np.ndarray, n_lists: int) -> Probes:
    flat = probes.ravel()
    by_list = np.argsort(flat, kind="stable")
    ask_start = np.searchsorted(flat[by_list], np.arange(n_lists + 1))
    return Probes(ask_start, (by_list // probes.shape[1]).astype(np.int32))


def search_flat(queries: np.ndarray, table: np.ndarray, k: int, threshold: float) -> Triples:
    """Every shard row against every query: up to k pairs >= threshold per query and block."""

    def run(start: int) -> list[Triples]:
        block = np.asarray(table[start : start + ROW_BLOCK])
        rows = np.arange(start, start + len(block))
        return [
            _above(queries[q : q + QUERY_BLOCK] @ block.T,
                   np.arange(q, min(q + QUERY_BLOCK, len(queries))), rows, k, threshold)
            for q in range(0, len(queries), QUERY_BLOCK)
        ]  # fmt: skip

    parts: list[Triples] = []
    with _one_blas_thread():
        # two blocks at a time (one per thread), their pages handed back before the next two
        starts = list(range(0, len(table), ROW_BLOCK))
        for i in range(0, len(starts), 2):
            parts.extend(p for found in _parallel(run, starts[i : i + 2]) for p in found)
            drop_pages(table)
    return _concat(parts)


def search_ivf(
    queries: np.ndarray, probes: Probes, table: np.ndarray, list_start: np.ndarray, k: int,
    threshold: float,
) -> Triples:  # fmt: skip
    """The lists each query probes against that query: up to k pairs >= threshold per list."""

    def scan(chunk: range) -> list[Triples]:
        parts = []
        for lst in chunk:
            lo, hi = int(list_start[lst]), int(list_start[lst + 1])
            a0, a1 = int(probes.ask_start[lst]), int(probes.ask_start[lst + 1])
            if hi == lo or a1 == a0:
                continue
            members = np.asarray(table[lo:hi])
            rows = np.arange(lo, hi)
            for start in range(a0, a1, QUERY_BLOCK):
                ask = probes.askers[start : min(start + QUERY_BLOCK, a1)]
                parts.append(_above(queries[ask] @ members.T, ask, rows, k, threshold))
        return parts

    n_lists = len(list_start) - 1
    chunks = [range(lo, min(lo + 64, n_lists)) for lo in range(0, n_lists, 64)]
    with _one_blas_thread():
        return _concat([p for parts in _parallel(scan, chunks) for p in parts])
