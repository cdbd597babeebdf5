"""`batchopt run` and `batchopt status`: run a pipeline, and say where a run stands.

Registered on the `batchopt` group by `batchopt.cli.main`; heavy modules load inside the
commands, so `batchopt --help` stays fast.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import click

from batchopt.cli.common import PATH, date_option, engine_options, limit_option, logical_day
from batchopt.errors import EXIT_INTERRUPTED


@click.command()
@click.argument("pipeline", type=PATH)
@click.option("--profile", help="Model set-up from the YAML's profiles (default: default_profile)")
@click.option("--run-id", help="Name this run; re-using an id resumes and replaces that run")
@click.option("--input", "input_path", type=PATH, help="Override input.path")
@click.option("--output", "output_path", type=PATH, help="Override output.path")
@click.option("--ledger", "ledger_path", type=PATH, help="Override ledger.path")
@click.option("--cache-dir", type=PATH, help="Override cache.path")
@click.option("--mode", type=click.Choice(["online", "batch", "auto"]),
              help="Override execution.mode")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="batch: block until every batch is collected, or exit 75 while any is out")
@click.option("--quiet", is_flag=True,
              help="No progress: neither the bar on a terminal nor the lines in a log")
@limit_option
@date_option
@engine_options
def run(pipeline: Path, profile: str | None, run_id: str | None, input_path: Path | None,
        output_path: Path | None, ledger_path: Path | None, cache_dir: Path | None,
        mode: str | None, wait: bool, quiet: bool, limit: int | None,
        logical: dt.datetime | None, engine: str | None, ray_address: str | None) -> None:
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

    day = logical_day(logical, run_id)
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


@click.command()
@click.argument("pipeline", type=PATH)
@click.option("--profile", help="Model set-up from the YAML's profiles (default: default_profile)")
@click.option("--run-id", required=True, help="The run to report on")
@click.option("--input", "input_path", type=PATH, help="Override input.path (unused; as run)")
@click.option("--output", "output_path", type=PATH, help="Override output.path (as run)")
@click.option("--ledger", "ledger_path", type=PATH, help="Override ledger.path (as run)")
@click.option("--cache-dir", type=PATH, help="Override cache.path (where runs keep state)")
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

    day = logical_day(logical, run_id)
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
