"""Rendered rows become requests: one per dedup group, keyed by all that decides the answer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from batchopt.hashing import keyed_by_last_field
from batchopt.records import Request
from batchopt.tokens import TokenCounter, static_prompt_tokens


@dataclass(frozen=True)
class CallSpec:
    """What every request of a run shares: where it goes, how it is asked, the static prefix.

    `endpoint` (a base URL or a local model file) is part of each request's key, so answers from
    a rehearsal against the fake server are never served to a run against the real API.
    `counter` counts each request's prompt tokens before it is sent, with the provider's
    framing (not part of the key): the caller picks it for the provider and model
    (`providers.token_counting.counter_for`, calibrated by the run).
    """

    provider: str
    model: str
    endpoint: str
    system: str
    max_tokens: int
    temperature: float = 0.0
    json_schema: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    counter: TokenCounter | None = field(default=None, compare=False)


def resolve_counter(spec: CallSpec, counter: TokenCounter | None = None) -> TokenCounter:
    """The counter requests of `spec` are counted with: `counter`, else `spec.counter`
    (ValueError without either: the caller picks a provider's counter)."""
    found = counter or spec.counter
    if found is None:
        raise ValueError(f"no token counter for {spec.provider} {spec.model}: set CallSpec.counter "
                         "(providers.token_counting.counter_for)")
    return found


def request_keyer(spec: CallSpec) -> Callable[[str], str]:
    """`user -> the key of the request asking it with spec`: the stable_hash of spec's fields
    that decide the answer and "user" (the static part hashed once)."""
    return keyed_by_last_field({
        "provider": spec.provider, "endpoint": spec.endpoint, "model": spec.model,
        "system": spec.system, "max_tokens": spec.max_tokens,
        "temperature": spec.temperature, "json_schema": spec.json_schema,
        "params": spec.params,
    }, "user")


def build_requests(rows: pl.DataFrame, spec: CallSpec, user_column: str = "prompt_user",
                   *, counter: TokenCounter | None = None) -> dict[str, Request]:
    """One Request per group (from its representative's rendered prompt), by group_id.

    Prompt tokens are counted by `counter`, else `spec.counter`.
    (A run's plan holds its requests as columns: `request_table.RequestTable`.)"""
    counter = resolve_counter(spec, counter)
    representatives = rows.filter(pl.col("dedup") == "none")
    system_tokens = static_prompt_tokens(counter, spec.system, spec.json_schema)
    requests: dict[str, Request] = {}
    key_of = request_keyer(spec)
    params = dict(spec.params)  # one copy, shared by the requests (frozen, never mutated)
    for group_id, user in representatives.select("group_id", user_column).iter_rows():
        requests[group_id] = Request(
            key=key_of(user), provider=spec.provider, model=spec.model, system=spec.system,
            user=user, max_tokens=spec.max_tokens, temperature=spec.temperature,
            json_schema=spec.json_schema, params=params,
            estimated_input_tokens=system_tokens + counter.count(user),
            token_counter=counter.name,
        )
    return requests
