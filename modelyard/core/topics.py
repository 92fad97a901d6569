"""Creates modelyard's topics with their configured partition counts (idempotent)."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError
from aiokafka.structs import OffsetAndMetadata

from modelyard.core._exceptions import BrokerError
from modelyard.core.settings import Settings

COMPACTED = {"cleanup.policy": "compact"}  # the spend topic keeps the latest figures per tenant


def topic_plan(settings: Settings) -> dict[str, int]:
    """Every topic modelyard uses -> its partition count."""
    kafka = settings.kafka
    plan = {
        kafka.jobs_topic: kafka.partitions,
        kafka.results_topic: kafka.partitions,
        kafka.dead_letter_topic: 1,
        kafka.deferred_topic: kafka.partitions,
        kafka.spend_topic: 1,
        kafka.evals_topic: 1,
    }
    for pool in settings.pools:
        plan[kafka.pool_topic(pool)] = kafka.pool_partitions.get(pool, kafka.partitions)
    return plan


async def ensure_topics(settings: Settings, attempts: int = 30) -> dict[str, int]:
    """Create missing topics; retries while a just-started broker elects its controller."""
    plan = topic_plan(settings)
    for attempt in range(attempts):
        try:
            await _create(settings, plan)
            return plan
        except (KafkaConnectionError, KafkaError, OSError) as exc:
            if attempt == attempts - 1:
                raise BrokerError(
                    f"cannot create topics on {settings.kafka.bootstrap_servers}: {exc!r}"
                ) from exc
            await asyncio.sleep(0.5)
    return plan


async def _create(settings: Settings, plan: dict[str, int]) -> None:
    admin = AIOKafkaAdminClient(**settings.kafka.client_options(), request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name,
                num_partitions=n,
                replication_factor=settings.kafka.replication_factor,
                topic_configs=_topic_configs(settings, name),
            )
            for name, n in plan.items()
            if name not in existing
        ]
        if missing:
            await _create_ignoring_existing(admin, missing)
    finally:
        await admin.close()


def _topic_configs(settings: Settings, name: str) -> dict[str, str]:
    kafka = settings.kafka
    configs = dict(COMPACTED) if name == kafka.spend_topic else {}
    if kafka.min_insync_replicas is not None:
        configs["min.insync.replicas"] = str(kafka.min_insync_replicas)
    return configs


async def _create_ignoring_existing(admin: AIOKafkaAdminClient, topics: list[NewTopic]) -> None:
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


def sink_topics(settings: Settings) -> list[str]:
    """What the sink consumes: results, eval scores, and every pool topic (for routing decisions)."""
    kafka = settings.kafka
    return [kafka.results_topic, kafka.evals_topic, *(kafka.pool_topic(pool) for pool in settings.pools)]


async def group_lag(settings: Settings, group: str, topics: list[str]) -> int:
    """Records on `topics` not yet committed by consumer group `group` (app_id-prefixed, as workers name it)."""
    admin = AIOKafkaAdminClient(**settings.kafka.client_options())
    consumer = AIOKafkaConsumer(*topics, **settings.kafka.client_options(), enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        partitions = await assigned_partitions(consumer)
        ends = await consumer.end_offsets(list(partitions))
        committed = await admin.list_consumer_group_offsets(
            f"{settings.app_id}.{group}", partitions=list(partitions)
        )
        return sum(end - _committed(committed, tp) for tp, end in ends.items())
    finally:
        await consumer.stop()
        await admin.close()


def _committed(committed: dict[TopicPartition, OffsetAndMetadata], tp: TopicPartition) -> int:
    entry = committed.get(tp)
    return entry.offset if entry is not None and entry.offset >= 0 else 0
