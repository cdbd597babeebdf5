"""Answers from earlier runs of the same pipeline (the semantic response cache).

A request that is a guarded near-duplicate of one an earlier run answered reuses that answer;
what a run answers is remembered for the runs after it. The index lives beside the response
cache, one per pipeline configuration (`fingerprint.config_hash`: the same models asked the same
way) and embedding model (`dedup.crossrun.AnsweredIndex`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from batchopt.execute.cache import ResponseCache
from batchopt.records import Request, Result
from batchopt.run.model import Answers, Plan
from batchopt.run.tiers import tier_extra_columns

if TYPE_CHECKING:
    from batchopt.dedup.crossrun import AnsweredIndex, PastAnswer


def rep_ids(plan: Plan) -> dict[str, str]:
    """Request key -> the id of the row whose prompt it is (read from the request table's
    columns: no Request is made)."""
    table = plan.requests
    ids = table.reps.column(plan.pipeline.config.input.id_column, table.rep).cast(pl.String)
    return dict(zip(table.iter_keys(), ids.to_list(), strict=True))


def answered_index(plan: Plan, cache: ResponseCache) -> AnsweredIndex | None:
    """The index of earlier runs' answers, or None when this run neither reuses nor remembers.

    None too when a tier's own template reads a column the embedded default rendering does not
    (`tiers.tier_extra_columns`): the index keeps no such values, so a past answer for another
    customer could not be told apart (within a run, semantic dedup requires them equal)."""
    sem = plan.pipeline.config.dedup.semantic
    if plan.semantic is None or not sem.across_runs or not cache.enabled:
        return None
    if tier_extra_columns(plan.pipeline.config.prompt.template, plan.tiers.values()):
        return None
    from batchopt.dedup.crossrun import AnsweredIndex

    # one index per configuration: an answer is reused only where this run would have asked
    # the same model the same way (another model's or prompt's answer is not this one's)
    return AnsweredIndex(cache.path / "answered" / plan.config_hash, plan.semantic.embedder_name)


def past_hits(
    plan: Plan, cache: ResponseCache, index: AnsweredIndex, rep_ids: dict[str, str],
    keys: list[str],
) -> dict[str, tuple[PastAnswer, Result]]:
    """Of the request `keys`, those a guarded near-duplicate of an earlier run's answer answers:
    key -> (the hit, that answer). What a run reuses and what `batchopt plan` leaves out."""
    assert plan.semantic is not None and plan.guards is not None
    if not keys:
        return {}
    ids = [rep_ids[key] for key in keys]
    vectors = plan.semantic.vectors.take(ids)
    texts = plan.semantic.texts.take(ids)
    threshold = plan.pipeline.config.dedup.semantic.threshold
    found = {}
    for key, hit in zip(keys, index.lookup(texts, vectors, threshold, plan.guards), strict=True):
        earlier = cache.get(hit.request_key) if hit is not None else None
        if hit is not None and earlier is not None and earlier.ok:
            found[key] = (hit, earlier)
    return found


def reuse_past(
    plan: Plan, cache: ResponseCache, index: AnsweredIndex, rep_ids: dict[str, str],
    misses: list[Request], answers: Answers,
) -> list[Request]:
    """Answer misses that are guarded near-duplicates of earlier runs' answers; return the rest."""
    found = past_hits(plan, cache, index, rep_ids, [r.key for r in misses])
    remaining = []
    for request in misses:
        if request.key in found:
            hit, earlier = found[request.key]
            answers.results[request.key] = earlier
            answers.past[request.key] = hit
        else:
            remaining.append(request)
    return remaining


def remember(
    plan: Plan, index: AnsweredIndex, rep_ids: dict[str, str], answered: list[Request]
) -> None:
    """Add the requests `answered` (fresh answers of this run) to the index, for later runs."""
    if not answered:
        return
    assert plan.semantic is not None
    ids = [rep_ids[r.key] for r in answered]
    index.add(
        ids, plan.run_id, [r.key for r in answered], plan.semantic.texts.take(ids),
        plan.semantic.vectors.take(ids),
    )
