"""One run of a pipeline, start to finish: the only module that knows the whole flow.

    read → render → exact dedup → requests → response cache → online calls → fan out
         → outputs (Parquet) + ledger (Parquet, DuckDB views)

`prepare` does everything before the first paid request (and spends nothing); `execute` sends
what the cache cannot answer, persisting each answer as it arrives; `finish` fans the answers out
to every row and writes the outputs and the ledger.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from batchopt.config import LoadedPipeline, ModelConfig
from batchopt.dedup.exact import exact_groups
from batchopt.errors import EXIT_FAILED_ROWS, EXIT_OK, ConfigError
from batchopt.execute.cache import ResponseCache
from batchopt.execute.online import OnlineExecutor, OnlineSettings
from batchopt.fanout import group_results, ledger_facts, output_table
from batchopt.io.reader import FILE_COLUMN, ROW_COLUMN, read_rows
from batchopt.io.writer import write_parquet_atomic
from batchopt.ledger.ledger import price_ledger
from batchopt.ledger.pricing import ModelPrice, PriceTable
from batchopt.ledger.store import write_ledger, write_views_file
from batchopt.prompts.requests import CallSpec, build_requests
from batchopt.prompts.template import PromptRenderer, render_prompts
from batchopt.providers.base import ProviderSettings
from batchopt.records import Request, Result, Usage

if TYPE_CHECKING:  # the semantic modules load numpy and faiss: only when a pipeline uses them
    from batchopt.dedup.crossrun import AnsweredIndex, PastAnswer
    from batchopt.dedup.guards import GuardConfig
    from batchopt.dedup.step import SemanticOutcome

_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
_BASE_URL_ENV = {"openai": "OPENAI_BASE_URL", "anthropic": "ANTHROPIC_BASE_URL"}
_DEFAULT_BASE_URL = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}
# Rough local throughput (SmolLM2-135M on 2 cores, MEASURED.md) for the pre-spend estimate only.
_LOCAL_PROMPT_TOK_S = 295.0
_LOCAL_GEN_TOK_S = 100.0


@dataclass(frozen=True)
class RunOptions:
    """Per-invocation choices: the profile, the run id, and path overrides for schedulers."""

    profile: str | None = None
    run_id: str | None = None
    input: Path | None = None
    output: Path | None = None
    ledger: Path | None = None
    cache_dir: Path | None = None


class RunObserver:
    """Progress hooks; the CLI draws a progress bar with them. The default does nothing."""

    def stage(self, name: str) -> None:
        """A stage began."""

    def sending(self, total: int) -> None:
        """`total` requests are about to be sent."""

    def answered(self, result: Result) -> None:
        """One request was answered (or failed for good)."""


@dataclass
class Plan:
    """Everything known before the first paid request."""

    pipeline: LoadedPipeline
    profile_name: str
    profile: ModelConfig
    settings: ProviderSettings
    run_id: str
    rows: pl.DataFrame
    requests: dict[str, Request]  # by group_id
    price: ModelPrice
    baseline: tuple[str, str]
    prices: PriceTable
    paths: dict[str, Path]
    keep_columns: list[str]
    semantic: SemanticOutcome | None = None
    guards: GuardConfig | None = None


@dataclass
class RunSummary:
    """What a run did and what it cost; the CLI prints it."""

    run_id: str
    pipeline: str
    profile: str
    provider: str
    model: str
    rows: int
    distinct_requests: int
    exact_duplicates: int
    semantic_duplicates: int
    cache_hits: int
    sent: int
    failed_rows: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    cost_usd: float
    baseline_cost_usd: float
    output_path: Path
    ledger_path: Path
    exit_code: int = EXIT_OK
    notes: list[str] = field(default_factory=list)

    @property
    def saving_usd(self) -> float:
        return self.baseline_cost_usd - self.cost_usd


def new_run_id() -> str:
    """A sortable run id: the UTC time to the second."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def provider_settings(
    profile_name: str, profile: ModelConfig, env: dict[str, str]
) -> ProviderSettings:
    """Build provider settings from a profile, reading the API key from its env var."""
    api_key = None
    base_url = profile.base_url
    if profile.provider in _KEY_ENV:
        key_env = profile.api_key_env or _KEY_ENV[profile.provider]
        api_key = env.get(key_env)
        if not api_key:
            raise ConfigError(
                f"profiles.{profile_name}: environment variable {key_env} (the API key) is not set"
            )
        base_url = (
            base_url
            or env.get(_BASE_URL_ENV[profile.provider])
            or _DEFAULT_BASE_URL[profile.provider]
        )
    return ProviderSettings(
        provider=profile.provider,
        model=profile.model,
        base_url=base_url,
        api_key=api_key,
        timeout_s=profile.timeout_s,
        concurrency=profile.concurrency,
        model_path=profile.model_path,
        n_ctx=profile.n_ctx,
    )


def prepare(
    loaded: LoadedPipeline,
    options: RunOptions,
    env: dict[str, str] | None = None,
    observer: RunObserver | None = None,
) -> Plan:
    """Read, render, dedup and build the requests; check prices and keys. Spends nothing."""
    observer = observer or RunObserver()
    env = dict(os.environ) if env is None else env
    cfg = loaded.config
    profile_name, profile = loaded.profile(options.profile)
    settings = provider_settings(profile_name, profile, env)
    if profile.provider == "local" and profile.model_path:
        settings = _with_model_path(settings, str(loaded.resolve(profile.model_path)))

    overrides = {name: price.model_dump() for name, price in cfg.pricing.models.items()}
    local_rate = profile.usd_per_hour or cfg.pricing.local_usd_per_hour
    prices = PriceTable.load(overrides=overrides, local_usd_per_hour=local_rate)
    price = prices.price(profile.provider, profile.model)
    baseline = (
        (cfg.baseline.provider, cfg.baseline.model)
        if cfg.baseline
        else (profile.provider, profile.model)
    )
    prices.price(*baseline)

    paths = {
        "input": options.input or loaded.resolve(cfg.input.path),
        "output": options.output or loaded.resolve(cfg.output.path),
        "ledger": options.ledger or loaded.resolve(cfg.ledger.path),
        "cache": options.cache_dir or loaded.resolve(cfg.cache.path),
    }

    observer.stage("read")
    renderer = PromptRenderer(cfg.prompt.template)
    sem = cfg.dedup.semantic
    rows = read_rows(
        paths["input"],
        cfg.input.id_column,
        renderer.variables + ([sem.column] if sem.enabled and sem.column else []),
        keep_columns=cfg.input.columns,
        hive_partitioning=cfg.input.hive_partitioning,
    )
    keep_columns = [c for c in rows.columns if c not in (FILE_COLUMN, ROW_COLUMN)]
    if cfg.prompt.output_column in keep_columns:
        raise ConfigError(
            f"prompt.output_column: '{cfg.prompt.output_column}' is already an input column"
        )

    observer.stage("render")
    rows = render_prompts(rows, renderer, cfg.input.id_column)
    observer.stage("dedup")
    rows = exact_groups(
        rows,
        cfg.input.id_column,
        "prompt_user",
        enabled=cfg.dedup.exact,
        ignore_case=cfg.dedup.ignore_case,
    )
    semantic, guards = None, None
    if sem.enabled:
        from batchopt.dedup.guards import GuardConfig
        from batchopt.dedup.step import SemanticSettings, semantic_dedup

        observer.stage("semantic dedup")
        guards = GuardConfig(
            **{**sem.guards.model_dump(), "vocabulary": tuple(sem.guards.vocabulary)}
        )
        settings_sem = SemanticSettings(
            threshold=sem.threshold, backend=sem.backend,
            model=str(loaded.resolve(sem.model)) if sem.model else None,
            neighbours=sem.neighbours, guards=guards,
        )
        cache_dir = paths["cache"] / cfg.name / "embeddings" if cfg.cache.enabled else None
        semantic = semantic_dedup(
            rows, cfg.input.id_column, sem.column or "prompt_user", settings_sem, cache_dir
        )
        rows = semantic.rows
    else:
        rows = rows.with_columns(
            pl.lit(None, dtype=pl.String).alias("veto_guard"),
            pl.lit(None, dtype=pl.String).alias("veto_id"),
        )
    spec = CallSpec(
        provider=profile.provider, model=profile.model,
        endpoint=settings.base_url or settings.model_path or "", system=cfg.prompt.system,
        max_tokens=profile.max_tokens, temperature=profile.temperature,
        json_schema=cfg.prompt.json_schema, params=dict(profile.params),
    )
    requests = build_requests(rows, spec)
    return Plan(
        pipeline=loaded,
        profile_name=profile_name,
        profile=profile,
        settings=settings,
        run_id=options.run_id or new_run_id(),
        rows=rows,
        requests=requests,
        price=price,
        baseline=baseline,
        prices=prices,
        paths=paths,
        keep_columns=keep_columns,
        semantic=semantic,
        guards=guards,
    )


def _with_model_path(settings: ProviderSettings, model_path: str) -> ProviderSettings:
    from dataclasses import replace

    return replace(settings, model_path=model_path)


@dataclass
class Answers:
    """What `execute` found: results by request key, and the earlier answers reused."""

    results: dict[str, Result]
    past: dict[str, PastAnswer] = field(default_factory=dict)  # by request key


def execute(
    plan: Plan,
    cache: ResponseCache,
    observer: RunObserver | None = None,
) -> Answers:
    """Answer every request from the cache (exact, then semantic across runs) or the provider."""
    from batchopt.providers.registry import create_provider

    observer = observer or RunObserver()
    answers = Answers(results={})
    misses: list[Request] = []
    for request in {r.key: r for r in plan.requests.values()}.values():
        cached = cache.get(request.key)
        if cached is not None:
            answers.results[request.key] = cached
        else:
            misses.append(request)
    index = _answered_index(plan, cache)
    rep_ids = _rep_ids(plan) if index is not None else {}
    if index is not None and misses:
        misses = _reuse_past(plan, cache, index, rep_ids, misses, answers)
    if not misses:
        return answers

    observer.stage("send")
    observer.sending(len(misses))
    profile = plan.profile
    online = OnlineSettings(
        concurrency=profile.concurrency,
        rpm=profile.rpm,
        tpm=profile.tpm,
        timeout_s=profile.timeout_s,
        max_attempts=profile.max_attempts,
    )

    async def send() -> dict[str, Result]:
        provider = create_provider(plan.settings)
        try:
            executor = OnlineExecutor(provider, online, cache.put_many, observer.answered)
            return await executor.run(misses)
        finally:
            await provider.aclose()

    sent = asyncio.run(send())
    answers.results.update(sent)
    if index is not None:
        _remember(plan, index, rep_ids, [r for r in misses if sent[r.key].ok])
    return answers


def _rep_ids(plan: Plan) -> dict[str, str]:
    """Request key -> the id of the row whose prompt it is."""
    cfg = plan.pipeline.config
    reps = plan.rows.filter(pl.col("dedup") == "none").select(
        pl.col("group_id"), pl.col(cfg.input.id_column).cast(pl.String)
    )
    by_group = dict(reps.iter_rows())
    return {request.key: by_group[group] for group, request in plan.requests.items()}


def _answered_index(plan: Plan, cache: ResponseCache) -> AnsweredIndex | None:
    sem = plan.pipeline.config.dedup.semantic
    if plan.semantic is None or not sem.across_runs or not cache.enabled:
        return None
    from batchopt.dedup.crossrun import AnsweredIndex

    return AnsweredIndex(cache.path / "answered", plan.semantic.embedder_name)


def _reuse_past(
    plan: Plan, cache: ResponseCache, index: AnsweredIndex, rep_ids: dict[str, str],
    misses: list[Request], answers: Answers,
) -> list[Request]:
    """Answer misses that are guarded near-duplicates of earlier runs' answers; return the rest."""
    import numpy as np

    assert plan.semantic is not None and plan.guards is not None
    ids = [rep_ids[r.key] for r in misses]
    vectors = np.stack([plan.semantic.vectors[i] for i in ids])
    texts = [plan.semantic.texts[i] for i in ids]
    threshold = plan.pipeline.config.dedup.semantic.threshold
    remaining = []
    for request, hit in zip(misses, index.lookup(texts, vectors, threshold, plan.guards),
                            strict=True):
        earlier = cache.get(hit.request_key) if hit is not None else None
        if hit is not None and earlier is not None and earlier.ok:
            answers.results[request.key] = earlier
            answers.past[request.key] = hit
        else:
            remaining.append(request)
    return remaining


def _remember(
    plan: Plan, index: AnsweredIndex, rep_ids: dict[str, str], answered: list[Request]
) -> None:
    import numpy as np

    if not answered:
        return
    assert plan.semantic is not None
    ids = [rep_ids[r.key] for r in answered]
    index.add(
        ids, plan.run_id, [r.key for r in answered], [plan.semantic.texts[i] for i in ids],
        np.stack([plan.semantic.vectors[i] for i in ids]),
    )


def _estimated_cost(plan: Plan, request: Request) -> float:
    usage = Usage(input_tokens=request.estimated_input_tokens, output_tokens=request.max_tokens)
    seconds = (
        request.estimated_input_tokens / _LOCAL_PROMPT_TOK_S + request.max_tokens / _LOCAL_GEN_TOK_S
    )
    return plan.prices.cost(plan.price, usage, latency_ms=seconds * 1000.0)


def finish(plan: Plan, answers: Answers) -> RunSummary:
    """Fan answers out to every row; write the outputs and the ledger atomically."""
    cfg = plan.pipeline.config
    results = answers.results
    groups = group_results(
        plan.requests, results, lambda request: _estimated_cost(plan, request), answers.past
    )
    constants = {
        "run_id": plan.run_id, "pipeline": cfg.name, "tier": plan.profile_name,
        "provider": plan.profile.provider, "model": plan.profile.model, "route_reason": "single",
    }
    facts = ledger_facts(plan.rows, groups, cfg.input.id_column, constants)
    ledger = price_ledger(
        facts, plan.prices, plan.baseline[0], plan.baseline[1], price_version=plan.prices.version
    )
    outputs = output_table(
        plan.rows, groups, plan.keep_columns, cfg.prompt.output_column, cfg.prompt.json_schema
    )
    write_parquet_atomic(outputs, plan.paths["output"])
    ledger_file = write_ledger(ledger, plan.paths["ledger"], cfg.name, plan.run_id)
    write_views_file(plan.paths["ledger"])

    failed = int((ledger["status"] == "failed").sum())
    modes = ledger["mode"].value_counts()
    counts = dict(zip(modes["mode"].to_list(), modes["count"].to_list(), strict=True))
    exit_code = EXIT_OK
    if failed and failed / ledger.height > cfg.max_failed_share:
        exit_code = EXIT_FAILED_ROWS
    return RunSummary(
        run_id=plan.run_id,
        pipeline=cfg.name,
        profile=plan.profile_name,
        provider=plan.profile.provider,
        model=plan.profile.model,
        rows=ledger.height,
        distinct_requests=len({r.key for r in plan.requests.values()}),
        exact_duplicates=int((ledger["dedup"] == "exact").sum()),
        semantic_duplicates=int((ledger["dedup"] == "semantic").sum()),
        cache_hits=int(counts.get("cache", 0)),
        sent=sum(1 for r in results.values() if not r.from_cache and r.attempts > 0),
        failed_rows=failed,
        input_tokens=int(ledger["input_tokens"].sum()),
        cached_input_tokens=int(ledger["cached_input_tokens"].sum()),
        output_tokens=int(ledger["output_tokens"].sum()),
        cost_usd=float(ledger["cost_usd"].sum()),
        baseline_cost_usd=float(ledger["baseline_cost_usd"].sum()),
        output_path=plan.paths["output"],
        ledger_path=ledger_file,
        exit_code=exit_code,
    )


def run_pipeline(
    loaded: LoadedPipeline,
    options: RunOptions | None = None,
    *,
    env: dict[str, str] | None = None,
    observer: RunObserver | None = None,
    on_prepared: Callable[[Plan], None] | None = None,
) -> RunSummary:
    """Run a pipeline end to end and return its summary."""
    options = options or RunOptions()
    plan = prepare(loaded, options, env=env, observer=observer)
    if on_prepared is not None:
        on_prepared(plan)
    cfg = plan.pipeline.config
    cache = ResponseCache(plan.paths["cache"] / cfg.name, enabled=cfg.cache.enabled)
    try:
        answers = execute(plan, cache, observer)
    finally:
        cache.close()
    return finish(plan, answers)
