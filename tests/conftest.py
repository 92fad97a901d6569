"""Shared fixtures. Kafka is always real: a testcontainers broker where a Docker engine runs, else the
project's local KRaft broker (jars from Maven) on a free port, or MODELYARD_TEST_KAFKA if set."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from modelyard.core.settings import Settings, load_settings
from tests.helpers import broker_port, free_port

if TYPE_CHECKING:  # imported in the fixture: the unit tier does not load ClickHouse
    from workers.sink.clickhouse import ClickHouseStore


def docker_engine_available() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, object | None]]:
    """(bootstrap servers, the LocalKafkaBroker when this session started one: tests may restart it)."""
    if os.environ.get("MODELYARD_TEST_KAFKA"):
        yield os.environ["MODELYARD_TEST_KAFKA"], None
    elif docker_engine_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield container.get_bootstrap_server(), None
    else:
        yield from _local_broker(tmp_path_factory.mktemp("kafka"))


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: tuple[str, object | None]) -> str:
    return kafka_broker[0]


def _local_broker(data_dir: Path) -> Iterator[tuple[str, object]]:
    """Start on free ports; another process may grab one between the check and the bind, so retry."""
    from modelyard.core._exceptions import BrokerError
    from modelyard.local.broker import LocalKafkaBroker

    for attempt in range(3):
        bootstrap = f"127.0.0.1:{broker_port()}"
        settings = load_settings(
            kafka={"bootstrap_servers": bootstrap}, local_broker={"data_dir": data_dir / str(attempt)}
        )
        broker = LocalKafkaBroker(settings.local_broker, settings.kafka)
        try:
            broker.start()
            break
        except BrokerError:
            broker.stop()
            if attempt == 2:
                raise
    try:
        yield bootstrap, broker
    finally:
        broker.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ClickHouseStore]:
    """A migrated chDB store of the test's own (a module may define a wider-scoped `store` of its own)."""
    from workers.sink.clickhouse import ClickHouseStore

    store = ClickHouseStore(load_settings(clickhouse={"dsn": f"chdb://{tmp_path / 'chdb'}"}).clickhouse)
    store.migrate()
    yield store
    store.close()


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def pipeline_env(kafka_bootstrap: str, tmp_path: Path, run_id: str) -> dict[str, str]:
    """Environment for one isolated pipeline: own topics, groups, ClickHouse path, simulator port."""
    return {
        "MODELYARD_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "MODELYARD_KAFKA__TOPIC_PREFIX": f"t{run_id}",
        "MODELYARD_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "MODELYARD_APP_ID": f"test-{run_id}",
        "MODELYARD_STATE_DIR": str(tmp_path / "state"),
        "MODELYARD_CLICKHOUSE__DSN": f"chdb://{tmp_path / 'chdb'}",
        "MODELYARD_SIMULATOR__PORT": str(free_port()),
        "MODELYARD_CLICKHOUSE__QUERY_PORT": str(free_port()),
        "MODELYARD_SIMULATOR__LATENCY_MS": "5",
        "MODELYARD_SIMULATOR__JITTER_MS": "2",
        "MODELYARD_SINK__FLUSH_INTERVAL_S": "0.2",
    }


@pytest.fixture
def pipeline_settings(pipeline_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in pipeline_env.items():
        monkeypatch.setenv(name, value)
    return load_settings()
