"""The billed-calls record of one run id: one entry per call it sent, the one source of money.

Each entry names the request key, tier, provider, model, kind (first, escalation, judge,
retry), mode (online or batch), the usage the provider billed and its cost priced once by
`cost.result_cost`, and a status:

- `sent_unconfirmed`: journaled before it was sent (online: by the executor; batch: when the
  submission is recorded), and no answer recorded since (a kill, a cut connection). It may have
  been billed: the ledger shows its estimate (`cost.request_cost`) as `unconfirmed_usd`;
- `confirmed`: its answer was persisted, with the usage and cost billed;
- `not_billed`: the provider answered with an error, or the batch row never ran.

It lives in the run's state (`execute.state`, table `calls`), written when the answer is written
to the response cache, so every invocation of one run id adds to the same record and nothing is
counted twice. The ledger's token and cost columns, the run summary and the budget's spent sum it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from batchopt.records import Request, Result
from batchopt.run.cost import request_cost, result_cost

if TYPE_CHECKING:
    from batchopt.execute.state import RunState
    from batchopt.run.model import Plan
    from batchopt.run.tiers import Tier

TierOf = Callable[[Request], "Tier"]  # the tier a request was asked of (`Answers.tier_of`)

UNCONFIRMED, CONFIRMED, NOT_BILLED = "sent_unconfirmed", "confirmed", "not_billed"


class CallsRecord:
    """The calls of one run id, kept in its run state (in memory when there is none)."""

    def __init__(self, plan: Plan, state: RunState | None, tier_of: TierOf | None = None
                 ) -> None:
        self._plan, self._state, self._asked_of = plan, state, tier_of
        self._memory: list[dict[str, Any]] = []
        self.confirmed = {c["key"] for c in self.rows() if c["status"] == CONFIRMED}

    def _tier_of(self, request: Request) -> Tier:
        """The tier `request` was asked of (the plan's, unless the run added it)."""
        return (self._asked_of or self._plan.tier_of)(request)

    def rows(self) -> list[dict[str, Any]]:
        """Every call of this run id, oldest first."""
        return self._state.calls() if self._state is not None else list(self._memory)

    def spent(self) -> float:
        """What the confirmed calls cost: what this run id has paid."""
        return sum(c["cost_usd"] for c in self.rows() if c["status"] == CONFIRMED)

    def unconfirmed(self) -> float:
        """The estimated cost of online calls sent but never answered (a kill, a cut
        connection): maybe billed, so the budget counts them. (A batch still out is not lost:
        it is confirmed or found unbilled when collected.)"""
        return sum(c["estimated_usd"] or 0.0 for c in self.rows()
                   if c["status"] == UNCONFIRMED and c["mode"] == "online")

    def sent(self, requests: list[Request], kinds: dict[str, str]) -> None:
        """Journal online requests before they are sent."""
        now = time.time()
        rows = [{
            "key": r.key, "tier": self._tier_of(r).name, "provider": r.provider,
            "model": r.model, "kind": self._kind(r.key, kinds),
            "estimated_usd": request_cost(self._plan, r, batch=False, tier=self._tier_of(r)),
            "sent_at": now,
        } for r in requests]
        if self._state is not None:
            self._state.calls_sent(rows)
        else:
            self._memory += [{**row, "mode": "online", "status": UNCONFIRMED} for row in rows]

    def settle_unsent(self, results: dict[str, Result], unbilled: set[str]) -> None:
        """After an online round: forget the journaled requests never sent (`attempts` 0), mark
        those the provider answered with an error (`unbilled`) not billed."""
        unsent = [k for k, r in results.items() if r.attempts == 0 and not r.from_cache]
        refused = [k for k in unbilled if k in results and not results[k].ok]
        if self._state is not None:
            self._state.calls_unsent(unsent)
            self._state.calls_not_billed(refused)
            return
        for keys, drop in ((unsent, True), (refused, False)):
            for key in keys:
                found = [c for c in self._memory if c["key"] == key and c["mode"] == "online"
                         and c["status"] == UNCONFIRMED]
                if found and drop:
                    self._memory.remove(found[-1])
                elif found:
                    found[-1]["status"] = NOT_BILLED

    def confirm(self, results: list[Result], requests: dict[str, Request],
                kinds: dict[str, str]) -> float:
        """Record the billed answers in `results` (just persisted); returns what they cost."""
        rows, total = [], 0.0
        for result in results:
            request = requests.get(result.key)
            if request is None or not (result.ok or result.usage.input_tokens > 0):
                continue
            tier = self._tier_of(request)
            cost = result_cost(self._plan, tier, result)
            total += cost
            rows.append({
                "key": result.key, "tier": tier.name, "provider": request.provider,
                "model": request.model, "mode": result.mode,
                "kind": "retry" if result.retry_reason else self._kind(result.key, kinds),
                **result.usage.to_dict(), "cost_usd": cost, "request_id": result.request_id,
                "batch_id": result.batch_id,
            })
            self.confirmed.add(result.key)
        if not rows:
            return 0.0
        if self._state is not None:
            self._state.calls_confirmed(rows)
        else:
            for row in rows:
                found = [c for c in self._memory if c["key"] == row["key"]
                         and c["mode"] == row["mode"] and c["status"] == UNCONFIRMED]
                if found:
                    found[-1].update(row, status=CONFIRMED)
                else:
                    self._memory.append({**row, "status": CONFIRMED})
        return total

    def _kind(self, key: str, kinds: dict[str, str]) -> str:
        return kinds.get(key, "first")


OTHER_TOKENS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens")


def _owners(groups: dict[str, list[Request]]) -> dict[str, tuple[str, Request]]:
    """Request key -> (the first group that asked it, that request)."""
    owner: dict[str, tuple[str, Request]] = {}
    for group, requests in groups.items():
        for request in requests:
            owner.setdefault(request.key, (group, request))
    return owner


def by_group(plan: Plan, groups: dict[str, list[Request]], finals: dict[str, Result],
             calls: list[dict[str, Any]], tier_of: TierOf | None = None
             ) -> dict[str, dict[str, float]]:
    """What each group's calls in the record add to its final answer: `groups` maps a group to
    all its requests (the tiers a cascade asked, judge calls), `finals` to its final result.

    Per group: `earlier_attempts_usd` and `other_<token column>` (the confirmed calls other than
    the one that bought the final answer), `unconfirmed_usd` (the estimates of calls sent but
    never confirmed). A call is counted for the first group that asked its key; `tier_of`:
    the tier each request was asked of (default: the plan's)."""
    tier_of = tier_of or plan.tier_of
    owner = _owners(groups)
    own = {group: result.key for group, result in finals.items()
           if not result.from_cache and (result.ok or result.usage.input_tokens > 0)}
    sums: dict[str, dict[str, float]] = {}
    for call in calls:
        if call["key"] not in owner or call["status"] == NOT_BILLED:
            continue
        group, request = owner[call["key"]]
        into = sums.setdefault(group, dict.fromkeys(
            ("earlier_attempts_usd", "unconfirmed_usd", *(f"other_{t}" for t in OTHER_TOKENS)),
            0.0))
        if call["status"] == UNCONFIRMED:
            estimate = call["estimated_usd"]
            if estimate is None:
                estimate = request_cost(plan, request, batch=call["mode"] == "batch",
                                        tier=tier_of(request))
            into["unconfirmed_usd"] += estimate
        elif own.get(group) == call["key"]:
            del own[group]  # the final answer's own call: the ledger prices its usage itself
        else:
            into["earlier_attempts_usd"] += call["cost_usd"]
            for token in OTHER_TOKENS:
                into[f"other_{token}"] += call[token]
    return sums


def calls_frame(calls: list[dict[str, Any]], groups: dict[str, list[Request]]) -> Any:
    """The calls record as a table (`ledger.calls_table.CALLS_SCHEMA`), each call with the
    group that asked it."""
    import polars as pl

    from batchopt.ledger.calls_table import CALLS_SCHEMA

    owner = _owners(groups)
    rows = [{**{name: call.get(name) for name in CALLS_SCHEMA}, "call_id": call.get("id"),
             "group_id": owner[call["key"]][0] if call["key"] in owner else None}
            for call in calls]
    return pl.DataFrame(rows, schema=CALLS_SCHEMA)
