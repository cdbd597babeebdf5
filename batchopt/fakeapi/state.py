"""Counters, the paid-call log and the fault queues of the fake provider server.

Model-call faults (`Fault`) and batch faults (`BatchFault`, an object with a `batch` key) arrive
mixed in one JSON list and wait in two queues: the next model calls take the first, the next
batch submissions the second (see `batchopt.fakeapi.app` for the shapes, `faults.py` for their
parsing).

The state also holds the answer oracle, if one is set (see `batchopt.fakeapi.oracle`),
and counts the oracle's verdict on every paid answer (`oracle`, `oracle_by_model` in the stats;
`oracle` in each log entry): right, wrong, or unmatched (no oracle, or no item matched).

Handlers run on the server's event loop while tests read from another thread, so every access
goes through one lock (uncontended, so cheap).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from batchopt.fakeapi.faults import BatchFault, Fault
from batchopt.fakeapi.oracle import UNMATCHED, VERDICTS, Oracle
from batchopt.fakeapi.prices import FakePrices
from batchopt.fakeapi.prompt_cache import PromptCache
from batchopt.fakeapi.quality import FlawLog, Quality

WIRES = ("openai", "anthropic", "openai-batch", "anthropic-batch")
_LOG_FIELDS = (
    "t",
    "wire",
    "model",
    "input_tokens",
    "output_tokens",
    "request_hash",
    "id",
    "oracle",
    "cached_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
)
_BILL_TOKENS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens")


def _zero() -> dict[str, int]:
    return {
        "requests": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "failed_requests": 0,
        "abandoned_requests": 0,
    }


def _bill_line() -> dict[str, Any]:
    return {"requests": 0, **dict.fromkeys(_BILL_TOKENS, 0), "usd": 0.0}


def _verdicts() -> dict[str, int]:
    return dict.fromkeys(VERDICTS, 0)


class ServerState:
    """Stats, paid-call log and pending faults, shared by both wire formats."""

    def __init__(self, quality: Quality | None = None) -> None:
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self._batch_faults: deque[BatchFault] = deque()
        self._batches_created = 0
        self._batch_requests = 0
        self._log: list[tuple[Any, ...]] = []  # tuples: a third of the memory of dicts
        self._by_wire: dict[str, dict[str, int]] = {w: _zero() for w in WIRES}
        self._by_model: dict[str, dict[str, int]] = {}
        self._verdicts = _verdicts()
        self._verdicts_by_model: dict[str, dict[str, int]] = {}
        self.oracle: Oracle | None = None  # read without the lock: replaced, never mutated
        self.prompt_cache = PromptCache()  # both providers' prompt caches (own lock)
        # the answers' deliberate flaws (see `quality`): replaced, never mutated; `reset` puts
        # back the server's own settings
        self.default_quality = quality or Quality()
        self.quality = self.default_quality
        self.flaws = FlawLog()  # the flawed answers given, for the judge (own lock)
        self.prices = FakePrices()  # replaced, never mutated; `reset` puts back the published
        self._bill: dict[tuple[str, str], dict[str, Any]] = {}  # (model, online|batch) -> line

    def set_quality(self, quality: Quality | None) -> None:
        """Flaw answers by `quality` from now on; None puts back the server's own settings."""
        self.quality = quality or self.default_quality

    def set_oracle(self, oracle: Oracle | None) -> None:
        """Answer matching requests from `oracle` from now on; None drops it."""
        self.oracle = oracle

    def set_prices(self, prices: FakePrices | None) -> None:
        """Bill at `prices` from now on; None puts back the published list."""
        self.prices = prices or FakePrices()

    def reset_bill(self) -> None:
        """Start a new bill (the log and the stats stay)."""
        with self._lock:
            self._bill = {}

    def reset(self) -> None:
        """Zero the stats, the bill and the log, drop pending faults, the oracle, the prompt
        cache and any price overrides."""
        self.oracle = None
        self.prices = FakePrices()
        self.prompt_cache.clear()
        self.quality = self.default_quality
        self.flaws.clear()
        with self._lock:
            self._faults.clear()
            self._batch_faults.clear()
            self._batches_created = self._batch_requests = 0
            self._log = []
            self._bill = {}
            self._by_wire = {w: _zero() for w in WIRES}
            self._by_model = {}
            self._verdicts = _verdicts()
            self._verdicts_by_model = {}

    def set_faults(self, faults: list[Fault | BatchFault]) -> None:
        """Replace the pending faults of both queues; each is consumed in order."""
        with self._lock:
            self._faults = deque(f for f in faults if isinstance(f, Fault))
            self._batch_faults = deque(f for f in faults if isinstance(f, BatchFault))

    def pending_faults(self) -> int:
        """How many model-call faults are still queued."""
        with self._lock:
            return len(self._faults)

    def pending_batch_faults(self) -> int:
        """How many batch faults are still queued."""
        with self._lock:
            return len(self._batch_faults)

    def next_batch_fault(self) -> BatchFault | None:
        """Pop the fault for the next batch submission, if any."""
        with self._lock:
            return self._batch_faults.popleft() if self._batch_faults else None

    def record_batch(self, rows: int) -> None:
        """Count one created batch of `rows` requests."""
        with self._lock:
            self._batches_created += 1
            self._batch_requests += rows

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
        verdict: str = UNMATCHED,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> None:
        """Count one answered (billable) model call and the oracle's verdict on it; bill and log it.

        `input_tokens` is the whole prompt, prompt-cache reads and writes included; the log
        entry also has `cache_read_tokens`, `cache_write_tokens` and `cached_tokens` (OpenAI's
        name for the reads, the same number), and `cost_usd`, what the fake's own price list
        bills for it (None for a model it has no price for)."""
        batch = wire.endswith("-batch")
        cost = self.prices.cost(
            model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, batch=batch
        )
        entry = (
            time.time(),
            wire,
            model,
            input_tokens,
            output_tokens,
            request_hash,
            response_id,
            verdict,
            cache_read_tokens,
            cache_read_tokens,
            cache_write_tokens,
            cost,
        )
        tokens = (input_tokens, cache_read_tokens, cache_write_tokens, output_tokens)
        with self._lock:
            self._bill_call(model, batch, tokens, cost)
            for bucket in (self._by_wire[wire], self._model_bucket(model)):
                bucket["requests"] += 1
                bucket["input_tokens"] += input_tokens
                bucket["output_tokens"] += output_tokens
            self._verdicts[verdict] += 1
            per_model = self._verdicts_by_model.get(model)
            if per_model is None:
                per_model = self._verdicts_by_model[model] = _verdicts()
            per_model[verdict] += 1
            self._log.append(entry)

    def _bill_call(
        self, model: str, batch: bool, tokens: tuple[int, int, int, int], cost: float | None
    ) -> None:
        """One call on its bill line (`_BILL_TOKENS`, then its cost; None once any call of the
        line has no price). The caller holds the lock."""
        line = self._bill.get((model, "batch" if batch else "online"))
        if line is None:
            line = self._bill[(model, "batch" if batch else "online")] = _bill_line()
        line["requests"] += 1
        for name, n in zip(_BILL_TOKENS, tokens, strict=True):
            line[name] += n
        if cost is None:
            line["usd"] = None
        elif line["usd"] is not None:
            line["usd"] += cost

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
        """Totals over every wire, `by_wire`, `by_model`, batch counts, pending faults, and the
        oracle's verdicts on paid answers (`oracle`, `oracle_by_model`)."""
        with self._lock:
            by_wire = {w: dict(b) for w, b in self._by_wire.items()}
            by_model = {m: dict(b) for m, b in self._by_model.items()}
            extra = {
                "batches_created": self._batches_created,
                "batch_requests": self._batch_requests,
                "pending_faults": len(self._faults),
                "pending_batch_faults": len(self._batch_faults),
                "oracle": dict(self._verdicts),
                "oracle_by_model": {m: dict(v) for m, v in self._verdicts_by_model.items()},
            }
        totals = _zero()
        for bucket in by_wire.values():
            for key in totals:
                totals[key] += bucket[key]
        return {**totals, "by_wire": by_wire, "by_model": by_model, **extra}

    def bill(self) -> dict[str, Any]:
        """The fake's bill since the last reset: `by_model` = {model: {"online"|"batch": {requests,
        input_tokens (cached and written included), cached_input_tokens, cache_write_tokens,
        output_tokens, usd}}}, `online_usd`, `batch_usd`, `total_usd` (priced models only) and
        `unpriced` (models billed without a price: their `usd` is None)."""
        with self._lock:
            lines = {key: dict(line) for key, line in self._bill.items()}
        by_model: dict[str, dict[str, Any]] = {}
        sums = {"online": 0.0, "batch": 0.0}
        for (model, kind), line in sorted(lines.items()):
            by_model.setdefault(model, {})[kind] = line
            sums[kind] += line["usd"] or 0.0
        unpriced = sorted({m for (m, _), line in lines.items() if line["usd"] is None})
        return {
            "by_model": by_model,
            "online_usd": sums["online"],
            "batch_usd": sums["batch"],
            "total_usd": sums["online"] + sums["batch"],
            "unpriced": unpriced,
        }

    def log(self) -> list[dict[str, Any]]:
        """A copy of the paid-call log, oldest first."""
        with self._lock:
            entries = list(self._log)
        return [dict(zip(_LOG_FIELDS, entry, strict=True)) for entry in entries]
