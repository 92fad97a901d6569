-- Results and the cost ledger. ReplacingMergeTree keyed by (job_id, attempt): a replayed
-- result replaces the earlier copy on merge, and queries with FINAL never count it twice.
CREATE TABLE IF NOT EXISTS results
(
    job_id String,
    attempt UInt16,
    tenant LowCardinality(String),
    task_type LowCardinality(String),
    pool LowCardinality(String),
    provider LowCardinality(String),
    model LowCardinality(String),
    status LowCardinality(String),
    output String,
    confidence Nullable(Float64),
    error Nullable(String),
    input_tokens UInt32,
    cached_input_tokens UInt32,
    cache_write_tokens UInt32,
    output_tokens UInt32,
    reasoning_tokens UInt32,
    latency_ms Float64,
    completed_at DateTime64(3, 'UTC'),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
ORDER BY (job_id, attempt);

CREATE TABLE IF NOT EXISTS cost_ledger
(
    job_id String,
    attempt UInt16,
    tenant LowCardinality(String),
    task_type LowCardinality(String),
    pool LowCardinality(String),
    provider LowCardinality(String),
    model LowCardinality(String),
    input_tokens UInt32,
    cached_input_tokens UInt32,
    cache_write_tokens UInt32,
    output_tokens UInt32,
    input_cost_usd Decimal(24, 12),
    cached_input_cost_usd Decimal(24, 12),
    cache_write_cost_usd Decimal(24, 12),
    output_cost_usd Decimal(24, 12),
    total_cost_usd Decimal(24, 12),
    catalog_version LowCardinality(String),
    completed_at DateTime64(3, 'UTC'),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
ORDER BY (job_id, attempt);
