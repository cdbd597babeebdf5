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


KEY_CHUNK = 100_000  # rows whose texts are Python strings at once (not the whole column)


def _keys(values: pl.Series, enabled: bool, ignore_case: bool) -> pl.Series:
    """The dedup key of each value: its normalised text's hash, or (dedup off) its row id's."""
    if enabled:
        keys = [stable_hash(normalise(text, ignore_case)) for text in values.to_list()]
    else:
        keys = [stable_hash(str(row_id)) for row_id in values.to_list()]
    return pl.Series("group_id", keys, dtype=pl.String)


def exact_groups(
    frame: pl.DataFrame,
    id_column: str,
    text_column: str,
    *,
    enabled: bool = True,
    ignore_case: bool = False,
) -> pl.DataFrame:
    """Add `group_id` (the dedup key: the hash of the normalised text), `representative_id`,
    `dedup` and `similarity` columns.

    The representative of a group is its first row in input order; every other member is marked
    `dedup = "exact"`. With `enabled=False` every row is its own group.
    """
    source = frame[text_column] if enabled else frame[id_column]
    keys = pl.concat(
        [_keys(source.slice(start, KEY_CHUNK), enabled, ignore_case)
         for start in range(0, frame.height, KEY_CHUNK)],
        rechunk=True,
    ) if frame.height else pl.Series("group_id", [], dtype=pl.String)
    ids = frame[id_column].cast(pl.String)
    keyed = frame.with_columns(keys.alias("group_id"), ids.alias("__id"))
    first = pl.col("__id").first().over("group_id")
    return keyed.with_columns(
        first.alias("representative_id"),
        pl.when(pl.col("__id") == first)
        .then(pl.lit("none"))
        .otherwise(pl.lit("exact"))
        .alias("dedup"),
        pl.lit(None, dtype=pl.Float64).alias("similarity"),
    ).drop("__id")
