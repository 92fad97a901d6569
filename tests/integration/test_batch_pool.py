"""The frontier pool's batch path in-process against real Kafka and the simulator through the real SDKs:
which items are batched, per-request errors, the partition commit held back by an outstanding batch,
stopping with a batch outstanding."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import TopicPartition

from modelyard.core.settings import Settings, load_settings
from schemas import Assignment, ResultStatus, TaskType, WorkItem
from tests.helpers import Pipeline, running_simulator

pytestmark = pytest.mark.integration
FAST_BATCHES = {
    "enabled": True,
    "max_items": 100,
    "max_wait_s": 0.5,
    "poll_interval_s": 0.2,
    "poll_max_interval_s": 0.5,
}


def job(
    job_id: str, text: str = "Write a haiku about queues", deadline_in: timedelta | None = None
) -> Assignment:
    deadline = datetime.now(UTC) + deadline_in if deadline_in else None
    item = WorkItem(
        job_id=job_id, tenant="acme", task="generation", input=f"{text} ({job_id})", deadline=deadline
    )
    return Assignment(
        item=item,
        task_type=TaskType.GENERATION,
        task_reason="hint",
        pool="frontier",
        rule="test",
        reason="test",
        routed_at=datetime.now(UTC),
    )


def batch_settings(provider: str = "anthropic", **batch: Any) -> Settings:
    model = "claude-sonnet-5" if provider == "anthropic" else "gpt-5-mini"
    return load_settings(
        pools={"frontier": {"provider": provider, "model": model, "batch": FAST_BATCHES | batch}},
        kafka={"pool_partitions": {"frontier": 1}},
        simulator={"batch_delay_s": 1.0},
    )


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_deferrable_items_share_one_batch_and_the_others_stay_interactive(
    pipeline_settings: Settings, provider: str
) -> None:
    settings = batch_settings(provider)

    async def scenario() -> None:
        async with (
            running_simulator(settings, batch_error_marker="[batch-fail]") as sim,
            Pipeline(settings, ["frontier"]) as pipeline,
        ):
            deferrable = [job(f"d-{n}") for n in range(10)] + [job("far", deadline_in=timedelta(hours=48))]
            urgent = [job(f"u-{n}", deadline_in=timedelta(minutes=10)) for n in range(5)]
            failing = job("fails-in-batch", "[batch-fail] please")
            by_job = await pipeline.run(deferrable + urgent + [failing], timeout=30)
            for a in deferrable:
                (only,) = by_job[a.item.job_id]
                assert (only.status, only.batch, only.attempt, only.provider) == (
                    ResultStatus.OK,
                    True,
                    1,
                    provider,
                )
                assert only.usage.input_tokens > 0 and only.usage.output_tokens > 0 and only.latency_ms >= 500
            for a in urgent:
                (only,) = by_job[a.item.job_id]
                assert (only.status, only.batch) == (ResultStatus.OK, False)
            in_batch, interactive = by_job["fails-in-batch"]  # the per-request error is an attempt of its own
            assert (in_batch.status, in_batch.batch, in_batch.attempt, in_batch.usage.input_tokens) == (
                ResultStatus.FAILED_OVER,
                True,
                1,
                0,
            )
            assert (interactive.status, interactive.batch, interactive.attempt) == (ResultStatus.OK, False, 2)
            assert sim.stats[f"{provider}.batches"] == 1 and sim.stats[f"{provider}.batch_succeeded"] == 11
            assert sim.stats[f"{provider}.200"] == len(urgent) + 1

    asyncio.run(scenario())


def test_an_outstanding_batch_holds_back_its_partition_commit_until_its_results_are_produced(
    pipeline_settings: Settings,
) -> None:
    settings = batch_settings()

    async def scenario() -> None:
        async with (
            running_simulator(settings, batch_delay_s=3.0) as sim,
            Pipeline(settings, ["frontier"]) as pipeline,
        ):
            worker, tp = (
                pipeline.workers["frontier"],
                TopicPartition(settings.kafka.pool_topic("frontier"), 0),
            )
            first = await pipeline.run(
                [job("warm", deadline_in=timedelta(minutes=5))]
            )  # offset 0: interactive
            await pipeline.submit([job("deferred")])  # offset 1: waits in a batch
            later = await pipeline.run(
                [job(f"u-{n}", deadline_in=timedelta(minutes=5)) for n in range(5)]
            )  # offsets 2-6
            assert first and len(later) == 5 and not any(r.job_id == "deferred" for r in pipeline.results)
            await asyncio.sleep(1.0)  # several commit intervals
            assert await worker.consumer.committed(tp) == 1  # not past the batched item, though 2-6 are done
            assert sim.stats["anthropic.batches"] == 1
            (deferred,) = (await pipeline.finals({"deferred"}, timeout=20))["deferred"]
            assert deferred.batch and deferred.status is ResultStatus.OK
            deadline = time.monotonic() + 5
            while await worker.consumer.committed(tp) != 7:
                assert time.monotonic() < deadline, await worker.consumer.committed(tp)
                await asyncio.sleep(0.2)

    asyncio.run(scenario())


def test_stopping_with_a_batch_outstanding_cancels_it_and_the_restart_resubmits_the_items(
    pipeline_settings: Settings,
) -> None:
    settings = batch_settings()
    jobs = [job(f"r-{n}") for n in range(4)]

    async def scenario() -> None:
        async with running_simulator(settings, batch_delay_s=60) as sim:
            async with Pipeline(settings, ["frontier"]) as pipeline:
                await pipeline.submit(jobs)
                deadline = time.monotonic() + 20
                while sim.stats["anthropic.batches"] < 1:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
                assert pipeline.workers["frontier"].batcher.pending == 4
            (first,) = sim.batch_api.batches.values()
            assert first.cancelled_at is not None  # stopped: the provider stops work nobody would collect
            assert not pipeline.results and pipeline.workers["frontier"].abandoned == 4
            sim.faults.update({"batch_delay_s": 0.5})
            async with Pipeline(settings, ["frontier"]) as restarted:
                by_job = await restarted.finals({a.item.job_id for a in jobs}, timeout=30)
            assert {
                job_id: [(r.attempt, r.status, r.batch) for r in rs] for job_id, rs in by_job.items()
            } == {a.item.job_id: [(1, ResultStatus.OK, True)] for a in jobs}
            assert sim.stats["anthropic.batches"] == 2

    asyncio.run(scenario())
