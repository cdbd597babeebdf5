"""Whole runs against the in-memory scripted provider: no fake server, no socket, the YAML as
written. The ledger is the scripted usage at the price table's prices, and the response cache
answers a second run of the same job with no call at all."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from helpers import pipeline_dict, write_pipeline

from batchopt.config.pipeline import load_pipeline
from batchopt.errors import EXIT_FAILED_ROWS, EXIT_OK
from batchopt.ledger.pricing import PriceTable
from batchopt.providers.base import ProviderSettings
from batchopt.providers.scripted import (
    ScriptedBatchProvider,
    ScriptedProvider,
    answer,
    fail_terminally,
    fail_transiently,
    stand_ins,
)
from batchopt.records import Request, Result, Usage
from batchopt.run.runner import RunOptions, RunSummary, run_pipeline

PRICES = PriceTable.load()
# the provider's key variable is still read (the run plans as the provider it names); never sent
ENV = {"OPENAI_API_KEY": "sk-unused", "ANTHROPIC_API_KEY": "sk-ant-unused"}
DISTINCT = 3  # the four sample tickets: T2 is T1 again, up to whitespace


@pytest.fixture(autouse=True)
def no_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every connection attempt is refused, and fails the test even when a client swallows the
    error (an SDK turns it into a failed row)."""
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("a scripted run opened a connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)  # a connection begins with a look-up
    yield
    assert attempts == [], "a scripted run tried to open a connection"


def _run(path: Path, run_id: str, **options: object) -> RunSummary:
    summary = run_pipeline(load_pipeline(path), RunOptions(run_id=run_id, **options), env=ENV)
    assert isinstance(summary, RunSummary)
    return summary


def _ledger(folder: Path, run_id: str) -> pl.DataFrame:
    return pl.read_parquet(folder / "out" / "ledger" / "pipeline=tickets" / f"run_id={run_id}"
                           / "part.parquet")


def test_a_run_pays_the_scripted_usage_and_a_second_run_reads_the_cache(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, pipeline_dict())
    provider = ScriptedProvider(answer("A ticket.", input_tokens=40, output_tokens=6))
    providers = stand_ins({"openai": provider})
    first = _run(path, "day1", providers=providers)
    assert first.exit_code == EXIT_OK and first.sent == DISTINCT
    assert len(provider.calls) == DISTINCT and len(set(provider.keys)) == DISTINCT
    assert {r.model for r in provider.calls} == {"gpt-4o-mini"}

    one = PRICES.cost(PRICES.price("openai", "gpt-4o-mini"), Usage(40, 6))
    ledger = _ledger(tmp_path, "day1")
    paid = ledger.filter(pl.col("dedup") == "none")
    assert paid.height == DISTINCT and ledger.height == 4
    assert paid["cost_usd"].to_list() == pytest.approx([one] * DISTINCT, rel=1e-12)
    assert ledger["cost_usd"].sum() == pytest.approx(DISTINCT * one, rel=1e-12)
    assert first.cost_usd == pytest.approx(DISTINCT * one, rel=1e-12)
    assert ledger["input_tokens"].sum() == DISTINCT * 40
    outputs = pl.read_parquet(tmp_path / "out" / "outputs.parquet")
    assert outputs["summary"].to_list() == ["A ticket."] * 4

    second = _run(path, "day2", providers=providers)
    assert len(provider.calls) == DISTINCT  # not one more call
    assert second.sent == 0 and second.cache_hits == DISTINCT and second.cost_usd == 0
    assert pl.read_parquet(tmp_path / "out" / "outputs.parquet")["summary"].to_list() == [
        "A ticket."] * 4


def test_retries_and_a_failed_row_in_a_run_through_a_factory(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, pipeline_dict())
    built: list[ScriptedProvider] = []

    def reply(request: Request) -> Result | BaseException:
        if "log in" in request.user:
            return fail_terminally("content refused")(request)
        return retried(request)

    retried = fail_transiently(1, answer("Refund.", input_tokens=30, output_tokens=2))

    def factory(settings: ProviderSettings) -> ScriptedProvider:
        assert settings.provider == "anthropic" and settings.api_key == "sk-ant-unused"
        built.append(ScriptedProvider(reply))
        return built[-1]

    providers = stand_ins({"anthropic": factory})
    summary = _run(path, "r1", profile="anthropic", providers=providers)
    assert summary.exit_code == EXIT_FAILED_ROWS and summary.failed_rows == 1
    calls = [key for provider in built for key in provider.keys]
    assert len(calls) == 2 * 2 + 1  # two refund requests twice each, the login one once
    ledger = _ledger(tmp_path, "r1")
    ok = ledger.filter(pl.col("status") == "ok")
    one = PRICES.cost(PRICES.price("anthropic", "claude-3-5-haiku-20241022"), Usage(30, 2))
    assert ledger["cost_usd"].sum() == pytest.approx(2 * one, rel=1e-12)
    assert ok.height == 3 and ok.filter(pl.col("dedup") == "none")["attempts"].to_list() == [2, 2]
    failed = ledger.filter(pl.col("status") == "failed")
    assert failed.height == 1 and "content refused" in failed["error"][0]


def test_a_batch_run_pays_the_batch_price(tmp_path: Path) -> None:
    data = pipeline_dict(execution={"mode": "batch", "poll_seconds": 0.01})
    path = write_pipeline(tmp_path, data)
    provider = ScriptedBatchProvider(answer("Batched.", input_tokens=50, output_tokens=4), polls=2)
    providers = stand_ins({"openai": provider})
    summary = _run(path, "b1", providers=providers)
    assert summary.exit_code == EXIT_OK and len(provider.batches) == 1
    assert len(provider.calls) == DISTINCT
    price = PRICES.price("openai", "gpt-4o-mini")
    ledger = _ledger(tmp_path, "b1")
    assert (ledger.filter(pl.col("dedup") == "none")["mode"] == "batch").all()
    expected = DISTINCT * PRICES.cost(price, Usage(50, 4), batch=True)
    assert ledger["cost_usd"].sum() == pytest.approx(expected, rel=1e-12)
