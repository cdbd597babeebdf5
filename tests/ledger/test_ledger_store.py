"""The ledger on disk: Parquet parts, DuckDB views, query rendering, views.sql."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest

from batchopt.errors import ConfigError, InputError
from batchopt.ledger import (
    FACT_SCHEMA,
    LEDGER_COLUMNS,
    LEVER_COLUMNS,
    PriceTable,
    connect,
    price_ledger,
    query,
    write_ledger,
    write_views_file,
)


def ledger_for(run_id: str, pipeline: str = "demo", scale: int = 1) -> pl.DataFrame:
    """A small priced ledger: two paid rows, a follower, a cache hit and a failure."""
    base: dict[str, Any] = {name: None for name in FACT_SCHEMA}
    base.update(
        run_id=run_id,
        pipeline=pipeline,
        dedup="none",
        tier="cheap",
        provider="openai",
        model="gpt-4o-mini",
        mode="online",
        route_reason="default",
        escalated=False,
        status="ok",
        attempts=1,
        latency_ms=10.0,
        input_tokens=0,
        cached_input_tokens=0,
        cache_write_tokens=0,
        output_tokens=0,
        compression_tokens_saved=0,
        baseline_latency_ms=0.0,
        estimated_cost_usd=0.0,
        baseline_input_tokens=1000 * scale,
        baseline_output_tokens=100 * scale,
    )
    paid = {"input_tokens": 1000 * scale, "output_tokens": 100 * scale}
    rows = [
        {**base, "row_id": "1", **paid},
        {**base, "row_id": "2", "mode": "batch", "batch_id": "batch_1", **paid},
        {**base, "row_id": "3", "mode": "dedup", "dedup": "exact", "representative_id": "1"},
        {**base, "row_id": "4", "mode": "cache"},
        {**base, "row_id": "5", "mode": "failed", "status": "failed", "error": "HTTP 400"},
    ]
    facts = pl.DataFrame(rows, schema=FACT_SCHEMA)
    return price_ledger(facts, PriceTable.load(), "openai", "gpt-4o")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "ledger"
    write_ledger(ledger_for("r1"), folder, "demo", "r1")
    write_ledger(ledger_for("20261125", scale=1000), folder, "demo", "20261125")
    return folder


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "somewhere" / "else"
    folder.mkdir(parents=True)
    monkeypatch.chdir(folder)
    return folder


def test_layout_and_part_without_partition_columns(root: Path) -> None:
    part = root / "pipeline=demo" / "run_id=r1" / "part.parquet"
    assert part.is_file()
    columns = pl.read_parquet(part).columns
    assert "run_id" not in columns and "pipeline" not in columns
    assert columns == [c for c in LEDGER_COLUMNS if c not in ("run_id", "pipeline")]


def test_json_round_trip_from_another_directory(root: Path, elsewhere: Path) -> None:
    text = query(root, "SELECT * FROM ledger ORDER BY run_id, row_id", "json")
    records = json.loads(text)
    assert len(records) == 10
    assert set(records[0]) == set(LEDGER_COLUMNS)
    assert [(r["run_id"], r["row_id"]) for r in records[:2]] == [
        ("20261125", "1"),
        ("20261125", "2"),
    ]
    expected = pl.concat([ledger_for("20261125", scale=1000), ledger_for("r1")])
    assert [r["cost_usd"] for r in records] == expected["cost_usd"].to_list()
    assert records[4]["error"] == "HTTP 400" and records[4]["similarity"] is None


def test_partition_columns_are_varchar(root: Path) -> None:
    con = connect(root)
    try:
        types = con.execute(
            "SELECT DISTINCT typeof(run_id), typeof(pipeline) FROM ledger"
        ).fetchall()
        runs = sorted(r[0] for r in con.execute("SELECT DISTINCT run_id FROM ledger").fetchall())
    finally:
        con.close()
    assert types == [("VARCHAR", "VARCHAR")]
    assert runs == ["20261125", "r1"]  # not 20261125 as a BIGINT


@pytest.mark.parametrize("run_id", ["20261125", "007"])
def test_numeric_looking_run_ids_stay_text(tmp_path: Path, run_id: str) -> None:
    write_ledger(ledger_for(run_id, pipeline="2026"), tmp_path, "2026", run_id)
    sql = "SELECT DISTINCT run_id, typeof(run_id) AS t, pipeline, typeof(pipeline) AS p FROM ledger"
    assert json.loads(query(tmp_path, sql, "json")) == [
        {"run_id": run_id, "t": "VARCHAR", "pipeline": "2026", "p": "VARCHAR"}
    ]


def test_csv_round_trip(root: Path, elsewhere: Path) -> None:
    text = query(
        root,
        "SELECT run_id, row_id, cost_usd, error FROM ledger WHERE run_id = 'r1' ORDER BY row_id",
        "csv",
    )
    assert not text.endswith("\n")  # the caller prints it
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["run_id", "row_id", "cost_usd", "error"]
    assert [r[1] for r in rows[1:]] == ["1", "2", "3", "4", "5"]
    assert float(rows[1][2]) == ledger_for("r1")["cost_usd"][0]
    assert rows[5][3] == "HTTP 400" and rows[1][3] == ""


def test_table_rendering(root: Path, elsewhere: Path) -> None:
    text = query(root, "SELECT run_id, rows, cost_usd FROM cost_by_run ORDER BY run_id")
    lines = text.splitlines()
    assert lines[0].split() == ["run_id", "rows", "cost_usd"]
    assert lines[2].split()[:2] == ["20261125", "5"]
    assert lines[3].split()[:2] == ["r1", "5"]
    assert lines[-1] == "(2 rows)"
    assert "NULL" in query(root, "SELECT NULL AS nothing")


def test_json_serialises_dates_and_decimals(root: Path) -> None:
    sql = (
        "SELECT DATE '2026-11-25' AS d, TIMESTAMP '2026-11-25 10:30:00' AS t, "
        "1.50::DECIMAL(5,2) AS x, 3::DECIMAL(5,0) AS n, [1, 2] AS l, 'nan'::DOUBLE AS f"
    )
    assert json.loads(query(root, sql, "json")) == [
        {"d": "2026-11-25", "t": "2026-11-25T10:30:00", "x": 1.5, "n": 3, "l": [1, 2], "f": None}
    ]


def test_rerun_replaces_its_part(root: Path) -> None:
    smaller = ledger_for("r1").head(2)
    write_ledger(smaller, root, "demo", "r1")
    counts = json.loads(
        query(
            root, "SELECT run_id, count(*) AS n FROM ledger GROUP BY run_id ORDER BY run_id", "json"
        )
    )
    assert counts == [{"run_id": "20261125", "n": 5}, {"run_id": "r1", "n": 2}]
    assert sorted(p.name for p in (root / "pipeline=demo" / "run_id=r1").iterdir()) == [
        "part.parquet"
    ]


def test_views_give_the_ledger_sums(root: Path) -> None:
    ledger = ledger_for("20261125", scale=1000)
    con = connect(root)
    try:
        tables = {
            r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
        assert {"ledger", "cost_by_run", "cost_by_model", "savings_by_lever", "failures"} <= tables
        run = con.execute(
            "SELECT rows, failed_rows, dedup_rows, cost_usd, baseline_cost_usd, "
            "saved_usd FROM cost_by_run WHERE run_id = '20261125'"
        ).fetchone()
        levers = con.execute(
            "SELECT lever, saved_usd FROM savings_by_lever WHERE run_id = '20261125'"
        ).fetchall()
        failures = con.execute("SELECT run_id, row_id, error FROM failures").fetchall()
        by_model = con.execute(
            "SELECT model, rows, billed_rows, cost_usd FROM cost_by_model WHERE run_id = 'r1'"
        ).fetchall()
    finally:
        con.close()
    cost, baseline = ledger["cost_usd"].sum(), ledger["baseline_cost_usd"].sum()
    assert run[:3] == (5, 1, 1)
    assert run[3:] == pytest.approx((cost, baseline, baseline - cost), abs=1e-9)
    # 1M in + 100k out on gpt-4o-mini: 0.15 + 0.06, once online and once at half price
    assert round(run[3], 2) == round(0.21 + 0.105, 2)
    assert [name for name, _ in levers] == sorted(
        c[len("saved_") : -len("_usd")] for c in LEVER_COLUMNS
    )
    saved = dict(levers)
    assert sum(saved.values()) == pytest.approx(run[5], abs=1e-9)
    assert saved["exact"] == pytest.approx(3.5) and saved["cache"] == pytest.approx(3.5)
    assert saved["batch"] == pytest.approx(0.105) and saved["semantic"] == 0.0
    assert sorted(failures) == [("20261125", "5", "HTTP 400"), ("r1", "5", "HTTP 400")]
    assert by_model == [("gpt-4o-mini", 5, 2, pytest.approx(0.000315))]


def test_union_by_name_reads_older_parts(root: Path) -> None:
    older = ledger_for("old").drop("estimated_cost_usd", "compression_tokens_saved")
    write_ledger(older, root, "demo", "old")
    rows = json.loads(
        query(root, "SELECT estimated_cost_usd FROM ledger WHERE run_id = 'old'", "json")
    )
    assert rows == [{"estimated_cost_usd": None}] * 5


def test_failed_write_keeps_the_old_part_and_no_temp_file(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = root / "pipeline=demo" / "run_id=r1"
    before = (folder / "part.parquet").read_bytes()

    real_write = pq.ParquetWriter.write_table

    def broken(self: pq.ParquetWriter, table: Any, **kwargs: Any) -> None:
        real_write(self, table.slice(0, 1))  # half a file, then the disk fills
        raise OSError("disk full")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        write_ledger(ledger_for("r1").head(1), root, "demo", "r1")
    assert os.listdir(folder) == ["part.parquet"]
    assert (folder / "part.parquet").read_bytes() == before


def test_no_temp_files_after_writes(root: Path) -> None:
    write_views_file(root)
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert names == [
        "pipeline=demo/run_id=20261125/part.parquet",
        "pipeline=demo/run_id=r1/part.parquet",
        "views.sql",
    ]


def test_views_file_runs_from_any_directory(root: Path, elsewhere: Path) -> None:
    path = write_views_file(root)
    assert path == root.resolve() / "views.sql"
    con = duckdb.connect()
    try:
        con.execute(path.read_text())
        run = con.execute("SELECT run_id, rows FROM cost_by_run ORDER BY run_id").fetchall()
        levers = con.execute("SELECT count(*) FROM savings_by_lever").fetchone()
    finally:
        con.close()
    assert run == [("20261125", 5), ("r1", 5)]
    assert levers == (14,)


def test_connection_survives_a_change_of_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_ledger(ledger_for("r1"), tmp_path / "ledger", "demo", "r1")
    monkeypatch.chdir(tmp_path)
    con = connect(Path("ledger"))  # relative: resolved once, against this directory
    try:
        monkeypatch.chdir(tmp_path.parent)
        assert con.execute("SELECT count(*) FROM ledger").fetchone() == (5,)
    finally:
        con.close()


def test_no_parquet_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no ledger files"):
        connect(tmp_path)
    with pytest.raises(InputError, match="no ledger files"):
        query(tmp_path / "missing", "SELECT 1")


def test_sql_error_is_a_one_line_config_error(root: Path) -> None:
    with pytest.raises(ConfigError) as err:
        query(root, "SELECT * FROM ledgr")
    message = str(err.value)
    assert "\n" not in message
    assert "ledgr does not exist" in message
    with pytest.raises(ConfigError, match="unknown format"):
        query(root, "SELECT 1", "xml")


def test_write_refuses_bad_names_and_foreign_rows(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="run_id"):
        write_ledger(ledger_for("r1"), tmp_path, "demo", "../r1")
    with pytest.raises(ConfigError, match="pipeline"):
        write_ledger(ledger_for("r1"), tmp_path, "a/b", "r1")
    with pytest.raises(ValueError, match="run_id"):
        write_ledger(ledger_for("r1"), tmp_path, "demo", "r2")
    assert not any(tmp_path.rglob("*.parquet"))
