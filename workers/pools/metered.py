"""MeteredBackend: wraps any ModelBackend with pool metrics and the job_id for log lines, so the pool worker
and the backends stay free of instrumentation."""

from __future__ import annotations

import time

from modelyard.core.logs import current_job_id
from modelyard.core.observability import POOL_CALL_SECONDS, POOL_IN_FLIGHT, POOL_JOBS
from schemas import TaskType, WorkItem
from workers.pools.backends.base import Completion, ModelBackend


class MeteredBackend:
    def __init__(self, inner: ModelBackend, pool: str) -> None:
        self.inner = inner
        self.pool = pool
        self.provider = inner.provider
        self._in_flight = POOL_IN_FLIGHT.labels(pool)
        self._latency = POOL_CALL_SECONDS.labels(pool, inner.provider)
        self._jobs = {
            status: POOL_JOBS.labels(pool, inner.provider, status) for status in ("ok", "error")
        }  # looked up once

    async def complete(self, item: WorkItem, task_type: TaskType) -> Completion:
        current_job_id.set(
            item.job_id
        )  # each job runs in its own task: the id stays with that task's log lines
        status, started = "error", time.perf_counter()
        self._in_flight.inc()
        try:
            completion = await self.inner.complete(item, task_type)
            status = "ok"
            return completion
        finally:
            self._in_flight.dec()
            self._latency.observe(time.perf_counter() - started)
            self._jobs[status].inc()

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> object:
        """Anything else a backend offers passes through unchanged."""
        return getattr(self.inner, name)
