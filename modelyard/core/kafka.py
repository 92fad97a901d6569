"""The one door to Kafka: every aiokafka client modelyard runs is built here from settings (security options
included), and aiokafka's errors become BrokerError here (`kafka_errors`), as httpx maps its transport's errors
in one context manager. Outside this module nothing catches an aiokafka exception (tests/unit/test_doors.py)."""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from modelyard.core._exceptions import BrokerError
from modelyard.core.settings import Settings

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


async def started(client: Startable, settings: Settings) -> None:
    """Start a Kafka client; an unreachable broker is one BrokerError line (and no unclosed-client noise)."""
    try:
        with kafka_errors(f"reach {settings.kafka.bootstrap_servers}"):
            await client.start()
    except BrokerError:
        await client.stop()
        raise


def group_name(settings: Settings, role: str) -> str:
    """The consumer group of a role (`router`, `pool.slm`, `sink`): app_id-prefixed, so apps never share one."""
    return f"{settings.app_id}.{role}"


def consumer_for(
    settings: Settings, group_id: str, max_records: int = 500, **tuning: Any
) -> AIOKafkaConsumer:
    """A manually committed group consumer, not yet subscribed (the consume-commit runtime subscribes it with
    its rebalance listener): offsets move only after the work for them is durable downstream. `tuning`: fetch
    sizes and the like (the router fetches larger batches)."""
    return AIOKafkaConsumer(
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=max_records,
        session_timeout_ms=settings.kafka.session_timeout_ms,
        heartbeat_interval_ms=max(500, settings.kafka.session_timeout_ms // 5),
        **settings.kafka.client_options(),
        **tuning,
    )


def make_consumer(
    settings: Settings,
    topic: str | list[str],
    group: str,
    listener: ConsumerRebalanceListener | None = None,
    max_records: int = 500,
) -> AIOKafkaConsumer:
    """A group consumer of `<app_id>.<group>`, subscribed to `topic`."""
    consumer = consumer_for(settings, group_name(settings, group), max_records)
    consumer.subscribe([topic] if isinstance(topic, str) else topic, listener=listener)
    return consumer


def make_reader(settings: Settings, *topics: str, offset_reset: str = "earliest") -> AIOKafkaConsumer:
    """A group-less consumer of every partition of `topics`: it reads, never commits (spend feed, tools)."""
    return AIOKafkaConsumer(
        *topics,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset=offset_reset,
        **settings.kafka.client_options(),
    )


def make_producer(settings: Settings, **tuning: Any) -> AIOKafkaProducer:
    """acks=all with idempotence: a retried send never duplicates within the producer session. `tuning`:
    batch sizes and the like (the router appends whole record batches)."""
    options: dict[str, Any] = {"linger_ms": 5, "max_batch_size": 256 * 1024} | tuning
    return AIOKafkaProducer(acks="all", enable_idempotence=True, **options, **settings.kafka.client_options())


def make_admin(settings: Settings, **options: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**settings.kafka.client_options(), **options)


async def create_topics(admin: AIOKafkaAdminClient, topics: list[NewTopic]) -> None:
    """Create topics; one that another process created meanwhile is no error."""
    with contextlib.suppress(TopicAlreadyExistsError):
        await admin.create_topics(topics)
