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
