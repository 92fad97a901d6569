"""ReadAhead: reads a pool's partitions ahead of its slots, so the FairScheduler can choose among tenants.

A partition is one ordered log: a small tenant's items may sit behind a big tenant's 20,000. Holding all of
those in memory to reach them is unbounded, so the read-ahead holds at most `flow_cap` items per flow (a
tenant at one priority) and `read_ahead` in all, and for the rest keeps only their offsets (8 bytes each):

* **Fresh reading.** Records past a partition's frontier are peeked (tenant, priority, deadline, size: a
  partial msgspec decode) and queued if their flow has room; otherwise their offset joins the flow's skip list
  for that partition, and reading goes on, up to `scan_limit` offsets past the oldest unfinished one. That is
  how the other tenants' items are reached. A flow that has skipped offsets in a partition skips its later
  records there too, so each flow is read in order.
* **Rewinds.** When a flow with skipped offsets has drained to half its cap, its partition seeks back to the
  flow's oldest skipped offset and re-reads, queuing that flow's skipped records (others are passed over:
  they are queued, done, or in their own skip lists) until the flow is full or its list is empty, then seeks
  back to the frontier. A dense backlog is read about twice; a rewind costs a fetch.
* **Commits.** `WindowOffsets` commits a partition only below its oldest unfinished item: queued, in flight,
  or skipped. Nothing is committed that has not finished; a crash replays the rest. It is the tracker of the
  pool's consume-commit runtime (modelyard/core/runtime.py), which fetches for the read-ahead: `plan` steers
  each fetch, `absorb` files what came back.

Memory: `read_ahead` records, plus the skip lists (at most `scan_limit` offsets per owned partition), plus
aiokafka's fetch buffers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from modelyard.core.observability import POOL_SKIPPED, POOL_WAITING
from modelyard.core.offsets import OffsetTracker
from modelyard.core.settings import SchedulingSettings
from workers.pools.scheduling import NO_DEADLINE, FairScheduler, Queued

log = logging.getLogger("modelyard.pool")
Flow = tuple[str, int]  # tenant, priority
FETCH_RECORDS = 2000  # records per getmany: scanning past a backlog wants big reads
SEEK_GAP = 2000  # a rewind seeks straight to the next skipped offset when it is this far ahead
UNREADABLE: Flow = ("", 9)  # records that do not even peek: they are dead-lettered at once, without a call


class _PeekParams(msgspec.Struct, frozen=True):
    max_output_tokens: int | None = None


class _PeekItem(msgspec.Struct, frozen=True):
    tenant: str
    priority: int = 5
    deadline: datetime | None = None
    params: _PeekParams = _PeekParams()


class _PeekAssignment(msgspec.Struct, frozen=True):
    """What the scheduler needs of an Assignment; unknown fields are skipped, not parsed into objects."""

    item: _PeekItem
    input_tokens_est: int = 0


_peek = msgspec.json.Decoder(_PeekAssignment).decode


@dataclass(frozen=True, slots=True)
class Peeked:
    flow: Flow
    deadline: float
    cost: float


def peek(value: bytes | None, default_output_tokens: int) -> Peeked:
    """Tenant, priority, deadline and estimated tokens of an Assignment record. A record that does not peek
    is filed under UNREADABLE; the pool's full decode then dead-letters it with the field at fault."""
    try:
        found = _peek(value or b"")
    except (msgspec.DecodeError, msgspec.ValidationError):
        return Peeked(UNREADABLE, NO_DEADLINE, 1.0)
    item = found.item
    priority = item.priority if 0 <= item.priority <= 9 else 9
    deadline = NO_DEADLINE
    if item.deadline is not None and item.deadline.tzinfo is not None:
        deadline = item.deadline.timestamp()
    output = item.params.max_output_tokens or default_output_tokens
    return Peeked((item.tenant, priority), deadline, float(max(found.input_tokens_est, 0) + output))


class OffsetQueue:
    """Ascending offsets, 8 bytes each; popped from the front."""

    __slots__ = ("_head", "_offsets")

    def __init__(self) -> None:
        self._offsets = array("q")
        self._head = 0

    def __len__(self) -> int:
        return len(self._offsets) - self._head

    def append(self, offset: int) -> None:
        self._offsets.append(offset)

    @property
    def front(self) -> int:
        return self._offsets[self._head]

    def popleft(self) -> int:
        offset = self._offsets[self._head]
        self._head += 1
        if self._head >= 4096 and self._head * 2 >= len(self._offsets):
            del self._offsets[: self._head]
            self._head = 0
        return offset


@dataclass
class PartitionWindow:
    """What one partition's reading knows: where fresh records start, what it skipped, what it re-reads."""

    frontier: int | None = None  # the next offset never read
    skipped: dict[Flow, OffsetQueue] = field(default_factory=dict)
    rewinding: Flow | None = None  # the flow whose skipped records it re-reads now
    skipped_count: int = 0

    def first_skipped(self) -> int | None:
        fronts = [q.front for q in self.skipped.values() if len(q)]
        return min(fronts) if fronts else None

    def skip(self, flow: Flow, offset: int) -> bool:
        """Keep a skipped record's offset; True when the flow had none skipped here before."""
        queue = self.skipped.get(flow)
        new = queue is None
        if queue is None:
            queue = self.skipped[flow] = OffsetQueue()
        queue.append(offset)
        self.skipped_count += 1
        return new

    def unskip(self, flow: Flow) -> bool:
        """The flow's oldest skipped record was queued (or is gone); True when none is left skipped here."""
        queue = self.skipped[flow]
        queue.popleft()
        self.skipped_count -= 1
        if not len(queue):
            del self.skipped[flow]
            return True
        return False


class WindowOffsets(OffsetTracker):
    """OffsetTracker that also holds a partition's commit below its skipped records, and moves it to the
    frontier when everything read there has finished (records skipped then re-read included)."""

    def __init__(self, windows: dict[TopicPartition, PartitionWindow]) -> None:
        super().__init__()
        self.windows = windows
        self.released: set[TopicPartition] = set()  # revoked, not forgotten yet: records read are ignored

    def committable(self) -> dict[TopicPartition, int]:
        ready = {}
        for tp, window in self.windows.items():
            if window.frontier is None:
                continue
            pending = self._pending.get(tp)
            position = min(pending) if pending else window.frontier
            first = window.first_skipped()
            if first is not None:
                position = min(position, first)
            if position > self._committed.get(tp, -1):
                ready[tp] = position
        return ready

    def committed(self, tp: TopicPartition) -> int:
        """The last offset committed for the partition (0 before the first commit)."""
        return max(self._committed.get(tp, 0), 0)

    def floor(self, tp: TopicPartition) -> int | None:
        """The oldest offset of the partition not finished yet (None before anything was read)."""
        window = self.windows.get(tp)
        if window is None or window.frontier is None:
            return None
        pending = self._pending.get(tp)
        position = min(pending) if pending else window.frontier
        first = window.first_skipped()
        return position if first is None else min(position, first)

    def forget(self, partitions: set[TopicPartition]) -> None:
        super().forget(partitions)
        for tp in partitions:
            self.windows.pop(tp, None)
        self.released -= partitions


class ReadAhead:
    def __init__(
        self, settings: SchedulingSettings, pool: str, default_output_tokens: int, wake: asyncio.Event
    ) -> None:
        self.settings = settings
        self._waiting, self._skipped = POOL_WAITING.labels(pool), POOL_SKIPPED.labels(pool)
        self.default_output_tokens = default_output_tokens
        self.wake = wake  # set whenever items are queued: the pool's slot loop waits on it
        self.scheduler = FairScheduler(settings, _now())
        self.windows: dict[TopicPartition, PartitionWindow] = {}
        self.offsets = WindowOffsets(self.windows)
        self.paused: set[TopicPartition] = set()
        self.skip_lists: Counter[str] = (
            Counter()
        )  # per tenant, its (partition, flow) skip lists: heavy while > 0
        self.reads = 0  # records read, re-reads included (read amplification = reads / items started)
        self.rewinds = 0
        self._queued: list[Queued] = []  # what the fetch being absorbed queued

    def __len__(self) -> int:
        return len(self.scheduler)

    # -- the slot side ---------------------------------------------------------------------------------
    def take(self, n: int, now: float | None = None) -> list[Queued]:
        """Up to n items to start, in the scheduler's order."""
        if n <= 0 or not len(self.scheduler):
            return []
        return self.scheduler.pop_many(n, now if now is not None else _now())

    # -- the reading side: the pool's consume-commit runtime fetches; these steer it and file what it read -----
    def plan(self, consumer: AIOKafkaConsumer) -> tuple[int, float]:
        """Before a fetch: steer (seek, pause, resume); then how many records to fetch and how long to wait
        for them (short polls while some flow waits for a rewind)."""
        self._steer(consumer)
        return self._fetch_size(), 0.01 if self._skipping() else 0.2

    def absorb(
        self, consumer: AIOKafkaConsumer, batches: dict[TopicPartition, list[ConsumerRecord]]
    ) -> list[Queued]:
        """File one fetch's records; the items queued by it (fresh or re-read), whose offsets are now in flight:
        the caller starts their spans (a commit stops below them until they finish)."""
        self._queued: list[Queued] = []
        read = 0
        for tp, records in batches.items():
            if records and tp not in self.offsets.released:
                read += self._absorb(consumer, tp, records)
        if read:
            self.wake.set()
        self._waiting.set(len(self.scheduler))
        self._skipped.set(sum(w.skipped_count for w in self.windows.values()))
        return self._queued

    def release(self, partitions: set[TopicPartition]) -> None:
        """A rebalance revokes these partitions: stop starting their waiting items (which stay uncommitted
        until `offsets.forget`, so the commit before the hand-over stops below them)."""
        self.scheduler.drop(partitions)
        self.offsets.released |= partitions
        for tp in partitions:
            window = self.windows.get(tp)
            if window is not None:
                window.rewinding = None
                for (
                    tenant,
                    _,
                ) in window.skipped:  # kept until `forget` (they hold the commit), no longer heavy
                    self._skip_list_gone(tenant)
        self.paused -= partitions

    def _fetch_size(self) -> int:
        """Records to take from one fetch: many while scanning; while a rewind refills a flow, about what
        fits (the rest of what the broker sent is dropped at the seek back, so it is not unpacked)."""
        rooms = [
            self.settings.flow_cap - self.scheduler.waiting(*w.rewinding)
            for w in self.windows.values()
            if w.rewinding is not None
        ]
        return FETCH_RECORDS if not rooms else min(max(2 * min(rooms), 64), FETCH_RECORDS)

    def _skipping(self) -> bool:
        return any(w.skipped_count for w in self.windows.values())

    def _room(self, flow: Flow) -> bool:
        return (
            len(self.scheduler) < self.settings.read_ahead
            and self.scheduler.waiting(*flow) < self.settings.flow_cap
        )

    def _low(self, flow: Flow) -> bool:
        """Room for half a cap: worth a rewind (a fetch) to refill."""
        return (
            len(self.scheduler) < self.settings.read_ahead
            and self.scheduler.waiting(*flow) <= self.settings.flow_cap // 2
        )

    def _steer(self, consumer: AIOKafkaConsumer) -> None:
        rewinding = {w.rewinding for w in self.windows.values() if w.rewinding is not None}
        assigned = consumer.assignment()
        for tp, window in self.windows.items():
            if tp not in assigned or tp in self.offsets.released:
                continue
            if window.rewinding is None and window.skipped:
                flow = self._due_rewind(window, rewinding)
                if flow is not None:
                    window.rewinding = flow
                    rewinding.add(flow)
                    self.rewinds += 1
                    consumer.seek(tp, window.skipped[flow].front)
            self._pause_or_resume(consumer, tp, window)

    def _due_rewind(self, window: PartitionWindow, rewinding: set[Flow]) -> Flow | None:
        """The flow with the oldest skipped record here that has drained (one partition refills it at a time)."""
        due = [
            (q.front, flow) for flow, q in window.skipped.items() if flow not in rewinding and self._low(flow)
        ]
        return min(due)[1] if due else None

    def _pause_or_resume(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, window: PartitionWindow
    ) -> None:
        too_far = self._too_far(tp, window)
        full = len(self.scheduler) >= self.settings.read_ahead
        hold = window.rewinding is None and (too_far or full)
        if hold and tp not in self.paused:
            consumer.pause(tp)
            self.paused.add(tp)
        elif not hold and tp in self.paused:
            consumer.resume(tp)
            self.paused.discard(tp)

    def _too_far(self, tp: TopicPartition, window: PartitionWindow) -> bool:
        """Read `scan_limit` past the oldest unfinished offset? (The last commit bounds that offset from below,
        so the exact floor, a min over what is pending, is only computed near the limit.)"""
        if window.frontier is None:
            return False
        limit = self.settings.scan_limit
        if window.frontier - self.offsets.committed(tp) < limit:
            return False
        floor = self.offsets.floor(tp)
        return floor is not None and window.frontier - floor >= limit

    def _absorb(self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list[ConsumerRecord]) -> int:
        window = self.windows.setdefault(tp, PartitionWindow())
        if window.frontier is None:
            window.frontier = records[0].offset
        read = 0
        for record in records:
            read += 1
            if record.offset < window.frontier:
                if window.rewinding is None or not self._reread(consumer, tp, window, record):
                    break  # the partition was sought elsewhere: the rest of this fetch is stale
                continue
            if window.rewinding is not None:  # a rewind that reached the frontier is over
                window.rewinding = None
            self._fresh(tp, window, record)
        self.reads += read
        return read

    def _reread(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, window: PartitionWindow, record: ConsumerRecord
    ) -> bool:
        """One re-read record of a rewind. False when the rewind is over (and the partition sought back)."""
        flow = window.rewinding
        assert flow is not None
        queue = window.skipped.get(flow)
        if queue is None or not self._room(flow):
            return self._end_rewind(consumer, tp, window)
        if record.offset < queue.front:
            return True  # queued, finished or another flow's: passed over
        if record.offset > queue.front:  # the skipped record is gone (deleted by retention): let it go
            log.warning("skipped offset %s of %s is no longer there", queue.front, tp)
            self._unskip(window, flow)
            return True if flow in window.skipped else self._end_rewind(consumer, tp, window)
        self._queue(tp, record, peek(record.value, self.default_output_tokens))
        self._unskip(window, flow)
        if flow not in window.skipped:
            return self._end_rewind(consumer, tp, window)
        if window.skipped[flow].front - record.offset > SEEK_GAP:
            consumer.seek(tp, window.skipped[flow].front)
            return False
        return True

    def _end_rewind(self, consumer: AIOKafkaConsumer, tp: TopicPartition, window: PartitionWindow) -> bool:
        window.rewinding = None
        assert window.frontier is not None
        consumer.seek(tp, window.frontier)
        return False

    def _fresh(self, tp: TopicPartition, window: PartitionWindow, record: ConsumerRecord) -> None:
        peeked = peek(record.value, self.default_output_tokens)
        window.frontier = record.offset + 1
        if peeked.flow in window.skipped or not self._room(peeked.flow):
            if window.skip(peeked.flow, record.offset):
                self._skip_list_new(peeked.flow[0])
        else:
            self._queue(tp, record, peeked)

    def _unskip(self, window: PartitionWindow, flow: Flow) -> None:
        if window.unskip(flow):
            self._skip_list_gone(flow[0])

    def _skip_list_new(self, tenant: str) -> None:
        """A tenant's backlog overflowed the read-ahead somewhere: it is heavy."""
        self.skip_lists[tenant] += 1
        if self.skip_lists[tenant] == 1:
            self.scheduler.set_heavy(tenant, True)

    def _skip_list_gone(self, tenant: str) -> None:
        self.skip_lists[tenant] -= 1
        if self.skip_lists[tenant] <= 0:
            del self.skip_lists[tenant]
            self.scheduler.set_heavy(tenant, False)

    def _queue(self, tp: TopicPartition, record: ConsumerRecord, peeked: Peeked) -> None:
        tenant, priority = peeked.flow
        entry = Queued(tp, record, tenant, priority, peeked.deadline, peeked.cost)
        self.scheduler.push(entry, _now())
        self._queued.append(entry)


def _now() -> float:
    return time.time()
