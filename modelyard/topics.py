"""Creates modelyard's topics with their configured partition counts (idempotent)."""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from modelyard._exceptions import BrokerError
from modelyard.settings import Settings


def topic_plan(settings: Settings) -> dict[str, int]:
    """Every topic modelyard uses -> its partition count."""
    kafka = settings.kafka
    plan = {kafka.jobs_topic: kafka.partitions, kafka.results_topic: kafka.partitions, kafka.dead_letter_topic: 1}
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
                raise BrokerError(f"cannot create topics on {settings.kafka.bootstrap_servers}: {exc!r}") from exc
            await asyncio.sleep(0.5)
    return plan


async def _create(settings: Settings, plan: dict[str, int]) -> None:
    admin = AIOKafkaAdminClient(**settings.kafka.client_options(), request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, num_partitions=n, replication_factor=settings.kafka.replication_factor)
            for name, n in plan.items() if name not in existing
        ]
        if missing:
            await _create_ignoring_existing(admin, missing)
    finally:
        await admin.close()


async def _create_ignoring_existing(admin: AIOKafkaAdminClient, topics: list[NewTopic]) -> None:
    try:
        await admin.create_topics(topics)
    except TopicAlreadyExistsError:
        pass
