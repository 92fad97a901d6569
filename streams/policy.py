"""RoutingPolicy: validate each record once, tag its task, apply the routing rules and the novelty check.

No Faust here: the router agent, `modelyard route --explain` and the tests all call the same code.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from modelyard._exceptions import ConfigError
from modelyard.observability import DEAD_LETTERS, routed_to
from modelyard.settings import Settings
from schemas import TaskType, WorkItem
from schemas.decoding import DecodeFailure, decode
from streams.budgets import BudgetBook, Overrun
from streams.dedup import RecentJobIds
from streams.novelty import NoveltyDetector
from streams.rules import ItemFeatures, PolicyFile, Rule, load_policy_file, policy_from_routes
from streams.tagging import tag_task

log = logging.getLogger("modelyard.router")
SHADOW_PREFIX = "shadow:"


@dataclass(frozen=True)
class Source:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes
    shadow: Outgoing | None = None  # a copy of an SLM-bound item for the frontier, to measure agreement


@dataclass(frozen=True)
class RuleCheck:
    scope: str
    rule: str
    pool: str
    failure: str | None


@dataclass(frozen=True)
class Decision:
    task_type: TaskType
    task_reason: str
    pool: str
    rule: str
    reason: str
    features: ItemFeatures
    novelty_score: float | None = None
    checks: list[RuleCheck] = field(default_factory=list)


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


class PolicySource:
    """The current policy; re-reads the YAML file when its mtime changes (an invalid file keeps the old policy)."""

    def __init__(self, settings: Settings) -> None:
        self.path = settings.router.policy_file
        self.interval = settings.router.reload_interval_s
        self.pools = set(settings.pools)
        self._mtime = self._stat()
        self._checked = time.monotonic()
        if self.path is None:
            self.policy = policy_from_routes(settings.routes, settings.default_pool, self.pools)
        else:
            self.policy = load_policy_file(self.path, self.pools)

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


class RoutingPolicy:
    def __init__(self, settings: Settings, source: PolicySource | None = None) -> None:
        self.kafka = settings.kafka
        self.source = source or PolicySource(settings)
        router = self.router = settings.router
        self.known_tenants = set(router.known_tenants) if router.known_tenants is not None else None
        self.recent = RecentJobIds(router.dedup_window_s, router.dedup_max_entries)
        self.costs = settings.costs
        self.budgets = BudgetBook(settings.costs.budgets)
        self.novelty = NoveltyDetector(router.novelty_dims, self.source.current().novelty.min_samples)

    # -- decisions ----------------------------------------------------------------------------------
    def decide(self, item: WorkItem, now: datetime | None = None, learn: bool = True) -> Decision:
        now = now or datetime.now(UTC)
        policy = self.source.current()
        task_type, task_reason = tag_task(item)
        features = ItemFeatures(
            task_type=task_type, tenant=item.tenant, input_tokens=estimate_tokens(item.input_text()),
            priority=item.priority, label_count=len(item.params.labels or ()), deadline=item.deadline,
        )
        checks, chosen = self._first_match(policy, features, now)
        if chosen is None:
            tenant = policy.tenants.get(item.tenant)
            pool = tenant.default_pool if tenant and tenant.default_pool else policy.default_pool
            decision = Decision(task_type, task_reason, pool, "default", "no rule matched", features, None, checks)
        else:
            decision = Decision(task_type, task_reason, chosen.pool, chosen.name, f"rule {chosen.name} matched", features, None, checks)
        return self._apply_novelty(policy, item, decision, learn)

    def _first_match(self, policy: PolicyFile, f: ItemFeatures, now: datetime) -> tuple[list[RuleCheck], Rule | None]:
        tenant = policy.tenants.get(f.tenant)
        scoped = [(f"tenant {f.tenant}", r) for r in (tenant.rules if tenant else [])] + [("global", r) for r in policy.rules]
        checks = []
        for scope, rule in scoped:
            failure = rule.when.first_failure(f, now)
            checks.append(RuleCheck(scope, rule.name, rule.pool, failure))
            if failure is None:
                return checks, rule
        return checks, None

    def _apply_novelty(self, policy: PolicyFile, item: WorkItem, decision: Decision, learn: bool) -> Decision:
        novelty = policy.novelty
        if not novelty.enabled or decision.pool not in novelty.applies_to:
            return decision
        if decision.task_type is TaskType.OTHER:
            return _divert(decision, novelty.pool, 1.0, "unknown task type")
        vec = self.novelty.vector(item.input_text())
        score, cosines = self.novelty.assess(decision.task_type.value, vec)
        if score is not None and score >= novelty.threshold:
            return _divert(decision, novelty.pool, score, f"novelty {score:.3f} >= {novelty.threshold}")
        if learn:
            self.novelty.learn(decision.task_type.value, vec, cosines)
        return Decision(**{**decision.__dict__, "novelty_score": score})

    # -- records ------------------------------------------------------------------------------------
    def route(self, raw: bytes | None, source: Source) -> Outgoing:
        """One input record -> one output record (its pool's topic, or the dead-letter topic). Never raises."""
        try:
            return self._route(raw, source)
        except Exception as exc:  # a defect of ours must not make Faust ack and drop the record
            log.exception("router failed on %s", source)
            return self._dead(DecodeFailure("router_error", None, f"{type(exc).__name__}: {exc}"), raw, source)

    def _route(self, raw: bytes | None, source: Source) -> Outgoing:
        item = self._validate(raw, source)
        if isinstance(item, DecodeFailure):
            return self._dead(item, raw, source)
        decision = self.decide(item)
        overrun = self._overrun(item, decision)
        if overrun is not None:
            return self._over_budget(overrun, item, decision, raw, source)  # type: ignore[arg-type]
        routed_to(decision.pool).inc()
        shadow = self._shadow(item, decision)
        return Outgoing(self.kafka.pool_topic(decision.pool), item.job_id.encode(), assignment_json(raw, decision), shadow)  # type: ignore[arg-type]

    def _shadow(self, item: WorkItem, decision: Decision) -> Outgoing | None:
        """A deterministic share of SLM-bound items also goes to the shadow pool, billed to tenant 'shadow'."""
        router = self.router
        sampled = zlib.crc32(item.job_id.encode()) % 10_000 < router.shadow_share * 10_000
        if not sampled or decision.pool == router.shadow_pool or decision.pool not in self.source.current().novelty.applies_to:
            return None
        job_id = f"{SHADOW_PREFIX}{item.job_id}"[:128]
        copy = item.model_copy(update={"job_id": job_id, "tenant": "shadow", "metadata": {**item.metadata, "shadow_of": item.job_id, "tenant": item.tenant}})
        shadowed = Decision(**{**decision.__dict__, "pool": router.shadow_pool, "rule": "shadow", "reason": f"shadow sample of {item.job_id}"})
        return Outgoing(self.kafka.pool_topic(router.shadow_pool), job_id.encode(), assignment_json(copy.model_dump_json().encode(), shadowed))

    def _overrun(self, item: WorkItem, decision: Decision) -> Overrun | None:
        if decision.pool not in self.costs.budget_pools:
            return None
        return self.budgets.overrun(item.tenant, datetime.now(UTC))

    def _over_budget(self, overrun: Overrun, item: WorkItem, decision: Decision, raw: bytes, source: Source) -> Outgoing:
        """Frontier spend over budget: reject (dead letter), downgrade (the cheaper pool) or defer (park it)."""
        if overrun.action == "reject":
            return self._dead(DecodeFailure("budget_exceeded", "tenant", overrun.why), raw, source)
        if overrun.action == "defer":
            self.recent.forget(item.job_id)
            return Outgoing(self.kafka.deferred_topic, item.job_id.encode(), raw)
        pool = self.costs.downgrade_pool
        downgraded = Decision(**{**decision.__dict__, "pool": pool, "rule": "budget-downgrade", "reason": overrun.why})
        routed_to(pool).inc()
        return Outgoing(self.kafka.pool_topic(pool), item.job_id.encode(), assignment_json(raw, downgraded))

    def _validate(self, raw: bytes | None, source: Source) -> WorkItem | DecodeFailure:
        item = decode(WorkItem, raw)
        if isinstance(item, DecodeFailure):
            return item
        if self.known_tenants is not None and item.tenant not in self.known_tenants:
            return DecodeFailure("unknown_tenant", "tenant", f"tenant {item.tenant!r} is not configured")
        if self.recent.is_duplicate(item.job_id, source.partition, source.offset):
            return DecodeFailure("duplicate_job_id", "job_id", f"job_id {item.job_id!r} was already submitted")
        return item

    def _dead(self, failure: DecodeFailure, raw: bytes | None, source: Source) -> Outgoing:
        letter = failure.dead_letter(
            raw or b"", "router", source_topic=source.topic, source_partition=source.partition,
            source_offset=source.offset,
        )
        DEAD_LETTERS.labels("router", failure.reason).inc()
        return Outgoing(self.kafka.dead_letter_topic, None, letter.model_dump_json().encode())

    def save_novelty(self, path: Path) -> None:
        self.novelty.save(path)


def _divert(decision: Decision, pool: str, score: float, why: str) -> Decision:
    return Decision(**{**decision.__dict__, "pool": pool, "rule": "novelty", "reason": why, "novelty_score": score})


def assignment_json(raw: bytes, d: Decision) -> bytes:
    """The Assignment wire record, embedding the already-validated item bytes as they came (no re-encoding)."""
    return orjson.dumps({
        "schema_version": 1, "item": orjson.Fragment(raw), "task_type": d.task_type.value,
        "task_reason": d.task_reason[:500], "pool": d.pool, "rule": d.rule, "reason": d.reason[:500],
        "novelty_score": d.novelty_score, "input_tokens_est": d.features.input_tokens, "attempt": 1,
        "routed_at": datetime.now(UTC),
    })
