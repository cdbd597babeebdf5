"""The fake provider server's aiohttp application: handlers for both wire formats.

Endpoints:
    POST /v1/chat/completions   OpenAI chat completions wire format
    POST /v1/messages           Anthropic messages wire format
    GET  /_fake/stats           paid calls and tokens, in total, `by_wire` and `by_model`
    GET  /_fake/log             every paid call: t, wire, model, tokens, request_hash, id
    POST /_fake/reset           zero the stats and the log, drop pending faults
    POST /_fake/faults          queue faults (a JSON list) for the next model calls, in order
    GET  /_fake/faults          how many faults are pending
    DELETE /_fake/faults        drop pending faults

A fault is `{"status": 429, "retry_after": 0.05}`, `{"status": 503}`, `{"delay_ms": 3000}` and
so on, with an optional `"count": n`. A call answered with an error is not paid (it counts in
`failed_requests`), nor is one whose client hung up before the answer, after a delay or the
latency (it counts in `abandoned_requests`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from typing import Any

from aiohttp import web

from batchopt.hashing import stable_hash
from batchopt.providers.fake import answers
from batchopt.providers.fake.state import Fault, ServerState, parse_faults

HOST = "127.0.0.1"
DEFAULT_MAX_TOKENS = 4096

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


class _BadRequest(Exception):
    pass


class FakeProviderApp:
    """The request handlers, sharing one `ServerState`."""

    def __init__(self, state: ServerState, latency_ms: float = 0.0) -> None:
        self.state = state
        self.latency_ms = latency_ms
        self._ids = itertools.count(1)
        self._prefix = os.urandom(3).hex()

    def build(self) -> web.Application:
        """The aiohttp application serving every endpoint."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.openai)
        app.router.add_post("/v1/messages", self.anthropic)
        app.router.add_get("/_fake/stats", self.get_stats)
        app.router.add_get("/_fake/log", self.get_log)
        app.router.add_post("/_fake/reset", self.post_reset)
        app.router.add_post("/_fake/faults", self.post_faults)
        app.router.add_get("/_fake/faults", self.get_faults)
        app.router.add_delete("/_fake/faults", self.delete_faults)
        return app

    def _next_id(self) -> str:
        return f"{self._prefix}{next(self._ids):010d}"

    async def _before_answer(self, wire: str) -> Fault | None:
        """Apply the next fault's delay and return it if it answers with an error.

        A client that hangs up meanwhile (a timeout) cancels the handler: that call is counted
        as abandoned, not paid.
        """
        try:
            return await self._wait(self.state.next_fault())
        except asyncio.CancelledError:
            self.state.record_abandoned(wire)
            raise

    async def _wait(self, fault: Fault | None) -> Fault | None:
        if fault is not None and fault.delay_ms:
            await asyncio.sleep(fault.delay_ms / 1000)
        if fault is not None and fault.status is not None:
            return fault
        if self.latency_ms > 0:
            await asyncio.sleep(self.latency_ms / 1000)
        return None

    def _answer(
        self,
        wire: str,
        data: dict[str, Any],
        texts: list[str],
        schema: dict[str, Any] | None,
        limit: int,
        response_id: str,
    ) -> tuple[str, bool, int, int]:
        """(answer text, whether max_tokens cut it, input tokens, output tokens); logs the call."""
        model = data["model"]
        user = answers.last_user_text(data["messages"])
        full = answers.text_answer(user) if schema is None else answers.json_answer(schema, user)
        text, cut = answers.truncate_to_tokens(full, limit, model)
        input_tokens = answers.prompt_tokens(texts, model)
        output_tokens = answers.cached_count(text, model)
        self.state.record_paid(
            wire, model, input_tokens, output_tokens, stable_hash(data), response_id
        )
        return text, cut, input_tokens, output_tokens

    # ---- OpenAI -------------------------------------------------------------------------------

    async def openai(self, request: web.Request) -> web.Response:
        """POST /v1/chat/completions."""
        body = await request.read()
        fault = await self._before_answer("openai")
        if fault is not None:
            self.state.record_failed("openai")
            return self._openai_error(fault.status or 500, request, fault)
        try:
            data = _json_object(body)
            model = _model(data)
            messages = data.get("messages")
            if not isinstance(messages, list) or not messages:
                raise _BadRequest("'messages' must be a non-empty array")
            if data.get("stream"):
                raise _BadRequest("streaming is not supported by the fake server")
            limit = _limit(data.get("max_completion_tokens") or data.get("max_tokens"))
        except _BadRequest as exc:
            self.state.record_failed("openai")
            return self._openai_error(400, request, message=str(exc))
        texts = [answers.content_text(m.get("content")) for m in messages if isinstance(m, dict)]
        schema = answers.openai_schema(data)
        ident = self._next_id()
        response_id = "chatcmpl-" + ident
        text, cut, input_tokens, output_tokens = self._answer(
            "openai", data, texts, schema, limit, response_id
        )
        payload = {
            "id": response_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "length" if cut else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": input_tokens,
                "completion_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
            "system_fingerprint": "fp_fake",
        }
        return _json_response(payload, 200, {"x-request-id": "req_" + ident})

    def _openai_error(
        self, status: int, request: web.Request, fault: Fault | None = None, message: str = ""
    ) -> web.Response:
        message = (fault.message if fault else None) or message or _default_message(status)
        if status == 401 and not (fault and fault.message):
            # Like some upstreams, echo the presented key: clients must scrub it themselves.
            message = f"Incorrect API key provided: {_presented_key(request)}."
        kind = _OPENAI_ERROR_TYPES.get(status) or _fallback_kind(status, "server_error")
        body = {"error": {"message": message, "type": kind, "param": None, "code": kind}}
        return _json_response(body, status, _error_headers(fault, "x-request-id", self._next_id()))

    # ---- Anthropic ----------------------------------------------------------------------------

    async def anthropic(self, request: web.Request) -> web.Response:
        """POST /v1/messages."""
        body = await request.read()
        fault = await self._before_answer("anthropic")
        if fault is not None:
            self.state.record_failed("anthropic")
            return self._anthropic_error(fault.status or 500, request, fault)
        try:
            data = _json_object(body)
            model = _model(data)
            messages = data.get("messages")
            if not isinstance(messages, list) or not messages:
                raise _BadRequest("messages: must be a non-empty list")
            if data.get("stream"):
                raise _BadRequest("stream: not supported by the fake server")
            if "max_tokens" not in data:
                raise _BadRequest("max_tokens: Field required")
            limit = _limit(data["max_tokens"])
        except _BadRequest as exc:
            self.state.record_failed("anthropic")
            return self._anthropic_error(400, request, message=str(exc))
        system = answers.content_text(data.get("system"))
        texts = [answers.content_text(m.get("content")) for m in messages if isinstance(m, dict)]
        if system:
            texts.append(system)
        schema = answers.anthropic_schema(data, system)
        ident = self._next_id()
        response_id = "msg_" + ident
        text, cut, input_tokens, output_tokens = self._answer(
            "anthropic", data, texts, schema, limit, response_id
        )
        payload = {
            "id": response_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "max_tokens" if cut else "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 0,
            },
        }
        return _json_response(payload, 200, {"request-id": "req_" + ident})

    def _anthropic_error(
        self, status: int, request: web.Request, fault: Fault | None = None, message: str = ""
    ) -> web.Response:
        message = (fault.message if fault else None) or message or _default_message(status)
        if status == 401 and not (fault and fault.message):
            message = f"invalid x-api-key: {_presented_key(request)}"
        kind = _ANTHROPIC_ERROR_TYPES.get(status) or _fallback_kind(status, "api_error")
        ident = self._next_id()
        body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": ident}
        return _json_response(body, status, _error_headers(fault, "request-id", ident))

    # ---- control ------------------------------------------------------------------------------

    async def get_stats(self, request: web.Request) -> web.Response:
        """GET /_fake/stats."""
        return _json_response(self.state.stats())

    async def get_log(self, request: web.Request) -> web.Response:
        """GET /_fake/log."""
        return _json_response(self.state.log())

    async def post_reset(self, request: web.Request) -> web.Response:
        """POST /_fake/reset."""
        self.state.reset()
        return _json_response({"ok": True})

    async def post_faults(self, request: web.Request) -> web.Response:
        """POST /_fake/faults: replace the pending faults."""
        try:
            faults = parse_faults(json.loads(await request.read()))
        except ValueError as exc:
            return _json_response({"error": str(exc)}, 400)
        self.state.set_faults(faults)
        return _json_response({"ok": True, "pending": len(faults)})

    async def get_faults(self, request: web.Request) -> web.Response:
        """GET /_fake/faults."""
        return _json_response({"pending": self.state.pending_faults()})

    async def delete_faults(self, request: web.Request) -> web.Response:
        """DELETE /_fake/faults."""
        self.state.set_faults([])
        return _json_response({"ok": True})


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        raise _BadRequest("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise _BadRequest("the request body must be a JSON object")
    return data


def _model(data: dict[str, Any]) -> str:
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequest("model: a non-empty string is required")
    return model


def _limit(value: Any) -> int:
    if value is None:
        return DEFAULT_MAX_TOKENS
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _BadRequest("max_tokens: must be a positive integer")
    return value


def _presented_key(request: web.Request) -> str:
    auth = request.headers.get("authorization", "")
    return request.headers.get("x-api-key") or auth.removeprefix("Bearer ")


def _fallback_kind(status: int, server_kind: str) -> str:
    return server_kind if status >= 500 else "invalid_request_error"


def _default_message(status: int) -> str:
    return f"fake server: injected error {status}"


def _error_headers(fault: Fault | None, id_header: str, ident: str) -> dict[str, str]:
    headers = {id_header: "req_" + ident}
    if fault is not None and fault.retry_after is not None:
        headers["retry-after"] = f"{fault.retry_after:g}"
    if fault is not None and fault.retry_after_ms is not None:
        headers["retry-after-ms"] = f"{fault.retry_after_ms:g}"
    return headers


def _json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=json.dumps(payload, ensure_ascii=False).encode(),
        status=status,
        headers=headers,
        content_type="application/json",
    )
