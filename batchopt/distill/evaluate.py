"""`batchopt distill eval`: a candidate tier in the shadow of the teacher, on past rows.

The sample is the teacher examples `collect` finds (the teacher's validated, paid answers of past
runs), ordered by the export's split hash so that rows in the export's validation split (by the
default share, 0.2) come first: a student trained on an export is measured on rows it did not
learn from before any it did. The student is asked the same rows, each in its own profile's
prompt, through the online executor with the response cache (run id `distill-eval`): a re-run
pays for nothing it paid for before.

Reported: agreement with the teacher (`agreement`), the share of the student's answers the
pipeline's validators pass (the cascade's, plus not cut at max_tokens, not empty, the schema when
there is one; the judge is not asked), and what the window's runs would have cost with the
student as their cheap tier (`CostWhatIf`, whose `assumptions` say how it is figured).

Each sampled row's verdict (`RowVerdict`) can be written as a training table for the routing
classifier (`write_router_data`, read by `batchopt router train`): the row's rendered prompt (the
`prompt_user` the router sees at run time) and `hard` = the student disagreed with the teacher or
failed a validator. A router trained on it sends the rows the student would get wrong to the
teacher, with the student as the cheap tier.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from batchopt.distill.agreement import (
    AGREE_AT,
    Agreement,
    choose_kind,
    json_agreement,
    label_agreement,
    text_agreement,
)
from batchopt.distill.collect import PAID, build_tier, collect, rebuild, split_unit, validators_for
from batchopt.distill.export import VALIDATION_SHARE, NotEnoughDataError
from batchopt.errors import InputError
from batchopt.io.writer import write_atomic, write_parquet_atomic
from batchopt.records import Request, Result

if TYPE_CHECKING:
    from batchopt.config.pipeline import LoadedPipeline
    from batchopt.distill.collect import Collection, TeacherExample
    from batchopt.execute.cache import ResponseCache
    from batchopt.ledger.pricing import PriceTable
    from batchopt.run.tiers import Tier

EVAL_RUN_ID = "distill-eval"
DEFAULT_SAMPLE = 200
ROUTER_DATA_SUFFIXES = (".parquet", ".pq", ".csv")  # what `router train` reads


@dataclass(frozen=True)
class CostWhatIf:
    """The window's runs again, with the student as the cheap tier in front of the teacher."""

    paid_rows: int  # distinct requests the runs paid a provider for (every tier)
    actual_usd: float  # what the runs spent
    teacher_row_usd: float  # the teacher's mean cost per answer in those runs (ledger)
    student_row_usd: float  # the student's mean cost per answer in the sample
    escalation_share: float  # student answers the validators reject, sent on to the teacher
    assumptions: str

    @property
    def would_be_usd(self) -> float:
        per_row = self.student_row_usd + self.escalation_share * self.teacher_row_usd
        return self.paid_rows * per_row


@dataclass(frozen=True)
class RowVerdict:
    """One sampled row: what the router would see, and how the student did on it."""

    row_id: str
    text: str  # the row's rendered prompt (`prompt_user`), what a router embeds
    held_out: bool  # in the export's validation split
    agreed: bool  # the student's answer agrees with the teacher's
    rejected: str | None  # the validator that rejected the student's answer (None: passed)

    @property
    def hard(self) -> bool:
        return not self.agreed or self.rejected is not None

    @property
    def why(self) -> str:
        reasons = ([] if self.agreed else ["disagreed"]) + (
            [f"rejected: {self.rejected}"] if self.rejected else [])
        return "; ".join(reasons) or "agreed and passed"


@dataclass
class EvalReport:
    """What `evaluate` measured."""

    pipeline: str
    teacher: str
    student: str
    student_model: str
    sample: int
    held_out: int  # of the sample, rows in the export's validation split
    sent: int  # student requests sent now (the rest came from the response cache)
    spent_usd: float  # what those cost
    failed: int  # student requests without an answer
    passed: int  # student answers every validator passes
    rejections: dict[str, int]  # validator -> answers it rejected
    agreement: Agreement
    cost: CostWhatIf
    notes: list[str] = field(default_factory=list)
    rows: list[RowVerdict] = field(default_factory=list)  # in sample order

    @property
    def pass_rate(self) -> float:
        return self.passed / self.sample if self.sample else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline, "teacher": self.teacher, "student": self.student,
            "student_model": self.student_model, "sample": self.sample,
            "held_out": self.held_out, "sent": self.sent, "spent_usd": self.spent_usd,
            "failed": self.failed, "passed": self.passed, "pass_rate": self.pass_rate,
            "rejections": self.rejections,
            "agreement": {"kind": self.agreement.kind, "rows": self.agreement.rows,
                          "agreed": self.agreement.agreed, "share": self.agreement.share,
                          "fields": self.agreement.fields,
                          "fields_agreed": self.agreement.fields_agreed,
                          "mean_similarity": self.agreement.mean_similarity},
            "cost": {"paid_rows": self.cost.paid_rows, "actual_usd": self.cost.actual_usd,
                     "teacher_row_usd": self.cost.teacher_row_usd,
                     "student_row_usd": self.cost.student_row_usd,
                     "escalation_share": self.cost.escalation_share,
                     "would_be_usd": self.cost.would_be_usd,
                     "assumptions": self.cost.assumptions},
            "notes": self.notes,
        }


def evaluate(
    loaded: LoadedPipeline,
    student: str,
    *,
    teacher: str | None = None,
    sample: int = DEFAULT_SAMPLE,
    since: dt.datetime | None = None,
    inputs: list[Path] | None = None,
    ledger: Path | None = None,
    cache_dir: Path | None = None,
    kind: str = "auto",
    agree_at: float = AGREE_AT,
    env: dict[str, str] | None = None,
    embedder: Any = None,
) -> EvalReport:
    """Run `student` on a sample of the teacher's past rows and compare (module docstring).
    `embedder` (anything with `embed(texts)`) replaces the pipeline's for text answers."""
    from batchopt.distill.ftprice import with_fine_tuned

    env = dict(os.environ) if env is None else env
    cfg = loaded.config
    loaded.profile(student)
    collection = collect(loaded, teacher=teacher, since=since, inputs=inputs, ledger=ledger,
                         cache_dir=cache_dir, env=env)
    chosen = sorted(collection.examples, key=lambda e: split_unit(e.key))[:sample]
    if not chosen:
        raise NotEnoughDataError(f"no teacher answers to compare with: {collection.describe()}")
    profile = cfg.profiles[student]
    overrides = {n: p.model_dump() for n, p in cfg.pricing.models.items()}
    prices, note = with_fine_tuned(collection.plans[0].prices, overrides, profile.provider,
                                   profile.model)
    tier = build_tier(loaded, student, prices, env, require_key=True)
    requests = _student_requests(collection, tier, chosen)
    results, sent = _answered(loaded, cache_dir, tier, list(requests.values()))
    validators, notes = validators_for(loaded)
    notes += [note] if note else []
    rejected = _rejected(validators, requests, results)
    rejections = dict(Counter(name for name in rejected.values() if name is not None))
    passed = len(chosen) - sum(rejections.values())
    teacher_texts = [e.result.text or "" for e in chosen]
    student_texts = [_text(results.get(requests[e.row_id].key)) for e in chosen]
    measured = _agreement(loaded, kind, teacher_texts, student_texts, agree_at, embedder)
    verdicts = _verdicts(collection, chosen, measured, rejected)
    cost = _what_if(collection, tier, prices, requests, results, passed, len(chosen))
    spent = sum(prices.cost(tier.price, results[k].usage) for k in sent
                if k in results and not results[k].from_cache)
    return EvalReport(
        pipeline=cfg.name, teacher=collection.teacher, student=student,
        student_model=profile.model, sample=len(chosen),
        held_out=sum(1 for e in chosen if split_unit(e.key) < VALIDATION_SHARE),
        sent=len(sent), spent_usd=spent,
        failed=sum(1 for r in requests.values() if not results[r.key].ok),
        passed=passed, rejections=rejections, agreement=measured, cost=cost, notes=notes,
        rows=verdicts,
    )


def _answered(
    loaded: LoadedPipeline, cache_dir: Path | None, tier: Tier, requests: list[Request]
) -> tuple[dict[str, Result], list[str]]:
    """`_answer` through the pipeline's response cache (`cache_dir` or its `cache.path`)."""
    from batchopt.execute.cache import ResponseCache

    cfg = loaded.config
    folder = (cache_dir or loaded.resolve(cfg.cache.path)) / cfg.name
    cache = ResponseCache(folder, enabled=True)
    try:
        return _answer(cache, tier, requests)
    finally:
        cache.close()


def _student_requests(collection: Collection, tier: Tier, chosen: list[TeacherExample]
                      ) -> dict[str, Request]:
    """row_id -> the student's request for each sampled row."""
    row_ids = [e.row_id for e in chosen]
    built: dict[str, tuple[str, Request]] = {}
    for plan in collection.plans:
        built.update(rebuild(plan, tier, row_ids))
    return {row_id: built[row_id][1] for row_id in row_ids}


def _answer(cache: ResponseCache, tier: Tier, requests: list[Request]
            ) -> tuple[dict[str, Result], list[str]]:
    """Every request's result (the cache's, else sent now and cached); the keys sent."""
    from batchopt.execute.online import OnlineExecutor, OnlineSettings
    from batchopt.providers.registry import create_provider

    results: dict[str, Result] = {}
    misses: dict[str, Request] = {}
    for request in requests:
        cached = cache.get(request.key)
        if cached is not None:
            results[request.key] = cached
        else:
            misses[request.key] = request
    if not misses:
        return results, []
    profile = tier.profile
    settings = OnlineSettings(concurrency=profile.concurrency, rpm=profile.rpm, tpm=profile.tpm,
                              timeout_s=profile.timeout_s, max_attempts=profile.max_attempts)

    async def send() -> dict[str, Result]:
        provider = create_provider(tier.settings)
        try:
            executor = OnlineExecutor(provider, settings,
                                      lambda done: cache.put_many(done, EVAL_RUN_ID))
            return await executor.run(list(misses.values()))
        finally:
            await provider.aclose()

    results.update(asyncio.run(send()))
    return results, list(misses)


def _rejected(validators: list[Any], requests: dict[str, Request],
              results: dict[str, Result]) -> dict[str, str | None]:
    """row_id -> the validator that rejected the student's answer (`empty` for an empty one),
    None when every validator passes it."""
    from batchopt.routing import validate

    rejected: dict[str, str | None] = {}
    for row_id, request in requests.items():
        result = results[request.key]
        if not (result.text or "").strip() and result.ok:
            rejected[row_id] = "empty"
            continue
        verdict = validate(validators, request, result)
        rejected[row_id] = None if verdict.ok else verdict.validator or "rejected"
    return rejected


def _verdicts(collection: Collection, chosen: list[TeacherExample], measured: Agreement,
              rejected: dict[str, str | None]) -> list[RowVerdict]:
    texts = _prompt_texts(collection, [e.row_id for e in chosen])
    return [RowVerdict(e.row_id, texts.get(e.row_id, e.request.user),
                       split_unit(e.key) < VALIDATION_SHARE, agreed, rejected[e.row_id])
            for e, agreed in zip(chosen, measured.per_row, strict=True)]


def _prompt_texts(collection: Collection, row_ids: list[str]) -> dict[str, str]:
    """row_id -> the row's rendered prompt as a run routes it (`prompt_user`; a row id that
    several inputs hold: the last one read)."""
    wanted = set(row_ids)
    texts: dict[str, str] = {}
    for plan in collection.plans:
        id_column = plan.pipeline.config.input.id_column
        reps = plan.rows.filter(pl.col("dedup") == "none").select(
            pl.col(id_column).cast(pl.String).alias("row_id"), "prompt_user")
        texts.update((r, t) for r, t in reps.iter_rows() if r in wanted)
    return texts


def _agreement(loaded: LoadedPipeline, kind: str, teacher: list[str],
               student: list[str | None], agree_at: float, embedder: Any) -> Agreement:
    chosen = choose_kind(kind, teacher, loaded.config.prompt.json_schema is not None)
    if chosen == "json":
        return json_agreement(teacher, student)
    if chosen == "label":
        return label_agreement(teacher, student)
    if embedder is None:
        from batchopt.services.embed import load_embedder

        sem = loaded.config.dedup.semantic
        embedder = load_embedder(sem.backend, str(loaded.resolve(sem.model)) if sem.model
                                 else None)
    return text_agreement(teacher, student, embedder, agree_at)


def _what_if(collection: Collection, tier: Tier, prices: PriceTable,
             requests: dict[str, Request], results: dict[str, Result], passed: int,
             sampled: int) -> CostWhatIf:
    from batchopt.run.cost import expected_usage

    frame = collection.ledger
    paid = frame.filter((pl.col("dedup") == "none") & pl.col("mode").is_in(PAID))
    own = (pl.col("cost_usd") - pl.col("earlier_attempts_usd").fill_null(0.0))
    teacher_rows = paid.filter((pl.col("tier") == collection.teacher)
                               & (pl.col("status") == "ok"))
    teacher_row = float(teacher_rows.select(own.mean()).item() or 0.0) if teacher_rows.height \
        else 0.0
    history = collection.plans[0].history
    costs = []
    for request in requests.values():
        result = results[request.key]
        usage = result.usage if result.usage.input_tokens else expected_usage(history, request)
        costs.append(prices.cost(tier.price, usage))
    student_row = sum(costs) / len(costs) if costs else 0.0
    escalation = 1.0 - passed / sampled if sampled else 0.0
    assumptions = (
        f"each of the {paid.height} request(s) the runs paid for is asked of the student first "
        f"at its online price (its mean in the sample: ${student_row:.6f}); the "
        f"{escalation:.1%} the validators reject in the sample go on to '{collection.teacher}' "
        f"at its mean cost per answer in the ledger (${teacher_row:.6f}); rows the cache or "
        "dedup answered cost nothing either way; judge calls, batch discounts and retries are "
        "not counted"
    )
    return CostWhatIf(paid.height, float(frame["cost_usd"].fill_null(0.0).sum()), teacher_row,
                      student_row, escalation, assumptions)


def _text(result: Result | None) -> str | None:
    if result is None or not result.ok:
        return None
    return result.text


@dataclass(frozen=True)
class RouterData:
    """What `write_router_data` wrote."""

    path: Path
    rows: int
    hard: int


def check_router_data_path(path: Path) -> None:
    """InputError unless `router train` can read a file named `path` (before anything is paid)."""
    if path.suffix.lower() not in ROUTER_DATA_SUFFIXES:
        raise InputError(f"--router-data {path}: must end in .parquet or .csv (what `batchopt "
                         "router train` reads)")


def router_table(report: EvalReport) -> pl.DataFrame:
    """The routing classifier's training table: `text` and `hard` (what `load_training_table`
    reads), plus `row_id`, `held_out` and `why`."""
    return pl.DataFrame(
        {"text": [r.text for r in report.rows], "hard": [r.hard for r in report.rows],
         "row_id": [r.row_id for r in report.rows],
         "held_out": [r.held_out for r in report.rows], "why": [r.why for r in report.rows]},
        schema={"text": pl.String, "hard": pl.Boolean, "row_id": pl.String,
                "held_out": pl.Boolean, "why": pl.String},
    )


def write_router_data(report: EvalReport, path: Path) -> RouterData:
    """Write `router_table(report)` to `path` (.parquet or .csv), atomically."""
    check_router_data_path(path)
    table = router_table(report)
    if path.suffix.lower() == ".csv":
        write_atomic(path, table.write_csv)
    else:
        write_parquet_atomic(table, path)
    return RouterData(path, table.height, int(table["hard"].sum()))


