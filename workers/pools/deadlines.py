"""Deadlines: an item whose deadline has passed before its call is ended as `expired`, never called, never billed.

The pool checks before each call of an item's chain (a job that waited in the read-ahead, behind an open
circuit or in a rate-limit gate may run out of time there); the scheduler hands expired items out first so
they leave memory at once. An expired Result has no tokens, so its ledger row costs nothing.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from modelyard.core.observability import POOL_EXPIRED
from schemas import Assignment, Result, ResultStatus, WorkItem
from schemas.result import NO_CALL


def deadline_passed(item: WorkItem, now: float | None = None) -> bool:
    return item.deadline is not None and item.deadline.timestamp() <= (time.time() if now is None else now)


def expired_result(assignment: Assignment, attempt: int, pool: str, provider: str, model: str) -> Result:
    item = assignment.item
    assert item.deadline is not None
    POOL_EXPIRED.labels(pool).inc()
    now = datetime.now(UTC)
    late = (now - item.deadline).total_seconds()
    return Result(
        job_id=item.job_id,
        attempt=attempt,
        tenant=item.tenant,
        task_type=assignment.task_type,
        pool=pool,
        provider=provider,
        model=model,
        status=ResultStatus.EXPIRED,
        error=f"deadline {item.deadline.isoformat()} passed {late:.3f}s before the call; not called",
        latency_ms=0.0,
        call_id=NO_CALL,  # never called, so never billed: a zero-cost ledger row keyed like any no-call result
        completed_at=now,
    )
