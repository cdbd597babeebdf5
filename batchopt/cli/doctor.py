"""`batchopt doctor`: one line per component a pipeline may use, and what to do when it fails.

Registered on the `batchopt` group by `batchopt.cli.main`. The checks live in
`batchopt.doctor` and are imported inside the command, so `batchopt --help` stays fast; this
module only prints.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from batchopt.cli.common import PATH


@click.command("doctor")
@click.argument("pipeline", type=PATH, required=False)
@click.option("--profile", help="Check the components of this profile only (as run --profile)")
@click.option("--cache-dir", type=PATH,
              help="The cache folder to test (default: the pipeline's cache.path, else out/cache)")
@click.option("--build", is_flag=True,
              help="Build the model2vec model now if it is missing (about 30 s, offline)")
@click.option("--timeout", type=click.FloatRange(1), default=120.0, show_default=True,
              help="Seconds the llama.cpp check may take to load the model and generate")
def doctor(pipeline: Path | None, profile: str | None, cache_dir: Path | None, build: bool,
           timeout: float) -> None:
    """Check that every component a pipeline may use is installed and works: Python, the
    openai and anthropic SDKs (against constraints.txt in a checkout), llama.cpp and its GGUF
    model (loaded and run in a subprocess, so a crashing build is reported, not fatal), the
    sentence-transformers and model2vec embedders, faiss, duckdb, polars and the cache folder.

    With PIPELINE, it must validate, and only the components it uses are required (the others
    print `skip`). A model2vec model not built yet is a warning: the first run that needs it
    builds it, or --build builds it now.

    Exit codes: 0 no check failed (warnings allowed), 1 a check failed (a PIPELINE that does
    not validate is a failed check), 2 bad usage."""
    from batchopt.doctor import DoctorOptions, run_checks

    options = DoctorOptions(pipeline=pipeline, profile=profile, cache_dir=cache_dir, build=build,
                            timeout=timeout)
    failed = False
    for check in run_checks(options):
        click.echo(check.line())
        failed = failed or check.failed
    sys.exit(1 if failed else 0)
