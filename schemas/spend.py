"""SpendRecord: a tenant's spend so far today and this month, published by the sink (compacted topic)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from pydantic import BaseModel, ConfigDict


class SpendRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str
    day: date
    day_usd: Decimal
    month: str  # YYYY-MM
    month_usd: Decimal
