"""Budgets: the router's decision for frontier-bound items of a tenant over its daily or monthly budget."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from modelyard.app import build_routing_policy
from modelyard.core.rate_card import RateCard
from modelyard.core.settings import load_settings
from schemas import Assignment, DeadLetter
from schemas.spend import SpendRecord
from streams.policy import RoutingPolicy, Source

TODAY = datetime.now(UTC).date()
FRONTIER_ITEM = orjson.dumps(
    {"job_id": "b1", "tenant": "acme", "input": "Write a poem", "task": "generation"}
)
SLM_ITEM = orjson.dumps({"job_id": "b2", "tenant": "acme", "input": "x", "params": {"labels": ["a", "b"]}})


def policy(action: str, day_usd: str = "5", month_usd: str = "5") -> RoutingPolicy:
    settings = load_settings(
        costs={"budgets": {"acme": {"daily_usd": "1", "monthly_usd": "100", "action": action}}}
    )
    routing = build_routing_policy(settings)
    spend = SpendRecord(
        tenant="acme",
        day=TODAY,
        day_usd=Decimal(day_usd),
        month=f"{TODAY:%Y-%m}",
        month_usd=Decimal(month_usd),
    )
    routing.budgets.record(spend.model_dump_json().encode())
    return routing


def test_reject_dead_letters_frontier_items_over_budget() -> None:
    out = policy("reject").route(FRONTIER_ITEM, Source("jobs", 0, 1))
    letter = DeadLetter.model_validate_json(out.value)
    assert (out.topic, letter.reason, letter.field) == ("modelyard.deadletter", "budget_exceeded", "tenant")
    assert "daily budget" in letter.error


def test_downgrade_routes_to_the_cheaper_pool_and_says_why() -> None:
    out = policy("downgrade").route(FRONTIER_ITEM, Source("jobs", 0, 1))
    assignment = Assignment.model_validate_json(out.value)
    assert (out.topic, assignment.pool, assignment.rule) == ("modelyard.pool.slm", "slm", "budget-downgrade")


def test_defer_parks_the_original_bytes_and_allows_release_later() -> None:
    routing = policy("defer")
    out = routing.route(FRONTIER_ITEM, Source("jobs", 0, 1))
    assert (out.topic, out.key, out.value) == ("modelyard.deferred", b"b1", FRONTIER_ITEM)
    released = routing.route(
        FRONTIER_ITEM, Source("jobs", 0, 99)
    )  # same job back at a new offset: not a duplicate
    assert released.topic == "modelyard.deferred"


@pytest.mark.parametrize(("day_usd", "month_usd"), [("0.5", "5"), ("0.5", "99.99")])
def test_under_budget_and_slm_items_are_untouched(day_usd: str, month_usd: str) -> None:
    routing = policy("reject", day_usd, month_usd)
    assert routing.route(FRONTIER_ITEM, Source("jobs", 0, 1)).topic == "modelyard.pool.frontier"
    assert policy("reject").route(SLM_ITEM, Source("jobs", 0, 2)).topic == "modelyard.pool.slm"


def test_monthly_budget_and_stale_spend() -> None:
    assert (
        policy("reject", day_usd="0", month_usd="100").route(FRONTIER_ITEM, Source("jobs", 0, 1)).topic
        == "modelyard.deadletter"
    )
    routing = load_settings(costs={"budgets": {"acme": {"daily_usd": "1"}}})
    stale = build_routing_policy(routing)
    stale.budgets.record(
        SpendRecord(
            tenant="acme",
            day=TODAY.replace(year=TODAY.year - 1),
            day_usd=Decimal(9),
            month="2000-01",
            month_usd=Decimal(9),
        )
        .model_dump_json()
        .encode()
    )
    assert stale.route(FRONTIER_ITEM, Source("jobs", 0, 1)).topic == "modelyard.pool.frontier"


def burst(n: int, tokens: int = 20_000) -> list[tuple[bytes, Source]]:
    """Frontier-bound items whose output budget alone is worth a good share of a $1 budget."""
    return [
        (
            orjson.dumps(
                {
                    "job_id": f"burst-{k}",
                    "tenant": "acme",
                    "input": "Write a poem",
                    "task": "generation",
                    "params": {"max_output_tokens": tokens},
                }
            ),
            Source("jobs", 0, k),
        )
        for k in range(n)
    ]


def test_a_burst_reserves_its_estimates_and_stops_at_the_budget_before_any_spend_is_known() -> None:
    routing = policy("reject", day_usd="0", month_usd="0")  # daily budget $1, nothing spent yet
    out = routing.route_many(burst(10))
    routed = [Assignment.model_validate_json(o.value) for o in out if o.topic == "modelyard.pool.frontier"]
    letters = [DeadLetter.model_validate_json(o.value) for o in out if o.topic == "modelyard.deadletter"]
    model = load_settings().pools["frontier"].model
    estimate = RateCard.load().estimate(model, 3, 20_000, TODAY)  # "Write a poem": 3 input tokens
    admitted = next(k for k in range(1, 11) if k * estimate >= 1)  # items go while reservations < $1
    assert 2 <= admitted <= 8 and [a.reserved_usd for a in routed] == [estimate] * admitted
    refused = {f"burst-{k}" for k in range(admitted, 10)}
    assert len(letters) == 10 - admitted and {d.job_id for d in letters} == refused
    assert f"spent or reserved ($0 spent, ${admitted * estimate} reserved" in letters[0].error
    assert routing.budgets.reserved("acme") == admitted * estimate


def test_acknowledged_reservations_are_counted_once_and_real_costs_free_the_rest() -> None:
    routing = policy("reject", day_usd="0", month_usd="0")
    routing.route_many(burst(4))
    keys = [(f"burst-{k}", 1) for k in range(4)]
    seen_by_sink = SpendRecord(
        tenant="acme",
        day=TODAY,
        day_usd=Decimal(0),
        month=f"{TODAY:%Y-%m}",
        month_usd=Decimal(0),
        reserved_usd=Decimal("1.2"),
        acknowledged=keys,
    )
    routing.budgets.record(seen_by_sink.model_dump_json().encode())
    assert routing.budgets.reserved("acme") == Decimal("1.2")  # the sink's figure, not twice
    settled = seen_by_sink.model_copy(update={"day_usd": Decimal("0.01"), "reserved_usd": Decimal(0)})
    routing.budgets.record(settled.model_dump_json().encode())  # priced: a cent of real spend
    later = routing.route_many(burst(1)[:1])
    assert later[0].topic == "modelyard.pool.frontier"


def test_slm_bound_items_and_tenants_without_a_budget_reserve_nothing() -> None:
    routing = policy("reject", day_usd="0", month_usd="0")
    other = orjson.dumps({"job_id": "o", "tenant": "globex", "input": "Write a poem", "task": "generation"})
    for raw, offset in [(SLM_ITEM, 1), (other, 2)]:
        out = routing.route(raw, Source("jobs", 0, offset))
        assert Assignment.model_validate_json(out.value).reserved_usd == 0
    assert routing.budgets.reserved("acme") == 0 and routing.budgets.reserved("globex") == 0
