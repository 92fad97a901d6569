"""ClickHouseStore against a real embedded ClickHouse engine (chdb) through clickhouse-connect."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from modelyard.core.settings import load_settings
from schemas import Result
from workers.sink.clickhouse import ClickHouseStore, _redacted
from workers.sink.pricing import PriceCatalog

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseStore]:
    path: Path = tmp_path_factory.mktemp("chdb")
    store = ClickHouseStore(load_settings(clickhouse={"dsn": f"chdb://{path}"}).clickhouse)
    yield store
    store.close()


def result(job_id: str, attempt: int = 1, output: str = "ok") -> Result:
    return Result(
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
    assert first in ([1, 2, 3, 4, 5, 6, 7], [])
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


def test_a_key_twice_in_one_batch_is_stored_once_the_last_copy(store: ClickHouseStore) -> None:
    store.migrate()
    batch = [result("twice-1", output="first"), result("twice-2"), result("twice-1", output="second")]
    store.write_batch(batch, PriceCatalog.load().price(batch))
    # no FINAL: the insert itself holds one row per key (optimize_on_insert is off for these inserts)
    assert store.query(
        "SELECT job_id, output FROM results WHERE startsWith(job_id, 'twice-') ORDER BY job_id"
    ) == [
        ("twice-1", "second"),
        ("twice-2", "ok"),
    ]
    assert store.query("SELECT count() FROM cost_ledger WHERE startsWith(job_id, 'twice-')") == [(2,)]
