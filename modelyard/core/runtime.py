"""The consume-commit runtime: the one loop the router, the pools and the sink run.

    fetch as many records as the stage has room for
      -> stage.take(records): the stage starts its work and hands back one receipt per span of offsets, whose
         future resolves once what the stage made of those records is durable
      -> commit each partition up to its oldest span not yet durable (OffsetTracker)

The order is Quix Streams' Checkpoint.commit() (flush the sinks, then the producer, then commit the offsets): a
receipt resolves only after the stage's own writes are durable (ClickHouse accepted the batch, Kafka acknowledged
every record produced for it), and only then may its offsets be committed. Commits run in a task of their own,
at most one every `commit_interval_s` (0: as soon as something became durable; otherwise the first one interval
after the start), so a commit never holds up a fetch. A receipt resolves to True (durable), to False (left for a replay: the process is stopping and nothing
was sent for it; nothing is committed past it) or to an exception, which is fatal: the runtime stops fetching,
drains, commits what is durable and raises it.

Rebalances: `on_assigned` runs before the records of newly assigned partitions are fetched (the router reads
back the job ids routed before), `on_revoke` first when partitions are revoked.

Drain: on stop (the `stop` event: SIGTERM; or the task cancelled, as the router's Faust app stops its tasks) the
stage settles everything it took (`drain(None)`), the runtime commits what became durable, then stops the
clients. On a revoke (a rebalance takes partitions away) the stage settles those partitions (`drain(revoked)`)
and the runtime commits and forgets them, so their next owner starts where this process finished. A receipt
that resolves after its partition was revoked is ignored: the next owner replays those records.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Any, NamedTuple, Protocol

from aiokafka import ConsumerRebalanceListener, TopicPartition

from modelyard.core._exceptions import BrokerError
from modelyard.core.kafka import Startable, kafka_errors
from modelyard.core.offsets import OffsetTracker

log = logging.getLogger("modelyard.runtime")
Fetched = dict[TopicPartition, list[Any]]  # records (aiokafka ConsumerRecords) per partition, in offset order
COMMIT_RETRY_S = 0.5  # after a refused commit (a rebalance in progress), try again this much later
Rebalanced = Callable[[set[TopicPartition]], Awaitable[None]]  # a stage's hook on assigned/revoked partitions


class Room(NamedTuple):
    records: int  # how many records to fetch now (0: none, the stage is full)
    wait_s: float | None = None  # how long the fetch may wait for them (None: the runtime's fetch timeout)


class Receipt(NamedTuple):
    partition: TopicPartition
    first: int  # the span's first offset
    end: int  # one past its last offset
    durable: asyncio.Future[bool]


class Stage(Protocol):
    """What the router, a pool and the sink each do with the records the runtime fetches for them."""

    async def room(self) -> Room:
        """How many records to fetch now, and how long to wait for them; 0 records fetches none (the stage is
        full: it may wait briefly first). A stage may steer its consumer here (a pool's read-ahead seeks and
        pauses partitions), and stops the runtime by raising."""
        ...

    async def take(self, fetched: Fetched) -> Iterable[Receipt]:
        """Start work on a fetch (an empty one when nothing came within the fetch timeout: time-based work runs
        then). Each record of the fetch belongs to exactly one receipt's span, and receipts name no other
        record; unless the stage's own tracker (`offsets`) holds its commit below the records it has no receipt
        for yet (a pool's read-ahead skips records and re-reads them later)."""
        ...

    async def drain(self, partitions: set[TopicPartition] | None) -> None:
        """Settle what was taken of these partitions (None: of all, the process is stopping): as many receipts as
        can be resolved are, before the runtime commits."""
        ...


class Consumer(Startable, Protocol):
    """The part of AIOKafkaConsumer the runtime uses."""

    def subscribe(self, topics: list[str], listener: ConsumerRebalanceListener) -> None: ...

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int, max_records: int) -> Fetched: ...

    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...


class ConsumeCommit:
    def __init__(
        self,
        stage: Stage,
        consumer: Consumer,
        producer: Startable,
        topics: list[str],
        *,
        fetch_timeout_s: float = 0.2,
        commit_interval_s: float = 0.0,
        offsets: OffsetTracker | None = None,
        on_assigned: Rebalanced | None = None,
        on_revoke: Rebalanced | None = None,
    ) -> None:
        self.stage = stage
        self.consumer = consumer
        self.producer = producer
        self.topics = topics
        self.fetch_timeout_ms = int(fetch_timeout_s * 1000)
        self.commit_interval_s = commit_interval_s
        self.on_assigned = on_assigned  # awaited before the assigned partitions' records are fetched
        self.on_revoke = on_revoke  # awaited first when partitions are revoked, before they are drained
        self.offsets = offsets if offsets is not None else OffsetTracker()
        self.consuming = False  # clients started, fetching (readiness)
        self.fatal: BaseException | None = None
        self._generation: dict[TopicPartition, int] = {}  # bumped on revoke: older receipts no longer count
        self._durable = asyncio.Event()  # something became durable since the last commit
        self._committing = asyncio.Lock()

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch, hand over, commit until `stop` is set (or the task is cancelled); then drain and commit."""
        self.consumer.subscribe(self.topics, listener=_DrainOnRevoke(self))
        try:
            with kafka_errors("start the producer"):
                await self.producer.start()
            with kafka_errors("start the consumer"):
                await self.consumer.start()
            await self._consume_then_drain(stop)
        finally:
            await self.consumer.stop()
            await self.producer.stop()
        if self.fatal is not None:
            raise self.fatal

    async def _consume_then_drain(self, stop: asyncio.Event) -> None:
        committer = asyncio.create_task(self._commit_when_durable())
        self.consuming = True
        try:
            await self._consume(stop)
        finally:
            self.consuming = False
            committer.cancel()
            await self._drain(None)
            await self.commit()

    async def _consume(self, stop: asyncio.Event) -> None:
        while not stop.is_set() and self.fatal is None:
            records, wait_s = await self.stage.room()
            if records <= 0:
                continue
            wait_ms = self.fetch_timeout_ms if wait_s is None else int(wait_s * 1000)
            with kafka_errors("fetch records"):
                fetched = await self.consumer.getmany(timeout_ms=wait_ms, max_records=records)
            generations = {tp: self._generation.get(tp, 0) for tp in fetched}
            self._track(await self.stage.take(fetched), generations)

    def _track(self, receipts: Iterable[Receipt], generations: dict[TopicPartition, int]) -> None:
        started, current, settled = self.offsets.started, self._generation, self._settled  # per record: lean
        for tp, first, end, durable in receipts:
            generation = generations.get(tp, -1)
            if generation != current.get(tp, 0):
                continue  # revoked while the stage took the fetch: the partition's next owner replays it
            started(tp, first, end)
            durable.add_done_callback(partial(settled, tp, first, generation))

    def _settled(
        self, tp: TopicPartition, first: int, generation: int, durable: asyncio.Future[bool]
    ) -> None:
        try:
            outcome = durable.result()
        except asyncio.CancelledError:
            return
        except BaseException as error:
            if self.fatal is None:
                self.fatal = error
            return
        if outcome and self._generation.get(tp, 0) == generation:
            self.offsets.finished(tp, first)
            self._durable.set()

    async def _commit_when_durable(self) -> None:
        """With commit_interval_s, at most one commit per interval, the first one interval after the start (a
        pool's: a crash inside it replays what was done since); draining commits at once."""
        while True:
            if self.commit_interval_s:
                await asyncio.sleep(self.commit_interval_s)
            await self._durable.wait()
            self._durable.clear()
            if not await self.commit():
                self._durable.set()
                await asyncio.sleep(COMMIT_RETRY_S)

    async def commit(self) -> bool:
        """Commit every partition up to its oldest span not yet durable. False when Kafka refused (a rebalance
        in progress): the next commit carries the offsets, or the partitions' next owner replays them."""
        async with self._committing:
            ready = self.offsets.committable()
            if not ready:
                return True
            try:
                with kafka_errors("commit offsets"):
                    await self.consumer.commit(ready)
            except BrokerError as exc:
                log.warning("offsets not committed yet: %s", exc)
                return False
            self.offsets.mark_committed(ready)
            return True

    async def _drain(self, partitions: set[TopicPartition] | None) -> None:
        await self.stage.drain(partitions)
        await asyncio.sleep(0)  # the receipts' callbacks of what the drain resolved run before the commit

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        """Before a rebalance hands `partitions` to another member: settle them, commit, forget them."""
        if not partitions:
            return
        await self._drain(partitions)
        await self.commit()
        for tp in partitions:
            self._generation[tp] = self._generation.get(tp, 0) + 1
        self.offsets.forget(partitions)


class _DrainOnRevoke(ConsumerRebalanceListener):
    def __init__(self, runtime: ConsumeCommit) -> None:
        self.runtime = runtime

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if self.runtime.on_revoke is not None:
            await self.runtime.on_revoke(set(revoked))
        await self.runtime.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))
        if self.runtime.on_assigned is not None:
            await self.runtime.on_assigned(set(assigned))
