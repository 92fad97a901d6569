"""Bulk economics against real Kafka, the simulator over HTTP and chDB: the result cache (billed at zero with
the saving, never across tenants, surviving a restart), expired items never called, and the order a pool
serves a small tenant and priority-9 items in while a big tenant's backlog waits."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from modelyard.app import build_sink
from modelyard.core.settings import Settings
from modelyard.core.topics import group_lag
from schemas import Assignment, Result, ResultStatus, TaskType, WorkItem
from schemas.cache import CacheDirective
from tests.helpers import TICKET_LABELS, Pipeline, running_simulator
from workers.sink.clickhouse import ClickHouseStore
from workers.sink.pricing import PriceCatalog

pytestmark = pytest.mark.integration
TEXT = "I was charged twice for my subscription"


def assignment(
    job_id: str,
    tenant: str,
    text: str = TEXT,
    scope: str | None = "tenant",
    priority: int = 5,
    deadline: datetime | None = None,
) -> Assignment:
    item = WorkItem(
        job_id=job_id,
        tenant=tenant,
        task="classification",
        input=text,
        params={"labels": TICKET_LABELS},
        priority=priority,
        deadline=deadline,
    )
    return Assignment(
        item=item,
        task_type=TaskType.CLASSIFICATION,
        task_reason="hint",
        pool="slm",
        rule="test",
        reason="test",
        routed_at=datetime.now(UTC),
        cache=None if scope is None else CacheDirective(ttl_s=3600, scope=scope),  # type: ignore[arg-type]
    )


def final(by_job: dict[str, list[Result]], job_id: str) -> Result:
    return by_job[job_id][-1]


def calls(sim: object) -> int:
    return sim.stats["openai.200"]  # type: ignore[attr-defined]


def test_cache_hits_are_billed_zero_with_the_saving_and_never_cross_tenants(
    pipeline_settings: Settings,
) -> None:
    settings = pipeline_settings
    catalog = PriceCatalog.load(settings.costs.prices_dir, settings.costs.reference_model)
    store = ClickHouseStore(settings.clickhouse)
    store.migrate()

    async def scenario() -> None:
        async with running_simulator(settings) as sim, Pipeline(settings, ["slm"]) as pipeline:
            sink, stop_sink = build_sink(settings, store, catalog), asyncio.Event()
            sink_task = asyncio.create_task(sink.run(stop_sink))
            first = await pipeline.run(
                [assignment("acme-1", "acme"), assignment("initech-1", "initech", scope="shared")]
            )
            before = calls(sim)
            later = await pipeline.run(
                [
                    assignment(
                        "acme-2", "acme", text=f"  {TEXT.replace(' ', '   ')} "
                    ),  # same once normalised
                    assignment("globex-1", "globex"),  # another tenant: never acme's answer
                    assignment("umbrella-1", "umbrella", scope="shared"),  # shares with initech
                    assignment("late-1", "acme", deadline=datetime.now(UTC) - timedelta(seconds=1)),
                ]
            )
            assert calls(sim) == before + 1  # only globex's request reached the model

            origin, hit = final(first, "acme-1"), final(later, "acme-2")
            assert hit.cached and hit.status is ResultStatus.OK and hit.output == origin.output
            assert hit.usage.model_dump() == dict.fromkeys(hit.usage.model_dump(), 0)
            assert hit.cached_from is not None and hit.cached_from.job_id == "acme-1"
            assert hit.cached_from.usage == origin.usage and hit.cached_from.model == origin.model
            assert not final(later, "globex-1").cached
            assert final(later, "umbrella-1").cached_from.job_id == "initech-1"  # type: ignore[union-attr]
            assert final(later, "late-1").status is ResultStatus.EXPIRED

            await until_ledger_has(store, 6)
            stop_sink.set()
            await sink_task

            saved = catalog.cost(origin).total_usd
            assert saved > 0
            rows = dict(
                (job, (total, cached, cached_from, cache_saved))
                for job, total, cached, cached_from, cache_saved in store.query(
                    "SELECT job_id, total_cost_usd, cached, cached_from, cache_saved_usd FROM cost_ledger FINAL"
                )
            )
            assert rows["acme-2"] == (Decimal(0), 1, "acme-1", saved)
            assert rows["acme-1"][0] == saved and rows["acme-1"][1:] == (0, "", Decimal(0))
            assert rows["late-1"] == (Decimal(0), 0, "", Decimal(0))  # expired: billed nothing
            by_tenant = {
                t: (cached, rate, usd)
                for t, cached, rate, usd in store.query(
                    "SELECT tenant, sum(cached_attempts), sum(cached_attempts) / sum(attempts), "
                    "sum(cache_saved_usd) FROM v_cache_savings GROUP BY tenant"
                )
            }
            assert by_tenant["acme"] == (1, 1 / 3, saved) and by_tenant["globex"][0] == 0

    try:
        asyncio.run(scenario())
    finally:
        store.close()


async def until_ledger_has(store: ClickHouseStore, rows: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (await asyncio.to_thread(store.query, "SELECT count() FROM cost_ledger FINAL"))[0][0] < rows:
        assert time.monotonic() < deadline, "the sink did not write every result"
        await asyncio.sleep(0.2)


def test_the_cache_survives_a_restart(pipeline_settings: Settings) -> None:
    settings = pipeline_settings

    async def scenario() -> None:
        async with running_simulator(settings) as sim:
            async with Pipeline(settings, ["slm"]) as pipeline:
                await pipeline.run([assignment("before-1", "acme")])
            assert calls(sim) == 1
            async with Pipeline(
                settings, ["slm"]
            ) as restarted:  # new workers: the cache comes from the topic
                assert len(restarted.workers["slm"].cache.cache) == 0  # type: ignore[union-attr]
                by_job = await restarted.run([assignment("after-1", "acme")])
            assert calls(sim) == 1
            hit = final(by_job, "after-1")
            assert hit.cached and hit.cached_from.job_id == "before-1"  # type: ignore[union-attr]

    asyncio.run(scenario())


def test_expired_items_are_never_called(pipeline_settings: Settings) -> None:
    settings = pipeline_settings
    past = datetime.now(UTC) - timedelta(milliseconds=1)

    async def scenario() -> None:
        async with running_simulator(settings) as sim, Pipeline(settings, ["slm"]) as pipeline:
            expired = [assignment(f"gone-{n}", "acme", text=f"{TEXT} {n}", deadline=past) for n in range(20)]
            alive = assignment("alive-1", "acme", deadline=datetime.now(UTC) + timedelta(hours=1))
            by_job = await pipeline.run([*expired, alive])
            assert calls(sim) == 1
            assert {final(by_job, a.item.job_id).status for a in expired} == {ResultStatus.EXPIRED}
            assert all(len(by_job[a.item.job_id]) == 1 for a in expired)
            assert final(by_job, "alive-1").status is ResultStatus.OK

    asyncio.run(scenario())


def test_a_small_tenant_and_priority_nine_overtake_a_waiting_backlog(pipeline_settings: Settings) -> None:
    """Order only (the ratio is benchmarks/fairness.py's): a big tenant's 600 priority-0 items, more than one
    tenant's cap of the read-ahead, so most of them are skipped and re-read; then a small tenant's 20 and the
    big tenant's own 5 priority-9 items. Every job ends once, and every offset is committed at the end."""
    pools = {
        **pipeline_settings.pools,
        "slm": pipeline_settings.pools["slm"].model_copy(update={"concurrency": 4}),
    }
    settings = pipeline_settings.model_copy(
        update={
            "pools": pools,
            "scheduling": pipeline_settings.scheduling.model_copy(update={"flow_cap": 64}),
        }
    )

    async def scenario() -> None:
        async with running_simulator(settings) as sim, Pipeline(settings, ["slm"]) as pipeline:
            sim.faults.update({"latency_ms": 20, "jitter_ms": 0})
            big = [assignment(f"big-{n}", "big", f"{TEXT} {n}", None, priority=0) for n in range(600)]
            await submit_at_once(pipeline, big)
            worker = pipeline.workers["slm"]
            while worker.processed < 40:  # the pool is busy with the backlog
                await asyncio.sleep(0.005)
            small = [assignment(f"small-{n}", "small", f"{TEXT} s{n}", None, priority=0) for n in range(20)]
            urgent = [assignment(f"urgent-{n}", "big", f"{TEXT} u{n}", None, priority=9) for n in range(5)]
            await submit_at_once(pipeline, small + urgent)
            by_job = await pipeline.finals({a.item.job_id for a in big + small + urgent}, timeout=120)

        assert all(len(attempts) == 1 for attempts in by_job.values())
        done = {job: attempts[-1].completed_at for job, attempts in by_job.items()}
        big_done = sorted(done[a.item.job_id] for a in big)
        last_small = max(done[a.item.job_id] for a in small)
        last_urgent = max(done[a.item.job_id] for a in urgent)
        assert sum(t > last_small for t in big_done) >= 400  # the small tenant did not wait for the backlog
        assert sum(t > last_urgent for t in big_done) >= 400  # nor did priority 9
        assert last_urgent < last_small  # and priority 9 went before the small tenant's priority 0
        group = settings.group_id("pool.slm")
        assert await group_lag(settings.kafka, group, [settings.kafka.pool_topic("slm")]) == 0

    asyncio.run(scenario())


async def submit_at_once(pipeline: Pipeline, assignments: list[Assignment]) -> None:
    """Every record sent before any is awaited: the backlog lands in the topic at once."""
    sent = [
        await pipeline.producer.send(
            pipeline.settings.kafka.pool_topic(a.pool),
            a.model_dump_json().encode(),
            key=a.item.job_id.encode(),
        )
        for a in assignments
    ]
    await asyncio.gather(*sent)
