"""The sink while ClickHouse refuses writes: it holds back, retries, and every row lands exactly once."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from modelyard.app import build_sink
from modelyard.core.settings import Settings
from modelyard.core.topics import ensure_topics, group_lag, sink_topics
from schemas import Result
from workers.sink.clickhouse import ClickHouseStore
from workers.sink.pricing import PriceCatalog

pytestmark = pytest.mark.integration
ROWS = 3000


def result(n: int) -> Result:
    return Result(
        job_id=f"r-{n}",
        attempt=1,
        tenant="acme",
        task_type="classification",
        pool="slm",
        provider="vllm",
        model="HuggingFaceTB/SmolLM2-135M-Instruct",
        status="ok",
        output="a",
        usage={"input_tokens": 10, "output_tokens": 1},
        latency_ms=3.0,
        completed_at=datetime.now(UTC),
    )


async def produce(settings: Settings, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(**settings.kafka.client_options())
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(settings.kafka.results_topic, v) for v in values])
    finally:
        await producer.stop()


def test_clickhouse_outage_then_recovery_writes_every_row_exactly_once(
    pipeline_settings: Settings, tmp_path: Path
) -> None:
    settings = pipeline_settings.model_copy(
        update={"sink": pipeline_settings.sink.model_copy(update={"batch_size": 500, "retry_backoff_s": 0.2})}
    )
    store = ClickHouseStore(settings.clickhouse.model_copy(update={"dsn": f"chdb://{tmp_path / 'ch'}"}))
    store.migrate()
    values = [result(n).model_dump_json().encode() for n in range(ROWS)]
    duplicates = values[:200]  # a pool that crashed after producing re-sends these

    async def scenario() -> None:
        await ensure_topics(settings.kafka, settings.pools)
        sink, stop = build_sink(settings, store, PriceCatalog.load()), asyncio.Event()
        running = asyncio.create_task(sink.run(stop))
        await produce(settings, values[:1000])
        while sink.written < 1000:
            await asyncio.sleep(0.05)
        store.command("RENAME TABLE cost_ledger TO cost_ledger_away")  # results still insert, costs fail
        await produce(settings, values[1000:] + duplicates)
        await asyncio.sleep(2.0)
        assert sink.written == 1000, "nothing may be committed while ClickHouse refuses the batch"
        assert (
            await group_lag(
                settings.kafka, settings.group_id("sink"), sink_topics(settings.kafka, settings.pools)
            )
            > 0
        )
        store.command("RENAME TABLE cost_ledger_away TO cost_ledger")
        deadline = time.monotonic() + 60
        while (
            await group_lag(
                settings.kafka, settings.group_id("sink"), sink_topics(settings.kafka, settings.pools)
            )
            > 0
        ):
            assert time.monotonic() < deadline, "the sink did not recover"
            await asyncio.sleep(0.2)
        stop.set()
        await running

    try:
        asyncio.run(scenario())
        for table in ("results", "cost_ledger"):
            assert store.query(f"SELECT count(), uniqExact(job_id) FROM {table}") == [(ROWS, ROWS)], table
        assert store.query("SELECT sum(attempts) FROM v_cost_by_day") == [(ROWS,)]
    finally:
        store.close()
