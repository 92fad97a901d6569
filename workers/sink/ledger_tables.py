"""A batch of results and their costs as two Arrow tables (results, cost_ledger): one columnar insert each.

Columns are built once per batch from attribute lists, shared by both tables, never as per-row tuples.
ClickHouse casts each Arrow column to the table's type (string to LowCardinality(String), and so on).
Amounts go in as Decimal128(24, 12) made from whole ledger units, so they are exact; times are floored to
the millisecond, as clickhouse-connect's own DateTime64(3) conversion does. Both tables carry each result's
call id; `repeat_call` is set once the store knows which calls already have their result (`flag_repeats`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from operator import attrgetter

import pyarrow as pa
import pyarrow.compute as pc

from schemas import AnyResult
from workers.sink.pricing import PricedColumns

LEDGER_AMOUNT = pa.decimal128(24, 12)  # cost_ledger's Decimal(24, 12)
WHOLE_UNITS = pa.decimal128(38, 0)  # the same 128-bit integers, read without the scale
RESULT_COLUMNS = (
    "job_id",
    "attempt",
    "tenant",
    "task_type",
    "pool",
    "provider",
    "model",
    "status",
    "output",
    "confidence",
    "error",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "latency_ms",
    "batch",
    "completed_at",
    "cached",
    "call_id",
)
COST_COLUMNS = (
    "job_id",
    "attempt",
    "tenant",
    "task_type",
    "pool",
    "provider",
    "model",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "input_cost_usd",
    "cached_input_cost_usd",
    "cache_write_cost_usd",
    "cache_write_1h_cost_usd",
    "output_cost_usd",
    "reasoning_cost_usd",
    "total_cost_usd",
    "catalog_version",
    "catalog_model",
    "priced",
    "long_context",
    "batch",
    "self_hosted",
    "reference_model",
    "reference_cost_usd",
    "savings_usd",
    "completed_at",
    "cached",
    "cached_from",
    "cache_saved_usd",
    "call_id",
    "repeat_call",
)
TOKEN_KINDS = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
)


class LedgerTables:
    def __init__(
        self, results: Sequence[AnyResult], costs: PricedColumns, cache_saved: list[int] | None = None
    ) -> None:
        """`cache_saved`: per row, the ledger units a cache hit saved (workers/sink/cache_savings.py); None: none."""
        if len(results) != len(costs):
            raise ValueError(f"{len(results)} results but {len(costs)} costs")
        self.rows = results
        self.costs = costs
        self.cache_saved = cache_saved
        self.job_ids = [r.job_id for r in results]  # with `attempts`, the key results dedup on
        self.attempts = [r.attempt for r in results]
        self.call_ids = [r.call_id for r in results]  # with both, the key the ledger dedups on

    def __len__(self) -> int:
        return len(self.rows)

    @cached_property
    def results(self) -> pa.Table:
        rows = self.rows
        own = {
            "status": pa.array([r.status for r in rows], pa.string()),  # a StrEnum member is its value
            "output": pa.array([r.output or "" for r in rows], pa.string()),
            "confidence": pa.array([r.confidence for r in rows], pa.float64()),
            "error": pa.array([r.error for r in rows], pa.string()),
            "latency_ms": pa.array([r.latency_ms for r in rows], pa.float64()),
        }
        return _table(RESULT_COLUMNS, self._shared | own)

    @cached_property
    def cost_ledger(self) -> pa.Table:
        c = self.costs
        total = amounts(c.total)
        own = {
            "input_cost_usd": amounts(c.input),
            "cached_input_cost_usd": amounts(c.cached_input),
            "cache_write_cost_usd": amounts(c.cache_write),
            "cache_write_1h_cost_usd": amounts(c.cache_write_1h),
            "output_cost_usd": amounts(c.output),
            "reasoning_cost_usd": amounts(c.reasoning),
            "total_cost_usd": total,
            "catalog_version": pa.array(c.catalog_version, pa.string()),
            "catalog_model": pa.array(c.catalog_model, pa.string()),
            "priced": pa.array(c.priced, pa.uint8()),
            "long_context": pa.array(c.long_context, pa.uint8()),
            "self_hosted": pa.array(c.self_hosted, pa.uint8()),
            "reference_model": pa.array(c.reference_model, pa.string()),
            "reference_cost_usd": total if c.reference is c.total else amounts(c.reference),
            "savings_usd": amounts(c.savings),
            "cached_from": pa.array(
                [r.cached_from.job_id if r.cached_from else "" for r in self.rows], pa.string()
            ),
            "cache_saved_usd": amounts(self.cache_saved or [0] * len(self.rows)),
            "repeat_call": pa.array([0] * len(self), pa.uint8()),
        }
        return _table(COST_COLUMNS, self._shared | own)

    def flag_repeats(self, repeat: list[int]) -> pa.Table:
        """The cost rows with `repeat_call` set per row (1: a call whose result is not the one kept)."""
        ledger = self.cost_ledger
        if not any(repeat):
            return ledger
        at = ledger.column_names.index("repeat_call")
        return ledger.set_column(at, "repeat_call", pa.array(repeat, pa.uint8()))

    @cached_property
    def _shared(self) -> dict[str, pa.Array]:
        """Columns both tables carry, built once, each straight from the rows' attributes."""
        rows = self.rows
        usages = [r.usage for r in rows]
        columns = {
            "job_id": pa.array(self.job_ids, pa.string()),
            "attempt": pa.array(self.attempts, pa.uint16()),
            "tenant": pa.array([r.tenant for r in rows], pa.string()),
            "task_type": pa.array([r.task_type for r in rows], pa.string()),
            "pool": pa.array([r.pool for r in rows], pa.string()),
            "provider": pa.array([r.provider for r in rows], pa.string()),
            "model": pa.array([r.model for r in rows], pa.string()),
            "batch": pa.array([r.batch for r in rows], pa.bool_()).cast(pa.uint8()),
            "completed_at": milliseconds([r.completed_at for r in rows]),
            "cached": pa.array([r.cached for r in rows], pa.bool_()).cast(pa.uint8()),
            "call_id": pa.array(self.call_ids, pa.string()),
        }
        return columns | {
            kind: pa.array(list(map(attrgetter(kind), usages)), pa.uint32()) for kind in TOKEN_KINDS
        }


def _table(names: Sequence[str], columns: dict[str, pa.Array]) -> pa.Table:
    return pa.table({name: columns[name] for name in names})


def amounts(units: list[int]) -> pa.Array:
    """Whole ledger units (1e-12 USD) as exact Decimal128(24, 12) values (through int64 while they fit: faster)."""
    try:
        whole = pa.array(units, pa.int64()).cast(WHOLE_UNITS)
    except OverflowError:  # past 2**63 units (9.2 million USD in one row)
        whole = pa.array(units, WHOLE_UNITS)
    return whole.view(LEDGER_AMOUNT)


def milliseconds(times: list) -> pa.Array:
    """Aware datetimes as UTC milliseconds, floored (5.6789 ms -> 5 ms)."""
    exact = pa.array(times, pa.timestamp("us", tz="UTC"))
    return pc.floor_temporal(exact, unit="millisecond").cast(pa.timestamp("ms", tz="UTC"))
