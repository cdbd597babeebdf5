"""The one price function: what a request should cost, before it is sent, and what a bought
result cost.

A request's expected usage is its prompt as counted offline (the tier's token counter, calibrated
on past ledgers where the count is an estimate), its output at the mean that past runs of the
pipeline recorded for the model (else `max_tokens`, an upper bound), and, when the tier's static
prefix is long enough for the provider's prompt cache, that prefix read from the cache on every
request but the first (which writes it, where the provider bills cache writes). The same function
prices the budget's pre-checks, the ledger's `estimated_cost_usd` and `batchopt plan`, so the
ledger can say how far the plan was off.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from batchopt.ledger.history import History
from batchopt.providers.registry import traits_of
from batchopt.records import Request, Result, Usage
from batchopt.run.throughput import LOCAL_GEN_TOK_S, LOCAL_PROMPT_TOK_S, tier_throughput
from batchopt.tokens import count_tokens

if TYPE_CHECKING:
    from batchopt.run.model import Plan
    from batchopt.run.tiers import Tier

__all__ = ["expected_latency_ms", "expected_output", "expected_usage", "max_request_cost",
           "request_cost", "result_cost", "schema_answer_tokens", "tier_rates"]


@lru_cache(maxsize=256)
def _prefix(provider: str, model: str, system: str) -> int:
    """Prompt tokens a provider's cache serves for this system text (0: not cacheable)."""
    rules = traits_of(provider, model).prompt_cache
    if rules is None or not system:
        return 0
    return rules.cached_tokens(count_tokens(system, model))


@lru_cache(maxsize=256)
def _writes_billed(provider: str, model: str) -> bool:
    """Whether the provider bills the request that writes its prompt cache for the write."""
    rules = traits_of(provider, model).prompt_cache
    return rules is not None and rules.writes_billed


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
    write = cached if first and _writes_billed(request.provider, request.model) else 0
    return Usage(
        input_tokens=request.estimated_input_tokens,
        output_tokens=expected_output(history, request)[0] if output is None else output,
        cached_input_tokens=0 if first else cached,
        cache_write_tokens=write,
    )


def request_cost(plan: Plan, request: Request, *, batch: bool = False, first: bool = False,
                 tier: Tier | None = None) -> float:
    """What `request` should cost on its tier (the batch price with `batch`); `tier`: the one it
    is asked of, when the run added it (default: the plan's tier for it)."""
    usage = expected_usage(plan.history, request, first=first)
    tier = tier or plan.tier_of(request)
    latency = expected_latency_ms(plan.history, request, usage, tier_rates(plan, tier.name))
    return plan.prices.cost(tier.price, usage, batch=batch, latency_ms=latency)


def max_request_cost(plan: Plan, request: Request, *, batch: bool = False,
                     tier: Tier | None = None) -> float:
    """The most `request` can cost on its tier: every prompt token at the full input rate (a
    cacheable prefix at the cache-write rate, dearer, where writes are billed) and `max_tokens`
    of output; a time-priced tier, the time those tokens should take. What the budget reserves
    before a send."""
    prefix = _prefix(request.provider, request.model, request.system)
    billed = _writes_billed(request.provider, request.model)
    write = min(prefix, request.estimated_input_tokens) if billed else 0
    usage = Usage(input_tokens=request.estimated_input_tokens, output_tokens=request.max_tokens,
                  cached_input_tokens=0, cache_write_tokens=write)
    tier = tier or plan.tier_of(request)
    latency = expected_latency_ms(plan.history, request, usage, tier_rates(plan, tier.name))
    return plan.prices.cost(tier.price, usage, batch=batch, latency_ms=latency)


def tier_rates(plan: Plan, name: str) -> tuple[float, float] | None:
    """The (prompt, generated) tokens/s tier `name` is costed at, when a bench record or its
    stated throughput gives them (`throughput.tier_throughput`); found once per plan."""
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


def result_cost(plan: Plan, tier: Tier, result: Result) -> float:
    """What one bought result cost, at its tier's price (the batch price for batch rows)."""
    if not (result.ok or result.usage.input_tokens > 0):
        return 0.0
    return plan.prices.cost(tier.price, result.usage, batch=result.mode == "batch",
                            latency_ms=result.latency_ms)
