"""Cascade validators: does an answer stay on its tier, or is the row asked one tier up?

Every validator is pure: `check(request, result) -> Verdict`. The judge is the exception, as it
needs a model call; the runner drives it:

    verdict = validate(validators, request, result)        # local checks, in configured order
    judge = judge_of(validators)
    if verdict.ok and judge is not None:
        judge_result = send(judge.judge_request(request, result, make_judge_request))
        verdict = judge.read_judgement(judge_result)

`make_judge_request(user_message) -> Request` builds the call for the judge's tier (its model,
parameters and cache key); the judge validator only writes the message and reads the answer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from batchopt.config.routing_validators import (
    ConfidenceValidatorConfig,
    FinishReasonValidatorConfig,
    JsonSchemaValidatorConfig,
    JudgeValidatorConfig,
    LengthValidatorConfig,
    RefusalValidatorConfig,
    RegexValidatorConfig,
    ValidatorConfig,
)
from batchopt.records import Request, Result
from batchopt.routing.errors import RoutingError
from batchopt.services.structured import check_structured

__all__ = [
    "REFUSAL_PATTERNS",
    "ConfidenceValidator",
    "FinishReasonValidator",
    "JsonSchemaValidator",
    "JudgeRequestFactory",
    "JudgeValidator",
    "LengthValidator",
    "RefusalValidator",
    "RegexValidator",
    "Validator",
    "Verdict",
    "build_validators",
    "judge_of",
    "validate",
]

JudgeRequestFactory = Callable[[str], Request]
"""Builds the judge tier's Request from the judge's user message."""


@dataclass(frozen=True)
class Verdict:
    """Whether an answer passes; if not, which validator failed it and why.

    A passing verdict may carry a note in `reason` (e.g. "confidence: no logprobs": the check
    could not run).
    """

    ok: bool
    validator: str | None = None
    reason: str | None = None


class Validator(Protocol):
    """A check of one answer. `needs_call` validators (the judge) are skipped by `validate`."""

    name: str
    needs_call: bool

    def check(self, request: Request, result: Result) -> Verdict: ...


def _text(result: Result) -> str:
    return result.text or ""


@dataclass(frozen=True)
class JsonSchemaValidator:
    """The answer parses as JSON and matches the prompt's schema (execute.structured's check)."""

    schema: dict[str, Any]
    name: str = "json_schema"
    needs_call: bool = False

    def check(self, request: Request, result: Result) -> Verdict:
        asked = (
            request
            if request.json_schema is not None
            else replace(request, json_schema=self.schema)
        )
        checked = check_structured(asked, result)
        if checked.ok:
            return Verdict(True)
        return Verdict(False, self.name, checked.error)


@dataclass(frozen=True)
class RegexValidator:
    """The answer contains a match for `pattern` (`re.search`), or, with must_match false, none."""

    pattern: str
    must_match: bool = True
    name: str = "regex"
    needs_call: bool = False

    def check(self, request: Request, result: Result) -> Verdict:
        found = re.search(self.pattern, _text(result)) is not None
        if found == self.must_match:
            return Verdict(True)
        says = "does not match" if self.must_match else "matches"
        return Verdict(False, self.name, f"answer {says} {self.pattern!r}")


@dataclass(frozen=True)
class LengthValidator:
    """The answer's length in characters, surrounding whitespace excluded, is within bounds."""

    min_chars: int | None = None
    max_chars: int | None = None
    name: str = "length"
    needs_call: bool = False

    def check(self, request: Request, result: Result) -> Verdict:
        length = len(_text(result).strip())
        if self.min_chars is not None and length < self.min_chars:
            return Verdict(False, self.name, f"answer has {length} chars (min {self.min_chars})")
        if self.max_chars is not None and length > self.max_chars:
            return Verdict(False, self.name, f"answer has {length} chars (max {self.max_chars})")
        return Verdict(True)


# Refusal and "I don't know" phrases, English, matched case-insensitively after typographic
# apostrophes become "'". Each is a first-person or impersonal statement about the model's own
# ability or knowledge, so a summary that merely contains "not", "no" or "unknown" ("The
# customer does not know the order number", "No refund was issued") does not match. Ambiguous
# ones are tied to their refusal context: "sorry, but" only opens the answer or a sentence;
# "no information" only as "there is / contains / has no information" or "no information
# available/provided/given".
REFUSAL_PATTERNS: tuple[tuple[str, str], ...] = (
    ("i don't know", r"\bi (?:don't|do not|dont) know\b"),
    ("i'm not sure", r"\bi(?:'m| am|m) not (?:sure|certain)\b"),
    ("i can't help", r"\bi (?:can't|cannot|can not) (?:help|assist)\b"),
    ("as an ai", r"\bas an ai\b"),
    ("i'm unable to", r"\bi(?:'m| am) unable to\b"),
    (
        "cannot determine",
        r"\b(?:i|we) (?:can't|cannot|can not) (?:determine|tell)\b"
        r"|\b(?:can't|cannot|can not) be determined\b|\b(?:unable|impossible) to determine\b",
    ),
    ("not enough information", r"\b(?:not enough|insufficient) (?:information|context)\b"),
    (
        "no information",
        r"^no information\b|\b(?:there is|there's|contains|has|have) no information\b"
        r"|\bno information (?:is |was )?(?:available|provided|given)\b",
    ),
    ("sorry, but", r"(?:^|[.!?]\s+)(?:i'm |i am )?(?:very |so )?sorry,? but\b"),
)
# An answer that is only one of these (after trimming spaces, quotes and final punctuation).
REFUSAL_WHOLE_ANSWERS = frozenset({"n/a", "idk", "no answer"})
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})


def _normalise(text: str) -> str:
    return " ".join(text.translate(_APOSTROPHES).casefold().split())


def _phrase_pattern(phrase: str) -> str:
    core = re.escape(_normalise(phrase))
    start = r"\b" if re.match(r"\w", phrase.strip()) else ""
    end = r"\b" if re.search(r"\w$", phrase.strip()) else ""
    return f"{start}{core}{end}"


@dataclass(frozen=True)
class RefusalValidator:
    """The answer is not empty, a refusal or an "I don't know" (see REFUSAL_PATTERNS)."""

    extra_phrases: tuple[str, ...] = ()
    name: str = "refusal"
    needs_call: bool = False
    _patterns: tuple[tuple[str, re.Pattern[str]], ...] = field(
        default=(), init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        patterns = [(label, re.compile(p)) for label, p in REFUSAL_PATTERNS]
        patterns += [(_normalise(x), re.compile(_phrase_pattern(x))) for x in self.extra_phrases]
        object.__setattr__(self, "_patterns", tuple(patterns))

    def check(self, request: Request, result: Result) -> Verdict:
        text = _normalise(_text(result))
        bare = text.strip(" \"'.!")
        if not bare:
            return Verdict(False, self.name, "empty answer")
        if bare in REFUSAL_WHOLE_ANSWERS:
            return Verdict(False, self.name, f"answer is only {bare!r}")
        for label, pattern in self._patterns:
            if pattern.search(text):
                return Verdict(False, self.name, f"matched {label!r}")
        return Verdict(True)


@dataclass(frozen=True)
class ConfidenceValidator:
    """Mean token log-probability at least `min_mean_logprob`; with `min_token_logprob`, no token
    below it.

    A result without log-probabilities (Anthropic, a provider or profile without `logprobs`)
    passes with the note "no logprobs": this check cannot judge it, and the caller may warn.
    """

    min_mean_logprob: float = -0.5
    min_token_logprob: float | None = None
    name: str = "confidence"
    needs_call: bool = False

    def check(self, request: Request, result: Result) -> Verdict:
        logprobs = result.token_logprobs
        if not logprobs:
            return Verdict(True, self.name, "no logprobs")
        mean = math.fsum(logprobs) / len(logprobs)
        if mean < self.min_mean_logprob:
            return Verdict(
                False,
                self.name,
                f"low confidence: mean logprob {mean:.2f} < {self.min_mean_logprob}",
            )
        if self.min_token_logprob is not None:
            lowest = min(logprobs)
            if lowest < self.min_token_logprob:
                return Verdict(
                    False,
                    self.name,
                    f"low confidence: a token's logprob {lowest:.2f} < {self.min_token_logprob}",
                )
        return Verdict(True)


@dataclass(frozen=True)
class FinishReasonValidator:
    """The answer did not stop for one of `escalate_on` ("length": cut off at max_tokens)."""

    escalate_on: tuple[str, ...] = ("length",)
    name: str = "finish_reason"
    needs_call: bool = False

    def check(self, request: Request, result: Result) -> Verdict:
        if result.finish_reason in self.escalate_on:
            return Verdict(False, self.name, f"finish_reason {result.finish_reason!r}")
        return Verdict(True)


_PLACEHOLDER = re.compile(r"\{(prompt|answer)\}")
_FIRST_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class JudgeValidator:
    """A model of `tier` grades the answer; its first word, if in `pass_words`, passes it.

    Needs a call, so `check` refuses: use `judge_request` and `read_judgement`. A failed judge
    call fails the answer (the cascade would rather pay one tier up than keep an unchecked one).
    """

    tier: str
    prompt: str
    pass_words: tuple[str, ...] = ("yes", "pass")
    name: str = "judge"
    needs_call: bool = True

    def check(self, request: Request, result: Result) -> Verdict:
        raise TypeError("the judge validator needs a model call: use judge_request/read_judgement")

    def judge_message(self, request: Request, result: Result) -> str:
        """The judge's user message: `prompt` with {prompt} and {answer} filled in, once each
        (braces in the prompt or the answer are left alone)."""
        values = {"prompt": request.user, "answer": _text(result)}
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.prompt)

    def judge_request(
        self, request: Request, result: Result, judge_model_request_factory: JudgeRequestFactory
    ) -> Request:
        """The request to send through the judge's tier."""
        return judge_model_request_factory(self.judge_message(request, result))

    def read_judgement(self, judge_result: Result) -> Verdict:
        """The verdict on the judged answer from the judge's own result."""
        if not judge_result.ok:
            return Verdict(False, self.name, f"judge call failed ({judge_result.error})")
        answer = _normalise(_text(judge_result))
        word = _FIRST_WORD.search(answer)
        if word is not None and word.group(0) in self.pass_words:
            return Verdict(True)
        shown = answer if len(answer) <= 60 else answer[:57] + "..."
        return Verdict(False, self.name, f"judge answered {shown!r}")


def build_validators(
    configs: Sequence[ValidatorConfig], json_schema: dict[str, Any] | None
) -> list[Validator]:
    """Validators in configured order; `json_schema` is the prompt's (for `json_schema`)."""
    validators: list[Validator] = []
    for i, config in enumerate(configs):
        if isinstance(config, JsonSchemaValidatorConfig):
            if json_schema is None:
                raise RoutingError(
                    f"routing.validators[{i}]: type json_schema needs prompt.json_schema"
                )
            validators.append(JsonSchemaValidator(json_schema))
        elif isinstance(config, RegexValidatorConfig):
            validators.append(RegexValidator(config.pattern, config.must_match))
        elif isinstance(config, LengthValidatorConfig):
            validators.append(LengthValidator(config.min_chars, config.max_chars))
        elif isinstance(config, RefusalValidatorConfig):
            validators.append(RefusalValidator(tuple(config.extra_phrases)))
        elif isinstance(config, ConfidenceValidatorConfig):
            validators.append(
                ConfidenceValidator(config.min_mean_logprob, config.min_token_logprob)
            )
        elif isinstance(config, FinishReasonValidatorConfig):
            validators.append(FinishReasonValidator(tuple(config.escalate_on)))
        elif isinstance(config, JudgeValidatorConfig):
            validators.append(JudgeValidator(config.tier, config.prompt, tuple(config.pass_words)))
        else:  # pragma: no cover - the config union is closed
            raise TypeError(f"unknown validator config {config!r}")
    return validators


def judge_of(validators: Sequence[Validator]) -> JudgeValidator | None:
    """The judge among `validators`, if one is configured."""
    return next((v for v in validators if isinstance(v, JudgeValidator)), None)


def validate(validators: Sequence[Validator], request: Request, result: Result) -> Verdict:
    """The first failing local validator's verdict (configured order), else a pass.

    A failed result (status != "ok") fails as Verdict(False, "status", its error). Validators
    that need a call (the judge) are skipped. A pass carries the notes of validators that could
    not judge, e.g. "confidence: no logprobs".
    """
    if not result.ok:
        return Verdict(False, "status", result.error or "failed")
    notes: list[str] = []
    for validator in validators:
        if validator.needs_call:
            continue
        verdict = validator.check(request, result)
        if not verdict.ok:
            return verdict
        if verdict.reason:
            notes.append(f"{verdict.validator or validator.name}: {verdict.reason}")
    return Verdict(True, None, "; ".join(notes) or None)
