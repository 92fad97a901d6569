"""The router's batch engine: the same RoutingPolicy, without Faust's per-event machinery on the hot path.

Faust's stream delivers records one event at a time through its conductor, channels and acking (about
100 us of Python per record here, a ceiling near 6-8k records/s on one core whatever the agent does). This
engine runs as a task inside the same Faust app (so the process keeps Faust's worker, timers and signal
handling) and is a stage of the consume-commit runtime (modelyard/core/runtime.py), which moves records in
whole fetches:

    getmany -> route the batch -> append the outputs to one record batch per (topic, partition) -> send those
            -> (while the next batch is routed) wait for all deliveries -> commit the batch's offsets

An offset is committed only once every output of every record before it is durable in Kafka
(at-least-once; a replay re-routes the same records to the same topics and downstream dedups on
job_id/attempt). A record that cannot be produced stops the process before the commit. Each batch's outputs
include its routed-jobs records (streams/routed_jobs.py), and the topic is read back whenever partitions are
assigned, before their records are routed.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import time
from typing import Protocol

from aiokafka import AIOKafkaProducer, TopicPartition
from threadpoolctl import threadpool_limits

from modelyard.core.kafka import consumer_for, make_producer
from modelyard.core.observability import ROUTE_BATCH_SECONDS
from modelyard.core.runtime import ConsumeCommit, Fetched, Receipt, Room
from modelyard.core.settings import KafkaSettings
from modelyard.core.signatures import signature_header
from modelyard.core.spend_feed import SpendFeed
from streams.partitioning import partitions_for
from streams.policy import Outgoing, RoutingPolicy, Source
from streams.routed_jobs import RoutedJobsFeed

log = logging.getLogger("modelyard.router")


class RecordPosition(Protocol):
    topic: str
    partition: int
    offset: int


class BatchRouter:
    SETTLING_MAX = 2  # batches routed but not yet delivered; the next waits for the oldest beyond this

    def __init__(
        self,
        kafka: KafkaSettings,
        policy: RoutingPolicy,
        group_id: str,
        batch_max: int,
        spend: SpendFeed | None = None,
    ) -> None:
        self.kafka = kafka
        self.policy = policy
        self.group_id = group_id
        self.max_records = batch_max
        self.spend = spend  # read to its end with the routed jobs, so budgets start from the sink's figures
        routed = policy.admission.routed
        self.routed_jobs = RoutedJobsFeed(kafka, routed) if routed is not None else None
        self.routed_jobs_read = asyncio.Event()  # cleared at each rebalance until the topic is read back
        self._round_robin = 0
        self._settling: collections.deque[asyncio.Task[bool]] = collections.deque()  # oldest first
        self._whole_fetch = Room(batch_max)
        self.runtime: ConsumeCommit | None = None

    @property
    def assigned(self) -> bool:
        """Started and consuming (readiness)."""
        return self.runtime is not None and self.runtime.consuming

    async def run(self) -> None:
        """Route until this task is cancelled (the Faust app stopping), then deliver and commit what was routed."""
        # numpy's BLAS threads would spin on every core for the novelty matmuls (a batch is small): one thread
        threadpool_limits(1, user_api="blas")
        self.producer = make_producer(self.kafka, max_batch_size=512 * 1024)
        consumer = consumer_for(
            self.kafka,
            self.group_id,
            self.max_records,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        self.runtime = ConsumeCommit(
            self,
            consumer,
            self.producer,
            [self.kafka.jobs_topic],
            on_assigned=self.read_back,
            on_revoke=self.unread,
        )
        try:
            await self.runtime.run(asyncio.Event())
        finally:
            if self.routed_jobs is not None:
                await self.routed_jobs.stop()

    async def room(self) -> Room:
        """A whole fetch, once at most SETTLING_MAX routed batches wait for their deliveries."""
        while self._settling and self._settling[0].done():
            self._settling.popleft()
        if len(self._settling) > self.SETTLING_MAX:
            await asyncio.shield(self._settling[0])
        return self._whole_fetch

    async def take(self, fetched: Fetched) -> list[Receipt]:
        """Route a fetch and send its outputs; the runtime commits it once every delivery is acknowledged, while
        the next batch is routed (the broker's acks overlap our routing)."""
        if not fetched:
            return []
        await self.routed_jobs_read.wait()
        first = next(iter(fetched.values()))[0]
        delivered = asyncio.create_task(_delivered(await self.route(self.producer, fetched), first))
        self._settling.append(delivered)
        return [
            Receipt(tp, batch[0].offset, batch[-1].offset + 1, delivered) for tp, batch in fetched.items()
        ]

    async def route(self, producer: AIOKafkaProducer, fetched: Fetched) -> list[asyncio.Future]:
        """Route a fetch and send its outputs; the deliveries are awaited by the batch's settling task, not here."""
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
        outputs += self.policy.routed_records()
        deliveries = await self.produce(producer, outputs)
        ROUTE_BATCH_SECONDS.observe(time.perf_counter() - started)
        return deliveries

    async def read_back(self, assigned: set[TopicPartition]) -> None:
        """Before the assigned partitions are routed: every job id routed before (by any router) and the
        sink's spend figures are read back."""
        if self.routed_jobs is not None:
            await self.routed_jobs.catch_up()
        if self.spend is not None:
            await self.spend.catch_up()
        self.routed_jobs_read.set()

    async def unread(self, revoked: set[TopicPartition]) -> None:
        """A rebalance holds routing until the routed jobs are read back again."""
        self.routed_jobs_read.clear()

    async def drain(self, partitions: set[TopicPartition] | None) -> None:
        """Every routed batch delivered (before a rebalance takes partitions, and at stop); shielded so a
        cancelled caller does not cancel the deliveries."""
        if self._settling:
            await asyncio.shield(asyncio.gather(*self._settling))

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


async def _delivered(deliveries: list[asyncio.Future], first: RecordPosition) -> bool:
    """True once Kafka acknowledged every output of a routed batch; a refused one ends the process."""
    try:
        await asyncio.gather(*deliveries)
    except Exception as exc:
        crash_without_commit(exc, first)
    return True


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
