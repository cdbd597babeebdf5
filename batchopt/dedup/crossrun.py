"""The semantic response cache across runs: requests answered in earlier runs of a pipeline.

Each run appends the representatives it paid for (vector, text, row id, run id, request key) as
one shard; a later run looks its new representatives up and reuses an earlier answer when it is
a guarded near-duplicate (same threshold, same guards as within a run). The folder is named
after the embedding model, so vectors of another model are never compared.

The history grows every night, so it is never held whole: a lookup searches one shard at a time
(`crossrun_store`: memory-mapped, pages handed back after each shard), keeping each query's k
best pairs above the threshold across shards, then reads the texts of those candidates only, to
run the guards. Shards of `crossrun_ivf.IVF_MIN_ROWS` rows or more are searched through an
inverted file whose lists were fixed when they were added; smaller ones exactly.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from batchopt.dedup import crossrun_ivf as ivf
from batchopt.dedup.crossrun_store import SUFFIX, UNREADABLE, Shard, list_shards, write_shard
from batchopt.dedup.facts import Facts, GuardConfig, extract
from batchopt.dedup.guards import veto


@dataclass(frozen=True)
class PastAnswer:
    """An earlier run's answered request that a new row may reuse."""

    row_id: str
    run_id: str
    request_key: str
    similarity: float


@dataclass
class _Best:
    """Up to k candidate pairs per query, best first: query, shard number, shard row, sim."""

    query: np.ndarray
    shard: np.ndarray
    row: np.ndarray
    sim: np.ndarray

    @classmethod
    def empty(cls) -> _Best:
        return cls(
            np.empty(0, np.int32),
            np.empty(0, np.int32),
            np.empty(0, np.int64),
            np.empty(0, np.float32),
        )

    def merged(self, found: ivf.Triples, shard: int, k: int) -> _Best:
        """These pairs and the shard's found ones, cut to the k best of every query."""
        q, r, s = found
        query = np.concatenate([self.query, q.astype(np.int32)])
        shards = np.concatenate([self.shard, np.full(len(q), shard, np.int32)])
        row = np.concatenate([self.row, r.astype(np.int64)])
        sim = np.concatenate([self.sim, s.astype(np.float32)])
        order = np.lexsort((-sim, query))  # by query, best first; ties: the earlier shard
        query, shards, row, sim = query[order], shards[order], row[order], sim[order]
        keep = _rank(query) < k
        return _Best(query[keep], shards[keep], row[keep], sim[keep])


def _rank(sorted_ids: np.ndarray) -> np.ndarray:
    """0, 1, 2... within each run of equal ids."""
    return np.arange(len(sorted_ids)) - np.searchsorted(sorted_ids, sorted_ids, side="left")


class AnsweredIndex:
    """Vectors and keys of requests answered in earlier runs, in shards under `folder`."""

    def __init__(self, folder: Path, embedder_name: str) -> None:
        safe = re.sub(r"[^A-Za-z0-9_.@-]+", "_", embedder_name)
        self.folder = folder / safe
        self._known: dict[str, Shard] = {}  # shard headers by file name (shards never change)

    def shards(self) -> list[Shard]:
        return list_shards(self.folder, self._known)

    def __len__(self) -> int:
        return sum(shard.rows for shard in self.shards())

    def lookup(
        self,
        texts: list[str],
        vectors: np.ndarray,
        threshold: float,
        guards: GuardConfig,
        k: int = 5,
    ) -> list[PastAnswer | None]:
        """For each query, the most similar earlier answer that passes the guards, if any:
        the k most similar earlier answers at or above `threshold` are tried, best first."""
        shards = self.shards()
        if not texts or not shards or k < 1:
            return [None] * len(texts)
        queries = np.ascontiguousarray(vectors, dtype=np.float32)
        best = self._search(queries, shards, threshold, k)
        return self._guarded(texts, shards, best, guards, k)

    def _search(self, queries: np.ndarray, shards: list[Shard], threshold: float, k: int) -> _Best:
        quantizer = ivf.load_quantizer(self.folder) if any(s.quantizer for s in shards) else None
        probes: ivf.Probes | None = None
        best = _Best.empty()
        for number, shard in enumerate(shards):
            if shard.dim != queries.shape[1]:
                continue  # written with other vectors: not comparable
            try:
                ivf_shard = quantizer is not None and shard.quantizer == quantizer.id
                lists = shard.list_start() if ivf_shard else None
                with shard.vectors() as table:
                    if lists is not None and quantizer is not None:
                        if probes is None:  # the queries' lists, the same for every IVF shard
                            near = ivf.probe(quantizer.centroids, queries, ivf.NPROBE)
                            probes = ivf.invert(near, len(quantizer.centroids))
                        found = ivf.search_ivf(queries, probes, table, lists, k, threshold)
                    else:
                        found = ivf.search_flat(queries, table, k, threshold)
            except UNREADABLE:
                continue  # damaged since it was listed: its answers are not reused
            best = best.merged(found, number, k)
        return best

    def _guarded(
        self, texts: list[str], shards: list[Shard], best: _Best, guards: GuardConfig, k: int
    ) -> list[PastAnswer | None]:
        """Candidates tried rank by rank, so texts are read only for queries still unanswered;
        a query's first candidate the guards let through is its answer."""
        found: list[PastAnswer | None] = [None] * len(texts)
        facts: dict[int, Facts] = {}
        rank = _rank(best.query)
        for r in range(k):
            pending = np.flatnonzero(rank == r)
            pending = pending[[found[q] is None for q in best.query[pending].tolist()]]
            if not len(pending):
                break
            for number in np.unique(best.shard[pending]).tolist():
                mine = pending[best.shard[pending] == number]
                rows = np.unique(best.row[mine])
                try:
                    records = dict(zip(rows.tolist(), shards[number].records(rows), strict=True))
                except UNREADABLE:
                    continue
                for i in mine.tolist():
                    q = int(best.query[i])
                    if q not in facts:
                        facts[q] = extract(texts[q], guards)
                    record = records[int(best.row[i])]
                    if veto(facts[q], extract(record.text, guards), guards) is None:
                        found[q] = PastAnswer(
                            record.row_id, record.run_id, record.request_key, float(best.sim[i])
                        )
        return found

    def add(
        self,
        row_ids: list[str],
        run_id: str,
        request_keys: list[str],
        texts: list[str],
        vectors: np.ndarray,
    ) -> None:
        """Append answered requests as one shard, written atomically; a large one is stored
        list by list under the folder's quantizer (trained on it if there is none yet)."""
        if not row_ids:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        strings = (list(row_ids), list(request_keys), list(texts))
        list_start, quantizer_id = None, None
        big = len(x) >= ivf.IVF_MIN_ROWS
        quantizer = ivf.quantizer_for(self.folder, x) if big else None
        if quantizer is not None and quantizer.centroids.shape[1] == x.shape[1]:
            order, list_start = ivf.assign(quantizer.centroids, x)
            x, quantizer_id = x[order], quantizer.id
            picked = order.tolist()
            strings = tuple([column[i] for i in picked] for column in strings)
        name = f"part-{run_id}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        write_shard(self.folder, name, x, strings, run_id, list_start, quantizer_id)
