"""PoolWorker: one pool's process. Consumes its topic, runs each assignment through the pool's Dispatcher
(rate limits, circuit breakers, fallbacks) with bounded concurrency, produces one Result per attempt (and,
for a low-confidence answer, the Assignment that escalates it), and commits an offset only after everything
produced for it is acknowledged by Kafka: a stage of the consume-commit runtime (modelyard/core/runtime.py),
each record its own span, so a slow call holds back only the offsets from its own on."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from modelyard.core._exceptions import Stopping
from modelyard.core.kafka import consumer_for, group_name, kafka_errors, make_producer
from modelyard.core.runtime import ConsumeCommit, Fetched, Receipt
from modelyard.core.settings import Settings
from schemas import Assignment, Result, ResultStatus
from schemas.decoding import DecodeFailure, decode
from workers.pools.batching import Batcher
from workers.pools.cascade import escalate, needs_escalation
from workers.pools.dispatch import Dispatcher

log = logging.getLogger("modelyard.pool")
COMMIT_INTERVAL_S = 0.5
PRODUCING = kafka_errors("produce a result")
Outgoing = tuple[str, bytes | None, bytes]  # topic, key, value


class PoolWorker:
    def __init__(
        self, settings: Settings, pool: str, dispatcher: Dispatcher, batcher: Batcher | None = None
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.dispatcher = dispatcher
        self.batcher = batcher
        self.waiting_for_batch: set[asyncio.Task[bool]] = set()
        self.cascade = settings.pools[pool].cascade
        self.concurrency = settings.pools[pool].concurrency
        self.tasks: set[asyncio.Task[bool]] = set()
        self.calling = 0
        self._slot_freed = asyncio.Event()
        self.processed = 0
        self.abandoned = 0
        self.consumer: AIOKafkaConsumer | None = None  # once running (consumer lag, readiness)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then drain in-flight calls and commit. Clients live inside the running loop."""
        self.producer = make_producer(self.settings)
        self.consumer = consumer_for(
            self.settings, group_name(self.settings, f"pool.{self.pool}"), self.concurrency
        )
        topics = [self.settings.kafka.pool_topic(self.pool)]
        runtime = ConsumeCommit(
            self, self.consumer, self.producer, topics, commit_interval_s=COMMIT_INTERVAL_S
        )
        try:
            await runtime.run(stop)
        finally:
            log.info("stopped after %d assignments; %d left for a replay", self.processed, self.abandoned)
            await self.dispatcher.close()

    async def room(self) -> int:
        """Calls in flight are capped at `concurrency`. A finished call frees its slot at once, not when Kafka
        acknowledges its result (a few ms more); results waiting for that ack are capped at as many again.
        Items waiting in a provider batch hold no slot; past `batch.max_pending` of them the pool takes no work.
        When full, waits (up to 0.2 s) for a slot to free before saying so."""
        if self.batcher and self.batcher.full:
            free = 0
        else:
            free = min(
                self.concurrency - self.calling,
                2 * self.concurrency - len(self.tasks) + len(self.waiting_for_batch),
            )
        if free <= 0:
            self._slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_freed.wait(), 0.2)
        return free

    async def take(self, fetched: Fetched) -> list[Receipt]:
        return [self._start(tp, record) for tp, records in fetched.items() for record in records]

    def _start(self, tp: TopicPartition, record: ConsumerRecord) -> Receipt:
        self.calling += 1
        task = asyncio.create_task(self._handle(tp, record))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return Receipt(tp, record.offset, record.offset + 1, task)

    async def _handle(self, tp: TopicPartition, record: ConsumerRecord) -> bool:
        """True once every record produced for it is acknowledged; False when it is left for a replay."""
        try:
            try:
                outgoing = await self._outcome(tp, record)
            finally:
                self.calling -= 1
                self._slot_freed.set()
            with PRODUCING:
                sent = [
                    await self.producer.send(topic, value=value, key=key) for topic, key, value in outgoing
                ]
                for delivery in sent:
                    await delivery
        except Stopping:  # nothing was sent for it: left uncommitted, it replays after the restart
            self.abandoned += 1
            return False
        except Exception as exc:  # Kafka refused a result: the runtime stops; the offset replays
            log.error("cannot produce the result of offset %s: %r", record.offset, exc)
            raise
        self.processed += 1
        return True

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
        if needs_escalation(self.cascade, results[-1]):
            results[-1], forwarded = escalate(self.cascade, assignment, results[-1])
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

    async def drain(self, partitions: set[TopicPartition] | None) -> None:
        """Wait for the in-flight calls to finish and their results to be produced. Items waiting in a provider
        batch are not waited for (hours): on a revoke their partitions' items are released, at stop the batcher
        stops (both answer them as left for a replay); the rest stay in flight."""
        if partitions is None:
            self.dispatcher.stop_waiting()
            if self.batcher:
                await self.batcher.stop()
            log.info("stopping: draining %d in-flight calls, then committing", len(self.tasks))
        elif self.batcher:
            self.batcher.release(partitions)
        while busy := [t for t in self.tasks if t not in self.waiting_for_batch]:
            await asyncio.wait(busy, timeout=0.2)
