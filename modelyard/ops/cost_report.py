"""Analyst views of the cost ledger: grouped tables with per-job savings, CSV/JSON export, stacked bar charts,
repricing, unpriced models, per-job costs, budgets."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from modelyard.core._exceptions import InvalidInput
from modelyard.core.settings import BudgetSettings
from modelyard.ops.repricing import Repriced, reprice
from workers.sink.clickhouse import ClickHouseStore
from workers.sink.pricing import PriceCatalog

DIMENSIONS = {
    "day": "toDate(completed_at)",
    "tenant": "tenant",
    "task": "task_type",
    "pool": "pool",
    "provider": "provider",
    "model": "model",
}
# Savings per job (v_attempt_savings): each job's reference cost is booked on the attempt that ended it, each
# attempt's own cost where it happened, so escalations and failovers count against what the job saved.
MEASURES = (
    "count() AS attempts, uniqExact(job_id) AS jobs, "
    "sum(input_tokens + cached_input_tokens + cache_write_tokens) AS input_tokens, "
    "sum(output_tokens) AS output_tokens, sum(total_cost_usd) AS cost_usd, "
    "sum(job_reference_usd) AS reference_usd, sum(job_savings_usd) AS savings_usd, countIf(priced = 0) AS unpriced, "
    "countIf(cached = 1) AS cached_attempts, round(cached_attempts / attempts, 4) AS cache_hit_rate, "
    "sum(cache_saved_usd) AS cache_saved_usd"
)
SINCE = re.compile(r"^(\d+)([mhdw])$")
UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """'7d', '24h', '30m', '2w' back from now, or an ISO date/datetime (UTC when no zone is given)."""
    now = now or datetime.now(UTC)
    found = SINCE.match(text.strip())
    if found:
        return now - timedelta(**{UNITS[found.group(2)]: int(found.group(1))})
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidInput(f"--since {text!r}: use 7d, 24h, 30m, 2w or an ISO date", field="since") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_dimensions(text: str) -> list[str]:
    dims = [d.strip() for d in text.split(",") if d.strip()]
    unknown = [d for d in dims if d not in DIMENSIONS]
    if not dims or unknown:
        raise InvalidInput(f"--by {text!r}: choose from {', '.join(DIMENSIONS)}", field="by")
    return dims


@dataclass(frozen=True)
class Table:
    names: list[str]
    rows: list[tuple[object, ...]]

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(self.names)
        writer.writerows(
            [[format(v, "f") if isinstance(v, Decimal) else v for v in row] for row in self.rows]
        )
        return buffer.getvalue()

    def to_json(self) -> str:
        return json.dumps(
            [dict(zip(self.names, row, strict=False)) for row in self.rows], default=_json_default, indent=1
        )


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return format(value, "f")
    return value.isoformat() if isinstance(value, (date, datetime)) else str(value)


class CostReport:
    def __init__(self, store: ClickHouseStore) -> None:
        self.store = store

    def by(self, dims: list[str], since: datetime) -> Table:
        select = ", ".join(f"{DIMENSIONS[d]} AS {d}" for d in dims)
        sql = (
            f"SELECT {select}, {MEASURES} FROM v_attempt_savings WHERE completed_at >= {{since:DateTime64(3)}} "
            f"GROUP BY {', '.join(dims)} ORDER BY {', '.join(dims)}"
        )
        names, rows = self.store.query_with_names(sql, {"since": since.astimezone(UTC).replace(tzinfo=None)})
        return Table(names, rows)

    def budgets(self, budgets: dict[str, BudgetSettings], now: datetime | None = None) -> Table:
        now = now or datetime.now(UTC)
        month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        sql = (
            "SELECT tenant, sumIf(total_cost_usd, toDate(completed_at) = toDate({now:DateTime64(3)})) AS today, "
            "sum(total_cost_usd) AS month FROM cost_ledger FINAL WHERE completed_at >= {start:DateTime64(3)} GROUP BY tenant"
        )
        spend = {
            t: (d, m) for t, d, m in self.store.query(sql, {"now": _naive(now), "start": _naive(month_start)})
        }
        rows = [
            _budget_row(tenant, budget, *spend.get(tenant, (Decimal(0), Decimal(0))))
            for tenant, budget in sorted(budgets.items())
        ]
        return Table(
            ["tenant", "today_usd", "daily_budget_usd", "month_usd", "monthly_budget_usd", "status"], rows
        )

    def reprice(self, catalog: PriceCatalog, since: datetime) -> Repriced:
        """Price every attempt since `since` under `catalog` into cost_repricings (the billed figures stay), and
        price for real the attempts stored unpriced whose model the catalog now covers (see repricing.py)."""
        return reprice(self.store, catalog, since)

    def unpriced(self, catalog: PriceCatalog | None = None) -> Table:
        """Models whose results were stored unpriced, with what the catalog now makes of each id."""
        rows = self.store.query(UNPRICED)
        if catalog is None:
            return Table(UNPRICED_COLUMNS, rows)
        model = UNPRICED_COLUMNS.index("model")
        return Table(
            [*UNPRICED_COLUMNS, "catalog_now"], [(*row, _now_priced_as(catalog, row[model])) for row in rows]
        )

    def jobs(self, since: datetime, limit: int) -> Table:
        """Per-job cost against the reference model, the jobs that saved least (or lost most) first."""
        names, rows = self.store.query_with_names(JOBS, {"since": _naive(since).date(), "limit": limit})
        return Table(names, rows)


UNPRICED_COLUMNS = [
    "provider",
    "model",
    "attempts",
    "jobs",
    "input_tokens",
    "output_tokens",
    "first_seen",
    "last_seen",
]
UNPRICED = f"SELECT {', '.join(UNPRICED_COLUMNS)} FROM v_unpriced ORDER BY attempts DESC, provider, model"
JOBS_COLUMNS = [
    "job_id",
    "tenant",
    "task_type",
    "final_pool",
    "final_model",
    "attempts",
    "cost_usd",
    "reference_cost_usd",
    "savings_usd",
    "unpriced_attempts",
]
JOBS = (
    f"SELECT {', '.join(JOBS_COLUMNS)} FROM v_job_savings WHERE day >= {{since:Date}} "
    "ORDER BY savings_usd, job_id LIMIT {limit:UInt32}"
)


def _now_priced_as(catalog: PriceCatalog, model: str) -> str:
    found = catalog.resolve(model)
    return f"{found.model} ({found.rule}): run `costs reprice`" if found else "no price yet"


def _budget_row(tenant: str, budget: BudgetSettings, today: Decimal, month: Decimal) -> tuple[object, ...]:
    over = (budget.daily_usd is not None and today >= budget.daily_usd) or (
        budget.monthly_usd is not None and month >= budget.monthly_usd
    )
    return (
        tenant,
        today,
        budget.daily_usd,
        month,
        budget.monthly_usd,
        f"over -> {budget.action}" if over else "ok",
    )


def _naive(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(tzinfo=None)


def plot_stacked(table: Table, path: Path, value: str = "cost_usd") -> Path:
    """A stacked bar chart: x = the first dimension, stacks = the second (if any), height = `value`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_name, stack_name = table.names[0], table.names[1] if table.names[1] not in MEASURE_NAMES else None
    col = table.names.index(value)
    xs = sorted({str(r[0]) for r in table.rows})
    stacks = sorted({str(r[1]) for r in table.rows}) if stack_name else [value]
    heights = {s: [0.0] * len(xs) for s in stacks}
    for row in table.rows:
        heights[str(row[1]) if stack_name else value][xs.index(str(row[0]))] += float(row[col])
    figure, axes = plt.subplots(figsize=(max(6, len(xs) * 0.8), 4.5))
    bottom = [0.0] * len(xs)
    for stack in stacks:
        axes.bar(xs, heights[stack], bottom=bottom, label=stack)
        bottom = [b + h for b, h in zip(bottom, heights[stack], strict=False)]
    axes.set_xlabel(x_name)
    axes.set_ylabel(f"{value} (USD)")
    axes.set_title(f"{value} by {x_name}" + (f" and {stack_name}" if stack_name else ""))
    if stack_name:
        axes.legend(fontsize="small")
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


MEASURE_NAMES = {
    "attempts",
    "jobs",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "reference_usd",
    "savings_usd",
    "unpriced",
    "cached_attempts",
    "cache_hit_rate",
    "cache_saved_usd",
}
