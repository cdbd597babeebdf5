"""`batchopt bench-tier`: measure a self-hosted tier on the pipeline's own prompts.

Registered on the `batchopt` group by `batchopt.cli.main`; heavy modules load inside the
command, so `batchopt --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from batchopt.cli.common import PATH


@click.command("bench-tier")
@click.argument("pipeline", type=PATH)
@click.option("--tier", required=True, help="The profile to measure (provider local, or one "
              "with a self_hosted block)")
@click.option("--sample", type=click.IntRange(1), default=20, show_default=True,
              help="Distinct prompts to send, spread over the pipeline's requests")
@click.option("--max-tokens", type=click.IntRange(1), help="Override the tier's max_tokens")
@click.option("--input", "input_path", type=PATH, help="Take the prompts from this input")
@click.option("--cache-dir", type=PATH, help="Override cache.path (the record goes under it)")
def bench_tier(pipeline: Path, tier: str, sample: int, max_tokens: int | None,
               input_path: Path | None, cache_dir: Path | None) -> None:
    """Send a sample of PIPELINE's rendered prompts through self-hosted tier TIER, record
    requests/s, tokens/s and latency percentiles under <cache>/<pipeline>/bench/<tier>.json,
    and print the $/1M tokens they imply at the tier's $/hour. `batchopt plan` and the cost
    estimate then use the recorded throughput for that tier.

    Exit codes: 0 measured, 1 the warm-up or every request failed, 2 an API tier, bad config,
    input or usage."""
    from batchopt.config.pipeline import load_pipeline
    from batchopt.plan.bench_report import print_bench
    from batchopt.plan.bench_tier import BenchOptions
    from batchopt.plan.bench_tier import bench_tier as run_bench

    options = BenchOptions(tier=tier, sample=sample, max_tokens=max_tokens,
                           cache_dir=cache_dir, input=input_path)
    record, path = run_bench(load_pipeline(pipeline), options)
    print_bench(record, path)
