"""Analysts query while the sink runs: the sink answers ClickHouse's HTTP interface from its own chdb engine.

Checked with clickhouse-connect's own `http://` client (the code path a ClickHouse server takes) and with
`modelyard sql` / `modelyard costs`, which find the sink's query server themselves."""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from decimal import Decimal

import clickhouse_connect
import pytest
from aiokafka import AIOKafkaProducer
from clickhouse_connect.driver.exceptions import DatabaseError

from modelyard.core.settings import Settings
from modelyard.core.topics import ensure_topics
from modelyard.local.processes import ProcessSupervisor, wait_for_port
from schemas import Result

pytestmark = pytest.mark.integration


def result(run: str, n: int) -> bytes:
    return (
        Result(
            job_id=f"{run}-{n}",
            attempt=1,
            tenant="acme" if n % 2 else "globex",
            task_type="classification",
            pool="slm",
            provider="vllm",
            model="HuggingFaceTB/SmolLM2-135M-Instruct",
            status="ok",
            output="billing",
            usage={"input_tokens": 100, "output_tokens": 2},
            latency_ms=3.0 + n,
            completed_at=datetime.now(UTC),
        )
        .model_dump_json()
        .encode()
    )


async def produce(settings: Settings, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(**settings.kafka.client_options())
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(settings.kafka.results_topic, v) for v in values])
    finally:
        await producer.stop()


def count_when(client, sql: str, parameters: dict, expected: int, timeout: float = 30) -> float:
    """Seconds until `sql` returns `expected`."""
    started = time.monotonic()
    while (found := client.query(sql, parameters=parameters).result_rows[0][0]) != expected:
        assert time.monotonic() - started < timeout, f"{found} rows, not {expected}, after {timeout}s"
        time.sleep(0.1)
    return time.monotonic() - started


def modelyard(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelyard", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_an_analyst_sees_rows_while_the_sink_writes(
    pipeline_env: dict[str, str], pipeline_settings: Settings, tmp_path, run_id: str
) -> None:
    settings = pipeline_settings
    asyncio.run(ensure_topics(settings.kafka, settings.pools))
    port = settings.clickhouse.query_port
    with ProcessSupervisor(tmp_path / "logs", env=pipeline_env) as supervisor:
        supervisor.start("sink", "sink")
        wait_for_port("127.0.0.1", port, 60, supervisor)
        client = clickhouse_connect.get_client(host="127.0.0.1", port=port, interface="http")
        assert client.server_version and client.ping()

        asyncio.run(produce(settings, [result(run_id, n) for n in range(50)]))
        count = "SELECT count() FROM results WHERE startsWith(job_id, {run:String})"
        seconds = count_when(client, count, {"run": run_id}, 50)
        assert seconds < 10
        asyncio.run(produce(settings, [result(run_id, n) for n in range(50, 80)]))
        count_when(client, count, {"run": run_id}, 80)
        # the sink writes a batch's results, then its ledger rows: wait for both tables
        ledger = "SELECT count() FROM cost_ledger FINAL WHERE startsWith(job_id, {run:String})"
        count_when(client, ledger, {"run": run_id}, 80)

        # typed columns come back as clickhouse-connect reads them from a server: LowCardinality, Decimal, DateTime64
        rows = client.query(
            "SELECT tenant, count() AS n, sum(total_cost_usd) AS usd, max(completed_at) AS last "
            "FROM cost_ledger FINAL WHERE startsWith(job_id, {run:String}) GROUP BY tenant ORDER BY tenant",
            parameters={"run": run_id},
        ).result_rows
        assert [(t, n) for t, n, _, _ in rows] == [("acme", 40), ("globex", 40)]
        assert all(isinstance(usd, Decimal) and usd > 0 for _, _, usd, _ in rows)
        assert all(isinstance(last, datetime) for *_, last in rows)
        assert client.query_arrow("SELECT job_id FROM results LIMIT 3").num_rows == 3
        # settings in the URL apply to the query (clickhouse-connect itself sees them as readonly, as it would
        # for a read-only profile on a server, and does not send them)
        url = f"http://127.0.0.1:{port}/?max_threads=1&query=" + urllib.parse.quote(
            "SELECT getSetting('max_threads')"
        )
        assert urllib.request.urlopen(url, timeout=10).read().strip() == b"1"
        # HTTP compression when asked for; ClickHouse's own block compression refused plainly
        gzipped = urllib.request.Request(
            f"{url}&enable_http_compression=1", headers={"Accept-Encoding": "gzip"}
        )
        with urllib.request.urlopen(gzipped, timeout=10) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            assert gzip.decompress(response.read()).strip() == b"1"
        with pytest.raises(urllib.error.HTTPError) as refused_compress:
            urllib.request.urlopen(f"{url}&compress=1", timeout=10)
        assert refused_compress.value.headers["X-ClickHouse-Exception-Code"] == "48"

        with pytest.raises(DatabaseError, match="readonly|READONLY") as refused:
            client.command("INSERT INTO results (job_id, attempt) VALUES ('forged', 1)")
        assert "164" in str(refused.value)
        with pytest.raises(DatabaseError, match="READONLY"):
            client.query("SELECT * FROM file('/etc/hostname', 'LineAsString')")
        with pytest.raises(DatabaseError, match="UNKNOWN_TABLE|60"):
            client.query("SELECT * FROM no_such_table")

        done = modelyard(
            pipeline_env,
            "sql",
            f"SELECT count() AS n FROM results WHERE job_id LIKE '{run_id}-%'",
            "--format",
            "json",
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == [{"n": 80}]
        costs = modelyard(pipeline_env, "costs", "--by", "tenant", "--format", "json")
        assert costs.returncode == 0, costs.stderr
        assert {row["tenant"] for row in json.loads(costs.stdout)} >= {"acme", "globex"}
        client.close()
    # the sink stopped: the same command opens the chdb path itself
    done = modelyard(pipeline_env, "sql", "SELECT count() AS n FROM results", "--format", "json")
    assert done.returncode == 0 and json.loads(done.stdout) == [{"n": 80}], done.stderr
