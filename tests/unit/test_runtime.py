"""The consume-commit runtime on its own: a recording stage and an in-memory consumer (our runtime's Consumer
protocol, no Kafka client). What it must do: commit each partition only up to its oldest span not yet durable,
never past a span left for a replay, drain on stop, on cancellation and on revoke, and stop on a fatal receipt.
The same runtime against a real broker is tests/integration/test_runtime.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError

from modelyard.core._exceptions import BrokerError
from modelyard.core.runtime import ConsumeCommit, Fetched, Receipt, Room

P0, P1 = TopicPartition("jobs", 0), TopicPartition("jobs", 1)


class Record:
    def __init__(self, tp: TopicPartition, offset: int) -> None:
        self.topic, self.partition, self.offset = tp.topic, tp.partition, offset


def fetch(tp: TopicPartition, first: int, count: int) -> Fetched:
    return {tp: [Record(tp, offset) for offset in range(first, first + count)]}


class MemoryConsumer:
    """Hands out queued fetches; records commits (or refuses the next `refuse` of them, as Kafka does while a
    rebalance is in progress)."""

    def __init__(self, fetches: Iterable[Fetched] = ()) -> None:
        self.fetches = list(fetches)
        self.commits: list[dict[TopicPartition, int]] = []
        self.events: list[str] = []
        self.refuse = 0
        self.listener = None

    def subscribe(self, topics: list[str], listener: object) -> None:
        self.listener = listener

    async def start(self) -> None:
        self.events.append("consumer started")

    async def stop(self) -> None:
        self.events.append("consumer stopped")

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int, max_records: int) -> Fetched:
        if self.fetches:
            return self.fetches.pop(0)
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.refuse:
            self.refuse -= 1
            raise CommitFailedError("rebalance in progress")
        self.commits.append(dict(offsets))
        self.events.append(f"commit {sorted((tp.partition, o) for tp, o in offsets.items())}")

    def committed(self, tp: TopicPartition) -> int | None:
        positions = [c[tp] for c in self.commits if tp in c]
        return positions[-1] if positions else None


class Producer:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def start(self) -> None:
        self.events.append("producer started")

    async def stop(self) -> None:
        self.events.append("producer stopped")


class RecordingStage:
    """One receipt per fetched partition; the test decides when (and how) each span becomes durable."""

    def __init__(self, events: list[str], room: int = 100) -> None:
        self.events = events
        self.free = room
        self.spans: dict[tuple[int, int], asyncio.Future[bool]] = {}  # (partition, first offset) -> durable
        self.drained: list[set[TopicPartition] | None] = []
        self.finish_on_drain = True

    async def room(self) -> Room:
        if self.free <= 0:
            await asyncio.sleep(0.01)
        return Room(self.free)

    async def take(self, fetched: Fetched) -> list[Receipt]:
        receipts = []
        for tp, records in fetched.items():
            durable = asyncio.get_running_loop().create_future()
            self.spans[(tp.partition, records[0].offset)] = durable
            receipts.append(Receipt(tp, records[0].offset, records[-1].offset + 1, durable))
        return receipts

    def finish(self, partition: int, first: int, outcome: bool | BaseException = True) -> None:
        durable = self.spans[(partition, first)]
        if isinstance(outcome, BaseException):
            durable.set_exception(outcome)
        else:
            durable.set_result(outcome)

    async def drain(self, partitions: set[TopicPartition] | None) -> None:
        self.drained.append(partitions)
        self.events.append(
            f"drain {'all' if partitions is None else sorted(tp.partition for tp in partitions)}"
        )
        if self.finish_on_drain:
            for (partition, _), durable in self.spans.items():
                if not durable.done() and (
                    partitions is None or TopicPartition("jobs", partition) in partitions
                ):
                    durable.set_result(True)


def runtime(
    fetches: Iterable[Fetched], **options: float
) -> tuple[ConsumeCommit, MemoryConsumer, RecordingStage]:
    consumer = MemoryConsumer(fetches)
    stage = RecordingStage(consumer.events)
    options = {"fetch_timeout_s": 0.01} | options
    return ConsumeCommit(stage, consumer, Producer(consumer.events), ["jobs"], **options), consumer, stage


async def until(condition, timeout: float = 2.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


def test_commits_only_up_to_the_oldest_span_not_yet_durable() -> None:
    async def scenario() -> None:
        loop, consumer, stage = runtime([fetch(P0, 0, 3), fetch(P0, 3, 2), fetch(P1, 0, 4)])
        stop = asyncio.Event()
        running = asyncio.create_task(loop.run(stop))
        await until(lambda: len(stage.spans) == 3)
        stage.finish(0, 3)  # the later span of P0 first: nothing of P0 may be committed past offset 0
        stage.finish(1, 0)
        await until(lambda: consumer.committed(P1) == 4)
        assert consumer.committed(P0) in (None, 0)
        stage.finish(0, 0)
        await until(lambda: consumer.committed(P0) == 5)
        stop.set()
        await running

    asyncio.run(scenario())


def test_a_span_left_for_a_replay_is_never_committed_past() -> None:
    async def scenario() -> None:
        loop, consumer, stage = runtime([fetch(P0, 0, 2), fetch(P0, 2, 2)])
        stage.finish_on_drain = False
        stop = asyncio.Event()
        running = asyncio.create_task(loop.run(stop))
        await until(lambda: len(stage.spans) == 2)
        stage.finish(0, 0, outcome=False)  # e.g. released unanswered at stop: it must replay
        stage.finish(0, 2)
        await asyncio.sleep(0.05)
        stop.set()
        await running
        assert consumer.committed(P0) in (None, 0)

    asyncio.run(scenario())


def test_stop_drains_then_commits_then_stops_the_clients() -> None:
    async def scenario() -> None:
        loop, consumer, stage = runtime([fetch(P0, 0, 3), fetch(P1, 0, 2)])
        stop = asyncio.Event()
        running = asyncio.create_task(loop.run(stop))
        await until(lambda: len(stage.spans) == 2)
        stop.set()
        await running
        assert stage.drained == [None]
        events = consumer.events
        assert events[:2] == ["producer started", "consumer started"]
        assert events[-4:] == ["drain all", "commit [(0, 3), (1, 2)]", "consumer stopped", "producer stopped"]
        assert not loop.consuming

    asyncio.run(scenario())


def test_a_cancelled_runtime_still_drains_and_commits() -> None:
    """The router's Faust app stops its tasks by cancelling them: what was routed is committed all the same."""

    async def scenario() -> None:
        loop, consumer, stage = runtime([fetch(P0, 0, 3)])
        running = asyncio.create_task(loop.run(asyncio.Event()))
        await until(lambda: len(stage.spans) == 1)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert consumer.committed(P0) == 3 and consumer.events[-2:] == [
            "consumer stopped",
            "producer stopped",
        ]

    asyncio.run(scenario())


def test_revoke_drains_those_partitions_commits_and_ignores_their_late_receipts() -> None:
    async def scenario() -> None:
        loop, consumer, stage = runtime([fetch(P0, 0, 3), fetch(P1, 0, 3)])
        stage.finish_on_drain = False
        stop = asyncio.Event()
        running = asyncio.create_task(loop.run(stop))
        await until(lambda: len(stage.spans) == 2)
        stage.finish(1, 0)
        await consumer.listener.on_partitions_revoked({P0, P1})  # type: ignore[union-attr]
        assert stage.drained == [{P0, P1}]
        assert consumer.committed(P1) == 3 and consumer.committed(P0) in (None, 0)
        stage.finish(0, 0)  # too late: P0 belongs to another member now, which replays it
        await asyncio.sleep(0.05)
        assert consumer.committed(P0) in (None, 0)
        stop.set()
        await running
        assert consumer.committed(P0) in (None, 0)

    asyncio.run(scenario())


def test_revoke_with_nothing_assigned_yet_does_nothing() -> None:
    async def scenario() -> None:
        loop, consumer, stage = runtime([])
        await loop.revoked(set())
        assert stage.drained == [] and consumer.commits == []

    asyncio.run(scenario())


def test_a_fatal_receipt_stops_fetching_drains_commits_what_is_durable_and_raises() -> None:
    async def scenario() -> None:
        loop, consumer, stage = runtime([fetch(P0, 0, 2), fetch(P1, 0, 2), fetch(P1, 2, 2)])
        stage.finish_on_drain = False
        running = asyncio.create_task(loop.run(asyncio.Event()))
        await until(lambda: len(stage.spans) >= 2)
        stage.finish(1, 0)
        stage.finish(0, 0, outcome=BrokerError("Kafka: cannot produce a result"))
        with pytest.raises(BrokerError, match="cannot produce"):
            await running
        assert stage.drained == [None]
        assert consumer.committed(P1) == 2 and consumer.committed(P0) in (None, 0)

    asyncio.run(scenario())


def test_a_refused_commit_is_retried_and_kafka_errors_stay_behind_the_door() -> None:
    async def scenario() -> None:
        loop, consumer, stage = runtime([fetch(P0, 0, 2)])
        consumer.refuse = 1
        stop = asyncio.Event()
        running = asyncio.create_task(loop.run(stop))
        await until(lambda: len(stage.spans) == 1)
        stage.finish(0, 0)
        assert await loop.commit() is False  # CommitFailedError became a warning, the offsets stay pending
        await until(lambda: consumer.committed(P0) == 2)
        stop.set()
        await running

    asyncio.run(scenario())


def test_a_full_stage_is_not_fetched_for() -> None:
    async def scenario() -> None:
        loop, consumer, stage = runtime([fetch(P0, 0, 2)])
        stage.free = 0
        stop = asyncio.Event()
        running = asyncio.create_task(loop.run(stop))
        await asyncio.sleep(0.05)
        assert consumer.fetches and not stage.spans
        stage.free = 10
        await until(lambda: len(stage.spans) == 1)
        stop.set()
        await running

    asyncio.run(scenario())


def test_commits_are_spaced_by_the_commit_interval() -> None:
    async def scenario() -> None:
        loop, consumer, stage = runtime([fetch(P0, n, 1) for n in range(6)], commit_interval_s=0.3)
        stop = asyncio.Event()
        running = asyncio.create_task(loop.run(stop))
        await until(lambda: len(stage.spans) == 6)
        for first in range(6):
            stage.finish(0, first)
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert len(consumer.commits) <= 2  # six spans durable within 0.2 s: at most two commits
        stop.set()
        await running
        assert consumer.committed(P0) == 6

    asyncio.run(scenario())


def test_with_a_commit_interval_the_first_commit_waits_one_interval() -> None:
    """A pool's: a process killed within the first interval after its calls replays them (nothing committed)."""

    async def scenario() -> None:
        loop, consumer, stage = runtime([fetch(P0, 0, 2)], commit_interval_s=0.5)
        stop = asyncio.Event()
        running = asyncio.create_task(loop.run(stop))
        await until(lambda: len(stage.spans) == 1)
        stage.finish(0, 0)
        await asyncio.sleep(0.2)
        assert consumer.commits == []
        await until(lambda: consumer.committed(P0) == 2)
        stop.set()
        await running

    asyncio.run(scenario())


def test_rebalance_hooks_run_around_the_drain() -> None:
    async def scenario() -> None:
        consumer = MemoryConsumer([])
        stage = RecordingStage(consumer.events)

        async def hook(name: str, partitions: set[TopicPartition]) -> None:
            consumer.events.append(f"{name} {sorted(tp.partition for tp in partitions)}")

        loop = ConsumeCommit(
            stage,
            consumer,
            Producer(consumer.events),
            ["jobs"],
            fetch_timeout_s=0.01,
            on_assigned=lambda tps: hook("assigned", tps),
            on_revoke=lambda tps: hook("revoking", tps),
        )
        stop = asyncio.Event()
        running = asyncio.create_task(loop.run(stop))
        await until(lambda: loop.consuming)
        await consumer.listener.on_partitions_assigned({P0, P1})  # type: ignore[union-attr]
        await consumer.listener.on_partitions_revoked({P1})  # type: ignore[union-attr]
        stop.set()
        await running
        assert consumer.events[2:5] == ["assigned [0, 1]", "revoking [1]", "drain [1]"]

    asyncio.run(scenario())
