"""The fake server's batch endpoints, for the OpenAI and Anthropic SDKs.

OpenAI:
    POST /v1/files                    multipart upload (`file`, `purpose`); a FileObject
    GET  /v1/files/{id}               the FileObject
    GET  /v1/files/{id}/content       the bytes (a batch's output and error files too)
    POST /v1/batches                  create from an uploaded `purpose=batch` file
    GET  /v1/batches                  list, newest first, `limit` and `after` like the real API
    GET  /v1/batches/{id}             the Batch
    POST /v1/batches/{id}/cancel      answers `cancelling`; later reads say `cancelled`
Anthropic:
    POST /v1/messages/batches         create from `requests` [{custom_id, params}]
    GET  /v1/messages/batches         list, newest first, `limit`, `after_id`, `before_id`
    GET  /v1/messages/batches/{id}    the MessageBatch
    GET  /v1/messages/batches/{id}/results   JSONL results once ended
    POST /v1/messages/batches/{id}/cancel    answers `canceling`; later reads say `ended`

A batch ends `batch_seconds` after creation (see `batches`). The input file is checked when the
batch is created: a bad line, a duplicate custom_id or two models fail an OpenAI batch (status
`failed`, `errors.data[]`). Cancelling an ended batch changes nothing. Cancelled rows never ran:
none is paid; OpenAI leaves them out of both files, Anthropic reports them `canceled`.

Batch faults (POST /_fake/faults, mixed freely with model-call faults; `count` repeats one) apply
to the next submission: an OpenAI upload with purpose `batch` (the batch made from that file
inherits the fault) or an Anthropic batch create. `batch` is one effect or a list of them:
    {"batch": "expire", "done_share": 0.5}   ends `expired`: the first half of the rows
                                             succeeded, the rest expired (absent from the
                                             OpenAI files, `expired` in Anthropic results)
    {"batch": "errors", "rows": 2}           the last 2 rows that ran are errored (HTTP 500)
    {"batch": "invalid", "message": "..."}   OpenAI: the batch fails validation; Anthropic:
                                             the create answers 400
    {"batch": "upload_delay", "delay_ms": 3000}  the upload (OpenAI file, Anthropic create)
                                             sleeps first; a client that times out leaves
                                             nothing behind
    {"batch": "ack_delay", "delay_ms": 3000} the batch is created, then the create answer
                                             sleeps: a timed-out client leaves a batch behind
    {"batch": "truncate_results", "times": 1}  the first `times` result downloads break off
                                             midway (half the bytes, then the connection drops)
    {"batch": "shuffle"}                     results come out of submission order

What is billed: a batch's succeeded rows, once, when it is settled; never an errored, expired
or cancelled row, nor a batch that failed validation or whose upload never arrived. Results
downloaded again (after a `truncate_results` break) bill nothing more. An `ack_delay` batch is
created and runs: a client that timed out and never learnt its id pays for it all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from aiohttp import web

from batchopt.fakeapi import batch_wire
from batchopt.fakeapi.batches import ANTHROPIC, ENDED_PHASES, OPENAI, BatchStore
from batchopt.fakeapi.faults import BatchFault
from batchopt.fakeapi.state import ServerState
from batchopt.fakeapi.wire import (
    BadRequest,
    anthropic_error_body,
    json_object,
    json_response,
    openai_error_body,
)

_FILE_PURPOSES = {"batch", "assistants", "fine-tune", "vision", "user_data", "evals"}


class BatchRoutes:
    """Handlers for the files and batches endpoints of both wires."""

    def __init__(self, state: ServerState, store: BatchStore, next_id: Callable[[], str]) -> None:
        self.state = state
        self.store = store
        self._next_id = next_id

    def register(self, router: web.UrlDispatcher) -> None:
        """Add every batch route to `router`."""
        router.add_post("/v1/files", self.upload_file)
        router.add_get("/v1/files/{id}", self.get_file)
        router.add_get("/v1/files/{id}/content", self.get_file_content)
        router.add_post("/v1/batches", self.openai_create)
        router.add_get("/v1/batches", self.openai_list)
        router.add_get("/v1/batches/{id}", self.openai_get)
        router.add_post("/v1/batches/{id}/cancel", self.openai_cancel)
        router.add_post("/v1/messages/batches", self.anthropic_create)
        router.add_get("/v1/messages/batches", self.anthropic_list)
        router.add_get("/v1/messages/batches/{id}", self.anthropic_get)
        router.add_get("/v1/messages/batches/{id}/results", self.anthropic_results)
        router.add_post("/v1/messages/batches/{id}/cancel", self.anthropic_cancel)

    # ---- OpenAI files -------------------------------------------------------------------------

    async def upload_file(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/files (multipart: file, purpose)."""
        form = await request.post()
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, web.FileField):
            return _openai_error(400, "file: a file upload is required")
        if purpose not in _FILE_PURPOSES:
            return _openai_error(400, f"purpose: must be one of {sorted(_FILE_PURPOSES)}")
        fault = self.state.next_batch_fault() if purpose == "batch" else None
        await _delay(fault, "upload_delay")
        data = upload.file.read()
        stored = self.store.add_file(upload.filename, str(purpose), data, fault)
        return json_response(batch_wire.openai_file(stored))

    async def get_file(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/files/{id}."""
        stored = self.store.file(request.match_info["id"])
        if stored is None:
            return _openai_error(404, f"No such File object: {request.match_info['id']}")
        return json_response(batch_wire.openai_file(stored))

    async def get_file_content(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/files/{id}/content."""
        stored = self.store.file(request.match_info["id"])
        if stored is None:
            return _openai_error(404, f"No such File object: {request.match_info['id']}")
        owner = self.store.get(stored.batch_id, OPENAI) if stored.batch_id else None
        if owner is not None and self.store.take_truncation(owner):
            return await _broken_download(request, stored.data, "application/octet-stream")
        return web.Response(body=stored.data, content_type="application/octet-stream")

    # ---- OpenAI batches -----------------------------------------------------------------------

    async def openai_create(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/batches."""
        try:
            data = json_object(await request.read())
            if data.get("endpoint") != batch_wire.OPENAI_ENDPOINT:
                raise BadRequest(f"endpoint: the fake serves {batch_wire.OPENAI_ENDPOINT} only")
            if data.get("completion_window") != "24h":
                raise BadRequest("completion_window: must be '24h'")
            metadata = batch_wire.openai_metadata(data.get("metadata"))
            file_id = data.get("input_file_id")
            stored = self.store.file(file_id) if isinstance(file_id, str) else None
            if stored is None:
                raise BadRequest(f"input_file_id: no such file {file_id!r}")
            if stored.purpose != "batch":
                raise BadRequest("input_file_id: the file's purpose must be 'batch'")
        except BadRequest as exc:
            return _openai_error(400, str(exc))
        rows, errors = batch_wire.openai_input_rows(stored.data)
        fault = stored.fault
        if fault is not None and "invalid" in fault.effects:
            message = fault.message or "fake server: injected invalid batch"
            errors = [{"code": "invalid_request", "message": message, "param": None, "line": 1}]
        batch = self.store.create(
            OPENAI, rows, fault, metadata=metadata, input_file_id=stored.id, errors=errors or None
        )
        await _delay(fault, "ack_delay")
        return json_response(batch_wire.openai_batch(batch, self.store.clock(), "validating"))

    async def openai_list(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/batches?limit=&after=."""
        try:
            limit = _limit(request.query.get("limit"), 100)
        except BadRequest as exc:
            return _openai_error(400, str(exc))
        now = self.store.clock()
        items = [batch_wire.openai_batch(b, now) for b in self.store.listing(OPENAI)]
        return json_response(batch_wire.page(items, limit, request.query.get("after")))

    async def openai_get(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/batches/{id}."""
        batch = self.store.get(request.match_info["id"], OPENAI)
        if batch is None:
            return _openai_error(404, f"No batch found with id '{request.match_info['id']}'")
        return json_response(batch_wire.openai_batch(batch, self.store.clock()))

    async def openai_cancel(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/batches/{id}/cancel."""
        batch, started = self.store.cancel(request.match_info["id"], OPENAI)
        if batch is None:
            return _openai_error(404, f"No batch found with id '{request.match_info['id']}'")
        status = "cancelling" if started else None
        return json_response(batch_wire.openai_batch(batch, self.store.clock(), status))

    # ---- Anthropic batches --------------------------------------------------------------------

    async def anthropic_create(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/messages/batches."""
        fault = self.state.next_batch_fault()
        await _delay(fault, "upload_delay")
        body = await request.read()
        try:
            if fault is not None and "invalid" in fault.effects:
                raise BadRequest(fault.message or "fake server: injected invalid batch")
            rows = batch_wire.anthropic_rows(json_object(body))
        except BadRequest as exc:
            return self._anthropic_error(400, str(exc))
        batch = self.store.create(ANTHROPIC, rows, fault)
        await _delay(fault, "ack_delay")
        return json_response(batch_wire.anthropic_batch(batch, self.store.clock(), _base(request)))

    async def anthropic_list(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/messages/batches?limit=&after_id=&before_id=."""
        try:
            limit = _limit(request.query.get("limit"), 1000)
        except BadRequest as exc:
            return self._anthropic_error(400, str(exc))
        now, base = self.store.clock(), _base(request)
        items = [batch_wire.anthropic_batch(b, now, base) for b in self.store.listing(ANTHROPIC)]
        before = request.query.get("before_id")
        if before:
            ids = [item["id"] for item in items]
            end = ids.index(before) if before in ids else 0
            chosen = items[max(0, end - limit) : end]
            listed = batch_wire.page(chosen, limit, None)
            listed["has_more"] = end - limit > 0
        else:
            listed = batch_wire.page(items, limit, request.query.get("after_id"))
        del listed["object"]
        return json_response(listed)

    async def anthropic_get(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/messages/batches/{id}."""
        batch = self.store.get(request.match_info["id"], ANTHROPIC)
        if batch is None:
            return self._anthropic_error(404, f"message batch {request.match_info['id']} not found")
        return json_response(batch_wire.anthropic_batch(batch, self.store.clock(), _base(request)))

    async def anthropic_results(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/messages/batches/{id}/results."""
        batch = self.store.get(request.match_info["id"], ANTHROPIC)
        if batch is None:
            return self._anthropic_error(404, f"message batch {request.match_info['id']} not found")
        if batch.phase(self.store.clock()) not in ENDED_PHASES:
            return self._anthropic_error(400, f"message batch {batch.id} has not ended yet")
        data = b"".join(batch_wire.anthropic_result_line(o) for o in batch.ordered_outcomes())
        if self.store.take_truncation(batch):
            return await _broken_download(request, data, "application/binary")
        return web.Response(body=data, content_type="application/binary")

    async def anthropic_cancel(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/messages/batches/{id}/cancel."""
        batch, started = self.store.cancel(request.match_info["id"], ANTHROPIC)
        if batch is None:
            return self._anthropic_error(404, f"message batch {request.match_info['id']} not found")
        view = batch_wire.anthropic_batch(batch, self.store.clock(), _base(request), started)
        return json_response(view)

    def _anthropic_error(self, status: int, message: str) -> web.Response:
        ident = self._next_id()
        body = anthropic_error_body(status, message, ident)
        return json_response(body, status, {"request-id": "req_" + ident})


def _openai_error(status: int, message: str) -> web.Response:
    return json_response(openai_error_body(status, message), status)


async def _delay(fault: BatchFault | None, effect: str) -> None:
    if fault is not None and effect in fault.effects:
        await asyncio.sleep(fault.delay_ms / 1000)


def _limit(value: str | None, most: int) -> int:
    if value is None:
        return 20
    try:
        limit = int(value)
    except ValueError:
        raise BadRequest("limit: must be an integer") from None
    if not 1 <= limit <= most:
        raise BadRequest(f"limit: must be from 1 to {most}")
    return limit


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


async def _broken_download(
    request: web.Request, data: bytes, content_type: str
) -> web.StreamResponse:
    """Announce all of `data`, send the first half (cut mid-line), then drop the connection."""
    cut = len(data) // 2
    if cut > 1 and data[cut - 1 : cut] == b"\n":
        cut -= 1
    response = web.StreamResponse(headers={"content-type": content_type})
    response.content_length = len(data)
    await response.prepare(request)
    await response.write(data[:cut])
    if request.transport is not None:
        request.transport.abort()
    with contextlib.suppress(Exception):
        await response.write_eof()
    return response
