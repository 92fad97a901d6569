"""RoutingPolicy: validate each record once, tag its task, apply the routing rules and the novelty check.

No Faust here: the router agent, `modelyard route --explain` and the tests all call the same code.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np
import orjson

from modelyard.core._exceptions import ConfigError
from modelyard.core.observability import DEAD_LETTERS, routed_to
from modelyard.core.settings import Settings
from modelyard.core.signatures import TenantKeys
from schemas import TaskType, WorkItem
from schemas.decoding import DecodeFailure
from schemas.work_item_struct import DECODE_WORK_ITEM, WorkItemStruct
from streams.budgets import BudgetBook, Overrun
from streams.dedup import RecentJobIds
from streams.novelty import NoveltyDetector
from streams.rules import (
    ItemFeatures,
    NoveltyPolicy,
    PolicyFile,
    Rule,
    RuleMemo,
    load_policy_file,
    policy_from_routes,
)
from streams.tagging import tag_task

log = logging.getLogger("modelyard.router")
SHADOW_PREFIX = "shadow:"
Item = WorkItem | WorkItemStruct  # the fast path decodes to the struct; lax input to the pydantic model


class Source(NamedTuple):  # tuples: one of each per record on the hot path, where dataclass init costs
    topic: str
    partition: int
    offset: int
    signature: bytes | None = None  # the record's modelyard-signature header, read when tenant keys are set


class Outgoing(NamedTuple):
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


def estimate_tokens(text: str) -> int:
    return -(-len(text) // 4)  # ceil(len / 4) in integers


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
        self.tenant_keys = TenantKeys(router.tenant_keys) if router.tenant_keys is not None else None
        self.recent = RecentJobIds(router.dedup_window_s, router.dedup_max_entries)
        self.costs = settings.costs
        self.budgets = BudgetBook(settings.costs.budgets)
        self.novelty = NoveltyDetector(router.novelty_dims, self.source.current().novelty.min_samples)
        self._memo = RuleMemo(self.source.current())
        self._pool_topics: dict[str, str] = {}
        self._routed: Counter[str] = Counter()  # routed per pool in the current batch, counted once per batch

    # -- decisions ----------------------------------------------------------------------------------
    def decide(self, item: Item, now: datetime | None = None, learn: bool = True) -> Decision:
        """One item's decision with every rule check spelled out (what `route --explain` prints)."""
        now = now or datetime.now(UTC)
        policy = self.source.current()
        features, task_reason = self._features(item)
        checks, chosen = self._first_match(policy, features, now)
        decision = self._ruled(policy, features, task_reason, chosen, checks)
        return self._apply_novelty(policy, [item], [decision], learn)[0]

    def decide_many(self, items: list[Item], now: datetime, learn: bool = True) -> list[Decision]:
        """The routing hot path: the same decisions as decide(), without recording every rule check."""
        policy = self.source.current()
        if self._memo.policy is not policy:
            self._memo = RuleMemo(policy)
        decisions, first_match = [], self._memo.first_match
        for item in items:
            features, task_reason = self._features(item)
            decisions.append(self._ruled(policy, features, task_reason, first_match(features, now), []))
        return self._apply_novelty(policy, items, decisions, learn)

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

    # -- records ------------------------------------------------------------------------------------
    def route(self, raw: bytes | None, source: Source) -> Outgoing:
        """One input record -> one output record (its pool's topic, or the dead-letter topic). Never raises."""
        return self.route_many([(raw, source)])[0]

    def route_many(self, records: list[tuple[bytes | None, Source]]) -> list[Outgoing]:
        """One output per input record, in order. Never raises: a defect of ours must not make Faust ack and
        drop records, so a failing batch is routed again one record at a time, and a failing record becomes
        a dead letter (a replayed position is not a duplicate, so routing again is safe)."""
        try:
            return self._route_many(records)
        except Exception as exc:
            if len(records) > 1:
                log.exception("router failed on a batch of %d records; routing them one by one", len(records))
                return [self.route(raw, source) for raw, source in records]
            raw, source = records[0]
            log.exception("router failed on %s", source)
            return [
                self._dead(DecodeFailure("router_error", None, f"{type(exc).__name__}: {exc}"), raw, source)
            ]

    def _route_many(self, records: list[tuple[bytes | None, Source]]) -> list[Outgoing]:
        now, clock, self._routed = datetime.now(UTC), self.recent.evict(), Counter()
        checked = [self._validate(raw, source, clock) for raw, source in records]
        valid = [k for k, item in enumerate(checked) if not isinstance(item, DecodeFailure)]
        decisions = self.decide_many([checked[k] for k in valid], now)  # type: ignore[misc]
        if len(valid) == len(records):  # the usual batch: nothing to interleave
            out = self._emit_all(checked, decisions, records, now)  # type: ignore[arg-type]
        else:
            out = self._interleave(checked, valid, decisions, records, now)
        for pool, count in self._routed.items():
            routed_to(pool).inc(count)
        return out

    def _interleave(
        self,
        checked: list[Item | DecodeFailure],
        valid: list[int],
        decisions: list[Decision],
        records: list[tuple[bytes | None, Source]],
        now: datetime,
    ) -> list[Outgoing]:
        """Routed items' outputs and dead letters, in input order."""
        out: list[Outgoing | None] = [None] * len(records)
        emitted = self._emit_all([checked[k] for k in valid], decisions, [records[k] for k in valid], now)  # type: ignore[misc]
        for k, outgoing in zip(valid, emitted, strict=False):
            out[k] = outgoing
        for k, item in enumerate(checked):
            if isinstance(item, DecodeFailure):
                out[k] = self._dead(item, *records[k])
        return out  # type: ignore[return-value]

    def _emit_all(
        self, items: list[Item], decisions: list[Decision], records: list[tuple[bytes, Source]], now: datetime
    ) -> list[Outgoing]:
        """The routed items' outputs; with budgets or shadow sampling configured, item by item (_emit)."""
        if self.costs.budgets or self.router.shadow_share:
            return [
                self._emit(item, d, *record, now)
                for item, d, record in zip(items, decisions, records, strict=False)
            ]
        self._routed.update(d.pool for d in decisions)
        topic = self._topic
        return [
            Outgoing(topic(d.pool), item.job_id.encode(), assignment_json(record[0], d, now))
            for item, d, record in zip(items, decisions, records, strict=False)
        ]

    def _emit(self, item: Item, decision: Decision, raw: bytes, source: Source, now: datetime) -> Outgoing:
        if self.costs.budgets:
            overrun = self._overrun(item, decision, now)
            if overrun is not None:
                return self._over_budget(overrun, item, decision, raw, source, now)
        self._routed[decision.pool] += 1
        shadow = self._shadow(item, decision, now) if self.router.shadow_share else None
        return Outgoing(
            self._topic(decision.pool), item.job_id.encode(), assignment_json(raw, decision, now), shadow
        )

    def _topic(self, pool: str) -> str:
        topic = self._pool_topics.get(pool)
        return topic if topic is not None else self._pool_topics.setdefault(pool, self.kafka.pool_topic(pool))

    def _shadow(self, item: Item, decision: Decision, now: datetime) -> Outgoing | None:
        """A deterministic share of SLM-bound items also goes to the shadow pool, billed to tenant 'shadow'."""
        router = self.router
        if not router.shadow_share:
            return None
        sampled = zlib.crc32(item.job_id.encode()) % 10_000 < router.shadow_share * 10_000
        if (
            not sampled
            or decision.pool == router.shadow_pool
            or decision.pool not in self.source.current().novelty.applies_to
        ):
            return None
        job_id = f"{SHADOW_PREFIX}{item.job_id}"[:128]
        model = item.to_model() if isinstance(item, WorkItemStruct) else item
        copy = model.model_copy(
            update={
                "job_id": job_id,
                "tenant": "shadow",
                "metadata": {**model.metadata, "shadow_of": item.job_id, "tenant": item.tenant},
            }
        )
        shadowed = replace(
            decision, pool=router.shadow_pool, rule="shadow", reason=f"shadow sample of {item.job_id}"
        )
        return Outgoing(
            self.kafka.pool_topic(router.shadow_pool),
            job_id.encode(),
            assignment_json(copy.model_dump_json().encode(), shadowed, now),
        )

    def _overrun(self, item: Item, decision: Decision, now: datetime) -> Overrun | None:
        if decision.pool not in self.costs.budget_pools:
            return None
        return self.budgets.overrun(item.tenant, now)

    def _over_budget(
        self, overrun: Overrun, item: Item, decision: Decision, raw: bytes, source: Source, now: datetime
    ) -> Outgoing:
        """Frontier spend over budget: reject (dead letter), downgrade (the cheaper pool) or defer (park it)."""
        if overrun.action == "reject":
            return self._dead(DecodeFailure("budget_exceeded", "tenant", overrun.why), raw, source)
        if overrun.action == "defer":
            self.recent.forget(item.job_id)
            return Outgoing(self.kafka.deferred_topic, item.job_id.encode(), raw)
        pool = self.costs.downgrade_pool
        downgraded = replace(decision, pool=pool, rule="budget-downgrade", reason=overrun.why)
        self._routed[pool] += 1
        return Outgoing(
            self.kafka.pool_topic(pool), item.job_id.encode(), assignment_json(raw, downgraded, now)
        )

    def _validate(self, raw: bytes | None, source: Source, clock: float) -> Item | DecodeFailure:
        item = DECODE_WORK_ITEM(raw)
        if isinstance(item, DecodeFailure):
            return item
        if self.known_tenants is not None and item.tenant not in self.known_tenants:
            return DecodeFailure("unknown_tenant", "tenant", f"tenant {item.tenant!r} is not configured")
        if self.tenant_keys is not None:
            failure = self.tenant_keys.verify(item.tenant, raw, source.signature)  # type: ignore[arg-type]
            if failure is not None:
                return failure
        if self.recent.is_duplicate(item.job_id, source.partition, source.offset, clock):
            return DecodeFailure(
                "duplicate_job_id", "job_id", f"job_id {item.job_id!r} was already submitted"
            )
        return item

    def _dead(self, failure: DecodeFailure, raw: bytes | None, source: Source) -> Outgoing:
        letter = failure.dead_letter(
            raw or b"",
            "router",
            source_topic=source.topic,
            source_partition=source.partition,
            source_offset=source.offset,
            signature=source.signature.decode(errors="replace")[:200] if source.signature else None,
        )
        DEAD_LETTERS.labels("router", failure.reason).inc()
        return Outgoing(self.kafka.dead_letter_topic, None, letter.model_dump_json().encode())

    def save_novelty(self, path: Path) -> None:
        self.novelty.save(path)


def _divert(decision: Decision, pool: str, score: float, why: str) -> Decision:
    return replace(decision, pool=pool, rule="novelty", reason=why, novelty_score=score)


def assignment_json(raw: bytes, d: Decision, now: datetime) -> bytes:
    """The Assignment wire record, embedding the already-validated item bytes as they came (no re-encoding)."""
    return orjson.dumps(
        {
            "schema_version": 1,
            "item": orjson.Fragment(raw),
            "task_type": d.task_type,
            "task_reason": d.task_reason[:500],
            "pool": d.pool,
            "rule": d.rule,
            "reason": d.reason[:500],
            "novelty_score": d.novelty_score,
            "input_tokens_est": d.features.input_tokens,
            "attempt": 1,
            "routed_at": now,
        }
    )
