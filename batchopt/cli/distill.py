"""`batchopt distill`: export a fine-tuning set from past runs, fine-tune a student, evaluate it.

Registered on the main command group by `batchopt.cli.main`; heavy modules load inside the commands.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from batchopt.cli.common import PATH, ErrorGroup

if TYPE_CHECKING:
    from batchopt.config.pipeline import LoadedPipeline
    from batchopt.distill.evaluate import EvalReport, RouterData


@click.group(cls=ErrorGroup)
def distill() -> None:
    """Teach a cheaper model from the strong tier's past answers.

    Exit codes: 0 ok, 1 a fine-tuning job failed, 2 bad config, input or usage, 75 a
    fine-tuning job still training; each subcommand's --help lists its own."""


def _since(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else value.replace(tzinfo=dt.UTC)


@distill.command("export")
@click.argument("pipeline", type=PATH)
@click.option("--out", "out_dir", type=PATH, required=True, help="Folder to write the set to")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]),
              help="Only runs from this UTC day on (YYYY-MM-DD)")
@click.option("--teacher", help="Tier whose answers teach (default: the strongest routing tier)")
@click.option("--input", "inputs", type=PATH, multiple=True,
              help="The input the runs read, if not input.path (repeatable: one per partition)")
@click.option("--ledger", "ledger_path", type=PATH, help="Override ledger.path")
@click.option("--cache-dir", type=PATH, help="Override cache.path")
@click.option("--validation-share", type=click.FloatRange(0.0, 0.9), default=0.2,
              show_default=True, help="Share of examples held out for validation")
@click.option("--min-examples", type=click.IntRange(1), default=10, show_default=True,
              help="Refuse with fewer training examples than this")
def export_command(pipeline: Path, out_dir: Path, since: dt.datetime | None,
                   teacher: str | None, inputs: tuple[Path, ...], ledger_path: Path | None,
                   cache_dir: Path | None, validation_share: float, min_examples: int) -> None:
    """Write PIPELINE's teacher answers from past runs as fine-tuning JSONL and Parquet.

    Only the teacher tier's paid answers that pass the validators, one per distinct request
    (never a dedup follower or a cache copy).

    Exit codes: 0 written, 2 too few examples (the counts are printed), bad config or usage."""
    from batchopt.config.pipeline import load_pipeline
    from batchopt.distill.export import export

    result = export(load_pipeline(pipeline), out_dir, teacher=teacher, since=_since(since),
                    inputs=list(inputs) or None, ledger=ledger_path, cache_dir=cache_dir,
                    validation_share=validation_share, min_examples=min_examples)
    collection = result.collection
    click.echo(f"{result.out}: {result.train} training and {result.validation} validation "
               f"example(s) from tier '{collection.teacher}'")
    click.echo(f"  {collection.describe()}")
    for note in collection.notes:
        click.echo(f"  note: {note}")


@distill.command("train")
@click.argument("pipeline", type=PATH)
@click.option("--data", "data_dir", type=PATH, required=True,
              help="A folder `distill export` wrote (train.jsonl, validation.jsonl)")
@click.option("--tier", required=True,
              help="The openai profile whose endpoint and key run the job (and whose model is "
              "the default base)")
@click.option("--base-model", help="The model to fine-tune (default: the tier's model)")
@click.option("--suffix", help="Up to 64 characters put in the fine-tuned model's name")
@click.option("--profile-name", default="student", show_default=True,
              help="Name of the profile in the printed YAML")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Block until the job ends, or exit 75 while it trains")
@click.option("--poll-seconds", type=click.FloatRange(0.01), default=30.0, show_default=True)
@click.option("--cache-dir", type=PATH, help="Override cache.path (where the job's state lives)")
def train_command(pipeline: Path, data_dir: Path, tier: str, base_model: str | None,
                  suffix: str | None, profile_name: str, wait: bool, poll_seconds: float,
                  cache_dir: Path | None) -> None:
    """Fine-tune a student on an exported set; run again to move the same job on.

    The job id is recorded the moment it is created, so a re-run (after a kill, or by cron with
    --no-wait) polls that job and never creates a second.

    Exit codes: 0 done (the model id and a profile that uses it are printed), 1 the job failed,
    2 bad config, data or usage, 75 still training."""
    import json

    from batchopt.config.pipeline import load_pipeline
    from batchopt.distill.train import TrainOptions, profile_snippet, train

    loaded = load_pipeline(pipeline)
    options = TrainOptions(data=data_dir, tier=tier, base_model=base_model, suffix=suffix,
                           wait=wait, poll_seconds=poll_seconds, cache_dir=cache_dir)
    outcome = train(loaded, options)
    how = "created" if outcome.created else "adopted by its tag" if outcome.adopted else "recorded"
    if outcome.fine_tuned_model is None:
        click.echo(f"fine-tuning job {outcome.job_id} ({how}) is {outcome.status}; run the same "
                   "command again to follow it (it will not be created twice)")
        sys.exit(outcome.exit_code)
    tokens = f", {outcome.trained_tokens:,} trained tokens" if outcome.trained_tokens else ""
    click.echo(f"fine-tuned model: {outcome.fine_tuned_model} (job {outcome.job_id}{tokens})")
    manifest = data_dir / "manifest.json"
    teacher = json.loads(manifest.read_text()).get("teacher") if manifest.is_file() else None
    click.echo("a profile that uses it (add it to the pipeline, then name it as a tier or "
               f"evaluate it with `batchopt distill eval --student {profile_name}`):\n")
    click.echo(profile_snippet(loaded, tier, outcome.fine_tuned_model, profile_name, teacher))


@distill.command("eval")
@click.argument("pipeline", type=PATH)
@click.option("--student", required=True, help="The profile to measure (e.g. a fine-tuned one)")
@click.option("--teacher", help="Tier whose answers are the reference (default: the strongest)")
@click.option("--sample", type=click.IntRange(1), default=200, show_default=True,
              help="Rows to ask the student (validation-split rows first)")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]),
              help="Only runs from this UTC day on (YYYY-MM-DD)")
@click.option("--input", "inputs", type=PATH, multiple=True,
              help="The input the runs read, if not input.path (repeatable)")
@click.option("--ledger", "ledger_path", type=PATH, help="Override ledger.path")
@click.option("--cache-dir", type=PATH, help="Override cache.path")
@click.option("--kind", type=click.Choice(["auto", "json", "label", "text"]), default="auto",
              show_default=True, help="How answers are compared (auto: json with a schema, "
              "label for answers of up to 3 words, else text by embedding similarity)")
@click.option("--agree-at", type=click.FloatRange(0.0, 1.0), default=0.9, show_default=True,
              help="text: the cosine similarity from which two answers agree")
@click.option("--router-data", "router_data", type=PATH,
              help="Also write the routing classifier's training table here (.parquet or .csv): "
              "each row's prompt, hard when the student disagreed or failed a validator")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON")
def eval_command(pipeline: Path, student: str, teacher: str | None, sample: int,
                 since: dt.datetime | None, inputs: tuple[Path, ...], ledger_path: Path | None,
                 cache_dir: Path | None, kind: str, agree_at: float, router_data: Path | None,
                 as_json: bool) -> None:
    """Ask STUDENT the rows the teacher answered in PIPELINE's past runs and compare.

    Reports agreement with the teacher, the validators' pass rate and what the runs would have
    cost with the student as the cheap tier. Answers go to the response cache: a re-run pays
    for nothing it paid for before. --router-data writes what `batchopt router train` needs to
    train a router that sends the student's hard rows to the teacher.

    Exit codes: 0 reported, 2 bad config, input or usage."""
    import json

    from batchopt.config.pipeline import load_pipeline
    from batchopt.distill.evaluate import check_router_data_path, evaluate, write_router_data

    if router_data is not None:
        check_router_data_path(router_data)
    loaded = load_pipeline(pipeline)
    report = evaluate(loaded, student, teacher=teacher, sample=sample,
                      since=_since(since), inputs=list(inputs) or None, ledger=ledger_path,
                      cache_dir=cache_dir, kind=kind, agree_at=agree_at)
    written = write_router_data(report, router_data) if router_data is not None else None
    if as_json:
        found = report.to_dict()
        if written is not None:
            found["router_data"] = {"path": str(written.path), "rows": written.rows,
                                    "hard": written.hard,
                                    "train": _router_train_command(loaded, written.path)}
        click.echo(json.dumps(found, indent=2))
        return
    cost = report.cost
    rejected = ", ".join(f"{name} {n}" for name, n in sorted(report.rejections.items()))
    click.echo(f"student '{report.student}' ({report.student_model}) on {report.sample} row(s) "
               f"that tier '{report.teacher}' answered ({report.held_out} in the export's "
               "validation split)")
    click.echo(f"  sent {report.sent} request(s) for ${report.spent_usd:.6f} "
               f"({report.sample - report.sent} answered by the response cache), "
               f"{report.failed} failed")
    click.echo(f"  agreement: {report.agreement.describe()}")
    click.echo(f"  validators pass {report.passed}/{report.sample} ({report.pass_rate:.1%})"
               + (f"; rejected: {rejected}" if rejected else ""))
    click.echo(f"  cost: the runs spent ${cost.actual_usd:.6f}; with the student as the cheap "
               f"tier they would have cost ${cost.would_be_usd:.6f}")
    click.echo(f"    assumes: {cost.assumptions}")
    for note in report.notes:
        click.echo(f"  note: {note}")
    if written is not None:
        _echo_router_data(loaded, report, written)


def _router_path(data: Path) -> Path:
    return data.with_name(f"{data.stem}.router.npz")


def _router_train_command(loaded: LoadedPipeline, data: Path) -> str:
    """`batchopt router train` for `data`, with the embedder the pipeline's classifier names."""
    import shlex

    routing = loaded.config.routing
    classifier = routing.classifier if routing is not None else None
    command = ["batchopt", "router", "train", str(data), "--out", str(_router_path(data))]
    if classifier is not None:
        command += ["--backend", classifier.backend]
        if classifier.model:
            command += ["--model", str(loaded.resolve(classifier.model))]
    return shlex.join(command)


def _echo_router_data(loaded: LoadedPipeline, report: EvalReport,
                      written: RouterData) -> None:
    held_out = sum(1 for r in report.rows if r.held_out)
    click.echo(f"router data: {written.path}: {written.rows} row(s), {written.hard} hard (the "
               f"student disagreed with '{report.teacher}' or a validator rejected its answer); "
               f"{written.rows - held_out} row(s) are in the export's training split, which the "
               "student learnt from (column held_out)")
    click.echo(f"  train a router on it:  {_router_train_command(loaded, written.path)}")
    click.echo(f"  then put '{report.student}' first and '{report.teacher}' second:")
    click.echo(f"    routing: {{strategy: classifier, tiers: [{report.student}, {report.teacher}], "
               f"classifier: {{path: {_router_path(written.path)}}}}}")
