"""Where a run's row-local stages run: in this process (`local`), or over a Ray cluster (`ray`).

An engine maps a row-local step (a picklable callable from a chunk of rows to the same rows
with columns added, see `batchopt.run.row_stages`) over the input; the global steps (grouping, batch
submission and polling, the run state) stay in the driver whatever the engine. The same step
functions run in both, so the local path is never a toy the distributed one replaces.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl

from batchopt.errors import ConfigError

ENGINES = ("local", "ray")
RowStep = Callable[[pl.DataFrame], pl.DataFrame]


class Engine(Protocol):
    """Runs row-local steps over a table."""

    name: str

    def map_rows(self, rows: pl.DataFrame, step: RowStep) -> pl.DataFrame:
        """`step` applied to every chunk of `rows`, the chunks back in their order."""
        ...

    def embed(self, texts: list[str], backend: str = "sentence-transformers",
              model: str | Path | None = None) -> np.ndarray:
        """`texts` embedded with the `dedup.semantic` backend and model (as
        `batchopt.services.embed.load_embedder` loads them): float32, shape (len(texts), dim), unit
        rows in the order of `texts`; the same vectors (np.allclose) whatever the engine."""
        ...

    def close(self) -> None: ...


def get_engine(name: str, address: str | None = None, workers: int | None = None) -> Engine:
    """The engine called `name` ("local" or "ray"; `address` is the Ray cluster's, `workers`
    how many Ray workers, default the cluster's CPUs)."""
    if name == "local":
        from batchopt.engines.local import LocalEngine

        return LocalEngine()
    if name == "ray":
        try:
            from batchopt.engines.ray_engine import RayEngine
        except ImportError as exc:
            raise ray_missing(exc) from exc
        return RayEngine(address, workers=workers)
    raise ConfigError(f"execution.engine: '{name}' is not one of {', '.join(ENGINES)}")


def ray_missing(exc: ImportError) -> ConfigError:
    """The error for `engine: ray` where Ray cannot be imported."""
    return ConfigError(
        f"execution.engine ray: Ray is not installed ({exc}); pip install 'batchopt[ray]'")
