"""One ledger row per real provider call (issue 13): the pipeline's processes against real Kafka, chDB and the
provider simulator over HTTP.

* a job id reused after the router's in-memory window, and again after a router restart, is refused before
  any provider is called, and nothing is billed for it;
* a pool killed (SIGKILL) after its provider call and before committing its offset calls again on restart:
  two billed calls (two ledger rows, the second flagged repeat_call) and one final result;
* a replayed Result message adds no row."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from modelyard.core.settings import Settings
from modelyard.core.topics import ensure_topics
from modelyard.local.processes import ProcessSupervisor, wait_for_port
from schemas import DeadLetter, Result
from tests.helpers import produce, read_topic, rows, wait_for_sink

pytestmark = pytest.mark.integration


def ticket(job_id: str) -> bytes:
    """A classification item: the router sends it to the SLM pool (the simulator's OpenAI-compatible API)."""
    return orjson.dumps(
        {
            "job_id": job_id,
            "tenant": "acme",
            "input": f"I was charged twice ({job_id})",
            "params": {"labels": ["billing", "bug"]},
        }
    )


def provider_calls(settings: Settings) -> int:
    with urllib.request.urlopen(f"{settings.simulator.url}/_sim/stats", timeout=5) as response:
        return int(json.loads(response.read()).get("openai.200", 0))


def results_of(settings: Settings, job_id: str, count: int, timeout: float = 90) -> list[Result]:
    """The first `count` Result records of a job on the results topic (waits for them)."""
    deadline, found = time.monotonic() + timeout, []
    while len(found) < count and time.monotonic() < deadline:
        values = asyncio.run(read_topic(settings, settings.kafka.results_topic, 10_000, timeout=1.5))
        found = [r for r in map(Result.model_validate_json, values) if r.job_id == job_id]
    assert len(found) >= count, f"{len(found)}/{count} results of {job_id}"
    return found


def router_letters(settings: Settings, count: int) -> list[DeadLetter]:
    values = asyncio.run(read_topic(settings, settings.kafka.dead_letter_topic, count, timeout=60))
    return [d for d in map(DeadLetter.model_validate_json, values) if d.stage == "router"]


def start(supervisor: ProcessSupervisor, settings: Settings, *names: str) -> None:
    supervisor.start("simulator", "simulator")
    wait_for_port("127.0.0.1", settings.simulator.port, 30, supervisor)
    commands = {"sink": ["sink"], "router": ["router"], "pool-slm": ["pool", "slm"]}
    for name in names:
        supervisor.start(name, *commands[name])


@pytest.mark.parametrize("engine", ["batch", "agent"])
def test_a_reused_job_id_is_refused_beyond_the_window_and_after_a_router_restart(
    pipeline_env: dict[str, str], pipeline_settings: Settings, tmp_path: Path, engine: str
) -> None:
    settings = pipeline_settings
    env = {**pipeline_env, "MODELYARD_ROUTER__DEDUP_WINDOW_S": "1", "MODELYARD_ROUTER__ENGINE": engine}
    asyncio.run(ensure_topics(settings.kafka, settings.pools))
    with ProcessSupervisor(tmp_path / "logs", env=env) as supervisor:
        start(supervisor, settings, "sink", "router", "pool-slm")
        asyncio.run(produce(settings, [ticket("once")]))
        results_of(settings, "once", 1)
        time.sleep(1.5)  # past the router's in-memory window
        asyncio.run(produce(settings, [ticket("once")]))
        assert [(d.reason, d.job_id) for d in router_letters(settings, 1)] == [("duplicate_job_id", "once")]

        supervisor.stop("router")
        supervisor.start("router-restarted", "router")
        asyncio.run(produce(settings, [ticket("once"), ticket("fresh")]))
        results_of(settings, "fresh", 1)  # the restarted router routes, and has read the record back
        letters = router_letters(settings, 2)
        assert [(d.reason, d.field, d.job_id) for d in letters] == [
            ("duplicate_job_id", "job_id", "once")
        ] * 2
        assert "already routed to a pool" in letters[1].error
        assert provider_calls(settings) == 2  # "once" and "fresh": the reuses never reached a provider
        asyncio.run(wait_for_sink(settings, supervisor))
        supervisor.stop("sink")
    billed = rows(env, "SELECT job_id, count() AS n FROM cost_ledger GROUP BY job_id ORDER BY job_id")
    assert billed == [{"job_id": "fresh", "n": 1}, {"job_id": "once", "n": 1}]
    assert rows(env, "SELECT count() AS n FROM results WHERE job_id = 'once'") == [{"n": 1}]


def test_a_pool_killed_after_its_call_and_before_its_commit_bills_both_calls_and_keeps_one_result(
    pipeline_env: dict[str, str], pipeline_settings: Settings, tmp_path: Path
) -> None:
    settings = pipeline_settings
    asyncio.run(ensure_topics(settings.kafka, settings.pools))
    with ProcessSupervisor(tmp_path / "logs", env=pipeline_env) as supervisor:
        start(supervisor, settings, "sink", "router")
        # this pool commits its offsets only every two minutes: its answer is produced, its offset is not
        supervisor.start("pool-slm", "pool", "slm", env={"MODELYARD_POOLS__SLM__COMMIT_INTERVAL_S": "120"})
        asyncio.run(produce(settings, [ticket("crash")]))
        (first,) = results_of(settings, "crash", 1)
        supervisor.kill("pool-slm")
        supervisor.start("pool-slm-restarted", "pool", "slm")
        first_again, second = results_of(settings, "crash", 2)
        assert first_again == first and second.call_id != first.call_id and second.attempt == first.attempt
        assert provider_calls(settings) == 2
        asyncio.run(wait_for_sink(settings, supervisor))
        supervisor.stop("sink")
    billed = rows(
        pipeline_env,
        "SELECT call_id, repeat_call, toFloat64(total_cost_usd) AS usd FROM cost_ledger "
        "WHERE job_id = 'crash' ORDER BY repeat_call",
    )
    assert [(r["call_id"], r["repeat_call"]) for r in billed] == [(first.call_id, 0), (second.call_id, 1)]
    assert all(float(r["usd"]) > 0 for r in billed)
    kept = rows(pipeline_env, "SELECT call_id, status FROM results WHERE job_id = 'crash'")
    assert kept == [{"call_id": first.call_id, "status": "ok"}]


async def produce_results(settings: Settings, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(**settings.kafka.client_options())
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(settings.kafka.results_topic, value, key=b"replayed")
    finally:
        await producer.stop()


def test_a_replayed_result_message_adds_no_row(
    pipeline_env: dict[str, str], pipeline_settings: Settings, tmp_path: Path
) -> None:
    settings = pipeline_settings
    answer = Result(
        job_id="replayed",
        attempt=1,
        tenant="acme",
        task_type="classification",
        pool="frontier",
        provider="anthropic",
        model="claude-sonnet-5",
        status="ok",
        output="billing",
        usage={"input_tokens": 100, "output_tokens": 2},
        latency_ms=10.0,
        call_id="c" * 32,
        completed_at=datetime.now(UTC),
    )
    message = answer.model_dump_json().encode()
    asyncio.run(ensure_topics(settings.kafka, settings.pools))
    with ProcessSupervisor(tmp_path / "logs", env=pipeline_env) as supervisor:
        supervisor.start("sink", "sink")
        asyncio.run(produce_results(settings, [message, message]))  # in one batch
        asyncio.run(wait_for_sink(settings, supervisor))
        asyncio.run(produce_results(settings, [message]))  # in a later one
        asyncio.run(wait_for_sink(settings, supervisor))
        supervisor.stop("sink")
    assert rows(pipeline_env, "SELECT count() AS n, sum(repeat_call) AS r FROM cost_ledger") == [
        {"n": 1, "r": 0}
    ]
    assert rows(pipeline_env, "SELECT count() AS n FROM results") == [{"n": 1}]
