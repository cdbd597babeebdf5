"""What a pipeline's past runs tell the next estimate: how long answers were, how many rows a
cascade escalated, and how far the last estimate was from what was spent.

Read lazily from the ledger Parquet (only the columns needed); a ledger written before a column
existed reads it as null.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from batchopt.ledger.calls_table import CALLS_FILE

__all__ = ["History", "LastRun", "read_history"]

_SCHEMA = {
    "run_id": pl.String,
    "run_at": pl.Datetime("us", "UTC"),
    "mode": pl.String,
    "status": pl.String,
    "provider": pl.String,
    "model": pl.String,
    "tier": pl.String,
    "escalated": pl.Boolean,
    "dedup": pl.String,
    "output_tokens": pl.Int64,
    "latency_ms": pl.Float64,
    "estimated_cost_usd": pl.Float64,
    "cost_usd": pl.Float64,
    "earlier_attempts_usd": pl.Float64,
    "config_hash": pl.String,
    "logical_date": pl.Date,
}


@dataclass(frozen=True)
class LastRun:
    """The newest run's estimate beside what it spent: the ledger's total for the run, earlier
    attempts and judge calls included."""

    run_id: str
    estimated_usd: float
    spent_usd: float

    @property
    def error_share(self) -> float | None:
        """(estimated - spent) / spent; None when nothing was spent."""
        return (self.estimated_usd - self.spent_usd) / self.spent_usd if self.spent_usd else None


@dataclass(frozen=True)
class History:
    """Per (provider, model): mean output tokens and mean latency, each with the rows behind it;
    the escalated share of the rows a cascade routed; the last run."""

    output_tokens: dict[tuple[str, str], tuple[float, int]]
    escalation: dict[str, tuple[float, int]]
    last_run: LastRun | None
    latency_ms: dict[tuple[str, str], tuple[float, int]] = field(default_factory=dict)

    @staticmethod
    def empty() -> History:
        return History({}, {}, None)


def read_history(ledger_dir: Path, pipeline: str, config_hash: str | None = None) -> History:
    """The history of `pipeline` under `ledger_dir` (empty when it has never run); with
    `config_hash`, of its runs of that configuration only (a ledger written before the column
    existed matches none)."""
    files = sorted(Path(ledger_dir).glob(f"pipeline={pipeline}/run_id=*/part.parquet"))
    if not files:
        return History.empty()
    # run_id lives in the folder name (the hive partition), not in the file
    frame = pl.concat([
        pl.scan_parquet(f, schema=_SCHEMA, missing_columns="insert", extra_columns="ignore",
                        hive_partitioning=False)
        .with_columns(pl.lit(f.parent.name.removeprefix("run_id=")).alias("run_id"))
        for f in files
    ]).collect()
    if config_hash is not None:
        frame = frame.filter(pl.col("config_hash") == config_hash)
    paid = frame.filter(pl.col("mode").is_in(("online", "batch")) & (pl.col("status") == "ok"))
    outputs = _answer_lengths(paid, files)
    latency = {}
    for p, m, ms, n in paid.group_by("provider", "model").agg(
            pl.col("latency_ms").mean(), pl.len()).iter_rows():
        if p is not None and m is not None and ms:
            latency[(p, m)] = (float(ms), int(n))
    # A row a cascade escalated ends on a later tier; its first tier is not in the ledger, so
    # the share is per final tier of the escalated rows over all routed representatives.
    reps = frame.filter((pl.col("dedup") == "none") & pl.col("escalated").is_not_null())
    escalation: dict[str, tuple[float, int]] = {}
    if reps.height:
        share = float(reps["escalated"].cast(pl.Float64).mean() or 0.0)
        escalation["*"] = (share, reps.height)
    return History(outputs, escalation, _last_run(frame), latency)


def _answer_lengths(paid: pl.DataFrame, files: list[Path]
                    ) -> dict[tuple[str, str], tuple[float, int]]:
    """Mean output tokens of one answer per (provider, model): from each run's calls table
    (confirmed calls that were answers, not judge verdicts) where it has one, since a ledger
    row's tokens are all its calls'; from the ledger rows of runs written before it."""
    runs = set(paid["run_id"].unique().to_list())
    tables = [f.parent / CALLS_FILE for f in files
              if f.parent.name.removeprefix("run_id=") in runs and (f.parent / CALLS_FILE).exists()]
    answers = [paid.filter(~pl.col("run_id").is_in(
        pl.Series([t.parent.name.removeprefix("run_id=") for t in tables],
                  dtype=pl.String).implode())).select("provider", "model", "output_tokens")]
    if tables:
        calls = pl.concat([pl.read_parquet(t, columns=["provider", "model", "kind", "status",
                                                       "output_tokens"]) for t in tables])
        answers.append(calls.filter((pl.col("status") == "confirmed")
                                    & (pl.col("kind") != "judge"))
                       .select("provider", "model", "output_tokens"))
    means = pl.concat(answers).group_by("provider", "model").agg(
        pl.col("output_tokens").mean(), pl.len())
    return {(p, m): (float(tokens), int(n)) for p, m, tokens, n in means.iter_rows()
            if p is not None and m is not None and tokens is not None}


def _last_run(frame: pl.DataFrame) -> LastRun | None:
    """The run of the newest logical date (`--date`), else the newest run_at, that spent."""
    runs = (
        frame.group_by("run_id")
        .agg(pl.col("logical_date").max(), pl.col("run_at").max(),
             pl.col("estimated_cost_usd").fill_null(0).sum(),
             # cost_usd already holds each row's earlier attempts and judge calls
             pl.col("cost_usd").fill_null(0).sum().alias("spent"))
        .filter(pl.col("spent") > 0)
        # the newest night (a backfill of an earlier one run later is not the last run), then
        # the newest run of it
        .sort("logical_date", "run_at", "run_id", nulls_last=False)
    )
    if not runs.height:
        return None
    run_id, _, _, estimated, spent = runs.row(-1)
    return LastRun(str(run_id), float(estimated), float(spent))
