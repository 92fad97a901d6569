"""Which routed items may be answered from the result cache: the policy's `cache` sections, per tenant and task.

The router stamps each opted-in Assignment with a CacheDirective (TTL and scope); the pool does the lookup,
since the cache key includes the model the pool would call. Answers are keyed per tenant unless the task is
shareable in that tenant's policy, so a tenant receives another tenant's answer only when both share it.
"""

from __future__ import annotations

import orjson

from modelyard.core.settings import CachePolicy
from schemas import TaskType
from streams.rules import PolicyFile


class CacheDirectives:
    """The directive (as a JSON fragment for the Assignment, or None) per tenant and task, for one policy."""

    MAX_ENTRIES = 65_536

    def __init__(self, policy: PolicyFile) -> None:
        self.policy = policy
        self._memo: dict[tuple[str, TaskType], orjson.Fragment | None] = {}

    def for_item(self, tenant: str, task: TaskType) -> orjson.Fragment | None:
        key = (tenant, task)
        try:
            return self._memo[key]
        except KeyError:
            if len(self._memo) >= self.MAX_ENTRIES:
                self._memo.clear()
            found = self._memo[key] = directive_json(cache_policy_of(self.policy, tenant), task)
            return found


def cache_policy_of(policy: PolicyFile, tenant: str) -> CachePolicy:
    """A tenant's own `cache` section replaces the global one."""
    own = policy.tenants.get(tenant)
    return own.cache if own is not None and own.cache is not None else policy.cache


def directive(cache: CachePolicy, task: TaskType) -> dict[str, object] | None:
    if task not in cache.tasks:
        return None
    return {"ttl_s": cache.ttl_s, "scope": "shared" if task in cache.shareable else "tenant"}


def directive_json(cache: CachePolicy, task: TaskType) -> orjson.Fragment | None:
    found = directive(cache, task)
    return None if found is None else orjson.Fragment(orjson.dumps(found))
