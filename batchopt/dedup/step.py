"""The semantic dedup step as one call: embed the exact representatives (cached by text hash),
find guarded near-duplicates among them, and keep their vectors for the cross-run cache."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from batchopt.dedup.guards import GuardConfig


@dataclass(frozen=True)
class SemanticSettings:
    """The pipeline's `dedup.semantic` block, as plain values."""

    threshold: float = 0.9
    backend: str = "sentence-transformers"
    model: str | None = None
    neighbours: int = 10
    guards: GuardConfig = field(default_factory=GuardConfig)


@dataclass
class SemanticOutcome:
    """Rows with semantic groups, and the vector of every embedded row by its id."""

    rows: pl.DataFrame
    embedder_name: str
    vectors: dict[str, np.ndarray]
    texts: dict[str, str]


def semantic_dedup(
    rows: pl.DataFrame,
    id_column: str,
    text_column: str,
    settings: SemanticSettings,
    cache_dir: Path | None,
) -> SemanticOutcome:
    """Collapse guarded near-duplicates among the exact representatives of `rows`."""
    from batchopt.dedup.embed import EmbeddingCache, load_embedder
    from batchopt.dedup.semantic import semantic_groups

    embedder = load_embedder(settings.backend, settings.model)
    representatives = rows.filter(pl.col("dedup") == "none")
    texts = representatives[text_column].cast(pl.String).fill_null("").to_list()
    ids = representatives[id_column].cast(pl.String).to_list()
    if cache_dir is not None:
        vectors = EmbeddingCache(cache_dir, embedder).embed(texts)
    else:
        vectors = embedder.embed(texts)
    grouped = semantic_groups(
        rows,
        vectors,
        id_column=id_column,
        text_column=text_column,
        threshold=settings.threshold,
        guards=settings.guards,
        k=settings.neighbours,
    )
    return SemanticOutcome(
        rows=grouped,
        embedder_name=embedder.name,
        vectors=dict(zip(ids, vectors, strict=True)),
        texts=dict(zip(ids, texts, strict=True)),
    )


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
