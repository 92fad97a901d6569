"""CircuitBreaker: stop calling a provider/model that keeps failing, probe it again after a cool-down.

closed     calls pass; `failures` consecutive retryable failures open the circuit
open       calls are refused (the pool goes to its next fallback) until `cooldown_s` has passed
half-open  one probe call passes; its success closes the circuit, its failure opens it again

Pure and synchronous: the clock is injected, so tests step time instead of sleeping. One breaker per
(provider, model) per pool process, shared by every in-flight call and every fallback chain that uses it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self, name: str, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probe_in_flight = False
        self.times_opened = 0

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self.clock() - self._opened_at >= self.cooldown_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self) -> bool:
        """May a call go out now? In half-open, only the first caller gets through (the probe)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        """The provider answered (an answer, or a refusal that is the request's fault): close."""
        self._consecutive = 0
        self._opened_at = None
        self._probe_in_flight = False

    def release(self) -> None:
        """The call said nothing about the provider (a defect of ours): only free the probe slot."""
        self._probe_in_flight = False

    def record_failure(self) -> None:
        """A retryable failure (outage, 5xx, timeout, rate limited past every retry)."""
        self._consecutive += 1
        if self._probe_in_flight or self._consecutive >= self.failures:
            if self._opened_at is None or self._probe_in_flight:
                self.times_opened += 1
            self._opened_at = self.clock()
        self._probe_in_flight = False

    def seconds_until_probe(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown_s - self.clock())
