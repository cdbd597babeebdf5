"""The one interface every provider implements.

A provider translates a `Request` to its wire payload and a raw response back to a `Result`
(`to_payload` / `from_payload`, pure and testable without I/O), and makes one call with
`complete`. Concurrency, rate limits, retries and caching belong to the executor, not here:
a provider makes exactly one attempt per `complete` call (SDK retries are off) and raises
`TransientProviderError` or `TerminalProviderError` when it fails.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batchopt.records import Request, Result
from batchopt.tokens import ChatFraming


@dataclass(frozen=True)
class Capabilities:
    """What a provider can do beyond plain chat."""

    batch: bool = False
    json_schema: bool = False
    logprobs: bool = False
    prompt_cache: bool = False
    # Cost from measured time ($/hour) rather than from a per-token price.
    priced_by_time: bool = False
    # Fine-tuning jobs (`batchopt distill train`).
    fine_tuning: bool = False


@dataclass(frozen=True)
class PromptCacheRules:
    """How a provider's prompt cache treats a repeated prompt prefix, for pricing and planning."""

    # The shortest prefix the provider caches.
    min_tokens: int
    # The cached length is reported in whole steps of this many tokens (OpenAI: 128).
    step_tokens: int = 1
    # Writing the cache is billed (at its own price) to the request that writes it (Anthropic).
    writes_billed: bool = False

    def cached_tokens(self, prefix_tokens: int) -> int:
        """How many of a `prefix_tokens`-long shared prefix a cache hit reports as cached."""
        if prefix_tokens < self.min_tokens:
            return 0
        return prefix_tokens - prefix_tokens % self.step_tokens


@dataclass(frozen=True)
class ProviderTraits:
    """What the rest of batchopt may ask about a provider and model without building a client:
    the answers to every question that would otherwise compare provider names."""

    capabilities: Capabilities
    # The environment variables a key and an endpoint are read from (None: needs no key).
    api_key_env: str | None = None
    base_url_env: str | None = None
    default_base_url: str | None = None
    prompt_cache: PromptCacheRules | None = None
    # The model is a file loaded in this process (its `model_path` or `endpoint` names it).
    model_file: bool = False
    # What the provider bills around a request's text (`tokens.static_prompt_tokens`).
    framing: ChatFraming = ChatFraming()


class Provider(ABC):
    """A model provider: one attempt per `complete` call."""

    name: str = "provider"
    capabilities: Capabilities = Capabilities()

    @classmethod
    def traits(cls, model: str) -> ProviderTraits:
        """What this provider declares for `model` (see `ProviderTraits`)."""
        return ProviderTraits(capabilities=cls.capabilities)

    @classmethod
    def exact_tokens(cls, model: str, endpoint: str | None = None
                     ) -> tuple[str, Callable[[str], int]] | None:
        """The provider's own tokenizer for `model` served at `endpoint`, available offline:
        (the counter's name, e.g. `exact:o200k_base`; a count function), or None when there is
        none (its prompts are then estimated: `providers.token_counting`)."""
        return None

    @abstractmethod
    def to_payload(self, request: Request) -> dict[str, Any]:
        """The request body this provider's API takes for `request`."""

    @abstractmethod
    def from_payload(self, request: Request, raw: dict[str, Any]) -> Result:
        """A `Result` from the provider's raw response body (a dict)."""

    @abstractmethod
    async def complete(self, request: Request) -> Result:
        """Send `request` once; raise TransientProviderError or TerminalProviderError on failure."""

    def caches_prefix(self, request: Request) -> bool:
        """Whether the provider's prompt cache can serve `request`'s system text to the requests
        after it (long enough to be cached). An executor then sends one request first, alone,
        so the rest read the cache instead of all writing it at once."""
        return False

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release clients and connections."""


@dataclass(frozen=True)
class ProviderSettings:
    """What a provider needs to be built; the runner fills it from the chosen profile.

    `api_key` is held in memory only: providers must never write it anywhere or put it in an
    error message.
    """

    provider: str
    model: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 60.0
    concurrency: int = 8
    model_path: str | None = None
    n_ctx: int = 2048


# What builds a tier's provider from its settings: `providers.registry.create_provider`, or a
# test's stand-in (`providers.scripted.stand_ins`), passed down in `RunOptions.providers`.
ProviderFactory = Callable[[ProviderSettings], Provider]
