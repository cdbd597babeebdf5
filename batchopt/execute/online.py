"""The online executor: bounded concurrency, rate limits, retries, per-request timeouts.

Every answer is persisted (`persist`) before its worker takes the next request and before
anything else uses it, so a run killed at any point loses at most the requests in flight.
Answers that arrive in the same event-loop turn are persisted together in one transaction (a
group commit): a durable write per answer would cost a third of a request at a thousand
requests a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from tenacity import AsyncRetrying, RetryError, retry_if_exception, stop_after_attempt

from batchopt.errors import ProviderError, TerminalProviderError, TransientProviderError
from batchopt.execute.claims import ClaimGate
from batchopt.execute.ratelimit import RateLimiter
from batchopt.execute.retry import first_wait, is_transient, retry_after_hook, wait_for
from batchopt.providers.base import Provider
from batchopt.records import Request, Result
from batchopt.services.structured import check_structured

_AUTH_STATUSES = (401, 403)


class GroupCommit:
    """Persists results in batches: `put` returns once its result is written, and every result
    put in the same event-loop turn is written by one `persist` call (one transaction).

    The worker waits for its write before it takes its next request, so a kill can cost at
    most the requests in flight, never more than the concurrency limit. (A writer thread was
    measured slower: diskcache holds the GIL for most of a write.)"""

    def __init__(self, persist: Callable[[list[Result]], None]) -> None:
        self._persist = persist
        self._pending: list[tuple[Result, asyncio.Future[None]]] = []

    async def put(self, result: Result) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((result, done))
        await done

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        try:
            self._persist([result for result, _ in batch])
        except BaseException as exc:  # the waiting workers must see the failure
            for _, done in batch:
                done.set_exception(exc)
            return
        for _, done in batch:
            done.set_result(None)


@dataclass(frozen=True)
class OnlineSettings:
    """Limits for one model's online calls."""

    concurrency: int = 8
    rpm: int | None = None
    tpm: int | None = None
    timeout_s: float = 60.0
    max_attempts: int = 5


class BudgetGate(Protocol):
    """What an executor asks before each send: `reserve` holds the request's most (False: it
    does not fit now), `release` gives an unbilled reservation back, `holding` says whether
    any request is in flight, `stop_reason` why sending stops."""

    def reserve(self, request: Request) -> bool: ...
    def release(self, key: str) -> None: ...
    @property
    def holding(self) -> bool: ...
    def stop_reason(self) -> str: ...


def not_sent(request: Request, reason: str) -> Result:
    """The result of a request an executor stopped before sending."""
    return Result(key=request.key, text=None, status="failed", attempts=0,
                  error=f"not sent: {reason}")


class OnlineExecutor:
    """Sends requests to one provider and returns one Result per request key."""

    def __init__(
        self,
        provider: Provider,
        settings: OnlineSettings,
        persist: Callable[[list[Result]], None],
        on_progress: Callable[[Result], None] | None = None,
        claim: Callable[[list[Request]], set[str]] | None = None,
        limiter: RateLimiter | None = None,
        budget: BudgetGate | None = None,
        on_send: Callable[[list[Request]], None] | None = None,
    ) -> None:
        """`claim`, when given, is asked before requests are sent (a few at a time): it claims
        them for this run and returns the keys another run holds, which are not sent here but
        left in `gate.deferred` (see `execute.claims`). `limiter`, when given, paces the calls
        instead of one of `settings.rpm` / `settings.tpm` of the executor's own (a limit shared
        with other executors: see `engines.ray_send`). `budget`, when given, must hold a
        request's reservation before it is sent (see `BudgetGate`). `on_send`, when given,
        journals requests before any of them is sent (a few at a time); those then stopped
        unsent come back with `attempts` 0. `unbilled` collects the keys the provider answered
        with an error status (not billed; a cut connection or a timeout may have been)."""
        self.provider = provider
        self.settings = settings
        self.limiter = limiter if limiter is not None else RateLimiter(settings.rpm, settings.tpm)
        self._commit = GroupCommit(persist)
        self._on_progress = on_progress
        self._abort: str | None = None
        self.gate = ClaimGate(claim)
        self._ready: list[Request] = []
        self._budget = budget
        self._on_send = on_send
        self.unbilled: set[str] = set()

    def stop(self, reason: str) -> None:
        """Send nothing more: every request not yet started fails with `not sent: reason`."""
        self._abort = reason

    async def run(self, requests: list[Request]) -> dict[str, Result]:
        """Send every request (each at most `max_attempts` times) and collect the results."""
        results: dict[str, Result] = {}
        queue: asyncio.Queue[Request] = asyncio.Queue()
        for request in requests:
            queue.put_nowait(request)

        self.gate.deferred = []
        self._ready = []

        async def worker() -> None:
            while (request := self._next(queue)) is not None:
                result = await self._one(request)
                results[request.key] = result
                if self._on_progress is not None:
                    self._on_progress(result)

        if requests and self.provider.caches_prefix(requests[0]):
            # One request alone first writes the prompt cache; sent side by side, every
            # request of the first wave would pay to write it.
            first = self._next(queue, 1)
            if first is not None:
                results[first.key] = await self._one(first)
                if self._on_progress is not None:
                    self._on_progress(results[first.key])
        workers = max(1, min(self.settings.concurrency, queue.qsize()))
        await asyncio.gather(*(worker() for _ in range(workers)))
        return results

    def _next(self, queue: asyncio.Queue[Request], chunk: int | None = None) -> Request | None:
        """The next request this run may send; claims them a few at a time (one transaction
        for as many requests as there are workers) when other runs share the cache."""
        while not self._ready:
            taken: list[Request] = []
            while len(taken) < (chunk or self.settings.concurrency) and not queue.empty():
                taken.append(queue.get_nowait())
            if not taken:
                return None
            self._ready = self.gate.admit(taken, stopped=self._abort is not None)
            if self._on_send is not None and self._ready and self._abort is None:
                self._on_send(self._ready)
        return self._ready.pop(0)

    async def _admit(self, request: Request) -> bool:
        """Reserve `request`'s most against the budget, waiting while requests in flight may
        leave room when they settle; when nothing is in flight and it still does not fit,
        stop: nothing more is sent."""
        if self._budget is None:
            return True
        while not self._budget.reserve(request):
            if self._abort is not None:
                return False
            if not self._budget.holding:
                self.stop(self._budget.stop_reason())
                return False
            await asyncio.sleep(0.005)
        if self._abort is not None:
            self._budget.release(request.key)
            return False
        return True

    async def _one(self, request: Request) -> Result:
        if self._abort is not None or not await self._admit(request):
            assert self._abort is not None
            return not_sent(request, self._abort)
        try:
            return await self._send(request)
        finally:
            if self._budget is not None:  # settled already when its answer was persisted
                self._budget.release(request.key)

    async def _send(self, request: Request) -> Result:
        started = time.perf_counter()
        # Fast path: most calls succeed at once, and tenacity's machinery costs about 50 us a
        # request, 5% of a request at a thousand a second. It takes over after a transient error.
        try:
            result, attempts = await self._attempt(request), 1
        except TransientProviderError as first:
            outcome, attempts = (
                await self._retry(request, first) if self.settings.max_attempts > 1 else (first, 1)
            )
            if isinstance(outcome, ProviderError):
                return self._fail_on(request, outcome, attempts, started)
            result = outcome
        except ProviderError as exc:
            return self._fail_on(request, exc, 1, started)
        result = check_structured(request, replace(result, attempts=attempts))
        await self._commit.put(result)
        return result

    async def _retry(
        self, request: Request, first: TransientProviderError
    ) -> tuple[Result | ProviderError, int]:
        """Attempts 2..max_attempts after a transient first failure: the result or the last
        error, and the number of attempts made in all."""
        if first.retry_after:
            self.limiter.pause(first.retry_after)
        await asyncio.sleep(first_wait(first))
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.max_attempts - 1),
            wait=wait_for,
            retry=retry_if_exception(is_transient),
            before_sleep=retry_after_hook(self.limiter.pause),
            reraise=False,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    result = await self._attempt(request)
        except RetryError as exc:
            error = exc.last_attempt.exception()
            assert isinstance(error, ProviderError)
            return error, self.settings.max_attempts
        except ProviderError as exc:
            return exc, 1 + int(retrying.statistics.get("attempt_number", 1))
        return result, 1 + int(retrying.statistics.get("attempt_number", 1))

    def _fail_on(self, request: Request, error: ProviderError, attempts: int, started: float
                 ) -> Result:
        if isinstance(error, TerminalProviderError) and error.status in _AUTH_STATUSES:
            self._abort = str(error)
        if error.status is not None:
            self.unbilled.add(request.key)
        return self._failed(request, error, attempts, started)

    async def _attempt(self, request: Request) -> Result:
        await self.limiter.acquire(request.estimated_input_tokens + request.max_tokens)
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                return await self.provider.complete(request)
        except TimeoutError as exc:
            raise TransientProviderError(
                f"{self.provider.name} {request.model}: no answer within "
                f"{self.settings.timeout_s:g} s"
            ) from exc

    @staticmethod
    def _failed(request: Request, error: BaseException, attempts: int, started: float) -> Result:
        return Result(
            key=request.key,
            text=None,
            status="failed",
            error=str(error),
            attempts=attempts,
            latency_ms=(time.perf_counter() - started) * 1000.0,
        )
