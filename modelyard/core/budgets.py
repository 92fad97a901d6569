"""Budgets before spend: what each process that can start a budgeted call (router, pools) knows of a tenant's spend.

A tenant's committed money is what it spent (priced results) plus what it reserved (calls admitted, not yet
priced). Every process holds a `BudgetBook`:

* the sink publishes, per tenant, the spend today and this month and the reservations it has seen but not
  settled (`SpendRecord` on the compacted spend topic; the book keeps the latest);
* a call the process admits reserves its estimated cost as the process's own (`reserve`), counted at once;
* a spend record that `acknowledged` an own reservation now counts it itself (in `reserved_usd`, or in the
  spend once the result is priced): the book drops its own copy.

So a burst is stopped once spend plus reservations reach the budget, however far behind the sink is: the
overshoot is at most the last call admitted (plus what the estimates missed), and across processes what the
others admitted while one spend record was on its way. `BudgetGuard` adds the estimate (`RateCard`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from modelyard.core.rate_card import RateCard
from modelyard.core.settings import BudgetSettings, CostSettings, PoolSettings
from schemas.spend import SpendRecord

ZERO = Decimal(0)
ReservationKey = tuple[str, int]  # job_id, attempt


@dataclass(frozen=True)
class Overrun:
    tenant: str
    action: str
    why: str


class BudgetBook:
    def __init__(self, budgets: Mapping[str, BudgetSettings]) -> None:
        self.budgets = budgets
        self.spend: dict[str, SpendRecord] = {}
        self._own: dict[str, dict[ReservationKey, Decimal]] = {}
        self._own_usd: dict[str, Decimal] = {}

    def guards(self, tenant: str) -> bool:
        return tenant in self.budgets

    def record(self, raw: bytes | SpendRecord) -> None:
        """The sink's latest figures for a tenant; the own reservations they now count are dropped."""
        spend = raw if isinstance(raw, SpendRecord) else SpendRecord.model_validate_json(raw)
        self.spend[spend.tenant] = spend
        for job_id, attempt in spend.acknowledged:
            self.release(spend.tenant, (job_id, attempt))

    def reserve(self, tenant: str, key: ReservationKey, usd: Decimal) -> None:
        own = self._own.setdefault(tenant, {})
        self._own_usd[tenant] = self._own_usd.get(tenant, ZERO) + usd - own.get(key, ZERO)
        own[key] = usd

    def release(self, tenant: str, key: ReservationKey) -> None:
        """Drop an own reservation: the sink counts it now, or its call was never made."""
        usd = self._own.get(tenant, {}).pop(key, None)
        if usd is not None:
            self._own_usd[tenant] -= usd

    def reserved(self, tenant: str) -> Decimal:
        """Reservations the sink published for this tenant, plus this process's own not yet acknowledged."""
        spend = self.spend.get(tenant)
        return (spend.reserved_usd if spend else ZERO) + self._own_usd.get(tenant, ZERO)

    def overrun(self, tenant: str, now: datetime) -> Overrun | None:
        """The budget this tenant's spend and reservations reach right now, if any (spend from an earlier day or
        month does not count; reservations do, they are calls in flight)."""
        budget, spend = self.budgets.get(tenant), self.spend.get(tenant)
        if budget is None:
            return None
        reserved = self.reserved(tenant)
        day_usd = spend.day_usd if spend is not None and spend.day == now.date() else ZERO
        month_usd = spend.month_usd if spend is not None and spend.month == f"{now:%Y-%m}" else ZERO
        if budget.daily_usd is not None and day_usd + reserved >= budget.daily_usd:
            return Overrun(tenant, budget.action, _spent("daily", budget.daily_usd, day_usd, reserved))
        if budget.monthly_usd is not None and month_usd + reserved >= budget.monthly_usd:
            return Overrun(tenant, budget.action, _spent("monthly", budget.monthly_usd, month_usd, reserved))
        return None


def _spent(period: str, limit: Decimal, spent: Decimal, reserved: Decimal) -> str:
    if not reserved:
        return f"{period} budget ${limit} spent (${spent})"
    return f"{period} budget ${limit} spent or reserved (${spent} spent, ${reserved} reserved for calls in flight)"


class BudgetGuard:
    """Admits a call that spends from a tenant's budget while spend and reservations are under it, and reserves
    the call's estimated cost (its input tokens and its whole output budget at the model's list rates)."""

    def __init__(self, costs: CostSettings, rates: RateCard) -> None:
        self.book = BudgetBook(costs.budgets)
        self.rates = rates
        self.budget_pools = frozenset(costs.budget_pools)

    def guards(self, tenant: str) -> bool:
        return self.book.guards(tenant)

    def admit(
        self, tenant: str, key: ReservationKey, model: str, tokens: tuple[int, int], now: datetime
    ) -> Overrun | Decimal:
        """The overrun that refuses the call, or the USD reserved for it (`tokens`: input, output budget)."""
        overrun = self.book.overrun(tenant, now)
        if overrun is not None:
            return overrun
        usd = self.rates.estimate(model, *tokens, now.date())
        self.book.reserve(tenant, key, usd)
        return usd

    def release(self, tenant: str, key: ReservationKey) -> None:
        self.book.release(tenant, key)


def budgeted_targets(pools: Mapping[str, PoolSettings], budget_pools: frozenset[str]) -> set[tuple[str, str]]:
    """(provider, model) of every target of a budgeted pool, its fallbacks included: a fallback of another pool
    that calls one of them spends what the budget guards."""
    targets = set()
    for name in budget_pools & pools.keys():
        pool = pools[name]
        targets |= {(pool.provider, pool.model)} | {(f.provider, f.model) for f in pool.fallbacks}
    return targets
