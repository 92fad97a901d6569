"""The router's durable record of routed job ids (streams/routed_jobs.py), and the policy refusing a reused id."""

from __future__ import annotations

import orjson

from modelyard.app import build_routing_policy
from modelyard.core.settings import load_settings
from schemas import DeadLetter
from streams.policy import Source
from streams.routed_jobs import RoutedJobIds


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def item(job_id: str) -> bytes:
    return orjson.dumps({"job_id": job_id, "tenant": "acme", "input": "x", "params": {"labels": ["a", "b"]}})


def test_a_routed_id_is_refused_elsewhere_and_replayed_in_place() -> None:
    seen = RoutedJobIds(retention_s=60)
    seen.add("j", 2, 10)
    assert seen.routed_at("j", 2, 11) is None  # held once its batch's record is made
    seen.records()
    assert seen.routed_at("j", 2, 10) is None  # the router's own replay after a crash
    assert seen.routed_at("j", 2, 11) == (2, 10) and seen.routed_at("j", 0, 10) == (2, 10)
    assert seen.routed_at("other", 2, 11) is None


def test_records_hold_each_partitions_ids_and_read_back_the_same() -> None:
    clock = Clock()
    first = RoutedJobIds(retention_s=60, clock=clock)
    first.add_many(["a", "b", "c"], [Source("jobs", 0, 1), Source("jobs", 1, 7), Source("jobs", 0, 2)])
    records = dict(first.records())
    assert set(records) == {b"0", b"1"} and first.records() == []
    assert orjson.loads(records[b"0"]) == {"partition": 0, "job_ids": ["a", "c"], "offsets": [1, 2]}
    restarted = RoutedJobIds(60, clock=clock)
    assert sum(restarted.load(value, int(clock.now * 1000)) for value in records.values()) == 3
    assert restarted.routed_at("b", 1, 8) == (1, 7) and restarted.routed_at("c", 0, 2) is None


def test_ids_older_than_the_retention_are_forgotten() -> None:
    clock = Clock()
    seen = RoutedJobIds(retention_s=60, clock=clock)
    seen.add("old", 0, 1)
    ((_, value),) = seen.records()
    clock.now += 61
    seen.add("new", 0, 2)
    seen.records()
    assert len(seen) == 1 and seen.routed_at("old", 0, 9) is None
    assert (
        RoutedJobIds(60, clock=clock).load(value, int((clock.now - 61) * 1000)) == 0
    )  # skipped when read back


def test_a_reused_job_id_is_dead_lettered_by_a_restarted_router_carrying_the_id() -> None:
    settings = load_settings(router={"dedup_window_s": 0})
    before = build_routing_policy(settings)
    assert before.route(item("j-1"), Source("jobs", 3, 40)).topic == "modelyard.pool.slm"
    (record,) = before.routed_records()
    assert record.topic == "modelyard.jobs.routed"

    after = build_routing_policy(settings)  # a restart: empty in-memory window, the record read back
    routed = after.admission.routed
    assert isinstance(routed, RoutedJobIds)
    routed.load(record.value, int(routed.clock() * 1000))
    replay = after.route(item("j-1"), Source("jobs", 3, 40))
    reused = after.route(item("j-1"), Source("jobs", 3, 900))
    assert replay.topic == "modelyard.pool.slm"
    letter = DeadLetter.model_validate_json(reused.value)
    assert (reused.topic, letter.reason, letter.field, letter.job_id) == (
        "modelyard.deadletter",
        "duplicate_job_id",
        "job_id",
        "j-1",
    )
    assert "partition 3, offset 40" in letter.error and letter.source_offset == 900
    (again,) = after.routed_records()  # the replay is put on record again (harmless); the refused copy is not
    assert orjson.loads(again.value)["offsets"] == [40]


def test_only_items_sent_to_a_pool_are_put_on_record() -> None:
    policy = build_routing_policy(load_settings())
    policy.route(b"{not json", Source("jobs", 0, 1))
    policy.route(item("k"), Source("jobs", 0, 2))
    (record,) = policy.routed_records()
    assert orjson.loads(record.value)["job_ids"] == ["k"]


def test_past_the_cap_the_oldest_batches_are_forgotten_first() -> None:
    seen = RoutedJobIds(retention_s=60, max_entries=3)
    for batch in range(3):
        seen.add(f"a{batch}", 0, 2 * batch)
        seen.add(f"b{batch}", 0, 2 * batch + 1)
        seen.records()
    assert len(seen) <= 3 and seen.routed_at("b2", 0, 99) == (0, 5) and seen.routed_at("a0", 0, 99) is None
