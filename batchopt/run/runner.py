"""One run of a pipeline, start to finish: the only module that knows the whole flow (with its
helpers `tiers`, which routes rows to tiers, and `rounds`, which answers requests).

    read → render → exact + semantic dedup → route to tiers → requests → response cache
         → online calls or provider batches (→ cascade rounds) → fan out
         → outputs (Parquet) + ledger (Parquet, DuckDB views)

`prepare` does everything before the first paid request (and spends nothing); `execute` sends
what the cache cannot answer, persisting each answer as it arrives; `finish` fans the answers out
to every row and writes the outputs and the ledger.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, MutableMapping
from contextlib import closing
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from batchopt.config.pipeline import LoadedPipeline, ModelConfig
from batchopt.dates import logical_date
from batchopt.dedup.exact import exact_groups
from batchopt.engines import get_engine
from batchopt.errors import (
    EXIT_BUDGET,
    EXIT_FAILED_ROWS,
    EXIT_OK,
    ConfigError,
    NoBatchAPIError,
)
from batchopt.execute.cache import ResponseCache
from batchopt.execute.state import RunLock, RunState, Submission, run_dir
from batchopt.io.reader import FILE_COLUMN, ROW_COLUMN, list_input_files, read_rows
from batchopt.io.writer import ParquetParts
from batchopt.ledger.calls_table import write_calls
from batchopt.ledger.history import History, read_history
from batchopt.ledger.ledger import price_ledger
from batchopt.ledger.pricing import ModelPrice, PriceTable
from batchopt.ledger.store import LedgerPart, part_path, write_views_file
from batchopt.plan.estimate import request_cost
from batchopt.prompts.request_table import KeyTiers, RequestTable
from batchopt.prompts.template import PromptRenderer
from batchopt.providers.base import ProviderSettings
from batchopt.providers.token_counting import counter_for
from batchopt.records import Request, Result
from batchopt.run import identity as run_identity
from batchopt.run.calls import NOT_BILLED, by_group, calls_frame
from batchopt.run.context_fit import fit_context
from batchopt.run.empty_inputs import (
    EMPTY_COLUMN,
    check_empty,
    drop_empty,
    empty_groups,
    isolate_empty,
    template_columns,
)
from batchopt.run.fanout import (
    LedgerTotals,
    group_results,
    ledger_facts,
    output_table,
    with_other_calls,
    write_fanned_out,
)
from batchopt.run.fingerprint import config_hash
from batchopt.run.rounds import Answers, RunPending, execute
from batchopt.run.row_stages import RenderStep, key_columns, take_report
from batchopt.run.tiers import (
    Tier,
    dedup_key_templates,
    drop_rule_inputs,
    first_requests,
    keep_rule_inputs,
    make_tier,
    route_groups,
    rule_columns,
    tier_extra_columns,
    tier_names,
    tier_price,
    tier_template_variables,
)

if TYPE_CHECKING:  # the semantic modules load numpy and faiss: only when a pipeline uses them
    from batchopt.dedup.guards import GuardConfig
    from batchopt.dedup.step import SemanticOutcome
    from batchopt.plan.estimate import JobEstimate
    from batchopt.providers.batching import BatchStatus

_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
_BASE_URL_ENV = {"openai": "OPENAI_BASE_URL", "anthropic": "ANTHROPIC_BASE_URL"}
_DEFAULT_BASE_URL = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}


@dataclass(frozen=True)
class RunOptions:
    """Per-invocation choices: the profile, the run id, and path overrides for schedulers."""

    profile: str | None = None
    run_id: str | None = None
    input: Path | None = None
    output: Path | None = None
    ledger: Path | None = None
    cache_dir: Path | None = None
    mode: str | None = None  # online | batch | auto; default: the YAML's execution.mode
    wait: bool = True  # batch: block until every batch is collected; else RunPending
    engine: str | None = None  # local | ray; default: the YAML's execution.engine
    ray_address: str | None = None  # default: the YAML's execution.ray_address
    limit: int | None = None  # read only the first `limit` rows of the input (None: all)
    date: date | None = None  # the logical date (default: the run id's date, else today)


class RunObserver:
    """Progress hooks; the CLI draws a progress bar with them. The default does nothing."""

    def stage(self, name: str) -> None:
        """A stage began."""

    def sending(self, total: int) -> None:
        """`total` requests are about to be sent."""

    def answered(self, result: Result) -> None:
        """One request was answered (or failed for good)."""

    def spent(self, amount: float) -> None:
        """Answers just arrived that this invocation paid `amount` (USD) for, priced as the ledger
        prices them (`rounds.result_cost`); cache hits cost nothing."""

    def batches(self, submissions: list[Submission], statuses: dict[str, BatchStatus]) -> None:
        """The run's batches after a pass; `statuses` has those polled in it, by batch id."""


@dataclass
class Plan:
    """Everything known before the first paid request."""

    pipeline: LoadedPipeline
    profile_name: str
    profile: ModelConfig
    settings: ProviderSettings
    run_id: str
    rows: pl.DataFrame
    requests: RequestTable  # by group_id: columns, a Request made when one is asked for
    price: ModelPrice
    baseline: tuple[str, str]
    prices: PriceTable
    paths: dict[str, Path]
    keep_columns: list[str]
    semantic: SemanticOutcome | None = None
    guards: GuardConfig | None = None
    mode: str = "online"  # online | batch (auto is resolved in `prepare`)
    online_fallback: bool = False  # auto: what a batch did not answer goes online
    wait: bool = True
    # tiers by name, cheapest first; the first is `profile_name` above
    tiers: dict[str, Tier] = field(default_factory=dict)
    strategy: str = "single"
    # group -> (tier, reason): a RouteTable (columns) after `prepare`
    routes: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    # request key -> tier name: KeyTiers (the requests' tiers, plus what a run adds)
    key_tier: MutableMapping[str, str] = field(default_factory=dict)
    history: History = field(default_factory=History.empty)  # the pipeline's past runs
    compression: dict[str, int] = field(default_factory=dict)  # tokens removed, by step
    # prompts too long for their tier's context: group -> "skipped" | "truncated"; the skipped
    # ones are not in `requests` (group -> (request, why)) and are never sent
    overflow: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, tuple[Request, str]] = field(default_factory=dict)
    # the groups (one row each) skipped for an empty input (input.on_empty); also in `skipped`
    empty: set[str] = field(default_factory=set)
    engine: str = "local"  # where row stages ran and API calls go out: local | ray
    ray_address: str | None = None
    # time-priced tiers: (prompt, generated) tokens/s they are costed at (estimate.tier_rates)
    rates: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    row_limit: int | None = None  # --limit: only the input's first rows were read
    config_hash: str = ""  # the configuration's fingerprint (`batchopt.run.fingerprint`)
    logical_date: date | None = None  # the night the run is for (`batchopt.dates`)

    def tier_of(self, request: Request) -> Tier:
        """The tier a request was built for."""
        return self.tiers[self.key_tier[request.key]]


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
    tiers: dict[str, int] = field(default_factory=dict)  # paid rows by tier that answered
    escalated: int = 0  # rows a cascade sent one tier up (or more)
    compression: dict[str, int] = field(default_factory=dict)  # tokens removed, by step
    row_limit: int | None = None  # --limit: only the input's first rows were read
    # set when the run had already finished this job: the summary was read from its ledger
    finished_at: str | None = None

    @property
    def saving_usd(self) -> float:
        return self.baseline_cost_usd - self.cost_usd


def new_run_id() -> str:
    """A sortable run id: the UTC time to the second."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def api_key_env(profile: ModelConfig) -> str | None:
    """The environment variable holding the profile's API key; None for a provider that needs
    no key (local)."""
    if profile.provider not in _KEY_ENV:
        return None
    return profile.api_key_env or _KEY_ENV[profile.provider]


def provider_settings(
    profile_name: str, profile: ModelConfig, env: dict[str, str], *, require_key: bool = True
) -> ProviderSettings:
    """Build provider settings from a profile, reading the API key from its env var."""
    api_key = None
    base_url = profile.base_url
    key_env = api_key_env(profile)
    if key_env is not None:
        api_key = env.get(key_env)
        if not api_key and require_key:
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
    *,
    require_keys: bool = True,
) -> Plan:
    """Read, render, dedup and build the requests; check prices and keys (unless not
    `require_keys`: an estimate needs none). Spends nothing."""
    observer = observer or RunObserver()
    env = dict(os.environ) if env is None else env
    cfg = loaded.config
    names, strategy = tier_names(loaded, options.profile)
    all_settings = {}
    for name in names:
        tier_profile = cfg.profiles[name]
        all_settings[name] = provider_settings(
            name, tier_profile, env, require_key=require_keys
        )
        if tier_profile.provider == "local" and tier_profile.model_path:
            all_settings[name] = _with_model_path(
                all_settings[name], str(loaded.resolve(tier_profile.model_path))
            )
    profile_name, profile = names[0], cfg.profiles[names[0]]
    settings = all_settings[profile_name]

    overrides = {name: price.model_dump() for name, price in cfg.pricing.models.items()}
    local_rate = profile.usd_per_hour or cfg.pricing.local_usd_per_hour
    prices = PriceTable.load(overrides=overrides, local_usd_per_hour=local_rate)
    price = tier_price(loaded, profile_name, prices)
    for name in names[1:]:  # every tier's price before any row is read (exit 2 if none)
        tier_price(loaded, name, prices)
    strongest = cfg.profiles[names[-1]]
    baseline = (
        (cfg.baseline.provider, cfg.baseline.model)
        if cfg.baseline
        else (strongest.provider, strongest.model)
    )
    prices.price(*baseline)

    paths = {
        "input": options.input or loaded.resolve(cfg.input.path),
        "output": options.output or loaded.resolve(cfg.output.path),
        "ledger": options.ledger or loaded.resolve(cfg.ledger.path),
        "cache": options.cache_dir or loaded.resolve(cfg.cache.path),
    }
    if loaded.confined_to is not None and options.input is None:
        for file in list_input_files(paths["input"]):  # a symlink may point out of the folder
            loaded.check_confined(file, "input.path")

    observer.stage("read")
    renderer = PromptRenderer(cfg.prompt.template)
    sem = cfg.dedup.semantic
    variables = [*renderer.variables, *tier_template_variables(loaded, names)]
    rows = read_rows(
        paths["input"],
        cfg.input.id_column,
        list(dict.fromkeys([
            *variables, *([sem.column] if sem.enabled and sem.column else []),
            *cfg.input.required,
        ])),
        keep_columns=cfg.input.columns,
        hive_partitioning=cfg.input.hive_partitioning,
        limit=options.limit,
    )
    keep_columns = [c for c in rows.columns if c not in (FILE_COLUMN, ROW_COLUMN)]
    if cfg.prompt.output_column in keep_columns:
        raise ConfigError(
            f"prompt.output_column: '{cfg.prompt.output_column}' is already an input column"
        )
    # rows with nothing to send (input.on_empty): fail here, or mark them to skip
    rows = check_empty(rows, template_columns(variables, rows.columns, cfg.input.id_column),
                       cfg.input.id_column, cfg.input.on_empty, cfg.input.required)

    if cfg.compress is not None:
        observer.stage("compress")
        # rules test the input columns they name; compression may rewrite the ones the
        # template uses, so the rules get a copy taken before it (dropped after routing)
        rows = keep_rule_inputs(rows, [c for c in rule_columns(loaded, strategy)
                                       if c in renderer.variables])
    observer.stage("render")  # one pass over each chunk: compress, then render
    # dedup keys on what is sent: each tier's own prompt variant is rendered for the key too
    key_templates = tuple(dedup_key_templates(loaded, names)) if cfg.dedup.exact else ()
    step = RenderStep(cfg.prompt.template, cfg.input.id_column, cfg.compress, profile.model,
                      key_templates=key_templates, baseline=(*baseline, _default_system(loaded)))
    engine_name = options.engine or cfg.execution.engine
    ray_address = options.ray_address or cfg.execution.ray_address
    engine = get_engine(engine_name, ray_address, cfg.execution.ray_workers)
    with closing(engine):  # row stages and embedding run on the engine
        rows, compression = take_report(engine.map_rows(rows, step))
        observer.stage("dedup")
        rows = exact_groups(
            rows,
            cfg.input.id_column,
            "prompt_user",
            enabled=cfg.dedup.exact,
            ignore_case=cfg.dedup.ignore_case,
            key_columns=key_columns(len(key_templates)),
        ).drop(key_columns(len(key_templates)))
        rows = isolate_empty(rows, cfg.input.id_column)  # each its own group, never merged
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
                # columns only a tier's own template reads: merged rows must agree on them
                same_columns=tuple(c for c in tier_extra_columns(loaded, names)
                                   if c in rows.columns),
            )
            cache_dir = paths["cache"] / cfg.name / "embeddings" if cfg.cache.enabled else None
            empty = pl.col(EMPTY_COLUMN)  # out of semantic dedup: not embedded, not merged
            semantic = semantic_dedup(
                rows.with_columns(pl.when(empty).then(pl.lit("empty")).otherwise(pl.col("dedup"))
                                  .alias("dedup")),
                cfg.input.id_column, sem.column or "prompt_user", settings_sem, cache_dir,
                embed=engine.embed if engine.name == "ray" else None,  # Ray: an actor pool
            )
            rows = semantic.rows.with_columns(
                pl.when(empty).then(pl.lit("none")).otherwise(pl.col("dedup")).alias("dedup"))
        else:
            rows = rows.with_columns(
                pl.lit(None, dtype=pl.String).alias("veto_guard"),
                pl.lit(None, dtype=pl.String).alias("veto_id"),
            )
    from batchopt.services.token_counters import calibrate

    calibration = calibrate(paths["ledger"], cfg.name)  # past runs' billed vs counted tokens
    tiers = {name: make_tier(loaded, name, all_settings[name], prices, calibration)
             for name in names}
    routes = route_groups(rows, loaded, list(tiers.values()), strategy, semantic)
    rows = drop_rule_inputs(rows)
    requests = first_requests(rows, tiers, routes, cfg.input.id_column)
    empty = empty_groups(rows)
    requests, skipped_empty = drop_empty(requests, empty)  # never sent (input.on_empty: skip)
    rows = rows.drop(EMPTY_COLUMN)
    requests, overflow, skipped = fit_context(rows, tiers, requests, prices)
    skipped.update(skipped_empty)
    mode, fallback = _resolve_mode(loaded, options.mode, tiers)
    fingerprint = config_hash(loaded, strategy, tiers)
    run_id = options.run_id or new_run_id()
    return Plan(
        pipeline=loaded,
        profile_name=profile_name,
        profile=profile,
        settings=settings,
        run_id=run_id,
        rows=rows,
        requests=requests,
        price=price,
        baseline=baseline,
        prices=prices,
        paths=paths,
        keep_columns=keep_columns,
        semantic=semantic,
        guards=guards,
        mode=mode,
        online_fallback=fallback,
        wait=options.wait,
        tiers=tiers,
        strategy=strategy,
        routes=routes,
        key_tier=KeyTiers(requests),
        history=read_history(paths["ledger"], cfg.name, fingerprint),
        compression=compression,
        overflow=overflow,
        skipped=skipped,
        empty=empty,
        engine=engine_name,
        ray_address=ray_address,
        row_limit=options.limit,
        config_hash=fingerprint,
        logical_date=logical_date(options.date, run_id),
    )


def _default_system(loaded: LoadedPipeline) -> str:
    """The static prefix of the prompt section, whatever a profile sends instead: the
    baseline's."""
    from batchopt.prompts.layout import static_system

    prompt = loaded.config.prompt
    return static_system(prompt.system, prompt.context, prompt.examples)


def plan_run(
    loaded: LoadedPipeline,
    options: RunOptions,
    env: dict[str, str] | None = None,
    *,
    show: int = 0,
) -> JobEstimate:
    """`batchopt plan`: everything up to the first paid request, then what the run should cost.
    Reads the response cache to leave out what it holds; sends nothing and writes nothing.
    `show`: also the first `show` distinct requests, rendered and compressed as a run sends them,
    with their tier and why they go there."""
    from batchopt.plan.estimate import estimate_job

    plan = prepare(loaded, options, env, require_keys=False)
    cfg = loaded.config
    folder = plan.paths["cache"] / cfg.name
    cache = None
    if cfg.cache.enabled and (folder / "cache.db").exists():
        cache = ResponseCache(folder, enabled=True)
    try:
        estimate = estimate_job(plan, cache)
    finally:
        if cache is not None:
            cache.close()
    estimate.shown = _shown_requests(plan, show)
    return estimate


def _shown_requests(plan: Plan, count: int) -> list[dict[str, object]]:
    """The first `count` distinct requests in input order, as sent: messages, model, tier, why."""
    shown: list[dict[str, object]] = []
    for group, request in plan.requests.items():
        if len(shown) >= count:
            break
        tier, reason = plan.routes[group]
        shown.append({"group_id": group, "tier": tier, "route_reason": reason,
                      "provider": request.provider, "model": request.model,
                      "max_tokens": request.max_tokens, "system": request.system,
                      "user": request.user, "estimated_input_tokens":
                      request.estimated_input_tokens})
    return shown


_BATCH_WINDOW_HOURS = 24.0  # OpenAI's completion window; Anthropic's batches also end by 24 h


def _resolve_mode(
    loaded: LoadedPipeline, asked: str | None, tiers: dict[str, Tier]
) -> tuple[str, bool]:
    """("online" | "batch", whether leftovers of a batch go online) for this run."""
    execution = loaded.config.execution
    mode = asked or execution.mode
    if mode not in ("online", "batch", "auto"):
        raise ConfigError(f"--mode: '{mode}' is not one of online, batch, auto")
    no_batch = [t for t in tiers.values() if t.profile.provider not in ("openai", "anthropic")
                or t.profile.self_hosted is not None]  # vLLM, TGI, Ollama: no batch API
    has_batch = not no_batch
    if mode == "batch" and no_batch:
        raise ConfigError(
            f"{loaded.source}: execution.mode batch: profile '{no_batch[0].name}' "
            + ("is self-hosted (self_hosted)" if no_batch[0].profile.self_hosted is not None
               else f"uses provider '{no_batch[0].profile.provider}'")
            + ", which has no batch API"
        )
    if mode != "online" and not loaded.config.cache.enabled:
        raise ConfigError(
            f"{loaded.source}: execution.mode {mode} needs cache.enabled: batch answers wait in "
            "the response cache between invocations"
        )
    if mode == "auto":
        deadline = execution.deadline_hours
        fits = deadline is None or deadline >= _BATCH_WINDOW_HOURS
        return ("batch", True) if has_batch and fits else ("online", False)
    return mode, False


def _with_model_path(settings: ProviderSettings, model_path: str) -> ProviderSettings:

    return replace(settings, model_path=model_path)


def finish(plan: Plan, answers: Answers) -> RunSummary:
    """Fan answers out to every row; write the outputs and the ledger atomically."""
    cfg = plan.pipeline.config
    results = dict(answers.results)
    final = {group: chain[-1] for group, chain in answers.chain.items()}
    routes, earlier, escalated = {}, {}, set()
    for group, (request, why) in plan.skipped.items():  # too long or empty: never sent
        final[group], routes[group] = request, plan.routes[group]
        status = "skipped" if group in plan.empty else "failed"  # empty: not a failure
        results[request.key] = Result(key=request.key, text=None, status=status, attempts=0,
                                      error=why)
    for group, chain in answers.chain.items():
        tier, reason = plan.routes[group]
        if len(chain) > 1:
            tier = plan.tier_of(chain[-1]).name
            reason = f"{reason}; escalated to {tier}: {answers.escalations[group]}"
            escalated.add(group)
        routes[group] = (tier, reason)
    # what each row paid besides its final answer (cheaper tiers tried first, judge calls),
    # and its calls never confirmed: the run id's calls record
    asked = {g: [*chain, *answers.judged.get(g, [])] for g, chain in answers.chain.items()}
    others = by_group(plan, asked, {g: results[c[-1].key] for g, c in answers.chain.items()},
                      answers.calls)
    earlier = {g: s["earlier_attempts_usd"] for g, s in others.items()}
    unsent = {request.key for request, _ in plan.skipped.values()}
    groups = group_results(
        final, results, lambda request: 0.0 if request.key in unsent else request_cost(
            plan, request, batch=plan.mode == "batch"),
        answers.past,
        routes, earlier, escalated, plan.overflow, others,
    )
    groups = _baseline_output(groups, plan.baseline)
    if answers.unverified:  # a cascade the budget stopped keeps its answer so far
        from batchopt.ledger.ledger import UNVERIFIED

        stopped = pl.col("group_id").is_in(pl.Series(list(answers.unverified)).implode())
        # a paid answer its checks rejected stays failed, but its text is kept (it was paid for,
        # and the escalation that would have replaced it was not sent)
        paid = {group: results[request.key].text for group, request in final.items()
                if group in answers.unverified and results[request.key].text is not None}
        groups = groups.with_columns(
            status=pl.when(stopped & (pl.col("status") == "ok"))
            .then(pl.lit(UNVERIFIED)).otherwise(pl.col("status")),
            answer=pl.when(stopped & pl.col("answer").is_null())
            .then(pl.col("group_id").replace_strict(paid, default=None, return_dtype=pl.String))
            .otherwise(pl.col("answer")),
        )
    status_column = f"{cfg.prompt.output_column}_status" if answers.budget_stop else None
    constants = {"run_id": plan.run_id, "pipeline": cfg.name, "run_at": datetime.now(UTC),
                 "row_limit": plan.row_limit, "config_hash": plan.config_hash,
                 "logical_date": plan.logical_date}

    earlier_calls = _earlier_calls(plan)

    def to_ledger(rows: pl.DataFrame, groups: pl.DataFrame) -> pl.DataFrame:
        facts = ledger_facts(rows, groups, cfg.input.id_column, constants)
        return _keep_earlier(
            with_other_calls(price_ledger(facts, plan.prices, plan.baseline[0], plan.baseline[1],
                                          price_version=plan.prices.version), facts),
            earlier_calls)

    def to_outputs(rows: pl.DataFrame, groups: pl.DataFrame) -> pl.DataFrame:
        return output_table(rows, groups, plan.keep_columns, cfg.prompt.output_column,
                            cfg.prompt.json_schema, status_column)

    with (ParquetParts(plan.paths["output"]) as outputs,
          LedgerPart(plan.paths["ledger"], cfg.name, plan.run_id) as ledger):
        totals = write_fanned_out(plan.rows, groups, outputs, ledger,
                                  to_outputs=to_outputs, to_ledger=to_ledger)
        output_file = outputs.commit()
        ledger_file = ledger.commit()
    write_calls(calls_frame(answers.calls, asked), ledger_file.parent)
    write_views_file(plan.paths["ledger"])

    exit_code = EXIT_OK
    if totals.failed and totals.failed / totals.rows > cfg.max_failed_share:
        exit_code = EXIT_FAILED_ROWS
    notes = []
    if plan.empty:
        notes.append(f"{len(plan.empty):,} row(s) skipped: empty input (input.on_empty: skip; "
                     "every template field null or blank): not sent, no cost")
    if answers.budget_stop:
        exit_code = EXIT_BUDGET
        notes.append(f"{answers.budget_stop}: the rest was not sent (outputs and ledger kept)")
    return RunSummary(
        run_id=plan.run_id,
        pipeline=cfg.name,
        profile=" → ".join(plan.tiers) if len(plan.tiers) > 1 else plan.profile_name,
        provider=plan.profile.provider,
        model=plan.profile.model,
        rows=totals.rows,
        distinct_requests=plan.requests.distinct_keys(),
        exact_duplicates=totals.exact,
        semantic_duplicates=totals.semantic,
        cache_hits=totals.cache_hits,
        sent=sum(1 for c in answers.calls if c["status"] != NOT_BILLED),
        failed_rows=totals.failed,
        input_tokens=totals.input_tokens,
        cached_input_tokens=totals.cached_input_tokens,
        output_tokens=totals.output_tokens,
        cost_usd=totals.cost_usd,
        baseline_cost_usd=totals.baseline_cost_usd,
        output_path=output_file,
        ledger_path=ledger_file,
        exit_code=exit_code,
        notes=notes,
        tiers=dict(totals.paid_by_tier),
        escalated=totals.escalated,
        compression=plan.compression,
        row_limit=plan.row_limit,
    )


def run_pipeline(
    loaded: LoadedPipeline,
    options: RunOptions | None = None,
    *,
    env: dict[str, str] | None = None,
    observer: RunObserver | None = None,
    on_prepared: Callable[[Plan], None] | None = None,
) -> RunSummary | RunPending:
    """Run a pipeline, or move a batch run forward; `RunPending` while batches are out.

    The run's lock is held throughout: a second process on the same run id stops at once with
    RunLockedError (exit 75) and sends nothing."""
    options = options or RunOptions()
    observer = observer or RunObserver()
    plan = prepare(loaded, options, env=env, observer=observer)
    if on_prepared is not None:
        on_prepared(plan)
    cfg = plan.pipeline.config
    directory = run_dir(plan.paths["cache"], cfg.name, plan.run_id)
    with RunLock(directory, plan.run_id):
        state = RunState.open(directory)
        try:
            before = state.get("started") or {}
            _check_identity(plan, state, started=bool(before), date_given=options.date is not None)
            job = _job_fingerprint(plan)
            done = _finished_summary(plan, state.get("finished"), job)
            if done is not None:  # the same job, finished: its ledger says what it did
                return done
            state.set("finished", None)  # another job on this run id: not finished until it is
            state.set("started", {"profile": plan.profile_name, "mode": plan.mode,
                                  "row_limit": plan.row_limit, "job": job})
            state.set("blocked", None)  # what stopped an earlier invocation may be mended now
            cache = ResponseCache(plan.paths["cache"] / cfg.name, enabled=cfg.cache.enabled)
            try:
                answers = execute(plan, cache, observer, state)
            except NoBatchAPIError as exc:  # `status` says so too: a person must act
                state.set("blocked", {"error": str(exc), "exit_code": exc.exit_code})
                raise
            finally:
                cache.close()
            if isinstance(answers, RunPending):
                return answers
            observer.stage("write")
            summary = finish(plan, answers)
            notes = list(summary.notes)  # what a re-run reads back: not this invocation's limit
            if before and before.get("row_limit") != plan.row_limit:
                summary.notes.append(_limit_changed(before.get("row_limit"), plan.row_limit))
            state.set("finished", {
                "exit_code": summary.exit_code, "rows": summary.rows,
                "failed_rows": summary.failed_rows, "cost_usd": summary.cost_usd,
                "output": str(summary.output_path), "ledger": str(summary.ledger_path),
                "job": job, "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "sent": summary.sent, "notes": notes,
            })
            return summary
        finally:
            state.close()


def _check_identity(plan: Plan, state: RunState, *, started: bool, date_given: bool) -> None:
    """Go on only with the same run (`batchopt.run.identity`): record who it is in its state and
    beside its ledger part, and keep the logical date it was started for."""
    cfg = plan.pipeline.config
    current = run_identity.identity(cfg.name, plan.run_id, plan.logical_date, plan.config_hash,
                                    plan.paths["cache"])
    folder = part_path(plan.paths["ledger"], cfg.name, plan.run_id).parent
    recorded = state.get("identity")
    ident = run_identity.check(current, recorded, started, folder, date_given)
    if ident["logical_date"]:
        plan.logical_date = date.fromisoformat(ident["logical_date"])
    if recorded != ident:
        state.set("identity", ident)
    if run_identity.read_ledger_side(folder) != ident:
        run_identity.write_ledger_side(folder, ident)


def _limit_changed(was: int | None, now: int | None) -> str:
    """A run resumed or re-run under another --limit: it covers what it read this time."""
    def shown(limit: int | None) -> str:
        return "none" if limit is None else str(limit)

    return (f"--limit changed since this run id last ran ({shown(was)} -> {shown(now)}): outputs "
            "and ledger cover the rows read this time; answers it already paid for were reused")


def _job_fingerprint(plan: Plan) -> str:
    """What makes two invocations of a run id the same job: the configuration, the rows read
    (ids, in order, and the group each joined), every request the plan would send, what it
    skips, the --limit and where the outputs and ledger go."""
    digest = hashlib.blake2b(digest_size=16)
    cfg = plan.pipeline.config
    head = [plan.row_limit, str(plan.paths["output"]), str(plan.paths["ledger"]),
            plan.config_hash]  # validators, routing, tiers: another configuration is another job
    digest.update(json.dumps(head).encode())
    ids = plan.rows.select(pl.col(cfg.input.id_column).cast(pl.String), "group_id")
    for start in range(0, ids.height, 100_000):
        chunk = ids.slice(start, 100_000)
        digest.update("\n".join(f"{i}\t{g}" for i, g in chunk.iter_rows()).encode())
    digest.update(b"|" + "\n".join(plan.requests.iter_keys()).encode())
    digest.update(b"|" + "\n".join(sorted(r.key for r, _ in plan.skipped.values())).encode())
    return digest.hexdigest()


def _finished_summary(plan: Plan, finished: dict[str, object] | None, job: str
                      ) -> RunSummary | None:
    """The summary of a finished run of this same job, read from its ledger part (nothing
    sent, nothing rewritten); None when the run has not finished this job or its outputs or
    ledger are gone (then it runs, answering from the cache what it paid for). A run that ended
    with failed rows or a budget stop is not done: invoked again, it retries what failed or
    goes on under a raised budget, paying for nothing it already paid for."""
    if (not finished or finished.get("job") != job or finished.get("exit_code") != EXIT_OK
            or finished.get("failed_rows")):
        return None
    cfg = plan.pipeline.config
    output = Path(str(finished.get("output")))
    part = part_path(plan.paths["ledger"], cfg.name, plan.run_id)
    if output != plan.paths["output"] or not output.exists() or not part.exists():
        return None
    totals = LedgerTotals()
    totals.add(pl.read_parquet(part))
    at = str(finished.get("at") or "an earlier invocation")
    notes = [str(n) for n in finished.get("notes") or []]  # type: ignore[attr-defined]
    notes.append(f"run {plan.run_id} finished at {at}: summary read from its ledger; "
                 "nothing sent, nothing rewritten")
    return RunSummary(
        run_id=plan.run_id, pipeline=cfg.name,
        profile=" → ".join(plan.tiers) if len(plan.tiers) > 1 else plan.profile_name,
        provider=plan.profile.provider, model=plan.profile.model, rows=totals.rows,
        distinct_requests=plan.requests.distinct_keys(), exact_duplicates=totals.exact,
        semantic_duplicates=totals.semantic, cache_hits=totals.cache_hits,
        sent=int(finished.get("sent") or 0),  # type: ignore[call-overload]
        failed_rows=totals.failed, input_tokens=totals.input_tokens,
        cached_input_tokens=totals.cached_input_tokens, output_tokens=totals.output_tokens,
        cost_usd=totals.cost_usd, baseline_cost_usd=totals.baseline_cost_usd,
        output_path=output, ledger_path=part,
        exit_code=int(finished.get("exit_code") or EXIT_OK),  # type: ignore[call-overload]
        notes=notes, tiers=dict(totals.paid_by_tier), escalated=totals.escalated,
        compression=plan.compression, row_limit=plan.row_limit, finished_at=at,
    )


_CALL_FACTS = ("attempts", "estimated_cost_usd")


def _earlier_calls(plan: Plan) -> pl.DataFrame | None:
    """What this run's ledger part (an earlier invocation of the run id) recorded of the calls
    it made: row, request id, attempts and the estimate made before sending."""
    part = part_path(plan.paths["ledger"], plan.pipeline.config.name, plan.run_id)
    if not part.exists():
        return None
    return (pl.read_parquet(part, columns=["row_id", "request_id", *_CALL_FACTS])
            .filter(pl.col("request_id").is_not_null() & (pl.col("attempts") > 0))
            .unique(["row_id", "request_id"], keep="first"))


def _keep_earlier(ledger: pl.DataFrame, earlier: pl.DataFrame | None) -> pl.DataFrame:
    """An answer this run paid for in an earlier invocation comes back from the cache with no
    attempts: the ledger keeps what it recorded of that call when it was made."""
    if earlier is None or not earlier.height:
        return ledger
    joined = ledger.join(earlier, on=["row_id", "request_id"], how="left", suffix="_was",
                         maintain_order="left")
    same = pl.col("attempts_was").is_not_null() & (pl.col("attempts") == 0)
    return joined.with_columns(
        pl.when(same).then(pl.col(f"{c}_was")).otherwise(pl.col(c)).alias(c) for c in _CALL_FACTS
    ).select(ledger.columns)


def _baseline_output(groups: pl.DataFrame, baseline: tuple[str, str]) -> pl.DataFrame:
    """Each group's answer counted with the baseline model's counter: what the baseline would
    have generated to give it, whichever tier answered (no answer: 0)."""
    counter = counter_for(*baseline)  # uncalibrated: the same count every run
    counts = [counter.count(text) if text else 0 for text in groups["answer"].to_list()]
    return groups.with_columns(pl.Series("baseline_output_tokens", counts, dtype=pl.Int64))
