"""The online executor: bounded concurrency, rate limits, retries, per-request timeouts.

Every answer goes to `on_result` (which persists it) the moment it arrives, before anything else
uses it, so a run killed at any point loses at most the requests in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from tenacity import AsyncRetrying, RetryError, retry_if_exception, stop_after_attempt

from batchopt.errors import ProviderError, TerminalProviderError, TransientProviderError
from batchopt.execute.ratelimit import RateLimiter
from batchopt.execute.retry import is_transient, retry_after_hook, wait_for
from batchopt.execute.structured import check_structured
from batchopt.providers.base import Provider
from batchopt.records import Request, Result

_AUTH_STATUSES = (401, 403)


@dataclass(frozen=True)
class OnlineSettings:
    """Limits for one model's online calls."""

    concurrency: int = 8
    rpm: int | None = None
    tpm: int | None = None
    timeout_s: float = 60.0
    max_attempts: int = 5


class OnlineExecutor:
    """Sends requests to one provider and returns one Result per request key."""

    def __init__(
        self,
        provider: Provider,
        settings: OnlineSettings,
        on_result: Callable[[Result], None],
        on_progress: Callable[[Result], None] | None = None,
    ) -> None:
        self.provider = provider
        self.settings = settings
        self.limiter = RateLimiter(settings.rpm, settings.tpm)
        self._on_result = on_result
        self._on_progress = on_progress
        self._abort: str | None = None

    async def run(self, requests: list[Request]) -> dict[str, Result]:
        """Send every request (each at most `max_attempts` times) and collect the results."""
        results: dict[str, Result] = {}
        queue: asyncio.Queue[Request] = asyncio.Queue()
        for request in requests:
            queue.put_nowait(request)

        async def worker() -> None:
            while True:
                try:
                    request = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                result = await self._one(request)
                results[request.key] = result
                if self._on_progress is not None:
                    self._on_progress(result)

        workers = max(1, min(self.settings.concurrency, len(requests)))
        await asyncio.gather(*(worker() for _ in range(workers)))
        return results

    async def _one(self, request: Request) -> Result:
        if self._abort is not None:
            return Result(key=request.key, text=None, status="failed", attempts=0,
                          error=f"not sent: {self._abort}")
        started = time.perf_counter()
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.max_attempts),
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
            return self._failed(request, error, retrying.statistics, started)
        except ProviderError as exc:
            if isinstance(exc, TerminalProviderError) and exc.status in _AUTH_STATUSES:
                self._abort = str(exc)
            return self._failed(request, exc, retrying.statistics, started)
        attempts = int(retrying.statistics.get("attempt_number", 1))
        result = check_structured(request, replace(result, attempts=attempts))
        self._on_result(result)
        return result

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
    def _failed(
        request: Request, error: BaseException | None, stats: dict, started: float
    ) -> Result:
        return Result(
            key=request.key,
            text=None,
            status="failed",
            error=str(error) if error is not None else "failed",
            attempts=int(stats.get("attempt_number", 1)),
            latency_ms=(time.perf_counter() - started) * 1000.0,
        )
