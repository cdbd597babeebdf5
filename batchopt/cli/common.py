"""What the `batchopt` commands share: the group that turns errors into exit codes, the path
type, and the --engine, --date and --limit options. Imports only click, so `--help` is fast."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from batchopt.errors import BatchoptError

PATH = click.Path(path_type=Path)
# the guards of batchopt.dedup.guards.GUARD_ORDER (not imported here: --help stays fast)
GUARD_NAMES = ("numbers", "amounts", "codes", "dates", "negation", "opposites", "actions",
               "entities", "swaps")


class ErrorGroup(click.Group):
    """Turns BatchoptError into its one-line message and exit code (also when run alone)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BatchoptError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(error.exit_code)


def engine_options(command: Callable[..., None]) -> Callable[..., None]:
    """--engine and --ray-address, shared by `run` and `plan`."""
    command = click.option("--ray-address", help="engine ray: the cluster to join "
                           "(default: execution.ray_address, else a local Ray)")(command)
    return click.option("--engine", type=click.Choice(["local", "ray"]),
                        help="Override execution.engine: where the row-local stages run")(command)


def date_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """--date, the run's logical date, shared by the commands that load a pipeline."""
    return click.option(
        "--date", "logical", type=click.DateTime(formats=["%Y-%m-%d"]), metavar="YYYY-MM-DD",
        help="The night this run is for (a backfill's day; Airflow's ds): `${date}` in the "
             "YAML, the ledger's logical_date, the report's days. Default: the date the run id "
             "names (2026-12-01, scheduled__2026-12-01T...), else today (UTC)",
    )(command)


def logical_day(logical: dt.datetime | None, run_id: str | None) -> dt.date | None:
    """--date as a date, else the date the run id names (None: today, decided downstream)."""
    from batchopt.dates import date_of_run_id

    return logical.date() if logical is not None else date_of_run_id(run_id)


limit_option = click.option(
    "--limit", type=click.IntRange(min=1), metavar="N",
    help="Only the first N rows of the input (files in order, then rows): try a pipeline "
         "on a few rows; the ledger records it (row_limit)",
)
