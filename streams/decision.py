"""The pool decision for admitted items: task tag, routing rules (tenant rules first), the novelty check for
SLM-bound items, then per item the tenant's budget and shadow sampling.

No Faust and no Kafka here: the router, `modelyard route --explain` and the tests call the same code.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

import numpy as np
import orjson

from modelyard.core._exceptions import ConfigError
from modelyard.core.budgets import BudgetGuard
from modelyard.core.settings import CachePolicy
from schemas import TaskType
from schemas.rejection import Rejection
from streams.admission import Item
from streams.cache_policy import CacheDirectives
from streams.learned_routing import LearnedRouter, RoutingModel
from streams.novelty import NoveltyDetector
from streams.rules import (
    ItemFeatures,
    NoveltyPolicy,
    PolicyFile,
    Rule,
    RuleMemo,
    configured_policy,
    load_policy_file,
)
from streams.tagging import tag_task

log = logging.getLogger("modelyard.router")


@dataclass(frozen=True)
class RuleCheck:
    scope: str
    rule: str
    pool: str
    failure: str | None


@dataclass(
    slots=True
)  # not frozen (its __init__ costs ~1 us more per item); only its novelty score is set after
class Decision:
    task_type: TaskType
    task_reason: str
    pool: str
    rule: str
    reason: str
    features: ItemFeatures
    novelty_score: float | None = None
    checks: list[RuleCheck] = field(default_factory=list)
    cache: orjson.Fragment | None = None  # the result-cache directive, when the policy opts the item in
    reserved_usd: Decimal = Decimal(0)  # the estimate a budget reserved for this item's call (0: none)


class Deferral(NamedTuple):
    """Park the item on the deferred topic (its tenant is over budget, with action 'defer')."""

    why: str


def estimate_tokens(text: str) -> int:
    return -(-len(text) // 4)  # ceil(len / 4) in integers


class PolicySource:
    """The current policy; re-reads the YAML file when its mtime changes (an invalid file keeps the old policy).
    Without a file the policy is the routes table."""

    def __init__(
        self,
        pools: Collection[str],
        routes: Mapping[TaskType, str],
        default_pool: str,
        path: Path | None = None,
        reload_interval_s: float = 1.0,
        cache: CachePolicy | None = None,
    ) -> None:
        self.path = path
        self.interval = reload_interval_s
        self.pools = set(pools)
        self._mtime = self._stat()
        self._checked = time.monotonic()
        self.policy = configured_policy(self.pools, routes, default_pool, path, cache)

    def current(self) -> PolicyFile:
        if self.path is not None and time.monotonic() - self._checked >= self.interval:
            self._checked = time.monotonic()
            self._maybe_reload()
        return self.policy

    def _maybe_reload(self) -> None:
        mtime = self._stat()
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            self.policy = load_policy_file(self.path, self.pools)  # type: ignore[arg-type]
            log.info("routing policy reloaded from %s", self.path)
        except ConfigError as exc:
            log.error("routing policy not reloaded, keeping the previous one: %s", exc)

    def _stat(self) -> float | None:
        try:
            return self.path.stat().st_mtime_ns if self.path else None
        except OSError:
            return None


@dataclass(frozen=True)
class BudgetRule:
    """costs.budgets, before spend: an item bound for a budgeted pool (`guard.budget_pools`) is admitted while
    its tenant's spend and reservations are under budget, and reserves its estimated cost (its input tokens and
    whole output budget at the pool model's list rates; `calls`: pool -> model, output budget); past the budget
    it is rejected, deferred or sent to `downgrade_pool`, as that tenant's budget says (modelyard/core/budgets.py)."""

    guard: BudgetGuard
    calls: Mapping[str, tuple[str, int]]
    downgrade_pool: str

    def verdict(self, item: Item, decision: Decision, now: datetime) -> Decision | Rejection | Deferral:
        if decision.pool not in self.guard.budget_pools or not self.guard.guards(item.tenant):
            return decision
        model, max_output_tokens = self.calls[decision.pool]
        tokens = (decision.features.input_tokens, item.params.max_output_tokens or max_output_tokens)
        overrun = self.guard.admit(item.tenant, (item.job_id, 1), model, tokens, now)
        if isinstance(overrun, Decimal):
            return replace(decision, reserved_usd=overrun)
        if overrun.action == "reject":
            return Rejection("budget_exceeded", "tenant", overrun.why)
        if overrun.action == "defer":
            return Deferral(overrun.why)
        return replace(decision, pool=self.downgrade_pool, rule="budget-downgrade", reason=overrun.why)


@dataclass(frozen=True)
class ShadowRule:
    """router.shadow_share: a deterministic share of SLM-bound items also goes to `pool`."""

    share: float
    pool: str

    def sampled(self, job_id: str) -> bool:
        return zlib.crc32(job_id.encode()) % 10_000 < self.share * 10_000


class PoolDecider:
    def __init__(
        self,
        source: PolicySource,
        novelty: NoveltyDetector,
        budgets: BudgetRule | None = None,
        shadow: ShadowRule | None = None,
    ) -> None:
        self.source = source
        self.novelty = novelty
        self.budgets = budgets
        self.shadow = shadow
        self.per_item = (
            budgets is not None or shadow is not None
        )  # else settle() and shadowed() change nothing
        self._memo = RuleMemo(source.current())
        self._cache = CacheDirectives(source.current())
        self._learned: LearnedRouter | None = None

    def decide(self, item: Item, now: datetime | None = None, learn: bool = True) -> Decision:
        """One item's decision with every rule check spelled out (what `route --explain` prints)."""
        now = now or datetime.now(UTC)
        policy = self.source.current()
        features, task_reason = self._features(item)
        checks, chosen = self._first_match(policy, features, now)
        decision = self._ruled(policy, features, task_reason, chosen, checks)
        decision.cache = self._cache_directives(policy).for_item(features.tenant, features.task_type)
        self._apply_learned(policy, [item], [decision])
        return self._apply_novelty(policy, [item], [decision], learn)[0]

    def decide_many(self, items: list[Item], now: datetime, learn: bool = True) -> list[Decision]:
        """The routing hot path: the same decisions as decide(), without recording every rule check."""
        policy = self.source.current()
        if self._memo.policy is not policy:
            self._memo = RuleMemo(policy)
        decisions, first_match = [], self._memo.first_match
        cache_for = self._cache_directives(policy).for_item
        for item in items:
            features, task_reason = self._features(item)
            decision = self._ruled(policy, features, task_reason, first_match(features, now), [])
            decision.cache = cache_for(features.tenant, features.task_type)
            decisions.append(decision)
        if policy.learned is not None:
            self._apply_learned(policy, items, decisions)
        return self._apply_novelty(policy, items, decisions, learn)

    def learned_model(self, policy: PolicyFile) -> tuple[LearnedRouter, RoutingModel] | None:
        """The routing model the policy's `learned` section names (reloaded when a version is registered)."""
        learned = policy.learned
        if learned is None:
            return None
        router = self._learned
        if router is None or router.registry.root != learned.models_dir:
            router = self._learned = LearnedRouter(learned.models_dir, learned.reload_interval_s)
        error = router.error
        model = router.model(time.monotonic())
        if router.error and router.error != error:
            log.error("%s; keeping the previous one", router.error)
        if model is None:
            return None
        unknown = sorted(set(model.card.pools) - self.source.pools)
        if unknown:
            log.error("routing model %s names unknown pools %s; not applied", model.card.version, unknown)
            return None
        return router, model

    def _apply_learned(self, policy: PolicyFile, items: list[Item], decisions: list[Decision]) -> None:
        """After the rules, before novelty: decisions are built per item by the caller, so changed in place."""
        found = self.learned_model(policy)
        if found is None:
            return
        router, model = found
        tasks, pools = [d.task_type.value for d in decisions], [d.pool for d in decisions]
        for choice in router.reroute(model, tasks, pools, items):
            decision = decisions[choice.index]
            decision.pool, decision.rule, decision.reason = choice.pool, "learned", choice.reason

    def _cache_directives(self, policy: PolicyFile) -> CacheDirectives:
        """The result-cache directives of the policy in force (rebuilt when the policy file is reloaded)."""
        if self._cache.policy is not policy:
            self._cache = CacheDirectives(policy)
        return self._cache

    def settle(self, item: Item, decision: Decision, now: datetime) -> Decision | Rejection | Deferral:
        """The tenant's budget applied to a decision: the decision, or what replaces it."""
        return self.budgets.verdict(item, decision, now) if self.budgets is not None else decision

    def shadowed(self, item: Item, decision: Decision) -> Decision | None:
        """The shadow pool's decision when this SLM-bound item is sampled for shadowing."""
        shadow = self.shadow
        if (
            shadow is None
            or not shadow.sampled(item.job_id)
            or decision.pool == shadow.pool
            or decision.pool not in self.source.current().novelty.applies_to
        ):
            return None
        why = f"shadow sample of {item.job_id}"
        return replace(
            decision, pool=shadow.pool, rule="shadow", reason=why, reserved_usd=Decimal(0), cache=None
        )

    def save_novelty(self, path: Path) -> None:
        self.novelty.save(path)

    @staticmethod
    def _features(item: Item) -> tuple[ItemFeatures, str]:
        task_type, task_reason = tag_task(item)
        return ItemFeatures(
            task_type=task_type,
            tenant=item.tenant,
            input_tokens=estimate_tokens(item.input_text()),
            priority=item.priority,
            label_count=len(item.params.labels or ()),
            deadline=item.deadline,
        ), task_reason

    @staticmethod
    def _ruled(
        policy: PolicyFile, f: ItemFeatures, task_reason: str, chosen: Rule | None, checks: list[RuleCheck]
    ) -> Decision:
        if chosen is not None:
            return Decision(
                f.task_type,
                task_reason,
                chosen.pool,
                chosen.name,
                f"rule {chosen.name} matched",
                f,
                None,
                checks,
            )
        tenant = policy.tenants.get(f.tenant)
        pool = tenant.default_pool if tenant and tenant.default_pool else policy.default_pool
        return Decision(f.task_type, task_reason, pool, "default", "no rule matched", f, None, checks)

    def _first_match(
        self, policy: PolicyFile, f: ItemFeatures, now: datetime
    ) -> tuple[list[RuleCheck], Rule | None]:
        tenant = policy.tenants.get(f.tenant)
        scoped = [(f"tenant {f.tenant}", r) for r in (tenant.rules if tenant else [])] + [
            ("global", r) for r in policy.rules
        ]
        checks = []
        for scope, rule in scoped:
            failure = rule.when.first_failure(f, now)
            checks.append(RuleCheck(scope, rule.name, rule.pool, failure))
            if failure is None:
                return checks, rule
        return checks, None

    def _apply_novelty(
        self, policy: PolicyFile, items: list[Item], decisions: list[Decision], learn: bool
    ) -> list[Decision]:
        """Items bound for an SLM pool are scored against their task's centroids, a task's items at once."""
        novelty, out = policy.novelty, list(decisions)
        by_task: dict[str, list[int]] = {}
        for i, d in enumerate(decisions):
            if not novelty.enabled or d.pool not in novelty.applies_to:
                continue
            if d.task_type is TaskType.OTHER:
                out[i] = _divert(d, novelty.pool, 1.0, "unknown task type")
            else:
                by_task.setdefault(d.task_type.value, []).append(i)
        for task, indices in by_task.items():
            self._score_task(novelty, task, [items[i] for i in indices], indices, out, learn)
        return out

    def _score_task(
        self,
        novelty: NoveltyPolicy,
        task: str,
        items: list[Item],
        indices: list[int],
        out: list[Decision],
        learn: bool,
    ) -> None:
        vecs = self.novelty.vectors([item.input_text() for item in items])
        scores, cosines = self.novelty.scores(task, vecs)
        familiar = []
        for j, (i, score) in enumerate(zip(indices, scores, strict=False)):
            if score is not None and score >= novelty.threshold:
                out[i] = _divert(out[i], novelty.pool, score, f"novelty {score:.3f} >= {novelty.threshold}")
            else:
                out[i].novelty_score = score  # decisions are built per item by the caller, not shared
                familiar.append(j)
        if learn and familiar:
            keep = np.array(familiar)
            self.novelty.learn(task, vecs, None if cosines is None else cosines[keep], texts=keep)


def _divert(decision: Decision, pool: str, score: float, why: str) -> Decision:
    return replace(decision, pool=pool, rule="novelty", reason=why, novelty_score=score)
