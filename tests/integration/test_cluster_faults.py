"""Cluster fault battery: a three-broker KRaft cluster (replication factor 3, min.insync.replicas 2, every
producer idempotent with acks=all, consumers reading committed data only) under a 5,000-job run.

Faults, in order, while jobs keep arriving: the leader of most of the jobs topic's partitions is killed
with SIGKILL and restarted 15 s later; then a second broker hangs (SIGSTOP) for 20 s, so every write whose
in-sync replicas include it blocks (acks=all waits for the whole ISR) until it resumes (SIGCONT).
Afterwards: every job has exactly one final result, one result row per attempt, one cost row per provider
call (a call a restarted process made again is its own row, flagged repeat_call), no duplicates. The stall
each fault caused (the longest gap between results around it) is printed and written to
.modelyard/cluster-battery.md."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from modelyard.core.settings import Settings, load_settings
from modelyard.core.topics import ensure_topics
from modelyard.local.broker import LocalKafkaBroker
from modelyard.local.processes import ProcessSupervisor, wait_for_port
from tests.helpers import broker_port, rows, wait_for_sink

pytestmark = pytest.mark.integration
JOBS = 5_000
RATE = 60  # jobs/s submitted: the run lasts ~85 s, long enough for both faults to land mid-stream


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafkaBroker]:
    port = next(p for p in iter(broker_port, None) if all(_free(p + i) for i in range(6)))
    settings = load_settings(
        kafka={"bootstrap_servers": f"127.0.0.1:{port}"},
        local_broker={"data_dir": tmp_path_factory.mktemp("cluster"), "brokers": 3, "heap": "384m"},
    )
    broker = LocalKafkaBroker(settings.local_broker, settings.kafka)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def _free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def job(n: int, run: str) -> bytes:
    text = ["I was charged twice", "the app crashes on login", "how do I export my data"][n % 3]
    return orjson.dumps(
        {
            "job_id": f"{run}-{n}",
            "tenant": "acme",
            "input": f"{text} (ticket {n})",
            "params": {"labels": ["billing", "bug", "other"]},
        }
    )


class Observer:
    """Reads results as they land: each job's final attempts, and when each new job finished."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.finals: Counter[str] = Counter()
        self.arrivals: list[float] = []

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            self.settings.kafka.results_topic,
            **self.settings.kafka.client_options(),
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        await consumer.start()
        seen: set[tuple[str, int]] = set()
        try:
            while not stop.is_set():
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for record in records:
                        result = orjson.loads(record.value)
                        key = (result["job_id"], result["attempt"])
                        if result["status"] in ("ok", "error") and key not in seen:
                            seen.add(key)
                            self.finals[result["job_id"]] += 1
                            self.arrivals.append(time.monotonic())
        finally:
            await consumer.stop()

    def stall(self, start: float, end: float) -> float:
        """The longest gap between finished jobs in [start, end] (seconds)."""
        times = [start, *[t for t in self.arrivals if start <= t <= end], end]
        return max(b - a for a, b in pairwise(times))


async def submit(settings: Settings, run: str) -> None:
    producer = AIOKafkaProducer(**settings.kafka.client_options(), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for start in range(0, JOBS, RATE // 4):
            batch = [
                await producer.send(settings.kafka.jobs_topic, job(n, run), key=f"{run}-{n}".encode())
                for n in range(start, min(JOBS, start + RATE // 4))
            ]
            await asyncio.gather(*batch)
            await asyncio.sleep(0.25)
    finally:
        await producer.stop()


async def jobs_leader(settings: Settings) -> int:
    """The node leading most partitions of the jobs topic."""
    producer = AIOKafkaProducer(**settings.kafka.client_options())
    await producer.start()
    try:
        await producer.client.force_metadata_update()
        cluster = producer.client.cluster
        topic = settings.kafka.jobs_topic
        leaders = Counter(
            cluster.leader_for_partition(TopicPartition(topic, p))
            for p in cluster.partitions_for_topic(topic) or []
        )
        return leaders.most_common(1)[0][0]
    finally:
        await producer.stop()


async def wait_until(predicate: object, timeout: float, supervisor: ProcessSupervisor) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        supervisor.check_alive()
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.5)


async def battery(
    settings: Settings, broker: LocalKafkaBroker, supervisor: ProcessSupervisor, run: str
) -> list[tuple[str, float]]:
    observer, stop = Observer(settings), asyncio.Event()
    watching = asyncio.create_task(observer.run(stop))
    submitting = asyncio.create_task(submit(settings, run))
    await wait_until(lambda: len(observer.finals) >= 500, 120, supervisor)
    leader = await jobs_leader(settings)
    killed_at = time.monotonic()
    await asyncio.to_thread(broker.kill_node, leader)
    await asyncio.sleep(15)
    await asyncio.to_thread(broker.start_node, leader)
    restarted_at = time.monotonic()
    await asyncio.sleep(10)
    hung = next(n for n in broker.nodes if n != leader)
    hung_at = time.monotonic()
    broker.kill_node(hung, signal.SIGSTOP)
    await asyncio.sleep(20)
    broker.kill_node(hung, signal.SIGCONT)
    resumed_at = time.monotonic()
    await submitting
    await wait_until(lambda: len(observer.finals) >= JOBS, 300, supervisor)
    stop.set()
    await watching
    assert set(observer.finals.values()) == {1}, "a job has more than one final result"
    return [
        (
            f"node {leader} (jobs leader) SIGKILL, restarted after 15 s",
            observer.stall(killed_at, restarted_at + 10),
        ),
        (f"node {hung} hung (SIGSTOP) for 20 s", observer.stall(hung_at, resumed_at + 10)),
    ]


def test_a_replicated_cluster_loses_and_duplicates_nothing_when_brokers_die_or_hang(
    cluster: LocalKafkaBroker, pipeline_env: dict[str, str], tmp_path: Path, run_id: str
) -> None:
    env = {
        **pipeline_env,
        "MODELYARD_KAFKA__BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
        "MODELYARD_KAFKA__REPLICATION_FACTOR": "3",
        "MODELYARD_KAFKA__MIN_INSYNC_REPLICAS": "2",
        "MODELYARD_SIMULATOR__LATENCY_MS": "20",
    }
    settings = load_settings(
        kafka={
            "bootstrap_servers": cluster.bootstrap_servers,
            "topic_prefix": env["MODELYARD_KAFKA__TOPIC_PREFIX"],
            "replication_factor": 3,
            "min_insync_replicas": 2,
        },
        app_id=env["MODELYARD_APP_ID"],
        simulator={"port": int(env["MODELYARD_SIMULATOR__PORT"])},
    )
    asyncio.run(ensure_topics(settings.kafka, settings.pools))
    with ProcessSupervisor(tmp_path / "logs", env=env) as supervisor:
        supervisor.start("simulator", "simulator")
        wait_for_port("127.0.0.1", settings.simulator.port, 30, supervisor)
        for name, *args in [("sink", "sink"), ("router", "router")] + [
            (f"pool-{p}", "pool", p) for p in settings.pools
        ]:
            supervisor.start(name, *args)
        stalls = asyncio.run(battery(settings, cluster, supervisor, run_id))
        asyncio.run(wait_for_sink(settings, supervisor, timeout=180))
        supervisor.stop("sink")
    counts = rows(
        env,
        "SELECT count() AS n, uniqExact(job_id, attempt) AS keys, uniqExact(job_id) AS jobs FROM results",
    )[0]
    costs = rows(
        env,
        "SELECT count() AS n, uniqExact(job_id, attempt, call_id) AS calls, "
        "countIf(repeat_call = 0) AS kept, countIf(repeat_call = 1) AS repeats FROM cost_ledger",
    )[0]
    lines = ["| fault | stall (longest gap between finished jobs) |", "|---|---|"]
    lines += [f"| {fault} | {stall:.1f} s |" for fault, stall in stalls]
    lines += [
        "",
        f"{JOBS} jobs: {counts['jobs']} with results, {counts['n']} result rows for {counts['keys']} attempts, "
        f"{costs['n']} cost rows ({costs['repeats']} of them calls a restarted pool made again)",
    ]
    Path(".modelyard").mkdir(exist_ok=True)
    Path(".modelyard/cluster-battery.md").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))
    assert int(counts["jobs"]) == JOBS
    # one result and one unflagged cost row per attempt; one cost row per provider call
    assert int(counts["n"]) == int(counts["keys"]) == int(costs["kept"])
    assert int(costs["n"]) == int(costs["calls"])
