"""API or self-hosted: what a job would cost on hired GPUs, and the volume where they win.

A self-hosted set-up costs its hourly price whether or not it is busy, so it is compared two
ways: hired for this job alone (its GPU hours at the given utilisation), and always on (a month
of hours), against the API estimate per job. The break-even volume is the number of such jobs
(and rows) a month at which the API bill equals the always-on GPU bill; the capacity says how
many rows a month the set-up can answer at that utilisation, so a break-even above capacity
means one set-up is not enough.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from batchopt.config.selfhost_reference import Reference
from batchopt.errors import ConfigError
from batchopt.ledger.pricing import PRICES_FILE
from batchopt.ledger.quantise import HOURS_PER_MONTH, gpus_needed, usd_per_million, weights_gb

__all__ = [
    "HOURS_PER_MONTH", "BreakEven", "PrecisionRow", "SelfHosted", "SelfHostedCost",
    "TierWhatIf", "compare", "load_setups", "precision_rows",
]


@dataclass(frozen=True)
class SelfHosted:
    """One self-hosted set-up: its hourly price and aggregate throughput."""

    name: str
    gpu: str
    usd_per_hour: float
    input_tokens_per_s: float
    output_tokens_per_s: float
    source: str = "prices.yaml (assumption)"


@dataclass(frozen=True)
class SelfHostedCost:
    """A job on one set-up, beside the API estimate."""

    setup: SelfHosted
    utilisation: float
    gpu_hours: float  # this job's busy hours / utilisation
    job_usd: float  # the job alone, hired by the hour
    monthly_usd: float  # always on
    break_even_jobs: float | None  # jobs a month where the API bill reaches `monthly_usd`
    break_even_rows: float | None
    capacity_rows: float  # rows a month the set-up answers at `utilisation`
    whatif: TierWhatIf | None = None  # a tier of the pipeline: its table over precisions


def load_setups(path: Path | None = None) -> list[SelfHosted]:
    """The `self_hosted:` entries of the price file."""
    source = path or PRICES_FILE
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{source}: cannot read price file ({exc})") from exc
    return [_setup(name, entry, f"{source}: self_hosted.{name}")
            for name, entry in (raw.get("self_hosted") or {}).items()]


def _setup(name: str, entry: Any, where: str) -> SelfHosted:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a mapping")
    try:
        return SelfHosted(
            name=str(name), gpu=str(entry.get("gpu", name)),
            usd_per_hour=float(entry["usd_per_hour"]),
            input_tokens_per_s=float(entry["input_tokens_per_s"]),
            output_tokens_per_s=float(entry["output_tokens_per_s"]),
        )
    except KeyError as exc:
        raise ConfigError(f"{where}.{exc.args[0]}: required key is missing") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def compare(setup: SelfHosted, *, rows: int, input_tokens: int, output_tokens: int,
            api_job_usd: float, utilisation: float = 0.5, busy_s: float | None = None,
            whatif: TierWhatIf | None = None) -> SelfHostedCost:
    """The job (`rows` answered by sending `input_tokens` and getting `output_tokens`) on
    `setup` at `utilisation`, against `api_job_usd` for the same job through the API.
    `busy_s`, when given, is the job's machine time (a set-up known by its past latencies
    rather than by its tokens per second)."""
    if busy_s is None:
        busy_s = (input_tokens / setup.input_tokens_per_s
                  + output_tokens / setup.output_tokens_per_s)
    hours = busy_s / 3600.0 / utilisation
    monthly = setup.usd_per_hour * HOURS_PER_MONTH
    jobs = monthly / api_job_usd if api_job_usd > 0 else None
    per_row_s = busy_s / rows if rows else 0.0
    capacity = HOURS_PER_MONTH * 3600.0 * utilisation / per_row_s if per_row_s else 0.0
    return SelfHostedCost(
        setup=setup, utilisation=utilisation, gpu_hours=hours,
        job_usd=hours * setup.usd_per_hour, monthly_usd=monthly, break_even_jobs=jobs,
        break_even_rows=jobs * rows if jobs is not None else None, capacity_rows=capacity,
        whatif=whatif,
    )


@dataclass(frozen=True)
class BreakEven:
    """Where an always-on set-up costs what an API does: requests a month."""

    against: str  # "tier openai (openai/gpt-4o-mini)" or "baseline (openai/gpt-4o)"
    api_usd_per_request: float  # (in x input price + out x output price) / 1e6
    requests_per_month: float | None  # None: the API request costs nothing
    beyond_capacity: bool  # more than the set-up answers a month at the utilisation


@dataclass(frozen=True)
class PrecisionRow:
    """The tier's model at one precision: memory, GPUs, money, break-even."""

    precision: str
    bits: float
    configured: bool
    weights_gb: float
    kv_gb: float
    overhead_gb: float
    total_gb: float
    gpus: int
    usd_per_hour: float
    speed_factor: float | None  # generated tokens/s scaled by it; None: not scaled
    prompt_tokens_per_s: float | None
    generated_tokens_per_s: float | None
    seconds_per_request: float
    usd_per_1m_input: float | None
    usd_per_1m_output: float | None
    usd_per_1m_tokens: float  # at the job's mix of prompt and answer tokens
    capacity_requests_per_month: float
    break_even: list[BreakEven]
    quality: str


@dataclass(frozen=True)
class TierWhatIf:
    """A self-hosted tier of the pipeline, as configured and over other precisions."""

    tier: str
    provider: str
    model: str
    parameters_b: float
    precision: str
    gpu: str
    gpu_memory_gb: float
    gpu_count: int
    gpu_count_source: str
    usd_per_hour: float
    usd_per_hour_source: str
    throughput: str
    throughput_source: str
    mix_requests: int
    mix_input_tokens: float  # a request's mean prompt tokens
    mix_output_tokens: float  # a request's mean answer tokens
    memory_formula: str
    scaling: str
    utilisation: float
    rows: list[PrecisionRow]
    references: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def precision_rows(
    *,
    parameters_b: float,
    configured: str,
    ref: Reference,
    memory_gb: float,
    usd_per_gpu_hour: float,
    kv_gb: float,
    rates: tuple[float, float] | None,
    seconds_per_request: float | None,
    mix: tuple[float, float],
    comparators: list[tuple[str, float]],
    utilisation: float,
) -> list[PrecisionRow]:
    """One row per precision of `ref.table` (and `configured`). `rates` (prompt, generated
    tokens/s) or `seconds_per_request` is what was measured or stated at `configured`;
    `comparators` are (label, API $ per request) for the break-even columns."""
    names = list(dict.fromkeys([*ref.table, configured]))
    base = ref.precision(configured)
    mix_in, mix_out = mix
    rows = []
    for name in names:
        p = ref.precision(name)
        weights = weights_gb(parameters_b, p.bits)
        overhead = ref.overhead_share * weights
        total = weights + kv_gb + overhead
        gpus = gpus_needed(total, memory_gb)
        hourly = gpus * usd_per_gpu_hour
        factor = (p.speed_vs_fp16 / base.speed_vs_fp16
                  if ref.scale_throughput and rates is not None and p.speed_vs_fp16
                  and base.speed_vs_fp16 else None)
        prompt = generated = None
        if rates is not None:
            prompt, generated = rates[0], rates[1] * (factor or 1.0)
            seconds = mix_in / prompt + mix_out / generated
        else:
            seconds = seconds_per_request or 0.0
        capacity = HOURS_PER_MONTH * 3600.0 * utilisation / seconds if seconds else 0.0
        monthly = hourly * HOURS_PER_MONTH
        tokens = mix_in + mix_out
        rows.append(PrecisionRow(
            precision=name, bits=p.bits, configured=name == configured, weights_gb=weights,
            kv_gb=kv_gb, overhead_gb=overhead, total_gb=total, gpus=gpus, usd_per_hour=hourly,
            speed_factor=factor, prompt_tokens_per_s=prompt, generated_tokens_per_s=generated,
            seconds_per_request=seconds,
            usd_per_1m_input=usd_per_million(hourly, prompt) if prompt else None,
            usd_per_1m_output=usd_per_million(hourly, generated) if generated else None,
            usd_per_1m_tokens=hourly * seconds / 3600.0 / tokens * 1e6 if tokens else 0.0,
            capacity_requests_per_month=capacity,
            break_even=[_break_even(label, api, monthly, capacity) for label, api in comparators],
            quality=p.quality,
        ))
    return rows


def _break_even(against: str, api_usd: float, monthly_usd: float, capacity: float
                ) -> BreakEven:
    requests = monthly_usd / api_usd if api_usd > 0 else None
    return BreakEven(against, api_usd, requests,
                     beyond_capacity=requests is not None and requests > capacity)
