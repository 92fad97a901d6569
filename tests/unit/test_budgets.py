"""Budgets: the router's decision for frontier-bound items of a tenant over its daily or monthly budget."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

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
    routing = RoutingPolicy(settings)
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
    stale = RoutingPolicy(routing)
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
