"""`--limit N`: `run`, `plan` and `dedup` on the input's first N rows (files in order, then
rows), said so in what they print and, for a run, in every ledger row (`row_limit`)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from helpers import pipeline_dict, write_pipeline, write_tickets

from batchopt.cli.main import main
from batchopt.io.reader import FILE_COLUMN, ROW_COLUMN, read_rows
from batchopt.ledger.store import query

IDS = [f"T{i}" for i in range(1, 8)]


def _job(tmp_path: Path) -> Path:
    """A pipeline over a folder of two files: a.parquet holds T1-T4, b.parquet T5-T7."""
    data = pipeline_dict()
    data["input"]["path"] = "data/tickets"
    path = write_pipeline(tmp_path, data, tickets=False)
    rows = [{"ticket_id": i, "subject": "s", "body": f"ticket {i}"} for i in IDS]
    write_tickets(tmp_path / "data" / "tickets" / "a.parquet", rows[:4])
    write_tickets(tmp_path / "data" / "tickets" / "b.parquet", rows[4:])
    return path


def _env(fake) -> dict[str, str]:
    return {"OPENAI_BASE_URL": fake.openai_base_url, "OPENAI_API_KEY": "sk-test",
            "ANTHROPIC_BASE_URL": fake.anthropic_base_url, "ANTHROPIC_API_KEY": "sk-ant-test"}


def _invoke(fake, *args: str):
    return CliRunner().invoke(main, list(args), env=_env(fake))


def _ledger(tmp_path: Path, run_id: str) -> pl.DataFrame:
    return pl.read_parquet(tmp_path / "out" / "ledger" / "pipeline=tickets" / f"run_id={run_id}"
                           / "part.parquet")


def test_read_rows_stops_at_the_limit_across_files(tmp_path):
    _job(tmp_path)
    rows = read_rows(tmp_path / "data" / "tickets", "ticket_id", ["body"], limit=6)
    assert rows["ticket_id"].to_list() == IDS[:6]
    files = [Path(f).name for f in rows[FILE_COLUMN].cast(pl.String)]
    assert list(zip(files, rows[ROW_COLUMN], strict=True))[3:] == [
        ("a.parquet", 3), ("b.parquet", 0), ("b.parquet", 1)]
    assert read_rows(tmp_path / "data" / "tickets", "ticket_id", ["body"], limit=50).height == 7


def test_run_reads_the_first_rows_and_records_the_limit(fake, tmp_path):
    path = _job(tmp_path)
    result = _invoke(fake, "run", str(path), "--run-id", "trial", "--limit", "5")
    assert result.exit_code == 0, result.output
    assert "limit              first 5 rows of the input (--limit 5)" in result.stdout
    outputs = pl.read_parquet(tmp_path / "out" / "outputs.parquet")
    assert outputs["ticket_id"].to_list() == IDS[:5]
    assert fake.stats()["requests"] == 5
    ledger = _ledger(tmp_path, "trial")
    assert sorted(ledger["row_id"]) == IDS[:5]
    assert ledger["row_limit"].to_list() == [5] * 5

    whole = _invoke(fake, "run", str(path), "--run-id", "whole")
    assert whole.exit_code == 0, whole.output
    assert "limit " not in whole.stdout
    assert _ledger(tmp_path, "whole")["row_limit"].null_count() == 7
    by_run = query(tmp_path / "out" / "ledger",
                   "select run_id, rows, row_limit from cost_by_run order by run_id", "json")
    assert json.loads(by_run) == [{"run_id": "trial", "rows": 5, "row_limit": 5},
                                  {"run_id": "whole", "rows": 7, "row_limit": None}]


def test_a_run_resumed_with_another_limit_covers_what_it_reads(fake, tmp_path):
    path = _job(tmp_path)
    first = _invoke(fake, "run", str(path), "--run-id", "r1", "--limit", "2")
    assert first.exit_code == 0, first.output
    again = _invoke(fake, "run", str(path), "--run-id", "r1", "--limit", "4")
    assert again.exit_code == 0, again.output
    assert fake.stats()["requests"] == 4  # the first two answers are not bought twice
    assert "--limit changed since this run id last ran (2 -> 4)" in again.stdout
    ledger = _ledger(tmp_path, "r1")
    assert sorted(ledger["row_id"]) == IDS[:4] and ledger["row_limit"].to_list() == [4] * 4
    same = _invoke(fake, "run", str(path), "--run-id", "r1", "--limit", "4")
    assert same.exit_code == 0 and "--limit changed" not in same.stdout


def test_plan_estimates_the_first_rows_and_says_so(fake, tmp_path):
    path = _job(tmp_path)
    result = _invoke(fake, "plan", str(path), "--limit", "3")
    assert result.exit_code == 0, result.output
    assert "rows               3" in result.stdout
    assert "limit              first 3 rows of the input (--limit 3)" in result.stdout
    as_json = _invoke(fake, "plan", str(path), "--limit", "3", "--json")
    estimate = json.loads(as_json.stdout)
    assert estimate["rows"] == 3 and estimate["row_limit"] == 3 and estimate["distinct"] == 3
    more = json.loads(_invoke(fake, "plan", str(path), "--limit", "70", "--json").stdout)
    assert more["rows"] == 7 and more["row_limit"] == 70
    assert "all 7 rows of the input (fewer than --limit 70)" in _invoke(
        fake, "plan", str(path), "--limit", "70").stdout
    assert json.loads(_invoke(fake, "plan", str(path), "--json").stdout)["row_limit"] is None
    assert fake.stats()["requests"] == 0


def test_dedup_groups_the_first_rows(tmp_path):
    folder = tmp_path / "in"
    write_tickets(folder / "a.parquet", [{"id": "a", "text": "same"}, {"id": "b", "text": "same"}])
    write_tickets(folder / "b.parquet", [{"id": "c", "text": "same"}, {"id": "d", "text": "x"}])
    out = tmp_path / "groups.parquet"
    result = CliRunner().invoke(main, ["dedup", str(folder), "--id-column", "id", "--text-column",
                                       "text", "--no-semantic", "--out", str(out),
                                       "--limit", "3"])
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(out)["id"].to_list() == ["a", "b", "c"]
    assert "exact duplicates 2" in result.stdout
    assert "limit: first 3 rows of the input (--limit 3)" in result.stdout


@pytest.mark.parametrize("command", ["run", "plan", "dedup"])
def test_limit_zero_is_refused(fake, tmp_path, command):
    path = _job(tmp_path)
    args = {"run": ["run", str(path)], "plan": ["plan", str(path)],
            "dedup": ["dedup", str(tmp_path / "data" / "tickets"), "--id-column", "ticket_id",
                      "--text-column", "body", "--out", str(tmp_path / "g.parquet")]}[command]
    result = _invoke(fake, *args, "--limit", "0")
    assert result.exit_code == 2, result.output
    assert "--limit" in result.output and "x>=1" in result.output
    assert not (tmp_path / "out").exists() and fake.stats()["requests"] == 0
