"""The `rules` strategy: the first rule whose conditions all hold names a row's tier.

Rules run as one polars expression over the whole frame (no Python loop over rows). A null never
satisfies a comparison, `not_equals` included. Regexes are searched for, unanchored, with polars'
regex engine. `prompt_tokens` conditions read token counts the caller computed (with
batchopt.tokens.count_tokens, for the cheap tier's model) or a `prompt_tokens` column.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from batchopt.config.routing_rules import Rule, RuleCondition
from batchopt.routing.errors import RoutingError, check_free_columns

__all__ = ["TOKENS_COLUMN", "route_rules", "route_single"]

TOKENS_COLUMN = "prompt_tokens"
_TEMP_TOKENS = "__batchopt_prompt_tokens"
_OPS = {"equals": "eq", "not_equals": "ne", "gt": "gt", "ge": "ge", "lt": "lt", "le": "le"}
_TEXT = (pl.String, pl.Categorical, pl.Enum)


def route_single(
    rows: pl.DataFrame,
    tier: str,
    *,
    tier_column: str = "tier",
    reason_column: str = "route_reason",
) -> pl.DataFrame:
    """Every row to `tier`, with route_reason "single"."""
    check_free_columns(rows.columns, tier_column, reason_column)
    return rows.with_columns(
        pl.lit(tier, dtype=pl.String).alias(tier_column),
        pl.lit("single", dtype=pl.String).alias(reason_column),
    )


def route_rules(
    rows: pl.DataFrame,
    rules: list[Rule],
    default_tier: str,
    prompt_column: str = "prompt_user",
    token_counts: pl.Series | None = None,
    *,
    tier_column: str = "tier",
    reason_column: str = "route_reason",
) -> pl.DataFrame:
    """`rows` plus `tier` and `route_reason` (both String): the first matching rule's, else
    `default_tier` with reason "default".

    The reason names the rule and its conditions: `rules[0]: priority == 'high'`, or
    `rule 'long-prompts': prompt_tokens > 400` for a named rule. A rule naming a column the rows
    lack, a value of the wrong type for its column, missing token counts or a missing prompt
    column raise RoutingError (a ValueError) naming the rule and the column.
    """
    check_free_columns(rows.columns, tier_column, reason_column)
    frame = rows
    tokens = None
    if any(c.subject == "prompt_tokens" for rule in rules for c in rule.when):
        frame, tokens = _with_token_counts(rows, token_counts)
    masks = [
        pl.all_horizontal(
            [_condition(frame, c, f"rules[{i}].when", prompt_column, tokens) for c in rule.when]
        )
        for i, rule in enumerate(rules)
    ]
    tier = pl.lit(default_tier, dtype=pl.String)
    reason = pl.lit("default", dtype=pl.String)
    for i in reversed(range(len(rules))):
        tier = pl.when(masks[i]).then(pl.lit(rules[i].tier, dtype=pl.String)).otherwise(tier)
        reason = (
            pl.when(masks[i]).then(pl.lit(_reason(i, rules[i]), dtype=pl.String)).otherwise(reason)
        )
    routed = frame.with_columns(tier.alias(tier_column), reason.alias(reason_column))
    return routed.drop(_TEMP_TOKENS) if _TEMP_TOKENS in routed.columns else routed


def _reason(index: int, rule: Rule) -> str:
    label = f"rule {rule.name!r}" if rule.name else f"rules[{index}]"
    return f"{label}: {rule.describe()}"


def _with_token_counts(
    rows: pl.DataFrame, token_counts: pl.Series | None
) -> tuple[pl.DataFrame, str]:
    if token_counts is None:
        if TOKENS_COLUMN not in rows.columns:
            raise RoutingError(
                f"a prompt_tokens rule needs token counts: pass token_counts or add a column "
                f"'{TOKENS_COLUMN}'"
            )
        if not rows.schema[TOKENS_COLUMN].is_numeric():
            raise RoutingError(
                f"column '{TOKENS_COLUMN}' must hold numbers, not {rows.schema[TOKENS_COLUMN]}"
            )
        return rows, TOKENS_COLUMN
    if token_counts.len() != rows.height:
        raise RoutingError(f"token_counts has {token_counts.len()} values for {rows.height} rows")
    if not token_counts.dtype.is_numeric():
        raise RoutingError(f"token_counts must hold numbers, not {token_counts.dtype}")
    return rows.with_columns(token_counts.alias(_TEMP_TOKENS)), _TEMP_TOKENS


def _condition(
    frame: pl.DataFrame,
    condition: RuleCondition,
    where: str,
    prompt_column: str,
    tokens: str | None,
) -> pl.Expr:
    if condition.subject == "prompt_tokens":
        assert tokens is not None
        return _compare(pl.col(tokens), condition.op, condition.value)
    if condition.subject == "prompt_matches":
        if prompt_column not in frame.columns:
            raise RoutingError(
                f"{where}: prompt_matches needs the rendered prompt column '{prompt_column}', "
                "which the rows lack"
            )
        _check_regex(condition.value, where)
        return _text(pl.col(prompt_column)).str.contains(condition.value).fill_null(False)
    column = condition.column
    assert column is not None
    if column not in frame.columns:
        raise RoutingError(
            f"{where}: column '{column}' is not in the rows "
            f"(columns: {', '.join(c for c in frame.columns if c != _TEMP_TOKENS)})"
        )
    dtype = frame.schema[column]
    if condition.op == "matches":
        if not isinstance(dtype, _TEXT):
            raise RoutingError(f"{where}: matches needs a text column; '{column}' is {dtype}")
        _check_regex(condition.value, where)
        return _text(pl.col(column)).str.contains(condition.value).fill_null(False)
    values = condition.value if condition.op == "in" else [condition.value]
    literals = [_literal(dtype, value, column, where) for value in values]
    subject = _text(pl.col(column)) if isinstance(dtype, _TEXT) else pl.col(column)
    if condition.op == "in":
        return pl.any_horizontal([subject.eq(lit) for lit in literals]).fill_null(False)
    return _compare(subject, condition.op, literals[0])


def _compare(subject: pl.Expr, op: str, value: Any) -> pl.Expr:
    other = value if isinstance(value, pl.Expr) else pl.lit(value)
    return getattr(subject, _OPS[op])(other).fill_null(False)


def _text(expr: pl.Expr) -> pl.Expr:
    return expr.cast(pl.String)


def _literal(dtype: pl.DataType, value: Any, column: str, where: str) -> pl.Expr:
    """`value` as a literal comparable with a column of `dtype`, or a RoutingError."""
    kind = (
        "a boolean"
        if isinstance(value, bool)
        else ("text" if isinstance(value, str) else "a number")
    )
    fits = False
    literal: pl.Expr = pl.lit(value)
    if isinstance(value, bool):
        fits = dtype == pl.Boolean
    elif isinstance(value, int | float):
        fits = dtype.is_numeric()
    elif isinstance(dtype, _TEXT):
        fits = True
    elif isinstance(dtype, pl.Date | pl.Datetime):
        try:
            if isinstance(dtype, pl.Date):
                literal = pl.lit(value).str.to_date()
            else:
                literal = pl.lit(value).str.to_datetime(
                    time_unit=dtype.time_unit, time_zone=dtype.time_zone
                )
            pl.select(literal)
        except pl.exceptions.PolarsError:
            raise RoutingError(
                f"{where}: {value!r} is not a date/time that column '{column}' ({dtype}) can "
                "be compared with (write it as ISO 8601, e.g. '2024-05-31')"
            ) from None
        fits = True
    if not fits:
        raise RoutingError(
            f"{where}: column '{column}' is {dtype}; it cannot be compared with {kind} ({value!r})"
        )
    return literal


def _check_regex(pattern: str, where: str) -> None:
    try:
        pl.select(pl.lit("").str.contains(pattern))
    except pl.exceptions.PolarsError as exc:
        detail = str(exc).strip().splitlines()
        last = next((line for line in detail if line.startswith("error:")), "invalid")
        raise RoutingError(
            f"{where}: regular expression {pattern!r} does not compile in polars ({last})"
        ) from None
