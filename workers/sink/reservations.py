"""ReservationLedger: the sink's side of budgets before spend (modelyard/core/budgets.py).

After a batch is written, for the tenants with a budget that the batch touched:

1. the reservations its assignments carry (`reserved_usd`: a router's route, a pool's escalation) become rows
   of `budget_reservations` (replays write the same row again, harmlessly);
2. every open reservation of the batch's jobs whose result is stored (that attempt or a later one) is settled:
   its real cost is in the spend now, priced with the results of this batch or an earlier one;
3. each tenant's spend record is published: spend today and this month (the daily rollup), the reservations
   still open, and `acknowledged`: the (job_id, attempt) keys this record now counts, so the router or pool that
   made one drops its own copy.

The state lives in ClickHouse, so a restarted sink, or several sinks with a ClickHouse server, agree on it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import datetime
from decimal import Decimal

from schemas import AnyResult, Assignment
from schemas.spend import SpendRecord
from workers.sink.clickhouse import ClickHouseStore, string_literal

RESERVATION_COLUMNS = (
    "tenant",
    "job_id",
    "attempt",
    "pool",
    "reserved_usd",
    "reserved_at",
    "settled",
)
OPEN = 0
SETTLED = 1


class ReservationLedger:
    def __init__(self, store: ClickHouseStore, budgeted: Collection[str]) -> None:
        self.store = store
        self.budgeted = frozenset(budgeted)

    def account(
        self, decisions: Sequence[Assignment], results: Sequence[AnyResult], now: datetime
    ) -> list[SpendRecord]:
        """Record and settle the batch's reservations; the spend records to publish (one per tenant touched)."""
        if not self.budgeted:
            return []
        reserved = [a for a in decisions if a.reserved_usd > 0 and a.item.tenant in self.budgeted]
        priced = [r for r in results if r.tenant in self.budgeted]
        acknowledged: defaultdict[str, list[tuple[str, int]]] = defaultdict(list)
        for a in reserved:
            acknowledged[a.item.tenant].append((a.item.job_id, a.attempt))
        for r in priced:
            acknowledged[r.tenant].append((r.job_id, r.attempt))
        if not acknowledged:
            return []
        self.store.insert("budget_reservations", [_open_row(a) for a in reserved], RESERVATION_COLUMNS)
        tenants = sorted(acknowledged)
        self._settle(tenants, {a.item.job_id for a in reserved} | {r.job_id for r in priced})
        return self._spend(tenants, acknowledged, now)

    def _settle(self, tenants: list[str], job_ids: set[str]) -> None:
        """Settle the open reservations of these jobs that a stored result answers (same or later attempt)."""
        opened = self.store.rows_for_jobs(
            "tenant, job_id, attempt, pool, reserved_usd, reserved_at",
            "budget_reservations FINAL",
            job_ids,
            f"settled = {OPEN} AND tenant IN ({', '.join(map(string_literal, tenants))})",
        )
        if not opened:
            return
        answered: dict[str, int] = {}
        for job_id, attempt in self.store.stored("results", {row[1] for row in opened}):
            answered[job_id] = max(attempt, answered.get(job_id, 0))
        settled = [(*row, SETTLED) for row in opened if answered.get(row[1], 0) >= row[2]]
        self.store.insert("budget_reservations", settled, RESERVATION_COLUMNS)

    def _spend(
        self, tenants: list[str], acknowledged: dict[str, list[tuple[str, int]]], now: datetime
    ) -> list[SpendRecord]:
        open_usd = dict(
            self.store.query(
                "SELECT tenant, sum(reserved_usd) FROM budget_reservations FINAL "
                "WHERE tenant IN {tenants:Array(String)} AND settled = 0 GROUP BY tenant",
                {"tenants": tenants},
            )
        )
        spent = {record.tenant: record for record in self.store.spend(tenants, now)}
        today = now.date()
        return [
            SpendRecord(
                tenant=tenant,
                day=today,
                day_usd=spent[tenant].day_usd if tenant in spent else Decimal(0),
                month=f"{today:%Y-%m}",
                month_usd=spent[tenant].month_usd if tenant in spent else Decimal(0),
                reserved_usd=open_usd.get(tenant, Decimal(0)),
                acknowledged=acknowledged[tenant],
            )
            for tenant in tenants
        ]


def _open_row(a: Assignment) -> tuple[object, ...]:
    return (a.item.tenant, a.item.job_id, a.attempt, a.pool, a.reserved_usd, a.routed_at, OPEN)
