-- Views over the `ledger` view (one row per input row per run; see batchopt.ledger.LEDGER_COLUMNS).
-- `ledger` itself is created first, over the ledger folder's absolute Parquet glob, by
-- batchopt.ledger.store.connect or by the views.sql written into a ledger folder.
-- Money is summed with fsum (compensated summation), so run totals reconcile to the cent.

-- One row per run: rows by outcome, tokens, spend, the naive baseline and what was saved;
-- row_limit is N when the run read only the input's first N rows (--limit N), else NULL.
CREATE OR REPLACE VIEW cost_by_run AS
SELECT
    pipeline,
    run_id,
    string_agg(DISTINCT price_version, ',' ORDER BY price_version) AS price_version,
    count(*) AS rows,
    max(row_limit) AS row_limit,
    count(*) FILTER (WHERE mode = 'online') AS online_rows,
    count(*) FILTER (WHERE mode = 'batch') AS batch_rows,
    count(*) FILTER (WHERE mode = 'cache') AS cache_rows,
    count(*) FILTER (WHERE mode = 'dedup') AS dedup_rows,
    count(*) FILTER (WHERE status = 'failed') AS failed_rows,
    sum(input_tokens)::BIGINT AS input_tokens,
    sum(cached_input_tokens)::BIGINT AS cached_input_tokens,
    sum(cache_write_tokens)::BIGINT AS cache_write_tokens,
    sum(output_tokens)::BIGINT AS output_tokens,
    fsum(estimated_cost_usd) AS estimated_cost_usd,
    fsum(cost_usd) AS cost_usd,
    fsum(baseline_cost_usd) AS baseline_cost_usd,
    fsum(baseline_cost_usd - cost_usd) AS saved_usd,
    fsum(baseline_cost_usd - cost_usd) / nullif(fsum(baseline_cost_usd), 0) AS saved_share
FROM ledger
GROUP BY pipeline, run_id
ORDER BY pipeline, run_id;

-- One row per run and model that answered rows (dedup followers count under their
-- representative's model; rows that failed before a model was chosen have a NULL model).
CREATE OR REPLACE VIEW cost_by_model AS
SELECT
    pipeline,
    run_id,
    provider,
    model,
    count(*) AS rows,
    count(*) FILTER (WHERE mode IN ('online', 'batch', 'failed')
                     AND (input_tokens > 0 OR output_tokens > 0)) AS billed_rows,
    count(*) FILTER (WHERE status = 'failed') AS failed_rows,
    sum(input_tokens)::BIGINT AS input_tokens,
    sum(cached_input_tokens)::BIGINT AS cached_input_tokens,
    sum(cache_write_tokens)::BIGINT AS cache_write_tokens,
    sum(output_tokens)::BIGINT AS output_tokens,
    fsum(cost_usd) AS cost_usd,
    fsum(baseline_cost_usd) AS baseline_cost_usd
FROM ledger
GROUP BY pipeline, run_id, provider, model
ORDER BY pipeline, run_id, cost_usd DESC, provider, model;

-- One row per run and lever (exact, semantic, cache, compression, prompt_cache, routing, batch);
-- per run, saved_usd over the levers adds up to cost_by_run.saved_usd. Each lever column is
-- summed per run first (with the rows where it saved something), then the few sums unpivoted.
CREATE OR REPLACE VIEW savings_by_lever AS
WITH per_run AS (
    SELECT
        pipeline,
        run_id,
        {'saved_usd': fsum(COLUMNS('^saved_.*_usd$')),
         'rows': count(nullif(COLUMNS('^saved_.*_usd$'), 0))}
    FROM ledger
    GROUP BY pipeline, run_id
),
long AS (
    UNPIVOT per_run ON COLUMNS('^saved_.*_usd$') INTO NAME lever_column VALUE sums
)
SELECT
    pipeline,
    run_id,
    regexp_extract(lever_column, '^saved_(.*)_usd$', 1) AS lever,
    sums.saved_usd AS saved_usd,
    sums.rows AS rows
FROM long
ORDER BY pipeline, run_id, lever;

-- Every failed row, with what is known about why.
CREATE OR REPLACE VIEW failures AS
SELECT
    pipeline,
    run_id,
    row_id,
    group_id,
    tier,
    provider,
    model,
    mode,
    attempts,
    error,
    request_id,
    batch_id,
    latency_ms,
    cost_usd
FROM ledger
WHERE status = 'failed'
ORDER BY pipeline, run_id, row_id;

-- One row per run and tier (the tier whose answer the row kept; NULL when no tier was chosen):
-- rows, how many a cascade escalated to this tier (a cache hit keeps the flag of the answer it
-- reused), spend (escalated rows include what they paid on cheaper tiers first, also shown on
-- its own as earlier_attempts_usd), the baseline and the saving.
CREATE OR REPLACE VIEW cost_by_tier AS
SELECT
    pipeline,
    run_id,
    tier,
    string_agg(DISTINCT model, ',' ORDER BY model) AS models,
    count(*) AS rows,
    count(*) FILTER (WHERE escalated) AS escalated_rows,
    count(*) FILTER (WHERE status = 'failed') AS failed_rows,
    sum(input_tokens)::BIGINT AS input_tokens,
    sum(output_tokens)::BIGINT AS output_tokens,
    fsum(cost_usd) AS cost_usd,
    fsum(earlier_attempts_usd) AS earlier_attempts_usd,
    fsum(baseline_cost_usd) AS baseline_cost_usd,
    fsum(baseline_cost_usd - cost_usd) AS saved_usd
FROM ledger
GROUP BY pipeline, run_id, tier
ORDER BY pipeline, run_id, tier NULLS LAST;

-- One row per run and mode (online, batch, cache, dedup, failed, in that order): rows and their
-- share of the run's rows, tokens, spend and its share of the run's spend, baseline, saving.
CREATE OR REPLACE VIEW cost_by_mode AS
WITH by_mode AS (
    SELECT
        pipeline,
        run_id,
        mode,
        count(*) AS rows,
        sum(input_tokens)::BIGINT AS input_tokens,
        sum(cached_input_tokens)::BIGINT AS cached_input_tokens,
        sum(output_tokens)::BIGINT AS output_tokens,
        fsum(cost_usd) AS cost_usd,
        fsum(baseline_cost_usd) AS baseline_cost_usd,
        fsum(baseline_cost_usd - cost_usd) AS saved_usd
    FROM ledger
    GROUP BY pipeline, run_id, mode
)
SELECT
    pipeline,
    run_id,
    mode,
    rows,
    rows / sum(rows) OVER run AS row_share,
    input_tokens,
    cached_input_tokens,
    output_tokens,
    cost_usd,
    cost_usd / nullif(sum(cost_usd) OVER run, 0) AS cost_share,
    baseline_cost_usd,
    saved_usd
FROM by_mode
WINDOW run AS (PARTITION BY pipeline, run_id)
ORDER BY pipeline, run_id, coalesce(list_position(['online', 'batch', 'cache', 'dedup', 'failed'], mode), 6), mode;

-- One row per run: how much the two caches answered.
--   response cache: rows answered by an earlier run's answer (mode 'cache'; their dedup
--     followers count as dedup) and what that saved;
--   provider prompt cache: of the prompt tokens of the rows that made a request this run
--     (online, batch, failed), the share read from the provider's prompt cache, the tokens
--     written to it, and what the cheaper cached reads saved.
CREATE OR REPLACE VIEW cache_hit_share AS
WITH per_run AS (
    SELECT
        pipeline,
        run_id,
        count(*) AS rows,
        count(*) FILTER (WHERE mode = 'cache') AS cache_rows,
        fsum(saved_cache_usd) AS saved_cache_usd,
        sum(input_tokens) FILTER (WHERE mode IN ('online', 'batch', 'failed'))::BIGINT
            AS paid_input_tokens,
        sum(cached_input_tokens) FILTER (WHERE mode IN ('online', 'batch', 'failed'))::BIGINT
            AS paid_cached_input_tokens,
        sum(cache_write_tokens) FILTER (WHERE mode IN ('online', 'batch', 'failed'))::BIGINT
            AS paid_cache_write_tokens,
        fsum(saved_prompt_cache_usd) AS saved_prompt_cache_usd
    FROM ledger
    GROUP BY pipeline, run_id
)
SELECT
    pipeline,
    run_id,
    rows,
    cache_rows,
    cache_rows / rows AS cache_row_share,
    saved_cache_usd,
    coalesce(paid_input_tokens, 0) AS input_tokens,
    coalesce(paid_cached_input_tokens, 0) AS cached_input_tokens,
    paid_cached_input_tokens / nullif(paid_input_tokens, 0) AS prompt_cache_share,
    coalesce(paid_cache_write_tokens, 0) AS cache_write_tokens,
    saved_prompt_cache_usd
FROM per_run
ORDER BY pipeline, run_id;

-- One row per run and first tier of a cascade (rows routed by another strategy are left out):
-- of the rows that made a request this run (online, batch, failed), the share a validator sent
-- up a tier; what the escalated rows cost in all; and what the cascade's rows paid besides
-- their final answer (cheaper tiers tried first, judge calls). Cache hits and dedup followers
-- count in cascade_rows only: they asked nothing this run.
CREATE OR REPLACE VIEW escalation_share AS
SELECT
    pipeline,
    run_id,
    substr(split_part(route_reason, ';', 1), length('cascade: starts on ') + 1) AS first_tier,
    count(*) AS cascade_rows,
    count(*) FILTER (WHERE mode IN ('online', 'batch', 'failed')) AS sent_rows,
    count(*) FILTER (WHERE escalated AND mode IN ('online', 'batch', 'failed')) AS escalated_rows,
    count(*) FILTER (WHERE escalated AND mode IN ('online', 'batch', 'failed'))
        / nullif(count(*) FILTER (WHERE mode IN ('online', 'batch', 'failed')), 0)
        AS escalation_share,
    coalesce(fsum(cost_usd) FILTER (WHERE escalated), 0) AS escalated_cost_usd,
    fsum(earlier_attempts_usd) AS earlier_attempts_usd
FROM ledger
WHERE starts_with(route_reason, 'cascade: starts on ')
GROUP BY ALL
ORDER BY pipeline, run_id, first_tier;

-- Every row, most expensive first, with what explains its cost. Filter it before LIMIT:
--   SELECT * FROM most_expensive_rows WHERE run_id = 'r1' LIMIT 20
CREATE OR REPLACE VIEW most_expensive_rows AS
SELECT
    pipeline,
    run_id,
    row_id,
    tier,
    provider,
    model,
    mode,
    status,
    escalated,
    attempts,
    input_tokens,
    cached_input_tokens,
    output_tokens,
    cost_usd,
    earlier_attempts_usd,
    estimated_cost_usd,
    baseline_cost_usd,
    route_reason,
    error
FROM ledger
ORDER BY cost_usd DESC, pipeline, run_id, row_id;

-- The n most expensive rows, of every run or of run `run` (any pipeline's run of that id):
--   SELECT * FROM most_expensive(20)    SELECT * FROM most_expensive(5, run := 'r1')
CREATE OR REPLACE MACRO most_expensive(n, run := NULL) AS TABLE
SELECT * FROM most_expensive_rows WHERE run IS NULL OR run_id = run LIMIT n;

-- One row per pipeline and day: the run's logical date (`--date`, or the date its run id names,
-- so a backfill of three nights is three days), else the UTC day of run_at (the time the run
-- wrote its ledger, whatever the session's TimeZone): runs, how many of them were cache re-runs
-- (a run that sent nothing: no row online, batch or failed, at least one answered from the
-- response cache, so $0 spent),
-- ledger rows and distinct rows, spend, baseline, saving. Spend is what every run of the day
-- paid; the baseline counts each row (pipeline + row_id) once per day, however many runs
-- answered it that day (its largest baseline of the day), so a re-run does not add a second
-- baseline for rows already counted. Runs written before ledgers had run_at have a NULL day,
-- listed last.
CREATE OR REPLACE VIEW daily_trend AS
WITH per_run AS (
    SELECT
        pipeline,
        run_id,
        coalesce(logical_date, make_timestamp(epoch_us(run_at))::DATE) AS day,
        count(*) FILTER (WHERE mode IN ('online', 'batch', 'failed')) = 0
            AND count(*) FILTER (WHERE mode = 'cache') > 0 AS cache_rerun,
        count(*) AS rows,
        fsum(cost_usd) AS cost_usd
    FROM ledger
    GROUP BY pipeline, run_id, day
),
per_row AS (
    SELECT
        pipeline,
        coalesce(logical_date, make_timestamp(epoch_us(run_at))::DATE) AS day,
        row_id,
        max(baseline_cost_usd) AS baseline_cost_usd
    FROM ledger
    GROUP BY pipeline, day, row_id
),
per_day_rows AS (
    SELECT
        pipeline,
        day,
        count(*) AS distinct_rows,
        fsum(baseline_cost_usd) AS baseline_cost_usd
    FROM per_row
    GROUP BY pipeline, day
),
per_day_runs AS (
    SELECT
        pipeline,
        day,
        count(*) AS runs,
        count(*) FILTER (WHERE cache_rerun) AS cache_reruns,
        sum(rows)::BIGINT AS rows,
        fsum(cost_usd) AS cost_usd
    FROM per_run
    GROUP BY pipeline, day
)
SELECT
    r.pipeline,
    r.day,
    r.runs,
    r.cache_reruns,
    r.rows,
    d.distinct_rows,
    r.cost_usd,
    d.baseline_cost_usd,
    d.baseline_cost_usd - r.cost_usd AS saved_usd,
    (d.baseline_cost_usd - r.cost_usd) / nullif(d.baseline_cost_usd, 0) AS saved_share
FROM per_day_runs r
JOIN per_day_rows d ON r.pipeline = d.pipeline AND r.day IS NOT DISTINCT FROM d.day
ORDER BY r.pipeline, r.day NULLS LAST;

-- One row per run: the offline estimate made before sending against what was billed, over the
-- rows billed this run (online and batch rows, and failed rows that cost something). The cost
-- estimate counts outputs at max_tokens and only the final tier's request, so a ratio below 1
-- is usual; input_tokens_ratio is billed input tokens per token the counter counted.
CREATE OR REPLACE VIEW estimate_accuracy AS
SELECT
    pipeline,
    run_id,
    string_agg(DISTINCT token_counter, ',' ORDER BY token_counter) AS token_counters,
    count(*) AS billed_rows,
    sum(estimated_input_tokens)::BIGINT AS estimated_input_tokens,
    sum(input_tokens)::BIGINT AS input_tokens,
    sum(input_tokens) / nullif(sum(estimated_input_tokens), 0) AS input_tokens_ratio,
    fsum(estimated_cost_usd) AS estimated_cost_usd,
    fsum(cost_usd) AS cost_usd,
    fsum(cost_usd) / nullif(fsum(estimated_cost_usd), 0) AS cost_ratio
FROM ledger
WHERE mode IN ('online', 'batch') OR (mode = 'failed' AND cost_usd > 0)
GROUP BY pipeline, run_id
ORDER BY pipeline, run_id;

-- What run `run` spent (summed over every pipeline's run of that id): SELECT run_cost('r1')
CREATE OR REPLACE MACRO run_cost(run) AS (
    SELECT fsum(cost_usd) FROM ledger WHERE run_id = run
);

-- Run `run`'s saving by lever: SELECT * FROM savings('r1')
CREATE OR REPLACE MACRO savings(run) AS TABLE
SELECT * FROM savings_by_lever WHERE run_id = run;
