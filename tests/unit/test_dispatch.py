"""Dispatcher logic with scripted backends (the chain, attempts, statuses); the SDK paths are covered in
tests/integration/test_pools.py against the simulator."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from modelyard.core._exceptions import ProviderError, RateLimited
from modelyard.core.settings import ProviderSettings
from schemas import Assignment, ResultStatus, TaskType, Usage, WorkItem
from workers.pools.backends.base import Completion
from workers.pools.breaker import BreakerState, CircuitBreaker
from workers.pools.dispatch import Dispatcher, Target
from workers.pools.limits import ProviderGate

ITEM = WorkItem(job_id="j", tenant="t", task="classification", input="x", params={"labels": ["a", "b"]})
ASSIGNMENT = Assignment(
    item=ITEM,
    task_type=TaskType.CLASSIFICATION,
    task_reason="hint",
    pool="p",
    reason="r",
    attempt=3,
    routed_at=datetime.now(UTC),
)


class Scripted:
    """Answers with the next scripted outcome: an exception to raise, or a completion."""

    def __init__(self, provider: str, *script: BaseException | str) -> None:
        self.provider = provider
        self.script = list(script)
        self.calls = 0

    async def complete(self, item: WorkItem, task_type: TaskType) -> Completion:
        self.calls += 1
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return Completion(
            output=step,
            usage=Usage(input_tokens=5, output_tokens=1),
            model=f"{self.provider}-model",
            confidence=0.9,
        )

    async def close(self) -> None: ...


def target(backend: Scripted, failures: int = 2) -> Target:
    return Target(
        provider=backend.provider,
        model=f"{backend.provider}-model",
        backend=backend,
        breaker=CircuitBreaker(backend.provider, failures, 60),
        gate=ProviderGate(backend.provider, ProviderSettings(api="openai")),
        max_output_tokens=16,
        rate_limit_retries=2,
    )


def run(*targets: Target, assignment: Assignment = ASSIGNMENT):
    return asyncio.run(Dispatcher("p", list(targets)).run(assignment))


def outage(provider: str) -> ProviderError:
    return ProviderError(f"{provider}: HTTP 503: outage", provider=provider, retryable=True)


def test_retryable_failure_fails_over_and_numbers_attempts_from_the_assignment() -> None:
    results = run(target(Scripted("a", outage("a"))), target(Scripted("b", "label")))
    assert [(r.attempt, r.provider, r.status) for r in results] == [
        (3, "a", ResultStatus.FAILED_OVER),
        (4, "b", ResultStatus.OK),
    ]
    assert results[0].usage.input_tokens == 0 and results[1].usage.input_tokens == 5


def test_non_retryable_error_ends_the_chain_and_counts_as_the_provider_being_up() -> None:
    first, second = (
        target(Scripted("a", ProviderError("a: HTTP 400: bad", provider="a"))),
        target(Scripted("b", "label")),
    )
    first.breaker.record_failure()
    (only,) = run(first, second)
    assert only.status is ResultStatus.ERROR and "400" in only.error and second.backend.calls == 0
    assert first.breaker.state is BreakerState.CLOSED and first.breaker._consecutive == 0


def test_rate_limited_calls_are_retried_inside_one_attempt() -> None:
    limited = RateLimited("a: rate limited", provider="a", retry_after=0.01)
    backend = Scripted("a", limited, limited, "label")
    (only,) = run(target(backend))
    assert (only.status, only.attempt, backend.calls) == (ResultStatus.OK, 3, 3)


def test_rate_limits_past_the_retries_are_a_failure_that_fails_over() -> None:
    limited = RateLimited("a: rate limited", provider="a", retry_after=0.01)
    first = target(Scripted("a", limited, limited, limited))
    results = run(first, target(Scripted("b", "label")))
    assert [r.status for r in results] == [
        ResultStatus.FAILED_OVER,
        ResultStatus.OK,
    ] and first.breaker._consecutive == 1


def test_open_circuit_is_skipped_without_a_call_and_named_if_the_job_fails() -> None:
    first, second = target(Scripted("a", "never"), failures=1), target(Scripted("b", outage("b")))
    first.breaker.record_failure()
    (only,) = run(first, second)
    assert (only.attempt, only.provider, only.status) == (3, "b", ResultStatus.ERROR)
    assert only.error.endswith("circuit open for a/a-model") and first.backend.calls == 0


def test_a_defect_of_ours_ends_the_job_and_frees_the_probe() -> None:
    first = target(Scripted("a", KeyError("oops")), failures=1)
    first.breaker.record_failure()
    first.breaker._opened_at -= 60  # cool-down over: this call is the probe
    (only,) = run(first, target(Scripted("b", "label")))
    assert (
        only.error == "internal: KeyError"
        and first.breaker.state is BreakerState.HALF_OPEN
        and first.breaker.allow()
    )


def test_all_circuits_open_waits_for_the_probe_instead_of_failing() -> None:
    backend = Scripted("a", "label")
    only_target = Target(
        provider="a",
        model="a-model",
        backend=backend,
        breaker=CircuitBreaker("a", 1, 0.2),
        gate=ProviderGate("a", ProviderSettings(api="openai")),
        max_output_tokens=16,
        rate_limit_retries=2,
    )
    only_target.breaker.record_failure()  # open, probe allowed in 0.2 s
    (only,) = asyncio.run(Dispatcher("p", [only_target], wait_for_circuit_s=5).run(ASSIGNMENT))
    assert (only.status, backend.calls) == (ResultStatus.OK, 1)


def test_a_stopping_pool_does_not_wait_for_a_circuit() -> None:
    from modelyard.core._exceptions import Stopping

    only_target = target(Scripted("a", "never"), failures=1)
    only_target.breaker.record_failure()  # open for 60 s
    dispatcher = Dispatcher("p", [only_target], wait_for_circuit_s=120)
    dispatcher.stop_waiting()
    try:
        asyncio.run(dispatcher.run(ASSIGNMENT))
    except Stopping:
        return
    raise AssertionError("a stopping pool must not hold a job for a circuit")


def test_an_outage_with_no_fallback_delays_the_job_instead_of_failing_it() -> None:
    """The outage starts with the job's first call (before any circuit opened): the job waits for the
    probe and retries; each failed call keeps its own Result (billed), the last one answers."""
    backend = Scripted("a", outage("a"), outage("a"), "label")
    only = Target(
        provider="a",
        model="a-model",
        backend=backend,
        breaker=CircuitBreaker("a", 2, 0.1),
        gate=ProviderGate("a", ProviderSettings(api="openai")),
        max_output_tokens=16,
        rate_limit_retries=2,
    )
    results = asyncio.run(Dispatcher("p", [only], wait_for_circuit_s=5).run(ASSIGNMENT))
    assert [(r.attempt, r.status) for r in results] == [
        (3, ResultStatus.FAILED_OVER),
        (4, ResultStatus.FAILED_OVER),
        (5, ResultStatus.OK),
    ] and backend.calls == 3


def test_an_outage_longer_than_the_wait_still_ends_the_job_as_error() -> None:
    backend = Scripted("a", *[outage("a")] * 50)
    only = Target(
        provider="a",
        model="a-model",
        backend=backend,
        breaker=CircuitBreaker("a", 1, 0.05),
        gate=ProviderGate("a", ProviderSettings(api="openai")),
        max_output_tokens=16,
        rate_limit_retries=2,
    )
    results = asyncio.run(Dispatcher("p", [only], wait_for_circuit_s=0.3).run(ASSIGNMENT))
    assert results[-1].status is ResultStatus.ERROR and 2 <= backend.calls < 50
    assert all(r.status is ResultStatus.FAILED_OVER for r in results[:-1])
