"""Cascade: an answer below its task's confidence threshold goes on to a stronger pool.

The escalated attempt's Result stays (it was a real call, billed once) with status `escalated`; the item
goes to the `to_pool`'s topic as a new Assignment whose attempt number follows it, so that pool's Result
is the job's final one. Answers without a confidence (the provider gave no logprobs, e.g. extraction or
Anthropic) are never escalated: there is nothing to judge them by.
"""

from __future__ import annotations

from datetime import UTC, datetime

from modelyard.core.settings import CascadeSettings
from schemas import Assignment, Result, ResultStatus


def needs_escalation(cascade: CascadeSettings | None, result: Result) -> bool:
    if cascade is None or result.status is not ResultStatus.OK or result.confidence is None:
        return False
    threshold = cascade.min_confidence.get(result.task_type)
    return threshold is not None and result.confidence < threshold


def escalate(cascade: CascadeSettings, assignment: Assignment, result: Result) -> tuple[Result, Assignment]:
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
            "routed_at": datetime.now(UTC),
        }
    )
    return result.model_copy(update={"status": ResultStatus.ESCALATED}), forwarded
