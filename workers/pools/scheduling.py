"""FairScheduler: the order in which a pool starts the work it has read (no Kafka here; read_ahead.py feeds it).

Every slot that frees takes the next item by these rules, in this order:

1. **Expired first, never called.** An item whose deadline has passed (in any priority) is handed out at once,
   so the pool ends it as `expired` without a model call instead of letting it hold memory.
2. **Priority.** Items wait in ten tiers, 9 to 0; a tier is served only while every higher one is empty.
   A priority 9 item overtakes every priority 0 item still waiting.
3. **Nearest deadline.** Within the tier, an item whose deadline is within `urgent_within_s` goes before the
   fair choice, nearest deadline first.
4. **Weighted fair share across tenants.** Otherwise the tier serves the tenant with the least recent use per
   unit of weight (`tenant_weights`, else `default_weight`), and within a tenant the nearest deadline, then
   the oldest item. Use is the estimated tokens (input + output budget) of the items started for a tenant,
   decaying with `half_life_s`: a tenant that has been quiet starts with little use and its items overtake
   a busy tenant's backlog until its recent use catches up; a tenant that keeps the pool busy cannot bank
   credit beyond a few half-lives. (Slurm's fair-share factor and VTC's token counters work alike.)

Use is stored scaled by 2^(t/half_life) so that comparing two tenants never needs decaying both: the order
of scaled values is the order of decayed values. The scale is reset (and the heaps rebuilt) every 32
half-lives, and tenants whose use has decayed to nothing are forgotten then: memory is bounded by the items
waiting and the tenants active in the last 32 half-lives.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from modelyard.core.settings import SchedulingSettings

PRIORITIES = 10
NO_DEADLINE = math.inf
RESCALE_HALF_LIVES = 32.0


@dataclass(slots=True, eq=False)
class Queued:
    """One item read and waiting for a slot, with what the scheduler needs to know about it."""

    tp: TopicPartition
    record: ConsumerRecord
    tenant: str
    priority: int
    deadline: float  # epoch seconds; NO_DEADLINE when the item has none
    cost: float  # estimated tokens: input estimate + output budget
    seq: int = 0
    taken: bool = False


class FairShare:
    """Recent use per tenant (decayed), per unit of the tenant's weight."""

    def __init__(self, settings: SchedulingSettings, now: float) -> None:
        self.weights = settings.tenant_weights
        self.default_weight = settings.default_weight
        self.half_life_s = settings.half_life_s
        self.origin = now
        self.scaled: dict[str, float] = {}  # use x 2^((t - origin) / half_life)

    def key(self, tenant: str) -> float:
        return self.scaled.get(tenant, 0.0) / self.weights.get(tenant, self.default_weight)

    def charge(self, tenant: str, cost: float, now: float) -> None:
        self.scaled[tenant] = self.scaled.get(tenant, 0.0) + cost * 2.0 ** (
            (now - self.origin) / self.half_life_s
        )

    def due_for_rescale(self, now: float) -> bool:
        return now - self.origin >= RESCALE_HALF_LIVES * self.half_life_s

    def rescale(self, now: float, active: set[str]) -> None:
        """Move the origin to `now`; forget quiet tenants whose use decayed below a token."""
        factor = 2.0 ** ((now - self.origin) / self.half_life_s)
        self.scaled = {t: u / factor for t, u in self.scaled.items() if u / factor >= 1.0 or t in active}
        self.origin = now

    def recent_use(self, tenant: str, now: float) -> float:
        """Decayed use in tokens (for tests and logs)."""
        return self.scaled.get(tenant, 0.0) / 2.0 ** ((now - self.origin) / self.half_life_s)


@dataclass
class Tier:
    """The items of one priority: per tenant a heap by (deadline, seq); tenants in a heap by fair-share key
    (lazily refreshed); items with deadlines in a heap by deadline. Taken items are skipped lazily."""

    by_tenant: dict[str, list[tuple[float, int, Queued]]] = field(default_factory=dict)
    live: dict[str, int] = field(default_factory=dict)
    tenants: list[tuple[float, int, str]] = field(default_factory=list)
    listed: set[str] = field(default_factory=set)
    deadlines: list[tuple[float, int, Queued]] = field(default_factory=list)
    size: int = 0

    def add(self, entry: Queued, key: float) -> None:
        heapq.heappush(self.by_tenant.setdefault(entry.tenant, []), (entry.deadline, entry.seq, entry))
        self.live[entry.tenant] = self.live.get(entry.tenant, 0) + 1
        if entry.deadline != NO_DEADLINE:
            heapq.heappush(self.deadlines, (entry.deadline, entry.seq, entry))
        if entry.tenant not in self.listed:
            self.listed.add(entry.tenant)
            heapq.heappush(self.tenants, (key, entry.seq, entry.tenant))
        self.size += 1

    def take(self, entry: Queued) -> Queued:
        entry.taken = True
        self.size -= 1
        left = self.live[entry.tenant] - 1
        if left:
            self.live[entry.tenant] = left
        else:
            del self.live[entry.tenant], self.by_tenant[entry.tenant]
        return entry

    def soonest(self) -> Queued | None:
        """The waiting item with the nearest deadline, if any has one."""
        while self.deadlines and self.deadlines[0][2].taken:
            heapq.heappop(self.deadlines)
        return self.deadlines[0][2] if self.deadlines else None

    def fairest(self, share: FairShare) -> Queued | None:
        """The next item of the tenant with the least use per weight (its nearest deadline, else oldest)."""
        while self.tenants:
            key, _, tenant = self.tenants[0]
            if tenant not in self.live:
                heapq.heappop(self.tenants)
                self.listed.discard(tenant)
                continue
            current = share.key(tenant)
            if key != current:  # the tenant was served meanwhile (here or in another tier): re-file it
                heapq.heapreplace(self.tenants, (current, self._head(tenant).seq, tenant))
                continue
            heapq.heappop(self.tenants)
            self.listed.discard(tenant)
            return self._head(tenant)
        return None

    def relist(self, tenant: str, share: FairShare) -> None:
        if tenant in self.live and tenant not in self.listed:
            self.listed.add(tenant)
            heapq.heappush(self.tenants, (share.key(tenant), self._head(tenant).seq, tenant))

    def _head(self, tenant: str) -> Queued:
        heap = self.by_tenant[tenant]
        while heap[0][2].taken:
            heapq.heappop(heap)
        return heap[0][2]

    def rebuild(self, share: FairShare) -> None:
        """Fresh heaps without taken entries (after a rescale changed every key, or a revocation)."""
        for heap in self.by_tenant.values():
            heap[:] = [e for e in heap if not e[2].taken]
            heapq.heapify(heap)
        self.deadlines = [e for e in self.deadlines if not e[2].taken]
        heapq.heapify(self.deadlines)
        self.tenants = [(share.key(t), self._head(t).seq, t) for t in self.live]
        heapq.heapify(self.tenants)
        self.listed = set(self.live)


class FairScheduler:
    def __init__(self, settings: SchedulingSettings, now: float) -> None:
        self.urgent_within_s = settings.urgent_within_s
        self.share = FairShare(settings, now)
        self.tiers = [Tier() for _ in range(PRIORITIES)]
        self._seq = 0

    def __len__(self) -> int:
        return sum(tier.size for tier in self.tiers)

    def waiting(self, tenant: str, priority: int) -> int:
        """Items of one tenant at one priority waiting (a flow: read_ahead caps each)."""
        return self.tiers[priority].live.get(tenant, 0)

    def push(self, entry: Queued) -> None:
        self._seq += 1
        entry.seq = self._seq
        self.tiers[entry.priority].add(entry, self.share.key(entry.tenant))

    def pop(self, now: float) -> Queued | None:
        """The next item to start, or None when nothing waits."""
        if self.share.due_for_rescale(now):
            self._rescale(now)
        expired = self._expired(now)
        if expired is not None:
            return expired
        for tier in reversed(self.tiers):
            if tier.size:
                return self._next_in(tier, now)
        return None

    def pop_many(self, n: int, now: float) -> list[Queued]:
        out = []
        while len(out) < n and (entry := self.pop(now)) is not None:
            out.append(entry)
        return out

    def drop(self, partitions: set[TopicPartition]) -> int:
        """Forget the waiting items of revoked partitions (their offsets stay uncommitted: they replay)."""
        dropped = 0
        for tier in self.tiers:
            for heap in list(tier.by_tenant.values()):
                for _, _, entry in heap:
                    if not entry.taken and entry.tp in partitions:
                        tier.take(entry)
                        dropped += 1
            tier.rebuild(self.share)
        return dropped

    def _expired(self, now: float) -> Queued | None:
        for tier in self.tiers:
            soonest = tier.soonest() if tier.deadlines else None
            if soonest is not None and soonest.deadline <= now:
                return tier.take(soonest)
        return None

    def _next_in(self, tier: Tier, now: float) -> Queued:
        soonest = tier.soonest() if tier.deadlines else None
        if soonest is not None and soonest.deadline - now <= self.urgent_within_s:
            entry = soonest
        else:
            entry = tier.fairest(self.share)
            assert entry is not None, "a tier with items has a tenant with items"
        tier.take(entry)
        self.share.charge(entry.tenant, entry.cost, now)
        tier.relist(entry.tenant, self.share)
        return entry

    def _rescale(self, now: float) -> None:
        active = {t for tier in self.tiers for t in tier.live}
        self.share.rescale(now, active)
        for tier in self.tiers:
            tier.rebuild(self.share)

    def entries(self) -> Iterable[Queued]:
        for tier in self.tiers:
            for heap in tier.by_tenant.values():
                yield from (e for _, _, e in heap if not e.taken)
