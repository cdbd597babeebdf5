"""How a run's requests get answered: rounds of response cache, earlier runs' near-duplicates
and each tier's provider (online, or through its batch API); a cascade's later rounds; the
budget. A helper of `runner`, which prepares the plan before and writes outputs and ledger after.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from batchopt.errors import EXIT_PENDING, BudgetExceededError, ConfigError
from batchopt.execute.cache import ResponseCache
from batchopt.execute.claims import Claims, Holder, SharedCache, wait_seconds
from batchopt.execute.online import OnlineExecutor, OnlineSettings
from batchopt.execute.state import RunState, Submission
from batchopt.records import Request, Result
from batchopt.run import reuse
from batchopt.run.calls import CallsRecord
from batchopt.run.tiers import Tier

if TYPE_CHECKING:
    from batchopt.dedup.crossrun import PastAnswer
    from batchopt.engines.ray_send import RaySender
    from batchopt.execute.batch import BatchOutcome
    from batchopt.run.runner import Plan, RunObserver

log = logging.getLogger(__name__)


@dataclass
class RunPending:
    """A batch run whose batches are still with the provider: run again with the same id."""

    run_id: str
    pipeline: str
    batches: list[Submission]
    state_path: Path | None
    exit_code: int = EXIT_PENDING
    waiting: dict[str, int] = field(default_factory=dict)  # other run -> its batched requests
    tiers: dict[str, str] = field(default_factory=dict)  # batch tag -> the tier it serves


@dataclass
class Answers:
    """What `execute` found: results by request key, the earlier answers reused, and each
    group's requests in the order a cascade asked them (one unless it escalated)."""

    results: dict[str, Result]
    past: dict[str, PastAnswer] = field(default_factory=dict)  # by request key
    chain: dict[str, list[Request]] = field(default_factory=dict)  # by group_id
    escalations: dict[str, str] = field(default_factory=dict)  # group_id -> why it went up
    judged: dict[str, list[Request]] = field(default_factory=dict)  # group_id -> judge calls
    budget_stop: str | None = None  # why sending stopped at the budget, if it did
    unsent: set[str] = field(default_factory=set)  # request keys the budget kept from sending
    unverified: dict[str, str] = field(default_factory=dict)  # group_id -> why (budget)
    calls: list[dict[str, object]] = field(default_factory=list)  # the run id's calls record


class _Budget:
    """Money this run id has spent against `budget.max_usd`: what its calls record says it
    paid (earlier invocations' calls and this one's, as they are confirmed). A request is sent
    only once its most (`max_request_cost`) is reserved within what is left; the reservation
    is settled to the actual cost when its answer is persisted, or released when it fails
    unbilled."""

    def __init__(self, plan: Plan, calls: CallsRecord) -> None:
        budget = plan.pipeline.config.budget
        self.limit = budget.max_usd if budget is not None else None
        # calls sent but never answered may be billed: the cap counts their estimate
        self.before = calls.spent() + calls.unconfirmed()
        self.spent = self.before
        self.held: dict[str, float] = {}  # request key -> its reservation, while in flight
        self._plan = plan

    def settle(self, results: list[Result], cost: float) -> None:
        """`results` were persisted and recorded as calls costing `cost` in all: settle their
        reservations to it."""
        for result in results:
            self.held.pop(result.key, None)
        self.spent += cost

    @property
    def reached(self) -> bool:
        return self.limit is not None and self.spent >= self.limit

    @property
    def left(self) -> float:
        """What is left to reserve (infinite without a budget)."""
        if self.limit is None:
            return float("inf")
        return self.limit - self.spent - sum(self.held.values())

    def most(self, request: Request, *, batch: bool | None = None) -> float:
        from batchopt.plan.estimate import max_request_cost

        batch = self._plan.mode == "batch" if batch is None else batch
        return max_request_cost(self._plan, request, batch=batch)

    def reserve(self, request: Request, *, batch: bool | None = None,
                force: bool = False) -> bool:
        """Hold `request`'s most against the budget; False (nothing held) when what is left
        cannot cover it. `force` holds it anyway (a request already submitted in a batch)."""
        if self.limit is None or request.key in self.held:  # held already (batch mode)
            return True
        cost = self.most(request, batch=batch)
        if not force and cost > self.left + 1e-12:
            return False
        self.held[request.key] = cost
        return True

    def release(self, key: str) -> None:
        """Give back a reservation whose request was not billed (failed, or not sent)."""
        self.held.pop(key, None)

    @property
    def holding(self) -> bool:
        return bool(self.held)

    def stop_reason(self) -> str:
        assert self.limit is not None
        return (f"budget reached: spent ${self.spent:,.4f} of ${self.limit:,.4f}, the next "
                "request could pass it")

    def estimate(self, misses: list[Request]) -> float:
        """This run's spend so far plus what sending `misses` should cost, every call counted
        as `batchopt plan` counts it (escalations and judge calls too: `estimated_cost`)."""
        from batchopt.plan.estimate import estimated_cost

        return self.spent + estimated_cost(self._plan, {r.key for r in misses})

    def check_estimate(self, misses: list[Request]) -> None:
        """Refuse to start (exit 3) when what is left to send is estimated over the budget."""
        if self.limit is None:
            return
        estimate = self.estimate(misses)
        if estimate > self.limit:
            already = (f" (${self.before:,.4f} of it already spent by earlier invocations of "
                       "this run id)" if self.before else "")
            raise BudgetExceededError(
                f"budget.max_usd: this run is estimated at ${estimate:,.4f}{already} (as "
                f"`batchopt plan` estimates it) against a budget of ${self.limit:,.4f}; "
                "nothing was sent"
            )


def execute(
    plan: Plan,
    cache: ResponseCache,
    observer: RunObserver | None = None,
    state: RunState | None = None,
) -> Answers | RunPending:
    """Answer every request from the cache (exact, then semantic across runs) or the provider:
    online, or through its batch API (then `RunPending` while batches are still out). A
    cascade then asks the next tier for each answer its validators reject."""
    if observer is None:
        from batchopt.run.runner import RunObserver

        observer = RunObserver()
    answers = Answers(results={}, chain={g: [r] for g, r in plan.requests.items()})
    calls = CallsRecord(plan, state)
    budget = _Budget(plan, calls)
    round_ = _Round(plan, cache, observer, state, answers, budget, calls)
    try:  # the Requests made once (plan.requests makes them when asked), shared with `chain`
        pending = round_.answer([chain[0] for chain in answers.chain.values()], first=True)
        if plan.strategy == "cascade":
            pending += _cascade(plan, round_)
    finally:
        if round_.claims is not None:
            round_.claims.close()
    if pending or round_.waiting:
        waiting = Counter(holder.run_id for holder in round_.waiting.values())
        # one batch once: a cascade step's judge calls and escalations may go to one tier, and
        # each sending reports that tier's open batches
        pending = list({sub.tag: sub for sub in pending}.values())
        makers = {(t.settings.provider, t.settings.model): name
                  for name, t in reversed(plan.tiers.items())}  # the cheapest tier of a model
        return RunPending(plan.run_id, plan.pipeline.config.name, pending,
                          state.path if state else None, waiting=dict(waiting),
                          tiers={s.tag: makers.get((s.provider, s.model), "?") for s in pending})
    answers.calls = calls.rows()
    return answers


def _cascade(plan: Plan, round_: _Round) -> list[Submission]:
    """Ask one tier up for every answer the validators reject, as far as the config allows."""
    from batchopt.routing import build_validators, judge_of, validate
    from batchopt.run.tiers import escalated_requests, judge_request_factory

    routing = plan.pipeline.config.routing
    assert routing is not None
    validators = build_validators(routing.validators, plan.pipeline.config.prompt.json_schema)
    judge = judge_of(validators)
    names = list(plan.tiers)
    answers, pending = round_.answers, []
    for step in range(1, routing.escalation_limit + 1):
        rejected: dict[str, str] = {}
        to_judge: dict[str, Request] = {}
        for group, chain in answers.chain.items():
            result = answers.results.get(chain[-1].key)
            if len(chain) != step or result is None:  # further up already, or still out
                continue
            verdict = validate(validators, chain[-1], result)
            if not verdict.ok:
                rejected[group] = _why(verdict)
            elif judge is not None:
                make = judge_request_factory(plan.tiers[judge.tier])
                to_judge[group] = judge.judge_request(chain[-1], result, make)
        if to_judge:  # the answers every local check passed go to the judge, one call each
            assert judge is not None
            for group, request in to_judge.items():
                plan.key_tier[request.key] = judge.tier
                answers.judged.setdefault(group, []).append(request)
            pending += round_.answer(list(to_judge.values()), kind="judge")
            for group, request in to_judge.items():
                if request.key in answers.unsent:  # the budget stopped it: keep the answer
                    answers.judged[group].remove(request)
                    answers.unverified[group] = "budget"
                    continue
                judged = answers.results.get(request.key)
                verdict = judge.read_judgement(judged) if judged is not None else None
                if verdict is not None and not verdict.ok:
                    rejected[group] = _why(verdict)
        if not rejected:
            break
        upper = escalated_requests(
            plan.rows, list(rejected), plan.tiers[names[step]],
            plan.pipeline.config.input.id_column,
        )
        before = dict(answers.escalations)
        for group, request in upper.items():
            plan.key_tier[request.key] = names[step]
            answers.chain[group].append(request)
            answers.escalations[group] = (
                f"{answers.escalations[group]}; " if group in answers.escalations else ""
            ) + f"{names[step - 1]} rejected ({rejected[group]})"
        pending += round_.answer(list(upper.values()), kind="escalation")
        for group, request in upper.items():
            if request.key in answers.unsent:  # the budget stopped it: keep the answer below
                answers.chain[group].pop()
                if group in before:
                    answers.escalations[group] = before[group]
                else:
                    answers.escalations.pop(group, None)
                answers.unverified[group] = "budget"
    return pending


def _why(verdict: object) -> str:
    name, reason = getattr(verdict, "validator", None), getattr(verdict, "reason", None)
    return f"{name}: {reason}" if reason else str(name)


class _Round:
    """Answers a list of requests: cache, earlier runs' near-duplicates, then each tier's
    provider, online or in batches; shared by a run's first round and a cascade's later ones."""

    def __init__(self, plan: Plan, cache: ResponseCache, observer: RunObserver,
                 state: RunState | None, answers: Answers, budget: _Budget,
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
        plan, answers = self.plan, self.answers
        misses: list[Request] = []
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
        if first and self.index is not None and misses:
            misses = reuse.reuse_past(plan, self.cache, self.index, self.reps, misses, answers)
        if not misses:
            return []
        if first:
            self.budget.check_estimate(misses)
        if self.budget.limit is not None and plan.mode == "batch":
            misses = self._reserve_batch(misses)
        elif self.budget.reached:  # a later round (escalations) the budget cannot pay for
            self._not_sent(misses, self.budget.stop_reason())
            misses = []
        if not misses:
            return []
        self.sent.update({r.key: r for r in misses})
        by_tier: dict[str, list[Request]] = {}
        for request in misses:
            by_tier.setdefault(plan.tier_of(request).name, []).append(request)
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
        for request in misses:  # what the executors held back for the budget this round
            result = answers.results.get(request.key)
            if (result is not None and result.attempts == 0
                    and (result.error or "").startswith("not sent: budget")):
                answers.unsent.add(request.key)
                answers.budget_stop = answers.budget_stop or result.error[len("not sent: "):]
        if self.index is not None and first:
            fresh = [r for r in misses if _fresh_answer(answers, r.key)]
            reuse.remember(plan, self.index, self.reps, fresh)
        return pending


def _fresh_answer(answers: Answers, key: str) -> bool:
    result = answers.results.get(key)
    return result is not None and result.ok and not result.from_cache and result.attempts > 0


async def _send_online(
    plan: Plan, tier: Tier, misses: list[Request], round_: _Round
) -> dict[str, Result]:
    from batchopt.providers.registry import create_provider

    profile = tier.profile
    online = OnlineSettings(
        concurrency=profile.concurrency,
        rpm=profile.rpm,
        tpm=profile.tpm,
        timeout_s=profile.timeout_s,
        max_attempts=profile.max_attempts,
    )
    # engine ray: API calls go out from Ray workers; an in-process model stays in the driver
    on_ray = plan.engine == "ray" and profile.provider != "local"
    provider = None if on_ray else create_provider(tier.settings)
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

    results: dict[str, Result] = {}
    executor: OnlineExecutor | RaySender
    if provider is None:  # engine ray: the workers send, this process persists
        try:
            from batchopt.engines.ray_send import RaySender
        except ImportError as exc:
            from batchopt.engines import ray_missing

            raise ray_missing(exc) from exc
        executor = RaySender(tier.settings, online, persist, round_.observer.answered,
                             claim=claim if claims is not None else None,
                             make_provider=create_provider,
                             address=plan.ray_address,
                             workers=plan.pipeline.config.execution.ray_workers,
                             budget=budget if budget.limit is not None else None)
    else:
        executor = OnlineExecutor(provider, online, persist, round_.observer.answered,
                                  claim=claim if claims is not None else None,
                                  budget=budget if budget.limit is not None else None,
                                  on_send=lambda sent: round_.calls.sent(sent, round_.kinds))
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


async def _await_others(round_: _Round, deferred: list[Request], results: dict[str, Result]
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
    round_: _Round,
) -> dict[str, BatchOutcome]:
    """Each tier's misses through its batch API, the tiers side by side."""
    from batchopt.execute.batch import BatchExecutor, BatchSettings
    from batchopt.providers.batching import supports_batch
    from batchopt.providers.registry import create_provider

    execution = plan.pipeline.config.execution
    settings = BatchSettings(
        run_id=plan.run_id, rounds=execution.batch_rounds,
        poll_seconds=execution.poll_seconds, wait=plan.wait,
        online_fallback=plan.online_fallback,
    )

    async def one(name: str, misses: list[Request]) -> BatchOutcome:
        tier = plan.tiers[name]
        provider = create_provider(tier.settings)
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


def result_cost(plan: Plan, tier: Tier, result: Result) -> float:
    """What one bought result cost, at its tier's price (the batch price for batch rows)."""
    if not (result.ok or result.usage.input_tokens > 0):
        return 0.0
    return plan.prices.cost(tier.price, result.usage, batch=result.mode == "batch",
                            latency_ms=result.latency_ms)
