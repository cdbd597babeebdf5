"""Token counters calibrated on past runs' ledgers.

The ledger records each row's count (`estimated_input_tokens`) and the name of the counter that
made it (`token_counter`: see `providers.token_counting`); `calibrate` reads them back. The
factor it learns turns an o200k count into billed input tokens, so rows counted by a calibrated
estimate are first divided by the factor named in their counter.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import polars as pl

from batchopt.tokens import ESTIMATE_ENCODING, Calibration

_NAME = re.compile(r"^(exact|estimate):(\S+)(?: x(\d+(?:\.\d+)?))?")
_SCHEMA: dict[str, Any] = {
    "provider": pl.String(), "model": pl.String(), "mode": pl.String(), "status": pl.String(),
    "input_tokens": pl.Int64(), "estimated_input_tokens": pl.Int64(),
    "token_counter": pl.String(),
}


def calibrate(ledger_dir: Path, pipeline: str | None = None) -> dict[tuple[str, str], Calibration]:
    """Per (provider, model): billed input tokens per o200k token, from the answered rows
    (online or batch, status ok) of the ledgers under `ledger_dir` (one pipeline's, or all).

    Only rows whose count was o200k-based (an estimate, or `exact:o200k_base`) and is recorded
    (not null or 0: ledgers written before the column existed) count. Aggregated lazily: only
    the few columns needed are read."""
    root = Path(ledger_dir)
    files = sorted(root.glob(f"pipeline={pipeline or '*'}/run_id=*/part.parquet"))
    if not files:
        return {}
    estimated = pl.col("estimated_input_tokens")
    sums = (
        pl.scan_parquet(files, schema=_SCHEMA, missing_columns="insert",
                        extra_columns="ignore", hive_partitioning=False)
        .filter(pl.col("mode").is_in(("online", "batch")) & (pl.col("status") == "ok")
                & (estimated > 0) & pl.col("token_counter").is_not_null()
                & pl.col("provider").is_not_null() & pl.col("model").is_not_null())
        .group_by("provider", "model", "token_counter")
        .agg(pl.col("input_tokens").fill_null(0).sum().alias("billed"),
             estimated.sum().alias("counted"), pl.len().alias("rows"))
        .collect()
    )
    totals: dict[tuple[str, str], list[float]] = {}
    for provider, model, name, billed, counted, rows in sums.iter_rows():
        match = _NAME.match(name)
        if match is None or match.group(2) != ESTIMATE_ENCODING:
            continue  # counted by another tokenizer: not comparable with an o200k count
        factor = float(match.group(3) or 1.0)
        total = totals.setdefault((provider, model), [0.0, 0.0, 0.0])
        total[0] += billed
        total[1] += counted / factor if factor > 0 else 0.0
        total[2] += rows
    return {
        key: Calibration(billed / counted, int(rows), int(billed), counted)
        for key, (billed, counted, rows) in totals.items() if counted > 0
    }
