"""Online sending from Ray workers under one rate limit across the cluster (`engine: ray`).

The driver (the process running `batchopt run`) keeps everything that must not be lost or
done twice: it claims requests for the run (`execute.claims`), hands them to sender actors in
small chunks, and persists every answer that comes back (`persist`, the response cache) the
moment it arrives, before anything else uses it. The sender actors (`workers`, spread over the
cluster) each run an `OnlineExecutor` per chunk, with the provider built inside the worker
from the tier's `ProviderSettings`, and stream each group of answers back as it is made.

One limit for the cluster: a limiter actor holds the tier's RPM/TPM schedule (the same
`RateLimiter` the local engine uses, run at `HEADROOM` of the limit) and grants each call its
start. A worker asks for the calls it is about to make in one round trip, however many of its
coroutines wait at that moment (one call in flight per worker), so a grant costs a round trip
only when the worker is idle: measured here, about 700 single grants/s from one worker, 15,000/s
in groups of 16.
A 429's retry-after pauses every worker (`pause` goes to the actor).

What a kill can cost: the driver keeps at most `concurrency` requests per worker handed out
and not yet persisted, so a run killed at any moment (driver, worker or node) loses at most
`workers × concurrency` answers in flight, which the resumed run (same run id) sends again;
everything persisted before is read from the cache, never paid for twice. The actors are
owned by the driver: they die with it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from batchopt.engines.ray_runtime import ensure_ray
from batchopt.execute.claims import ClaimGate
from batchopt.execute.online import BudgetGate, OnlineExecutor, OnlineSettings, not_sent
from batchopt.execute.ratelimit import RateLimiter
from batchopt.providers.base import Provider, ProviderSettings
from batchopt.records import Request, Result

DEFAULT_WORKERS = 2  # when the cluster does not say how many CPUs it has
CHUNKS_PER_WORKER = 4  # a worker's `concurrency` is handed out in about this many chunks
# The schedule runs this far under the limit: a call reaches the provider some time after its
# grant (a round trip to the limiter, a worker's first connection: ~0.1 s measured), unevenly,
# so calls granted at exactly the limit arrive a little over it, measured at the server.
HEADROOM = 0.98
# Builds a provider from its settings (in a worker): the caller's, so engines need no registry.
ProviderFactory = Callable[[ProviderSettings], Provider]


class _LimiterActor:
    """The cluster's one schedule for a tier's calls (run as a Ray actor)."""

    def __init__(self, rpm: int | None, tpm: int | None) -> None:
        self._limiter = RateLimiter(
            *(None if limit is None else limit * HEADROOM for limit in (rpm, tpm)))  # type: ignore[arg-type]
        self.granted = 0

    def reserve(self, tokens: list[int]) -> list[float]:
        """One slot per entry of `tokens`, in order: the seconds each must wait from now."""
        self.granted += len(tokens)
        return [self._limiter.reserve(t) for t in tokens]

    def pause(self, seconds: float) -> None:
        self._limiter.pause(seconds)

    def stats(self) -> int:
        return self.granted


class SharedLimiter(RateLimiter):
    """A worker's view of the limiter actor: `acquire` waits for the actor's grant. Grants
    asked for while one round trip is out go together in the next (one call in flight)."""

    def __init__(self, actor: Any) -> None:
        super().__init__()
        self._actor = actor
        self._asked: list[tuple[int, asyncio.Future[float]]] = []
        self._pump: asyncio.Task[None] | None = None

    async def acquire(self, tokens: int = 0) -> None:
        loop = asyncio.get_running_loop()
        granted: asyncio.Future[float] = loop.create_future()
        self._asked.append((tokens, granted))
        if self._pump is None or self._pump.done():
            self._pump = loop.create_task(self._ask())
        delay = await granted
        if delay > 0:
            await asyncio.sleep(delay)

    async def _ask(self) -> None:
        while self._asked:
            asked, self._asked = self._asked, []
            try:
                delays = await self._actor.reserve.remote([tokens for tokens, _ in asked])
            except BaseException as exc:  # the waiting calls must see it
                for _, granted in asked:
                    if not granted.done():
                        granted.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, granted), delay in zip(asked, delays, strict=True):
                if not granted.done():
                    granted.set_result(delay)

    def reserve(self, tokens: int = 0) -> float:
        raise NotImplementedError("a shared limiter grants through `acquire`")

    def pause(self, seconds: float) -> None:
        self._actor.pause.remote(seconds)


class _Warmed:
    """A provider whose prompt cache the driver has already written (the first request went
    alone): every chunk's requests may go side by side."""

    def __init__(self, provider: Provider) -> None:
        self._provider = provider

    def caches_prefix(self, request: Request) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._provider, name)


class _SenderActor:
    """One worker: sends the chunks it is given through its own provider (run as an actor)."""

    def __init__(self, limiter: Any | None, make_provider: ProviderFactory) -> None:
        self._limiter = SharedLimiter(limiter) if limiter is not None else RateLimiter()
        self._make_provider = make_provider
        self._provider: Provider | None = None
        self._executors: set[OnlineExecutor] = set()
        self._abort: str | None = None

    def _get_provider(self, settings: ProviderSettings) -> Provider:
        if self._provider is None:
            self._provider = self._make_provider(settings)
        return self._provider

    async def caches_prefix(self, settings: ProviderSettings, request: Request) -> bool:
        return self._get_provider(settings).caches_prefix(request)

    async def send(self, settings: ProviderSettings, online: OnlineSettings,
                   requests: list[Request], warmed: bool) -> AsyncIterator[tuple[Any, ...]]:
        """Streams ("saved", results) for each group the executor persists, as it does, then
        ("done", every result by key, why the executor stopped sending or None)."""
        provider = self._get_provider(settings)
        saved: asyncio.Queue[list[Result]] = asyncio.Queue()
        executor = OnlineExecutor(_Warmed(provider) if warmed else provider,  # type: ignore[arg-type]
                                  online, saved.put_nowait, limiter=self._limiter)
        if self._abort is not None:
            executor.stop(self._abort)
        self._executors.add(executor)
        task = asyncio.ensure_future(executor.run(requests))
        try:
            while True:
                getter = asyncio.ensure_future(saved.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield ("saved", getter.result())
                    continue
                getter.cancel()
                break
            while not saved.empty():
                yield ("saved", saved.get_nowait())
            yield ("done", task.result(), executor._abort)  # why it stopped
        finally:
            self._executors.discard(executor)
            if not task.done():
                task.cancel()

    def stop(self, reason: str) -> None:
        self._abort = reason
        for executor in self._executors:
            executor.stop(reason)

    async def close(self) -> None:
        if self._provider is not None:
            await self._provider.aclose()


_REMOTE: dict[str, Any] = {}


def _remote(ray: Any, cls: type) -> Any:
    if cls.__name__ not in _REMOTE:
        _REMOTE[cls.__name__] = ray.remote(cls)
    return _REMOTE[cls.__name__]


class RaySender:
    """Sends one tier's requests from Ray workers: the driver's side, with `OnlineExecutor`'s
    interface (`run`, `stop`, `gate`) so `rounds` uses either alike."""

    def __init__(
        self,
        settings: ProviderSettings,
        online: OnlineSettings,
        persist: Callable[[list[Result]], None],
        on_progress: Callable[[Result], None] | None = None,
        claim: Callable[[list[Request]], set[str]] | None = None,
        *,
        make_provider: ProviderFactory,
        workers: int | None = None,
        address: str | None = None,
        budget: BudgetGate | None = None,
    ) -> None:
        """`make_provider` builds each worker's provider from `settings`, in the worker (the
        run passes `providers.registry.create_provider`). `budget`, when given, must hold each
        request's reservation before the request is handed to a worker (see
        `execute.online.BudgetGate`)."""
        self.settings = settings
        self._budget = budget
        self._blocked = False  # the budget held the last requests back: wait for answers
        self.online = online
        self._persist = persist
        self._on_progress = on_progress
        self.gate = ClaimGate(claim)
        self._abort: str | None = None
        self._warmed = False
        ray = self._ray = ensure_ray(address)
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", DEFAULT_WORKERS)))
        limited = online.rpm is not None or online.tpm is not None
        self.limiter = (
            _remote(ray, _LimiterActor).options(num_cpus=0).remote(online.rpm, online.tpm)
            if limited else None
        )
        self._actors = [
            _remote(ray, _SenderActor).options(num_cpus=0, scheduling_strategy="SPREAD")
            .remote(self.limiter, make_provider)
            for _ in range(max(1, workers))
        ]

    def stop(self, reason: str) -> None:
        """Send nothing more: requests not yet handed out fail with `not sent: reason`, and
        the workers start none of theirs."""
        if self._abort is None:
            self._abort = reason
            for actor in self._actors:
                actor.stop.remote(reason)

    async def run(self, requests: list[Request]) -> dict[str, Result]:
        """Send every request from the workers, persisting each answer as it arrives."""
        results: dict[str, Result] = {}
        self.gate.deferred = []
        queue = deque(requests)
        concurrency = max(1, self.online.concurrency)
        chunk = max(1, -(-concurrency // CHUNKS_PER_WORKER))
        out = [0] * len(self._actors)  # per worker: handed out, not yet persisted here
        moved = asyncio.Event()

        async def send(worker: int, batch: list[Request]) -> None:
            try:
                await self._send(worker, batch, results, out, moved)
            finally:
                moved.set()

        if queue and not self._warmed and self._abort is None:
            if await self._actors[0].caches_prefix.remote(self.settings, queue[0]):
                # One request alone first writes the prompt cache, as the local executor does.
                batch = self._take(queue, 1)
                if batch:
                    out[0] += 1
                    await send(0, batch)
            self._warmed = True

        tasks: set[asyncio.Task[None]] = set()
        failure: BaseException | None = None
        while True:
            if self._abort is not None:
                while queue:
                    self._not_sent(queue.popleft(), results)
            self._blocked = False
            for worker in range(len(self._actors)):
                while queue and failure is None and not self._blocked and (
                    concurrency - out[worker] >= min(chunk, len(queue))
                ):
                    batch = self._take(queue, min(chunk, concurrency - out[worker]))
                    if batch:
                        out[worker] += len(batch)
                        tasks.add(asyncio.ensure_future(send(worker, batch)))
            if not tasks:
                if queue and self._blocked:  # held back, and nothing in flight to make room
                    if self._abort is None and self._budget is not None:
                        self.stop(self._budget.stop_reason())
                    while queue:
                        self._not_sent(queue.popleft(), results)
                break
            moved.clear()
            waiter = asyncio.ensure_future(moved.wait())
            done, _ = await asyncio.wait({*tasks, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            for task in done & tasks:
                tasks.discard(task)
                if task.exception() is not None and failure is None:
                    # a worker was lost: persist what the others bring back, send no more
                    failure = task.exception()
        if failure is not None:
            raise failure
        return results

    def _take(self, queue: deque[Request], n: int) -> list[Request]:
        """Up to `n` requests off `queue`, claimed for this run (those another run holds go
        to `gate.deferred`)."""
        taken = [queue.popleft() for _ in range(min(n, len(queue)))]
        admitted = self.gate.admit(taken, stopped=self._abort is not None)
        if self._budget is None or self._abort is not None:
            return admitted
        for i, request in enumerate(admitted):
            if not self._budget.reserve(request):
                if i == 0 and not self._budget.holding:  # nothing in flight can make room
                    self.stop(self._budget.stop_reason())
                queue.extendleft(reversed(admitted[i:]))
                self._blocked = True
                return admitted[:i]
        return admitted

    async def _send(self, worker: int, batch: list[Request], results: dict[str, Result],
                    out: list[int], moved: asyncio.Event) -> None:
        """One chunk through one worker: each group of answers persisted as it streams in."""
        told: set[str] = set()
        freed = 0  # of `batch`, counted off `out[worker]`
        stream = self._actors[worker].send.options(num_returns="streaming").remote(
            self.settings, self.online, batch, self._warmed)
        try:
            async for ref in stream:
                message = await ref
                if message[0] == "saved":
                    saved: list[Result] = message[1]
                    self._persist(saved)  # before anything else uses them
                    for result in saved:
                        results[result.key] = result
                        told.add(result.key)
                        if self._on_progress is not None:
                            self._on_progress(result)
                    out[worker] -= len(saved)
                    freed += len(saved)
                    moved.set()
                else:
                    chunk_results: dict[str, Result] = message[1]
                    for key, result in chunk_results.items():
                        results[key] = result
                        if key not in told:  # failed, or not sent: nothing to persist
                            told.add(key)
                            if self._on_progress is not None:
                                self._on_progress(result)
                    if message[2] is not None:
                        self.stop(message[2])
        finally:
            out[worker] -= len(batch) - freed
            if self._budget is not None:  # settled already when its answer was persisted
                for request in batch:
                    self._budget.release(request.key)

    def _not_sent(self, request: Request, results: dict[str, Result]) -> None:
        assert self._abort is not None
        result = results[request.key] = not_sent(request, self._abort)
        if self._on_progress is not None:
            self._on_progress(result)

    async def close(self) -> None:
        """Close the workers' providers and end the actors."""
        with contextlib.suppress(Exception):  # a worker already gone has nothing to close
            await asyncio.wait_for(
                asyncio.gather(*(actor.close.remote() for actor in self._actors)), 10)
        for actor in [*self._actors, *([self.limiter] if self.limiter is not None else [])]:
            self._ray.kill(actor)
