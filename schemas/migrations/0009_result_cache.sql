-- Result cache: a cached answer is a Result with cached = 1, no tokens and a zero-cost ledger row; its
-- cache_saved_usd is what the model that first answered charged for the same request (cached_from is that
-- job). Hit rate and saved USD become columns of the cost views. (Expired results need no column: status.)
-- Every statement is idempotent (it was 0008_result_cache before billing's 0008 merged; a database that applied
-- it under that number applies it again harmlessly, after 0008_call_ids_and_reservations).
ALTER TABLE results ADD COLUMN IF NOT EXISTS cached UInt8 DEFAULT 0;

ALTER TABLE cost_ledger
    ADD COLUMN IF NOT EXISTS cached UInt8 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS cached_from String DEFAULT '',
    ADD COLUMN IF NOT EXISTS cache_saved_usd Decimal(24, 12) DEFAULT 0;

-- The daily rollup gets the cache's figures from a materialized view of its own (cost_daily_mv is left as it
-- is): its rows carry only the cache columns and sum into the same keys.
ALTER TABLE cost_daily
    ADD COLUMN IF NOT EXISTS cached_attempts UInt64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS cache_saved_usd Decimal(38, 12) DEFAULT 0;

CREATE MATERIALIZED VIEW IF NOT EXISTS cost_daily_cache_mv TO cost_daily AS
SELECT toDate(completed_at) AS day, tenant, task_type, pool, provider, model,
       countIf(repriced = 0) AS cached_attempts, sum(cache_saved_usd) AS cache_saved_usd
FROM cost_ledger
WHERE cached = 1
GROUP BY day, tenant, task_type, pool, provider, model;

CREATE OR REPLACE VIEW v_cost_by_day AS
SELECT day, tenant, task_type, pool, provider, model, sum(attempts) AS attempts,
       sum(input_tokens) AS input_tokens, sum(cached_input_tokens) AS cached_input_tokens,
       sum(output_tokens) AS output_tokens, sum(cost_usd) AS cost_usd, sum(savings_usd) AS attempt_savings_usd,
       sum(cached_attempts) AS cached_attempts, if(attempts = 0, 0, cached_attempts / attempts) AS cache_hit_rate,
       sum(cache_saved_usd) AS cache_saved_usd
FROM cost_daily
GROUP BY day, tenant, task_type, pool, provider, model;

-- v_attempt_savings (0008_call_ids_and_reservations: keyed by call, the reference booked on the kept call of the
-- last attempt that has one) with the cache's columns, for `modelyard costs` and v_savings.
CREATE OR REPLACE VIEW v_attempt_savings AS
SELECT job_id, attempt, call_id, repeat_call, tenant, task_type, pool, provider, model, completed_at, priced,
       reference_model, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, total_cost_usd,
       if(attempt = reference_attempt AND repeat_call = 0, reference_cost_usd, toDecimal128(0, 12)) AS job_reference_usd,
       job_reference_usd - total_cost_usd AS job_savings_usd, cached, cache_saved_usd
FROM (
    SELECT job_id, attempt, call_id, repeat_call, tenant, task_type, pool, provider, model, completed_at, priced,
           reference_model, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, total_cost_usd,
           reference_cost_usd, cached, cache_saved_usd,
           argMaxIf(attempt, (reference_cost_usd > 0, attempt), repeat_call = 0) OVER (PARTITION BY job_id)
               AS reference_attempt
    FROM cost_ledger FINAL
);

CREATE OR REPLACE VIEW v_savings AS
SELECT toDate(completed_at) AS day, tenant, task_type, pool, provider, model, count() AS attempts,
       uniqExact(job_id) AS jobs, sum(total_cost_usd) AS cost_usd, sum(job_reference_usd) AS reference_cost_usd,
       sum(job_savings_usd) AS savings_usd, countIf(cached = 1) AS cached_attempts,
       cached_attempts / attempts AS cache_hit_rate, sum(cache_saved_usd) AS cache_saved_usd
FROM v_attempt_savings
GROUP BY day, tenant, task_type, pool, provider, model;

-- What the result cache did, per day, tenant and task: answers served from it, their share, the USD saved.
CREATE VIEW IF NOT EXISTS v_cache_savings AS
SELECT toDate(completed_at) AS day, tenant, task_type, count() AS attempts, countIf(cached = 1) AS cached_attempts,
       countIf(cached = 1) / count() AS cache_hit_rate, sum(cache_saved_usd) AS cache_saved_usd,
       sum(total_cost_usd) AS cost_usd
FROM cost_ledger FINAL
GROUP BY day, tenant, task_type;
