"""Build the provider a profile names. Provider modules (and their SDKs) load only when used."""

from __future__ import annotations

from batchopt.errors import ConfigError
from batchopt.providers.base import Provider, ProviderSettings, ProviderTraits

PROVIDER_NAMES = ("openai", "anthropic", "local")


def provider_class(name: str) -> type[Provider]:
    """The provider class `name` names (its module loads here; its SDK only when a client is
    built); ConfigError if it is unknown."""
    if name == "openai":
        from batchopt.providers.openai import OpenAIProvider

        return OpenAIProvider
    if name == "anthropic":
        from batchopt.providers.anthropic import AnthropicProvider

        return AnthropicProvider
    if name == "local":
        from batchopt.providers.local import LocalProvider

        return LocalProvider
    known = ", ".join(PROVIDER_NAMES)
    raise ConfigError(f"unknown provider {name!r}: expected one of {known}")


def create_provider(settings: ProviderSettings) -> Provider:
    """The provider for `settings.provider`; ConfigError if it is unknown or its SDK is missing."""
    return provider_class(settings.provider)(settings)


def traits_of(provider: str, model: str) -> ProviderTraits:
    """What `provider` declares for `model`: capabilities, key and endpoint variables, prompt
    cache rules (see `ProviderTraits`)."""
    return provider_class(provider).traits(model)


def prompt_cache_min_tokens(provider: str, model: str) -> int | None:
    """The fewest prefix tokens `provider` caches for `model`; None if it has no prompt cache."""
    rules = traits_of(provider, model).prompt_cache
    return rules.min_tokens if rules is not None else None

