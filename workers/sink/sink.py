"""ClickHouseSink: results topic -> results + cost_ledger tables; pool topics -> routing_decisions.

A stage of the consume-commit runtime (modelyard/core/runtime.py): adds records to a batch, flushes by size
or time, writes with clickhouse-connect off the event loop; the runtime commits the batch's offsets only after
the write succeeded (the batch's receipts resolve then). A due batch is decoded (msgspec first, pydantic
for the verdict on anything it refuses), priced and turned into Arrow tables while the batch before it is
still being written; writes and commits stay in batch order. While ClickHouse is unavailable it holds the
batch (consuming nothing more) and retries with backoff. Replays are harmless: results dedup on (job_id,
attempt), the ledger on (job_id, attempt, call_id), so only a second real provider call adds a cost row
(workers/sink/call_rows.py). With budgets set, each write also records and settles the batch's reservations
and publishes budgeted tenants' spend (workers/sink/reservations.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from modelyard.core._exceptions import Backpressure, StorageError
from modelyard.core.kafka import consumer_for, kafka_errors, make_producer
from modelyard.core.observability import (
    COST_USD,
    DEAD_LETTERS,
    REPEAT_CALLS,
    SINK_FLUSH_SECONDS,
    SINK_RESULTS,
    SINK_ROWS,
    SINK_WRITE_FAILURES,
    TOKENS,
    UNPRICED_RESULTS,
)
from modelyard.core.runtime import ConsumeCommit, Fetched, Receipt, Room
from modelyard.core.settings import KafkaSettings, ShadowAlertSettings, SinkSettings
from schemas import AnyResult, Assignment, Result, ResultStruct, TaskType
from schemas.decoding import StructFirst, decode
from schemas.evaluation import EvalScore
from schemas.rejection import Rejection
from schemas.spend import SpendRecord
from workers.sink.cache_savings import cache_savings
from workers.sink.call_rows import RowPlan
from workers.sink.clickhouse import ClickHouseStore
from workers.sink.ledger_tables import LedgerTables
from workers.sink.pricing import PriceCatalog
from workers.sink.reservations import ReservationLedger
from workers.sink.shadow_watch import ShadowAgreementWatch

log = logging.getLogger("modelyard.sink")
decode_result = StructFirst(
    ResultStruct, Result
)  # msgspec for well-formed results, pydantic for every verdict
FLUSHING_MAX = 2  # one batch written, the next one prepared, while a third fills
# a rebalance waits this long at most for the batches being written (ClickHouse may be down)
REVOKE_WAIT_S = 10.0


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
    rejected: list[tuple[ConsumerRecord, Rejection]] = field(default_factory=list)
    ledger: LedgerTables | None = None  # the results and their costs as Arrow tables, once prepared
    rows: RowPlan | None = None  # which of them the tables took, once written
    spend: list[SpendRecord] = field(default_factory=list)  # budgeted tenants' figures, once written
    opened_at: float = field(default_factory=time.monotonic)
    # what the runtime's receipts for this batch wait for: True once written, False if given up
    written: asyncio.Future[bool] | None = None

    def add(self, partition: TopicPartition, records: list[ConsumerRecord]) -> None:
        """One partition's fetched records, in offset order (results are decoded at write time, off the loop)."""
        if not records:
            return
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
            if isinstance(value, Rejection):
                rejected.append((record, value))
            else:
                results.append(value)
        self.undecoded = []

    def _keep(self, record: ConsumerRecord, value: object, bucket: list) -> None:
        if isinstance(value, Rejection):
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
    def __init__(
        self,
        store: ClickHouseStore,
        catalog: PriceCatalog,
        *,
        config: SinkSettings,
        kafka: KafkaSettings,
        group_id: str,
        topics: list[str],
        shadow_alert: ShadowAlertSettings,
        budgeted_tenants: Collection[str] = (),
        capture_tasks: Collection[TaskType] = (),
    ) -> None:
        """budgeted_tenants: whose spend goes on the spend topic; capture_tasks: whose inputs are kept."""
        self.config = config
        self.kafka = kafka
        self.group_id = group_id
        self.topics = topics
        self.budgeted_tenants = frozenset(budgeted_tenants)
        self.capture_tasks = capture_tasks
        self.store = store
        self.catalog = catalog
        self.written = 0
        self.consumed = 0
        self.shadow_watch = ShadowAgreementWatch(store, shadow_alert)
        self.reservations = ReservationLedger(store, self.budgeted_tenants)
        self.consumer: AIOKafkaConsumer | None = None  # once running (consumer lag, readiness)
        self._flushing: deque[asyncio.Task[bool]] = deque()
        self._closing = asyncio.Lock()  # one batch closed at a time (the fetch loop, or a revoke)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume, batch, write, commit; until `stop` is set. aiokafka clients live inside the running loop."""
        self._stop, self._batch = stop, self._new_batch()
        self.producer = make_producer(self.kafka)
        self.consumer = consumer_for(self.kafka, self.group_id, self.config.batch_size)
        runtime = ConsumeCommit(
            self, self.consumer, self.producer, self.topics, fetch_timeout_s=self.config.flush_interval_s
        )
        await runtime.run(stop)

    def _new_batch(self) -> Batch:
        batch = Batch(self.kafka.results_topic, self.kafka.evals_topic)
        batch.written = asyncio.get_running_loop().create_future()
        return batch

    async def room(self) -> Room:
        return Room(max(1, self.config.batch_size - len(self._batch)))

    async def take(self, fetched: Fetched) -> list[Receipt]:
        """Add a fetch to the open batch; once it is due (full, or its first record waited flush_interval_s), start
        writing it, at most FLUSHING_MAX batches at once (past that, fetching waits)."""
        batch, receipts = self._batch, []
        for partition, records in fetched.items():
            if records:
                self.consumed += len(records)
                batch.add(partition, records)
                assert batch.written is not None
                receipts.append(Receipt(partition, records[0].offset, records[-1].offset + 1, batch.written))
        if self._due(batch):
            await self._close_batch()
        return receipts

    async def _close_batch(self) -> None:
        async with self._closing:
            if not len(self._batch):
                return
            while len(self._flushing) >= FLUSHING_MAX:  # a failed write is fatal through its receipts
                await asyncio.wait([self._flushing.popleft()])
            after = self._flushing[-1] if self._flushing else None
            self._flushing.append(asyncio.create_task(self._write_batch(self._batch, after=after)))
            self._batch = self._new_batch()

    async def drain(self, partitions: set[TopicPartition] | None) -> None:
        """Revoke: write the open batch now and wait (up to REVOKE_WAIT_S) for the batches being written. Stop:
        wait for those, then write the open batch (3 tries) unless one before it was given up."""
        if partitions is not None:
            await asyncio.wait([asyncio.create_task(self._write_all_taken())], timeout=REVOKE_WAIT_S)
            return
        written = all([await task for task in self._flushing])
        self._flushing.clear()
        if len(self._batch) and written:
            await self._write_batch(self._batch, attempts=3)

    async def _write_all_taken(self) -> None:
        await self._close_batch()
        if self._flushing:
            await asyncio.wait(list(self._flushing))

    async def _write_batch(
        self, batch: Batch, attempts: int | None = None, after: asyncio.Task[bool] | None = None
    ) -> bool:
        """_flush_until_written, its outcome handed to the batch's receipts (an error too: the runtime stops)."""
        assert batch.written is not None
        try:
            written = await self._flush_until_written(batch, self._stop, attempts, after)
        except asyncio.CancelledError:
            batch.written.cancel()
            raise
        except Exception as exc:
            batch.written.set_exception(exc)
            return False
        batch.written.set_result(written)
        return written

    def _due(self, batch: Batch) -> bool:
        if not len(batch):
            return False
        full = len(batch) >= self.config.batch_size
        return full or time.monotonic() - batch.opened_at >= self.config.flush_interval_s

    async def _flush_until_written(
        self,
        batch: Batch,
        stop: asyncio.Event,
        attempts: int | None = None,
        after: asyncio.Task[bool] | None = None,
    ) -> bool:
        """Prepare the batch, then (once the batch before it, `after`, is written) write it. Hold the batch and
        retry while ClickHouse refuses it. True once written.

        Preparing touches no ClickHouse, so it runs while the batch before is still being written (chdb releases
        the GIL); writes stay in batch order (and commits: the runtime commits below the oldest unwritten)."""
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
        """Write a prepared batch off the event loop (chdb releases the GIL while it inserts), then its dead
        letters and the spend it changed; the runtime commits its offsets once this returns."""
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self._write, batch)
        except StorageError as exc:
            SINK_WRITE_FAILURES.inc()
            raise Backpressure(
                f"ClickHouse write failed: {exc}", retry_after=self.config.retry_backoff_s
            ) from exc
        SINK_FLUSH_SECONDS.observe(time.perf_counter() - started)
        with kafka_errors("produce dead letters and spend"):
            await self._dead_letter(batch.rejected)
            await self._publish_spend(batch)
        self.written += len(batch.results)
        count_written(batch.ledger, len(batch.decisions), batch.rows)

    async def _publish_spend(self, batch: Batch) -> None:
        """Budgeted tenants' spend and open reservations, for routers and pools (compacted, keyed by tenant);
        delivered before the batch's offsets are committed, so a replay cannot skip a record."""
        sent = [
            await self.producer.send(
                self.kafka.spend_topic, record.model_dump_json().encode(), key=record.tenant.encode()
            )
            for record in batch.spend
        ]
        for delivery in sent:
            await delivery

    def _prepare(self, batch: Batch) -> None:
        """Decode and price the results and build their Arrow tables (once, however often the write is retried)."""
        if batch.ledger is None:
            batch.decode_results()
            results = batch.results
            batch.ledger = LedgerTables(
                results, self.catalog.price(results), cache_savings(self.catalog, results)
            )
            _ = batch.ledger.results, batch.ledger.cost_ledger

    def _write(self, batch: Batch) -> None:
        """Every ClickHouse call of a batch, in the writing thread: chdb serves one caller at a time."""
        assert batch.ledger is not None
        batch.rows = self.store.write_ledger(batch.ledger)
        self.store.write_decisions(batch.decisions, self.capture_tasks)
        self.store.write_evals(batch.evals)
        batch.spend = self.reservations.account(batch.decisions, batch.results, datetime.now(UTC))
        if self.shadow_watch.due():
            self.shadow_watch.refresh()

    async def _dead_letter(self, rejected: list[tuple[ConsumerRecord, Rejection]]) -> None:
        for record, failure in rejected:
            letter = failure.dead_letter(
                record.value or b"",
                "sink",
                source_topic=record.topic,
                source_partition=record.partition,
                source_offset=record.offset,
            )
            await self.producer.send_and_wait(self.kafka.dead_letter_topic, letter.model_dump_json().encode())
            DEAD_LETTERS.labels("sink", failure.reason).inc()


TOKEN_COLUMNS = {
    "input": "input_tokens",
    "cached_input": "cached_input_tokens",
    "cache_write": "cache_write_tokens",
    "cache_write_1h": "cache_write_1h_tokens",
    "output": "output_tokens",
    "reasoning": "reasoning_tokens",
}


def count_written(tables: LedgerTables, decisions: int, rows: RowPlan | None = None) -> None:
    """Metrics for a batch ClickHouse accepted: rows per table, results per outcome, tokens and cost, repeat
    calls. Summed per label set by Arrow's group-by first: one counter update per group, not per row."""
    for table, count in (
        ("results", len(tables)),
        ("cost_ledger", len(tables)),
        ("routing_decisions", decisions),
    ):
        if count:
            SINK_ROWS.labels(table).inc(count)
    if len(tables):
        _count_results(tables.results)
        _count_costs(tables.cost_ledger)
    for row in rows.repeats() if rows is not None else ():
        REPEAT_CALLS.labels(tables.rows[row].pool).inc()


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
