"""The FairScheduler's order: expired first, then priority, then near deadlines, then tenants' fair shares."""

from __future__ import annotations

from collections import Counter

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from modelyard.core.settings import SchedulingSettings
from workers.pools.scheduling import NO_DEADLINE, FairScheduler, Queued

TP = TopicPartition("t", 0)
NOW = 1_000_000.0
COST = 100.0


def queued(
    tenant: str, offset: int, priority: int = 5, deadline: float = NO_DEADLINE, tp: TopicPartition = TP
) -> Queued:
    record = ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, None, b"", 0, 0, 0, [])
    return Queued(tp, record, tenant, priority, deadline, COST)


def scheduler(**settings: object) -> FairScheduler:
    return FairScheduler(SchedulingSettings(**settings), NOW)  # type: ignore[arg-type]


def order(s: FairScheduler, now: float = NOW) -> list[tuple[str, int]]:
    out = []
    while (entry := s.pop(now)) is not None:
        out.append((entry.tenant, entry.record.offset))
    return out


def test_a_small_tenant_overtakes_a_busy_tenants_backlog() -> None:
    s = scheduler()
    for n in range(300):  # the big tenant has kept the pool busy...
        s.push(queued("big", n), NOW)
    assert len(order(s)) == 300
    for n in range(300, 556):  # ...and has a full queue waiting
        s.push(queued("big", n), NOW + 1)
    for n in range(200):
        s.push(queued("small", 1000 + n), NOW + 1)
    served = [t for t, _ in order(s, NOW + 1)]
    assert served[:200] == ["small"] * 200  # its burst goes first (its use is below the big tenant's)


def test_tenants_starting_together_alternate() -> None:
    s = scheduler()
    for n in range(10):
        s.push(queued("a", n), NOW)
        s.push(queued("b", 100 + n), NOW)
    served = [t for t, _ in order(s)]
    assert all(served[i] != served[i + 1] for i in range(len(served) - 1))


def test_busy_tenants_share_by_weight() -> None:
    s = scheduler(tenant_weights={"heavy": 3.0})
    for n in range(400):
        s.push(queued("heavy", n), NOW)
        s.push(queued("light", 1000 + n), NOW)
    served = Counter(t for t, _ in order(s)[:200])
    assert 140 <= served["heavy"] <= 160 and served["heavy"] + served["light"] == 200


def test_priority_nine_overtakes_priority_zero_waiting() -> None:
    s = scheduler()
    for n in range(50):
        s.push(queued("acme", n, priority=0), NOW)
    s.push(queued("acme", 50, priority=9), NOW)
    s.push(queued("other", 51, priority=9), NOW)
    assert {o for _, o in order(s)[:2]} == {50, 51}


def test_within_a_tenant_oldest_first() -> None:
    s = scheduler()
    for n in (5, 3, 9):
        s.push(queued("acme", n), NOW)
    assert [o for _, o in order(s)] == [5, 3, 9]  # the order they were read in


def test_expired_items_leave_first_in_any_priority() -> None:
    s = scheduler()
    s.push(queued("acme", 1, priority=9), NOW)
    s.push(queued("acme", 2, priority=0, deadline=NOW - 1), NOW)
    assert s.pop(NOW).record.offset == 2  # type: ignore[union-attr]


def test_near_deadlines_go_before_the_fair_choice_nearest_first() -> None:
    s = scheduler(urgent_within_s=30)
    s.push(queued("quiet", 1), NOW)
    s.push(queued("busy", 2, deadline=NOW + 20), NOW)
    s.push(queued("busy", 3, deadline=NOW + 10), NOW)
    s.push(queued("busy", 4, deadline=NOW + 3600), NOW)
    assert [o for _, o in order(s)][:3] == [3, 2, 1]


def test_dropping_revoked_partitions_forgets_their_items() -> None:
    s = scheduler()
    other = TopicPartition("t", 1)
    for n in range(5):
        s.push(queued("acme", n), NOW)
        s.push(queued("acme", 100 + n, tp=other, deadline=NOW + 5), NOW)
    assert s.drop({other}) == 5
    assert len(s) == 5 and all(o < 100 for _, o in order(s))


def test_use_decays_and_quiet_tenants_are_forgotten_after_a_rescale() -> None:
    s = scheduler(half_life_s=1.0)
    s.push(queued("old", 1), NOW)
    order(s)
    assert 49 < s.share.recent_use("old", NOW + 1) < 51  # half of 100 tokens after one half-life
    later = NOW + 40  # past 32 half-lives: the scale is reset
    s.push(queued("new", 2), later)
    assert order(s, later) == [("new", 2)]
    assert "old" not in s.share.scaled


def test_a_light_tenant_goes_before_a_heavy_backlog_whatever_its_history() -> None:
    s = scheduler(light_share=0.9)
    for n in range(600):  # the small tenant used the pool a lot a moment ago...
        s.push(queued("small", n), NOW)
    order(s)
    s.set_heavy("big", True)  # ...the big tenant's backlog just overflowed the read-ahead
    for n in range(1000, 1500):
        s.push(queued("big", n), NOW + 1)
    for n in range(2000, 2200):
        s.push(queued("small", n), NOW + 1)
    served = [t for t, _ in order(s, NOW + 1)]
    last_small = max(i for i, t in enumerate(served) if t == "small")
    assert last_small < 225  # its 200 items, with one heavy start in every ten
    assert served[: last_small + 1].count("big") >= 15  # and the backlog still moved (about one in ten)


def test_a_tenant_that_is_no_longer_heavy_competes_as_light_again() -> None:
    s = scheduler(light_share=1.0)
    s.set_heavy("big", True)
    for n in range(5):
        s.push(queued("big", n), NOW)
        s.push(queued("other", 100 + n), NOW)
    s.set_heavy("big", False)
    served = [t for t, _ in order(s)]
    assert served[:2] in (["big", "other"], ["other", "big"])  # alternating again, by stamps
