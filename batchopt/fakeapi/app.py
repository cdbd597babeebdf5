"""The fake provider server's aiohttp application: handlers for both wire formats.

Endpoints:
    POST /v1/chat/completions   OpenAI chat completions wire format
    POST /v1/messages           Anthropic messages wire format
    OpenAI files and batches, Anthropic message batches: see `batch_routes`
    OpenAI fine-tuning jobs (and the `ft:` models they make): see `finetune_routes`
    (the /_fake/... endpoints are served by `control_routes`)
    GET  /_fake/stats           paid calls and tokens, in total, `by_wire` and `by_model`;
                                `batches_created`, `batch_requests`, pending faults,
                                `fine_tuning_jobs_created`, `fine_tuned_models`; the
                                oracle's verdicts on paid answers: `oracle` =
                                {"right", "wrong", "unmatched"} counts, and `oracle_by_model`
    GET  /_fake/log             every paid call: t, wire, model, tokens, request_hash, id,
                                oracle (right | wrong | unmatched), cached_tokens,
                                cache_read_tokens, cache_write_tokens (see `prompt_cache`),
                                cost_usd (the fake's own price for it; None if unpriced)
    GET  /_fake/bill            what the fake billed, by its own price list (`prices`) and
                                token counts (`tokens`): `by_model` = {model: {"online" |
                                "batch": {requests, input_tokens, cached_input_tokens,
                                cache_write_tokens, output_tokens, usd}}}, `online_usd`,
                                `batch_usd`, `total_usd`, `unpriced` (models without a price)
    DELETE /_fake/bill          start a new bill (the stats and the log stay)
    POST /_fake/prices          bill at other rates from now on: {model: {input, cached_input,
                                cache_write, output (USD per 1M tokens), batch (share of the
                                online price)}} over the published list; 400 if malformed
    GET  /_fake/prices          the price list in force
    DELETE /_fake/prices        back to the published list (as `reset` does)
    POST /_fake/reset           zero the stats, the bill and the log, drop pending faults,
                                files, batches, fine-tuning jobs, the oracle, the prompt cache
                                and price overrides
    POST /_fake/oracle          set the answer oracle (JSON, see `oracle`); 400 if malformed
    GET  /_fake/oracle          a summary of it (`set`, `items`, `by_difficulty`, `models`, ...)
    DELETE /_fake/oracle        drop it
    POST /_fake/quality         set the answers' flaws and the judge (JSON: invalid_share,
                                wrong_share, judge_reject_share; see `quality`); 400 if malformed
    GET  /_fake/quality         the settings in force
    DELETE /_fake/quality       back to the server's own settings (as `reset` does)
    POST /_fake/faults          queue faults (a JSON list) for the next model calls / batches
    GET  /_fake/faults          how many faults are pending (`pending`, `pending_batch`)
    DELETE /_fake/faults        drop pending faults

A fault is `{"status": 429, "retry_after": 0.05}`, `{"status": 503}`, `{"delay_ms": 3000}` and
so on, with an optional `"count": n`. A call answered with an error is not paid (it counts in
`failed_requests`), nor is one whose client hung up before the answer, after a delay or the
latency (it counts in `abandoned_requests`).

A fault with a `kind` breaks the call in a way an error status cannot; whether the server bills
it follows whether the model ran (what a real provider bills), not whether the client got it:
    {"kind": "reset"}       the connection drops with no response: not billed (counted in
                            `failed_requests`; the model never ran)
    {"kind": "malformed"}   200 with a proxy's HTML page labelled application/json: not billed
                            (`failed_requests`; the request never reached the model)
    {"kind": "timeout", "delay_ms": 3000}   the answer is made and BILLED, then held for
                            `delay_ms`: a client that times out meanwhile paid for an answer it
                            never sees (unlike a bare `delay_ms`, which delays before the model)
    {"kind": "truncated"}   BILLED; 200 whose JSON body is cut in the middle
    {"kind": "no_usage"}    BILLED as usual; the answer has no `usage`
    {"kind": "max_tokens"}  the answer is cut to half its tokens, as if `max_tokens` had been
                            reached: finish_reason `length` / stop_reason `max_tokens`, billed
                            for the tokens it has
A client that gets no usable answer to a billed call can only send it again and pay twice: the
in-flight case no client can avoid. Any kind takes `delay_ms` too (`timeout` uses it after).

A fault with a `batch` key applies to the next batch submission instead (an OpenAI upload with
purpose `batch`, whose batch inherits it, or an Anthropic batch create); the shapes are listed
in `batch_routes`. Batch rows are paid under the wires `openai-batch` / `anthropic-batch`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import Callable
from typing import Any

from aiohttp import web

from batchopt.fakeapi import wire
from batchopt.fakeapi.batch_routes import BatchRoutes
from batchopt.fakeapi.batches import BatchStore
from batchopt.fakeapi.control_routes import ControlRoutes
from batchopt.fakeapi.faults import UNBILLED_KINDS, Fault
from batchopt.fakeapi.finetune_routes import FineTuneRoutes
from batchopt.fakeapi.oracle import Oracle
from batchopt.fakeapi.prompt_cache import PromptCache
from batchopt.fakeapi.quality import FlawLog, Quality
from batchopt.fakeapi.state import ServerState
from batchopt.fakeapi.wire import json_response

HOST = "127.0.0.1"
DEFAULT_BATCH_SECONDS = 1.0
# Room for the largest batch inputs: 200 MB OpenAI files, 256 MB Anthropic batches.
_MAX_BODY_BYTES = 300 * 1024 * 1024
_ID_HEADERS = {"openai": "x-request-id", "anthropic": "request-id"}
# What a proxy in front of the API answers when its upstream is gone (a `malformed` fault).
_PROXY_PAGE = b"<html><head><title>502 Bad Gateway</title></head><body>bad gateway</body></html>"
ReplyMaker = Callable[
    [dict[str, Any], str, Oracle | None, PromptCache | None, Quality | None, FlawLog | None],
    wire.Reply,
]
ErrorMaker = Callable[[int, web.Request, Fault | None, str], web.Response]


class FakeProviderApp:
    """The request handlers, sharing one `ServerState` and one `BatchStore`."""

    def __init__(
        self,
        state: ServerState,
        latency_ms: float = 0.0,
        batch_seconds: float = DEFAULT_BATCH_SECONDS,
    ) -> None:
        self.state = state
        self.latency_ms = latency_ms
        self._ids = itertools.count(1)
        self._prefix = os.urandom(3).hex()
        self.batches = BatchStore(state, self._next_id, batch_seconds)
        self.finetunes = FineTuneRoutes(self.batches, self._next_id)
        self.control = ControlRoutes(state, self.batches, self.finetunes)

    @property
    def batch_seconds(self) -> float:
        """How long after creation a batch ends."""
        return self.batches.batch_seconds

    @batch_seconds.setter
    def batch_seconds(self, value: float) -> None:
        self.batches.batch_seconds = float(value)

    def build(self) -> web.Application:
        """The aiohttp application serving every endpoint."""
        app = web.Application(client_max_size=_MAX_BODY_BYTES)
        app.router.add_post("/v1/chat/completions", self.openai)
        app.router.add_post("/v1/messages", self.anthropic)
        BatchRoutes(self.state, self.batches, self._next_id).register(app.router)
        self.finetunes.register(app.router)
        self.control.register(app.router)
        return app

    def stats(self) -> dict[str, Any]:
        """The stats, after settling every batch that has ended."""
        return self.control.stats()

    def log(self) -> list[dict[str, Any]]:
        """The paid-call log, after settling every batch that has ended."""
        return self.control.log()

    def bill(self) -> dict[str, Any]:
        """The fake's own bill, after settling every batch that has ended."""
        return self.control.bill()

    def reset(self) -> None:
        """Zero the stats, empty the log, drop pending faults and every file, batch and
        fine-tuning job."""
        self.control.reset()

    def _next_id(self) -> str:
        return f"{self._prefix}{next(self._ids):010d}"

    async def _before_answer(self, wire_name: str) -> Fault | None:
        """Take the next fault, apply its delay (a `timeout` fault's comes after the answer)
        and the latency; return the fault.

        A client that hangs up meanwhile (a timeout) cancels the handler: that call is counted
        as abandoned, not paid.
        """
        fault = self.state.next_fault()
        try:
            if fault is not None and fault.delay_ms and fault.kind != "timeout":
                await asyncio.sleep(fault.delay_ms / 1000)
            if self.latency_ms > 0 and (fault is None or fault.status is None):
                await asyncio.sleep(self.latency_ms / 1000)
        except asyncio.CancelledError:
            self.state.record_abandoned(wire_name)
            raise
        return fault

    async def _serve(
        self, request: web.Request, wire_name: str, make_reply: ReplyMaker, on_error: ErrorMaker
    ) -> web.StreamResponse:
        """Answer one model call of either wire, or do its fault to it (see the module doc)."""
        body = await request.read()
        fault = await self._before_answer(wire_name)
        if fault is not None and fault.status is not None:
            self.state.record_failed(wire_name)
            return on_error(fault.status, request, fault)
        if fault is not None and fault.kind in UNBILLED_KINDS:
            self.state.record_failed(wire_name)
            return _unbilled_fault(request, fault.kind)
        ident = self._next_id()
        try:
            reply = make_reply(
                wire.json_object(body),
                ident,
                self.state.oracle,
                self.state.prompt_cache,
                self.state.quality,
                self.state.flaws,
            )
        except wire.BadRequest as exc:
            self.state.record_failed(wire_name)
            return on_error(400, request, None, str(exc))
        if fault is not None and fault.kind == "max_tokens":
            reply = wire.cut_short(reply)
        reply.bill(self.state, wire_name)
        headers = {_ID_HEADERS[wire_name]: "req_" + ident}
        kind = fault.kind if fault is not None else None
        if kind == "no_usage":
            return json_response(wire.without_usage(reply.payload), 200, headers)
        if kind == "truncated":
            text = json.dumps(reply.payload, ensure_ascii=False).encode()
            return web.Response(
                body=text[: len(text) // 2], headers=headers, content_type="application/json"
            )
        if kind == "timeout":
            assert fault is not None
            # Paid already: a client that hangs up now never sees what it paid for.
            await asyncio.sleep(fault.delay_ms / 1000)
        return json_response(reply.payload, 200, headers)

    # ---- OpenAI -------------------------------------------------------------------------------

    async def openai(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/chat/completions."""
        return await self._serve(request, "openai", self._openai_reply, self._openai_error)

    def _openai_reply(
        self,
        data: dict[str, Any],
        ident: str,
        oracle: Oracle | None,
        cache: PromptCache | None,
        quality: Quality | None,
        flaws: FlawLog | None,
    ) -> wire.Reply:
        self.finetunes.check_model(data.get("model"))  # an `ft:` model must have been made here
        return wire.openai_reply(data, ident, oracle, cache, quality, flaws)

    def _openai_error(
        self,
        status: int,
        request: web.Request,
        fault: Fault | None = None,
        message: str = "",
    ) -> web.Response:
        message = (fault.message if fault else None) or message or _default_message(status)
        if status == 401 and not (fault and fault.message):
            # Like some upstreams, echo the presented key: clients must scrub it themselves.
            message = f"Incorrect API key provided: {_presented_key(request)}."
        body = wire.openai_error_body(status, message)
        return json_response(body, status, _error_headers(fault, "x-request-id", self._next_id()))

    # ---- Anthropic ----------------------------------------------------------------------------

    async def anthropic(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/messages."""
        return await self._serve(request, "anthropic", wire.anthropic_reply, self._anthropic_error)

    def _anthropic_error(
        self,
        status: int,
        request: web.Request,
        fault: Fault | None = None,
        message: str = "",
    ) -> web.Response:
        message = (fault.message if fault else None) or message or _default_message(status)
        if status == 401 and not (fault and fault.message):
            message = f"invalid x-api-key: {_presented_key(request)}"
        ident = self._next_id()
        body = wire.anthropic_error_body(status, message, ident)
        return json_response(body, status, _error_headers(fault, "request-id", ident))


def _unbilled_fault(request: web.Request, kind: str | None) -> web.Response:
    """The answer to a call whose fault keeps it from the model: `reset` drops the connection
    without a response, `malformed` answers 200 with a proxy's HTML page labelled JSON."""
    if kind == "reset" and request.transport is not None:
        request.transport.abort()
    return web.Response(body=_PROXY_PAGE, content_type="application/json")


def _presented_key(request: web.Request) -> str:
    auth = request.headers.get("authorization", "")
    return request.headers.get("x-api-key") or auth.removeprefix("Bearer ")


def _default_message(status: int) -> str:
    return f"fake server: injected error {status}"


def _error_headers(fault: Fault | None, id_header: str, ident: str) -> dict[str, str]:
    headers = {id_header: "req_" + ident}
    if fault is not None and fault.retry_after is not None:
        headers["retry-after"] = f"{fault.retry_after:g}"
    if fault is not None and fault.retry_after_ms is not None:
        headers["retry-after-ms"] = f"{fault.retry_after_ms:g}"
    return headers
