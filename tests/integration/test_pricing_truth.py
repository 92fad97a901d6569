"""Pricing truth against a real chDB engine: unpriced results listed and repriced once a price exists, savings per
job (escalations and failovers included), and the ledger reconciled with the providers' usage exports."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from modelyard.ops.cost_report import CostReport, parse_dimensions, parse_since
from modelyard.ops.reconcile import ALL_MODELS, reconcile
from modelyard.ops.usage_exports import read_export
from schemas import Result
from workers.sink.clickhouse import ClickHouseStore
from workers.sink.pricing import PriceCatalog

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
EXPORTS = ROOT / "tests" / "fixtures" / "exports"
CATALOG = PriceCatalog.load(reference_model="claude-sonnet-5")
NOW = datetime.now(UTC).replace(microsecond=0)
SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def result(
    job_id: str, attempt: int, pool: str, provider: str, model: str, status: str, **kw: object
) -> Result:
    at = kw.pop("at", NOW)
    return Result(
        job_id=job_id,
        attempt=attempt,
        tenant=str(kw.pop("tenant", "acme")),
        task_type="classification",
        pool=pool,
        provider=provider,
        model=model,
        status=status,
        usage=kw.pop("usage", {"input_tokens": 1_000_000, "output_tokens": 100_000}),
        latency_ms=5,
        completed_at=at,
        **kw,
    )


def write(store: ClickHouseStore, rows: list[Result], catalog: PriceCatalog = CATALOG) -> None:
    store.write_batch(rows, catalog.price(rows))


def test_unpriced_results_are_flagged_listed_and_repriced_once_a_price_exists(
    store: ClickHouseStore, tmp_path: Path
) -> None:
    unknown = "nova-1-2026-11-15"  # a dated id of a model no price file lists yet
    write(
        store,
        [
            result("u-1", 1, "frontier", "newco", unknown, "ok"),
            result(
                "u-2", 1, "frontier", "newco", unknown, "ok", usage={"input_tokens": 10, "output_tokens": 1}
            ),
            result("p-1", 1, "frontier", "anthropic", "claude-sonnet-5-20260630", "ok"),
        ],
    )
    assert store.query(
        "SELECT job_id, priced, total_cost_usd, catalog_version FROM cost_ledger FINAL ORDER BY job_id"
    ) == [
        ("p-1", 1, Decimal("3"), "anthropic@2026-12-01"),  # 1M * $2 + 0.1M * $10
        ("u-1", 0, Decimal(0), "unpriced"),
        ("u-2", 0, Decimal(0), "unpriced"),
    ]
    listed = CostReport(store).unpriced(CATALOG)
    assert [row[:4] for row in listed.rows] == [("newco", unknown, 2, 2)]
    assert listed.rows[0][listed.names.index("catalog_now")] == "no price yet"
    assert CostReport(store).reprice(CATALOG, parse_since("1d")).newly_priced == 0  # still no price

    prices = tmp_path / "prices"
    shutil.copytree(ROOT / "modelyard" / "data" / "prices", prices)
    (prices / "newco.yaml").write_text(
        "provider: newco\nversion: v1\nmodels:\n  nova-1:\n"
        "    - {effective_from: 2026-11-15, input: '0.50', cached_input: '0.05', output: '4.00'}\n"
    )
    priced_now = PriceCatalog.load(prices, reference_model="claude-sonnet-5")
    assert CostReport(store).unpriced(priced_now).rows[0][-1] == "nova-1 (dated): run `costs reprice`"
    done = CostReport(store).reprice(priced_now, parse_since("1d"))
    # u-1: 1M * $0.50 + 0.1M * $4 = $0.90; u-2: 10 * 0.50/M + 1 * 4/M = $0.000009
    assert (done.attempts, done.newly_priced, done.newly_priced_usd, done.still_unpriced) == (
        3,
        2,
        Decimal("0.900009"),
        0,
    )
    assert store.query(
        "SELECT job_id, priced, repriced, catalog_model, total_cost_usd, savings_usd FROM cost_ledger FINAL "
        "WHERE job_id LIKE 'u-%' ORDER BY job_id"
    ) == [
        ("u-1", 1, 1, "nova-1", Decimal("0.9"), Decimal("2.1")),  # the reference, claude-sonnet-5: $3
        ("u-2", 1, 1, "nova-1", Decimal("0.000009"), Decimal("0.000021")),  # reference $0.00003
    ]
    assert CostReport(store).unpriced(priced_now).rows == []
    # the rollup (budgets read it) gains the money once and counts each attempt once
    rollup = (
        "SELECT sum(attempts), sum(input_tokens), sum(cost_usd) FROM v_cost_by_day WHERE model = {m:String}"
    )
    assert store.query(rollup, {"m": unknown}) == [(2, 1_000_010, Decimal("0.900009"))]
    assert CostReport(store).reprice(priced_now, parse_since("1d")).newly_priced == 0  # nothing left to do
    assert store.query(rollup, {"m": unknown}) == [(2, 1_000_010, Decimal("0.900009"))]


def test_savings_are_per_job_across_escalations_and_failovers(store: ClickHouseStore) -> None:
    half = {"input_tokens": 500_000, "output_tokens": 50_000}
    write(
        store,
        [
            # escalated: the SLM answer was not good enough, the reference model answered
            result("esc", 1, "slm", "vllm", SMOL, "escalated"),
            result("esc", 2, "frontier", "anthropic", "claude-sonnet-5", "ok"),
            # the SLM alone
            result("slm", 1, "slm", "vllm", SMOL, "ok"),
            # failed over: Anthropic failed without tokens, OpenAI answered
            result("fo", 1, "frontier", "anthropic", "claude-sonnet-5", "failed_over", usage={}),
            result("fo", 2, "frontier", "openai", "gpt-5-mini-2025-08-07", "ok", usage=half),
            # dearer than the reference: Opus at $5/$25 against Sonnet 5 at $2/$10
            result("opus", 1, "frontier", "anthropic", "claude-opus-5", "ok"),
        ],
    )
    slm = CATALOG.cost(result("x", 1, "slm", "vllm", SMOL, "ok")).total_usd  # an H100 hour for 36M tokens
    assert Decimal("0.0763") < slm < Decimal("0.0764")
    jobs = {
        row[0]: row
        for row in store.query(
            "SELECT job_id, attempts, cost_usd, reference_cost_usd, savings_usd FROM v_job_savings"
        )
    }
    assert jobs["esc"][1:] == (2, Decimal("3") + slm, Decimal("3"), -slm)  # the escalation cost the SLM call
    assert jobs["slm"][3:] == (Decimal("3"), Decimal("3") - slm)
    # the reference is priced on the tokens of the answer (the OpenAI attempt), 0.5M in + 50k out at $2/$10
    assert jobs["fo"][2:] == (Decimal("0.225"), Decimal("1.5"), Decimal("1.275"))
    assert jobs["opus"][2:] == (Decimal("7.5"), Decimal("3"), Decimal("-4.5"))

    table = CostReport(store).by(parse_dimensions("pool"), parse_since("1d"))
    by_pool = {row[0]: dict(zip(table.names, row, strict=True)) for row in table.rows}
    # per pool, the escalated SLM attempt costs what it saved nothing for
    assert by_pool["slm"]["savings_usd"] == Decimal("3") - 2 * slm
    assert by_pool["frontier"]["savings_usd"] == Decimal("1.275") - Decimal("4.5")
    total = sum(row["savings_usd"] for row in by_pool.values())
    assert total == sum(job[4] for job in jobs.values())  # pools add up to the jobs
    listed = CostReport(store).jobs(parse_since("1d"), limit=2)
    assert [row[0] for row in listed.rows] == ["opus", "esc"]  # least saved first


def test_reconcile_against_both_providers_exports(store: ClickHouseStore) -> None:
    day29 = datetime(2026, 11, 29, 10, tzinfo=UTC)
    openai_usage = {
        "input_tokens": 1300,
        "cached_input_tokens": 3200,
        "output_tokens": 1300,
        "reasoning_tokens": 1024,
    }
    anthropic_usage = {
        "input_tokens": 2095,
        "cached_input_tokens": 12000,
        "cache_write_tokens": 3000,
        "cache_write_1h_tokens": 2000,
        "output_tokens": 503,
    }
    rows = [
        result(f"o-{n}", 1, "frontier", "openai", "gpt-5-mini-2025-08-07", "ok", usage=openai_usage, at=at)
        for n, at in enumerate([day29, day29 + timedelta(hours=1), day29 + timedelta(days=1)])
    ] + [
        result(
            f"a-{n}",
            1,
            "frontier",
            "anthropic",
            "claude-sonnet-4-5-20250929",
            "ok",
            usage=anthropic_usage,
            at=at,
        )
        for n, at in enumerate([day29, day29 + timedelta(days=1)])
    ]
    write(store, rows)
    export = read_export(
        "openai",
        [(n, (EXPORTS / n).read_bytes()) for n in ("openai_usage_completions.json", "openai_costs.json")],
    )
    table = reconcile(store, CATALOG, export, "openai")
    got = [dict(zip(table.names, row, strict=True)) for row in table.rows]
    assert [(r["day"], r["model"]) for r in got] == [
        (date(2026, 11, 29), "gpt-5-mini"),
        (date(2026, 11, 30), "gpt-5-mini"),
    ]
    assert (got[0]["usd_ledger"], got[0]["usd_invoice"], got[0]["usd_diff"], got[0]["tokens_diff"]) == (
        Decimal("0.00601"),
        Decimal("0.00601"),
        Decimal(0),
        0,
    )
    # a call the provider billed that the ledger never saw
    assert (got[1]["attempts"], got[1]["requests"], got[1]["tokens_diff"], got[1]["usd_diff"]) == (
        1,
        2,
        -5800,
        Decimal("-0.003005"),
    )

    export = read_export(
        "anthropic",
        [
            (n, (EXPORTS / n).read_bytes())
            for n in ("anthropic_usage_report.jsonl", "anthropic_cost_report.json")
        ],
    )
    table = reconcile(store, CATALOG, export, "anthropic")
    diffs = {(row[0], row[1]): row[table.names.index("usd_diff")] for row in table.rows}
    assert diffs == {
        (date(2026, 11, 29), "claude-sonnet-4-5"): Decimal(0),  # 1-hour writes priced as billed, to the cent
        (date(2026, 11, 30), "claude-sonnet-4-5"): Decimal("-0.03318"),
    }

    ungrouped = read_export("openai", [("c.json", (EXPORTS / "openai_costs_ungrouped.json").read_bytes())])
    write(
        store,
        [result("o-dec", 1, "frontier", "openai", "gpt-4o", "ok", at=datetime(2026, 12, 1, tzinfo=UTC))],
    )
    (row,) = reconcile(store, CATALOG, ungrouped, "openai").rows
    assert row[:3] == (date(2026, 12, 1), ALL_MODELS, 1)
    assert row[-4:-1] == (Decimal("3.5"), Decimal("0.06"), Decimal("3.44"))  # 1M * $2.50 + 0.1M * $10
