"""aiokafka consumers and producers configured from settings (security options included)."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener

from modelyard.core.settings import Settings


def make_consumer(
    settings: Settings,
    topic: str | list[str],
    group: str,
    listener: ConsumerRebalanceListener | None = None,
    max_records: int = 500,
) -> AIOKafkaConsumer:
    """A manually committed consumer: offsets move only after the work for them is durable downstream."""
    consumer = AIOKafkaConsumer(
        group_id=f"{settings.app_id}.{group}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=max_records,
        session_timeout_ms=settings.kafka.session_timeout_ms,
        heartbeat_interval_ms=max(500, settings.kafka.session_timeout_ms // 5),
        **settings.kafka.client_options(),
    )
    consumer.subscribe([topic] if isinstance(topic, str) else topic, listener=listener)
    return consumer


def make_producer(settings: Settings) -> AIOKafkaProducer:
    """acks=all with idempotence: a retried send never duplicates within the producer session."""
    return AIOKafkaProducer(
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
        **settings.kafka.client_options(),
    )
