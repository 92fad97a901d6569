"""aiokafka consumers and producers configured from settings (security options included)."""

from __future__ import annotations

from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.structs import ConsumerRecord

from modelyard.core.settings import KafkaSettings
from modelyard.core.topics import assigned_partitions


def make_consumer(
    kafka: KafkaSettings,
    topic: str | list[str],
    group_id: str,
    listener: ConsumerRebalanceListener | None = None,
    max_records: int = 500,
    fetch_max_wait_ms: int = 500,
) -> AIOKafkaConsumer:
    """A manually committed consumer: offsets move only after the work for them is durable downstream.
    `fetch_max_wait_ms`: how long the broker may hold a fetch with no data (a seek waits for it to return)."""
    consumer = AIOKafkaConsumer(
        fetch_max_wait_ms=fetch_max_wait_ms,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=max_records,
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=max(500, kafka.session_timeout_ms // 5),
        **kafka.client_options(),
    )
    consumer.subscribe([topic] if isinstance(topic, str) else topic, listener=listener)
    return consumer


def make_producer(kafka: KafkaSettings) -> AIOKafkaProducer:
    """acks=all with idempotence: a retried send never duplicates within the producer session."""
    return AIOKafkaProducer(
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
        **kafka.client_options(),
    )


def make_reader(kafka: KafkaSettings, topic: str) -> AIOKafkaConsumer:
    """A group-less consumer of every partition of `topic` from its beginning; it commits nothing."""
    return AIOKafkaConsumer(
        topic,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        **kafka.client_options(),
    )


async def read_to_end(consumer: AIOKafkaConsumer, apply: Callable[[ConsumerRecord], object]) -> None:
    """Every record of a started group-less consumer's partitions written before this call, in order."""
    ends = await consumer.end_offsets(list(await assigned_partitions(consumer)))
    while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
        for records in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
            for record in records:
                apply(record)
