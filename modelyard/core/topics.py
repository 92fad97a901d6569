"""Creates modelyard's topics with their configured partition counts (idempotent)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.structs import OffsetAndMetadata

from modelyard.core._exceptions import BrokerError
from modelyard.core.kafka import assigned_partitions, create_topics, kafka_errors, make_admin, make_reader
from modelyard.core.settings import KafkaSettings

__all__ = ["assigned_partitions", "ensure_topics", "group_lag", "sink_topics", "topic_plan"]

COMPACTED = {"cleanup.policy": "compact"}  # the spend topic keeps the latest figures per tenant
MS_PER_DAY = 86_400_000


def topic_plan(kafka: KafkaSettings, pools: Iterable[str]) -> dict[str, int]:
    """Every topic modelyard uses (with these pools) -> its partition count."""
    plan = {
        kafka.jobs_topic: kafka.partitions,
        kafka.results_topic: kafka.partitions,
        kafka.dead_letter_topic: 1,
        kafka.deferred_topic: kafka.partitions,
        kafka.spend_topic: 1,
        kafka.evals_topic: 1,
        kafka.cache_topic: kafka.partitions,
        kafka.routed_jobs_topic: kafka.partitions,
    }
    for pool in pools:
        plan[kafka.pool_topic(pool)] = kafka.pool_partitions.get(pool, kafka.partitions)
    return plan


async def ensure_topics(kafka: KafkaSettings, pools: Iterable[str], attempts: int = 30) -> dict[str, int]:
    """Create missing topics; retries while a just-started broker elects its controller."""
    plan = topic_plan(kafka, pools)
    for attempt in range(attempts):
        try:
            with kafka_errors("create topics"):
                await _create(kafka, plan)
            return plan
        except BrokerError as exc:
            if attempt == attempts - 1:
                raise BrokerError(f"cannot create topics on {kafka.bootstrap_servers}: {exc!r}") from exc
            await asyncio.sleep(0.5)
    return plan


async def _create(kafka: KafkaSettings, plan: dict[str, int]) -> None:
    admin = make_admin(kafka, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name,
                num_partitions=n,
                replication_factor=kafka.replication_factor,
                topic_configs=_topic_configs(kafka, name),
            )
            for name, n in plan.items()
            if name not in existing
        ]
        if missing:
            await create_topics(admin, missing)
    finally:
        await admin.close()


def _topic_configs(kafka: KafkaSettings, name: str) -> dict[str, str]:
    """Per-topic configs: the spend topic is compacted; the result cache keeps the latest answer per request
    digest, and nothing older than `kafka.cache_retention_s`; the routed-jobs record lives as long as job ids
    are refused when reused (older entries would be skipped by the router anyway)."""
    configs = dict(COMPACTED) if name == kafka.spend_topic else {}
    if name == kafka.cache_topic:
        retention_ms = int(kafka.cache_retention_s * 1000)
        configs = {
            "cleanup.policy": "compact,delete",
            "retention.ms": str(retention_ms),
            "segment.ms": str(min(retention_ms, 3_600_000)),
        }
    if name == kafka.routed_jobs_topic:
        configs["retention.ms"] = str(int(kafka.routed_jobs_retention_days * MS_PER_DAY))
    if kafka.min_insync_replicas is not None:
        configs["min.insync.replicas"] = str(kafka.min_insync_replicas)
    return configs


def sink_topics(kafka: KafkaSettings, pools: Iterable[str]) -> list[str]:
    """What the sink consumes: results, eval scores, and every pool topic (for routing decisions)."""
    return [kafka.results_topic, kafka.evals_topic, *(kafka.pool_topic(pool) for pool in pools)]


async def group_lag(kafka: KafkaSettings, group_id: str, topics: list[str]) -> int:
    """Records on `topics` not yet committed by consumer group `group_id` (Settings.group_id names them)."""
    admin, consumer = make_admin(kafka), make_reader(kafka, *topics, offset_reset="latest")
    try:
        with kafka_errors("read consumer lag"):
            await admin.start()
            await consumer.start()
            partitions = await assigned_partitions(consumer)
            ends = await consumer.end_offsets(list(partitions))
            committed = await admin.list_consumer_group_offsets(group_id, partitions=list(partitions))
        return sum(end - _committed(committed, tp) for tp, end in ends.items())
    finally:
        await consumer.stop()
        await admin.close()


def _committed(committed: dict[TopicPartition, OffsetAndMetadata], tp: TopicPartition) -> int:
    entry = committed.get(tp)
    return entry.offset if entry is not None and entry.offset >= 0 else 0
