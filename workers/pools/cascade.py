"""Cascade: an answer below its task's confidence threshold goes on to a stronger pool.

The escalated attempt's Result stays (it was a real call, billed once) with status `escalated`; the item
goes to the `to_pool`'s topic as a new Assignment whose attempt number follows it, so that pool's Result
is the job's final one. Answers without a confidence (the provider gave no logprobs, e.g. extraction or
Anthropic) are never escalated: there is nothing to judge them by.

`PolicyCascade` is the cascade a pool applies: the `cascades.<pool>` section of the routing-policy file
(`router.policy_file`, where `modelyard policy recommend` and `modelyard distill` write the thresholds they
calibrate) when it has one, else the pool's own `cascade` setting. The file is re-read when it changes, at
most every `router.reload_interval_s`, like the router's; a broken file keeps the cascade already applied.

Budgets: escalating to a budgeted pool (`costs.budget_pools`) spends from the tenant's budget, so the pool's
budget view admits it first and the forwarded Assignment carries the reservation; a tenant over budget keeps
the answer it has (status `ok`, its `error` saying what was not done) instead of a frontier call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import yaml
from pydantic import ValidationError

from modelyard.core.budgets import BudgetGuard, Overrun
from modelyard.core.observability import BUDGET_REFUSALS
from modelyard.core.settings import CascadeSettings, PoolSettings
from schemas import Assignment, Result, ResultStatus

log = logging.getLogger("modelyard.pool")


class PolicyCascade:
    def __init__(
        self,
        policy_file: Path | None,
        pool: str,
        configured: CascadeSettings | None,
        reload_interval_s: float,
        known_pools: Collection[str] | None = None,
    ) -> None:
        """known_pools: the configured pools; a section escalating to any other is refused (when given)."""
        self.policy_file = policy_file
        self.known_pools = None if known_pools is None else frozenset(known_pools)
        self.pool = pool
        self.configured = configured
        self.reload_interval_s = reload_interval_s
        self.applied = configured
        self.mtime: float | None = None
        self.checked_at = float("-inf")

    def current(self) -> CascadeSettings | None:
        now = time.monotonic()
        if self.policy_file is not None and now - self.checked_at >= self.reload_interval_s:
            self.checked_at = now
            self._reload(self.policy_file)
        return self.applied

    def _reload(self, path: Path) -> None:
        try:
            mtime = path.stat().st_mtime
            if mtime == self.mtime:
                return
            section = (yaml.safe_load(path.read_text()) or {}).get("cascades", {}).get(self.pool)
            applied = CascadeSettings.model_validate(section) if section else self.configured
            if (
                applied is not None
                and self.known_pools is not None
                and applied.to_pool not in self.known_pools
            ):
                raise ValueError(f"to_pool {applied.to_pool!r} is not a configured pool")
            self.applied = applied
        except (OSError, yaml.YAMLError, ValidationError, AttributeError, ValueError) as exc:
            log.warning(
                "cascade of pool %s: cannot read %s (%s); keeping the cascade applied", self.pool, path, exc
            )
            return
        self.mtime = mtime
        log.info("cascade of pool %s from %s: %s", self.pool, path, self.applied)


def needs_escalation(cascade: CascadeSettings | None, result: Result) -> bool:
    if cascade is None or result.status is not ResultStatus.OK or result.confidence is None:
        return False
    threshold = cascade.min_confidence.get(result.task_type)
    return threshold is not None and result.confidence < threshold


def escalation_budget(
    budget: BudgetGuard | None, to_pool: tuple[str, PoolSettings], assignment: Assignment, result: Result
) -> Overrun | Decimal:
    """Admit the escalation against the tenant's budget when `to_pool` is budgeted: the USD reserved for its
    call (0 when no budget guards it), or the overrun that refuses it."""
    name, pool = to_pool
    item = assignment.item
    if budget is None or name not in budget.budget_pools or not budget.guards(item.tenant):
        return Decimal(0)
    tokens = (-(-len(item.input_text()) // 4), item.params.max_output_tokens or pool.max_output_tokens)
    admitted = budget.admit(
        item.tenant, (item.job_id, result.attempt + 1), pool.model, tokens, datetime.now(UTC)
    )
    if isinstance(admitted, Overrun):
        BUDGET_REFUSALS.labels("cascade", admitted.action).inc()
    return admitted


def kept_over_budget(result: Result, to_pool: str, overrun: Overrun) -> Result:
    """The low-confidence answer stays the job's final one: its escalation would overrun the budget."""
    note = f"not escalated to pool {to_pool}: {overrun.why}"
    return result.model_copy(update={"error": note[:2000]})


def escalate(
    cascade: CascadeSettings, assignment: Assignment, result: Result, reserved_usd: Decimal = Decimal(0)
) -> tuple[Result, Assignment]:
    """The SLM attempt's Result marked escalated, and the Assignment for the stronger pool."""
    threshold = cascade.min_confidence[result.task_type]
    reason = (
        f"confidence {result.confidence:.3f} < {threshold:g} for {result.task_type} in pool {result.pool}"
    )
    forwarded = assignment.model_copy(
        update={
            "pool": cascade.to_pool,
            "rule": "cascade",
            "reason": reason,
            "attempt": result.attempt + 1,
            "reserved_usd": reserved_usd,
            "routed_at": datetime.now(UTC),
        }
    )
    return result.model_copy(update={"status": ResultStatus.ESCALATED}), forwarded
