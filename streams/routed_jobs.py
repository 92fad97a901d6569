"""RoutedJobIds: every job id the router sent to a pool, kept across restarts and beyond the in-memory window.

`RecentJobIds` (dedup.py, admission's in-memory dedup) forgets after `router.dedup_window_s` and on every restart, and a job id reused after
that used to reach a pool: the provider was called and billed, and the sink dropped the answer as a replay.
This is the durable record that stops it:

* every routed batch adds, per jobs partition, one record to `<prefix>.jobs.routed` (key: the jobs partition;
  value: the job ids it sent to pools and their offsets). The record goes out with the batch's assignments,
  and the batch's offsets are committed only once both are durable, so every committed job is on record;
* a router reads the topic back before it routes (at start and after every rebalance), so it knows every job
  id routed within `kafka.routed_jobs_retention_days` (the topic's retention; older entries are skipped);
* a job id on record at another (partition, offset) is a reused id: admission dead-letters it
  (`duplicate_job_id`, with the job id) before any pool could call a provider. The same (partition, offset)
  is the router's own replay after a crash: routed again, as before.

One record per batch and partition rather than one compacted record per job id: per job it would double the
records the router produces (a Faust table also needs Faust's own consumer, which the batch engine turns off).

Memory: each id is held as its 64-bit string hash with its position, about 140 bytes an id, for
`kafka.routed_jobs_retention_days` and at most `router.job_ids_max_entries` ids (the oldest batches go first).
Two different ids with one hash would refuse the later one as a reuse (a dead letter saying so): with ten
million ids held, about a one-in-300,000 chance that any such pair exists.
"""

from __future__ import annotations

import logging
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from modelyard.core.kafka import make_reader, read_to_end, started
from modelyard.core.settings import KafkaSettings
from schemas.rejection import Rejection

log = logging.getLogger("modelyard.router")
OFFSETS = 1 << 40  # a position is packed as partition * OFFSETS + offset (one int per job id)


class Position(Protocol):
    partition: int
    offset: int


class RoutedJobIds:
    def __init__(
        self, retention_s: float, max_entries: int = 5_000_000, clock: Callable[[], float] = time.time
    ) -> None:
        self.retention_s = retention_s
        self.max_entries = max_entries
        self.clock = clock
        self._at: dict[int, int] = {}  # hash of a job id -> packed position of the record that routed it
        self._pending: dict[int, tuple[list[str], list[int]]] = {}  # jobs partition -> ids, offsets
        self._batches: deque[tuple[float, array[int], array[int]]] = (
            deque()
        )  # hashes, positions; oldest first

    def routed_at(self, job_id: str, partition: int, offset: int) -> tuple[int, int] | None:
        """Where this job id was routed before, when that was another record; None for a new id or a replay."""
        packed = self._at.get(hash(job_id))
        if packed is None or packed == partition * OFFSETS + offset:
            return None
        return divmod(packed, OFFSETS)

    def refusal(self, job_id: str, partition: int, offset: int) -> Rejection | None:
        """Admission's check (on every record: one lookup): a job id routed before from another record is
        refused, saying where."""
        packed = self._at.get(hash(job_id))
        if packed is None or packed == partition * OFFSETS + offset:
            return None
        first_partition, first_offset = divmod(packed, OFFSETS)
        return Rejection(
            "duplicate_job_id",
            "job_id",
            f"job_id {job_id!r} was already routed to a pool (jobs partition {first_partition}, offset "
            f"{first_offset}); a job id names one job, so this one is refused before any provider is called",
        )

    def add(self, job_id: str, partition: int, offset: int) -> None:
        """Routed to a pool now: put on record with this batch, and held from then on (records())."""
        pending = self._pending.get(partition)
        if pending is None:
            pending = self._pending[partition] = ([], [])
        pending[0].append(job_id)
        pending[1].append(offset)

    def add_many(self, job_ids: Iterable[str], sources: Iterable[Position]) -> None:
        """`add` for a batch's items, in order (a fetch holds runs of records of one partition)."""
        pending, last = self._pending, -1
        ids: list[str] = []
        offsets: list[int] = []
        for job_id, source in zip(job_ids, sources, strict=True):
            if source.partition != last:
                last = source.partition
                ids, offsets = pending.get(last) or pending.setdefault(last, ([], []))
            ids.append(job_id)
            offsets.append(source.offset)

    def records(self) -> list[tuple[bytes, bytes]]:
        """The batch's record for each jobs partition (key, value), for the routed-jobs topic; its ids are held
        from now on (the engines call this once a batch is routed, before the next is validated)."""
        now, out = self.clock(), []
        for partition, (job_ids, offsets) in self._pending.items():
            out.append((b"%d" % partition, _record(partition, job_ids, offsets)))
            keys, positions = self._remember(now, partition, job_ids, offsets)
            self._at.update(zip(keys, positions, strict=True))  # a replayed record: the same position again
        self._pending = {}
        self._evict(now)
        return out

    def load(self, value: bytes, timestamp_ms: int) -> int:
        """A record read back from the topic (another router's, or an earlier run's); how many ids it held."""
        written = timestamp_ms / 1000
        if written < self.clock() - self.retention_s:
            return 0
        record = orjson.loads(value)
        partition, job_ids, offsets = record["partition"], record["job_ids"], record["offsets"]
        at, base = self._at, partition * OFFSETS
        for job_id, offset in zip(job_ids, offsets, strict=True):
            at.setdefault(hash(job_id), base + offset)
        self._remember(written, partition, job_ids, offsets)
        self._evict(self.clock())
        return len(job_ids)

    def _remember(
        self, at: float, partition: int, job_ids: list[str], offsets: list[int]
    ) -> tuple[array[int], array[int]]:
        """Keep a batch's hashes and positions for eviction; returns them."""
        base = partition * OFFSETS
        keys, positions = array("q", map(hash, job_ids)), array("q", [base + o for o in offsets])
        self._batches.append((at, keys, positions))
        return keys, positions

    def _evict(self, now: float) -> None:
        """Batches older than the retention, and the oldest while more ids are held than the cap."""
        batches, at = self._batches, self._at
        while batches and (batches[0][0] < now - self.retention_s or len(at) > self.max_entries):
            _, keys, positions = batches.popleft()
            for key, packed in zip(keys, positions, strict=True):
                if at.get(key) == packed:
                    del at[key]

    def __len__(self) -> int:
        return len(self._at)


def _record(partition: int, job_ids: list[str], offsets: list[int]) -> bytes:
    return orjson.dumps({"partition": partition, "job_ids": job_ids, "offsets": offsets})


class RoutedJobsFeed:
    """Reads the routed-jobs topic (every partition, group-less) into a RoutedJobIds, up to its end."""

    def __init__(self, kafka: KafkaSettings, seen: RoutedJobIds) -> None:
        self.kafka = kafka
        self.seen = seen
        self._consumer: AIOKafkaConsumer | None = None

    async def catch_up(self) -> int:
        """Every record written before this call (the first call reads from the beginning); ids loaded."""
        started, loaded = time.monotonic(), 0

        def load(record: ConsumerRecord) -> None:
            nonlocal loaded
            loaded += self.seen.load(record.value, record.timestamp)

        await read_to_end(await self._started(), load)
        log.info(
            "routed job ids read back: %d loaded, %d held (%.2fs)",
            loaded,
            len(self.seen),
            time.monotonic() - started,
        )
        return loaded

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = make_reader(
                self.kafka, self.kafka.routed_jobs_topic, max_partition_fetch_bytes=8 * 1024 * 1024
            )
            await started(consumer, self.kafka)
            self._consumer = consumer
        return self._consumer

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
