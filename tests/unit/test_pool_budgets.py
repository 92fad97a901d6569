"""Budgets before spend in the pools: a budgeted fallback and a cascade escalation are admitted by the pool's own
budget view (fed from the spend topic), which reserves their estimated cost; call ids on every call."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

from modelyard.app import budgeted_fallbacks, build_budget_guard
from modelyard.core.budgets import BudgetGuard, Overrun
from modelyard.core.rate_card import RateCard
from modelyard.core.settings import CascadeSettings, load_settings
from schemas import Assignment, ResultStatus, TaskType
from schemas.spend import SpendRecord
from tests.unit.test_dispatch import ITEM, Scripted, outage, target
from workers.pools.cascade import escalate, escalation_budget, kept_over_budget
from workers.pools.dispatch import Dispatcher

TODAY = datetime.now(UTC).date()
SETTINGS = load_settings(
    pools={"slm": {"fallbacks": ["anthropic:claude-sonnet-5"]}},
    costs={"budgets": {"t": {"daily_usd": "1", "action": "downgrade"}}},
)
ASSIGNMENT = Assignment(
    item=ITEM,
    task_type=TaskType.CLASSIFICATION,
    task_reason="hint",
    pool="slm",
    reason="r",
    attempt=1,
    routed_at=datetime.now(UTC),
)


def guard(day_usd: str) -> BudgetGuard:
    budget = BudgetGuard(SETTINGS.costs, RateCard.load())
    budget.book.record(
        SpendRecord(
            tenant="t",
            day=TODAY,
            day_usd=Decimal(day_usd),
            month=f"{TODAY:%Y-%m}",
            month_usd=Decimal(day_usd),
        )
    )
    return budget


def chain(budget: BudgetGuard) -> tuple[Dispatcher, Scripted]:
    first, fallback = Scripted("vllm", outage("vllm")), Scripted("anthropic", "a")
    targets = [target(first), target(fallback)]
    targets[1].budgeted = True
    return Dispatcher("slm", targets, budget=budget), fallback


def test_which_pools_get_a_budget_view_and_which_fallbacks_it_guards() -> None:
    assert budgeted_fallbacks(SETTINGS, "slm") == {("anthropic", "claude-sonnet-5")}
    assert budgeted_fallbacks(SETTINGS, "frontier") == set()  # the router admitted its items
    assert build_budget_guard(SETTINGS, "slm") is not None
    assert build_budget_guard(load_settings(), "slm") is None  # no budgets, no spend topic to follow


def test_a_budgeted_fallback_is_not_called_for_a_tenant_over_budget() -> None:
    dispatcher, fallback = chain(guard("1.5"))
    results = asyncio.run(dispatcher.run(ASSIGNMENT))
    assert [r.status for r in results] == [ResultStatus.ERROR] and fallback.calls == 0
    assert results[0].error.endswith("anthropic/anthropic-model not called: daily budget $1 spent ($1.5)")


def test_an_admitted_fallback_reserves_its_estimate_under_its_own_attempt() -> None:
    budget = guard("0.2")
    dispatcher, fallback = chain(budget)
    results = asyncio.run(dispatcher.run(ASSIGNMENT))
    assert [(r.attempt, r.status) for r in results] == [(1, ResultStatus.FAILED_OVER), (2, ResultStatus.OK)]
    assert fallback.calls == 1 and budget.book.reserved("t") > 0
    budget.book.record(  # the sink priced both attempts
        SpendRecord(
            tenant="t",
            day=TODAY,
            day_usd=Decimal("0.2"),
            month=f"{TODAY:%Y-%m}",
            month_usd=Decimal("0.2"),
            acknowledged=[(ITEM.job_id, 1), (ITEM.job_id, 2)],
        )
    )
    assert budget.book.reserved("t") == 0


def test_every_call_has_its_own_call_id_and_a_job_with_no_call_has_none() -> None:
    first, second = target(Scripted("a", outage("a"))), target(Scripted("b", "label"))
    results = asyncio.run(Dispatcher("p", [first, second]).run(ASSIGNMENT))
    ids = [r.call_id for r in results]
    assert len(set(ids)) == 2 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    first.breaker.record_failure()
    first.breaker.record_failure()  # open
    (none,) = asyncio.run(Dispatcher("p", [first]).run(ASSIGNMENT))
    assert none.status is ResultStatus.ERROR and none.call_id == ""


def test_an_escalation_over_budget_keeps_the_answer_and_says_why() -> None:
    frontier = ("frontier", SETTINGS.pools["frontier"])
    (answer,) = asyncio.run(Dispatcher("slm", [target(Scripted("vllm", "a"))]).run(ASSIGNMENT))
    refused = escalation_budget(guard("2"), frontier, ASSIGNMENT, answer)
    assert isinstance(refused, Overrun)
    kept = kept_over_budget(answer, "frontier", refused)
    assert kept.status is ResultStatus.OK and kept.error.startswith("not escalated to pool frontier: daily")

    budget = guard("0")
    reserved = escalation_budget(budget, frontier, ASSIGNMENT, answer)
    assert isinstance(reserved, Decimal) and reserved > 0 and budget.book.reserved("t") == reserved
    cascade = CascadeSettings(to_pool="frontier", min_confidence={TaskType.CLASSIFICATION: 0.95})
    escalated, forwarded = escalate(cascade, ASSIGNMENT, answer, reserved)
    assert (escalated.status, forwarded.attempt, forwarded.reserved_usd) == (
        ResultStatus.ESCALATED,
        2,
        reserved,
    )
    assert escalation_budget(None, frontier, ASSIGNMENT, answer) == 0
