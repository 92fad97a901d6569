"""Analyst reports over a real chDB engine: grouping, exports, charts, repricing, budgets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from modelyard.core.settings import BudgetSettings, load_settings
from modelyard.ops.cost_report import CostReport, parse_dimensions, parse_since, plot_stacked
from schemas import Result
from workers.sink.clickhouse import ClickHouseStore
from workers.sink.pricing import PriceCatalog

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseStore]:
    store = ClickHouseStore(
        load_settings(clickhouse={"dsn": f"chdb://{tmp_path_factory.mktemp('chdb-costs')}"}).clickhouse
    )
    store.migrate()
    catalog = PriceCatalog.load(reference_model="claude-sonnet-5")
    results = [
        _result(f"c-{n}", tenant, pool, model, NOW - timedelta(days=day))
        for n, (tenant, pool, model, day) in enumerate(
            [
                ("acme", "slm", "HuggingFaceTB/SmolLM2-135M-Instruct", 0),
                ("acme", "frontier", "claude-sonnet-5", 0),
                ("globex", "slm", "HuggingFaceTB/SmolLM2-135M-Instruct", 1),
                ("globex", "frontier", "claude-sonnet-5", 30),
            ]
        )
    ]
    store.write_batch(results, catalog.price(results))
    yield store
    store.close()


def _result(job_id: str, tenant: str, pool: str, model: str, at: datetime) -> Result:
    return Result(
        job_id=job_id,
        attempt=1,
        tenant=tenant,
        task_type="classification",
        pool=pool,
        provider="p",
        model=model,
        status="ok",
        usage={"input_tokens": 1_000_000, "output_tokens": 100_000},
        latency_ms=5,
        completed_at=at,
    )


def test_costs_by_tenant_and_pool_since(store: ClickHouseStore) -> None:
    table = CostReport(store).by(parse_dimensions("tenant,pool"), parse_since("7d"))
    rows = {(r[0], r[1]): r for r in table.rows}
    assert set(rows) == {
        ("acme", "slm"),
        ("acme", "frontier"),
        ("globex", "slm"),
    }  # the 30-day-old row is out
    cost = table.names.index("cost_usd")
    assert rows[("acme", "frontier")][cost] == Decimal("3")  # 1M * $2 + 0.1M * $10
    slm = rows[("acme", "slm")]
    assert slm[table.names.index("savings_usd")] == Decimal("3") - slm[cost] > 0
    assert slm[table.names.index("reference_usd")] == Decimal("3") and slm[table.names.index("unpriced")] == 0


def test_exports_and_chart(store: ClickHouseStore, tmp_path: Path) -> None:
    table = CostReport(store).by(parse_dimensions("day,pool"), parse_since("60d"))
    assert (
        table.to_csv().splitlines()[0]
        == "day,pool,attempts,jobs,input_tokens,output_tokens,cost_usd,reference_usd,savings_usd,unpriced,"
        "cached_attempts,cache_hit_rate,cache_saved_usd"
    )
    assert "E-" not in table.to_csv()
    assert {row["pool"] for row in json.loads(table.to_json())} == {"slm", "frontier"}
    chart = plot_stacked(table, tmp_path / "costs.png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reprice_keeps_the_original_figures(store: ClickHouseStore, tmp_path: Path) -> None:
    (tmp_path / "anthropic.yaml").write_text(
        "provider: anthropic\nversion: cheaper\nmodels:\n  claude-sonnet-5:\n"
        "    - {effective_from: 2020-01-01, input: '1', cached_input: '0.1', output: '5'}\n"
    )
    (tmp_path / "vllm.yaml").write_text(
        (Path(__file__).parents[2] / "modelyard/data/prices/vllm.yaml").read_text()
    )
    done = CostReport(store).reprice(PriceCatalog.load(tmp_path), parse_since("7d"))
    assert done.attempts == 3 and done.repriced_usd < done.billed_usd and done.newly_priced == 0
    assert store.query("SELECT total_cost_usd FROM cost_repricings FINAL WHERE job_id = 'c-1'") == [
        (Decimal("1.5"),)
    ]
    assert store.query("SELECT total_cost_usd FROM cost_ledger FINAL WHERE job_id = 'c-1'") == [
        (Decimal("3"),)
    ]


def test_budgets_flag_tenants_over_their_limit(store: ClickHouseStore) -> None:
    budgets = {
        "acme": BudgetSettings(daily_usd=Decimal("1")),
        "globex": BudgetSettings(monthly_usd=Decimal("100")),
    }
    table = CostReport(store).budgets(budgets)
    status = {row[0]: row[-1] for row in table.rows}
    assert status == {"acme": "over -> downgrade", "globex": "ok"}


def test_bad_report_arguments_name_the_option() -> None:
    from modelyard.core._exceptions import InvalidInput

    with pytest.raises(InvalidInput, match="--by"):
        parse_dimensions("colour")
    with pytest.raises(InvalidInput, match="--since"):
        parse_since("last tuesday")
