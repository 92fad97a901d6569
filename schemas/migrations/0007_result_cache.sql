-- Result cache: a cached answer is a Result with cached = 1, no tokens and a zero-cost ledger row; its
-- cache_saved_usd is what the model that first answered charged for the same request (cached_from is that
-- job). Hit rate and saved USD become columns of the cost views. (Expired results need no column: status.)
-- Every statement is idempotent, so the file may share its number with another migration.
ALTER TABLE results ADD COLUMN IF NOT EXISTS cached UInt8 DEFAULT 0;

ALTER TABLE cost_ledger
    ADD COLUMN IF NOT EXISTS cached UInt8 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS cached_from String DEFAULT '',
    ADD COLUMN IF NOT EXISTS cache_saved_usd Decimal(24, 12) DEFAULT 0;

-- The daily rollup gets the cache's figures from a second materialized view of its own (cost_daily_mv is
-- left as it is): its rows carry only the cache columns and sum into the same keys.
ALTER TABLE cost_daily
    ADD COLUMN IF NOT EXISTS cached_attempts UInt64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS cache_saved_usd Decimal(38, 12) DEFAULT 0;

CREATE MATERIALIZED VIEW IF NOT EXISTS cost_daily_cache_mv TO cost_daily AS
SELECT toDate(completed_at) AS day, tenant, task_type, pool, provider, model,
       count() AS cached_attempts, sum(cache_saved_usd) AS cache_saved_usd
FROM cost_ledger
WHERE cached = 1
GROUP BY day, tenant, task_type, pool, provider, model;

CREATE OR REPLACE VIEW v_cost_by_day AS
SELECT day, tenant, task_type, pool, provider, model, sum(attempts) AS attempts,
       sum(input_tokens) AS input_tokens, sum(cached_input_tokens) AS cached_input_tokens,
       sum(output_tokens) AS output_tokens, sum(cost_usd) AS cost_usd, sum(savings_usd) AS savings_usd,
       sum(cached_attempts) AS cached_attempts,
       if(attempts = 0, 0, cached_attempts / attempts) AS cache_hit_rate,
       sum(cache_saved_usd) AS cache_saved_usd
FROM cost_daily
GROUP BY day, tenant, task_type, pool, provider, model;

CREATE OR REPLACE VIEW v_savings AS
SELECT toDate(completed_at) AS day, tenant, task_type, pool, count() AS attempts,
       sum(total_cost_usd) AS cost_usd, sum(reference_cost_usd) AS reference_cost_usd, sum(savings_usd) AS savings_usd,
       countIf(cached = 1) AS cached_attempts, countIf(cached = 1) / count() AS cache_hit_rate,
       sum(cache_saved_usd) AS cache_saved_usd
FROM cost_ledger FINAL
GROUP BY day, tenant, task_type, pool;

-- What the result cache did, per day, tenant and task: answers served from it, their share, the USD saved.
CREATE VIEW IF NOT EXISTS v_cache_savings AS
SELECT toDate(completed_at) AS day, tenant, task_type, count() AS attempts, countIf(cached = 1) AS cached_attempts,
       countIf(cached = 1) / count() AS cache_hit_rate, sum(cache_saved_usd) AS cache_saved_usd,
       sum(total_cost_usd) AS cost_usd
FROM cost_ledger FINAL
GROUP BY day, tenant, task_type;
