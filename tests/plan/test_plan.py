"""`batchopt plan`: the estimate before spending, checked against what the run then spent."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from batchopt.cli.main import main
from batchopt.ledger.selfhost import SelfHosted, compare

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ROOT / "pipelines" / "summarize.yaml"


def _env(fake, out: Path, keys: bool = True) -> dict[str, str | None]:
    env: dict[str, str | None] = {
        "BATCHOPT_OUT": str(out), "HF_HUB_OFFLINE": "1",
        "OPENAI_BASE_URL": fake.openai_base_url, "ANTHROPIC_BASE_URL": fake.anthropic_base_url,
        "OPENAI_API_KEY": "sk-test-openai" if keys else None,
        "ANTHROPIC_API_KEY": "sk-ant-test" if keys else None,
    }
    return env


def _plan(env, *args: str) -> dict:
    out = CliRunner(env=env).invoke(main, ["plan", str(PIPELINE), "--json", *args])
    assert out.exit_code == 0, out.output
    return json.loads(out.output[out.output.index("{"):])


def _run(env, run_id: str, *args: str) -> pl.DataFrame:
    out = CliRunner(env=env).invoke(main, ["run", str(PIPELINE), "--quiet", "--run-id", run_id,
                                           *args])
    assert out.exit_code == 0, out.output
    return pl.read_parquet(
        Path(env["BATCHOPT_OUT"]) / "ledger" / "pipeline=summarize" / f"run_id={run_id}"
        / "part.parquet"
    )


def test_plan_spends_nothing_and_the_run_lands_near_it(fake, tmp_path):
    env = _env(fake, tmp_path, keys=False)  # an estimate needs no API key
    first = _plan(env, "--profile", "anthropic")
    assert fake.stats()["requests"] == 0
    assert first["rows"] == 300 and first["cached"] == 0 and first["last_run"] is None
    (tier,) = first["tiers"]
    assert tier["output_source"] == "max_tokens" and tier["cached_input_tokens"] > 0
    assert tier["token_counter"].startswith("estimate:o200k_base")
    assert first["self_hosted"] and first["baseline_usd"] > first["cost_usd"] > 0

    env = _env(fake, tmp_path)
    day1 = _run(env, "day1", "--profile", "anthropic")
    spent = day1["cost_usd"].sum()
    assert fake.stats()["requests"] == first["distinct"] == day1.filter(
        pl.col("mode") == "online").height
    # Without history the output is priced at max_tokens: an overestimate, within 40%.
    assert spent < first["cost_usd"] <= spent * 1.4

    # Day 2 on fresh data (a new cache): the plan knows day 1's answer lengths and its error.
    fresh = str(tmp_path / "cache2")
    second = _plan(env, "--profile", "anthropic", "--cache-dir", fresh)
    assert fake.stats()["requests"] == first["distinct"]  # the plan sent nothing
    assert second["tiers"][0]["output_source"].startswith("mean of")
    last = second["last_run"]
    assert last["run_id"] == "day1" and last["spent_usd"] == pytest.approx(spent)
    assert last["estimated_usd"] == pytest.approx(day1["estimated_cost_usd"].sum())
    day2 = _run(env, "day2", "--profile", "anthropic", "--cache-dir", fresh)
    assert abs(second["cost_usd"] - day2["cost_usd"].sum()) <= 0.05 * day2["cost_usd"].sum()

    # Everything is in the response cache now: nothing to send, nothing to pay.
    again = _plan(env, "--profile", "anthropic", "--cache-dir", fresh)
    assert again["to_send"] == 0 and again["cost_usd"] == 0 and again["self_hosted"] == []


def test_plan_prints_the_estimate_and_the_self_hosted_line(fake, tmp_path):
    out = CliRunner(env=_env(fake, tmp_path)).invoke(
        main, ["plan", str(PIPELINE), "--profile", "openai"])
    assert out.exit_code == 0, out.output
    assert "nothing sent" in out.output and "estimate " in out.output
    assert "self-hosted l4-8b" in out.output and "GPU-hours" in out.output
    assert fake.stats()["requests"] == 0


def test_self_hosted_comparison_by_hand():
    setup = SelfHosted("g", "one GPU", usd_per_hour=2.0, input_tokens_per_s=1000.0,
                       output_tokens_per_s=100.0)
    # 3,600,000 input tokens = 1 h; 360,000 output tokens = 1 h; at 50% use: 4 GPU-hours.
    cost = compare(setup, rows=1000, input_tokens=3_600_000, output_tokens=360_000,
                   api_job_usd=10.0, utilisation=0.5)
    assert cost.gpu_hours == pytest.approx(4.0) and cost.job_usd == pytest.approx(8.0)
    assert cost.monthly_usd == pytest.approx(2.0 * 730)
    assert cost.break_even_jobs == pytest.approx(146.0)
    assert cost.break_even_rows == pytest.approx(146_000)
    # 7.2 s of busy time per row; 730 h at 50% use.
    assert cost.capacity_rows == pytest.approx(730 * 3600 * 0.5 / 7.2)


def test_local_time_comes_from_past_calls_when_the_ledger_has_them():
    from batchopt.ledger.history import History
    from batchopt.records import Request, Usage
    from batchopt.run.cost import expected_latency_ms
    from batchopt.run.throughput import LOCAL_GEN_TOK_S, LOCAL_PROMPT_TOK_S

    request = Request(key="k", provider="local", model="m", system="", user="u", max_tokens=10)
    usage = Usage(input_tokens=295, output_tokens=100)
    quiet = (295 / LOCAL_PROMPT_TOK_S + 100 / LOCAL_GEN_TOK_S) * 1000
    assert expected_latency_ms(History.empty(), request, usage) == pytest.approx(quiet)
    measured = History({}, {}, None, latency_ms={("local", "m"): (5150.0, 40)})
    assert expected_latency_ms(measured, request, usage) == 5150.0
