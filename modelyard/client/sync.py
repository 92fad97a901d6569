"""Client: the synchronous flavour, an AsyncClient driven by an event loop in a background thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any, TypeVar

from pydantic import SecretStr

from modelyard.client.outcomes import Delivery, Outcome, SubmitReport
from modelyard.client.producer import AsyncClient
from modelyard.core.settings import KafkaSettings, Settings
from schemas import WorkItem

T = TypeVar("T")


class Client:
    """The same API as AsyncClient for synchronous code: `with Client(...) as client: client.submit(item)`.
    Calls block until done; `on_delivery` callbacks run in the client's own thread."""

    def __init__(
        self,
        kafka: KafkaSettings | None = None,
        *,
        tenant_keys: Mapping[str, str | SecretStr] | None = None,
        max_in_flight: int = 10_000,
    ) -> None:
        self._async = AsyncClient(kafka, tenant_keys=tenant_keys, max_in_flight=max_in_flight)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="modelyard-client", daemon=True)
        self._thread.start()
        try:
            self._call(self._async.start())
        except BaseException:
            self._stop_loop()
            raise

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> Client:
        return cls(settings.kafka, tenant_keys=settings.router.tenant_keys, **options)

    def submit(self, item: WorkItem | Mapping[str, Any]) -> Delivery:
        return self._call(self._async.submit(item))

    def submit_many(
        self,
        items: Iterable[WorkItem | Mapping[str, Any]],
        on_delivery: Callable[[Delivery], None] | None = None,
    ) -> SubmitReport:
        return self._call(self._async.submit_many(items, on_delivery))

    def results(
        self, job_ids: Iterable[str], *, timeout: float | None = None, since: datetime | None = None
    ) -> Iterator[Outcome]:
        outcomes = self._async.results(job_ids, timeout=timeout, since=since)
        try:
            while True:
                try:
                    yield self._call(_next(outcomes))
                except StopAsyncIteration:
                    return
        finally:
            self._call(outcomes.aclose())  # type: ignore[attr-defined]

    def wait(
        self, job_ids: Iterable[str], timeout: float | None = None, since: datetime | None = None
    ) -> dict[str, Outcome]:
        return self._call(self._async.wait(job_ids, timeout, since))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._call(self._async.close())
        finally:
            self._stop_loop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` in the client's loop and wait for it here."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


async def _next(outcomes: AsyncIterator[Outcome]) -> Outcome:
    return await outcomes.__anext__()
