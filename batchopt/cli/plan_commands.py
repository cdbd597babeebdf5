"""`batchopt plan`, `batchopt validate` and `batchopt schema`: what a run would cost, whether a
pipeline is sound, and the YAML's JSON Schema, without sending a request.

Registered on the `batchopt` group by `batchopt.cli.main`; heavy modules load inside the
commands, so `batchopt --help` stays fast.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import click

from batchopt.cli.common import PATH, date_option, engine_options, limit_option, logical_day


@click.command()
@click.argument("pipeline", type=PATH)
@click.option("--profile", help="Model set-up from the YAML's profiles (default: routing/default)")
@click.option("--input", "input_path", type=PATH, help="Override input.path")
@click.option("--ledger", "ledger_path", type=PATH, help="Override ledger.path (history)")
@click.option("--cache-dir", type=PATH, help="Override cache.path")
@click.option("--mode", type=click.Choice(["online", "batch", "auto"]),
              help="Override execution.mode")
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as JSON")
@click.option("--show", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also print the first N distinct requests exactly as a run would send them "
              "(rendered, compressed), with their tier and why")
@limit_option
@date_option
@engine_options
def plan(
    pipeline: Path,
    profile: str | None,
    input_path: Path | None,
    ledger_path: Path | None,
    cache_dir: Path | None,
    mode: str | None,
    as_json: bool,
    show: int,
    limit: int | None,
    logical: dt.datetime | None,
    engine: str | None,
    ray_address: str | None,
) -> None:
    """Estimate what running PIPELINE will cost, without sending a request.

    Reads and dedups the rows, compresses and renders the prompts, routes what rules can route,
    leaves out what the response cache holds, and prices the rest per tier (output tokens from
    past runs where the ledger has them, else max_tokens). API keys are not needed.

    Exit codes: 0 the estimate is within budget.max_usd (or there is no budget), 2 bad config or
    input, 3 the estimate is over budget.max_usd (the whole plan is printed first; `run` would
    refuse with the same exit code)."""
    from batchopt.config.pipeline import load_pipeline
    from batchopt.errors import EXIT_BUDGET
    from batchopt.plan.estimate import plan_run
    from batchopt.plan.report import estimate_json, over_budget, print_estimate
    from batchopt.run.runner import RunOptions

    options = RunOptions(profile=profile, input=input_path, ledger=ledger_path,
                         cache_dir=cache_dir, mode=mode, engine=engine,
                         ray_address=ray_address, limit=limit, date=logical_day(logical, None))
    estimate = plan_run(load_pipeline(pipeline, date=options.date), options, show=show)
    if as_json:
        click.echo(estimate_json(estimate))
    else:
        print_estimate(estimate)
    if over_budget(estimate):
        click.echo(f"error: budget.max_usd: the estimate {estimate.cost_usd:,.4f} USD is over "
                   f"the budget of {estimate.budget_usd:,.4f} USD; `run` would refuse to "
                   "start (exit 3)", err=True)
        sys.exit(EXIT_BUDGET)


@click.command()
@click.argument("pipeline", type=PATH)
@click.option("--profile", help="Check this profile only (as run --profile; default: the "
              "routing tiers, else default_profile)")
@click.option("--input", "input_path", type=PATH, help="Override input.path (as run)")
@click.option("--no-input", is_flag=True, help="Skip the input's schema (columns not checked)")
@date_option
def validate(pipeline: Path, profile: str | None, input_path: Path | None,
             no_input: bool, logical: dt.datetime | None) -> None:
    """Check PIPELINE without spending or reading a row: the YAML (keys, types, env vars); that
    the API key of every profile a run sends to is set; that every template compiles and renders
    in the sandbox; and, from the input's Parquet schema, that every column the YAML names
    (id_column, input.columns, template variables, routing rules, dedup, compress) exists.

    Exit codes: 0 valid, 2 a mistake (one line names the YAML key) or bad usage."""
    from batchopt.config.pipeline import load_pipeline
    from batchopt.plan.validate import check_columns, check_keys, check_templates, read_schema

    loaded = load_pipeline(pipeline, date=logical_day(logical, None))
    keys = check_keys(loaded, profile)
    path, schema = (None, None) if no_input else read_schema(loaded, input_path)
    templates, notes, variables = check_templates(loaded, schema)
    columns = ("input: not checked (--no-input)" if path is None or schema is None
               else check_columns(loaded, path, schema, variables))
    names = ", ".join(sorted(loaded.config.profiles))
    click.echo(
        f"{loaded.source}: valid (pipeline '{loaded.config.name}', profiles: {names}, "
        f"default: {loaded.config.default_profile})"
    )
    for name, settings in sorted(loaded.config.profiles.items()):
        click.echo(f"  {name}: {_prefix_note(loaded, name, settings.provider, settings.model)}")
    for line in (keys, templates, columns):
        click.echo(f"  {line}")
    for note in notes:
        click.echo(f"  note: {note}")


def _prefix_note(loaded: Any, name: str, provider: str, model: str) -> str:
    """What the profile's static prompt prefix is and whether the provider will cache it."""
    from batchopt.providers.registry import prompt_cache_min_tokens
    from batchopt.run.tiers import tier_system
    from batchopt.tokens import count_tokens

    tokens = count_tokens(tier_system(loaded, name), model)
    minimum = prompt_cache_min_tokens(provider, model)
    if minimum is None:
        return f"static prefix {tokens:,} tokens ({provider}: no prompt cache billing)"
    if tokens >= minimum:
        return f"static prefix {tokens:,} tokens, cached from the second request ({model})"
    return (
        f"static prefix {tokens:,} tokens, too short for {model}'s prompt cache "
        f"(needs {minimum:,})"
    )


@click.command()
def schema() -> None:
    """Print the JSON Schema of a pipeline YAML (for editors).

    Exit codes: 0 printed, 2 bad usage."""
    from batchopt.config.pipeline import json_schema

    click.echo(json.dumps(json_schema(), indent=2))
