"""ProviderGate: requests/min and tokens/min buckets, and the shared pause after a 429."""

from __future__ import annotations

import asyncio
import time

from modelyard.core._exceptions import Stopping
from modelyard.core.settings import ProviderSettings
from workers.pools.limits import ProviderGate, estimated_tokens


def test_unlimited_gate_never_waits() -> None:
    async def scenario() -> float:
        gate, started = ProviderGate("p", ProviderSettings(api="openai")), time.monotonic()
        await asyncio.gather(*(gate.enter(10_000) for _ in range(1000)))
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 0.5


def test_rpm_bucket_allows_a_burst_then_paces() -> None:
    async def scenario() -> float:
        gate, started = ProviderGate("p", ProviderSettings(api="openai", rpm=600)), time.monotonic()
        await asyncio.gather(*(gate.enter(1) for _ in range(100)))  # 10 s of 600/min: the burst
        burst = time.monotonic() - started
        assert burst < 0.2
        await asyncio.gather(*(gate.enter(1) for _ in range(4)))  # then 10 a second
        return time.monotonic() - started

    assert 0.3 <= asyncio.run(scenario()) < 1.0


def test_tpm_counts_tokens_and_caps_a_huge_request_at_the_bucket() -> None:
    async def scenario() -> float:
        gate, started = ProviderGate("p", ProviderSettings(api="openai", tpm=60_000)), time.monotonic()
        await gate.enter(10_000_000)  # bigger than the bucket: takes all of it rather than failing
        await gate.enter(500)  # 1,000 tokens a second drip back in
        return time.monotonic() - started

    assert 0.4 <= asyncio.run(scenario()) < 1.0


def test_pause_holds_every_caller_and_backs_off() -> None:
    async def scenario() -> float:
        gate = ProviderGate("p", ProviderSettings(api="openai"))
        assert gate.pause(retry_after=None, retries_so_far=2) == 0.2
        assert gate.pause(retry_after=0.3, retries_so_far=0) == 0.3
        started = time.monotonic()
        await asyncio.gather(*(gate.enter(1) for _ in range(10)))
        return time.monotonic() - started

    assert 0.25 <= asyncio.run(scenario()) < 0.6


def test_token_estimate_is_input_quarter_chars_plus_output_budget() -> None:
    assert estimated_tokens(400, 256) == 356


def test_a_stopping_gate_raises_instead_of_waiting_but_lets_free_calls_through() -> None:
    async def scenario() -> None:
        stopping = asyncio.Event()
        paused = ProviderGate("p", ProviderSettings(api="openai"), stopping)
        paused.pause(retry_after=10, retries_so_far=0)
        bucket = ProviderGate("q", ProviderSettings(api="openai", rpm=6), stopping)  # 1 request per 10 s
        await bucket.enter(1)
        waiting = [asyncio.ensure_future(paused.enter(1)), asyncio.ensure_future(bucket.enter(1))]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        stopping.set()
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(o, Stopping) for o in outcomes) and time.monotonic() - started < 0.1
        await ProviderGate("r", ProviderSettings(api="openai"), stopping).enter(1)  # nothing to wait for

    asyncio.run(scenario())
