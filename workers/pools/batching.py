"""Batcher: sends a pool's deferrable items through its provider's batch API (50% off, answers within 24 h).

* **Deferrable**: batching is on for the pool (`pools.<name>.batch.enabled`) and the item has no deadline,
  or one farther away than `batch.horizon_s` (default 26 h: the providers' 24 h window plus margin).
* **Assembly**: items wait in an open batch until it holds `max_items` or its first item has waited
  `max_wait_s`; the batch is then submitted through the SDK (custom_id `item-<n>`) and polled, the first
  poll after `poll_interval_s`, then doubling up to `poll_max_interval_s`.
* **Results**: one Result per item, `batch = true` (the price catalog applies the batch discount), tokens
  from the provider's own usage, latency from the item's arrival to its answer. A request the provider
  failed is an attempt like any other: when another try may succeed (5xx, expired, cancelled, a failed
  batch) it is `failed_over` and the pool runs the item down its interactive chain as the next attempt;
  otherwise (the request's fault, e.g. HTTP 400) it is the final `error`. A batch that cannot be submitted
  at all sends its items to the interactive chain with no attempt recorded (nothing reached a model).
* **Offsets**: the pool awaits each item's Result like an interactive call's, so its offset, and every
  later offset of its partition, is committed only after the Result was produced.
* **Stopping / rebalancing**: items still waiting are released unanswered (`Stopping`): their offsets stay
  uncommitted, so the next owner re-consumes and resubmits them; the tables keep one row per (job_id,
  attempt). On stop the pool also cancels its outstanding batches, so the provider stops work nobody
  will collect; what it already ran is billed by the provider but not in the ledger.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from modelyard.core._exceptions import ProviderError, Stopping
from modelyard.core.observability import POOL_JOBS
from modelyard.core.settings import BatchSettings
from schemas import Assignment, Result, ResultStatus, TaskType, WorkItem
from schemas.result import NO_CALL, new_call_id
from workers.pools.backends.base import BatchBackend, BatchRequest, Completion

log = logging.getLogger("modelyard.pool")
CANCEL_TIMEOUT_S = 5.0


def is_deferrable(item: WorkItem, horizon_s: float, now: datetime | None = None) -> bool:
    """No deadline, or one farther away than the horizon."""
    if item.deadline is None:
        return True
    return (item.deadline - (now or datetime.now(UTC))).total_seconds() > horizon_s


@dataclass
class Waiting:
    """One item in a batch: its partition (to release it on a rebalance) and the future its Result goes to."""

    assignment: Assignment
    partition: Hashable
    future: asyncio.Future[list[Result]]
    since: float = field(default_factory=time.monotonic)


class Batcher:
    def __init__(self, pool: str, settings: BatchSettings, backend: BatchBackend, model: str) -> None:
        self.pool = pool
        self.settings = settings
        self.backend = backend
        self.provider = backend.provider
        self.model = model
        self.open: list[Waiting] = []
        self.outstanding: dict[str, list[Waiting]] = {}
        self.batches_sent = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._stopping = False

    def accepts(self, assignment: Assignment) -> bool:
        return self.settings.enabled and is_deferrable(assignment.item, self.settings.horizon_s)

    @property
    def pending(self) -> int:
        return len(self.open) + sum(len(items) for items in self.outstanding.values())

    @property
    def full(self) -> bool:
        return self.pending >= self.settings.max_pending

    async def run(self, assignment: Assignment, partition: Hashable) -> list[Result]:
        """The item's batch Result(s); [] when its batch could not be submitted (use the interactive path).
        Raises Stopping when the item was released (stop, rebalance): nothing is produced for it."""
        if self._stopping:
            raise Stopping("the pool is stopping; the job replays after the restart")
        waiting = Waiting(assignment, partition, asyncio.get_running_loop().create_future())
        self.open.append(waiting)
        if len(self.open) >= self.settings.max_items:
            self._send(self.settings.max_items)
        elif self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_when_due())
        return await waiting.future

    async def _flush_when_due(self) -> None:
        while self.open:
            due = self.open[0].since + self.settings.max_wait_s - time.monotonic()
            if due > 0:
                await asyncio.sleep(due)
            else:
                self._send(self.settings.max_items)

    def _send(self, count: int) -> None:
        items, self.open = self.open[:count], self.open[count:]
        task = asyncio.create_task(self._submit_and_collect(items))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _submit_and_collect(self, items: list[Waiting]) -> None:
        try:
            await self._submit_and_answer(items)
        except (
            Exception
        ) as exc:  # a defect of ours: record it against the jobs rather than leave them waiting
            log.exception("%s batch of %d items crashed", self.provider, len(items))
            failure = ProviderError(f"internal: {type(exc).__name__}", provider=self.provider, retryable=True)
            for w in items:
                _answer(w, [self._result(w, failure, "-")])

    async def _submit_and_answer(self, items: list[Waiting]) -> None:
        requests: list[BatchRequest] = [
            (f"item-{n}", w.assignment.item, w.assignment.task_type) for n, w in enumerate(items)
        ]
        call_ids = [new_call_id() for _ in requests]  # one per request, made as the batch is sent
        try:
            batch_id = await self.backend.submit(requests)
        except ProviderError as exc:
            log.warning(
                "%s batch of %d items not submitted (%s): they take the interactive path",
                self.provider,
                len(items),
                exc,
            )
            for w in items:
                _answer(w, [])
            return
        self.batches_sent += 1
        self.outstanding[batch_id] = items
        log.info("%s batch %s submitted: %d items", self.provider, batch_id, len(items))
        try:
            outcomes = await self._collect(batch_id, {cid: task for cid, _, task in requests})
        finally:
            self.outstanding.pop(batch_id, None)
        for (custom_id, _, _), w, call_id in zip(requests, items, call_ids, strict=True):
            _answer(w, [self._result(w, outcomes.get(custom_id), batch_id, call_id)])

    async def _collect(
        self, batch_id: str, task_types: dict[str, TaskType]
    ) -> dict[str, Completion | Exception]:
        """Poll with a doubling interval until the batch ended, then read its outcomes. A poll that fails
        (after the SDK's retries) is logged and tried again at the next interval."""
        interval = self.settings.poll_interval_s
        while True:
            await asyncio.sleep(interval)
            interval = min(interval * 2, self.settings.poll_max_interval_s)
            try:
                status = await self.backend.status(batch_id)
                if status.ended:
                    log.info("%s batch %s ended: %s", self.provider, batch_id, status.state)
                    return await self.backend.results(batch_id, task_types)
            except ProviderError as exc:
                log.warning(
                    "%s batch %s: poll failed (%s); next poll in %.0fs",
                    self.provider,
                    batch_id,
                    exc,
                    interval,
                )

    def _result(
        self,
        waiting: Waiting,
        outcome: Completion | Exception | None,
        batch_id: str,
        call_id: str = NO_CALL,
    ) -> Result:
        a = waiting.assignment
        base = {
            "call_id": call_id,
            "job_id": a.item.job_id,
            "attempt": a.attempt,
            "tenant": a.item.tenant,
            "task_type": a.task_type,
            "pool": self.pool,
            "provider": self.provider,
            "model": self.model,
            "batch": True,
            "completed_at": datetime.now(UTC),
            "latency_ms": round((time.monotonic() - waiting.since) * 1000, 3),
        }
        POOL_JOBS.labels(self.pool, self.provider, "ok" if isinstance(outcome, Completion) else "error").inc()
        if isinstance(outcome, Completion):
            return Result(
                **(base | {"model": outcome.model}),
                status=ResultStatus.OK,
                output=outcome.output,
                confidence=outcome.confidence,
                usage=outcome.usage,
            )
        if outcome is None:
            outcome = ProviderError(
                f"{self.provider}: batch {batch_id} returned no outcome for this request",
                provider=self.provider,
                retryable=True,
            )
        retryable = isinstance(outcome, ProviderError) and outcome.retryable
        status = ResultStatus.FAILED_OVER if retryable else ResultStatus.ERROR
        return Result(**base, status=status, error=str(outcome)[:2000])

    def release(self, partitions: set[Hashable]) -> None:
        """Rebalance: items of partitions this process no longer owns are answered with Stopping."""
        gone = [w for w in self.open if w.partition in partitions]
        self.open = [w for w in self.open if w.partition not in partitions]
        for batch_id, items in self.outstanding.items():
            gone += [w for w in items if w.partition in partitions]
            if all(w.partition in partitions for w in items):  # nobody here will read it: stop paying for it
                self._spawn(self._cancel(batch_id))
        _release(gone)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _cancel(self, batch_id: str) -> None:
        try:
            await asyncio.wait_for(self.backend.cancel(batch_id), CANCEL_TIMEOUT_S)
            log.info(
                "%s batch %s cancelled: its items replay on their partitions' new owners",
                self.provider,
                batch_id,
            )
        except (ProviderError, TimeoutError) as exc:
            log.warning("%s batch %s not cancelled (%s)", self.provider, batch_id, exc)

    async def stop(self) -> None:
        """Release every waiting item, cancel the outstanding batches at the provider (best effort)."""
        self._stopping = True
        outstanding = list(self.outstanding)
        _release(self.open + [w for items in self.outstanding.values() for w in items])
        self.open = []
        for task in [*self._tasks, *([self._flusher] if self._flusher else [])]:
            task.cancel()
        for batch_id in outstanding:
            await self._cancel(batch_id)
        await self.backend.close()


def _answer(waiting: Waiting, results: list[Result]) -> None:
    if not waiting.future.done():  # a released item's future already holds Stopping
        waiting.future.set_result(results)


def _release(items: list[Waiting]) -> None:
    for w in items:
        if not w.future.done():
            w.future.set_exception(Stopping("released: the job replays on its partition's next owner"))
