"""Rendered rows become requests: one per dedup group, keyed by all that decides the answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from batchopt.hashing import stable_hash
from batchopt.records import Request
from batchopt.tokens import count_tokens


@dataclass(frozen=True)
class CallSpec:
    """What every request of a run shares: where it goes, how it is asked, the static prefix.

    `endpoint` (a base URL or a local model file) is part of each request's key, so answers from
    a rehearsal against the fake server are never served to a run against the real API.
    """

    provider: str
    model: str
    endpoint: str
    system: str
    max_tokens: int
    temperature: float = 0.0
    json_schema: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)


def build_requests(rows: pl.DataFrame, spec: CallSpec, user_column: str = "prompt_user"
                   ) -> dict[str, Request]:
    """One Request per group (from its representative's rendered prompt), by group_id."""
    representatives = rows.filter(pl.col("dedup") == "none")
    system_tokens = count_tokens(spec.system, spec.model)
    requests: dict[str, Request] = {}
    for group_id, user in representatives.select("group_id", user_column).iter_rows():
        key = stable_hash({
            "provider": spec.provider, "endpoint": spec.endpoint, "model": spec.model,
            "system": spec.system, "user": user, "max_tokens": spec.max_tokens,
            "temperature": spec.temperature, "json_schema": spec.json_schema,
            "params": spec.params,
        })
        requests[group_id] = Request(
            key=key, provider=spec.provider, model=spec.model, system=spec.system, user=user,
            max_tokens=spec.max_tokens, temperature=spec.temperature,
            json_schema=spec.json_schema, params=dict(spec.params),
            estimated_input_tokens=system_tokens + count_tokens(user, spec.model),
        )
    return requests
