"""What `batchopt bench-tier` prints: the measured throughput and what it costs."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from batchopt.providers.registry import traits_of
from batchopt.run.bench_record import BenchRecord

__all__ = ["print_bench"]


def print_bench(record: BenchRecord, path: Path) -> None:
    """The record, one fact a line, on stdout."""
    out = Console(highlight=False, soft_wrap=True, markup=False).print
    r, lat = record, record.latency_ms
    out(f"bench-tier · pipeline {r.pipeline} · tier {r.tier} ({r.provider}/{r.model}) · "
        f"{r.requests} requests ({r.failed} failed), concurrency {r.concurrency}, "
        f"max_tokens {r.max_tokens}")
    out(f"throughput   {r.requests_per_s:,.3f} requests/s · {r.prompt_tokens_per_s:,.1f} prompt "
        f"tokens/s · {r.generated_tokens_per_s:,.1f} generated tokens/s ({r.prompt_tokens:,} + "
        f"{r.generated_tokens:,} tokens in {r.wall_s:,.2f} s)")
    out(f"latency      p50 {lat['p50']:,.0f} ms · p90 {lat['p90']:,.0f} ms · p99 "
        f"{lat['p99']:,.0f} ms (mean {lat['mean']:,.0f} ms; warm-up {lat['warm_up']:,.0f} ms, "
        "not counted)")
    out(f"cost model   {r.cost_prompt_tokens_per_s:,.1f} prompt tokens/s, "
        f"{r.cost_generated_tokens_per_s:,.1f} generated tokens/s ({r.cost_method})")
    per_1k = r.usd_per_hour * r.wall_s / 3600.0 / r.requests * 1000
    out(f"at ${r.usd_per_hour:g}/h ({r.usd_per_hour_source}): "
        f"${_small(r.usd_per_1m_input)} per 1M prompt tokens · ${_small(r.usd_per_1m_output)} "
        f"per 1M generated tokens · ${_small(r.usd_per_1m_tokens)} per 1M tokens at this "
        f"sample's mix · ${_small(per_1k)} per 1,000 requests (busy the whole hour)")
    out(f"recorded     {path}: `batchopt plan` and the cost estimate use it for tier {r.tier}")
    if not traits_of(r.provider, r.model).capabilities.priced_by_time:
        out(f"ledger       runs bill this tier by each call's time at ${r.usd_per_hour:g}/h; "
            f"to bill it per token at this rate instead, put pricing.models.{r.model}: "
            f"{{input: {_small(r.usd_per_1m_input)}, output: {_small(r.usd_per_1m_output)}}} "
            "in the pipeline")
    for note in r.notes:
        out(f"note         {note}")


def _small(value: float) -> str:
    """Dollars with enough digits to tell small figures apart."""
    return f"{value:,.2f}" if value >= 10 else f"{value:.4g}"
