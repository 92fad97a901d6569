"""OffsetTracker: with many records in flight at once, commit only below the oldest unfinished one."""

from __future__ import annotations

from aiokafka import TopicPartition


class OffsetTracker:
    def __init__(self) -> None:
        self._pending: dict[TopicPartition, set[int]] = {}
        self._next: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    def started(self, tp: TopicPartition, offset: int) -> None:
        self._pending.setdefault(tp, set()).add(offset)
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def finished(self, tp: TopicPartition, offset: int) -> None:
        self._pending[tp].discard(offset)

    def committable(self) -> dict[TopicPartition, int]:
        """Per partition, the offset to commit now (only those that moved since the last call)."""
        ready = {}
        for tp, next_offset in self._next.items():
            pending = self._pending.get(tp)
            position = min(pending) if pending else next_offset
            if position > self._committed.get(tp, -1):
                ready[tp] = position
        return ready

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        self._committed.update(offsets)

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Drop state for partitions this process no longer owns."""
        for tp in partitions:
            self._pending.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)

    @property
    def in_flight(self) -> int:
        return sum(len(p) for p in self._pending.values())
