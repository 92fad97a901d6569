-- Cost analytics: reasoning tokens, batch and self-hosted flags, savings against the reference frontier
-- model, repricings kept beside the original figures, a daily rollup (materialized view) and analyst views.
ALTER TABLE cost_ledger
    ADD COLUMN IF NOT EXISTS reasoning_tokens UInt32 DEFAULT 0 AFTER output_tokens,
    ADD COLUMN IF NOT EXISTS reasoning_cost_usd Decimal(24, 12) DEFAULT 0 AFTER output_cost_usd,
    ADD COLUMN IF NOT EXISTS batch UInt8 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS self_hosted UInt8 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS reference_model LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS reference_cost_usd Decimal(24, 12) DEFAULT 0,
    ADD COLUMN IF NOT EXISTS savings_usd Decimal(24, 12) DEFAULT 0;

ALTER TABLE results ADD COLUMN IF NOT EXISTS batch UInt8 DEFAULT 0;

-- `modelyard costs reprice` writes here: one row per (job_id, attempt, catalog_version); the ledger keeps
-- the figures billed when the result arrived.
CREATE TABLE IF NOT EXISTS cost_repricings
(
    job_id String,
    attempt UInt16,
    catalog_version LowCardinality(String),
    tenant LowCardinality(String),
    task_type LowCardinality(String),
    pool LowCardinality(String),
    model LowCardinality(String),
    total_cost_usd Decimal(24, 12),
    original_cost_usd Decimal(24, 12),
    original_catalog_version LowCardinality(String),
    completed_at DateTime64(3, 'UTC'),
    repriced_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(repriced_at)
ORDER BY (job_id, attempt, catalog_version);

CREATE TABLE IF NOT EXISTS cost_daily
(
    day Date,
    tenant LowCardinality(String),
    task_type LowCardinality(String),
    pool LowCardinality(String),
    provider LowCardinality(String),
    model LowCardinality(String),
    attempts UInt64,
    input_tokens UInt64,
    cached_input_tokens UInt64,
    output_tokens UInt64,
    cost_usd Decimal(38, 12),
    reference_cost_usd Decimal(38, 12),
    savings_usd Decimal(38, 12)
)
ENGINE = SummingMergeTree
ORDER BY (day, tenant, task_type, pool, provider, model);

CREATE MATERIALIZED VIEW IF NOT EXISTS cost_daily_mv TO cost_daily AS
SELECT toDate(completed_at) AS day, tenant, task_type, pool, provider, model,
       count() AS attempts, sum(input_tokens) AS input_tokens, sum(cached_input_tokens) AS cached_input_tokens,
       sum(output_tokens) AS output_tokens, sum(total_cost_usd) AS cost_usd,
       sum(reference_cost_usd) AS reference_cost_usd, sum(savings_usd) AS savings_usd
FROM cost_ledger
GROUP BY day, tenant, task_type, pool, provider, model;

CREATE VIEW IF NOT EXISTS v_cost_by_day AS
SELECT day, tenant, task_type, pool, provider, model, sum(attempts) AS attempts,
       sum(input_tokens) AS input_tokens, sum(cached_input_tokens) AS cached_input_tokens,
       sum(output_tokens) AS output_tokens, sum(cost_usd) AS cost_usd, sum(savings_usd) AS savings_usd
FROM cost_daily
GROUP BY day, tenant, task_type, pool, provider, model;

CREATE VIEW IF NOT EXISTS v_latency_by_pool AS
SELECT toDate(completed_at) AS day, pool, model, count() AS results,
       quantile(0.5)(latency_ms) AS p50_ms, quantile(0.95)(latency_ms) AS p95_ms,
       countIf(status = 'error') / count() AS error_rate
FROM results FINAL
GROUP BY day, pool, model;

CREATE VIEW IF NOT EXISTS v_escalation_rate AS
SELECT toDate(completed_at) AS day, task_type, uniqExact(job_id) AS jobs,
       countIf(status = 'escalated') AS escalated, escalated / jobs AS escalation_rate
FROM results FINAL
GROUP BY day, task_type;

CREATE VIEW IF NOT EXISTS v_savings AS
SELECT toDate(completed_at) AS day, tenant, task_type, pool, count() AS attempts,
       sum(total_cost_usd) AS cost_usd, sum(reference_cost_usd) AS reference_cost_usd, sum(savings_usd) AS savings_usd
FROM cost_ledger FINAL
GROUP BY day, tenant, task_type, pool;
