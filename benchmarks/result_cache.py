"""Where the result cache should live, measured: a compacted Kafka topic followed into each pool's memory
(what modelyard does) against a ClickHouse lookup, on the same entries.

* topic: N entries produced to a compacted topic; a pool's CacheFeed restores them (a restart: entries a
  second), then each lookup is the request digest (SHA-256 of the normalised request) plus a dict access;
  memory is the pool process's growth per entry held.
* ClickHouse: the same N entries in a MergeTree ordered by key (chDB, embedded, in this process), each lookup
  one `SELECT ... WHERE key = ...` through clickhouse-connect (a server DSN adds a network round trip).

A Faust table is not measured apart: its state is restored from its changelog topic the same way as the
topic here (plus Faust's per-event overhead), and it would live in the router, which does not know the model
a pool will call. Usage:

    .venv/bin/python benchmarks/result_cache.py --entries 100000 --lookups 20000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import shutil
import statistics
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

from benchmarks.pools import free_port, start_broker
from modelyard.core.settings import ClickHouseSettings, ResultCacheSettings, Settings
from modelyard.core.topics import ensure_topics
from schemas import Assignment, TaskType, WorkItem
from schemas.cache import ENTRY_ENCODER, CacheDirective, CacheEntry
from schemas.result import UsageStruct
from workers.pools.result_cache import CacheFeed, ResultCache, request_key
from workers.sink.clickhouse import ClickHouseStore

console = Console(stderr=True)
LABELS = ["billing", "bug", "account", "shipping", "other"]


def assignment(n: int) -> Assignment:
    return Assignment(
        item=WorkItem(
            job_id=f"j-{n}",
            tenant=f"tenant-{n % 50}",
            task="classification",
            input=f"Customer {n} writes: I was charged twice for order {n * 7919 % 100_000}, please refund",
            params={"labels": LABELS},
        ),
        task_type=TaskType.CLASSIFICATION,
        task_reason="bench",
        pool="slm",
        reason="bench",
        routed_at=datetime.now(UTC),
        cache=CacheDirective(ttl_s=86_400),
    )


def entry(n: int) -> CacheEntry:
    return CacheEntry(
        LABELS[n % len(LABELS)],
        0.9,
        f"j-{n}",
        1,
        "vllm",
        "small-model",
        UsageStruct(input_tokens=40, output_tokens=2),
        False,
        datetime.now(UTC).isoformat(),
        time.time(),
    )


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def topic_figures(settings: Settings, keys: list[str], lookups: list[Assignment]) -> dict[str, float]:
    await ensure_topics(settings.kafka, settings.pools)
    producer = AIOKafkaProducer(**settings.kafka.client_options(), linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    sent = [
        await producer.send(settings.kafka.cache_topic, ENTRY_ENCODER.encode(entry(n)), key=k.encode())
        for n, k in enumerate(keys)
    ]
    await asyncio.gather(*sent)
    await producer.stop()
    gc.collect()
    before = rss_mb()
    cache = ResultCache(ResultCacheSettings(), settings.kafka.cache_retention_s)
    feed = CacheFeed(settings.kafka, settings.result_cache, cache)
    started = time.perf_counter()
    loaded = await feed.restore()
    restore_s = time.perf_counter() - started
    await feed.stop()
    grown = rss_mb() - before
    started, hits = time.perf_counter(), 0
    for a in lookups:
        key = request_key(a, "vllm", "small-model", 256)
        hits += cache.get(key, 86_400, time.time()) is not None  # type: ignore[arg-type]
    lookup_us = (time.perf_counter() - started) / len(lookups) * 1e6
    return {
        "loaded": loaded,
        "restore_s": restore_s,
        "per_s": loaded / restore_s,
        "lookup_us": lookup_us,
        "hits": hits,
        "bytes_per_entry": grown * 1024 * 1024 / max(loaded, 1),
    }


def clickhouse_figures(path: Path, keys: list[str], lookups: list[Assignment]) -> dict[str, float]:
    store = ClickHouseStore(ClickHouseSettings(dsn=f"chdb://{path}"))
    try:
        store.command(
            "CREATE TABLE result_cache (key String, output String, origin_job_id String, model String, "
            "input_tokens UInt32, output_tokens UInt32, stored_at Float64) ENGINE = MergeTree ORDER BY key"
        )
        started = time.perf_counter()
        rows = [(k, entry(n).output, f"j-{n}", "small-model", 40, 2, time.time()) for n, k in enumerate(keys)]
        store.insert(
            "result_cache",
            rows,
            ("key", "output", "origin_job_id", "model", "input_tokens", "output_tokens", "stored_at"),
        )
        insert_s = time.perf_counter() - started
        times, hits = [], 0
        for a in lookups:
            key = request_key(a, "vllm", "small-model", 256)
            started = time.perf_counter()
            found = store.query(
                "SELECT output, origin_job_id FROM result_cache WHERE key = {key:String} LIMIT 1",
                {"key": key},
            )
            times.append(time.perf_counter() - started)
            hits += bool(found)
        return {
            "insert_s": insert_s,
            "lookup_us": statistics.mean(times) * 1e6,
            "p99_us": sorted(times)[int(len(times) * 0.99)] * 1e6,
            "hits": hits,
        }
    finally:
        store.close()


async def main(args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="modelyard-cache-bench-"))
    broker = None
    try:
        with console.status("starting Kafka..."):
            base, broker = start_broker(data, free_port())
        run = f"rc{uuid.uuid4().hex[:6]}"
        settings = base.model_copy(
            update={"kafka": base.kafka.model_copy(update={"topic_prefix": run}), "app_id": run}
        )
        keys = [request_key(assignment(n), "vllm", "small-model", 256) or "" for n in range(args.entries)]
        lookups = [assignment(n * 10) for n in range(args.lookups)]  # with the defaults, half were stored
        with console.status(f"topic: producing and restoring {args.entries:,} entries..."):
            topic = await topic_figures(settings, keys, lookups)
        with console.status(f"ClickHouse: inserting {args.entries:,} entries and looking up..."):
            clickhouse = clickhouse_figures(data / "chdb", keys, lookups[: args.ch_lookups])
        table = Table(
            "store",
            "entries",
            "fill",
            "lookup µs (mean)",
            "hits",
            "memory per entry",
            title=f"result cache stores: {args.entries:,} entries, lookups include the request digest",
        )
        table.add_row(
            "compacted topic -> pool memory (modelyard)",
            f"{topic['loaded']:,.0f}",
            f"restore {topic['restore_s']:.2f} s ({topic['per_s']:,.0f}/s)",
            f"{topic['lookup_us']:.1f}",
            f"{topic['hits']:,.0f} of {len(lookups):,}",
            f"{topic['bytes_per_entry']:,.0f} B (RSS)",
        )
        table.add_row(
            "ClickHouse MergeTree lookup (chDB in process)",
            f"{args.entries:,}",
            f"insert {clickhouse['insert_s']:.2f} s",
            f"{clickhouse['lookup_us']:,.0f} (p99 {clickhouse['p99_us']:,.0f})",
            f"{clickhouse['hits']:,.0f} of {args.ch_lookups:,}",
            "on disk",
        )
        Console(width=150).print(table)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=20_000)
    parser.add_argument("--ch-lookups", type=int, default=2_000, help="ClickHouse lookups (each a query)")
    asyncio.run(main(parser.parse_args()))
