-- Eval runs (`modelyard eval`): one row per (run, case, pool) with its score, cost and latency.
CREATE TABLE IF NOT EXISTS eval_results
(
    run LowCardinality(String),
    case_id String,
    job_id String,
    pool LowCardinality(String),
    provider LowCardinality(String),
    model LowCardinality(String),
    task_type LowCardinality(String),
    status LowCardinality(String),
    correct UInt8,
    score Float64,
    confidence Nullable(Float64),
    cost_usd Decimal(24, 12),
    latency_ms Float64,
    scored_at DateTime64(3, 'UTC'),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
ORDER BY (run, case_id, pool);

CREATE VIEW IF NOT EXISTS v_eval_summary AS
SELECT run, task_type, pool, model, count() AS cases, avg(correct) AS accuracy, avg(score) AS mean_score,
       sum(cost_usd) AS total_cost_usd, avg(cost_usd) AS cost_per_case_usd, quantile(0.5)(latency_ms) AS p50_ms
FROM eval_results FINAL
GROUP BY run, task_type, pool, model;
