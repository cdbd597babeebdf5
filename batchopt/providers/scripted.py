"""An in-memory provider that answers from a script, so tests of a run need no socket (as httpx
ships `MockTransport`).

A script is a callable `Request -> Result | Exception` (a "reply"), or a mapping from a
request's key or user text to a reply, a `Result`, an exception or an answer text. `answer`,
`in_turn`, `fail_transiently` and `fail_terminally` build the common replies. The provider
records every request it is sent, in order (`calls`), so a test can assert what was sent and
how often:

    provider = ScriptedProvider(answer("A refund request.", input_tokens=40, output_tokens=5))
    options = RunOptions(providers=stand_ins({"openai": provider}))
    run_pipeline(load_pipeline(path), options, env={"OPENAI_API_KEY": "unused"})
    assert len(provider.calls) == 3

`ScriptedBatchProvider` adds the batch interface (`providers.batching.BatchProvider`), also in
memory: a batch ends after `polls` polls and its rows are the script's replies.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from batchopt.errors import TerminalProviderError, TransientProviderError
from batchopt.providers.base import (
    Capabilities,
    Provider,
    ProviderFactory,
    ProviderSettings,
    ProviderTraits,
)
from batchopt.providers.batching import (
    OPENAI_LIMITS,
    BatchLimits,
    BatchProvider,
    BatchRow,
    BatchStatus,
    check_batch,
    custom_id_for,
)
from batchopt.records import Request, Result, Usage

Reply = Callable[[Request], "Result | BaseException"]
Script = Reply | Mapping[str, "Reply | Result | BaseException | str"]


def answer(
    text: str | Callable[[Request], str] = "ok",
    *,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    cached_input_tokens: int = 0,
    cache_write_tokens: int = 0,
    finish_reason: str = "stop",
) -> Reply:
    """A reply that answers `text` (or `text(request)`) with the given usage.

    Left out, `input_tokens` is the request's `estimated_input_tokens` (the planner's count;
    the words of system and user text when there is none) and `output_tokens` the words of
    the answer, at least 1."""

    def reply(request: Request) -> Result:
        said = text(request) if callable(text) else text
        prompt = request.estimated_input_tokens or len(f"{request.system} {request.user}".split())
        usage = Usage(
            input_tokens=prompt if input_tokens is None else input_tokens,
            output_tokens=max(1, len(said.split())) if output_tokens is None else output_tokens,
            cached_input_tokens=cached_input_tokens,
            cache_write_tokens=cache_write_tokens,
        )
        return Result(key=request.key, text=said, usage=usage, finish_reason=finish_reason)

    return reply


def in_turn(
    outcomes: Sequence[Reply | Result | BaseException | str], then: Reply | None = None
) -> Reply:
    """A reply that gives each request its own `outcomes` one attempt after another (an
    exception is raised, a text answered), then `then` (default: `answer()`) ever after."""
    steps = [_as_reply(outcome) for outcome in outcomes]
    seen: dict[str, int] = {}
    after = then if then is not None else answer()

    def reply(request: Request) -> Result | BaseException:
        attempt = seen[request.key] = seen.get(request.key, 0) + 1
        return (steps[attempt - 1] if attempt <= len(steps) else after)(request)

    return reply


def fail_transiently(
    times: int, then: Reply | None = None, *, status: int = 503, retry_after: float = 0.0
) -> Reply:
    """A reply that fails each request's first `times` attempts with a transient error (`status`,
    `retry_after` seconds), then gives `then` (default: `answer()`)."""
    errors = [
        TransientProviderError(f"scripted: transient failure {n} of {times} ({status})",
                               status=status, retry_after=retry_after)
        for n in range(1, times + 1)
    ]
    return in_turn(errors, then)


def fail_terminally(message: str = "bad request", *, status: int | None = 400) -> Reply:
    """A reply that always fails with a terminal error (`status` None: no HTTP status)."""

    def reply(request: Request) -> BaseException:
        return TerminalProviderError(f"scripted: {message}", status=status)

    return reply


def _no_script(request: Request) -> BaseException:
    return TerminalProviderError(f"scripted: no reply scripted for request {request.key}")


def _as_reply(value: Reply | Result | BaseException | str) -> Reply:
    if isinstance(value, str):
        return answer(value)
    if isinstance(value, Result):
        return lambda request: replace(value, key=request.key)
    if isinstance(value, BaseException):
        return lambda request: value
    return value


def _from_mapping(script: Mapping[str, Any], default: Reply | None) -> Reply:
    replies = {match: _as_reply(value) for match, value in script.items()}
    fallback = default if default is not None else _no_script

    def reply(request: Request) -> Result | BaseException:
        found = replies.get(request.key) or replies.get(request.user)
        return (found or fallback)(request)

    return reply


class ScriptedProvider(Provider):
    """A provider that answers from a script in memory and records every request sent.

    `script` (default: `answer()` for every request) is a reply or a mapping (see the module
    docstring); `default` answers the requests a mapping does not name (default: a terminal
    error). `delay` seconds pass before each answer. `calls` holds the requests in the order
    they were sent, retries included; `in_flight` / `max_in_flight` count concurrent calls."""

    name = "scripted"
    capabilities = Capabilities()

    def __init__(
        self, script: Script | None = None, *, default: Reply | None = None, delay: float = 0.0
    ) -> None:
        if script is None:
            script = answer()
        self._reply = _from_mapping(script, default) if isinstance(script, Mapping) else script
        self.delay = delay
        self.calls: list[Request] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._ids = itertools.count(1)

    @classmethod
    def traits(cls, model: str) -> ProviderTraits:
        """No key or endpoint variable, no prompt cache: `capabilities` only."""
        return ProviderTraits(capabilities=cls.capabilities)

    @property
    def keys(self) -> list[str]:
        """The keys of the requests sent, in order, retries included."""
        return [request.key for request in self.calls]

    def to_payload(self, request: Request) -> dict[str, Any]:
        """The request as a plain dict (what a batch line holds)."""
        return {"model": request.model, "system": request.system, "user": request.user,
                "max_tokens": request.max_tokens, "temperature": request.temperature,
                "json_schema": request.json_schema, "params": request.params}

    def from_payload(self, request: Request, raw: dict[str, Any]) -> Result:
        """A Result from `{"text": ..., "usage": {...}, "finish_reason": ..., "id": ...}`."""
        return Result(key=request.key, text=raw.get("text"),
                      usage=Usage.from_dict(raw.get("usage") or {}),
                      finish_reason=raw.get("finish_reason"), request_id=raw.get("id"))

    def reply(self, request: Request) -> Result:
        """Record `request` and give the script's reply: a Result, or raise its exception."""
        self.calls.append(request)
        return self._outcome(request)

    def _outcome(self, request: Request) -> Result:
        outcome = self._reply(request)
        if isinstance(outcome, BaseException):
            raise outcome
        return replace(outcome, key=request.key,
                       request_id=outcome.request_id or f"scripted-{next(self._ids)}")

    async def complete(self, request: Request) -> Result:
        """One call, recorded as it is sent: the script's reply after `delay` seconds."""
        self.calls.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            return self._outcome(request)
        finally:
            self.in_flight -= 1


@dataclass
class _Batch:
    requests: list[Request]
    tag: dict[str, str]
    created: float
    polls_left: int
    state: str = "pending"
    rows: list[BatchRow] = field(default_factory=list)


class ScriptedBatchProvider(ScriptedProvider, BatchProvider):
    """A `ScriptedProvider` with a batch API in memory: a batch ends after `polls` polls, and
    each row is the script's reply to its request (an exception: an errored row). `batches`
    holds every batch submitted, by id."""

    capabilities = Capabilities(batch=True)

    def __init__(self, script: Script | None = None, *, default: Reply | None = None,
                 delay: float = 0.0, polls: int = 0, limits: BatchLimits = OPENAI_LIMITS) -> None:
        super().__init__(script, default=default, delay=delay)
        self.batch_limits = limits
        self.polls = polls
        self.batches: dict[str, _Batch] = {}

    def batch_line_bytes(self, request: Request) -> int:
        """The bytes of the request's payload as one JSON line."""
        return len(json.dumps(self.to_payload(request)).encode()) + 1

    async def submit_batch(self, requests: Sequence[Request], tag: dict[str, str]) -> str:
        """Hold `requests` as a new batch; ValueError if they break `batch_limits`."""
        size = sum(self.batch_line_bytes(r) for r in requests)
        check_batch([custom_id_for(r.key) for r in requests], size, self.batch_limits)
        batch_id = f"scripted-batch-{len(self.batches) + 1}"
        self.batches[batch_id] = _Batch(list(requests), dict(tag), time.time(), self.polls)
        return batch_id

    async def poll_batch(self, batch_id: str) -> BatchStatus:
        """Pending until `polls` polls have passed; then the script answers every row."""
        batch = self.batches[batch_id]
        if batch.state == "pending" and batch.polls_left > 0:
            batch.polls_left -= 1
        elif batch.state == "pending":
            batch.rows = [self._row(request) for request in batch.requests]
            batch.state = "ended"
        succeeded = sum(row.kind == "succeeded" for row in batch.rows)
        return BatchStatus(batch_id, batch.state, batch.state,  # type: ignore[arg-type]
                           total=len(batch.requests), succeeded=succeeded,
                           errored=len(batch.rows) - succeeded)

    def _row(self, request: Request) -> BatchRow:
        custom_id = custom_id_for(request.key)
        try:
            return BatchRow(custom_id, "succeeded", request.key, self.reply(request))
        except Exception as exc:  # noqa: BLE001 - a failed row, as the provider reports it
            return BatchRow(custom_id, "errored", request.key, None, str(exc))

    async def fetch_batch_results(
        self, batch_id: str, requests: Iterable[Request]
    ) -> AsyncIterator[BatchRow]:
        """The rows of an ended or cancelled batch, in submission order."""
        for row in self.batches[batch_id].rows:
            yield row

    async def find_batches(
        self, tag: dict[str, str], *, keys: Sequence[str] = (), since: float | None = None
    ) -> list[str]:
        """The batches whose tag holds every item of `tag`, newest first."""
        return [batch_id for batch_id, batch in reversed(self.batches.items())
                if tag.items() <= batch.tag.items()]

    async def cancel_batch(self, batch_id: str) -> None:
        """Stop a pending batch: it ends cancelled, with no rows."""
        batch = self.batches[batch_id]
        if batch.state == "pending":
            batch.state = "cancelled"


def stand_ins(by_provider: Mapping[str, Provider | ProviderFactory]) -> ProviderFactory:
    """A provider factory for `RunOptions.providers`: each provider name given gets its stand-in
    (a provider instance, which then sees the whole run, or a factory called with the tier's
    `ProviderSettings`); any other name gets the real provider. The run still plans, prices and
    reads its key variable as the named provider (`traits_of` is unchanged)."""
    from batchopt.providers.registry import create_provider

    def make(settings: ProviderSettings) -> Provider:
        given = by_provider.get(settings.provider)
        if given is None:
            return create_provider(settings)
        return given if isinstance(given, Provider) else given(settings)

    return make
