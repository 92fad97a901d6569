"""ClickHouseStore against a real embedded ClickHouse engine (chdb) through clickhouse-connect."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from modelyard.core.settings import load_settings
from modelyard.ops.repricing import reprice
from schemas import Result
from schemas.migrations import load_migrations
from workers.sink.clickhouse import ClickHouseStore, _redacted
from workers.sink.pricing import PriceCatalog

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseStore]:
    path: Path = tmp_path_factory.mktemp("chdb")
    store = ClickHouseStore(load_settings(clickhouse={"dsn": f"chdb://{path}"}).clickhouse)
    yield store
    store.close()


def result(job_id: str, attempt: int = 1, output: str = "ok", call_id: str = "") -> Result:
    return Result(
        call_id=call_id,
        job_id=job_id,
        attempt=attempt,
        tenant="acme",
        task_type="classification",
        pool="frontier",
        provider="anthropic",
        model="claude-sonnet-5",
        status="ok",
        output=output,
        usage={"input_tokens": 1000, "cached_input_tokens": 200, "output_tokens": 10},
        latency_ms=12.5,
        completed_at=datetime.now(UTC),
    )


def test_migrations_apply_once(store: ClickHouseStore) -> None:
    first = store.migrate()
    assert store.migrate() == []
    assert first in ([m.version for m in load_migrations()], [])
    assert [m.version for m in load_migrations()] == list(range(1, 10))  # unique, in order, none skipped
    tables = {row[0] for row in store.query("SHOW TABLES")}
    assert {"results", "cost_ledger", "routing_decisions", "schema_migrations"} <= tables


def test_replayed_results_bill_once(store: ClickHouseStore) -> None:
    store.migrate()
    catalog = PriceCatalog.load()
    batch = [result("replay-1"), result("replay-2"), result("replay-2", attempt=2)]
    store.write_batch(batch, catalog.price(batch))
    store.write_batch(batch[:2], catalog.price(batch[:2]))  # a replay after a crash before commit
    rows = store.query(
        "SELECT job_id, attempt, total_cost_usd FROM cost_ledger FINAL WHERE startsWith(job_id, 'replay-') ORDER BY job_id, attempt"
    )
    expected = Decimal("0.002") + Decimal("0.00004") + Decimal("0.0001")  # claude-sonnet-5: $2, $0.20, $10
    assert rows == [("replay-1", 1, expected), ("replay-2", 1, expected), ("replay-2", 2, expected)]
    assert store.query("SELECT count() FROM results FINAL WHERE startsWith(job_id, 'replay-')") == [(3,)]
    # the replay was skipped before insert, so raw rows and the materialized daily rollup count it once
    assert store.query("SELECT count() FROM cost_ledger WHERE startsWith(job_id, 'replay-')") == [(3,)]
    rollup = store.query("SELECT sum(attempts), sum(cost_usd) FROM v_cost_by_day WHERE tenant = 'acme'")
    assert rollup == [(3, expected * 3)]
    store.write_batch([], catalog.price([]))  # a batch of routing decisions only: no result, nothing to write
    assert store.query("SELECT count() FROM cost_ledger WHERE startsWith(job_id, 'replay-')") == [(3,)]


def test_analyst_views_answer(store: ClickHouseStore) -> None:
    store.migrate()
    for view in (
        "v_cost_by_day",
        "v_latency_by_pool",
        "v_escalation_rate",
        "v_savings",
        "v_attempt_savings",
        "v_job_savings",
        "v_unpriced",
    ):
        store.query(f"SELECT * FROM {view} LIMIT 1")
    assert store.query("SELECT sum(results) FROM v_latency_by_pool")[0][0] >= 3


def test_dsn_password_is_redacted_in_messages() -> None:
    assert _redacted("https://analyst:hunter2@ch.example:8443/db") == "https://analyst:***@ch.example:8443/db"


def test_stored_key_check_matches_awkward_job_ids(store: ClickHouseStore) -> None:
    store.migrate()
    awkward = [
        result(job_id)
        for job_id in (
            "it's",
            'say "hi"\\',
            "line\nbreak",
            "ünï\u2028",
            "tab\there",
            "cr\r",
            "nul\0",
            "back\\nslash",
            "{ids:String}",
            "%s %(x)s",
            "",
        )
    ]
    store.write_batch(awkward, PriceCatalog.load().price(awkward))
    keys = [(r.job_id, 1) for r in awkward] + [("it's", 2), ("never-stored", 1)]
    assert store.unseen("results", keys) == {("it's", 2), ("never-stored", 1)}
    # ids that need no TSV escaping take the unescaped path; an empty id is still a line of its own
    assert store.unseen(
        "results", [("", 1), ("it's", 1), ("ünï\u2028", 1), ("{ids:String}", 1), ("x", 1)]
    ) == {("x", 1)}


def test_stored_key_check_sizes_its_query_in_bytes(store: ClickHouseStore) -> None:
    """Multi-byte job ids: a query sized in characters was refused (max_query_size) and wedged the sink."""
    store.migrate()
    wide = [result("\u00e9" * 120_000 + str(k)) for k in range(3)]  # ~240 KB of UTF-8 each, 120k characters
    store.write_batch(wide, PriceCatalog.load().price(wide))
    assert store.unseen("results", [(r.job_id, 1) for r in wide] + [("\u00e9", 1)]) == {("\u00e9", 1)}


def test_a_key_twice_in_one_batch_is_stored_once_the_first_copy(store: ClickHouseStore) -> None:
    """The same call twice in a batch (a replayed message): one result, one cost row. Which copy: the first, as
    across batches (with call ids, the first call of an attempt is its result; workers/sink/call_rows.py)."""
    store.migrate()
    batch = [result("twice-1", output="first"), result("twice-2"), result("twice-1", output="second")]
    store.write_batch(batch, PriceCatalog.load().price(batch))
    # no FINAL: the insert itself holds one row per key (optimize_on_insert is off for these inserts)
    assert store.query(
        "SELECT job_id, output FROM results WHERE startsWith(job_id, 'twice-') ORDER BY job_id"
    ) == [
        ("twice-1", "first"),
        ("twice-2", "ok"),
    ]
    assert store.query("SELECT count() FROM cost_ledger WHERE startsWith(job_id, 'twice-')") == [(2,)]


def test_a_second_real_call_is_billed_and_flagged_a_replayed_one_is_not(store: ClickHouseStore) -> None:
    store.migrate()
    catalog = PriceCatalog.load()
    first = [result("call-1", output="first", call_id="c1")]
    store.write_batch(first, catalog.price(first))
    again = [result("call-1", output="first", call_id="c1"), result("call-1", output="again", call_id="c2")]
    store.write_batch(again, catalog.price(again))  # the replayed message, then a second real call
    store.write_batch(again, catalog.price(again))  # and that batch replayed whole
    assert store.query(
        "SELECT call_id, repeat_call, total_cost_usd > 0 FROM cost_ledger WHERE job_id = 'call-1' ORDER BY call_id"
    ) == [("c1", 0, True), ("c2", 1, True)]
    assert store.query("SELECT call_id, output FROM results WHERE job_id = 'call-1'") == [("c1", "first")]
    assert store.query("SELECT calls, jobs FROM v_repeat_calls WHERE tenant = 'acme'") == [(1, 1)]


def test_a_repeat_call_counts_its_cost_once_books_the_reference_once_and_is_repriced(
    store: ClickHouseStore,
) -> None:
    store.migrate()
    catalog = PriceCatalog.load()
    calls = [result("again-1", call_id="k1"), result("again-1", output="again", call_id="k2")]
    store.write_batch(calls, catalog.price(calls))
    one = catalog.cost(calls[0])
    ((cost, reference),) = store.query(
        "SELECT cost_usd, reference_cost_usd FROM v_job_savings WHERE job_id = 'again-1'"
    )
    assert (cost, reference) == (2 * one.total_usd, one.reference_usd)  # both calls billed, one reference
    reprice(store, catalog, datetime(2000, 1, 1, tzinfo=UTC))
    assert store.query(
        "SELECT call_id, total_cost_usd FROM cost_repricings FINAL WHERE job_id = 'again-1' ORDER BY call_id"
    ) == [("k1", one.total_usd), ("k2", one.total_usd)]
