"""PoolWorker: one pool's process. Consumes its topic, runs each assignment through the pool's Dispatcher
(rate limits, circuit breakers, fallbacks) with bounded concurrency, produces one Result per attempt (and,
for a low-confidence answer, the Assignment that escalates it), and commits an offset only after everything
produced for it is acknowledged by Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord

from modelyard.core._exceptions import Stopping
from modelyard.core.kafka import make_consumer, make_producer
from modelyard.core.offsets import OffsetTracker
from modelyard.core.settings import Settings
from schemas import Assignment, Result, ResultStatus
from schemas.decoding import DecodeFailure, decode
from workers.pools.batching import Batcher
from workers.pools.cascade import PolicyCascade, escalate, needs_escalation
from workers.pools.dispatch import Dispatcher

log = logging.getLogger("modelyard.pool")
COMMIT_INTERVAL_S = 0.5
Outgoing = tuple[str, bytes | None, bytes]  # topic, key, value


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: PoolWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if self.worker.batcher:
            self.worker.batcher.release(set(revoked))
        await self.worker.drain()
        await self.worker.commit()
        self.worker.offsets.forget(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("assigned %s", sorted(tp.partition for tp in assigned))


class PoolWorker:
    def __init__(
        self, settings: Settings, pool: str, dispatcher: Dispatcher, batcher: Batcher | None = None
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.dispatcher = dispatcher
        self.batcher = batcher
        self.waiting_for_batch: set[asyncio.Task[None]] = set()
        self.cascades = PolicyCascade(
            settings.router.policy_file, pool, settings.pools[pool].cascade, settings.router.reload_interval_s
        )
        self.concurrency = settings.pools[pool].concurrency
        self.offsets = OffsetTracker()
        self.tasks: set[asyncio.Task[None]] = set()
        self.calling = 0
        self._slot_freed = asyncio.Event()
        self.processed = 0
        self.abandoned = 0
        self._last_commit = time.monotonic()
        self._fatal: BaseException | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then drain in-flight calls and commit. Clients live inside the running loop."""
        topic = self.settings.kafka.pool_topic(self.pool)
        self.consumer = make_consumer(
            self.settings, topic, f"pool.{self.pool}", _Rebalance(self), self.concurrency
        )
        self.producer = make_producer(self.settings)
        await self.producer.start()
        await self.consumer.start()
        try:
            await self._consume(stop)
        finally:
            self.dispatcher.stop_waiting()
            if self.batcher:
                await self.batcher.stop()
            log.info("stopping: draining %d in-flight calls, then committing", len(self.tasks))
            await self.drain()
            await self.commit()
            log.info("stopped after %d assignments; %d left for a replay", self.processed, self.abandoned)
            await self.consumer.stop()
            await self.producer.stop()
            await self.dispatcher.close()
        if self._fatal:
            raise self._fatal

    async def _consume(self, stop: asyncio.Event) -> None:
        while not stop.is_set() and self._fatal is None:
            free = self._free_slots()
            if free <= 0:
                self._slot_freed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot_freed.wait(), 0.2)
            else:
                batches = await self.consumer.getmany(timeout_ms=200, max_records=free)
                for tp, records in batches.items():
                    for record in records:
                        self._start(tp, record)
            if time.monotonic() - self._last_commit >= COMMIT_INTERVAL_S:
                await self.commit()

    def _free_slots(self) -> int:
        """Calls in flight are capped at `concurrency`. A finished call frees its slot at once, not when Kafka
        acknowledges its result (a few ms more); results waiting for that ack are capped at as many again.
        Items waiting in a provider batch hold no slot; past `batch.max_pending` of them the pool takes no work."""
        if self.batcher and self.batcher.full:
            return 0
        return min(
            self.concurrency - self.calling,
            2 * self.concurrency - len(self.tasks) + len(self.waiting_for_batch),
        )

    def _start(self, tp: TopicPartition, record: ConsumerRecord) -> None:
        self.offsets.started(tp, record.offset)
        self.calling += 1
        task = asyncio.create_task(self._handle(tp, record))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _handle(self, tp: TopicPartition, record: ConsumerRecord) -> None:
        try:
            try:
                outgoing = await self._outcome(tp, record)
            finally:
                self.calling -= 1
                self._slot_freed.set()
            sent = [await self.producer.send(topic, value=value, key=key) for topic, key, value in outgoing]
            for delivery in sent:
                await delivery
        except Stopping:  # nothing was sent for it: left uncommitted, it replays after the restart
            self.abandoned += 1
            return
        except Exception as exc:  # Kafka refused a result: stop; the offset stays uncommitted and replays
            log.error("cannot produce the result of offset %s: %r", record.offset, exc)
            self._fatal = exc
            return
        self.offsets.finished(tp, record.offset)
        self.processed += 1

    async def _outcome(self, tp: TopicPartition, record: ConsumerRecord) -> list[Outgoing]:
        assignment = decode(Assignment, record.value)
        if isinstance(assignment, DecodeFailure):
            letter = assignment.dead_letter(
                record.value or b"",
                "pool",
                source_topic=record.topic,
                source_partition=record.partition,
                source_offset=record.offset,
            )
            return [(self.settings.kafka.dead_letter_topic, record.key, letter.model_dump_json().encode())]
        results = await self._attempts(tp, assignment)
        key, out = assignment.item.job_id.encode(), []
        cascade = self.cascades.current()
        if needs_escalation(cascade, results[-1]):
            assert cascade is not None
            results[-1], forwarded = escalate(cascade, assignment, results[-1])
            out.append(
                (self.settings.kafka.pool_topic(forwarded.pool), key, forwarded.model_dump_json().encode())
            )
        return [(self.settings.kafka.results_topic, key, r.model_dump_json().encode()) for r in results] + out

    async def _attempts(self, tp: TopicPartition, assignment: Assignment) -> list[Result]:
        """Deferrable items go through the provider's batch API (workers/batching.py); a batch request that
        may succeed on another try (failed_over) or a batch that could not be sent continues down the chain."""
        if self.batcher is None or not self.batcher.accepts(assignment):
            return await self.dispatcher.run(assignment)
        batched = await self._in_batch(tp, assignment)
        if batched and batched[-1].status is not ResultStatus.FAILED_OVER:
            return batched
        return batched + await self.dispatcher.run(
            assignment.model_copy(update={"attempt": assignment.attempt + len(batched)})
        )

    async def _in_batch(self, tp: TopicPartition, assignment: Assignment) -> list[Result]:
        """Wait for the batch outside the interactive slots: a batch of 1,000 items holds none of them."""
        assert self.batcher is not None
        task = asyncio.current_task()
        self.calling -= 1
        self._slot_freed.set()
        self.waiting_for_batch.add(task)  # type: ignore[arg-type]
        try:
            results = await self.batcher.run(assignment, tp)
        except BaseException:
            self.waiting_for_batch.discard(task)  # type: ignore[arg-type]
            self.calling += 1
            raise
        self.waiting_for_batch.discard(task)  # type: ignore[arg-type]
        await (
            self._take_slot()
        )  # a failed-over item goes on interactively: within `concurrency`, like any call
        return results

    async def _take_slot(self) -> None:
        while self.calling >= self.concurrency:
            self._slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_freed.wait(), 0.2)
        self.calling += 1

    async def drain(self) -> None:
        """Wait for every in-flight call to finish and its result to be produced. Items waiting in a provider
        batch are not waited for (hours): stop() and release() answer them first, the rest stay in flight."""
        while busy := [t for t in self.tasks if t not in self.waiting_for_batch]:
            await asyncio.wait(busy, timeout=0.2)

    async def commit(self) -> None:
        self._last_commit = time.monotonic()
        ready = self.offsets.committable()
        if not ready:
            return
        try:
            await self.consumer.commit(ready)
        except Exception as exc:  # e.g. a rebalance in progress; the next commit carries these offsets
            log.warning("commit deferred: %r", exc)
            return
        self.offsets.mark_committed(ready)
