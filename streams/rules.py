"""Routing-policy file: ordered rules over item features, each naming a pool; per-tenant overrides; novelty.

A rule matches when every condition it sets holds. Tenant rules are tried before the global ones, and a
tenant's default pool replaces the global default. Validated by pydantic; pools must exist.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelyard.core._exceptions import ConfigError
from modelyard.core.settings import CachePolicy, CascadeSettings
from schemas import TaskType


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(slots=True)  # not frozen: built once per routed item, never mutated
class ItemFeatures:
    """What rules may look at, computed once per item."""

    task_type: TaskType
    tenant: str
    input_tokens: int
    priority: int
    label_count: int
    deadline: datetime | None


class Condition(Strict):
    task: list[TaskType] | None = None
    tenants: list[str] | None = None
    min_input_tokens: int | None = Field(default=None, ge=0)
    max_input_tokens: int | None = Field(default=None, ge=0)
    min_priority: int | None = Field(default=None, ge=0, le=9)
    max_priority: int | None = Field(default=None, ge=0, le=9)
    min_labels: int | None = Field(default=None, ge=0)
    max_labels: int | None = Field(default=None, ge=0)
    deadline_within_s: float | None = Field(
        default=None, gt=0, description="Has a deadline at most this far away."
    )
    has_deadline: bool | None = None

    def matches(self, f: ItemFeatures, now: datetime) -> bool:
        """first_failure(f, now) is None, without building the sentences (the routing hot path)."""
        if self.task is not None and f.task_type not in self.task:
            return False
        if self.tenants is not None and f.tenant not in self.tenants:
            return False
        if not (
            _within(f.input_tokens, self.min_input_tokens, self.max_input_tokens)
            and _within(f.priority, self.min_priority, self.max_priority)
            and _within(f.label_count, self.min_labels, self.max_labels)
        ):
            return False
        if self.has_deadline is not None and (f.deadline is not None) != self.has_deadline:
            return False
        return self.deadline_within_s is None or not self._deadline_too_far(f, now)

    def first_failure(self, f: ItemFeatures, now: datetime) -> str | None:
        """None when every set condition holds, else a sentence naming the first one that does not."""
        if self.task is not None and f.task_type not in self.task:
            return f"task {f.task_type.value} not in {[t.value for t in self.task]}"
        if self.tenants is not None and f.tenant not in self.tenants:
            return f"tenant {f.tenant} not in {self.tenants}"
        for name, value, low, high in (
            ("input_tokens", f.input_tokens, self.min_input_tokens, self.max_input_tokens),
            ("priority", f.priority, self.min_priority, self.max_priority),
            ("labels", f.label_count, self.min_labels, self.max_labels),
        ):
            if low is not None and value < low:
                return f"{name} {value} < {low}"
            if high is not None and value > high:
                return f"{name} {value} > {high}"
        if self.has_deadline is not None and (f.deadline is not None) != self.has_deadline:
            return f"has_deadline is not {self.has_deadline}"
        if self._deadline_too_far(f, now):
            return f"deadline not within {self.deadline_within_s}s"
        return None

    def _deadline_too_far(self, f: ItemFeatures, now: datetime) -> bool:
        if self.deadline_within_s is None:
            return False
        return f.deadline is None or (f.deadline - now).total_seconds() > self.deadline_within_s


def _within(value: int, low: int | None, high: int | None) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


class Rule(Strict):
    name: str = Field(min_length=1, max_length=100)
    when: Condition = Condition()
    pool: str


class TenantPolicy(Strict):
    rules: list[Rule] = Field(default_factory=list)
    default_pool: str | None = None
    cache: CachePolicy | None = Field(
        default=None, description="Replaces the global `cache` for this tenant."
    )


class NoveltyPolicy(Strict):
    enabled: bool = True
    threshold: float = Field(
        default=0.75, gt=0, le=1, description="Score at or above which an item is novel."
    )
    pool: str = "frontier"
    applies_to: list[str] = Field(
        default_factory=lambda: ["slm"], description="Pools whose items may be diverted."
    )
    min_samples: int = Field(default=50, ge=1, description="Items a task's centroid needs before it scores.")


class LearnedPolicy(Strict):
    """The learned per-item router (streams/learned_routing.py): after the rules, an item of a task the model
    knows, whose rule-chosen pool is one of the model's pools, goes to the cheapest pool predicted to answer it
    about as well as the best one. Off unless the policy file has this section."""

    models_dir: Path = Field(description="The routing model registry `modelyard routing fit` writes to.")
    reload_interval_s: float = Field(default=30.0, gt=0, description="How often a new version is looked for.")


class PolicyFile(Strict):
    version: int = 1
    default_pool: str
    rules: list[Rule] = Field(default_factory=list)
    tenants: dict[str, TenantPolicy] = Field(default_factory=dict)
    novelty: NoveltyPolicy = NoveltyPolicy()
    cascades: dict[str, CascadeSettings] = Field(
        default_factory=dict,
        description="Per pool: answers below these confidences go on to `to_pool`. Pools read this section "
        "of the file they are given as `router.policy_file` (over their own `cascade` setting); "
        "`modelyard policy recommend` and `modelyard distill` write the thresholds they calibrate here.",
    )
    learned: LearnedPolicy | None = None
    cache: CachePolicy = Field(
        default_factory=CachePolicy, description="Result-cache opt-in (none by default)."
    )

    @model_validator(mode="after")
    def _unique_rule_names(self) -> PolicyFile:
        names = [r.name for r in self.rules] + [r.name for t in self.tenants.values() for r in t.rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"rules: duplicate rule names {duplicates}")
        return self

    def pools_named(self) -> set[str]:
        pools = {self.default_pool, self.novelty.pool, *(r.pool for r in self.rules)}
        pools |= set(self.cascades) | {c.to_pool for c in self.cascades.values()}
        for tenant in self.tenants.values():
            pools |= {r.pool for r in tenant.rules} | (
                {tenant.default_pool} if tenant.default_pool else set()
            )
        return pools

    def check_pools(self, known: set[str], source: str) -> PolicyFile:
        unknown = sorted(self.pools_named() - known)
        if unknown:
            raise ConfigError(
                f"routing policy {source}: unknown pools {unknown}; configured pools are {sorted(known)}"
            )
        return self


class RuleMemo:
    """The first matching rule for each class of items the policy cannot tell apart, found once.

    Rules compare input tokens and label counts with thresholds, so values between two thresholds decide
    alike and an item's class is (task, tenant, token interval, priority, label interval, has deadline).
    A policy with a deadline_within_s rule depends on the clock and is never memoised."""

    MAX_ENTRIES = 65_536

    def __init__(self, policy: PolicyFile) -> None:
        conditions = [r.when for r in policy.rules] + [
            r.when for t in policy.tenants.values() for r in t.rules
        ]
        self.policy = policy
        self.enabled = all(c.deadline_within_s is None for c in conditions)
        self.token_cuts = _cuts([(c.min_input_tokens, c.max_input_tokens) for c in conditions])
        self.label_cuts = _cuts([(c.min_labels, c.max_labels) for c in conditions])
        self._rules: dict[tuple[object, ...], Rule | None] = {}

    def first_match(self, f: ItemFeatures, now: datetime) -> Rule | None:
        if not self.enabled:
            return first_matching_rule(self.policy, f, now)
        key = (
            f.task_type,
            f.tenant,
            bisect_right(self.token_cuts, f.input_tokens),
            f.priority,
            bisect_right(self.label_cuts, f.label_count),
            f.deadline is None,
        )
        try:
            return self._rules[key]
        except KeyError:
            if len(self._rules) >= self.MAX_ENTRIES:
                self._rules.clear()
            rule = self._rules[key] = first_matching_rule(self.policy, f, now)
            return rule


def first_matching_rule(policy: PolicyFile, f: ItemFeatures, now: datetime) -> Rule | None:
    """Tenant rules first, then the global ones."""
    tenant = policy.tenants.get(f.tenant)
    for rules in (tenant.rules if tenant else (), policy.rules):
        for rule in rules:
            if rule.when.matches(f, now):
                return rule
    return None


def _cuts(bounds: list[tuple[int | None, int | None]]) -> list[int]:
    """Where `value >= low` or `value <= high` can change truth: each low, and each high + 1."""
    return sorted(
        {low for low, _ in bounds if low is not None} | {high + 1 for _, high in bounds if high is not None}
    )


def load_policy_file(path: Path, known_pools: set[str]) -> PolicyFile:
    try:
        data = yaml.safe_load(path.read_text())
        policy = PolicyFile.model_validate(data)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read routing policy {path}: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "policy"
        raise ConfigError(f"routing policy {path}: {where}: {first['msg']}") from exc
    return policy.check_pools(known_pools, str(path))


def configured_policy(
    known_pools: set[str],
    routes: Mapping[TaskType, str],
    default_pool: str,
    path: Path | None,
    cache: CachePolicy | None = None,
) -> PolicyFile:
    """The policy in force: the policy file when one is set, else the routes table (and `router.cache`)."""
    if path is None:
        return policy_from_routes(routes, default_pool, known_pools, cache)
    return load_policy_file(path, known_pools)


def policy_from_routes(
    routes: Mapping[TaskType, str],
    default_pool: str,
    known_pools: set[str],
    cache: CachePolicy | None = None,
) -> PolicyFile:
    """The simple task -> pool table of the settings, as a policy with one rule per task (and `router.cache`)."""
    rules = [
        Rule(name=f"task-{task.value}", when=Condition(task=[task]), pool=pool)
        for task, pool in routes.items()
    ]
    novelty_pool = default_pool if default_pool in known_pools else next(iter(known_pools))
    novelty = NoveltyPolicy(pool=novelty_pool, applies_to=[p for p in ("slm",) if p in known_pools])
    return PolicyFile(default_pool=default_pool, rules=rules, novelty=novelty, cache=cache or CachePolicy())
