"""Prices and the cost formula."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from batchopt.errors import ConfigError
from batchopt.ledger.pricing import PRICES_FILE, ModelPrice, PriceTable, daily_cost, token_usd
from batchopt.records import Usage

# (provider, model, input, output, cached_input, cache_write) as the providers list them.
LIST_PRICES = [
    ("openai", "gpt-4o", 2.50, 10.00, 1.25, 2.50),
    ("openai", "gpt-4o-mini", 0.15, 0.60, 0.075, 0.15),
    ("openai", "gpt-4.1", 2.00, 8.00, 0.50, 2.00),
    ("openai", "gpt-4.1-mini", 0.40, 1.60, 0.10, 0.40),
    ("openai", "gpt-4.1-nano", 0.10, 0.40, 0.025, 0.10),
    ("openai", "gpt-5", 1.25, 10.00, 0.125, 1.25),
    ("openai", "gpt-5-mini", 0.25, 2.00, 0.025, 0.25),
    ("openai", "gpt-5-nano", 0.05, 0.40, 0.005, 0.05),
    ("anthropic", "claude-3-5-sonnet", 3.00, 15.00, 0.30, 3.75),
    ("anthropic", "claude-3-5-haiku", 0.80, 4.00, 0.08, 1.00),
    ("anthropic", "claude-3-haiku", 0.25, 1.25, 0.03, 0.30),
    ("anthropic", "claude-sonnet-4-5", 3.00, 15.00, 0.30, 3.75),
    ("anthropic", "claude-haiku-4-5", 1.00, 5.00, 0.10, 1.25),
    ("anthropic", "claude-opus-4-1", 15.00, 75.00, 1.50, 18.75),
]


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load()


@pytest.mark.parametrize(("provider", "model", "inp", "out", "cached", "write"), LIST_PRICES)
def test_shipped_list_prices(table, provider, model, inp, out, cached, write) -> None:
    p = table.price(provider, model)
    assert (p.provider, p.model) == (provider, model)
    assert (p.input, p.output, p.cached_input, p.cache_write) == (inp, out, cached, write)
    assert p.batch_discount == 0.5
    assert p.usd_per_hour is None


def test_price_file_has_date_and_sources() -> None:
    raw = yaml.safe_load(PRICES_FILE.read_text())
    assert str(raw["as_of"]) == "2026-11-25"
    assert raw["batch_discount"] == 0.5
    for name, entry in raw["models"].items():
        assert entry["provider"] in ("openai", "anthropic"), name
        assert entry["source"].strip(), name
    assert "assumption" in raw["local"]["source"].lower()


def test_version_names_date_and_hash(table) -> None:
    assert table.as_of == "2026-11-25"
    assert re.fullmatch(r"2026-11-25\+[0-9a-f]{8}", table.version)
    assert PriceTable.load().version == table.version
    changed = PriceTable.load(overrides={"gpt-4o": {"input": 2.0, "output": 10.0}})
    assert changed.version != table.version
    assert PriceTable.load(local_usd_per_hour=0.2).version != table.version


def test_openai_cached_input(table) -> None:
    usage = Usage(input_tokens=1000, cached_input_tokens=400, output_tokens=100)
    # 600 uncached * 2.50 + 400 cached * 1.25 + 100 out * 10.00 = 3000 per 1M tokens
    assert table.cost(table.price("openai", "gpt-4o"), usage) == pytest.approx(0.003, abs=1e-15)


def test_openai_cache_write_defaults_to_input(table) -> None:
    usage = Usage(input_tokens=1000, cache_write_tokens=1000)
    assert table.cost(table.price("openai", "gpt-4o"), usage) == pytest.approx(0.0025, abs=1e-15)


def test_anthropic_cache_read_and_write(table) -> None:
    usage = Usage(
        input_tokens=10_000, cached_input_tokens=4_000, cache_write_tokens=3_000, output_tokens=500
    )
    # 3000*3 + 4000*0.30 + 3000*3.75 + 500*15 = 9000 + 1200 + 11250 + 7500 = 28950
    price = table.price("anthropic", "claude-sonnet-4-5")
    assert table.cost(price, usage) == pytest.approx(0.02895, abs=1e-15)


def test_batch_discount(table) -> None:
    usage = Usage(input_tokens=1000, output_tokens=100)
    price = table.price("openai", "gpt-4o")
    assert table.cost(price, usage) == pytest.approx(0.0035, abs=1e-15)
    assert table.cost(price, usage, batch=True) == pytest.approx(0.00175, abs=1e-15)


def test_per_model_batch_discount_override() -> None:
    t = PriceTable.load(
        overrides={"gpt-4o": {"input": 2.5, "output": 10.0, "batch_discount": 0.25}}
    )
    usage = Usage(input_tokens=1000, output_tokens=100)
    assert t.cost(t.price("openai", "gpt-4o"), usage, batch=True) == pytest.approx(0.002625)


def test_time_priced_local_model(table) -> None:
    price = table.price("local", "smollm2-135m")
    assert price.time_priced and price.usd_per_hour == 0.10
    usage = Usage(input_tokens=10_000, output_tokens=10_000)
    half_hour = 1_800_000.0
    assert table.cost(price, usage, latency_ms=half_hour) == pytest.approx(0.05)
    assert table.cost(price, usage, batch=True, latency_ms=half_hour) == pytest.approx(0.05)
    assert table.cost(price, usage) == 0.0
    other = table.price("local", "any-other-gguf")
    assert other.usd_per_hour == 0.10 and other.model == "any-other-gguf"


def test_local_usd_per_hour_parameter() -> None:
    t = PriceTable.load(local_usd_per_hour=2.0)
    assert t.cost(t.price("local", "smollm2-135m"), Usage(), latency_ms=1_800_000.0) == 1.0


@pytest.mark.parametrize(
    ("provider", "model", "listed"),
    [
        ("openai", "gpt-4o-2024-08-06", "gpt-4o"),
        ("openai", "gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("openai", "gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
        ("openai", "gpt-5-mini-2025-08-07", "gpt-5-mini"),
        ("anthropic", "claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("anthropic", "claude-3-haiku-20240307", "claude-3-haiku"),
        ("anthropic", "claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
        ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
    ],
)
def test_dated_names_match_the_longest_listed_name(table, provider, model, listed) -> None:
    assert table.price(provider, model).model == listed


def test_seed_haiku_prices_belong_to_claude_3_haiku(table) -> None:
    assert table.price("anthropic", "claude-3-5-haiku-20241022").input == 0.80
    assert table.price("anthropic", "claude-3-haiku-20240307").input == 0.25


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", "gpt-5-pro"),
        ("openai", "gpt-4o-mini-tts"),
        ("anthropic", "gpt-4o"),
        ("openai", "gpt-4"),
        ("openai", "claude-haiku-4-5"),
    ],
)
def test_unknown_model_is_a_config_error(table, provider, model) -> None:
    with pytest.raises(ConfigError) as err:
        table.price(provider, model)
    assert str(err.value) == (
        f"no price for model '{model}' (provider {provider}); "
        "add it under pricing.models in the pipeline"
    )


def test_overrides_win_and_keep_unspecified_fields() -> None:
    t = PriceTable.load(overrides={"gpt-4o": {"input": 2.0, "output": 9.0, "cached_input": None}})
    p = t.price("openai", "gpt-4o-2024-11-20")
    assert (p.input, p.output, p.cached_input, p.cache_write) == (2.0, 9.0, 1.25, 2.0)
    assert "override" in p.source


def test_override_prices_an_unlisted_model() -> None:
    t = PriceTable.load(
        overrides={"my-finetune": {"input": 1.0, "output": 2.0, "cached_input": 0.5}}
    )
    p = t.price("openai", "my-finetune")
    assert (p.input, p.output, p.cached_input, p.cache_write) == (1.0, 2.0, 0.5, 1.0)
    usage = Usage(input_tokens=2000, cached_input_tokens=1000, output_tokens=1000)
    assert t.cost(p, usage) == pytest.approx((1000 * 1.0 + 1000 * 0.5 + 1000 * 2.0) / 1e6)


def test_override_accepts_a_pydantic_model() -> None:
    from batchopt.config.sections import ModelPriceConfig

    t = PriceTable.load(overrides={"gpt-4o": ModelPriceConfig(input=1.0, output=4.0)})
    assert t.price("openai", "gpt-4o").input == 1.0


@pytest.mark.parametrize(
    "override",
    [
        {"input": -1.0, "output": 1.0},
        {"input": 1.0},
        {"input": 1.0, "output": "cheap"},
        {"input": 1.0, "output": 1.0, "batch_discount": 1.5},
        {"input": 1, "output": 1, "x": 1},
    ],
)
def test_bad_overrides_are_config_errors(override) -> None:
    with pytest.raises(ConfigError, match=r"pricing\.models\.new-model"):
        PriceTable.load(overrides={"new-model": override})


def test_price_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read price file"):
        PriceTable.load(tmp_path / "missing.yaml")
    bad = tmp_path / "prices.yaml"
    bad.write_text("batch_discount: 0.5\nmodels:\n  m: {provider: openai, input: 1, output: 2}\n")
    with pytest.raises(ConfigError, match="as_of"):
        PriceTable.load(bad)


def test_custom_price_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(
        "as_of: 2030-01-02\nbatch_discount: 0.4\nmodels:\n"
        "  m1: {provider: openai, input: 1, output: 2}\n"
        "local: {usd_per_hour: 3.6}\n"
    )
    t = PriceTable.load(path)
    assert t.version.startswith("2030-01-02+")
    assert t.price("openai", "m1").batch_discount == 0.4
    assert t.cost(t.price("local", "x"), Usage(), latency_ms=1000.0) == pytest.approx(0.001)


def test_inconsistent_usage_is_refused(table) -> None:
    with pytest.raises(ValueError, match="more cached"):
        table.cost(
            table.price("openai", "gpt-4o"),
            Usage(input_tokens=10, cached_input_tokens=8, cache_write_tokens=5),
        )


def test_daily_cost_of_the_seed_example(table) -> None:
    # The seed prints "$3.25M/day" for this; its own formula gives $3,250/day.
    assert daily_cost(1_000_000, 500, 200, table.price("openai", "gpt-4o")) == pytest.approx(3250.0)
    # ... and "$195K/day" for gpt-4o-mini, which is $195/day.
    mini = table.price("openai", "gpt-4o-mini")
    assert daily_cost(1_000_000, 500, 200, mini) == pytest.approx(195.0)


# --- Each function held to the rule it encodes (issue 20: the mutation report over pricing) ---

SHIPPED = yaml.safe_load(PRICES_FILE.read_text(encoding="utf-8"))


def _price_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.yaml"
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = "as_of: 2030-01-02\nmodels:\n  m1: {provider: openai, input: 1, output: 2}\n"


@pytest.mark.parametrize(
    ("counts", "usd"),
    [
        # one million tokens of each kind costs its per-1M price, and nothing else
        ((1_000_000, 0, 0, 0), 3.0),
        ((0, 1_000_000, 0, 0), 0.3),
        ((0, 0, 1_000_000, 0), 3.75),
        ((0, 0, 0, 1_000_000), 15.0),
        ((2_000, 1_000, 500, 100), (2_000 * 3.0 + 1_000 * 0.3 + 500 * 3.75 + 100 * 15.0) / 1e6),
    ],
)
def test_token_usd_is_per_million_tokens_at_each_rate(counts, usd) -> None:
    # claude-sonnet-4-5: $3 in, $0.30 cache read, $3.75 cache write (1.25x), $15 out per 1M
    assert token_usd(*counts, 3.0, 0.3, 3.75, 15.0) == pytest.approx(usd, rel=1e-12)


def test_daily_cost_is_full_price_online_tokens_times_requests() -> None:
    price = ModelPrice(provider="openai", model="m", input=2.0, output=8.0, cached_input=0.5,
                       cache_write=2.0, batch_discount=0.5)
    # 1,000 requests of 1,000 prompt and 100 answer tokens: $0.0028 each, no cache, no batch
    assert daily_cost(1_000, 1_000, 100, price) == pytest.approx(2.8, rel=1e-12)
    assert daily_cost(0, 1_000, 100, price) == 0.0


def test_cost_defaults_to_online_and_no_machine_time(table) -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    gpt4o = table.price("openai", "gpt-4o")
    assert table.cost(gpt4o, usage) == pytest.approx(12.5, rel=1e-12)  # not the batch price
    local = table.price("local", "some-gguf")
    assert table.cost(local, usage) == 0.0  # no latency given: no machine time billed


def test_batch_discount_is_a_multiplier_on_every_token_kind(table) -> None:
    price = table.price("anthropic", "claude-sonnet-4-5")
    usage = Usage(input_tokens=10_000, cached_input_tokens=4_000, cache_write_tokens=3_000,
                  output_tokens=500)
    online = table.cost(price, usage)
    assert table.cost(price, usage, batch=True) == pytest.approx(online * 0.5, rel=1e-12)
    t = PriceTable.load(overrides={"claude-sonnet-4-5": {"batch_discount": 0.2}})
    assert t.cost(t.price("anthropic", "claude-sonnet-4-5"), usage, batch=True) == (
        pytest.approx(online * 0.8, rel=1e-12))


def test_all_input_read_from_the_cache_is_allowed(table) -> None:
    price = table.price("openai", "gpt-4o")
    usage = Usage(input_tokens=1_000, cached_input_tokens=1_000)
    assert table.cost(price, usage) == pytest.approx(1_000 * 1.25 / 1e6, rel=1e-12)
    assert table.cost(price, Usage()) == 0.0


def test_time_priced_cost_is_hours_times_rate() -> None:
    table = PriceTable.load()  # not the shared one: bill_by_time changes the table
    price = table.bill_by_time("openai", "my-vllm-model", 3.6, "profiles.t.usd_per_hour")
    assert table.price("openai", "my-vllm-model") is price  # billed by time from now on
    assert table.price("openai", "gpt-4o").usd_per_hour is None  # other models unchanged
    # 2.5 s of a $3.60/h machine is $0.0025, however many tokens it read or wrote
    usage = Usage(input_tokens=10_000, output_tokens=10_000)
    assert table.cost(price, usage, latency_ms=2_500.0) == pytest.approx(0.0025, rel=1e-12)
    assert table.cost(price, usage, batch=True, latency_ms=2_500.0) == pytest.approx(0.0025)
    assert table.cost(table.price("local", "x"), usage, latency_ms=3_600_000.0) == (
        pytest.approx(0.10, rel=1e-12))


def test_local_price_is_time_only_with_its_source() -> None:
    table = PriceTable.load()
    assert table.price("local", "qwen2.5-0.5b-instruct-q4") == ModelPrice(
        provider="local", model="qwen2.5-0.5b-instruct-q4", input=0.0, output=0.0,
        cached_input=0.0, cache_write=0.0, batch_discount=0.0, usd_per_hour=0.10,
        source=SHIPPED["local"]["source"].strip(),
    )
    t = PriceTable.load(local_usd_per_hour=0.5)
    assert t.price("local", "m").usd_per_hour == 0.5
    assert t.price("local", "m").source == "pipeline pricing.local_usd_per_hour"


def test_listed_price_says_where_it_comes_from(table) -> None:
    entry = SHIPPED["models"]["claude-haiku-4-5"]
    assert table.price("anthropic", "claude-haiku-4-5-20251001") == ModelPrice(
        provider="anthropic", model="claude-haiku-4-5", input=1.0, output=5.0,
        cached_input=0.10, cache_write=1.25, batch_discount=0.5, source=entry["source"],
    )


def test_override_is_labelled_and_keeps_what_it_does_not_give() -> None:
    t = PriceTable.load(overrides={"gpt-4o": {"output": 12.0}})
    p = t.price("openai", "gpt-4o")
    assert (p.input, p.output, p.cached_input, p.cache_write, p.batch_discount) == (
        2.5, 12.0, 1.25, 2.5, 0.5)
    assert p.source == "pipeline override (pricing.models)"


def test_override_of_an_unlisted_model_fits_any_provider_with_the_table_defaults() -> None:
    t = PriceTable.load(overrides={"my-model": {"input": 4.0, "output": 8.0}})
    for provider in ("openai", "anthropic", "local"):
        p = t.price(provider, "my-model-2025-01-31")
        assert (p.provider, p.model, p.usd_per_hour) == (provider, "my-model", None)
        assert (p.input, p.output, p.cached_input, p.cache_write) == (4.0, 8.0, 4.0, 4.0)
        assert p.batch_discount == 0.5
        assert p.source == "pipeline override (pricing.models)"


def test_context_windows_come_from_the_price_file() -> None:
    table = PriceTable.load()  # its own table: mutmut ties a test to the functions it calls
    assert table.context_tokens("openai", "gpt-4o-2024-08-06") == 128_000
    assert table.context_tokens("openai", "gpt-4.1-mini") == 1_047_576
    assert table.context_tokens("anthropic", "claude-sonnet-4-5") == 200_000
    assert table.context_tokens("anthropic", "gpt-4o") is None  # not that provider's model


def test_a_price_file_without_batch_discount_or_local_gives_neither(tmp_path: Path) -> None:
    t = PriceTable.load(_price_file(tmp_path, MINIMAL))
    p = t.price("openai", "m1")
    assert p.batch_discount == 0.0
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert t.cost(p, usage, batch=True) == t.cost(p, usage) == 3.0
    local = t.price("local", "x")
    assert (local.usd_per_hour, local.source) == (0.0, "")
    assert t.context_tokens("openai", "m1") is None


def test_a_price_file_local_section_without_source(tmp_path: Path) -> None:
    t = PriceTable.load(_price_file(tmp_path, MINIMAL + "local: {usd_per_hour: 1.5}\n"))
    assert (t.price("local", "x").usd_per_hour, t.price("local", "x").source) == (1.5, "")


def test_a_price_file_as_of_may_be_a_string(tmp_path: Path) -> None:
    t = PriceTable.load(_price_file(tmp_path, MINIMAL.replace("2030-01-02", "'2030-01'")))
    assert t.as_of == "2030-01" and t.version.startswith("2030-01+")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a list\n", "needs a 'models' mapping"),
        ("as_of: 2030-01-02\nbatch_discount: 0.5\n", "needs a 'models' mapping"),
        ("as_of: 2030-01-02\nmodels: [m1]\n", "needs a 'models' mapping"),
        ("models:\n  m1: {provider: openai, input: 1, output: 2}\n", "as_of is missing"),
        (MINIMAL + "batch_discount: 1.5\n", r"prices\.yaml: batch_discount: must be between"),
        (MINIMAL + "  m2: 3\n", r"prices\.yaml: models\.m2: expected a mapping"),
        (MINIMAL + "  m2: {input: 1, output: 2}\n", r"models\.m2\.provider: required"),
        (MINIMAL + "  m2: {provider: openai, input: -1, output: 2}\n",
         r"prices\.yaml: models\.m2\.input: must be"),
        (MINIMAL + "  m2: {provider: openai, input: 1, output: 2, context_tokens: -5}\n",
         r"prices\.yaml: models\.m2\.context_tokens: must be"),
        (MINIMAL + "local: {usd_per_hour: -1}\n", r"prices\.yaml: local\.usd_per_hour: must be"),
    ],
)
def test_bad_price_files_are_config_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PriceTable.load(_price_file(tmp_path, text))


def test_bad_local_usd_per_hour_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^pricing\.local_usd_per_hour: must be 0 or more"):
        PriceTable.load(local_usd_per_hour=-1.0)


def test_a_price_file_is_read_as_utf8_whatever_the_platform_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    path = _price_file(tmp_path, MINIMAL.replace("output: 2}", "output: 2, source: 'tarif (€)'}"))
    # as on Windows, where text files default to the ANSI code page
    monkeypatch.setattr(io, "text_encoding", lambda encoding, stacklevel=2: encoding or "cp1252")
    assert PriceTable.load(path).price("openai", "m1").source == "tarif (€)"
