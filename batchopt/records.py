"""Small frozen records passed between stages and providers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Usage:
    """Token usage as the provider reported it.

    `input_tokens` counts every prompt token, cached ones included; `cached_input_tokens` and
    `cache_write_tokens` say how many of them were read from or written to a prompt cache.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cache_write_tokens": self.cache_write_tokens,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        return cls(**{k: int(data.get(k) or 0) for k in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True)  # millions of them at 10M rows: no __dict__ each
class Request:
    """One distinct model call: what is sent, to whom, with which parameters.

    `key` is the canonical hash of everything that decides the answer (provider, model, params,
    messages); it keys the response cache. `estimated_input_tokens` is the offline count of
    system + user text by the counter named in `token_counter` (see `providers.token_counting`);
    neither is part of the key.
    """

    key: str
    provider: str
    model: str
    system: str
    user: str
    max_tokens: int
    temperature: float = 0.0
    json_schema: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    estimated_input_tokens: int = 0
    token_counter: str = ""


@dataclass(frozen=True, slots=True)
class Result:
    """The answer to one Request, or why there is none."""

    key: str
    text: str | None
    usage: Usage = field(default_factory=Usage)
    status: str = "ok"  # ok | failed | skipped (never sent: an empty input)
    # (the ledger also says "unverified: budget": a cascade the budget stopped)
    error: str | None = None
    finish_reason: str | None = None
    request_id: str | None = None
    latency_ms: float = 0.0
    attempts: int = 1
    from_cache: bool = False
    parsed: dict[str, Any] | None = None
    mode: str = "online"  # online | batch: how it was bought
    batch_id: str | None = None  # the provider batch that answered it
    paid_run_id: str | None = None  # the run that bought it (set when read from the cache)
    retry_reason: str | None = None  # why an earlier batch did not answer it, if one did not
    # log-probabilities of the answer's tokens, where the provider returned them (OpenAI with
    # `logprobs: true`); None otherwise
    token_logprobs: tuple[float, ...] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"
