"""DeliveryTracker: Kafka's per-record acknowledgements become Delivery reports, a batch at a time, and the
records still open hold the producer back (backpressure).

One task waits for the oldest open record and then reports every acknowledged record behind it in one pass.
A done-callback per record instead costs ~10 µs of CPU, half of what producing the record costs
(measured: 31 against 21 µs a record with the callbacks, on the 2-core machine)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from modelyard.client.outcomes import Delivery

Listener = Callable[[Delivery], None]


class _Open(NamedTuple):
    acked: asyncio.Future[Any]
    job_id: str | None
    topic: str
    listener: Listener | None
    delivery: asyncio.Future[Delivery]


class DeliveryTracker:
    def __init__(self, max_in_flight: int) -> None:
        self.max_in_flight = max_in_flight
        self._open: deque[_Open] = deque()
        self._room = asyncio.Event()
        self._idle = asyncio.Event()
        self._more = asyncio.Event()
        self._reporter: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._room.set()
        self._idle.set()
        self._reporter = asyncio.create_task(self._report_forever(), name="modelyard-deliveries")

    async def stop(self) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reporter

    async def room(self) -> None:
        """Wait while `max_in_flight` records are unacknowledged."""
        while len(self._open) >= self.max_in_flight:
            self._room.clear()
            await self._room.wait()

    async def idle(self) -> None:
        """Wait until every tracked record is reported."""
        await self._idle.wait()

    def track(
        self, acked: asyncio.Future[Any], job_id: str | None, topic: str, listener: Listener | None
    ) -> asyncio.Future[Delivery]:
        delivery: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
        self._open.append(_Open(acked, job_id, topic, listener, delivery))
        if len(self._open) == 1:
            self._idle.clear()
            self._more.set()
        return delivery

    @staticmethod
    def failed(
        job_id: str | None, topic: str, error: str, listener: Listener | None
    ) -> asyncio.Future[Delivery]:
        """A record refused before it was batched: reported at once."""
        delivery: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
        _report(delivery, Delivery(job_id, topic, error=error), listener)
        return delivery

    async def _report_forever(self) -> None:
        while True:
            if not self._open:
                self._idle.set()
                self._more.clear()
                await self._more.wait()
                continue
            with contextlib.suppress(Exception):  # its failure is reported below, like any other
                await asyncio.shield(self._open[0].acked)
            while self._open and self._open[0].acked.done():
                self._report_one(self._open.popleft())
            self._room.set()

    @staticmethod
    def _report_one(record: _Open) -> None:
        acked = record.acked
        if acked.cancelled() or acked.exception() is not None:
            error = "cancelled" if acked.cancelled() else repr(acked.exception())
            report = Delivery(record.job_id, record.topic, error=error)
        else:
            meta = acked.result()
            report = Delivery(record.job_id, record.topic, meta.partition, meta.offset)
        _report(record.delivery, report, record.listener)


def _report(delivery: asyncio.Future[Delivery], report: Delivery, listener: Listener | None) -> None:
    delivery.set_result(report)
    if listener is not None:
        listener(report)
