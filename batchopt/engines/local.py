"""The local engine: row-local steps run in this process, chunk by chunk."""

from __future__ import annotations

import polars as pl

from batchopt.engines import RowStep

CHUNK_ROWS = 100_000  # rows per step call: big enough for vectorised work, small for memory


class LocalEngine:
    name = "local"

    def __init__(self, chunk_rows: int = CHUNK_ROWS) -> None:
        self.chunk_rows = chunk_rows

    def map_rows(self, rows: pl.DataFrame, step: RowStep) -> pl.DataFrame:
        if rows.height <= self.chunk_rows:
            return step(rows)
        return pl.concat([step(chunk) for chunk in rows.iter_slices(self.chunk_rows)],
                         how="vertical", rechunk=True)

    def close(self) -> None:
        pass
