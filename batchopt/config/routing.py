"""The `routing:` and `budget:` sections of a pipeline YAML, as pydantic models.

Tiers are profile names, ordered cheap → strong. A strategy picks a tier for each row:

    single      every row to the first tier
    rules       the first rule whose conditions all hold names the tier; else `default_tier`
    classifier  a router trained on labelled history sends rows likely to be hard to the strong tier
    cascade     every row starts on the cheapest tier; an answer a validator rejects is asked
                again one tier up

This module imports only pydantic, the standard library and batchopt.errors, so config.py can
import it. Checks that need the rest of the pipeline (tiers are profiles, a `json_schema`
validator needs `prompt.json_schema`) belong to the pipeline model.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from batchopt.config.strict import StrictModel

__all__ = [
    "DEFAULT_JUDGE_PROMPT",
    "BudgetConfig",
    "ClassifierConfig",
    "ConfidenceValidatorConfig",
    "FinishReasonValidatorConfig",
    "JsonSchemaValidatorConfig",
    "JudgeValidatorConfig",
    "LengthValidatorConfig",
    "RefusalValidatorConfig",
    "RegexValidatorConfig",
    "RoutingConfig",
    "Rule",
    "RuleCondition",
    "TokenComparison",
    "ValidatorConfig",
]

Scalar = str | bool | int | float
Orderable = int | float | str
Number = int | float

COLUMN_COMPARISONS = ("equals", "not_equals", "in", "gt", "ge", "lt", "le", "matches")
NUMBER_COMPARISONS = ("gt", "ge", "lt", "le")
# Constructs Python's `re` accepts but polars' regex engine (Rust `regex`) does not.
_UNSUPPORTED_IN_RULES = re.compile(r"\(\?<?[=!]|\(\?P=|\\[1-9]|\(\?>|\(\?\(")


def _compile(pattern: str, key: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{key}: invalid regular expression {pattern!r} ({exc})") from None


def _check_rule_regex(pattern: str, key: str) -> str:
    """A regex for a rule: valid, and free of what polars' regex engine cannot run."""
    _compile(pattern, key)
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


class JsonSchemaValidatorConfig(StrictModel):
    """The answer parses as JSON and matches `prompt.json_schema`."""

    type: Literal["json_schema"]


class RegexValidatorConfig(StrictModel):
    """The answer contains a match for `pattern` (Python `re.search`), or must not."""

    type: Literal["regex"]
    pattern: str
    must_match: bool = Field(default=True, description="false: a match is a failure")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        _compile(value, "pattern")
        return value


class LengthValidatorConfig(StrictModel):
    """The answer's length in characters (surrounding whitespace excluded) is within bounds."""

    type: Literal["length"]
    min_chars: int | None = Field(default=None, ge=0)
    max_chars: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _bounds(self) -> LengthValidatorConfig:
        if self.min_chars is None and self.max_chars is None:
            raise ValueError("length needs min_chars, max_chars or both")
        if (
            self.min_chars is not None
            and self.max_chars is not None
            and self.min_chars > self.max_chars
        ):
            raise ValueError(
                f"min_chars ({self.min_chars}) is larger than max_chars ({self.max_chars})"
            )
        return self


class RefusalValidatorConfig(StrictModel):
    """The answer is not a refusal or an "I don't know" (English phrases; see validators.py)."""

    type: Literal["refusal"]
    extra_phrases: list[str] = Field(
        default_factory=list, description="More phrases that mark a refusal (case-insensitive)"
    )

    @field_validator("extra_phrases")
    @classmethod
    def _not_blank(cls, value: list[str]) -> list[str]:
        for i, phrase in enumerate(value):
            if not phrase.strip():
                raise ValueError(f"extra_phrases[{i}] is blank")
        return value


class ConfidenceValidatorConfig(StrictModel):
    """The model was sure of its tokens: mean (and optionally lowest) token log-probability.

    Needs a provider that returns log-probabilities (OpenAI with `logprobs: true`); an answer
    without them passes, noted as "no logprobs".
    """

    type: Literal["confidence"]
    min_mean_logprob: float = Field(default=-0.5, le=0)
    min_token_logprob: float | None = Field(default=None, le=0)


DEFAULT_JUDGE_PROMPT = (
    "Question:\n{prompt}\n\nAnswer:\n{answer}\n\n"
    "Does the answer respond to the question correctly and completely? Reply with one word: "
    "yes or no."
)


class JudgeValidatorConfig(StrictModel):
    """A model of `tier` reads the prompt and the answer and says whether the answer passes.

    Runs after every other validator has passed, one call per answer.
    """

    type: Literal["judge"]
    tier: str = Field(description="One of routing.tiers")
    prompt: str = Field(
        default=DEFAULT_JUDGE_PROMPT,
        description="The judge's user message; {prompt} and {answer} are replaced",
    )
    pass_words: list[str] = Field(
        default_factory=lambda: ["yes", "pass"],
        min_length=1,
        description="The judge's first word, if one of these, passes the answer",
    )

    @field_validator("prompt")
    @classmethod
    def _has_answer(cls, value: str) -> str:
        if "{answer}" not in value:
            raise ValueError("prompt must contain the placeholder {answer}")
        return value

    @field_validator("pass_words")
    @classmethod
    def _single_words(cls, value: list[str]) -> list[str]:
        for i, word in enumerate(value):
            if not re.fullmatch(r"\w+", word.strip()):
                raise ValueError(f"pass_words[{i}]: {word!r} is not a single word")
        return [word.strip().casefold() for word in value]


class FinishReasonValidatorConfig(StrictModel):
    """The answer did not stop for one of these reasons ("length": cut off at max_tokens)."""

    type: Literal["finish_reason"]
    escalate_on: list[str] = Field(
        default_factory=lambda: ["length"],
        min_length=1,
        description="Finish reasons in OpenAI's words (Anthropic's are mapped): length, "
        "content_filter, refusal...",
    )


ValidatorConfig = Annotated[
    JsonSchemaValidatorConfig
    | RegexValidatorConfig
    | LengthValidatorConfig
    | RefusalValidatorConfig
    | ConfidenceValidatorConfig
    | JudgeValidatorConfig
    | FinishReasonValidatorConfig,
    Field(discriminator="type"),
]


class ClassifierConfig(StrictModel):
    """A router trained on labelled history (see batchopt.routing.classifier)."""

    path: str = Field(description="The trained router (.npz); relative to the YAML's folder")
    threshold: float = Field(
        default=0.5,
        gt=0.0,
        lt=1.0,
        description="A row whose probability of being hard is at least this goes to the strong "
        "tier",
    )
    backend: Literal["sentence-transformers", "model2vec"] = Field(
        default="sentence-transformers",
        description="Embedder of the rendered prompts; must be the one the router was trained with",
    )
    model: str | None = Field(
        default=None, description="Embedder model folder (default: the backend's packaged model)"
    )


class RoutingConfig(StrictModel):
    """Which tier answers each row."""

    strategy: Literal["single", "rules", "classifier", "cascade"] = "single"
    tiers: list[str] = Field(
        min_length=1, description="Profile names, cheapest first, strongest last"
    )
    rules: list[Rule] = Field(default_factory=list, description="rules: first match wins")
    default_tier: str | None = Field(
        default=None, description="rules: the tier when no rule matches (default: the first tier)"
    )
    classifier: ClassifierConfig | None = Field(
        default=None, description="classifier: the trained router; uses exactly two tiers"
    )
    validators: list[ValidatorConfig] = Field(
        default_factory=list, description="cascade: checks an answer must pass to stay on its tier"
    )
    max_escalations: int | None = Field(
        default=None,
        ge=1,
        description="cascade: how many tiers up a row may go (default: up to the last tier)",
    )
    assume_escalation: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="cascade: the share of a tier's answers `batchopt plan` and the budget "
        "check expect to go one tier up while no past run of this configuration says (default "
        "0.2)",
    )

    @model_validator(mode="after")
    def _fits_strategy(self) -> RoutingConfig:
        tiers = self.tiers
        listed = ", ".join(tiers)
        seen: set[str] = set()
        for i, tier in enumerate(tiers):
            if tier in seen:
                raise ValueError(f"tiers[{i}]: '{tier}' is listed twice")
            seen.add(tier)
        strategy = self.strategy
        if strategy != "single" and len(tiers) < 2:
            raise ValueError(f"strategy '{strategy}' needs at least 2 tiers (got {listed})")
        used = {
            "rules": bool(self.rules),
            "default_tier": self.default_tier is not None,
            "classifier": self.classifier is not None,
            "validators": bool(self.validators),
            "max_escalations": self.max_escalations is not None,
            "assume_escalation": self.assume_escalation is not None,
        }
        owner = {
            "rules": "rules",
            "default_tier": "rules",
            "classifier": "classifier",
            "validators": "cascade",
            "max_escalations": "cascade",
            "assume_escalation": "cascade",
        }
        for key, is_set in used.items():
            if is_set and owner[key] != strategy:
                raise ValueError(f"{key}: only used by strategy '{owner[key]}' (not '{strategy}')")
        if strategy == "rules" and not self.rules:
            raise ValueError("strategy 'rules' needs at least one entry in rules")
        if strategy == "classifier":
            if self.classifier is None:
                raise ValueError("strategy 'classifier' needs classifier (path of the router)")
            if len(tiers) != 2:
                raise ValueError(
                    f"strategy 'classifier' uses exactly 2 tiers, cheap and strong (got {listed})"
                )
        if strategy == "cascade":
            if not self.validators:
                raise ValueError("strategy 'cascade' needs at least one entry in validators")
            judges = [i for i, v in enumerate(self.validators) if v.type == "judge"]
            if len(judges) > 1:
                raise ValueError(f"validators[{judges[1]}]: only one judge validator is allowed")
            if self.max_escalations is not None and self.max_escalations > len(tiers) - 1:
                raise ValueError(
                    f"max_escalations: {self.max_escalations} is more than the "
                    f"{len(tiers) - 1} step(s) up from the first tier ({listed})"
                )
        named = [(f"rules[{i}].tier", rule.tier) for i, rule in enumerate(self.rules)]
        if self.default_tier is not None:
            named.append(("default_tier", self.default_tier))
        named += [
            (f"validators[{i}].tier", v.tier)
            for i, v in enumerate(self.validators)
            if isinstance(v, JudgeValidatorConfig)
        ]
        for key, tier in named:
            if tier not in seen:
                raise ValueError(f"{key}: '{tier}' is not one of the tiers ({listed})")
        return self

    @property
    def fallback_tier(self) -> str:
        """rules: the tier of a row no rule matches."""
        return self.default_tier or self.tiers[0]

    @property
    def escalation_limit(self) -> int:
        """cascade: how many tiers up a row may go."""
        return self.max_escalations or len(self.tiers) - 1


class BudgetConfig(StrictModel):
    """A spending cap for one run, every tier, escalation and judge call included."""

    max_usd: float = Field(gt=0, description="Stop sending once the run has spent this much")
