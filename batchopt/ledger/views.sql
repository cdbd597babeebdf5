-- Views over the `ledger` view (one row per input row per run; see batchopt.ledger.LEDGER_COLUMNS).
-- `ledger` itself is created first, over the ledger folder's absolute Parquet glob, by
-- batchopt.ledger.store.connect or by the views.sql written into a ledger folder.
-- Money is summed with fsum (compensated summation), so run totals reconcile to the cent.

-- One row per run: rows by outcome, tokens, spend, the naive baseline and what was saved.
CREATE OR REPLACE VIEW cost_by_run AS
SELECT
    pipeline,
    run_id,
    string_agg(DISTINCT price_version, ',' ORDER BY price_version) AS price_version,
    count(*) AS rows,
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
-- per run, saved_usd over the levers adds up to cost_by_run.saved_usd.
CREATE OR REPLACE VIEW savings_by_lever AS
WITH long AS (
    UNPIVOT (
        SELECT pipeline, run_id, COLUMNS('^saved_.*_usd$') FROM ledger
    )
    ON COLUMNS('^saved_.*_usd$')
    INTO NAME lever_column VALUE saved_usd
)
SELECT
    pipeline,
    run_id,
    regexp_extract(lever_column, '^saved_(.*)_usd$', 1) AS lever,
    fsum(saved_usd) AS saved_usd,
    count(*) FILTER (WHERE saved_usd <> 0) AS rows
FROM long
GROUP BY pipeline, run_id, lever_column
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
