"""The `batchopt` command: parse arguments, call the runner, map errors to exit codes.

Heavy modules (polars, duckdb, the SDKs) are imported inside the commands, so `batchopt --help`
answers at once.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from batchopt.errors import EXIT_INTERRUPTED, BatchoptError


def _fail(error: BatchoptError) -> None:
    click.echo(f"error: {error}", err=True)
    sys.exit(error.exit_code)


class _Group(click.Group):
    """Turns BatchoptError into its one-line message and exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BatchoptError as error:
            _fail(error)


@click.group(cls=_Group)
@click.version_option(package_name="batchopt")
def main() -> None:
    """Offline batch LLM jobs that cost less without returning less.

    Exit codes: 0 ok, 1 failed rows or a failed check, 2 usage, config or input error, 3 over
    budget, 75 pending, 130 interrupted; each command's --help lists the ones it returns."""


_path = click.Path(path_type=Path)
# the guards of batchopt.dedup.guards.GUARD_ORDER (not imported here: --help stays fast)
GUARD_NAMES = ("numbers", "amounts", "codes", "dates", "negation", "opposites", "actions",
               "entities", "swaps")


def engine_options(command: Callable[..., None]) -> Callable[..., None]:
    """--engine and --ray-address, shared by `run` and `plan`."""
    command = click.option("--ray-address", help="engine ray: the cluster to join "
                           "(default: execution.ray_address, else a local Ray)")(command)
    return click.option("--engine", type=click.Choice(["local", "ray"]),
                        help="Override execution.engine: where the row-local stages run")(command)


def date_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--date", "logical", type=click.DateTime(formats=["%Y-%m-%d"]), metavar="YYYY-MM-DD",
        help="The night this run is for (a backfill's day; Airflow's ds): `${date}` in the "
             "YAML, the ledger's logical_date, the report's days. Default: the date the run id "
             "names (2026-12-01, scheduled__2026-12-01T...), else today (UTC)",
    )(command)


def _day(logical: dt.datetime | None, run_id: str | None) -> dt.date | None:
    """--date as a date, else the date the run id names (None: today, decided downstream)."""
    from batchopt.dates import date_of_run_id

    return logical.date() if logical is not None else date_of_run_id(run_id)


limit_option = click.option(
    "--limit", type=click.IntRange(min=1), metavar="N",
    help="Only the first N rows of the input (files in order, then rows): try a pipeline "
         "on a few rows; the ledger records it (row_limit)",
)


@main.command()
@click.argument("pipeline", type=_path)
@click.option("--profile", help="Model set-up from the YAML's profiles (default: default_profile)")
@click.option("--run-id", help="Name this run; re-using an id resumes and replaces that run")
@click.option("--input", "input_path", type=_path, help="Override input.path")
@click.option("--output", "output_path", type=_path, help="Override output.path")
@click.option("--ledger", "ledger_path", type=_path, help="Override ledger.path")
@click.option("--cache-dir", type=_path, help="Override cache.path")
@click.option("--mode", type=click.Choice(["online", "batch", "auto"]),
              help="Override execution.mode")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="batch: block until every batch is collected, or exit 75 while any is out")
@click.option("--quiet", is_flag=True,
              help="No progress: neither the bar on a terminal nor the lines in a log")
@limit_option
@date_option
@engine_options
def run(
    pipeline: Path,
    profile: str | None,
    run_id: str | None,
    input_path: Path | None,
    output_path: Path | None,
    ledger_path: Path | None,
    cache_dir: Path | None,
    mode: str | None,
    wait: bool,
    quiet: bool,
    limit: int | None,
    logical: dt.datetime | None,
    engine: str | None,
    ray_address: str | None,
) -> None:
    """Run PIPELINE: read, dedup, send what the cache cannot answer, write outputs and ledger.

    A batch run lives across invocations: run it again with the same --run-id to collect and
    finish.

    Progress goes to stderr: a bar on a terminal; otherwise (a file, a cron log) a line as each
    stage starts and at least one every $BATCHOPT_PROGRESS_SECONDS (default 10) with requests
    done, their rate and the spend so far.

    Exit codes: 0 done, 1 too many failed rows, 2 bad config, input or usage, 3 over
    budget.max_usd (the estimate before sending, or the spend during the run), 75 batches
    still pending (or another process is advancing this run), 130 interrupted."""
    from batchopt.cli.progress import RichObserver, print_pending, print_summary
    from batchopt.cli.progress_log import DEFAULT_PROGRESS_SECONDS, progress_seconds
    from batchopt.config.pipeline import load_pipeline
    from batchopt.run.runner import RunOptions, RunPending, run_pipeline

    day = _day(logical, run_id)
    loaded = load_pipeline(pipeline, date=day)
    options = RunOptions(
        profile=profile, run_id=run_id, input=input_path, output=output_path,
        ledger=ledger_path, cache_dir=cache_dir, mode=mode, wait=wait, engine=engine,
        ray_address=ray_address, limit=limit, date=day,
    )
    # a terminal gets a progress bar; a log, a line per stage and one every interval
    interval = DEFAULT_PROGRESS_SECONDS if quiet else progress_seconds()
    observer = RichObserver(enabled=not quiet, interval=interval)
    try:
        summary = run_pipeline(loaded, options, observer=observer)
    except KeyboardInterrupt:
        observer.close()
        click.echo(
            "interrupted: every answer received so far is saved in the cache; "
            "run the same command again to resume without paying for them",
            err=True,
        )
        sys.exit(EXIT_INTERRUPTED)
    finally:
        observer.close()
    if isinstance(summary, RunPending):
        print_pending(summary)
    else:
        print_summary(summary)
    sys.exit(summary.exit_code)


@main.command()
@click.argument("pipeline", type=_path)
@click.option("--profile", help="Model set-up from the YAML's profiles (default: default_profile)")
@click.option("--run-id", required=True, help="The run to report on")
@click.option("--input", "input_path", type=_path, help="Override input.path (unused; as run)")
@click.option("--output", "output_path", type=_path, help="Override output.path (as run)")
@click.option("--ledger", "ledger_path", type=_path, help="Override ledger.path (as run)")
@click.option("--cache-dir", type=_path, help="Override cache.path (where runs keep state)")
@click.option("--json", "as_json", is_flag=True,
              help="Print the state as JSON (batches per provider, tier and round with their "
              "counts, what is pending, what was spent) for a sensor or a dashboard")
@date_option
def status(
    pipeline: Path,
    profile: str | None,
    run_id: str,
    input_path: Path | None,
    output_path: Path | None,
    ledger_path: Path | None,
    cache_dir: Path | None,
    as_json: bool,
    logical: dt.datetime | None,
) -> None:
    """Say where run RUN_ID of PIPELINE stands; asks the provider about open batches.

    A scheduler's sensor waits while it says 75, then calls `run` once more.

    Exit codes: 0 finished, or nothing left to wait for (run it again to collect and finish);
    1 finished with too many failed rows; 2 no such run, bad config or usage, or the last
    invocation stopped on what a person must mend (an endpoint without a batch API); 75
    batches still running at the provider, or another process is advancing the run."""
    from batchopt.cli.progress import print_status
    from batchopt.config.pipeline import load_pipeline
    from batchopt.run.runner import RunOptions
    from batchopt.run.status import run_status

    day = _day(logical, run_id)
    loaded = load_pipeline(pipeline, date=day)
    options = RunOptions(
        profile=profile, run_id=run_id, input=input_path, output=output_path,
        ledger=ledger_path, cache_dir=cache_dir, date=day,
    )
    report = run_status(loaded, options)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, default=str))
    else:
        print_status(report)
    sys.exit(report.exit_code)


@main.command()
@click.argument("pipeline", type=_path)
@click.option("--profile", help="Model set-up from the YAML's profiles (default: routing/default)")
@click.option("--input", "input_path", type=_path, help="Override input.path")
@click.option("--ledger", "ledger_path", type=_path, help="Override ledger.path (history)")
@click.option("--cache-dir", type=_path, help="Override cache.path")
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
    from batchopt.plan.report import estimate_json, over_budget, print_estimate
    from batchopt.run.runner import RunOptions, plan_run

    options = RunOptions(profile=profile, input=input_path, ledger=ledger_path,
                         cache_dir=cache_dir, mode=mode, engine=engine,
                         ray_address=ray_address, limit=limit, date=_day(logical, None))
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


@main.command()
@click.argument("pipeline", type=_path)
@click.option("--profile", help="Check this profile only (as run --profile; default: the "
              "routing tiers, else default_profile)")
@click.option("--input", "input_path", type=_path, help="Override input.path (as run)")
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

    loaded = load_pipeline(pipeline, date=_day(logical, None))
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


@main.command()
def schema() -> None:
    """Print the JSON Schema of a pipeline YAML (for editors).

    Exit codes: 0 printed, 2 bad usage."""
    from batchopt.config.pipeline import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


@main.group(cls=_Group)
def ledger() -> None:
    """Ask the cost ledger questions in SQL.

    Exit codes: 0 ok, 2 bad usage, a missing ledger or a failed query."""


@ledger.command("query")
@click.argument("sql")
@click.option("--ledger", "ledger_path", type=_path, required=True, help="Ledger folder")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
    show_default=True,
)
def ledger_query(sql: str, ledger_path: Path, fmt: str) -> None:
    """Run SQL over the ledger; the ledger is the view `ledger`.

    Exit codes: 0 printed, 2 bad usage, no ledger there or the query failed."""
    from batchopt.ledger.store import query

    click.echo(query(ledger_path, sql, fmt))


@main.command()
@click.option("--run-id", required=True, help="The run to report on")
@click.option("--ledger", "ledger_path", type=_path, default=Path("out/ledger"),
              show_default=True, help="Ledger folder")
@click.option("--pipeline", help="The run's pipeline (default: the one that has RUN_ID)")
@click.option("--outputs", "outputs_path", type=_path,
              help="The run's outputs file, for a sample of outputs beside their inputs")
@click.option("--sample", type=click.IntRange(0), default=10, show_default=True,
              help="Rows in that sample")
@click.option("-o", "--out", "out_path", type=_path, required=True, help="HTML file to write")
def report(run_id: str, ledger_path: Path, pipeline: str | None, outputs_path: Path | None,
           sample: int, out_path: Path) -> None:
    """Write one run's report as a single HTML file that opens offline: the savings waterfall,
    cost by model and tier, cost per day across runs, failures and sample outputs.

    Exit codes: 0 written, 2 unknown run id, missing ledger or bad usage."""
    from batchopt.report import write_report

    written = write_report(ledger_path, run_id, out_path, pipeline=pipeline,
                           outputs=outputs_path, sample_size=sample)
    click.echo(f"{written}: report of run {run_id} ({written.stat().st_size / 1e6:.1f} MB)")


@main.command()
@click.argument("input_path", metavar="INPUT", type=_path)
@click.option("--id-column", required=True, help="Column that identifies a row")
@click.option("--text-column", required=True, help="Column to compare")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.9,
              show_default=True, help="Cosine similarity for a semantic merge")
@click.option("--backend", type=click.Choice(["sentence-transformers", "model2vec"]),
              default="sentence-transformers", show_default=True)
@click.option("--model", help="Embedding model folder (default: the packaged all-MiniLM-L6-v2)")
@click.option("--no-semantic", is_flag=True, help="Exact dedup only")
@click.option("--guard-off", multiple=True,
              type=click.Choice(list(GUARD_NAMES)),
              help="Switch a guard off (repeatable)")
@click.option("--out", "out_path", type=_path, required=True, help="groups.parquet to write")
@click.option("--sample", type=int, default=5, show_default=True, help="Largest groups to show")
@limit_option
def dedup(
    input_path: Path, id_column: str, text_column: str, threshold: float, backend: str,
    model: str | None, no_semantic: bool, guard_off: tuple[str, ...], out_path: Path, sample: int,
    limit: int | None,
) -> None:
    """Look before paying: group INPUT's rows by exact and guarded semantic duplicates.

    Exit codes: 0 written, 2 bad input, model or usage."""
    from batchopt.cli.progress import print_dedup_report
    from batchopt.dedup.guards import GuardConfig
    from batchopt.dedup.step import SemanticSettings, dedup_table
    from batchopt.io.reader import read_rows
    from batchopt.io.writer import write_parquet_atomic

    rows = read_rows(input_path, id_column, [text_column], keep_columns=[text_column],
                     limit=limit)
    settings = None if no_semantic else SemanticSettings(
        threshold=threshold, backend=backend, model=model,
        guards=GuardConfig(**{name: False for name in guard_off}),
    )
    groups = dedup_table(rows, id_column, text_column, settings)
    write_parquet_atomic(groups, out_path)
    print_dedup_report(groups, rows.select(
        [id_column, text_column]).rename({id_column: "id", text_column: "text"}), out_path, sample,
        limit=limit)


@main.group(cls=_Group)
def router() -> None:
    """Train the router that the `classifier` routing strategy loads.

    Exit codes: 0 trained, 2 bad data, model or usage."""


@router.command("train")
@click.argument("data", type=_path)
@click.option("--out", "out_path", type=_path, required=True, help="Router file (.npz) to write")
@click.option("--backend", type=click.Choice(["sentence-transformers", "model2vec"]),
              default="sentence-transformers", show_default=True,
              help="Embedder; the pipeline's routing.classifier must name the same")
@click.option("--model", type=_path, help="Embedding model folder (default: the packaged one)")
@click.option("--seed", type=int, default=0, show_default=True)
def router_train(data: Path, out_path: Path, backend: str, model: Path | None, seed: int) -> None:
    """Train a router on DATA (CSV or Parquet: `text`, the rendered prompt, and `label`
    easy/hard, or `hard` true/false) and print its held-out AUC and threshold curve.

    Exit codes: 0 trained, 2 bad data, model or usage."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download a model at run time
    from batchopt.routing import load_training_table, train_router_from_texts
    from batchopt.services.embed import load_embedder

    texts, hard = load_training_table(data)
    embedder = load_embedder(backend, model)
    trained = train_router_from_texts(texts, hard, embedder, seed=seed)
    written = trained.save(out_path)
    m = trained.metrics
    click.echo(f"{written}: trained on {m['rows']:,} rows ({m['hard_rows']:,} hard) with "
               f"{embedder.name}; held-out AUC {m['auc']:.3f} on {m['test_rows']:,} rows")
    click.echo("threshold  share sent strong  hard rows caught")
    for point in m["curve"]:
        click.echo(f"{point['threshold']:>9.1f}  {point['share_strong']:>17.1%}  "
                   f"{point['hard_recall']:>16.1%}")


@main.command("fake-server")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Only 127.0.0.1 (or localhost): the fake server answers any API key")
@click.option("--port", type=int, default=8765, show_default=True)
@click.option("--latency-ms", type=float, default=0.0, show_default=True)
@click.option("--batch-seconds", type=float, default=1.0, show_default=True,
              help="A batch ends this long after it is created")
@click.option("--invalid-share", "invalid_share", multiple=True, metavar="MODEL=SHARE",
              help="Share of MODEL's JSON answers that fail their schema (MODEL * for every "
                   "model); repeatable")
@click.option("--wrong-share", "wrong_share", multiple=True, metavar="MODEL=SHARE",
              help="Share of MODEL's answers that are valid but wrong (the judge says no to "
                   "them); repeatable")
@click.option("--judge-reject-share", type=float, default=0.0, show_default=True,
              help="Share of the other answers the judge says no to as well")
def fake_server(host: str, port: int, latency_ms: float, batch_seconds: float,
                invalid_share: tuple[str, ...], wrong_share: tuple[str, ...],
                judge_reject_share: float) -> None:
    """Serve fake OpenAI and Anthropic endpoints on 127.0.0.1, to rehearse without spending.

    Runs until interrupted (Ctrl-C stops it cleanly). JSON answers are drawn per row from the
    schema; a judge call (a message asking for "yes or no") is answered yes, or no to the
    answers made wrong by --wrong-share. The quality settings may also come from the
    environment variable BATCHOPT_FAKE_QUALITY, a JSON object such as
    {"invalid_share": {"gpt-4o-mini": 0.1}, "wrong_share": {}, "judge_reject_share": 0};
    the options override it.

    Exit codes: 0 stopped, 2 a --host other than 127.0.0.1 or localhost, or bad usage."""
    from batchopt.errors import ConfigError
    from batchopt.fakeapi.quality import quality_from_options
    from batchopt.fakeapi.server import serve

    if host not in ("127.0.0.1", "localhost"):
        raise ConfigError(f"fake-server --host {host}: refused; the fake server answers any API "
                          "key, so it listens on 127.0.0.1 only")
    try:
        quality = quality_from_options(os.environ.get("BATCHOPT_FAKE_QUALITY"), invalid_share,
                                       wrong_share, judge_reject_share)
    except ValueError as exc:
        raise ConfigError(f"fake-server: {exc}") from None

    serve(port=port, latency_ms=latency_ms, batch_seconds=batch_seconds, quality=quality)


from batchopt.cli.distill import distill  # noqa: E402 - registered after main is defined

main.add_command(distill)
from batchopt.cli.selfhost import bench_tier  # noqa: E402 - registered after main is defined

main.add_command(bench_tier)
from batchopt.cli.doctor import doctor  # noqa: E402 - registered after main is defined

main.add_command(doctor)


if __name__ == "__main__":  # pragma: no cover
    main()
