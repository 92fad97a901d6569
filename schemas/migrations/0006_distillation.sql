-- Distillation: the inputs of captured task types (distill.capture_tasks), written by the sink from the pool
-- topics; joined with the frontier's answers they are labelled training data. Only the input text and the
-- label set are kept (no metadata, nothing from the settings). Keyed by job_id: a replay is stored once.
CREATE TABLE IF NOT EXISTS job_inputs
(
    job_id String,
    tenant LowCardinality(String),
    task_type LowCardinality(String),
    input_text String,
    labels Array(String),
    routed_at DateTime64(3, 'UTC'),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
ORDER BY job_id;

-- Every answered attempt with its input: the label is the pool's answer (filter pool for the teacher's).
CREATE VIEW IF NOT EXISTS v_training_examples AS
SELECT r.task_type AS task_type, r.job_id AS job_id, r.attempt AS attempt, i.input_text AS input_text,
       i.labels AS labels, r.output AS label, r.pool AS pool, r.model AS model, r.completed_at AS completed_at
FROM results AS r FINAL
INNER JOIN job_inputs AS i FINAL ON r.job_id = i.job_id
WHERE r.status = 'ok';

-- Students registered by `modelyard distill` (the files live under distill.models_dir/<task>/<version>).
CREATE TABLE IF NOT EXISTS model_registry
(
    task LowCardinality(String),
    version String,
    trained_on UInt32,
    heldout_examples UInt32,
    heldout_agreement Float64,
    target Float64,
    registered_at DateTime64(3, 'UTC'),
    path String
)
ENGINE = ReplacingMergeTree(registered_at)
ORDER BY (task, version);
