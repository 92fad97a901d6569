"""Cascade: an answer below its task's confidence threshold goes on to a stronger pool.

The escalated attempt's Result stays (it was a real call, billed once) with status `escalated`; the item
goes to the `to_pool`'s topic as a new Assignment whose attempt number follows it, so that pool's Result
is the job's final one. Answers without a confidence (the provider gave no logprobs, e.g. extraction or
Anthropic) are never escalated: there is nothing to judge them by.

Budgets: escalating to a budgeted pool (`costs.budget_pools`) spends from the tenant's budget, so the pool's
budget view admits it first and the forwarded Assignment carries the reservation; a tenant over budget keeps
the answer it has (status `ok`, its `error` saying what was not done) instead of a frontier call.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from modelyard.core.budgets import BudgetGuard, Overrun
from modelyard.core.observability import BUDGET_REFUSALS
from modelyard.core.settings import CascadeSettings, PoolSettings
from schemas import Assignment, Result, ResultStatus


def needs_escalation(cascade: CascadeSettings | None, result: Result) -> bool:
    if cascade is None or result.status is not ResultStatus.OK or result.confidence is None:
        return False
    threshold = cascade.min_confidence.get(result.task_type)
    return threshold is not None and result.confidence < threshold


def escalation_budget(
    budget: BudgetGuard | None, to_pool: tuple[str, PoolSettings], assignment: Assignment, result: Result
) -> Overrun | Decimal:
    """Admit the escalation against the tenant's budget when `to_pool` is budgeted: the USD reserved for its
    call (0 when no budget guards it), or the overrun that refuses it."""
    name, pool = to_pool
    item = assignment.item
    if budget is None or name not in budget.budget_pools or not budget.guards(item.tenant):
        return Decimal(0)
    tokens = (-(-len(item.input_text()) // 4), item.params.max_output_tokens or pool.max_output_tokens)
    admitted = budget.admit(
        item.tenant, (item.job_id, result.attempt + 1), pool.model, tokens, datetime.now(UTC)
    )
    if isinstance(admitted, Overrun):
        BUDGET_REFUSALS.labels("cascade", admitted.action).inc()
    return admitted


def kept_over_budget(result: Result, to_pool: str, overrun: Overrun) -> Result:
    """The low-confidence answer stays the job's final one: its escalation would overrun the budget."""
    note = f"not escalated to pool {to_pool}: {overrun.why}"
    return result.model_copy(update={"error": note[:2000]})


def escalate(
    cascade: CascadeSettings, assignment: Assignment, result: Result, reserved_usd: Decimal = Decimal(0)
) -> tuple[Result, Assignment]:
    """The SLM attempt's Result marked escalated, and the Assignment for the stronger pool."""
    threshold = cascade.min_confidence[result.task_type]
    reason = (
        f"confidence {result.confidence:.3f} < {threshold:g} for {result.task_type} in pool {result.pool}"
    )
    forwarded = assignment.model_copy(
        update={
            "pool": cascade.to_pool,
            "rule": "cascade",
            "reason": reason,
            "attempt": result.attempt + 1,
            "reserved_usd": reserved_usd,
            "routed_at": datetime.now(UTC),
        }
    )
    return result.model_copy(update={"status": ResultStatus.ESCALATED}), forwarded
