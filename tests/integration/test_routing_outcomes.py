"""The learned router's training data read from the system's own tables on a real chDB engine: eval runs
(eval_results with job_inputs) and shadow pairs / cascade escalations (results with job_inputs)."""

from __future__ import annotations

import pytest

from modelyard.ops.routing_fit import outcomes_from_agreement, outcomes_from_evals
from workers.sink.clickhouse import ClickHouseStore

pytestmark = pytest.mark.integration
RESULT_COLUMNS = (
    "job_id, attempt, tenant, task_type, pool, provider, model, status, output, input_tokens, "
    "cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, latency_ms, completed_at"
)


def inputs(store: ClickHouseStore, *rows: tuple[str, str, str]) -> None:
    values = ", ".join(
        f"('{job}', '{tenant}', 'classification', '{text}', ['a', 'b'], now64(3))"
        for job, tenant, text in rows
    )
    store.query(
        f"INSERT INTO job_inputs (job_id, tenant, task_type, input_text, labels, routed_at) VALUES {values}"
    )


def test_eval_runs_become_one_outcome_per_case_with_every_pool(store: ClickHouseStore) -> None:
    inputs(
        store,
        ("eval-r-slm-c1", "eval", "refund please"),
        ("eval-r-frontier-c1", "eval", "refund please"),
        ("eval-r-slm-c2", "eval", "card lost"),
    )
    store.query(
        "INSERT INTO eval_results (run, case_id, job_id, pool, provider, model, task_type, status, correct, score, "
        "cost_usd, latency_ms, scored_at) VALUES "
        "('r', 'c1', 'eval-r-slm-c1', 'slm', 'p', 'm', 'classification', 'ok', 0, 0, '0', 1, now64(3)), "
        "('r', 'c1', 'eval-r-frontier-c1', 'frontier', 'p', 'm', 'classification', 'ok', 1, 1, '0', 1, now64(3)), "
        "('r', 'c2', 'eval-r-slm-c2', 'slm', 'p', 'm', 'classification', 'ok', 1, 1, '0', 1, now64(3))"
    )
    outcomes = {o.text: o for o in outcomes_from_evals(store, ["slm", "frontier"])}
    assert outcomes["refund please"].right == (0.0, 1.0)
    assert (
        outcomes["card lost"].right[0] == 1.0
        and outcomes["card lost"].right[1] != outcomes["card lost"].right[1]
    )  # NaN: not tried
    assert (
        outcomes["refund please"].keys.labels == ("a", "b")
        and outcomes["refund please"].keys.task == "classification"
    )


def test_escalations_and_shadow_pairs_score_the_cheap_pool_by_agreement(store: ClickHouseStore) -> None:
    inputs(store, ("j1", "acme", "refund please"), ("j2", "acme", "card lost"))
    store.query(
        f"INSERT INTO results ({RESULT_COLUMNS}) VALUES "
        "('j1', 1, 'acme', 'classification', 'slm', 'p', 'm', 'escalated', 'a', 1, 0, 0, 1, 0, 1, now64(3)), "
        "('j1', 2, 'acme', 'classification', 'frontier', 'p', 'm', 'ok', 'b', 1, 0, 0, 1, 0, 1, now64(3)), "
        "('j2', 1, 'acme', 'classification', 'slm', 'p', 'm', 'ok', 'a', 1, 0, 0, 1, 0, 1, now64(3)), "
        "('shadow:j2', 1, 'shadow', 'classification', 'frontier', 'p', 'm', 'ok', 'a', 1, 0, 0, 1, 0, 1, now64(3))"
    )
    outcomes = {o.text: o.right for o in outcomes_from_agreement(store, "slm", "frontier")}
    assert outcomes == {"refund please": (0.0, 1.0), "card lost": (1.0, 1.0)}
