"""Rows/s through the ClickHouse sink vs a raw clickhouse-connect insert of the same rows, one run, one engine.

The sink path: Kafka fetch -> Result validation -> Decimal pricing -> stored-key check -> insert of results and
cost_ledger (and the daily-rollup materialized view) -> offset commit. The raw path inserts the very same
result and cost rows, already built, into the same tables. Usage:

    .venv/bin/python benchmarks/sink.py --rows 100000 --batch 20000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelyard.broker import LocalKafkaBroker  # noqa: E402
from modelyard.settings import Settings, load_settings  # noqa: E402
from modelyard.topics import ensure_topics, group_lag, sink_topics  # noqa: E402
from schemas import Result  # noqa: E402
from workers.clickhouse import COST_COLUMNS, RESULT_COLUMNS, ClickHouseStore, _cost_row, _result_row  # noqa: E402
from workers.pricing import PriceCatalog  # noqa: E402
from workers.sink import ClickHouseSink  # noqa: E402

console = Console(stderr=True)
MODELS = [("slm", "vllm", "HuggingFaceTB/SmolLM2-135M-Instruct"), ("frontier", "anthropic", "claude-sonnet-5")]


def results(prefix: str, n: int) -> list[Result]:
    now = datetime.now(UTC)
    return [
        Result(
            job_id=f"{prefix}-{i}", attempt=1, tenant=("acme", "globex", "initech")[i % 3], task_type="classification",
            pool=MODELS[i % 2][0], provider=MODELS[i % 2][1], model=MODELS[i % 2][2], status="ok", output="billing",
            confidence=0.9, usage={"input_tokens": 120 + i % 50, "cached_input_tokens": i % 7, "output_tokens": 3},
            latency_ms=42.0, completed_at=now,
        )
        for i in range(n)
    ]


def raw_insert(store: ClickHouseStore, rows: list[Result], catalog: PriceCatalog, batch: int) -> float:
    result_rows = [_result_row(r) for r in rows]
    cost_rows = [_cost_row(r, catalog.cost(r)) for r in rows]
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        store.client.insert("results", result_rows[i : i + batch], column_names=list(RESULT_COLUMNS))
        store.client.insert("cost_ledger", cost_rows[i : i + batch], column_names=list(COST_COLUMNS))
    return len(rows) / (time.perf_counter() - started)


async def through_sink(settings: Settings, store: ClickHouseStore, rows: list[Result], catalog: PriceCatalog) -> float:
    await ensure_topics(settings)
    producer = AIOKafkaProducer(**settings.kafka.client_options(), linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    futures = [await producer.send(settings.kafka.results_topic, r.model_dump_json().encode(), key=r.job_id.encode()) for r in rows]
    await asyncio.gather(*futures)
    await producer.stop()
    sink, stop = ClickHouseSink(settings, store, catalog), asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    started = None
    while sink.written < len(rows):
        if started is None and sink.consumed:
            started = time.perf_counter()
        await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    stop.set()
    await task
    assert await group_lag(settings, "sink", sink_topics(settings)) == 0
    return len(rows) / elapsed


async def main(args: argparse.Namespace) -> None:
    base = load_settings()
    broker = LocalKafkaBroker(base)
    started_broker = broker.start()
    run = uuid.uuid4().hex[:6]
    settings = base.model_copy(update={
        "app_id": f"bench-sink-{run}", "kafka": base.kafka.model_copy(update={"topic_prefix": f"bench-sink-{run}"}),
        "sink": base.sink.model_copy(update={"batch_size": args.batch, "flush_interval_s": 1.0}),
    })
    with tempfile.TemporaryDirectory() as data:
        store = ClickHouseStore(base.clickhouse.model_copy(update={"dsn": f"chdb://{data}"}))
        store.migrate()
        catalog = PriceCatalog.load(reference_model=base.costs.reference_model)
        try:
            with console.status(f"raw insert of {args.rows:,} result + cost rows..."):
                raw = raw_insert(store, results(f"raw-{run}", args.rows), catalog, args.batch)
            with console.status(f"{args.rows:,} results through the sink..."):
                sink = await through_sink(settings, store, results(f"sink-{run}", args.rows), catalog)
            stored = store.query(f"SELECT count() FROM cost_ledger WHERE startsWith(job_id, 'sink-{run}')")[0][0]
        finally:
            store.close()
            if started_broker:
                broker.stop()
    table = Table("path", "rows", "batch", "rows/s", "ratio", title="sink throughput (result + cost row per result)")
    table.add_row("raw clickhouse-connect insert (rows prebuilt)", f"{args.rows:,}", f"{args.batch:,}", f"{raw:,.0f}", "1.00x")
    table.add_row("ClickHouseSink from Kafka (validate, price, insert, commit)", f"{stored:,}", f"{args.batch:,}", f"{sink:,.0f}", f"{sink / raw:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=20_000)
    asyncio.run(main(parser.parse_args()))
