-- Pricing truth (issue 13): which catalog entry priced each cost row and whether any did, 1-hour cache
-- writes apart from 5-minute ones, the long-context tier, rows repriced once a missing price exists, and
-- savings per job (the reference model's cost for the item against every attempt the job took).
ALTER TABLE results ADD COLUMN IF NOT EXISTS cache_write_1h_tokens UInt32 DEFAULT 0 AFTER cache_write_tokens;

-- cache_write_tokens / cache_write_cost_usd keep counting every cache write; the 1h columns are the part of
-- them written with a 1-hour TTL. `priced = 0`: no catalog entry matched the model (its amounts are zero until
-- `modelyard costs reprice` finds one); `repriced = 1`: this row replaced such a row.
ALTER TABLE cost_ledger
    ADD COLUMN IF NOT EXISTS cache_write_1h_tokens UInt32 DEFAULT 0 AFTER cache_write_tokens,
    ADD COLUMN IF NOT EXISTS cache_write_1h_cost_usd Decimal(24, 12) DEFAULT 0 AFTER cache_write_cost_usd,
    ADD COLUMN IF NOT EXISTS catalog_model LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS priced UInt8 DEFAULT catalog_version != 'unpriced',
    ADD COLUMN IF NOT EXISTS long_context UInt8 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS repriced UInt8 DEFAULT 0;

-- The rollup counts each attempt once: a repriced row (which replaces an unpriced row whose amounts were all
-- zero) adds only its money.
DROP VIEW IF EXISTS cost_daily_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS cost_daily_mv TO cost_daily AS
SELECT toDate(completed_at) AS day, tenant, task_type, pool, provider, model,
       countIf(repriced = 0) AS attempts, sumIf(input_tokens, repriced = 0) AS input_tokens,
       sumIf(cached_input_tokens, repriced = 0) AS cached_input_tokens,
       sumIf(output_tokens, repriced = 0) AS output_tokens, sum(total_cost_usd) AS cost_usd,
       sum(reference_cost_usd) AS reference_cost_usd, sum(savings_usd) AS savings_usd
FROM cost_ledger
GROUP BY day, tenant, task_type, pool, provider, model;

-- Per-job savings. A job's reference cost is the reference model's price for the tokens of the last attempt
-- that has one (the answer that ended the job; a failed-over call without tokens is skipped); it is booked on
-- that attempt, and every attempt's own cost is booked where it happened. So per pool, an escalated SLM
-- attempt shows what the escalation cost (a negative saving) and a job that cost more than sending it to the
-- reference model shows a negative saving.
CREATE VIEW IF NOT EXISTS v_attempt_savings AS
SELECT job_id, attempt, tenant, task_type, pool, provider, model, completed_at, priced, reference_model,
       input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, total_cost_usd,
       if(attempt = reference_attempt, reference_cost_usd, toDecimal128(0, 12)) AS job_reference_usd,
       job_reference_usd - total_cost_usd AS job_savings_usd
FROM (
    SELECT job_id, attempt, tenant, task_type, pool, provider, model, completed_at, priced, reference_model,
           input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, total_cost_usd, reference_cost_usd,
           argMax(attempt, (reference_cost_usd > 0, attempt)) OVER (PARTITION BY job_id) AS reference_attempt
    FROM cost_ledger FINAL
);

CREATE VIEW IF NOT EXISTS v_job_savings AS
SELECT job_id, any(tenant) AS tenant, argMax(task_type, attempt) AS task_type,
       argMax(pool, attempt) AS final_pool, argMax(model, attempt) AS final_model,
       toDate(max(completed_at)) AS day, count() AS attempts, sum(total_cost_usd) AS cost_usd,
       sum(job_reference_usd) AS reference_cost_usd, sum(job_savings_usd) AS savings_usd,
       countIf(priced = 0) AS unpriced_attempts
FROM v_attempt_savings
GROUP BY job_id;

DROP VIEW IF EXISTS v_savings;

CREATE VIEW IF NOT EXISTS v_savings AS
SELECT toDate(completed_at) AS day, tenant, task_type, pool, provider, model, count() AS attempts,
       uniqExact(job_id) AS jobs, sum(total_cost_usd) AS cost_usd, sum(job_reference_usd) AS reference_cost_usd,
       sum(job_savings_usd) AS savings_usd
FROM v_attempt_savings
GROUP BY day, tenant, task_type, pool, provider, model;

-- The rollup's savings are per attempt (each attempt against the reference alone): named for what they are.
DROP VIEW IF EXISTS v_cost_by_day;

CREATE VIEW IF NOT EXISTS v_cost_by_day AS
SELECT day, tenant, task_type, pool, provider, model, sum(attempts) AS attempts,
       sum(input_tokens) AS input_tokens, sum(cached_input_tokens) AS cached_input_tokens,
       sum(output_tokens) AS output_tokens, sum(cost_usd) AS cost_usd, sum(savings_usd) AS attempt_savings_usd
FROM cost_daily
GROUP BY day, tenant, task_type, pool, provider, model;

-- Results no catalog entry priced yet, per provider and model as the provider reported it.
CREATE VIEW IF NOT EXISTS v_unpriced AS
SELECT provider, model, count() AS attempts, uniqExact(job_id) AS jobs,
       sum(input_tokens + cached_input_tokens + cache_write_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens, min(completed_at) AS first_seen, max(completed_at) AS last_seen
FROM cost_ledger FINAL
WHERE priced = 0
GROUP BY provider, model;
