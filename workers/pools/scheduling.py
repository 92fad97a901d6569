"""FairScheduler: the order in which a pool starts the work it has read (no Kafka here; read_ahead.py feeds it).

Every slot that frees takes the next item by these rules, in this order:

1. **Expired first, never called.** An item whose deadline has passed (in any priority) is handed out at once,
   so the pool ends it as `expired` without a model call instead of letting it hold memory.
2. **Priority.** Items wait in ten tiers, 9 to 0; a tier is served only while every higher one is empty.
   A priority 9 item overtakes every priority 0 item still waiting.
3. **Nearest deadline.** Within the tier, an item whose deadline is within `urgent_within_s` goes before the
   fair choice, nearest deadline first.
4. **Light tenants before heavy ones.** A tenant is heavy while its backlog overflows the read-ahead (some of
   its records were skipped, see read_ahead.py): its items wait behind light tenants', which take
   `light_share` (0.9) of the starts while both wait, so a small tenant's burst is not split evenly with a
   big tenant's backlog, and the backlog still moves.
5. **Weighted fair share across tenants.** Within a class the tier serves the tenant whose next stamp is lowest,
   and within a tenant the nearest deadline, then the oldest item. Each item is stamped when it enters the
   read-ahead with its tenant's use so far, per unit of weight (`tenant_weights`, else `default_weight`):
   use is the estimated tokens (input + output budget) of the tenant's items, decaying with `half_life_s`.
   This is Virtual Clock / weighted fair queueing with a memory that fades: two busy tenants are served by
   weight, and a tenant that has been quiet stamps its items low, so a small tenant's burst overtakes a big
   tenant's backlog (by up to the big tenant's recent use) instead of waiting behind it. Nobody banks credit
   beyond a few half-lives. (Slurm's fair-share factor and VTC's token counters work alike.)

Use is stored scaled by 2^(t/half_life) so that comparing two tenants never needs decaying both: the order
of scaled values is the order of decayed values. The scale is reset (and the heaps rebuilt) every 32
half-lives, and tenants whose use has decayed to nothing are forgotten then: memory is bounded by the items
waiting and the tenants active in the last 32 half-lives.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections import deque
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
    durable: asyncio.Future[bool] | None = None  # the consume-commit runtime's receipt: resolved by the pool


class FairShare:
    """Use per tenant (decayed), and the stamps it gives items, per unit of the tenant's weight."""

    def __init__(self, settings: SchedulingSettings, now: float) -> None:
        self.weights = settings.tenant_weights
        self.default_weight = settings.default_weight
        self.half_life_s = settings.half_life_s
        self.origin = now
        self.scaled: dict[str, float] = {}  # use x 2^((t - origin) / half_life)

    def stamp(self, tenant: str, cost: float, now: float) -> float:
        """Charge the tenant for an item; the item's stamp (the tenant's scaled use per weight, with it)."""
        use = self.scaled.get(tenant, 0.0) + cost * 2.0 ** ((now - self.origin) / self.half_life_s)
        self.scaled[tenant] = use
        return use / self.weights.get(tenant, self.default_weight)

    def due_for_rescale(self, now: float) -> bool:
        return now - self.origin >= RESCALE_HALF_LIVES * self.half_life_s

    def rescale(self, now: float, active: set[str]) -> float:
        """Move the origin to `now`; forget quiet tenants whose use decayed below a token. The divisor."""
        factor = 2.0 ** ((now - self.origin) / self.half_life_s)
        self.scaled = {t: u / factor for t, u in self.scaled.items() if u / factor >= 1.0 or t in active}
        self.origin = now
        return factor

    def recent_use(self, tenant: str, now: float) -> float:
        """Decayed use in tokens (for tests and logs)."""
        return self.scaled.get(tenant, 0.0) / 2.0 ** ((now - self.origin) / self.half_life_s)


@dataclass
class Tier:
    """The items of one priority. Per tenant: its items in a heap by (deadline, seq), and the stamps of its
    waiting items in arrival order (each take consumes the lowest). Tenants in two heaps by their lowest stamp,
    light (0) and heavy (1); items with deadlines in a heap by deadline. Taken items, stale keys and tenants
    that changed class are dealt with lazily, when they reach a heap's top."""

    by_tenant: dict[str, list[tuple[float, int, Queued]]] = field(default_factory=dict)
    stamps: dict[str, deque[float]] = field(default_factory=dict)
    tenants: tuple[list[tuple[float, int, str]], list[tuple[float, int, str]]] = field(
        default_factory=lambda: ([], [])
    )
    listed: dict[str, bool] = field(default_factory=dict)  # tenant -> the heap it is in (True: heavy)
    deadlines: list[tuple[float, int, Queued]] = field(default_factory=list)
    size: int = 0

    def waiting(self, tenant: str) -> int:
        stamps = self.stamps.get(tenant)
        return len(stamps) if stamps else 0

    def add(self, entry: Queued, stamp: float, heavy: set[str]) -> None:
        heapq.heappush(self.by_tenant.setdefault(entry.tenant, []), (entry.deadline, entry.seq, entry))
        self.stamps.setdefault(entry.tenant, deque()).append(stamp)
        if entry.deadline != NO_DEADLINE:
            heapq.heappush(self.deadlines, (entry.deadline, entry.seq, entry))
        self.relist(entry.tenant, heavy)
        self.size += 1

    def take(self, entry: Queued) -> Queued:
        entry.taken = True
        self.size -= 1
        stamps = self.stamps[entry.tenant]
        stamps.popleft()
        if not stamps:
            del self.stamps[entry.tenant], self.by_tenant[entry.tenant]
        return entry

    def soonest(self) -> Queued | None:
        """The waiting item with the nearest deadline, if any has one."""
        while self.deadlines and self.deadlines[0][2].taken:
            heapq.heappop(self.deadlines)
        return self.deadlines[0][2] if self.deadlines else None

    def fairest(self, heavy: set[str], prefer_heavy: bool) -> tuple[Queued | None, bool, bool]:
        """The next item of the class's tenant with the lowest stamp (its nearest deadline, else its oldest):
        light unless `prefer_heavy` or no light tenant waits. (item, it was heavy, both classes waited)."""
        light, weighty = self._top(False, heavy), self._top(True, heavy)
        while light != (top := self._top(False, heavy)):  # the heavy pass moved a tenant into the light heap
            light, weighty = top, self._top(True, heavy)
        if light is None and weighty is None:
            return None, False, False
        pick_heavy = weighty is not None and (light is None or prefer_heavy)
        tenant = weighty if pick_heavy else light
        assert tenant is not None
        heapq.heappop(self.tenants[pick_heavy])
        del self.listed[tenant]
        return self._head(tenant), pick_heavy, light is not None and weighty is not None

    def _top(self, heavy_heap: bool, heavy: set[str]) -> str | None:
        """The tenant at the top of one class's heap, once stale entries are dealt with."""
        heap = self.tenants[heavy_heap]
        while heap:
            key, seq, tenant = heap[0]
            stamps = self.stamps.get(tenant)
            if not stamps:  # nothing waits for it any more
                heapq.heappop(heap)
                del self.listed[tenant]
            elif (tenant in heavy) is not heavy_heap:  # it changed class: file it in the other heap
                heapq.heappop(heap)
                del self.listed[tenant]
                self.relist(tenant, heavy)
            elif key != stamps[0]:  # an urgent pick took one of its items meanwhile: re-file it
                heapq.heapreplace(heap, (stamps[0], seq, tenant))
            else:
                return tenant
        return None

    def relist(self, tenant: str, heavy: set[str]) -> None:
        stamps = self.stamps.get(tenant)
        if stamps and tenant not in self.listed:
            cls = tenant in heavy
            self.listed[tenant] = cls
            heapq.heappush(self.tenants[cls], (stamps[0], self._head(tenant).seq, tenant))

    def _head(self, tenant: str) -> Queued:
        heap = self.by_tenant[tenant]
        while heap[0][2].taken:
            heapq.heappop(heap)
        return heap[0][2]

    def rebuild(self, heavy: set[str], divisor: float = 1.0) -> None:
        """Fresh heaps without taken entries, stamps divided by `divisor` (after a rescale)."""
        for heap in self.by_tenant.values():
            heap[:] = [e for e in heap if not e[2].taken]
            heapq.heapify(heap)
        if divisor != 1.0:
            self.stamps = {t: deque(x / divisor for x in q) for t, q in self.stamps.items()}
        self.deadlines = [e for e in self.deadlines if not e[2].taken]
        heapq.heapify(self.deadlines)
        self.tenants, self.listed = ([], []), {}
        for tenant in self.stamps:
            self.relist(tenant, heavy)


class FairScheduler:
    def __init__(self, settings: SchedulingSettings, now: float) -> None:
        self.urgent_within_s = settings.urgent_within_s
        self.share = FairShare(settings, now)
        self.heavy: set[str] = set()  # tenants whose backlog overflows the read-ahead (read_ahead.py says)
        share = settings.light_share
        self._light_stride = (
            math.inf if share >= 1 else round(share / (1 - share), 6)
        )  # light starts per heavy
        self._light_run = 0
        self.tiers = [Tier() for _ in range(PRIORITIES)]
        self._seq = 0
        self._size = 0  # items waiting in all tiers: asked several times per item read, so kept, not summed

    def __len__(self) -> int:
        return self._size

    def waiting(self, tenant: str, priority: int) -> int:
        """Items of one tenant at one priority waiting (a flow: read_ahead caps each)."""
        return self.tiers[priority].waiting(tenant)

    def push(self, entry: Queued, now: float) -> None:
        """An item enters the read-ahead: its tenant is charged its estimated tokens, the item stamped."""
        self._seq += 1
        self._size += 1
        entry.seq = self._seq
        self.tiers[entry.priority].add(entry, self.share.stamp(entry.tenant, entry.cost, now), self.heavy)

    def set_heavy(self, tenant: str, heavy: bool) -> None:
        """The tenant's backlog overflows the read-ahead (True) or fits again (False)."""
        if heavy:
            self.heavy.add(tenant)
        else:
            self.heavy.discard(tenant)

    def pop(self, now: float) -> Queued | None:
        """The next item to start, or None when nothing waits."""
        if self.share.due_for_rescale(now):
            self._rescale(now)
        if not self._size:
            return None
        self._size -= 1
        expired = self._expired(now)
        if expired is not None:
            return expired
        return self._next_in(next(tier for tier in reversed(self.tiers) if tier.size), now)

    def pop_many(self, n: int, now: float) -> list[Queued]:
        out: list[Queued] = []
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
            tier.rebuild(self.heavy)
        self._size -= dropped
        return dropped

    def _expired(self, now: float) -> Queued | None:
        for tier in self.tiers:
            if not tier.deadlines:
                continue
            soonest = tier.soonest()
            if soonest is not None and soonest.deadline <= now:
                tier.take(soonest)
                tier.relist(soonest.tenant, self.heavy)
                return soonest
        return None

    def _next_in(self, tier: Tier, now: float) -> Queued:
        soonest = tier.soonest() if tier.deadlines else None
        if soonest is not None and soonest.deadline - now <= self.urgent_within_s:
            entry: Queued | None = soonest
        else:
            entry, was_heavy, contested = tier.fairest(self.heavy, self._light_run >= self._light_stride)
            if contested:
                self._light_run = 0 if was_heavy else self._light_run + 1
        assert entry is not None, "a tier with items has a tenant with items"
        tier.take(entry)
        tier.relist(entry.tenant, self.heavy)
        return entry

    def _rescale(self, now: float) -> None:
        active = {t for tier in self.tiers for t in tier.stamps}
        divisor = self.share.rescale(now, active)
        for tier in self.tiers:
            tier.rebuild(self.heavy, divisor)

    def entries(self) -> Iterable[Queued]:
        for tier in self.tiers:
            for heap in tier.by_tenant.values():
                yield from (e for _, _, e in heap if not e.taken)
