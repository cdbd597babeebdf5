"""The routing benchmark, at its quick size: every strategy is run and scored against
single-strong, and the figures agree with what is known independently of the benchmark."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_routing.py"
COLUMNS = (
    "cost_usd",
    "cost_pct",
    "right",
    "kept",
    "right_count",
    "on_strong",
    "hard_up",
    "escalated",
    "failed",
    "seconds",
)


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_routing", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_routing"] = module
    spec.loader.exec_module(module)
    return module


def _number(cell: str) -> float:
    return float(cell.rstrip("%"))


@pytest.fixture(scope="module")
def printed() -> list[str]:
    bench = _load_bench()
    lines: list[str] = []
    assert bench.main(["--quick"], out=lines.append) == 0
    return lines


def _table(lines: list[str], names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    rows = {}
    for line in lines:
        cells = line.split()
        if cells and cells[0] in names and len(cells) == len(COLUMNS) + 1:
            rows[cells[0]] = dict(zip(COLUMNS, map(_number, cells[1:]), strict=True))
    return rows


def test_every_strategy_is_scored_against_single_strong(printed):
    bench = sys.modules["bench_routing"]
    rows = _table(printed, bench.STRATEGIES)
    assert set(rows) == set(bench.STRATEGIES)
    strong = rows["single-strong"]
    assert strong["cost_pct"] == 100.0 and strong["kept"] == 100.0
    assert strong["right_count"] == 100.0 and strong["on_strong"] == 100.0
    assert all(row["failed"] == 0 for row in rows.values())
    # gpt-4o-mini costs 6% of gpt-4o per token, input and output alike (prices.yaml)
    cheap = rows["single-cheap"]
    assert cheap["cost_pct"] == pytest.approx(6.0, abs=0.1) and cheap["on_strong"] == 0.0
    assert cheap["right"] < strong["right"]
    cascade = rows["cascade"]
    assert 0 < cascade["escalated"] == cascade["on_strong"] < 100
    assert cheap["cost_pct"] < cascade["cost_pct"] < 100
    for name in ("rules", "classifier", "cascade"):
        assert cheap["right"] <= rows[name]["right"] <= 100
        assert rows[name]["escalated"] == 0 or name == "cascade"


def test_the_threshold_curve_runs_from_all_strong_to_all_cheap(printed):
    start = printed.index(next(line for line in printed if line.startswith("classifier threshold")))
    curve = {}
    for line in printed[start + 3 : start + 12]:
        cells = line.split()
        curve[float(cells[0])] = [_number(c) for c in cells[1:6]]
    assert sorted(curve) == [round(0.1 * i, 1) for i in range(1, 10)]
    costs = [curve[t][0] for t in sorted(curve)]
    assert costs == sorted(costs, reverse=True)  # a higher threshold never sends more up
    classifier = _table(printed, ("classifier",))["classifier"]
    assert curve[0.5][0] == classifier["cost_pct"] and curve[0.5][2] == classifier["kept"]


def test_the_verdict_and_the_fake_accuracies_are_stated(printed):
    assert any(line.startswith("best strategy: ") and "target" in line for line in printed)
    accuracy = next(line for line in printed if line.startswith("fake accuracy"))
    assert "gpt-4o-mini easy 0.96 hard 0.4" in accuracy and "gpt-4o easy 0.995" in accuracy
