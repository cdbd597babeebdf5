"""`batchopt plan`'s printout: the estimate a person reads, or JSON for machines."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from rich.console import Console

from batchopt.estimate import JobEstimate
from batchopt.progress import usd


def estimate_json(est: JobEstimate) -> str:
    """The estimate as one JSON object (every figure, plus cost_usd and to_send)."""
    data: dict[str, Any] = dataclasses.asdict(est)
    data["cost_usd"] = est.cost_usd
    data["to_send"] = est.to_send
    if est.last_run is not None:
        data["last_run"]["error_share"] = est.last_run.error_share
    return json.dumps(data, indent=2, default=str)


def print_estimate(est: JobEstimate) -> None:
    """The estimate, one fact a line, on stdout."""
    out = Console(highlight=False, soft_wrap=True).print
    out(f"[bold]plan[/bold] · pipeline {est.pipeline} · mode {est.mode} · nothing sent")
    out(f"rows               {est.rows:,}")
    out(f"distinct requests  {est.distinct:,} (exact duplicates {est.exact_followers:,}, "
        f"semantic near-duplicates {est.semantic_followers:,})")
    out(f"to send            {est.to_send:,} (already in the response cache: {est.cached:,})")
    for t in est.tiers:
        batch = f" · batch {usd(t.batch_usd)}" if t.batch_usd is not None else ""
        up = f", {t.escalated:,} escalated" if t.escalated else ""
        out(f"tier {t.tier:<13} {t.provider}/{t.model}: {t.requests:,} requests{up} · input "
            f"{t.input_tokens:,} (cached {t.cached_input_tokens:,}) · output "
            f"{t.output_tokens:,} ({t.output_source}) · online {usd(t.online_usd)}{batch}")
        if t.token_counter:
            out(f"  tokens counted by {t.token_counter}")
    if est.escalation_source != "no cascade":
        out(f"escalation         {est.escalation_share:.1%} ({est.escalation_source})")
    share = 1 - est.cost_usd / est.baseline_usd if est.baseline_usd else 0.0
    out(f"[bold]estimate           {usd(est.cost_usd)}[/bold] · baseline "
        f"{usd(est.baseline_usd)} ({est.baseline_model}, every row online, uncompressed) · "
        f"saving {share:.1%}")
    if est.budget_usd is not None:
        verdict = "within" if est.cost_usd <= est.budget_usd else "OVER"
        out(f"budget             {usd(est.budget_usd)}: {verdict}")
    if est.last_run is not None:
        last = est.last_run
        off = f"{last.error_share:+.1%}" if last.error_share is not None else "n/a"
        out(f"last run           {last.run_id}: estimated {usd(last.estimated_usd)}, spent "
            f"{usd(last.spent_usd)} ({off})")
    for c in est.self_hosted:
        be = (f"{c.break_even_jobs:,.0f} such jobs/month ({c.break_even_rows:,.0f} rows)"
              if c.break_even_jobs is not None else "never (the estimate is $0)")
        fits = "" if c.break_even_rows is None or c.break_even_rows <= c.capacity_rows else (
            " [yellow]beyond one set-up's capacity[/yellow]")
        out(f"self-hosted {c.setup.name}: {c.setup.gpu}, ${c.setup.usd_per_hour:g}/h "
            f"({c.setup.source})")
        out(f"  this job {c.gpu_hours:,.3f} GPU-hours at {c.utilisation:.0%} use = "
            f"{usd(c.job_usd)}; always on {usd(c.monthly_usd)}/month, which this job's "
            f"estimate ({usd(est.cost_usd)}) reaches at {be}{fits}; capacity "
            f"{c.capacity_rows:,.0f} rows/month")
    for note in est.notes:
        out(f"[yellow]{note}[/yellow]")
