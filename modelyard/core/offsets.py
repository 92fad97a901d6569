"""OffsetTracker: with many records or batches in flight at once, commit only below the oldest unfinished one.

A span of offsets (one record, or a whole fetched batch of a partition) starts when its records are handed
to a stage and finishes when what the stage made of them is durable; it is known by its first offset."""

from __future__ import annotations

from aiokafka import TopicPartition


class OffsetTracker:
    def __init__(self) -> None:
        self._pending: dict[TopicPartition, set[int]] = {}
        self._next: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    def started(self, tp: TopicPartition, offset: int, end: int | None = None) -> None:
        """The span [offset, end) is in flight (one record when `end` is None)."""
        pending = self._pending.get(tp)
        if pending is None:
            pending = self._pending[tp] = set()
        pending.add(offset)
        end = offset + 1 if end is None else end
        if end > self._next.get(tp, 0):
            self._next[tp] = end

    def finished(self, tp: TopicPartition, offset: int) -> None:
        """The span that starts at `offset` is durable (a partition forgotten since is ignored)."""
        pending = self._pending.get(tp)
        if pending is not None:
            pending.discard(offset)

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
        """Spans started and not yet finished."""
        return sum(len(p) for p in self._pending.values())
