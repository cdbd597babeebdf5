"""One round of answering: the response cache, earlier runs' near-duplicates, then each
tier's provider, online or in batches, within the budget; shared by a run's first round and a
cascade's later ones (`rounds`). Runs sharing one response cache claim what they send, so one
sends and the others wait and read its answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING

from batchopt.errors import ConfigError
from batchopt.execute.cache import ResponseCache
from batchopt.execute.claims import Claims, Holder, SharedCache, wait_seconds
from batchopt.execute.online import OnlineExecutor, OnlineSettings
from batchopt.execute.state import RunState, Submission
from batchopt.records import Request, Result
from batchopt.run import reuse
from batchopt.run.budget import Budget
from batchopt.run.calls import CallsRecord
from batchopt.run.model import Answers, Plan, RunObserver
from batchopt.run.tiers import Tier

if TYPE_CHECKING:
    from batchopt.engines.ray_send import RaySender
    from batchopt.execute.batch import BatchOutcome
    from batchopt.providers.base import Provider

__all__ = ["Round"]

log = logging.getLogger(__name__)


class Round:
    """Answers a list of requests: cache, earlier runs' near-duplicates, then each tier's
    provider, online or in batches; shared by a run's first round and a cascade's later ones."""

    def __init__(self, plan: Plan, cache: ResponseCache, observer: RunObserver,
                 state: RunState | None, answers: Answers, budget: Budget,
                 calls: CallsRecord) -> None:
        self.plan, self.cache, self.observer, self.state = plan, cache, observer, state
        self.answers, self.budget, self.calls = answers, budget, calls
        self.kinds: dict[str, str] = {}  # request key -> first | escalation | judge
        self.index = reuse.answered_index(plan, cache)
        self.reps = reuse.rep_ids(plan) if self.index is not None else {}
        self.sent: dict[str, Request] = {}  # what this invocation asked a provider, by key
        # runs on other run ids sharing this cache: what one of them is sending, the others wait
        self.claims = Claims(cache.path, plan.run_id) if cache.enabled else None
        self.told: set[str] = set()  # holders already named in a waiting message
        self.waiting: dict[str, Holder] = {}  # in another run's open batch when this one left

    def from_cache(self, key: str) -> Result | None:
        """The cached answer for `key`: this run's own spend if it paid for it (before a
        cut-off), else a cache hit."""
        cached = self.cache.get(key)
        if cached is not None and cached.paid_run_id == self.plan.run_id:
            return replace(cached, from_cache=False)
        return cached

    def tell_waiting(self, held: dict[str, Holder], how: str) -> None:
        """One line on stderr per other run this one waits for."""
        for holder, count in Counter(held.values()).items():
            if holder.run_id not in self.told:
                self.told.add(holder.run_id)
                log.warning("waiting: %d request(s) are being %s by %s, which shares this "
                            "response cache; their answers are read from it, not paid for again",
                            count, how, holder.describe())

    def persist(self, results: list[Result]) -> None:
        """Write `results` to the response cache, record the billed ones as confirmed calls and
        settle their budget reservations to what they cost."""
        self.cache.put_many(results, self.plan.run_id)
        fresh = [r for r in results if not r.from_cache]
        cost = self.calls.confirm(fresh, self.sent, self.kinds)
        self.budget.settle(results, cost)
        self.observer.spent(cost)

    def _not_sent(self, requests: list[Request], stop: str) -> None:
        """`requests` are not sent: the budget cannot pay for them."""
        answers = self.answers
        answers.budget_stop = answers.budget_stop or stop
        for request in requests:
            answers.unsent.add(request.key)
            answers.results[request.key] = Result(
                key=request.key, text=None, status="failed", attempts=0,
                error=f"not sent: {answers.budget_stop}",
            )

    def _reserve_batch(self, misses: list[Request]) -> list[Request]:
        """Batch mode: the misses whose most the budget can hold, reserved before any batch is
        submitted (those already in one of this run's batches always: they are billed
        anyway); the rest are not sent."""
        assert self.state is not None
        submitted = self.state.open_keys()
        fit, over = [], []
        for request in misses:
            force = request.key in submitted
            (fit if self.budget.reserve(request, force=force) else over).append(request)
        if over:
            self._not_sent(over, self.budget.stop_reason())
        return fit

    def answer(self, requests: list[Request], first: bool = False,
               kind: str = "first") -> list[Submission]:
        """Answer `requests` (`kind`: first | escalation | judge): from the cache, then (the
        `first` round) earlier runs' near-duplicates, then each tier's provider within the
        budget. Returns the batches still out."""
        misses = self._cached(requests, kind)
        if first and self.index is not None and misses:
            misses = reuse.reuse_past(self.plan, self.cache, self.index, self.reps, misses,
                                      self.answers)
        if not misses:
            return []
        if first:
            self.budget.check_estimate(misses)
        misses = self._affordable(misses)
        if not misses:
            return []
        pending = self._send(misses)
        self._held_back(misses)
        if self.index is not None and first:
            fresh = [r for r in misses if _fresh_answer(self.answers, r.key)]
            reuse.remember(self.plan, self.index, self.reps, fresh)
        return pending

    def _cached(self, requests: list[Request], kind: str) -> list[Request]:
        """Answer what the response cache holds; return the misses (each key once)."""
        answers, misses = self.answers, []
        for request in {r.key: r for r in requests}.values():
            if request.key in answers.results:
                continue
            self.kinds.setdefault(request.key, kind)
            cached = self.from_cache(request.key)
            if cached is None:
                misses.append(request)
                continue
            answers.results[request.key] = cached
            if not cached.from_cache and request.key not in self.calls.confirmed:
                # paid by an earlier invocation that stopped before recording the call
                self.budget.spent += self.calls.confirm([cached], {request.key: request},
                                                        self.kinds)
        return misses

    def _affordable(self, misses: list[Request]) -> list[Request]:
        """The misses the budget lets go out (batch mode: each reserved before any batch is
        submitted); the others are marked not sent."""
        if self.budget.limit is not None and self.plan.mode == "batch":
            return self._reserve_batch(misses)
        if self.budget.reached:  # a later round (escalations) the budget cannot pay for
            self._not_sent(misses, self.budget.stop_reason())
            return []
        return misses

    def _send(self, misses: list[Request]) -> list[Submission]:
        """Send the misses, each to its tier: through its batch API in batch mode (what a batch
        does not answer may go online), else online. Returns the batches still out."""
        plan, answers = self.plan, self.answers
        self.sent.update({r.key: r for r in misses})
        by_tier: dict[str, list[Request]] = {}
        for request in misses:
            by_tier.setdefault(answers.tier_of(plan, request).name, []).append(request)
        pending: list[Submission] = []
        online: dict[str, list[Request]] = by_tier
        reasons: dict[str, str] = {}
        if plan.mode == "batch":
            assert self.state is not None
            self.observer.stage("batch")
            known = {r.key: r for chain in answers.chain.values() for r in chain}
            outcomes = asyncio.run(_send_batches(plan, self.state, by_tier, known, self))
            online = {}
            for name, outcome in outcomes.items():
                answers.results.update(outcome.results)
                pending += outcome.pending
                self.waiting.update(outcome.waiting)
                reasons.update(outcome.reasons)
                if outcome.online:
                    online[name] = outcome.online
        for name, tier_misses in online.items():
            self.observer.stage("send")
            self.observer.sending(len(tier_misses))
            sent = asyncio.run(_send_online(plan, plan.tiers[name], tier_misses, self))
            answers.results.update({
                k: replace(r, retry_reason=reasons[k]) if k in reasons else r
                for k, r in sent.items()
            })
        return pending

    def _held_back(self, misses: list[Request]) -> None:
        """Mark what the executors held back for the budget this round as not sent."""
        answers = self.answers
        for request in misses:
            result = answers.results.get(request.key)
            if (result is not None and result.attempts == 0
                    and (result.error or "").startswith("not sent: budget")):
                answers.unsent.add(request.key)
                answers.budget_stop = answers.budget_stop or result.error[len("not sent: "):]


def _fresh_answer(answers: Answers, key: str) -> bool:
    result = answers.results.get(key)
    return result is not None and result.ok and not result.from_cache and result.attempts > 0


async def _send_online(
    plan: Plan, tier: Tier, misses: list[Request], round_: Round
) -> dict[str, Result]:
    """Send `misses` to `tier` online (from Ray workers on engine ray), waiting for those another
    run sharing the cache is sending; their results by key."""
    # engine ray: API calls go out from Ray workers; an in-process model stays in the driver
    on_ray = plan.engine == "ray" and not tier.traits.model_file
    provider = None if on_ray else plan.make_provider(tier.settings)
    executor = _online_executor(plan, tier, provider, round_)
    claims = round_.claims
    results: dict[str, Result] = {}
    try:
        todo, waiting = misses, []
        while todo or waiting:
            if todo:
                results.update(await executor.run(todo))
                waiting += executor.gate.deferred
                if claims is not None:
                    claims.release(executor.gate.take_claimed())
            todo, waiting = await _await_others(round_, waiting, results)
        round_.calls.settle_unsent(results, getattr(executor, "unbilled", set()))
        return results
    finally:
        if provider is not None:
            await provider.aclose()
        else:  # the Ray workers hold the providers
            await executor.close()  # type: ignore[union-attr]


def _online_executor(plan: Plan, tier: Tier, provider: Provider | None, round_: Round
                     ) -> OnlineExecutor | RaySender:
    """What sends a tier's requests online: `provider` in this process, else (None) the Ray
    workers; each persists answers as they come, stops at the budget and claims its keys."""
    profile = tier.profile
    online = OnlineSettings(
        concurrency=profile.concurrency,
        rpm=profile.rpm,
        tpm=profile.tpm,
        timeout_s=profile.timeout_s,
        max_attempts=profile.max_attempts,
    )
    budget = round_.budget

    def persist(results: list[Result]) -> None:
        round_.persist(results)
        if budget.reached:
            executor.stop(budget.stop_reason())

    claims = round_.claims
    ttl = 2 * profile.timeout_s * profile.max_attempts + 120.0  # a request's longest retry

    def claim(requests: list[Request]) -> set[str]:
        assert claims is not None
        held = claims.take([r.key for r in requests], ttl)
        round_.tell_waiting(held, "sent")
        return set(held)

    executor: OnlineExecutor | RaySender
    if provider is None:  # engine ray: the workers send, this process persists
        try:
            from batchopt.engines.ray_send import RaySender
        except ImportError as exc:
            from batchopt.engines import ray_missing

            raise ray_missing(exc) from exc
        executor = RaySender(tier.settings, online, persist, round_.observer.answered,
                             claim=claim if claims is not None else None,
                             make_provider=plan.make_provider,
                             address=plan.ray_address,
                             workers=plan.pipeline.config.execution.ray_workers,
                             budget=budget if budget.limit is not None else None)
    else:
        executor = OnlineExecutor(provider, online, persist, round_.observer.answered,
                                  claim=claim if claims is not None else None,
                                  budget=budget if budget.limit is not None else None,
                                  on_send=lambda sent: round_.calls.sent(sent, round_.kinds))
    return executor


async def _await_others(round_: Round, deferred: list[Request], results: dict[str, Result]
                        ) -> tuple[list[Request], list[Request]]:
    """Wait for requests another run is sending, until each is answered (read from the shared
    cache into `results`) or some claim lapsed or was given up unanswered. Returns those free
    to send now, and those still waited for."""
    claims, started = round_.claims, time.monotonic()
    waiting = {r.key: r for r in deferred}
    while waiting and claims is not None:
        for key in list(waiting):
            cached = round_.from_cache(key)
            if cached is not None:
                results[key] = cached
                round_.observer.answered(cached)
                del waiting[key]
        held = claims.holders(waiting)
        free = [request for key, request in waiting.items() if key not in held]
        if free or not waiting:
            return free, [request for key, request in waiting.items() if key in held]
        await asyncio.sleep(wait_seconds(started))
    return [], []


async def _send_batches(
    plan: Plan, state: RunState, by_tier: dict[str, list[Request]], known: dict[str, Request],
    round_: Round,
) -> dict[str, BatchOutcome]:
    """Each tier's misses through its batch API, the tiers side by side."""
    from batchopt.execute.batch import BatchExecutor, BatchSettings
    from batchopt.providers.batching import supports_batch

    execution = plan.pipeline.config.execution
    settings = BatchSettings(
        run_id=plan.run_id, rounds=execution.batch_rounds,
        poll_seconds=execution.poll_seconds, wait=plan.wait,
        online_fallback=plan.online_fallback,
    )

    async def one(name: str, misses: list[Request]) -> BatchOutcome:
        tier = plan.tiers[name]
        provider = plan.make_provider(tier.settings)
        try:
            if not supports_batch(provider):
                raise ConfigError(f"provider '{tier.profile.provider}' has no batch API")
            executor = BatchExecutor(
                provider, state, round_.persist, settings,  # type: ignore[arg-type]
                provider_name=tier.profile.provider, model=tier.profile.model,
                on_poll=round_.observer.batches,
                shared=None if round_.claims is None else SharedCache(
                    round_.claims, round_.from_cache, round_.tell_waiting),
            )
            return await executor.run(misses, known)
        finally:
            await provider.aclose()

    names = list(by_tier)
    outcomes = await asyncio.gather(*(one(name, by_tier[name]) for name in names))
    return dict(zip(names, outcomes, strict=True))

