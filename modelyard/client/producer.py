"""AsyncClient: produce work items (signed, batched, acknowledged, with backpressure) and follow results."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from pydantic import SecretStr

from modelyard.client.deliveries import DeliveryTracker, Listener
from modelyard.client.items import as_work_item, encode
from modelyard.client.outcomes import Delivery, Outcome, SubmitReport
from modelyard.client.results import ResultReader
from modelyard.core._exceptions import BrokerError
from modelyard.core.kafka import kafka_errors, make_producer, started
from modelyard.core.settings import KafkaSettings, Settings
from modelyard.core.signatures import TenantKeys
from schemas import DeadLetter, WorkItem

SENDING = kafka_errors("send a record")  # one door instance for every send (no allocation per record)
YIELD_EVERY = 500  # records queued between turns of the event loop (the batches go out meanwhile)
CLOCK_SKEW = timedelta(seconds=60)  # results are looked for from this long before the client started


class AsyncClient:
    """A producer of modelyard work for asyncio code. Use it as `async with AsyncClient(...) as client:`.

    `kafka`: where and how to connect (bootstrap servers, topic prefix, SASL/TLS), as the pipeline's own
    `kafka` settings. `tenant_keys`: tenant -> HMAC key; a job of a tenant with a key is signed (give each
    service only its own tenant's key). `max_in_flight`: records sent but not yet acknowledged before
    `send` makes the caller wait."""

    def __init__(
        self,
        kafka: KafkaSettings | None = None,
        *,
        tenant_keys: Mapping[str, str | SecretStr] | None = None,
        max_in_flight: int = 10_000,
    ) -> None:
        self.kafka = kafka or KafkaSettings()
        keys = {t: k if isinstance(k, SecretStr) else SecretStr(k) for t, k in (tenant_keys or {}).items()}
        self.keys = TenantKeys(keys) if keys else None
        self.max_in_flight = max_in_flight
        self.started_at = datetime.now(UTC)
        self._producer: AIOKafkaProducer | None = None
        self._deliveries: DeliveryTracker | None = None
        self._sent = 0

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> AsyncClient:
        """A client configured like the pipeline's own processes (kafka settings, router.tenant_keys)."""
        return cls(settings.kafka, tenant_keys=settings.router.tenant_keys, **options)

    async def start(self) -> None:
        producer = make_producer(self.kafka)
        await started(producer, self.kafka)
        self._producer = producer
        self._deliveries = DeliveryTracker(self.max_in_flight)
        self._deliveries.start()

    async def close(self) -> None:
        """Wait for every record sent to be acknowledged (or to fail), then disconnect."""
        if self._producer is None:
            return
        try:
            await self.flush()
        finally:
            await self._producer.stop()
            self._producer = None
            if self._deliveries is not None:
                await self._deliveries.stop()

    async def __aenter__(self) -> AsyncClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- producing ------------------------------------------------------------------------------------
    async def submit(self, item: WorkItem | Mapping[str, Any]) -> Delivery:
        """Send one job and wait for Kafka's acknowledgement; BrokerError when it was not stored."""
        delivery = await (await self.send(item))
        if not delivery.ok:
            raise BrokerError(f"job {delivery.job_id} was not stored: {delivery.error}")
        return delivery

    async def send(
        self,
        item: WorkItem | Mapping[str, Any],
        on_delivery: Callable[[Delivery], None] | None = None,
    ) -> asyncio.Future[Delivery]:
        """Queue one job (validated, signed); returns once it is in the producer's batch, with a future for its
        delivery (`on_delivery` is called with it too, straight from the acknowledgement). Waits while
        `max_in_flight` records are unacknowledged."""
        checked = as_work_item(item)
        value = encode(checked)
        headers = self.keys.headers_for(checked.tenant, value) if self.keys else None
        return await self._send(self.kafka.jobs_topic, value, checked.job_id, headers, on_delivery)

    async def submit_many(
        self,
        items: Iterable[WorkItem | Mapping[str, Any]] | AsyncIterable[WorkItem | Mapping[str, Any]],
        on_delivery: Callable[[Delivery], None] | None = None,
    ) -> SubmitReport:
        """Send every job, in batches, and wait for all deliveries. `on_delivery` hears each one as it is
        acknowledged (in this event loop). An invalid item raises InvalidInput before it is sent; the ones
        before it are sent."""
        report, started = SubmitReport(), time.perf_counter()

        def record(delivery: Delivery) -> None:
            report.add(delivery)
            if on_delivery is not None:
                on_delivery(delivery)

        async for item in _aiter(items):
            await self.send(item, record)
        await self.flush()
        report.seconds = time.perf_counter() - started
        return report

    async def dead_letter(
        self, letter: DeadLetter, on_delivery: Callable[[Delivery], None] | None = None
    ) -> asyncio.Future[Delivery]:
        """Queue a dead letter (input that cannot become a job: a producer reports it rather than drop it)."""
        value = letter.model_dump_json().encode()
        return await self._send(self.kafka.dead_letter_topic, value, None, None, on_delivery)

    async def flush(self) -> None:
        """Wait until every record sent so far is acknowledged or failed (and reported)."""
        if self._deliveries is not None:
            await self._deliveries.idle()

    async def _send(
        self,
        topic: str,
        value: bytes,
        job_id: str | None,
        headers: list[tuple[str, bytes]] | None,
        on_delivery: Listener | None,
    ) -> asyncio.Future[Delivery]:
        if self._producer is None or self._deliveries is None:
            raise BrokerError(
                "the client is not started", hint="use `async with AsyncClient(...)` or start()"
            )
        await self._deliveries.room()
        try:
            with SENDING:
                acked = await self._producer.send(
                    topic, value, key=job_id.encode() if job_id else None, headers=headers
                )
        except BrokerError as exc:  # refused before it was batched (e.g. too large)
            return self._deliveries.failed(job_id, topic, repr(exc.__cause__ or exc), on_delivery)
        self._sent += 1
        if (
            not self._sent % YIELD_EVERY
        ):  # a send that does not block never lets the producer's sender task run
            await asyncio.sleep(0)
        return self._deliveries.track(acked, job_id, topic, on_delivery)

    # -- results --------------------------------------------------------------------------------------
    def results(
        self,
        job_ids: Iterable[str],
        *,
        timeout: float | None = None,
        since: datetime | None = None,
    ) -> AsyncIterator[Outcome]:
        """Each job's final Result (status ok or error), or Rejected when the router dead-lettered it, as they
        land, until every job has one (or `timeout` seconds pass: BrokerError names the jobs still open).
        Looks from `since` (default: shortly before this client started) onwards."""
        start = since or self.started_at - CLOCK_SKEW
        return ResultReader(self.kafka, start).outcomes(set(job_ids), timeout)

    async def wait(
        self, job_ids: Iterable[str], timeout: float | None = None, since: datetime | None = None
    ) -> dict[str, Outcome]:
        """Every job's outcome (see `results`), keyed by job_id."""
        return {o.job_id: o async for o in self.results(job_ids, timeout=timeout, since=since)}


async def _aiter(items: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
