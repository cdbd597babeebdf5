"""The fake provider server's aiohttp application: handlers for both wire formats.

Endpoints:
    POST /v1/chat/completions   OpenAI chat completions wire format
    POST /v1/messages           Anthropic messages wire format
    OpenAI files and batches, Anthropic message batches: see `batch_routes`
    GET  /_fake/stats           paid calls and tokens, in total, `by_wire` and `by_model`;
                                `batches_created`, `batch_requests`, pending faults; the
                                oracle's verdicts on paid answers: `oracle` =
                                {"right", "wrong", "unmatched"} counts, and `oracle_by_model`
    GET  /_fake/log             every paid call: t, wire, model, tokens, request_hash, id,
                                oracle (right | wrong | unmatched), cached_tokens,
                                cache_read_tokens, cache_write_tokens (see `prompt_cache`)
    POST /_fake/reset           zero the stats and the log, drop pending faults, files, batches,
                                the oracle and the prompt cache
    POST /_fake/oracle          set the answer oracle (JSON, see `oracle`); 400 if malformed
    GET  /_fake/oracle          a summary of it (`set`, `items`, `by_difficulty`, `models`, ...)
    DELETE /_fake/oracle        drop it
    POST /_fake/faults          queue faults (a JSON list) for the next model calls / batches
    GET  /_fake/faults          how many faults are pending (`pending`, `pending_batch`)
    DELETE /_fake/faults        drop pending faults

A fault is `{"status": 429, "retry_after": 0.05}`, `{"status": 503}`, `{"delay_ms": 3000}` and
so on, with an optional `"count": n`. A call answered with an error is not paid (it counts in
`failed_requests`), nor is one whose client hung up before the answer, after a delay or the
latency (it counts in `abandoned_requests`).

A fault with a `batch` key applies to the next batch submission instead (an OpenAI upload with
purpose `batch`, whose batch inherits it, or an Anthropic batch create); the shapes are listed
in `batch_routes`. Batch rows are paid under the wires `openai-batch` / `anthropic-batch`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from typing import Any

from aiohttp import web

from batchopt.providers.fake import wire
from batchopt.providers.fake.batch_routes import BatchRoutes
from batchopt.providers.fake.batches import BatchStore
from batchopt.providers.fake.oracle import parse_oracle
from batchopt.providers.fake.state import Fault, ServerState, parse_faults
from batchopt.providers.fake.wire import json_response

HOST = "127.0.0.1"
DEFAULT_BATCH_SECONDS = 1.0
# Room for the largest batch inputs: 200 MB OpenAI files, 256 MB Anthropic batches.
_MAX_BODY_BYTES = 300 * 1024 * 1024


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
        app.router.add_get("/_fake/stats", self.get_stats)
        app.router.add_get("/_fake/log", self.get_log)
        app.router.add_post("/_fake/reset", self.post_reset)
        app.router.add_post("/_fake/faults", self.post_faults)
        app.router.add_get("/_fake/faults", self.get_faults)
        app.router.add_delete("/_fake/faults", self.delete_faults)
        app.router.add_post("/_fake/oracle", self.post_oracle)
        app.router.add_get("/_fake/oracle", self.get_oracle)
        app.router.add_delete("/_fake/oracle", self.delete_oracle)
        return app

    def stats(self) -> dict[str, Any]:
        """The stats, after settling every batch that has ended."""
        self.batches.settle_due()
        return self.state.stats()

    def log(self) -> list[dict[str, Any]]:
        """The paid-call log, after settling every batch that has ended."""
        self.batches.settle_due()
        return self.state.log()

    def reset(self) -> None:
        """Zero the stats, empty the log, drop pending faults and every file and batch."""
        self.batches.clear()
        self.state.reset()

    def _next_id(self) -> str:
        return f"{self._prefix}{next(self._ids):010d}"

    async def _before_answer(self, wire_name: str) -> Fault | None:
        """Apply the next fault's delay and return it if it answers with an error.

        A client that hangs up meanwhile (a timeout) cancels the handler: that call is counted
        as abandoned, not paid.
        """
        try:
            return await self._wait(self.state.next_fault())
        except asyncio.CancelledError:
            self.state.record_abandoned(wire_name)
            raise

    async def _wait(self, fault: Fault | None) -> Fault | None:
        if fault is not None and fault.delay_ms:
            await asyncio.sleep(fault.delay_ms / 1000)
        if fault is not None and fault.status is not None:
            return fault
        if self.latency_ms > 0:
            await asyncio.sleep(self.latency_ms / 1000)
        return None

    # ---- OpenAI -------------------------------------------------------------------------------

    async def openai(self, request: web.Request) -> web.Response:
        """POST /v1/chat/completions."""
        body = await request.read()
        fault = await self._before_answer("openai")
        if fault is not None:
            self.state.record_failed("openai")
            return self._openai_error(fault.status or 500, request, fault)
        ident = self._next_id()
        try:
            reply = wire.openai_reply(
                wire.json_object(body), ident, self.state.oracle, self.state.prompt_cache
            )
        except wire.BadRequest as exc:
            self.state.record_failed("openai")
            return self._openai_error(400, request, message=str(exc))
        reply.bill(self.state, "openai")
        return json_response(reply.payload, 200, {"x-request-id": "req_" + ident})

    def _openai_error(
        self, status: int, request: web.Request, fault: Fault | None = None, message: str = ""
    ) -> web.Response:
        message = (fault.message if fault else None) or message or _default_message(status)
        if status == 401 and not (fault and fault.message):
            # Like some upstreams, echo the presented key: clients must scrub it themselves.
            message = f"Incorrect API key provided: {_presented_key(request)}."
        body = wire.openai_error_body(status, message)
        return json_response(body, status, _error_headers(fault, "x-request-id", self._next_id()))

    # ---- Anthropic ----------------------------------------------------------------------------

    async def anthropic(self, request: web.Request) -> web.Response:
        """POST /v1/messages."""
        body = await request.read()
        fault = await self._before_answer("anthropic")
        if fault is not None:
            self.state.record_failed("anthropic")
            return self._anthropic_error(fault.status or 500, request, fault)
        ident = self._next_id()
        try:
            reply = wire.anthropic_reply(
                wire.json_object(body), ident, self.state.oracle, self.state.prompt_cache
            )
        except wire.BadRequest as exc:
            self.state.record_failed("anthropic")
            return self._anthropic_error(400, request, message=str(exc))
        reply.bill(self.state, "anthropic")
        return json_response(reply.payload, 200, {"request-id": "req_" + ident})

    def _anthropic_error(
        self, status: int, request: web.Request, fault: Fault | None = None, message: str = ""
    ) -> web.Response:
        message = (fault.message if fault else None) or message or _default_message(status)
        if status == 401 and not (fault and fault.message):
            message = f"invalid x-api-key: {_presented_key(request)}"
        ident = self._next_id()
        body = wire.anthropic_error_body(status, message, ident)
        return json_response(body, status, _error_headers(fault, "request-id", ident))


    # ---- control ------------------------------------------------------------------------------

    async def get_stats(self, request: web.Request) -> web.Response:
        """GET /_fake/stats."""
        return json_response(self.stats())

    async def get_log(self, request: web.Request) -> web.Response:
        """GET /_fake/log."""
        return json_response(self.log())

    async def post_reset(self, request: web.Request) -> web.Response:
        """POST /_fake/reset."""
        self.reset()
        return json_response({"ok": True})

    async def post_faults(self, request: web.Request) -> web.Response:
        """POST /_fake/faults: replace the pending faults."""
        try:
            faults = parse_faults(json.loads(await request.read()))
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)
        self.state.set_faults(faults)
        return self._pending()

    async def get_faults(self, request: web.Request) -> web.Response:
        """GET /_fake/faults."""
        return self._pending()

    def _pending(self) -> web.Response:
        return json_response(
            {
                "ok": True,
                "pending": self.state.pending_faults(),
                "pending_batch": self.state.pending_batch_faults(),
            }
        )

    async def delete_faults(self, request: web.Request) -> web.Response:
        """DELETE /_fake/faults."""
        self.state.set_faults([])
        return json_response({"ok": True})

    async def post_oracle(self, request: web.Request) -> web.Response:
        """POST /_fake/oracle: replace the oracle."""
        try:
            oracle = parse_oracle(json.loads(await request.read()))
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)
        self.state.set_oracle(oracle)
        return json_response({"ok": True, **oracle.describe()})

    async def get_oracle(self, request: web.Request) -> web.Response:
        """GET /_fake/oracle."""
        oracle = self.state.oracle
        return json_response({"set": False} if oracle is None else oracle.describe())

    async def delete_oracle(self, request: web.Request) -> web.Response:
        """DELETE /_fake/oracle."""
        self.state.set_oracle(None)
        return json_response({"ok": True})


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
