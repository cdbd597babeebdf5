"""End to end: the shipped pipeline through the real SDKs against the fake server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from batchopt.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ROOT / "pipelines" / "summarize.yaml"
BATCHOPT = Path(sys.executable).parent / "batchopt"


def _env(fake, out: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    env.update(
        {
            "BATCHOPT_OUT": str(out),
            "OPENAI_BASE_URL": fake.openai_base_url,
            "OPENAI_API_KEY": "sk-test-openai-key",
            "ANTHROPIC_BASE_URL": fake.anthropic_base_url,
            "ANTHROPIC_API_KEY": "sk-ant-test-key",
        }
    )
    return env


def _run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BATCHOPT), *args], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT
    )


@pytest.mark.parametrize(
    ("profile", "model"),
    [
        ("openai", "gpt-4o-mini"),
        ("anthropic", "claude-3-5-haiku-20241022"),
    ],
)
def test_shipped_pipeline_runs_through_the_sdk_and_reconciles(fake, tmp_path, profile, model):
    env = _env(fake, tmp_path)
    first = _run_cli(["run", str(PIPELINE), "--profile", profile, "--run-id", "day1"], env)
    assert first.returncode == 0, first.stderr
    assert "distinct requests" in first.stdout and "baseline" in first.stdout

    tickets = pl.read_parquet(ROOT / "sample_data" / "tickets.parquet")
    outputs = pl.read_parquet(tmp_path / "summarize" / "outputs.parquet")
    assert outputs.height == tickets.height
    assert outputs["summary"].null_count() == 0
    assert set(outputs["ticket_id"]) == set(tickets["ticket_id"])

    ledger_file = tmp_path / "ledger" / "pipeline=summarize" / "run_id=day1" / "part.parquet"
    ledger = pl.read_parquet(ledger_file)
    assert ledger.height == tickets.height
    assert ledger["row_id"].n_unique() == tickets.height
    stats = fake.stats()
    distinct = ledger.filter(pl.col("dedup") == "none").height
    assert stats["requests"] == distinct < tickets.height
    # What the ledger says was spent is what the server billed, at the server's own prices.
    bill = fake.bill()
    assert bill["unpriced"] == [] and bill["total_usd"] > 0
    assert abs(ledger["cost_usd"].sum() - bill["total_usd"]) < 1e-12
    assert ledger["input_tokens"].sum() == stats["input_tokens"]
    assert ledger["output_tokens"].sum() == stats["output_tokens"]
    log = fake.log()
    assert ledger["cached_input_tokens"].sum() == sum(e["cache_read_tokens"] for e in log)
    assert ledger["cache_write_tokens"].sum() == sum(e["cache_write_tokens"] for e in log)
    # The static prefix (system, context, examples) is cached: every paid row but the first
    # reads it, and the first alone writes it (Anthropic) or pays it in full (OpenAI).
    paid = ledger.filter(pl.col("mode") == "online")
    assert (paid["cached_input_tokens"] == 0).sum() == 1
    assert paid["cached_input_tokens"].min() == 0 < paid["cached_input_tokens"].median()
    assert (paid["cache_write_tokens"] > 0).sum() == (1 if profile == "anthropic" else 0)
    assert (paid["saved_prompt_cache_usd"] > 0).sum() == paid.height - 1
    # Compression removed tokens from some rows, and the ledger says how many.
    assert (ledger["compression_tokens_saved"] > 0).sum() > tickets.height // 4

    followers = ledger.filter(pl.col("dedup") == "exact")
    assert followers.height > 0
    assert (followers["cost_usd"] == 0).all() and (followers["mode"] == "dedup").all()
    reps = dict(zip(ledger["row_id"], ledger["group_id"], strict=True))
    for row in followers.iter_rows(named=True):
        assert row["representative_id"] != row["row_id"]
        assert reps[row["representative_id"]] == row["group_id"]
    levers = [c for c in ledger.columns if c.startswith("saved_")]
    gap = (ledger["baseline_cost_usd"] - ledger["cost_usd"]) - ledger.select(
        pl.sum_horizontal(levers)
    )[:, 0]
    assert gap.abs().max() < 1e-9

    # The same job again: no request, $0, and the summary says so.
    again = _run_cli(["run", str(PIPELINE), "--profile", profile, "--run-id", "day1-again"], env)
    assert again.returncode == 0, again.stderr
    assert fake.stats()["requests"] == distinct
    assert "spent $0" in again.stdout
    second = pl.read_parquet(
        tmp_path / "ledger" / "pipeline=summarize" / "run_id=day1-again" / "part.parquet"
    )
    assert second["cost_usd"].sum() == 0
    assert set(second["mode"]) == {"cache", "dedup"}
    hits = second.filter(pl.col("mode") == "cache")
    assert (hits["cached_from_run"] == "day1").all()  # the run that paid for the answer
    assert pl.read_parquet(tmp_path / "summarize" / "outputs.parquet")["summary"].to_list() == (
        outputs["summary"].to_list()
    )


def test_ledger_query_formats(fake, tmp_path):
    env = _env(fake, tmp_path)
    assert (
        _run_cli(["run", str(PIPELINE), "--profile", "openai", "--run-id", "q"], env).returncode
        == 0
    )
    runner = CliRunner()
    ledger_dir = str(tmp_path / "ledger")
    sql = "select mode, count(*) as n from ledger group by mode order by mode"
    as_json = runner.invoke(
        main, ["ledger", "query", sql, "--ledger", ledger_dir, "--format", "json"]
    )
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.output)
    assert {r["mode"] for r in rows} == {"online", "dedup"}
    assert (
        sum(r["n"] for r in rows)
        == pl.read_parquet(ROOT / "sample_data" / "tickets.parquet").height
    )
    as_csv = runner.invoke(
        main, ["ledger", "query", sql, "--ledger", ledger_dir, "--format", "csv"]
    )
    assert as_csv.output.splitlines()[0] == "mode,n"
    table = runner.invoke(main, ["ledger", "query", sql, "--ledger", ledger_dir])
    assert "online" in table.output and "dedup" in table.output
    bad = runner.invoke(
        main, ["ledger", "query", "select nope from ledger", "--ledger", ledger_dir]
    )
    assert bad.exit_code == 2 and "nope" in bad.output
    assert (tmp_path / "ledger" / "views.sql").exists()


def test_failed_rows_give_exit_1_and_are_in_the_ledger(fake, tmp_path):
    env = _env(fake, tmp_path)
    fake.set_faults([{"status": 400, "count": 10_000}])
    result = _run_cli(["run", str(PIPELINE), "--profile", "openai", "--run-id", "bad"], env)
    assert result.returncode == 1, result.stdout + result.stderr
    ledger = pl.read_parquet(
        tmp_path / "ledger" / "pipeline=summarize" / "run_id=bad" / "part.parquet"
    )
    assert (ledger["status"] == "failed").all()
    assert ledger["cost_usd"].sum() == 0
    assert fake.stats()["requests"] == 0


def test_transient_faults_are_retried_without_paying_twice(fake, tmp_path):
    env = _env(fake, tmp_path)
    # The first request goes alone (it warms the prompt cache), so it may meet every fault: four
    # leave it one of its five attempts.
    fake.set_faults([{"status": 429, "retry_after": 0.05, "count": 2}, {"status": 503, "count": 2}])
    result = _run_cli(["run", str(PIPELINE), "--profile", "openai", "--run-id", "retry"], env)
    assert result.returncode == 0, result.stderr
    ledger = pl.read_parquet(
        tmp_path / "ledger" / "pipeline=summarize" / "run_id=retry" / "part.parquet"
    )
    assert (ledger["status"] == "ok").all()
    assert ledger["attempts"].sum() == ledger.filter(pl.col("mode") == "online").height + 4
    hashes = [e["request_hash"] for e in fake.log()]
    assert len(hashes) == len(set(hashes))
