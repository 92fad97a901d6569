"""The router's batch engine: the same RoutingPolicy, without Faust's per-event machinery on the hot path.

Faust's stream delivers records one event at a time through its conductor, channels and acking (about
100 us of Python per record here, a ceiling near 6-8k records/s on one core whatever the agent does). This
engine runs as a task inside the same Faust app (so the process keeps Faust's worker, timers and signal
handling) and moves records in whole fetches:

    getmany -> route the batch -> append the outputs to one record batch per (topic, partition) -> send those
            -> (while the next batch is routed) wait for all deliveries -> commit the batch's offsets

An offset is committed only once every output of every record before it is durable in Kafka
(at-least-once; a replay re-routes the same records to the same topics and downstream dedups on
job_id/attempt). A record that cannot be produced stops the process before the commit.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import time
from typing import Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from threadpoolctl import threadpool_limits

from modelyard.core.observability import ROUTE_BATCH_SECONDS
from modelyard.core.settings import Settings
from modelyard.core.signatures import signature_header
from streams.partitioning import partitions_for
from streams.policy import Outgoing, RoutingPolicy, Source

log = logging.getLogger("modelyard.router")


class RecordPosition(Protocol):
    topic: str
    partition: int
    offset: int


class BatchRouter:
    SETTLING_MAX = 2  # batches routed but not yet committed; the next waits for the oldest beyond this

    def __init__(self, settings: Settings, policy: RoutingPolicy, group_id: str) -> None:
        self.settings = settings
        self.policy = policy
        self.group_id = group_id
        self.max_records = settings.router.batch_max
        self.assigned = False
        self._round_robin = 0
        self._settling: collections.deque[asyncio.Task[None]] = (
            collections.deque()
        )  # oldest first, for the cap
        self._last: asyncio.Task[None] | None = None  # what the next batch's commit waits for (order)

    async def run(self) -> None:
        # numpy's BLAS threads would spin on every core for the novelty matmuls (a batch is small): one thread
        threadpool_limits(1, user_api="blas")
        consumer, producer = self._consumer(), self._producer()
        consumer.subscribe([self.settings.kafka.jobs_topic], listener=_SettleBeforeRevoke(self))
        await producer.start()
        await consumer.start()
        self.assigned = True
        try:
            while True:
                fetched = await consumer.getmany(timeout_ms=200, max_records=self.max_records)
                if fetched:
                    await self._settle(consumer, fetched, await self.route(producer, fetched))
        finally:
            self.assigned = False
            try:
                await self.settled()  # what was routed gets committed, even when this task is being cancelled
            finally:
                await consumer.stop()
                await producer.stop()

    async def route(
        self, producer: AIOKafkaProducer, fetched: dict[TopicPartition, list]
    ) -> list[asyncio.Future]:
        """Route a fetch and send its outputs; the deliveries are awaited by _settle, not here."""
        started = time.perf_counter()
        signed = self.policy.tenant_keys is not None
        records = [
            (r.value, Source(r.topic, r.partition, r.offset, signature_header(r.headers) if signed else None))
            for batch in fetched.values()
            for r in batch
        ]
        outputs = []
        for outgoing in self.policy.route_many(records):
            outputs.append(outgoing)
            if outgoing.shadow is not None:
                outputs.append(outgoing.shadow)
        deliveries = await self.produce(producer, outputs)
        ROUTE_BATCH_SECONDS.observe(time.perf_counter() - started)
        return deliveries

    async def _settle(
        self,
        consumer: AIOKafkaConsumer,
        fetched: dict[TopicPartition, list],
        deliveries: list[asyncio.Future],
    ) -> None:
        """Commit the batch once its outputs are delivered, after the batches before it, while the next batch
        is routed (the broker's acks overlap our routing)."""
        self._last = asyncio.create_task(self._deliver_then_commit(consumer, fetched, deliveries, self._last))
        self._settling.append(self._last)
        while self._settling and self._settling[0].done():
            await self._settling.popleft()
        if len(self._settling) > self.SETTLING_MAX:
            await asyncio.shield(self._settling[0])

    async def _deliver_then_commit(
        self,
        consumer: AIOKafkaConsumer,
        fetched: dict[TopicPartition, list],
        deliveries: list[asyncio.Future],
        previous: asyncio.Task[None] | None,
    ) -> None:
        if previous is not None:
            await asyncio.shield(previous)  # commits stay in fetch order
        try:
            await asyncio.gather(*deliveries)
        except Exception as exc:
            first = next(iter(fetched.values()))[0]
            crash_without_commit(exc, first)
        await self._commit(consumer, fetched)

    async def settled(self) -> None:
        """Every routed batch delivered and committed (before a rebalance takes partitions, and at stop). Each
        commit waits for the one before it, so the last one settles them all; shielded so a cancelled caller
        does not cancel the commits."""
        if self._last is not None:
            await asyncio.shield(self._last)

    async def produce(self, producer: AIOKafkaProducer, outputs: list[Outgoing]) -> list[asyncio.Future]:
        """Outputs appended to one record batch per (topic, partition), partitioned as Kafka's default
        partitioner would (murmur2 of the key; keyless records spread round-robin): a send() per record
        costs more Python than routing it."""
        deliveries: list[asyncio.Future] = []
        for topic, group in _by_topic(outputs).items():
            count = len(await producer.partitions_for(topic))
            for partition, records in by_partition(group, self._partitions(group, count)).items():
                deliveries += await send_records(producer, topic, partition, records)
        return deliveries

    def _partitions(self, group: list[Outgoing], count: int) -> list[int]:
        keys = [o.key for o in group]
        if None not in keys:  # the usual case: every output is keyed by its job_id
            return partitions_for(keys, count).tolist()  # type: ignore[arg-type]
        hashed = iter(partitions_for([k for k in keys if k is not None], count).tolist())
        spread = itertools.count(self._round_robin)
        chosen = [next(hashed) if key is not None else next(spread) % count for key in keys]
        self._round_robin = next(spread)
        return chosen

    async def _commit(self, consumer: AIOKafkaConsumer, fetched: dict[TopicPartition, list]) -> None:
        offsets = {tp: batch[-1].offset + 1 for tp, batch in fetched.items()}
        try:
            await consumer.commit(offsets)
        except (
            CommitFailedError,
            IllegalStateError,
        ) as exc:  # partitions moved: their new owner replays them
            log.warning("offsets not committed after a rebalance, the new owner re-routes them: %s", exc)

    def _consumer(self) -> AIOKafkaConsumer:
        kafka = self.settings.kafka
        return AIOKafkaConsumer(
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=self.max_records,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            session_timeout_ms=kafka.session_timeout_ms,
            heartbeat_interval_ms=max(500, kafka.session_timeout_ms // 5),
            **kafka.client_options(),
        )

    def _producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_batch_size=512 * 1024,
            **self.settings.kafka.client_options(),
        )


class _SettleBeforeRevoke(ConsumerRebalanceListener):
    """Partitions leave this process only after their routed batches are committed (no needless replays)."""

    def __init__(self, router: BatchRouter) -> None:
        self.router = router

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.router.settled()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None


async def send_records(
    producer: AIOKafkaProducer, topic: str, partition: int, records: list[Outgoing]
) -> list[asyncio.Future]:
    """One partition's records as record batches (a new one whenever the current is full)."""
    deliveries, builder = [], producer.create_batch()
    for outgoing in records:
        if builder.append(key=outgoing.key, value=outgoing.value, timestamp=None) is None:  # full: send it
            deliveries.append(await producer.send_batch(builder, topic, partition=partition))
            builder = producer.create_batch()
            builder.append(key=outgoing.key, value=outgoing.value, timestamp=None)
    deliveries.append(await producer.send_batch(builder, topic, partition=partition))
    return deliveries


def by_partition(group: list[Outgoing], partitions: list[int]) -> dict[int, list[Outgoing]]:
    out: dict[int, list[Outgoing]] = {}
    for outgoing, partition in zip(group, partitions, strict=False):
        bucket = out.get(partition)
        if bucket is None:
            bucket = out[partition] = []
        bucket.append(outgoing)
    return out


def _by_topic(outputs: list[Outgoing]) -> dict[str, list[Outgoing]]:
    groups: dict[str, list[Outgoing]] = {}
    for outgoing in outputs:
        groups.setdefault(outgoing.topic, []).append(outgoing)
    return groups


def crash_without_commit(exc: BaseException, message: RecordPosition) -> None:
    """A record we cannot produce must not be acked: a crashed Faust agent acks its events (and a
    crashed task must not commit), so exit at once,
    leaving this batch uncommitted; the restarted router replays it (at-least-once)."""
    log.critical(
        "cannot produce the output of %s[%s]@%s (%r); exiting so the batch replays after restart",
        message.topic,
        message.partition,
        message.offset,
        exc,
    )
    logging.shutdown()
    os._exit(70)
