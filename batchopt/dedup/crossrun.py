"""The semantic response cache across runs: requests answered in earlier runs of a pipeline.

Each run appends the representatives it paid for (vector, text, row id, run id, request key) as
one shard; a later run looks its new representatives up and reuses an earlier answer when it is
a guarded near-duplicate (same threshold, same guards as within a run). The folder is named
after the embedding model, so vectors of another model are never compared.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from batchopt.dedup.guards import GuardConfig, extract, veto


@dataclass(frozen=True)
class PastAnswer:
    """An earlier run's answered request that a new row may reuse."""

    row_id: str
    run_id: str
    request_key: str
    similarity: float


class AnsweredIndex:
    """Vectors and keys of requests answered in earlier runs, in shards under `folder`."""

    def __init__(self, folder: Path, embedder_name: str) -> None:
        safe = re.sub(r"[^A-Za-z0-9_.@-]+", "_", embedder_name)
        self.folder = folder / safe
        self._vectors: np.ndarray | None = None
        self._meta: dict[str, list[str]] = {}

    def _load(self) -> None:
        if self._vectors is not None:
            return
        vectors, meta = [], {"row_id": [], "run_id": [], "request_key": [], "text": []}
        for shard in sorted(self.folder.glob("part-*.npz")):
            try:
                with np.load(shard, allow_pickle=False) as data:
                    vectors.append(data["vectors"].astype(np.float32, copy=False))
                    for name in meta:
                        meta[name].extend(str(v) for v in data[name])
            except (OSError, ValueError, KeyError):
                continue  # a shard cut short by a crash: its answers are simply not reused
        self._vectors = np.vstack(vectors) if vectors else np.zeros((0, 0), dtype=np.float32)
        self._meta = meta

    def __len__(self) -> int:
        self._load()
        assert self._vectors is not None
        return int(self._vectors.shape[0])

    def lookup(
        self,
        texts: list[str],
        vectors: np.ndarray,
        threshold: float,
        guards: GuardConfig,
        k: int = 5,
    ) -> list[PastAnswer | None]:
        """For each query, the most similar earlier answer that passes the guards, if any."""
        self._load()
        found: list[PastAnswer | None] = [None] * len(texts)
        if not len(self) or not texts:
            return found
        import faiss

        assert self._vectors is not None
        index = faiss.IndexFlatIP(self._vectors.shape[1])
        index.add(self._vectors)
        sims, ids = index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
        for row, text in enumerate(texts):
            facts = None
            for sim, j in zip(sims[row], ids[row], strict=True):
                if j < 0 or sim < threshold:
                    break
                facts = facts or extract(text, guards)
                if veto(facts, extract(self._meta["text"][j], guards), guards) is None:
                    found[row] = PastAnswer(
                        row_id=self._meta["row_id"][j],
                        run_id=self._meta["run_id"][j],
                        request_key=self._meta["request_key"][j],
                        similarity=float(sim),
                    )
                    break
        return found

    def add(
        self,
        row_ids: list[str],
        run_id: str,
        request_keys: list[str],
        texts: list[str],
        vectors: np.ndarray,
    ) -> None:
        """Append answered requests as one shard, written atomically."""
        if not row_ids:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{run_id}-{uuid.uuid4().hex[:8]}.npz"
        fd, tmp = tempfile.mkstemp(prefix=".part-", suffix=".npz", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(
                    handle,
                    vectors=np.ascontiguousarray(vectors, dtype=np.float32),
                    row_id=np.array(row_ids, dtype=str),
                    run_id=np.array([run_id] * len(row_ids), dtype=str),
                    request_key=np.array(request_keys, dtype=str),
                    text=np.array(texts, dtype=str),
                )
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.folder / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._vectors = None  # reload on next use
