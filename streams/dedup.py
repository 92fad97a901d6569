"""RecentJobIds: flags a job_id seen at another position within a time window.

A record replayed after a crash comes back at the same (partition, offset): that is a replay, routed again
(downstream dedups it). The same job_id at a different offset is a duplicate submission. Producers key by
job_id, so one job_id always lands on one partition and so on one router process. The window lives in
memory: a router restart starts it empty.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from schemas.rejection import Rejection


class RecentJobIds:
    def __init__(
        self, window_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self.clock = clock
        self._seen: OrderedDict[str, tuple[float, int, int]] = OrderedDict()

    def is_duplicate(self, job_id: str, partition: int, offset: int, now: float | None = None) -> bool:
        """`now` from the caller lets a batch read the clock and evict once (see evict())."""
        if now is None:
            now = self.clock()
            self._evict(now)
        first = self._seen.get(job_id)
        if first is not None:
            return (first[1], first[2]) != (partition, offset)
        self._seen[job_id] = (now, partition, offset)
        if len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
        return False

    def duplicate(self, job_id: str, partition: int, offset: int, now: float) -> Rejection | None:
        """Why the job_id is refused when it is a duplicate (Admission's check)."""
        if self.is_duplicate(job_id, partition, offset, now):
            return Rejection("duplicate_job_id", "job_id", f"job_id {job_id!r} was already submitted")
        return None

    def forget(self, job_id: str) -> None:
        """Let this job_id come back later at another offset (a deferred item released again)."""
        self._seen.pop(job_id, None)

    def evict(self) -> float:
        """Drop entries older than the window; returns the clock reading to pass to is_duplicate()."""
        now = self.clock()
        self._evict(now)
        return now

    def _evict(self, now: float) -> None:
        seen = self._seen
        while seen and (len(seen) > self.max_entries or next(iter(seen.values()))[0] < now - self.window_s):
            seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)
