"""Batches and files of the fake server: storage, the clock-driven lifecycle and the row answers.

No background task runs a batch: its phase is computed from the clock whenever someone looks
(`batch_seconds` after creation it has ended). The first look after the end "settles" it, once:
every row is answered through `wire.openai_reply` / `wire.anthropic_reply` (so a body gets the
same text and usage as online) and each succeeded row is billed then, under the
`openai-batch` / `anthropic-batch` wire. Later looks reuse the settled rows, so fetching results
again bills nothing more. The oracle in force at settling time decides the rows it matches.

Handlers run on the server's loop while tests read stats from their own thread, hence the lock.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batchopt.fakeapi import wire
from batchopt.fakeapi.faults import BatchFault
from batchopt.fakeapi.state import ServerState

OPENAI = "openai"
ANTHROPIC = "anthropic"
NO_FAULT = BatchFault(effects=frozenset())
ENDED_PHASES = frozenset({"completed", "expired", "cancelled"})


@dataclass
class StoredFile:
    """An uploaded input file or a batch's output/error file (OpenAI wire)."""

    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: float
    fault: BatchFault | None = None  # an input file carries its submission's fault
    batch_id: str | None = None  # an output/error file names the batch that wrote it


@dataclass(frozen=True)
class RowOutcome:
    """What became of one batch row once the batch ended."""

    custom_id: str
    kind: str  # succeeded | errored | expired | canceled
    status: int = 0  # HTTP status of the row's answer; 0 when it never ran
    body: dict[str, Any] | None = None  # the answer of a succeeded row
    message: str | None = None  # why an errored row failed
    ident: str = ""


@dataclass
class FakeBatch:
    """One batch of either wire; `rows` are (custom_id, request body) in submission order."""

    id: str
    wire: str
    rows: list[tuple[str, Any]]
    created_at: float
    ends_at: float
    fault: BatchFault = NO_FAULT
    metadata: dict[str, str] | None = None
    input_file_id: str | None = None
    errors: list[dict[str, Any]] | None = None  # validation failed (OpenAI): status `failed`
    cancelled_at: float | None = None
    outcomes: list[RowOutcome] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    truncations_left: int = 0

    def phase(self, now: float) -> str:
        """failed | in_progress | completed | expired | cancelled."""
        if self.errors:
            return "failed"
        if self.cancelled_at is not None:
            return "cancelled"
        if now < self.ends_at:
            return "in_progress"
        return "expired" if "expire" in self.fault.effects else "completed"

    @property
    def ended_at(self) -> float:
        return self.cancelled_at if self.cancelled_at is not None else self.ends_at

    def ordered_outcomes(self) -> list[RowOutcome]:
        """The settled rows in the order results are served (shuffled under a `shuffle` fault)."""
        rows = list(self.outcomes or [])
        if "shuffle" in self.fault.effects and len(rows) > 1:
            shuffled = rows[:]
            random.Random(self.id).shuffle(shuffled)
            rows = shuffled if shuffled != rows else rows[::-1]
        return rows

    def count(self, kind: str) -> int:
        return sum(1 for o in self.outcomes or [] if o.kind == kind)


class BatchStore:
    """Files and batches of both wires, newest last."""

    def __init__(
        self, state: ServerState, next_id: Callable[[], str], batch_seconds: float = 1.0
    ) -> None:
        self.state = state
        self.batch_seconds = batch_seconds
        self.clock: Callable[[], float] = time.time
        self._next_id = next_id
        self._lock = threading.RLock()
        self._files: dict[str, StoredFile] = {}
        self._batches: dict[str, FakeBatch] = {}

    def clear(self) -> None:
        """Forget every file and batch."""
        with self._lock:
            self._files.clear()
            self._batches.clear()

    def add_file(
        self, filename: str, purpose: str, data: bytes, fault: BatchFault | None = None
    ) -> StoredFile:
        """Store an uploaded file."""
        stored = StoredFile("file-" + self._next_id(), filename, purpose, data, self.clock(), fault)
        with self._lock:
            self._files[stored.id] = stored
        return stored

    def file(self, file_id: str) -> StoredFile | None:
        """The file with this id, if any."""
        with self._lock:
            return self._files.get(file_id)

    def create(
        self,
        wire_name: str,
        rows: list[tuple[str, Any]],
        fault: BatchFault | None = None,
        **fields: Any,
    ) -> FakeBatch:
        """A new batch ending `batch_seconds` from now; counted in the stats."""
        fault = fault or NO_FAULT
        now = self.clock()
        prefix = "batch_" if wire_name == OPENAI else "msgbatch_"
        batch = FakeBatch(
            id=prefix + self._next_id(),
            wire=wire_name,
            rows=rows,
            created_at=now,
            ends_at=now + self.batch_seconds,
            fault=fault,
            truncations_left=fault.times if "truncate_results" in fault.effects else 0,
            **fields,
        )
        with self._lock:
            self._batches[batch.id] = batch
        self.state.record_batch(len(rows))
        return batch

    def get(self, batch_id: str, wire_name: str) -> FakeBatch | None:
        """The batch (settled if it has ended), or None if this wire has no such batch."""
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None or batch.wire != wire_name:
                return None
            self._settle(batch)
            return batch

    def listing(self, wire_name: str) -> list[FakeBatch]:
        """This wire's batches, newest first, settled where they have ended."""
        with self._lock:
            batches = [b for b in self._batches.values() if b.wire == wire_name]
            for batch in batches:
                self._settle(batch)
        return batches[::-1]

    def cancel(self, batch_id: str, wire_name: str) -> tuple[FakeBatch | None, bool]:
        """(the batch, whether this call started cancelling it); ended batches are left alone."""
        with self._lock:
            batch = self.get(batch_id, wire_name)
            if batch is None or batch.phase(self.clock()) != "in_progress":
                return batch, False
            batch.cancelled_at = self.clock()
            self._settle(batch)
            return batch, True

    def settle_due(self) -> None:
        """Settle every batch that has ended (so the stats show what it billed)."""
        with self._lock:
            for batch in self._batches.values():
                self._settle(batch)

    def take_truncation(self, batch: FakeBatch) -> bool:
        """Whether this results download should break off (a `truncate_results` fault)."""
        with self._lock:
            if batch.truncations_left <= 0:
                return False
            batch.truncations_left -= 1
            return True

    def _settle(self, batch: FakeBatch) -> None:
        if batch.outcomes is not None or batch.phase(self.clock()) not in ENDED_PHASES:
            return
        batch.outcomes = self._answer_rows(batch)
        if batch.wire == OPENAI:
            self._write_result_files(batch)

    def _answer_rows(self, batch: FakeBatch) -> list[RowOutcome]:
        fault, n = batch.fault, len(batch.rows)
        done = int(n * fault.done_share) if "expire" in fault.effects else n
        errored_from = done - fault.rows if "errors" in fault.effects else done
        answer = wire.openai_reply if batch.wire == OPENAI else wire.anthropic_reply
        billed_wire = batch.wire + "-batch"
        outcomes: list[RowOutcome] = []
        for i, (custom_id, body) in enumerate(batch.rows):
            if batch.cancelled_at is not None:
                outcomes.append(RowOutcome(custom_id, "canceled"))
                continue
            if i >= done:
                outcomes.append(RowOutcome(custom_id, "expired"))
                continue
            ident = self._next_id()
            if i >= errored_from:
                message = fault.message or "fake server: injected batch row error"
                outcomes.append(RowOutcome(custom_id, "errored", 500, None, message, ident))
                model = body.get("model")
                self.state.record_failed(billed_wire, model if isinstance(model, str) else None)
                continue
            try:
                reply = answer(
                    body,
                    ident,
                    self.state.oracle,
                    self.state.prompt_cache,
                    self.state.quality,
                    self.state.flaws,
                )
            except wire.BadRequest as exc:
                outcomes.append(RowOutcome(custom_id, "errored", 400, None, str(exc), ident))
                self.state.record_failed(billed_wire)
                continue
            reply.bill(self.state, billed_wire)
            outcomes.append(RowOutcome(custom_id, "succeeded", 200, reply.payload, None, ident))
        return outcomes

    def _write_result_files(self, batch: FakeBatch) -> None:
        # OpenAI: 200s in the output file, other statuses in the error file; rows that never
        # ran (expired, cancelled) are in neither.
        ok = [o for o in batch.ordered_outcomes() if o.kind == "succeeded"]
        bad = [o for o in batch.ordered_outcomes() if o.kind == "errored"]
        for outcomes, attr in ((ok, "output_file_id"), (bad, "error_file_id")):
            if not outcomes:
                continue
            data = b"".join(openai_output_line(o) for o in outcomes)
            name = f"{batch.id}_{attr.removesuffix('_file_id')}.jsonl"
            stored = StoredFile("file-" + self._next_id(), name, "batch_output", data, self.clock())
            stored.batch_id = batch.id
            self._files[stored.id] = stored
            setattr(batch, attr, stored.id)


def openai_output_line(outcome: RowOutcome) -> bytes:
    """One line of an OpenAI batch output or error file."""
    body = outcome.body
    if outcome.kind != "succeeded":
        kind = "server_error" if outcome.status >= 500 else "invalid_request_error"
        body = {"error": {"message": outcome.message, "type": kind, "param": None, "code": None}}
    line = {
        "id": "batch_req_" + outcome.ident,
        "custom_id": outcome.custom_id,
        "response": {
            "status_code": outcome.status,
            "request_id": "req_" + outcome.ident,
            "body": body,
        },
        "error": None,
    }
    return json.dumps(line, ensure_ascii=False).encode() + b"\n"
