"""A `rules` routing strategy's rules, as pydantic models: each rule's conditions on an input
column, the prompt's token count or the rendered prompt, and the tier it names."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from batchopt.config.routing_validators import compile_pattern
from batchopt.config.strict import StrictModel

__all__ = ["Rule", "RuleCondition", "TokenComparison"]

Scalar = str | bool | int | float
Orderable = int | float | str
Number = int | float

COLUMN_COMPARISONS = ("equals", "not_equals", "in", "gt", "ge", "lt", "le", "matches")
NUMBER_COMPARISONS = ("gt", "ge", "lt", "le")
# Constructs Python's `re` accepts but polars' regex engine (Rust `regex`) does not.
_UNSUPPORTED_IN_RULES = re.compile(r"\(\?<?[=!]|\(\?P=|\\[1-9]|\(\?>|\(\?\(")


def _check_rule_regex(pattern: str, key: str) -> str:
    """A regex for a rule: valid, and free of what polars' regex engine cannot run."""
    compile_pattern(pattern, key)
    if _UNSUPPORTED_IN_RULES.search(pattern):
        raise ValueError(
            f"{key}: regular expression {pattern!r} uses look-around, a back-reference, an "
            "atomic group or a conditional, which rules cannot run (they use polars' regex engine)"
        )
    return pattern


class TokenComparison(StrictModel):
    """A comparison of the rendered prompt's token count; exactly one key."""

    gt: Number | None = None
    ge: Number | None = None
    lt: Number | None = None
    le: Number | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> TokenComparison:
        given = [op for op in NUMBER_COMPARISONS if getattr(self, op) is not None]
        if len(given) != 1:
            found = f"got {', '.join(given)}" if given else "got none"
            raise ValueError(f"prompt_tokens needs exactly one of gt, ge, lt, le ({found})")
        return self

    @property
    def op(self) -> str:
        return next(op for op in NUMBER_COMPARISONS if getattr(self, op) is not None)

    @property
    def value(self) -> Number:
        return getattr(self, self.op)


class RuleCondition(StrictModel):
    """One test on a row: an input column, the prompt's token count, or the rendered prompt.

    Exactly one subject: `column` with exactly one comparison (`equals`, `not_equals`, `in`, `gt`,
    `ge`, `lt`, `le`, `matches`); `prompt_tokens` with one of `gt`, `ge`, `lt`, `le` under it; or
    `prompt_matches`. A null value never satisfies a comparison (not even `not_equals`).
    Regexes are searched for (not anchored) with polars' regex engine: add `(?i)` to ignore case;
    look-around and back-references are not available.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    column: str | None = Field(default=None, description="Input column to test")
    prompt_tokens: TokenComparison | None = Field(
        default=None, description="Test the rendered user prompt's token count, e.g. {gt: 400}"
    )
    prompt_matches: str | None = Field(
        default=None, description="Regex searched for in the rendered user prompt"
    )
    equals: Scalar | None = None
    not_equals: Scalar | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in", min_length=1)
    gt: Orderable | None = None
    ge: Orderable | None = None
    lt: Orderable | None = None
    le: Orderable | None = None
    matches: str | None = Field(default=None, description="Regex searched for in the column")

    @model_validator(mode="after")
    def _one_subject_one_comparison(self) -> RuleCondition:
        subjects = [
            key
            for key in ("column", "prompt_tokens", "prompt_matches")
            if getattr(self, key) is not None
        ]
        if len(subjects) != 1:
            found = f"got {', '.join(subjects)}" if subjects else "got none"
            raise ValueError(
                f"a condition needs exactly one of column, prompt_tokens, prompt_matches ({found})"
            )
        comparisons = self.comparisons_given
        if self.column is None:
            if comparisons:
                raise ValueError(
                    f"{', '.join(comparisons)}: only for a `column` condition "
                    "(prompt_tokens takes its comparison under it, e.g. prompt_tokens: {gt: 400})"
                )
            if self.prompt_matches is not None:
                _check_rule_regex(self.prompt_matches, "prompt_matches")
            return self
        if len(comparisons) != 1:
            found = f"got {', '.join(comparisons)}" if comparisons else "got none"
            raise ValueError(
                f"column '{self.column}' needs exactly one comparison of "
                f"{', '.join(COLUMN_COMPARISONS)} ({found})"
            )
        if self.matches is not None:
            _check_rule_regex(self.matches, "matches")
        return self

    @property
    def comparisons_given(self) -> list[str]:
        return [op for op in COLUMN_COMPARISONS if self._get(op) is not None]

    def _get(self, op: str) -> Any:
        return self.in_ if op == "in" else getattr(self, op)

    @property
    def subject(self) -> Literal["column", "prompt_tokens", "prompt_matches"]:
        if self.column is not None:
            return "column"
        return "prompt_tokens" if self.prompt_tokens is not None else "prompt_matches"

    @property
    def op(self) -> str:
        """The comparison: one of COLUMN_COMPARISONS ("matches" for prompt_matches)."""
        if self.prompt_tokens is not None:
            return self.prompt_tokens.op
        if self.prompt_matches is not None:
            return "matches"
        return self.comparisons_given[0]

    @property
    def value(self) -> Any:
        """What the subject is compared with (a list for `in`, a pattern for `matches`)."""
        if self.prompt_tokens is not None:
            return self.prompt_tokens.value
        if self.prompt_matches is not None:
            return self.prompt_matches
        return self._get(self.op)

    def describe(self) -> str:
        """A short human form, e.g. `priority == 'high'` or `prompt_tokens > 400`."""
        symbols = {
            "equals": "==",
            "not_equals": "!=",
            "gt": ">",
            "ge": ">=",
            "lt": "<",
            "le": "<=",
            "in": "in",
            "matches": "matches",
        }
        name = {
            "column": self.column,
            "prompt_tokens": "prompt_tokens",
            "prompt_matches": "prompt",
        }[self.subject]
        return f"{name} {symbols[self.op]} {self.value!r}"


def _conditions_schema(schema: dict[str, Any]) -> None:
    """`when` is written as one condition or a list: say so in the JSON Schema."""
    one = schema.pop("items")
    schema.pop("type", None)
    schema["anyOf"] = [one, {"type": "array", "items": one, "minItems": 1}]
    schema.pop("minItems", None)


class Rule(StrictModel):
    """When every condition holds, the row goes to `tier`; the first matching rule wins."""

    when: list[RuleCondition] = Field(
        min_length=1,
        description="One condition, or a list of conditions that must all hold",
        json_schema_extra=_conditions_schema,
    )
    tier: str = Field(description="One of routing.tiers")
    name: str | None = Field(default=None, description="Shown in route_reason")

    @field_validator("when", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict | RuleCondition) else value

    def describe(self) -> str:
        return " and ".join(condition.describe() for condition in self.when)
