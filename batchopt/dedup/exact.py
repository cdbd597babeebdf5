"""Exact dedup: rows whose normalised rendered request is identical share one call.

Normalisation is Unicode NFKC (full-width letters, ligatures, non-breaking spaces fold to their
plain forms), whitespace runs collapsed to one space and trimmed, and, only where the pipeline
allows it, case folding. Anything else (a digit, a word) keeps rows apart.

The key is what is sent: the default rendering of the user prompt and, when a tier the run may
send to has its own prompt variant (a profile `template`), that variant's rendering too (the
runner passes them as `key_columns`). Two rows share an answer only when every tier would send
them the same request. A tier's system text, context and examples are static (the same for
every row), so they are not part of the key.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import polars as pl

from batchopt.hashing import stable_hash

_WHITESPACE = re.compile(r"\s+")


def normalise(text: str, ignore_case: bool = False) -> str:
    """The form two requests must share to be treated as one."""
    folded = unicodedata.normalize("NFKC", text)
    folded = _WHITESPACE.sub(" ", folded).strip()
    return folded.casefold() if ignore_case else folded


KEY_CHUNK = 100_000  # rows whose texts are Python strings at once (not the whole column)


def _keys(
    values: pl.Series, enabled: bool, ignore_case: bool, extra: list[pl.Series] | None = None
) -> pl.Series:
    """The dedup key of each value: its normalised text's hash, or (dedup off) its row id's.
    With `extra` texts (each tier variant's rendering), the hash of every normalised text, each
    prefixed by its length (so no two tuples of texts give the same string)."""
    if not enabled:
        keys = [stable_hash(str(row_id)) for row_id in values.to_list()]
    elif not extra:
        keys = [stable_hash(normalise(text, ignore_case)) for text in values.to_list()]
    else:
        keys = []
        for texts in zip(values.to_list(), *(s.to_list() for s in extra), strict=True):
            parts = [normalise(text or "", ignore_case) for text in texts]
            keys.append(stable_hash("".join(f"{len(part)}:{part}" for part in parts)))
    return pl.Series("group_id", keys, dtype=pl.String)


def exact_groups(
    frame: pl.DataFrame,
    id_column: str,
    text_column: str,
    *,
    enabled: bool = True,
    ignore_case: bool = False,
    key_columns: Sequence[str] = (),
) -> pl.DataFrame:
    """Add `group_id` (the dedup key: the hash of the normalised text), `representative_id`,
    `dedup` and `similarity` columns.

    `key_columns`: more rendered texts the key covers (each tier's own prompt variant): rows
    are one group only when `text_column` and every one of them are equal once normalised.

    The representative of a group is its first row in input order; every other member is marked
    `dedup = "exact"`. With `enabled=False` every row is its own group.
    """
    source = frame[text_column] if enabled else frame[id_column]
    extra = [frame[c] for c in key_columns] if enabled else []
    keys = pl.concat(
        [_keys(source.slice(start, KEY_CHUNK), enabled, ignore_case,
               [s.slice(start, KEY_CHUNK) for s in extra])
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
