"""A run's tiers: each one's profile, provider settings, price and call spec; which tier each
dedup group starts on; and the request a cascade sends one tier up.

A helper of `runner` (the only module that uses it): it composes config, routing, prompts and
pricing, so it sits beside the runner rather than among the stages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from batchopt.config.pipeline import LoadedPipeline, ModelConfig
from batchopt.errors import ConfigError
from batchopt.hashing import stable_hash
from batchopt.ledger.pricing import ModelPrice, PriceTable
from batchopt.prompts.groups import Representatives, RouteTable
from batchopt.prompts.layout import static_system
from batchopt.prompts.request_table import RequestTable, TierFields, request_columns
from batchopt.prompts.requests import CallSpec, build_requests
from batchopt.providers.base import ProviderSettings, ProviderTraits
from batchopt.providers.registry import traits_of
from batchopt.providers.token_counting import counter_for
from batchopt.records import Request
from batchopt.run.selfhost import setup_hourly
from batchopt.tokens import Calibration, count_tokens, static_prompt_tokens

if TYPE_CHECKING:
    from batchopt.dedup.step import SemanticOutcome

ROUTE_COLUMNS = ("__tier", "__route_reason")
RULE_INPUT_PREFIX = "__rule_input."  # an input column's value before compression, for rules


def rule_columns(loaded: LoadedPipeline, strategy: str) -> list[str]:
    """The input columns the routing rules test (`column:` conditions), in order."""
    routing = loaded.config.routing
    if strategy != "rules" or routing is None:
        return []
    named = [c.column for rule in routing.rules for c in rule.when if c.column is not None]
    return list(dict.fromkeys(named))


def keep_rule_inputs(rows: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """`rows` with an untouched copy of each of `columns` it has, so that rules test the input
    value even after compression rewrites the column for the prompt."""
    return rows.with_columns(
        pl.col(name).alias(RULE_INPUT_PREFIX + name) for name in columns if name in rows.columns
    )


def drop_rule_inputs(rows: pl.DataFrame) -> pl.DataFrame:
    """`rows` without the copies `keep_rule_inputs` took (routing is done with them)."""
    return rows.drop([c for c in rows.columns if c.startswith(RULE_INPUT_PREFIX)])


@dataclass(frozen=True)
class Tier:
    """One model set-up a run may send to, resolved once (`make_tier`): its profile, provider
    settings, price, call spec and what its provider declares for its model (`traits`)."""

    name: str
    profile: ModelConfig
    settings: ProviderSettings
    price: ModelPrice
    spec: CallSpec
    traits: ProviderTraits

    @property
    def has_batch(self) -> bool:
        """Whether the tier's requests can go through a batch API: its provider has one and
        it is not a server of your own (a `self_hosted` block: vLLM, TGI, Ollama have none)."""
        return self.traits.capabilities.batch and self.profile.self_hosted is None


def tier_names(loaded: LoadedPipeline, asked_profile: str | None) -> tuple[list[str], str]:
    """(tier names cheapest first, strategy). `--profile` forces that one profile, `single`."""
    cfg = loaded.config
    if asked_profile:
        loaded.profile(asked_profile)  # a clear error for an unknown name
        return [asked_profile], "single"
    if cfg.routing is not None:
        return list(cfg.routing.tiers), cfg.routing.strategy
    return [cfg.default_profile], "single"


def make_tier(
    loaded: LoadedPipeline, name: str, settings: ProviderSettings, prices: PriceTable,
    calibration: Mapping[tuple[str, str], Calibration] | None = None,
) -> Tier:
    """Profile `name` as a tier: its price (ConfigError, exit 2, when it has none), call spec
    and provider traits, resolved once for the run; its prompts counted by its provider's
    counter, calibrated on past runs' usage (`calibration`) where it is an estimate."""
    cfg = loaded.config
    profile = cfg.profiles[name]
    endpoint = settings.base_url or settings.model_path or ""
    spec = CallSpec(
        provider=profile.provider, model=profile.model, endpoint=endpoint,
        system=tier_system(loaded, name),
        max_tokens=profile.max_tokens, temperature=profile.temperature,
        json_schema=cfg.prompt.json_schema, params=dict(profile.params),
        counter=counter_for(profile.provider, profile.model, endpoint=endpoint or None,
                            calibration=calibration),
    )
    traits = traits_of(profile.provider, profile.model)
    price = tier_price(name, profile, traits, prices, per_token=set(cfg.pricing.models))
    return Tier(name, profile, settings, price, spec, traits)


def calibrated(tier: Tier, calibration: Mapping[tuple[str, str], Calibration]) -> Tier:
    """`tier` with its token counter calibrated on past runs' usage where it is an estimate."""
    spec = tier.spec
    counter = counter_for(spec.provider, spec.model, endpoint=spec.endpoint or None,
                          calibration=calibration)
    return replace(tier, spec=replace(spec, counter=counter))


def tier_price(name: str, profile: ModelConfig, traits: ProviderTraits, prices: PriceTable,
               *, per_token: set[str]) -> ModelPrice:
    """What profile `name` is billed at. A tier you run yourself on an OpenAI-compatible server
    (a `self_hosted` block) is billed by machine time at its $/hour, like a local one, unless
    the pipeline prices its model per token (its model in `per_token`: `pricing.models`)."""
    sh = profile.self_hosted
    if sh is None or traits.capabilities.priced_by_time or profile.model in per_token:
        return prices.price(profile.provider, profile.model)
    hourly, source = setup_hourly(profile, name)
    return prices.bill_by_time(profile.provider, profile.model, hourly, source)


def tier_system(loaded: LoadedPipeline, name: str) -> str:
    """The static prefix profile `name` sends: its system text, context and examples (each its
    own if it sets one, else the prompt's)."""
    prompt, profile = loaded.config.prompt, loaded.config.profiles[name]
    return static_system(
        profile.system if profile.system is not None else prompt.system,
        profile.context if profile.context is not None else prompt.context,
        profile.examples if profile.examples is not None else prompt.examples,
    )


def route_groups(
    rows: pl.DataFrame, loaded: LoadedPipeline, tiers: list[Tier], strategy: str,
    semantic: SemanticOutcome | None = None,
) -> RouteTable:
    """group_id -> (tier name, why) for every dedup group, decided on its representative; as
    columns (`RouteTable`), not one tuple per group.

    The classifier reuses the semantic dedup step's vectors when that step embedded the same
    prompts with the same embedder settings."""
    from batchopt.routing import route_by_classifier, route_rules, route_single

    routing = loaded.config.routing
    reps = Representatives(rows)
    names = [t.name for t in tiers]
    tier, reason = ROUTE_COLUMNS
    columns = {"tier_column": tier, "reason_column": reason}
    if strategy == "rules":
        assert routing is not None
        chosen = rows.filter(pl.col("dedup") == "none")  # rules may name any column
        kept = [c for c in chosen.columns if c.startswith(RULE_INPUT_PREFIX)]
        if kept:  # rules test the input values, not the compressed text the prompt got
            chosen = chosen.with_columns(
                pl.col(c).alias(c.removeprefix(RULE_INPUT_PREFIX)) for c in kept
            ).drop(kept)
        counts = pl.Series(
            [count_tokens(text, tiers[0].profile.model) for text in chosen["prompt_user"]],
            dtype=pl.Int64,
        )
        routed = route_rules(chosen, routing.rules, routing.fallback_tier, "prompt_user",
                             counts, **columns)
    elif strategy == "classifier":
        assert routing is not None and routing.classifier is not None
        id_column = loaded.config.input.id_column
        probabilities = _hard_probabilities(
            reps.column("prompt_user").to_list(),
            reps.column(id_column).cast(pl.String).to_list(), loaded, semantic,
        )
        routed = route_by_classifier(pl.DataFrame({"group_id": reps.column("group_id")}),
                                     probabilities, routing.classifier.threshold,
                                     names[0], names[-1], **columns)
    else:  # single, and cascade, which starts every row on the cheapest tier: one route
        routed = route_single(pl.DataFrame({"group_id": [""]}), names[0], **columns)
        if strategy == "cascade":
            routed = routed.with_columns(pl.lit(f"cascade: starts on {names[0]}").alias(reason))
        same = np.zeros(len(reps), dtype=np.uint8)
        return RouteTable(reps, names, same, routed[reason].to_list(), same)
    return RouteTable.from_frame(reps, routed, tier, reason, names)


def _hard_probabilities(
    texts: list[str], ids: list[str], loaded: LoadedPipeline, semantic: SemanticOutcome | None
) -> object:
    import numpy as np

    from batchopt.routing import RouterModel
    from batchopt.services.embed import load_embedder

    routing = loaded.config.routing
    assert routing is not None and routing.classifier is not None
    settings = routing.classifier
    path = loaded.resolve(settings.path)
    if not Path(path).exists():
        raise ConfigError(f"routing.classifier.path: {path} does not exist "
                          "(make one with `batchopt router train`)")
    sem = loaded.config.dedup.semantic
    same_embedding = (
        semantic is not None and sem.column is None  # it embedded the rendered prompts
        and (sem.backend, sem.model) == (settings.backend, settings.model)
        and all(i in semantic.vectors for i in ids)
    )
    if same_embedding:
        assert semantic is not None
        vectors, name = np.stack([semantic.vectors[i] for i in ids]), semantic.embedder_name
    else:
        model = str(loaded.resolve(settings.model)) if settings.model else None
        embedder = load_embedder(settings.backend, model)
        vectors, name = embedder.embed(texts), embedder.name
    router = RouterModel.load(path, embedder_name=name, dim=vectors.shape[1])
    return router.predict_hard(vectors)


def first_requests(
    rows: pl.DataFrame, tiers: dict[str, Tier], routes: RouteTable, id_column: str,
) -> RequestTable:
    """Each group's request on the tier it starts on, by group_id, in group order; as columns
    (`RequestTable`): each tier's keys and prompt token counts, made a chunk at a time."""
    reps = routes.reps
    names = list(routes.tier_names)
    fields = [TierFields.of(name, tiers[name].spec) for name in names]
    parts = []
    for code, name in enumerate(names):
        which = np.flatnonzero(routes.tiers == code)
        if not len(which):
            continue
        tier = tiers[name]
        own = None
        if tier.profile.template is None:
            users = reps.column("prompt_user", which)
        else:  # this tier's own prompt variant, rendered for the representatives it answers
            users = own = _tier_prompts(reps.rows[reps.positions[which]], tier, id_column)
        keys, tokens = request_columns(users, tier.spec)
        parts.append((code, which, keys, tokens, own))
    return RequestTable.assemble(reps, fields, parts)


def escalated_requests(
    rows: pl.DataFrame, groups: list[str], tier: Tier, id_column: str
) -> dict[str, Request]:
    """The same rows, asked of `tier` (in its own prompt variant, if it has one), by group_id."""
    return _requests_for(rows, groups, tier, id_column)


def _requests_for(
    rows: pl.DataFrame, groups: list[str], tier: Tier, id_column: str
) -> dict[str, Request]:
    chosen = rows.filter(pl.col("group_id").is_in(groups) & (pl.col("dedup") == "none"))
    if tier.profile.template is None:
        return build_requests(chosen, tier.spec)
    # this tier's own prompt variant, rendered for the representatives it answers
    rendered = chosen.with_columns(_tier_prompts(chosen, tier, id_column))
    return build_requests(rendered, tier.spec, user_column="__prompt_tier")


def _tier_prompts(chosen: pl.DataFrame, tier: Tier, id_column: str) -> pl.Series:
    """The rows `chosen` rendered with `tier`'s own template (column `__prompt_tier`)."""
    from batchopt.prompts.template import PromptRenderer, render_prompts

    assert tier.profile.template is not None
    renderer = PromptRenderer(tier.profile.template, where=f"profiles.{tier.name}.template")
    return render_prompts(chosen, renderer, id_column, out_column="__prompt_tier")[
        "__prompt_tier"]


def tier_template_variables(tiers: Iterable[Tier]) -> list[str]:
    """Columns the tiers' own templates use; compiling them here reports a bad one before any
    row is read or any request sent."""
    from batchopt.prompts.template import PromptRenderer

    found: list[str] = []
    for tier in tiers:
        template = tier.profile.template
        if template is not None:
            found += PromptRenderer(template, where=f"profiles.{tier.name}.template").variables
    return found


def dedup_key_templates(default: str, tiers: Iterable[Tier]) -> list[tuple[str, str]]:
    """(where, template) of each distinct prompt variant of `tiers` other than the prompt's own
    template `default`: what exact dedup must key on besides the default rendering, since
    a tier with its own template sends the group representative's rendering for every member
    (two rows may render the same by default and not in a tier's variant)."""
    found: dict[str, str] = {}
    for tier in tiers:
        template = tier.profile.template
        if template is not None and template != default and template not in found:
            found[template] = f"profiles.{tier.name}.template"
    return [(where, template) for template, where in found.items()]


def tier_extra_columns(default: str, tiers: Iterable[Tier]) -> list[str]:
    """Columns the tiers' own templates read that the prompt's template `default` does not:
    semantic dedup compares rows on the default rendering, which does not show them, so it
    merges two rows only when these columns are equal (its guards cannot see a difference they
    do not read)."""
    from batchopt.prompts.template import PromptRenderer

    known = set(PromptRenderer(default).variables)
    extra = [v for v in tier_template_variables(tiers) if v not in known]
    return list(dict.fromkeys(extra))


JUDGE_MAX_TOKENS = 16  # a judge answers one word (yes / no)


def judge_request_factory(tier: Tier, max_tokens: int = JUDGE_MAX_TOKENS
                          ) -> Callable[[str], Request]:
    """Requests to a judge on `tier`: its user message as given, no system text, no schema."""
    from batchopt.prompts.requests import resolve_counter

    spec = tier.spec
    counter = resolve_counter(spec)
    framing = static_prompt_tokens(counter, "")

    def make(user: str) -> Request:
        key = stable_hash({
            "provider": spec.provider, "endpoint": spec.endpoint, "model": spec.model,
            "system": "", "user": user, "max_tokens": max_tokens,
            "temperature": spec.temperature, "json_schema": None, "params": spec.params,
            "purpose": "judge",
        })
        return Request(key=key, provider=spec.provider, model=spec.model, system="", user=user,
                       max_tokens=max_tokens, temperature=spec.temperature,
                       params=dict(spec.params),
                       estimated_input_tokens=framing + counter.count(user),
                       token_counter=counter.name)

    return make
