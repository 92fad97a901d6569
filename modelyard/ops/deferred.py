"""Deferred items (a budget's 'defer' action) wait on their own topic until released to the jobs topic."""

from __future__ import annotations

import asyncio

from modelyard.core.kafka import make_consumer, make_producer
from modelyard.core.settings import Settings
from modelyard.core.topics import ensure_topics


async def release_deferred(settings: Settings, idle_ms: int = 1500) -> int:
    """Move every parked item back to the jobs topic; offsets are committed only after the produce is acked."""
    await ensure_topics(settings)
    consumer = make_consumer(settings, settings.kafka.deferred_topic, "deferred-release")
    producer = make_producer(settings)
    await consumer.start()
    await producer.start()
    moved = 0
    try:
        while batches := await consumer.getmany(timeout_ms=idle_ms):
            sends = [
                await producer.send(settings.kafka.jobs_topic, r.value, key=r.key)
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
