"""Exact dedup: rows whose normalised rendered request is identical share one call.

Normalisation is Unicode NFKC (full-width letters, ligatures, non-breaking spaces fold to their
plain forms), whitespace runs collapsed to one space and trimmed, and, only where the pipeline
allows it, case folding. Anything else (a digit, a word) keeps rows apart.
"""

from __future__ import annotations

import re
import unicodedata

import polars as pl

from batchopt.hashing import stable_hash

_WHITESPACE = re.compile(r"\s+")


def normalise(text: str, ignore_case: bool = False) -> str:
    """The form two requests must share to be treated as one."""
    folded = unicodedata.normalize("NFKC", text)
    folded = _WHITESPACE.sub(" ", folded).strip()
    return folded.casefold() if ignore_case else folded


def exact_groups(
    frame: pl.DataFrame,
    id_column: str,
    text_column: str,
    *,
    enabled: bool = True,
    ignore_case: bool = False,
) -> pl.DataFrame:
    """Add `dedup_key`, `group_id`, `representative_id`, `dedup` and `similarity` columns.

    The representative of a group is its first row in input order; every other member is marked
    `dedup = "exact"`. With `enabled=False` every row is its own group.
    """
    texts = frame[text_column].to_list()
    row_ids = frame[id_column].to_list()
    keys = [
        stable_hash(normalise(text, ignore_case)) if enabled else stable_hash(str(row_id))
        for text, row_id in zip(texts, row_ids, strict=True)
    ]
    ids = frame[id_column].cast(pl.String)
    keyed = frame.with_columns(pl.Series("dedup_key", keys, dtype=pl.String), ids.alias("__id"))
    first = pl.col("__id").first().over("dedup_key")
    return keyed.with_columns(
        pl.col("dedup_key").alias("group_id"),
        first.alias("representative_id"),
        pl.when(pl.col("__id") == first)
        .then(pl.lit("none"))
        .otherwise(pl.lit("exact"))
        .alias("dedup"),
        pl.lit(None, dtype=pl.Float64).alias("similarity"),
    ).drop("__id")
