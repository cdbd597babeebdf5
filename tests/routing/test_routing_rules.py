from __future__ import annotations

from datetime import date
from typing import Any

import polars as pl
import pytest

from batchopt.config.routing_rules import Rule
from batchopt.errors import ConfigError
from batchopt.routing import RoutingError, route_rules, route_single


def _rule(when: Any, tier: str = "strong", name: str | None = None) -> Rule:
    return Rule.model_validate({"when": when, "tier": tier, "name": name})


@pytest.fixture
def rows() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "priority": ["high", "low", None, "urgent"],
            "amount": [10.5, 250.0, 99.0, None],
            "items": [1, 5, None, 3],
            "vip": [True, False, None, False],
            "opened": [date(2024, 1, 1), date(2024, 6, 1), None, date(2025, 1, 1)],
            "prompt_user": [
                "Please refund order 1",
                "Where is my parcel?",
                None,
                "CHARGEBACK filed on my card",
            ],
        }
    )


def _tiers(rows: pl.DataFrame, rules: list[Rule], **kwargs: Any) -> list[str]:
    return route_rules(rows, rules, "cheap", **kwargs)["tier"].to_list()


def test_first_match_wins_and_reasons(rows: pl.DataFrame) -> None:
    rules = [
        _rule({"column": "priority", "equals": "high"}, "strong"),
        _rule({"column": "amount", "gt": 50}, "mid", name="big-amounts"),
        _rule({"column": "priority", "in": ["high", "urgent"]}, "mid"),
    ]
    out = route_rules(rows, rules, "cheap")
    assert out.columns == [*rows.columns, "tier", "route_reason"]
    assert out.schema["tier"] == pl.String and out.schema["route_reason"] == pl.String
    assert out["tier"].to_list() == ["strong", "mid", "mid", "mid"]
    assert out["route_reason"].to_list() == [
        "rules[0]: priority == 'high'",
        "rule 'big-amounts': amount > 50",
        "rule 'big-amounts': amount > 50",
        "rules[2]: priority in ['high', 'urgent']",
    ]


def test_default_when_nothing_matches(rows: pl.DataFrame) -> None:
    out = route_rules(rows, [_rule({"column": "priority", "equals": "none"})], "cheap")
    assert out["tier"].to_list() == ["cheap"] * 4
    assert out["route_reason"].to_list() == ["default"] * 4
    assert route_rules(rows, [], "cheap")["tier"].to_list() == ["cheap"] * 4


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ({"column": "priority", "equals": "low"}, [False, True, False, False]),
        ({"column": "priority", "not_equals": "low"}, [True, False, False, True]),
        ({"column": "priority", "in": ["low", "urgent"]}, [False, True, False, True]),
        ({"column": "amount", "gt": 99}, [False, True, False, False]),
        ({"column": "amount", "ge": 99}, [False, True, True, False]),
        ({"column": "amount", "lt": 99}, [True, False, False, False]),
        ({"column": "amount", "le": 99}, [True, False, True, False]),
        ({"column": "items", "equals": 5}, [False, True, False, False]),
        ({"column": "items", "in": [1, 3.0]}, [True, False, False, True]),
        ({"column": "items", "ge": 2.5}, [False, True, False, True]),
        ({"column": "vip", "equals": True}, [True, False, False, False]),
        ({"column": "vip", "not_equals": True}, [False, True, False, True]),
        ({"column": "priority", "matches": "^(high|urg)"}, [True, False, False, True]),
        ({"column": "priority", "gt": "k"}, [False, True, False, True]),
        ({"column": "opened", "ge": "2024-06-01"}, [False, True, False, True]),
        ({"prompt_matches": "(?i)refund|chargeback"}, [True, False, False, True]),
        ({"prompt_matches": "refund|chargeback"}, [True, False, False, False]),
    ],
)
def test_every_operator_and_nulls_never_match(
    rows: pl.DataFrame, when: dict[str, Any], expected: list[bool]
) -> None:
    tiers = _tiers(rows, [_rule(when)])
    assert [t == "strong" for t in tiers] == expected


def test_categorical_columns_compare_as_text(rows: pl.DataFrame) -> None:
    cat = rows.with_columns(pl.col("priority").cast(pl.Categorical))
    rules = [
        _rule({"column": "priority", "in": ["low"]}),
        _rule({"column": "priority", "matches": "h"}),
    ]
    assert _tiers(cat, rules) == ["strong", "strong", "cheap", "cheap"]


def test_and_lists(rows: pl.DataFrame) -> None:
    rules = [
        _rule(
            [{"column": "priority", "in": ["high", "low"]}, {"column": "amount", "gt": 100}],
            name="low-but-big",
        )
    ]
    out = route_rules(rows, rules, "cheap")
    assert out["tier"].to_list() == ["cheap", "strong", "cheap", "cheap"]
    assert out["route_reason"][1] == (
        "rule 'low-but-big': priority in ['high', 'low'] and amount > 100"
    )


def test_prompt_tokens_from_counts_or_column(rows: pl.DataFrame) -> None:
    rules = [_rule({"prompt_tokens": {"gt": 400}}, name="long")]
    counts = pl.Series([10, 500, None, 401])
    out = route_rules(rows, rules, "cheap", token_counts=counts)
    assert out["tier"].to_list() == ["cheap", "strong", "cheap", "strong"]
    assert out["route_reason"][1] == "rule 'long': prompt_tokens > 400"
    assert out.columns == [*rows.columns, "tier", "route_reason"]
    with_column = rows.with_columns(prompt_tokens=pl.Series([400, 399, 1, 2]))
    assert _tiers(with_column, [_rule({"prompt_tokens": {"ge": 400}})]) == [
        "strong",
        "cheap",
        "cheap",
        "cheap",
    ]


def test_prompt_tokens_errors(rows: pl.DataFrame) -> None:
    rules = [_rule({"prompt_tokens": {"lt": 3}})]
    with pytest.raises(RoutingError, match="pass token_counts or add a column 'prompt_tokens'"):
        route_rules(rows, rules, "cheap")
    with pytest.raises(RoutingError, match="token_counts has 2 values for 4 rows"):
        route_rules(rows, rules, "cheap", token_counts=pl.Series([1, 2]))
    with pytest.raises(RoutingError, match="token_counts must hold numbers"):
        route_rules(rows, rules, "cheap", token_counts=pl.Series(["1", "2", "3", "4"]))


def test_missing_column_names_rule_and_column(rows: pl.DataFrame) -> None:
    rules = [
        _rule({"column": "priority", "equals": "high"}),
        _rule([{"column": "amount", "gt": 1}, {"column": "priorty", "equals": "x"}]),
    ]
    with pytest.raises(RoutingError) as info:
        route_rules(rows, rules, "cheap")
    message = str(info.value)
    assert message.startswith("rules[1].when: column 'priorty' is not in the rows (columns: id,")
    assert isinstance(info.value, ValueError) and isinstance(info.value, ConfigError)


def test_missing_prompt_column(rows: pl.DataFrame) -> None:
    with pytest.raises(
        RoutingError,
        match="rules\\[0\\].when: prompt_matches needs the rendered prompt column 'rendered'",
    ):
        route_rules(rows, [_rule({"prompt_matches": "x"})], "cheap", prompt_column="rendered")


def test_wrong_value_types_are_named(rows: pl.DataFrame) -> None:
    cases = [
        (
            {"column": "priority", "equals": 3},
            "column 'priority' is String; it cannot be compared with a number (3)",
        ),
        (
            {"column": "amount", "gt": "big"},
            "column 'amount' is Float64; it cannot be compared with text ('big')",
        ),
        ({"column": "vip", "equals": 1}, "column 'vip' is Boolean; it cannot be compared"),
        ({"column": "items", "in": [1, "two"]}, "cannot be compared with text ('two')"),
        ({"column": "amount", "matches": "1"}, "matches needs a text column; 'amount' is Float64"),
        ({"column": "opened", "gt": "next tuesday"}, "'next tuesday' is not a date/time"),
    ]
    for when, message in cases:
        with pytest.raises(RoutingError, match="^rules\\[0\\].when: ") as info:
            route_rules(rows, [_rule(when)], "cheap")
        assert message in str(info.value)


def test_regex_polars_cannot_compile_is_named(rows: pl.DataFrame) -> None:
    # Python's re accepts \Z; polars' regex engine spells it \z.
    with pytest.raises(RoutingError, match=r"regular expression 'parcel\\\\Z' does not compile"):
        route_rules(rows, [_rule({"prompt_matches": r"parcel\Z"})], "cheap")


def test_output_columns_must_be_free(rows: pl.DataFrame) -> None:
    clashing = rows.with_columns(tier=pl.lit("gold"))
    with pytest.raises(RoutingError, match="already have a column 'tier'"):
        route_rules(clashing, [], "cheap")
    out = route_rules(clashing, [], "cheap", tier_column="route_tier")
    assert out["tier"].to_list() == ["gold"] * 4 and out["route_tier"].to_list() == ["cheap"] * 4


def test_rules_can_read_a_tier_input_column(rows: pl.DataFrame) -> None:
    customers = rows.with_columns(tier=pl.Series(["gold", "silver", None, "gold"]))
    out = route_rules(
        customers, [_rule({"column": "tier", "equals": "gold"})], "cheap", tier_column="model_tier"
    )
    assert out["model_tier"].to_list() == ["strong", "cheap", "cheap", "strong"]


def test_empty_frame_and_single(rows: pl.DataFrame) -> None:
    empty = rows.head(0)
    out = route_rules(empty, [_rule({"column": "amount", "gt": 1})], "cheap")
    assert out.height == 0 and out.schema["tier"] == pl.String
    single = route_single(rows, "mini")
    assert single["tier"].to_list() == ["mini"] * 4
    assert single["route_reason"].to_list() == ["single"] * 4


def test_is_vectorised_on_many_rows() -> None:
    n = 200_000
    big = pl.DataFrame({"n": pl.int_range(0, n, eager=True), "prompt_user": ["x"] * n})
    out = route_rules(big, [_rule({"column": "n", "ge": n // 2})], "cheap")
    assert out["tier"].value_counts().sort("tier")["count"].to_list() == [n // 2, n // 2]
