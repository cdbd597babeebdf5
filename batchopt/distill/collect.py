"""The teacher's answers in past runs: which rows the strong tier answered, with the prompt it was
sent (rebuilt) and the answer it gave (from the response cache).

Runs keep their answers in the response cache (by request key) and say in the ledger which row
was answered how; neither keeps the prompt. So the prompts are rebuilt the way a run builds them
(`runner.prepare` on the pipeline's input, or on `--input` for a past day's partition: read,
compress, render, dedup) and each teacher row's request is made again on the teacher tier: its
key finds the answer in the cache, and the answer's provider response id must be the one the
ledger recorded for that row, so no other call's answer is taken for it.

A row is a teacher example only if, in the ledger, it was answered by the teacher tier and paid
for by that run (`dedup = 'none'`, `mode` online or batch, `status = 'ok'`, no
`cached_from_run`): never a dedup follower, never a cache copy. Its answer must pass the
pipeline's validators again (`routing.validators`, except the judge, which needs a call; a
cascade never validates its last tier's answers), and always: not empty, not cut at
`max_tokens`, valid against `prompt.json_schema` when there is one. A confidence validator cannot
judge a cached answer (log-probabilities are not kept) and passes it; `notes` says so. Requests
are distinct: a request answered in several runs is one example (the earliest).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from batchopt.hashing import stable_hash
from batchopt.records import Request, Result

if TYPE_CHECKING:
    from batchopt.config.pipeline import LoadedPipeline
    from batchopt.execute.cache import ResponseCache
    from batchopt.ledger.pricing import PriceTable
    from batchopt.run.runner import Plan, RunOptions
    from batchopt.run.tiers import Tier

PAID = ("online", "batch")
_LEDGER_COLUMNS = {
    "run_at": pl.Datetime("us", "UTC"), "row_id": pl.String, "dedup": pl.String,
    "tier": pl.String, "model": pl.String, "mode": pl.String, "status": pl.String,
    "cached_from_run": pl.String, "request_id": pl.String, "cost_usd": pl.Float64,
    "earlier_attempts_usd": pl.Float64, "estimated_input_tokens": pl.Int64,
}


@dataclass(frozen=True)
class TeacherExample:
    """One distinct request the teacher answered well in a past run."""

    run_id: str
    row_id: str
    group_id: str
    request: Request
    result: Result  # the cached answer

    @property
    def key(self) -> str:
        return self.request.key


@dataclass
class Collection:
    """The teacher examples, what was left out and why, and the plan the prompts came from."""

    pipeline: str
    teacher: str
    examples: list[TeacherExample]
    counts: dict[str, int]  # step -> rows (see `describe`)
    runs: list[str]
    plans: list[Plan]  # one per input read (the first is the pipeline's, or the first --input)
    ledger: pl.DataFrame  # the window's ledger rows (every tier)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line: how the ledger's rows came down to the examples."""
        c = self.counts
        parts = [
            f"{c['ledger_rows']} ledger row(s) in {len(self.runs)} run(s)",
            f"{c['teacher_rows']} answered by tier '{self.teacher}'",
            f"{c['followers']} dedup follower(s), {c['cache_copies']} cache copies and "
            f"{c['failed']} failed row(s) left out",
            f"{c['paid']} paid teacher answer(s)",
            f"{c['not_rebuilt']} not in the input as read now",
            f"{c['not_cached']} not found in the response cache",
            f"{c['failed_validation']} failed validation",
            f"{c['repeats']} repeat(s) of a request",
            f"{len(self.examples)} example(s)",
        ]
        return "; ".join(parts)


def split_unit(key: str) -> float:
    """A deterministic number in [0, 1) for a request key (the train/validation split)."""
    return int(stable_hash(["distill-split", key], 12), 16) / 16.0**12


def teacher_tier(loaded: LoadedPipeline, asked: str | None) -> str:
    """The tier whose answers teach: `asked`, else the strongest (last) routing tier, else the
    default profile."""
    from batchopt.run.tiers import tier_names

    if asked:
        loaded.profile(asked)
        return asked
    return tier_names(loaded, None)[0][-1]


def read_ledger(root: Path, pipeline: str, since: dt.datetime | None) -> pl.DataFrame:
    """The pipeline's ledger rows (the columns this package uses, and `run_id`), from `since`."""
    files = sorted(Path(root).glob(f"pipeline={pipeline}/run_id=*/part.parquet"))
    if not files:
        return pl.DataFrame(schema={**_LEDGER_COLUMNS, "run_id": pl.String})
    frame = pl.concat([
        pl.scan_parquet(f, schema=_LEDGER_COLUMNS, missing_columns="insert",
                        extra_columns="ignore", hive_partitioning=False)
        .with_columns(pl.lit(f.parent.name.removeprefix("run_id=")).alias("run_id"))
        for f in files
    ]).collect()
    if since is not None:
        frame = frame.filter(pl.col("run_at") >= since.replace(tzinfo=dt.UTC))
    return frame.sort("run_at", "run_id", "row_id")


def collect(
    loaded: LoadedPipeline,
    *,
    teacher: str | None = None,
    since: dt.datetime | None = None,
    inputs: list[Path] | None = None,
    ledger: Path | None = None,
    cache_dir: Path | None = None,
    env: dict[str, str] | None = None,
) -> Collection:
    """The teacher examples of `loaded`'s past runs from `since` (see the module docstring).

    `inputs` are the inputs the runs read (default: the pipeline's `input.path`); each is read
    and rendered as a run would. Reads the ledger and the response cache; sends nothing."""
    from batchopt.execute.cache import ResponseCache
    from batchopt.run.runner import RunOptions, prepare

    cfg = loaded.config
    env = dict(os.environ) if env is None else env
    name = teacher_tier(loaded, teacher)
    ledger_root = ledger or loaded.resolve(cfg.ledger.path)
    frame = read_ledger(ledger_root, cfg.name, since)
    paid, counts = _paid_rows(frame, name)
    options = RunOptions(ledger=ledger, cache_dir=cache_dir)
    plans = [prepare(loaded, _with_input(options, path), env, require_keys=False)
             for path in (inputs or [None])]
    tier = plans[0].tiers.get(name) or build_tier(loaded, name, plans[0].prices, env)
    requests: dict[str, tuple[str, Request]] = {}  # row_id -> (group, request)
    for each in plans:
        requests.update(rebuild(each, tier, paid["row_id"].unique().to_list()))
    folder = (cache_dir or loaded.resolve(cfg.cache.path)) / cfg.name
    cache = ResponseCache(folder) if (folder / "cache.db").exists() else None
    validators, notes = validators_for(loaded)
    try:
        examples = _examples(paid, requests, cache, validators, counts)
    finally:
        if cache is not None:
            cache.close()
    runs = frame["run_id"].unique(maintain_order=True).to_list()
    return Collection(cfg.name, name, examples, counts, runs, plans, frame, notes)


def _paid_rows(frame: pl.DataFrame, tier: str) -> tuple[pl.DataFrame, dict[str, int]]:
    """The ledger rows `tier` answered itself and successfully, and the counts of the rows it
    had (all, followers, cache copies, failed, paid)."""
    rows = frame.filter(pl.col("tier") == tier)
    counts = {
        "ledger_rows": frame.height, "teacher_rows": rows.height,
        "followers": rows.filter(pl.col("dedup") != "none").height,
        "cache_copies": rows.filter((pl.col("dedup") == "none") & (
            (pl.col("mode") == "cache") | pl.col("cached_from_run").is_not_null())).height,
    }
    paid = rows.filter((pl.col("dedup") == "none") & pl.col("mode").is_in(PAID)
                       & pl.col("cached_from_run").is_null())
    counts["failed"] = paid.filter(pl.col("status") != "ok").height
    paid = paid.filter(pl.col("status") == "ok")
    counts["paid"] = paid.height
    return paid, counts


def _examples(
    paid: pl.DataFrame,
    requests: dict[str, tuple[str, Request]],
    cache: ResponseCache | None,
    validators: list[Any],
    counts: dict[str, int],
) -> list[TeacherExample]:
    """One example per distinct request among the `paid` rows whose cached answer is the one
    the run got and passes the validators; `counts` gets why the others were left out."""
    examples: list[TeacherExample] = []
    seen: set[str] = set()
    for key in ("not_rebuilt", "not_cached", "failed_validation", "repeats"):
        counts[key] = 0
    for run_id, row_id, request_id in paid.select("run_id", "row_id", "request_id").iter_rows():
        if row_id not in requests:
            counts["not_rebuilt"] += 1
            continue
        group, request = requests[row_id]
        cached = cache.get(request.key) if cache is not None else None
        if cached is None or not _same_answer(cached, run_id, request_id):
            counts["not_cached"] += 1
            continue
        if not passes(validators, request, cached):
            counts["failed_validation"] += 1
            continue
        if request.key in seen:
            counts["repeats"] += 1
            continue
        seen.add(request.key)
        examples.append(TeacherExample(run_id, row_id, group, request, cached))
    return examples


def _with_input(options: RunOptions, path: Path | None) -> RunOptions:
    return options if path is None else replace(options, input=path)


def build_tier(loaded: LoadedPipeline, name: str, prices: PriceTable, env: dict[str, str],
               *, require_key: bool = False) -> Tier:
    """Profile `name` as a tier (for a profile the routing does not list), priced by `prices`;
    `require_key`: ConfigError when its API key is not set (it is about to be sent to)."""
    from batchopt.run.settings import tier_settings
    from batchopt.run.tiers import make_tier

    loaded.profile(name)
    settings = tier_settings(loaded, name, env, require_key=require_key)
    return make_tier(loaded, name, settings, prices)


def rebuild(plan: Plan, tier: Tier, row_ids: list[str]) -> dict[str, tuple[str, Request]]:
    """row_id -> (group, the request `tier` is sent for it) for the representatives among
    `row_ids` in `plan`'s rows (a row id that several inputs hold: the last one read)."""
    from batchopt.run.tiers import escalated_requests

    id_column = plan.pipeline.config.input.id_column
    reps = plan.rows.filter(pl.col("dedup") == "none").select(
        pl.col(id_column).cast(pl.String).alias("row_id"), "group_id")
    wanted = reps.filter(pl.col("row_id").is_in(row_ids))
    group_row = dict(zip(wanted["group_id"].to_list(), wanted["row_id"].to_list(), strict=True))
    if not group_row:
        return {}
    built = escalated_requests(plan.rows, list(group_row), tier, id_column)
    return {group_row[g]: (g, request) for g, request in built.items()}


def _same_answer(cached: Result, run_id: str, request_id: str | None) -> bool:
    """Whether the cached answer is the one the ledger row recorded."""
    if not cached.ok or not cached.text:
        return False
    if request_id and cached.request_id:
        return cached.request_id == request_id
    return cached.paid_run_id == run_id


def validators_for(loaded: LoadedPipeline) -> tuple[list[Any], list[str]]:
    """The pipeline's local validators plus the checks every example gets; notes on what cannot
    be checked again."""
    from batchopt.routing import build_validators
    from batchopt.routing.validators import (
        ConfidenceValidator,
        FinishReasonValidator,
        JsonSchemaValidator,
        JudgeValidator,
    )

    cfg = loaded.config
    configured = cfg.routing.validators if cfg.routing is not None else []
    validators: list[Any] = list(build_validators(configured, cfg.prompt.json_schema))
    notes = []
    if any(isinstance(v, JudgeValidator) for v in validators):
        notes.append("the judge validator was not asked again (it needs a model call)")
    if any(isinstance(v, ConfidenceValidator) for v in validators):
        notes.append("the confidence validator cannot judge cached answers (no logprobs kept)")
    validators.append(FinishReasonValidator(("length",)))
    if cfg.prompt.json_schema is not None:
        validators.append(JsonSchemaValidator(cfg.prompt.json_schema))
    return validators, notes


def passes(validators: list[Any], request: Request, result: Result) -> bool:
    """Whether `result` passes every local validator and is not empty."""
    from batchopt.routing import validate

    return bool((result.text or "").strip()) and validate(validators, request, result).ok
