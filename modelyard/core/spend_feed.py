"""SpendFeed: a process's budget view, fed from the compacted spend topic the sink publishes.

Group-less: every router and pool process reads the whole topic (one record per tenant after compaction, and
each record since), so each knows every tenant's spend and the reservations the sink has seen."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from modelyard.core.budgets import BudgetBook
from modelyard.core.kafka import kafka_errors, make_reader, read_to_end, started
from modelyard.core.settings import KafkaSettings

log = logging.getLogger("modelyard.budgets")


class SpendFeed:
    def __init__(self, kafka: KafkaSettings, book: BudgetBook) -> None:
        self.kafka = kafka
        self.book = book
        self._consumer: AIOKafkaConsumer | None = None
        self._reading = asyncio.Lock()  # a timer's poll and a rebalance's catch-up share the consumer

    async def catch_up(self) -> None:
        """Every spend record published before this call (at start: before the first budgeted call)."""
        async with self._reading:
            await read_to_end(await self._started(), lambda record: self._apply(record.value))

    async def poll(self, timeout_ms: int = 0) -> int:
        """Apply the spend records that arrived since the last poll; how many. BrokerError when Kafka fails."""
        applied = 0
        async with self._reading:
            consumer = await self._started()
            with kafka_errors("read the spend topic"):
                fetched = await consumer.getmany(timeout_ms=timeout_ms)
            for records in fetched.values():
                for record in records:
                    applied += self._apply(record.value)
        return applied

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = make_reader(self.kafka, self.kafka.spend_topic)
            await started(consumer, self.kafka)
            self._consumer = consumer
        return self._consumer

    def _apply(self, raw: bytes | None) -> int:
        if raw is None:  # a tombstone: nothing to apply
            return 0
        try:
            self.book.record(raw)
        except ValidationError as exc:  # a record we cannot read must not stop budgets for every other tenant
            log.error("unreadable spend record skipped: %s", str(exc)[:300])
            return 0
        return 1

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
