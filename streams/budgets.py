"""BudgetBook: the latest spend per tenant (today, this month), as the sink publishes it on the spend topic.

The sink computes spend from ClickHouse after each write and publishes one compacted record per tenant;
every router process reads the whole topic (group-less), so each knows every tenant's spend.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from modelyard.core.settings import BudgetSettings
from schemas.spend import SpendRecord


@dataclass(frozen=True)
class Overrun:
    tenant: str
    action: str
    why: str


class BudgetBook:
    def __init__(self, budgets: dict[str, BudgetSettings]) -> None:
        self.budgets = budgets
        self.spend: dict[str, SpendRecord] = {}

    def record(self, raw: bytes) -> None:
        spend = SpendRecord.model_validate_json(raw)
        self.spend[spend.tenant] = spend

    def overrun(self, tenant: str, now: datetime) -> Overrun | None:
        """The budget this tenant is over right now, if any (spend from an earlier day/month does not count)."""
        budget, spend = self.budgets.get(tenant), self.spend.get(tenant)
        if budget is None or spend is None:
            return None
        if budget.daily_usd is not None and spend.day == now.date() and spend.day_usd >= budget.daily_usd:
            return Overrun(
                tenant, budget.action, f"daily budget ${budget.daily_usd} spent (${spend.day_usd})"
            )
        if (
            budget.monthly_usd is not None
            and spend.month == f"{now:%Y-%m}"
            and spend.month_usd >= budget.monthly_usd
        ):
            return Overrun(
                tenant, budget.action, f"monthly budget ${budget.monthly_usd} spent (${spend.month_usd})"
            )
        return None
