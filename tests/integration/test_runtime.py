"""The consume-commit runtime against a real broker, with a stage of its own whose "durable store" is a list:
nothing is committed before the stage says it is durable, a rebalance hands partitions over with their work
settled and committed (the next owner replays nothing), and a stop drains and commits everything taken."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import NewTopic

from modelyard.core.kafka import consumer_for, create_topics, make_admin, make_producer
from modelyard.core.runtime import ConsumeCommit, Fetched, Receipt, Room
from modelyard.core.settings import Settings
from modelyard.core.topics import group_lag

pytestmark = pytest.mark.integration
PARTITIONS = 4


class HoldingStage:
    """Writes each fetched span to `store` once let through: at once (hold=False), or only when drained."""

    def __init__(self, store: list[tuple[int, int]], hold: bool) -> None:
        self.store = store
        self.hold = hold
        self.taken = 0
        self.waiting: dict[TopicPartition, list[tuple[asyncio.Event, asyncio.Task[bool]]]] = {}

    async def room(self) -> Room:
        return Room(100)

    async def take(self, fetched: Fetched) -> list[Receipt]:
        receipts = []
        for tp, records in fetched.items():
            gate = asyncio.Event()
            if not self.hold:
                gate.set()
            task = asyncio.create_task(self._write(gate, [(tp.partition, r.offset) for r in records]))
            self.waiting.setdefault(tp, []).append((gate, task))
            receipts.append(Receipt(tp, records[0].offset, records[-1].offset + 1, task))
            self.taken += len(records)
        return receipts

    async def _write(self, gate: asyncio.Event, rows: list[tuple[int, int]]) -> bool:
        await gate.wait()
        self.store.extend(rows)
        return True

    async def drain(self, partitions: set[TopicPartition] | None) -> None:
        settling = [
            (gate, task)
            for tp, spans in self.waiting.items()
            if partitions is None or tp in partitions
            for gate, task in spans
        ]
        for gate, _ in settling:
            gate.set()
        await asyncio.gather(*(task for _, task in settling))


async def produce(settings: Settings, topic: str, count: int, start: int = 0) -> None:
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        sent = [
            await producer.send(topic, f"r{n}".encode(), key=f"k{n}".encode()) for n in range(start, count)
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def topic_of(settings: Settings) -> str:
    topic = settings.kafka.topic("runtime")
    admin = make_admin(settings.kafka)
    await admin.start()
    try:
        await create_topics(admin, [NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()
    return topic


def start(settings: Settings, topic: str, stage: HoldingStage) -> tuple[asyncio.Task[None], asyncio.Event]:
    consumer = consumer_for(settings.kafka, settings.group_id("runtime"), max_records=50)
    runtime = ConsumeCommit(stage, consumer, make_producer(settings.kafka), [topic], fetch_timeout_s=0.1)
    stop = asyncio.Event()
    return asyncio.create_task(runtime.run(stop)), stop


async def until(condition, what: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


def test_nothing_is_committed_before_it_is_durable_and_a_stop_drains_everything(
    pipeline_settings: Settings,
) -> None:
    async def scenario() -> None:
        settings, store = pipeline_settings, []
        topic = await topic_of(settings)
        await produce(settings, topic, 200)
        stage = HoldingStage(store, hold=True)
        running, stop = start(settings, topic, stage)

        async def all_taken() -> bool:
            return stage.taken == 200

        await until(all_taken, "the stage never got all 200 records")
        await asyncio.sleep(1.0)  # commits had every chance to run
        assert store == [] and await group_lag(settings.kafka, settings.group_id("runtime"), [topic]) == 200
        stop.set()
        await running
        assert sorted(store) == sorted(set(store)) and len(store) == 200
        assert await group_lag(settings.kafka, settings.group_id("runtime"), [topic]) == 0

    asyncio.run(scenario())


def test_a_rebalance_hands_partitions_over_settled_so_the_next_owner_replays_nothing(
    pipeline_settings: Settings,
) -> None:
    async def scenario() -> None:
        settings, store = pipeline_settings, []
        topic = await topic_of(settings)
        await produce(settings, topic, 400)
        first = HoldingStage(
            store, hold=True
        )  # writes only when drained: a revoke must write and commit first
        first_running, first_stop = start(settings, topic, first)

        async def first_took_all() -> bool:
            return first.taken == 400

        await until(first_took_all, "the first member never got all 400 records")
        assert store == []
        second = HoldingStage(store, hold=False)
        second_running, second_stop = start(settings, topic, second)

        async def handed_over() -> bool:
            return len(store) == 400

        await until(handed_over, "the revoke did not write what the first member held")
        await produce(settings, topic, 800, start=400)  # both members own partitions now

        async def all_taken() -> bool:
            return first.taken + second.taken >= 800

        await until(all_taken, "the two members never took all 800 records")
        for member_stop in (first_stop, second_stop):
            member_stop.set()
        await asyncio.gather(first_running, second_running)
        assert len(set(store)) == 800
        duplicates = [row for row, times in Counter(store).items() if times > 1]
        assert duplicates == [], f"the next owner replayed what the revoke had committed: {duplicates[:5]}"
        assert (
            second.taken > 0 and await group_lag(settings.kafka, settings.group_id("runtime"), [topic]) == 0
        )

    asyncio.run(scenario())
