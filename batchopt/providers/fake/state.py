"""Counters, the paid-call log and the fault queue of the fake provider server.

Handlers run on the server's event loop while tests read from another thread, so every access
goes through one lock (uncontended, so cheap).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

WIRES = ("openai", "anthropic")
_LOG_FIELDS = ("t", "wire", "model", "input_tokens", "output_tokens", "request_hash", "id")
_FAULT_KEYS = {"status", "retry_after", "retry_after_ms", "delay_ms", "message", "count"}


@dataclass(frozen=True)
class Fault:
    """What to do to one model call instead of (or before) answering it."""

    status: int | None = None
    retry_after: float | None = None
    retry_after_ms: float | None = None
    delay_ms: float = 0.0
    message: str | None = None


def parse_faults(data: Any) -> list[Fault]:
    """Faults from their JSON form (a list of objects, or one object); `count` repeats one.

    Raises ValueError naming what is wrong.
    """
    items = [data] if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError("faults must be a JSON list of objects")
    faults: list[Fault] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"fault {i} is not an object")
        unknown = set(item) - _FAULT_KEYS
        if unknown:
            raise ValueError(f"fault {i} has unknown keys: {sorted(unknown)}")
        status = item.get("status")
        if status is not None and (not isinstance(status, int) or not 400 <= status <= 599):
            raise ValueError(f"fault {i}: status must be an int from 400 to 599")
        if status is None and not item.get("delay_ms"):
            raise ValueError(f"fault {i} needs a status or a delay_ms")
        count = item.get("count", 1)
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"fault {i}: count must be a positive int")
        fault = Fault(
            status=status,
            retry_after=_number(item, "retry_after", i),
            retry_after_ms=_number(item, "retry_after_ms", i),
            delay_ms=_number(item, "delay_ms", i) or 0.0,
            message=str(item["message"]) if item.get("message") is not None else None,
        )
        faults.extend([fault] * count)
    return faults


def _number(item: dict[str, Any], key: str, i: int) -> float | None:
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"fault {i}: {key} must be a non-negative number")
    return float(value)


def _zero() -> dict[str, int]:
    return {
        "requests": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "failed_requests": 0,
        "abandoned_requests": 0,
    }


class ServerState:
    """Stats, paid-call log and pending faults, shared by both wire formats."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self._log: list[tuple[Any, ...]] = []  # tuples: a third of the memory of dicts
        self._by_wire: dict[str, dict[str, int]] = {w: _zero() for w in WIRES}
        self._by_model: dict[str, dict[str, int]] = {}

    def reset(self) -> None:
        """Zero the stats, empty the log and drop pending faults."""
        with self._lock:
            self._faults.clear()
            self._log = []
            self._by_wire = {w: _zero() for w in WIRES}
            self._by_model = {}

    def set_faults(self, faults: list[Fault]) -> None:
        """Replace the pending faults; the next model calls consume them in order."""
        with self._lock:
            self._faults = deque(faults)

    def pending_faults(self) -> int:
        """How many faults are still queued."""
        with self._lock:
            return len(self._faults)

    def next_fault(self) -> Fault | None:
        """Pop the next pending fault, if any."""
        if not self._faults:  # fast path without the lock; a race only delays a fault by one
            return None
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def record_paid(
        self,
        wire: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
        request_hash: str,
        response_id: str,
    ) -> None:
        """Count one answered (billable) model call and log it."""
        entry = (time.time(), wire, model, input_tokens, output_tokens, request_hash, response_id)
        with self._lock:
            for bucket in (self._by_wire[wire], self._model_bucket(model)):
                bucket["requests"] += 1
                bucket["input_tokens"] += input_tokens
                bucket["output_tokens"] += output_tokens
            self._log.append(entry)

    def record_failed(self, wire: str, model: str | None = None) -> None:
        """Count one call answered with an error (injected or a bad request): not billable."""
        with self._lock:
            self._by_wire[wire]["failed_requests"] += 1
            if model:
                self._model_bucket(model)["failed_requests"] += 1

    def record_abandoned(self, wire: str) -> None:
        """Count one call whose client hung up before it was answered: not billable."""
        with self._lock:
            self._by_wire[wire]["abandoned_requests"] += 1

    def _model_bucket(self, model: str) -> dict[str, int]:
        bucket = self._by_model.get(model)
        if bucket is None:
            bucket = self._by_model[model] = _zero()
        return bucket

    def stats(self) -> dict[str, Any]:
        """Totals over both wire formats, plus `by_wire`, `by_model` and `pending_faults`."""
        with self._lock:
            by_wire = {w: dict(b) for w, b in self._by_wire.items()}
            by_model = {m: dict(b) for m, b in self._by_model.items()}
            pending = len(self._faults)
        totals = _zero()
        for bucket in by_wire.values():
            for key in totals:
                totals[key] += bucket[key]
        return {**totals, "by_wire": by_wire, "by_model": by_model, "pending_faults": pending}

    def log(self) -> list[dict[str, Any]]:
        """A copy of the paid-call log, oldest first."""
        with self._lock:
            entries = list(self._log)
        return [dict(zip(_LOG_FIELDS, entry, strict=True)) for entry in entries]
