"""The two wire formats of the fake server: request body -> answer body, and error bodies.

Online calls and batch rows both go through `openai_reply` / `anthropic_reply`, so the same body
gets the same text and usage either way (only the response id differs).

With an oracle (see `oracle`), a request whose last user message matches one of its items is
answered with that item's right or wrong answer instead of the summary. When the request asks
for JSON, an oracle answer that is itself valid JSON text is returned as is; any other answer is
replaced by the usual schema-built JSON (the verdict, and so the logprobs, stay the oracle's).
OpenAI requests with `"logprobs": true` get `choices[0].logprobs` (see `logprobs`).

Without an oracle answer, `quality` decides: a judge call gets "yes" or "no", and a model's
answer may be deliberately invalid or wrong (see `quality`); flawed answers are remembered in
`flaws` (as are the oracle's wrong ones) so that the judge rejects them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from aiohttp import web

from batchopt.fakeapi import answers
from batchopt.fakeapi.logprobs import openai_logprobs
from batchopt.fakeapi.oracle import NO_MATCH, WRONG, Oracle, Verdict, digest
from batchopt.fakeapi.prompt_cache import CacheControlError, PromptCache
from batchopt.fakeapi.quality import (
    FlawLog,
    Quality,
    is_judge_call,
    judge_answer,
)

if TYPE_CHECKING:
    from batchopt.fakeapi.state import ServerState

DEFAULT_MAX_TOKENS = 4096


class BadRequest(Exception):
    """The request body is not one the real API would accept; the message says why."""


@dataclass(frozen=True)
class Reply:
    """One answered call: the response body and what it is billed as."""

    payload: dict[str, Any]
    model: str
    input_tokens: int
    output_tokens: int
    request_hash: str
    verdict: str = "unmatched"  # the oracle's: right | wrong | unmatched
    # prompt-cache tokens (see `prompt_cache`); `input_tokens` counts them too
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def response_id(self) -> str:
        return str(self.payload["id"])

    def bill(self, state: ServerState, wire_name: str) -> None:
        """Record this answer as paid under `wire_name` (the call's wire, or its batch wire)."""
        state.record_paid(
            wire_name,
            self.model,
            self.input_tokens,
            self.output_tokens,
            self.request_hash,
            self.response_id,
            self.verdict,
            self.cache_read_tokens,
            self.cache_write_tokens,
        )


def json_object(body: bytes) -> dict[str, Any]:
    """`body` parsed as a JSON object; BadRequest otherwise."""
    try:
        data = json.loads(body)
    except ValueError:
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data


def openai_reply(
    data: dict[str, Any],
    ident: str,
    oracle: Oracle | None = None,
    cache: PromptCache | None = None,
    quality: Quality | None = None,
    flaws: FlawLog | None = None,
) -> Reply:
    """The chat completion answering `data`; BadRequest if the body is invalid.

    With a `cache`, a prompt sharing a long enough prefix with an earlier one reports cached
    tokens (`prompt_tokens_details.cached_tokens`), as OpenAI's automatic prefix caching does."""
    model = _model(data)
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array")
    if data.get("stream"):
        raise BadRequest("streaming is not supported by the fake server")
    limit = _limit(data.get("max_completion_tokens") or data.get("max_tokens"))
    top = _top_logprobs(data)
    texts = [answers.content_text(m.get("content")) for m in messages if isinstance(m, dict)]
    text, cut, input_tokens, output_tokens, verdict = _answer(
        data, texts, answers.openai_schema(data), limit, oracle, quality, flaws
    )
    logprobs = openai_logprobs(verdict, model, text, top) if data.get("logprobs") else None
    cached = 0
    if cache is not None:
        said = [
            (str(m.get("role")), answers.content_text(m.get("content")))
            for m in messages
            if isinstance(m, dict)
        ]
        cached = cache.openai_cached(model, said, input_tokens)
    payload = {
        "id": "chatcmpl-" + ident,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": logprobs,
                "finish_reason": "length" if cut else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
        "system_fingerprint": "fp_fake",
    }
    return Reply(
        payload, model, input_tokens, output_tokens, digest(data), verdict.kind, cached
    )


def anthropic_reply(
    data: dict[str, Any],
    ident: str,
    oracle: Oracle | None = None,
    cache: PromptCache | None = None,
    quality: Quality | None = None,
    flaws: FlawLog | None = None,
) -> Reply:
    """The Messages answer to `data`; BadRequest if the body is invalid.

    With a `cache`, `cache_control` breakpoints read and write cached prefixes: `usage` then
    reports `cache_read_input_tokens` / `cache_creation_input_tokens`, and `input_tokens` only
    the tokens after them, as the real API does (`Reply.input_tokens` stays the whole prompt)."""
    model = _model(data)
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: must be a non-empty list")
    if data.get("stream"):
        raise BadRequest("stream: not supported by the fake server")
    if "max_tokens" not in data:
        raise BadRequest("max_tokens: Field required")
    limit = _limit(data["max_tokens"])
    system = answers.content_text(data.get("system"))
    texts = [answers.content_text(m.get("content")) for m in messages if isinstance(m, dict)]
    if system:
        texts.append(system)
    text, cut, input_tokens, output_tokens, verdict = _answer(
        data, texts, answers.anthropic_schema(data, system), limit, oracle, quality, flaws
    )
    read = write = 0
    if cache is not None:
        try:
            read, write = cache.anthropic_usage(data)
        except CacheControlError as exc:
            raise BadRequest(str(exc)) from None
    payload = {
        "id": "msg_" + ident,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "max_tokens" if cut else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": max(0, input_tokens - read - write),
            "output_tokens": output_tokens,
            "cache_read_input_tokens": read,
            "cache_creation_input_tokens": write,
        },
    }
    return Reply(
        payload, model, input_tokens, output_tokens, digest(data), verdict.kind, read, write
    )


def cut_short(reply: Reply) -> Reply:
    """`reply` cut to half its output tokens (at least one) as if `max_tokens` had stopped it:
    finish_reason `length` (OpenAI) / stop_reason `max_tokens` (Anthropic), and the usage and
    the bill of the tokens it keeps."""
    payload = json.loads(json.dumps(reply.payload))  # a deep copy
    usage = payload["usage"]
    limit = max(1, reply.output_tokens // 2)
    if "choices" in payload:
        message = payload["choices"][0]["message"]
        message["content"], _ = answers.truncate_to_tokens(message["content"], limit, reply.model)
        payload["choices"][0]["finish_reason"] = "length"
        text = message["content"]
        output = usage["completion_tokens"] = answers.cached_count(text, reply.model)
        usage["total_tokens"] = usage["prompt_tokens"] + output
        logprobs = payload["choices"][0].get("logprobs")
        if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
            logprobs["content"] = logprobs["content"][:output]
    else:
        block = payload["content"][0]
        block["text"], _ = answers.truncate_to_tokens(block["text"], limit, reply.model)
        payload["stop_reason"] = "max_tokens"
        output = usage["output_tokens"] = answers.cached_count(block["text"], reply.model)
    return replace(reply, payload=payload, output_tokens=output)


def without_usage(payload: dict[str, Any]) -> dict[str, Any]:
    """`payload` without its `usage` (what a `no_usage` fault answers)."""
    return {k: v for k, v in payload.items() if k != "usage"}


def _answer(
    data: dict[str, Any],
    texts: list[str],
    schema: dict[str, Any] | None,
    limit: int,
    oracle: Oracle | None,
    quality: Quality | None = None,
    flaws: FlawLog | None = None,
) -> tuple[str, bool, int, int, Verdict]:
    """(answer text, whether max_tokens cut it, input tokens, output tokens, oracle verdict)."""
    model = data["model"]
    user = answers.last_user_text(data["messages"])
    verdict = NO_MATCH if oracle is None else oracle.decide(model, user)
    full = verdict.text
    if full is not None and schema is not None and not _is_json(full):
        full = None
    flawed = verdict.kind == WRONG
    if full is None:
        full, flaw = _own_answer(model, user, schema, quality, flaws)
        flawed = flawed or flaw is not None
    text, cut = answers.truncate_to_tokens(full, limit, model)
    if flawed and flaws is not None:
        flaws.add(user, text)
    return (
        text,
        cut,
        answers.prompt_tokens(texts, model),
        answers.cached_count(text, model),
        verdict,
    )


def _own_answer(
    model: str,
    user: str,
    schema: dict[str, Any] | None,
    quality: Quality | None,
    flaws: FlawLog | None,
) -> tuple[str, str | None]:
    """(the fake's own answer, its flaw: invalid | wrong | None) when no oracle item answers."""
    if quality is None:
        quality = Quality()
    if is_judge_call(user, schema is not None):
        return judge_answer(quality, flaws if flaws is not None else FlawLog(0), model, user), None
    flaw = quality.flaw(model, user, structured=schema is not None)
    if schema is not None:
        return answers.json_answer(schema, user, flaw, model), flaw
    if flaw is not None:
        return answers.wrong_text_answer(user), flaw
    return answers.text_answer(user), None


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _top_logprobs(data: dict[str, Any]) -> int:
    """The request's `top_logprobs` (0 when absent); BadRequest when the API would refuse it."""
    logprobs, top = data.get("logprobs"), data.get("top_logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise BadRequest("logprobs: must be a boolean")
    if top is None:
        return 0
    if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20:
        raise BadRequest("top_logprobs: must be an integer from 0 to 20")
    if not logprobs:
        raise BadRequest("logprobs must be set to true if top_logprobs is used")
    return top


def _model(data: dict[str, Any]) -> str:
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: a non-empty string is required")
    return model


def _limit(value: Any) -> int:
    if value is None:
        return DEFAULT_MAX_TOKENS
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest("max_tokens: must be a positive integer")
    return value


# ---- HTTP responses -----------------------------------------------------------------------------

_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_denied",
    404: "not_found_error",
    429: "rate_limit_exceeded",
}
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def openai_error_body(status: int, message: str) -> dict[str, Any]:
    """The OpenAI error body for an HTTP `status`."""
    kind = _OPENAI_ERROR_TYPES.get(status) or _fallback_kind(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": kind}}


def anthropic_error_body(status: int, message: str, ident: str) -> dict[str, Any]:
    """The Anthropic error body for an HTTP `status`."""
    kind = _ANTHROPIC_ERROR_TYPES.get(status) or _fallback_kind(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": ident}


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """`payload` as a JSON response."""
    return web.Response(
        body=json.dumps(payload, ensure_ascii=False).encode(),
        status=status,
        headers=headers,
        content_type="application/json",
    )


def _fallback_kind(status: int, server_kind: str) -> str:
    return server_kind if status >= 500 else "invalid_request_error"
