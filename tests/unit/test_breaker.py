"""CircuitBreaker with an injected clock: opens after N consecutive failures, one probe after the cool-down."""

from __future__ import annotations

from workers.pools.breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, failures: int = 3, cooldown_s: float = 10.0) -> CircuitBreaker:
    return CircuitBreaker("p/m", failures, cooldown_s, clock=clock)


def test_opens_after_n_consecutive_failures_only() -> None:
    b = breaker(Clock())
    b.record_failure()
    b.record_failure()
    b.record_success()  # the streak is broken
    b.record_failure()
    b.record_failure()
    assert b.state is BreakerState.CLOSED and b.allow()
    b.record_failure()
    assert b.state is BreakerState.OPEN and not b.allow() and b.times_opened == 1


def test_half_opens_after_cooldown_with_a_single_probe_and_closes_on_success() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    clock.now += 9.9
    assert not b.allow() and b.seconds_until_probe() > 0
    clock.now += 0.1
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow() and not b.allow()  # only the probe goes out
    b.record_success()
    assert b.state is BreakerState.CLOSED and b.allow() and b.allow()


def test_failed_probe_reopens_for_another_cooldown() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    clock.now += 10
    assert b.allow()
    b.record_failure()
    assert b.state is BreakerState.OPEN and b.times_opened == 2
    clock.now += 5
    assert not b.allow()
    clock.now += 5
    assert b.allow()


def test_release_frees_the_probe_slot_without_judging_the_provider() -> None:
    clock = Clock()
    b = breaker(clock, failures=1)
    b.record_failure()
    clock.now += 10
    assert b.allow() and not b.allow()
    b.release()
    assert b.state is BreakerState.HALF_OPEN and b.allow()
