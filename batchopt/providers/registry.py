"""Build the provider a profile names. Provider modules (and their SDKs) load only when used."""

from __future__ import annotations

from batchopt.errors import ConfigError
from batchopt.providers.base import Provider, ProviderSettings

PROVIDER_NAMES = ("openai", "anthropic", "local")


def create_provider(settings: ProviderSettings) -> Provider:
    """The provider for `settings.provider`; ConfigError if it is unknown or its SDK is missing."""
    name = settings.provider
    if name == "openai":
        from batchopt.providers.openai import OpenAIProvider

        return OpenAIProvider(settings)
    if name == "anthropic":
        from batchopt.providers.anthropic import AnthropicProvider

        return AnthropicProvider(settings)
    if name == "local":
        from batchopt.providers.local import LocalProvider

        return LocalProvider(settings)
    known = ", ".join(PROVIDER_NAMES)
    raise ConfigError(f"unknown provider {name!r}: expected one of {known}")


def prompt_cache_min_tokens(provider: str, model: str) -> int | None:
    """The fewest prefix tokens `provider` caches for `model`; None if it has no prompt cache."""
    if provider == "openai":
        from batchopt.providers.openai import OPENAI_CACHE_MIN_TOKENS

        return OPENAI_CACHE_MIN_TOKENS
    if provider == "anthropic":
        from batchopt.providers.anthropic import cache_min_tokens

        return cache_min_tokens(model)
    return None
