"""Two checkouts starting a broker on the same port at once: one starts it, the other finds it running."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from modelyard.core.settings import load_settings
from modelyard.local.broker import LocalKafkaBroker
from tests.helpers import broker_port

pytestmark = pytest.mark.integration


def test_concurrent_starts_on_one_port_leave_one_running_broker(tmp_path: Path) -> None:
    port = broker_port()
    both = [
        load_settings(
            kafka={"bootstrap_servers": f"127.0.0.1:{port}"}, local_broker={"data_dir": tmp_path / name}
        )
        for name in ("a", "b")
    ]
    brokers = [LocalKafkaBroker(settings.local_broker, settings.kafka) for settings in both]
    try:
        with ThreadPoolExecutor(2) as pool:
            started = list(pool.map(lambda broker: broker.start(), brokers))
        assert sorted(started) == [False, True]
        winner = brokers[started.index(True)]
        os.kill(
            winner._pid(), 0
        )  # the broker reported as started is the one alive, not one that lost the port
        assert winner.is_running() and brokers[started.index(False)]._pid() is None
    finally:
        for broker in brokers:
            broker.stop()
