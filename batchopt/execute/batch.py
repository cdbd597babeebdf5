"""Send requests through a provider's batch API, as a state machine that outlives its process.

Each call of `BatchExecutor.run` moves the run forward from where its `RunState` says it
stands, in this order:

1. adopt: a submission recorded but without a batch id (the create call timed out, or the
   process died inside it) is looked up at the provider: by its tag where batches carry
   metadata (OpenAI), else by what the batch holds (Anthropic: its requests' custom_ids, created
   when the submission began). Found, the oldest such batch not already this run's is adopted;
   not found, the submission is marked lost and its rows are sent again. A batch that may be it
   but is still running (so what it holds cannot be read) is waited for: the submission stays
   open, nothing is sent again, and the next pass looks again; only once
   `ADOPT_PATIENCE_SECONDS` have passed (a batch ends within 24 h) is it given up as lost;
2. collect: every batch still with the provider is polled; an ended, expired or cancelled one
   has its rows read, each answer persisted (response cache) before its outcome is recorded;
3. submit: requests that are neither answered nor in an open batch go out in new batches
   (split to the provider's limits), each recorded before and right after the create call;
   a request that already went through `rounds` batches fails instead, and with
   `online_fallback` (mode auto) a request an earlier batch did not answer is handed back to be
   sent online;
4. with `wait`, sleep and repeat until no batch is open; else return what is still pending.

Nothing is paid twice: an answered request is in the cache and never sent again, a request in
an open batch is waited for, not resubmitted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from batchopt.errors import NoBatchAPIError, TerminalProviderError, TransientProviderError
from batchopt.execute.claims import Holder, SharedCache
from batchopt.execute.state import OPEN_STATES, RunState, Submission
from batchopt.providers.batching import (
    BatchesUnverified,
    BatchProvider,
    BatchStatus,
    split_for_limits,
)
from batchopt.records import Request, Result
from batchopt.services.structured import check_structured

_PERSIST_EVERY = 500  # rows read from a batch's results per transaction
# Results downloads of one batch that may break off in a row before a waiting run stops
# waiting (exit 75, run again later) rather than loop on a provider that cannot serve them.
READ_TRIES = 8
log = logging.getLogger(__name__)
_MISSING_OUTCOME = {"expired": "expired", "cancelled": "canceled"}
# How long a submission whose batch may exist but cannot be checked yet is waited for: a batch
# ends (or expires) within 24 h of its creation, after which what it holds can be read.
ADOPT_PATIENCE_SECONDS = 25 * 3600.0


@dataclass(frozen=True)
class BatchSettings:
    """How a run uses the batch API."""

    run_id: str
    rounds: int = 3
    poll_seconds: float = 60.0
    wait: bool = True
    online_fallback: bool = False


@dataclass
class BatchOutcome:
    """What one `run` call achieved."""

    results: dict[str, Result] = field(default_factory=dict)  # answered or failed for good
    pending: list[Submission] = field(default_factory=list)  # batches still with the provider
    online: list[Request] = field(default_factory=list)  # auto: send these online now
    reasons: dict[str, str] = field(default_factory=dict)  # why each of those left its batch
    waiting: dict[str, Holder] = field(default_factory=dict)  # in another run's open batch


class BatchExecutor:
    """Moves a run's batches forward; `persist` writes answers durably before they are used."""

    def __init__(
        self,
        provider: BatchProvider,
        state: RunState,
        persist: Callable[[list[Result]], None],
        settings: BatchSettings,
        *,
        provider_name: str,
        model: str,
        on_poll: Callable[[list[Submission], dict[str, BatchStatus]], None] | None = None,
        shared: SharedCache | None = None,
    ) -> None:
        """`shared`, when given, keeps runs on other run ids that share the response cache from
        batching the same requests: each claims what it submits, and waits for (reads from the
        cache) what another run has in an open batch."""
        self.provider = provider
        self.state = state
        self.persist = persist
        self.settings = settings
        self.provider_name = provider_name
        self.model = model
        self.on_poll = on_poll
        self.shared = shared
        self._misses: dict[str, Request] = {}
        self._claimed: set[str] = set()
        self._broken: dict[str, int] = {}  # batch id -> results downloads broken off in a row

    async def run(self, misses: list[Request], known: dict[str, Request]) -> BatchOutcome:
        """Advance the run for `misses` (requests with no answer yet); `known` holds every
        request of the plan by key, to read back the results of batches sent for them."""
        self._misses = {r.key: r for r in misses}
        outcome = BatchOutcome()
        while True:
            await self._adopt()
            statuses = await self._collect(known, outcome)
            self._settle_waiting(outcome)
            todo = self._claim(self._to_send(outcome), outcome)
            rejected = await self._submit(todo) if todo else False
            open_ = self._own(OPEN_STATES)
            self._release_settled()
            if self.on_poll is not None:
                self.on_poll(self.state.submissions(), statuses)
            if rejected:  # at once: a refused create leaves its rows neither open nor answered
                continue
            if (not open_ and not outcome.waiting) or not self.settings.wait or self._stalled():
                outcome.pending = open_
                return outcome
            await asyncio.sleep(self.settings.poll_seconds)

    def _own(self, states: tuple[str, ...]) -> list[Submission]:
        """This executor's submissions in `states`: those it made (its provider and model). The
        tiers of a run move side by side on one run state; each polls, reads and adopts only its
        own batches (another provider's batch id means nothing to this one's API, and a batch
        read twice would be counted twice)."""
        return [s for s in self.state.submissions(states)
                if s.provider == self.provider_name and s.model == self.model]

    # ---- steps ------------------------------------------------------------------------------

    async def _adopt(self) -> None:
        submitting = self._own(("submitting",))
        if not submitting:
            return
        taken = {s.batch_id for s in self.state.submissions() if s.batch_id}
        for sub in submitting:
            try:
                found = await self.provider.find_batches(
                    self._tag(sub.tag), keys=self.state.keys_of(sub.tag), since=sub.created_at
                )
            except BatchesUnverified as exc:
                if time.time() - sub.created_at < ADOPT_PATIENCE_SECONDS:
                    # A batch that may be this one is still running. Waiting is cheaper than
                    # paying twice: the submission stays 'submitting' (its rows are neither
                    # sent again nor given up) and the next pass looks again.
                    continue
                found = exc.verified  # past any batch's lifetime: still running is not ours
            except TransientProviderError:
                continue  # the lookup broke off: the next pass looks again, nothing is sent
            # Newest first: adopt the oldest not already recorded by this run. Two batches
            # holding the same requests mean the same keys went out twice; the other is left
            # for the submission that sent it, whose reading keeps its (paid) answers too.
            fresh = [batch_id for batch_id in found if batch_id not in taken]
            if fresh:
                self.state.record_batch_id(sub.tag, fresh[-1])
                taken.add(fresh[-1])
            else:
                self.state.mark_lost(
                    sub.tag,
                    "the create call did not finish and the provider has no batch created then "
                    "with this tag or these requests"
                    + await self._foreign(sub, exclude=taken | set(found)),
                )

    async def _foreign(self, sub: Submission, exclude: set[str | None]) -> str:
        """Batches that carry this submission's run id and tag but another run state's id (a
        run with the same run id elsewhere): named, never adopted."""
        tag = self._tag(sub.tag)
        if "batchopt_state" not in tag:
            return ""
        tag.pop("batchopt_state")
        try:
            found = await self.provider.find_batches(tag, keys=self.state.keys_of(sub.tag),
                                                     since=sub.created_at)
        except (BatchesUnverified, TransientProviderError):
            return ""
        found = [batch_id for batch_id in found if batch_id not in exclude]
        if not found:
            return ""
        log.warning("batch(es) %s carry run %s's tag %s but another run state made them: "
                    "not adopted", ", ".join(found), self.settings.run_id, sub.tag)
        return (f" (not adopted: {', '.join(found)}, with this run id's tag but made by another "
                "run's state, e.g. the same run id with another cache folder)")

    async def _collect(
        self, known: dict[str, Request], outcome: BatchOutcome
    ) -> dict[str, BatchStatus]:
        statuses: dict[str, BatchStatus] = {}
        for sub in self._own(("pending",)):
            assert sub.batch_id is not None
            try:
                status = await self.provider.poll_batch(sub.batch_id)
                statuses[sub.batch_id] = status
                if not status.done:
                    if status.raw_status != sub.raw_status:
                        self.state.set_raw_status(sub.tag, status.raw_status)
                    continue
                if status.state == "failed":
                    self.state.mark_failed(sub.tag, status.raw_status, status.error)
                    continue
                await self._read_results(sub, status, known, outcome)
                self._broken.pop(sub.batch_id, None)
            except TransientProviderError as exc:
                # A poll or a results download that broke off: the batch stays pending and is
                # read again, from the top, on the next pass (what was persisted stays put).
                self._broken[sub.batch_id] = self._broken.get(sub.batch_id, 0) + 1
                if self._broken[sub.batch_id] == READ_TRIES:
                    log.warning(
                        "warning: batch %s: %d polls or results downloads in a row broke off "
                        "(last: %s); stopped waiting for it. What was read is kept; run again "
                        "with --run-id %s later", sub.batch_id, READ_TRIES, exc,
                        self.settings.run_id)
                continue
        return statuses

    async def _read_results(
        self,
        sub: Submission,
        status: BatchStatus,
        known: dict[str, Request],
        outcome: BatchOutcome,
    ) -> None:
        assert sub.batch_id is not None
        keys = self.state.keys_of(sub.tag)
        requests = [known.get(key) or self._stand_in(key) for key in keys]
        by_key = {r.key: r for r in requests}
        history = self.state.history()
        answers: list[Result] = []
        outcomes: list[tuple[str, str, str | None]] = []

        def flush() -> None:
            self.persist(answers)  # durable before the outcome says "succeeded"
            self.state.record_outcomes(sub.tag, outcomes)
            for result in answers:
                if result.key in self._misses:
                    outcome.results[result.key] = result
            answers.clear()
            outcomes.clear()

        async for row in self.provider.fetch_batch_results(sub.batch_id, requests):
            if row.key is None:
                continue
            if row.kind == "succeeded" and row.result is not None:
                past = history.get(row.key, [])
                notes = [note for _, note in past if note]
                result = replace(
                    check_structured(by_key[row.key], row.result),
                    mode="batch",
                    batch_id=sub.batch_id,
                    attempts=max(1, len(past)),
                    retry_reason="; ".join(notes) or None,
                )
                answers.append(result)
                outcomes.append((row.key, "succeeded", None))
            else:
                outcomes.append((row.key, row.kind, row.error))
            if len(outcomes) >= _PERSIST_EVERY:
                flush()
        flush()
        self.state.mark_collected(
            sub.tag, status.raw_status, _MISSING_OUTCOME.get(status.state, "errored")
        )

    def _to_send(self, outcome: BatchOutcome) -> list[Request]:
        """Misses to put in a new batch: not answered, not in an open batch, not going online,
        not out of rounds (those fail here)."""
        open_keys = self.state.open_keys()
        history = self.state.history()
        online = {r.key for r in outcome.online}
        todo: list[Request] = []
        for key, request in self._misses.items():
            if (key in outcome.results or key in open_keys or key in online
                    or key in outcome.waiting):
                continue
            past = history.get(key, [])
            note = past[-1][1] if past else None
            if past and self.settings.online_fallback:
                outcome.online.append(request)
                outcome.reasons[key] = note or "not answered by its batch"
            elif len(past) >= self.settings.rounds:
                outcome.results[key] = Result(
                    key=key,
                    text=None,
                    status="failed",
                    attempts=len(past),
                    mode="batch",
                    error=f"no answer after {len(past)} batch(es); last: {note}",
                    retry_reason=note,
                )
            else:
                todo.append(request)
        return todo

    async def _submit(self, requests: list[Request]) -> bool:
        """Create batches for `requests`; whether the provider refused any create outright."""
        rejected = False
        self.state.state_id()  # made before this state's first submission (see state_id)
        round_ = self.state.next_round()
        chunks = split_for_limits(
            requests, self.provider.batch_limits, self.provider.batch_line_bytes
        )
        for i, chunk in enumerate(chunks):
            tag = f"{self.settings.run_id}.r{round_}.{i}"
            self.state.begin_submission(
                tag, round_, self.provider_name, self.model, [r.key for r in chunk]
            )
            try:
                batch_id = await self.provider.submit_batch(chunk, self._tag(tag))
            except NoBatchAPIError as exc:  # nothing was created: say so, and stop the run
                self.state.mark_failed(tag, "rejected", str(exc))
                raise
            except TerminalProviderError as exc:
                self.state.mark_failed(tag, "rejected", str(exc))
                rejected = True
                continue
            except TransientProviderError:
                # The batch may exist or not: the submission stays 'submitting' and the next
                # pass looks for it (by its tag or its requests) before anything is sent again.
                continue
            self.state.record_batch_id(tag, batch_id)
        return rejected

    def _stalled(self) -> bool:
        return any(count >= READ_TRIES for count in self._broken.values())

    # ---- runs sharing the cache --------------------------------------------------------------

    def _claim(self, todo: list[Request], outcome: BatchOutcome) -> list[Request]:
        """Claim `todo` for this run; what another run holds is waited for, not submitted."""
        if self.shared is None or not todo:
            return todo
        ttl = ADOPT_PATIENCE_SECONDS + 3600.0  # a batch's lifetime, and then some
        held = self.shared.claims.take([r.key for r in todo], ttl, state=self.state.path)
        if held:
            outcome.waiting.update(held)
            self.shared.on_wait(held, "sent in a batch")
        mine = [r for r in todo if r.key not in held]
        self._claimed |= {r.key for r in mine}
        return mine

    def _settle_waiting(self, outcome: BatchOutcome) -> None:
        """Requests waited for that another run got answered (read from the cache), and those
        whose claim lapsed or was given up (sent by this run next)."""
        if self.shared is None or not outcome.waiting:
            return
        for key in list(outcome.waiting):
            result = self.shared.lookup(key)
            if result is not None:
                outcome.results[key] = result
                del outcome.waiting[key]
        held = self.shared.claims.holders(outcome.waiting)
        outcome.waiting = {key: h for key, h in outcome.waiting.items() if key in held}

    def _release_settled(self) -> None:
        """Give up the claims on requests no longer in an open batch of this run."""
        if self.shared is None or not self._claimed:
            return
        settled = self._claimed - self.state.open_keys()
        self.shared.claims.release(settled)
        self._claimed -= settled

    # ---- helpers ----------------------------------------------------------------------------

    def _tag(self, tag: str) -> dict[str, str]:
        mine = self.state.state_id()
        return {"batchopt_run": self.settings.run_id, "batchopt_tag": tag,
                **({"batchopt_state": mine} if mine else {})}

    def _stand_in(self, key: str) -> Request:
        """A request this plan no longer has (the input changed since it was sent): enough to
        read its answer back and keep it, since it was paid for."""
        return Request(
            key=key, provider=self.provider_name, model=self.model, system="", user="", max_tokens=0
        )
