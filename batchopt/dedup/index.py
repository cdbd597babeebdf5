"""Nearest neighbours above a similarity threshold, for every row of a set of unit vectors.

Up to `FLAT_MAX_ROWS` rows the search is exact: blocks of rows against all rows, one matrix
product each. Above it, an inverted file (IVF) scanned list by list: two-level spherical
k-means (faiss) splits the vectors into about n / `LIST_SIZE` lists, every row probes its
`NPROBE` nearest lists, and for each list one matrix product compares every row that probes it
with every vector stored in it. Found pairs are made symmetric (kept if either side probed the
other's list), filtered by the threshold and cut to the k best ("k nearest, then threshold").

Measured on 2 shared cores (AVX2), one BLAS thread, clustered synthetic vectors whose rows have
about 3 neighbours at cosine >= 0.9 (recall = share of the exact top-10 pairs >= 0.9 found):
flat 5k x 384 0.41 s, 10k 1.4 s, 20k 6.2 s (n^2); IVF 20k 0.30 s (recall 0.95), 100k 1.9 s
(0.963), 1M x 384 26 s (0.982). NPROBE 3 or a 128-point training sample per list buy about
+0.01 recall for +10-25 % time; LIST_SIZE 512 is slower and worse. faiss's own IndexIVFFlat at
1M x 384 needed 90 s to train and fill 4,096 lists and 49 s (nprobe 1) to 81 s (nprobe 4) to
search every row, as it scans each query's lists one query at a time; the same lists scanned as
matrix products run at BLAS speed. Two-level k-means keeps the cost of assigning rows to lists
at O(n * (TOP_LISTS + TOP_PROBE * lists per top list)) instead of O(n * lists).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import numpy as np

T = TypeVar("T")
R = TypeVar("R")

FLAT_MAX_ROWS = 5_000  # exact up to here: n^2 * dim work, 0.4 s at 5k x 384, 1.4 s at 10k
LIST_SIZE = 256  # mean vectors per inverted list
TOP_LISTS = 64  # first-level k-means clusters; lists are second-level clusters inside them
TOP_PROBE = 4  # first-level clusters a row looks into when choosing its lists
NPROBE = 2  # lists a row is compared against
TRAIN_PER_LIST = 64  # k-means training sample per list
BLOCK = 2048  # rows per matrix product
_BEST_BLOCK = 4_000_000  # pair entries sorted at once when cutting to the k best
SEED = 1234
THREADS = min(8, os.cpu_count() or 1)  # Python threads over independent blocks and lists


def index_kind(n: int) -> str:
    """ "flat" (exact) or "ivf" (approximate): the search `neighbours` uses for n rows."""
    return "flat" if n <= FLAT_MAX_ROWS else "ivf"


def neighbours(vectors: np.ndarray, k: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """For every row, up to k most similar OTHER rows with inner product >= threshold.

    `vectors` are L2-normalised rows (float32, shape (n, dim)). Returns `ids` (int32, (n, k),
    best first, -1 where there are fewer than k) and `sims` (float32, (n, k), 0 where ids is -1).
    Exact up to `FLAT_MAX_ROWS` rows, approximate (IVF) above.
    """
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"vectors must be 2-D (rows, dim), got shape {x.shape}")
    n = len(x)
    k = max(0, int(k))
    if n < 2 or k == 0:
        return np.full((n, k), -1, np.int32), np.zeros((n, k), np.float32)
    if n >= 2**31 - 1:
        raise ValueError(f"{n} rows: the index keeps row ids as int32")
    with _one_blas_thread():
        if index_kind(n) == "flat":
            return _best_k(*_flat_pairs(x, k, threshold), n, k, symmetric=False)
        return _best_k(*_ivf_pairs(x, k, threshold), n, k, symmetric=True)


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """BLAS and OpenMP single-threaded inside; parallelism comes from `_parallel` instead.

    Measured at 1M x 384 on 2 shared cores: numpy's and faiss's thread pools spin-wait on each
    other (and on any other busy process), so list assignment took 24-30 s with two BLAS
    threads and 6.5 s with one; independent blocks on Python threads degrade gracefully.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # comes with scikit-learn (sentence-transformers); without it, as is
        yield
        return
    with threadpool_limits(limits=1):
        yield


def _parallel(work: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """`work` over `items` on up to THREADS threads (numpy and faiss release the GIL)."""
    if THREADS <= 1 or len(items) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return list(pool.map(work, items))


def _flat_pairs(x: np.ndarray, k: int, threshold: float) -> tuple[np.ndarray, ...]:
    def block(start: int) -> tuple[np.ndarray, ...]:
        sims = x[start : start + BLOCK] @ x.T
        rows = np.arange(len(sims))
        sims[rows, rows + start] = -np.inf  # not its own neighbour
        return _above(sims, np.arange(start, start + len(sims)), None, k, threshold)

    return _concat(_parallel(block, range(0, len(x), BLOCK)))


def _above(
    sims: np.ndarray, query_ids: np.ndarray, member_ids: np.ndarray | None, k: int, threshold: float
) -> tuple[np.ndarray, ...]:
    """(query id, member id, sim) for entries >= threshold, at most k per query row."""
    mask = sims >= threshold
    counts = mask.sum(axis=1)
    crowded = counts > k
    if crowded.any():  # near-identical rows: keep the k best, not every pair
        rows = np.flatnonzero(crowded)
        top = np.argpartition(-sims[rows], k - 1, axis=1)[:, :k]
        mask[rows] = False
        mask[rows[:, None], top] = sims[rows[:, None], top] >= threshold
    r, c = np.nonzero(mask)
    members = c if member_ids is None else member_ids[c]
    return query_ids[r].astype(np.int32), members.astype(np.int32), sims[r, c]


def _concat(parts: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    if not parts:
        return np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0, np.float32)
    out = []
    for i in range(3):  # one column at a time, each part's copy freed as soon as it is joined
        out.append(np.concatenate([p[i] for p in parts]))
        for j, p in enumerate(parts):
            parts[j] = (*p[:i], None, *p[i + 1 :])  # type: ignore[assignment]
    return tuple(out)


def _best_k(
    q: np.ndarray, m: np.ndarray, s: np.ndarray, n: int, k: int, symmetric: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The k best members of every query row, best first (ties by member id), as (n, k) tables.

    With `symmetric`, every found pair (q, m, s) also counts as (m, q, s); a pair found from
    both sides keeps the similarity its own query row computed (the first copy in the order
    "found pairs, then their mirrors"). Rows are handled in blocks of about `_BEST_BLOCK`
    entries, so the sorts never hold more than one block.
    """
    ids = np.full((n, k), -1, np.int32)
    sims = np.zeros((n, k), np.float32)
    if not len(q):
        return ids, sims
    # entries per row, both directions: the blocks of rows are cut where these add up
    per_row = np.bincount(q, minlength=n)
    if symmetric:
        per_row += np.bincount(m, minlength=n)
    bounds = np.searchsorted(np.cumsum(per_row), np.arange(_BEST_BLOCK, per_row.sum(), _BEST_BLOCK))
    del per_row
    starts = np.unique(np.concatenate([[0], bounds + 1]))
    starts = starts[starts < n]
    for lo, hi in zip(starts.tolist(), [*starts[1:].tolist(), n], strict=True):
        mine = np.flatnonzero((q >= lo) & (q < hi))
        rq, rm, rs = q[mine], m[mine], s[mine]
        if symmetric:
            back = np.flatnonzero((m >= lo) & (m < hi))
            rq, rm, rs = (
                np.concatenate([rq, m[back]]), np.concatenate([rm, q[back]]),
                np.concatenate([rs, s[back]]),
            )  # fmt: skip
            del back
        del mine
        keep = rq != rm
        rq, rm, rs = rq[keep], rm[keep], rs[keep]
        # a pair found from both sides is kept once: its first copy
        key = (rq.astype(np.int64) - lo) * n + rm
        order = np.argsort(key, kind="stable")
        key = key[order]
        first = np.ones(len(key), bool)
        np.not_equal(key[1:], key[:-1], out=first[1:])
        order = order[first]
        del key, first
        rq, rm, rs = rq[order], rm[order], rs[order]
        # by row, then best first (ties by member id, already ascending): one stable float sort
        order = np.argsort((rq - lo) + (1.0 - rs.astype(np.float64)) / 8.0, kind="stable")
        rq, rm, rs = rq[order], rm[order], rs[order]
        del order
        rank = np.arange(len(rq)) - np.searchsorted(rq, rq, side="left")
        keep = rank < k
        ids[rq[keep], rank[keep]] = rm[keep]
        sims[rq[keep], rank[keep]] = rs[keep]
    return ids, sims


def kmeans(x: np.ndarray, n_clusters: int) -> np.ndarray:
    """Spherical k-means centroids of the unit rows `x` (faiss, 10 iterations, fixed seed)."""
    import faiss

    if len(x) <= n_clusters:
        return x.copy()
    km = faiss.Kmeans(
        x.shape[1], n_clusters, niter=10, spherical=True, seed=SEED,
        max_points_per_centroid=1 << 30, min_points_per_centroid=1,
    )  # fmt: skip
    km.train(x)
    return km.centroids


def _top(scores: np.ndarray, p: int) -> np.ndarray:
    """Column indices of the p largest entries of every row, best first."""
    if scores.shape[1] <= p:
        return np.argsort(-scores, axis=1)
    if p <= 4:  # p passes of argmax beat argpartition's per-row cost by far
        scores = scores.copy()
        rows = np.arange(len(scores))
        best = np.empty((len(scores), p), np.int64)
        for i in range(p):
            best[:, i] = scores.argmax(axis=1)
            scores[rows, best[:, i]] = -np.inf
        return best
    part = np.argpartition(-scores, p - 1, axis=1)[:, :p]
    return np.take_along_axis(part, np.argsort(-np.take_along_axis(scores, part, 1), 1), 1)


def _train(x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """First-level centroids and, for each, the centroids of its lists."""
    n = len(x)
    n_lists = max(1, n // LIST_SIZE)
    rng = np.random.default_rng(SEED)
    sample = x[np.sort(rng.choice(n, min(n, n_lists * TRAIN_PER_LIST), replace=False))]
    top = kmeans(sample, min(TOP_LISTS, max(1, n_lists // 4)))
    owner = _top(sample @ top.T, 1)[:, 0]

    def second_level(j: int) -> np.ndarray:
        members = sample[owner == j]
        share = max(1, round(n_lists * len(members) / len(sample)))
        return kmeans(members, share) if len(members) else top[j : j + 1].copy()

    return top, _parallel(second_level, range(len(top)))


def _probe(x: np.ndarray, top: np.ndarray, lists: list[np.ndarray]) -> np.ndarray:
    """The NPROBE nearest lists of every row (global list numbers), nearest first."""
    base = np.cumsum([0] + [len(c) for c in lists])[:-1]
    n_top = min(TOP_PROBE, len(top))
    nprobe = min(NPROBE, int(sum(len(c) for c in lists)))
    out = np.empty((len(x), nprobe), np.int64)

    def block_lists(start: int) -> None:
        block = x[start : start + 8 * BLOCK]
        tops = _top(block @ top.T, n_top)
        # per first-level cluster, the nprobe best of its lists; then the best of those
        found = np.zeros((len(block), n_top, nprobe), np.int64)
        scores = np.full((len(block), n_top, nprobe), -np.inf, np.float32)
        for j, centroids in enumerate(lists):
            rows, slot = np.nonzero(tops == j)
            if not len(rows):
                continue
            sims = block[rows] @ centroids.T
            best = _top(sims, nprobe)
            width = best.shape[1]
            found[rows, slot, :width] = base[j] + best
            scores[rows, slot, :width] = np.take_along_axis(sims, best, 1)
        best = _top(scores.reshape(len(block), -1), nprobe)
        out[start : start + len(block)] = np.take_along_axis(found.reshape(len(block), -1), best, 1)

    _parallel(block_lists, range(0, len(x), 8 * BLOCK))
    return out


def _ivf_pairs(x: np.ndarray, k: int, threshold: float) -> tuple[np.ndarray, ...]:
    top, lists = _train(x)
    probes = _probe(x, top, lists)
    n_lists = sum(len(c) for c in lists)
    nprobe = probes.shape[1]
    home = probes[:, 0]  # each vector is stored in its nearest list
    stored = np.argsort(home, kind="stable").astype(np.int32)
    stored_start = np.searchsorted(home[stored], np.arange(n_lists + 1))
    flat_lists = probes.ravel()
    del probes, home
    by_list = np.argsort(flat_lists, kind="stable")
    ask_start = np.searchsorted(flat_lists[by_list], np.arange(n_lists + 1))
    askers = (by_list // nprobe).astype(np.int32)
    del by_list, flat_lists

    def scan(chunk: range) -> list[tuple[np.ndarray, ...]]:
        parts = []
        for lst in chunk:
            lo, hi = stored_start[lst], stored_start[lst + 1]
            if hi == lo:
                continue
            member_ids = stored[lo:hi]
            members = x[member_ids]  # one list's vectors, not a reordered copy of all of them
            queries = askers[ask_start[lst] : ask_start[lst + 1]]
            for start in range(0, len(queries), BLOCK):
                rows = queries[start : start + BLOCK]
                parts.append(_above(x[rows] @ members.T, rows, member_ids, k + 1, threshold))
        return parts

    chunks = [range(lo, min(lo + 64, n_lists)) for lo in range(0, n_lists, 64)]
    return _concat([part for parts in _parallel(scan, chunks) for part in parts])
