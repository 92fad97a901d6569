"""Helpers shared by the tests (fixtures live in conftest.py): free ports, HTTP probes, the CLI, Kafka
reads and writes, the router's malformed-input battery, the provider simulator, SDK backends and an
in-process pool pipeline. Tests import these from here, never from one another."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from modelyard.app import build_pool_worker
from modelyard.core.settings import Settings, load_settings
from modelyard.core.topics import ensure_topics, group_lag, sink_topics
from modelyard.local.processes import ProcessSupervisor
from modelyard.local.simulator import ProviderSimulator
from schemas import Assignment, Result, TaskType, WorkItem
from workers.pools.backends.anthropic_messages import AnthropicBackend
from workers.pools.backends.openai_chat import OpenAIChatBackend

TICKET_LABELS = ["billing", "bug", "other"]


# -- ports and HTTP -------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def broker_port() -> int:
    """A port for a test broker whose next port (its controller's) is free too, both below the kernel's
    ephemeral range: a port the OS hands out for bind(0) is also where client sockets get their local ports,
    so the controller's port was now and then taken between the check and Kafka's bind."""
    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ephemeral.read_text().split()[0]) if ephemeral.exists() else 32768
    rng = random.Random()
    while True:
        port = rng.randrange(max(1024, low - 12_000), low - 2)
        if _bindable(port) and _bindable(port + 1):
            return port


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def get(url: str) -> tuple[int, str]:
    """(status, body) of a GET; an HTTP error's own status, or 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


# -- the CLI and ClickHouse rows ------------------------------------------------------------------------
def modelyard(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelyard", *args], env=env, capture_output=True, text=True, timeout=120
    )


async def read_topic(settings: Settings, topic: str, until: int, timeout: float) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, **settings.kafka.client_options(), auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(values) < until and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                values += [r.value for r in records]
    finally:
        await consumer.stop()
    return values


async def wait_for_sink(settings: Settings, supervisor: ProcessSupervisor, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while await _sink_lag(settings) != 0:
        supervisor.check_alive()
        assert time.monotonic() < deadline, "sink did not catch up"
        await asyncio.sleep(0.3)


async def _sink_lag(settings: Settings) -> int | None:
    """The sink's lag; None while Kafka cannot say yet (on a fresh broker the group's coordinator may still be loading)."""
    try:
        return await group_lag(
            settings.kafka, settings.group_id("sink"), sink_topics(settings.kafka, settings.pools)
        )
    except KafkaError as exc:
        if not exc.retriable:
            raise
        return None


def rows(env: dict[str, str], sql: str) -> list[dict[str, object]]:
    done = modelyard(env, "sql", sql, "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# -- Kafka -----------------------------------------------------------------------------------------------
async def produce(settings: Settings, values: list[bytes | None]) -> None:
    producer = AIOKafkaProducer(**settings.kafka.client_options(), max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        futures = [
            await producer.send(settings.kafka.jobs_topic, value=v, key=b"k", partition=0) for v in values
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


# -- the router: malformed records, each with its dead letter's reason and field -------------------------
BATTERY = [
    (b"nope", "invalid_json", None),
    (None, "empty", None),
    (b"", "empty", None),
    (b"[1]", "invalid_json", None),
    (b"\xff\xfe", "invalid_json", None),
    (b'{"job_id": "j"}', "validation", "tenant"),
    (
        b'{"job_id":"j","tenant":"t","input":"x","schema_version":9}',
        "unsupported_schema_version",
        "schema_version",
    ),
    (b'{"job_id":"j","tenant":"t","input":"x","priority":"high"}', "validation", "priority"),
    (b'{"job_id":"j","tenant":"t","input":"x","extra":1}', "validation", "extra"),
    (b" " * 1_000_001, "oversized", None),
    (
        b'{"job_id":"deep","tenant":"t","input":"x","params":{"json_schema":'
        + b'{"a":' * 5000
        + b"1"
        + b"}" * 5000
        + b"}}",
        "too_deep",
        "params.json_schema",
    ),
]


# -- the provider simulator and the SDK backends --------------------------------------------------------
CLASSIFY = WorkItem(
    job_id="c",
    tenant="t",
    task="classification",
    input="charged twice",
    params={"labels": ["billing", "bug", "other"]},
)
EXTRACT = WorkItem(
    job_id="e",
    tenant="t",
    task="extraction",
    input="Order 12 by Ada",
    params={
        "json_schema": {
            "type": "object",
            "properties": {"order_id": {"type": "integer"}, "customer": {"type": "string"}},
        }
    },
)


@asynccontextmanager
async def simulator_with_settings(**faults: float) -> AsyncIterator[tuple[ProviderSimulator, Settings]]:
    settings = load_settings(simulator={"port": free_port(), "latency_ms": 1, "jitter_ms": 0, **faults})
    sim = ProviderSimulator(settings.simulator)
    runner = web.AppRunner(sim.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.simulator.port).start()
    try:
        yield sim, settings
    finally:
        await runner.cleanup()


def openai_backend(settings: Settings, provider: str = "vllm", **overrides: object) -> OpenAIChatBackend:
    config = settings.providers[provider].model_copy(update=overrides)
    return OpenAIChatBackend(provider, config, settings.pools["slm"], base_url=f"{settings.simulator.url}/v1")


def anthropic_backend(settings: Settings, **overrides: object) -> AnthropicBackend:
    config = settings.providers["anthropic"].model_copy(update=overrides)
    return AnthropicBackend("anthropic", config, settings.pools["frontier"], base_url=settings.simulator.url)


# -- pools in this process ------------------------------------------------------------------------------
def assignment(job_id: str, pool: str, text: str = "I was charged twice") -> Assignment:
    item = WorkItem(
        job_id=job_id,
        tenant="acme",
        task="classification",
        input=f"{text} ({job_id})",
        params={"labels": TICKET_LABELS},
    )
    return Assignment(
        item=item,
        task_type=TaskType.CLASSIFICATION,
        task_reason="hint",
        pool=pool,
        rule="test",
        reason="test",
        routed_at=datetime.now(UTC),
    )


@asynccontextmanager
async def running_simulator(settings: Settings, **faults: Any) -> AsyncIterator[ProviderSimulator]:
    sim = ProviderSimulator(settings.simulator)
    sim.faults.update(faults)
    runner = web.AppRunner(sim.app())
    await runner.setup()
    await web.TCPSite(runner, settings.simulator.host, settings.simulator.port).start()
    try:
        yield sim
    finally:
        await runner.cleanup()


class Pipeline:
    """Pool workers running in this event loop, a producer for their topics and a reader of the results."""

    def __init__(self, settings: Settings, pools: list[str]) -> None:
        self.settings = settings
        self.workers = {pool: build_pool_worker(settings, pool) for pool in pools}
        self.results: list[Result] = []
        self.stop = asyncio.Event()

    async def __aenter__(self) -> Pipeline:
        await ensure_topics(self.settings.kafka, self.settings.pools)
        options = self.settings.kafka.client_options()
        self.producer = AIOKafkaProducer(**options)
        self.reader = AIOKafkaConsumer(
            self.settings.kafka.results_topic, **options, auto_offset_reset="earliest"
        )
        await self.producer.start()
        await self.reader.start()
        self.tasks = [asyncio.create_task(w.run(self.stop)) for w in self.workers.values()]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)
        await self.reader.stop()
        await self.producer.stop()

    async def submit(self, assignments: list[Assignment]) -> None:
        for a in assignments:
            await self.producer.send_and_wait(
                self.settings.kafka.pool_topic(a.pool),
                a.model_dump_json().encode(),
                key=a.item.job_id.encode(),
            )

    async def finals(self, job_ids: set[str], timeout: float = 60) -> dict[str, list[Result]]:
        """Wait until every job has its final result; returns each job's attempts in order."""
        deadline = time.monotonic() + timeout
        while not job_ids <= {r.job_id for r in self.results if r.status.is_final}:
            assert time.monotonic() < deadline, (
                f"missing finals for {sorted(job_ids - {r.job_id for r in self.results})[:5]}"
            )
            assert not any(t.done() for t in self.tasks), [t.exception() for t in self.tasks if t.done()]
            for records in (await self.reader.getmany(timeout_ms=200)).values():
                self.results += [Result.model_validate_json(r.value) for r in records]
        by_job: dict[str, list[Result]] = defaultdict(list)
        for r in sorted(self.results, key=lambda r: r.attempt):
            if r.job_id in job_ids:
                by_job[r.job_id].append(r)
        return by_job

    async def run(self, assignments: list[Assignment], timeout: float = 60) -> dict[str, list[Result]]:
        await self.submit(assignments)
        return await self.finals({a.item.job_id for a in assignments}, timeout)


def assert_one_final_each(
    by_job: dict[str, list[Result]], check: Callable[[Result], bool] = lambda r: True
) -> None:
    for job_id, attempts in by_job.items():
        assert [r.attempt for r in attempts] == list(range(1, len(attempts) + 1)), job_id
        assert [r.status.is_final for r in attempts] == [False] * (len(attempts) - 1) + [True], job_id
        assert check(attempts[-1]), attempts[-1]
