"""What a run will cost, before it spends: `batchopt plan`.

`plan_run` prepares the run as `batchopt run` would (nothing sent, nothing written) and prices
the job: each call a run would make, priced by the run's own functions (`run.forecast`, itself
on the one price function `run.cost`), against the baseline; the self-hosted tiers re-costed by
machine time, with their what-ifs; and the hired set-ups compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from batchopt.config.pipeline import LoadedPipeline
from batchopt.execute.cache import ResponseCache
from batchopt.ledger.history import LastRun
from batchopt.ledger.selfhost import SelfHosted, SelfHostedCost, compare, load_setups
from batchopt.plan.whatif import tier_hourly, tier_whatif
from batchopt.records import Usage
from batchopt.run.cost import expected_output
from batchopt.run.forecast import TierEstimate, asked_of, price_calls, sendable, tiers_cost
from batchopt.run.model import Plan, RunOptions
from batchopt.run.runner import prepare
from batchopt.run.throughput import tier_throughput

__all__ = ["JobEstimate", "estimate_job", "plan_run", "recost_self_hosted"]


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
        """The distinct requests neither the cache nor earlier runs' answers answer."""
        return self.distinct - self.cached - self.reused_past

    @property
    def cost_usd(self) -> float:
        """In the run's mode: batch prices where the mode is batch and the tier has them."""
        return tiers_cost(self.tiers, self.mode)


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


def _baseline_usd(plan: Plan, cache: ResponseCache | None = None) -> float:
    """Every row on the baseline model, online, uncompressed, no dedup, no prompt cache; the
    ledger's rule (`batchopt.ledger.ledger`): each row's uncompressed default prompt
    (`row_stages.BASELINE_TOKENS`) and its answer, counted with the baseline model's counter.
    An answer the cache holds is counted as the ledger will count it; one not known yet is the
    expected output of the request's tier."""
    import polars as pl

    from batchopt.providers.token_counting import counter_for  # a tokenizer: load when asked

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
            asked = asked_of(plan.tiers[fields.name], 0, fields.counter)
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


def recost_self_hosted(plan: Plan, job: JobEstimate) -> list[SelfHostedCost]:
    """Re-cost the job's self-hosted tiers by machine time at `tier_throughput` (a bench record
    or stated figures come before the past latencies `expected_latency_ms` priced them with)
    and say which source each used; return a what-if entry for each with a self_hosted block.

    A local tier is priced at the local rate the ledger charges; an OpenAI-compatible one
    (provider openai with a self_hosted block) at its $/hour, as the ledger charges it
    (`tiers.tier_price`), unless `pricing.models` prices its model per token."""
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


def plan_run(
    loaded: LoadedPipeline,
    options: RunOptions,
    env: dict[str, str] | None = None,
    *,
    show: int = 0,
) -> JobEstimate:
    """`batchopt plan`: everything up to the first paid request, then what the run should cost.
    Reads the response cache to leave out what it holds; sends nothing and writes nothing.
    `show`: also the first `show` distinct requests, rendered and compressed as a run sends them,
    with their tier and why they go there."""
    plan = prepare(loaded, options, env, require_keys=False)
    cfg = loaded.config
    folder = plan.paths["cache"] / cfg.name
    cache = None
    if cfg.cache.enabled and (folder / "cache.db").exists():
        cache = ResponseCache(folder, enabled=True)
    try:
        estimate = estimate_job(plan, cache)
    finally:
        if cache is not None:
            cache.close()
    estimate.shown = _shown_requests(plan, show)
    return estimate


def _shown_requests(plan: Plan, count: int) -> list[dict[str, object]]:
    """The first `count` distinct requests in input order, as sent: messages, model, tier, why."""
    shown: list[dict[str, object]] = []
    for group, request in plan.requests.items():
        if len(shown) >= count:
            break
        tier, reason = plan.routes[group]
        shown.append({"group_id": group, "tier": tier, "route_reason": reason,
                      "provider": request.provider, "model": request.model,
                      "max_tokens": request.max_tokens, "system": request.system,
                      "user": request.user, "estimated_input_tokens":
                      request.estimated_input_tokens})
    return shown
