"""Budgets across processes: the sink publishes spend after writing, routers enforce it on later items."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from modelyard.core.settings import Settings, load_settings
from modelyard.core.topics import ensure_topics
from modelyard.local.processes import ProcessSupervisor, wait_for_port
from schemas import DeadLetter
from schemas.spend import SpendRecord
from tests.integration.test_end_to_end import read_topic
from tests.integration.test_router import produce

pytestmark = pytest.mark.integration


def poem(job_id: str, tenant: str = "acme") -> bytes:
    return orjson.dumps(
        {"job_id": job_id, "tenant": tenant, "input": "Write a poem about budgets", "task": "generation"}
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
    asyncio.run(ensure_topics(settings))
    with ProcessSupervisor(tmp_path / "logs", env=env) as supervisor:
        supervisor.start("simulator", "simulator")
        wait_for_port("127.0.0.1", settings.simulator.port, 30, supervisor)
        for name, *args in [("sink", "sink"), ("router", "router"), ("pool-frontier", "pool", "frontier")]:
            supervisor.start(name, *args)
        asyncio.run(produce(settings, [poem(f"first-{n}") for n in range(5)]))
        first = asyncio.run(read_topic(settings, settings.kafka.results_topic, 5, timeout=90))
        assert len(first) == 5
        spend = asyncio.run(wait_for_spend(settings, "acme"))
        assert spend.day_usd > settings.costs.budgets["acme"].daily_usd
        time.sleep(2.5)  # routers poll the spend topic every second
        asyncio.run(
            produce(settings, [poem(f"later-{n}") for n in range(3)] + [poem("other-tenant", "globex")])
        )
        letters = [
            DeadLetter.model_validate_json(v)
            for v in asyncio.run(read_topic(settings, settings.kafka.dead_letter_topic, 3, timeout=60))
        ]
        results = asyncio.run(read_topic(settings, settings.kafka.results_topic, 6, timeout=60))
    assert sorted((d.reason, d.field) for d in letters) == [("budget_exceeded", "tenant")] * 3
    assert {orjson.loads(v)["job_id"] for v in results} == {f"first-{n}" for n in range(5)} | {"other-tenant"}
