"""Budgets across processes: routers reserve what they admit, the sink settles reservations by the real cost and
publishes spend after writing, and routers enforce both; a 10x burst overshoots by at most one job."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from modelyard.core.rate_card import RateCard
from modelyard.core.settings import Settings, load_settings
from modelyard.core.topics import ensure_topics
from modelyard.local.processes import ProcessSupervisor, wait_for_port
from schemas import DeadLetter
from schemas.spend import SpendRecord
from tests.helpers import produce, read_topic, rows, wait_for_sink

pytestmark = pytest.mark.integration


def poem(job_id: str, tenant: str = "acme", max_output_tokens: int | None = None) -> bytes:
    params = {"max_output_tokens": max_output_tokens} if max_output_tokens else {}
    return orjson.dumps(
        {
            "job_id": job_id,
            "tenant": tenant,
            "input": "Write a poem about budgets",
            "task": "generation",
            "params": params,
        }
    )


async def wait_for_spend(settings: Settings, tenant: str, timeout: float = 60) -> SpendRecord:
    consumer = AIOKafkaConsumer(
        settings.kafka.spend_topic, auto_offset_reset="earliest", **settings.kafka.client_options()
    )
    await consumer.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for record in records:
                    spend = SpendRecord.model_validate_json(record.value)
                    if spend.tenant == tenant and spend.day_usd > 0:
                        return spend
    finally:
        await consumer.stop()
    raise AssertionError("no spend record published")


def test_tenant_over_daily_budget_is_rejected_before_frontier_spend(
    pipeline_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        **pipeline_env,
        "MODELYARD_COSTS__BUDGETS__ACME__DAILY_USD": "0.0001",
        "MODELYARD_COSTS__BUDGETS__ACME__ACTION": "reject",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    asyncio.run(ensure_topics(settings.kafka, settings.pools))
    with ProcessSupervisor(tmp_path / "logs", env=env) as supervisor:
        supervisor.start("simulator", "simulator")
        wait_for_port("127.0.0.1", settings.simulator.port, 30, supervisor)
        for name, *args in [("sink", "sink"), ("router", "router"), ("pool-frontier", "pool", "frontier")]:
            supervisor.start(name, *args)
        # The first burst: first-0 is admitted and reserves its estimate (more than the whole budget), so the
        # router refuses first-1..4 at once, before any spend is known (before reservations, all five ran).
        asyncio.run(produce(settings, [poem(f"first-{n}") for n in range(5)]))
        first = asyncio.run(read_topic(settings, settings.kafka.results_topic, 1, timeout=90))
        assert [orjson.loads(v)["job_id"] for v in first] == ["first-0"]
        spend = asyncio.run(wait_for_spend(settings, "acme"))
        assert spend.day_usd > settings.costs.budgets["acme"].daily_usd
        time.sleep(2.5)  # routers poll the spend topic every second
        asyncio.run(
            produce(settings, [poem(f"later-{n}") for n in range(3)] + [poem("other-tenant", "globex")])
        )
        letters = [
            DeadLetter.model_validate_json(v)
            for v in asyncio.run(read_topic(settings, settings.kafka.dead_letter_topic, 7, timeout=60))
        ]
        results = asyncio.run(read_topic(settings, settings.kafka.results_topic, 2, timeout=60))
    assert sorted((d.reason, d.field) for d in letters) == [("budget_exceeded", "tenant")] * 7
    assert {d.job_id for d in letters} == {f"first-{n}" for n in range(1, 5)} | {
        f"later-{n}" for n in range(3)
    }
    assert {orjson.loads(v)["job_id"] for v in results} == {"first-0", "other-tenant"}


async def outcomes(settings: Settings, expected: int, timeout: float) -> tuple[int, int]:
    """(dead letters, results) once they add up to `expected`, or at the timeout."""
    topics = [settings.kafka.dead_letter_topic, settings.kafka.results_topic]
    consumer = AIOKafkaConsumer(*topics, auto_offset_reset="earliest", **settings.kafka.client_options())
    await consumer.start()
    seen = {topic: 0 for topic in topics}
    deadline = time.monotonic() + timeout
    try:
        while sum(seen.values()) < expected and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=300)).items():
                seen[tp.topic] += len(records)
    finally:
        await consumer.stop()
    return seen[topics[0]], seen[topics[1]]


BURST = 200


def burst_budget(settings: Settings) -> Decimal:
    """19.3 poems' estimates (7 input tokens, 20 output at the frontier model's list rates): about a tenth of
    the burst, and not a whole number of jobs."""
    model = settings.pools["frontier"].model
    return RateCard.load().estimate(model, 7, 20, datetime.now(UTC).date()) * Decimal("19.3")


def test_a_10x_burst_overshoots_its_budget_by_at_most_one_job(
    pipeline_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 frontier jobs arrive at once for a tenant whose daily budget covers about 20. No spend is known until
    the sink writes, so without reservations every one of them is routed (a 10x overshoot); with them the router
    admits jobs while spend plus reservations (each job's input and whole output budget at list price) is under
    the budget, and the sink settles each reservation by the job's real cost."""
    budget = burst_budget(load_settings())
    env = {
        **pipeline_env,
        "MODELYARD_COSTS__BUDGETS__ACME__DAILY_USD": str(budget),
        "MODELYARD_COSTS__BUDGETS__ACME__ACTION": "reject",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    asyncio.run(ensure_topics(settings.kafka, settings.pools))
    with ProcessSupervisor(tmp_path / "logs", env=env) as supervisor:
        supervisor.start("simulator", "simulator")
        wait_for_port("127.0.0.1", settings.simulator.port, 30, supervisor)
        for name, *args in [("sink", "sink"), ("router", "router"), ("pool-frontier", "pool", "frontier")]:
            supervisor.start(name, *args)
        asyncio.run(produce(settings, [poem(f"burst-{n}", max_output_tokens=20) for n in range(BURST)]))
        refused, answered = asyncio.run(outcomes(settings, BURST, timeout=120))
        assert refused + answered == BURST, f"{refused} refused + {answered} answered of {BURST}"
        asyncio.run(wait_for_sink(settings, supervisor))
        supervisor.stop("sink")
    (ledger,) = rows(
        env,
        "SELECT count() AS jobs, sum(total_cost_usd) AS spent, max(total_cost_usd) AS dearest "
        "FROM cost_ledger WHERE tenant = 'acme'",
    )
    served, spent, dearest = (
        int(ledger["jobs"]),
        Decimal(str(ledger["spent"])),
        Decimal(str(ledger["dearest"])),
    )
    burst_cost = spent / served * BURST  # what routing all of them would have cost
    overshoot = spent - budget
    print(
        f"\nburst of {BURST}: budget ${budget}, {served} served, {refused} refused; spent ${spent} "
        f"(overshoot ${overshoot}, {overshoot / dearest:+.2f} jobs); the whole burst: ${burst_cost:.6f} "
        f"({burst_cost / budget:.1f}x the budget)"
    )
    assert served + refused == BURST and burst_cost >= 8 * budget
    assert spent <= budget + dearest  # at most one job over
    assert spent >= budget - 3 * dearest  # and the budget is used: the estimates are close to real costs
