-- Every routing decision (written by the sink from the pool topics): which rule fired, why, and the
-- novelty score. Keyed like results so a replayed assignment is stored once.
CREATE TABLE IF NOT EXISTS routing_decisions
(
    job_id String,
    attempt UInt16,
    tenant LowCardinality(String),
    task_type LowCardinality(String),
    task_reason String,
    pool LowCardinality(String),
    rule LowCardinality(String),
    reason String,
    novelty_score Nullable(Float64),
    input_tokens_est UInt32,
    priority UInt8,
    routed_at DateTime64(3, 'UTC'),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
ORDER BY (job_id, attempt);
