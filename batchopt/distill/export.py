"""`batchopt distill export`: the teacher's good answers of past runs as a fine-tuning set.

Writes into the output folder, each file atomically:

    train.jsonl, validation.jsonl   OpenAI fine-tuning chat format, one example a line:
                                    {"messages": [{"role": "system", ...}, {"role": "user", ...},
                                    {"role": "assistant", ...}]} (no system message when the
                                    teacher's prompt has no system text)
    examples.parquet                the same examples with their split, run, row, request key,
                                    teacher model and token counts
    manifest.json                   what was exported from what, and what was left out and why

Which rows qualify is `collect`'s business. The split is deterministic: a request goes to
validation when a hash of its key falls under `validation_share` (so an example stays on its side
when more runs are added), with at least one validation example when the share is not 0. Too few
examples for training is refused before anything is written (exit 2), with the counts.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from batchopt.distill.collect import Collection, TeacherExample, collect, split_unit
from batchopt.errors import InputError
from batchopt.io.writer import write_parquet_atomic, write_text_atomic

if TYPE_CHECKING:
    from batchopt.config.pipeline import LoadedPipeline

MIN_EXAMPLES = 10  # OpenAI's minimum for a fine-tuning job
VALIDATION_SHARE = 0.2
TRAIN_FILE, VALIDATION_FILE = "train.jsonl", "validation.jsonl"
EXAMPLES_FILE, MANIFEST_FILE = "examples.parquet", "manifest.json"


class NotEnoughDataError(InputError):
    """Too few teacher examples to fine-tune on; nothing was written."""


@dataclass(frozen=True)
class ExportResult:
    """What `export` wrote."""

    out: Path
    train: int
    validation: int
    collection: Collection


def split(examples: list[TeacherExample], validation_share: float
          ) -> tuple[list[TeacherExample], list[TeacherExample]]:
    """(train, validation), deterministic by request key (see the module docstring)."""
    validation = [e for e in examples if split_unit(e.key) < validation_share]
    if validation_share > 0 and not validation and len(examples) > 1:
        validation = [min(examples, key=lambda e: split_unit(e.key))]
    chosen = {e.key for e in validation}
    return [e for e in examples if e.key not in chosen], validation


def messages(example: TeacherExample) -> list[dict[str, str]]:
    """The example as fine-tuning chat messages."""
    request = example.request
    said = [{"role": "system", "content": request.system}] if request.system else []
    return [*said, {"role": "user", "content": request.user},
            {"role": "assistant", "content": example.result.text or ""}]


def export(
    loaded: LoadedPipeline,
    out: Path,
    *,
    teacher: str | None = None,
    since: dt.datetime | None = None,
    inputs: list[Path] | None = None,
    ledger: Path | None = None,
    cache_dir: Path | None = None,
    validation_share: float = VALIDATION_SHARE,
    min_examples: int = MIN_EXAMPLES,
    env: dict[str, str] | None = None,
) -> ExportResult:
    """Collect the teacher examples and write them to `out` (see the module docstring)."""
    collection = collect(loaded, teacher=teacher, since=since, inputs=inputs, ledger=ledger,
                         cache_dir=cache_dir, env=env)
    train, validation = split(collection.examples, validation_share)
    if len(train) < min_examples:
        window = f" since {since:%Y-%m-%d}" if since else ""
        raise NotEnoughDataError(
            f"too little data to fine-tune on: {len(collection.examples)} usable example(s) "
            f"of pipeline '{collection.pipeline}'{window} ({len(train)} for training, "
            f"{len(validation)} for validation), at least {min_examples} needed for training. "
            f"{collection.describe()}. Run the pipeline on more rows, or widen --since; nothing "
            "was written"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / TRAIN_FILE, _jsonl(train))
    write_text_atomic(out / VALIDATION_FILE, _jsonl(validation))
    write_parquet_atomic(_table(train, validation, collection.teacher), out / EXAMPLES_FILE)
    manifest = {
        "pipeline": collection.pipeline, "teacher": collection.teacher,
        "teacher_models": sorted({e.request.model for e in collection.examples}),
        "since": since.strftime("%Y-%m-%d") if since else None, "runs": collection.runs,
        "train": len(train), "validation": len(validation),
        "validation_share": validation_share, "counts": collection.counts,
        "notes": collection.notes, "summary": collection.describe(),
        "written_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    write_text_atomic(out / MANIFEST_FILE,
                      json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return ExportResult(out, len(train), len(validation), collection)


def _jsonl(examples: list[TeacherExample]) -> str:
    return "".join(json.dumps({"messages": messages(e)}, ensure_ascii=False) + "\n"
                   for e in examples)


def _table(train: list[TeacherExample], validation: list[TeacherExample],
           teacher: str) -> pl.DataFrame:
    records: list[dict[str, Any]] = []
    for name, examples in (("train", train), ("validation", validation)):
        for e in examples:
            records.append({
                "split": name, "run_id": e.run_id, "row_id": e.row_id, "request_key": e.key,
                "teacher_tier": teacher, "provider": e.request.provider,
                "model": e.request.model, "system": e.request.system, "user": e.request.user,
                "answer": e.result.text, "input_tokens": e.result.usage.input_tokens,
                "output_tokens": e.result.usage.output_tokens,
            })
    return pl.DataFrame(records, schema={
        "split": pl.String, "run_id": pl.String, "row_id": pl.String, "request_key": pl.String,
        "teacher_tier": pl.String, "provider": pl.String, "model": pl.String,
        "system": pl.String, "user": pl.String, "answer": pl.String,
        "input_tokens": pl.Int64, "output_tokens": pl.Int64,
    })


