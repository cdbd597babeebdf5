"""API or self-hosted: what a job would cost on hired GPUs, and the volume where they win.

A self-hosted set-up costs its hourly price whether or not it is busy, so it is compared two
ways: hired for this job alone (its GPU hours at the given utilisation), and always on (a month
of hours), against the API estimate per job. The break-even volume is the number of such jobs
(and rows) a month at which the API bill equals the always-on GPU bill; the capacity says how
many rows a month the set-up can answer at that utilisation, so a break-even above capacity
means one set-up is not enough.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from batchopt.errors import ConfigError
from batchopt.ledger.pricing import PRICES_FILE

__all__ = ["HOURS_PER_MONTH", "SelfHosted", "SelfHostedCost", "compare", "load_setups"]

HOURS_PER_MONTH = 730.0


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
            api_job_usd: float, utilisation: float = 0.5) -> SelfHostedCost:
    """The job (`rows` answered by sending `input_tokens` and getting `output_tokens`) on
    `setup` at `utilisation`, against `api_job_usd` for the same job through the API."""
    busy_s = input_tokens / setup.input_tokens_per_s + output_tokens / setup.output_tokens_per_s
    hours = busy_s / 3600.0 / utilisation
    monthly = setup.usd_per_hour * HOURS_PER_MONTH
    jobs = monthly / api_job_usd if api_job_usd > 0 else None
    per_row_s = busy_s / rows if rows else 0.0
    capacity = HOURS_PER_MONTH * 3600.0 * utilisation / per_row_s if per_row_s else 0.0
    return SelfHostedCost(
        setup=setup, utilisation=utilisation, gpu_hours=hours,
        job_usd=hours * setup.usd_per_hour, monthly_usd=monthly, break_even_jobs=jobs,
        break_even_rows=jobs * rows if jobs is not None else None, capacity_rows=capacity,
    )
