"""The shipped ledger views and macros, checked against polars sums over the same Parquet.

The ledger holds three runs of two pipelines written by `write_ledger` from priced facts (cascades
that escalate, batch rows, cache hits, dedup followers, prompt-cache reads and writes, failures
billed and not) and one older run whose part has no `run_at` column. Every view is read both
through `connect` and through the `views.sql` written into the ledger folder, executed by a
plain DuckDB connection from another working directory, in a session whose TimeZone is not UTC.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from batchopt.ledger import (
    FACT_SCHEMA,
    LEDGER_COLUMNS,
    LEVER_COLUMNS,
    PriceTable,
    connect,
    price_ledger,
    write_ledger,
    write_views_file,
)

CASCADE = "cascade: starts on cheap"
ESCALATED = f"{CASCADE}; escalated to strong: cheap rejected (finish_reason: 'length')"
UTC = dt.UTC
# run -> (pipeline, run_at); d1 is 03:00 UTC: still the 24th in Los Angeles, the 25th in UTC
RUNS = {
    "d1": ("demo", dt.datetime(2026, 11, 25, 3, 0, tzinfo=UTC)),
    "d2": ("demo", dt.datetime(2026, 11, 25, 21, 30, tzinfo=UTC)),
    "x1": ("other", dt.datetime(2026, 11, 26, 12, 0, tzinfo=UTC)),
    "old": ("demo", None),  # written before ledgers had run_at: its part lacks the column
}
PAID = ("online", "batch", "failed")
NUM = {"rel": 1e-12, "abs": 1e-15}


def _facts(run_id: str, seed: int) -> pl.DataFrame:
    """About 60 varied rows of one run, cascade-routed on demo, rules-routed on other."""
    pipeline, run_at = RUNS[run_id]
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for i in range(60):
        mode = rng.choice(["online", "online", "batch", "batch", "cache", "dedup", "failed"])
        escalated = pipeline == "demo" and mode != "dedup" and rng.random() < 0.3
        strong = escalated or (pipeline == "other" and rng.random() < 0.4)
        billed = mode in ("online", "batch") or (mode == "failed" and rng.random() < 0.5)
        prompt = rng.randint(1_500, 4_000)
        cached = rng.choice([0, 1_024, 1_280]) if billed else 0
        written = rng.choice([0, 0, 200]) if billed else 0
        out = rng.randint(5, 200)
        squeezed = rng.randint(0, 300)
        reason = (ESCALATED if escalated else CASCADE) if pipeline == "demo" else (
            "rules[0] 'long'" if strong else "default"
        )
        rows.append({
            **{name: None for name in FACT_SCHEMA},
            "run_id": run_id,
            "pipeline": pipeline,
            "run_at": run_at,
            "row_id": f"{run_id}-{i:03d}",
            "group_id": f"g{i}",
            "representative_id": f"{run_id}-{i:03d}",
            "dedup": rng.choice(["exact", "semantic"]) if mode == "dedup" else "none",
            "tier": None if mode == "failed" and not billed and i % 2 else
            ("strong" if strong else "cheap"),
            "provider": "openai",
            "model": "gpt-4o" if strong else "gpt-4o-mini",
            "mode": mode,
            "route_reason": reason,
            "escalated": escalated,
            "status": "failed" if mode == "failed" else "ok",
            "error": "HTTP 400: bad request" if mode == "failed" else None,
            "attempts": 1,
            "latency_ms": 120.0,
            "batch_id": "batch_1" if mode == "batch" else None,
            "cached_from_run": "d0" if mode == "cache" else None,
            "input_tokens": prompt if billed else 0,
            "cached_input_tokens": cached,
            "cache_write_tokens": written,
            "output_tokens": out if billed else 0,
            "compression_tokens_saved": squeezed,
            "baseline_input_tokens": prompt + squeezed,
            "baseline_output_tokens": out,
            "baseline_latency_ms": 120.0,
            "estimated_cost_usd": rng.uniform(0.0001, 0.01) if mode in PAID else 0.0,
            "estimated_input_tokens": int(prompt * rng.uniform(0.9, 1.0)),
            "token_counter": rng.choice(["exact:o200k_base", "estimate:o200k_base x1.050"]),
            "earlier_attempts_usd": 0.0004 if escalated and billed else 0.0,
        })
    return pl.DataFrame(rows, schema=FACT_SCHEMA)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("views") / "ledger"
    prices = PriceTable.load()
    for seed, (run_id, (pipeline, run_at)) in enumerate(RUNS.items()):
        ledger = price_ledger(_facts(run_id, seed), prices, "openai", "gpt-4o")
        if run_at is None:
            ledger = ledger.drop("run_at")
        write_ledger(ledger, folder, pipeline, run_id)
    write_views_file(folder)
    return folder


@pytest.fixture(scope="module")
def ledger(root: Path) -> pl.DataFrame:
    """Every part read back by polars, with pipeline and run_id from the folder names."""
    parts = []
    for part in sorted(root.glob("pipeline=*/run_id=*/part.parquet")):
        frame = pl.read_parquet(part).with_columns(
            pipeline=pl.lit(part.parent.parent.name.split("=", 1)[1]),
            run_id=pl.lit(part.parent.name.split("=", 1)[1]),
        )
        parts.append(frame)
    return pl.concat(parts, how="diagonal_relaxed")


@pytest.fixture(params=["connect", "views_file"])
def con(
    request: pytest.FixtureRequest, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[duckdb.DuckDBPyConnection]:
    """The package's connection, or the written views.sql run from another directory."""
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    if request.param == "connect":
        connection = connect(root)
    else:
        connection = duckdb.connect()
        connection.execute((root / "views.sql").read_text(encoding="utf-8"))
    connection.execute("SET TimeZone = 'America/Los_Angeles'")
    yield connection
    connection.close()


def rows_of(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def same(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Equal rows, in order, with the view's columns; floats to 1e-12 relative."""
    assert len(actual) == len(expected)
    assert expected, "a check over no rows checks nothing"
    for got, want in zip(actual, expected, strict=True):
        assert list(got) == list(want)
        for name, value in want.items():
            if isinstance(value, float):
                assert got[name] == pytest.approx(value, **NUM), name
            else:
                assert got[name] == value, name


def records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dicts()


def _joined(column: str) -> pl.Expr:
    """string_agg(DISTINCT column, ',' ORDER BY column): NULL when there is none."""
    values = pl.col(column).drop_nulls().unique().sort()
    return pl.when(values.len() > 0).then(values.str.join(",")).alias(f"_{column}")


def test_the_ledger_view_has_every_column_and_the_old_part_reads_as_null(
    con: duckdb.DuckDBPyConnection, ledger: pl.DataFrame
) -> None:
    names = [r["column_name"] for r in rows_of(con, "DESCRIBE ledger")]
    assert sorted(names) == sorted(LEDGER_COLUMNS)
    assert rows_of(con, "SELECT count(*) AS n FROM ledger WHERE run_at IS NULL") == [
        {"n": ledger.filter(pl.col("run_id") == "old").height}
    ]


def test_cost_by_tier(con: duckdb.DuckDBPyConnection, ledger: pl.DataFrame) -> None:
    expected = (
        ledger.group_by("pipeline", "run_id", "tier")
        .agg(
            _joined("model").alias("models"),
            pl.len().alias("rows"),
            pl.col("escalated").sum().alias("escalated_rows"),
            (pl.col("status") == "failed").sum().alias("failed_rows"),
            pl.col("input_tokens").sum(),
            pl.col("output_tokens").sum(),
            pl.col("cost_usd").sum(),
            pl.col("earlier_attempts_usd").sum(),
            pl.col("baseline_cost_usd").sum(),
            (pl.col("baseline_cost_usd") - pl.col("cost_usd")).sum().alias("saved_usd"),
        )
        .sort("pipeline", "run_id", "tier", nulls_last=True)
        .with_columns(pl.col("rows", "escalated_rows", "failed_rows").cast(pl.Int64))
    )
    actual = rows_of(con, "SELECT * FROM cost_by_tier")
    same(actual, records(expected))
    assert {r["tier"] for r in actual} == {"cheap", "strong", None}  # unrouted failures: NULL
    demo = [r for r in actual if r["run_id"] == "d1"]
    assert [r["escalated_rows"] > 0 for r in demo[:2]] == [False, True]  # escalated: strong only


def test_cost_by_mode(con: duckdb.DuckDBPyConnection, ledger: pl.DataFrame) -> None:
    order = {"online": 0, "batch": 1, "cache": 2, "dedup": 3, "failed": 4}
    run = ["pipeline", "run_id"]
    expected = (
        ledger.group_by("pipeline", "run_id", "mode")
        .agg(
            pl.len().cast(pl.Int64).alias("rows"),
            pl.col("input_tokens").sum(),
            pl.col("cached_input_tokens").sum(),
            pl.col("output_tokens").sum(),
            pl.col("cost_usd").sum(),
            pl.col("baseline_cost_usd").sum(),
            (pl.col("baseline_cost_usd") - pl.col("cost_usd")).sum().alias("saved_usd"),
        )
        .with_columns(
            (pl.col("rows") / pl.col("rows").sum().over(run)).alias("row_share"),
            (pl.col("cost_usd") / pl.col("cost_usd").sum().over(run)).alias("cost_share"),
        )
        .sort(pl.col("pipeline"), pl.col("run_id"), pl.col("mode").replace_strict(order))
        .select(
            "pipeline", "run_id", "mode", "rows", "row_share", "input_tokens",
            "cached_input_tokens", "output_tokens", "cost_usd", "cost_share",
            "baseline_cost_usd", "saved_usd",
        )
    )
    actual = rows_of(con, "SELECT * FROM cost_by_mode")
    same(actual, records(expected))
    per_run: dict[str, float] = {}
    for r in actual:
        per_run[r["run_id"]] = per_run.get(r["run_id"], 0.0) + r["row_share"]
    assert per_run == pytest.approx(dict.fromkeys(RUNS, 1.0))


def test_cache_hit_share(con: duckdb.DuckDBPyConnection, ledger: pl.DataFrame) -> None:
    paid = pl.col("mode").is_in(PAID)
    expected = (
        ledger.group_by("pipeline", "run_id")
        .agg(
            pl.len().cast(pl.Int64).alias("rows"),
            (pl.col("mode") == "cache").sum().cast(pl.Int64).alias("cache_rows"),
            pl.col("saved_cache_usd").sum(),
            pl.col("input_tokens").filter(paid).sum(),
            pl.col("cached_input_tokens").filter(paid).sum(),
            pl.col("cache_write_tokens").filter(paid).sum(),
            pl.col("saved_prompt_cache_usd").sum(),
        )
        .with_columns(
            (pl.col("cache_rows") / pl.col("rows")).alias("cache_row_share"),
            (pl.col("cached_input_tokens") / pl.col("input_tokens")).alias("prompt_cache_share"),
        )
        .sort("pipeline", "run_id")
        .select(
            "pipeline", "run_id", "rows", "cache_rows", "cache_row_share", "saved_cache_usd",
            "input_tokens", "cached_input_tokens", "prompt_cache_share", "cache_write_tokens",
            "saved_prompt_cache_usd",
        )
    )
    actual = rows_of(con, "SELECT * FROM cache_hit_share")
    same(actual, records(expected))
    assert all(0 < r["cache_row_share"] < 1 and 0 < r["prompt_cache_share"] < 1 for r in actual)
    assert all(r["cache_write_tokens"] > 0 for r in actual)


def test_escalation_share(con: duckdb.DuckDBPyConnection, ledger: pl.DataFrame) -> None:
    sent = pl.col("mode").is_in(PAID)
    expected = (
        ledger.filter(pl.col("route_reason").str.starts_with("cascade: starts on "))
        .with_columns(
            pl.col("route_reason").str.split(";").list.first()
            .str.strip_prefix("cascade: starts on ").alias("first_tier")
        )
        .group_by("pipeline", "run_id", "first_tier")
        .agg(
            pl.len().cast(pl.Int64).alias("cascade_rows"),
            sent.sum().cast(pl.Int64).alias("sent_rows"),
            (sent & pl.col("escalated")).sum().cast(pl.Int64).alias("escalated_rows"),
            pl.col("cost_usd").filter(pl.col("escalated")).sum().alias("escalated_cost_usd"),
            pl.col("earlier_attempts_usd").sum(),
        )
        .with_columns((pl.col("escalated_rows") / pl.col("sent_rows")).alias("escalation_share"))
        .sort("pipeline", "run_id", "first_tier")
        .select(
            "pipeline", "run_id", "first_tier", "cascade_rows", "sent_rows", "escalated_rows",
            "escalation_share", "escalated_cost_usd", "earlier_attempts_usd",
        )
    )
    actual = rows_of(con, "SELECT * FROM escalation_share")
    same(actual, records(expected))
    # the rules-routed pipeline is not a cascade; the demo runs are, from tier cheap
    assert {(r["pipeline"], r["run_id"], r["first_tier"]) for r in actual} == {
        ("demo", "d1", "cheap"), ("demo", "d2", "cheap"), ("demo", "old", "cheap")
    }
    assert all(0 < r["escalation_share"] < 1 for r in actual)


MOST_EXPENSIVE = [
    "pipeline", "run_id", "row_id", "tier", "provider", "model", "mode", "status", "escalated",
    "attempts", "input_tokens", "cached_input_tokens", "output_tokens", "cost_usd",
    "earlier_attempts_usd", "estimated_cost_usd", "baseline_cost_usd", "route_reason", "error",
]


def _by_cost(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(
        ["cost_usd", "pipeline", "run_id", "row_id"], descending=[True, False, False, False]
    ).select(MOST_EXPENSIVE)


def test_most_expensive_rows_and_macro(
    con: duckdb.DuckDBPyConnection, ledger: pl.DataFrame
) -> None:
    same(rows_of(con, "SELECT * FROM most_expensive_rows"), records(_by_cost(ledger)))
    same(rows_of(con, "SELECT * FROM most_expensive(5)"), records(_by_cost(ledger).head(5)))
    d2 = _by_cost(ledger.filter(pl.col("run_id") == "d2"))
    same(rows_of(con, "SELECT * FROM most_expensive(3, run := 'd2')"), records(d2.head(3)))
    same(
        rows_of(con, "SELECT * FROM most_expensive_rows WHERE run_id = 'd2' LIMIT 3"),
        records(d2.head(3)),
    )
    assert rows_of(con, "SELECT count(*) AS n FROM most_expensive(1000)") == [
        {"n": ledger.height}
    ]


def test_daily_trend_counts_utc_days_and_old_runs_under_null(
    con: duckdb.DuckDBPyConnection, ledger: pl.DataFrame
) -> None:
    per_run = ledger.group_by("pipeline", "run_id").agg(
        pl.col("run_at").first().dt.convert_time_zone("UTC").dt.date().alias("day"),
        pl.len().alias("rows"),
        pl.col("cost_usd").sum(),
        pl.col("baseline_cost_usd").sum(),
    )
    expected = (
        per_run.group_by("pipeline", "day")
        .agg(
            pl.len().cast(pl.Int64).alias("runs"),
            pl.lit(0, dtype=pl.Int64).alias("cache_reruns"),
            pl.col("rows").sum().cast(pl.Int64),
            pl.col("rows").sum().cast(pl.Int64).alias("distinct_rows"),  # row ids differ by run
            pl.col("cost_usd").sum(),
            pl.col("baseline_cost_usd").sum(),
        )
        .with_columns(
            (pl.col("baseline_cost_usd") - pl.col("cost_usd")).alias("saved_usd"),
            ((pl.col("baseline_cost_usd") - pl.col("cost_usd")) / pl.col("baseline_cost_usd"))
            .alias("saved_share"),
        )
        .sort("pipeline", "day", nulls_last=True)
    )
    actual = rows_of(con, "SELECT * FROM daily_trend")
    same(actual, records(expected))
    assert [(r["pipeline"], r["day"], r["runs"]) for r in actual] == [
        ("demo", dt.date(2026, 11, 25), 2),  # d1 at 03:00 UTC counts on the 25th, as d2 does
        ("demo", None, 1),  # the part written before run_at existed
        ("other", dt.date(2026, 11, 26), 1),
    ]
    assert sum(r["rows"] for r in actual) == ledger.height


def test_daily_trend_counts_a_cache_rerun_baseline_once(tmp_path: Path) -> None:
    """Point 7: a day with a paid run and a $0 cache re-run of the same rows has the paid run's
    baseline and spend, and says that one of its two runs was a cache re-run."""
    prices = PriceTable.load()
    day = dt.datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    facts = _facts("d1", 7).with_columns(run_at=pl.lit(day), mode=pl.lit("online"),
                                         status=pl.lit("ok"), error=pl.lit(None, pl.String),
                                         dedup=pl.lit("none"), cached_from_run=pl.lit(None,
                                                                                      pl.String))
    paid = price_ledger(facts.with_columns(run_id=pl.lit("p1")), prices, "openai", "gpt-4o")
    rerun_facts = facts.with_columns(
        run_id=pl.lit("p2"), run_at=pl.lit(day + dt.timedelta(hours=2)), mode=pl.lit("cache"),
        cached_from_run=pl.lit("p1"), input_tokens=pl.lit(0), output_tokens=pl.lit(0),
        cached_input_tokens=pl.lit(0), cache_write_tokens=pl.lit(0),
        earlier_attempts_usd=pl.lit(0.0),
    )
    rerun = price_ledger(rerun_facts, prices, "openai", "gpt-4o")
    write_ledger(paid, tmp_path, "demo", "p1")
    write_ledger(rerun, tmp_path, "demo", "p2")
    assert rerun["cost_usd"].sum() == 0
    assert paid["cost_usd"].sum() > 0
    con = connect(tmp_path)
    try:
        trend = rows_of(con, "SELECT * FROM daily_trend")
    finally:
        con.close()
    assert len(trend) == 1
    (row,) = trend
    assert row["day"] == dt.date(2026, 11, 27)
    assert (row["runs"], row["cache_reruns"]) == (2, 1)
    assert (row["rows"], row["distinct_rows"]) == (2 * paid.height, paid.height)
    assert row["cost_usd"] == pytest.approx(paid["cost_usd"].sum(), **NUM)
    assert row["baseline_cost_usd"] == pytest.approx(paid["baseline_cost_usd"].sum(), **NUM)
    assert row["saved_usd"] == pytest.approx(
        paid["baseline_cost_usd"].sum() - paid["cost_usd"].sum(), **NUM)


def test_estimate_accuracy(con: duckdb.DuckDBPyConnection, ledger: pl.DataFrame) -> None:
    billed = pl.col("mode").is_in(("online", "batch")) | (
        (pl.col("mode") == "failed") & (pl.col("cost_usd") > 0)
    )
    expected = (
        ledger.filter(billed)
        .group_by("pipeline", "run_id")
        .agg(
            _joined("token_counter").alias("token_counters"),
            pl.len().cast(pl.Int64).alias("billed_rows"),
            pl.col("estimated_input_tokens").sum(),
            pl.col("input_tokens").sum(),
            pl.col("estimated_cost_usd").sum(),
            pl.col("cost_usd").sum(),
        )
        .with_columns(
            (pl.col("input_tokens") / pl.col("estimated_input_tokens"))
            .alias("input_tokens_ratio"),
            (pl.col("cost_usd") / pl.col("estimated_cost_usd")).alias("cost_ratio"),
        )
        .sort("pipeline", "run_id")
        .select(
            "pipeline", "run_id", "token_counters", "billed_rows", "estimated_input_tokens",
            "input_tokens", "input_tokens_ratio", "estimated_cost_usd", "cost_usd", "cost_ratio",
        )
    )
    actual = rows_of(con, "SELECT * FROM estimate_accuracy")
    same(actual, records(expected))
    # billed failures count, unbilled ones (no cost) do not
    failed = ledger.filter(pl.col("mode") == "failed")
    assert (failed["cost_usd"] > 0).any() and (failed["cost_usd"] == 0).any()


def test_savings_by_lever(con: duckdb.DuckDBPyConnection, ledger: pl.DataFrame) -> None:
    expected = (
        ledger.unpivot(LEVER_COLUMNS, index=["pipeline", "run_id"], variable_name="lever")
        .group_by("pipeline", "run_id", "lever")
        .agg(
            pl.col("value").sum().alias("saved_usd"),
            (pl.col("value") != 0).sum().cast(pl.Int64).alias("rows"),
        )
        .with_columns(pl.col("lever").str.slice(6).str.strip_suffix("_usd"))
        .sort("pipeline", "run_id", "lever")
    )
    same(rows_of(con, "SELECT * FROM savings_by_lever"), records(expected))


def test_run_cost_and_savings_macros(con: duckdb.DuckDBPyConnection, ledger: pl.DataFrame) -> None:
    d1 = ledger.filter(pl.col("run_id") == "d1")
    (cost,) = con.execute("SELECT run_cost('d1')").fetchone() or (None,)
    assert cost == pytest.approx(d1["cost_usd"].sum(), **NUM)
    assert con.execute("SELECT run_cost('nope')").fetchone() == (None,)
    levers = rows_of(con, "SELECT * FROM savings('d1')")
    assert [r["lever"] for r in levers] == sorted(c[6:-4] for c in LEVER_COLUMNS)
    for r in levers:
        assert r["saved_usd"] == pytest.approx(d1[f"saved_{r['lever']}_usd"].sum(), **NUM)
    total = sum(r["saved_usd"] for r in levers)
    assert total == pytest.approx((d1["baseline_cost_usd"] - d1["cost_usd"]).sum(), **NUM)


def test_views_bind_over_a_ledger_with_only_parts_older_than_run_at(tmp_path: Path) -> None:
    prices = PriceTable.load()
    ledger = price_ledger(_facts("old", 3), prices, "openai", "gpt-4o")
    old = ledger.drop("run_at", "estimated_input_tokens", "token_counter")
    write_ledger(old, tmp_path, "demo", "old")
    con = connect(tmp_path)
    try:
        trend = rows_of(con, "SELECT pipeline, day, runs, rows FROM daily_trend")
        accuracy = rows_of(con, "SELECT token_counters, input_tokens_ratio FROM estimate_accuracy")
    finally:
        con.close()
    assert trend == [{"pipeline": "demo", "day": None, "runs": 1, "rows": ledger.height}]
    assert accuracy == [{"token_counters": None, "input_tokens_ratio": None}]
