"""What a run will cost, before it spends: per request, and for the whole job.

A request's expected usage is its prompt as counted offline (the tier's token counter, calibrated
on past ledgers where the count is an estimate), its output at the mean that past runs of the
pipeline recorded for the model (else `max_tokens`, an upper bound), and, when the tier's static
prefix is long enough for the provider's prompt cache, that prefix read from the cache on every
request but the first (which writes it, on Anthropic). The same function prices the budget's
pre-checks, the ledger's `estimated_cost_usd` and `batchopt plan`, so the ledger can say how far
the plan was off.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from batchopt.ledger.history import History, LastRun
from batchopt.ledger.selfhost import SelfHosted, SelfHostedCost, compare, load_setups
from batchopt.records import Request, Usage
from batchopt.tokens import count_tokens

if TYPE_CHECKING:
    from batchopt.execute.cache import ResponseCache
    from batchopt.prompts.request_table import RequestTable
    from batchopt.routing.validators import JudgeValidator
    from batchopt.run.runner import Plan
    from batchopt.run.tiers import Tier

__all__ = ["ASSUMED_ESCALATION", "JobEstimate", "TierEstimate", "estimate_job", "estimated_cost",
           "expected_usage", "price_calls", "request_cost"]

# Rough local throughput (SmolLM2-135M on 2 cores, MEASURED.md) for estimates only.
LOCAL_PROMPT_TOK_S = 295.0
LOCAL_GEN_TOK_S = 100.0
_OPENAI_CACHE_STEP = 128  # OpenAI reports cached tokens in steps of 128
# Without a past run of the same configuration, the share of a cascade tier's answers expected
# to go one tier up (routing.assume_escalation overrides it): a stated guess, not 0.
ASSUMED_ESCALATION = 0.2


@lru_cache(maxsize=256)
def _prefix(provider: str, model: str, system: str) -> int:
    """Prompt tokens a provider's cache serves for this system text (0: not cacheable)."""
    from batchopt.providers.registry import prompt_cache_min_tokens

    minimum = prompt_cache_min_tokens(provider, model)
    tokens = count_tokens(system, model)
    if minimum is None or not system or tokens < minimum:
        return 0
    return tokens - tokens % _OPENAI_CACHE_STEP if provider == "openai" else tokens


def expected_output(history: History, request: Request) -> tuple[int, str]:
    """(output tokens, where the figure comes from) for `request`: the mean of past answers of
    the same configuration; without them, an answer of the JSON schema's shape where there is
    one (`schema_answer_tokens`), else `max_tokens` (an upper bound)."""
    past = history.output_tokens.get((request.provider, request.model))
    if past is None:
        if request.json_schema:
            shaped = schema_answer_tokens(request.json_schema, request.model)
            if shaped < request.max_tokens:
                return shaped, "an answer of the schema's shape (no past run)"
        return request.max_tokens, "max_tokens"
    mean, rows = past
    return min(request.max_tokens, round(mean)), f"mean of {rows:,} past answers"


# What a value of each JSON type looks like in a typical answer; a free string: a few words.
_SAMPLE_VALUES: dict[str, Any] = {"string": "a few words here", "number": 1234.56,
                                  "integer": 1234, "boolean": False, "null": None}


def _sample(schema: Any) -> Any:
    """A typical instance of `schema`: the longest enum value, one item of an array, every
    property of an object (a nullable type as its non-null type)."""
    if not isinstance(schema, dict):
        return _SAMPLE_VALUES["string"]
    if schema.get("enum"):
        return max(schema["enum"], key=lambda v: len(json.dumps(v)))
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        return {name: _sample(sub) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [_sample(schema.get("items", {}))]
    return _SAMPLE_VALUES.get(kind, _SAMPLE_VALUES["string"])


@lru_cache(maxsize=256)
def _schema_tokens(schema_json: str, model: str) -> int:
    return count_tokens(json.dumps(_sample(json.loads(schema_json))), model)


def schema_answer_tokens(schema: dict[str, Any], model: str) -> int:
    """Output tokens of a typical answer to `schema` (`_sample`), counted for `model`: what a
    plan without history expects a structured answer to take (max_tokens only bounds it)."""
    return _schema_tokens(json.dumps(schema, sort_keys=True), model)


def expected_usage(history: History, request: Request, *, first: bool = False,
                   output: int | None = None) -> Usage:
    """The usage `request` should report; `first`: the first of its tier (writes the cache);
    `output`: its answer's tokens where they are known otherwise (a judge's verdict)."""
    cached = min(_prefix(request.provider, request.model, request.system),
                 request.estimated_input_tokens)
    write = cached if first and request.provider == "anthropic" else 0
    return Usage(
        input_tokens=request.estimated_input_tokens,
        output_tokens=expected_output(history, request)[0] if output is None else output,
        cached_input_tokens=0 if first else cached,
        cache_write_tokens=write,
    )


def request_cost(plan: Plan, request: Request, *, batch: bool = False, first: bool = False
                 ) -> float:
    """What `request` should cost on its tier (the batch price with `batch`)."""
    usage = expected_usage(plan.history, request, first=first)
    tier = plan.tier_of(request)
    latency = expected_latency_ms(plan.history, request, usage, tier_rates(plan, tier.name))
    return plan.prices.cost(tier.price, usage, batch=batch, latency_ms=latency)


def max_request_cost(plan: Plan, request: Request, *, batch: bool = False) -> float:
    """The most `request` can cost on its tier: every prompt token at the full input rate (an
    Anthropic cacheable prefix at the cache-write rate, dearer) and `max_tokens` of output; a
    time-priced tier, the time those tokens should take. What the budget reserves before a send."""
    prefix = _prefix(request.provider, request.model, request.system)
    write = min(prefix, request.estimated_input_tokens) if request.provider == "anthropic" else 0
    usage = Usage(input_tokens=request.estimated_input_tokens, output_tokens=request.max_tokens,
                  cached_input_tokens=0, cache_write_tokens=write)
    tier = plan.tier_of(request)
    latency = expected_latency_ms(plan.history, request, usage, tier_rates(plan, tier.name))
    return plan.prices.cost(tier.price, usage, batch=batch, latency_ms=latency)


def tier_rates(plan: Plan, name: str) -> tuple[float, float] | None:
    """The (prompt, generated) tokens/s tier `name` is costed at, when a bench record or its
    stated throughput gives them (`tier_throughput`); found once per plan."""
    if name not in plan.rates:
        found = tier_throughput(plan, name) if plan.tiers[name].price.time_priced else None
        plan.rates[name] = found.rates if found is not None else None
    return plan.rates[name]


def expected_latency_ms(history: History, request: Request, usage: Usage,
                        rates: tuple[float, float] | None = None) -> float:
    """How long a time-priced (self-hosted) model should take. `rates`, the (prompt, generated)
    tokens/s of a `batchopt bench-tier` record or of the profile's `self_hosted.throughput`
    (`tier_throughput` finds them), come first; then the mean of the pipeline's past calls to
    the model where the ledger has them (measured under that machine's real load); else the
    throughput measured on a quiet 2-core machine."""
    if rates is not None:
        prompt, generated = rates
        return (usage.input_tokens / prompt + usage.output_tokens / generated) * 1e3
    past = history.latency_ms.get((request.provider, request.model))
    if past is not None:
        return past[0]
    return (usage.input_tokens / LOCAL_PROMPT_TOK_S + usage.output_tokens / LOCAL_GEN_TOK_S) * 1e3


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


@dataclass
class JobEstimate:
    """The whole job: rows, what dedup and the cache leave to send, and its price by tier."""

    pipeline: str
    rows: int
    exact_followers: int
    semantic_followers: int
    distinct: int
    cached: int  # distinct requests the response cache already holds ($0)
    mode: str
    tiers: list[TierEstimate]
    baseline_usd: float
    baseline_model: str
    escalation_share: float
    escalation_source: str
    budget_usd: float | None
    last_run: LastRun | None
    self_hosted: list[SelfHostedCost] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    row_limit: int | None = None  # --limit: the estimate covers the input's first rows only
    empty_skipped: int = 0  # rows with nothing to send (input.on_empty: skip): not sent, $0
    # `plan --show N`: the first N distinct requests exactly as a run would send them
    shown: list[dict[str, object]] = field(default_factory=list)
    reused_past: int = 0  # distinct requests earlier runs' near-duplicates answer ($0)
    judge_source: str = ""  # how the judge calls were counted ("" without a judge)

    @property
    def to_send(self) -> int:
        return self.distinct - self.cached - self.reused_past

    @property
    def cost_usd(self) -> float:
        """In the run's mode: batch prices where the mode is batch and the tier has them."""
        return tiers_cost(self.tiers, self.mode)


def tiers_cost(tiers: list[TierEstimate], mode: str) -> float:
    """What `tiers` cost in `mode`: batch prices where the mode is batch and a tier has them."""
    batch = mode == "batch"
    return sum(t.batch_usd if batch and t.batch_usd is not None else t.online_usd for t in tiers)


def estimate_job(plan: Plan, cache: ResponseCache | None) -> JobEstimate:
    """The estimate of `plan`'s run. Reads the response cache and earlier runs' answers (the
    look-ups a run makes before sending); sends nothing.

    Summed on the request table's columns (prompt tokens by tier): a Request is made per tier
    and distinct prompt length, to price it, not per request."""
    rows = plan.rows
    dedup = rows["dedup"].value_counts()
    counts = dict(zip(dedup["dedup"].to_list(), dedup["count"].to_list(), strict=True))
    distinct, fresh, reused = sendable(plan, cache)
    calls = price_calls(plan, fresh)
    baseline = _baseline_usd(plan, cache)
    budget = plan.pipeline.config.budget
    notes = list(calls.notes)
    if plan.empty:
        notes.append(f"{len(plan.empty):,} row(s) skipped: empty input (input.on_empty: skip; "
                     "every template field null or blank): not sent, $0")
    job = JobEstimate(
        pipeline=plan.pipeline.config.name, rows=rows.height,
        exact_followers=int(counts.get("exact", 0)),
        semantic_followers=int(counts.get("semantic", 0)), distinct=int(distinct.sum()),
        cached=int(distinct.sum() - fresh.sum()) - reused, mode=plan.mode,
        tiers=calls.tiers, baseline_usd=baseline,
        baseline_model=f"{plan.baseline[0]}/{plan.baseline[1]}",
        escalation_share=calls.share, escalation_source=calls.source,
        budget_usd=budget.max_usd if budget else None, last_run=plan.history.last_run,
        notes=notes, row_limit=plan.row_limit, empty_skipped=len(plan.empty),
        reused_past=reused, judge_source=calls.judge_source,
    )
    job.self_hosted = _self_hosted(plan, job)
    return job


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
    from batchopt.run import reuse

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


def _self_hosted(plan: Plan, job: JobEstimate) -> list[SelfHostedCost]:
    """The pipeline's own self-hosted tiers first: each re-costed at its recorded or stated
    throughput (`recost_self_hosted`) and, with a `self_hosted` block, its quantisation what-if;
    then the job's sent tokens on each hired set-up, against the API estimate."""
    tiers = recost_self_hosted(plan, job)
    config = plan.pipeline.config.self_hosted
    setups = [SelfHosted(s.name, s.gpu or s.name, s.usd_per_hour, s.input_tokens_per_s,
                         s.output_tokens_per_s, source="pipeline self_hosted")
              for s in config.setups] or load_setups()
    input_tokens = sum(t.input_tokens for t in job.tiers)
    output_tokens = sum(t.output_tokens for t in job.tiers)
    if not job.to_send:
        return tiers
    return tiers + [compare(s, rows=job.rows, input_tokens=input_tokens,
                            output_tokens=output_tokens, api_job_usd=job.cost_usd,
                            utilisation=config.utilisation) for s in setups]


def _tier_row(tier: Tier) -> TierEstimate:
    counter = tier.spec.counter
    return TierEstimate(tier.name, tier.profile.provider, tier.profile.model,
                        token_counter=counter.name if counter is not None else "")


def _asked_of(tier: Tier, tokens: int, counter: str) -> Request:
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
    from batchopt.run.tiers import JUDGE_MAX_TOKENS

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
    answer = expected_output(plan.history, _asked_of(tier, 0, counter))[0]
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
    `asked`: how such a request is made (default `_asked_of`)."""
    request = (asked or _asked_of)(tier, tokens, counter)
    usage = expected_usage(plan.history, request, first=first, output=output)
    latency = expected_latency_ms(plan.history, request, usage, tier_rates(plan, tier.name))
    online = plan.prices.cost(tier.price, usage, latency_ms=latency)
    has_batch = tier.profile.provider in ("openai", "anthropic")
    batch = plan.prices.cost(tier.price, usage, batch=True) if has_batch else 0.0
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
    has_batch = tier.profile.provider in ("openai", "anthropic")
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
                                                          (asked or _asked_of)(tier, 0, counter))
    row.input_tokens += int(tokens.sum(dtype=np.int64))
    row.cached_input_tokens += int(cached.sum())
    row.output_tokens += answer * len(tokens)
    row.token_counter = counter or row.token_counter
    row.online_usd = _in_order(row.online_usd, online)
    if has_batch:
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


def _baseline_usd(plan: Plan, cache: ResponseCache | None = None) -> float:
    """Every row on the baseline model, online, uncompressed, no dedup, no prompt cache; the
    ledger's rule (`batchopt.ledger.ledger`): each row's uncompressed default prompt
    (`row_stages.BASELINE_TOKENS`) and its answer, counted with the baseline model's counter.
    An answer the cache holds is counted as the ledger will count it; one not known yet is the
    expected output of the request's tier."""
    import polars as pl

    from batchopt.providers.token_counting import counter_for

    provider, model = plan.baseline
    price = plan.prices.price(provider, model)
    table = plan.requests  # a skipped group (too long for its context) has no request
    if not len(table):
        return 0.0
    counter = counter_for(provider, model)  # uncalibrated, as the ledger counts
    members = table.reps.group_sizes(table.rep)  # rows of each request's group
    expected = np.zeros(len(table), dtype=np.int64)
    for code, fields in enumerate(table.tiers):
        on_tier = table.tier == code
        if on_tier.any():
            asked = _asked_of(plan.tiers[fields.name], 0, fields.counter)
            expected[on_tier] = expected_output(plan.history, asked)[0]
    output_tokens = 0
    for i, key in enumerate(table.iter_keys()):
        known = cache.get(key) if cache is not None else None
        tokens = int(expected[i]) if known is None else (
            counter.count(known.text) if known.ok and known.text else 0)
        output_tokens += int(members[i]) * tokens
    sent = pl.Series("group_id", list(table), dtype=pl.String)
    rows = plan.rows.filter(pl.col("group_id").is_in(sent.implode()))
    input_tokens = int(rows["baseline_prompt_tokens"].sum() or 0)
    return plan.prices.cost(price, Usage(input_tokens=input_tokens, output_tokens=output_tokens))


if TYPE_CHECKING:  # the functions below: self-hosted tiers
    from batchopt.plan.throughput import Throughput


def tier_throughput(plan: Plan, name: str) -> Throughput | None:
    """The throughput tier `name` is costed at: its `batchopt bench-tier` record (same model
    and endpoint), else its `self_hosted.throughput`, else its model's past latencies, else
    (local tiers) the built-in constants. None: an API tier, or nothing known."""
    from batchopt.plan.bench_record import find_record
    from batchopt.plan.throughput import resolve_throughput

    tier = plan.tiers[name]
    profile, cfg = tier.profile, plan.pipeline.config
    if profile.provider != "local" and profile.self_hosted is None:
        return None
    # this tier's record, or another tier's of the same model and endpoint
    found = find_record(plan.paths["cache"], cfg.name, name, profile.provider, profile.model,
                        tier.spec.endpoint)
    local = profile.provider == "local"
    return resolve_throughput(
        record=found[0] if found else None, record_path=found[1] if found else None,
        stated=profile.self_hosted.throughput if profile.self_hosted else None,
        past=plan.history.latency_ms.get((profile.provider, profile.model)),
        constants=(LOCAL_PROMPT_TOK_S, LOCAL_GEN_TOK_S) if local else None,
    )


def recost_self_hosted(plan: Plan, job: JobEstimate) -> list[SelfHostedCost]:
    """Re-cost the job's self-hosted tiers by machine time at `tier_throughput` (a bench record
    or stated figures come before the past latencies `expected_latency_ms` priced them with)
    and say which source each used; return a what-if entry for each with a self_hosted block.

    A local tier is priced at the local rate the ledger charges; an OpenAI-compatible one
    (provider openai with a self_hosted block) at its $/hour, as the ledger charges it
    (`tiers.tier_price`), unless `pricing.models` prices its model per token."""
    from batchopt.plan.whatif import tier_hourly, tier_whatif

    entries = []
    for row in job.tiers:
        tier = plan.tiers[row.tier]
        throughput = tier_throughput(plan, row.tier)
        if tier.profile.self_hosted is not None and not tier.price.time_priced:
            job.notes.append(f"tier {row.tier}: priced per token by pricing.models")
            if throughput is not None:
                entries.append(tier_whatif(plan, row, throughput))
            continue
        if throughput is None:
            if tier.profile.self_hosted is not None:
                job.notes.append(f"tier {row.tier}: no throughput known (run `batchopt "
                                 "bench-tier` or state self_hosted.throughput); its machine "
                                 "time here is a placeholder at the built-in CPU rates")
            continue
        hourly, _ = tier_hourly(plan, row.tier)
        if throughput.source in ("bench", "stated"):
            ms = throughput.latency_ms(row.input_tokens, row.output_tokens, row.requests)
            row.online_usd = ms / 3.6e6 * hourly
            row.batch_usd = None  # a self-hosted server has no batch discount
        if tier.profile.self_hosted is None:
            job.notes.append(f"tier {row.tier}: machine time at {throughput.label}")
        else:
            entries.append(tier_whatif(plan, row, throughput))
    return entries
