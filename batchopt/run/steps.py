"""The steps `runner.prepare` takes before the first paid request, one function each: prices
and baseline, paths, reading the input, rendering and exact dedup (on the engine), semantic
dedup, and each group's tier and request. The runner calls them in order; none sends anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from batchopt.config.pipeline import LoadedPipeline
from batchopt.dedup.exact import exact_groups
from batchopt.engines import Engine
from batchopt.errors import ConfigError
from batchopt.io.reader import FILE_COLUMN, ROW_COLUMN, list_input_files, read_rows
from batchopt.ledger.pricing import PriceTable
from batchopt.prompts.groups import RouteTable
from batchopt.prompts.request_table import RequestTable
from batchopt.prompts.template import PromptRenderer
from batchopt.records import Request
from batchopt.run.context_fit import fit_context
from batchopt.run.empty_inputs import (
    EMPTY_COLUMN,
    check_empty,
    drop_empty,
    empty_groups,
    isolate_empty,
    template_columns,
)
from batchopt.run.model import RunObserver, RunOptions
from batchopt.run.row_stages import RenderStep, key_columns, take_report
from batchopt.run.tiers import (
    Tier,
    calibrated,
    dedup_key_templates,
    drop_rule_inputs,
    first_requests,
    keep_rule_inputs,
    route_groups,
    rule_columns,
    tier_extra_columns,
    tier_template_variables,
)

if TYPE_CHECKING:  # the semantic modules load numpy and faiss: only when a pipeline uses them
    from batchopt.dedup.guards import GuardConfig
    from batchopt.dedup.step import SemanticOutcome

__all__ = ["Routed", "baseline_of", "default_system", "input_paths", "price_table", "read_input",
           "render_rows", "render_step", "semantic_step", "tier_requests"]


def price_table(loaded: LoadedPipeline, first: str) -> PriceTable:
    """The prices of the run: prices.yaml with the pipeline's overrides, the local rate of the
    first tier (its usd_per_hour, else the pipeline's)."""
    cfg = loaded.config
    overrides = {name: price.model_dump() for name, price in cfg.pricing.models.items()}
    local_rate = cfg.profiles[first].usd_per_hour or cfg.pricing.local_usd_per_hour
    return PriceTable.load(overrides=overrides, local_usd_per_hour=local_rate)


def baseline_of(loaded: LoadedPipeline, strongest: Tier, prices: PriceTable) -> tuple[str, str]:
    """(provider, model) every row is compared with: the pipeline's baseline, else the strongest
    tier's model; checked to have a price (exit 2 if none)."""
    cfg = loaded.config
    profile = strongest.profile
    baseline = ((cfg.baseline.provider, cfg.baseline.model) if cfg.baseline
                else (profile.provider, profile.model))
    prices.price(*baseline)
    return baseline


def input_paths(loaded: LoadedPipeline, options: RunOptions) -> dict[str, Path]:
    """Where the input, outputs, ledger and cache are (the options override the YAML)."""
    cfg = loaded.config
    paths = {
        "input": options.input or loaded.resolve(cfg.input.path),
        "output": options.output or loaded.resolve(cfg.output.path),
        "ledger": options.ledger or loaded.resolve(cfg.ledger.path),
        "cache": options.cache_dir or loaded.resolve(cfg.cache.path),
    }
    if loaded.confined_to is not None and options.input is None:
        for file in list_input_files(paths["input"]):  # a symlink may point out of the folder
            loaded.check_confined(file, "input.path")
    return paths


def read_input(loaded: LoadedPipeline, options: RunOptions, tiers: list[Tier],
               paths: dict[str, Path]) -> tuple[pl.DataFrame, list[str], PromptRenderer]:
    """(The input's rows with the columns the prompts, dedup and outputs need, the input columns
    the outputs keep, the prompt's renderer); rows with nothing to send fail here or are
    marked to skip (input.on_empty)."""
    cfg = loaded.config
    renderer = PromptRenderer(cfg.prompt.template)
    sem = cfg.dedup.semantic
    variables = [*renderer.variables, *tier_template_variables(tiers)]
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
    rows = check_empty(rows, template_columns(variables, rows.columns, cfg.input.id_column),
                       cfg.input.id_column, cfg.input.on_empty, cfg.input.required)
    return rows, keep_columns, renderer


def render_step(loaded: LoadedPipeline, rows: pl.DataFrame, renderer: PromptRenderer,
                tiers: dict[str, Tier], strategy: str, baseline: tuple[str, str],
                observer: RunObserver) -> tuple[pl.DataFrame, RenderStep]:
    """(The rows, with a copy of what the routing rules test when compression may rewrite it;
    the row stage that compresses and renders them)."""
    cfg = loaded.config
    if cfg.compress is not None:
        observer.stage("compress")
        # rules test the input columns they name; compression may rewrite the ones the
        # template uses, so the rules get a copy taken before it (dropped after routing)
        rows = keep_rule_inputs(rows, [c for c in rule_columns(loaded, strategy)
                                       if c in renderer.variables])
    observer.stage("render")  # one pass over each chunk: compress, then render
    # dedup keys on what is sent: each tier's own prompt variant is rendered for the key too
    key_templates = (tuple(dedup_key_templates(cfg.prompt.template, tiers.values()))
                     if cfg.dedup.exact else ())
    model = next(iter(tiers.values())).profile.model
    step = RenderStep(cfg.prompt.template, cfg.input.id_column, cfg.compress, model,
                      key_templates=key_templates, baseline=(*baseline, default_system(loaded)))
    return rows, step


def render_rows(loaded: LoadedPipeline, rows: pl.DataFrame, step: RenderStep, engine: Engine,
                observer: RunObserver) -> tuple[pl.DataFrame, dict[str, int]]:
    """Compress and render every row (one pass over each chunk, on the engine), then group the
    exact duplicates: (rows, tokens removed by compression step)."""
    cfg = loaded.config
    rows, compression = take_report(engine.map_rows(rows, step))
    observer.stage("dedup")
    rows = exact_groups(
        rows,
        cfg.input.id_column,
        "prompt_user",
        enabled=cfg.dedup.exact,
        ignore_case=cfg.dedup.ignore_case,
        key_columns=key_columns(len(step.key_templates)),
    ).drop(key_columns(len(step.key_templates)))
    return isolate_empty(rows, cfg.input.id_column), compression  # each its own group


def semantic_step(loaded: LoadedPipeline, rows: pl.DataFrame, tiers: dict[str, Tier],
                  paths: dict[str, Path], engine: Engine, observer: RunObserver
                  ) -> tuple[pl.DataFrame, SemanticOutcome | None, GuardConfig | None]:
    """Semantic dedup when the pipeline asks for it: (rows, its outcome, its guards)."""
    cfg = loaded.config
    sem = cfg.dedup.semantic
    if not sem.enabled:
        return rows.with_columns(
            pl.lit(None, dtype=pl.String).alias("veto_guard"),
            pl.lit(None, dtype=pl.String).alias("veto_id"),
        ), None, None
    from batchopt.dedup.guards import GuardConfig
    from batchopt.dedup.step import SemanticSettings, semantic_dedup

    observer.stage("semantic dedup")
    guards = GuardConfig(**{**sem.guards.model_dump(), "vocabulary": tuple(sem.guards.vocabulary)})
    settings = SemanticSettings(
        threshold=sem.threshold, backend=sem.backend,
        model=str(loaded.resolve(sem.model)) if sem.model else None,
        neighbours=sem.neighbours, guards=guards,
        # columns only a tier's own template reads: merged rows must agree on them
        same_columns=tuple(c for c in tier_extra_columns(cfg.prompt.template, tiers.values())
                           if c in rows.columns),
    )
    cache_dir = paths["cache"] / cfg.name / "embeddings" if cfg.cache.enabled else None
    empty = pl.col(EMPTY_COLUMN)  # out of semantic dedup: not embedded, not merged
    semantic = semantic_dedup(
        rows.with_columns(pl.when(empty).then(pl.lit("empty")).otherwise(pl.col("dedup"))
                          .alias("dedup")),
        cfg.input.id_column, sem.column or "prompt_user", settings, cache_dir,
        embed=engine.embed if engine.name == "ray" else None,  # Ray: an actor pool
    )
    rows = semantic.rows.with_columns(
        pl.when(empty).then(pl.lit("none")).otherwise(pl.col("dedup")).alias("dedup"))
    return rows, semantic, guards


@dataclass(frozen=True)
class Routed:
    """Each group's tier and request (`tier_requests`)."""

    tiers: dict[str, Tier]  # with their token counters, calibrated on past runs
    routes: RouteTable
    rows: pl.DataFrame
    requests: RequestTable  # what is sent
    overflow: dict[str, str]  # group -> "skipped" | "truncated": too long for its context
    skipped: dict[str, tuple[Request, str]]  # group -> (request, why): never sent
    empty: set[str]  # groups skipped for an empty input (also in `skipped`)


def tier_requests(
    loaded: LoadedPipeline, rows: pl.DataFrame, tiers: dict[str, Tier], strategy: str,
    semantic: SemanticOutcome | None, prices: PriceTable, paths: dict[str, Path],
) -> Routed:
    """Route each group to its tier and build its request there; check each against its
    tier's context."""
    from batchopt.services.token_counters import calibrate

    cfg = loaded.config
    calibration = calibrate(paths["ledger"], cfg.name)  # past runs' billed vs counted tokens
    tiers = {n: calibrated(t, calibration) for n, t in tiers.items()}
    routes = route_groups(rows, loaded, list(tiers.values()), strategy, semantic)
    rows = drop_rule_inputs(rows)
    requests = first_requests(rows, tiers, routes, cfg.input.id_column)
    empty = empty_groups(rows)
    requests, skipped_empty = drop_empty(requests, empty)  # never sent (input.on_empty: skip)
    rows = rows.drop(EMPTY_COLUMN)
    requests, overflow, skipped = fit_context(rows, tiers, requests, prices)
    skipped.update(skipped_empty)
    return Routed(tiers, routes, rows, requests, overflow, skipped, empty)


def default_system(loaded: LoadedPipeline) -> str:
    """The static prefix of the prompt section, whatever a profile sends instead: the
    baseline's."""
    from batchopt.prompts.layout import static_system

    prompt = loaded.config.prompt
    return static_system(prompt.system, prompt.context, prompt.examples)
