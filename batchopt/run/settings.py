"""How a run reaches its providers: each profile's key and endpoint (from what its provider
declares, `providers.registry.traits_of`), and whether it sends online or through batch APIs."""

from __future__ import annotations

from dataclasses import replace

from batchopt.config.pipeline import LoadedPipeline, ModelConfig
from batchopt.errors import ConfigError
from batchopt.providers.base import ProviderSettings, ProviderTraits
from batchopt.providers.registry import traits_of
from batchopt.run.tiers import Tier

__all__ = ["api_key_env", "provider_settings", "resolve_mode", "tier_settings"]

_BATCH_WINDOW_HOURS = 24.0  # OpenAI's completion window; Anthropic's batches also end by 24 h


def _key_env(profile: ModelConfig, traits: ProviderTraits) -> str | None:
    if traits.api_key_env is None:
        return None
    return profile.api_key_env or traits.api_key_env


def api_key_env(profile: ModelConfig) -> str | None:
    """The environment variable holding the profile's API key (its `api_key_env`, else the
    provider's); None for a provider that needs no key (local)."""
    return _key_env(profile, traits_of(profile.provider, profile.model))


def provider_settings(
    profile_name: str, profile: ModelConfig, env: dict[str, str], *, require_key: bool = True
) -> ProviderSettings:
    """Build provider settings from a profile, reading the API key from its env var."""
    traits = traits_of(profile.provider, profile.model)
    api_key = None
    base_url = profile.base_url
    key_env = _key_env(profile, traits)
    if key_env is not None:
        api_key = env.get(key_env)
        if not api_key and require_key:
            raise ConfigError(
                f"profiles.{profile_name}: environment variable {key_env} (the API key) is not set"
            )
        from_env = env.get(traits.base_url_env) if traits.base_url_env else None
        base_url = base_url or from_env or traits.default_base_url
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


def tier_settings(loaded: LoadedPipeline, name: str, env: dict[str, str], *,
                  require_key: bool = True) -> ProviderSettings:
    """Profile `name`'s provider settings, a model file's path resolved against the pipeline
    file's folder."""
    profile = loaded.config.profiles[name]
    settings = provider_settings(name, profile, env, require_key=require_key)
    if traits_of(profile.provider, profile.model).model_file and profile.model_path:
        settings = replace(settings, model_path=str(loaded.resolve(profile.model_path)))
    return settings


def resolve_mode(
    loaded: LoadedPipeline, asked: str | None, tiers: dict[str, Tier]
) -> tuple[str, bool]:
    """("online" | "batch", whether leftovers of a batch go online) for this run."""
    execution = loaded.config.execution
    mode = asked or execution.mode
    if mode not in ("online", "batch", "auto"):
        raise ConfigError(f"--mode: '{mode}' is not one of online, batch, auto")
    no_batch = [t for t in tiers.values() if not t.has_batch]
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
        return ("batch", True) if not no_batch and fits else ("online", False)
    return mode, False
