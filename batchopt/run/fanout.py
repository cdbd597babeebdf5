"""Fan each group's answer out to every member row: the outputs table and the ledger facts.

`group_results` makes one row per dedup group from the results; `output_table` and
`ledger_facts` join it back onto the input rows. Only a group's representative carries the
usage, latency and attempts of the call; followers cost nothing and name their representative.
Every member carries its group's request's offline prompt count and the counter that made it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from batchopt.io.writer import ParquetParts
from batchopt.records import Request, Result, Usage

_PER_CALL_TOKENS = ["input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens"]
_OTHER_TOKENS = [f"other_{c}" for c in _PER_CALL_TOKENS]  # a group's other calls' usage


def group_results(
    requests: dict[str, Request],
    results: dict[str, Result],
    estimate: Callable[[Request], float],
    past: dict[str, Any] | None = None,
    routes: dict[str, tuple[str, str]] | None = None,
    tried_first: dict[str, float] | None = None,
    escalated: set[str] | None = None,
    overflow: dict[str, str] | None = None,
    others: dict[str, dict[str, float]] | None = None,
) -> pl.DataFrame:
    """One row per group: its answer, how it was obtained, and what it was billed.

    `requests` holds each group's final request (the last tier a cascade asked). `past` maps a
    request key to the earlier run's answer it reused (a `PastAnswer`: row_id, run_id,
    similarity), for the ledger to name; `routes` a group to its (tier, route reason);
    `tried_first` a group to what its other calls cost (cheaper tiers a cascade asked first,
    judge calls); `escalated` the groups a cascade sent up a tier; `overflow` the groups whose
    prompt was too long for the context ("skipped" or "truncated"); `others` a group to the
    usage of its calls besides the final answer (`other_<token column>`) and the estimate of
    its calls sent but never confirmed (`unconfirmed_usd`), from `calls.by_group`."""
    past, routes, tried_first = past or {}, routes or {}, tried_first or {}
    others = others or {}
    escalated, overflow = escalated or set(), overflow or {}
    records = []
    for group_id, request in requests.items():
        result = results[request.key]
        earlier = past.get(request.key)
        tier, reason = routes.get(group_id, (None, None))
        records.append({
            "group_id": group_id,
            "tier": tier,
            "route_reason": reason,
            "provider": request.provider,
            "model": request.model,
            "escalated": group_id in escalated,
            "earlier_attempts_usd": tried_first.get(group_id, 0.0),
            **_result_facts(result),
            "estimated_cost_usd": 0.0 if result.from_cache else estimate(request),
            "estimated_input_tokens": request.estimated_input_tokens,
            "token_counter": request.token_counter or None,
            "cached_from_run": earlier.run_id if earlier else (
                result.paid_run_id if result.from_cache else None
            ),
            "past_row_id": earlier.row_id if earlier else None,
            "past_similarity": earlier.similarity if earlier else None,
            "overflow": overflow.get(group_id),
            **{c: int(others.get(group_id, {}).get(c, 0)) for c in _OTHER_TOKENS},
            "unconfirmed_usd": float(others.get(group_id, {}).get("unconfirmed_usd", 0.0)),
        })
    return pl.DataFrame(records, schema_overrides=_GROUP_TYPES)


# the group table's columns a null may fill, typed
_GROUP_TYPES = {
    "answer": pl.String, "parsed_json": pl.String, "error": pl.String,
    "request_id": pl.String, "batch_id": pl.String, "retry_reason": pl.String,
    "tier": pl.String, "route_reason": pl.String, "provider": pl.String, "model": pl.String,
    "escalated": pl.Boolean, "earlier_attempts_usd": pl.Float64,
    "latency_ms": pl.Float64, "baseline_latency_ms": pl.Float64,
    "cached_from_run": pl.String, "past_row_id": pl.String, "past_similarity": pl.Float64,
    "estimated_input_tokens": pl.Int64, "token_counter": pl.String, "overflow": pl.String,
    **{c: pl.Int64 for c in _OTHER_TOKENS}, "unconfirmed_usd": pl.Float64,
}


def _result_facts(result: Result) -> dict[str, Any]:
    """A group's columns read from its final result: the answer, how it was obtained, the usage
    billed (none for a cache hit or an unbilled failure) and the baseline's."""
    billed = not result.from_cache and (result.ok or result.usage.input_tokens > 0)
    usage = result.usage if billed else Usage()
    mode = "cache" if result.from_cache else (result.mode if result.ok else (
        "skipped" if result.status == "skipped" else "failed"))
    return {
        "answer": result.text if result.ok else None,
        "parsed_json": json.dumps(result.parsed) if result.ok and result.parsed else None,
        "group_mode": mode,
        "status": result.status,
        "error": result.error,
        "request_id": result.request_id,
        "batch_id": None if result.from_cache else result.batch_id,
        "retry_reason": None if result.from_cache else result.retry_reason,
        "latency_ms": 0.0 if result.from_cache else result.latency_ms,
        "attempts": result.attempts,
        **usage.to_dict(),
        # What the naive way would be billed for each member: the call's own usage.
        "baseline_input_tokens": result.usage.input_tokens,
        "baseline_output_tokens": result.usage.output_tokens,
        "baseline_latency_ms": result.latency_ms,
    }


def ledger_facts(
    rows: pl.DataFrame, groups: pl.DataFrame, id_column: str, constants: dict[str, Any]
) -> pl.DataFrame:
    """One fact row per input row; `constants` (run_id, pipeline, ...) are the same on every
    row. `rows` may carry `compression_tokens_saved` (the prompt tokens compression removed from
    each row): the naive way would have sent them, so they count in the row's baseline."""
    rep = pl.col("dedup") == "none"
    reused = rep & pl.col("past_row_id").is_not_null()
    saved = (pl.col("compression_tokens_saved") if "compression_tokens_saved" in rows.columns
             else pl.lit(0)).cast(pl.Int64).fill_null(0).alias("compression_tokens_saved")
    # the row's own prompt on the baseline model (row_stages.BASELINE_TOKENS), else the call's
    # usage plus what compression removed
    own = "baseline_prompt_tokens" in rows.columns
    baseline_in = (pl.col("baseline_prompt_tokens") if own
                   else pl.col("baseline_input_tokens") + pl.col("compression_tokens_saved"))
    joined = rows.select(
        pl.col(id_column).cast(pl.String).alias("row_id"),
        "group_id", "representative_id", "dedup", "similarity", "veto_guard", "veto_id", saved,
        *(["baseline_prompt_tokens"] if own else []),
    ).join(groups, on="group_id", how="left", maintain_order="left")
    return joined.with_columns(
        # A representative answered by an earlier run's near-duplicate names that row.
        pl.when(reused).then(pl.col("past_row_id")).otherwise(pl.col("representative_id"))
        .alias("representative_id"),
        pl.when(reused).then(pl.col("past_similarity")).otherwise(pl.col("similarity"))
        .alias("similarity"),
        pl.when(rep).then(pl.col("cached_from_run")).otherwise(None).alias("cached_from_run"),
        *[pl.lit(value).alias(name) for name, value in constants.items()],
        pl.when(rep | pl.col("group_mode").is_in(["failed", "skipped"]))
        .then(pl.col("group_mode"))
        .otherwise(pl.lit("dedup")).alias("mode"),
        pl.when(rep).then(pl.col("escalated")).otherwise(False).alias("escalated"),
        pl.when(rep).then(pl.col("earlier_attempts_usd")).otherwise(0.0)
        .alias("earlier_attempts_usd"),
        *[pl.when(rep).then(pl.col(c)).otherwise(0).cast(pl.Int64).alias(c)
          for c in _PER_CALL_TOKENS + [c for c in _OTHER_TOKENS if c in groups.columns]],
        *([pl.when(rep).then(pl.col("unconfirmed_usd")).otherwise(0.0).alias("unconfirmed_usd")]
          if "unconfirmed_usd" in groups.columns else []),
        pl.when(rep).then(pl.col("latency_ms")).otherwise(0.0).alias("latency_ms"),
        pl.when(rep).then(pl.col("attempts")).otherwise(0).cast(pl.Int64).alias("attempts"),
        pl.when(rep).then(pl.col("request_id")).otherwise(None).alias("request_id"),
        pl.when(rep).then(pl.col("estimated_cost_usd")).otherwise(0.0).alias("estimated_cost_usd"),
        pl.when(rep).then(pl.col("batch_id")).otherwise(None).alias("batch_id"),
        pl.when(rep).then(pl.col("retry_reason")).otherwise(None).alias("retry_reason"),
        pl.when(rep).then(pl.col("compression_tokens_saved")).otherwise(0)
        .alias("compression_tokens_saved"),
        baseline_in.cast(pl.Int64).alias("baseline_input_tokens"),
        pl.col("baseline_output_tokens").cast(pl.Int64),
        # the request each member was answered by: a follower's and a cache hit's too
        pl.col("estimated_input_tokens").cast(pl.Int64).fill_null(0),
    )


def with_other_calls(priced: pl.DataFrame, facts: pl.DataFrame) -> pl.DataFrame:
    """`priced` (the ledger rows priced from `facts`, in the same order) with each row's other
    calls' usage added to its token columns: a row's tokens are all its calls' tokens, as the
    provider billed them (their cost is in `earlier_attempts_usd` already)."""
    if not set(_OTHER_TOKENS) <= set(facts.columns):
        return priced
    return priced.with_columns(
        (pl.col(c) + facts[f"other_{c}"].fill_null(0)).alias(c) for c in _PER_CALL_TOKENS)


def output_table(
    rows: pl.DataFrame,
    groups: pl.DataFrame,
    keep_columns: list[str],
    output_column: str,
    json_schema: dict[str, Any] | None,
    status_column: str | None = None,
) -> pl.DataFrame:
    """The input columns plus the answer; an object schema's top-level properties also get a
    column each (`<output_column>_<property>`), typed as the property's schema declares
    (`property_dtype`): JSON text for arrays, objects and anything else; with `status_column`,
    each row's ledger status too (a run stopped by its budget says which answers are
    `unverified: budget`)."""
    status = [pl.col("status").alias("_status")] if status_column is not None else []
    frame = rows.join(
        groups.select("group_id", pl.col("answer").alias("_answer"), "parsed_json", *status),
        on="group_id", how="left", maintain_order="left")
    columns = [pl.col(c) for c in keep_columns] + [pl.col("_answer").alias(output_column)]
    if status_column is not None:
        columns.append(pl.col("_status").alias(status_column))
    schema = json_schema or {}
    properties = schema.get("properties") or {} if schema.get("type") == "object" else {}
    for prop, prop_schema in properties.items():
        # quoted with ' (a \' inside): polars' JSONPath finds no non-ASCII name written as
        # json.dumps spells it ("\u00e9") and rejects a \" inside double quotes
        path = "$['" + prop.replace("'", "\\'") + "']"
        text = pl.col("parsed_json").str.json_path_match(path)
        columns.append(_typed(text, property_dtype(prop_schema)).alias(f"{output_column}_{prop}"))
    return frame.select(columns)


_JSON_TYPES: dict[str, pl.DataType] = {
    "integer": pl.Int64(), "number": pl.Float64(), "boolean": pl.Boolean(), "string": pl.String(),
}


def property_dtype(schema: Any) -> pl.DataType:
    """The column type a JSON Schema property declares: integer Int64, number Float64, boolean
    Boolean, string String; a type that also allows null (`["number", "null"]`, or an `anyOf` /
    `oneOf` with a `{"type": "null"}` branch) is the other type, nullable. `integer` with
    `number` is Float64. Arrays, objects, several types and an undeclared type: String (the
    value's JSON text)."""
    if not isinstance(schema, dict):
        return pl.String()
    declared = schema.get("type")
    if isinstance(declared, str):
        kinds = {declared}
    elif isinstance(declared, list) and all(isinstance(k, str) for k in declared):
        kinds = set(declared)
    else:
        branches = schema.get("anyOf") or schema.get("oneOf")
        if not isinstance(branches, list) or not branches:
            return pl.String()
        kinds = set()
        for branch in branches:
            if not isinstance(branch, dict):
                return pl.String()
            kind = branch.get("type")
            if isinstance(kind, str):
                kinds.add(kind)
            elif isinstance(kind, list) and all(isinstance(k, str) for k in kind):
                kinds.update(kind)
            else:
                return pl.String()
    kinds.discard("null")
    if kinds == {"integer", "number"}:
        return pl.Float64()
    if len(kinds) == 1:
        return _JSON_TYPES.get(kinds.pop(), pl.String())
    return pl.String()


def _typed(text: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """The text json_path_match found, as `dtype`; a value that does not fit is null."""
    if dtype == pl.Boolean:
        return (pl.when(text == "true").then(True).when(text == "false").then(False)
                .otherwise(None).cast(pl.Boolean))
    if dtype == pl.Int64:
        number = text.cast(pl.Float64, strict=False)  # 3.0 is an integer to JSON Schema
        whole = number.is_finite() & (number == number.floor()) & (number.abs() < 2.0**63)
        return pl.coalesce(text.cast(pl.Int64, strict=False),
                           pl.when(whole).then(number).otherwise(None).cast(pl.Int64))
    if dtype == pl.Float64:
        return text.cast(pl.Float64, strict=False)
    return text


FAN_OUT_ROWS = 500_000  # input rows joined, priced and written at a time


@dataclass
class LedgerTotals:
    """What a run's summary reads from its ledger, added up chunk by chunk."""

    rows: int = 0
    failed: int = 0
    exact: int = 0
    semantic: int = 0
    cache_hits: int = 0
    paid_by_tier: Counter[str] = field(default_factory=Counter)
    escalated: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    baseline_cost_usd: float = 0.0

    def add(self, ledger: pl.DataFrame) -> None:
        """Add a part of the ledger's rows to the totals."""
        self.rows += ledger.height
        self.failed += int((ledger["status"] == "failed").sum())
        self.exact += int((ledger["dedup"] == "exact").sum())
        self.semantic += int((ledger["dedup"] == "semantic").sum())
        self.cache_hits += int((ledger["mode"] == "cache").sum())
        paid = ledger.filter(pl.col("dedup") == "none").group_by("tier").len()
        self.paid_by_tier.update(dict(paid.iter_rows()))
        self.escalated += int(ledger["escalated"].sum())
        self.input_tokens += int(ledger["input_tokens"].sum())
        self.cached_input_tokens += int(ledger["cached_input_tokens"].sum())
        self.output_tokens += int(ledger["output_tokens"].sum())
        self.cost_usd += float(ledger["cost_usd"].sum())
        self.baseline_cost_usd += float(ledger["baseline_cost_usd"].sum())


def write_fanned_out(
    rows: pl.DataFrame,
    groups: pl.DataFrame,
    outputs: ParquetParts,
    ledger: ParquetParts,
    *,
    to_outputs: Callable[[pl.DataFrame, pl.DataFrame], pl.DataFrame],
    to_ledger: Callable[[pl.DataFrame, pl.DataFrame], pl.DataFrame],
    chunk_rows: int | None = None,
) -> LedgerTotals:
    """Join the groups onto `rows` a chunk at a time and append each chunk's outputs and
    ledger rows to their files, so neither table is ever whole in memory. `to_outputs` and
    `to_ledger` turn (rows chunk, groups) into that chunk's table. Committing is the caller's."""
    totals = LedgerTotals()
    chunk_rows = chunk_rows or FAN_OUT_ROWS
    for start in range(0, max(rows.height, 1), chunk_rows):
        chunk = rows.slice(start, chunk_rows)
        outputs.write(to_outputs(chunk, groups))
        priced = to_ledger(chunk, groups)
        ledger.write(priced)
        totals.add(priced)
    return totals
