"""Pricing a run's facts into ledger rows: costs, baselines and savings by lever."""

from __future__ import annotations

import random
from typing import Any

import polars as pl
import pytest

from batchopt.errors import ConfigError
from batchopt.ledger import FACT_SCHEMA, LEDGER_COLUMNS, LEVER_COLUMNS, PriceTable, price_ledger
from batchopt.records import Usage

M = 1_000  # token counts below are in thousands, so the example's dollars are readable


def fact(row_id: str, **values: Any) -> dict[str, Any]:
    """One fact row: a paid online gpt-4o-mini call unless told otherwise."""
    row: dict[str, Any] = {name: None for name in FACT_SCHEMA}
    row.update(
        run_id="run-1",
        pipeline="demo",
        row_id=row_id,
        group_id=row_id,
        representative_id=row_id,
        dedup="none",
        tier="cheap",
        provider="openai",
        model="gpt-4o-mini",
        mode="online",
        route_reason="default",
        escalated=False,
        status="ok",
        attempts=1,
        latency_ms=0.0,
        input_tokens=0,
        cached_input_tokens=0,
        cache_write_tokens=0,
        output_tokens=0,
        compression_tokens_saved=0,
        baseline_input_tokens=0,
        baseline_output_tokens=0,
        baseline_latency_ms=0.0,
        estimated_cost_usd=0.0,
    )
    row.update(values)
    return row


def frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=FACT_SCHEMA)


@pytest.fixture(scope="module")
def prices() -> PriceTable:
    return PriceTable.load()


def example() -> pl.DataFrame:
    """A hand-priced run against a gpt-4o baseline ($2.50 / $10 per 1M tokens)."""
    k = M
    return frame(
        [
            # paid online on gpt-4o-mini; compression removed 200k tokens; 200k read from cache
            fact(
                "A",
                input_tokens=1000 * k,
                cached_input_tokens=200 * k,
                output_tokens=100 * k,
                baseline_input_tokens=1200 * k,
                baseline_output_tokens=100 * k,
                compression_tokens_saved=200 * k,
            ),
            # batch on a dated Claude 3.5 Haiku that wrote 1.5M tokens to the prompt cache
            fact(
                "B",
                provider="anthropic",
                model="claude-3-5-haiku-20241022",
                mode="batch",
                input_tokens=2000 * k,
                cache_write_tokens=1500 * k,
                output_tokens=300 * k,
                baseline_input_tokens=2000 * k,
                baseline_output_tokens=300 * k,
                batch_id="b1",
            ),
            fact(
                "C",
                dedup="exact",
                mode="dedup",
                representative_id="A",
                group_id="A",
                baseline_input_tokens=1200 * k,
                baseline_output_tokens=100 * k,
            ),
            fact(
                "D",
                dedup="semantic",
                mode="dedup",
                representative_id="A",
                group_id="A",
                similarity=0.97,
                baseline_input_tokens=1000 * k,
                baseline_output_tokens=50 * k,
            ),
            fact("E", mode="cache", baseline_input_tokens=1000 * k, baseline_output_tokens=100 * k),
            fact(
                "F",
                mode="failed",
                status="failed",
                error="timeout",
                attempts=5,
                baseline_input_tokens=900 * k,
                baseline_output_tokens=100 * k,
            ),
            fact(
                "G",
                status="failed",
                error="invalid JSON",
                input_tokens=500 * k,
                baseline_input_tokens=500 * k,
            ),
            fact(
                "H",
                provider="local",
                model="smollm2-135m",
                tier="local",
                latency_ms=36_000_000.0,
                input_tokens=400 * k,
                output_tokens=100 * k,
                baseline_input_tokens=400 * k,
                baseline_output_tokens=100 * k,
            ),
        ]
    )


# row -> (cost, baseline, {lever: saving}), computed by hand from prices.yaml
EXPECTED: dict[str, tuple[float, float, dict[str, float]]] = {
    # baseline 1.2M*2.5 + 0.1M*10 = 4.00; mini on baseline tokens 0.18 + 0.06 = 0.24;
    # mini on actual tokens 0.15 + 0.06 = 0.21; with cache rates 0.12 + 0.015 + 0.06 = 0.195
    "A": (
        0.195,
        4.00,
        {"saved_routing_usd": 3.76, "saved_compression_usd": 0.03, "saved_prompt_cache_usd": 0.015},
    ),
    # baseline 5 + 3 = 8.00; haiku full 1.6 + 1.2 = 2.80; cache rates 0.4 + 1.5 + 1.2 = 3.10
    # (a cache write costs more than a plain input token); batch halves it: 1.55
    "B": (
        1.55,
        8.00,
        {"saved_routing_usd": 5.20, "saved_prompt_cache_usd": -0.30, "saved_batch_usd": 1.55},
    ),
    "C": (0.0, 4.00, {"saved_exact_usd": 4.00}),
    "D": (0.0, 3.00, {"saved_semantic_usd": 3.00}),
    "E": (0.0, 3.50, {"saved_cache_usd": 3.50}),
    "F": (0.0, 0.0, {}),
    # billed failure: 0.5M input on mini = 0.075; baseline 1.25
    "G": (0.075, 1.25, {"saved_routing_usd": 1.175}),
    # ten hours of the local box at $0.10/h; baseline 1.0 + 1.0 = 2.00
    "H": (1.00, 2.00, {"saved_routing_usd": 1.00}),
}


def test_hand_computed_example(prices: PriceTable) -> None:
    ledger = price_ledger(example(), prices, "openai", "gpt-4o")
    assert list(ledger.columns) == list(LEDGER_COLUMNS)
    for row in ledger.iter_rows(named=True):
        cost, baseline, levers = EXPECTED[row["row_id"]]
        assert row["cost_usd"] == pytest.approx(cost, abs=1e-12), row["row_id"]
        assert row["baseline_cost_usd"] == pytest.approx(baseline, abs=1e-12), row["row_id"]
        for name in LEVER_COLUMNS:
            expected = levers.get(name, 0.0)
            assert row[name] == pytest.approx(expected, abs=1e-12), (row["row_id"], name)
    totals = ledger.select(pl.col("cost_usd", "baseline_cost_usd", *LEVER_COLUMNS).sum()).row(
        0, named=True
    )
    assert round(totals["cost_usd"], 2) == 2.82
    assert round(totals["baseline_cost_usd"], 2) == 25.75
    assert round(totals["baseline_cost_usd"] - totals["cost_usd"], 2) == 22.93
    assert round(totals["saved_routing_usd"], 2) == 11.14  # 3.76 + 5.20 + 1.175 + 1.00
    assert round(totals["saved_prompt_cache_usd"], 3) == -0.285


def test_levers_add_up_on_every_row(prices: PriceTable) -> None:
    rng = random.Random(7)
    models = [
        ("openai", "gpt-4o-mini"),
        ("openai", "gpt-4.1-nano-2025-04-14"),
        ("anthropic", "claude-haiku-4-5"),
        ("anthropic", "claude-opus-4-1"),
        ("local", "smollm2-135m"),
    ]
    rows = []
    for i in range(3000):
        provider, model = rng.choice(models)
        mode = rng.choice(["online", "batch", "cache", "dedup", "failed"])
        status = "failed" if mode == "failed" or rng.random() < 0.05 else "ok"
        n_in = rng.randint(0, 50_000)
        cached = rng.randint(0, n_in)
        written = rng.randint(0, n_in - cached)
        paid = mode in ("online", "batch", "failed") and rng.random() < 0.8
        rows.append(
            fact(
                str(i),
                provider=provider,
                model=model,
                mode=mode,
                status=status,
                dedup=rng.choice(["exact", "semantic"]) if mode == "dedup" else "none",
                input_tokens=n_in if paid else 0,
                cached_input_tokens=cached if paid else 0,
                cache_write_tokens=written if paid else 0,
                output_tokens=rng.randint(0, 4000) if paid else 0,
                latency_ms=rng.uniform(0, 60_000),
                baseline_latency_ms=rng.uniform(0, 60_000),
                baseline_input_tokens=n_in + rng.randint(0, 5000),
                baseline_output_tokens=rng.randint(0, 4000),
            )
        )
    for baseline in [("anthropic", "claude-sonnet-4-5"), ("local", "smollm2-135m")]:
        ledger = price_ledger(frame(rows), prices, *baseline)
        gap = ledger.select(
            (pl.sum_horizontal(*LEVER_COLUMNS) - (pl.col("baseline_cost_usd") - pl.col("cost_usd")))
            .abs()
            .max()
        ).item()
        assert gap <= 1e-12
        assert ledger.height == len(rows)
        assert ledger["row_id"].to_list() == [str(i) for i in range(len(rows))]
        assert (
            ledger.select(pl.col("cost_usd", "baseline_cost_usd", *LEVER_COLUMNS).is_null().any())
            .sum_horizontal()
            .item()
            == 0
        )


def test_paid_rows_cost_what_price_table_says(prices: PriceTable) -> None:
    ledger = price_ledger(example(), prices, "openai", "gpt-4o")
    b = ledger.filter(pl.col("row_id") == "B").row(0, named=True)
    price = prices.price("anthropic", "claude-3-5-haiku-20241022")
    usage = Usage(
        input_tokens=b["input_tokens"],
        cache_write_tokens=b["cache_write_tokens"],
        output_tokens=b["output_tokens"],
    )
    assert b["cost_usd"] == pytest.approx(prices.cost(price, usage, batch=True), rel=1e-12)


def test_followers_and_cache_hits_spend_nothing(prices: PriceTable) -> None:
    ledger = price_ledger(example(), prices, "openai", "gpt-4o")
    free = ledger.filter(pl.col("mode").is_in(["dedup", "cache"]))
    assert free["cost_usd"].to_list() == [0.0, 0.0, 0.0]
    for name in ("saved_routing_usd", "saved_batch_usd", "saved_prompt_cache_usd"):
        assert free[name].to_list() == [0.0, 0.0, 0.0]


def test_failed_unbilled_row_counts_nothing(prices: PriceTable) -> None:
    rows = [
        fact(
            "x",
            mode="dedup",
            dedup="exact",
            status="failed",
            error="representative failed",
            baseline_input_tokens=100,
            baseline_output_tokens=10,
        ),
        fact(
            "y",
            mode="failed",
            status="failed",
            provider=None,
            model=None,
            tier=None,
            baseline_input_tokens=100,
            baseline_output_tokens=10,
        ),
    ]
    ledger = price_ledger(frame(rows), prices, "openai", "gpt-4o")
    for name in ("cost_usd", "baseline_cost_usd", *LEVER_COLUMNS):
        assert ledger[name].to_list() == [0.0, 0.0], name


def test_time_priced_baseline_uses_baseline_latency(prices: PriceTable) -> None:
    rows = [
        fact(
            "a",
            mode="cache",
            baseline_latency_ms=3_600_000.0,
            latency_ms=5.0,
            baseline_input_tokens=10**6,
        )
    ]
    ledger = price_ledger(frame(rows), prices, "local", "smollm2-135m")
    assert ledger["baseline_cost_usd"].item() == pytest.approx(0.10)
    assert ledger["saved_cache_usd"].item() == pytest.approx(0.10)


def test_price_version(prices: PriceTable) -> None:
    ledger = price_ledger(example(), prices, "openai", "gpt-4o")
    assert set(ledger["price_version"]) == {prices.version}
    pinned = price_ledger(example(), prices, "openai", "gpt-4o", price_version="v-test")
    assert set(pinned["price_version"]) == {"v-test"}


def test_overrides_reach_the_ledger() -> None:
    cheap = PriceTable.load(
        overrides={"gpt-4o-mini": {"input": 0.0, "output": 0.0, "cached_input": 0.0}}
    )
    ledger = price_ledger(example(), cheap, "openai", "gpt-4o")
    assert ledger.filter(pl.col("row_id") == "A")["cost_usd"].item() == 0.0


def test_missing_columns_are_named(prices: PriceTable) -> None:
    with pytest.raises(ValueError, match="missing column") as err:
        price_ledger(
            example().drop("latency_ms", "baseline_input_tokens"), prices, "openai", "gpt-4o"
        )
    assert "latency_ms" in str(err.value) and "baseline_input_tokens" in str(err.value)


def test_ids_are_cast_to_string(prices: PriceTable) -> None:
    facts = example().with_columns(pl.Series("row_id", range(8)))
    assert price_ledger(facts, prices, "openai", "gpt-4o")["row_id"].dtype == pl.String


def test_unknown_paid_model_is_a_config_error(prices: PriceTable) -> None:
    rows = [fact("a", model="gpt-nonexistent", input_tokens=10)]
    with pytest.raises(ConfigError, match="gpt-nonexistent"):
        price_ledger(frame(rows), prices, "openai", "gpt-4o")
    with pytest.raises(ConfigError, match="no-such-baseline"):
        price_ledger(example(), prices, "openai", "no-such-baseline")


def test_followers_of_an_unpriced_model_need_no_price(prices: PriceTable) -> None:
    rows = [
        fact("a", model="gpt-nonexistent", mode="dedup", dedup="exact", baseline_input_tokens=1000)
    ]
    ledger = price_ledger(frame(rows), prices, "openai", "gpt-4o")
    assert ledger["saved_exact_usd"].item() == pytest.approx(0.0025)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mode": "streamed"}, "column 'mode'"),
        ({"status": "maybe"}, "column 'status'"),
        ({"mode": "dedup", "dedup": "none"}, "dedup follower"),
        ({"input_tokens": 10, "cached_input_tokens": 11}, "more cached"),
        ({"provider": None, "input_tokens": 10}, "without provider"),
    ],
)
def test_inconsistent_facts_are_refused(prices: PriceTable, values, message) -> None:
    with pytest.raises(ValueError, match=message):
        price_ledger(frame([fact("a", **values)]), prices, "openai", "gpt-4o")


def test_empty_facts(prices: PriceTable) -> None:
    ledger = price_ledger(frame([]), prices, "openai", "gpt-4o")
    assert ledger.height == 0 and list(ledger.columns) == list(LEDGER_COLUMNS)
