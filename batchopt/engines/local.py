"""The local engine: row-local steps run in this process, chunk by chunk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from batchopt.engines import RowStep

CHUNK_ROWS = 100_000  # rows per step call: big enough for vectorised work, small for memory


class LocalEngine:
    name = "local"

    def __init__(self, chunk_rows: int = CHUNK_ROWS) -> None:
        self.chunk_rows = chunk_rows
        self._embedders: dict[tuple[str, str | None], Any] = {}

    def map_rows(self, rows: pl.DataFrame, step: RowStep) -> pl.DataFrame:
        if rows.height <= self.chunk_rows:
            return step(rows)
        return pl.concat([step(chunk) for chunk in rows.iter_slices(self.chunk_rows)],
                         how="vertical", rechunk=True)

    def embed(self, texts: list[str], backend: str = "sentence-transformers",
              model: str | Path | None = None) -> np.ndarray:
        """Embed `texts` in this process with the `dedup.semantic` `backend` and `model` (see
        `batchopt.services.embed.load_embedder`; the model is loaded once per engine): a float32
        array of shape (len(texts), dim), unit rows, row i the vector of texts[i]."""
        key = (backend, None if model is None else str(model))
        if key not in self._embedders:
            from batchopt.services.embed import load_embedder

            self._embedders[key] = load_embedder(backend, model)
        return self._embedders[key].embed(list(texts))

    def close(self) -> None:
        self._embedders.clear()
