"""A batch cascade whose tiers span OpenAI and Anthropic, driven as cron drives it: `run
--no-wait` submits, `status` waits, the same `run` collects and moves on (issue 21)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from helpers import fake_env, pipeline_dict, write_pipeline

from batchopt.cli.main import main
from batchopt.errors import EXIT_PENDING

LONG = ("My parcel arrived damaged, the box was crushed, two items are missing, the invoice shows "
        "the wrong address and the tracking page still says it is in transit, what now?")


def _pipeline(tmp_path: Path) -> Path:
    # cheap and mid cut the long tickets' answers short (finish_reason escalates them), strong
    # does not: the long rows visit openai, anthropic, then openai again
    data = pipeline_dict(
        routing={"strategy": "cascade", "tiers": ["cheap", "mid", "strong"],
                 "validators": [{"type": "finish_reason"}]},
        execution={"mode": "batch", "poll_seconds": 0.1},
    )
    data["profiles"] = {
        "cheap": {"provider": "openai", "model": "gpt-4o-mini", "max_tokens": 12},
        "mid": {"provider": "anthropic", "model": "claude-3-5-haiku-20241022", "max_tokens": 12},
        "strong": {"provider": "openai", "model": "gpt-4o", "max_tokens": 96},
    }
    data["default_profile"] = "cheap"
    path = write_pipeline(tmp_path, data)
    rows = [{"ticket_id": f"S{i}", "subject": "Order", "body": f"Where is order #{100 + i}?"}
            for i in range(5)]
    rows += [{"ticket_id": f"L{i}", "subject": "Order", "body": f"{LONG} #{200 + i}"}
             for i in range(3)]
    pl.DataFrame(rows).write_parquet(tmp_path / "data" / "tickets.parquet")
    return path


def test_a_cascade_across_providers_is_submitted_waited_on_and_collected(fake, tmp_path,
                                                                          monkeypatch):
    fake.batch_seconds = 0.3
    for name, value in fake_env(fake, "sk-test-mix-01", "sk-ant-test-mix-02").items():
        monkeypatch.setenv(name, value)
    path = _pipeline(tmp_path)
    cli = CliRunner()
    run = ["run", str(path), "--quiet", "--no-wait", "--run-id", "night"]
    status = ["status", str(path), "--run-id", "night"]

    codes, answered = [], None
    for _ in range(40):  # cron: a run, then status until it says go, then the same run
        result = cli.invoke(main, run)
        codes.append(result.exit_code)
        if result.exit_code != EXIT_PENDING:
            answered = result
            break
        tier = ("cheap (openai/gpt-4o-mini)", "mid (anthropic/claude-3-5-haiku-20241022)",
                "strong (openai/gpt-4o)")[len(codes) - 1]
        assert f"  round {len(codes)} · {tier}: " in result.output, result.output
        while (polled := cli.invoke(main, status)).exit_code == EXIT_PENDING:
            assert "error" not in polled.output.lower(), polled.output
            time.sleep(0.1)
        assert polled.exit_code == 0, polled.output
        sensor = json.loads(cli.invoke(main, [*status, "--json"]).output)
        assert sensor["state"] == "ready" and sensor["pending_batches"] == 0
        newest = sensor["batches"][-1]
        assert newest["round"] == len(codes) and newest["state"] == "pending"  # to collect
        assert newest["done"] and newest["succeeded"] == newest["requests"]
    assert answered is not None and answered.exit_code == 0, (codes, answered and answered.output)
    assert codes.count(EXIT_PENDING) == 3  # one invocation per tier's batch, then the collect
    lines = [line for line in cli.invoke(main, status).output.splitlines() if "round" in line]
    assert [line.split(":")[0].strip() for line in lines] == [
        "round 1 · cheap (openai/gpt-4o-mini)",
        "round 2 · mid (anthropic/claude-3-5-haiku-20241022)",
        "round 3 · strong (openai/gpt-4o)"]

    stats = fake.stats()
    assert stats["batches_created"] == 3
    ledger = pl.read_parquet(tmp_path / "out" / "ledger" / "pipeline=tickets" / "run_id=night"
                             / "part.parquet")
    assert ledger["status"].eq("ok").all() and ledger.height == 8
    long_rows = ledger.filter(pl.col("row_id").str.starts_with("L"))
    assert long_rows["model"].eq("gpt-4o").all()
    outputs = pl.read_parquet(tmp_path / "out" / "outputs.parquet")
    assert outputs["summary"].null_count() == 0
    # the ledger is the fake's bill at batch prices, per model, in tokens and dollars
    bill = fake.bill()
    assert bill["online_usd"] == 0 and bill["unpriced"] == []
    assert set(bill["by_model"]) == {"gpt-4o-mini", "claude-3-5-haiku-20241022", "gpt-4o"}
    assert ledger["cost_usd"].sum() == pytest.approx(bill["batch_usd"], rel=1e-12, abs=1e-15)
    sensor = json.loads(cli.invoke(main, [*status, "--json"]).output)
    assert sensor["state"] == "finished" and sensor["exit_code"] == 0
    assert [(b["tier"], b["provider"], b["model"], b["state"]) for b in sensor["batches"]] == [
        ("cheap", "openai", "gpt-4o-mini", "collected"),
        ("mid", "anthropic", "claude-3-5-haiku-20241022", "collected"),
        ("strong", "openai", "gpt-4o", "collected")]
    assert sensor["spent_usd"] == pytest.approx(bill["batch_usd"], rel=1e-12, abs=1e-15)
    assert sensor["unconfirmed_usd"] == 0
    calls = pl.read_parquet(tmp_path / "out" / "ledger" / "pipeline=tickets" / "run_id=night"
                            / "calls.parquet")
    for model, billed in bill["by_model"].items():
        mine = calls.filter(pl.col("model") == model)
        assert mine["input_tokens"].sum() == billed["batch"]["input_tokens"], model
        assert mine["output_tokens"].sum() == billed["batch"]["output_tokens"], model
    assert ledger["input_tokens"].sum() == sum(b["batch"]["input_tokens"]
                                               for b in bill["by_model"].values())
    assert ledger["output_tokens"].sum() == sum(b["batch"]["output_tokens"]
                                                for b in bill["by_model"].values())


def test_a_pending_run_lists_each_batch_once(fake, tmp_path, monkeypatch):
    """A cascade step sends its judge calls and its escalations to one tier: two batches, each
    listed once (it said "4 batch(es) pending" for 2)."""
    import yaml

    fake.batch_seconds = 0.3
    for name, value in fake_env(fake, "sk-test-mix-01", "sk-ant-test-mix-02").items():
        monkeypatch.setenv(name, value)
    path = _pipeline(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["routing"] = {"strategy": "cascade", "tiers": ["cheap", "strong"],
                       "validators": [{"type": "finish_reason"},
                                      {"type": "judge", "tier": "strong"}]}
    path.write_text(yaml.safe_dump(data))
    run = ["run", str(path), "--no-wait", "--run-id", "judged"]
    cli = CliRunner()
    assert cli.invoke(main, run).exit_code == EXIT_PENDING  # the cheap tier's batch
    time.sleep(0.5)
    second = cli.invoke(main, run)  # collected: the judge's and the escalations' batches
    assert second.exit_code == EXIT_PENDING, second.output
    assert "2 batch(es) pending" in second.output, second.output
    listed = [line for line in second.output.splitlines() if line.startswith("  round")]
    assert len(listed) == 2 and len(set(listed)) == 2, listed
