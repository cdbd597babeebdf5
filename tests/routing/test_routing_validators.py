from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from batchopt.config.routing_validators import ValidatorConfig
from batchopt.records import Request, Result
from batchopt.routing import (
    JudgeValidator,
    RoutingError,
    Verdict,
    build_validators,
    judge_of,
    validate,
)

SCHEMA = {
    "type": "object",
    "properties": {"category": {"enum": ["billing", "shipping"]}, "urgent": {"type": "boolean"}},
    "required": ["category", "urgent"],
    "additionalProperties": False,
}


def _request(user: str = "Summarise: my parcel is late", schema: Any = None) -> Request:
    return Request(
        key="k1",
        provider="openai",
        model="gpt-4o-mini",
        system="",
        user=user,
        max_tokens=64,
        json_schema=schema,
    )


def _result(text: str | None = "The parcel is late.", **kwargs: Any) -> Result:
    return Result(key="k1", text=text, **kwargs)


def _build(*configs: dict[str, Any], schema: dict[str, Any] | None = None) -> list[Any]:
    adapter = TypeAdapter(list[ValidatorConfig])
    return build_validators(adapter.validate_python(list(configs)), schema)


def _check(config: dict[str, Any], result: Result, request: Request | None = None) -> Verdict:
    return validate(_build(config, schema=SCHEMA), request or _request(), result)


# --- json_schema: execute.structured's check -------------------------------------------------


def test_json_schema_passes_a_valid_answer() -> None:
    verdict = _check({"type": "json_schema"}, _result('{"category": "billing", "urgent": false}'))
    assert verdict == Verdict(True)


def test_json_schema_fails_bad_json_and_schema_mismatch() -> None:
    verdict = _check({"type": "json_schema"}, _result("category: billing"))
    assert not verdict.ok and verdict.validator == "json_schema"
    assert verdict.reason is not None and verdict.reason.startswith("answer is not JSON")
    verdict = _check({"type": "json_schema"}, _result('{"category": "refunds", "urgent": true}'))
    assert verdict.validator == "json_schema"
    assert verdict.reason is not None
    assert "does not match prompt.json_schema at category" in verdict.reason


def test_json_schema_uses_parsed_and_the_requests_own_schema() -> None:
    parsed = {"category": "shipping", "urgent": True}
    assert _check({"type": "json_schema"}, _result("ignored", parsed=parsed)).ok
    strict = {"type": "object", "required": ["x"]}
    verdict = _check(
        {"type": "json_schema"}, _result(text="{}", parsed={}), _request(schema=strict)
    )
    assert not verdict.ok and "at (root): 'x' is a required property" in (verdict.reason or "")


def test_json_schema_needs_a_schema() -> None:
    with pytest.raises(RoutingError, match=r"validators\[1\]: type json_schema needs prompt"):
        _build({"type": "refusal"}, {"type": "json_schema"}, schema=None)


# --- regex, length, finish_reason --------------------------------------------------------------


def test_regex_must_match_and_must_not() -> None:
    must = {"type": "regex", "pattern": r"\border \d+"}
    assert _check(must, _result("Refund order 1234 today")).ok
    verdict = _check(must, _result("Refund it"))
    assert verdict == Verdict(False, "regex", "answer does not match '\\\\border \\\\d+'")
    must_not = {"type": "regex", "pattern": "(?i)lorem ipsum", "must_match": False}
    assert _check(must_not, _result("Fine")).ok
    assert _check(must_not, _result("LOREM IPSUM dolor")).reason == (
        "answer matches '(?i)lorem ipsum'"
    )


def test_length() -> None:
    config = {"type": "length", "min_chars": 5, "max_chars": 10}
    assert _check(config, _result("  12345  ")).ok
    assert _check(config, _result("1234")) == Verdict(False, "length", "answer has 4 chars (min 5)")
    assert _check(config, _result("x" * 11)).reason == "answer has 11 chars (max 10)"
    assert _check({"type": "length", "max_chars": 3}, _result(None)).ok


def test_finish_reason() -> None:
    config = {"type": "finish_reason"}
    assert _check(config, _result(finish_reason="stop")).ok
    assert _check(config, _result(finish_reason=None)).ok
    assert _check(config, _result(finish_reason="length")) == Verdict(
        False, "finish_reason", "finish_reason 'length'"
    )
    custom = {"type": "finish_reason", "escalate_on": ["length", "content_filter"]}
    assert not _check(custom, _result(finish_reason="content_filter")).ok


# --- refusal ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        "I don't know.",
        "I do not know which order this is.",
        "I\u2019m not sure what the customer wants.",
        "Im not sure",
        "I cannot help with that request.",
        "I can\u2019t help with this.",
        "As an AI language model, I have no access to your account.",
        "I am unable to summarise this ticket.",
        "I'm unable to read the attachment.",
        "Based on the text, I cannot determine the order number.",
        "The order number cannot be determined from the ticket.",
        "There is not enough information to answer.",
        "Insufficient information in the ticket.",
        "No information provided.",
        "The ticket contains no information about the product.",
        "I'm sorry, but I can only answer questions about orders.",
        "Sorry but that is outside my scope.",
        "N/A",
        " n/a. ",
        "",
        "   \n ",
        '"..."',
    ],
)
def test_refusals_are_caught(answer: str) -> None:
    verdict = _check({"type": "refusal"}, _result(answer))
    assert not verdict.ok and verdict.validator == "refusal", answer


@pytest.mark.parametrize(
    "answer",
    [
        "The customer does not know where the parcel is and asks for tracking.",
        "Not delivered yet; the customer wants a refund, not a replacement.",
        "No refund was issued because the item was not returned.",
        "The customer received no information about the delay and is unhappy.",
        "The status of the order is unknown to the customer.",
        "Customer is not sure whether the size fits and asks about exchanges.",
        "The agent apologised and said sorry; the refund follows next week.",
        "Diagnostic: cannot reproduce the login error on Android.",
        "N/A values in the export are caused by missing postcodes.",
        "none",
        "NA",
    ],
)
def test_normal_answers_are_not_refusals(answer: str) -> None:
    assert _check({"type": "refusal"}, _result(answer)).ok, answer


def test_refusal_extra_phrases_and_reason() -> None:
    config = {"type": "refusal", "extra_phrases": ["Please contact support", "¯\\_(ツ)_/¯"]}
    verdict = _check(config, _result("please  contact SUPPORT for this."))
    assert verdict == Verdict(False, "refusal", "matched 'please contact support'")
    assert not _check(config, _result("¯\\_(ツ)_/¯")).ok
    assert _check(config, _result("Support contacted the customer.")).ok
    assert _check({"type": "refusal"}, _result("I don't know")).reason == 'matched "i don\'t know"'
    assert _check({"type": "refusal"}, _result("N/A")).reason == "answer is only 'n/a'"


# --- confidence ------------------------------------------------------------------------------


def test_confidence_mean_and_token() -> None:
    config = {"type": "confidence", "min_mean_logprob": -0.5, "min_token_logprob": -3.0}
    assert _check(config, _result(token_logprobs=(-0.1, -0.2, -0.9))).ok
    verdict = _check(config, _result(token_logprobs=(-0.5, -1.0, -1.0)))
    assert verdict == Verdict(False, "confidence", "low confidence: mean logprob -0.83 < -0.5")
    verdict = _check(config, _result(token_logprobs=(-0.01,) * 20 + (-4.2,)))
    assert verdict.reason == "low confidence: a token's logprob -4.20 < -3.0"
    assert _check({"type": "confidence"}, _result(token_logprobs=(-0.01,) * 20 + (-4.2,))).ok


def test_confidence_without_logprobs_passes_with_a_note() -> None:
    validators = _build({"type": "refusal"}, {"type": "confidence"})
    verdict = validate(validators, _request(), _result(token_logprobs=None))
    assert verdict == Verdict(True, None, "confidence: no logprobs")
    assert validate(validators, _request(), _result(token_logprobs=())).reason == (
        "confidence: no logprobs"
    )


# --- validate: order, status -----------------------------------------------------------------


def test_first_failure_in_configured_order() -> None:
    validators = _build(
        {"type": "length", "min_chars": 50},
        {"type": "refusal"},
        {"type": "finish_reason"},
    )
    verdict = validate(validators, _request(), _result("I don't know", finish_reason="length"))
    assert verdict.validator == "length"
    reordered = _build({"type": "finish_reason"}, {"type": "refusal"})
    verdict = validate(reordered, _request(), _result("I don't know", finish_reason="length"))
    assert verdict.validator == "finish_reason"
    assert validate([], _request(), _result()) == Verdict(True)


def test_failed_result_fails_as_status() -> None:
    validators = _build({"type": "refusal"})
    failed = _result(None, status="failed", error="answer is not JSON (Expecting value)")
    assert validate(validators, _request(), failed) == Verdict(
        False, "status", "answer is not JSON (Expecting value)"
    )
    assert validate([], _request(), _result(None, status="failed")).reason == "failed"


# --- judge -----------------------------------------------------------------------------------


def _judge(**kwargs: Any) -> JudgeValidator:
    validators = _build({"type": "refusal"}, {"type": "judge", "tier": "big", **kwargs})
    judge = judge_of(validators)
    assert judge is not None
    return judge


def test_validate_skips_the_judge_and_judge_of_finds_it() -> None:
    validators = _build({"type": "judge", "tier": "big"}, {"type": "refusal"})
    assert validate(validators, _request(), _result("Fine answer.")) == Verdict(True)
    assert judge_of(_build({"type": "refusal"})) is None
    with pytest.raises(TypeError, match="needs a model call"):
        validators[0].check(_request(), _result())


def test_judge_request_fills_placeholders_once() -> None:
    judge = _judge(prompt="Q: {prompt}\nA: {answer}\nGood?")
    sent: list[str] = []

    def factory(user: str) -> Request:
        sent.append(user)
        return _request(user=user)

    request = _request(user="Explain {answer} braces {0}")
    judge_request = judge.judge_request(request, _result('{"a": "{prompt}"}'), factory)
    assert sent == ['Q: Explain {answer} braces {0}\nA: {"a": "{prompt}"}\nGood?']
    assert judge_request.user == sent[0]


def test_default_judge_prompt_carries_prompt_and_answer() -> None:
    message = _judge().judge_message(_request(user="Summarise X"), _result("X in short"))
    assert "Summarise X" in message and "X in short" in message and "yes or no" in message


@pytest.mark.parametrize(
    ("answer", "ok"),
    [
        ("Yes", True),
        ("yes.", True),
        ("**YES** - the summary is accurate", True),
        ("Pass", True),
        ("No", False),
        ("No, yes would be wrong", False),
        ("The answer is fine", False),
        ("", False),
    ],
)
def test_read_judgement(answer: str, ok: bool) -> None:
    verdict = _judge().read_judgement(_result(answer))
    assert verdict.ok is ok
    if not ok:
        assert verdict.validator == "judge" and (verdict.reason or "").startswith("judge answered")


def test_read_judgement_custom_words_and_failed_call() -> None:
    judge = _judge(pass_words=["Correct"])
    assert judge.read_judgement(_result("correct")).ok
    assert not judge.read_judgement(_result("yes")).ok
    failed = judge.read_judgement(_result(None, status="failed", error="HTTP 500"))
    assert failed == Verdict(False, "judge", "judge call failed (HTTP 500)")
    long = judge.read_judgement(_result("nope " * 30))
    assert long.reason is not None and long.reason.endswith("...'") and len(long.reason) < 90
