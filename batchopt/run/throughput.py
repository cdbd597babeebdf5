"""Which throughput a time-priced (self-hosted) tier is costed at, and from where.

Precedence, first found wins: a `batchopt bench-tier` record of this tier's model and endpoint,
then the throughput stated in the profile's `self_hosted.throughput`, then the mean latency of
the pipeline's past calls to the model (from the ledger), then the built-in constants (local
tiers only: SmolLM2-135M measured on 2 cores). The plan says which one it used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from batchopt.config.selfhost import ThroughputConfig
from batchopt.run.bench_record import BenchRecord, find_record

if TYPE_CHECKING:
    from batchopt.run.model import Plan

__all__ = ["LOCAL_GEN_TOK_S", "LOCAL_PROMPT_TOK_S", "SOURCES", "Throughput", "resolve_throughput",
           "tier_throughput"]

SOURCES = ("bench", "stated", "past", "constants")
# Rough local throughput (SmolLM2-135M on 2 cores, MEASURED.md) for estimates only.
LOCAL_PROMPT_TOK_S = 295.0
LOCAL_GEN_TOK_S = 100.0


@dataclass(frozen=True)
class Throughput:
    """Prompt and generated tokens per second (bench, stated, constants), or a mean time per
    request (past runs), and where it comes from."""

    source: str  # one of SOURCES
    detail: str
    prompt_tokens_per_s: float | None = None
    generated_tokens_per_s: float | None = None
    mean_latency_ms: float | None = None

    @property
    def rates(self) -> tuple[float, float] | None:
        """(prompt, generated) tokens per second, when the source gives them."""
        if self.prompt_tokens_per_s and self.generated_tokens_per_s:
            return self.prompt_tokens_per_s, self.generated_tokens_per_s
        return None

    def latency_ms(self, input_tokens: float, output_tokens: float, requests: int = 1) -> float:
        """Machine time for `requests` requests holding these tokens in all."""
        if self.rates is not None:
            prompt, generated = self.rates
            return (input_tokens / prompt + output_tokens / generated) * 1e3
        return (self.mean_latency_ms or 0.0) * requests

    @property
    def label(self) -> str:
        """One line: the figures and their source."""
        if self.rates is not None:
            prompt, generated = self.rates
            return (f"{prompt:,.0f} prompt tok/s, {generated:,.1f} generated tok/s "
                    f"({self.detail})")
        return f"{self.mean_latency_ms or 0.0:,.0f} ms a request ({self.detail})"


def resolve_throughput(
    *,
    record: BenchRecord | None,
    record_path: Path | None,
    stated: ThroughputConfig | None,
    past: tuple[float, int] | None,
    constants: tuple[float, float] | None,
) -> Throughput | None:
    """The first of: the bench `record`, the `stated` figures, the `past` (mean ms, calls),
    the `constants` (prompt, generated tokens/s); None when there is none."""
    if record is not None and record_path is not None:
        return Throughput("bench", record.describe(record_path),
                          record.cost_prompt_tokens_per_s, record.cost_generated_tokens_per_s)
    if stated is not None:
        where = f": {stated.source}" if stated.source else ""
        return Throughput("stated", f"stated in self_hosted.throughput{where}",
                          stated.prompt_tokens_per_s, stated.generated_tokens_per_s)
    if past is not None:
        mean, calls = past
        return Throughput("past", f"mean of {calls:,} past calls in the ledger",
                          mean_latency_ms=mean)
    if constants is not None:
        return Throughput("constants", "built-in: SmolLM2-135M on 2 cores, MEASURED.md; "
                          "run `batchopt bench-tier` to measure yours", *constants)
    return None


def tier_throughput(plan: Plan, name: str) -> Throughput | None:
    """The throughput tier `name` is costed at: its `batchopt bench-tier` record (same model
    and endpoint), else its `self_hosted.throughput`, else its model's past latencies, else
    (a model file loaded in this process) the built-in constants. None: an API tier, or
    nothing known."""
    tier = plan.tiers[name]
    profile, cfg, traits = tier.profile, plan.pipeline.config, tier.traits
    if not traits.capabilities.priced_by_time and profile.self_hosted is None:
        return None
    # this tier's record, or another tier's of the same model and endpoint
    found = find_record(plan.paths["cache"], cfg.name, name, profile.provider, profile.model,
                        tier.spec.endpoint)
    return resolve_throughput(
        record=found[0] if found else None, record_path=found[1] if found else None,
        stated=profile.self_hosted.throughput if profile.self_hosted else None,
        past=plan.history.latency_ms.get((profile.provider, profile.model)),
        constants=(LOCAL_PROMPT_TOK_S, LOCAL_GEN_TOK_S) if traits.model_file else None,
    )
