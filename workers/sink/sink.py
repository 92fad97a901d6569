"""ClickHouseSink: results topic -> results + cost_ledger tables; pool topics -> routing_decisions.

Adds records to a batch, flushes by size or time, writes with clickhouse-connect off the event loop, and
commits the batch's offsets only after the write succeeded. A due batch is decoded (msgspec first, pydantic
for the verdict on anything it refuses), priced and turned into Arrow tables while the batch before it is
still being written; writes and commits stay in batch order. While ClickHouse is unavailable it holds the
batch (consuming nothing more) and retries with backoff. Replays are harmless: both tables dedup on
(job_id, attempt).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from modelyard.core._exceptions import Backpressure, StorageError
from modelyard.core.kafka import make_consumer, make_producer
from modelyard.core.observability import (
    COST_USD,
    DEAD_LETTERS,
    SINK_FLUSH_SECONDS,
    SINK_RESULTS,
    SINK_ROWS,
    SINK_WRITE_FAILURES,
    TOKENS,
    UNPRICED_RESULTS,
)
from modelyard.core.settings import Settings
from modelyard.core.topics import sink_topics
from schemas import AnyResult, Assignment, Result, ResultStruct
from schemas.decoding import DecodeFailure, StructFirst, decode
from schemas.evaluation import EvalScore
from workers.sink.clickhouse import ClickHouseStore
from workers.sink.ledger_tables import LedgerTables
from workers.sink.pricing import PriceCatalog
from workers.sink.shadow_watch import ShadowAgreementWatch

log = logging.getLogger("modelyard.sink")
decode_result = StructFirst(
    ResultStruct, Result
)  # msgspec for well-formed results, pydantic for every verdict


@dataclass
class Batch:
    results_topic: str
    evals_topic: str
    results: list[AnyResult] = field(default_factory=list)
    undecoded: list[ConsumerRecord] = field(
        default_factory=list
    )  # results, decoded at write time off the loop
    decisions: list[Assignment] = field(default_factory=list)
    evals: list[EvalScore] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    rejected: list[tuple[ConsumerRecord, DecodeFailure]] = field(default_factory=list)
    ledger: LedgerTables | None = None  # the results and their costs as Arrow tables, once prepared
    opened_at: float = field(default_factory=time.monotonic)

    def add(self, partition: TopicPartition, records: list[ConsumerRecord]) -> None:
        """One partition's fetched records, in offset order (results are decoded at write time, off the loop)."""
        if not records:
            return
        self.offsets[partition] = records[-1].offset + 1
        if partition.topic == self.results_topic:
            self.undecoded.extend(records)
            return
        model, bucket = (
            (EvalScore, self.evals) if partition.topic == self.evals_topic else (Assignment, self.decisions)
        )
        for record in records:
            self._keep(record, decode(model, record.value), bucket)

    def decode_results(self) -> None:
        """Decode the results topic's records (once, however often the write is retried)."""
        results, rejected = self.results, self.rejected
        for record in self.undecoded:
            value = decode_result(record.value)
            if isinstance(value, DecodeFailure):
                rejected.append((record, value))
            else:
                results.append(value)
        self.undecoded = []

    def _keep(self, record: ConsumerRecord, value: object, bucket: list) -> None:
        if isinstance(value, DecodeFailure):
            self.rejected.append((record, value))
        else:
            bucket.append(value)

    def __len__(self) -> int:
        return (
            len(self.results)
            + len(self.undecoded)
            + len(self.decisions)
            + len(self.evals)
            + len(self.rejected)
        )


class ClickHouseSink:
    def __init__(self, settings: Settings, store: ClickHouseStore, catalog: PriceCatalog) -> None:
        self.settings = settings
        self.store = store
        self.catalog = catalog
        self.written = 0
        self.consumed = 0
        self.shadow_watch = ShadowAgreementWatch(store, settings.shadow_alert)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume, batch, write, commit; until `stop` is set. aiokafka clients live inside the running loop."""
        batch_size = self.settings.sink.batch_size
        self.consumer = make_consumer(
            self.settings, sink_topics(self.settings), "sink", max_records=batch_size
        )
        self.producer = make_producer(self.settings)
        await self.producer.start()
        await self.consumer.start()
        batch, flushing = self._new_batch(), deque[asyncio.Task[bool]]()
        try:
            while not stop.is_set():
                await self._fill(batch)
                if self._due(batch):
                    while len(flushing) >= 2:  # one batch written, the next one prepared, while a third fills
                        await flushing.popleft()
                    after = flushing[-1] if flushing else None
                    flushing.append(asyncio.create_task(self._flush_until_written(batch, stop, after=after)))
                    batch = self._new_batch()
            written = all([await task for task in flushing])
            if len(batch) and written:
                await self._flush_until_written(batch, stop, attempts=3)
        finally:
            await self.consumer.stop()
            await self.producer.stop()

    def _new_batch(self) -> Batch:
        return Batch(self.settings.kafka.results_topic, self.settings.kafka.evals_topic)

    async def _fill(self, batch: Batch) -> None:
        room = self.settings.sink.batch_size - len(batch)
        timeout_ms = int(self.settings.sink.flush_interval_s * 1000)
        polled = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max(1, room))
        for partition, records in polled.items():
            self.consumed += len(records)
            batch.add(partition, records)

    def _due(self, batch: Batch) -> bool:
        if not len(batch):
            return False
        full = len(batch) >= self.settings.sink.batch_size
        return full or time.monotonic() - batch.opened_at >= self.settings.sink.flush_interval_s

    async def _flush_until_written(
        self,
        batch: Batch,
        stop: asyncio.Event,
        attempts: int | None = None,
        after: asyncio.Task[bool] | None = None,
    ) -> bool:
        """Prepare the batch, then (once the batch before it, `after`, is written) write it and commit. Hold the
        batch and retry while ClickHouse refuses it. True once written.

        Preparing touches no ClickHouse, so it runs while the batch before is still being written (chdb releases
        the GIL); writes and commits stay in batch order."""
        await asyncio.to_thread(self._prepare, batch)
        if after is not None and not await after:
            return False  # the batch before was given up at shutdown: committing past it would skip it
        tries = 0
        while True:
            try:
                await self.flush(batch)
                return True
            except Backpressure as exc:
                tries += 1
                if (attempts is not None and tries >= attempts) or (stop.is_set() and tries >= 3):
                    log.error("giving up on a batch of %d at shutdown; it will replay: %s", len(batch), exc)
                    return False
                log.warning("%s; retrying in %.1fs", exc, exc.retry_after)
                await asyncio.sleep(exc.retry_after)

    async def flush(self, batch: Batch) -> None:
        """Write a prepared batch off the event loop (chdb releases the GIL while it inserts), then commit."""
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self._write, batch)
        except StorageError as exc:
            SINK_WRITE_FAILURES.inc()
            raise Backpressure(
                f"ClickHouse write failed: {exc}", retry_after=self.settings.sink.retry_backoff_s
            ) from exc
        SINK_FLUSH_SECONDS.observe(time.perf_counter() - started)
        await self._dead_letter(batch.rejected)
        await self._publish_spend(batch)
        try:
            await self.consumer.commit(batch.offsets)
        except (
            KafkaError
        ) as exc:  # e.g. the partitions moved in a rebalance: the new owner replays, the store skips
            log.warning(
                "commit after write failed (%r); the batch will replay and be skipped as already stored", exc
            )
        self.written += len(batch.results)
        count_written(batch.ledger, len(batch.decisions))

    async def _publish_spend(self, batch: Batch) -> None:
        """Budgeted tenants' spend today and this month, for the routers (compacted topic keyed by tenant)."""
        budgets = self.settings.costs.budgets
        tenants = sorted({r.tenant for r in batch.results} & set(budgets)) if budgets else []
        if not tenants:
            return
        for record in await asyncio.to_thread(self.store.spend, tenants, datetime.now(UTC)):
            await self.producer.send(
                self.settings.kafka.spend_topic, record.model_dump_json().encode(), key=record.tenant.encode()
            )

    def _prepare(self, batch: Batch) -> None:
        """Decode and price the results and build their Arrow tables (once, however often the write is retried)."""
        if batch.ledger is None:
            batch.decode_results()
            batch.ledger = LedgerTables(batch.results, self.catalog.price(batch.results))
            _ = batch.ledger.results, batch.ledger.cost_ledger

    def _write(self, batch: Batch) -> None:
        """Every ClickHouse call of a batch, in the writing thread: chdb serves one caller at a time."""
        assert batch.ledger is not None
        self.store.write_ledger(batch.ledger)
        self.store.write_decisions(batch.decisions, self.settings.distill.capture_tasks)
        self.store.write_evals(batch.evals)
        if self.shadow_watch.due():
            self.shadow_watch.refresh()

    async def _dead_letter(self, rejected: list[tuple[ConsumerRecord, DecodeFailure]]) -> None:
        for record, failure in rejected:
            letter = failure.dead_letter(
                record.value or b"",
                "sink",
                source_topic=record.topic,
                source_partition=record.partition,
                source_offset=record.offset,
            )
            await self.producer.send_and_wait(
                self.settings.kafka.dead_letter_topic, letter.model_dump_json().encode()
            )
            DEAD_LETTERS.labels("sink", failure.reason).inc()


TOKEN_COLUMNS = {
    "input": "input_tokens",
    "cached_input": "cached_input_tokens",
    "cache_write": "cache_write_tokens",
    "cache_write_1h": "cache_write_1h_tokens",
    "output": "output_tokens",
    "reasoning": "reasoning_tokens",
}


def count_written(tables: LedgerTables, decisions: int) -> None:
    """Metrics for a batch ClickHouse accepted: rows per table, results per outcome, tokens and cost.

    Summed per label set by Arrow's group-by first: one counter update per group, not per row."""
    for table, rows in (
        ("results", len(tables)),
        ("cost_ledger", len(tables)),
        ("routing_decisions", decisions),
    ):
        if rows:
            SINK_ROWS.labels(table).inc(rows)
    if len(tables):
        _count_results(tables.results)
        _count_costs(tables.cost_ledger)


def _count_results(results: pa.Table) -> None:
    for group in results.group_by(["pool", "status"]).aggregate([([], "count_all")]).to_pylist():
        SINK_RESULTS.labels(group["pool"], group["status"]).inc(group["count_all"])
    tokens = results.group_by(["pool", "model"]).aggregate(
        [(column, "sum") for column in TOKEN_COLUMNS.values()]
    )
    for group in tokens.to_pylist():
        for kind, column in TOKEN_COLUMNS.items():
            if group[f"{column}_sum"]:
                TOKENS.labels(group["pool"], group["model"], kind).inc(group[f"{column}_sum"])


def _count_costs(ledger: pa.Table) -> None:
    for group in ledger.group_by(["pool", "model"]).aggregate([("total_cost_usd", "sum")]).to_pylist():
        COST_USD.labels(group["pool"], group["model"]).inc(float(group["total_cost_usd_sum"]))
    unpriced = ledger.filter(pc.equal(ledger["priced"], 0))
    if unpriced.num_rows:
        for group in unpriced.group_by(["provider", "model"]).aggregate([([], "count_all")]).to_pylist():
            UNPRICED_RESULTS.labels(group["provider"], group["model"]).inc(group["count_all"])
            _warn_unpriced(group["provider"], group["model"])


@functools.cache
def _warn_unpriced(provider: str, model: str) -> None:
    """Once per model and process: the log says what the metric counts, and what to do."""
    log.warning(
        "%s answered as model %r, which no price file covers: stored with priced = 0 (not $0); add it or an "
        "alias to the price files, then run `modelyard costs reprice`",
        provider,
        model,
    )
