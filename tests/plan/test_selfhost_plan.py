"""Self-hosted tiers in `batchopt plan`: the self_hosted block, the reference data, and the
quantisation what-if table, every figure recomputed here from the formulas (never by calling
the code under test) and the 7B weights checked against the seed's table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from helpers import pipeline_dict, write_pipeline

from batchopt.cli.main import main
from batchopt.config.pipeline import load_pipeline
from batchopt.config.selfhost import PRECISIONS
from batchopt.config.selfhost_reference import REFERENCE_FILE
from batchopt.errors import ConfigError
from batchopt.ledger.history import History
from batchopt.records import Request, Usage
from batchopt.run.bench_record import BenchRecord
from batchopt.run.cost import expected_latency_ms
from batchopt.run.throughput import resolve_throughput

# The seed's "Memory Savings" table: a 7B model at FP16 / INT8 / INT4.
SEED_7B_GB = {"fp16": 14.0, "int8": 7.0, "int4": 3.5}
# Llama 2 7B: 32 layers, 32 key-value heads of 128; a 16-bit KV cache.
KV_BYTES_PER_TOKEN = 2 * 32 * 32 * 128 * 2
GPT_4O_MINI = (0.15, 0.60)  # $/1M input, output (prices.yaml)
HOURS_PER_MONTH = 730
STATED = {"prompt_tokens_per_s": 2000.0, "generated_tokens_per_s": 400.0}


def _vllm(**self_hosted: Any) -> dict[str, Any]:
    block = {"parameters_b": 7, "precision": "fp16", "gpu": "l4-24gb", "gpu_count": 2,
             "usd_per_hour": 1.60, "architecture": "llama-2-7b", "sequences": 8,
             "context_tokens": 2048, "throughput": STATED} | self_hosted
    return {"provider": "openai", "model": "llama-2-7b-chat", "base_url": "http://127.0.0.1:9/v1",
            "max_tokens": 32, "self_hosted": block}


def _pipeline(tmp_path: Path, vllm: dict[str, Any] | None = None, **overrides: Any) -> Path:
    profiles = {"vllm": vllm or _vllm(),
                "openai": {"provider": "openai", "model": "gpt-4o-mini", "max_tokens": 32}}
    settings: dict[str, Any] = {
        "profiles": profiles, "default_profile": "vllm",
        "routing": {"strategy": "cascade", "tiers": ["vllm", "openai"],
                    "validators": [{"type": "refusal"}]},
        # no pricing.models entry: a self-hosted tier is billed by machine time at its $/hour
    }
    data = pipeline_dict(**(settings | overrides))
    return write_pipeline(tmp_path, data)


def _plan(path: Path, *args: str) -> dict[str, Any]:
    out = CliRunner(env={"OPENAI_API_KEY": None}).invoke(main, ["plan", str(path), "--json",
                                                                *args])
    assert out.exit_code == 0, out.output
    return json.loads(out.output[out.output.index("{"):])


def _whatif(plan: dict[str, Any], tier: str = "vllm") -> dict[str, Any]:
    (entry,) = [c for c in plan["self_hosted"] if c["whatif"] and c["whatif"]["tier"] == tier]
    return entry["whatif"]


# --- the YAML -------------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "message"), [
    ({"precision": "q9_x"}, "profiles.vllm.self_hosted.precision: 'q9_x' is not a known"),
    ({"parameters_b": 0}, "profiles.vllm.self_hosted.parameters_b: Input should be greater"),
    ({"gpu": "tpu-v5"}, "profiles.vllm.self_hosted: gpu: 'tpu-v5' is not in the reference"),
    ({"gpu": None, "gpu_memory_gb": None},
     "profiles.vllm.self_hosted: gpu: give a gpu from the reference data or gpu_memory_gb"),
    ({"architecture": None, "layers": 32}, "head_dim, kv_heads: give layers, kv_heads and"),
    ({"architecture": "gpt-9"}, "architecture: 'gpt-9' is not in the reference data"),
    ({"throughput": {"prompt_tokens_per_s": 0, "generated_tokens_per_s": 1}},
     "profiles.vllm.self_hosted.throughput.prompt_tokens_per_s: Input should be greater"),
    ({"gpu_cunt": 2}, "profiles.vllm.self_hosted.gpu_cunt: unknown key"),
    ({"reference": {"gpus": {"l4-24gb": {"memory_gb": -1}}}},
     "profiles.vllm.self_hosted.reference.gpus.l4-24gb.memory_gb: Input should be greater"),
    ({"usd_per_hour": None, "gpu": "mine", "reference": {"gpus": {"mine": {"memory_gb": 48}}}},
     "profiles.vllm.self_hosted: usd_per_hour: required, the reference data has no price"),
])
def test_a_bad_self_hosted_block_names_its_key(tmp_path, change, message):
    with pytest.raises(ConfigError) as caught:
        load_pipeline(_pipeline(tmp_path, _vllm(**change)))
    assert message in str(caught.value)


@pytest.mark.parametrize(("profile", "message"), [
    ({"provider": "anthropic", "model": "claude-3-5-haiku"},
     "profiles.vllm.self_hosted: only for provider 'openai'"),
    ({"provider": "openai", "model": "m"},
     "profiles.vllm.self_hosted: provider 'openai' needs base_url"),
    ({"provider": "local", "model": "m", "self_hosted": {"usd_per_hour": 1.0}},
     "profiles.vllm.self_hosted: usd_per_hour: a local tier's hourly price is the profile's"),
])
def test_a_self_hosted_block_fits_its_provider(tmp_path, profile, message):
    block = {"parameters_b": 7, "precision": "int4", "gpu": "l4-24gb",
             **profile.pop("self_hosted", {})}
    with pytest.raises(ConfigError) as caught:
        load_pipeline(_pipeline(tmp_path, {**profile, "self_hosted": block}))
    assert message in str(caught.value)


def test_the_reference_data_has_bits_a_source_and_a_date_for_every_entry():
    raw = yaml.safe_load(REFERENCE_FILE.read_text(encoding="utf-8"))
    assert set(raw["precisions"]) == set(PRECISIONS)
    for section in ("precisions", "gpus", "architectures"):
        for name, entry in raw[section].items():
            assert entry["source"].strip() and entry["as_of"], f"{section}.{name}"
    bits = {name: entry["bits"] for name, entry in raw["precisions"].items()}
    assert (bits["fp16"], bits["int8"], bits["int4"]) == (16, 8, 4)  # the seed's table
    # GGUF legacy blocks of 32 weights: q8_0 34 bytes, q4_1 20, q4_0 18 (scales included)
    assert (bits["q8_0"], bits["q4_1"], bits["q4_0"]) == (34 * 8 / 32, 20 * 8 / 32, 18 * 8 / 32)
    assert all(raw[k]["source"] and raw[k]["as_of"] for k in ("overhead_share",
                                                              "kv_bytes_per_value"))


# --- the what-if table ----------------------------------------------------------------------

def test_plan_prints_the_what_if_table_and_the_break_even(tmp_path):
    out = CliRunner(env={"OPENAI_API_KEY": None}).invoke(main, ["plan", str(_pipeline(tmp_path))])
    assert out.exit_code == 0, out.output
    text = out.output
    assert "self-hosted tier vllm: openai/llama-2-7b-chat, 7B parameters, FP16" in text
    assert "throughput (stated): 2,000 prompt tok/s, 400.0 generated tok/s" in text
    assert "memory = 7B parameters x bits / 8 (weights) + KV cache 2 x 32 layers" in text
    assert "req/month vs gpt-4o-mini" in text
    assert "break-even vs tier openai (openai/gpt-4o-mini)" in text
    cells = {line[2:].split()[0]: (line[0], line[2:].split()) for line in text.splitlines()
             if line[:2] in ("* ", "  ") and line[2:].split()[:1] in (["FP16"], ["INT8"],
                                                                      ["INT4"], ["Q4_K_M"])}
    # precision, bits, weights GB, KV GB, total GB, GPUs, $/hour, ...: the seed's 14 / 7 / 3.5
    assert cells["FP16"][0] == "*" and cells["INT8"][0] == " "  # the configured precision
    assert [cells[p][1][2] for p in ("FP16", "INT8", "INT4")] == ["14.00", "7.00", "3.50"]
    assert [cells[p][1][5] for p in ("FP16", "INT8", "INT4")] == ["2", "1", "1"]
    assert "source: fp16: 16 bits, seed" in text and "as of 2026-11-25" in text


def test_every_figure_follows_the_formulas(tmp_path):
    plan = _plan(_pipeline(tmp_path))
    w = _whatif(plan)
    rows = {r["precision"]: r for r in w["rows"]}
    mix_in, mix_out = w["mix_input_tokens"], w["mix_output_tokens"]
    assert mix_out == 32  # no history: max_tokens
    per_gpu = 1.60 / 2  # the set-up's $/hour over its GPUs
    kv = KV_BYTES_PER_TOKEN * 2048 * 8 / 1e9
    api = (mix_in * GPT_4O_MINI[0] + mix_out * GPT_4O_MINI[1]) / 1e6  # the seed's formula
    seconds = mix_in / STATED["prompt_tokens_per_s"] + mix_out / STATED["generated_tokens_per_s"]
    for name, weights in SEED_7B_GB.items():
        row = rows[name]
        assert row["weights_gb"] == pytest.approx(weights)  # 14 / 7 / 3.5 GB
        assert row["kv_gb"] == pytest.approx(kv)
        total = weights * 1.2 + kv
        assert row["total_gb"] == pytest.approx(total)
        gpus = math.ceil(total / 24)
        assert row["gpus"] == gpus
        hourly = gpus * per_gpu
        assert row["usd_per_hour"] == pytest.approx(hourly)
        assert row["usd_per_1m_input"] == pytest.approx(hourly / (2000 * 3600) * 1e6)
        assert row["usd_per_1m_output"] == pytest.approx(hourly / (400 * 3600) * 1e6)
        assert row["usd_per_1m_tokens"] == pytest.approx(
            hourly * seconds / 3600 / (mix_in + mix_out) * 1e6)
        (be,) = row["break_even"]
        assert be["api_usd_per_request"] == pytest.approx(api)
        assert be["requests_per_month"] == pytest.approx(hourly * HOURS_PER_MONTH / api)
        capacity = HOURS_PER_MONTH * 3600 * 0.5 / seconds  # self_hosted.utilisation 0.5
        assert be["beyond_capacity"] == (hourly * HOURS_PER_MONTH / api > capacity)
    # FP16 with a 16k-token KV cache needs both 24 GB GPUs; INT8 and INT4 fit on one
    assert [rows[p]["gpus"] for p in ("fp16", "int8", "int4")] == [2, 1, 1]
    assert rows["fp16"]["configured"] and not rows["int4"]["configured"]
    assert w["throughput_source"] == "stated" and "not scaled" in w["scaling"]
    # the tier's share of the job, re-costed by time at the stated throughput and $1.60/h
    (tier,) = [t for t in plan["tiers"] if t["tier"] == "vllm"]
    busy_s = tier["input_tokens"] / 2000 + tier["output_tokens"] / 400
    assert tier["online_usd"] == pytest.approx(busy_s / 3600 * 1.60)
    assert tier["batch_usd"] is None


def test_the_seed_speed_factors_scale_throughput_only_when_the_reference_says_so(tmp_path):
    vllm = _vllm(reference={"scale_throughput": True})
    w = _whatif(_plan(_pipeline(tmp_path, vllm)))
    rows = {r["precision"]: r for r in w["rows"]}
    assert "scaled by speed_vs_fp16" in w["scaling"]
    # the seed: INT8 ~1.2-1.5x (the low end in the reference), INT4 ~2x; prompt reading kept
    assert rows["int4"]["generated_tokens_per_s"] == pytest.approx(400 * 2.0)
    assert rows["int8"]["generated_tokens_per_s"] == pytest.approx(400 * 1.2)
    assert rows["int4"]["prompt_tokens_per_s"] == 2000
    assert rows["q4_0"]["speed_factor"] is None  # no figure for it: not scaled
    assert rows["q4_0"]["generated_tokens_per_s"] == 400


def test_a_pipeline_overrides_reference_figures_and_names_them(tmp_path):
    vllm = _vllm(gpu="a100-80gb", gpu_count=None, usd_per_hour=None,
                 reference={"gpus": {"a100-80gb": {"usd_per_hour": 2.25}},
                            "overhead_share": 0.0})
    w = _whatif(_plan(_pipeline(tmp_path, vllm)))
    fp16 = next(r for r in w["rows"] if r["precision"] == "fp16")
    assert fp16["overhead_gb"] == 0 and fp16["gpus"] == 1 and w["gpu_count"] == 1
    assert w["usd_per_hour"] == pytest.approx(2.25)
    assert "self_hosted.reference.gpus.a100-80gb" in w["usd_per_hour_source"]


def test_without_api_tiers_the_break_even_is_against_the_baseline(tmp_path):
    data_path = _pipeline(tmp_path, routing=None, default_profile="vllm")
    w = _whatif(_plan(data_path, "--profile", "vllm"))
    (be,) = w["rows"][0]["break_even"]
    assert be["against"] == "baseline (openai/gpt-4o)"


# --- where the throughput comes from ---------------------------------------------------------

def _record(**kw: Any) -> BenchRecord:
    fields: dict[str, Any] = dict(
        pipeline="p", tier="t", provider="openai", model="m", endpoint="http://x/v1",
        measured_at="2026-11-26T00:00:00Z", machine={}, requests=3, failed=0, concurrency=1,
        max_tokens=8, prompt_tokens=300, generated_tokens=24, wall_s=1.0, requests_per_s=3.0,
        prompt_tokens_per_s=300.0, generated_tokens_per_s=24.0, latency_ms={},
        cost_prompt_tokens_per_s=900.0, cost_generated_tokens_per_s=60.0, cost_method="split",
        usd_per_hour=1.0, usd_per_hour_source="test")
    return BenchRecord(**(fields | kw))


def test_throughput_precedence_bench_then_stated_then_past_then_constants():
    from batchopt.config.selfhost import ThroughputConfig

    stated = ThroughputConfig(prompt_tokens_per_s=1000, generated_tokens_per_s=100)
    past, constants = (5150.0, 40), (295.0, 100.0)
    everything = dict(record=_record(), record_path=Path("b.json"), stated=stated, past=past,
                      constants=constants)
    assert resolve_throughput(**everything).source == "bench"
    assert resolve_throughput(**everything).rates == (900.0, 60.0)
    assert resolve_throughput(**(everything | {"record": None})).rates == (1000, 100)
    no_rates = everything | {"record": None, "stated": None}
    assert resolve_throughput(**no_rates).mean_latency_ms == 5150.0
    assert resolve_throughput(**(no_rates | {"past": None})).source == "constants"
    assert resolve_throughput(**(no_rates | {"past": None, "constants": None})) is None


def test_expected_latency_puts_measured_rates_before_past_calls():
    request = Request(key="k", provider="local", model="m", system="", user="u", max_tokens=10)
    usage = Usage(input_tokens=900, output_tokens=60)
    past = History({}, {}, None, latency_ms={("local", "m"): (5150.0, 40)})
    assert expected_latency_ms(past, request, usage) == 5150.0
    assert expected_latency_ms(past, request, usage, rates=(900.0, 60.0)) == pytest.approx(2000)


def test_a_bench_record_prices_tokens_at_its_rates():
    record = _record(usd_per_hour=0.72)
    assert record.usd_per_1m_input == pytest.approx(0.72 / (900 * 3600) * 1e6)
    assert record.usd_per_1m_output == pytest.approx(0.72 / (60 * 3600) * 1e6)
    assert record.usd_per_1m_tokens == pytest.approx(0.72 * 1.0 / 3600 / 324 * 1e6)
    assert record.matches("openai", "m", "http://x/v1")
    assert not record.matches("openai", "m", "http://other/v1")


def test_a_record_keeps_no_credentials_of_its_endpoint():
    from batchopt.run.bench_record import public_endpoint

    assert public_endpoint("http://user:s3cret@gpu-box:8000/v1") == "http://gpu-box:8000/v1"
    assert public_endpoint("http://gpu-box:8000/v1") == "http://gpu-box:8000/v1"
    assert public_endpoint("/models/m.gguf") == "/models/m.gguf"
    record = _record(endpoint="http://gpu-box:8000/v1")
    assert record.matches("openai", "m", "http://user:s3cret@gpu-box:8000/v1")

