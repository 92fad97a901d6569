"""Deferred items (a budget's 'defer' action) wait on their own topic until released to the jobs topic."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from modelyard.core.kafka import make_consumer, make_producer
from modelyard.core.settings import KafkaSettings
from modelyard.core.topics import ensure_topics


async def release_deferred(
    kafka: KafkaSettings, pools: Collection[str], group_id: str, idle_ms: int = 1500
) -> int:
    """Move every parked item back to the jobs topic; offsets are committed only after the produce is acked.
    pools: every topic is created first; group_id: the releasing consumer group's."""
    await ensure_topics(kafka, pools)
    consumer = make_consumer(kafka, kafka.deferred_topic, group_id)
    producer = make_producer(kafka)
    await consumer.start()
    await producer.start()
    moved = 0
    try:
        while batches := await consumer.getmany(timeout_ms=idle_ms):
            sends = [
                await producer.send(kafka.jobs_topic, r.value, key=r.key)
                for rs in batches.values()
                for r in rs
            ]
            await asyncio.gather(*sends)
            await consumer.commit()
            moved += len(sends)
    finally:
        await consumer.stop()
        await producer.stop()
    return moved
