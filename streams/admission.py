"""Admission: whether a record gets in. Decoded once, then checked against the tenant list, the tenant's
signature, the job_ids seen within the dedup window and those routed to a pool before (the router's durable
record, streams/routed_jobs.py): the work item, or the Rejection that dead-letters it.

The router admits every record of the jobs topic; `modelyard dlq replay` admits a dead letter's original
again exactly as the router would (with the signature it came with), and `modelyard submit` checks each line
of a file with the same class before producing it. No Faust and no Kafka here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import NamedTuple, Protocol

from modelyard.core.signatures import TenantKeys
from schemas import WorkItem
from schemas.rejection import Rejection
from schemas.work_item_struct import DECODE_WORK_ITEM, WorkItemStruct

Item = WorkItem | WorkItemStruct  # the fast path decodes to the struct; lax input to the pydantic model
Decoder = Callable[[bytes | None], Item | Rejection]


class Source(NamedTuple):  # tuples: one of each per record on the hot path, where dataclass init costs
    topic: str
    partition: int
    offset: int
    signature: bytes | None = None  # the record's modelyard-signature header, read when tenant keys are set


class SeenJobIds(Protocol):
    """Remembers job_ids; a job_id coming back at another position is a duplicate (streams.dedup)."""

    def evict(self) -> float: ...

    def duplicate(self, job_id: str, partition: int, offset: int, now: float) -> Rejection | None: ...

    def forget(self, job_id: str) -> None: ...


class RoutedJobs(Protocol):
    """The job ids sent to pools before, durable across restarts (streams.routed_jobs): admission refuses a
    reused one; the policy adds those it sends to pools and takes the records to produce."""

    def refusal(self, job_id: str, partition: int, offset: int) -> Rejection | None: ...

    def add(self, job_id: str, partition: int, offset: int) -> None: ...

    def add_many(self, job_ids: list[str], sources: list[Source]) -> None: ...

    def records(self) -> list[tuple[bytes, bytes]]: ...


class Admission:
    def __init__(
        self,
        known_tenants: Collection[str] | None = None,
        tenant_keys: TenantKeys | None = None,
        seen: SeenJobIds | None = None,
        decoder: Decoder = DECODE_WORK_ITEM,
        routed: RoutedJobs | None = None,
    ) -> None:
        """known_tenants None: any tenant; tenant_keys None: no signature needed; seen None: no dedup;
        routed None: no check against the job ids routed before."""
        self.known_tenants = frozenset(known_tenants) if known_tenants is not None else None
        self.tenant_keys = tenant_keys
        self.seen = seen
        self.decoder = decoder
        self.routed = routed

    def clock(self) -> float:
        """Drops job_ids older than the dedup window; the reading to pass to admit() for a whole batch."""
        return self.seen.evict() if self.seen is not None else 0.0

    def admit(self, raw: bytes | None, source: Source, now: float = 0.0) -> Item | Rejection:
        item = self.decoder(raw)
        if isinstance(item, Rejection):
            return item
        if self.known_tenants is not None and item.tenant not in self.known_tenants:
            return Rejection("unknown_tenant", "tenant", f"tenant {item.tenant!r} is not configured")
        if self.tenant_keys is not None:
            unsigned = self.tenant_keys.verify(item.tenant, raw, source.signature)  # type: ignore[arg-type]
            if unsigned is not None:
                return unsigned
        if self.seen is not None:
            duplicate = self.seen.duplicate(item.job_id, source.partition, source.offset, now)
            if duplicate is not None:
                return duplicate
        if self.routed is not None:
            return self.routed.refusal(item.job_id, source.partition, source.offset) or item
        return item

    def forget(self, job_id: str) -> None:
        """Let this job_id come back at another offset (an item parked on the deferred topic)."""
        if self.seen is not None:
            self.seen.forget(job_id)
