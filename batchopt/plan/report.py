"""`batchopt plan`'s printout: the estimate a person reads, or JSON for machines."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from rich.console import Console

from batchopt.ledger.selfhost import SelfHostedCost, TierWhatIf
from batchopt.plan.estimate import JobEstimate
from batchopt.plan.figures import limit_note, usd


def estimate_json(est: JobEstimate) -> str:
    """The estimate as one JSON object (every figure, plus cost_usd and to_send)."""
    data: dict[str, Any] = dataclasses.asdict(est)
    data["cost_usd"] = est.cost_usd
    data["to_send"] = est.to_send
    if est.last_run is not None:
        data["last_run"]["error_share"] = est.last_run.error_share
    return json.dumps(data, indent=2, default=str)


def over_budget(est: JobEstimate) -> bool:
    """Whether the estimate is over the pipeline's budget.max_usd (`plan` then exits 3)."""
    return est.budget_usd is not None and est.cost_usd > est.budget_usd


def print_estimate(est: JobEstimate) -> None:
    """The estimate, one fact a line, on stdout."""
    out = Console(highlight=False, soft_wrap=True).print
    out(f"[bold]plan[/bold] · pipeline {est.pipeline} · mode {est.mode} · nothing sent")
    out(f"rows               {est.rows:,}")
    if est.row_limit is not None:
        out(f"limit              {limit_note(est.row_limit, est.rows)}: the estimate is for "
            "these rows only")
    out(f"distinct requests  {est.distinct:,} (exact duplicates {est.exact_followers:,}, "
        f"semantic near-duplicates {est.semantic_followers:,})")
    past = (f"; answered by earlier runs' near-duplicates: {est.reused_past:,}"
            if est.reused_past else "")
    out(f"to send            {est.to_send:,} (already in the response cache: {est.cached:,}"
        f"{past})")
    for t in est.tiers:
        batch = f" · batch {usd(t.batch_usd)}" if t.batch_usd is not None else ""
        up = f", {t.escalated:,} escalated" if t.escalated else ""
        head = f"judge calls {t.tier}" if t.judge else f"tier {t.tier}"
        out(f"{head:<18} {t.provider}/{t.model}: {t.requests:,} requests{up} · input "
            f"{t.input_tokens:,} (cached {t.cached_input_tokens:,}) · output "
            f"{t.output_tokens:,} ({t.output_source}) · online {usd(t.online_usd)}{batch}")
        if t.token_counter:
            out(f"  tokens counted by {t.token_counter}")
    if est.escalation_source != "no cascade":
        out(f"escalation         {est.escalation_share:.1%} ({est.escalation_source})")
    if est.judge_source:
        out(f"judge              {est.judge_source}")
    share = 1 - est.cost_usd / est.baseline_usd if est.baseline_usd else 0.0
    out(f"[bold]estimate           {usd(est.cost_usd)}[/bold] · baseline "
        f"{usd(est.baseline_usd)} ({est.baseline_model}, every row online, uncompressed) · "
        f"saving {share:.1%}")
    if est.budget_usd is not None:
        verdict = "OVER" if over_budget(est) else "within"
        out(f"budget             {usd(est.budget_usd)}: {verdict}")
    if est.last_run is not None:
        last = est.last_run
        off = f"{last.error_share:+.1%}" if last.error_share is not None else "n/a"
        out(f"last run           {last.run_id}: estimated {usd(last.estimated_usd)}, spent "
            f"{usd(last.spent_usd)} ({off})")
    for c in est.self_hosted:
        if c.whatif is not None:
            _print_whatif(c, c.whatif)
            continue
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
    _print_shown(est.shown)


def _print_shown(shown: list[dict[str, Any]]) -> None:
    """`plan --show N`: each request's messages as sent, verbatim (no markup read in them)."""
    for number, request in enumerate(shown, 1):
        print(f"\n--- request {number} of {len(shown)} · group {request['group_id']} · tier "
              f"{request['tier']} ({request['provider']}/{request['model']}, max_tokens "
              f"{request['max_tokens']}, about {request['estimated_input_tokens']:,} input "
              f"tokens) · {request['route_reason']}")
        if request["system"]:
            print("[system]")
            print(request["system"])
        print("[user]")
        print(request["user"])


def _print_whatif(c: SelfHostedCost, w: TierWhatIf) -> None:
    """A self-hosted tier: its set-up, throughput source, formula and table over precisions."""
    out = Console(highlight=False, soft_wrap=True, markup=False).print
    out(f"self-hosted tier {w.tier}: {w.provider}/{w.model}, {w.parameters_b:g}B parameters, "
        f"{w.precision.upper()}, {w.gpu_count}x {w.gpu} ({w.gpu_memory_gb:g} GB each, "
        f"{w.gpu_count_source}) at ${w.usd_per_hour:g}/h ({w.usd_per_hour_source})")
    out(f"  throughput ({w.throughput_source}): {w.throughput}")
    out(f"  job mix: {w.mix_input_tokens:,.0f} prompt + {w.mix_output_tokens:,.0f} answer "
        f"tokens a request over {w.mix_requests:,} distinct requests; this job "
        f"{c.gpu_hours:,.3f} machine-hours at {c.utilisation:.0%} use = {usd(c.job_usd)}; "
        f"always on {usd(c.monthly_usd)}/month (730 h)")
    out(f"  {w.memory_formula}")
    out(f"  {w.scaling}")
    against = [b.against for b in w.rows[0].break_even] if w.rows else []
    names = [a.rsplit("/", 1)[-1].rstrip(")") for a in against]
    out("  " + f"{'precision':<10}{'bits':>7}{'weights GB':>11}{'KV GB':>8}{'total GB':>10}"
        f"{'GPUs':>6}{'$/hour':>9}{'$/1M in':>10}{'$/1M out':>10}{'$/1M mix':>10}"
        + "".join(f"  {'req/month vs ' + n:>22}" for n in names))
    for r in w.rows:
        mark = "*" if r.configured else " "
        cells = "".join(
            f"  {_volume(b.requests_per_month) + ('!' if b.beyond_capacity else ''):>22}"
            for b in r.break_even)
        out(f"{mark} {r.precision.upper():<10}{r.bits:>7.2f}{r.weights_gb:>11.2f}{r.kv_gb:>8.2f}"
            f"{r.total_gb:>10.2f}{r.gpus:>6}{r.usd_per_hour:>9.2f}{_money(r.usd_per_1m_input):>10}"
            f"{_money(r.usd_per_1m_output):>10}{_money(r.usd_per_1m_tokens):>10}{cells}")
    out("  * the tier as configured. $/1M = $/hour / (tokens/s x 3600) x 1e6 while busy; "
        "$/1M mix at the job's prompt and answer tokens")
    for i, b in enumerate(w.rows[0].break_even if w.rows else []):
        out(f"  break-even vs {against[i]}: ${b.api_usd_per_request:.6f} a request = "
            "(prompt x input price + answer x output price) / 1e6; the volume a month at which "
            "$/hour x 730 equals it (! beyond what the set-up answers at "
            f"{w.utilisation:.0%} use)")
    quality = "; ".join(f"{r.precision.upper()} {r.quality}" for r in w.rows if r.quality)
    if quality:
        out(f"  quality: {quality}")
    for ref in w.references:
        out(f"  source: {ref}")
    for note in w.notes:
        out(f"  note: {note}")


def _money(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.4f}" if value < 1 else f"{value:,.2f}"


def _volume(value: float | None) -> str:
    """Requests a month, short: 950, 12.3k, 4.56M, 1.2B."""
    if value is None:
        return "never"
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:,.3g}{suffix}"
    return f"{value:,.0f}"
