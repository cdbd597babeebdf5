"""`batchopt bench-tier`: a sample of the pipeline's own rendered prompts through one
self-hosted tier, timed, and recorded for the cost model and the plan.

The prompts are the ones a run would send (read, compress, render and dedup, by
`runner.prepare`), spread evenly over the distinct requests. They go through the provider
interface and the online executor with the tier's own limits, never through the response cache:

    1. one warm-up request (loads a local model, opens the connection); not counted
    2. every sampled prompt with max_tokens 1: times reading the prompts
    3. every sampled prompt as configured: the aggregate figures and latency percentiles

What 3 took beyond 2 is the time spent writing answers. A request then costs
`input / prompt_tokens_per_s + output / generated_tokens_per_s` seconds at the tier's $/hour.
When 3 took no longer than 2 (answers too short to time), one rate for every token is used
instead: all tokens over 3's wall time.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from batchopt.config.pipeline import LoadedPipeline, ModelConfig
from batchopt.errors import ConfigError, ProviderError
from batchopt.execute.online import OnlineExecutor, OnlineSettings
from batchopt.plan.whatif import tier_hourly
from batchopt.providers.base import Provider, ProviderSettings
from batchopt.providers.registry import create_provider, traits_of
from batchopt.records import Request, Result
from batchopt.run.bench_record import BenchRecord, bench_path, public_endpoint, write_record
from batchopt.run.runner import RunOptions, prepare

__all__ = ["BenchOptions", "bench_tier", "percentile"]

_MIN_DECODE_SHARE = 0.05  # of the full run's wall time, to call the answer-writing time measured
_NO_KEY = "unused"  # an OpenAI-compatible server without auth still needs the SDK to get a key


@dataclass(frozen=True)
class BenchOptions:
    """What to bench and how much."""

    tier: str
    sample: int = 20
    max_tokens: int | None = None  # default: the tier's max_tokens
    cache_dir: Path | None = None  # where the record goes: <cache>/<pipeline>/bench/
    input: Path | None = None  # a smaller input to take the prompts from


@dataclass(frozen=True)
class _Phase:
    wall_s: float
    results: list[Result]


def bench_tier(loaded: LoadedPipeline, options: BenchOptions,
               env: dict[str, str] | None = None) -> tuple[BenchRecord, Path]:
    """Bench tier `options.tier` of `loaded` and write its record; (record, path)."""
    name, profile = loaded.profile(options.tier)
    if (not traits_of(profile.provider, profile.model).capabilities.priced_by_time
            and profile.self_hosted is None):
        raise ConfigError(f"{loaded.source}: profiles.{name}: bench-tier measures self-hosted "
                          f"tiers (provider local, or a self_hosted block); '{name}' is an API "
                          "priced per token, and benching it would spend")
    if options.sample < 1:
        raise ConfigError("--sample: must be 1 or more")
    plan = prepare(loaded, RunOptions(profile=name, cache_dir=options.cache_dir,
                                      input=options.input, mode="online", engine="local"),
                   env, require_keys=False)
    tier = plan.tiers[name]
    requests = sample_requests(plan.requests, options.sample)
    if not requests:
        raise ConfigError(f"{loaded.source}: no prompts to bench: the input has no rows")
    if options.max_tokens is not None:
        requests = [replace(r, max_tokens=options.max_tokens) for r in requests]
    provider = create_provider(_with_key(tier.settings))
    warm, prefill, full = asyncio.run(_measure(provider, requests, _online(profile)))
    hourly, hourly_source = tier_hourly(plan, name)
    record = _record(plan.pipeline.config.name, name, profile, tier.spec.endpoint, requests,
                     warm, prefill, full, hourly, hourly_source)
    path = write_record(record, bench_path(plan.paths["cache"], plan.pipeline.config.name, name))
    return record, path


def sample_requests(requests: Mapping[str, Request], n: int) -> list[Request]:
    """`n` of the plan's requests (by group) spread evenly over them (all when fewer)."""
    total = len(requests)
    wanted = {i * total // n for i in range(n)} if total > n else set(range(total))
    last = max(wanted, default=-1)
    picked = []
    for i, request in enumerate(requests.values()):
        if i in wanted:
            picked.append(request)
        if i >= last:
            break
    return picked


def percentile(values: list[float], p: float) -> float:
    """The `p`th percentile (0-100), linear between the nearest ranks."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    pos = (len(ordered) - 1) * p / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _online(profile: ModelConfig) -> OnlineSettings:
    return OnlineSettings(concurrency=profile.concurrency, rpm=profile.rpm, tpm=profile.tpm,
                          timeout_s=profile.timeout_s, max_attempts=profile.max_attempts)


def _with_key(settings: ProviderSettings) -> ProviderSettings:
    """A self-hosted OpenAI-compatible server often takes no key; the SDK needs one anyway."""
    needs_key = traits_of(settings.provider, settings.model).api_key_env is not None
    if needs_key and not settings.api_key:
        return replace(settings, api_key=_NO_KEY)
    return settings


async def _measure(provider: Provider, requests: list[Request], settings: OnlineSettings
                   ) -> tuple[Result, _Phase, _Phase]:
    executor = OnlineExecutor(provider, settings, persist=lambda results: None)
    try:
        first = requests[0]
        warm = (await executor.run([replace(first, key=f"{first.key}#warm", max_tokens=1)]))
        result = next(iter(warm.values()))
        if not _ran(result):
            raise ProviderError(f"bench-tier: the warm-up request failed: {result.error}")
        prefill = await _timed(executor, [replace(r, max_tokens=1) for r in requests])
        full = await _timed(executor, requests)
    finally:
        await provider.aclose()
    return result, prefill, full


async def _timed(executor: OnlineExecutor, requests: list[Request]) -> _Phase:
    start = time.perf_counter()
    results = await executor.run(requests)
    return _Phase(time.perf_counter() - start, [results[r.key] for r in requests])


def _ran(result: Result) -> bool:
    """The model ran (an answer, or one billed and then refused by the schema check)."""
    return result.ok or result.usage.input_tokens > 0


def _record(pipeline: str, tier: str, profile: ModelConfig, endpoint: str,
            requests: list[Request], warm: Result, prefill: _Phase, full: _Phase,
            hourly: float, hourly_source: str) -> BenchRecord:
    ran = [r for r in full.results if _ran(r)]
    if not ran:
        errors = {r.error for r in full.results}
        raise ProviderError(f"bench-tier: every request failed: {'; '.join(map(str, errors))}")
    by_key = {r.key: r for r in requests}
    prompt = sum(r.usage.input_tokens or by_key[r.key].estimated_input_tokens for r in ran)
    generated = sum(r.usage.output_tokens for r in ran)
    read = sum(r.usage.input_tokens or by_key[r.key].estimated_input_tokens
               for r in prefill.results if _ran(r))
    written = generated - sum(r.usage.output_tokens for r in prefill.results if _ran(r))
    decode_s = full.wall_s - prefill.wall_s
    notes = []
    if read and written > 0 and decode_s > _MIN_DECODE_SHARE * full.wall_s:
        cost_prompt, cost_generated = read / prefill.wall_s, written / decode_s
        method = ("split: prompts timed alone (max_tokens 1), answers by what the full "
                  "requests took beyond that")
    else:
        cost_prompt = cost_generated = (prompt + generated) / full.wall_s
        method = "one rate for every token (answers too short to time apart from the prompts)"
        notes.append(f"the full requests took {full.wall_s:.3f} s against {prefill.wall_s:.3f} s "
                     "for the prompts alone: too close to split")
    latencies = [r.latency_ms for r in ran]
    sh = profile.self_hosted
    return BenchRecord(
        pipeline=pipeline, tier=tier, provider=profile.provider, model=profile.model,
        endpoint=public_endpoint(endpoint),
        measured_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        machine=_machine(), requests=len(ran), failed=len(full.results) - len(ran),
        concurrency=profile.concurrency, max_tokens=max(r.max_tokens for r in requests),
        prompt_tokens=prompt, generated_tokens=generated, wall_s=full.wall_s,
        requests_per_s=len(ran) / full.wall_s, prompt_tokens_per_s=prompt / full.wall_s,
        generated_tokens_per_s=generated / full.wall_s,
        latency_ms={"p50": percentile(latencies, 50), "p90": percentile(latencies, 90),
                    "p99": percentile(latencies, 99),
                    "mean": sum(latencies) / len(latencies),
                    "warm_up": warm.latency_ms},
        cost_prompt_tokens_per_s=cost_prompt, cost_generated_tokens_per_s=cost_generated,
        cost_method=method, usd_per_hour=hourly, usd_per_hour_source=hourly_source,
        self_hosted=None if sh is None else {
            "parameters_b": sh.parameters_b, "precision": sh.precision, "gpu": sh.gpu,
            "gpu_count": sh.gpu_count},
        notes=notes,
    )


def _machine() -> dict[str, Any]:
    """Where the bench ran: for an HTTP tier that is the client, not the server."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # not on every platform
        load = None
    return {"host": platform.node(), "platform": platform.platform(),
            "processor": platform.machine(), "cpus": os.cpu_count(),
            "python": sys.version.split()[0], "load_1m": load}
