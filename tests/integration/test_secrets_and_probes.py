"""End to end with recognisable secrets configured (provider keys, SASL password, ClickHouse password): none
may reach a log file (the broker's included), a Kafka record (key, value or header), a ClickHouse table or a
/metrics page. Kafka is a local broker of its own that requires SASL/PLAIN with that password, so every
client (Faust's included) really authenticates with it. The same run checks every process kind's /healthz,
/readyz and /metrics, and JSON logs carrying job ids."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from modelyard.core.settings import Settings, load_settings
from modelyard.core.topics import ensure_topics, topic_plan
from modelyard.local.broker import LocalKafkaBroker
from modelyard.local.demo import sample_lines
from modelyard.local.processes import ProcessSupervisor, wait_for_port
from schemas import WorkItem
from schemas.decoding import decode
from tests.helpers import broker_port, free_port, get, modelyard, read_topic, rows, wait_for_sink

pytestmark = pytest.mark.integration

JOBS = 40
SECRETS = {
    "MODELYARD_PROVIDERS__VLLM__API_KEY": "sk-vllm-CANARY-7f3a91",
    "MODELYARD_PROVIDERS__ANTHROPIC__API_KEY": "sk-ant-CANARY-2b8e44",
    "OPENAI_API_KEY": "sk-openai-CANARY-c0ffee",
    "MODELYARD_KAFKA__SASL_PASSWORD": "kafka-CANARY-5d1e07",
    "MODELYARD_CLICKHOUSE__PASSWORD": "clickhouse-CANARY-9a4c22",
}


SASL = {
    "MODELYARD_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "MODELYARD_KAFKA__SASL_MECHANISM": "PLAIN",
    "MODELYARD_KAFKA__SASL_USERNAME": "modelyard",
    "MODELYARD_KAFKA__SASL_PASSWORD": SECRETS["MODELYARD_KAFKA__SASL_PASSWORD"],
}


@pytest.fixture
def sasl_kafka(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A broker of this test's own that admits only the SASL/PLAIN user with the canary password."""
    port = broker_port()
    for name, value in {**SASL, "MODELYARD_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(local_broker={"data_dir": tmp_path / "kafka"})
    broker = LocalKafkaBroker(settings.local_broker, settings.kafka)
    broker.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        broker.stop()


async def can_connect(settings: Settings, password: str) -> bool:
    producer = AIOKafkaProducer(
        **{**settings.kafka.client_options(), "sasl_plain_password": password}, request_timeout_ms=5000
    )
    try:
        await asyncio.wait_for(producer.start(), 15)
    except Exception:
        return False
    finally:
        await producer.stop()
    return True


def wait_ready(ports: dict[str, int], supervisor: ProcessSupervisor, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    pending = dict(ports)
    while pending:
        supervisor.check_alive()
        assert time.monotonic() < deadline, f"not ready: {sorted(pending)}"
        pending = {
            name: port for name, port in pending.items() if get(f"http://127.0.0.1:{port}/readyz")[0] != 200
        }
        time.sleep(0.3)


def leaks(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [name for name, secret in SECRETS.items() if secret.encode() in data]


async def every_record(settings: Settings) -> list[bytes]:
    """Keys, values and headers of every record on every modelyard topic."""
    consumer = AIOKafkaConsumer(
        *topic_plan(settings.kafka, settings.pools),
        **settings.kafka.client_options(),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen: list[bytes] = []
    try:
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 3:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                idle_since = time.monotonic()
                for r in records:
                    seen += [r.key or b"", r.value or b"", *(k.encode() + v for k, v in r.headers)]
    finally:
        await consumer.stop()
    return seen


def test_no_secret_reaches_logs_topics_tables_or_metrics(
    pipeline_env: dict[str, str],
    sasl_kafka: str,
    tmp_path: Path,
    run_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim_port = int(pipeline_env["MODELYARD_SIMULATOR__PORT"])
    env = {
        **pipeline_env,
        **SECRETS,
        **SASL,
        "MODELYARD_KAFKA__BOOTSTRAP_SERVERS": sasl_kafka,
        "MODELYARD_LOG_LEVEL": "DEBUG",
        "MODELYARD_LOG_FORMAT": "json",
        "MODELYARD_METRICS__HOST": "127.0.0.1",
        "MODELYARD_METRICS__LAG_INTERVAL_S": "0.5",
        "MODELYARD_PROVIDERS__VLLM__BASE_URL": f"http://127.0.0.1:{sim_port}/v1",
        "MODELYARD_PROVIDERS__ANTHROPIC__BASE_URL": f"http://127.0.0.1:{sim_port}",
        "MODELYARD_PROVIDERS__OPENAI__BASE_URL": f"http://127.0.0.1:{sim_port}/v1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert {settings.providers[p].mode for p in ("vllm", "anthropic")} == {
        "endpoint"
    }  # the keys go out with each call
    password = SECRETS["MODELYARD_KAFKA__SASL_PASSWORD"]
    assert asyncio.run(can_connect(settings, password)) and not asyncio.run(
        can_connect(settings, "wrong")
    )  # SASL is enforced
    jobs = [raw for _, raw in sample_lines(run_id) if isinstance(decode(WorkItem, raw), WorkItem)][:JOBS]
    (tmp_path / "jobs.jsonl").write_bytes(b"\n".join(jobs) + b"\n")
    asyncio.run(ensure_topics(settings.kafka, settings.pools))
    kinds = {"sink": ["sink"], "router": ["router"], **{f"pool-{p}": ["pool", p] for p in settings.pools}}
    ports = {name: free_port() for name in kinds}

    with ProcessSupervisor(tmp_path / "logs", env=env) as supervisor:
        supervisor.start("simulator", "simulator")
        wait_for_port("127.0.0.1", sim_port, 30, supervisor)
        for name, args in kinds.items():
            supervisor.start(name, *args, env={"MODELYARD_METRICS__PORT": str(ports[name])})
        wait_ready(ports, supervisor)
        assert all(get(f"http://127.0.0.1:{port}/healthz")[0] == 200 for port in ports.values())

        submitted = modelyard(env, "submit", str(tmp_path / "jobs.jsonl"))
        assert submitted.returncode == 0, submitted.stderr
        results = asyncio.run(read_topic(settings, settings.kafka.results_topic, JOBS, timeout=120))
        assert len({orjson.loads(v)["job_id"] for v in results}) == JOBS
        asyncio.run(wait_for_sink(settings, supervisor))
        time.sleep(1.0)  # one more lag measurement
        metrics = {name: get(f"http://127.0.0.1:{port}/metrics")[1] for name, port in ports.items()}
        supervisor.stop("sink")
        records = asyncio.run(every_record(settings))

    assert 'modelyard_pool_jobs_total{pool="slm",provider="vllm",status="ok"}' in metrics["pool-slm"]
    assert (
        "modelyard_pool_call_seconds_bucket" in metrics["pool-frontier"]
        and "modelyard_consumer_lag{" in metrics["pool-slm"]
    )
    assert "modelyard_router_routed_total{" in metrics["router"]
    assert "modelyard_tokens_total{" in metrics["sink"] and "modelyard_cost_usd_total{" in metrics["sink"]
    assert {name: leaks(page) for name, page in metrics.items()} == {name: [] for name in metrics}

    assert len(records) > 3 * JOBS
    assert [name for record in records for name in leaks(record)] == []

    tables = [
        r["name"] for r in rows(env, "SELECT name FROM system.tables WHERE database = currentDatabase()")
    ]
    assert {"results", "cost_ledger", "routing_decisions"} <= set(tables)
    for table in tables:
        dumped = json.dumps(rows(env, f"SELECT * FROM {table}"), default=str)
        assert leaks(dumped) == [], table

    logs = {
        path.name: path.read_bytes()
        for path in [*(tmp_path / "logs").glob("*.log"), tmp_path / "kafka" / "broker.log"]
    }
    assert set(logs) >= {
        "broker.log",
        "simulator.log",
        "router.log",
        "sink.log",
        "pool-slm.log",
        "pool-frontier.log",
    }
    assert {name: leaks(text) for name, text in logs.items()} == {name: [] for name in logs}
    for name in (
        "router.log",
        "sink.log",
        "pool-slm.log",
        "pool-frontier.log",
    ):  # log_format json: every line an object
        assert all(json.loads(line)["process"] for line in logs[name].splitlines()), name
    assert any("job_id" in json.loads(line) for line in logs["pool-slm.log"].splitlines())
