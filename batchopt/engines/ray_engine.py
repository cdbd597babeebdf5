"""The Ray engine: row-local steps run as Ray Data `map_batches` over Arrow blocks.

The driver cuts the rows into Arrow blocks (at least one per worker, at most `chunk_rows` rows
each), Ray Data maps the step over them on its workers (each block back to a polars frame, the
step, and back to Arrow), and the driver reads the blocks back in their order
(`preserve_order`) into one polars frame with the dtypes the step produced, so the answer is the
one `LocalEngine` gives. Embedding runs in an actor pool: each actor loads the model once and
embeds the blocks it is given.

An error a step raises on a worker (an `InputError` naming a row, a `ConfigError`) reaches the
caller as the same exception, with the same one-line message, not as Ray's wrapper; Ray Data's
console log lines are kept off stderr while it runs (they still go to the Ray session's log).
"""

from __future__ import annotations

import base64
import logging
import math
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from batchopt.engines import RowStep
from batchopt.engines.local import CHUNK_ROWS
from batchopt.engines.ray_runtime import ensure_ray

SCHEMA_KEY = b"batchopt.polars_schema"  # the step's polars schema, carried in the block's metadata
EMBED_BLOCK_ROWS = 20_000  # texts per embedding block: several per actor on a big job


class RayEngine:
    """Row-local steps and embedding over Ray: a local Ray started on demand, or the cluster at
    `address`. `workers` (default: the cluster's CPUs) sets how many blocks a table is cut into
    at least, and how many embedding actors run; `chunk_rows` and `embed_rows` cap a block's rows
    for `map_rows` and `embed`."""

    name = "ray"

    def __init__(self, address: str | None = None, *, workers: int | None = None,
                 chunk_rows: int = CHUNK_ROWS, embed_rows: int = EMBED_BLOCK_ROWS) -> None:
        self.address = address
        self.chunk_rows = chunk_rows
        self.embed_rows = embed_rows
        self._workers = workers

    def _ray(self) -> Any:
        return ensure_ray(self.address)

    def workers(self) -> int:
        """How many workers the engine uses (the cluster's CPUs unless given)."""
        if self._workers is None:
            self._workers = max(1, int(self._ray().cluster_resources().get("CPU", 1)))
        return self._workers

    def map_rows(self, rows: pl.DataFrame, step: RowStep) -> pl.DataFrame:
        """`step` applied to every block of `rows` on Ray workers, the blocks back in order."""
        if rows.height == 0:
            return step(rows)
        ray = self._ray()
        table = rows.to_arrow(compat_level=pl.CompatLevel.oldest())
        blocks = _slices(table, self._block_rows(rows.height, self.chunk_rows))
        worker = _ArrowStep(step, rows.schema)
        with _ray_data() as data:
            dataset = data.from_arrow(blocks).map_batches(
                worker, batch_format="pyarrow", batch_size=None, zero_copy_batch=True,
                num_cpus=1,
            )
            tables = _gather(ray, dataset)
        frames = [_to_polars(out) for out in tables]
        return pl.concat(frames, how="vertical", rechunk=True)

    def embed(self, texts: list[str], backend: str = "sentence-transformers",
              model: str | Path | None = None) -> np.ndarray:
        """Embed `texts` with the `dedup.semantic` `backend` and `model` (see
        `batchopt.services.embed.load_embedder`): a float32 array of shape (len(texts), dim), unit
        rows, row i the vector of texts[i] (allclose to `LocalEngine.embed`'s).

        The texts are cut into blocks that an actor pool of `workers()` actors embeds; each
        actor loads the model once. A model that does not load, or a backend that does not
        exist, raises the `ConfigError` the local engine raises."""
        if not texts:
            from batchopt.services.embed import load_embedder

            return load_embedder(backend, model).embed([])
        ray = self._ray()
        workers = self.workers()
        table = pa.table({"text": pa.array(texts, type=pa.large_string())})
        blocks = _slices(table, self._block_rows(len(texts), self.embed_rows))
        with _ray_data() as data:
            dataset = data.from_arrow(blocks).map_batches(
                _EmbedWorker, fn_constructor_args=(backend, None if model is None else str(model)),
                concurrency=min(workers, len(blocks)), batch_format="pyarrow", batch_size=None,
                zero_copy_batch=True, num_cpus=1,
            )
            tables = _gather(ray, dataset)
        parts = [_vectors(out) for out in tables]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def close(self) -> None:
        """Nothing: Ray stays up for the rest of the process (a later stage may need it again;
        a local Ray started here stops when the process exits)."""

    def _block_rows(self, height: int, most: int) -> int:
        """Rows per block: at least one block per worker, at most `most` rows each."""
        return max(1, min(most, math.ceil(height / self.workers())))


class StepFailed(Exception):
    """What a worker raises when the step raised: the original exception, pickled, so the driver
    can raise it again unchanged (Ray wraps what crosses it)."""

    def __init__(self, kind: str, message: str, payload: bytes | None) -> None:
        super().__init__(kind, message, payload)
        self.kind, self.message, self.payload = kind, message, payload

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"

    @classmethod
    def wrap(cls, exc: BaseException) -> StepFailed:
        try:
            payload: bytes | None = pickle.dumps(exc)
            pickle.loads(payload)
        except Exception:  # noqa: BLE001 - an exception that does not travel is named instead
            payload = None
        return cls(f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc), payload)

    def original(self) -> BaseException:
        if self.payload is not None:
            try:
                return pickle.loads(self.payload)
            except Exception:  # noqa: BLE001 - fall back to the name and message
                pass
        return RuntimeError(f"{self.kind}: {self.message}")


class _ArrowStep:
    """A row step as a Ray Data batch function: Arrow in, polars inside, Arrow out (the step's
    polars schema in the block's metadata, so the driver restores the exact dtypes)."""

    def __init__(self, step: RowStep, schema: pl.Schema) -> None:
        self.step = step
        self.schema = dict(schema)

    def __call__(self, table: pa.Table) -> pa.Table:
        try:
            rows = _cast(pl.from_arrow(table), self.schema)
            out = self.step(rows)
        except Exception as exc:  # noqa: BLE001 - every step error goes back to the driver whole
            raise StepFailed.wrap(exc) from None
        return _with_schema(out)


class _EmbedWorker:
    """One embedding actor: loads the model once, then embeds every block it is given. A model
    that fails to load is reported on the first block (as the step error the driver unwraps)."""

    def __init__(self, backend: str, model: str | None) -> None:
        self.error: BaseException | None = None
        self.embedder: Any = None
        try:
            from batchopt.services.embed import load_embedder

            self.embedder = load_embedder(backend, model)
        except Exception as exc:  # noqa: BLE001 - raised with the first block instead
            self.error = exc

    def __call__(self, table: pa.Table) -> pa.Table:
        if self.error is not None:
            raise StepFailed.wrap(self.error) from None
        try:
            vectors = np.ascontiguousarray(
                self.embedder.embed(table.column("text").to_pylist()), dtype=np.float32)
        except Exception as exc:  # noqa: BLE001
            raise StepFailed.wrap(exc) from None
        flat = pa.array(vectors.reshape(-1), type=pa.float32())
        return pa.table({"vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})


def _slices(table: pa.Table, size: int) -> list[pa.Table]:
    return [table.slice(start, size) for start in range(0, table.num_rows, size)]


def _cast(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """`frame` with each column named in `schema` cast back to its polars dtype where Arrow's
    round trip changed it (an Enum read back as Categorical, say)."""
    changed = [pl.col(name).cast(dtype) for name, dtype in schema.items()
               if name in frame.columns and frame.schema[name] != dtype]
    return frame.with_columns(changed) if changed else frame


def _with_schema(frame: pl.DataFrame) -> pa.Table:
    table = frame.to_arrow(compat_level=pl.CompatLevel.oldest())
    meta = dict(table.schema.metadata or {})
    meta[SCHEMA_KEY] = base64.b64encode(pickle.dumps(dict(frame.schema)))  # text: polars reads it
    return table.replace_schema_metadata(meta)


def _to_polars(table: pa.Table) -> pl.DataFrame:
    raw = (table.schema.metadata or {}).get(SCHEMA_KEY)
    if raw:
        table = table.replace_schema_metadata({k: v for k, v in table.schema.metadata.items()
                                                if k != SCHEMA_KEY})
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return _cast(frame, pickle.loads(base64.b64decode(raw))) if raw else frame


def _vectors(table: pa.Table) -> np.ndarray:
    column = table.column("vector").combine_chunks()
    dim = column.type.list_size
    return np.asarray(column.flatten().to_numpy(zero_copy_only=False),
                      dtype=np.float32).reshape(-1, dim)


def _gather(ray: Any, dataset: Any) -> list[pa.Table]:
    """The dataset's blocks, in order, as Arrow tables; a step's error raised as itself."""
    try:
        return list(ray.get(dataset.to_arrow_refs()))
    except Exception as exc:
        failed = _step_failure(exc)
        if failed is None:
            raise
        raise failed.original() from None


def _step_failure(exc: BaseException) -> StepFailed | None:
    """The StepFailed somewhere in `exc`'s chain (Ray's task error, its cause, their causes)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, StepFailed):
            return current
        todo.extend([current.__cause__, current.__context__, getattr(current, "cause", None)])
    return None


@contextmanager
def _ray_data() -> Iterator[Any]:
    """`ray.data` with order preserved, no progress bars, a map error raised as itself (not as
    UserCodeException) and its console log lines silenced;
    the previous settings put back afterwards."""
    import ray.data

    context = ray.data.DataContext.get_current()
    saved = (context.execution_options.preserve_order, context.enable_progress_bars,
             context.raise_original_map_exception)
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    context.raise_original_map_exception = True  # the step's error, not UserCodeException
    # Ray hangs the root logger's handlers on its own loggers too, so one handler can stand on
    # both: quiet each once, or the second save records the quieted level and it stays quiet.
    quieted: dict[logging.Handler, int] = {}
    for name in ("ray.data", "ray"):
        for handler in logging.getLogger(name).handlers:
            if handler not in quieted and isinstance(handler, logging.StreamHandler) and not (
                    isinstance(handler, logging.FileHandler)):  # the console, not a log file
                quieted[handler] = handler.level
                handler.setLevel(logging.CRITICAL + 1)
    try:
        yield ray.data
    finally:
        (context.execution_options.preserve_order, context.enable_progress_bars,
         context.raise_original_map_exception) = saved
        for handler, level in quieted.items():
            handler.setLevel(level)
