"""The sink's Arrow tables: exact amounts, UTC milliseconds floored like clickhouse-connect, shared columns."""

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from schemas import Result
from workers.sink.ledger_tables import COST_COLUMNS, RESULT_COLUMNS, LedgerTables
from workers.sink.pricing import PricedColumns

AT = datetime(2026, 5, 1, 12, 0, 0, 999_999, tzinfo=timezone(timedelta(hours=2)))


def result(job_id: str, **fields: object) -> Result:
    return Result(
        **{
            "job_id": job_id,
            "attempt": 2,
            "tenant": "t",
            "task_type": "extraction",
            "pool": "p",
            "provider": "x",
            "model": "m",
            "status": "ok",
            "usage": {"input_tokens": 7, "output_tokens": 3},
            "latency_ms": 1.5,
            "completed_at": AT,
            **fields,
        }
    )


def costs(*totals: int) -> PricedColumns:
    n = len(totals)
    return PricedColumns(
        input=list(totals),
        cached_input=[0] * n,
        cache_write=[0] * n,
        output=[0] * n,
        reasoning=[0] * n,
        total=list(totals),
        reference=[5 * t for t in totals],
        savings=[4 * t for t in totals],
        catalog_version=["x@1"] * n,
        self_hosted=[1] * n,
        reference_model=["ref"] * n,
        cache_write_1h=[0] * n,
        catalog_model=["m"] * n,
        priced=[1] * n,
        long_context=[0] * n,
    )


def test_amounts_are_exact_ledger_decimals() -> None:
    tables = LedgerTables([result("a"), result("b", batch=True)], costs(1, 123_456_789_012_345_678))
    ledger = tables.cost_ledger.to_pylist()
    assert ledger[0]["total_cost_usd"] == Decimal("0.000000000001")
    assert ledger[1]["total_cost_usd"] == Decimal("123456.789012345678")
    assert ledger[1]["savings_usd"] == Decimal("493827.156049382712")
    assert (ledger[1]["batch"], ledger[0]["batch"], ledger[0]["self_hosted"]) == (1, 0, 1)
    assert tables.cost_ledger.column_names == list(COST_COLUMNS)


def test_times_are_utc_milliseconds_floored_and_nulls_stay_null() -> None:
    tables = LedgerTables([result("a", confidence=None, error="boom", output=None)], costs(0))
    row = tables.results.to_pylist()[0]
    assert row["completed_at"] == datetime(2026, 5, 1, 10, 0, 0, 999_000, tzinfo=UTC)
    assert (row["confidence"], row["error"], row["output"], row["task_type"], row["attempt"]) == (
        None,
        "boom",
        "",
        "extraction",
        2,
    )
    assert (row["input_tokens"], row["output_tokens"]) == (7, 3)
    assert tables.results.column_names == list(RESULT_COLUMNS)
