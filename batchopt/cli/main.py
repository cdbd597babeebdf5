"""The `batchopt` command: parse arguments, call the runner, map errors to exit codes.

Heavy modules (polars, duckdb, the SDKs) are imported inside the commands, so `batchopt --help`
answers at once.
"""

from __future__ import annotations

import click

from batchopt.cli.common import ErrorGroup
from batchopt.cli.distill import distill
from batchopt.cli.doctor import doctor
from batchopt.cli.ledger_commands import ledger, report
from batchopt.cli.plan_commands import plan, schema, validate
from batchopt.cli.run_commands import run, status
from batchopt.cli.selfhost import bench_tier
from batchopt.cli.tool_commands import dedup, fake_server, router


@click.group(cls=ErrorGroup)
@click.version_option(package_name="batchopt")
def main() -> None:
    """Offline batch LLM jobs that cost less without returning less.

    Exit codes: 0 ok, 1 failed rows or a failed check, 2 usage, config or input error, 3 over
    budget, 75 pending, 130 interrupted; each command's --help lists the ones it returns."""


for _command in (run, status, plan, validate, schema, ledger, report, dedup, router, fake_server,
                 distill, bench_tier, doctor):
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
