"""PoolWorker: one pool's process. Consumes its topic, runs each assignment through the pool's Dispatcher
(rate limits, circuit breakers, fallbacks) with bounded concurrency, produces one Result per attempt (and,
for a low-confidence answer, the Assignment that escalates it), and commits an offset only after everything
produced for it is acknowledged by Kafka: a stage of the consume-commit runtime (modelyard/core/runtime.py),
each item its own span, so a slow call holds back only the offsets from its own on.

Which item a free slot takes is the read-ahead's choice (workers/pools/read_ahead.py, scheduling.py):
priority, then deadlines, then tenants' fair shares. Items whose deadline passed end `expired` without a
call; opted-in items are answered from the result cache when they can be (workers/pools/result_cache.py).
Neither makes a provider call, so their Results carry no call id and cost nothing. With budgets set, the pool
keeps its own budget view (the spend topic) for the calls it starts that spend from a budgeted pool:
escalations and fallbacks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from decimal import Decimal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from modelyard.core._exceptions import BrokerError, Stopping
from modelyard.core.budgets import BudgetGuard, Overrun
from modelyard.core.kafka import consumer_for, kafka_errors, make_producer
from modelyard.core.offsets import OffsetTracker
from modelyard.core.runtime import ConsumeCommit, Fetched, Receipt, Room
from modelyard.core.settings import CascadeSettings, KafkaSettings, PoolSettings, SchedulingSettings
from modelyard.core.spend_feed import SpendFeed
from schemas import Assignment, Result, ResultStatus
from schemas.decoding import decode
from schemas.rejection import Rejection
from workers.pools.batching import Batcher
from workers.pools.cascade import (
    PolicyCascade,
    escalate,
    escalation_budget,
    kept_over_budget,
    needs_escalation,
)
from workers.pools.deadlines import deadline_passed, expired_result
from workers.pools.dispatch import Dispatcher
from workers.pools.read_ahead import ReadAhead
from workers.pools.result_cache import PoolCache
from workers.pools.scheduling import Queued

log = logging.getLogger("modelyard.pool")
FETCH_MAX_WAIT_MS = 20  # a rewind's seek waits for the fetch in flight: keep idle fetches short
SPEND_POLL_S = 0.25  # how stale the pool's view of the sink's spend figures may be
PRODUCING = kafka_errors("produce a result")  # one door instance for every produce (no allocation per result)
Outgoing = tuple[str, bytes | None, bytes]  # topic, key, value


class PoolWorker:
    def __init__(
        self,
        pool: str,
        config: PoolSettings,
        kafka: KafkaSettings,
        group_id: str,
        dispatcher: Dispatcher,
        batcher: Batcher | None = None,
        scheduling: SchedulingSettings | None = None,
        cache: PoolCache | None = None,
        budget: BudgetGuard | None = None,
        cascades: PolicyCascade | None = None,
        cascade_pools: Mapping[str, PoolSettings] | None = None,
    ) -> None:
        """budget: the pool's budget view, when it can start calls that spend from a budgeted pool (shared with
        the dispatcher's fallbacks); cascades: the cascade the pool applies (the routing-policy file's
        `cascades.<pool>` section over `config.cascade`; `config.cascade` alone when not given);
        cascade_pools: the settings of the pools a cascade may escalate to, by name (for their budgets)."""
        self.kafka = kafka
        self.group_id = group_id
        self.pool = pool
        self.dispatcher = dispatcher
        self.batcher = batcher
        self.cache = cache
        self.budget = budget
        self.waiting_for_batch: set[asyncio.Task[None]] = set()
        self.cascades = cascades or PolicyCascade(None, pool, config.cascade, 0.0)
        self.cascade_pools = dict(cascade_pools or {})
        self.concurrency = config.concurrency
        self.commit_interval_s = config.commit_interval_s
        self._slot_freed = asyncio.Event()  # also set when the read-ahead queues work
        self.read_ahead = ReadAhead(
            scheduling or SchedulingSettings(), pool, config.max_output_tokens, self._slot_freed
        )
        self.offsets: OffsetTracker = self.read_ahead.offsets
        self.tasks: set[asyncio.Task[None]] = set()
        self.calling = 0
        self.processed = 0
        self.abandoned = 0
        self.consumer: AIOKafkaConsumer | None = None  # once running (consumer lag, readiness)
        self.runtime: ConsumeCommit | None = None
        self._helpers: list[asyncio.Task[None]] = []  # the slot loop, the cache feed's follower

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then drain in-flight calls and commit. Clients live inside the running loop."""
        self.producer = make_producer(self.kafka)
        self.consumer = consumer_for(
            self.kafka, self.group_id, self.concurrency, fetch_max_wait_ms=FETCH_MAX_WAIT_MS
        )
        self.runtime = ConsumeCommit(
            self,
            self.consumer,
            self.producer,
            [self.kafka.pool_topic(self.pool)],
            commit_interval_s=self.commit_interval_s,
            offsets=self.offsets,
        )
        if self.cache is not None:
            log.info("result cache: %d entries restored", await self.cache.feed.restore())
        spend = await self._follow_spend()
        self._helpers = [asyncio.create_task(self._start_when_free(stop))]
        if self.cache is not None:
            self._helpers.append(asyncio.create_task(self.cache.feed.follow(stop)))
        try:
            await self.runtime.run(stop)
        finally:
            await self._stop_helpers()
            if self.cache is not None:
                await self.cache.feed.stop()
            if spend is not None:
                spend.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await spend
            log.info("stopped after %d assignments; %d left for a replay", self.processed, self.abandoned)
            await self.dispatcher.close()

    async def _follow_spend(self) -> asyncio.Task[None] | None:
        """With a budget view: the spend topic read to its end before the first call, then followed."""
        if self.budget is None:
            return None
        feed = SpendFeed(self.kafka, self.budget.book)
        await feed.catch_up()

        async def follow() -> None:
            try:
                while True:
                    try:
                        await feed.poll(timeout_ms=int(SPEND_POLL_S * 1000))
                    except BrokerError as exc:  # budgets keep the last figures (and own reservations)
                        log.warning("spend topic not read (%r); retrying in 1 s", exc)
                        await asyncio.sleep(1)
            finally:
                await feed.stop()

        return asyncio.create_task(follow())

    async def room(self) -> Room:
        """The read-ahead steers each fetch (seeks for rewinds, pauses partitions read far enough) and says how
        much to read; a helper loop that died stops the pool."""
        failed = _failure(self._helpers)
        if failed is not None:
            raise failed
        assert self.consumer is not None
        return Room(*self.read_ahead.plan(self.consumer))

    async def take(self, fetched: Fetched) -> list[Receipt]:
        """File a fetch in the read-ahead; each item it queued is a span, durable once its Result is acknowledged
        (the slot loop starts it when the scheduler picks it)."""
        assert self.consumer is not None
        receipts, loop = [], asyncio.get_running_loop()
        for entry in self.read_ahead.absorb(self.consumer, fetched):
            entry.durable = durable = loop.create_future()
            offset = entry.record.offset
            receipts.append(Receipt(entry.tp, offset, offset + 1, durable))
        return receipts

    async def _start_when_free(self, stop: asyncio.Event) -> None:
        """Starts what the scheduler picks whenever a slot is free (the runtime reads ahead meanwhile)."""
        while not stop.is_set():
            self._slot_freed.clear()
            started = self.read_ahead.take(self._free_slots())
            for entry in started:
                self._start(entry)
            if not started:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot_freed.wait(), 0.2)

    async def _stop_helpers(self) -> None:
        for helper in self._helpers:
            helper.cancel()
        await asyncio.gather(*self._helpers, return_exceptions=True)

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

    def _start(self, entry: Queued) -> None:
        self.calling += 1
        task = asyncio.create_task(self._handle(entry))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _handle(self, entry: Queued) -> None:
        """Resolves the item's receipt: True once everything produced for it is acknowledged, False when it is
        left for a replay; Kafka refusing a result is fatal (the runtime stops; the offset replays)."""
        assert entry.durable is not None
        try:
            durable = await self._answer(entry.tp, entry.record)
        except asyncio.CancelledError:
            entry.durable.cancel()
            raise
        except Exception as exc:
            log.error("cannot produce the result of offset %s: %r", entry.record.offset, exc)
            entry.durable.set_exception(exc)
            return
        entry.durable.set_result(durable)

    async def _answer(self, tp: TopicPartition, record: ConsumerRecord) -> bool:
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
        self.processed += 1
        return True

    async def _outcome(self, tp: TopicPartition, record: ConsumerRecord) -> list[Outgoing]:
        assignment = decode(Assignment, record.value)
        if isinstance(assignment, Rejection):
            letter = assignment.dead_letter(
                record.value or b"",
                "pool",
                source_topic=record.topic,
                source_partition=record.partition,
                source_offset=record.offset,
            )
            return [(self.kafka.dead_letter_topic, record.key, letter.model_dump_json().encode())]
        results = await self._answers(tp, assignment)
        key, out = assignment.item.job_id.encode(), list[Outgoing]()
        cascade = self.cascades.current()
        if cascade is not None and needs_escalation(cascade, results[-1]):
            out += self._escalation(cascade, assignment, results, key)
        elif self.cache is not None:
            out += self.cache.outgoing(assignment, results[-1], self._keeps)
        return [(self.kafka.results_topic, key, r.model_dump_json().encode()) for r in results] + out

    def _escalation(
        self, cascade: CascadeSettings, assignment: Assignment, results: list[Result], key: bytes
    ) -> list[Outgoing]:
        """Marks the last result escalated and forwards the item to the cascade's pool, unless the tenant's
        budget refuses the call (then the answer stays final, saying why)."""
        to_pool = cascade.to_pool
        settings = self.cascade_pools.get(to_pool)
        admitted = (
            escalation_budget(self.budget, (to_pool, settings), assignment, results[-1])
            if settings is not None
            else Decimal(0)
        )
        if isinstance(admitted, Overrun):
            results[-1] = kept_over_budget(results[-1], to_pool, admitted)
            return []
        results[-1], forwarded = escalate(cascade, assignment, results[-1], admitted)
        return [(self.kafka.pool_topic(to_pool), key, forwarded.model_dump_json().encode())]

    async def _answers(self, tp: TopicPartition, assignment: Assignment) -> list[Result]:
        """An item past its deadline ends expired; an opted-in one may be answered from the cache."""
        if deadline_passed(assignment.item):
            first = self.dispatcher.targets[0]
            return [expired_result(assignment, assignment.attempt, self.pool, first.provider, first.model)]
        if self.cache is not None and assignment.cache is not None:
            return await self.cache.answer(assignment, lambda: self._attempts(tp, assignment), self._keeps)
        return await self._attempts(tp, assignment)

    def _keeps(self, result: Result) -> bool:
        """A fresh ok answer this pool does not escalate is worth caching."""
        return result.status is ResultStatus.OK and not needs_escalation(self.cascades.current(), result)

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
        batch are not waited for (hours): on a revoke the partitions' waiting items are released (read-ahead
        and batcher; they replay on the next owner), at stop the slot loop ends and the batcher stops (its items
        are left for a replay); the rest stay in flight."""
        if partitions is None:
            await self._stop_helpers()
            self.dispatcher.stop_waiting()
            if self.batcher:
                await self.batcher.stop()
            log.info("stopping: draining %d in-flight calls, then committing", len(self.tasks))
        else:
            self.read_ahead.release(partitions)  # their waiting items are not started; they replay
            if self.batcher:
                self.batcher.release(partitions)
        while busy := [t for t in self.tasks if t not in self.waiting_for_batch]:
            await asyncio.wait(busy, timeout=0.2)


def _failure(helpers: list[asyncio.Task[None]]) -> BaseException | None:
    """The error of a helper loop (the slot loop, the cache feed) that died: the pool stops on it."""
    for helper in helpers:
        if helper.done() and not helper.cancelled() and helper.exception() is not None:
            log.error("pool helper failed: %r", helper.exception())
            return helper.exception()
    return None
