"""The plan's quantisation what-if for a self-hosted tier: its model at each precision of the
reference table, with the memory, GPUs, $/hour, $/1M tokens at the tier's throughput, and the
monthly volume at which it breaks even with each API tier of the pipeline (or the baseline).

The formulas live in `batchopt.ledger.quantise` and `batchopt.ledger.selfhost.precision_rows`;
this module gathers their inputs from the plan: the tier's `self_hosted` block and reference
overrides, its hourly price, its throughput (`run.throughput.tier_throughput`), the job's mix of
prompt and answer tokens, and the API prices to compare with.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from batchopt.config.selfhost_reference import Reference
from batchopt.ledger.selfhost import (
    SelfHosted,
    SelfHostedCost,
    TierWhatIf,
    compare,
    precision_rows,
)
from batchopt.run.cost import expected_output
from batchopt.run.forecast import TierEstimate
from batchopt.run.selfhost import Hardware, architecture, profile_hardware, setup_hourly

if TYPE_CHECKING:
    from batchopt.run.model import Plan
    from batchopt.run.throughput import Throughput

__all__ = ["hardware", "tier_hourly", "tier_whatif"]


def hardware(plan: Plan, name: str) -> Hardware:
    """The set-up of tier `name` (which has a self_hosted block)."""
    return profile_hardware(plan.tiers[name].profile, name)


def tier_hourly(plan: Plan, name: str) -> tuple[float, str]:
    """(What an hour of tier `name` costs, where the figure comes from)."""
    tier = plan.tiers[name]
    profile, price = tier.profile, tier.price
    time_priced = tier.traits.capabilities.priced_by_time  # a local model: the ledger's rate
    if time_priced and price.usd_per_hour is not None:
        where = (f"profiles.{name}.usd_per_hour" if profile.usd_per_hour == price.usd_per_hour
                 else "the local rate (pricing.local_usd_per_hour or prices.yaml)")
        return price.usd_per_hour, f"{where}, what the ledger charges"
    return setup_hourly(profile, name)


def tier_whatif(plan: Plan, row: TierEstimate, throughput: Throughput) -> SelfHostedCost:
    """Tier `row.tier` on its own set-up (this job, always on) with its what-if table."""
    tier = plan.tiers[row.tier]
    sh = tier.profile.self_hosted
    assert sh is not None
    hw = hardware(plan, row.tier)
    hourly, hourly_source = tier_hourly(plan, row.tier)
    requests, mix_in, mix_out = _mix(plan, row.tier)
    comparators = _comparators(plan, mix_in, mix_out)
    utilisation = plan.pipeline.config.self_hosted.utilisation
    rates = throughput.rates
    rows = precision_rows(
        parameters_b=sh.parameters_b, configured=sh.precision, ref=hw.ref,
        memory_gb=hw.memory_gb, usd_per_gpu_hour=hourly / hw.count, kv_gb=hw.kv_gb,
        rates=rates, seconds_per_request=(throughput.mean_latency_ms or 0.0) / 1e3,
        mix=(mix_in, mix_out), comparators=[(label, usd) for label, usd, _ in comparators],
        utilisation=utilisation,
    )
    ref = hw.ref
    arch = architecture(sh, ref, row.tier)
    whatif = TierWhatIf(
        tier=row.tier, provider=tier.profile.provider, model=tier.profile.model,
        parameters_b=sh.parameters_b, precision=sh.precision, gpu=hw.gpu,
        gpu_memory_gb=hw.memory_gb, gpu_count=hw.count, gpu_count_source=hw.count_source,
        usd_per_hour=hourly, usd_per_hour_source=hourly_source, throughput=throughput.label,
        throughput_source=throughput.source, mix_requests=requests, mix_input_tokens=mix_in,
        mix_output_tokens=mix_out,
        memory_formula=(f"memory = {sh.parameters_b:g}B parameters x bits / 8 (weights) + "
                        f"{hw.kv_formula} + {ref.overhead_share:.0%} of weights (overhead); "
                        f"GPUs = ceil(memory / {hw.memory_gb:g} GB); $/hour = GPUs x "
                        f"${hourly / hw.count:g}"),
        scaling=_scaling(ref, throughput),
        utilisation=utilisation, rows=rows,
        references=[f"reference data: {ref.where} (as of {ref.as_of})",
                    *([f"gpu {hw.gpu_source}"] if hw.gpu_source else []),
                    *(f"{name}: {p.bits:g} bits, {p.source} (as of {p.as_of})"
                      for name, p in ((r.precision, ref.precision(r.precision)) for r in rows)),
                    f"KV cache {ref.kv_bytes_per_value:g} B a value: {ref.kv_source}",
                    *([f"shape {arch.name}: {arch.source}"] if arch else []),
                    f"overhead {ref.overhead_share:.0%}: {ref.overhead_source}"],
        notes=hw.notes,
    )
    setup = SelfHosted(f"tier {row.tier}", f"{hw.count}x {hw.gpu}", hourly,
                       rates[0] if rates else 0.0, rates[1] if rates else 0.0,
                       source=throughput.detail)
    api = comparators[0][2] if comparators else (0.0, 0.0)
    return compare(setup, rows=row.requests, input_tokens=row.input_tokens,
                   output_tokens=row.output_tokens,
                   api_job_usd=(row.input_tokens * api[0] + row.output_tokens * api[1]) / 1e6,
                   utilisation=utilisation,
                   busy_s=throughput.latency_ms(row.input_tokens, row.output_tokens,
                                                row.requests) / 1e3,
                   whatif=whatif)


def _scaling(ref: Reference, throughput: Throughput) -> str:
    if throughput.rates is None:
        return (f"every row at the {throughput.source} figure: past latencies give a time per "
                "request, not token rates, so nothing is scaled by precision")
    if not ref.scale_throughput:
        return (f"throughput not scaled by precision (reference scale_throughput: false): every "
                f"row at the {throughput.source} figure; only GPUs and $/hour change")
    return ("generated tokens/s scaled by speed_vs_fp16 (this row's over the tier's own "
            "precision; reference scale_throughput: true) where both have a figure; "
            "prompt tokens/s not scaled")


def _mix(plan: Plan, name: str) -> tuple[int, float, float]:
    """(requests, mean prompt tokens, answer tokens) of the job's distinct requests, their
    prompts as counted for the tier they start on, their answers as tier `name` would give them
    (past runs' mean for its model, else its max_tokens)."""
    profile = plan.tiers[name].profile
    table = plan.requests
    if not len(table):
        return 0, 0.0, 0.0
    column = getattr(table, "tokens", None)  # a request table's column: no Request made
    if column is not None:
        prompt = float(column.mean())
    else:
        prompt = sum(r.estimated_input_tokens for r in table.values()) / len(table)
    first = next(iter(table.values()))
    asked = replace(first, provider=profile.provider, model=profile.model,
                    max_tokens=profile.max_tokens)
    return len(table), prompt, float(expected_output(plan.history, asked)[0])


def _comparators(plan: Plan, mix_in: float, mix_out: float
                 ) -> list[tuple[str, float, tuple[float, float]]]:
    """(label, API $ a request, (input, output) $/1M) for each API tier of the run, else the
    baseline model: the seed's formula at list prices, online, no prompt-cache discount."""
    found = []
    for name, tier in plan.tiers.items():
        if tier.profile.self_hosted is None and not tier.price.time_priced:
            found.append((f"tier {name} ({tier.profile.provider}/{tier.profile.model})",
                          tier.price))
    if not found:
        price = plan.prices.price(*plan.baseline)
        if not price.time_priced:
            found.append((f"baseline ({plan.baseline[0]}/{plan.baseline[1]})", price))
    return [(label, (mix_in * p.input + mix_out * p.output) / 1e6, (p.input, p.output))
            for label, p in found]
