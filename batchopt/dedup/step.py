"""The semantic dedup step as one call: embed the exact representatives (cached by text hash),
find guarded near-duplicates among them, and keep their vectors for the cross-run cache."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import polars as pl

from batchopt.dedup.guards import GuardConfig
from batchopt.services.mapped import gather_rows

log = logging.getLogger(__name__)
EMBED_CHUNK = 262_144  # texts embedded (and their vectors written to disk) at a time
EmbedCall = Callable[[list[str], str, "str | None"], np.ndarray]
"""`Engine.embed`'s signature: (texts, backend, model) -> float32 (len(texts), dim) unit rows."""


@dataclass(frozen=True)
class SemanticSettings:
    """The pipeline's `dedup.semantic` block, as plain values."""

    threshold: float = 0.9
    backend: str = "sentence-transformers"
    model: str | None = None
    neighbours: int = 10
    guards: GuardConfig = field(default_factory=GuardConfig)
    # columns two rows must agree on to merge: those a tier's own template reads and the
    # embedded text does not show (batchopt.run.tiers.tier_extra_columns)
    same_columns: tuple[str, ...] = ()


class _RowIndex:
    """Row ids -> their position, for ids given as a polars Series: batch lookups by a join,
    single lookups through a dict built on the first one (only callers that ask one id at a
    time pay for it)."""

    def __init__(self, ids: pl.Series) -> None:
        self.ids = ids.cast(pl.String).rename("id")
        self._dict: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, key: object) -> int | None:
        if self._dict is None:
            self._dict = {k: i for i, k in enumerate(self.ids.to_list())}
        return self._dict.get(key) if isinstance(key, str) else None

    def rows(self, ids: Iterable[str]) -> np.ndarray:
        """Positions of `ids` (int64; -1 for an id not indexed)."""
        query = pl.DataFrame({"id": pl.Series(list(ids), dtype=pl.String)})
        if self._dict is not None:
            return np.fromiter((self._dict.get(i, -1) for i in query["id"]), np.int64, query.height)
        table = pl.DataFrame({"id": self.ids, "row": pl.int_range(len(self.ids), eager=True)})
        table = table.unique("id", keep="last", maintain_order=True)  # as a dict would
        found = query.join(table, on="id", how="left", maintain_order="left")
        return found["row"].fill_null(-1).to_numpy().astype(np.int64)


T = TypeVar("T")


class _ByRowId(Mapping[str, T]):
    """A read-only mapping from embedded row ids to values kept by row position."""

    def __init__(self, index: _RowIndex) -> None:
        self._index = index

    def _row(self, key: str) -> int:
        row = self._index.get(key)
        if row is None:
            raise KeyError(key)
        return row

    def _rows(self, ids: Iterable[str], what: str) -> np.ndarray:
        rows = self._index.rows(ids)
        if (rows < 0).any():
            raise KeyError(f"{int((rows < 0).sum())} ids have no {what}")
        return rows

    def __contains__(self, key: object) -> bool:
        return self._index.get(key) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._index.ids)

    def __len__(self) -> int:
        return len(self._index)


class RowVectors(_ByRowId[np.ndarray]):
    """The vector of every embedded row by its id: one (rows, dim) float32 array and an index
    (a dict of per-row views cost about 150 bytes a row on top of the array)."""

    def __init__(self, index: _RowIndex, array: np.ndarray) -> None:
        super().__init__(index)
        self.array = array

    def __getitem__(self, key: str) -> np.ndarray:
        return self.array[self._row(key)]

    def take(self, ids: Iterable[str]) -> np.ndarray:
        """The vectors of `ids`, stacked (float32, (len(ids), dim)); KeyError for an unknown id."""
        return gather_rows(self.array, self._rows(ids, "vector"))


class RowTexts(_ByRowId[str]):
    """The embedded text of every embedded row by its id, read from the outcome's rows (no
    second copy of the texts)."""

    def __init__(self, index: _RowIndex, texts: pl.Series, positions: np.ndarray) -> None:
        super().__init__(index)
        self._texts, self._positions = texts, positions

    def __getitem__(self, key: str) -> str:
        return self._texts[int(self._positions[self._row(key)])] or ""

    def take(self, ids: Iterable[str]) -> list[str]:
        """The texts of `ids`, in order; KeyError for an unknown id."""
        rows = self._rows(ids, "text")
        return self._texts.gather(self._positions[rows]).fill_null("").to_list()


@dataclass
class SemanticOutcome:
    """Rows with semantic groups, and the vector and text of every embedded row by its id.

    `vectors` and `texts` are read-only mappings over one array and the rows' own text column
    (`RowVectors`, `RowTexts`); their `take(ids)` looks many ids up at once."""

    rows: pl.DataFrame
    embedder_name: str
    vectors: RowVectors
    texts: RowTexts


def semantic_dedup(
    rows: pl.DataFrame,
    id_column: str,
    text_column: str,
    settings: SemanticSettings,
    cache_dir: Path | None,
    embed: EmbedCall | None = None,
) -> SemanticOutcome:
    """Collapse guarded near-duplicates among the exact representatives of `rows`.

    `embed` (optional) computes vectors instead of an embedder loaded in this process, called
    as `embed(texts, settings.backend, settings.model)`: `Engine.embed` fits (pass
    `engine.embed`). With `cache_dir`, only texts missing from the embedding cache reach it.
    """
    from batchopt.dedup.semantic import semantic_groups
    from batchopt.services.embed import EmbeddingCache, engine_embedder, load_embedder

    if embed is None:
        embedder = load_embedder(settings.backend, settings.model)
    else:
        embedder = engine_embedder(embed, settings.backend, settings.model)
    positions = np.flatnonzero((rows["dedup"] == "none").to_numpy())  # as semantic_groups
    column = rows[text_column].cast(pl.String)
    if cache_dir is not None:
        cache = EmbeddingCache(cache_dir, embedder)
        vectors = _spill(
            (cache.embed(column.gather(part).fill_null("").to_list()) for part in
             (positions[i : i + EMBED_CHUNK] for i in range(0, len(positions), EMBED_CHUNK))),
            cache_dir,
        )
    else:
        vectors = embedder.embed(column.gather(positions).fill_null("").to_list())
    del column
    grouped = semantic_groups(
        rows,
        vectors,
        id_column=id_column,
        text_column=text_column,
        threshold=settings.threshold,
        guards=settings.guards,
        k=settings.neighbours,
        same_columns=settings.same_columns,
    )
    index = _RowIndex(grouped[id_column].gather(positions))
    return SemanticOutcome(
        rows=grouped,
        embedder_name=embedder.name,
        vectors=RowVectors(index, vectors),
        texts=RowTexts(index, grouped[text_column].cast(pl.String), positions),
    )


def _spill(chunks: Iterable[np.ndarray], folder: Path) -> np.ndarray:
    """The vectors of `chunks` (consecutive row blocks) memory-mapped from a file in `folder`
    (unlinked at once: the mapping stays, nothing is left on disk). Each chunk is written as it
    comes, so one at a time is in RAM, and pages are read back only when touched; the search
    drops its pages once done (`dedup.mapped`). If the file cannot be written, the
    vectors are kept in memory."""
    parts = iter(chunks)
    done, dim, current, path = 0, 0, None, None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix=".vectors-", suffix=".f32", dir=folder)
        with os.fdopen(fd, "wb") as handle:
            for current in parts:
                block = np.ascontiguousarray(current, dtype=np.float32)
                dim = block.shape[1]
                block.tofile(handle)
                done, current = done + len(block), None
        if not done:
            return np.zeros((0, dim), np.float32)
        return np.memmap(path, dtype=np.float32, mode="r", shape=(done, dim))
    except (OSError, ValueError) as exc:
        log.warning("semantic dedup: keeping the vectors in memory (%s)", exc)
        kept = [np.fromfile(path, np.float32, count=done * dim).reshape(done, dim)] if done else []
        blocks = [*kept, *([current] if current is not None else []), *parts]
        return np.concatenate(blocks) if blocks else np.zeros((0, dim), np.float32)
    finally:
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)


GROUP_COLUMNS = ["group_id", "representative_id", "dedup", "similarity", "veto_guard", "veto_id"]


def dedup_table(
    rows: pl.DataFrame,
    id_column: str,
    text_column: str,
    settings: SemanticSettings | None,
    cache_dir: Path | None = None,
    ignore_case: bool = False,
) -> pl.DataFrame:
    """Exact then (unless `settings` is None) semantic dedup of one text column:
    `id, group_id, representative_id, dedup, similarity, veto_guard, veto_id`."""
    from batchopt.dedup.exact import exact_groups

    grouped = exact_groups(rows, id_column, text_column, ignore_case=ignore_case)
    if settings is None:
        grouped = grouped.with_columns(
            pl.lit(None, dtype=pl.String).alias("veto_guard"),
            pl.lit(None, dtype=pl.String).alias("veto_id"),
        )
    else:
        grouped = semantic_dedup(grouped, id_column, text_column, settings, cache_dir).rows
    return grouped.select(pl.col(id_column).cast(pl.String).alias("id"), *GROUP_COLUMNS)
