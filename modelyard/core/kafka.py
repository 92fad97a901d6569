"""The one door to Kafka: every aiokafka client modelyard runs is built here from the Kafka settings (security
options included), and aiokafka's errors become BrokerError here (`kafka_errors`), as httpx maps its transport's
errors in one context manager. Outside this module nothing catches an aiokafka exception (tests/unit/test_doors.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.structs import ConsumerRecord

from modelyard.core._exceptions import BrokerError
from modelyard.core.settings import KafkaSettings

FOREIGN = (KafkaError, OSError)  # OSError: a refused or dropped connection before aiokafka wraps it


class kafka_errors:  # a context manager, named like one (contextlib.suppress)
    """`with kafka_errors("commit offsets"): ...` turns aiokafka's errors into BrokerError (cause kept).

    A class rather than a @contextmanager generator: it wraps every produce of a pool's results, and a plain
    __exit__ costs a third of a generator's (an instance holds no state: hot paths make theirs once)."""

    __slots__ = ("doing",)

    def __init__(self, doing: str) -> None:
        self.doing = doing

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and isinstance(exc, FOREIGN):
            raise BrokerError(f"Kafka: cannot {self.doing}: {exc!r}") from exc


class Startable(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def started(client: Startable, kafka: KafkaSettings) -> None:
    """Start a Kafka client; an unreachable broker is one BrokerError line (and no unclosed-client noise)."""
    try:
        with kafka_errors(f"reach {kafka.bootstrap_servers}"):
            await client.start()
    except BrokerError:
        await client.stop()
        raise


def consumer_for(
    kafka: KafkaSettings, group_id: str, max_records: int = 500, **tuning: Any
) -> AIOKafkaConsumer:
    """A manually committed group consumer of committed data, not yet subscribed (the consume-commit runtime
    subscribes it with its rebalance listener): offsets move only after the work for them is durable
    downstream. `tuning`: fetch sizes and waits (the router fetches larger batches; a pool that seeks keeps
    the broker's idle wait short, since a seek waits for the fetch in flight)."""
    return AIOKafkaConsumer(
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=max_records,
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=max(500, kafka.session_timeout_ms // 5),
        **kafka.client_options(),
        **tuning,
    )


def make_consumer(
    kafka: KafkaSettings,
    topic: str | list[str],
    group_id: str,
    listener: ConsumerRebalanceListener | None = None,
    max_records: int = 500,
    fetch_max_wait_ms: int = 500,
) -> AIOKafkaConsumer:
    """A group consumer subscribed to `topic`. `fetch_max_wait_ms`: how long the broker may hold a fetch with
    no data (a seek waits for it to return)."""
    consumer = consumer_for(kafka, group_id, max_records, fetch_max_wait_ms=fetch_max_wait_ms)
    consumer.subscribe([topic] if isinstance(topic, str) else topic, listener=listener)
    return consumer


def make_reader(
    kafka: KafkaSettings, *topics: str, offset_reset: str = "earliest", **tuning: Any
) -> AIOKafkaConsumer:
    """A group-less consumer of every partition of `topics` (committed data); it reads, never commits."""
    return AIOKafkaConsumer(
        *topics,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset=offset_reset,
        isolation_level="read_committed",
        **kafka.client_options(),
        **tuning,
    )


def make_producer(kafka: KafkaSettings, **tuning: Any) -> AIOKafkaProducer:
    """acks=all with idempotence: a retried send never duplicates within the producer session. `tuning`:
    batch sizes and the like (the router appends whole record batches)."""
    options: dict[str, Any] = {"linger_ms": 5, "max_batch_size": 256 * 1024} | tuning
    return AIOKafkaProducer(acks="all", enable_idempotence=True, **options, **kafka.client_options())


def make_admin(kafka: KafkaSettings, **options: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**kafka.client_options(), **options)


async def create_topics(admin: AIOKafkaAdminClient, topics: list[NewTopic]) -> None:
    """Create topics; one that another process created meanwhile is no error."""
    with contextlib.suppress(TopicAlreadyExistsError):
        await admin.create_topics(topics)


async def assigned_partitions(consumer: AIOKafkaConsumer, timeout: float = 30.0) -> set[TopicPartition]:
    """Partitions of a started group-less consumer (it takes them all once metadata arrives)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not consumer.assignment():
        if asyncio.get_running_loop().time() > deadline:
            raise BrokerError(f"no partitions assigned for {consumer.subscription()}")
        await asyncio.sleep(0.05)
    return set(consumer.assignment())


async def read_to_end(consumer: AIOKafkaConsumer, apply: Callable[[ConsumerRecord], object]) -> None:
    """Every record of a started group-less consumer's partitions written before this call, in order."""
    with kafka_errors("read a topic to its end"):
        ends = await consumer.end_offsets(list(await assigned_partitions(consumer)))
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                for record in records:
                    apply(record)
