"""What a run is expected to spend on its calls, priced by tier: the first tier's requests, a
cascade's expected escalations one tier up and a judge's calls, each priced by the one price
function (`cost`). `batchopt plan` prints it; the run's pre-send budget check compares its total
(`estimated_cost`), so the two always agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from batchopt.records import Request
from batchopt.run import reuse
from batchopt.run.cost import expected_latency_ms, expected_output, expected_usage, tier_rates
from batchopt.run.tiers import JUDGE_MAX_TOKENS, Tier

if TYPE_CHECKING:
    from batchopt.execute.cache import ResponseCache
    from batchopt.prompts.request_table import RequestTable
    from batchopt.routing.validators import JudgeValidator
    from batchopt.run.model import Plan

__all__ = ["ASSUMED_ESCALATION", "Calls", "TierEstimate", "asked_of", "estimated_cost",
           "price_calls", "sendable", "tiers_cost"]

# Without a past run of the same configuration, the share of a cascade tier's answers expected
# to go one tier up (routing.assume_escalation overrides it): a stated guess, not 0.
ASSUMED_ESCALATION = 0.2


@dataclass
class TierEstimate:
    """One tier's share of the job."""

    tier: str
    provider: str
    model: str
    requests: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    output_source: str = "max_tokens"
    token_counter: str = ""
    online_usd: float = 0.0
    batch_usd: float | None = None  # None: the provider has no batch API
    escalated: int = 0  # of `requests`, those expected up from the tier below
    judge: bool = False  # the judge's calls on this tier (one per judged answer)


def tiers_cost(tiers: list[TierEstimate], mode: str) -> float:
    """What `tiers` cost in `mode`: batch prices where the mode is batch and a tier has them."""
    batch = mode == "batch"
    return sum(t.batch_usd if batch and t.batch_usd is not None else t.online_usd for t in tiers)


@dataclass
class Calls:
    """Every call a run is expected to make, priced by tier: first tiers, escalations and
    judge calls (rows with `judge` set), with where the cascade's shares come from."""

    tiers: list[TierEstimate]
    share: float
    source: str
    judge_source: str = ""
    notes: list[str] = field(default_factory=list)

    def cost_usd(self, mode: str) -> float:
        """What the calls cost in `mode` (`tiers_cost`)."""
        return tiers_cost(self.tiers, mode)


def _distinct(table: RequestTable) -> np.ndarray:
    """The first request of each key in `table`: a key is sent once."""
    distinct = np.zeros(len(table), dtype=bool)
    distinct[np.unique(table.key, return_index=True)[1]] = True
    return distinct


def sendable(plan: Plan, cache: ResponseCache | None) -> tuple[np.ndarray, np.ndarray, int]:
    """(distinct: the first request of each key, fresh: those of them a run sends, how many
    of the distinct ones earlier runs' near-duplicates answer): the run's own look-ups, the
    response cache first, then (as `rounds` does) the cross-run semantic cache."""
    table = plan.requests
    distinct = _distinct(table)
    fresh = distinct.copy()
    if cache is not None:
        keys = list(table.iter_keys())
        for place in np.flatnonzero(distinct).tolist():
            fresh[place] = cache.get(keys[place]) is None
        index = reuse.answered_index(plan, cache)
        if index is not None and fresh.any():
            places = np.flatnonzero(fresh)
            hits = reuse.past_hits(plan, cache, index, reuse.rep_ids(plan),
                                   [keys[p] for p in places.tolist()])
            answered = np.array([keys[p] in hits for p in places.tolist()], dtype=bool)
            fresh[places[answered]] = False
            return distinct, fresh, int(answered.sum())
    return distinct, fresh, 0


def price_calls(plan: Plan, fresh: np.ndarray) -> Calls:
    """Price every call a run sending the requests `fresh` marks should make: each on its tier,
    a cascade's expected escalations one tier up, and, with a judge, one judge call for every
    answer of a judged tier (all assumed to pass the local checks). The plan prints it; the
    run's pre-send budget check compares its total."""
    table = plan.requests
    names = list(plan.tiers)
    share, source = _escalation(plan, names)
    tiers = {n: _tier_row(plan.tiers[n]) for n in names}
    key_tiers = table.key_tiers()  # the tier `plan.key_tier` gives each request's key
    judge, limit = _judge(plan)
    judge_row = None
    if judge is not None:
        judge_row = replace(_tier_row(plan.tiers[judge.tier]), judge=True)
    arriving: dict[str, tuple[np.ndarray, str]] = {}
    for position, name in enumerate(names):
        code = table.tier_names.index(name) if name in table.tier_names else -1
        on_tier = np.flatnonzero(fresh & (key_tiers == code))  # in group order
        tokens = table.tokens[on_tier]
        counter = _last_counter(table, table.tier[on_tier])
        _add(plan, tiers[name], tokens, counter)
        up_tokens, up_counter = arriving.pop(name, (tokens[:0], ""))
        answered = np.concatenate((tokens, up_tokens))
        if judge is not None and judge_row is not None and position < limit and len(answered):
            _add_judged(plan, judge, judge_row, name, answered, counter or up_counter)
        if plan.strategy == "cascade" and position < limit and len(answered):
            up = names[position + 1]
            moved = round(len(answered) * share)
            # the first `moved` of them, asked of the tier above (their counter's name kept)
            arriving[up] = (answered[:moved], counter or up_counter)
            _add(plan, tiers[up], answered[:moved], counter or up_counter, escalated=True)
    rows = list(tiers.values()) + ([judge_row] if judge_row is not None else [])
    notes = []
    judge_source = ""
    if judge_row is not None:
        judge_source = ("assumed: every answer of a judged tier passes the local checks and is "
                        f"judged by one call on {judge_row.tier}")
    if source.startswith("assumed"):
        notes.append(f"escalation share {source}; set routing.assume_escalation to change it")
    return Calls(rows, share, source, judge_source, notes)


def estimated_cost(plan: Plan, fresh_keys: set[str]) -> float:
    """What sending the requests with `fresh_keys` should cost in the run's mode, every call
    counted as `batchopt plan` counts it (the same `price_calls`)."""
    table = plan.requests
    fresh = _distinct(table) & np.fromiter((k in fresh_keys for k in table.iter_keys()), dtype=bool,
                                   count=len(table))
    return price_calls(plan, fresh).cost_usd(plan.mode)


def _tier_row(tier: Tier) -> TierEstimate:
    counter = tier.spec.counter
    return TierEstimate(tier.name, tier.profile.provider, tier.profile.model,
                        token_counter=counter.name if counter is not None else "")


def asked_of(tier: Tier, tokens: int, counter: str) -> Request:
    """A request of `tokens` prompt tokens asked of `tier`: everything its expected usage and
    price depend on (provider, model, system, max_tokens; no key or user message)."""
    spec = tier.spec
    return Request(key="", provider=tier.profile.provider, model=tier.profile.model,
                   system=spec.system, user="", max_tokens=tier.profile.max_tokens,
                   temperature=spec.temperature, json_schema=spec.json_schema,
                   params=spec.params, estimated_input_tokens=tokens, token_counter=counter)


Asked = Callable[["Tier", int, str], Request]


def _judge_asked(tier: Tier, tokens: int, counter: str) -> Request:
    """A judge call of `tokens` prompt tokens on `tier`, as `tiers.judge_request_factory` makes
    it: no system text, no schema, the judge's max_tokens."""
    spec = tier.spec
    return Request(key="", provider=spec.provider, model=spec.model, system="", user="",
                   max_tokens=JUDGE_MAX_TOKENS, temperature=spec.temperature,
                   params=spec.params, estimated_input_tokens=tokens, token_counter=counter)


def _judge(plan: Plan) -> tuple[JudgeValidator | None, int]:
    """(the cascade's judge or None, how many tiers up a row may go: the tiers below that
    position are the ones whose answers are judged and escalated)."""
    routing = plan.pipeline.config.routing
    if plan.strategy != "cascade" or routing is None:
        return None, 0
    from batchopt.routing import build_validators, judge_of

    validators = build_validators(routing.validators, plan.pipeline.config.prompt.json_schema)
    return judge_of(validators), routing.escalation_limit


def _add_judged(plan: Plan, judge: JudgeValidator, row: TierEstimate, name: str,
                answered: np.ndarray, counter: str) -> None:
    """One judge call for each answer of tier `name` (prompt tokens `answered`): the judge's
    message rendered from the question (its user message) and an answer of the tier's expected
    output length, with the judge provider's framing."""
    from batchopt.prompts.requests import resolve_counter
    from batchopt.tokens import static_prompt_tokens

    tier, judge_tier = plan.tiers[name], plan.tiers[row.tier]
    own = resolve_counter(tier.spec)
    question = answered - static_prompt_tokens(own, tier.spec.system, tier.spec.json_schema)
    answer = expected_output(plan.history, asked_of(tier, 0, counter))[0]
    judge_counter = resolve_counter(judge_tier.spec)
    message = judge.prompt.replace("{prompt}", "").replace("{answer}", "")
    fixed = static_prompt_tokens(judge_counter, "") + \
        judge_counter.count(message)
    # a judge answers with a verdict word: its longest, not its max_tokens (an upper bound) nor
    # the mean of the model's other answers
    verdict = max(judge_counter.count(word) for word in ("yes", "no"))
    _add(plan, row, np.maximum(question, 0) + fixed + answer, judge_counter.name,
         asked=_judge_asked, output=(verdict, "a yes/no verdict"))


def _last_counter(table: RequestTable, codes: np.ndarray) -> str:
    """The token counter named by the last of the requests of tier `codes` that names one."""
    found = [table.tiers[c].counter for c in np.unique(codes).tolist()]
    if len(set(found)) <= 1:
        return found[0] if found else ""
    return next((table.tiers[c].counter for c in codes[::-1].tolist() if table.tiers[c].counter),
                "")


def _priced(plan: Plan, tier: Tier, tokens: int, counter: str, *, first: bool = False,
            asked: Asked | None = None, output: int | None = None
            ) -> tuple[float, float, int]:
    """(online $, batch $ (0 without a batch API), cached input tokens) of one request of
    `tokens` prompt tokens on `tier`; `first`: the first of its tier (writes the cache);
    `asked`: how such a request is made (default `asked_of`)."""
    request = (asked or asked_of)(tier, tokens, counter)
    usage = expected_usage(plan.history, request, first=first, output=output)
    latency = expected_latency_ms(plan.history, request, usage, tier_rates(plan, tier.name))
    online = plan.prices.cost(tier.price, usage, latency_ms=latency)
    batch = plan.prices.cost(tier.price, usage, batch=True) if tier.has_batch else 0.0
    return online, batch, usage.cached_input_tokens


def _in_order(start: float, values: np.ndarray) -> float:
    """`start` plus each of `values` in turn: the float a loop of `+=` gives, bit for bit
    (np.cumsum adds in order; np.sum would add pairwise)."""
    if not len(values):
        return start
    return float(np.cumsum(np.concatenate(([start], values)))[-1])


def _add(plan: Plan, row: TierEstimate, tokens: np.ndarray, counter: str,
         escalated: bool = False, asked: Asked | None = None,
         output: tuple[int, str] | None = None) -> None:
    """Add requests of `tokens` prompt tokens (in order) to `row`'s tier; `counter`: the token
    counter the last of them names; `output`: (answer tokens, why) where the answer's length is
    known otherwise than from history. Each distinct prompt length is priced once; the first
    request of a tier writes the provider's prompt cache."""
    if not len(tokens):
        return
    tier = plan.tiers[row.tier]
    lengths, which = np.unique(tokens, return_inverse=True)
    known = None if output is None else output[0]
    priced = [_priced(plan, tier, n, counter, asked=asked, output=known)
              for n in lengths.tolist()]
    online = np.array([p[0] for p in priced])[which]
    batch = np.array([p[1] for p in priced])[which]
    cached = np.array([p[2] for p in priced], dtype=np.int64)[which]
    if row.requests == 0:  # the tier's first request
        online[0], batch[0], cached[0] = _priced(plan, tier, int(tokens[0]), counter,
                                                 first=True, asked=asked, output=known)
    answer, row.output_source = output or expected_output(plan.history,
                                                          (asked or asked_of)(tier, 0, counter))
    row.input_tokens += int(tokens.sum(dtype=np.int64))
    row.cached_input_tokens += int(cached.sum())
    row.output_tokens += answer * len(tokens)
    row.token_counter = counter or row.token_counter
    row.online_usd = _in_order(row.online_usd, online)
    if tier.has_batch:
        row.batch_usd = _in_order(row.batch_usd or 0.0, batch)
    row.requests += len(tokens)
    if escalated:
        row.escalated += len(tokens)


def _escalation(plan: Plan, names: list[str]) -> tuple[float, str]:
    """(share of a cascade tier's answers expected one tier up, where it comes from): past runs
    of this configuration, else the stated assumption (routing.assume_escalation or
    ASSUMED_ESCALATION)."""
    if plan.strategy != "cascade" or len(names) < 2:
        return 0.0, "no cascade"
    past = plan.history.escalation.get("*")
    if past is None:
        routing = plan.pipeline.config.routing
        stated = routing.assume_escalation if routing is not None else None
        share = ASSUMED_ESCALATION if stated is None else stated
        where = "routing.assume_escalation" if stated is not None else "default"
        return share, (f"assumed {share:.0%} escalate ({where}): no past run of this "
                       "configuration")
    share, rows = past
    return share, f"past runs of this configuration ({rows:,} routed requests)"

