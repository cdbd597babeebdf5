"""`batchopt ledger query` and `batchopt report`: ask the cost ledger in SQL, and write a run's
HTML report.

Registered on the `batchopt` group by `batchopt.cli.main`; heavy modules load inside the
commands, so `batchopt --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from batchopt.cli.common import PATH, ErrorGroup


@click.group(cls=ErrorGroup)
def ledger() -> None:
    """Ask the cost ledger questions in SQL.

    Exit codes: 0 ok, 2 bad usage, a missing ledger or a failed query."""


@ledger.command("query")
@click.argument("sql")
@click.option("--ledger", "ledger_path", type=PATH, required=True, help="Ledger folder")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
    show_default=True,
)
def ledger_query(sql: str, ledger_path: Path, fmt: str) -> None:
    """Run SQL over the ledger; the ledger is the view `ledger`.

    Exit codes: 0 printed, 2 bad usage, no ledger there or the query failed."""
    from batchopt.ledger.store import query

    click.echo(query(ledger_path, sql, fmt))


@click.command()
@click.option("--run-id", required=True, help="The run to report on")
@click.option("--ledger", "ledger_path", type=PATH, default=Path("out/ledger"),
              show_default=True, help="Ledger folder")
@click.option("--pipeline", help="The run's pipeline (default: the one that has RUN_ID)")
@click.option("--outputs", "outputs_path", type=PATH,
              help="The run's outputs file, for a sample of outputs beside their inputs")
@click.option("--sample", type=click.IntRange(0), default=10, show_default=True,
              help="Rows in that sample")
@click.option("-o", "--out", "out_path", type=PATH, required=True, help="HTML file to write")
def report(run_id: str, ledger_path: Path, pipeline: str | None, outputs_path: Path | None,
           sample: int, out_path: Path) -> None:
    """Write one run's report as a single HTML file that opens offline: the savings waterfall,
    cost by model and tier, cost per day across runs, failures and sample outputs.

    Exit codes: 0 written, 2 unknown run id, missing ledger or bad usage."""
    from batchopt.report import write_report

    written = write_report(ledger_path, run_id, out_path, pipeline=pipeline,
                           outputs=outputs_path, sample_size=sample)
    click.echo(f"{written}: report of run {run_id} ({written.stat().st_size / 1e6:.1f} MB)")
