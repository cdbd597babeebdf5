"""What the report shows, read from the ledger with DuckDB into small frames and records.

Ledgers written before a column existed (`run_at`, a lever) read it as NULL or leave it out:
the queries check which columns the ledger has and count a missing lever as $0 and a missing
`run_at` as an unknown day.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from batchopt.errors import InputError
from batchopt.ledger.store import connect

if TYPE_CHECKING:
    import duckdb

# The waterfall's order: what happens to a row first comes first.
LEVERS: tuple[tuple[str, str], ...] = (
    ("saved_exact_usd", "Exact dedup"),
    ("saved_semantic_usd", "Semantic dedup"),
    ("saved_cache_usd", "Response cache"),
    ("saved_compression_usd", "Compression"),
    ("saved_prompt_cache_usd", "Prompt caching"),
    ("saved_routing_usd", "Routing"),
    ("saved_batch_usd", "Batch discount"),
)
MAX_FAILURES = 200  # failed rows listed on the page; the header says how many there were
MAX_LISTED = 20  # run ids or pipelines named in an error message


@dataclass(frozen=True)
class Header:
    pipeline: str
    run_id: str
    run_at: dt.datetime | None
    rows: int
    failed_rows: int
    cost_usd: float
    baseline_cost_usd: float
    price_version: str | None

    @property
    def saved_usd(self) -> float:
        return self.baseline_cost_usd - self.cost_usd

    @property
    def saved_share(self) -> float | None:
        return self.saved_usd / self.baseline_cost_usd if self.baseline_cost_usd else None


@dataclass(frozen=True)
class Step:
    """One bar of the waterfall: it floats from `start` to `end` (dollars)."""

    step: str
    kind: str  # "total" (baseline, actual), "saving" (a lever that saved), "extra" (one that cost)
    amount: float  # a total's value, or what the lever saved (negative: it cost more)
    start: float
    end: float


@dataclass(frozen=True)
class Sample:
    """Rows of the run's outputs file beside the ledger's verdict on them."""

    id_column: str
    input_columns: list[str]
    output_column: str
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReportData:
    header: Header
    waterfall: list[Step]
    by_model: pl.DataFrame  # tier, provider, model, rows, billed_rows, failed_rows, cost, baseline
    # day (YYYY-MM-DD, UTC), runs, cache_reruns, rows, distinct_rows, cost_usd, baseline_cost_usd
    by_day: pl.DataFrame
    undated_runs: list[str]  # runs of the pipeline without run_at (left out of by_day)
    failures: pl.DataFrame  # row_id, error, attempts, tier, model (at most MAX_FAILURES)
    sample: Sample | None
    sample_note: str | None  # why there is no sample


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[-MAX_LISTED:])
    more = len(names) - MAX_LISTED
    return f"… {more} more, {shown}" if more > 0 else shown


def resolve_run(con: duckdb.DuckDBPyConnection, root: Path, run_id: str,
                pipeline: str | None) -> str:
    """The pipeline whose run `run_id` is reported; InputError names what the ledger holds."""
    pairs = con.execute("SELECT DISTINCT pipeline, run_id FROM ledger ORDER BY 1, 2").fetchall()
    pipelines = sorted({p for p, _ in pairs})
    if pipeline is not None and pipeline not in pipelines:
        raise InputError(
            f"{root}: no pipeline {pipeline!r} in the ledger; pipelines: {_listing(pipelines)}"
        )
    holding = [p for p, r in pairs if r == run_id and pipeline in (None, p)]
    if not holding:
        runs = sorted({r for p, r in pairs if pipeline in (None, p)})
        where = f" of pipeline {pipeline!r}" if pipeline else ""
        raise InputError(
            f"{root}: no run {run_id!r}{where} in the ledger; run ids: {_listing(runs)}"
        )
    if len(holding) > 1:
        raise InputError(
            f"{root}: run {run_id!r} is in pipelines {', '.join(holding)}; "
            "name one with --pipeline"
        )
    return holding[0]


class _Ledger:
    """The ledger's columns, for queries that tolerate ledgers written before a column existed."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.columns = {row[0] for row in con.execute("DESCRIBE ledger").fetchall()}

    def money(self, column: str) -> str:
        if column in self.columns:
            return f"coalesce(fsum({column}), 0.0)"
        return "0.0"

    def col(self, column: str, sql_type: str = "VARCHAR") -> str:
        return column if column in self.columns else f"NULL::{sql_type}"

    def frame(self, sql: str, params: list[Any]) -> pl.DataFrame:
        return self.con.sql(sql, params=params).pl()


def _header(db: _Ledger, pipeline: str, run_id: str) -> Header:
    row = db.con.execute(
        f"""
        SELECT count(*), count(*) FILTER (WHERE status = 'failed'),
               {db.money('cost_usd')}, {db.money('baseline_cost_usd')},
               max({db.col('run_at', 'TIMESTAMPTZ')}),
               string_agg(DISTINCT {db.col('price_version')}, ',')
        FROM ledger WHERE pipeline = ? AND run_id = ?
        """,
        [pipeline, run_id],
    ).fetchall()[0]
    rows, failed, cost, baseline, run_at, version = row
    if isinstance(run_at, dt.datetime):
        run_at = run_at.astimezone(dt.UTC) if run_at.tzinfo else run_at.replace(tzinfo=dt.UTC)
    return Header(pipeline, run_id, run_at, int(rows), int(failed), float(cost),
                  float(baseline), version)


def waterfall_steps(baseline: float, levers: list[tuple[str, float]], cost: float) -> list[Step]:
    """Baseline, then each lever taken off what is left, then the actual cost."""
    steps = [Step("Baseline", "total", baseline, 0.0, baseline)]
    level = baseline
    for label, saved in levers:
        steps.append(Step(label, "saving" if saved >= 0 else "extra", saved, level,
                          level - saved))
        level -= saved
    steps.append(Step("Actual", "total", cost, 0.0, cost))
    return steps


def _waterfall(db: _Ledger, pipeline: str, run_id: str, header: Header) -> list[Step]:
    sums = ", ".join(db.money(column) for column, _ in LEVERS)
    row = db.con.execute(
        f"SELECT {sums} FROM ledger WHERE pipeline = ? AND run_id = ?", [pipeline, run_id]
    ).fetchall()[0]
    levers = [(label, float(v)) for (_, label), v in zip(LEVERS, row, strict=True)]
    return waterfall_steps(header.baseline_cost_usd, levers, header.cost_usd)


def _by_model(db: _Ledger, pipeline: str, run_id: str) -> pl.DataFrame:
    billed = "mode IN ('online', 'batch', 'failed') AND (input_tokens > 0 OR output_tokens > 0)"
    return db.frame(
        f"""
        SELECT {db.col('tier')} AS tier, provider, model, count(*) AS rows,
               count(*) FILTER (WHERE {billed}) AS billed_rows,
               count(*) FILTER (WHERE status = 'failed') AS failed_rows,
               {db.money('cost_usd')} AS cost_usd,
               {db.money('baseline_cost_usd')} AS baseline_cost_usd
        FROM ledger WHERE pipeline = ? AND run_id = ?
        GROUP BY ALL ORDER BY cost_usd DESC, tier, provider, model
        """,
        [pipeline, run_id],
    )


def _by_day(db: _Ledger, pipeline: str) -> tuple[pl.DataFrame, list[str]]:
    """Per day (logical date, else run_at's UTC day): runs, cache re-runs, rows, spend and
    baseline (see daily_trend).

    Spend is what the day's runs paid. The baseline counts each row id once a day, however
    many runs answered it that day (its largest baseline), so a $0 re-run from the response
    cache adds nothing to it. A cache re-run is a run with no row online, batch or failed and
    at least one answered from the cache.
    """
    run_at = db.col("run_at", "TIMESTAMPTZ")
    # the logical date (`--date`, a dated run id) where the ledger has one, else run_at's day
    day = (f"coalesce(max({db.col('logical_date', 'DATE')}), "
           f"make_timestamp(epoch_us(max({run_at})))::DATE)")
    runs = db.frame(
        f"""
        SELECT run_id, max({run_at}) AS run_at, CAST({day} AS VARCHAR) AS day,
               count(*) AS rows,
               count(*) FILTER (WHERE mode IN ('online', 'batch', 'failed')) = 0
                   AND count(*) FILTER (WHERE mode = 'cache') > 0 AS cache_rerun,
               {db.money('cost_usd')} AS cost_usd
        FROM ledger WHERE pipeline = ? GROUP BY run_id ORDER BY run_id
        """,
        [pipeline],
    )
    undated = runs.filter(pl.col("day").is_null())["run_id"].to_list()
    per_row = db.frame(
        f"""
        WITH days AS (
            SELECT run_id, {day} AS day
            FROM ledger WHERE pipeline = ? GROUP BY run_id
        ), per_row AS (
            SELECT d.day, l.row_id, max(coalesce(l.baseline_cost_usd, 0.0)) AS baseline
            FROM ledger l JOIN days d USING (run_id)
            WHERE l.pipeline = ? AND d.day IS NOT NULL
            GROUP BY d.day, l.row_id
        )
        SELECT CAST(day AS VARCHAR) AS day, count(*) AS distinct_rows,
               coalesce(fsum(baseline), 0.0) AS baseline_cost_usd
        FROM per_row GROUP BY day
        """,
        [pipeline, pipeline],
    )
    days = (
        runs.filter(pl.col("day").is_not_null())
        .group_by("day")
        .agg(
            runs=pl.len(),
            cache_reruns=pl.col("cache_rerun").sum().cast(pl.Int64),
            rows=pl.col("rows").sum(),
            cost_usd=pl.col("cost_usd").sum(),
        )
        .join(per_row, on="day", how="left")
        .select("day", "runs", "cache_reruns", "rows", "distinct_rows", "cost_usd",
                "baseline_cost_usd")
        .sort("day")
    )
    return days, undated


def _failures(db: _Ledger, pipeline: str, run_id: str) -> pl.DataFrame:
    return db.frame(
        f"""
        SELECT row_id, error, attempts, {db.col('tier')} AS tier, model FROM ledger
        WHERE pipeline = ? AND run_id = ? AND status = 'failed'
        ORDER BY row_id LIMIT {MAX_FAILURES}
        """,
        [pipeline, run_id],
    )


def _output_column(columns: list[str]) -> str:
    """The answer's column: the outputs file is the input columns, the answer, then (with a JSON
    schema) one `<answer>_<property>` column per property."""
    for i, name in enumerate(columns):
        if all(later.startswith(f"{name}_") for later in columns[i + 1:]):
            return name
    return columns[-1]


def read_sample(path: Path, run_rows: pl.DataFrame, size: int, truncate: int = 300) -> Sample:
    """Up to `size` rows of the outputs file that belong to the run, with mode and model.

    `run_rows` is the run's ledger rows (row_id, mode, status, model). The id column is the one
    whose values match the most row ids; InputError if the file cannot be read.
    """
    try:
        outputs = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise InputError(f"{path}: cannot read the outputs file ({exc})") from exc
    if outputs.width < 2:
        raise InputError(f"{path}: an outputs file has an id, input columns and the answer")
    ids = set(run_rows["row_id"].to_list())
    matches = {
        name: outputs[name].cast(pl.String, strict=False).is_in(ids).sum()
        for name in outputs.columns
    }
    id_column = max(outputs.columns, key=lambda name: matches[name])
    notes = []
    if not matches[id_column]:
        raise InputError(f"{path}: no row of this file is in the run; is it another run's?")
    output_column = _output_column([c for c in outputs.columns if c != id_column])
    inputs = [c for c in outputs.columns
              if c not in (id_column, output_column) and not c.startswith(f"{output_column}_")]
    stray = outputs.height - matches[id_column]
    if stray:
        notes.append(f"{stray:,} of the file's {outputs.height:,} rows are not in this run "
                     "(the file may have been written by another run)")
    frame = (
        outputs.with_columns(pl.col(id_column).cast(pl.String).alias("_row_id"))
        .join(run_rows, left_on="_row_id", right_on="row_id", how="inner", maintain_order="left")
        .head(size)
    )

    def text(value: Any) -> str:
        value = "" if value is None else str(value)
        return value if len(value) <= truncate else value[: truncate - 1] + "…"

    rows = [
        {
            "id": text(record[id_column]),
            "inputs": {name: text(record[name]) for name in inputs},
            "output": text(record[output_column]),
            "served": " · ".join(str(v) for v in (record["mode"], record["model"]) if v),
            "status": record["status"],
        }
        for record in frame.iter_rows(named=True)
    ]
    return Sample(id_column, inputs, output_column, rows, notes)


def load(root: Path, run_id: str, pipeline: str | None = None, outputs: Path | None = None,
         sample_size: int = 10) -> ReportData:
    """Everything the report shows about run `run_id`; InputError for a missing ledger or run."""
    con = connect(root)
    try:
        pipeline = resolve_run(con, Path(root), run_id, pipeline)
        db = _Ledger(con)
        header = _header(db, pipeline, run_id)
        by_day, undated = _by_day(db, pipeline)
        sample, note = None, "No outputs file given: pass --outputs PATH to show a sample."
        if outputs is not None:
            run_rows = db.frame(
                "SELECT row_id, mode, status, model FROM ledger WHERE pipeline = ? AND run_id = ?",
                [pipeline, run_id],
            )
            sample, note = read_sample(Path(outputs), run_rows, sample_size), None
        return ReportData(
            header=header,
            waterfall=_waterfall(db, pipeline, run_id, header),
            by_model=_by_model(db, pipeline, run_id),
            by_day=by_day,
            undated_runs=undated,
            failures=_failures(db, pipeline, run_id),
            sample=sample,
            sample_note=note,
        )
    finally:
        con.close()
