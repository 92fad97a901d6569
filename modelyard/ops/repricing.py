"""`modelyard costs reprice`: every attempt since a time priced under a catalog, beside the billed figures;
and attempts stored unpriced (no catalog entry matched their model) priced for real once one does.

Every cost row is repriced from its own token counts, one per provider call (a call a pool made again after a
crash, `repeat_call = 1`, has no result row of its own but was billed). A priced ledger row is the bill as
computed when the result arrived: repricing only writes `cost_repricings` beside it (what-if under new prices). An unpriced row has no bill yet (`priced = 0`, every amount zero): once
the catalog prices its model, its cost row is rewritten with the amounts and `repriced = 1` (the table keeps
the newest row per key; the daily rollup adds only the money, the attempt was counted when it arrived).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa

from schemas import Result
from workers.sink.clickhouse import UNIQUE_KEYS, ClickHouseStore
from workers.sink.ledger_tables import LedgerTables
from workers.sink.pricing import PriceCatalog

SOURCE = """
SELECT c.job_id AS job_id, c.attempt AS attempt, c.call_id AS call_id, c.repeat_call AS repeat_call,
       c.tenant AS tenant, c.task_type AS task_type, c.pool AS pool, c.provider AS provider, c.model AS model,
       if(r.status = '', 'ok', r.status) AS status, c.input_tokens AS input_tokens,
       c.cached_input_tokens AS cached_input_tokens, c.cache_write_tokens AS cache_write_tokens,
       c.cache_write_1h_tokens AS cache_write_1h_tokens, c.output_tokens AS output_tokens,
       c.reasoning_tokens AS reasoning_tokens, c.batch AS batch, r.latency_ms AS latency_ms,
       c.completed_at AS completed_at, c.total_cost_usd AS original_cost_usd,
       c.catalog_version AS original_catalog_version, c.priced AS priced
FROM cost_ledger AS c FINAL
LEFT JOIN results AS r FINAL ON c.job_id = r.job_id AND c.attempt = r.attempt AND c.call_id = r.call_id
WHERE c.completed_at >= {since:DateTime64(3)}
"""  # status and latency only complete the Result; a repeat call has no result row and prices the same
COLUMNS = (
    "job_id",
    "attempt",
    "call_id",
    "catalog_version",
    "tenant",
    "task_type",
    "pool",
    "model",
    "total_cost_usd",
    "original_cost_usd",
    "original_catalog_version",
    "completed_at",
)
USAGE_FIELDS = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
)


@dataclass(frozen=True)
class Repriced:
    attempts: int  # attempts priced into cost_repricings
    billed_usd: Decimal  # what the ledger holds for them
    repriced_usd: Decimal  # what the catalog charges for them
    newly_priced: int  # unpriced ledger rows the catalog now prices (rewritten in cost_ledger)
    newly_priced_usd: Decimal
    still_unpriced: int  # attempts whose model the catalog still does not price


def reprice(store: ClickHouseStore, catalog: PriceCatalog, since: datetime) -> Repriced:
    names, rows = store.query_with_names(SOURCE, {"since": since.astimezone(UTC).replace(tzinfo=None)})
    records = [dict(zip(names, row, strict=True)) for row in rows]
    results = [_result(record) for record in records]
    costs = [catalog.cost(result) for result in results]
    store.insert(
        "cost_repricings",
        [
            _repricing_row(record, result, cost)
            for record, result, cost in zip(records, results, costs, strict=True)
        ],
        COLUMNS,
    )
    fixed = [
        i
        for i, (record, cost) in enumerate(zip(records, costs, strict=True))
        if not record["priced"] and cost.priced
    ]
    fixed_usd = _price_unpriced(
        store, catalog, [results[i] for i in fixed], [records[i]["repeat_call"] for i in fixed]
    )
    return Repriced(
        attempts=len(records),
        billed_usd=sum((r["original_cost_usd"] for r in records), Decimal(0)),
        repriced_usd=sum((c.total_usd for c in costs), Decimal(0)),
        newly_priced=len(fixed),
        newly_priced_usd=fixed_usd,
        still_unpriced=sum(1 for c in costs if not c.priced),
    )


def _price_unpriced(
    store: ClickHouseStore, catalog: PriceCatalog, results: list[Result], repeats: list[int]
) -> Decimal:
    """Rewrite the cost rows of calls stored unpriced, now that the catalog prices them (same key: same call
    id, same repeat flag)."""
    if not results:
        return Decimal(0)
    tables = LedgerTables(results, catalog.price(results))
    rows = tables.flag_repeats(repeats).append_column("repriced", pa.array([1] * len(results), pa.uint8()))
    store.insert_arrow("cost_ledger", rows, settings=UNIQUE_KEYS)
    return Decimal(sum(tables.costs.total)).scaleb(-12)


def _result(record: dict[str, Any]) -> Result:
    return Result(
        job_id=record["job_id"],
        attempt=record["attempt"],
        tenant=record["tenant"],
        task_type=record["task_type"],
        pool=record["pool"],
        provider=record["provider"],
        model=record["model"],
        status=record["status"],
        usage={k: record[k] for k in USAGE_FIELDS},
        latency_ms=record["latency_ms"],
        completed_at=record["completed_at"].replace(tzinfo=UTC),
        batch=bool(record["batch"]),
        call_id=record["call_id"],
    )


def _repricing_row(record: dict[str, Any], result: Result, cost: Any) -> tuple[object, ...]:
    return (
        result.job_id,
        result.attempt,
        result.call_id,
        cost.catalog_version,
        result.tenant,
        result.task_type.value,
        result.pool,
        result.model,
        cost.total_usd,
        record["original_cost_usd"],
        record["original_catalog_version"],
        result.completed_at,
    )
