"""The whole pipeline as separate processes: real Kafka, Faust router, two pools through the real SDKs
(against the simulator), the ClickHouse sink on a real chDB engine."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from modelyard.core.settings import Settings
from modelyard.core.topics import ensure_topics
from modelyard.local.demo import sample_lines
from modelyard.local.processes import ProcessSupervisor, wait_for_port
from schemas import DeadLetter, WorkItem
from schemas.decoding import decode
from tests.helpers import modelyard, read_topic, rows, wait_for_sink

pytestmark = pytest.mark.integration

JOBS = 300
MALFORMED = [
    b'{"job_id": "bad-missing-input", "tenant": "acme"}',
    b'{"job_id": "bad-priority", "tenant": "acme", "input": "x", "priority": 99}',
    b"not json at all",
]


def write_jobs(path: Path, run: str) -> list[str]:
    valid = [
        orjson.loads(raw) for _, raw in sample_lines(run) if isinstance(decode(WorkItem, raw), WorkItem)
    ][:JOBS]
    body = [orjson.dumps(job) for job in valid]
    for index, bad in enumerate(MALFORMED):
        body.insert(10 * (index + 1), bad)
    path.write_bytes(b"\n".join(body) + b"\n")
    return [job["job_id"] for job in valid]


async def produce_raw(settings: Settings, value: bytes) -> None:
    producer = AIOKafkaProducer(**settings.kafka.client_options())
    await producer.start()
    try:
        await producer.send_and_wait(settings.kafka.jobs_topic, value)
    finally:
        await producer.stop()


def test_every_job_gets_exactly_one_result_and_one_cost_row(
    pipeline_env: dict[str, str], pipeline_settings: Settings, tmp_path: Path, run_id: str
) -> None:
    settings, jobs_file = pipeline_settings, tmp_path / "jobs.jsonl"
    job_ids = write_jobs(jobs_file, run_id)
    asyncio.run(ensure_topics(settings.kafka, settings.pools))
    with ProcessSupervisor(tmp_path / "logs", env=pipeline_env) as supervisor:
        supervisor.start("simulator", "simulator")
        wait_for_port("127.0.0.1", settings.simulator.port, 30, supervisor)
        for name, *args in [
            ("sink", "sink"),
            ("router", "router"),
            *[(f"pool-{p}", "pool", p) for p in settings.pools],
        ]:
            supervisor.start(name, *args)

        submitted = modelyard(pipeline_env, "submit", str(jobs_file))
        assert submitted.returncode == 1, submitted.stderr  # some lines were invalid
        assert f"submitted {JOBS} jobs" in submitted.stderr
        for line, field in [(11, "input"), (21, "priority"), (31, "-")]:
            assert any(
                row.split()[1:2] == [str(line)] and field in row for row in submitted.stderr.splitlines()
            ), submitted.stderr
        asyncio.run(produce_raw(settings, b"\xff raw bytes from a foreign producer"))

        results = asyncio.run(read_topic(settings, settings.kafka.results_topic, JOBS, timeout=180))
        assert {orjson.loads(v)["job_id"] for v in results} == set(job_ids), supervisor.tail("router")
        asyncio.run(wait_for_sink(settings, supervisor))
        supervisor.stop("sink")

    per_job = rows(pipeline_env, "SELECT job_id, count() AS n FROM results GROUP BY job_id")
    costs = rows(
        pipeline_env,
        "SELECT job_id, count() AS n, sum(total_cost_usd) AS usd FROM cost_ledger GROUP BY job_id",
    )
    assert sorted(r["job_id"] for r in per_job) == sorted(job_ids)
    assert {r["n"] for r in per_job} == {1} and {r["n"] for r in costs} == {1} and len(costs) == JOBS
    by_pool = {
        r["pool"]: r
        for r in rows(
            pipeline_env,
            "SELECT pool, count() AS n, countIf(status = 'ok') AS ok, sum(input_tokens) AS tokens FROM results GROUP BY pool",
        )
    }
    assert set(by_pool) == {"slm", "frontier"}
    assert all(r["n"] == r["ok"] and int(r["tokens"]) > 0 for r in by_pool.values())
    assert all(float(r["usd"]) > 0 for r in costs)
    decisions = rows(
        pipeline_env,
        "SELECT job_id, count() AS n, any(rule) AS rule, any(pool) AS pool FROM routing_decisions GROUP BY job_id",
    )
    assert sorted(r["job_id"] for r in decisions) == sorted(job_ids) and {r["n"] for r in decisions} == {1}
    assert all(r["rule"] for r in decisions)

    letters = [
        DeadLetter.model_validate_json(v)
        for v in asyncio.run(read_topic(settings, settings.kafka.dead_letter_topic, 4, timeout=30))
    ]
    assert sorted((d.stage, d.source_line, d.field) for d in letters if d.stage == "submit") == [
        ("submit", 11, "input"),
        ("submit", 21, "priority"),
        ("submit", 31, None),
    ]
    router_letters = [d for d in letters if d.stage == "router"]
    assert len(router_letters) == 1 and router_letters[0].reason == "invalid_json"
    assert (
        router_letters[0].source_topic == settings.kafka.jobs_topic
        and router_letters[0].source_offset is not None
    )
