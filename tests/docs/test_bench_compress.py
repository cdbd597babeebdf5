"""The compression benchmark's figures, without timing: its printed step tables add up, its
shares are shares, its fact check sees a cut fact, and its dollar ratio is the hand-computed one
on a hand-made ledger."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from batchopt.config.compress import parse_compress
from batchopt.ledger.pricing import PriceTable

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_compress.py"
MODEL = "claude-3-5-haiku-20241022"


def _load_bench():
    if "bench_compress" in sys.modules:
        return sys.modules["bench_compress"]
    spec = importlib.util.spec_from_file_location("bench_compress", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_compress"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load_bench()


@pytest.fixture(scope="module")
def printed(bench) -> list[str]:
    lines: list[str] = []
    assert bench.main(["--skip-runs", "--rows", "500", "--repeats", "1"], out=lines.append) == 0
    return lines


def _tables(lines: list[str], names: set[str]) -> list[dict[str, tuple[int, int, int, float]]]:
    """Each printed step table: name -> (before, after, removed, share %), 'total' included."""
    tables: list[dict[str, tuple[int, int, int, float]]] = []
    current: dict[str, tuple[int, int, int, float]] = {}
    for line in lines:
        cells = line.split()
        if len(cells) == 5 and cells[0] in names | {"total"} and cells[4].endswith("%"):
            before, after, removed = (int(c) for c in cells[1:4])
            current[cells[0]] = (before, after, removed, float(cells[4].rstrip("%")))
            if cells[0] == "total":
                tables.append(current)
                current = {}
    return tables


def test_printed_step_tables_add_up(bench, printed):
    names = {"whitespace", "boilerplate", "repeated_lines", "field_budget", "few_shot", "plugin"}
    tables = _tables(printed, names | {f"{n}_{k}" for n in names for k in range(2, 5)})
    assert len(tables) == 3, printed  # the sample, the generated set, it with pasted logs
    for table in tables:
        total = table.pop("total")
        steps = list(table.values())
        assert steps, table
        original = total[0]
        assert steps[0][0] == original
        for (_, after, _, _), (before, _, _, _) in zip(steps, steps[1:], strict=False):
            assert after == before  # one step's after is the next one's before
        for before, after, removed, share in steps:
            assert removed == before - after
            assert 0.0 <= share <= 100.0
            assert share == pytest.approx(100 * removed / original, abs=0.051)
        assert sum(s[2] for s in steps) == total[2] == total[0] - total[1]
        assert steps[-1][1] == total[1]
        assert 0.0 < total[3] < 100.0  # the sample's boilerplate does go
        assert total[3] == pytest.approx(100 * total[2] / original, abs=0.051)
    counted = [line for line in printed if "counted afresh" in line]
    assert len(counted) == 3 and all(
        "agrees" in line and "DISAGREES" not in line for line in counted
    )
    rendered = [line for line in printed if "rendered user prompts" in line]
    assert len(rendered) == 3
    for line in rendered:
        before, after = (int(x) for x in line.split(": ", 1)[1].split(" tokens")[0].split(" -> "))
        assert 0 < after < before
    assert sum("rows/s" in line for line in printed) == 3
    assert any(line.startswith("generated") and ": 500 rows" in line for line in printed)
    assert printed[0].startswith("$ python benchmarks/bench_compress.py --skip-runs")
    assert "CPUs" in printed[1]


def test_figures_agree_with_the_compress_report(bench):
    sample = pl.read_parquet(bench.SAMPLE)
    config = bench.parse_compress({"steps": bench.DEFAULT_STEPS})
    renderer = bench.PromptRenderer("Product: {{ product }}\nSubject: {{ subject }}\n\n{{ body }}")
    fig = bench.compression_figures("sample", sample, config, renderer, "ticket_id", MODEL)
    assert [s.name for s in fig.steps] == [
        "whitespace",
        "boilerplate",
        "repeated_lines",
        "field_budget",
    ]
    assert fig.counted_after == fig.final
    assert fig.report_saved == fig.original - fig.final == sum(s.removed for s in fig.steps)
    assert 0.0 < fig.saved_share < 1.0
    assert fig.prompt_after < fig.prompt_before
    assert fig.rows == sample.height and fig.seconds > 0


def test_fact_check_sees_a_cut_fact(bench):
    rows = pl.DataFrame(
        {
            "ticket_id": ["T1", "T2"],
            "body": [
                "Hi,\n\nPlease refund order #1234567 ($49.99) from March 3.\n\nThanks,\nAna\n\n"
                "> On Mon, 2 Sep 2024 at 10:00, Support wrote:\n> Order #7654321?",
                "Hello,\n\nMy Lumen desk lamp broke.\n\nThanks,\nBo",
            ],
        }
    )
    products = ["Lumen desk lamp"]
    default = parse_compress({"steps": [{"type": "whitespace"}, {"type": "boilerplate"}]})
    clean = bench.boilerplate_fact_check(rows, default, ["body"], "ticket_id", MODEL, products)
    assert clean is not None and clean.texts == 2 and clean.lost == []
    # the quoted order number went, and is not counted: quoted history is meant to go
    assert clean.facts == 4  # order, amount, date in T1; the product in T2
    cutting = parse_compress(
        {"steps": [{"type": "boilerplate", "extra_patterns": [r"#\d+", r"Lumen desk "]}]}
    )
    cut = bench.boilerplate_fact_check(rows, cutting, ["body"], "ticket_id", MODEL, products)
    assert cut is not None
    assert sorted(cut.lost) == [
        ("T1", "body", "order", "#1234567"),
        ("T2", "body", "product", "lumen desk lamp"),
    ]
    none = parse_compress({"steps": [{"type": "whitespace"}]})
    assert bench.boilerplate_fact_check(rows, none, ["body"], "ticket_id", MODEL, products) is None


def _ledger(rows: list[dict[str, Any]]) -> pl.DataFrame:
    base = {
        "provider": "anthropic",
        "model": MODEL,
        "mode": "online",
        "input_tokens": 0,
        "cached_input_tokens": 0,
        "cache_write_tokens": 0,
        "output_tokens": 10,
        "compression_tokens_saved": 0,
        "cost_usd": 0.0,
        "earlier_attempts_usd": 0.0,
    }
    return pl.DataFrame([{**base, **row} for row in rows])


HAND_LEDGER = [
    # paid, reads the cache: 1000 x 0.8 + 2000 x 0.08 = 960; uncompressed 3100 x 0.8 = 2480
    {"input_tokens": 3000, "cached_input_tokens": 2000, "compression_tokens_saved": 100},
    # paid, writes the cache: 200 x 0.8 + 2300 x 1.0 = 2460; uncompressed 2550 x 0.8 = 2040
    {"input_tokens": 2500, "cache_write_tokens": 2300, "compression_tokens_saved": 50},
    # paid in a batch at half price: 0.5 x 1000 x 0.8 = 400 on both sides
    {"mode": "batch", "input_tokens": 1000},
    # not paid: a dedup follower, a response-cache hit, a failed row nobody billed
    {"mode": "dedup", "input_tokens": 3000, "compression_tokens_saved": 80},
    {"mode": "cache", "input_tokens": 3000, "cached_input_tokens": 2000},
    {"mode": "failed", "input_tokens": 0, "compression_tokens_saved": 70},
]
PRICES = {
    "claude-3-5-haiku": {
        "input": 0.8,
        "output": 4.0,
        "cached_input": 0.08,
        "cache_write": 1.0,
        "batch_discount": 0.5,
    }
}


def test_ratio_on_a_hand_made_ledger(bench):
    prices = PriceTable.load(overrides=PRICES)
    dollars = bench.input_dollars(_ledger(HAND_LEDGER), prices)
    assert dollars.paid_rows == 3
    assert dollars.billed_usd == pytest.approx((960 + 2460 + 400) / 1e6)
    assert dollars.uncompressed_usd == pytest.approx((2480 + 2040 + 400) / 1e6)
    assert dollars.ratio == pytest.approx(3820 / 4920)
    assert dollars.input_tokens == 6500 and dollars.saved_tokens == 150


def test_ratio_lines_say_met_or_missed(bench):
    prices = PriceTable.load(overrides=PRICES)

    def run(rows: list[dict[str, Any]]) -> Any:
        return bench.ProfileRun(
            "anthropic", "anthropic", MODEL, _ledger(rows), 2297, 3, 2048, 1.0, False
        )

    missed = bench.ratio_lines(run(HAND_LEDGER), prices)
    assert any("ratio 0.776" in line and "target <= 0.50: missed" in line for line in missed)
    cheap = [{"input_tokens": 3000, "cached_input_tokens": 2900, "compression_tokens_saved": 500}]
    met = bench.ratio_lines(run(cheap), prices)
    assert any("target <= 0.50: met" in line for line in met)


def test_cache_figures_and_the_short_prefix_line(bench):
    fig = bench.cache_figures(_ledger(HAND_LEDGER))
    assert (fig.rows, fig.paid, fig.input_tokens, fig.cached, fig.written) == (
        6,
        3,
        6500,
        2000,
        2300,
    )
    assert fig.hit_share == pytest.approx(2000 / 6500)
    assert fig.rows_read_share == pytest.approx(1 / 3)
    no_hits = _ledger([{"input_tokens": 120}, {"input_tokens": 130}])
    short = bench.ProfileRun("anthropic", "anthropic", MODEL, no_hits, 40, 3, 2048, 1.0, False)
    lines = bench.cache_lines(short)
    assert any("hit share 0.0%" in line for line in lines)
    assert any("static prefix (43 tokens) is shorter than the minimum" in line for line in lines)


def test_pasted_logs_make_the_long_field_steps_work(bench, printed):
    names = {"whitespace", "boilerplate", "repeated_lines", "field_budget"}
    long_set = _tables(printed, names)[2]
    assert long_set["repeated_lines"][2] > 0 and long_set["field_budget"][2] > 0
