"""SpendRecord: a tenant's spend so far today and this month, published by the sink (compacted topic).

`reserved_usd` is what routed calls not yet priced are expected to cost (their reservations); `acknowledged`
names the reservations (job_id, attempt) this record now counts, in `reserved_usd` or, once priced, in the
spend: a router or pool holding one of those as its own drops it, so nothing is counted twice or missed."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field


class SpendRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str
    day: date
    day_usd: Decimal
    month: str  # YYYY-MM
    month_usd: Decimal
    reserved_usd: Decimal = Field(default=Decimal(0), ge=0)
    acknowledged: list[tuple[str, int]] = Field(default_factory=list)
