"""The prompts too long for their tier's context, found before anything is sent: each request
(prompt plus max_tokens) is checked against its tier's context and handled as the tier's
`on_context_overflow` says."""

from __future__ import annotations

import numpy as np
import polars as pl

from batchopt.errors import InputError
from batchopt.io.reader import FILE_COLUMN, ROW_COLUMN
from batchopt.ledger.pricing import PriceTable
from batchopt.prompts.request_table import RequestTable
from batchopt.prompts.requests import build_requests
from batchopt.records import Request
from batchopt.run.tiers import Tier


def _context_of(tier: Tier, prices: PriceTable) -> int | None:
    profile = tier.profile
    if profile.context_tokens is not None:
        return profile.context_tokens
    if tier.traits.model_file:  # a model loaded in this process: the context it was given
        return profile.n_ctx
    return prices.context_tokens(profile.provider, profile.model)


def fit_context(
    rows: pl.DataFrame, tiers: dict[str, Tier], requests: RequestTable, prices: PriceTable,
) -> tuple[RequestTable, dict[str, str], dict[str, tuple[Request, str]]]:
    """Check each request (prompt plus max_tokens) against its tier's context before anything
    is sent and do what the tier's `on_context_overflow` says: fail naming the row (exit 2),
    skip the row, or cut the middle of its user message to fit. Returns (the requests to send,
    "skipped" | "truncated" by group, the skipped requests and why by group).

    The check runs on the token column; only the requests over their limit become Requests."""
    codes = requests.tier
    contexts = [_context_of(tiers[name], prices) for name in requests.tier_names]
    limits = np.array([-1 if c is None else c for c in contexts], dtype=np.int64)
    max_tokens = np.array([t.spec.max_tokens for t in requests.tiers], dtype=np.int64)
    limited = limits[codes] >= 0
    over_at = np.flatnonzero(
        limited & (requests.tokens.astype(np.int64) + max_tokens[codes] > limits[codes]))
    over = []
    for place in over_at.tolist():
        group, request = next(requests.iter_items(place, place + 1))
        tier = tiers[requests.tiers[codes[place]].name]
        over.append((place, group, request, tier, int(limits[codes[place]])))
    failing = [o for o in over if o[3].profile.on_context_overflow == "fail"]
    if failing:
        place, group, request, tier, limit = failing[0]
        rep = rows.row(int(requests.reps.positions[requests.rep[place]]), named=True)
        raise InputError(
            f"{rep[FILE_COLUMN]}: row {rep[ROW_COLUMN]}: {_too_long(request, tier, limit)}; set "
            f"profiles.{tier.name}.on_context_overflow to skip or truncate "
            f"({len(failing)} row(s) in all)"
        )
    cuts: dict[int, Request] = {}
    dropped: list[int] = []
    overflow: dict[str, str] = {}
    skipped: dict[str, tuple[Request, str]] = {}
    for place, group, request, tier, limit in over:
        truncate = tier.profile.on_context_overflow == "truncate"
        cut = _truncated(group, request, tier, limit) if truncate else None
        if cut is not None:
            cuts[place], overflow[group] = cut, "truncated"
            continue
        dropped.append(place)
        overflow[group] = "skipped"
        why = "skipped (too long to truncate)" if truncate else "skipped"
        skipped[group] = (request, f"{why}: {_too_long(request, tier, limit)} "
                                   f"(profiles.{tier.name}.on_context_overflow)")
    kept = requests.revise(cuts, dropped) if over else requests
    return kept, overflow, skipped


def _too_long(request: Request, tier: Tier, limit: int) -> str:
    return (f"prompt of {request.estimated_input_tokens:,} tokens plus max_tokens "
            f"{request.max_tokens:,} exceeds the context of {limit:,} tokens of "
            f"{tier.profile.model}")


def _truncated(group: str, request: Request, tier: Tier, limit: int) -> Request | None:
    """`request` with the middle of its user message cut (`cut_to_budget`) until it fits, or
    None when even an empty user message would not."""
    from batchopt.prompts.compress import cut_to_budget

    counter = tier.spec.counter
    user_tokens = counter.count(request.user) if counter else request.estimated_input_tokens
    budget = limit - request.max_tokens - (request.estimated_input_tokens - user_tokens)
    for _ in range(4):  # the cut counts with the model's tokenizer, the check with the counter
        if budget <= 0:
            return None
        text = cut_to_budget(request.user, budget, tier.profile.model)
        frame = pl.DataFrame({"group_id": [group], "dedup": ["none"], "prompt_user": [text]})
        cut = build_requests(frame, tier.spec)[group]
        excess = cut.estimated_input_tokens + cut.max_tokens - limit
        if excess <= 0:
            return cut
        budget -= excess
    return None
