"""Price a run's facts into the ledger: one row per input row, with cost, baseline and savings.

Every row's savings are split by lever and add up to `baseline_cost_usd - cost_usd`:

- a dedup follower saved its whole baseline through exact or semantic dedup;
- a cache hit saved its whole baseline through the response cache;
- the baseline is profile-independent: `baseline_input_tokens` are the row's own prompt as
  `prompt.system` and `prompt.template` render it before compression, and
  `baseline_output_tokens` its answer's text (0 without one), both counted with the baseline
  model's counter (`batchopt.providers.token_counting.counter_for`, uncalibrated; no chat framing);
- a paid row (online, batch, or failed but billed) saved, step by step from the baseline:
  routing       baseline - actual model at full online price on the uncompressed call
                (its billed tokens plus `compression_tokens_saved`)
  compression   actual model full price on the uncompressed call - full price on the actual
  prompt cache  full price on the actual tokens - the same tokens at prompt-cache rates
  batch         the batch discount on what is left
- a failed row that was not billed has neither cost nor baseline: no answer was bought; nor
  has a skipped one (status and mode `skipped`: an empty input never sent, `input.on_empty`);
- a cascade row also paid for the cheaper tiers it tried first and its judge calls
  (`earlier_attempts_usd`, from the run's calls record, `batchopt.run.calls`): that is in its cost
  and taken from its routing saving. The facts' tokens are the final answer's (what is priced
  here); the runner then adds the other calls' tokens (`fanout.with_other_calls`).

A time-priced (local) model costs its latency whatever the tokens, so on its rows compression,
prompt cache and batch are 0 and routing takes the whole saving. A billed row in mode `failed`
is priced online (no batch discount).

Prices are looked up once per distinct (provider, model) and joined in; the arithmetic is polars
expressions, so a ledger of millions of rows is priced in one pass.
"""

from __future__ import annotations

import polars as pl

from batchopt.ledger.pricing import MS_PER_HOUR, ModelPrice, PriceTable, token_usd

FACT_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.String(),
    "pipeline": pl.String(),
    "run_at": pl.Datetime("us", "UTC"),  # when the run wrote its ledger (the day it counts on)
    "row_id": pl.String(),
    "group_id": pl.String(),
    "representative_id": pl.String(),
    "dedup": pl.String(),
    "similarity": pl.Float64(),
    "veto_guard": pl.String(),  # a guard that vetoed this row's nearest semantic merge
    "veto_id": pl.String(),  # ... and the row it would have merged with
    "cached_from_run": pl.String(),  # the earlier run whose answer a cache hit reused
    "tier": pl.String(),
    "provider": pl.String(),
    "model": pl.String(),
    "mode": pl.String(),
    "route_reason": pl.String(),
    "escalated": pl.Boolean(),
    "status": pl.String(),
    "error": pl.String(),
    "attempts": pl.Int64(),
    "latency_ms": pl.Float64(),
    "batch_id": pl.String(),
    "retry_reason": pl.String(),  # why an earlier batch did not answer this row (expired ...)
    "request_id": pl.String(),
    "input_tokens": pl.Int64(),
    "cached_input_tokens": pl.Int64(),
    "cache_write_tokens": pl.Int64(),
    "output_tokens": pl.Int64(),
    "compression_tokens_saved": pl.Int64(),
    "baseline_input_tokens": pl.Int64(),
    "baseline_output_tokens": pl.Int64(),
    "baseline_latency_ms": pl.Float64(),
    "estimated_cost_usd": pl.Float64(),
    # the prompt's (system + user) tokens counted offline before sending, and by which counter
    # (`providers.token_counting`: "exact:..." or "estimate:..."); a follower or cache hit has its
    # representative's
    "estimated_input_tokens": pl.Int64(),
    "token_counter": pl.String(),
    # what this row paid besides its final answer: cheaper tiers a cascade tried first, judge
    # calls (already priced)
    "earlier_attempts_usd": pl.Float64(),
}
# Facts a caller may leave out (read as null): columns added after ledgers were first written.
OPTIONAL_FACTS: dict[str, pl.DataType] = {
    # "skipped" | "truncated": the prompt was too long for the model's context (a profile's
    # on_context_overflow); null when it fitted
    "overflow": pl.String(),
    # `--limit N`: the run read only the input's first N rows; null when it read all of them
    "row_limit": pl.Int64(),
    # the run's configuration fingerprint (`batchopt.run.fingerprint`): estimates learn only from
    # past runs that share it
    "config_hash": pl.String(),
    # the estimated cost of this row's calls sent but never confirmed (a kill, a cut
    # connection): maybe billed, not in cost_usd (`batchopt.run.calls`); null in older ledgers
    "unconfirmed_usd": pl.Float64(),
    # the night the run is for (`--date`, else the run id's date, else the day it ran): what
    # the views and the report group days by; null in older ledgers (their run_at day counts)
    "logical_date": pl.Date(),
}
LEVER_COLUMNS: tuple[str, ...] = (
    "saved_exact_usd",
    "saved_semantic_usd",
    "saved_cache_usd",
    "saved_compression_usd",
    "saved_prompt_cache_usd",
    "saved_routing_usd",
    "saved_batch_usd",
)
LEDGER_SCHEMA: dict[str, pl.DataType] = {
    **FACT_SCHEMA,
    **OPTIONAL_FACTS,
    "cost_usd": pl.Float64(),
    "baseline_cost_usd": pl.Float64(),
    **{name: pl.Float64() for name in LEVER_COLUMNS},
    "price_version": pl.String(),
}
LEDGER_COLUMNS: tuple[str, ...] = tuple(LEDGER_SCHEMA)

# skipped: never sent, by the pipeline's choice (an empty input: `input.on_empty`)
MODES = ("online", "batch", "cache", "dedup", "failed", "skipped")
PAID_MODES = ("online", "batch", "failed")
UNVERIFIED = "unverified: budget"  # a cascade the budget stopped: its answer so far, kept
STATUSES = ("ok", "failed", "skipped", UNVERIFIED)
DEDUP_KINDS = ("none", "exact", "semantic")
_COUNT_COLUMNS = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "compression_tokens_saved",
    "baseline_input_tokens",
    "baseline_output_tokens",
    "attempts",
    "estimated_input_tokens",
)
_RATES = ("_in", "_out", "_cached", "_write", "_discount", "_hour")


def _check_values(df: pl.DataFrame, column: str, allowed: tuple[str, ...]) -> None:
    bad = df.filter(~pl.col(column).is_in(allowed) | pl.col(column).is_null())[column]
    if len(bad):
        shown = ", ".join(repr(v) for v in bad.unique().sort(nulls_last=True).head(5).to_list())
        raise ValueError(
            f"facts: column '{column}' has {len(bad)} row(s) not in {'/'.join(allowed)}: {shown}"
        )


def _prepare(facts: pl.DataFrame) -> pl.DataFrame:
    missing = [name for name in FACT_SCHEMA if name not in facts.columns]
    if missing:
        raise ValueError(f"facts: missing column(s) {', '.join(missing)}")
    absent = [pl.lit(None, dtype).alias(n) for n, dtype in OPTIONAL_FACTS.items()
              if n not in facts.columns]
    facts = facts.with_columns(absent) if absent else facts
    schema = {**FACT_SCHEMA, **OPTIONAL_FACTS}
    try:
        # One contiguous chunk: a frame concatenated from many small ones prices far slower.
        df = facts.select(list(schema)).rechunk().cast(schema)
    except pl.exceptions.PolarsError as exc:
        raise ValueError(f"facts: a column has the wrong type ({exc})") from exc
    df = df.with_columns(
        pl.col(*_COUNT_COLUMNS).fill_null(0),
        pl.col("latency_ms", "baseline_latency_ms", "earlier_attempts_usd").fill_null(0.0),
    )
    _check_values(df, "mode", MODES)
    _check_values(df, "status", STATUSES)
    _check_values(df, "dedup", DEDUP_KINDS)
    bad = df.filter((pl.col("mode") == "dedup") & (pl.col("dedup") == "none"))
    if len(bad):
        raise ValueError(
            f"facts: {len(bad)} dedup follower(s) with dedup 'none', e.g. row {bad['row_id'][0]!r}"
        )
    over = df.filter(
        pl.col("cached_input_tokens") + pl.col("cache_write_tokens") > pl.col("input_tokens")
    )
    if len(over):
        raise ValueError(
            f"facts: {len(over)} row(s) with more cached and cache-write tokens "
            f"than input tokens, e.g. row {over['row_id'][0]!r}"
        )
    return df


def _rates(df: pl.DataFrame, prices: PriceTable) -> pl.DataFrame:
    """One row of rates per distinct (provider, model) that needs pricing."""
    pairs = df.select("provider", "model").unique().sort("provider", "model").rows()
    rows = []
    for provider, model in pairs:
        p = prices.price(provider, model)
        rows.append(
            (
                provider,
                model,
                p.input,
                p.output,
                p.cached_input,
                p.cache_write,
                p.batch_discount,
                p.usd_per_hour,
            )
        )
    schema = {
        "provider": pl.String(),
        "model": pl.String(),
        **{name: pl.Float64() for name in _RATES},
    }
    return pl.DataFrame(rows, schema=schema, orient="row")


def _baseline_expr(price: ModelPrice) -> pl.Expr:
    if price.usd_per_hour is not None:
        return pl.col("baseline_latency_ms") / MS_PER_HOUR * price.usd_per_hour
    return token_usd(
        pl.col("baseline_input_tokens"),
        0,
        0,
        pl.col("baseline_output_tokens"),
        price.input,
        0.0,
        0.0,
        price.output,
    )


def price_ledger(
    facts: pl.DataFrame,
    prices: PriceTable,
    baseline_provider: str,
    baseline_model: str,
    price_version: str | None = None,
) -> pl.DataFrame:
    """Add cost, baseline cost, price version and savings by lever to a run's facts.

    `facts` has one row per input row and the columns of `FACT_SCHEMA`; the result has exactly
    `LEDGER_COLUMNS`, in that order. Raises ValueError for missing columns or inconsistent facts
    and ConfigError for a model the price table does not know.
    """
    df = _prepare(facts)
    mode, status = pl.col("mode"), pl.col("status")
    paid = mode.is_in(PAID_MODES)
    has_model = pl.col("provider").is_not_null() & pl.col("model").is_not_null()
    tokens = pl.col("input_tokens") + pl.col("output_tokens")
    orphan = df.filter(paid & ~has_model & ((status == "ok") | (tokens > 0)))
    if len(orphan):
        raise ValueError(
            f"facts: {len(orphan)} paid row(s) without provider or model, "
            f"e.g. row {orphan['row_id'][0]!r}"
        )

    rates = _rates(df.filter(paid & has_model), prices)
    df = df.join(rates, on=["provider", "model"], how="left", maintain_order="left")

    priced = paid & pl.col("_in").is_not_null()  # followers share the model but paid nothing
    timed = pl.col("_hour").is_not_null()
    batched = (mode == "batch") & ~timed
    discount = pl.when(batched).then(pl.col("_discount")).otherwise(0.0)
    billed = priced & ((tokens > 0) | (timed & (pl.col("latency_ms") > 0)))
    counts = ~(status.is_in(["failed", "skipped"]) & ~billed.fill_null(False))

    baseline = (
        pl.when(counts)
        .then(_baseline_expr(prices.price(baseline_provider, baseline_model)))
        .otherwise(0.0)
    )
    df = df.with_columns(_base=baseline, **_call_costs(timed), _discount_used=discount)
    df = _with_savings(df, priced, counts, price_version or prices.version)
    return df.select(list(LEDGER_COLUMNS)).cast(LEDGER_SCHEMA)


def _call_costs(timed: pl.Expr) -> dict[str, pl.Expr]:
    """A priced row's call at list price, three ways: `_full_b` uncompressed, `_full_a` as sent,
    `_cached_cost` as sent with its prompt-cache reads and writes at their rates. A row priced by
    time (`timed`) costs its latency at the hourly rate in all three."""
    time_cost = pl.col("latency_ms") / MS_PER_HOUR * pl.col("_hour")
    r_in, r_out = pl.col("_in"), pl.col("_out")
    n_in, n_out = pl.col("input_tokens"), pl.col("output_tokens")
    # the row's call uncompressed, on the model that answered: compression's lever ends here,
    # and routing's (the baseline model, its tokenizer and its answer) begins
    b_in, b_out = n_in + pl.col("compression_tokens_saved"), n_out
    uncached = n_in - pl.col("cached_input_tokens") - pl.col("cache_write_tokens")

    full_on_baseline = (
        pl.when(timed)
        .then(time_cost)
        .otherwise(token_usd(b_in, 0, 0, b_out, r_in, 0.0, 0.0, r_out))
    )
    full_on_actual = (
        pl.when(timed)
        .then(time_cost)
        .otherwise(token_usd(n_in, 0, 0, n_out, r_in, 0.0, 0.0, r_out))
    )
    cache_rated = (
        pl.when(timed)
        .then(time_cost)
        .otherwise(
            token_usd(
                uncached,
                pl.col("cached_input_tokens"),
                pl.col("cache_write_tokens"),
                n_out,
                r_in,
                pl.col("_cached"),
                pl.col("_write"),
                r_out,
            )
        )
    )
    return {"_full_b": full_on_baseline, "_full_a": full_on_actual, "_cached_cost": cache_rated}


def _lever(condition: pl.Expr, value: pl.Expr) -> pl.Expr:
    return pl.when(condition).then(value).otherwise(0.0)


def _with_savings(
    df: pl.DataFrame, priced: pl.Expr, counts: pl.Expr, price_version: str
) -> pl.DataFrame:
    """`df` with the cost, the baseline cost and the savings by lever (`LEDGER_COLUMNS`)."""
    mode, base = pl.col("mode"), pl.col("_base")
    on_paid = priced & counts
    return df.with_columns(
        cost_usd=_lever(priced, pl.col("_cached_cost") * (1.0 - pl.col("_discount_used")))
        + pl.col("earlier_attempts_usd"),
        baseline_cost_usd=base,
        saved_exact_usd=_lever(counts & (mode == "dedup") & (pl.col("dedup") == "exact"), base),
        saved_semantic_usd=_lever(
            counts & (mode == "dedup") & (pl.col("dedup") == "semantic"), base
        ),
        saved_cache_usd=_lever(counts & (mode == "cache"), base),
        saved_compression_usd=_lever(on_paid, pl.col("_full_b") - pl.col("_full_a")),
        saved_prompt_cache_usd=_lever(on_paid, pl.col("_full_a") - pl.col("_cached_cost")),
        # a cascade's cheaper attempts are what routing cost on this row
        saved_routing_usd=_lever(on_paid, base - pl.col("_full_b"))
        - pl.col("earlier_attempts_usd"),
        saved_batch_usd=_lever(on_paid, pl.col("_cached_cost") * pl.col("_discount_used")),
        price_version=pl.lit(price_version, dtype=pl.String()),
    )
