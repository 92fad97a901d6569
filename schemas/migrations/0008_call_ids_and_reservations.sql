-- One ledger row per real provider call, and budgets reserved before spend (issue 13).
--
-- Every Result carries the id its pool made when it sent the provider call. The ledger is keyed by it: a
-- replayed Result message (same call id) adds no row, a second real call for the same job and attempt (a pool
-- redelivering after a crash, a reused job id) is a row of its own, billed, with repeat_call = 1. `results`
-- keeps one row per attempt and records which call it came from.
ALTER TABLE results ADD COLUMN IF NOT EXISTS call_id String;

ALTER TABLE cost_ledger
    ADD COLUMN IF NOT EXISTS call_id String AFTER attempt,
    ADD COLUMN IF NOT EXISTS repeat_call UInt8 DEFAULT 0,
    MODIFY ORDER BY (job_id, attempt, call_id);

-- What each routed call was expected to cost when a budget admitted it (0: no budget guards it).
ALTER TABLE routing_decisions ADD COLUMN IF NOT EXISTS reserved_usd Decimal(24, 12) DEFAULT 0;

-- Reservations against tenants' budgets, written by the sink from the assignments it reads, settled (a newer
-- row with settled = 1 replaces the open one) once a result of that job and attempt or a later one is stored.
-- The sink publishes each budgeted tenant's open reservations with its spend; rows expire after three days.
CREATE TABLE IF NOT EXISTS budget_reservations
(
    tenant LowCardinality(String),
    job_id String,
    attempt UInt16,
    pool LowCardinality(String),
    reserved_usd Decimal(24, 12),
    reserved_at DateTime64(3, 'UTC'),
    settled UInt8,
    updated_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(settled)
ORDER BY (tenant, job_id, attempt)
TTL toDateTime(reserved_at) + INTERVAL 3 DAY;

-- Calls billed beyond the one whose result was kept: what crashes and reused job ids cost.
CREATE VIEW IF NOT EXISTS v_repeat_calls AS
SELECT toDate(completed_at) AS day, tenant, pool, provider, model, count() AS calls,
       uniqExact(job_id) AS jobs, sum(total_cost_usd) AS cost_usd
FROM cost_ledger FINAL
WHERE repeat_call = 1
GROUP BY day, tenant, pool, provider, model;

-- `costs reprice` reprices every call, repeat calls included: its rows are keyed by call too.
ALTER TABLE cost_repricings
    ADD COLUMN IF NOT EXISTS call_id String AFTER attempt,
    MODIFY ORDER BY (job_id, attempt, catalog_version, call_id);

-- Per-job savings over calls (0007's view, one change): a job's reference cost is booked once, on the kept call
-- (repeat_call = 0) of the last attempt whose kept call has one; a repeat call's cost counts where it happened,
-- since it was billed. Without this, an attempt called twice booked the reference twice.
DROP VIEW IF EXISTS v_attempt_savings;

CREATE VIEW IF NOT EXISTS v_attempt_savings AS
SELECT job_id, attempt, call_id, repeat_call, tenant, task_type, pool, provider, model, completed_at, priced,
       reference_model, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, total_cost_usd,
       if(attempt = reference_attempt AND repeat_call = 0, reference_cost_usd, toDecimal128(0, 12)) AS job_reference_usd,
       job_reference_usd - total_cost_usd AS job_savings_usd
FROM (
    SELECT job_id, attempt, call_id, repeat_call, tenant, task_type, pool, provider, model, completed_at, priced,
           reference_model, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, total_cost_usd,
           reference_cost_usd,
           argMaxIf(attempt, (reference_cost_usd > 0, attempt), repeat_call = 0) OVER (PARTITION BY job_id)
               AS reference_attempt
    FROM cost_ledger FINAL
);
