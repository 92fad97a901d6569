"""What the SDK reports: a delivery per record, a summary per batch, and a rejected job's reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from schemas import Result


class Delivery(NamedTuple):
    """Kafka's answer for one record: where it was stored, or why it was not. (A NamedTuple: one is made per
    record, and a frozen dataclass costs ~1 µs more to build.)"""

    job_id: str | None
    topic: str
    partition: int | None = None
    offset: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class SubmitReport:
    """Every delivery of a submit_many call: the acknowledged ones counted, the failed ones kept."""

    delivered: int = 0
    failed: list[Delivery] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def add(self, delivery: Delivery) -> None:
        if delivery.ok:
            self.delivered += 1
        else:
            self.failed.append(delivery)


@dataclass(frozen=True)
class Rejected:
    """A job the pipeline will not answer: the router dead-lettered it (e.g. unauthenticated, unknown_tenant,
    budget_exceeded), with the reason and the field."""

    job_id: str
    stage: str
    reason: str
    field: str | None
    error: str
    status: str = "rejected"  # beside Result.status (ok / error), so callers branch on one attribute


Outcome = Result | Rejected
