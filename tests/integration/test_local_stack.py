"""The local stack as a new user runs it: `up` (refusing a broker it did not start unless told), `status`,
the producer SDK round trip against real Kafka (sync and asyncio), `top`, `results`, the kcat example, an
analyst's `costs` while it runs, a crashed process restarted, and `down`.

One stack for the module (it takes ~30 s to come up); the tests run in file order and the last stops it."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from modelyard.client import AsyncClient, Client, Rejected, work_item
from modelyard.core.settings import Settings, load_settings
from modelyard.local.stack import StackState, pid_alive
from tests.helpers import free_port, get

pytestmark = pytest.mark.integration
KEY = "k-acme-stack-test"
ROOT = Path(__file__).resolve().parents[2]


def modelyard(
    env: dict[str, str], *args: str, timeout: float = 300, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelyard", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_run(count: int) -> int:
    """The first of `count` consecutive free ports (below the ephemeral range, as the test brokers' are)."""
    rng = random.Random()
    while True:
        base = rng.randrange(12_000, 20_000)
        if all(_bindable(base + i) for i in range(count)):
            return base


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def stack_env(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    run, state = uuid.uuid4().hex[:8], tmp_path_factory.mktemp("stack")
    return {
        **os.environ,
        "COLUMNS": "200",
        "MODELYARD_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "MODELYARD_KAFKA__TOPIC_PREFIX": f"s{run}",
        "MODELYARD_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "MODELYARD_APP_ID": f"stack-{run}",
        "MODELYARD_STATE_DIR": str(state),
        "MODELYARD_LOCAL_BROKER__DATA_DIR": str(state / "kafka"),
        "MODELYARD_CLICKHOUSE__DSN": f"chdb://{state / 'chdb'}",
        "MODELYARD_CLICKHOUSE__QUERY_PORT": str(free_port()),
        "MODELYARD_SIMULATOR__PORT": str(free_port()),
        "MODELYARD_SIMULATOR__LATENCY_MS": "5",
        "MODELYARD_SIMULATOR__JITTER_MS": "2",
        "MODELYARD_STACK__METRICS_PORT": str(free_run(4)),
        "MODELYARD_METRICS__LAG_INTERVAL_S": "1",
        "MODELYARD_SINK__FLUSH_INTERVAL_S": "0.2",
        "MODELYARD_ROUTER__TENANT_KEYS": json.dumps({"acme": KEY}),
        "MODELYARD_ROUTER__NOVELTY_SAVE_INTERVAL_S": "3600",  # so only the save at shutdown writes the file
    }


@pytest.fixture(scope="module")
def settings(stack_env: dict[str, str]) -> Settings:
    names = [k for k in stack_env if k.startswith("MODELYARD_")]
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update({k: stack_env[k] for k in names})
    try:
        return load_settings()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def stack(stack_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = modelyard(stack_env, "up", "--use-running-broker")
    yield done
    modelyard(stack_env, "down")  # nothing left to stop when the last test ran


def test_up_reports_a_broker_it_did_not_start(stack_env: dict[str, str], settings: Settings) -> None:
    done = modelyard(stack_env, "up")
    assert done.returncode == 2
    assert "a Kafka broker this stack did not start listens on" in done.stderr
    assert "--use-running-broker" in done.stderr
    assert StackState.load(settings) is None  # nothing was started


def test_up_starts_every_process_and_status_shows_them(
    stack: subprocess.CompletedProcess[str], stack_env: dict[str, str], settings: Settings
) -> None:
    assert stack.returncode == 0, stack.stdout + stack.stderr
    assert "Next:" in stack.stdout and "modelyard top" in stack.stdout
    state = StackState.load(settings)
    assert state is not None and state.supervisor_alive and not state.broker_started
    names = [p.name for p in state.processes]
    assert names == ["simulator", "sink", "router", "pool-slm", "pool-frontier"]
    for process in state.processes:
        assert pid_alive(process.pid), process.name
        if process.metrics_port:  # its own port each
            assert get(f"http://127.0.0.1:{process.metrics_port}/readyz")[0] == 200, process.name
    status = modelyard(stack_env, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    rows = [line for line in status.stdout.splitlines() if any(f"│ {n} " in line for n in names)]
    assert len(rows) == 5 and all(line.count("ok") >= 2 for line in rows), status.stdout
    for group in ("router", "pool.slm", "pool.frontier", "sink"):
        assert f"{settings.app_id}.{group}" in status.stdout
    router_log = (settings.logs_dir / "router.log").read_text()
    assert " ERROR " not in router_log, router_log[-2000:]  # no GroupCoordinatorNotAvailable noise at start


def test_sdk_round_trip_signed_batched_and_rejected(
    stack: subprocess.CompletedProcess[str], settings: Settings
) -> None:
    run = uuid.uuid4().hex[:6]
    items = [
        work_item(f"sdk-{run}-{n}", "acme", f"I was charged twice for order {n}", labels=["billing", "bug"])
        for n in range(60)
    ]
    unsigned = work_item(f"sdk-{run}-globex", "globex", "Where is my parcel?", labels=["shipping", "bug"])
    deliveries = []
    with Client(settings.kafka, tenant_keys={"acme": KEY}) as client:
        report = client.submit_many([*items, unsigned], on_delivery=deliveries.append)
        assert report.ok and report.delivered == 61 and len(deliveries) == 61
        assert all(d.topic == settings.kafka.jobs_topic and d.offset is not None for d in deliveries)
        outcomes = client.wait([i.job_id for i in [*items, unsigned]], timeout=120)
    answered = [outcomes[i.job_id] for i in items]
    assert {o.status for o in answered} == {"ok"} and {o.pool for o in answered} == {"slm"}  # type: ignore[union-attr]
    assert all(o.output in ("billing", "bug") for o in answered)  # type: ignore[union-attr]
    rejected = outcomes[unsigned.job_id]
    assert (
        isinstance(rejected, Rejected) and rejected.reason == "unauthenticated" and rejected.field == "tenant"
    )


def test_async_sdk_streams_results_with_backpressure(
    stack: subprocess.CompletedProcess[str], settings: Settings
) -> None:
    async def run() -> list[str]:
        seen = []
        async with AsyncClient(settings.kafka, tenant_keys={"acme": KEY}, max_in_flight=1) as client:
            previous = None
            ids = []
            for n in range(8):
                delivery = await client.send(
                    work_item(
                        f"async-{uuid.uuid4().hex[:6]}-{n}",
                        "acme",
                        "Summarise: the parcel came late and damaged.",
                    )
                )
                if previous is not None:  # one record in flight at most: the one before is acknowledged
                    assert previous.done() and previous.result().ok
                previous = delivery
                ids.append((await delivery).job_id)
            async for outcome in client.results(ids, timeout=120):
                assert outcome.status == "ok" and outcome.pool == "frontier"  # type: ignore[union-attr]
                seen.append(outcome.job_id)
            assert sorted(seen) == sorted(ids)
        return seen

    assert len(asyncio.run(run())) == 8


def test_an_analyst_reads_costs_while_the_stack_runs(
    stack: subprocess.CompletedProcess[str], stack_env: dict[str, str]
) -> None:
    deadline = time.monotonic() + 60
    while True:
        done = modelyard(stack_env, "costs", "--by", "tenant,pool", "--format", "json")
        assert done.returncode == 0, done.stderr
        rows = json.loads(done.stdout)
        if {(r["tenant"], r["pool"]) for r in rows} >= {("acme", "slm"), ("acme", "frontier")}:
            break
        assert time.monotonic() < deadline, rows
        time.sleep(1)


def test_top_renders_one_frame(stack: subprocess.CompletedProcess[str], stack_env: dict[str, str]) -> None:
    done = modelyard(stack_env, "top", "--once")
    assert done.returncode == 0, done.stderr
    frame = done.stdout
    for expected in (
        "pools",
        "slm",
        "frontier",
        "router and sink",
        "spend today (UTC)",
        "dead letters today",
    ):
        assert expected in frame, frame
    assert "unauthenticated" in frame  # the unsigned globex job
    spend = [line for line in frame.splitlines() if line.startswith("│ total")]
    assert spend and float(spend[0].split("│")[3].replace(",", "")) > 0, frame
    assert "no metrics from" not in frame


def test_results_follow_prints_a_job_as_it_lands(
    stack: subprocess.CompletedProcess[str], stack_env: dict[str, str], settings: Settings
) -> None:
    job = f"follow-{uuid.uuid4().hex[:6]}"
    follower = subprocess.Popen(
        [sys.executable, "-m", "modelyard", "results", "--follow", "--job", job, "--format", "json"],
        env=stack_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(follower.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        with Client(settings.kafka, tenant_keys={"acme": KEY}) as client:
            client.submit(
                work_item(job, "acme", "Please classify: my card was declined", labels=["billing", "bug"])
            )
        reader.join(timeout=90)
        assert lines and json.loads(lines[0])["job_id"] == job, lines or follower.stderr.read()
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(timeout=30)
    listed = modelyard(stack_env, "results", "--tenant", "acme", "--limit", "5", "--format", "json")
    assert listed.returncode == 0 and {json.loads(line)["tenant"] for line in listed.stdout.splitlines()} == {
        "acme"
    }


def test_kcat_example_submits_and_reads_its_result(
    stack: subprocess.CompletedProcess[str], stack_env: dict[str, str], settings: Settings
) -> None:
    if shutil.which("kcat") is None or shutil.which("openssl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kcat (or openssl) is missing in CI: .ci/run installs Debian's kcat package")
        pytest.skip("no kcat on the PATH (apt-get install kcat): the kcat example cannot run here")
    job = f"kcat-{uuid.uuid4().hex[:6]}"
    env = {
        **stack_env,
        "BOOTSTRAP": settings.kafka.bootstrap_servers,
        "TOPIC_PREFIX": settings.kafka.topic_prefix,
        "TENANT": "acme",
        "TENANT_KEY": KEY,
        "JOB_ID": job,
        "TIMEOUT": "90",
    }
    done = subprocess.run(
        [str(ROOT / "schemas" / "json" / "kcat-submit.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (
        result["job_id"] == job
        and result["status"] == "ok"
        and result["output"] in ("billing", "bug", "account")
    )


def test_a_crashed_process_is_restarted(stack: subprocess.CompletedProcess[str], settings: Settings) -> None:
    state = StackState.load(settings)
    assert state is not None
    pool = next(p for p in state.processes if p.name == "pool-frontier")
    os.kill(pool.pid, signal.SIGKILL)  # type: ignore[arg-type]
    deadline = time.monotonic() + 90
    while True:
        now = next(p for p in StackState.load(settings).processes if p.name == "pool-frontier")  # type: ignore[union-attr]
        if (
            now.restarts == 1
            and now.pid != pool.pid
            and get(f"http://127.0.0.1:{now.metrics_port}/readyz")[0] == 200
        ):
            break
        assert time.monotonic() < deadline, now
        time.sleep(0.5)


def test_down_stops_every_process_and_the_router_saves_its_centroids(
    stack: subprocess.CompletedProcess[str], stack_env: dict[str, str], settings: Settings
) -> None:
    state = StackState.load(settings)
    assert state is not None
    done = modelyard(stack_env, "down")
    assert done.returncode == 0, done.stderr
    assert "stopped: simulator, sink, router, pool-slm, pool-frontier" in done.stderr
    assert "Kafka stopped" not in done.stderr  # the broker was not the stack's
    assert not state.supervisor_alive and not any(pid_alive(p.pid) for p in state.processes)
    assert modelyard(stack_env, "status").returncode == 3
    assert settings.novelty_state_file.exists()  # saved when the router stopped (its timer is an hour)
    item = {
        "job_id": "x",
        "tenant": "acme",
        "input": "I was charged twice for order 7",
        "params": {"labels": ["billing", "bug"]},
    }
    explained = modelyard(stack_env, "route", "--explain", "-", stdin=json.dumps(item))
    assert explained.returncode == 0, explained.stderr
    assert "< threshold 0.75: familiar classification work" in explained.stdout, explained.stdout
