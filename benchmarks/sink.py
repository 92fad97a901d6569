"""Rows/s through the ClickHouse sink vs a raw clickhouse-connect insert of the same rows, one run, one engine.

The sink path: Kafka fetch -> Result validation -> pricing -> stored-key check -> Arrow insert of results and
cost_ledger (and the daily-rollup materialized view) -> offset commit. The raw paths insert the same result and
cost rows, already built, into the same tables at the same batch size: as row tuples with `client.insert` (the
baseline), and as the sink's own prebuilt Arrow tables (the floor of the sink's write). The per-stage table
times the sink's steps on the same rows without Kafka, one after another (the sink itself decodes, prices and
builds the Arrow tables of a batch while the batch before it is checked and inserted), and a bare aiokafka
fetch of the sink's topic. Usage:

    .venv/bin/python benchmarks/sink.py --rows 100000 --batch 20000     # --repeat 3 by default: each run measures
                                                                       # raw and sink side by side; median shown
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

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelyard.app import build_sink, freeze_startup_heap
from modelyard.core.settings import Settings, load_settings
from modelyard.core.topics import ensure_topics, group_lag, sink_topics
from modelyard.local.broker import LocalKafkaBroker
from schemas import Result
from workers.sink.clickhouse import UNIQUE_KEYS, ClickHouseStore
from workers.sink.ledger_tables import LedgerTables
from workers.sink.pricing import PriceCatalog
from workers.sink.sink import Batch, count_written

console = Console(stderr=True)
MODELS = [
    ("slm", "vllm", "HuggingFaceTB/SmolLM2-135M-Instruct"),
    ("frontier", "anthropic", "claude-sonnet-5"),
]


ID_STYLE = "sequential"  # or "random": uuid4 job ids, whose lookups spread over the whole key index


def results(prefix: str, n: int) -> list[Result]:
    now = datetime.now(UTC)
    return [
        Result(
            job_id=f"{prefix}-{uuid.uuid4() if ID_STYLE == 'random' else i}",
            attempt=1,
            tenant=("acme", "globex", "initech")[i % 3],
            task_type="classification",
            pool=MODELS[i % 2][0],
            provider=MODELS[i % 2][1],
            model=MODELS[i % 2][2],
            status="ok",
            output="billing",
            confidence=0.9,
            usage={"input_tokens": 120 + i % 50, "cached_input_tokens": i % 7, "output_tokens": 3},
            latency_ms=42.0,
            completed_at=now,
        )
        for i in range(n)
    ]


def prebuilt(rows: list[Result], catalog: PriceCatalog, batch: int) -> list[LedgerTables]:
    return [
        LedgerTables(rows[i : i + batch], catalog.price(rows[i : i + batch]))
        for i in range(0, len(rows), batch)
    ]


def raw_insert(store: ClickHouseStore, batches: list[LedgerTables]) -> float:
    """The baseline: clickhouse-connect `insert` of the same values as row tuples, built before the clock starts."""
    tables = [(name, getattr(b, name)) for b in batches for name in ("results", "cost_ledger")]
    rows = [
        (name, list(zip(*(c.to_pylist() for c in t.columns), strict=True)), t.column_names)
        for name, t in tables
    ]
    started = time.perf_counter()
    for name, values, columns in rows:
        store.client.insert(name, values, column_names=columns)
    return sum(len(b.rows) for b in batches) / (time.perf_counter() - started)


def raw_arrow(store: ClickHouseStore, batches: list[LedgerTables]) -> float:
    """The floor of the sink's write: `insert_arrow` of the sink's own tables, built before the clock starts."""
    tables = [(name, getattr(b, name)) for b in batches for name in ("results", "cost_ledger")]
    started = time.perf_counter()
    for name, table in tables:
        store.client.insert_arrow(name, table)
    return sum(len(b.rows) for b in batches) / (time.perf_counter() - started)


def stages(
    store: ClickHouseStore, rows: list[Result], catalog: PriceCatalog, batch: int, topic: str
) -> dict[str, float]:
    """The sink's steps on the same kind of rows without Kafka, seconds per stage (write_ledger's steps, timed)."""
    spent = dict.fromkeys(
        (
            "decode + validate",
            "price",
            "build Arrow tables",
            "stored-key check",
            "insert results",
            "insert cost_ledger",
            "metrics",
        ),
        0.0,
    )
    for start in range(0, len(rows), batch):
        records = [
            ConsumerRecord(topic, 0, start + n, 0, 0, None, r.model_dump_json().encode(), None, 0, 0, [])
            for n, r in enumerate(rows[start : start + batch])
        ]
        work = Batch(topic, "-")
        work.add(TopicPartition(topic, 0), records)
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            spent[stage] += now - clock
            clock = now

        work.decode_results()
        lap("decode + validate")
        costs = catalog.price(work.results)
        lap("price")
        tables = LedgerTables(work.results, costs)
        _ = tables.results, tables.cost_ledger
        lap("build Arrow tables")
        plan = store.plan_ledger(tables)
        lap("stored-key check")
        store.insert_arrow("results", tables.results, plan.results, UNIQUE_KEYS)
        lap("insert results")
        store.insert_arrow("cost_ledger", tables.flag_repeats(plan.repeat), plan.costs, UNIQUE_KEYS)
        lap("insert cost_ledger")
        count_written(tables, len(work.decisions))
        lap("metrics")
    return spent


async def kafka_fetch(settings: Settings, rows: int, batch: int) -> float:
    """Seconds for a bare aiokafka consumer (its own group) to fetch the sink's topic: the Kafka share of the sink."""
    consumer = AIOKafkaConsumer(
        settings.kafka.results_topic,
        group_id=f"{settings.app_id}.fetch-only",
        auto_offset_reset="earliest",
        max_poll_records=batch,
        enable_auto_commit=False,
        **settings.kafka.client_options(),
    )
    await consumer.start()
    try:
        got, started = 0, None
        while got < rows:
            polled = await consumer.getmany(timeout_ms=1000, max_records=batch)
            started = started or time.perf_counter()
            got += sum(len(records) for records in polled.values())
        return time.perf_counter() - started
    finally:
        await consumer.stop()


async def through_sink(
    settings: Settings, store: ClickHouseStore, rows: list[Result], catalog: PriceCatalog
) -> tuple[float, float]:
    await ensure_topics(settings.kafka, settings.pools)
    producer = AIOKafkaProducer(**settings.kafka.client_options(), linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    futures = [
        await producer.send(settings.kafka.results_topic, r.model_dump_json().encode(), key=r.job_id.encode())
        for r in rows
    ]
    await asyncio.gather(*futures)
    await producer.stop()
    sink, stop = build_sink(settings, store, catalog), asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    started = None
    while sink.written < len(rows):
        if started is None and sink.consumed:
            started = time.perf_counter()
        await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    stop.set()
    await task
    assert (
        await group_lag(
            settings.kafka, settings.group_id("sink"), sink_topics(settings.kafka, settings.pools)
        )
        == 0
    )
    return len(rows) / elapsed, await kafka_fetch(settings, len(rows), settings.sink.batch_size)


async def main(args: argparse.Namespace) -> None:
    base = load_settings()
    broker = LocalKafkaBroker(base.local_broker, base.kafka)
    started_broker = broker.start()
    run = uuid.uuid4().hex[:6]
    with tempfile.TemporaryDirectory() as data:
        store = ClickHouseStore(base.clickhouse.model_copy(update={"dsn": f"chdb://{data}"}))
        store.migrate()
        catalog = PriceCatalog.load(reference_model=base.costs.reference_model)
        try:
            warm = argparse.Namespace(**{**vars(args), "rows": max(args.batch, args.rows // 10), "repeat": 0})
            await one_run(
                warm, base, store, catalog, f"{run}w", -1
            )  # not counted: first inserts, first group join
            runs = [
                await one_run(args, base, store, catalog, f"{run}{attempt}", attempt)
                for attempt in range(args.repeat)
            ]
            with console.status("the sink's stages without Kafka..."):
                spent = stages(
                    store,
                    results(f"stage-{run}", args.rows),
                    catalog,
                    args.batch,
                    f"bench-sink-{run}0.results",
                )
        finally:
            store.close()
            if started_broker:
                broker.stop()
    report(args, runs, spent)


async def one_run(
    args: argparse.Namespace,
    base: Settings,
    store: ClickHouseStore,
    catalog: PriceCatalog,
    run: str,
    attempt: int,
) -> tuple[float, float, float, int, float]:
    """Raw row insert, raw Arrow insert and the sink from Kafka, side by side: (raw, floor, sink, stored, fetch_s)."""
    settings = base.model_copy(
        update={
            "app_id": f"bench-sink-{run}",
            "kafka": base.kafka.model_copy(update={"topic_prefix": f"bench-sink-{run}"}),
            "sink": base.sink.model_copy(update={"batch_size": args.batch, "flush_interval_s": 1.0}),
        }
    )
    label = "warm-up" if attempt < 0 else f"run {attempt + 1}/{args.repeat}"
    with console.status(f"{label}: raw inserts of {args.rows:,} result + cost rows..."):
        tuples, arrows = (
            prebuilt(results(f"raw-{run}", args.rows), catalog, args.batch),
            prebuilt(results(f"arrow-{run}", args.rows), catalog, args.batch),
        )
        freeze_startup_heap()  # both sides measured with the prebuilt inputs out of the collector's way
        raw, floor = raw_insert(store, tuples), raw_arrow(store, arrows)
    with console.status(f"{label}: {args.rows:,} results through the sink..."):
        rows = results(f"sink-{run}", args.rows)
        freeze_startup_heap()  # as `modelyard sink` does after start-up; the benchmark's own rows stay out of GC
        sink, fetch_s = await through_sink(settings, store, rows, catalog)
    stored = store.query(f"SELECT count() FROM cost_ledger WHERE startsWith(job_id, 'sink-{run}-')")[0][0]
    return raw, floor, sink, stored, fetch_s


def report(
    args: argparse.Namespace, runs: list[tuple[float, float, float, int, float]], spent: dict[str, float]
) -> None:
    """The run with the median sink/raw ratio in full, every run's ratio listed, then the stages."""
    ratios = sorted((sink / raw, n) for n, (raw, _, sink, _, _) in enumerate(runs))
    raw, floor, sink, stored, fetch_s = runs[ratios[len(ratios) // 2][1]]
    us = {stage: seconds * 1e6 / args.rows for stage, seconds in spent.items()}
    without_kafka = args.rows / sum(spent.values())
    every = " ".join(
        f"{sink_ / raw_:.2f}x ({sink_ / 1000:.0f}k/{raw_ / 1000:.0f}k)" for raw_, _, sink_, _, _ in runs
    )
    Console(width=200).print(f"sink vs raw insert, run by run (sink/raw rows/s): {every}")
    table = Table(
        "path",
        "rows",
        "batch",
        "rows/s",
        "vs raw insert",
        title=f"sink throughput (result + cost row per result); the median of {len(runs)} runs",
    )
    table.add_row(
        "raw clickhouse-connect insert (row tuples prebuilt)",
        f"{args.rows:,}",
        f"{args.batch:,}",
        f"{raw:,.0f}",
        "1.00x",
    )
    table.add_row(
        "raw insert_arrow (the sink's tables prebuilt)",
        f"{args.rows:,}",
        f"{args.batch:,}",
        f"{floor:,.0f}",
        f"{floor / raw:.2f}x",
    )
    table.add_row(
        "ClickHouseSink from Kafka (fetch, validate, price, insert, commit)",
        f"{stored:,}",
        f"{args.batch:,}",
        f"{sink:,.0f}",
        f"{sink / raw:.2f}x",
    )
    table.add_row(
        "the sink's stages without Kafka, serial (below)",
        f"{args.rows:,}",
        f"{args.batch:,}",
        f"{without_kafka:,.0f}",
        f"{without_kafka / raw:.2f}x",
    )
    Console(width=200).print(table)
    stage_table = Table("stage (sink without Kafka, serial)", "µs/row", title="where the sink's time goes")
    for stage, value in us.items():
        stage_table.add_row(stage, f"{value:.2f}")
    stage_table.add_row("total", f"{sum(us.values()):.2f}")
    stage_table.add_row(
        "bare aiokafka fetch of the same topic (not in total)", f"{fetch_s * 1e6 / args.rows:.2f}"
    )
    stage_table.add_row("raw row-tuple insert, for comparison", f"{1e6 / raw:.2f}")
    Console().print(stage_table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="side-by-side runs; the one with the median sink/raw ratio is shown (default 3)",
    )
    parser.add_argument(
        "--ids",
        choices=["sequential", "random"],
        default="sequential",
        help="job ids: prefix-N, or prefix-uuid4",
    )
    arguments = parser.parse_args()
    ID_STYLE = arguments.ids
    asyncio.run(main(arguments))
