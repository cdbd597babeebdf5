"""The `calls` table beside each run's ledger part: one row per call the run id sent (see
`batchopt.run.calls`), `<root>/pipeline=<p>/run_id=<id>/calls.parquet`, and its DuckDB view."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl

from batchopt.io.writer import ParquetParts

CALLS_FILE = "calls.parquet"
CALLS_SCHEMA: dict[str, pl.DataType] = {
    "call_id": pl.Int64(),  # the order the run's state recorded it in
    "group_id": pl.String(),  # the ledger group that asked it (its representative row)
    "key": pl.String(),  # the request key (response cache key)
    "tier": pl.String(),
    "provider": pl.String(),
    "model": pl.String(),
    "kind": pl.String(),  # first | escalation | judge | retry
    "mode": pl.String(),  # online | batch
    "status": pl.String(),  # confirmed | sent_unconfirmed | not_billed
    "input_tokens": pl.Int64(),
    "cached_input_tokens": pl.Int64(),
    "cache_write_tokens": pl.Int64(),
    "output_tokens": pl.Int64(),
    "cost_usd": pl.Float64(),  # billed (confirmed calls), priced once
    "estimated_usd": pl.Float64(),  # the estimate journaled before sending (online calls)
    "request_id": pl.String(),
    "batch_id": pl.String(),
    "sent_at": pl.Float64(),  # Unix seconds
    "answered_at": pl.Float64(),
}


def write_calls(frame: pl.DataFrame, folder: Path) -> Path:
    """Write a run's calls table into its ledger folder (`folder`: the part's), atomically."""
    with ParquetParts(Path(folder) / CALLS_FILE, sync_folder=True) as part:
        part.write(frame.select(list(CALLS_SCHEMA)).cast(CALLS_SCHEMA))
        return part.commit()


def calls_view_sql(root: Path, glob: str | None, duckdb_type: Callable[[pl.DataType], str]
                   ) -> str:
    """The CREATE VIEW statement of `calls` over the SQL string literal `glob` (None: no run
    under `root` has a calls file yet: the view is empty), typed either way."""
    columns = ",\n".join(f"    NULL::{duckdb_type(dtype)} AS {name}"
                         for name, dtype in CALLS_SCHEMA.items())
    empty = f"SELECT NULL::VARCHAR AS pipeline, NULL::VARCHAR AS run_id,\n{columns}\nWHERE false;\n"
    if glob is None or next(Path(root).rglob(CALLS_FILE), None) is None:
        return f"CREATE OR REPLACE VIEW calls AS\n{empty}"
    return (
        "CREATE OR REPLACE VIEW calls AS\n"
        f"SELECT * FROM read_parquet({glob}, hive_partitioning = true,\n"
        "    union_by_name = true, hive_types = {'pipeline': VARCHAR, 'run_id': VARCHAR})\n"
        f"UNION ALL BY NAME\n{empty}"
    )
