"""A `cascade` routing strategy's validators, as pydantic models: the checks an answer must pass
to stay on its tier (JSON Schema, regex, length, refusal, confidence, a judge, finish reason)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from batchopt.config.strict import StrictModel

__all__ = [
    "DEFAULT_JUDGE_PROMPT",
    "ConfidenceValidatorConfig",
    "FinishReasonValidatorConfig",
    "JsonSchemaValidatorConfig",
    "JudgeValidatorConfig",
    "LengthValidatorConfig",
    "RefusalValidatorConfig",
    "RegexValidatorConfig",
    "ValidatorConfig",
]


def compile_pattern(pattern: str, key: str) -> re.Pattern[str]:
    """`pattern` compiled; a ValueError naming `key` if it is not a valid regular expression."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{key}: invalid regular expression {pattern!r} ({exc})") from None


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
        compile_pattern(value, "pattern")
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
