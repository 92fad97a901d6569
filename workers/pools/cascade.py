"""Cascade: an answer below its task's confidence threshold goes on to a stronger pool.

The escalated attempt's Result stays (it was a real call, billed once) with status `escalated`; the item
goes to the `to_pool`'s topic as a new Assignment whose attempt number follows it, so that pool's Result
is the job's final one. Answers without a confidence (the provider gave no logprobs, e.g. extraction or
Anthropic) are never escalated: there is nothing to judge them by.

`PolicyCascade` is the cascade a pool applies: the `cascades.<pool>` section of the routing-policy file
(`router.policy_file`, where `modelyard policy recommend` and `modelyard distill` write the thresholds they
calibrate) when it has one, else the pool's own `cascade` setting. The file is re-read when it changes, at
most every `router.reload_interval_s`, like the router's; a broken file keeps the cascade already applied.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml
from pydantic import ValidationError

from modelyard.core.settings import CascadeSettings
from schemas import Assignment, Result, ResultStatus

log = logging.getLogger("modelyard.pool")


class PolicyCascade:
    def __init__(
        self,
        policy_file: Path | None,
        pool: str,
        configured: CascadeSettings | None,
        reload_interval_s: float,
    ) -> None:
        self.policy_file = policy_file
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
            self.applied = CascadeSettings.model_validate(section) if section else self.configured
        except (OSError, yaml.YAMLError, ValidationError, AttributeError) as exc:
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


def escalate(cascade: CascadeSettings, assignment: Assignment, result: Result) -> tuple[Result, Assignment]:
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
            "routed_at": datetime.now(UTC),
        }
    )
    return result.model_copy(update={"status": ResultStatus.ESCALATED}), forwarded
