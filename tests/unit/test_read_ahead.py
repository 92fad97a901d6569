"""Read-ahead bookkeeping without Kafka: peeking at records, skip lists, and commits only below unfinished work.
(The reading itself, with seeks and rewinds, runs against real Kafka in tests/integration/test_bulk_economics.py.)"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from aiokafka import TopicPartition

from workers.pools.read_ahead import UNREADABLE, OffsetQueue, PartitionWindow, WindowOffsets, peek
from workers.pools.scheduling import NO_DEADLINE

TP = TopicPartition("t", 0)


def record(**item: object) -> bytes:
    return orjson.dumps(
        {
            "item": {"job_id": "j", "tenant": "acme", "input": "x", **item},
            "task_type": "classification",
            "input_tokens_est": 12,
            "routed_at": datetime.now(UTC),
        }
    )


def test_peek_reads_tenant_priority_deadline_and_size() -> None:
    deadline = datetime(2030, 1, 1, tzinfo=UTC)
    found = peek(record(priority=9, deadline=deadline, params={"max_output_tokens": 8}), 256)
    assert found.flow == ("acme", 9) and found.deadline == deadline.timestamp() and found.cost == 20
    default = peek(record(), 256)
    assert default.flow == ("acme", 5) and default.deadline == NO_DEADLINE and default.cost == 12 + 256


def test_records_that_do_not_peek_are_filed_apart() -> None:
    for raw in (b"", b"{nope", orjson.dumps({"item": {"job_id": "j"}}), None):
        assert peek(raw, 256).flow == UNREADABLE


def test_offset_queue_pops_in_order_and_compacts() -> None:
    queue = OffsetQueue()
    for offset in range(10_000):
        queue.append(offset)
    popped = [queue.popleft() for _ in range(9_000)]
    assert popped == list(range(9_000)) and len(queue) == 1_000 and queue.front == 9_000


def test_commit_stops_below_skipped_and_unfinished_records() -> None:
    windows = {TP: PartitionWindow(frontier=20)}
    offsets = WindowOffsets(windows)
    offsets.started(TP, 10)
    windows[TP].skip(("big", 5), 12)
    assert offsets.committable() == {TP: 10}
    offsets.finished(TP, 10)
    assert offsets.committable() == {TP: 12}  # the skipped record still holds it
    offsets.mark_committed({TP: 12})
    windows[TP].unskip(("big", 5))
    offsets.started(TP, 12)  # re-read and queued
    assert offsets.committable() == {}
    offsets.finished(TP, 12)
    assert offsets.committable() == {TP: 20}  # everything read has finished: up to the frontier


def test_forget_drops_the_window() -> None:
    windows = {TP: PartitionWindow(frontier=3)}
    offsets = WindowOffsets(windows)
    offsets.released.add(TP)
    offsets.forget({TP})
    assert TP not in windows and not offsets.released and offsets.committable() == {}
