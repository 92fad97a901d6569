"""Crash battery: each process kind killed mid-stream, the broker restarted, a provider outage, a second
SLM pool process taking over from a killed one. After recovery: submitted = results + dead letters, one
result row per attempt and one final result per job, one cost row per provider call: one unflagged per result,
and a flagged one (repeat_call) for each call a killed pool made again after its restart. The table is printed
(pytest -s) and written to .modelyard/crash-battery.md."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from modelyard.core.settings import Settings
from modelyard.core.topics import ensure_topics
from modelyard.local.demo import sample_lines
from modelyard.local.processes import ProcessSupervisor, wait_for_port
from schemas import DeadLetter, WorkItem
from schemas.decoding import decode
from tests.helpers import produce, rows, wait_for_sink

pytestmark = pytest.mark.integration
JOBS = 400
MALFORMED = [b"{not json", b'{"job_id": "x"}', b'{"job_id":"y","tenant":"t","input":"z","priority":11}']
TABLE: list[tuple[object, ...]] = []


@pytest.fixture(scope="module", autouse=True)
def battery_table() -> None:
    yield
    lines = [
        "| scenario | submitted | jobs with a result | of which error results | dead letters | duplicate rows | cost rows | of which repeat calls |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {' | '.join(map(str, row))} |" for row in TABLE]
    Path(".modelyard").mkdir(exist_ok=True)
    Path(".modelyard/crash-battery.md").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))


async def distinct_results(
    settings: Settings, expected: int, letters: int, timeout: float
) -> tuple[set[str], int]:
    topics = [settings.kafka.results_topic, settings.kafka.dead_letter_topic]
    consumer = AIOKafkaConsumer(*topics, **settings.kafka.client_options(), auto_offset_reset="earliest")
    await consumer.start()
    jobs: set[str] = set()
    dead: set[tuple[int | None, int | None]] = (
        set()
    )  # a replayed record may be dead-lettered twice: count it once
    deadline = time.monotonic() + timeout
    try:
        while (len(jobs) < expected or len(dead) < letters) and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=300)).items():
                if tp.topic == settings.kafka.dead_letter_topic:
                    letters_seen = [DeadLetter.model_validate_json(r.value) for r in records]
                    dead |= {(d.source_partition, d.source_offset) for d in letters_seen}
                else:
                    jobs |= {orjson.loads(r.value)["job_id"] for r in records}
    finally:
        await consumer.stop()
    return jobs, len(dead)


def jobs(run: str) -> list[bytes]:
    valid = [raw for _, raw in sample_lines(run) if isinstance(decode(WorkItem, raw), WorkItem)][:JOBS]
    return valid[: JOBS // 2] + MALFORMED + valid[JOBS // 2 :]


def inject(scenario: str, supervisor: ProcessSupervisor, settings: Settings, broker: object | None) -> None:
    if scenario == "provider outage (5 s)":
        request = urllib.request.Request(
            f"{settings.simulator.url}/_sim/faults", data=json.dumps({"outage_s": 5}).encode(), method="POST"
        )
        urllib.request.urlopen(request, timeout=5).read()
    elif scenario == "Kafka broker restarted":
        broker.stop()  # type: ignore[union-attr]
        broker.start()  # type: ignore[union-attr]
    elif scenario == "SLM pool SIGKILL, second copy takes over":
        supervisor.kill("pool-slm")
    else:
        kind = {
            "router SIGKILL": "router",
            "SLM pool SIGKILL": "pool-slm",
            "frontier pool SIGKILL": "pool-frontier",
            "sink SIGKILL": "sink",
        }[scenario]
        args = {
            "router": ["router"],
            "pool-slm": ["pool", "slm"],
            "pool-frontier": ["pool", "frontier"],
            "sink": ["sink"],
        }[kind]
        supervisor.kill(kind)
        supervisor.start(f"{kind}-restarted", *args)


SCENARIOS = [
    "router SIGKILL",
    "SLM pool SIGKILL",
    "frontier pool SIGKILL",
    "sink SIGKILL",
    "SLM pool SIGKILL, second copy takes over",
    "provider outage (5 s)",
    "Kafka broker restarted",
]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_crash_battery(
    scenario: str,
    pipeline_env: dict[str, str],
    pipeline_settings: Settings,
    kafka_broker: tuple[str, object | None],
    tmp_path: Path,
    run_id: str,
) -> None:
    settings, broker = pipeline_settings, kafka_broker[1]
    if scenario == "Kafka broker restarted" and broker is None:
        pytest.skip("the broker is not ours to restart (container or MODELYARD_TEST_KAFKA)")
    env = {
        **pipeline_env,
        "MODELYARD_SIMULATOR__LATENCY_MS": "40",
        "MODELYARD_POOLS__SLM__CONCURRENCY": "8",
        "MODELYARD_POOLS__FRONTIER__CONCURRENCY": "8",
    }
    asyncio.run(ensure_topics(settings.kafka, settings.pools))
    with ProcessSupervisor(tmp_path / "logs", env=env) as supervisor:
        supervisor.start("simulator", "simulator")
        wait_for_port("127.0.0.1", settings.simulator.port, 30, supervisor)
        processes = [
            ("sink", "sink"),
            ("router", "router"),
            ("pool-slm", "pool", "slm"),
            ("pool-frontier", "pool", "frontier"),
        ]
        if "second copy" in scenario:
            processes.append(("pool-slm-2", "pool", "slm"))
        for name, *args in processes:
            supervisor.start(name, *args)
        asyncio.run(produce(settings, jobs(run_id)))
        asyncio.run(distinct_results(settings, JOBS // 4, 0, timeout=120))
        inject(scenario, supervisor, settings, broker)
        done, dead = asyncio.run(distinct_results(settings, JOBS, len(MALFORMED), timeout=240))
        assert len(done) == JOBS, f"{len(done)}/{JOBS} jobs have a result"
        asyncio.run(wait_for_sink(settings, supervisor, timeout=120))
        for name in [n for n in supervisor.children if n.startswith("sink")]:
            supervisor.stop(name)
    counts = rows(
        env,
        "SELECT count() AS n, uniqExact(job_id, attempt) AS keys, uniqExact(job_id) AS jobs, "
        "countIf(status = 'error') AS errors, countIf(status IN ('ok', 'error')) AS finals FROM results",
    )[0]
    costs = rows(
        env,
        "SELECT count() AS n, uniqExact(job_id, attempt, call_id) AS calls, "
        "countIf(repeat_call = 0) AS kept, countIf(repeat_call = 1) AS repeats FROM cost_ledger",
    )[0]
    TABLE.append(
        (
            scenario,
            JOBS + len(MALFORMED),
            counts["jobs"],
            counts["errors"],
            dead,
            int(counts["n"]) - int(counts["keys"]),
            costs["n"],
            costs["repeats"],
        )
    )
    assert int(counts["jobs"]) + dead == JOBS + len(MALFORMED)
    assert int(counts["n"]) == int(counts["keys"]) and int(counts["finals"]) == int(counts["jobs"])
    assert int(costs["n"]) == int(costs["calls"]) and int(costs["kept"]) == int(counts["keys"])
