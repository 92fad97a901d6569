-- Shadow sampling (router.shadow_share): SLM answers compared with the frontier's answer to the same item.
CREATE VIEW IF NOT EXISTS v_shadow_agreement AS
SELECT toDate(s.completed_at) AS day, s.task_type AS task_type, count() AS pairs,
       avg(s.output = f.output) AS agreement
FROM (SELECT job_id, task_type, output, completed_at FROM results FINAL WHERE attempt = 1 AND status = 'ok') AS s
INNER JOIN (
    SELECT substring(job_id, 8) AS original_job_id, output FROM results FINAL
    WHERE startsWith(job_id, 'shadow:') AND attempt = 1 AND status = 'ok'
) AS f ON s.job_id = f.original_job_id
GROUP BY day, task_type;
