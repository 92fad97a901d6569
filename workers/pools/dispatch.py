"""Dispatcher: runs one assignment down its pool's chain of provider/model targets.

The chain is the pool's own provider and model, then `pools.<name>.fallbacks` in order. For each target:

* its circuit breaker is asked first; an open circuit is skipped without a call (and named in the error
  if the job fails);
* the provider's gate applies the rate limits; a call rate limited past the SDK's retries waits out a
  pause shared by all calls to that provider and is retried (up to `rate_limit_retries`): a 429 storm
  slows the pool, it does not fail jobs;
* a retryable failure (outage, 5xx, timeout, rate limits that never end) moves on to the next target;
  a non-retryable one (the request's fault, e.g. HTTP 400) ends the job there;
* a chain exhausted without an answer waits for a circuit probe and starts again (`wait_for_circuit_s`),
  so a short outage with no fallback delays jobs instead of failing them.

Stopping: once `stop_waiting()` is called (the pool is stopping), a call that would wait in a gate raises
Stopping instead; the job is dropped unanswered and replays after the restart. Calls already sent finish.

Attempts and results: every call that went out yields its own Result, numbered from the assignment's
attempt upwards (1, 2, ...) and carrying the call id made when the call was sent: the sink bills each call
exactly once (the ledger is keyed by job_id, attempt and call id, so a replayed Result adds nothing and a
second real call for the same attempt, after a crash, is billed as its own row). Attempts the job moved on
from have status `failed_over`; the last one is final (`ok` or `error`).

Budgets: a fallback target that spends from a budgeted pool's budget (`Target.budgeted`: a target of a pool
in `costs.budget_pools`, called from a pool outside it) is admitted by the pool's budget view first, which
reserves the call's estimated cost; a tenant over budget gets no such call (the job goes on, or ends with an
error that says why).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from modelyard.core._exceptions import ProviderError, RateLimited, Stopping
from modelyard.core.budgets import BudgetGuard, Overrun
from modelyard.core.observability import BUDGET_REFUSALS
from schemas import Assignment, Result, ResultStatus
from schemas.result import NO_CALL, new_call_id
from workers.pools.backends.base import Completion, ModelBackend
from workers.pools.breaker import BreakerState, CircuitBreaker
from workers.pools.deadlines import deadline_passed, expired_result
from workers.pools.limits import ProviderGate, estimated_tokens

log = logging.getLogger("modelyard.pool")


@dataclass
class Target:
    """One provider/model a pool can call, with the breaker and gate it shares with every other call."""

    provider: str
    model: str
    backend: ModelBackend
    breaker: CircuitBreaker
    gate: ProviderGate
    max_output_tokens: int
    rate_limit_retries: int
    budgeted: bool = False  # a fallback that spends from a budgeted pool's budget: admitted first

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True)
class CallOutcome:
    result: Result
    try_next: bool


class _DeadlinePassed(Exception):
    """The item's deadline passed while it waited at its provider's gate: it is not sent."""


class Dispatcher:
    def __init__(
        self,
        pool: str,
        targets: list[Target],
        stopping: asyncio.Event | None = None,
        wait_for_circuit_s: float = 0.0,
        budget: BudgetGuard | None = None,
    ) -> None:
        if not targets:
            raise ValueError("a pool needs at least one target")
        self.pool = pool
        self.targets = targets
        self.stopping = stopping or asyncio.Event()
        self.wait_for_circuit_s = wait_for_circuit_s
        self.budget = budget

    def stop_waiting(self) -> None:
        """From now on, calls that would wait (rate limits, a 429 pause) raise Stopping instead."""
        self.stopping.set()

    async def run(self, assignment: Assignment) -> list[Result]:
        """Every attempt's Result, in order; the last is the job's final one in this pool.

        When the chain is exhausted without an answer (every circuit open, or the last target failed
        retryably), the job waits (holding its slot, so the pool stops taking work) for a probe, up to
        `wait_for_circuit_s`, and goes down the chain again: an outage shorter than that delays jobs
        instead of failing them, from its first second on. Every call made keeps its own Result."""
        deadline = time.monotonic() + self.wait_for_circuit_s
        results: list[Result] = []
        while True:
            called, skipped, refused, unanswered = await self._down_the_chain(
                assignment, assignment.attempt + len(results)
            )
            results += called
            if not unanswered or time.monotonic() >= deadline:
                break
            await self._wait_for_probe(deadline)
        if not results:
            return [self._no_target(assignment, skipped, refused)]
        return _with_statuses(results, skipped, refused)

    async def _wait_for_probe(self, deadline: float) -> None:
        soonest = min(t.breaker.seconds_until_probe() for t in self.targets)
        delay = min(max(soonest, 0.05), max(deadline - time.monotonic(), 0.0))
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=delay)
        except TimeoutError:
            return
        raise Stopping("the pool is stopping; the job replays after the restart")

    async def _down_the_chain(
        self, assignment: Assignment, first_attempt: int
    ) -> tuple[list[Result], list[str], list[str], bool]:
        """The calls made, the targets skipped (open circuit), those a budget refused (and why), and whether
        the job is still unanswered for a reason that may pass (nothing called, or the last call failed
        retryably)."""
        results: list[Result] = []
        skipped: list[str] = []
        refused: list[str] = []
        for target in self.targets:
            if deadline_passed(
                assignment.item
            ):  # expired before this call: end it, call nothing, bill nothing
                results.append(self._expired(target, assignment, first_attempt + len(results)))
                return results, skipped, refused, False
            if not target.breaker.allow():
                skipped.append(target.label)
                continue
            attempt = first_attempt + len(results)
            refusal = self._over_budget(target, assignment, attempt)
            if refusal is not None:
                target.breaker.release()
                refused.append(f"{target.label} not called: {refusal}")
                continue
            outcome = await self._reserved_call(target, assignment, attempt)
            results.append(outcome.result)
            if not outcome.try_next:
                return results, skipped, refused, False
        return results, skipped, refused, True

    def _over_budget(self, target: Target, assignment: Assignment, attempt: int) -> str | None:
        """Why a budgeted fallback may not be called for this tenant now; None once it is admitted (its
        estimated cost reserved under (job_id, attempt))."""
        item, budget = assignment.item, self.budget
        if not target.budgeted or budget is None or not budget.guards(item.tenant):
            return None
        tokens = (-(-len(item.input_text()) // 4), item.params.max_output_tokens or target.max_output_tokens)
        admitted = budget.admit(item.tenant, (item.job_id, attempt), target.model, tokens, datetime.now(UTC))
        if not isinstance(admitted, Overrun):
            return None
        BUDGET_REFUSALS.labels("fallback", admitted.action).inc()
        return admitted.why

    async def _reserved_call(self, target: Target, assignment: Assignment, attempt: int) -> CallOutcome:
        """A call whose reservation is dropped again when it is never sent (the pool is stopping)."""
        try:
            return await self._call(target, assignment, attempt)
        except Stopping:
            if self.budget is not None:
                self.budget.release(assignment.item.tenant, (assignment.item.job_id, attempt))
            raise

    async def _call(self, target: Target, assignment: Assignment, attempt: int) -> CallOutcome:
        item, started = assignment.item, time.perf_counter()
        base = _base(assignment, attempt, self.pool, target, new_call_id())
        tokens = estimated_tokens(
            len(item.input_text()), item.params.max_output_tokens or target.max_output_tokens
        )
        try:
            done = await self._complete(target, assignment, tokens)
        except Stopping:
            raise
        except _DeadlinePassed:
            target.breaker.release()
            return CallOutcome(self._expired(target, assignment, attempt), try_next=False)
        except ProviderError as exc:
            _judge(target, success=not exc.retryable, why=str(exc))
            return CallOutcome(_failed(base, str(exc), started), try_next=exc.retryable)
        except Exception as exc:  # a defect of ours: record it against the job rather than lose the job
            log.exception("backend crashed on job %s", item.job_id)
            target.breaker.release()
            return CallOutcome(_failed(base, f"internal: {type(exc).__name__}", started), try_next=False)
        _judge(target, success=True, why="")
        return CallOutcome(_succeeded(base, done, started), try_next=False)

    async def _complete(self, target: Target, assignment: Assignment, tokens: int) -> Completion:
        retries = 0
        while True:
            await target.gate.enter(tokens)
            if deadline_passed(assignment.item):
                raise _DeadlinePassed
            try:
                return await target.backend.complete(assignment.item, assignment.task_type)
            except RateLimited as exc:
                if retries >= target.rate_limit_retries:
                    raise
                target.gate.pause(exc.retry_after, retries)
                retries += 1

    def _expired(self, target: Target, assignment: Assignment, attempt: int) -> Result:
        return expired_result(assignment, attempt, self.pool, target.provider, target.model)

    def _no_target(self, assignment: Assignment, skipped: list[str], refused: list[str]) -> Result:
        """Every circuit is open (or the rest refused by a budget): the job ends here with an error, no call
        made, nothing billed."""
        first = self.targets[0]
        base = _base(assignment, assignment.attempt, self.pool, first, NO_CALL)
        reasons = ([f"circuit open for {', '.join(skipped)}"] if skipped else []) + refused
        return _failed(base, f"no provider available: {'; '.join(reasons)}", time.perf_counter())

    async def close(self) -> None:
        for backend in {id(t.backend): t.backend for t in self.targets}.values():
            await backend.close()


def _judge(target: Target, *, success: bool, why: str) -> None:
    """Tell the breaker how the call went; log when that opens or closes the circuit."""
    breaker, before = target.breaker, target.breaker.state
    if success:
        breaker.record_success()
    else:
        breaker.record_failure()
    after = breaker.state
    if after is BreakerState.OPEN and before is not BreakerState.OPEN:
        log.warning(
            "circuit for %s opened (%s); one probe in %.0fs", target.label, why[:200], breaker.cooldown_s
        )
    elif after is BreakerState.CLOSED and before is not BreakerState.CLOSED:
        log.info("circuit for %s closed: the provider answers again", target.label)


def _with_statuses(results: list[Result], skipped: list[str], refused: list[str]) -> list[Result]:
    """Earlier failures become failed_over; a final error names the circuits it could not try and the
    fallbacks a budget refused."""
    out = [r.model_copy(update={"status": ResultStatus.FAILED_OVER}) for r in results[:-1]]
    last = results[-1]
    reasons = ([f"circuit open for {', '.join(skipped)}"] if skipped else []) + refused
    if last.status is ResultStatus.ERROR and reasons:
        last = last.model_copy(update={"error": "; ".join([last.error or "", *reasons])[:2000]})
    return [*out, last]


def _base(assignment: Assignment, attempt: int, pool: str, target: Target, call_id: str) -> dict[str, Any]:
    item = assignment.item
    return {
        "job_id": item.job_id,
        "attempt": attempt,
        "tenant": item.tenant,
        "task_type": assignment.task_type,
        "pool": pool,
        "provider": target.provider,
        "model": target.model,
        "call_id": call_id,
    }


def _succeeded(base: dict[str, Any], done: Completion, started: float) -> Result:
    return Result(
        **(base | {"model": done.model}),
        status=ResultStatus.OK,
        output=done.output,
        confidence=done.confidence,
        usage=done.usage,
        latency_ms=_elapsed_ms(started),
        completed_at=datetime.now(UTC),
    )


def _failed(base: dict[str, Any], error: str, started: float) -> Result:
    return Result(
        **base,
        status=ResultStatus.ERROR,
        error=error[:2000],
        latency_ms=_elapsed_ms(started),
        completed_at=datetime.now(UTC),
    )


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
