"""Build the provider a profile names. Provider modules (and their SDKs) load only when used."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from batchopt.errors import ConfigError
from batchopt.providers.base import Provider, ProviderSettings, ProviderTraits

PROVIDER_NAMES = ("openai", "anthropic", "local")

ProviderStandIn = Provider | Callable[[ProviderSettings], Provider]
# Provider name -> what `create_provider` returns instead (see `scripted_providers`).
_stand_ins: dict[str, ProviderStandIn] = {}


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
    stand_in = _stand_ins.get(settings.provider)
    if stand_in is not None:
        return stand_in if isinstance(stand_in, Provider) else stand_in(settings)
    return provider_class(settings.provider)(settings)


def traits_of(provider: str, model: str) -> ProviderTraits:
    """What `provider` declares for `model`: capabilities, key and endpoint variables, prompt
    cache rules (see `ProviderTraits`)."""
    return provider_class(provider).traits(model)


def prompt_cache_min_tokens(provider: str, model: str) -> int | None:
    """The fewest prefix tokens `provider` caches for `model`; None if it has no prompt cache."""
    rules = traits_of(provider, model).prompt_cache
    return rules.min_tokens if rules is not None else None


@contextmanager
def scripted_providers(stand_ins: Mapping[str, ProviderStandIn]) -> Iterator[None]:
    """Within the block, `create_provider` returns a stand-in for each provider name given: a
    provider instance (every call gets the same one, so it sees the whole run) or a factory
    called with the `ProviderSettings`. Meant for `providers.scripted.ScriptedProvider`, so a
    test runs a pipeline without a socket and without changing its YAML:

        with scripted_providers({"openai": ScriptedProvider(answer("Refund."))}):
            run_pipeline(...)

    The run still plans, prices and reads its key variable as the named provider (`traits_of`
    is unchanged). Process-wide, not per thread or task; blocks may nest."""
    saved = dict(_stand_ins)
    _stand_ins.update(stand_ins)
    try:
        yield
    finally:
        _stand_ins.clear()
        _stand_ins.update(saved)
