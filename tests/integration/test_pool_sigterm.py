"""A pool process gets SIGTERM with calls in flight; after a restart every job has exactly one result row in
ClickHouse, read without FINAL: the drain means nothing was replayed, not merely deduplicated."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from modelyard.core.settings import Settings
from modelyard.core.topics import ensure_topics
from modelyard.local.processes import ProcessSupervisor, wait_for_port
from schemas import Result
from tests.helpers import assignment, rows, wait_for_sink

pytestmark = pytest.mark.integration
JOBS = 600


async def produce_assignments(settings: Settings, job_ids: list[str]) -> None:
    producer = AIOKafkaProducer(**settings.kafka.client_options(), linger_ms=10)
    await producer.start()
    try:
        topic = settings.kafka.pool_topic("slm")
        sent = [
            await producer.send(topic, assignment(j, "slm").model_dump_json().encode(), key=j.encode())
            for j in job_ids
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


class ResultReader:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.records: list[Result] = []

    async def __aenter__(self) -> ResultReader:
        options = self.settings.kafka.client_options()
        self.consumer = AIOKafkaConsumer(
            self.settings.kafka.results_topic, **options, auto_offset_reset="earliest"
        )
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def until(self, count: int, supervisor: ProcessSupervisor, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while len(self.records) < count:
            supervisor.check_alive()
            assert time.monotonic() < deadline, f"{len(self.records)}/{count} results"
            for batch in (await self.consumer.getmany(timeout_ms=100)).values():
                self.records += [Result.model_validate_json(r.value) for r in batch]


def test_sigterm_mid_batch_then_restart_leaves_exactly_one_result_per_job(
    pipeline_env: dict[str, str], pipeline_settings: Settings, tmp_path: Path
) -> None:
    env = pipeline_env | {"MODELYARD_SIMULATOR__LATENCY_MS": "250", "MODELYARD_SIMULATOR__JITTER_MS": "100"}
    settings, job_ids = pipeline_settings, [f"term-{n}" for n in range(JOBS)]
    asyncio.run(ensure_topics(settings.kafka, settings.pools))
    asyncio.run(produce_assignments(settings, job_ids))

    async def scenario(supervisor: ProcessSupervisor) -> list[Result]:
        async with ResultReader(settings) as reader:
            supervisor.start("pool-slm", "pool", "slm")
            await reader.until(100, supervisor)  # busy: 64 calls in flight at all times
            assert supervisor.stop("pool-slm") == 0
            stopped_at = len(reader.records)
            assert stopped_at < JOBS, "the pool finished before SIGTERM; the test proves nothing"
            supervisor.start("pool-slm-restarted", "pool", "slm")
            await reader.until(JOBS, supervisor)
            await asyncio.sleep(1.0)  # anything replayed would show up now
            await reader.until(len(reader.records), supervisor)
            await wait_for_sink(settings, supervisor)
            return reader.records

    with ProcessSupervisor(tmp_path / "logs", env=env) as supervisor:
        supervisor.start("simulator", "simulator")
        wait_for_port("127.0.0.1", settings.simulator.port, 30, supervisor)
        supervisor.start("sink", "sink")
        records = asyncio.run(scenario(supervisor))
        supervisor.stop("sink")
    drained = [
        line for line in supervisor.log_path("pool-slm").read_text().splitlines() if "draining" in line
    ]
    assert drained and " 0 in-flight" not in drained[0], drained  # SIGTERM really caught calls mid-flight
    assert sorted(r.job_id for r in records) == sorted(job_ids)  # on Kafka too: one result each, no replay
    per_job = rows(env, "SELECT job_id, count() AS n FROM results GROUP BY job_id")
    costs = rows(env, "SELECT count() AS n, uniqExact(job_id) AS jobs FROM cost_ledger")
    assert sorted(r["job_id"] for r in per_job) == sorted(job_ids) and {r["n"] for r in per_job} == {1}
    assert costs == [{"n": JOBS, "jobs": JOBS}]
